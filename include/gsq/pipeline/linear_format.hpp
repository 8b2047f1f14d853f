// gsq/pipeline/linear_format.hpp -- the format SequentialQuantizer (gsq/pipeline/sequential.hpp) puts
// every linear layer of a model in: the paper's grid format, GridFormat<Grid, Grouping>, or a
// llama.cpp K-quant layout, KQuantLinearFormat<Layout>. A format policy gives
//   Tensor                                      its result type (one of QuantizedLinear's)
//   Gsq                                         the quantizer GSQ trains in it
//   Optimizer                                   the optimizer policy GSQ trains it with
//   initial(name, weight, hessian, method, gptq) RTN (for K-quants: the importance-weighted fit) or GPTQ
//   quantizer(start, init), result(gsq, start)  GSQ's quantizer from a start, and its hard result
//   store(tensor, name)                         the exact weights the files hold, checked
//   read(file, name, rows, cols)                a tensor add_packed wrote to quantized.safetensors
//   metadata(hidden_size)                       quantized.safetensors' __metadata__
//   require_fits(name, cols)                    an error unless a linear of `cols` inputs fits the format
//   bits_per_parameter(cols)
//   quantizes_beyond_layers(name)               whether it also quantizes the embedding or head `name` (a mix)
#pragma once

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "gsq/common/error.hpp"
#include "gsq/core/quantizer.hpp"
#include "gsq/core/train_k_quant.hpp"
#include "gsq/format/k_quant.hpp"
#include "gsq/format/packed.hpp"
#include "gsq/init/gptq.hpp"
#include "gsq/init/k_quant_fit.hpp"
#include "gsq/init/k_quant_gptq.hpp"
#include "gsq/init/rtn.hpp"
#include "gsq/pipeline/method.hpp"
#include "gsq/policy/estimator.hpp"
#include "gsq/policy/optimizer.hpp"
#include "gsq/policy/schedule.hpp"

namespace gsq {

/// Stores a result as the output files will: scales rounded to fp16 (the 16-bit scales of the
/// format), then returns the dequantized weight, scale * code, exact in float. A result that
/// does not survive that (a scale beyond fp16's 65504, a non-finite weight) is an error naming
/// `name`, never written.
inline Matrix<float> store_result(QuantizedTensor& tensor, const std::string& name) {
  for (std::size_t group = 0; group < tensor.scales.size(); ++group) {
    const float scale = tensor.scales[group];
    tensor.scales[group] = half_bits_to_float(float_to_half_bits(scale));
    if (!(std::isfinite(tensor.scales[group]) && tensor.scales[group] > 0))  // the message only when it fails
      throw Error(name + ": the scale of group " + std::to_string(group) + " is " + std::to_string(scale) +
                  ", which the format's fp16 scales cannot hold (they must be positive and at most 65504)");
  }
  Matrix<float> weight = tensor.dequantize();
  require(std::all_of(weight.values.begin(), weight.values.end(), [](float v) { return std::isfinite(v); }),
          name + ": the quantized weights are not finite");
  return weight;
}

/// The paper's format: codes on Grid, one fp16 scale per group of Grouping; GSQ trains it with
/// the Schedule, Estimator and Optimizer policies (the paper's by default), so that a program can
/// run a whole model with policies of its own (docs/examples/whole_model_policies.cpp).
template <class Grid, class Grouping, class Schedule = LinearAnneal, class Estimator = Relaxed, class Optimizer_ = Lion>
struct GridFormat {
  using Tensor = QuantizedTensor;
  using Gsq = Quantizer<Grid, Grouping, Schedule, Estimator>;
  using Optimizer = Optimizer_;

  static Tensor initial(const std::string& /*name*/, const Matrix<float>& weight, const Matrix<float>& hessian, Method method,
                        const GptqConfig& gptq_config) {
    const long width = Grouping::group_width(static_cast<int>(weight.cols));
    if (method == Method::rtn)
      return round_to_nearest(weight, grid_spec<Grid>(), width, gptq_config.scale_fit,
                              gptq_config.scale_fit == ScaleFit::weighted ? hessian_diagonal(hessian) : std::vector<double>{});
    return gptq(weight, hessian, grid_spec<Grid>(), width, gptq_config);
  }
  static Gsq quantizer(const Tensor& start, const LogitInit& init) { return Gsq(start, init); }
  static Tensor result(const Gsq& quantizer, const Tensor& /*start*/) { return quantizer.result(); }
  static Matrix<float> store(Tensor& tensor, const std::string& name) { return store_result(tensor, name); }
  static void require_fits(const std::string& name, long cols) {
    const long width = Grouping::group_width(static_cast<int>(cols));
    require(cols % width == 0, name + " has " + std::to_string(cols) + " input columns, which groups of " +
                                   std::to_string(width) + " do not divide: choose a group size that does");
  }
  static Tensor read(const SafetensorsFile& file, const std::string& name, long rows, long cols) {
    return read_packed(file, name, grid_spec<Grid>(), rows, cols, Grouping::group_width(static_cast<int>(cols)));
  }
  static std::map<std::string, std::string> metadata(long hidden_size) {
    return packed_metadata(grid_spec<Grid>(), Grouping::group_width(static_cast<int>(hidden_size)));
  }
  static bool quantizes_beyond_layers(const std::string& /*name*/) { return false; }
  static double bits_per_parameter(long cols) {
    const long width = Grouping::group_width(static_cast<int>(cols));
    return QuantizedTensor{grid_spec<Grid>(), 1, width, width, {}, {}}.bits_per_parameter();
  }
};

/// A llama.cpp K-quant layout (gsq/policy/k_quant_layout.hpp): GSQ trains the codes under the
/// stored sub-block scales and mins of its start (gsq/core/train_k_quant.hpp).
template <class Layout>
struct KQuantLinearFormat {
  using Tensor = KQuantTensor;
  using Gsq = KQuantQuantizer<Layout>;
  using Optimizer = Lion;

  static Tensor initial(const std::string& /*name*/, const Matrix<float>& weight, const Matrix<float>& hessian, Method method,
                        const GptqConfig& gptq_config) {
    if (method == Method::rtn) {
      const std::vector<double> diagonal = hessian_diagonal(hessian);
      return fit_k_quant(weight, std::vector<float>(diagonal.begin(), diagonal.end()), Layout::format());
    }
    return gptq_k_quant(weight, hessian, Layout::format(), gptq_config);
  }
  static Gsq quantizer(const Tensor& start, const LogitInit& init) { return k_quant_quantizer<Layout>(start, init); }
  static Tensor result(const Gsq& quantizer, const Tensor& start) { return k_quant_result(quantizer, start); }
  static Matrix<float> store(Tensor& tensor, const std::string& /*name*/) { return tensor.dequantize(); }
  static void require_fits(const std::string& name, long cols) { require_whole_super_blocks(Layout::format(), name, cols); }
  static Tensor read(const SafetensorsFile& file, const std::string& name, long rows, long cols) {
    std::optional<KQuantTensor> tensor = read_k_quant_packed(file, name, rows, cols);
    require(tensor && tensor->format == &Layout::format(),
            file.path() + ": no " + Layout::format().name + " blocks '" + name + "." + Layout::format().name + "'");
    return std::move(*tensor);
  }
  static std::map<std::string, std::string> metadata(long /*hidden_size*/) { return k_quant_metadata(); }
  static double bits_per_parameter(long /*cols*/) { return Layout::format().bits_per_weight(); }
  static bool quantizes_beyond_layers(const std::string& /*name*/) { return false; }
};

}  // namespace gsq
