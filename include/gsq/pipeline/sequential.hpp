// gsq/pipeline/sequential.hpp -- quantizing a Llama-family model layer by layer (docs/design.md section 4).
//
// The calibration tokens are embedded, then for each decoder layer in turn:
//   1. the layer runs on its inputs, recording H = X^T X / N of every linear layer's input;
//   2. the attention projections are quantized (GPTQ by default; GSQ on the Hessian objective
//      as an option) and put into the model;
//   3. the layer runs again, so the MLP sees the quantized attention, recording the MLP's input;
//   4. each SwiGLU MLP's gate/up/down are quantized (GSQ on the SwiGLU block objective by default,
//      trained jointly; or each on its Hessian objective) and put into the model. In a mixture of
//      experts each expert is calibrated on the tokens the router sends it (or on all tokens), and
//      an expert with too few falls back to RTN on its weights: no expert stays in full precision;
//      the routers stay in full precision;
//   5. the quantized layer runs on the inputs to give the next layer's inputs.
// quantize_layers does this for every layer, keeping each completed layer in a ResumableOutput
// (its packed tensors and its JSON record), so that a run stopped part-way continues after its
// last completed layer and rebuilds the completed ones exactly.
// Every result is rounded to what the output checkpoint stores (fp16 scales), so the model in
// memory is the model that is written. The format of the linears is a policy
// (gsq/pipeline/linear_format.hpp): the paper's grid format or a llama.cpp K-quant layout.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <iterator>
#include <map>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/backend/host.hpp"
#include "gsq/common/array_of.hpp"
#include "gsq/common/clock.hpp"
#include "gsq/common/error.hpp"
#include "gsq/core/quantizer.hpp"
#include "gsq/core/train.hpp"
#include "gsq/distributed/communicator.hpp"
#include "gsq/format/packed.hpp"
#include "gsq/format/quantized_tensor.hpp"
#include "gsq/io/fingerprint.hpp"
#include "gsq/io/resumable_output.hpp"
#include "gsq/io/safetensors.hpp"
#include "gsq/pipeline/linear_format.hpp"
#include "gsq/model/llama.hpp"
#include "gsq/objective/decoder_layer.hpp"
#include "gsq/objective/hessian.hpp"
#include "gsq/objective/input_hessian.hpp"
#include "gsq/objective/swiglu_block.hpp"
#include "gsq/pipeline/config.hpp"
#include "gsq/policy/grid.hpp"

