// gsq/model/config.hpp -- what a Hugging Face config.json says about a decoder-only language model
// gsq runs: dense Llama, Mistral, Qwen2 and Qwen3; the Mixture-of-Experts families Mixtral,
// Qwen2-MoE, Qwen3-MoE and DeepSeek-V3 (Kimi-K2 has DeepSeek-V3's architecture). Every config is
// checked field by field; an unknown architecture or setting is refused by name.
//
//   gsq::LlamaConfig config = gsq::LlamaConfig::load("model/config.json");
//   for (const gsq::LinearShape& linear : config.linears(0)) ...   // layer 0's weights, forward order
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/backend/host.hpp"
#include "gsq/common/error.hpp"
#include "gsq/io/regular_file.hpp"
#include "gsq/io/safetensors.hpp"

namespace gsq {

/// Rotary position embedding settings: the base `theta` and the frequency scaling `type`
/// ("default": none; "linear": every frequency divided by `factor`; "llama3": Llama 3.1's
/// wavelength-dependent scaling by `factor`, `low_freq_factor`, `high_freq_factor` and
/// `original_max_position_embeddings`; "yarn": YaRN's blend of interpolated and original
/// frequencies between the wavelengths that `beta_fast` and `beta_slow` rotations pick, with cos
/// and sin scaled by `attention_factor`).
struct RotaryConfig {
  std::string type = "default";
  double theta = 10000.0;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  double original_max_position_embeddings = 8192.0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  bool truncate = true;          // yarn: the correction range rounded outwards to whole dimensions
  double attention_factor = 1.0;  // multiplies cos and sin (yarn)
  // Frequency i further divided by factor i: llama.cpp's rope_freqs, the one form in which a GGUF
  // keeps a llama3-scaled rope (gsq/model/gguf_checkpoint.hpp); empty: none. No config.json says it.
  std::vector<float> frequency_factors;
};

/// DeepSeek-V3's multi-head latent attention: queries through a rank-`query_rank` bottleneck
/// (0: one q_proj), keys and values through a shared rank-`key_value_rank` latent; each head's
/// query and key are `nope_dim` dimensions without rotary embedding and `rope_dim` with it (the
/// rotated key part is one head shared by all), its value `value_dim`.
struct LatentAttentionConfig {
  long query_rank = 0;
  long key_value_rank = 0;  // 0: the model has ordinary attention
  long nope_dim = 0;
  long rope_dim = 0;
  long value_dim = 0;
  bool interleaved_rope = true;  // rotary pairs (2i, 2i+1) rather than (i, i + rope_dim / 2)
  double softmax_scale = 0;      // (nope_dim + rope_dim)^-1/2, times YaRN's mscale^2
};

/// A Mixture-of-Experts MLP: a router picks `experts_per_token` of `experts` SwiGLU experts per
/// token and mixes their outputs; an optional shared expert sees every token.
struct MixtureConfig {
  enum class Router {
    softmax,          // softmax over the experts, top-k, renormalised if normalize_top_k (Mixtral, Qwen)
    grouped_sigmoid,  // DeepSeek-V3: sigmoid scores; experts chosen on scores + correction bias within
                      // the best top_groups of groups; their unbiased scores, renormalised, times routed_scaling
  };
  Router router = Router::softmax;
  long experts = 0;  // 0: every MLP is dense
  long experts_per_token = 0;
  long expert_intermediate_size = 0;
  bool normalize_top_k = false;
  long groups = 1;
  long top_groups = 1;
  double routed_scaling = 1.0;
  long shared_intermediate_size = 0;  // 0: no shared expert
  bool gated_shared_expert = false;   // Qwen2-MoE: the shared expert weighted by sigmoid(shared_expert_gate(x))
  // Checkpoint names: "<block>.gate" routes, "<block>.experts.<e>.<projection>" are the experts'
  // gate, up and down projections, "<shared_block>.{gate,up,down}_proj" the shared expert.
  std::string block = "mlp";
  std::array<std::string, 3> projections = {"gate_proj", "up_proj", "down_proj"};
  std::string shared_block;
  std::vector<bool> layers;  // per decoder layer: a mixture (true) or a dense MLP

