// gsq/pipeline/grid_mix_format.hpp -- the paper's grid format with a scheme of its own per linear
// (int8-g128 for the down projections beside int3-g128, ...: a size budget's plan for
// compressed-tensors), a format policy for SequentialQuantizer like GridFormat
// (gsq/pipeline/linear_format.hpp), chosen per tensor at run time:
//
//   gsq::GridMixFormat mix({{"model.layers.0.mlp.down_proj.weight", gsq::grid_scheme_named("int8-g128", "")}, ...});
//   gsq::SequentialQuantizer<gsq::GridMixFormat> quantizer(model, config, communicator, mix);
//
// Each linear is held by GridFormat<Grid, Grouping> of its scheme (gsq/policy/grid_scheme.hpp), so
// RTN, GPTQ and GSQ run in it exactly as in a uniform model; GSQ trains a unit's linears jointly
// whatever their schemes, through AnyQuantizer. Packed, a tensor is codes and scales as in the
// uniform format; the metadata "grid_schemes" names each linear's scheme.
#pragma once

#include <map>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "gsq/common/error.hpp"
#include "gsq/core/any_quantizer.hpp"
#include "gsq/format/packed.hpp"
#include "gsq/pipeline/linear_format.hpp"
#include "gsq/policy/grid_scheme.hpp"

namespace gsq {

/// Calls visit(Tag<GridFormat<Grid, Grouping>>{}) for `scheme`; `what` names whose scheme it is.
template <class Visit>
auto with_grid_format(const GridScheme& scheme, const std::string& what, Visit&& visit) {
  return with_grid_scheme(scheme, what, [&](auto grid, auto grouping) {
    return visit(Tag<GridFormat<type_of<decltype(grid)>, type_of<decltype(grouping)>>>{});
  });
}

class GridMixFormat {
 public:
  using Tensor = QuantizedTensor;
  using Optimizer = Lion;
  using Gsq = AnyQuantizer<Optimizer>;

  GridMixFormat() = default;
  /// `schemes`: each linear's scheme by checkpoint tensor name.
  explicit GridMixFormat(std::map<std::string, GridScheme> schemes) : schemes_(std::move(schemes)) {}

  const std::map<std::string, GridScheme>& schemes() const { return schemes_; }

  GridScheme scheme_of(const std::string& name) const {
    const auto found = schemes_.find(name);
    require(found != schemes_.end(), "the mix gives linear " + name + " no grid scheme");
    return found->second;
  }

  Tensor initial(const std::string& name, const Matrix<float>& weight, const Matrix<float>& hessian, Method method,
                 const GptqConfig& gptq_config) const {
    return with_grid_format(scheme_of(name), name, [&](auto format) {
      return type_of<decltype(format)>::initial(name, weight, hessian, method, gptq_config);
    });
  }
  static Gsq quantizer(const Tensor& start, const LogitInit& init) {
    return with_grid_format(grid_scheme_of(start), "a linear", [&](auto format) {
      return Gsq(type_of<decltype(format)>::quantizer(start, init));
    });
  }
  static Tensor result(const Gsq& quantizer, const Tensor& start) {
    return with_grid_format(grid_scheme_of(start), "a linear", [&](auto format) {
      using Format = type_of<decltype(format)>;
      return Format::result(quantizer.template held<typename Format::Gsq>(), start);
    });
  }
  static Matrix<float> store(Tensor& tensor, const std::string& name) { return store_result(tensor, name); }
  void require_fits(const std::string& name, long cols) const {
    with_grid_format(scheme_of(name), name, [&](auto format) {
      type_of<decltype(format)>::require_fits(name, cols);
      return 0;
    });
  }
  Tensor read(const SafetensorsFile& file, const std::string& name, long rows, long cols) const {
    const GridScheme scheme = scheme_of(name);
    return read_packed(file, name, scheme.grid, rows, cols, scheme.group_width(cols));
  }
  std::map<std::string, std::string> metadata(long /*hidden_size*/) const {
    nlohmann::json schemes = nlohmann::json::object();
    for (const auto& [name, scheme] : schemes_) schemes[name] = scheme.name();
    return {{"format", "gsq symmetric integer grids, a scheme per linear as \"grid_schemes\" names it (\"int4-g128\": int4 codes, "
                       "one fp16 scale per 128 columns); <name>.codes and <name>.scales, weight = scale * code"},
            {"grid_schemes", schemes.dump()}};
  }
  static bool quantizes_beyond_layers(const std::string& /*name*/) { return false; }

 private:
  std::map<std::string, GridScheme> schemes_;
};

}  // namespace gsq