namespace gsq {

/// One quantized linear layer: its result, its relative Hessian error, and for GSQ the error of
/// its starting point; for an expert, the calibration tokens it saw and whether it fell back to RTN.
struct LinearResult {
  std::string name;  // the checkpoint tensor name
  QuantizedLinear tensor;
  double error = 0;
  double init_error = -1;  // -1: no separate starting point (RTN, GPTQ)
  double seconds = 0;
  long tokens = -1;        // an expert's calibration tokens; -1 for the other linears (all tokens)
  bool fallback = false;   // too few tokens: RTN on its weights (H = I), its error measured there
};

/// One SwiGLU MLP trained on its output (the block objective): its relative output error and that
/// of its start, and its calibration tokens.
struct BlockResult {
  std::string name;  // "mlp", "mlp.experts.3", ...
  long tokens = 0;
  double error = 0;
  double init_error = 0;
  double train_seconds = 0;  // the GSQ run on the joint objective (its steps)
  double step_seconds = 0;   // ... its median step
};

struct LayerResult {
  long layer = 0;
  std::vector<LinearResult> linears;  // in LlamaConfig::linears(layer) order
  std::vector<BlockResult> blocks;    // the MLPs the block objective trained
  double seconds = 0;
};

/// A layer's record in manifests and layer files (without the tensors):
/// {"layer", "seconds", "linears": [{"name", "rel_error", "seconds", "init_rel_error"?, "tokens"?,
///  "fallback"?}], "blocks"?: [{"name", "tokens", "rel_error", "init_rel_error", "train_seconds",
///  "step_seconds_median"}]}; the keys marked ? appear only when they apply.
inline void to_json(nlohmann::json& json, const LayerResult& layer) {
  nlohmann::json linears = nlohmann::json::array();
  for (const LinearResult& linear : layer.linears) {
    nlohmann::json entry = {{"name", linear.name}, {"rel_error", linear.error}, {"seconds", linear.seconds}};
    if (linear.init_error >= 0) entry["init_rel_error"] = linear.init_error;
    if (linear.tokens >= 0) entry["tokens"] = linear.tokens;
    if (linear.fallback) entry["fallback"] = "rtn";
    linears.push_back(entry);
  }
  json = {{"layer", layer.layer}, {"seconds", layer.seconds}, {"linears", linears}};
  for (const BlockResult& block : layer.blocks)
    json["blocks"].push_back({{"name", block.name}, {"tokens", block.tokens}, {"rel_error", block.error},
                              {"init_rel_error", block.init_error}, {"train_seconds", block.train_seconds},
                              {"step_seconds_median", block.step_seconds}});
}

/// Reads what to_json wrote; the tensors are left empty.
inline void from_json(const nlohmann::json& json, LayerResult& layer) {
  layer.layer = json.at("layer").get<long>();
  layer.seconds = json.at("seconds").get<double>();
  layer.linears.clear();
  for (const nlohmann::json& entry : json.at("linears"))
    layer.linears.push_back({entry.at("name").get<std::string>(), {}, entry.at("rel_error").get<double>(),
                             entry.value("init_rel_error", -1.0), entry.at("seconds").get<double>(),
                             entry.value("tokens", -1L), entry.contains("fallback")});
  layer.blocks.clear();
  for (const nlohmann::json& entry : json.value("blocks", nlohmann::json::array()))
    layer.blocks.push_back({entry.at("name").get<std::string>(), entry.at("tokens").get<long>(),
                            entry.at("rel_error").get<double>(), entry.at("init_rel_error").get<double>(),
                            entry.value("train_seconds", 0.0), entry.value("step_seconds_median", 0.0)});
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

/// A seed for each (layer, linear) from the run's seed, so that layers draw independent noise
/// and a resumed run draws what an uninterrupted one would.
inline std::uint64_t part_seed(std::uint64_t seed, long layer, long part) {
  std::uint64_t mixed = seed ^ (0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(layer * 16 + part + 1));
  mixed ^= mixed >> 31;
  return mixed * 0xBF58476D1CE4E5B9ull;
}

/// The seed of stream `stream` of a run seeded `seed`: stream 0 is the run's own (a dense layer's
/// parts), stream e + 1 expert e's, so that experts draw independent noise.
inline std::uint64_t stream_seed(std::uint64_t seed, long stream) {
  return stream == 0 ? seed : part_seed(seed ^ 0xD1B54A32D192ED03ull, -1, stream);
}


/// `linear` as a format's result type: itself, or the alternative it holds.
template <class Tensor>
Tensor as_tensor(const QuantizedLinear& linear) {
  if constexpr (std::is_same<Tensor, QuantizedLinear>::value) return linear;
  else return std::get<Tensor>(linear);
}

}  // namespace detail

/// Quantizes a whole model with every linear layer in `Format` (GridFormat<Grid, Grouping> or
/// KQuantLinearFormat<Layout>; the rest of GSQ's policies are the paper's defaults).
template <class Format>
class SequentialQuantizer {
 public:
  using Tensor = typename Format::Tensor;
  using Gsq = typename Format::Gsq;

  /// Quantizes `model`; with a communicator of several ranks, each layer's work is spread over
  /// them (every rank runs this with the same model, settings and calibration tokens, and ends
  /// with the same model; the results do not depend on the number of ranks).
  /// `format`: the format object, for formats chosen per linear at run time (GgmlMixFormat).
  SequentialQuantizer(LlamaModel& model, ModelQuantizationConfig config, const Communicator& communicator = serial_communicator(),
                      Format format = Format())
      : model_(model), config_(std::move(config)), communicator_(&communicator), format_(std::move(format)) {
    config_.validate();
    if (layer_output())
      for (long layer = 0; layer < model_.config().layers; ++layer) LayerObjective::require_supported(model_.config(), layer);
  }

  void observe_linears(LinearObserver observer) { observer_ = std::move(observer); }