  /// Throws gsq::Error naming the first impossible setting; `context` prefixes the message.
  void validate(const std::string& context) const {
    require(experts_per_token > 0 && experts_per_token <= experts,
            context + ": num_experts_per_tok (" + std::to_string(experts_per_token) + ") must be between 1 and the number of experts (" +
                std::to_string(experts) + ")");
    if (router != Router::grouped_sigmoid) return;
    require(groups > 0 && experts % groups == 0 && experts / groups >= 2,
            context + ": n_group (" + std::to_string(groups) + ") must split the " + std::to_string(experts) +
                " experts into groups of at least 2");
    require(top_groups > 0 && top_groups <= groups && experts_per_token <= top_groups * (experts / groups),
            context + ": topk_group " + std::to_string(top_groups) + " of n_group " + std::to_string(groups) +
                " groups cannot hold num_experts_per_tok " + std::to_string(experts_per_token) + " experts");
  }

  /// Layer `layer`'s MLP is a mixture of experts.
  bool in_layer(long layer) const { return experts > 0 && layers.at(static_cast<std::size_t>(layer)); }
};

/// A linear layer of a decoder layer: its name in the checkpoint (without "model.layers.<i>." and
/// ".weight"), its output and input widths, whether it carries a bias, and the linear before it
/// whose input it shares (empty: its own input).
struct LinearShape {
  std::string name;
  long rows = 0;
  long cols = 0;
  bool bias = false;
  std::string input_of;
};

/// One SwiGLU MLP of a decoder layer: the dense MLP, a routed expert or the shared expert.
struct SwiGluBlock {
  std::string name;                    // "mlp", "mlp.experts.3", "mlp.shared_expert", ...
  std::array<std::string, 3> linears;  // gate, up, down
  long width = 0;                      // its intermediate size
  long expert = -1;                    // a routed expert's index; -1 for the dense MLP and the shared expert
};

/// What a Hugging Face config.json says about a model.
struct LlamaConfig {
  std::string architecture;  // one of supported_architectures()
  long vocab_size = 0;
  long hidden_size = 0;
  long intermediate_size = 0;  // the dense MLPs' width
  long layers = 0;
  long attention_heads = 0;
  long key_value_heads = 0;
  long head_dim = 0;        // a query's and a key's width per head
  long value_head_dim = 0;  // a value's width per head
  long rotary_dim = 0;      // the dimensions of each head the rotary embedding turns
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;     // q/k/v projections carry biases (Qwen2; Llama's attention_bias)
  bool output_bias = false;  // o_proj carries a bias (Llama's attention_bias)
  bool mlp_bias = false;     // gate/up/down carry biases (Llama's mlp_bias)
  bool qk_norm = false;      // an RMSNorm over each query and key head before the rotary embedding (Qwen3)
  long sliding_window = 0;   // 0: attention sees the whole sequence
  long max_positions = 0;    // max_position_embeddings: the longest sequence the model was made for (0: not said)
  RotaryConfig rotary;
  LatentAttentionConfig latent;  // latent.key_value_rank > 0: DeepSeek-V3's attention
  MixtureConfig mixture;

  static const std::vector<std::string>& supported_architectures() {
    static const std::vector<std::string> names = {
        "LlamaForCausalLM",    "MistralForCausalLM",  "Qwen2ForCausalLM",     "Qwen3ForCausalLM",
        "MixtralForCausalLM",  "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM", "DeepseekV3ForCausalLM"};
    return names;
  }

  /// Parses a config.json object; `context` (e.g. the file name) prefixes every error message.
  static LlamaConfig from_json(const nlohmann::json& json, const std::string& context = "model config");
  /// Reads and parses a config.json file.
  static LlamaConfig load(const std::string& path) { return from_json(read_json(path), "model config '" + path + "'"); }
  /// The JSON of a config.json file, read and parsed strictly (for callers that need more of it).
  static nlohmann::json read_json(const std::string& path);

