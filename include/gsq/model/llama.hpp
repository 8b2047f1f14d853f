// gsq/model/llama.hpp -- a Llama-family causal language model on the host: a Hugging Face checkpoint's
// config and weights, and its forward pass in the pieces layer-by-layer quantization needs.
//
// Architectures: LlamaForCausalLM, MistralForCausalLM (the same layout) and Qwen2ForCausalLM
// (q/k/v biases). Each decoder layer is
//   h = x + o_proj(attention(rope(q_proj(n)), rope(k_proj(n)), v_proj(n))),  n = rms_norm(x)
//   y = h + down_proj(silu(gate_proj(m)) * up_proj(m)),                        m = rms_norm(h)
// with grouped-query causal attention and rotary embeddings in Hugging Face's convention.
//
//   gsq::LlamaModel model = gsq::LlamaModel::load("data/llama-bytes-3m");
//   gsq::HiddenStates hidden = model.embed(tokens, 256);        // tokens: whole windows of 256
//   for (long layer = 0; layer < model.config().layers; ++layer)
//     hidden = model.decoder_layer(layer, hidden, observer);    // observer sees each linear's input
//   gsq::Matrix<float> logits = model.logits(hidden);           // tokens x vocabulary
//
//   gsq::Matrix<float> w = model.linear_weight(0, "mlp.down_proj");   // out x in, as in PyTorch
//   model.set_linear_weight(0, "mlp.down_proj", dequantized);         // swap in a quantized one
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/backend/host.hpp"
#include "gsq/common/error.hpp"
#include "gsq/common/matrix.hpp"
#include "gsq/common/memory.hpp"
#include "gsq/io/safetensors.hpp"

namespace gsq {

/// A token id as models and token streams hold it.
using TokenId = std::uint32_t;

/// Throws gsq::Error unless each of the `count` ids is below `vocabulary_size`, naming the
/// position of the first that is not.
inline void require_token_ids_below(const TokenId* tokens, std::size_t count, long vocabulary_size) {
  const TokenId* bad = std::find_if(tokens, tokens + count,
                                    [&](TokenId id) { return static_cast<long>(id) >= vocabulary_size; });
  if (bad != tokens + count)
    throw Error("token id " + std::to_string(*bad) + " at position " + std::to_string(bad - tokens) +
                " is not below the vocabulary size " + std::to_string(vocabulary_size));
}

namespace detail {
/// The index of the first NaN or Inf among `count` values, or -1.
inline long first_non_finite(const float* values, std::size_t count) {
  const float* bad = std::find_if(values, values + count, [](float value) { return !std::isfinite(value); });
  return bad == values + count ? -1 : static_cast<long>(bad - values);
}
}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Configuration.

/// Rotary position embedding settings: the base `theta` and the frequency scaling `type`
/// ("default": none; "linear": every frequency divided by `factor`; "llama3": Llama 3.1's
/// wavelength-dependent scaling by `factor`, `low_freq_factor`, `high_freq_factor` and
/// `original_max_position_embeddings`).
struct RotaryConfig {
  std::string type = "default";
  double theta = 10000.0;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  double original_max_position_embeddings = 8192.0;
};

/// What a Hugging Face config.json says about a Llama-family model.
struct LlamaConfig {
  std::string architecture;  // "LlamaForCausalLM", "MistralForCausalLM" or "Qwen2ForCausalLM"
  long vocab_size = 0;
  long hidden_size = 0;
  long intermediate_size = 0;
  long layers = 0;
  long attention_heads = 0;
  long key_value_heads = 0;
  long head_dim = 0;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;     // q/k/v projections carry biases (Qwen2; Llama's attention_bias)
  bool output_bias = false;  // o_proj carries a bias (Llama's attention_bias)
  bool mlp_bias = false;     // gate/up/down carry biases (Llama's mlp_bias)
  long sliding_window = 0;   // 0: attention sees the whole sequence
  RotaryConfig rotary;

  /// Parses a config.json object; `context` (e.g. the file name) prefixes every error message.
  static LlamaConfig from_json(const nlohmann::json& json, const std::string& context = "model config");
  /// Reads and parses a config.json file.
  static LlamaConfig load(const std::string& path) { return from_json(read_json(path), "model config '" + path + "'"); }
  /// The JSON of a config.json file, read and parsed strictly (for callers that need more of it).
  static nlohmann::json read_json(const std::string& path);

