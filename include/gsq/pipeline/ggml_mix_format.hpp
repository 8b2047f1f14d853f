// gsq/pipeline/ggml_mix_format.hpp -- a llama.cpp "mix": every linear in a ggml type of its own
// (llama-quantize's Q4_K_M gives attn_v and some ffn_down Q6_K beside Q4_K, rows that are not
// whole super-blocks Q5_0, ...), a format policy for SequentialQuantizer like GridFormat and
// KQuantLinearFormat (gsq/pipeline/linear_format.hpp), chosen per tensor at run time:
//
//   gsq::GgmlMixFormat mix({{"model.layers.0.self_attn.v_proj.weight", gsq::GgmlType::Q6_K}, ...});
//   gsq::SequentialQuantizer<gsq::GgmlMixFormat> quantizer(model, config, communicator, mix);
//
// Each ggml type is held by one of the fixed formats (gsq/policy/ggml_layout.hpp: the K-quants,
// Q4_1 and Q5_1 as KQuantLinearFormat, the legacy symmetric types as the grid format with blocks of 32 or 64),
// so RTN, GPTQ and GSQ run in it exactly as in a pure file; GSQ trains a unit's linears jointly
// whatever their types, through AnyQuantizer (gsq/core/any_quantizer.hpp). Packed, a tensor is
// what its format writes; the metadata "ggml_types" names each tensor's type.
#pragma once

#include <map>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "gsq/common/error.hpp"
#include "gsq/core/any_quantizer.hpp"
#include "gsq/format/ggml_types.hpp"
#include "gsq/format/packed.hpp"
#include "gsq/pipeline/linear_format.hpp"
#include "gsq/policy/ggml_layout.hpp"

namespace gsq {

/// The linear format of a ggml layout (gsq/policy/ggml_layout.hpp).
template <class Layout, bool = is_ggml_k_quant<Layout>::value>
struct GgmlLinearFormat {
  using type = KQuantLinearFormat<typename Layout::Layout>;
};
template <class Layout>
struct GgmlLinearFormat<Layout, false> {
  using type = GridFormat<typename Layout::Grid, typename Layout::Grouping>;
};

/// Calls visit(Tag<Format>{}) with the linear format that holds ggml type `type`; an error names
/// `what` and a type gsq does not quantize into.
template <class Visit>
auto with_ggml_format(GgmlType type, const std::string& what, Visit&& visit) {
  return with_ggml_layout(type, what, [&](auto layout) {
    return visit(Tag<typename GgmlLinearFormat<type_of<decltype(layout)>>::type>{});
  });
}

/// The ggml type that `tensor`, a result of one of the formats of GgmlLayouts, is in.
inline GgmlType ggml_type_of(const QuantizedLinear& tensor) {
  if (const auto* blocks = std::get_if<KQuantTensor>(&tensor)) return static_cast<GgmlType>(blocks->format->ggml_type);
  const QuantizedTensor& grid = std::get<QuantizedTensor>(tensor);
  for (GgmlType type : ggml_types_written()) {
    const bool holds = with_ggml_layout(type, "", [&](auto tag) {
      using Layout = type_of<decltype(tag)>;
      if constexpr (is_ggml_k_quant<Layout>::value) return false;
      else return grid.grid == grid_spec<typename Layout::Grid>() &&
                  grid.group_width == Layout::Grouping::group_width(static_cast<int>(grid.cols));
    });
    if (holds) return type;
  }
  throw Error(std::string("a ") + grid.grid.name + " tensor with groups of " + std::to_string(grid.group_width) +
              " is in none of the ggml types gsq writes");
}

class GgmlMixFormat {
 public:
  using Tensor = QuantizedLinear;
  using Optimizer = Lion;
  using Gsq = AnyQuantizer<Optimizer>;

  GgmlMixFormat() = default;
  /// `types`: each linear's ggml type by checkpoint tensor name (and the token embedding's and the
  /// head's where they are quantized); each one gsq quantizes into.
  explicit GgmlMixFormat(std::map<std::string, GgmlType> types) : types_(std::move(types)) {
    for (const auto& [name, type] : types_) require_ggml_type_written(type, name);
  }

  const std::map<std::string, GgmlType>& types() const { return types_; }

  /// `types` names the token embedding or head (their checkpoint names) it quantizes too.
  bool quantizes_beyond_layers(const std::string& name) const { return types_.count(name) > 0; }

  GgmlType type_of(const std::string& name) const {
    const auto found = types_.find(name);
    require(found != types_.end(), "the mix gives linear " + name + " no ggml type");
    return found->second;
  }

  Tensor initial(const std::string& name, const Matrix<float>& weight, const Matrix<float>& hessian, Method method,
                 const GptqConfig& gptq_config) const {
    return with_ggml_format(type_of(name), name, [&](auto format) {
      return Tensor(type_of_tag<decltype(format)>::initial(name, weight, hessian, method, gptq_config));
    });
  }
  static Gsq quantizer(const Tensor& start, const LogitInit& init) {
    return with_ggml_format(ggml_type_of(start), "", [&](auto format) {
      using Format = type_of_tag<decltype(format)>;
      return Gsq(Format::quantizer(std::get<typename Format::Tensor>(start), init));
    });
  }
  static Tensor result(const Gsq& quantizer, const Tensor& start) {
    return with_ggml_format(ggml_type_of(start), "", [&](auto format) {
      using Format = type_of_tag<decltype(format)>;
      return Tensor(Format::result(quantizer.template held<typename Format::Gsq>(), std::get<typename Format::Tensor>(start)));
    });
  }
  static Matrix<float> store(Tensor& tensor, const std::string& name) {
    if (auto* grid = std::get_if<QuantizedTensor>(&tensor)) return store_result(*grid, name);
    return std::get<KQuantTensor>(tensor).dequantize();
  }
  void require_fits(const std::string& name, long cols) const {
    with_ggml_format(type_of(name), name, [&](auto format) {
      type_of_tag<decltype(format)>::require_fits(name, cols);
      return 0;
    });
  }
  Tensor read(const SafetensorsFile& file, const std::string& name, long rows, long cols) const {
    return with_ggml_format(type_of(name), name, [&](auto format) {
      return Tensor(type_of_tag<decltype(format)>::read(file, name, rows, cols));
    });
  }
  std::map<std::string, std::string> metadata(long /*hidden_size*/) const {
    nlohmann::json types = nlohmann::json::object();
    for (const auto& [name, type] : types_) types[name] = ggml_type_name(static_cast<std::uint32_t>(type));
    return {{"format", "a llama.cpp mix: each linear in the ggml type \"ggml_types\" names; K-quants, Q4_1 and Q5_1 as "
                       "<name>.q2_k ... <name>.q5_1 (ggml's blocks), Q4_0, Q5_0, Q8_0 (groups of 32) and Q2_0 (groups of 64) as <name>.codes and "
                       "<name>.scales"},
            {"ggml_types", types.dump()}};
  }

 private:
  template <class TagType>
  using type_of_tag = gsq::type_of<TagType>;

  std::map<std::string, GgmlType> types_;
};

}  // namespace gsq