  bool latent_attention() const { return latent.key_value_rank > 0; }

  /// The linear layers of decoder layer `layer` that quantization replaces, in the order the
  /// forward pass applies them (a mixture's router gates stay in full precision and are not listed).
  std::vector<LinearShape> linears(long layer) const {
    const auto linear = [](std::string name, long rows, long cols, bool bias = false, std::string input_of = "") {
      return LinearShape{std::move(name), rows, cols, bias, std::move(input_of)};
    };
    std::vector<LinearShape> result;
    const long hidden = hidden_size;
    if (latent_attention()) {
      const long query_width = attention_heads * head_dim;
      const std::string query = latent.query_rank > 0 ? "self_attn.q_a_proj" : "self_attn.q_proj";
      if (latent.query_rank > 0)
        result.insert(result.end(), {linear(query, latent.query_rank, hidden),
                                     linear("self_attn.q_b_proj", query_width, latent.query_rank)});
      else
        result.push_back(linear(query, query_width, hidden));
      result.insert(result.end(),
                    {linear("self_attn.kv_a_proj_with_mqa", latent.key_value_rank + latent.rope_dim, hidden, false, query),
                     linear("self_attn.kv_b_proj", attention_heads * (latent.nope_dim + latent.value_dim), latent.key_value_rank),
                     linear("self_attn.o_proj", hidden, attention_heads * value_head_dim)});
    } else {
      result.insert(result.end(), {linear("self_attn.q_proj", attention_heads * head_dim, hidden, qkv_bias),
                                   linear("self_attn.k_proj", key_value_heads * head_dim, hidden, qkv_bias, "self_attn.q_proj"),
                                   linear("self_attn.v_proj", key_value_heads * head_dim, hidden, qkv_bias, "self_attn.q_proj"),
                                   linear("self_attn.o_proj", hidden, attention_heads * head_dim, output_bias)});
    }
    for (const SwiGluBlock& block : swiglu_blocks(layer)) {
      const auto& [gate, up, down] = block.linears;
      result.insert(result.end(), {linear(gate, block.width, hidden, mlp_bias), linear(up, block.width, hidden, mlp_bias, gate),
                                   linear(down, hidden, block.width, mlp_bias)});  // only dense Llama MLPs have biases
    }
    return result;
  }

  /// A mixture's routers in decoder layer `layer`, linears kept in full precision: "<block>.gate"
  /// and, for a gated shared expert, "<shared_block>_gate". None in a dense layer.
  std::vector<LinearShape> routers(long layer) const {
    if (!mixture.in_layer(layer)) return {};
    std::vector<LinearShape> result = {{mixture.block + ".gate", mixture.experts, hidden_size, false, ""}};
    if (mixture.gated_shared_expert) result.push_back({mixture.shared_block + "_gate", 1, hidden_size, false, ""});
    return result;
  }

  /// The SwiGLU MLPs of decoder layer `layer`: the dense MLP, or the routed experts in order and
  /// then the shared expert.
  std::vector<SwiGluBlock> swiglu_blocks(long layer) const {
    const auto block = [](const std::string& name, long width, long expert, const std::array<std::string, 3>& projections) {
      return SwiGluBlock{name, {name + "." + projections[0], name + "." + projections[1], name + "." + projections[2]},
                         width, expert};
    };
    const std::array<std::string, 3> projections = {"gate_proj", "up_proj", "down_proj"};
    if (!mixture.in_layer(layer)) return {block("mlp", intermediate_size, -1, projections)};
    std::vector<SwiGluBlock> blocks;
    for (long expert = 0; expert < mixture.experts; ++expert)
      blocks.push_back(block(mixture.block + ".experts." + std::to_string(expert), mixture.expert_intermediate_size, expert,
                             mixture.projections));
    if (mixture.shared_intermediate_size > 0)
      blocks.push_back(block(mixture.shared_block, mixture.shared_intermediate_size, -1, projections));
    return blocks;
  }