  /// Quantizes decoder layer `layer` from its calibration inputs, puts the quantized weights
  /// into the model, and returns the results; `inputs` become the next layer's inputs.
  /// `full_precision_inputs`, if given, are the full-precision model's inputs to the layer (the
  /// layer-output objective's target runs on them) and become its outputs.
  LayerResult quantize_layer(long layer, HiddenStates& inputs, const TrainingProgress& progress = {},
                             HiddenStates* full_precision_inputs = nullptr) {
    const auto start = Clock::now();
    LayerResult result;
    result.layer = layer;
    model_.load_layer(layer);
    const std::vector<LinearShape> linears = model_.config().linears(layer);
    // The layer-output objective's target and weights: the full-precision layer's, before any of it is quantized.
    Matrix<float> targets;
    std::array<Matrix<float>, LayerObjective::linear_count> originals;
    if (layer_output()) {
      HiddenStates target = model_.decoder_layer(layer, full_precision_inputs ? *full_precision_inputs : inputs);
      targets = target.values;
      if (full_precision_inputs) *full_precision_inputs = std::move(target);
      for (std::size_t i = 0; i < originals.size(); ++i) originals[i] = model_.linear_weight(layer, linears[i].name);
    }
    const std::vector<SwiGluBlock> blocks = model_.config().swiglu_blocks(layer);
    const long attention_count = static_cast<long>(linears.size() - 3 * blocks.size());

    // Attention: each projection on H of its input; projections sharing an input share its H.
    std::map<std::string, Matrix<float>> hessians;
    model_.decoder_layer(layer, inputs, [&](long, const std::string& linear, const Matrix<float>& x) {
      const auto shape = std::find_if(linears.begin(), linears.begin() + attention_count,
                                      [&](const LinearShape& candidate) { return candidate.name == linear; });
      if (shape != linears.begin() + attention_count && shape->input_of.empty())
        hessians[linear] = input_hessian(x);
    });
    const bool attention_gsq = config_.method == Method::gsq && config_.gsq_attention;
    std::vector<double> attention_costs;
    for (long part = 0; part < attention_count; ++part)
      attention_costs.push_back(static_cast<double>(linears[static_cast<std::size_t>(part)].rows * linears[static_cast<std::size_t>(part)].cols));
    share_units(layer, attention_costs, result, [&](long part, LayerResult& unit) {
      const LinearShape& shape = linears[static_cast<std::size_t>(part)];
      unit.linears.push_back(quantize_linear(layer, shape.name, {part, 0},
                                             hessians.at(shape.input_of.empty() ? shape.name : shape.input_of),
                                             attention_gsq ? Method::gsq : attention_method(), progress));
    });

    // The MLP, after the quantized attention: each SwiGLU block on its calibration tokens.
    Matrix<float> mlp_inputs;
    std::map<std::string, Matrix<float>> down_inputs;  // of the blocks that see every token: the dense MLP, a shared expert
    model_.decoder_layer(layer, inputs, [&](long, const std::string& linear, const Matrix<float>& x) {
      if (mlp_inputs.rows == 0 && linear.rfind("self_attn.", 0) != 0) mlp_inputs = x;  // the router's or gate's input
      for (const SwiGluBlock& block : blocks)
        if (block.expert < 0 && linear == block.linears[2]) down_inputs[linear] = x;
    });
    const MixtureConfig& mixture = model_.config().mixture;
    const bool routed = mixture.in_layer(layer) && config_.expert_calibration == ExpertCalibration::routed;
    const std::vector<ExpertTokens> expert_tokens =
        routed ? tokens_by_expert(model_.route(layer, mlp_inputs), mixture.experts) : std::vector<ExpertTokens>{};
    // A block's tokens: its routed ones, or all; its cost: its weights times the tokens of a step.
    const auto block_tokens = [&](const SwiGluBlock& block) -> const std::vector<long>* {
      return routed && block.expert >= 0 ? &expert_tokens[static_cast<std::size_t>(block.expert)].tokens : nullptr;
    };
    const long batch_tokens = std::max(1L, mlp_inputs.rows / config_.block_batches);
    std::vector<double> block_costs;
    for (const SwiGluBlock& block : blocks) {
      const std::vector<long>* tokens = block_tokens(block);
      const long count = tokens ? static_cast<long>(tokens->size()) : mlp_inputs.rows;
      block_costs.push_back(static_cast<double>(block.width) * static_cast<double>(1 + std::min(count, batch_tokens)));
    }
    share_units(layer, block_costs, result, [&](long b, LayerResult& unit) {
      const SwiGluBlock& block = blocks[static_cast<std::size_t>(b)];
      // Seeds: a dense MLP keeps the layer's stream, expert e takes stream e + 1, a shared expert the last.
      const Part first{attention_count, !mixture.in_layer(layer) ? 0 : block.expert >= 0 ? block.expert + 1 : mixture.experts + 1};
      const std::vector<long>* tokens = block_tokens(block);
      const auto down = down_inputs.find(block.linears[2]);
      quantize_block(layer, block, first, tokens ? gather_rows(mlp_inputs, *tokens) : mlp_inputs,
                     down == down_inputs.end() ? nullptr : &down->second, mlp_inputs.rows, unit, progress);
    });

    if (layer_output()) {  // q, k, v, o, gate, up, down from their start, jointly on the layer's output
      const Matrix<float> gate_hessian = input_hessian(mlp_inputs);
      const Matrix<float> down_hessian = input_hessian(down_inputs.at(linears[6].name));
      const Matrix<float>& query_hessian = hessians.at(linears[0].name);
      const std::array<const Matrix<float>*, LayerObjective::linear_count> linear_hessians = {
          &query_hessian, &query_hessian, &query_hessian, &hessians.at(linears[3].name), &gate_hessian, &gate_hessian, &down_hessian};
      LayerResult joint;
      share_units(layer, {1.0}, joint, [&](long, LayerResult& unit) {
        train_layer(layer, inputs, targets, std::move(originals), linear_hessians, result.linears, unit, progress);
      });
      std::move(joint.linears.begin(), joint.linears.end(), result.linears.begin());
      result.blocks.insert(result.blocks.end(), joint.blocks.begin(), joint.blocks.end());
    }

    inputs = model_.decoder_layer(layer, inputs);
    result.seconds = seconds_since(start);
    return result;
  }

