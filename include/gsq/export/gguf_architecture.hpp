// gsq/export/gguf_architecture.hpp -- what llama.cpp needs to run a model of each architecture
// gsq reads back from GGUF (gsq/model/gguf_checkpoint.hpp), written as llama.cpp's converter
// (convert_hf_to_gguf.py) writes it: the hyper-parameters as "<architecture>.*" metadata, and each
// GGUF tensor assembled from the checkpoint tensors gsq/model/gguf_layout.hpp says it is made of.
//
//   llama       Llama, Mistral; Mixtral (llama with experts: expert_count, ffn_*_exps)
//   qwen2       Qwen2 (q/k/v biases)            qwen3     Qwen3 (q/k norms)
//   qwen2moe    Qwen2-MoE (shared expert and its gate, ffn_gate_inp_shexp)
//   qwen3moe    Qwen3-MoE
//   deepseek2   DeepSeek-V3, Kimi-K2: latent attention (kv_b_proj split into attn_k_b and
//               attn_v_b), sigmoid routing with its correction bias (exp_probs_b), YaRN, leading
//               dense layers
//
// Each checkpoint tensor is encoded once, by the caller's `encode` (a ggml type and its bytes,
// each row whole blocks); the forms then move whole rows, so they keep any encoding exact: q/k
// rows permuted, experts' tensors stacked, each head's value rows of kv_b_proj taken. Only
// attn_k_b, kv_b_proj's key rows transposed, cannot keep a block encoding: it is stored as F32,
// the weights exactly (heads x rank x key of them a layer).
//
// Refused by name, as the reader refuses to read them: biases other than Qwen2's q/k/v, rotary
// scaling llama.cpp would apply otherwise (YaRN outside DeepSeek, YaRN whose mscale differs from
// mscale_all_dim), a DeepSeek-V3 whose rotary pairs are not adjacent, a Qwen-MoE with dense layers
// or with top-k renormalisation other than llama.cpp's fixed choice. A sliding window (Mistral
// v0.1, Qwen's use_sliding_window) is not written: llama.cpp's llama and qwen2 attend to the whole
// context, as in the converter's files.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/common/error.hpp"
#include "gsq/common/matrix.hpp"
#include "gsq/format/ggml_types.hpp"
#include "gsq/format/gguf.hpp"
#include "gsq/model/config.hpp"
#include "gsq/model/gguf_layout.hpp"