  /// The names of linears(layer).
  std::vector<std::string> linear_names(long layer) const {
    std::vector<std::string> names;
    for (const LinearShape& linear : linears(layer)) names.push_back(linear.name);
    return names;
  }

  /// Bytes a forward pass over `tokens` tokens in sequences of `length` needs at its widest:
  /// one layer's activations and the logits, plus each thread's attention scratch (the
  /// length x length scores). Drivers check it against the machine before they start.
  double forward_bytes(long tokens, long length) const {
    const long attention_width = attention_heads * (2 * head_dim + value_head_dim);
    const long mlp_width = std::max(intermediate_size, mixture.experts_per_token * mixture.expert_intermediate_size +
                                                           mixture.shared_intermediate_size + mixture.experts);
    const double activations =
        static_cast<double>(tokens) *
        static_cast<double>(6 * hidden_size + attention_width + 3 * mlp_width + vocab_size);
    const double per_thread = static_cast<double>(length) * static_cast<double>(length + 4 * head_dim);
    return 4.0 * (activations + per_thread * host_thread_count());
  }

  /// An error, naming `what` (a sequence's purpose and the setting that sized it), when sequences
  /// of `length` tokens are longer than the model's positions (max_position_embeddings): its
  /// rotary embedding was never trained there, and the figures would silently be wrong.
  void require_within_positions(long length, const std::string& what) const {
    require(max_positions == 0 || length <= max_positions,
            what + ": " + std::to_string(length) + " tokens, longer than the model's " + std::to_string(max_positions) +
                " positions (max_position_embeddings in config.json); choose at most " + std::to_string(max_positions));
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
    return count_value(json_[key], key);
  }
  long count(const char* key, long fallback) const { return has(key) ? count(key) : fallback; }
  long count_or_zero(const char* key) const {
    if (!has(key)) return 0;
    const nlohmann::json& value = json_[key];
    return value.is_number_integer() && value.get<long long>() == 0 ? 0 : count_value(value, key);
  }

  /// A list of non-negative integers (e.g. layer indices); empty when absent.
  std::vector<long> indices(const char* key) const {
    std::vector<long> result;
    if (!has(key)) return result;
    const nlohmann::json& value = json_[key];
    require(value.is_array(), context_ + ": \"" + key + "\" is " + json_excerpt(value) + ", not a list");
    for (const nlohmann::json& entry : value) {
      require(entry.is_number_integer() && entry.get<long long>() >= 0 && entry.get<long long>() < (1LL << 40),
              context_ + ": \"" + key + "\" holds " + json_excerpt(entry) + ", not a non-negative integer");
      result.push_back(static_cast<long>(entry.get<long long>()));
    }
    return result;
  }

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
  long count_value(const nlohmann::json& value, const char* key) const {
    require(value.is_number_integer() && value.get<long long>() > 0 && value.get<long long>() < (1LL << 40),
            context_ + ": \"" + key + "\" is " + json_excerpt(value) + ", not a positive integer");
    return static_cast<long>(value.get<long long>());
  }