  /// Bytes a forward pass over `tokens` tokens in sequences of `length` needs at its widest:
  /// one layer's activations and the logits, plus each thread's attention scratch (the
  /// length x length scores). Drivers check it against the machine before they start.
  double forward_bytes(long tokens, long length) const {
    const double activations =
        static_cast<double>(tokens) * static_cast<double>(8 * hidden_size + 3 * intermediate_size + vocab_size);
    const double per_thread = static_cast<double>(length) * static_cast<double>(length + 4 * head_dim);
    return 4.0 * (activations + per_thread * host_thread_count());
  }
};

namespace detail {

/// Reads config.json values with errors that name the field.
class ConfigReader {
 public:
  ConfigReader(const nlohmann::json& json, std::string context) : json_(json), context_(std::move(context)) {}

  bool has(const char* key) const { return json_.contains(key) && !json_[key].is_null(); }

  long count(const char* key) const {
    require(has(key), context_ + ": \"" + key + "\" is missing");
    return count_value(key);
  }
  long count(const char* key, long fallback) const { return has(key) ? count_value(key) : fallback; }

  double number(const char* key) const {
    require(has(key), context_ + ": \"" + key + "\" is missing");
    const nlohmann::json& value = json_[key];
    require(value.is_number() && std::isfinite(value.get<double>()),
            context_ + ": \"" + key + "\" is " + json_excerpt(value) + ", not a number");
    return value.get<double>();
  }
  double number(const char* key, double fallback) const { return has(key) ? number(key) : fallback; }
  double positive_number(const char* key, double fallback) const {
    const double value = number(key, fallback);
    require(value > 0, context_ + ": \"" + key + "\" is " + std::to_string(value) + ", not positive");
    return value;
  }

  bool flag(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    require(json_[key].is_boolean(), context_ + ": \"" + key + "\" is " + json_excerpt(json_[key]) + ", not true or false");
    return json_[key].get<bool>();
  }

  std::string text(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    require(json_[key].is_string(), context_ + ": \"" + key + "\" is " + json_excerpt(json_[key]) + ", not a string");
    return json_[key].get<std::string>();
  }

  /// The object under `key`, or nothing if absent or null.
  const nlohmann::json* object(const char* key) const {
    if (!has(key)) return nullptr;
    require(json_[key].is_object(), context_ + ": \"" + key + "\" is " + json_excerpt(json_[key]) + ", not an object");
    return &json_[key];
  }

  const std::string& context() const { return context_; }

 private:
  long count_value(const char* key) const {
    const nlohmann::json& value = json_[key];
    require(value.is_number_integer() && value.get<long long>() > 0 && value.get<long long>() < (1LL << 40),
            context_ + ": \"" + key + "\" is " + json_excerpt(value) + ", not a positive integer");
    return static_cast<long>(value.get<long long>());
  }

