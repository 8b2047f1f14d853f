// gsq/core/train_k_quant.hpp -- GSQ inside a llama.cpp K-quant format: learn each weight's code
// and each sub-block's scale (and min) jointly, on exactly what the format stores.
//
// The quantizer relaxes the codes on the format's grid with the sub-block as its group; each
// sub-block carries its continuous scale (and min) beside the super-block's fp16 d (and dmin),
// and the forward pass uses the scale and min as the file stores them, rounded to their codes
// under d and dmin, with the gradient passed straight through the rounding
// (gsq/policy/k_quant_layout.hpp, gsq/policy/parametrisation.hpp). So the hard result is a
// K-quant tensor as it is: its error is the error of the file. d and dmin stay those of the
// starting point (the importance-weighted fit or GPTQ in the format).
//
//   gsq::KQuantTensor start = gsq::gptq_k_quant(weight, hessian, gsq::q2_k());
//   gsq::KQuantTensor result = gsq::train_k_quant<gsq::Q2K>(start, objective, config).result;
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "gsq/common/error.hpp"
#include "gsq/core/quantizer.hpp"
#include "gsq/core/train.hpp"
#include "gsq/format/k_quant.hpp"
#include "gsq/policy/k_quant_layout.hpp"

namespace gsq {

struct KQuantTraining {
  KQuantTensor result;
  TrainReport report;
};

/// GSQ's settings in the K-quant formats: the reference's, except the logits' learning rate
/// (3e-4: the codes start from GPTQ in the format, already close, and move further) and the
/// scales' (0: the sub-block scales and mins stay GPTQ's). Measured on the synthetic layer
/// (docs/k_quants.md): learning the scales through their rounding at the reference's 5e-5
/// raised Q2_K's error 3x, at 1e-5 by 14-44%; at 2e-6 it changed nothing.
inline TrainConfig k_quant_train_config() {
  TrainConfig config;
  config.logits.learning_rate = 3e-4;
  config.scales.learning_rate = 0;
  return config;
}

namespace detail {

/// The quantizer's parameters of each sub-block: (d sc, dmin m, d, dmin), or (d sc, d) without a min.
inline std::vector<float> coded_parameters(const KQuantTensor& tensor) {
  std::vector<float> parameters;
  const std::size_t subs_per_super = static_cast<std::size_t>(tensor.format->sub_blocks());
  for (std::size_t sub = 0; sub < tensor.scale_codes.size(); ++sub) {
    const std::size_t super = sub / subs_per_super;
    if (tensor.format->has_min)
      parameters.insert(parameters.end(), {tensor.d[super] * tensor.scale_codes[sub], tensor.dmin[super] * tensor.min_codes[sub],
                                           tensor.d[super], tensor.dmin[super]});
    else
      parameters.insert(parameters.end(), {tensor.d[super] * tensor.scale_codes[sub], tensor.d[super]});
  }
  return parameters;
}

}  // namespace detail

/// The hard result of `quantizer` (a Layout quantizer started from `start`): its argmax codes,
/// and each sub-block's scale and min codes as its forward pass rounds them under the start's d
/// and dmin.
template <class Quantizer>
KQuantTensor k_quant_result(const Quantizer& quantizer, const KQuantTensor& start) {
  using Parametrisation = typename Quantizer::Parametrisation;
  KQuantTensor result = start;
  result.codes = quantizer.codes();
  const auto parameters = Quantizer::Backend::to_host(quantizer.parameters());
  for (std::size_t sub = 0; sub < result.scale_codes.size(); ++sub) {
    const auto* group = &parameters[sub * Parametrisation::parameter_count];
    result.scale_codes[sub] = static_cast<std::int8_t>(Parametrisation::scale_code(group));
    if constexpr (Parametrisation::parameter_count == 4)
      result.min_codes[sub] = static_cast<std::int8_t>(Parametrisation::min_code(group));
  }
  result.validate();
  return result;
}

/// The quantizer GSQ trains in Layout's format.
template <class Layout, class Schedule = LinearAnneal, class Estimator = Relaxed, class Backend = Host<float>>
using KQuantQuantizer = Quantizer<typename Layout::Grid, typename Layout::Grouping, Schedule, Estimator,
                                  typename Layout::Parametrisation, Backend>;

/// That quantizer (or another built on Layout's policies) started from `start`, which must be in
/// Layout's format.
template <class Layout, class Quantizer = KQuantQuantizer<Layout>>
Quantizer k_quant_quantizer(const KQuantTensor& start, const LogitInit& init) {
  start.validate();
  require(start.format == &Layout::format(),
          std::string("the starting point is in ") + start.format->name + ", not " + Layout::format().name);
  return Quantizer(start.rows, start.cols, start.codes, detail::coded_parameters(start), init);
}

/// GSQ of the objective's layer in Layout's format, from `start` (in that format, the layer's
/// shape). Reproducible: the result depends on config.seed, not on the thread count.
template <class Layout, class Schedule = LinearAnneal, class Estimator = Relaxed, class Optimizer = Lion,
          class Backend = Host<float>, class Objective>
KQuantTraining train_k_quant(const KQuantTensor& start, Objective& objective, const TrainConfig& config,
                             const std::function<void(const StepReport&)>& on_step = {}) {
  using Quantizer = KQuantQuantizer<Layout, Schedule, Estimator, Backend>;
  LogitInit init;
  init.seed = config.seed;
  Quantizer quantizer = k_quant_quantizer<Layout, Quantizer>(start, init);
  TrainReport report = train<Optimizer>(quantizer, objective, config, on_step);
  return {k_quant_result(quantizer, start), std::move(report)};
}

}  // namespace gsq