  /// Quantizes every decoder layer in turn, from the calibration `tokens` cut into sequences of
  /// `sequence_length`, and keeps each completed layer in `output` as unit "layer-<n>". A layer
  /// completed by an earlier run that stopped part-way is read back rather than quantized again.
  /// Each completed layer leaves memory (LlamaModel::release_layer): the model reads its linears
  /// from the layer's unit, exactly as written, so that one layer is in memory at a time. Returns the packed file
  /// (quantized.safetensors): every layer's codes and scales and the format's metadata.
  SafetensorsWriter quantize_layers(const std::vector<TokenId>& tokens, long sequence_length,
                                    const ResumableOutput& output, const LayerFinished& finished = {},
                                    const TrainingProgress& progress = {}) {
    SafetensorsWriter packed;
    for (const auto& [key, value] : format_.metadata(model_.config().hidden_size)) packed.set_metadata(key, value);
    HiddenStates hidden = model_.embed(tokens, sequence_length);
    // The full-precision model's hidden states, where the layer-output objective's target runs on them.
    const bool full_precision_targets = layer_output() && config_.target_inputs == TargetInputs::full_precision;
    HiddenStates full_precision = full_precision_targets ? hidden : HiddenStates{};
    const auto unit_name = [](long layer) { return "layer-" + std::to_string(layer); };
    // A resumed run checks every completed layer before any work: its file as stored, made from
    // the checkpoint's weights of that layer as they are now.
    for (long layer = 0; layer < model_.config().layers; ++layer)
      if (output.completed(unit_name(layer)))
        output.verify(unit_name(layer), layer_fingerprint(layer),
                      "decoder layer " + std::to_string(layer) + "'s weights in " + model_.checkpoint().source());
    const auto start = Clock::now();
    for (long layer = 0; layer < model_.config().layers; ++layer) {
      const std::string unit = unit_name(layer);
      LayerProgress status{model_.config().layers, 0, output.completed(unit) ? output.unit_path(unit) : ""};
      LayerResult result;
      if (status.resumed_from.empty()) {
        result = quantize_layer(layer, hidden, progress, full_precision_targets ? &full_precision : nullptr);
        if (communicator_->rank() == 0)  // the ranks share its file system
          output.store(unit, layer_file(result), layer_fingerprint(layer));
        communicator_->barrier();
      } else if (full_precision_targets) {
        full_precision = model_.decoder_layer(layer, full_precision);  // still the checkpoint's layer
      }
      // The layer leaves memory: from now on its linears are read from its file, as stored.
      const SafetensorsFile file = output.read(unit);
      model_.release_layer(layer, [file, format = format_](const std::string& name, long rows, long cols) {
        Tensor tensor = format.read(file, name, rows, cols);
        return Format::store(tensor, file.path());
      });
      if (!status.resumed_from.empty()) {
        result = read_layer(layer, file);
        hidden = model_.decoder_layer(layer, hidden);
      }
      for (const LinearResult& linear : result.linears) add_packed(packed, linear.name, linear.tensor);
      status.elapsed_seconds = seconds_since(start);
      if (finished) finished(result, status);
    }
    quantize_beyond_layers(hidden, output, packed);
    return packed;
  }

  /// The token embedding and the head as quantize_layers quantized them (where the format does:
  /// a llama.cpp mix), each with its relative error: the head's on H of its input, the
  /// embedding's plain (H = I).
  const std::vector<LinearResult>& beyond_layers() const { return beyond_layers_; }

