// gsq/pipeline/config.hpp -- the settings of a whole-model run (gsq/pipeline/sequential.hpp):
// the method, GSQ's objective and its target's inputs, how experts are calibrated, and the numbers
// people sweep; checked before any work.
#pragma once

#include <cmath>
#include <string>

#include "gsq/common/error.hpp"
#include "gsq/core/quantizer.hpp"
#include "gsq/core/train.hpp"
#include "gsq/init/gptq.hpp"
#include "gsq/pipeline/method.hpp"

namespace gsq {

/// What GSQ trains: the SwiGLU block's output (the reference: gate/up/down jointly, attention by
/// GPTQ), each projection's Hessian objective (faster), or the whole decoder layer's output (q, k,
/// v, o, gate, up, down jointly, from GPTQ; dense layers).
enum class GsqObjective { block, layer, layer_output };

inline GsqObjective parse_gsq_objective(const std::string& name) {
  if (name == "block") return GsqObjective::block;
  if (name == "layer") return GsqObjective::layer;
  if (name == "layer-output") return GsqObjective::layer_output;
  throw Error("unknown objective '" + name + "' (expected block, layer or layer-output)");
}

inline std::string gsq_objective_name(GsqObjective objective) {
  return objective == GsqObjective::block ? "block" : objective == GsqObjective::layer ? "layer" : "layer-output";
}

/// What the decoder-layer objective's target, the full-precision layer, runs on: the quantized
/// model's inputs to the layer (the layer matches itself) or the full-precision model's (it also
/// makes up for the earlier layers' error).
enum class TargetInputs { quantized, full_precision };

inline TargetInputs parse_target_inputs(const std::string& name) {
  if (name == "quantized") return TargetInputs::quantized;
  if (name == "full-precision") return TargetInputs::full_precision;
  throw Error("unknown target inputs '" + name + "' (expected quantized or full-precision)");
}

/// Which tokens calibrate an expert: those the router sends it, or all of the layer's (the
/// layer's output still mixes the experts as routed).
enum class ExpertCalibration { routed, all };

inline ExpertCalibration parse_expert_calibration(const std::string& name) {
  if (name == "routed") return ExpertCalibration::routed;
  if (name == "all") return ExpertCalibration::all;
  throw Error("unknown expert calibration '" + name + "' (expected routed or all)");
}

struct ModelQuantizationConfig {
  Method method = Method::gsq;
  Method gsq_init = Method::gptq;  // GSQ's starting point: the paper's recipe starts from GPTQ
  GsqObjective objective = GsqObjective::block;
  TargetInputs target_inputs = TargetInputs::full_precision;  // of the layer-output objective
  bool gsq_attention = false;      // the reference quantizes attention with GPTQ only
  GptqConfig gptq;                 // also gives RTN its scale fit
  TrainConfig train;               // steps, schedule end points, learning rates, seed
  LogitInit logit_init;
  long block_batches = 64;         // mini-batches the calibration set is cut into (block and layer-output objectives)
  ExpertCalibration expert_calibration = ExpertCalibration::routed;
  double expert_min_tokens = 0.005;  // an expert routed fewer than this share of the layer's tokens falls back to RTN

  /// Throws gsq::Error naming the first impossible setting (drivers call it before any work).
  void validate() const {
    train.validate();
    require(gsq_init != Method::gsq, "GSQ starts from RTN or GPTQ, not from GSQ");
    require(!(gsq_attention && objective == GsqObjective::layer_output),
            "the layer-output objective trains attention itself; GSQ on attention's Hessian objective does not apply");
    require(block_batches > 0, "the number of calibration mini-batches must be positive, got " + std::to_string(block_batches));
    require(std::isfinite(gptq.percdamp) && gptq.percdamp >= 0,
            "the GPTQ damping must be finite and non-negative, got " + std::to_string(gptq.percdamp));
    require(std::isfinite(expert_min_tokens) && expert_min_tokens >= 0 && expert_min_tokens <= 1,
            "the experts' minimum share of tokens must be between 0 and 1, got " + std::to_string(expert_min_tokens));
  }
};

}  // namespace gsq