  const nlohmann::json& json_;
  std::string context_;
};

/// The rotary settings of either config form: classic (`rope_theta` beside a `rope_scaling`
/// object) or newer (`rope_parameters` holding `rope_theta` and `rope_type`).
inline RotaryConfig parse_rotary(const ConfigReader& config) {
  RotaryConfig rotary;
  rotary.theta = config.positive_number("rope_theta", 10000.0);
  const char* section = config.object("rope_parameters") ? "rope_parameters" : "rope_scaling";
  const nlohmann::json* parameters = config.object(section);
  if (!parameters) return rotary;
  for (const auto& entry : parameters->items())
    require(!entry.value().is_object(), config.context() + ": \"" + section + "\" holds the object \"" + entry.key() +
                                            "\" (rotary settings per layer type), which gsq does not support");
  const ConfigReader reader(*parameters, config.context() + ": \"" + section + "\"");
  rotary.theta = reader.positive_number("rope_theta", rotary.theta);
  // Older configs name the type "type"; newer ones "rope_type".
  rotary.type = reader.text("rope_type", reader.text("type", "default"));
  if (rotary.type == "default") return rotary;
  if (rotary.type == "linear") {
    rotary.factor = reader.number("factor");
    require(rotary.factor > 0, reader.context() + ": \"factor\" must be positive");
    return rotary;
  }
  if (rotary.type == "llama3") {
    rotary.factor = reader.number("factor");
    rotary.low_freq_factor = reader.number("low_freq_factor");
    rotary.high_freq_factor = reader.number("high_freq_factor");
    rotary.original_max_position_embeddings = reader.number("original_max_position_embeddings");
    require(rotary.factor > 0 && rotary.low_freq_factor > 0 && rotary.original_max_position_embeddings > 0,
            reader.context() + ": \"factor\", \"low_freq_factor\" and \"original_max_position_embeddings\" must be positive");
    require(rotary.high_freq_factor > rotary.low_freq_factor,
            reader.context() + ": \"high_freq_factor\" must exceed \"low_freq_factor\"");
    return rotary;
  }
  throw Error(config.context() + ": rotary scaling type \"" + rotary.type +
              "\" is not supported (gsq supports default, linear and llama3)");
}

}  // namespace detail

inline LlamaConfig LlamaConfig::from_json(const nlohmann::json& json, const std::string& context) {
  require(json.is_object(), context + ": not a JSON object");
  const detail::ConfigReader config(json, context);
  LlamaConfig result;

  require(config.has("architectures"), context + ": \"architectures\" is missing");
  const nlohmann::json& architectures = json["architectures"];
  require(architectures.is_array() && architectures.size() == 1 && architectures[0].is_string(),
          context + ": \"architectures\" is " + detail::json_excerpt(architectures) + ", not a list of one name");
  result.architecture = architectures[0].get<std::string>();
  const bool llama = result.architecture == "LlamaForCausalLM";
  const bool mistral = result.architecture == "MistralForCausalLM";
  const bool qwen2 = result.architecture == "Qwen2ForCausalLM";
  require(llama || mistral || qwen2, context + ": architecture \"" + result.architecture +
                                         "\" is not supported (gsq supports LlamaForCausalLM, "
                                         "MistralForCausalLM and Qwen2ForCausalLM)");

  result.vocab_size = config.count("vocab_size");
  result.hidden_size = config.count("hidden_size");
  result.intermediate_size = config.count("intermediate_size");
  result.layers = config.count("num_hidden_layers");
  result.attention_heads = config.count("num_attention_heads");
  result.key_value_heads = config.count("num_key_value_heads", result.attention_heads);
  require(result.attention_heads % result.key_value_heads == 0,
          context + ": num_attention_heads (" + std::to_string(result.attention_heads) +
              ") is not a multiple of num_key_value_heads (" + std::to_string(result.key_value_heads) + ")");
  if (config.has("head_dim")) {
    result.head_dim = config.count("head_dim");
  } else {
    require(result.hidden_size % result.attention_heads == 0,
            context + ": no \"head_dim\", and hidden_size is not a multiple of num_attention_heads");
    result.head_dim = result.hidden_size / result.attention_heads;
  }
  require(result.head_dim % 2 == 0, context + ": head_dim " + std::to_string(result.head_dim) +
                                        " is odd; rotary embeddings rotate pairs of dimensions");
  result.rms_norm_eps = config.positive_number("rms_norm_eps", 1e-6);
  result.tie_word_embeddings = config.flag("tie_word_embeddings", false);

  const std::string activation = config.text("hidden_act", "silu");
  require(activation == "silu" || activation == "swish",
          context + ": hidden_act \"" + activation + "\" is not supported (gsq's MLP is SwiGLU: silu)");
  if (qwen2) {
    result.qkv_bias = true;
    if (config.flag("use_sliding_window", false)) result.sliding_window = config.count("sliding_window");
  } else {
    result.qkv_bias = result.output_bias = config.flag("attention_bias", false);
    result.mlp_bias = config.flag("mlp_bias", false);
    if (mistral) result.sliding_window = config.count("sliding_window", 0);
  }
  result.rotary = detail::parse_rotary(config);
  return result;
}

inline nlohmann::json LlamaConfig::read_json(const std::string& path) {
  const std::string content = read_regular_file(path, "model config", std::size_t(1) << 24);
  return detail::parse_json_strictly(content.data(), content.data() + content.size(), "model config '" + path + "'", 32,
                                     100000);
}

// ---------------------------------------------------------------------------------------------
// The model.

/// Hidden states of a batch of independent sequences of equal length, each starting at position
/// 0: row s * sequence_length + t is token t of sequence s.
struct HiddenStates {
  long sequence_length = 0;
  Matrix<float> values;  // (sequences x sequence_length) x hidden_size

