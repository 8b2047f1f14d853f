// gsq/model/gguf_layout.hpp -- how llama.cpp's converter (convert_hf_to_gguf.py) lays a Hugging
// Face model out as GGUF: the llama.cpp architecture of each Hugging Face one, and every tensor
// of the file with the checkpoint tensors it is made of and how. One table for both directions:
// the GGUF reader (gsq/model/gguf_checkpoint.hpp) undoes each form, the GGUF export
// (gsq/export/gguf_architecture.hpp) applies it.
//
//   same          one checkpoint tensor as it is
//   rotary_rows   q_proj / k_proj of llama: each head's rows in llama.cpp's rotary order, row
//                 2 i + j of a head being the checkpoint's row j * head_dim / 2 + i (llama.cpp turns
//                 adjacent pairs, Hugging Face's Llama the two halves)
//   stacked       a routed projection of every expert as one experts x rows x cols tensor
//   key_latent    attn_k_b: DeepSeek's kv_b_proj (per head [key rows | value rows] x rank), each
//                 head's key rows transposed (heads x rank x key)
//   value_latent  attn_v_b: each head's value rows of kv_b_proj (heads x value x rank)
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "gsq/model/config.hpp"

namespace gsq {

/// A Hugging Face architecture and the llama.cpp one its GGUF is written as. Several map to
/// llama; reading llama, the first (Llama) is taken, a Mixtral when the file has experts.
struct GgufArchitecture {
  const char* llama_cpp;
  const char* hugging_face;
};
inline const std::vector<GgufArchitecture>& gguf_architectures() {
  static const std::vector<GgufArchitecture> names = {
      {"llama", "LlamaForCausalLM"},       {"llama", "MistralForCausalLM"},     {"llama", "MixtralForCausalLM"},
      {"qwen2", "Qwen2ForCausalLM"},       {"qwen3", "Qwen3ForCausalLM"},       {"qwen2moe", "Qwen2MoeForCausalLM"},
      {"qwen3moe", "Qwen3MoeForCausalLM"}, {"deepseek2", "DeepseekV3ForCausalLM"}};
  return names;
}

/// llama.cpp's architecture for Hugging Face's `hugging_face`, or empty.
inline std::string llama_cpp_architecture(const std::string& hugging_face) {
  for (const GgufArchitecture& pair : gguf_architectures())
    if (hugging_face == pair.hugging_face) return pair.llama_cpp;
  return {};
}

enum class GgufForm { same, rotary_rows, stacked, key_latent, value_latent };

/// The rotary_rows order of a tensor of `rows` rows and `heads` heads: GGUF row r is checkpoint
/// row order[r].
inline std::vector<long> llama_cpp_rotary_order(long rows, long heads) {
  std::vector<long> order(static_cast<std::size_t>(rows));
  const long head_dim = rows / heads, half = head_dim / 2;
  for (long head = 0; head < heads; ++head)
    for (long i = 0; i < half; ++i)
      for (long j = 0; j < 2; ++j) order[static_cast<std::size_t>(head * head_dim + 2 * i + j)] = head * head_dim + j * half + i;
  return order;
}

/// One tensor of the GGUF file and the checkpoint tensors it is made of.
struct GgufTensorLayout {
  std::string gguf;                     // llama.cpp's name
  GgufForm form = GgufForm::same;
  std::vector<std::string> checkpoint;  // Hugging Face's names: one, or one per expert (stacked)
  std::vector<std::int64_t> shape;      // each checkpoint tensor's shape
  long heads = 0;                       // rotary_rows, key_latent, value_latent

