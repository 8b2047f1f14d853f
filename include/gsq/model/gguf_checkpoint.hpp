// gsq/model/gguf_checkpoint.hpp -- a llama.cpp GGUF file as the Hugging Face checkpoint it was made
// from: its config.json rebuilt from the GGUF metadata, its tensors dequantized (as ggml does)
// under Hugging Face's names and in Hugging Face's layout. So `evaluate_model --model FILE.gguf`
// scores a GGUF exactly as its safetensors twin, and one tool compares gsq's files with
// llama-quantize's.
//
//   const gsq::LlamaModel model = gsq::open_model("model-Q4_K_M.gguf");  // or a checkpoint directory
//
// Read: general.architecture as llama.cpp's convert_hf_to_gguf.py writes it --
//   llama       Llama, Mistral, SmolLM; with experts, Mixtral. Only for llama does the converter
//               permute the q/k rows into llama.cpp's rotary order: they are put back. A llama3
//               rope is kept by llama.cpp only as one divisor per rotary frequency (rope_freqs)
//               and is applied as exactly those divisors.
//   qwen2, qwen3, qwen2moe, qwen3moe
//               Qwen2's q/k/v biases, Qwen3's q/k norms, Qwen2-MoE's shared expert and its gate.
//   deepseek2   DeepSeek-V3 and Kimi-K2: latent attention (kv_b_proj rebuilt from the attn_k_b and
//               attn_v_b halves the converter splits it into), sigmoid routing with its
//               correction bias, YaRN.
// A stacked expert tensor (ffn_gate_exps ...: experts x out x in) becomes one tensor per expert.
// What the metadata leaves out is read as llama.cpp runs the file: top-k weights renormalised
// for qwen3moe and Mixtral, not for qwen2moe; a mixture in every qwen*moe layer; DeepSeek's
// rotary pairs adjacent, YaRN's mscale equal to mscale_all_dim. Refused by name: other
// architectures; a deepseek2 file routed by softmax (DeepSeek-V2: no expert_gating_func 2);
// rotary scaling other than none, linear, llama's rope_freqs and deepseek2's YaRN; a missing
// tensor, and any tensor the model has no place for (by llama.cpp's name). Checked against
// llama.cpp's own converter on every tiny fixture (tests/interop/check_gguf_fixtures.sh). The
// tensors are held in memory as 32-bit floats (4 bytes a weight; 8 while they are converted,
// checked against the machine's memory first).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/common/error.hpp"
#include "gsq/common/memory.hpp"
#include "gsq/format/gguf_file.hpp"
#include "gsq/io/safetensors.hpp"
#include "gsq/model/config.hpp"
#include "gsq/model/llama.hpp"

namespace gsq {

struct GgufCheckpoint {
  nlohmann::json config;  // as a config.json would say it, but for a llama3-scaled rope (below)
  std::vector<float> rope_frequency_factors;  // llama.cpp's rope_freqs (its llama3 scaling); empty: none
  Checkpoint checkpoint;  // Hugging Face's names and layout, F32, in memory