  long sequences() const { return sequence_length > 0 ? values.rows / sequence_length : 0; }
};

/// Called by LlamaModel::decoder_layer with the input rows (one per token) of each linear layer
/// it applies, in the order q, k, v, o, gate, up, down. q/k/v receive the same matrix object,
/// as do gate/up: an observer accumulating X^T X can compute it once for each.
using LinearInputObserver = std::function<void(long layer, const std::string& linear, const Matrix<float>& inputs)>;

class LlamaModel {
 public:
  /// The seven linear layers of a decoder layer, named as in Hugging Face checkpoints (the
  /// tensor of layer i is "model.layers.<i>.<name>.weight").
  static const std::array<std::string, 7>& linear_names() {
    static const std::array<std::string, 7> names = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                     "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                                     "mlp.down_proj"};
    return names;
  }
  /// The checkpoint name of a linear layer's weight: "model.layers.<layer>.<linear>.weight".
  static std::string tensor_name(long layer, const std::string& linear) {
    return "model.layers." + std::to_string(layer) + "." + linear + ".weight";
  }

  /// Loads config.json and the weights (model.safetensors or a sharded index) of a directory.
  static LlamaModel load(const std::string& directory) {
    return from_checkpoint(LlamaConfig::load(directory + "/config.json"), Checkpoint::open(directory));
  }

  /// Reads the weights `config` describes from `checkpoint`, checking each tensor's presence,
  /// shape and values.
  static LlamaModel from_checkpoint(const LlamaConfig& config, const Checkpoint& checkpoint) {
    LlamaModel model;
    model.config_ = config;
    const long hidden = config.hidden_size;
    const long query_width = config.attention_heads * config.head_dim;
    const long key_value_width = config.key_value_heads * config.head_dim;
    const Loader load{checkpoint};

    model.embedding_ = load.matrix("model.embed_tokens.weight", config.vocab_size, hidden);
    model.head_transposed_ = transposed(config.tie_word_embeddings
                                            ? model.embedding_
                                            : load.matrix("lm_head.weight", config.vocab_size, hidden));
    model.final_norm_ = load.vector("model.norm.weight", hidden);

    // Output and input widths of each linear layer, in linear_names() order.
    const std::array<std::pair<long, long>, 7> shapes = {{{query_width, hidden},
                                                          {key_value_width, hidden},
                                                          {key_value_width, hidden},
                                                          {hidden, query_width},
                                                          {config.intermediate_size, hidden},
                                                          {config.intermediate_size, hidden},
                                                          {hidden, config.intermediate_size}}};
    const std::array<bool, 7> has_bias = {config.qkv_bias, config.qkv_bias, config.qkv_bias, config.output_bias,
                                          config.mlp_bias, config.mlp_bias, config.mlp_bias};
    for (long layer = 0; layer < config.layers; ++layer) {
      const std::string prefix = "model.layers." + std::to_string(layer) + ".";
      DecoderLayer weights;
      weights.input_norm = load.vector(prefix + "input_layernorm.weight", hidden);
      weights.post_attention_norm = load.vector(prefix + "post_attention_layernorm.weight", hidden);
      for (std::size_t i = 0; i < shapes.size(); ++i) {
        const std::string& name = linear_names()[i];
        Linear& linear = weights.linears[i];
        linear.weight_transposed =
            transposed(load.matrix(tensor_name(layer, name), shapes[i].first, shapes[i].second));
        if (has_bias[i]) linear.bias = load.vector(prefix + name + ".bias", shapes[i].first);
      }
      model.layers_.push_back(std::move(weights));
    }
    model.inverse_frequencies_ = rotary_inverse_frequencies(config);
    return model;
  }

  const LlamaConfig& config() const { return config_; }

