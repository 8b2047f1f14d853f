// gsq/model/sequential.hpp -- quantizing a Llama-family model layer by layer (DESIGN section 4).
//
// The calibration tokens are embedded, then for each decoder layer in turn:
//   1. the layer runs on its inputs, recording H = X^T X / N of every linear layer's input;
//   2. the attention projections are quantized (GPTQ by default; GSQ on the Hessian objective
//      as an option) and put into the model;
//   3. the layer runs again, so the MLP sees the quantized attention, recording the MLP's inputs;
//   4. gate/up/down are quantized (GSQ on the SwiGLU block objective by default, trained
//      jointly; or each on its Hessian objective) and put into the model;
//   5. the quantized layer runs on the inputs to give the next layer's inputs.
// quantize_layers does this for every layer, keeping each completed layer in a ResumableOutput
// (its packed tensors and its JSON record), so that a run stopped part-way continues after its
// last completed layer and rebuilds the completed ones exactly.
// Every result is rounded to what the output checkpoint stores (fp16 scales), so the model in
// memory is the model that is written. The format of the linears is a policy
// (gsq/model/linear_format.hpp): the paper's grid format or a llama.cpp K-quant layout.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/backend/host.hpp"
#include "gsq/common/error.hpp"
#include "gsq/core/quantizer.hpp"
#include "gsq/core/train.hpp"
#include "gsq/format/checkpoint.hpp"
#include "gsq/format/quantized_tensor.hpp"
#include "gsq/io/resumable_output.hpp"
#include "gsq/io/safetensors.hpp"
#include "gsq/model/linear_format.hpp"
#include "gsq/model/llama.hpp"
#include "gsq/objective/hessian.hpp"
#include "gsq/objective/swiglu_block.hpp"
#include "gsq/policy/grid.hpp"

namespace gsq {

/// What GSQ trains the MLP on: the SwiGLU block's output (the reference) or each projection's
/// Hessian objective (faster).
enum class MlpObjective { block, layer };

inline MlpObjective parse_mlp_objective(const std::string& name) {
  if (name == "block") return MlpObjective::block;
  if (name == "layer") return MlpObjective::layer;
  throw Error("unknown objective '" + name + "' (expected block or layer)");
}

struct ModelQuantizationConfig {
  Method method = Method::gsq;
  Method gsq_init = Method::gptq;  // GSQ's starting point: the paper's recipe starts from GPTQ
  MlpObjective mlp_objective = MlpObjective::block;
  bool gsq_attention = false;      // the reference quantizes attention with GPTQ only
  GptqConfig gptq;                 // also gives RTN its scale fit
  TrainConfig train;               // steps, schedule end points, learning rates, seed
  LogitInit logit_init;
  long block_batches = 64;         // mini-batches the calibration set is cut into (block objective)