  /// The model's settings: `config` parsed, the rope's frequency factors applied.
  LlamaConfig model_config() const {
    LlamaConfig parsed = LlamaConfig::from_json(config, checkpoint.source() + " (its GGUF metadata)");
    parsed.rotary.frequency_factors = rope_frequency_factors;
    return parsed;
  }
};

namespace detail {

/// Tensors by their llama.cpp and Hugging Face names: the whole model's, then a decoder layer's
/// (after "blk.N." and "model.layers.N."). The GGUF export names a Llama's tensors by the same
/// tables (gsq/export/gguf_model.hpp).
struct TensorNamePair {
  const char* llama_cpp;
  const char* hugging_face;
};
inline const std::vector<TensorNamePair>& llama_model_tensor_names() {
  static const std::vector<TensorNamePair> names = {
      {"token_embd.weight", "model.embed_tokens.weight"}, {"output_norm.weight", "model.norm.weight"}, {"output.weight", "lm_head.weight"}};
  return names;
}
/// Llama's layer, then what the other families add: Qwen2's biases, Qwen3's q/k norms,
/// DeepSeek-V3's latent attention. A mixture's tensors are named by its config
/// (MixtureConfig's block names), so they are not listed.
inline const std::vector<TensorNamePair>& llama_layer_tensor_names() {
  static const std::vector<TensorNamePair> names = {
      {"attn_norm.weight", "input_layernorm.weight"},  {"ffn_norm.weight", "post_attention_layernorm.weight"},
      {"attn_q.weight", "self_attn.q_proj.weight"},    {"attn_k.weight", "self_attn.k_proj.weight"},
      {"attn_v.weight", "self_attn.v_proj.weight"},    {"attn_output.weight", "self_attn.o_proj.weight"},
      {"ffn_gate.weight", "mlp.gate_proj.weight"},     {"ffn_up.weight", "mlp.up_proj.weight"},
      {"ffn_down.weight", "mlp.down_proj.weight"},
      {"attn_q.bias", "self_attn.q_proj.bias"},        {"attn_k.bias", "self_attn.k_proj.bias"},
      {"attn_v.bias", "self_attn.v_proj.bias"},
      {"attn_q_norm.weight", "self_attn.q_norm.weight"}, {"attn_k_norm.weight", "self_attn.k_norm.weight"},
      {"attn_q_a.weight", "self_attn.q_a_proj.weight"}, {"attn_q_a_norm.weight", "self_attn.q_a_layernorm.weight"},
      {"attn_q_b.weight", "self_attn.q_b_proj.weight"}, {"attn_kv_a_mqa.weight", "self_attn.kv_a_proj_with_mqa.weight"},
      {"attn_kv_a_norm.weight", "self_attn.kv_a_layernorm.weight"}};
  return names;
}

/// `name` in the other naming: from one side's prefix and names (`from`) to the other's (`to`), or
/// empty for a tensor the tables do not list.
inline std::string renamed_tensor(const std::string& name, const char* TensorNamePair::*from, const char* TensorNamePair::*to,
                                  const std::string& from_prefix, const std::string& to_prefix) {
  for (const TensorNamePair& pair : llama_model_tensor_names())
    if (name == pair.*from) return pair.*to;
  if (name.compare(0, from_prefix.size(), from_prefix) != 0) return {};
  const std::size_t dot = name.find('.', from_prefix.size());
  if (dot == std::string::npos) return {};
  const std::string layer = name.substr(from_prefix.size(), dot - from_prefix.size()), rest = name.substr(dot + 1);
  if (layer.empty() || layer.find_first_not_of("0123456789") != std::string::npos) return {};
  for (const TensorNamePair& pair : llama_layer_tensor_names())
    if (rest == pair.*from) return to_prefix + layer + "." + pair.*to;
  return {};
}

/// Hugging Face's name of llama.cpp tensor `name`, or empty.
inline std::string hugging_face_tensor_name(const std::string& name) {
  return renamed_tensor(name, &TensorNamePair::llama_cpp, &TensorNamePair::hugging_face, "blk.", "model.layers.");
}

/// llama.cpp's name of checkpoint tensor `name`, or empty for one it does not load.
inline std::string llama_cpp_tensor_name(const std::string& name) {
  return renamed_tensor(name, &TensorNamePair::hugging_face, &TensorNamePair::llama_cpp, "model.layers.", "blk.");
}

/// Rows of `values` (rows x cols) from llama.cpp's rotary order back to Hugging Face's, for
/// `heads` heads: llama.cpp's row 2i + j of a head is Hugging Face's row j * half + i.
inline std::vector<float> rotary_rows_halved(const std::vector<float>& values, long rows, long cols, long heads) {
  std::vector<float> out(values.size());
  const long head_dim = rows / heads, half = head_dim / 2;
  for (long head = 0; head < heads; ++head)
    for (long i = 0; i < half; ++i)
      for (long j = 0; j < 2; ++j)
        std::copy_n(values.begin() + (head * head_dim + 2 * i + j) * cols, cols, out.begin() + (head * head_dim + j * half + i) * cols);
  return out;
}

/// A count from the GGUF metadata: a non-negative integer.
inline long gguf_count(const GgufFile& file, const std::string& key) {
  const nlohmann::json& value = file.value(key);
  require(value.is_number_unsigned() || (value.is_number_integer() && value.get<long>() >= 0),
          file.path() + ": metadata \"" + key + "\" is " + value.dump() + ", not a count (a per-layer list is not read)");
  return value.get<long>();
}

inline double gguf_number(const GgufFile& file, const std::string& key, double fallback) {
  const auto found = file.metadata().find(key);
  if (found == file.metadata().end()) return fallback;
  require(found->second.is_number(), file.path() + ": metadata \"" + key + "\" is not a number");
  return found->second.get<double>();
}

/// An architecture's hyper-parameters: the metadata under "<architecture>.".
struct GgufHyperparameters {
  const GgufFile& file;
  std::string architecture;