  /// Hugging Face's rotary inverse frequencies theta^(-2i/head_dim), with the config's scaling.
  static std::vector<float> rotary_inverse_frequencies(const LlamaConfig& config) {
    const RotaryConfig& rotary = config.rotary;
    const long half = config.head_dim / 2;
    std::vector<float> frequencies(static_cast<std::size_t>(half));
    const double pi = std::acos(-1.0);
    for (long i = 0; i < half; ++i) {
      double frequency = 1.0 / std::pow(rotary.theta, static_cast<double>(2 * i) / static_cast<double>(config.head_dim));
      if (rotary.type == "linear") frequency /= rotary.factor;
      if (rotary.type == "llama3") {
        // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, and those in
        // between interpolated by where the wavelength falls relative to the original context.
        const double wavelength = 2 * pi / frequency;
        const double low_frequency_wavelength = rotary.original_max_position_embeddings / rotary.low_freq_factor;
        const double high_frequency_wavelength = rotary.original_max_position_embeddings / rotary.high_freq_factor;
        if (wavelength > low_frequency_wavelength) {
          frequency /= rotary.factor;
        } else if (wavelength >= high_frequency_wavelength) {
          const double smooth = (rotary.original_max_position_embeddings / wavelength - rotary.low_freq_factor) /
                                (rotary.high_freq_factor - rotary.low_freq_factor);
          frequency = (1 - smooth) * frequency / rotary.factor + smooth * frequency;
        }
      }
      frequencies[static_cast<std::size_t>(i)] = static_cast<float>(frequency);
    }
    return frequencies;
  }

  /// A linear layer's weight, out x in (PyTorch's Linear.weight layout).
  Matrix<float> linear_weight(long layer, const std::string& linear) const {
    return transposed(linear_at(layer, linear).weight_transposed);
  }

  /// Replaces a linear layer's weight (out x in, the shape it has; finite); its bias stays.
  void set_linear_weight(long layer, const std::string& linear, const Matrix<float>& weight) {
    Linear& target = linear_at(layer, linear);
    const long rows = target.weight_transposed.cols, cols = target.weight_transposed.rows;
    const std::string what = "replacement weight of layer " + std::to_string(layer) + " " + linear;
    require(weight.rows == rows && weight.cols == cols,
            what + " is " + std::to_string(weight.rows) + " x " + std::to_string(weight.cols) + " but must be " +
                std::to_string(rows) + " x " + std::to_string(cols));
    const long bad = detail::first_non_finite(weight.data(), weight.size());
    require(bad < 0, what + " holds a non-finite value (NaN or Inf) at row " + std::to_string(bad / cols) +
                         ", column " + std::to_string(bad % cols));
    target.weight_transposed = transposed(weight);
  }

  /// The hidden states of `tokens`: whole sequences of `sequence_length` tokens each.
  HiddenStates embed(const std::vector<TokenId>& tokens, long sequence_length) const {
    require(sequence_length > 0, "sequence length must be positive, got " + std::to_string(sequence_length));
    require(!tokens.empty() && tokens.size() % static_cast<std::size_t>(sequence_length) == 0,
            std::to_string(tokens.size()) + " tokens are not whole sequences of " + std::to_string(sequence_length));
    require_token_ids_below(tokens.data(), tokens.size(), config_.vocab_size);
    require_memory(config_.forward_bytes(static_cast<long>(tokens.size()), sequence_length),
                   "a forward pass over " + std::to_string(tokens.size()) + " tokens in sequences of " +
                       std::to_string(sequence_length));
    const long hidden = config_.hidden_size;
    HiddenStates states{sequence_length, Matrix<float>(static_cast<long>(tokens.size()), hidden)};
#pragma omp parallel for
    for (long row = 0; row < states.values.rows; ++row)
      std::copy_n(embedding_.data() + static_cast<long>(tokens[static_cast<std::size_t>(row)]) * hidden, hidden,
                  states.values.data() + row * hidden);
    return states;
  }