  const nlohmann::json& json_;
  std::string context_;
};

/// YaRN's magnitude correction for a context stretched `factor` times: 0.1 m ln(factor) + 1.
inline double yarn_mscale(double factor, double m) { return factor <= 1 ? 1.0 : 0.1 * m * std::log(factor) + 1.0; }

/// The rotary settings of either config form: classic (`rope_theta` beside a `rope_scaling`
/// object) or newer (`rope_parameters` holding `rope_theta` and `rope_type`). Returns them and
/// the scaling section (null when there is none).
inline std::pair<RotaryConfig, const nlohmann::json*> parse_rotary(const ConfigReader& config) {
  RotaryConfig rotary;
  rotary.theta = config.positive_number("rope_theta", 10000.0);
  const char* section = config.object("rope_parameters") ? "rope_parameters" : "rope_scaling";
  const nlohmann::json* parameters = config.object(section);
  if (!parameters) return {rotary, nullptr};
  for (const auto& entry : parameters->items())
    require(!entry.value().is_object(), config.context() + ": \"" + section + "\" holds the object \"" + entry.key() +
                                            "\" (rotary settings per layer type), which gsq does not support");
  const ConfigReader reader(*parameters, config.context() + ": \"" + section + "\"");
  rotary.theta = reader.positive_number("rope_theta", rotary.theta);
  // Older configs name the type "type"; newer ones "rope_type".
  rotary.type = reader.text("rope_type", reader.text("type", "default"));
  if (rotary.type == "default") return {rotary, parameters};
  if (rotary.type == "linear") {
    rotary.factor = reader.number("factor");
    require(rotary.factor > 0, reader.context() + ": \"factor\" must be positive");
    return {rotary, parameters};
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
    return {rotary, parameters};
  }
  if (rotary.type == "yarn") {
    rotary.factor = reader.number("factor");
    require(rotary.factor > 0, reader.context() + ": \"factor\" must be positive");
    const double max_positions = config.number("max_position_embeddings");
    require(max_positions > 0, config.context() + ": \"max_position_embeddings\" must be positive");
    rotary.original_max_position_embeddings = reader.positive_number("original_max_position_embeddings", max_positions);
    rotary.beta_fast = reader.positive_number("beta_fast", 32.0);
    rotary.beta_slow = reader.positive_number("beta_slow", 1.0);
    rotary.truncate = reader.flag("truncate", true);
    const double mscale = reader.number("mscale", 0), mscale_all_dim = reader.number("mscale_all_dim", 0);
    rotary.attention_factor =
        reader.has("attention_factor") ? reader.positive_number("attention_factor", 1.0)
        : mscale != 0 && mscale_all_dim != 0 ? yarn_mscale(rotary.factor, mscale) / yarn_mscale(rotary.factor, mscale_all_dim)
                                             : yarn_mscale(rotary.factor, 1.0);
    return {rotary, parameters};
  }
  throw Error(config.context() + ": rotary scaling type \"" + rotary.type +
              "\" is not supported (gsq supports default, linear, llama3 and yarn)");
}

/// Layers whose MLP is a mixture: Qwen-MoE's rule (not in mlp_only_layers, every
/// decoder_sparse_step-th), DeepSeek-V3's (from first_k_dense_replace on), or all (Mixtral).
inline std::vector<bool> mixture_layers(const ConfigReader& config, const std::string& architecture, long layers) {
  std::vector<bool> result(static_cast<std::size_t>(layers), true);
  if (architecture == "DeepseekV3ForCausalLM") {
    const long dense = config.has("first_k_dense_replace") ? config.count_or_zero("first_k_dense_replace") : 3;
    for (long layer = 0; layer < std::min(dense, layers); ++layer) result[static_cast<std::size_t>(layer)] = false;
  } else if (architecture != "MixtralForCausalLM") {
    const long step = config.count("decoder_sparse_step", 1);
    for (long layer = 0; layer < layers; ++layer) result[static_cast<std::size_t>(layer)] = (layer + 1) % step == 0;
    for (long layer : config.indices("mlp_only_layers"))
      if (layer < layers) result[static_cast<std::size_t>(layer)] = false;
  }
  return result;
}

/// The mixture settings of a Mixtral, Qwen2-MoE, Qwen3-MoE or DeepSeek-V3 config.
inline MixtureConfig parse_mixture(const ConfigReader& config, const std::string& architecture, long layers) {
  MixtureConfig mixture;
  mixture.experts_per_token = config.count("num_experts_per_tok");
  if (architecture == "MixtralForCausalLM") {
    mixture.experts = config.count("num_local_experts");
    mixture.expert_intermediate_size = config.count("intermediate_size");
    mixture.normalize_top_k = true;
    mixture.block = "block_sparse_moe";
    mixture.projections = {"w1", "w3", "w2"};
  } else if (architecture == "DeepseekV3ForCausalLM") {
    mixture.router = MixtureConfig::Router::grouped_sigmoid;
    mixture.experts = config.count(config.has("n_routed_experts") ? "n_routed_experts" : "num_local_experts");
    mixture.expert_intermediate_size = config.count("moe_intermediate_size");
    mixture.normalize_top_k = config.flag("norm_topk_prob", true);
    mixture.groups = config.count("n_group", 1);
    mixture.top_groups = config.count("topk_group", 1);
    mixture.routed_scaling = config.positive_number("routed_scaling_factor", 1.0);
    mixture.shared_intermediate_size = mixture.expert_intermediate_size * config.count_or_zero("n_shared_experts");
    mixture.shared_block = "mlp.shared_experts";
    const std::string scoring = config.text("scoring_func", "sigmoid"), method = config.text("topk_method", "noaux_tc");
    require(scoring == "sigmoid" && method == "noaux_tc",
            config.context() + ": DeepSeek-V3 routing is sigmoid scoring with topk_method noaux_tc, not " + scoring +
                " with " + method);
  } else {  // Qwen2-MoE, Qwen3-MoE; newer transformers write num_local_experts for num_experts
    mixture.experts = config.count(config.has("num_experts") ? "num_experts" : "num_local_experts");
    mixture.expert_intermediate_size = config.count("moe_intermediate_size");
    mixture.normalize_top_k = config.flag("norm_topk_prob", false);
    if (architecture == "Qwen2MoeForCausalLM") {
      mixture.shared_intermediate_size = config.count_or_zero("shared_expert_intermediate_size");
      mixture.gated_shared_expert = mixture.shared_intermediate_size > 0;
      mixture.shared_block = "mlp.shared_expert";
    }
  }
  mixture.validate(config.context());
  mixture.layers = mixture_layers(config, architecture, layers);
  return mixture;
}

/// DeepSeek-V3's attention settings.
inline LatentAttentionConfig parse_latent_attention(const ConfigReader& config, const RotaryConfig& rotary,
                                                    const nlohmann::json* rope_section) {
  LatentAttentionConfig latent;
  latent.query_rank = config.count_or_zero("q_lora_rank");
  latent.key_value_rank = config.count("kv_lora_rank");
  latent.nope_dim = config.count("qk_nope_head_dim");
  latent.rope_dim = config.count("qk_rope_head_dim");
  latent.value_dim = config.count("v_head_dim");
  latent.interleaved_rope = config.flag("rope_interleave", true);
  require(latent.rope_dim % 2 == 0, config.context() + ": qk_rope_head_dim " + std::to_string(latent.rope_dim) +
                                        " is odd; rotary embeddings rotate pairs of dimensions");
  require(!config.flag("attention_bias", false), config.context() + ": DeepSeek-V3 attention with biases is not supported");
  latent.softmax_scale = 1.0 / std::sqrt(static_cast<double>(latent.nope_dim + latent.rope_dim));
  // Hugging Face's DeepSeek-V3 also scales the softmax by YaRN's mscale(factor, mscale_all_dim)^2.
  if (rotary.type != "default" && rope_section) {
    const ConfigReader reader(*rope_section, config.context());
    const double mscale_all_dim = reader.number("mscale_all_dim", 0);
    if (mscale_all_dim != 0) latent.softmax_scale *= std::pow(yarn_mscale(reader.number("factor"), mscale_all_dim), 2);
  }
  return latent;
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
  const std::vector<std::string>& supported = supported_architectures();
  if (std::find(supported.begin(), supported.end(), result.architecture) == supported.end()) {
    std::string names;
    for (const std::string& name : supported) names += (names.empty() ? "" : ", ") + name;
    throw Error(context + ": architecture \"" + result.architecture + "\" is not supported (gsq supports " + names + ")");
  }
  const std::string& architecture = result.architecture;
  const bool mistral = architecture == "MistralForCausalLM" || architecture == "MixtralForCausalLM";
  const bool qwen = architecture == "Qwen2ForCausalLM" || architecture == "Qwen2MoeForCausalLM";
  const bool qwen3 = architecture == "Qwen3ForCausalLM" || architecture == "Qwen3MoeForCausalLM";
  const bool deepseek = architecture == "DeepseekV3ForCausalLM";

  result.vocab_size = config.count("vocab_size");
  result.hidden_size = config.count("hidden_size");
  result.intermediate_size = config.count("intermediate_size");
  result.layers = config.count("num_hidden_layers");
  result.attention_heads = config.count("num_attention_heads");
  result.key_value_heads = config.count("num_key_value_heads", result.attention_heads);
  require(result.attention_heads % result.key_value_heads == 0,
          context + ": num_attention_heads (" + std::to_string(result.attention_heads) +
              ") is not a multiple of num_key_value_heads (" + std::to_string(result.key_value_heads) + ")");
  result.rms_norm_eps = config.positive_number("rms_norm_eps", 1e-6);
  result.tie_word_embeddings = config.flag("tie_word_embeddings", false);
  result.max_positions = config.count("max_position_embeddings", 0);
  const std::string activation = config.text("hidden_act", "silu");
  require(activation == "silu" || activation == "swish",
          context + ": hidden_act \"" + activation + "\" is not supported (gsq's MLP is SwiGLU: silu)");
  const nlohmann::json* rope_section = nullptr;
  std::tie(result.rotary, rope_section) = detail::parse_rotary(config);

  if (deepseek) {
    result.latent = detail::parse_latent_attention(config, result.rotary, rope_section);
    result.key_value_heads = result.attention_heads;  // every head has its own key and value
    result.head_dim = result.latent.nope_dim + result.latent.rope_dim;
    result.value_head_dim = result.latent.value_dim;
    result.rotary_dim = result.latent.rope_dim;
  } else {
    if (config.has("head_dim")) {
      result.head_dim = config.count("head_dim");
    } else {
      require(result.hidden_size % result.attention_heads == 0,
              context + ": no \"head_dim\", and hidden_size is not a multiple of num_attention_heads");
      result.head_dim = result.hidden_size / result.attention_heads;
    }
    require(result.head_dim % 2 == 0, context + ": head_dim " + std::to_string(result.head_dim) +
                                          " is odd; rotary embeddings rotate pairs of dimensions");
    result.value_head_dim = result.rotary_dim = result.head_dim;
  }
  if (qwen) {
    result.qkv_bias = config.flag("qkv_bias", true);
    if (config.flag("use_sliding_window", false)) result.sliding_window = config.count("sliding_window");
  } else if (qwen3) {
    result.qkv_bias = result.output_bias = config.flag("attention_bias", false);
    result.qk_norm = true;
    if (config.flag("use_sliding_window", false)) result.sliding_window = config.count("sliding_window");
  } else if (!deepseek) {
    result.qkv_bias = result.output_bias = config.flag("attention_bias", false);
    result.mlp_bias = config.flag("mlp_bias", false);
    if (mistral) result.sliding_window = config.count_or_zero("sliding_window");
  }
  const bool mixture = architecture == "MixtralForCausalLM" || architecture == "Qwen2MoeForCausalLM" ||
                       architecture == "Qwen3MoeForCausalLM" || deepseek;
  if (mixture) result.mixture = detail::parse_mixture(config, architecture, result.layers);
  return result;
}

inline nlohmann::json LlamaConfig::read_json(const std::string& path) {
  const std::string content = read_regular_file(path, "model config", std::size_t(1) << 24);
  return detail::parse_json_strictly(content.data(), content.data() + content.size(), "model config '" + path + "'", 32,
                                     100000);
}

}  // namespace gsq