  std::string key(const std::string& name) const { return architecture + "." + name; }
  bool has(const std::string& name) const { return file.metadata().count(key(name)) != 0; }
  long count(const std::string& name) const { return gguf_count(file, key(name)); }
  long count(const std::string& name, long fallback) const { return has(name) ? count(name) : fallback; }
  double number(const std::string& name, double fallback) const { return gguf_number(file, key(name), fallback); }
  bool flag(const std::string& name, bool fallback) const {
    if (!has(name)) return fallback;
    const nlohmann::json& value = file.value(key(name));
    require(value.is_boolean(), file.path() + ": metadata \"" + key(name) + "\" is not true or false");
    return value.get<bool>();
  }
  std::string text(const std::string& name, const std::string& fallback) const {
    if (!has(name)) return fallback;
    const nlohmann::json& value = file.value(key(name));
    require(value.is_string(), file.path() + ": metadata \"" + key(name) + "\" is not a string");
    return value.get<std::string>();
  }
};

/// The architectures read, by llama.cpp's name, with Hugging Face's (a llama with experts is a
/// Mixtral).
inline const std::vector<std::pair<std::string, std::string>>& gguf_architectures() {
  static const std::vector<std::pair<std::string, std::string>> names = {
      {"llama", "LlamaForCausalLM"},        {"qwen2", "Qwen2ForCausalLM"},       {"qwen3", "Qwen3ForCausalLM"},
      {"qwen2moe", "Qwen2MoeForCausalLM"},  {"qwen3moe", "Qwen3MoeForCausalLM"}, {"deepseek2", "DeepseekV3ForCausalLM"}};
  return names;
}

/// config.json of the GGUF `file` of architecture `architecture` (one of gguf_architectures()),
/// from its metadata; what the metadata leaves out as llama.cpp runs the file.
inline nlohmann::json gguf_config(const GgufFile& file, const std::string& architecture, const std::string& hugging_face) {
  const GgufHyperparameters meta{file, architecture};
  const std::string& path = file.path();
  const long heads = meta.count("attention.head_count"), hidden = meta.count("embedding_length");
  require(heads > 0 && hidden > 0, path + ": no attention heads or an empty embedding");
  require(file.contains("token_embd.weight") && file.tensor("token_embd.weight").shape.size() == 2,
          path + ": no 2-D token_embd.weight");
  nlohmann::json config = {{"architectures", {hugging_face}},
                           {"hidden_act", "silu"},
                           {"vocab_size", file.tensor("token_embd.weight").shape[0]},
                           {"hidden_size", hidden},
                           {"intermediate_size", meta.count("feed_forward_length")},
                           {"num_hidden_layers", meta.count("block_count")},
                           {"num_attention_heads", heads},
                           {"num_key_value_heads", meta.count("attention.head_count_kv", heads)},
                           {"rms_norm_eps", meta.number("attention.layer_norm_rms_epsilon", 1e-5)},
                           {"rope_theta", meta.number("rope.freq_base", 10000.0)},
                           {"max_position_embeddings", meta.count("context_length", 2048)},
                           {"tie_word_embeddings", !file.contains("output.weight")}};
  if (architecture == "deepseek2") {
    // llama.cpp's latent-attention layout: key_length_mla and value_length_mla are a head's
    // query/key and value widths (key_length and value_length describe its absorbed form).
    const long rope = meta.count("rope.dimension_count"), key = meta.count("attention.key_length_mla");
    require(key > rope, path + ": attention.key_length_mla " + std::to_string(key) + " leaves no room beside the rope's " +
                            std::to_string(rope) + " dimensions");
    const long gating = meta.count("expert_gating_func", 0);
    require(gating == 2, path + ": deepseek2.expert_gating_func is " +
                             (gating ? std::to_string(gating) : "absent (llama.cpp then routes by softmax, as DeepSeek-V2)") +
                             "; gsq runs DeepSeek-V3's sigmoid routing (2)");
    config.update({{"num_key_value_heads", heads},  // the converter writes 1 for the absorbed form
                   {"q_lora_rank", meta.count("attention.q_lora_rank", 0)},
                   {"kv_lora_rank", meta.count("attention.kv_lora_rank")},
                   {"qk_rope_head_dim", rope},
                   {"qk_nope_head_dim", key - rope},
                   {"v_head_dim", meta.count("attention.value_length_mla")},
                   {"rope_interleave", true},  // llama.cpp rotates adjacent pairs here, and the converter leaves rows alone
                   {"n_routed_experts", meta.count("expert_count")},
                   {"moe_intermediate_size", meta.count("expert_feed_forward_length")},
                   {"n_shared_experts", meta.count("expert_shared_count")},
                   {"n_group", meta.count("expert_group_count", 1)},
                   {"topk_group", meta.count("expert_group_used_count", 1)},
                   {"routed_scaling_factor", meta.number("expert_weights_scale", 1.0)},
                   {"norm_topk_prob", meta.flag("expert_weights_norm", false)},
                   {"first_k_dense_replace", meta.count("leading_dense_block_count", 0)},
                   {"scoring_func", "sigmoid"},
                   {"topk_method", "noaux_tc"}});
  } else {
    const long head_dim = meta.count("attention.key_length", hidden / heads);
    require(head_dim > 0 && (meta.has("attention.key_length") || hidden % heads == 0),
            path + ": the attention heads (" + std::to_string(heads) + ") do not divide the embedding length (" +
                std::to_string(hidden) + ")");
    require(meta.count("attention.value_length", head_dim) == head_dim, path + ": values wider or narrower than keys are not read");
    require(meta.count("rope.dimension_count", head_dim) == head_dim, path + ": rotary embeddings over part of a head are not read");
    config["head_dim"] = head_dim;
  }
  if (architecture == "qwen2" || architecture == "qwen2moe") config["qkv_bias"] = true;
  if (meta.has("expert_count")) config["num_experts_per_tok"] = meta.count("expert_used_count");
  if (architecture == "llama" && meta.has("expert_count")) {
    config["architectures"] = {"MixtralForCausalLM"};
    config["num_local_experts"] = meta.count("expert_count");
    config["intermediate_size"] = meta.count("expert_feed_forward_length", meta.count("feed_forward_length"));
  }
  if (architecture == "qwen2moe" || architecture == "qwen3moe") {
    config.update({{"num_experts", meta.count("expert_count")},
                   {"moe_intermediate_size", meta.count("expert_feed_forward_length")},
                   {"norm_topk_prob", architecture == "qwen3moe"},  // fixed in llama.cpp's graphs, not stored
                   {"decoder_sparse_step", 1},                     // llama.cpp has a mixture in every layer
                   {"mlp_only_layers", nlohmann::json::array()}});
    if (architecture == "qwen2moe")  // llama.cpp's fallback width: the dense one
      config["shared_expert_intermediate_size"] = meta.count("expert_shared_feed_forward_length", meta.count("feed_forward_length"));
  }

  const std::string scaling = meta.text("rope.scaling.type", "none");
  if (scaling == "linear") {
    config["rope_scaling"] = {{"rope_type", "linear"}, {"factor", meta.number("rope.scaling.factor", 1.0)}};
  } else if (scaling == "yarn" && architecture == "deepseek2") {
    // The converter stores 0.1 mscale_all_dim; llama.cpp takes mscale equal to it. Without it (or
    // with an attention factor of its own) llama.cpp scales otherwise than transformers would.
    const double mscale = static_cast<float>(meta.number("rope.scaling.yarn_log_multiplier", 0)) / 0.1f;
    require(mscale > 0 && !meta.has("rope.scaling.yarn_attn_factor") && !meta.has("rope.scaling.yarn_ext_factor"),
            path + ": YaRN is read with a positive yarn_log_multiplier and without yarn_attn_factor or yarn_ext_factor");
    config["rope_scaling"] = {{"rope_type", "yarn"},
                              {"factor", meta.number("rope.scaling.factor", 1.0)},
                              {"original_max_position_embeddings", meta.count("rope.scaling.original_context_length")},
                              {"beta_fast", meta.number("rope.scaling.yarn_beta_fast", 32.0)},
                              {"beta_slow", meta.number("rope.scaling.yarn_beta_slow", 1.0)},
                              {"mscale", mscale},
                              {"mscale_all_dim", mscale}};
  } else {
    require(scaling == "none", path + ": rotary scaling \"" + scaling + "\" is not read for " + architecture +
                                   " (none or linear; yarn for deepseek2; llama3 as llama's rope_freqs)");
  }
  return config;
}

/// The norm and attention tensors llama.cpp stores for each decoder layer of `config` (after
/// "blk.N."); DeepSeek's kv_b_proj (stored as two halves) and the MLP are read apart.
inline std::vector<std::string> gguf_attention_tensors(const LlamaConfig& config) {
  std::vector<std::string> names = {"attn_norm.weight", "ffn_norm.weight", "attn_output.weight"};
  if (config.latent_attention()) {
    if (config.latent.query_rank > 0)
      names.insert(names.end(), {"attn_q_a.weight", "attn_q_a_norm.weight", "attn_q_b.weight"});
    else
      names.push_back("attn_q.weight");
    names.insert(names.end(), {"attn_kv_a_mqa.weight", "attn_kv_a_norm.weight"});
    return names;
  }
  names.insert(names.end(), {"attn_q.weight", "attn_k.weight", "attn_v.weight"});
  if (config.qkv_bias) names.insert(names.end(), {"attn_q.bias", "attn_k.bias", "attn_v.bias"});
  if (config.qk_norm) names.insert(names.end(), {"attn_q_norm.weight", "attn_k_norm.weight"});
  return names;
}

/// The tensors of a GGUF file converted one by one into a safetensors writer, each taken once;
/// what is never taken has no place in the model.
class GgufTensorReader {
 public:
  explicit GgufTensorReader(const GgufFile& file) : file_(file) {}