  /// Runs decoder layer `layer` on `input`; `observer` (if set) sees each linear layer's input.
  HiddenStates decoder_layer(long layer, const HiddenStates& input, const LinearInputObserver& observer = {}) const {
    require(layer >= 0 && layer < config_.layers, "decoder layer " + std::to_string(layer) + " does not exist (the model has " +
                                                      std::to_string(config_.layers) + ")");
    require(input.sequence_length > 0 && input.values.rows % input.sequence_length == 0 &&
                input.values.cols == config_.hidden_size,
            "hidden states of " + std::to_string(input.values.rows) + " x " + std::to_string(input.values.cols) +
                " are not whole sequences of " + std::to_string(input.sequence_length) + " tokens x hidden size " +
                std::to_string(config_.hidden_size));
    require(config_.sliding_window == 0 || input.sequence_length <= config_.sliding_window,
            "sequence length " + std::to_string(input.sequence_length) + " exceeds the model's sliding attention window " +
                std::to_string(config_.sliding_window) + ", which gsq does not implement");
    const DecoderLayer& weights = layers_[static_cast<std::size_t>(layer)];
    auto observe = [&](std::size_t linear, const Matrix<float>& inputs) {
      if (observer) observer(layer, linear_names()[linear], inputs);
    };
    enum { q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj };

    const Matrix<float> attention_input = rms_norm(input.values, weights.input_norm);
    for (std::size_t linear : {q_proj, k_proj, v_proj}) observe(linear, attention_input);
    Matrix<float> queries = apply(weights.linears[q_proj], attention_input);
    Matrix<float> keys = apply(weights.linears[k_proj], attention_input);
    const Matrix<float> values = apply(weights.linears[v_proj], attention_input);
    rotate(queries, input.sequence_length);
    rotate(keys, input.sequence_length);
    const Matrix<float> attention_output = attention(queries, keys, values, input.sequence_length);
    observe(o_proj, attention_output);
    HiddenStates output{input.sequence_length, apply(weights.linears[o_proj], attention_output)};
    add_to(output.values, input.values);

    const Matrix<float> mlp_input = rms_norm(output.values, weights.post_attention_norm);
    observe(gate_proj, mlp_input);
    observe(up_proj, mlp_input);
    Matrix<float> gated = apply(weights.linears[gate_proj], mlp_input);
    const Matrix<float> up = apply(weights.linears[up_proj], mlp_input);
    float* activation = gated.data();
    const float* up_values = up.data();
    Host<float>::for_each_index(gated.size(), [=](std::size_t i) {
      const float gate = activation[i];
      activation[i] = gate / (1.0f + std::exp(-gate)) * up_values[i];  // silu(gate) * up
    });
    observe(down_proj, gated);
    add_to(output.values, apply(weights.linears[down_proj], gated));
    return output;
  }

  /// The final norm and the language-model head: one row of vocabulary logits per token.
  Matrix<float> logits(const HiddenStates& hidden) const {
    require(hidden.values.cols == config_.hidden_size,
            "hidden states have " + std::to_string(hidden.values.cols) + " columns, not hidden size " +
                std::to_string(config_.hidden_size));
    const Matrix<float> normed = rms_norm(hidden.values, final_norm_);
    Matrix<float> result(normed.rows, config_.vocab_size);
    Host<float>::gemm(false, normed.rows, config_.vocab_size, config_.hidden_size, 1.0f, normed.data(),
                      head_transposed_.data(), result.data());
    return result;
  }

  /// The whole forward pass: logits (tokens x vocabulary) of sequences of `sequence_length`.
  Matrix<float> forward(const std::vector<TokenId>& tokens, long sequence_length) const {
    HiddenStates hidden = embed(tokens, sequence_length);
    for (long layer = 0; layer < config_.layers; ++layer) hidden = decoder_layer(layer, hidden);
    return logits(hidden);
  }

 private:
  /// A linear layer; its weight is kept transposed (in x out), the layout the product wants.
  struct Linear {
    Matrix<float> weight_transposed;
    std::vector<float> bias;  // empty, or one per output
  };
  struct DecoderLayer {
    std::vector<float> input_norm;
    std::vector<float> post_attention_norm;
    std::array<Linear, 7> linears;  // linear_names() order
  };

  /// Reads checkpoint tensors, checking their presence, shape and finiteness.
  struct Loader {
    const Checkpoint& checkpoint;

    FloatTensor tensor(const std::string& name, const std::vector<std::int64_t>& shape) const {
      require(checkpoint.contains(name), "checkpoint '" + checkpoint.source() + "' has no tensor '" + name + "'");
      FloatTensor result = checkpoint.float_tensor(name);
      require(result.shape == shape, "checkpoint '" + checkpoint.source() + "': tensor '" + name + "' has shape " +
                                         detail::shape_text(result.shape) + " but the config implies " +
                                         detail::shape_text(shape));
      const long bad = detail::first_non_finite(result.values.data(), result.values.size());
      require(bad < 0, "checkpoint '" + checkpoint.source() + "': tensor '" + name +
                           "' holds a non-finite value (NaN or Inf) at element " + std::to_string(bad));
      return result;
    }
    Matrix<float> matrix(const std::string& name, long rows, long cols) const {
      Matrix<float> result;
      result.rows = rows;
      result.cols = cols;
      result.values = tensor(name, {rows, cols}).values;
      return result;
    }
    std::vector<float> vector(const std::string& name, long size) const { return tensor(name, {size}).values; }
  };

