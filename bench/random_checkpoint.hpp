// bench/random_checkpoint.hpp -- a random Llama checkpoint of a given shape (config.json + BF16
// model.safetensors), for timing on real model shapes without downloading a model. Weights are
// N(0, 0.02^2) from Philox, norms are 1; the defaults are SmolLM2-135M's shape with 2 of its 30
// decoder layers. Used by random_model (the whole-model pipeline's timings) and step_bench (a
// decoder layer for the layer-output objective).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <gsq/gsq.hpp>

namespace gsq::bench {

struct RandomModelShape {
  long layers = 2, hidden = 576, intermediate = 1536, heads = 9, kv_heads = 3, vocab = 49152;
  std::uint64_t seed = 1;
};

inline Matrix<float> random_matrix(long rows, long cols, std::uint64_t seed, std::uint64_t stream) {
  Matrix<float> m(rows, cols);
  for (std::size_t i = 0; i < m.size(); ++i) m.values[i] = static_cast<float>(0.02 * detail::standard_normal(seed, stream, i));
  return m;
}

/// Writes the checkpoint into `out`, which must not exist or be empty (a timing model must never
/// replace a real one).
inline void write_random_model(const RandomModelShape& shape, const std::string& out) {
  for (long value : {shape.layers, shape.hidden, shape.intermediate, shape.heads, shape.kv_heads, shape.vocab})
    require(value > 0, "every shape value must be positive");
  require(!std::filesystem::exists(out) || std::filesystem::is_empty(out), out + " exists and is not empty: give a new directory");
  const long head_dim = shape.hidden / shape.heads;
  require(head_dim * shape.heads == shape.hidden, "--hidden must be a multiple of --heads");
  require(shape.heads % shape.kv_heads == 0, "--heads must be a multiple of --kv-heads");
  std::filesystem::create_directories(out);
  const nlohmann::json config = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
                                 {"hidden_size", shape.hidden}, {"intermediate_size", shape.intermediate},
                                 {"num_hidden_layers", shape.layers}, {"num_attention_heads", shape.heads},
                                 {"num_key_value_heads", shape.kv_heads}, {"head_dim", head_dim},
                                 {"vocab_size", shape.vocab}, {"rms_norm_eps", 1e-5}, {"rope_theta", 100000.0},
                                 {"hidden_act", "silu"}, {"tie_word_embeddings", true}, {"torch_dtype", "bfloat16"}};
  write_text_atomically(out + "/config.json", config.dump(2) + "\n");

  SafetensorsWriter writer;
  std::uint64_t stream = 0;
  const auto add = [&](const std::string& name, long rows, long cols) {
    writer.add(name, random_matrix(rows, cols, shape.seed, ++stream), Dtype::BF16);
  };
  const auto add_ones = [&](const std::string& name) {
    writer.add(name, {shape.hidden}, std::vector<float>(static_cast<std::size_t>(shape.hidden), 1.0f), Dtype::BF16);
  };
  add("model.embed_tokens.weight", shape.vocab, shape.hidden);
  add_ones("model.norm.weight");
  for (long layer = 0; layer < shape.layers; ++layer) {
    const std::string prefix = "model.layers." + std::to_string(layer) + ".";
    add_ones(prefix + "input_layernorm.weight");
    add_ones(prefix + "post_attention_layernorm.weight");
    add(prefix + "self_attn.q_proj.weight", shape.heads * head_dim, shape.hidden);
    add(prefix + "self_attn.k_proj.weight", shape.kv_heads * head_dim, shape.hidden);
    add(prefix + "self_attn.v_proj.weight", shape.kv_heads * head_dim, shape.hidden);
    add(prefix + "self_attn.o_proj.weight", shape.hidden, shape.heads * head_dim);
    add(prefix + "mlp.gate_proj.weight", shape.intermediate, shape.hidden);
    add(prefix + "mlp.up_proj.weight", shape.intermediate, shape.hidden);
    add(prefix + "mlp.down_proj.weight", shape.hidden, shape.intermediate);
  }
  writer.set_metadata("format", "pt");
  writer.write(out + "/model.safetensors");
}

}  // namespace gsq::bench