 private:
  /// After the layers, the token embedding and the head where the format quantizes them, kept as
  /// unit "beyond-layers": the head (the embedding, when tied) by GPTQ (or RTN) on H of its input,
  /// the quantized model's final hidden states `hidden` normed; an untied embedding by RTN, its
  /// rows being looked up rather than multiplied (no H to weigh them). GSQ does not train them.
  void quantize_beyond_layers(const HiddenStates& hidden, const ResumableOutput& output, SafetensorsWriter& packed) {
    const LlamaConfig& config = model_.config();
    const std::string embedding = "model.embed_tokens.weight", head = config.tie_word_embeddings ? embedding : "lm_head.weight";
    std::vector<std::string> names;
    for (const std::string& name : {embedding, head})
      if (format_.quantizes_beyond_layers(name) && std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
    if (names.empty()) return;
    const std::string unit = "beyond-layers";
    const std::string fingerprint = tensors_fingerprint(model_.checkpoint(), [&](const std::string& name) {
      return std::find(names.begin(), names.end(), name) != names.end();
    })["hash"];
    const Method method = config_.method == Method::gsq ? config_.gsq_init : config_.method;
    if (!output.completed(unit)) {
      SafetensorsWriter writer;
      nlohmann::json errors = nlohmann::json::object();  // kept with the unit: a resumed run reports the same
      for (const std::string& name : names) {
        const bool is_head = name == head;
        const Matrix<float> hessian = is_head ? input_hessian(model_.final_normed(hidden)) : identity_hessian(config.hidden_size);
        const Matrix<float> original = is_head ? model_.head() : model_.embedding();
        Tensor tensor = format_.initial(name, original, hessian, is_head ? method : Method::rtn, config_.gptq);
        add_packed(writer, name, tensor);
        errors[name] = HessianObjective<>(original, hessian).relative_error(Format::store(tensor, name));
      }
      writer.set_metadata("errors", errors.dump());
      if (communicator_->rank() == 0) output.store(unit, writer, fingerprint);
      communicator_->barrier();
    } else {
      output.verify(unit, fingerprint, "the embedding and head in " + model_.checkpoint().source());
    }
    const SafetensorsFile file = output.read(unit);
    const auto errors = file.metadata().find("errors");
    require(errors != file.metadata().end(), file.path() + ": no \"errors\" metadata (not a completed " + unit + " unit)");
    const nlohmann::json error_of = nlohmann::json::parse(errors->second);
    beyond_layers_.clear();
    for (std::size_t i = 0; i < names.size(); ++i) {
      const bool is_head = names[i] == head;
      const Matrix<float> original = is_head ? model_.head() : model_.embedding();
      Tensor tensor = format_.read(file, names[i], original.rows, original.cols);
      LinearResult result{names[i], tensor};
      result.error = error_of.at(names[i]).get<double>();
      model_.set_embedding_or_head(is_head, Format::store(tensor, names[i]));
      add_packed(packed, names[i], tensor);
      beyond_layers_.push_back(std::move(result));
    }
  }

  /// The fingerprint of decoder layer `layer`'s tensors in the checkpoint: what its unit was made from.
  std::string layer_fingerprint(long layer) const {
    return tensors_fingerprint(model_.checkpoint(), "model.layers." + std::to_string(layer) + ".")["hash"];
  }

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
    const std::vector<LinearShape> linears = model_.config().linears(layer);
    require(result.linears.size() == linears.size(), file.path() + ": the report does not list the layer's " +
                                                         std::to_string(linears.size()) + " linear layers");
    for (std::size_t i = 0; i < linears.size(); ++i)
      result.linears[i].tensor =
          format_.read(file, LlamaModel::tensor_name(layer, linears[i].name), linears[i].rows, linears[i].cols);
    return result;
  }


