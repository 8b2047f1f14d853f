// gsq/pipeline/report.hpp -- the JSON records of a model quantization run, which its manifest and
// the drivers' --json files are made of (the tests and scripts that read them rely on the keys):
//
//   settings_json(config)     the method settings a result depends on; a resumed run must have
//                             the same (a driver adds its own: model, calibration, grid spellings)
//   json(evaluation)          nll, ppl, bits_per_token, tokens, windows, window; it lives beside
//                             EvaluationResult in gsq/model/evaluation.hpp
//   json(layer)               a layer's errors and seconds; it lives beside LayerResult in
//                             gsq/pipeline/sequential.hpp, because the layer loop keeps it in each
//                             completed layer's file and reads it back on resume
//
// json(x) is nlohmann's conversion through to_json, found by argument-dependent lookup:
// nlohmann::json{{"evaluation", result}} works as written.
#pragma once

#include <nlohmann/json.hpp>

#include "gsq/init/scale_fit.hpp"
#include "gsq/model/evaluation.hpp"
#include "gsq/pipeline/sequential.hpp"

namespace gsq {

/// The settings of `config` that the quantize_model flags set. The weight dtype is left out: it
/// follows the input checkpoint rather than a choice of the run.
inline nlohmann::json settings_json(const ModelQuantizationConfig& config) {
  return {{"method", method_name(config.method)},
          {"objective", gsq_objective_name(config.objective)},
          {"target_inputs", config.target_inputs == TargetInputs::quantized ? "quantized" : "full-precision"},
          {"attention", config.gsq_attention ? "gsq" : "gptq"},
          {"init", method_name(config.gsq_init)},
          {"steps", config.train.steps},
          {"tau", {config.train.anneal.tau_start, config.train.anneal.tau_end}},
          {"kappa", {config.train.anneal.kappa_start, config.train.anneal.kappa_end}},
          {"lr", {config.train.logits.learning_rate, config.train.scales.learning_rate}},
          {"batches", config.block_batches},
          {"scale_search", scale_fit_name(config.gptq.scale_fit)},
          {"percdamp", config.gptq.percdamp},
          {"act_order", config.gptq.act_order},
          {"expert_calibration", config.expert_calibration == ExpertCalibration::routed ? "routed" : "all"},
          {"expert_min_tokens", config.expert_min_tokens},
          {"seed", config.train.seed}};
}

}  // namespace gsq
