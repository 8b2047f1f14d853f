// Writes a random Llama checkpoint of a given shape (config.json + BF16 model.safetensors), for
// timing the whole-model pipeline on real model shapes without downloading the model. Weights
// are N(0, 0.02^2) from Philox, norms are 1; the defaults are SmolLM2-135M's shape with 2 of its
// 30 decoder layers.
//
//   build/random_model --out /tmp/smollm2-shape [--layers 2] [--hidden 576] [--intermediate 1536]
//                      [--heads 9] [--kv-heads 3] [--vocab 49152] [--seed 1]
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <gsq/gsq.hpp>

namespace {

struct Shape {
  long layers = 2, hidden = 576, intermediate = 1536, heads = 9, kv_heads = 3, vocab = 49152;
  std::uint64_t seed = 1;
};

gsq::Matrix<float> random_matrix(long rows, long cols, std::uint64_t seed, std::uint64_t stream) {
  gsq::Matrix<float> m(rows, cols);
  for (std::size_t i = 0; i < m.size(); ++i)
    m.values[i] = static_cast<float>(0.02 * gsq::detail::standard_normal(seed, stream, i));
  return m;
}

void write_model(const Shape& shape, const std::string& out) {
  for (long value : {shape.layers, shape.hidden, shape.intermediate, shape.heads, shape.kv_heads, shape.vocab})
    gsq::require(value > 0, "every shape value must be positive");
  // A timing model must never replace a real one.
  gsq::require(!std::filesystem::exists(out) || std::filesystem::is_empty(out),
               out + " exists and is not empty: give a new directory");
  const long head_dim = shape.hidden / shape.heads;
  gsq::require(head_dim * shape.heads == shape.hidden, "--hidden must be a multiple of --heads");
  gsq::require(shape.heads % shape.kv_heads == 0, "--heads must be a multiple of --kv-heads");
  std::filesystem::create_directories(out);
  const nlohmann::json config = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
                                 {"hidden_size", shape.hidden}, {"intermediate_size", shape.intermediate},
                                 {"num_hidden_layers", shape.layers}, {"num_attention_heads", shape.heads},
                                 {"num_key_value_heads", shape.kv_heads}, {"head_dim", head_dim},
                                 {"vocab_size", shape.vocab}, {"rms_norm_eps", 1e-5}, {"rope_theta", 100000.0},
                                 {"hidden_act", "silu"}, {"tie_word_embeddings", true}, {"torch_dtype", "bfloat16"}};
  gsq::write_text_atomically(out + "/config.json", config.dump(2) + "\n");

  gsq::SafetensorsWriter writer;
  std::uint64_t stream = 0;
  const auto add = [&](const std::string& name, long rows, long cols) {
    writer.add(name, random_matrix(rows, cols, shape.seed, ++stream), gsq::Dtype::BF16);
  };
  const auto add_ones = [&](const std::string& name) {
    writer.add(name, {shape.hidden}, std::vector<float>(static_cast<std::size_t>(shape.hidden), 1.0f), gsq::Dtype::BF16);
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

}  // namespace

int main(int argc, char** argv) {
  Shape shape;
  std::string out;
  try {
    for (int i = 1; i + 1 < argc; i += 2) {
      const std::string flag = argv[i];
      char* end = nullptr;
      const long value = std::strtol(argv[i + 1], &end, 10);
      gsq::require(flag == "--out" || (*argv[i + 1] && !*end), flag + ": '" + argv[i + 1] + "' is not an integer");
      if (flag == "--out") out = argv[i + 1];
      else if (flag == "--layers") shape.layers = value;
      else if (flag == "--hidden") shape.hidden = value;
      else if (flag == "--intermediate") shape.intermediate = value;
      else if (flag == "--heads") shape.heads = value;
      else if (flag == "--kv-heads") shape.kv_heads = value;
      else if (flag == "--vocab") shape.vocab = value;
      else if (flag == "--seed") shape.seed = static_cast<std::uint64_t>(value);
      else out.clear(), i = argc;
    }
    if (out.empty()) {
      std::fprintf(stderr, "usage: random_model --out DIR [--layers 2] [--hidden 576] [--intermediate 1536] [--heads 9] "
                           "[--kv-heads 3] [--vocab 49152] [--seed 1]\n");
      return 2;
    }
    write_model(shape, out);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "random_model: error: %s\n", error.what());
    return 1;
  }
  std::printf("wrote %s (%ld layers, hidden %ld, intermediate %ld)\n", out.c_str(), shape.layers, shape.hidden, shape.intermediate);
}