  /// Does the units of work whose costs are `costs` spread over the communicator's ranks
  /// (assign_units): `work(unit, unit_result)` for this rank's units (it puts their linears into
  /// the model); the other ranks' units, gathered from them, are put into the model too; every
  /// unit's linears and blocks are appended to `result` in unit order. The units of a phase must
  /// not depend on each other's results.
  template <class Work>
  void share_units(long layer, const std::vector<double>& costs, LayerResult& result, Work&& work) {
    const std::vector<int> owner = assign_units(costs, communicator_->size());
    std::vector<LayerResult> units(costs.size());
    SafetensorsWriter mine;
    nlohmann::json my_records = nlohmann::json::object();
    for (std::size_t unit = 0; unit < costs.size(); ++unit) {
      if (owner[unit] != communicator_->rank()) continue;
      units[unit].layer = layer;
      work(static_cast<long>(unit), units[unit]);  // puts its linears into the model
      if (communicator_->size() == 1) continue;      // nothing to share
      for (const LinearResult& linear : units[unit].linears) add_packed(mine, linear.name, linear.tensor);
      my_records[std::to_string(unit)] = units[unit];
    }
    if (communicator_->size() > 1) {  // the other ranks' units, into the model
      mine.set_metadata("units", my_records.dump());
      std::map<std::string, LinearShape> shapes;
      for (const LinearShape& shape : model_.config().linears(layer)) shapes[LlamaModel::tensor_name(layer, shape.name)] = shape;
      const std::vector<std::vector<std::uint8_t>> gathered = communicator_->all_gather(mine.to_bytes());
      for (int rank = 0; rank < communicator_->size(); ++rank) {
        if (rank == communicator_->rank()) continue;
        const std::vector<std::uint8_t>& bytes = gathered[static_cast<std::size_t>(rank)];
        const SafetensorsFile file = SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "a rank's results");
        const nlohmann::json records = nlohmann::json::parse(file.metadata().at("units"));
        for (const auto& record : records.items()) {
          LayerResult& done = units[std::stoul(record.key())];
          done = record.value().template get<LayerResult>();
          for (LinearResult& linear : done.linears) {
            const LinearShape& shape = shapes.at(linear.name);
            Tensor tensor = format_.read(file, linear.name, shape.rows, shape.cols);
            model_.set_linear_weight(layer, shape.name, Format::store(tensor, linear.name));
            linear.tensor = std::move(tensor);
          }
        }
      }
    }
    for (LayerResult& done : units) {
      std::move(done.linears.begin(), done.linears.end(), std::back_inserter(result.linears));
      result.blocks.insert(result.blocks.end(), done.blocks.begin(), done.blocks.end());
    }
  }

  /// A linear's place for its seeds: its index in the layer's linears (the first of a block's
  /// three for a SwiGLU block) and its stream (0, or an expert's: detail::stream_seed).
  struct Part {
    long index;
    long stream;
  };

  using LayerObjective = DecoderLayerObjective<float>;

  bool layer_output() const { return config_.method == Method::gsq && config_.objective == GsqObjective::layer_output; }

  /// How attention is quantized when not by GSQ on its Hessian objective: GPTQ under GSQ's block
  /// objective (the reference), the layer-output objective's start, or the method itself.
  Method attention_method() const {
    return config_.method != Method::gsq ? config_.method : layer_output() ? config_.gsq_init : Method::gptq;
  }

  TrainConfig part_config(long layer, Part part) const {
    TrainConfig train = config_.train;
    train.seed = detail::part_seed(detail::stream_seed(config_.train.seed, part.stream), layer, part.index);
    return train;
  }

  LogitInit part_init(long layer, Part part) const {
    LogitInit init = config_.logit_init;
    init.seed = detail::part_seed(detail::stream_seed(config_.logit_init.seed + 1, part.stream), layer, part.index);
    return init;
  }

  /// The linears of one unit of work, quantized together: a linear alone, a SwiGLU block's gate,
  /// up and down, or a dense layer's seven, in their objective's order.
  template <std::size_t N>
  struct LinearGroup {
    std::array<std::string, N> linears;            // names in the layer ("mlp.gate_proj", ...)
    std::array<Matrix<float>, N> weights;          // full precision
    std::array<const Matrix<float>*, N> hessians;  // calibration H: each linear's error is measured on it
    std::array<Tensor, N> starts;                  // RTN or GPTQ, or the group's results so far
    std::array<double, N> seconds{};               // spent on the starts
    Part first;                                    // linear i draws its noise at {first.index + i, first.stream}
    bool stored_starts = false;                    // the starts are results as stored (scales rounded)
  };

  /// Group `linears` of decoder layer `layer`: their weights taken from the model, each started by
  /// `method` on its weight and H (shown to the observer).
  template <std::size_t N>
  LinearGroup<N> start_group(long layer, const std::array<std::string, N>& linears,
                             const std::array<const Matrix<float>*, N>& hessians, Method method, Part first) const {
    LinearGroup<N> group{linears, {}, hessians, {}, {}, first};
    for (std::size_t i = 0; i < N; ++i) {
      const auto start = Clock::now();
      group.weights[i] = model_.linear_weight(layer, linears[i]);
      if (observer_) observer_(LlamaModel::tensor_name(layer, linears[i]), group.weights[i], *hessians[i]);
      group.starts[i] = format_.initial(LlamaModel::tensor_name(layer, linears[i]), group.weights[i], *hessians[i], method, config_.gptq);
      group.seconds[i] = seconds_since(start);
    }
    return group;
  }