  /// Tensor `name`'s values; an error unless it is there (in `shape`, if given).
  std::vector<float> take(const std::string& name, const std::vector<std::int64_t>& shape = {}) {
    require(file_.contains(name), file_.path() + ": no tensor '" + name + "'");
    const std::vector<std::int64_t>& stored = file_.tensor(name).shape;
    require(shape.empty() || stored == shape, file_.path() + ": tensor '" + name + "' has shape " + shape_text(stored) +
                                                  ", not " + shape_text(shape));
    taken_.insert(name);
    return file_.float_values(name);
  }

  /// Tensor `name` as checkpoint tensor `hugging_face`, in its own shape or `shape`.
  void copy(const std::string& name, const std::string& hugging_face, std::vector<std::int64_t> shape = {}) {
    std::vector<float> values = take(name);
    if (shape.empty()) shape = file_.tensor(name).shape;
    require(static_cast<std::size_t>(shape_elements(shape)) == values.size(),
            file_.path() + ": tensor '" + name + "' does not hold " + shape_text(shape) + " values");
    add(hugging_face, shape, values);
  }

  void add(const std::string& hugging_face, const std::vector<std::int64_t>& shape, const std::vector<float>& values) {
    writer_.add(hugging_face, shape, values);
  }

  /// The checkpoint, after an error for any tensor not taken.
  Checkpoint finish(const std::string& architecture) {
    for (const GgufTensor& tensor : file_.tensors())
      require(taken_.count(tensor.name) != 0, file_.path() + ": tensor '" + tensor.name + "' has no place in the " + architecture +
                                                  " model this file's metadata describes");
    return Checkpoint::of_file(SafetensorsFile::from_bytes(writer_.to_bytes(), file_.path()), file_.path());
  }