  Linear& linear_at(long layer, const std::string& linear) {
    return const_cast<Linear&>(static_cast<const LlamaModel&>(*this).linear_at(layer, linear));
  }
  const Linear& linear_at(long layer, const std::string& linear) const {
    require(layer >= 0 && layer < config_.layers, "decoder layer " + std::to_string(layer) + " does not exist (the model has " +
                                                      std::to_string(config_.layers) + ")");
    const auto& names = linear_names();
    const auto found = std::find(names.begin(), names.end(), linear);
    if (found == names.end()) {
      std::string known;
      for (const std::string& name : names) known += (known.empty() ? "" : ", ") + name;
      throw Error("no linear layer named '" + linear + "' (the names are " + known + ")");
    }
    return layers_[static_cast<std::size_t>(layer)].linears[static_cast<std::size_t>(found - names.begin())];
  }

  static void add_to(Matrix<float>& target, const Matrix<float>& addend) {
    float* sum = target.data();
    const float* term = addend.data();
    Host<float>::for_each_index(target.size(), [=](std::size_t i) { sum[i] += term[i]; });
  }

  static Matrix<float> transposed(const Matrix<float>& matrix) {
    Matrix<float> result(matrix.cols, matrix.rows);
    constexpr long tile = 32;  // square tiles keep both the reads and the writes in cache
#pragma omp parallel for
    for (long first_row = 0; first_row < result.rows; first_row += tile)
      for (long first_col = 0; first_col < result.cols; first_col += tile)
        for (long r = first_row; r < std::min(first_row + tile, result.rows); ++r)
          for (long c = first_col; c < std::min(first_col + tile, result.cols); ++c) result(r, c) = matrix(c, r);
    return result;
  }

  /// inputs (tokens x in) W^T + bias.
  static Matrix<float> apply(const Linear& linear, const Matrix<float>& inputs) {
    const Matrix<float>& weight = linear.weight_transposed;
    Matrix<float> outputs(inputs.rows, weight.cols);
    Host<float>::gemm(false, inputs.rows, weight.cols, weight.rows, 1.0f, inputs.data(), weight.data(), outputs.data());
    if (!linear.bias.empty()) {
      float* out = outputs.data();
      const float* bias = linear.bias.data();
      const std::size_t width = linear.bias.size();
      Host<float>::for_each_index(outputs.size(), [=](std::size_t i) { out[i] += bias[i % width]; });
    }
    return outputs;
  }

  /// x / sqrt(mean(x^2) + eps) * weight, row by row (Hugging Face's LlamaRMSNorm).
  Matrix<float> rms_norm(const Matrix<float>& inputs, const std::vector<float>& weight) const {
    Matrix<float> result(inputs.rows, inputs.cols);
    const long width = inputs.cols;
#pragma omp parallel for
    for (long row = 0; row < inputs.rows; ++row) {
      const float* in = inputs.data() + row * width;
      double sum_of_squares = 0;
      for (long i = 0; i < width; ++i) sum_of_squares += static_cast<double>(in[i]) * in[i];
      const auto inverse_rms = static_cast<float>(1.0 / std::sqrt(sum_of_squares / static_cast<double>(width) +
                                                                  config_.rms_norm_eps));
      float* out = result.data() + row * width;
      for (long i = 0; i < width; ++i) out[i] = weight[static_cast<std::size_t>(i)] * (in[i] * inverse_rms);
    }
    return result;
  }