  /// The one routine every unit of work goes through: quantizes `group` and puts it into the
  /// model. With a `joint` objective (a pointer to one) over the group's weights (value_and_gradient over N weights,
  /// relative_error of N host matrices), GSQ trains the group on it, and the trained result
  /// replaces the starts only if the objective finds it better (a short run can end above its
  /// start), judged in the starts' precision; `block`, if given, receives the objective's error
  /// of the starts and of the result kept. Without one (nullptr), the starts are the result. Each
  /// linear's error is its Hessian error as stored.
  template <std::size_t N, class Joint>
  std::array<LinearResult, N> quantize_group(long layer, LinearGroup<N>& group, Joint joint, const std::string& part,
                                              BlockResult* block, const TrainingProgress& progress) {
    const auto start = Clock::now();
    std::array<LinearResult, N> results;
    std::vector<HessianObjective<>> objectives;
    for (std::size_t i = 0; i < N; ++i) {
      results[i].name = LlamaModel::tensor_name(layer, group.linears[i]);
      objectives.emplace_back(group.weights[i], *group.hessians[i]);
    }
    std::array<Tensor, N>& tensors = group.starts;
    if constexpr (!std::is_null_pointer_v<Joint>) {
      const std::array<Matrix<float>, N> started = array_of<N>([&](std::size_t i) { return dequantize(tensors[i]); });
      for (std::size_t i = 0; i < N; ++i) results[i].init_error = objectives[i].relative_error(started[i]);
      const double init_error = joint->relative_error(started);
      std::array<Gsq, N> quantizers = array_of<N>([&](std::size_t i) {
        return Format::quantizer(tensors[i], part_init(layer, {group.first.index + static_cast<long>(i), group.first.stream}));
      });
      const auto trained_at = Clock::now();
      const TrainReport report = std::apply([&](auto&... each) {
        return train_jointly<typename Format::Optimizer>(
            *joint, part_config(layer, group.first), [&](const StepReport& step) { if (progress) progress(layer, part, step); },
            each...);
      }, quantizers);
      if (block) {
        block->train_seconds = seconds_since(trained_at);
        block->step_seconds = report.median_step_seconds();
      }
      std::array<Tensor, N> trained = array_of<N>([&](std::size_t i) { return Format::result(quantizers[i], tensors[i]); });
      const std::array<Matrix<float>, N> judged = array_of<N>([&](std::size_t i) {
        return group.stored_starts ? Format::store(trained[i], results[i].name) : dequantize(trained[i]);
      });
      if (joint->relative_error(judged) < init_error) tensors = std::move(trained);
      if (block) block->init_error = init_error;
    }
    const std::array<Matrix<float>, N> stored = array_of<N>([&](std::size_t i) { return Format::store(tensors[i], results[i].name); });
    if constexpr (!std::is_null_pointer_v<Joint>)
      if (block) block->error = joint->relative_error(stored);
    const double seconds = seconds_since(start) / static_cast<double>(N);
    for (std::size_t i = 0; i < N; ++i) {
      results[i].error = objectives[i].relative_error(stored[i]);
      results[i].tensor = std::move(tensors[i]);
      results[i].seconds = group.seconds[i] + seconds;
      model_.set_linear_weight(layer, group.linears[i], stored[i]);
    }
    return results;
  }

  /// RTN, GPTQ, or GSQ on the Hessian objective for one linear layer.
  LinearResult quantize_linear(long layer, const std::string& linear, Part part, const Matrix<float>& hessian, Method method,
                               const TrainingProgress& progress) {
    LinearGroup<1> group = start_group<1>(layer, {linear}, {&hessian}, method == Method::gsq ? config_.gsq_init : method, part);
    if (method != Method::gsq) return quantize_group(layer, group, nullptr, linear, nullptr, progress)[0];
    HessianObjective<> objective(group.weights[0], hessian);
    detail::SingleWeightObjective<HessianObjective<>> joint{objective};
    return quantize_group(layer, group, &joint, linear, nullptr, progress)[0];
  }

  /// An expert with too few calibration tokens: RTN on its weights alone (H = `identity`), so
  /// that it is quantized like every other; its error is measured there.
  LinearResult quantize_without_data(long layer, const std::string& linear, const Matrix<float>& identity) {
    LinearGroup<1> group = start_group<1>(layer, {linear}, {&identity}, Method::rtn, {0, 0});
    LinearResult result = quantize_group(layer, group, nullptr, linear, nullptr, {})[0];
    result.fallback = true;
    return result;
  }