 private:
  static std::int64_t shape_elements(const std::vector<std::int64_t>& shape) {
    std::int64_t count = 1;
    for (const std::int64_t size : shape) count *= size;
    return count;
  }

  const GgufFile& file_;
  SafetensorsWriter writer_;
  std::set<std::string> taken_;
};

}  // namespace detail

/// Reads the GGUF file at `path` as a Hugging Face checkpoint (see the top of this file).
inline GgufCheckpoint read_gguf_checkpoint(const std::string& path) {
  const GgufFile file = GgufFile::open(path);
  const nlohmann::json& architecture_value = file.value("general.architecture");
  const auto& architectures = detail::gguf_architectures();
  const auto family = std::find_if(architectures.begin(), architectures.end(),
                                   [&](const auto& pair) { return architecture_value == pair.first; });
  if (family == architectures.end()) {
    std::string names;
    for (const auto& pair : architectures) names += (names.empty() ? "" : ", ") + pair.first;
    throw Error(path + ": general.architecture is " + architecture_value.dump() + "; gsq reads GGUF files of architecture " + names);
  }
  const std::string& architecture = family->first;

  GgufCheckpoint result;
  result.config = detail::gguf_config(file, architecture, family->second);
  const LlamaConfig config = LlamaConfig::from_json(result.config, path + " (its GGUF metadata)");
  double elements = 0;
  for (const GgufTensor& tensor : file.tensors()) elements += static_cast<double>(tensor.elements());
  require_memory(8 * elements, "reading " + path + " as 32-bit floats (" + std::to_string(static_cast<long>(elements)) + " weights)");

  detail::GgufTensorReader tensors(file);
  for (const detail::TensorNamePair& pair : detail::llama_model_tensor_names())
    if (pair.llama_cpp != std::string("output.weight") || !config.tie_word_embeddings) tensors.copy(pair.llama_cpp, pair.hugging_face);
  if (architecture == "llama" && file.contains("rope_freqs.weight")) {
    result.rope_frequency_factors = tensors.take("rope_freqs.weight", {config.rotary_dim / 2});
    for (const float factor : result.rope_frequency_factors)
      require(factor > 0 && std::isfinite(factor), path + ": rope_freqs.weight holds " + std::to_string(factor) + ", not a positive factor");
  }

  const long hidden = config.hidden_size;
  const std::array<std::string, 3> projections = {"ffn_gate", "ffn_up", "ffn_down"};
  for (long layer = 0; layer < config.layers; ++layer) {
    const std::string gguf = "blk." + std::to_string(layer) + ".", ours = "model.layers." + std::to_string(layer) + ".";
    for (const std::string& name : detail::gguf_attention_tensors(config)) {
      std::vector<float> values = tensors.take(gguf + name);
      const std::vector<std::int64_t>& shape = file.tensor(gguf + name).shape;
      const bool query = name == "attn_q.weight", key = name == "attn_k.weight";
      if (architecture == "llama" && (query || key)) {
        const long heads = query ? config.attention_heads : config.key_value_heads;
        require(shape.size() == 2 && shape[0] % heads == 0, path + ": tensor '" + gguf + name + "' is not whole heads");
        values = detail::rotary_rows_halved(values, shape[0], shape[1], heads);
      }
      tensors.add(detail::hugging_face_tensor_name(gguf + name), shape, values);
    }
    if (config.latent_attention()) {
      // kv_b_proj, per head [nope rows | value rows] x rank, is stored as attn_k_b (the nope rows,
      // transposed: heads x rank x nope) and attn_v_b (heads x value x rank).
      const long heads = config.attention_heads, rank = config.latent.key_value_rank, nope = config.latent.nope_dim,
                 value = config.latent.value_dim, width = nope + value;
      const std::vector<float> keys = tensors.take(gguf + "attn_k_b.weight", {heads, rank, nope}),
                               values = tensors.take(gguf + "attn_v_b.weight", {heads, value, rank});
      std::vector<float> merged(static_cast<std::size_t>(heads * width * rank));
      for (long head = 0; head < heads; ++head) {
        for (long row = 0; row < nope; ++row)
          for (long col = 0; col < rank; ++col) merged[(head * width + row) * rank + col] = keys[(head * rank + col) * nope + row];
        std::copy_n(values.begin() + head * value * rank, value * rank, merged.begin() + (head * width + nope) * rank);
      }
      tensors.add(ours + "self_attn.kv_b_proj.weight", {heads * width, rank}, merged);
    }

    // The MLP: dense, or routed experts (stacked: experts x out x in, one tensor a projection)
    // and a shared expert, named in the checkpoint as the config names them.
    const MixtureConfig& mixture = config.mixture;
    const bool mixed = mixture.in_layer(layer);
    const std::vector<SwiGluBlock> blocks = config.swiglu_blocks(layer);
    for (const SwiGluBlock& block : blocks) {
      if (block.expert > 0) continue;  // split from the stacked tensors at expert 0
      for (std::size_t k = 0; k < projections.size(); ++k) {
        const std::string name = gguf + projections[k] + (block.expert == 0 ? "_exps" : mixed ? "_shexp" : "") + ".weight";
        if (block.expert < 0) {
          tensors.copy(name, ours + block.linears[k] + ".weight");
          continue;
        }
        const long rows = k == 2 ? hidden : block.width, cols = k == 2 ? block.width : hidden, size = rows * cols;
        const std::vector<float> stacked = tensors.take(name, {mixture.experts, rows, cols});
        for (long expert = 0; expert < mixture.experts; ++expert)
          tensors.add(ours + blocks[static_cast<std::size_t>(expert)].linears[k] + ".weight", {rows, cols},
                      std::vector<float>(stacked.begin() + expert * size, stacked.begin() + (expert + 1) * size));
      }
    }
    if (mixed) {
      tensors.copy(gguf + "ffn_gate_inp.weight", ours + mixture.block + ".gate.weight");
      if (mixture.gated_shared_expert) tensors.copy(gguf + "ffn_gate_inp_shexp.weight", ours + mixture.shared_block + "_gate.weight", {1, hidden});
      if (mixture.router == MixtureConfig::Router::grouped_sigmoid)
        tensors.copy(gguf + "exp_probs_b.bias", ours + mixture.block + ".gate.e_score_correction_bias");
    }
  }
  result.checkpoint = tensors.finish(architecture);
  return result;
}

/// Whether `path` names a GGUF file (by its name: a model directory never ends in .gguf).
inline bool is_gguf_path(const std::string& path) {
  return path.size() > 5 && path.compare(path.size() - 5, 5, ".gguf") == 0;
}

/// The model at `path`: a checkpoint directory (streamed, LlamaModel::open) or a GGUF file.
inline LlamaModel open_model(const std::string& path) {
  if (!is_gguf_path(path)) return LlamaModel::open(path);
  GgufCheckpoint gguf = read_gguf_checkpoint(path);
  const LlamaConfig config = gguf.model_config();
  return LlamaModel::open(config, std::move(gguf.checkpoint));
}

}  // namespace gsq