  /// Rotates each head of each row by its position in its sequence, in Hugging Face's
  /// convention: dimension i pairs with i + head_dim/2 (rotate_half).
  void rotate(Matrix<float>& heads, long sequence_length) const {
    const long half = config_.head_dim / 2;
    // cos and sin of position * frequency, the angle formed in float as Hugging Face does.
    std::vector<float> cosines(static_cast<std::size_t>(sequence_length * half));
    std::vector<float> sines(cosines.size());
    for (long position = 0; position < sequence_length; ++position)
      for (long i = 0; i < half; ++i) {
        const float angle = static_cast<float>(position) * inverse_frequencies_[static_cast<std::size_t>(i)];
        cosines[static_cast<std::size_t>(position * half + i)] = static_cast<float>(std::cos(static_cast<double>(angle)));
        sines[static_cast<std::size_t>(position * half + i)] = static_cast<float>(std::sin(static_cast<double>(angle)));
      }
    const long head_count = heads.cols / config_.head_dim;
#pragma omp parallel for
    for (long row = 0; row < heads.rows; ++row) {
      const long position = row % sequence_length;
      const float* cosine = cosines.data() + position * half;
      const float* sine = sines.data() + position * half;
      for (long head = 0; head < head_count; ++head) {
        float* first = heads.data() + row * heads.cols + head * config_.head_dim;
        float* second = first + half;
        for (long i = 0; i < half; ++i) {
          const float x = first[i], y = second[i];
          first[i] = x * cosine[i] - y * sine[i];
          second[i] = y * cosine[i] + x * sine[i];
        }
      }
    }
  }

  /// Causal grouped-query attention, each (sequence, head) on its own: softmax(q k^T /
  /// sqrt(head_dim)) v, query head h reading key/value head h / (heads / key_value_heads).
  Matrix<float> attention(const Matrix<float>& queries, const Matrix<float>& keys, const Matrix<float>& values,
                          long length) const {
    const long head_dim = config_.head_dim, heads = config_.attention_heads;
    const long group = heads / config_.key_value_heads;
    const long sequences = queries.rows / length;
    const auto scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
    Matrix<float> output(queries.rows, heads * head_dim);
#pragma omp parallel
    {
      // Per-thread scratch: the head's queries and keys transposed (head_dim x length), its
      // values and output (length x head_dim), and the scores (length x length).
      std::vector<float> query_columns(static_cast<std::size_t>(head_dim * length));
      std::vector<float> key_columns(query_columns.size()), value_rows(query_columns.size()),
          output_rows(query_columns.size());
      std::vector<float> scores(static_cast<std::size_t>(length * length));
#pragma omp for schedule(dynamic)
      for (long pair = 0; pair < sequences * heads; ++pair) {
        const long sequence = pair / heads, head = pair % heads, key_value_head = head / group;
        const long first_row = sequence * length;
        for (long t = 0; t < length; ++t) {
          const float* query = queries.data() + (first_row + t) * queries.cols + head * head_dim;
          const float* key = keys.data() + (first_row + t) * keys.cols + key_value_head * head_dim;
          const float* value = values.data() + (first_row + t) * values.cols + key_value_head * head_dim;
          for (long d = 0; d < head_dim; ++d) {
            query_columns[static_cast<std::size_t>(d * length + t)] = query[d];
            key_columns[static_cast<std::size_t>(d * length + t)] = key[d];
          }
          std::copy_n(value, head_dim, value_rows.data() + t * head_dim);
        }
        Host<float>::gemm(true, length, length, head_dim, scale, query_columns.data(), key_columns.data(),
                          scores.data());
        for (long t = 0; t < length; ++t) {  // softmax over the keys at positions <= t
          float* row = scores.data() + t * length;
          const float largest = *std::max_element(row, row + t + 1);
          float sum = 0;
          for (long j = 0; j <= t; ++j) sum += (row[j] = std::exp(row[j] - largest));
          for (long j = 0; j <= t; ++j) row[j] /= sum;
          std::fill(row + t + 1, row + length, 0.0f);
        }
        Host<float>::gemm(false, length, head_dim, length, 1.0f, scores.data(), value_rows.data(), output_rows.data());
        for (long t = 0; t < length; ++t)
          std::copy_n(output_rows.data() + t * head_dim, head_dim,
                      output.data() + (first_row + t) * output.cols + head * head_dim);
      }
    }
    return output;
  }

  LlamaConfig config_;
  Matrix<float> embedding_;        // vocabulary x hidden
  Matrix<float> head_transposed_;  // hidden x vocabulary (the embedding's transpose when tied)
  std::vector<float> final_norm_;
  std::vector<DecoderLayer> layers_;
  std::vector<float> inverse_frequencies_;  // head_dim / 2 rotary frequencies
};

}  // namespace gsq
