// gsq/pipeline/sensitivity.hpp -- what each tensor of a model's file costs and does to the model's
// output in each candidate type: its bytes, and the divergence of the original model with only
// that tensor quantized into the type (by GPTQ, or RTN, on the calibration H of the tensor's
// inputs, as the run starts it), compared with the original prediction by prediction on
// calibration windows (mean KL). What a size budget is solved from (gsq/pipeline/budget.hpp);
// measured once and kept as JSON, so that another budget costs no new measurement. Two files:
//
//   gsq::SensitivityTable gguf = gsq::sensitivity_table(config, checkpoint, {gsq::GgmlType::Q2_K, ...});
//   gsq::SensitivityTable hf = gsq::sensitivity_table(config, checkpoint, {gsq::grid_scheme_named("int4-g128", ""), ...});
//   gsq::measure_sensitivity(model, gguf, calibration, options);   // fills each choice's KL
//
// A llama.cpp file ("gguf"): ggml types for every tensor of the GGUF, the embedding and head
// included, each candidate taken as llama-quantize would write it for the tensor's rows (Q4_K
// becomes Q5_0 for rows that are not whole super-blocks). A compressed-tensors checkpoint: grid
// schemes for the decoder linears, the linears an engine fuses (q/k/v, gate/up: those that read
// one input) one unit of one scheme, the rest of the file in its checkpoint's precision. Either
// way a layer's experts are stacked: each projection of them all takes one type. Cost: per tensor
// and type, a forward pass of the measured windows from the tensor's layer up and a head product;
// the original's hidden states at every layer and its logits on those windows are kept.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/common/error.hpp"
#include "gsq/common/memory.hpp"
#include "gsq/format/ggml_types.hpp"
#include "gsq/format/llama_quantize_mix.hpp"
#include "gsq/io/atomic_file.hpp"
#include "gsq/io/fingerprint.hpp"
#include "gsq/io/regular_file.hpp"
#include "gsq/io/safetensors.hpp"
#include "gsq/model/comparison.hpp"
#include "gsq/model/gguf_layout.hpp"
#include "gsq/model/layer_divergence.hpp"
#include "gsq/model/llama.hpp"
#include "gsq/objective/hessian.hpp"
#include "gsq/objective/input_hessian.hpp"
#include "gsq/pipeline/ggml_mix.hpp"
#include "gsq/pipeline/ggml_mix_format.hpp"
#include "gsq/pipeline/grid_mix_format.hpp"
#include "gsq/pipeline/method.hpp"
#include "gsq/policy/grid_scheme.hpp"