  /// Throws gsq::Error naming the first impossible setting (drivers call it before any work).
  void validate() const {
    train.validate();
    require(gsq_init != Method::gsq, "GSQ starts from RTN or GPTQ, not from GSQ");
    require(block_batches > 0, "the number of calibration mini-batches must be positive, got " + std::to_string(block_batches));
    require(std::isfinite(gptq.percdamp) && gptq.percdamp >= 0,
            "the GPTQ damping must be finite and non-negative, got " + std::to_string(gptq.percdamp));
  }
};

/// One quantized linear layer: its result, its relative Hessian error, and for GSQ the error of
/// its starting point.
struct LinearResult {
  std::string name;  // the checkpoint tensor name
  QuantizedLinear tensor;
  double error = 0;
  double init_error = -1;  // -1: no separate starting point (RTN, GPTQ)
  double seconds = 0;
};

struct LayerResult {
  long layer = 0;
  std::vector<LinearResult> linears;  // in LlamaModel::linear_names() order
  double block_error = -1;            // SwiGLU block relative output error (block objective)
  double block_init_error = -1;
  double seconds = 0;
};

/// A layer's record in manifests and layer files (without the tensors):
/// {"layer", "seconds", "linears": [{"name", "rel_error", "seconds", "init_rel_error"?}],
///  "block_rel_error"?, "block_init_rel_error"?}; the keys marked ? appear only when measured.
inline void to_json(nlohmann::json& json, const LayerResult& layer) {
  nlohmann::json linears = nlohmann::json::array();
  for (const LinearResult& linear : layer.linears) {
    nlohmann::json entry = {{"name", linear.name}, {"rel_error", linear.error}, {"seconds", linear.seconds}};
    if (linear.init_error >= 0) entry["init_rel_error"] = linear.init_error;
    linears.push_back(entry);
  }
  json = {{"layer", layer.layer}, {"seconds", layer.seconds}, {"linears", linears}};
  if (layer.block_error >= 0)
    json.update({{"block_rel_error", layer.block_error}, {"block_init_rel_error", layer.block_init_error}});
}

/// Reads what to_json wrote; the tensors are left empty.
inline void from_json(const nlohmann::json& json, LayerResult& layer) {
  layer.layer = json.at("layer").get<long>();
  layer.seconds = json.at("seconds").get<double>();
  layer.block_error = json.value("block_rel_error", -1.0);
  layer.block_init_error = json.value("block_init_rel_error", -1.0);
  layer.linears.clear();
  for (const nlohmann::json& entry : json.at("linears"))
    layer.linears.push_back({entry.at("name").get<std::string>(), {}, entry.at("rel_error").get<double>(),
                             entry.value("init_rel_error", -1.0), entry.at("seconds").get<double>()});
}

/// Progress of one GSQ run inside a layer: which layer and part, then the step report.
using TrainingProgress = std::function<void(long layer, const std::string& part, const StepReport& step)>;

/// Where quantize_layers stands when a layer is done.
struct LayerProgress {
  long layers = 0;             // decoder layers in the model
  double elapsed_seconds = 0;  // since the first layer began
  std::string resumed_from;    // the file the layer was read back from; empty if quantized in this run
};

/// Hears of each finished layer; an exception thrown from it stops the run after that layer.
using LayerFinished = std::function<void(const LayerResult& result, const LayerProgress& progress)>;

/// Sees each linear layer's original weight and calibration H as it is quantized (to save them
/// as inputs of quantize_layer and of sweeps).
using LinearObserver = std::function<void(const std::string& tensor_name, const Matrix<float>& weight,
                                          const Matrix<float>& hessian)>;

namespace detail {

/// H = X^T X / N of a linear layer's inputs (tokens x features).
inline Matrix<float> input_hessian(const Matrix<float>& inputs) {
  Matrix<float> hessian(inputs.cols, inputs.cols);
  Host<float>::gemm(true, inputs.cols, inputs.cols, inputs.rows, 1.0f / static_cast<float>(inputs.rows),
                    inputs.data(), inputs.data(), hessian.data());
  return hessian;
}

/// A seed for each (layer, linear) from the run's seed, so that layers draw independent noise
/// and a resumed run draws what an uninterrupted one would.
inline std::uint64_t part_seed(std::uint64_t seed, long layer, long part) {
  std::uint64_t mixed = seed ^ (0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(layer * 16 + part + 1));
  mixed ^= mixed >> 31;
  return mixed * 0xBF58476D1CE4E5B9ull;
}

}  // namespace detail

/// Quantizes a whole model with every linear layer in `Format` (GridFormat<Grid, Grouping> or
/// KQuantLinearFormat<Layout>; the rest of GSQ's policies are the paper's defaults).
template <class Format>
class SequentialQuantizer {
 public:
  using Tensor = typename Format::Tensor;
  using Gsq = typename Format::Gsq;

  SequentialQuantizer(LlamaModel& model, ModelQuantizationConfig config) : model_(model), config_(std::move(config)) {
    config_.validate();
  }

  void observe_linears(LinearObserver observer) { observer_ = std::move(observer); }

  /// Quantizes decoder layer `layer` from its calibration inputs, puts the quantized weights
  /// into the model, and returns the results; `inputs` become the next layer's inputs.
  LayerResult quantize_layer(long layer, HiddenStates& inputs, const TrainingProgress& progress = {}) {
    const auto start = std::chrono::steady_clock::now();
    LayerResult result;
    result.layer = layer;
    const auto& names = LlamaModel::linear_names();

    // Attention: q, k and v share their input (the normed hidden states).
    const std::map<std::string, Matrix<float>> attention_inputs = record_hessians(layer, inputs, {names[0], names[3]});
    const bool attention_gsq = config_.method == Method::gsq && config_.gsq_attention;
    for (int i = 0; i < 4; ++i) {
      const Matrix<float>& hessian = attention_inputs.at(i < 3 ? names[0] : names[3]);
      result.linears.push_back(quantize_linear(layer, i, hessian, attention_gsq ? Method::gsq : attention_method(), progress));
    }

    // MLP, after the quantized attention: gate and up share their input.
    std::map<std::string, Matrix<float>> mlp_inputs = record_hessians(layer, inputs, {names[4], names[6]}, true);
    if (config_.method == Method::gsq && config_.mlp_objective == MlpObjective::block)
      quantize_block(layer, mlp_inputs, result, progress);
    else
      for (int i = 4; i < 7; ++i)
        result.linears.push_back(quantize_linear(layer, i, mlp_inputs.at(i < 6 ? names[4] : names[6]), config_.method, progress));

    inputs = model_.decoder_layer(layer, inputs);
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return result;
  }