namespace gsq {

/// A checkpoint tensor as a GGUF stores it: its ggml type and bytes, row after row.
struct GgufTensorData {
  GgmlType type;
  std::vector<std::uint8_t> bytes;
};

namespace detail {

/// The rotary scaling section of config.json (rope_parameters or rope_scaling), or an empty object.
inline nlohmann::json rope_section(const nlohmann::json& config_json) {
  for (const char* key : {"rope_parameters", "rope_scaling"})
    if (config_json.contains(key) && config_json[key].is_object()) return config_json[key];
  return nlohmann::json::object();
}

}  // namespace detail

/// Why llama.cpp cannot run `config` as gsq writes it, or empty.
inline std::string gguf_architecture_unsupported(const LlamaConfig& config, const nlohmann::json& config_json) {
  const std::string architecture = llama_cpp_architecture(config.architecture);
  if (architecture.empty()) {
    std::string names;
    for (const GgufArchitecture& pair : gguf_architectures()) names += (names.empty() ? "" : ", ") + std::string(pair.hugging_face);
    return "the GGUF export writes " + names + ", not " + config.architecture;
  }
  const bool qwen2 = architecture == "qwen2" || architecture == "qwen2moe", deepseek = architecture == "deepseek2";
  if (config.output_bias || config.mlp_bias || (config.qkv_bias && !qwen2))
    return "llama.cpp's " + architecture + " is written without attention or MLP biases, and " + config.architecture + " has them";
  if (qwen2 && !config.qkv_bias) return "llama.cpp's " + architecture + " has q/k/v biases, and this model has none (qkv_bias false)";
  const std::string& rope = config.rotary.type;
  const bool rope_written = rope == "default" || (rope == "linear" && !deepseek) || (rope == "llama3" && architecture == "llama") ||
                            (rope == "yarn" && deepseek);
  if (!rope_written)
    return "the GGUF export writes rotary scaling linear or llama3 for llama, linear for qwen*, YaRN for deepseek2; not " + rope +
           " for " + architecture;
  if (rope == "yarn") {
    const nlohmann::json section = detail::rope_section(config_json);
    const double mscale = section.value("mscale", 0.0), all = section.value("mscale_all_dim", 0.0);
    if (!(all > 0 && mscale == all) || section.contains("attention_factor"))
      return "llama.cpp's deepseek2 applies YaRN with mscale equal to a positive mscale_all_dim and no attention_factor; this "
             "config has mscale " + std::to_string(mscale) + ", mscale_all_dim " + std::to_string(all);
  }
  if (deepseek && !config.latent.interleaved_rope)
    return "llama.cpp's deepseek2 turns adjacent rotary pairs; this config has rope_interleave false";
  if (architecture == "qwen2moe" || architecture == "qwen3moe") {
    for (long layer = 0; layer < config.layers; ++layer)
      if (!config.mixture.in_layer(layer))
        return "llama.cpp's " + architecture + " has a mixture of experts in every layer; layer " + std::to_string(layer) +
               " of this model is dense (mlp_only_layers, decoder_sparse_step)";
    if (config.mixture.normalize_top_k != (architecture == "qwen3moe"))
      return "llama.cpp's " + architecture + (architecture == "qwen3moe" ? " renormalises" : " does not renormalise") +
             " the top-k expert weights, and this config's norm_topk_prob says otherwise";
  }
  return {};
}

/// The hyper-parameters of `config` as the "<architecture>.*" metadata the converter writes.
inline void set_gguf_hyperparameters(GgufWriter& writer, const LlamaConfig& config, const nlohmann::json& config_json) {
  const std::string architecture = llama_cpp_architecture(config.architecture);
  const auto count = [&](const std::string& key, long value) { writer.set(architecture + "." + key, static_cast<std::uint32_t>(value)); };
  const auto number = [&](const std::string& key, double value) { writer.set(architecture + "." + key, static_cast<float>(value)); };
  const MixtureConfig& mixture = config.mixture;
  const bool deepseek = architecture == "deepseek2";
  writer.set("general.architecture", architecture);
  count("block_count", config.layers);
  count("context_length", config_json.value("max_position_embeddings", 2048L));
  count("embedding_length", config.hidden_size);
  count("feed_forward_length", config.intermediate_size);
  count("attention.head_count", config.attention_heads);
  count("attention.head_count_kv", deepseek ? 1 : config.key_value_heads);  // latent attention is stored as one wide key head
  number("rope.freq_base", config.rotary.theta);
  number("attention.layer_norm_rms_epsilon", config.rms_norm_eps);
  if (mixture.experts > 0) {
    count("expert_count", mixture.experts);
    count("expert_used_count", mixture.experts_per_token);
  }
  if (config_json.contains("head_dim") && !deepseek) {
    count("attention.key_length", config.head_dim);
    count("attention.value_length", config.head_dim);
  }
  if (config.rotary.type == "linear") {
    writer.set(architecture + ".rope.scaling.type", std::string("linear"));
    number("rope.scaling.factor", config.rotary.factor);
  }
  if (architecture == "llama") {
    count("vocab_size", config.vocab_size);
    count("rope.dimension_count", config.head_dim);
  }
  if (architecture == "qwen2moe" || architecture == "qwen3moe") count("expert_feed_forward_length", mixture.expert_intermediate_size);
  if (architecture == "qwen2moe") count("expert_shared_feed_forward_length", mixture.shared_intermediate_size);
  if (!deepseek) return;
  const LatentAttentionConfig& latent = config.latent;
  long dense = 0;
  while (dense < config.layers && !mixture.in_layer(dense)) ++dense;
  count("leading_dense_block_count", dense);
  count("vocab_size", config.vocab_size);
  if (latent.query_rank > 0) count("attention.q_lora_rank", latent.query_rank);
  count("attention.kv_lora_rank", latent.key_value_rank);
  count("attention.key_length", latent.key_value_rank + latent.rope_dim);  // the absorbed form's
  count("attention.value_length", latent.key_value_rank);
  count("attention.key_length_mla", latent.nope_dim + latent.rope_dim);
  count("attention.value_length_mla", latent.value_dim);
  count("rope.dimension_count", latent.rope_dim);
  count("expert_feed_forward_length", mixture.expert_intermediate_size);
  count("expert_shared_count", mixture.shared_intermediate_size / mixture.expert_intermediate_size);
  count("expert_group_count", mixture.groups);
  count("expert_group_used_count", mixture.top_groups);
  count("expert_gating_func", 2);  // sigmoid: without it llama.cpp routes by softmax, as DeepSeek-V2
  number("expert_weights_scale", mixture.routed_scaling);
  if (mixture.normalize_top_k) writer.set(architecture + ".expert_weights_norm", true);
  if (config.rotary.type == "yarn") {
    writer.set(architecture + ".rope.scaling.type", std::string("yarn"));
    number("rope.scaling.factor", config.rotary.factor);
    count("rope.scaling.original_context_length", static_cast<long>(config.rotary.original_max_position_embeddings));
    number("rope.scaling.yarn_beta_fast", config.rotary.beta_fast);
    number("rope.scaling.yarn_beta_slow", config.rotary.beta_slow);
    // The converter's (and so llama.cpp's) reading of mscale_all_dim: 0.1 of it.
    number("rope.scaling.yarn_log_multiplier", 0.1 * detail::rope_section(config_json).value("mscale_all_dim", 0.0));
  }
}

/// Adds `tensor` to `writer`, each checkpoint tensor it is made of encoded by `encode(name)`
/// (a GgufTensorData).
template <class Encode>
void add_gguf_tensor(GgufWriter& writer, const GgufTensorLayout& tensor, const LlamaConfig& config, const Encode& encode) {
  const std::vector<std::int64_t> shape = tensor.gguf_shape(config);
  const long rows = tensor.shape[0];
  const auto row_bytes = [&](const GgufTensorData& data) { return data.bytes.size() / static_cast<std::size_t>(rows); };
  switch (tensor.form) {
    case GgufForm::same: {
      GgufTensorData data = encode(tensor.checkpoint[0]);
      writer.add_tensor(tensor.gguf, shape, data.type, std::move(data.bytes));
      return;
    }
    case GgufForm::rotary_rows: {
      const GgufTensorData data = encode(tensor.checkpoint[0]);
      const std::size_t size = row_bytes(data);
      std::vector<std::uint8_t> bytes(data.bytes.size());
      const std::vector<long> order = llama_cpp_rotary_order(rows, tensor.heads);
      for (std::size_t row = 0; row < order.size(); ++row)
        std::copy_n(data.bytes.begin() + static_cast<long>(static_cast<std::size_t>(order[row]) * size), size,
                    bytes.begin() + static_cast<long>(row * size));
      writer.add_tensor(tensor.gguf, shape, data.type, std::move(bytes));
      return;
    }
    case GgufForm::stacked: {
      GgufTensorData stacked = encode(tensor.checkpoint[0]);
      for (std::size_t expert = 1; expert < tensor.checkpoint.size(); ++expert) {
        const GgufTensorData data = encode(tensor.checkpoint[expert]);
        require(data.type == stacked.type, "GGUF export: " + tensor.checkpoint[expert] + " is " + ggml_type_info(data.type).name +
                                               " and expert 0's " + ggml_type_info(stacked.type).name + ", but llama.cpp stacks the "
                                               "experts of " + tensor.gguf + " in one type");
        stacked.bytes.insert(stacked.bytes.end(), data.bytes.begin(), data.bytes.end());
      }
      writer.add_tensor(tensor.gguf, shape, stacked.type, std::move(stacked.bytes));
      return;
    }
    case GgufForm::value_latent: {
      const GgufTensorData data = encode(tensor.checkpoint[0]);
      const std::size_t size = row_bytes(data);
      const long nope = config.latent.nope_dim, value = config.latent.value_dim;
      std::vector<std::uint8_t> bytes;
      for (long head = 0; head < tensor.heads; ++head) {
        const auto first = data.bytes.begin() + static_cast<long>(static_cast<std::size_t>(head * (nope + value) + nope) * size);
        bytes.insert(bytes.end(), first, first + static_cast<long>(static_cast<std::size_t>(value) * size));
      }
      writer.add_tensor(tensor.gguf, shape, data.type, std::move(bytes));
      return;
    }
    case GgufForm::key_latent: {
      const GgufTensorData data = encode(tensor.checkpoint[0]);
      const long rank = tensor.shape[1], nope = config.latent.nope_dim, width = nope + config.latent.value_dim;
      const std::vector<float> weights = dequantize_ggml(data.type, data.bytes.data(), static_cast<std::size_t>(rows * rank), tensor.gguf);
      Matrix<float> keys(tensor.heads * rank, nope);
      for (long head = 0; head < tensor.heads; ++head)
        for (long row = 0; row < nope; ++row)
          for (long col = 0; col < rank; ++col) keys(head * rank + col, row) = weights[static_cast<std::size_t>((head * width + row) * rank + col)];
      writer.add_tensor(tensor.gguf, shape, GgmlType::F32, encode_float(keys, GgmlType::F32));
      return;
    }
  }
}

/// The checkpoint tensors of `names` that `layout` leaves out, bar those llama.cpp recomputes
/// (rotary_emb.inv_freq).
inline std::vector<std::string> tensors_without_gguf_place(const std::vector<GgufTensorLayout>& layout,
                                                           const std::vector<std::string>& names) {
  std::set<std::string> placed;
  for (const GgufTensorLayout& tensor : layout) placed.insert(tensor.checkpoint.begin(), tensor.checkpoint.end());
  std::vector<std::string> left;
  for (const std::string& name : names)
    if (placed.count(name) == 0 && name.find("rotary_emb.inv_freq") == std::string::npos) left.push_back(name);
  return left;
}

}  // namespace gsq