  /// Quantizes SwiGLU block `block` from its calibration inputs `inputs` (the rows of the MLP's
  /// input it is calibrated on, of `layer_tokens`; `down_inputs`: its down projection's inputs if
  /// the forward pass recorded them): GSQ of gate, up and down trained jointly on the block's
  /// output, in mini-batches the size the whole layer's calibration set is cut into; or each
  /// projection on its own; a routed expert with too few tokens without data.
  void quantize_block(long layer, const SwiGluBlock& block, Part first, const Matrix<float>& inputs,
                      const Matrix<float>* down_inputs, long layer_tokens, LayerResult& result, const TrainingProgress& progress) {
    const std::size_t first_linear = result.linears.size();
    const double min_tokens = config_.expert_min_tokens * static_cast<double>(layer_tokens);
    if (block.expert >= 0 && (inputs.rows == 0 || static_cast<double>(inputs.rows) < min_tokens)) {
      const Matrix<float> input_identity = identity_hessian(model_.config().hidden_size), down_identity = identity_hessian(block.width);
      for (std::size_t j = 0; j < 3; ++j)
        result.linears.push_back(quantize_without_data(layer, block.linears[j], j == 2 ? down_identity : input_identity));
    } else {
      // H of gate/up's input and of down's, before any of the block is quantized.
      const Matrix<float> gate_hessian = input_hessian(inputs);
      const Matrix<float> down_hessian =
          input_hessian(down_inputs ? *down_inputs : model_.swiglu_activations(layer, block, inputs));
      if (config_.method == Method::gsq && config_.objective == GsqObjective::block) {
        LinearGroup<3> group = start_group<3>(layer, block.linears, {&gate_hessian, &gate_hessian, &down_hessian}, config_.gsq_init, first);
        const long batch_tokens = std::min(inputs.rows, std::max(1L, layer_tokens / config_.block_batches));
        SwiGluBlockObjective<> objective(group.weights[0], group.weights[1], group.weights[2], inputs, batch_tokens);
        BlockResult trained{block.name, inputs.rows};
        for (LinearResult& linear : quantize_group(layer, group, &objective, block.name, &trained, progress))
          result.linears.push_back(std::move(linear));
        result.blocks.push_back(trained);
      } else {  // each on its own; the layer-output objective's start
        for (long j = 0; j < 3; ++j)
          result.linears.push_back(quantize_linear(layer, block.linears[static_cast<std::size_t>(j)], {first.index + j, first.stream},
                                                   j == 2 ? down_hessian : gate_hessian,
                                                   layer_output() ? config_.gsq_init : config_.method, progress));
      }
    }
    if (block.expert >= 0)
      for (std::size_t i = first_linear; i < result.linears.size(); ++i) result.linears[i].tokens = inputs.rows;
  }

  /// GSQ of a dense layer's seven linears (q, k, v, o, gate, up, down) trained jointly on the
  /// layer's output over `inputs` against `targets`, from their results so far (`started`, in
  /// that order); each linear's error is its Hessian error against its full-precision weight
  /// (`originals`).
  void train_layer(long layer, const HiddenStates& inputs, const Matrix<float>& targets,
                   std::array<Matrix<float>, LayerObjective::linear_count> originals,
                   const std::array<const Matrix<float>*, LayerObjective::linear_count>& hessians,
                   const std::vector<LinearResult>& started, LayerResult& result, const TrainingProgress& progress) {
    constexpr std::size_t count = LayerObjective::linear_count;
    LinearGroup<count> group{LayerObjective::linear_names(), std::move(originals), hessians,
                             array_of<count>([&](std::size_t i) { return detail::as_tensor<Tensor>(started[i].tensor); }),
                             array_of<count>([&](std::size_t i) { return started[i].seconds; }), {0, 0}, true};
    LayerObjective objective(model_, layer, inputs, targets, std::max(1L, inputs.sequences() / config_.block_batches));
    BlockResult trained{"layer", inputs.values.rows};
    for (LinearResult& linear : quantize_group(layer, group, &objective, "layer", &trained, progress))
      result.linears.push_back(std::move(linear));
    result.blocks.push_back(trained);
  }

  LlamaModel& model_;
  ModelQuantizationConfig config_;
  const Communicator* communicator_;
  LinearObserver observer_;
  Format format_;
  std::vector<LinearResult> beyond_layers_;
};

}  // namespace gsq