  /// Quantizes every decoder layer in turn, from the calibration `tokens` cut into sequences of
  /// `sequence_length`, and keeps each completed layer in `output` as unit "layer-<n>". A layer
  /// completed by an earlier run that stopped part-way is read back rather than quantized again,
  /// and goes into the model exactly as it was written. Returns the packed file
  /// (quantized.safetensors): every layer's codes and scales and the format's metadata.
  SafetensorsWriter quantize_layers(const std::vector<TokenId>& tokens, long sequence_length,
                                    const ResumableOutput& output, const LayerFinished& finished = {},
                                    const TrainingProgress& progress = {}) {
    SafetensorsWriter packed;
    for (const auto& [key, value] : Format::metadata(model_.config().hidden_size)) packed.set_metadata(key, value);
    HiddenStates hidden = model_.embed(tokens, sequence_length);
    const auto start = std::chrono::steady_clock::now();
    for (long layer = 0; layer < model_.config().layers; ++layer) {
      const std::string unit = "layer-" + std::to_string(layer);
      LayerProgress status{model_.config().layers, 0, output.completed(unit) ? output.unit_path(unit) : ""};
      LayerResult result;
      if (status.resumed_from.empty()) {
        result = quantize_layer(layer, hidden, progress);
        output.store(unit, layer_file(result));
      } else {
        result = read_layer(layer, output.read(unit));
        hidden = model_.decoder_layer(layer, hidden);
      }
      for (const LinearResult& linear : result.linears) add_packed(packed, linear.name, linear.tensor);
      status.elapsed_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (finished) finished(result, status);
    }
    return packed;
  }

 private:
  /// What keeps a completed layer: its packed tensors, and its record as metadata "report".
  static SafetensorsWriter layer_file(const LayerResult& result) {
    SafetensorsWriter writer;
    for (const LinearResult& linear : result.linears) add_packed(writer, linear.name, linear.tensor);
    writer.set_metadata("report", nlohmann::json(result).dump());
    return writer;
  }

  /// The layer kept in `file` by layer_file; its weights go into the model as stored.
  LayerResult read_layer(long layer, const SafetensorsFile& file) {
    const auto report = file.metadata().find("report");
    require(report != file.metadata().end(), file.path() + ": no \"report\" metadata (not a completed layer)");
    LayerResult result = nlohmann::json::parse(report->second).get<LayerResult>();
    const auto& names = LlamaModel::linear_names();
    require(result.linears.size() == names.size(), file.path() + ": the report does not list the layer's " +
                                                       std::to_string(names.size()) + " linear layers");
    for (std::size_t i = 0; i < names.size(); ++i) {
      const Matrix<float> weight = model_.linear_weight(layer, names[i]);
      Tensor tensor = Format::read(file, LlamaModel::tensor_name(layer, names[i]), weight.rows, weight.cols);
      model_.set_linear_weight(layer, names[i], Format::store(tensor, file.path()));
      result.linears[i].tensor = std::move(tensor);
    }
    return result;
  }

  Method attention_method() const { return config_.method == Method::gsq ? Method::gptq : config_.method; }

  /// Runs the layer and returns H of the inputs of the linears in `wanted`; with `keep_mlp_inputs`
  /// the raw inputs of gate/up are kept too, under the key "inputs".
  std::map<std::string, Matrix<float>> record_hessians(long layer, const HiddenStates& inputs,
                                                       const std::vector<std::string>& wanted, bool keep_mlp_inputs = false) {
    std::map<std::string, Matrix<float>> recorded;
    model_.decoder_layer(layer, inputs, [&](long, const std::string& linear, const Matrix<float>& x) {
      if (std::find(wanted.begin(), wanted.end(), linear) == wanted.end()) return;
      recorded[linear] = detail::input_hessian(x);
      if (keep_mlp_inputs && linear == LlamaModel::linear_names()[4]) recorded["inputs"] = x;
    });
    return recorded;
  }

  Tensor initial_result(const Matrix<float>& weight, const Matrix<float>& hessian, Method method) const {
    return Format::initial(weight, hessian, method, config_.gptq);
  }

  TrainConfig part_config(long layer, long part) const {
    TrainConfig train = config_.train;
    train.seed = detail::part_seed(config_.train.seed, layer, part);
    return train;
  }

  LogitInit part_init(long layer, long part) const {
    LogitInit init = config_.logit_init;
    init.seed = detail::part_seed(config_.logit_init.seed + 1, layer, part);
    return init;
  }