namespace gsq {

/// One candidate type of a tensor: its bytes in the file, and what it does alone.
struct SensitivityChoice {
  std::string type;             // a ggml type ("Q4_K") in a gguf table, a grid scheme ("int4-g128") in a compressed-tensors one
  std::uint64_t bytes = 0;
  double kl = 0, kl_error = 0;  // mean KL(P_original || P) with only this tensor in this type, nats, and its standard error
  double error = 0;             // the tensor's relative Hessian error in this type (gsq/objective/hessian.hpp)
};

/// A tensor of the model's file whose type a budget chooses. In a GGUF: a decoder linear, a
/// projection of every routed expert of a layer (GGUF stacks them: one type), the token embedding
/// or the head (a tied model's one tensor is its token_embd). In a compressed-tensors checkpoint:
/// the linears an engine fuses (q/k/v; gate/up, of every expert of a layer), or one linear.
struct TensorSensitivity {
  std::string name;                     // llama.cpp's name ("blk.3.ffn_down_exps.weight"), or its linears' ("model.layers.3.self_attn.q_proj+k_proj+v_proj")
  std::vector<std::string> checkpoint;  // the checkpoint tensors it is written from
  long cols = 0;                        // inputs of each of them, all alike
  std::uint64_t parameters = 0;         // weights of them all
  std::vector<SensitivityChoice> choices;  // by increasing bytes
};

/// Every tensor a budget chooses for, with its candidates, and the rest of the file.
struct SensitivityTable {
  std::string format = "gguf";    // the file the bytes are of: "gguf" or "compressed-tensors"
  nlohmann::json settings;        // what the measurement depends on: a kept table serves only a run with the same
  std::uint64_t fixed_bytes = 0;  // the tensors every file keeps in float: norms, biases (compressed-tensors: embedding, head, routers too)
  std::uint64_t parameters = 0;   // of every tensor of the file
  std::vector<TensorSensitivity> tensors;
  bool measured = false;
};

/// How measure_sensitivity quantizes and measures.
struct SensitivityOptions {
  Method method = Method::gptq;  // each tensor's quantization: GPTQ or RTN (the token embedding always RTN, as a run does)
  GptqConfig gptq;
  double expert_min_tokens = 0.005;  // an expert routed fewer than this share of the tokens: RTN on H = I, as a run does
  long window = 256;             // calibration windows of this many tokens ...
  long windows = 8;              // ... the first this many measured
  /// Hears of each tensor measured: it, and the tensors done and in all.
  std::function<void(const TensorSensitivity&, long done, long total)> on_tensor;
};

inline void to_json(nlohmann::json& json, const SensitivityTable& table) {
  nlohmann::json tensors = nlohmann::json::array();
  for (const TensorSensitivity& tensor : table.tensors) {
    nlohmann::json choices = nlohmann::json::array();
    for (const SensitivityChoice& choice : tensor.choices)
      choices.push_back({{"type", choice.type}, {"bytes", choice.bytes}, {"kl", choice.kl}, {"kl_error", choice.kl_error},
                         {"rel_error", choice.error}});
    tensors.push_back({{"name", tensor.name}, {"checkpoint", tensor.checkpoint}, {"cols", tensor.cols},
                       {"parameters", tensor.parameters}, {"choices", choices}});
  }
  json = {{"format", table.format}, {"settings", table.settings}, {"fixed_bytes", table.fixed_bytes}, {"parameters", table.parameters},
          {"measured", table.measured}, {"tensors", tensors}};
}

inline void from_json(const nlohmann::json& json, SensitivityTable& table) {
  table.format = json.at("format").get<std::string>();
  table.settings = json.at("settings");
  table.fixed_bytes = json.at("fixed_bytes").get<std::uint64_t>();
  table.parameters = json.at("parameters").get<std::uint64_t>();
  table.measured = json.at("measured").get<bool>();
  table.tensors.clear();
  for (const nlohmann::json& tensor : json.at("tensors")) {
    TensorSensitivity read{tensor.at("name"), tensor.at("checkpoint").get<std::vector<std::string>>(), tensor.at("cols"),
                           tensor.at("parameters"), {}};
    for (const nlohmann::json& choice : tensor.at("choices"))
      read.choices.push_back({choice.at("type").get<std::string>(), choice.at("bytes").get<std::uint64_t>(), choice.at("kl").get<double>(),
                              choice.at("kl_error").get<double>(), choice.at("rel_error").get<double>()});
    table.tensors.push_back(std::move(read));
  }
}

namespace detail {

/// Candidates by increasing bytes (ties in the given order); an error names a tensor none fits.
inline void sort_choices(TensorSensitivity& tensor) {
  require(!tensor.choices.empty(), tensor.name + " has rows of " + std::to_string(tensor.cols) +
                                       " values, which none of the candidate types holds");
  std::stable_sort(tensor.choices.begin(), tensor.choices.end(),
                   [](const SensitivityChoice& a, const SensitivityChoice& b) { return a.bytes < b.bytes; });
}

inline void require_budget_model(const LlamaConfig& config, bool candidates) {
  require(!config.latent_attention(), "a size budget is measured on models with grouped-query attention so far, not on " +
                                          config.architecture + "'s latent attention");
  require(candidates, "a size budget needs at least one candidate type");
}

}  // namespace detail

/// The tensors of the GGUF of the model (`config`, its tensors in `checkpoint`) a budget chooses
/// a type for, each with the candidates as llama-quantize writes them for its rows (by increasing
/// bytes; a candidate no row fits is left out), and the bytes of the rest; not yet measured.
inline SensitivityTable sensitivity_table(const LlamaConfig& config, const Checkpoint& checkpoint,
                                          const std::vector<GgmlType>& candidates) {
  detail::require_budget_model(config, !candidates.empty());
  for (GgmlType type : candidates) require_ggml_type_written(type, "the budget's candidates");
  std::map<std::string, bool> linear;
  for (long layer = 0; layer < config.layers; ++layer)
    for (const std::string& name : config.linear_names(layer)) linear[LlamaModel::tensor_name(layer, name)] = true;
  SensitivityTable table;
  for (const GgufTensorLayout& tensor : gguf_layout(config)) {
    const std::vector<std::int64_t> shape = tensor.gguf_shape(config);
    std::uint64_t count = 1;
    for (std::int64_t extent : shape) count *= static_cast<std::uint64_t>(extent);
    table.parameters += count;
    const std::string& name = tensor.checkpoint.front();
    if (!(tensor.gguf == "token_embd.weight" || tensor.gguf == "output.weight" || (linear.count(name) && shape.size() > 1))) {
      const GgmlType kept = shape.size() == 1 ? GgmlType::F32 : detail::float_ggml_type(checkpoint.info(name).dtype);
      table.fixed_bytes += ggml_bytes(kept, count);
      continue;
    }
    TensorSensitivity budgeted{tensor.gguf, tensor.checkpoint, tensor.shape[1], count, {}};
    for (GgmlType candidate : candidates) {
      const std::string type = ggml_type_name(static_cast<std::uint32_t>(llama_quantize_fallback(candidate, budgeted.cols)));
      const bool seen = std::any_of(budgeted.choices.begin(), budgeted.choices.end(),
                                    [&](const SensitivityChoice& choice) { return choice.type == type; });
      if (type != "F16" && !seen) budgeted.choices.push_back({type, ggml_bytes(ggml_type_named(type, type), count), 0, 0, 0});
    }
    detail::sort_choices(budgeted);
    table.tensors.push_back(std::move(budgeted));
  }
  if (config.rotary.type == "llama3") table.fixed_bytes += 4 * static_cast<std::uint64_t>(config.head_dim / 2);  // rope_freqs
  return table;
}

/// The units of the model's compressed-tensors checkpoint a budget chooses a grid scheme for: the
/// linears of a decoder layer that read one input (q/k/v, gate/up: what vLLM fuses and runs in
/// one scheme), a layer's experts stacked by projection; each with the candidates whose groups
/// divide its rows (by increasing bytes), and the bytes of every other tensor as the checkpoint
/// stores it (embedding, head, norms, routers).
inline SensitivityTable sensitivity_table(const LlamaConfig& config, const Checkpoint& checkpoint,
                                          const std::vector<GridScheme>& candidates) {
  detail::require_budget_model(config, !candidates.empty());
  SensitivityTable table;
  table.format = "compressed-tensors";
  std::map<std::string, bool> quantized;
  for (long layer = 0; layer < config.layers; ++layer) {
    std::vector<TensorSensitivity> units;
    std::map<std::string, std::size_t> unit_of;  // by the unit's first linear, experts' index as "*"
    const auto stacked = [](std::string name) {  // "block_sparse_moe.experts.3.w1" -> "block_sparse_moe.experts.*.w1"
      const auto experts = name.find(".experts.");
      if (experts != std::string::npos) name.replace(experts + 9, name.find('.', experts + 9) - experts - 9, "*");
      return name;
    };
    const std::string prefix = "model.layers." + std::to_string(layer) + ".";
    for (const LinearShape& linear : config.linears(layer)) {
      const std::string key = stacked(linear.input_of.empty() ? linear.name : linear.input_of), member = stacked(linear.name);
      const auto [found, added] = unit_of.try_emplace(key, units.size());
      if (added) units.push_back({prefix + member, {}, linear.cols, 0, {}});
      TensorSensitivity& unit = units[found->second];
      const std::string joined = "+" + member.substr(member.rfind('.') + 1);  // "...q_proj+k_proj+v_proj"
      if (member != key && unit.name.find(joined) == std::string::npos) unit.name += joined;
      unit.checkpoint.push_back(LlamaModel::tensor_name(layer, linear.name));
      unit.parameters += static_cast<std::uint64_t>(linear.rows * linear.cols);
    }
    for (TensorSensitivity& unit : units) {
      for (const GridScheme& scheme : candidates) {
        if (unit.cols % scheme.group_width(unit.cols) != 0) continue;
        std::uint64_t bytes = 0;
        for (const std::string& name : unit.checkpoint) {
          const std::vector<std::int64_t>& shape = checkpoint.info(name).shape;
          bytes += pack_quantized_bytes(scheme, static_cast<long>(shape[0]), static_cast<long>(shape[1]));
        }
        unit.choices.push_back({scheme.name(), bytes, 0, 0, 0});
      }
      detail::sort_choices(unit);
      for (const std::string& name : unit.checkpoint) quantized[name] = true;
      table.tensors.push_back(std::move(unit));
    }
  }
  for (const std::string& name : checkpoint.tensor_names()) {
    const TensorInfo& info = checkpoint.info(name);
    std::uint64_t count = 1;
    for (std::int64_t extent : info.shape) count *= static_cast<std::uint64_t>(extent);
    table.parameters += count;
    if (!quantized.count(name)) table.fixed_bytes += count * static_cast<std::uint64_t>(dtype_size(info.dtype));
  }
  return table;
}

/// What a measurement of `table` depends on: the model's tensors, the calibration tokens, the
/// candidates and `options`.
inline nlohmann::json sensitivity_settings(const SensitivityTable& table, const Checkpoint& checkpoint,
                                           const std::vector<TokenId>& calibration, const SensitivityOptions& options) {
  nlohmann::json candidates = nlohmann::json::object();
  for (const TensorSensitivity& tensor : table.tensors)
    for (const SensitivityChoice& choice : tensor.choices) candidates[choice.type] = true;
  nlohmann::json types = nlohmann::json::array();
  for (const auto& [type, used] : candidates.items()) types.push_back(type);
  return {{"model", tensors_fingerprint(checkpoint, [](const std::string&) { return true; })},
          {"calibration", fingerprint_bytes(calibration.data(), calibration.size() * sizeof(TokenId))},
          {"format", table.format},
          {"types", types},
          {"method", method_name(options.method)},
          {"percdamp", options.gptq.percdamp},
          {"act_order", options.gptq.act_order},
          {"expert_min_tokens", options.expert_min_tokens},
          {"scale_search", scale_fit_name(options.gptq.scale_fit)},
          {"window", options.window},
          {"windows", options.windows}};
}

namespace detail {

/// `weight`, tensor `name`, quantized into `type` of a `format` table (by `method` on `hessian`)
/// and stored as the file holds it.
inline Matrix<float> quantized_in(const std::string& format, const std::string& type, const std::string& name, const Matrix<float>& weight,
                                  const Matrix<float>& hessian, Method method, const GptqConfig& gptq) {
  if (format == "gguf") {
    const GgmlMixFormat mix({{name, ggml_type_named(type, name)}});
    QuantizedLinear tensor = mix.initial(name, weight, hessian, method, gptq);
    return GgmlMixFormat::store(tensor, name);
  }
  const GridMixFormat mix({{name, grid_scheme_named(type, name)}});
  QuantizedTensor tensor = mix.initial(name, weight, hessian, method, gptq);
  return GridMixFormat::store(tensor, name);
}

}  // namespace detail

/// Bytes measure_sensitivity keeps: the original's hidden states at every layer and its logits
/// on the measured windows, and the calibration's hidden states.
inline double sensitivity_bytes(const LlamaConfig& config, long calibration_tokens, const SensitivityOptions& options) {
  const double predictions = static_cast<double>(options.windows) * static_cast<double>(options.window - 1);
  return layer_divergence_bytes(config, options.window, options.windows) + 4.0 * predictions * static_cast<double>(config.vocab_size) +
         config.forward_bytes(calibration_tokens, options.window);
}

/// Measures every choice of `table` on `model` (every layer in memory: changed one tensor at a
/// time and put back, bit for bit): H of each tensor's inputs from the original model on all of
/// `calibration` (windows of options.window), the divergence on its first options.windows windows.
/// The result does not depend on the thread count.
inline void measure_sensitivity(LlamaModel& model, SensitivityTable& table, const std::vector<TokenId>& calibration,
                                const SensitivityOptions& options) {
  const LlamaConfig& config = model.config();
  require(options.window >= 2 && options.windows > 0, "the sensitivity is measured on at least one window of at least 2 tokens");
  require_memory(sensitivity_bytes(config, static_cast<long>(calibration.size()), options),
                 "each tensor's sensitivity on " + std::to_string(options.windows) + " windows of " + std::to_string(options.window) +
                     " tokens");
  EvaluationOptions measured;
  measured.window = options.window;
  measured.max_windows = options.windows;
  const detail::OriginalStates kept = detail::original_states(model, calibration, measured);
  const EvaluationWindows& windows = kept.windows;
  std::vector<Matrix<float>> reference;
  for (const std::vector<HiddenStates>& states : kept.states) reference.push_back(model.logits(states.back()));
  const long vocabulary = config.vocab_size;

  // The model as it now is against the original, run from layer `first` up on input_of(batch).
  const auto divergence = [&](long first, const std::function<HiddenStates(std::size_t)>& input_of) {
    std::vector<double> kl(static_cast<std::size_t>(windows.predictions()));
    for (std::size_t b = 0; b < kept.states.size(); ++b) {
      HiddenStates hidden = input_of(b);
      for (long layer = first; layer < config.layers; ++layer) hidden = model.decoder_layer(layer, hidden);
      const Matrix<float> logits = model.logits(hidden);
      const long first_window = static_cast<long>(b) * kept.batch, count = hidden.values.rows / windows.inputs();
#pragma omp parallel for
      for (long w = 0; w < count; ++w)
        for (long t = 0; t < windows.inputs(); ++t) {
          const long row = w * windows.inputs() + t;
          kl[static_cast<std::size_t>(windows.prediction_index(first_window + w, t))] =
              compare_prediction(logits.data() + row * vocabulary, reference[b].data() + row * vocabulary, vocabulary,
                                 windows.next_token(calibration, first_window + w, t)).kl;
        }
    }
    return detail::mean_and_error(kl);
  };
  const auto batch_tokens = [&](std::size_t b) {
    const long first = static_cast<long>(b) * kept.batch, count = kept.states[b].front().values.rows / windows.inputs();
    std::vector<TokenId> tokens;
    for (long w = first; w < first + count; ++w)
      tokens.insert(tokens.end(), calibration.begin() + w * windows.window, calibration.begin() + w * windows.window + windows.inputs());
    return tokens;
  };

  // One checkpoint tensor of a measured GGUF tensor: its weight, H, how it is quantized, and how
  // the model takes a replacement.
  struct Part {
    Matrix<float> weight, hessian;
    Method method;
    std::function<void(const Matrix<float>&)> put;
  };
  long done = 0;
  const auto measure = [&](TensorSensitivity& tensor, const std::vector<Part>& parts, long first,
                           const std::function<HiddenStates(std::size_t)>& input_of) {
    for (SensitivityChoice& choice : tensor.choices) {
      choice.error = 0;
      for (std::size_t i = 0; i < parts.size(); ++i) {
        const Part& part = parts[i];
        const Matrix<float> quantized =
            detail::quantized_in(table.format, choice.type, tensor.checkpoint[i], part.weight, part.hessian, part.method, options.gptq);
        choice.error += HessianObjective<>(part.weight, part.hessian).relative_error(quantized) / static_cast<double>(parts.size());
        part.put(quantized);
      }
      std::tie(choice.kl, choice.kl_error) = divergence(first, input_of);
      for (const Part& part : parts) part.put(part.weight);
    }
    if (options.on_tensor) options.on_tensor(tensor, ++done, static_cast<long>(table.tensors.size()));
  };
  const auto tensor_named = [&](const std::string& name) -> TensorSensitivity* {  // null: the file keeps it in float
    const auto found = std::find_if(table.tensors.begin(), table.tensors.end(),
                                    [&](const TensorSensitivity& tensor) { return tensor.name == name; });
    return found == table.tensors.end() ? nullptr : &*found;
  };

  const Matrix<float> original_embedding = model.embedding();
  TensorSensitivity* embedding = config.tie_word_embeddings ? nullptr : tensor_named("token_embd.weight");
  if (embedding)  // the embedding by RTN on H = I, as a run quantizes it
    measure(*embedding,
            {{original_embedding, identity_hessian(config.hidden_size), Method::rtn,
              [&](const Matrix<float>& weight) { model.set_embedding_or_head(false, weight); }}},
            0, [&](std::size_t b) { return model.embed(batch_tokens(b), windows.inputs()); });
  HiddenStates hidden = model.embed(calibration, options.window);
  const double tokens = static_cast<double>(hidden.values.rows);
  for (long layer = 0; layer < config.layers; ++layer) {
    // H of each linear's inputs (an expert's: the tokens routed to it), and how many there were.
    std::map<std::string, Matrix<float>> hessians;
    std::map<std::string, long> rows;
    HiddenStates next = model.decoder_layer(layer, hidden, [&](long, const std::string& linear, const Matrix<float>& x) {
      if (!hessians.count(linear) && x.rows > 0) hessians[linear] = input_hessian(x);
      rows[linear] = x.rows;
    });
    std::map<std::string, LinearShape> linears;  // by checkpoint tensor name
    for (const LinearShape& linear : config.linears(layer)) linears[LlamaModel::tensor_name(layer, linear.name)] = linear;
    for (TensorSensitivity& tensor : table.tensors) {
      if (!linears.count(tensor.checkpoint.front())) continue;
      std::vector<Part> parts;
      for (const std::string& name : tensor.checkpoint) {
        const LinearShape& linear = linears.at(name);
        const std::string& input = linear.input_of.empty() ? linear.name : linear.input_of;
        const bool routed = rows.count(input) && static_cast<double>(rows.at(input)) >= options.expert_min_tokens * tokens;
        parts.push_back({model.linear_weight(layer, linear.name), routed ? hessians.at(input) : identity_hessian(linear.cols),
                         routed ? options.method : Method::rtn,
                         [&model, layer, name = linear.name](const Matrix<float>& weight) { model.set_linear_weight(layer, name, weight); }});
      }
      measure(tensor, parts, layer + 1,
              [&](std::size_t b) { return model.decoder_layer(layer, kept.states[b][static_cast<std::size_t>(layer)]); });
    }
    hidden = std::move(next);
  }
  // The head (a tied model's embedding too) by the run's method on H of its input.
  const bool tied = config.tie_word_embeddings;
  if (TensorSensitivity* head = tensor_named(tied ? "token_embd.weight" : "output.weight"))
    measure(*head,
          {{tied ? original_embedding : model.head(), input_hessian(model.final_normed(hidden)), options.method,
            [&](const Matrix<float>& weight) { model.set_embedding_or_head(true, weight); }}},
          tied ? 0 : config.layers,
          [&](std::size_t b) { return tied ? model.embed(batch_tokens(b), windows.inputs()) : kept.states[b].back(); });
  table.measured = true;
}

/// `table` kept at `path` (atomically).
inline void save_sensitivity(const std::string& path, const SensitivityTable& table) { write_json_atomically(path, table); }

/// The table kept at `path`, if its settings are `settings` (a measurement of this model on these
/// tokens with these candidates and options); an error names what differs.
inline SensitivityTable load_sensitivity(const std::string& path, const nlohmann::json& settings) {
  SensitivityTable table;
  try {
    table = nlohmann::json::parse(read_regular_file(path, "--sensitivity"));
  } catch (const nlohmann::json::exception& error) {
    throw Error(path + ": not a sensitivity table gsq wrote (" + error.what() + ")");
  }
  require(table.measured, path + ": a sensitivity table that was never measured");
  for (const auto& [key, value] : settings.items())
    require(table.settings.contains(key) && table.settings.at(key) == value,
            path + " was measured with other settings than this run's (its " + key +
                " differs): give another file, or remove this one to measure again");
  return table;
}

}  // namespace gsq