  /// The GGUF tensor's shape (row-major, outermost first).
  std::vector<std::int64_t> gguf_shape(const LlamaConfig& config) const {
    switch (form) {
      case GgufForm::stacked: {
        std::vector<std::int64_t> stacked = {static_cast<std::int64_t>(checkpoint.size())};
        stacked.insert(stacked.end(), shape.begin(), shape.end());
        return stacked;
      }
      case GgufForm::key_latent: return {heads, config.latent.key_value_rank, config.latent.nope_dim};
      case GgufForm::value_latent: return {heads, config.latent.value_dim, config.latent.key_value_rank};
      default: return shape;
    }
  }
};

/// Every tensor of the GGUF file of a model of `config`, as llama.cpp's converter writes it
/// (llama.cpp's rope_freqs, which no checkpoint holds, apart).
inline std::vector<GgufTensorLayout> gguf_layout(const LlamaConfig& config) {
  using Shape = std::vector<std::int64_t>;
  const std::string architecture = llama_cpp_architecture(config.architecture);
  const long hidden = config.hidden_size;
  std::vector<GgufTensorLayout> tensors = {{"token_embd.weight", GgufForm::same, {"model.embed_tokens.weight"}, {config.vocab_size, hidden}, 0},
                                           {"output_norm.weight", GgufForm::same, {"model.norm.weight"}, {hidden}, 0}};
  if (!config.tie_word_embeddings)
    tensors.push_back({"output.weight", GgufForm::same, {"lm_head.weight"}, {config.vocab_size, hidden}, 0});

  for (long layer = 0; layer < config.layers; ++layer) {
    const std::string gguf = "blk." + std::to_string(layer) + ".", ours = "model.layers." + std::to_string(layer) + ".";
    const auto add = [&](const std::string& name, const std::string& checkpoint, Shape shape, GgufForm form = GgufForm::same,
                         long heads = 0) {
      tensors.push_back({gguf + name, form, {ours + checkpoint}, std::move(shape), heads});
    };
    add("attn_norm.weight", "input_layernorm.weight", {hidden});
    add("ffn_norm.weight", "post_attention_layernorm.weight", {hidden});
    // The linears, in the config's words; their llama.cpp names by the checkpoint's.
    for (const LinearShape& linear : config.linears(layer)) {
      const Shape shape = {linear.rows, linear.cols};
      const std::string& name = linear.name;
      if (name == "self_attn.q_proj" || name == "self_attn.k_proj") {
        const bool query = name == "self_attn.q_proj";
        const std::string gguf_name = query ? "attn_q" : "attn_k";
        const long heads = query ? config.attention_heads : config.key_value_heads;
        const bool llama = architecture == "llama" && !config.latent_attention();
        add(gguf_name + ".weight", name + ".weight", shape, llama ? GgufForm::rotary_rows : GgufForm::same, heads);
        if (linear.bias) add(gguf_name + ".bias", name + ".bias", {linear.rows}, llama ? GgufForm::rotary_rows : GgufForm::same, heads);
        if (config.qk_norm) add(gguf_name + "_norm.weight", (query ? "self_attn.q_norm" : "self_attn.k_norm") + std::string(".weight"), {config.head_dim});
      } else if (name == "self_attn.v_proj") {
        add("attn_v.weight", name + ".weight", shape);
        if (linear.bias) add("attn_v.bias", name + ".bias", {linear.rows});
      } else if (name == "self_attn.o_proj") {
        add("attn_output.weight", name + ".weight", shape);
      } else if (name == "self_attn.q_a_proj") {
        add("attn_q_a.weight", name + ".weight", shape);
        add("attn_q_a_norm.weight", "self_attn.q_a_layernorm.weight", {config.latent.query_rank});
      } else if (name == "self_attn.q_b_proj") {
        add("attn_q_b.weight", name + ".weight", shape);
      } else if (name == "self_attn.kv_a_proj_with_mqa") {
        add("attn_kv_a_mqa.weight", name + ".weight", shape);
        add("attn_kv_a_norm.weight", "self_attn.kv_a_layernorm.weight", {config.latent.key_value_rank});
      } else if (name == "self_attn.kv_b_proj") {
        add("attn_k_b.weight", name + ".weight", shape, GgufForm::key_latent, config.attention_heads);
        add("attn_v_b.weight", name + ".weight", shape, GgufForm::value_latent, config.attention_heads);
      }
    }
    // The MLP: dense, or routed experts (stacked, one tensor a projection) beside a shared expert.
    const MixtureConfig& mixture = config.mixture;
    const bool mixed = mixture.in_layer(layer);
    const std::vector<SwiGluBlock> blocks = config.swiglu_blocks(layer);
    const char* projections[] = {"ffn_gate", "ffn_up", "ffn_down"};
    for (const SwiGluBlock& block : blocks) {
      if (block.expert > 0) continue;  // stacked at expert 0
      for (std::size_t k = 0; k < 3; ++k) {
        const Shape shape = k == 2 ? Shape{hidden, block.width} : Shape{block.width, hidden};
        const std::string name = projections[k] + std::string(block.expert == 0 ? "_exps" : mixed ? "_shexp" : "") + ".weight";
        if (block.expert < 0) {
          add(name, block.linears[k] + ".weight", shape);
          continue;
        }
        GgufTensorLayout stacked{gguf + name, GgufForm::stacked, {}, shape, 0};
        for (long expert = 0; expert < mixture.experts; ++expert)
          stacked.checkpoint.push_back(ours + blocks[static_cast<std::size_t>(expert)].linears[k] + ".weight");
        tensors.push_back(std::move(stacked));
      }
    }
    if (mixed) {
      add("ffn_gate_inp.weight", mixture.block + ".gate.weight", {mixture.experts, hidden});
      if (mixture.gated_shared_expert) add("ffn_gate_inp_shexp.weight", mixture.shared_block + "_gate.weight", {1, hidden});
      if (mixture.router == MixtureConfig::Router::grouped_sigmoid)
        add("exp_probs_b.bias", mixture.block + ".gate.e_score_correction_bias", {mixture.experts});
    }
  }
  return tensors;
}

}  // namespace gsq