  /// RTN, GPTQ, or GSQ on the Hessian objective for one linear layer; puts the result in the model.
  LinearResult quantize_linear(long layer, int part, const Matrix<float>& hessian, Method method,
                               const TrainingProgress& progress) {
    const auto start = std::chrono::steady_clock::now();
    const std::string& linear = LlamaModel::linear_names()[static_cast<std::size_t>(part)];
    const Matrix<float> weight = model_.linear_weight(layer, linear);
    if (observer_) observer_(LlamaModel::tensor_name(layer, linear), weight, hessian);
    HessianObjective<> objective(weight, hessian);
    LinearResult result{LlamaModel::tensor_name(layer, linear), {}};
    Tensor tensor = initial_result(weight, hessian, method == Method::gsq ? config_.gsq_init : method);
    if (method == Method::gsq) {
      result.init_error = objective.relative_error(tensor.dequantize());
      Gsq quantizer = Format::quantizer(tensor, part_init(layer, part));
      train(quantizer, objective, part_config(layer, part), [&](const StepReport& step) {
        if (progress) progress(layer, linear, step);
      });
      Tensor trained = Format::result(quantizer, tensor);
      // The starting point is a candidate too: a short run can end above it.
      if (objective.relative_error(trained.dequantize()) < result.init_error) tensor = std::move(trained);
    }
    const Matrix<float> stored = Format::store(tensor, result.name);
    result.error = objective.relative_error(stored);
    result.tensor = std::move(tensor);
    model_.set_linear_weight(layer, linear, stored);
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return result;
  }

  /// GSQ of gate, up and down trained jointly on the SwiGLU block's output.
  void quantize_block(long layer, const std::map<std::string, Matrix<float>>& mlp_inputs, LayerResult& result,
                      const TrainingProgress& progress) {
    const auto start = std::chrono::steady_clock::now();
    const auto& names = LlamaModel::linear_names();
    const Matrix<float>& inputs = mlp_inputs.at("inputs");
    std::array<Matrix<float>, 3> weights;
    std::array<HessianObjective<>, 3> objectives{
        HessianObjective<>(weights[0] = model_.linear_weight(layer, names[4]), mlp_inputs.at(names[4])),
        HessianObjective<>(weights[1] = model_.linear_weight(layer, names[5]), mlp_inputs.at(names[4])),
        HessianObjective<>(weights[2] = model_.linear_weight(layer, names[6]), mlp_inputs.at(names[6]))};
    std::array<LinearResult, 3> linears;
    std::array<Tensor, 3> tensors;
    for (int i = 0; i < 3; ++i) {
      if (observer_) observer_(LlamaModel::tensor_name(layer, names[4 + i]), weights[i], mlp_inputs.at(names[i == 2 ? 6 : 4]));
      linears[i].name = LlamaModel::tensor_name(layer, names[4 + i]);
      tensors[i] = initial_result(weights[i], mlp_inputs.at(names[i == 2 ? 6 : 4]), config_.gsq_init);
      linears[i].init_error = objectives[i].relative_error(tensors[i].dequantize());
    }
    const long batch_tokens = std::max(1L, inputs.rows / config_.block_batches);
    SwiGluBlockObjective<> block(weights[0], weights[1], weights[2], inputs, batch_tokens);
    result.block_init_error = block.relative_error(tensors[0].dequantize(), tensors[1].dequantize(), tensors[2].dequantize());
    Gsq gate = Format::quantizer(tensors[0], part_init(layer, 4)), up = Format::quantizer(tensors[1], part_init(layer, 5)),
        down = Format::quantizer(tensors[2], part_init(layer, 6));
    train_jointly(block, part_config(layer, 4), [&](const StepReport& step) { if (progress) progress(layer, "mlp", step); },
                  gate, up, down);
    std::array<Tensor, 3> trained{Format::result(gate, tensors[0]), Format::result(up, tensors[1]), Format::result(down, tensors[2])};
    if (block.relative_error(trained[0].dequantize(), trained[1].dequantize(), trained[2].dequantize()) <
        result.block_init_error)
      tensors = std::move(trained);

    std::array<Matrix<float>, 3> stored;
    for (int i = 0; i < 3; ++i) {
      stored[i] = Format::store(tensors[i], linears[i].name);
      linears[i].error = objectives[i].relative_error(stored[i]);
      linears[i].tensor = std::move(tensors[i]);
      model_.set_linear_weight(layer, names[4 + i], stored[i]);
    }
    result.block_error = block.relative_error(stored[0], stored[1], stored[2]);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    for (LinearResult& linear : linears) {
      linear.seconds = seconds / 3;
      result.linears.push_back(std::move(linear));
    }
  }

  LlamaModel& model_;
  ModelQuantizationConfig config_;
  LinearObserver observer_;
};

}  // namespace gsq
