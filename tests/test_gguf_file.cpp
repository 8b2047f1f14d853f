// Tests of gsq/format/gguf_file.hpp and gsq/model/gguf_checkpoint.hpp: a GGUF file read back as it
// was written (metadata of every type, tensors of several ggml types), malformed files refused
// by name, and quantize_model's GGUF export read as the checkpoint beside it: the same weights,
// q/k rows back in Hugging Face's order, the same logits. Small GGUF files of the other families,
// laid out as llama.cpp's converter lays them out, read with their experts split, DeepSeek's
// kv_b_proj rebuilt and llama3's rope_freqs applied; missing, misshapen and stray tensors refused
// by name. (tests/interop/check_gguf_fixtures.sh runs llama.cpp's converter itself.)
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <gsq/format/gguf.hpp>
#include <gsq/format/gguf_file.hpp>
#include <gsq/model/evaluation.hpp>
#include <gsq/model/gguf_checkpoint.hpp>
#include <gsq/model/llama.hpp>
#include <gsq/model/rotary.hpp>
#include <gsq/policy/grid.hpp>

#include "program_runner.hpp"

using Catch::Matchers::Contains;
using gsq::testing::ScratchDirectory;

namespace {

std::vector<std::uint8_t> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

/// A small GGUF: metadata of each kind the writer has, an F32 matrix, an F16 vector, a Q4_0 matrix.
std::string small_gguf(const ScratchDirectory& scratch, gsq::Matrix<float>& f32, gsq::QuantizedTensor& q4) {
  gsq::GgufWriter writer;
  writer.set("general.architecture", std::string("llama"));
  writer.set("count", std::uint32_t{7});
  writer.set("offset", std::int32_t{-3});
  writer.set("epsilon", 1e-5f);
  writer.set("flag", true);
  writer.set("names", std::vector<std::string>{"a", "bc"});
  writer.set("ids", std::vector<std::int32_t>{1, -2, 3});
  f32 = gsq::Matrix<float>(3, 4);
  for (std::size_t i = 0; i < f32.values.size(); ++i) f32.values[i] = 0.25f * static_cast<float>(i) - 1;
  writer.add_tensor("f32", {3, 4}, gsq::GgmlType::F32, gsq::encode_float(f32, gsq::GgmlType::F32));
  gsq::Matrix<float> half(1, 4);
  half.values = {0.5f, -1.5f, 2.0f, 1024.0f};
  writer.add_tensor("f16", {4}, gsq::GgmlType::F16, gsq::encode_float(half, gsq::GgmlType::F16));
  q4 = gsq::QuantizedTensor{gsq::grid_spec<gsq::Int<4>>(), 2, 64, 32, {}, {0.5f, 0.25f, -0.125f, 1.0f}};
  for (long i = 0; i < 128; ++i) q4.codes.push_back(static_cast<std::int8_t>(i * 5 % 16 - 8));
  writer.add_tensor("q4", {2, 64}, gsq::GgmlType::Q4_0, gsq::encode_q4_0(q4));
  const std::string path = scratch.file("small.gguf");
  writer.write(path);
  return path;
}

}  // namespace

TEST_CASE("a GGUF file reads back as written: metadata, shapes, types and values") {
  const ScratchDirectory scratch;
  gsq::Matrix<float> f32;
  gsq::QuantizedTensor q4;
  const gsq::GgufFile file = gsq::GgufFile::open(small_gguf(scratch, f32, q4));
  CHECK(file.value("general.architecture") == "llama");
  CHECK(file.value("count") == 7);
  CHECK(file.value("offset") == -3);
  CHECK(file.value("epsilon").get<float>() == 1e-5f);
  CHECK(file.value("flag") == true);
  CHECK(file.value("names") == nlohmann::json({"a", "bc"}));
  CHECK(file.value("ids") == nlohmann::json({1, -2, 3}));
  REQUIRE(file.tensors().size() == 3);
  CHECK(file.tensor("f32").shape == std::vector<std::int64_t>{3, 4});
  CHECK(file.tensor("q4").type == gsq::GgmlType::Q4_0);
  CHECK(file.float_values("f32") == f32.values);
  CHECK(file.float_values("f16") == std::vector<float>{0.5f, -1.5f, 2.0f, 1024.0f});
  CHECK(file.float_values("q4") == q4.dequantize().values);
  CHECK_THROWS_WITH(file.value("missing"), Contains("no metadata \"missing\""));
}

TEST_CASE("malformed GGUF files are refused, naming the problem") {
  const ScratchDirectory scratch;
  gsq::Matrix<float> f32;
  gsq::QuantizedTensor q4;
  const std::vector<std::uint8_t> good = file_bytes(small_gguf(scratch, f32, q4));
  const auto refused = [&](std::vector<std::uint8_t> bytes, const std::string& message) {
    const std::string path = scratch.file("bad.gguf");
    write_bytes(path, bytes);
    CHECK_THROWS_WITH(gsq::GgufFile::open(path), Contains(message));
  };
  std::vector<std::uint8_t> bytes = good;
  bytes[0] = 'X';
  refused(bytes, "not a GGUF file");
  bytes = good;
  bytes[4] = 1;
  refused(bytes, "GGUF version 1 (gsq reads versions 2 and 3)");
  refused(std::vector<std::uint8_t>(good.begin(), good.begin() + 60), "the file ends inside");
  refused(std::vector<std::uint8_t>(good.begin(), good.end() - 40), "runs past the end of the file: is it truncated?");
  refused({}, "the file ends inside the header");
  // The Q4_0 tensor's type field (after its name, dimension count and two dimensions) made 16, IQ2_XXS.
  bytes = good;
  const std::string name = "q4";
  const auto at = std::search(bytes.begin(), bytes.end(), name.begin(), name.end()) - bytes.begin();
  bytes[static_cast<std::size_t>(at) + 2 + 4 + 16] = 16;
  refused(bytes, "tensor 'q4' is IQ2_XXS (ggml type 16), which gsq does not read");
}

TEST_CASE("quantize_model's GGUF export reads back as the checkpoint beside it") {
  const ScratchDirectory scratch;
  const std::string model = GSQ_SOURCE_DIR "/data/llama-bytes-3m", out = scratch.file("int4");
  const gsq::testing::Outcome run = gsq::testing::run_program(
      "quantize_model", "--model '" + model + "' --byte-tokens --calib '" + model + "/calib.txt' --calib-tokens 2048 --method rtn "
                        "--bits 4 --group 128 --export gguf --quiet --out '" + out + "'");
  INFO(run.err);
  REQUIRE(run.status == 0);
  const gsq::LlamaModel from_gguf = gsq::open_model(out + "/model.gguf");
  const gsq::LlamaModel twin = gsq::LlamaModel::load(out);
  CHECK(from_gguf.config().hidden_size == twin.config().hidden_size);
  CHECK(from_gguf.config().attention_heads == twin.config().attention_heads);
  CHECK(from_gguf.config().rotary.theta == twin.config().rotary.theta);
  for (long layer = 0; layer < twin.config().layers; ++layer)
    for (const std::string& linear : twin.config().linear_names(layer)) {
      INFO(layer << " " << linear);
      CHECK(from_gguf.linear_weight(layer, linear).values == twin.linear_weight(layer, linear).values);
    }
  const std::vector<gsq::TokenId> tokens = gsq::read_byte_tokens(model + "/eval.txt");
  const std::vector<gsq::TokenId> window(tokens.begin(), tokens.begin() + 64);
  CHECK(from_gguf.forward(window, 64).values == twin.forward(window, 64).values);

  // evaluate_model scores the GGUF as its twin, and finds no divergence between them.
  const auto evaluated = [&](const std::string& path, const std::string& name) {
    const gsq::testing::Outcome outcome = gsq::testing::run_program(
        "evaluate_model", "--model '" + path + "' --reference '" + out + "' --eval '" + model + "/eval.txt' --byte-tokens "
                          "--max-windows 8 --quiet --json '" + scratch.file(name) + "'");
    INFO(outcome.err);
    REQUIRE(outcome.status == 0);
    return nlohmann::json::parse(gsq::testing::read_file(scratch.file(name)));
  };
  const nlohmann::json gguf = evaluated(out + "/model.gguf", "gguf.json"), safetensors = evaluated(out, "twin.json");
  CHECK(gguf["nll"].get<double>() == Approx(safetensors["nll"].get<double>()).epsilon(1e-12));
  CHECK(gguf["comparison"]["kl"]["max"].get<double>() < 1e-9);
  CHECK(gguf["comparison"]["same_top"]["value"] == 1.0);
}

TEST_CASE("a GGUF of an architecture gsq does not read is refused by name") {
  const ScratchDirectory scratch;
  gsq::GgufWriter writer;
  writer.set("general.architecture", std::string("gemma3"));
  const std::string path = scratch.file("other.gguf");
  writer.write(path);
  CHECK_THROWS_WITH(gsq::read_gguf_checkpoint(path),
                    Contains("general.architecture is \"gemma3\"; gsq reads GGUF files of architecture llama, qwen2, qwen3, "
                             "qwen2moe, qwen3moe, deepseek2"));
}

namespace {

using Shape = std::vector<std::int64_t>;

/// A small synthetic GGUF: metadata set by the caller, F32 tensors of the given shapes, each
/// holding distinct values (tensor k, element i: k + i / 4096) unless given its own.
struct SyntheticGguf {
  gsq::GgufWriter metadata;
  std::vector<std::pair<std::string, Shape>> tensors;
  std::map<std::string, std::vector<float>> given;

  static std::vector<float> values(std::size_t tensor, std::int64_t count) {
    std::vector<float> result(static_cast<std::size_t>(count));
    for (std::size_t i = 0; i < result.size(); ++i) result[i] = static_cast<float>(tensor) + static_cast<float>(i) / 4096;
    return result;
  }
  static std::int64_t elements(const Shape& shape) {
    std::int64_t count = 1;
    for (const std::int64_t size : shape) count *= size;
    return count;
  }
  /// Tensor `name`'s values as written.
  std::vector<float> of(const std::string& name) const {
    if (given.count(name)) return given.at(name);
    for (std::size_t k = 0; k < tensors.size(); ++k)
      if (tensors[k].first == name) return values(k, elements(tensors[k].second));
    FAIL("no tensor " << name);
    return {};
  }
  void erase(const std::string& name) {
    tensors.erase(std::remove_if(tensors.begin(), tensors.end(), [&](const auto& tensor) { return tensor.first == name; }),
                  tensors.end());
  }
  std::string write(const ScratchDirectory& scratch, const std::string& name) const {
    gsq::GgufWriter writer = metadata;
    for (std::size_t k = 0; k < tensors.size(); ++k) {
      gsq::Matrix<float> flat(1, elements(tensors[k].second));
      flat.values = of(tensors[k].first);
      writer.add_tensor(tensors[k].first, tensors[k].second, gsq::GgmlType::F32, gsq::encode_float(flat, gsq::GgmlType::F32));
    }
    const std::string path = scratch.file(name);
    writer.write(path);
    return path;
  }
};

/// The metadata and tensors every architecture shares: hidden 8, 2 query heads of 4, 1 key/value
/// head, vocabulary 5, one decoder layer.
SyntheticGguf common_gguf(const std::string& architecture) {
  SyntheticGguf gguf;
  gsq::GgufWriter& meta = gguf.metadata;
  meta.set("general.architecture", architecture);
  for (const auto& [key, value] : std::vector<std::pair<std::string, std::uint32_t>>{
           {"block_count", 1}, {"embedding_length", 8}, {"feed_forward_length", 6}, {"attention.head_count", 2},
           {"attention.head_count_kv", 1}, {"context_length", 64}})
    meta.set(architecture + "." + key, value);
  meta.set(architecture + ".attention.layer_norm_rms_epsilon", 1e-6f);
  gguf.tensors = {{"token_embd.weight", {5, 8}}, {"output_norm.weight", {8}}, {"output.weight", {5, 8}},
                  {"blk.0.attn_norm.weight", {8}}, {"blk.0.ffn_norm.weight", {8}}, {"blk.0.attn_output.weight", {8, 8}}};
  return gguf;
}

/// A Mixtral as llama.cpp converts it: architecture llama with 3 experts (2 used) of width 6,
/// stacked into ffn_{gate,up,down}_exps (experts x out x in).
SyntheticGguf mixtral_gguf() {
  SyntheticGguf gguf = common_gguf("llama");
  gguf.metadata.set("llama.expert_count", std::uint32_t{3});
  gguf.metadata.set("llama.expert_used_count", std::uint32_t{2});
  gguf.tensors.insert(gguf.tensors.end(), {{"blk.0.attn_q.weight", {8, 8}}, {"blk.0.attn_k.weight", {4, 8}},
                                           {"blk.0.attn_v.weight", {4, 8}}, {"blk.0.ffn_gate_inp.weight", {3, 8}},
                                           {"blk.0.ffn_gate_exps.weight", {3, 6, 8}}, {"blk.0.ffn_up_exps.weight", {3, 6, 8}},
                                           {"blk.0.ffn_down_exps.weight", {3, 8, 6}}});
  return gguf;
}

std::vector<float> rows_of(const std::vector<float>& values, long first, long count, long cols) {
  return std::vector<float>(values.begin() + first * cols, values.begin() + (first + count) * cols);
}

}  // namespace

TEST_CASE("a llama GGUF with experts reads as a Mixtral: stacked experts split, q/k rows back in Hugging Face's order") {
  const ScratchDirectory scratch;
  const SyntheticGguf gguf = mixtral_gguf();
  const gsq::GgufCheckpoint read = gsq::read_gguf_checkpoint(gguf.write(scratch, "mixtral.gguf"));
  CHECK(read.config["architectures"] == nlohmann::json({"MixtralForCausalLM"}));
  CHECK(read.config["num_local_experts"] == 3);
  const gsq::Checkpoint& checkpoint = read.checkpoint;
  const std::string layer = "model.layers.0.block_sparse_moe.";
  CHECK(checkpoint.float_tensor(layer + "gate.weight").values == gguf.of("blk.0.ffn_gate_inp.weight"));
  for (long expert = 0; expert < 3; ++expert) {
    const std::string name = layer + "experts." + std::to_string(expert);
    CHECK(checkpoint.info(name + ".w2.weight").shape == Shape{8, 6});
    CHECK(checkpoint.float_tensor(name + ".w1.weight").values == rows_of(gguf.of("blk.0.ffn_gate_exps.weight"), 6 * expert, 6, 8));
    CHECK(checkpoint.float_tensor(name + ".w3.weight").values == rows_of(gguf.of("blk.0.ffn_up_exps.weight"), 6 * expert, 6, 8));
    CHECK(checkpoint.float_tensor(name + ".w2.weight").values == rows_of(gguf.of("blk.0.ffn_down_exps.weight"), 8 * expert, 8, 6));
  }
  // Head 0 of k (one head of 4): llama.cpp's rows 0, 1, 2, 3 are Hugging Face's 0, 2, 1, 3.
  const std::vector<float> key = gguf.of("blk.0.attn_k.weight"), unpermuted = checkpoint.float_tensor("model.layers.0.self_attn.k_proj.weight").values;
  CHECK(rows_of(unpermuted, 1, 1, 8) == rows_of(key, 2, 1, 8));
  CHECK(rows_of(unpermuted, 2, 1, 8) == rows_of(key, 1, 1, 8));
  const gsq::LlamaModel model = gsq::open_model(scratch.file("mixtral.gguf"));
  CHECK(model.config().mixture.experts == 3);
  CHECK(model.forward({1, 2, 3, 4}, 4).values.size() == 4 * 5);
}

TEST_CASE("a GGUF missing a tensor, with a stacked expert tensor of the wrong shape or a tensor the model has no place for, is refused by name") {
  const ScratchDirectory scratch;
  SyntheticGguf missing = mixtral_gguf();
  missing.erase("blk.0.ffn_gate_inp.weight");
  CHECK_THROWS_WITH(gsq::read_gguf_checkpoint(missing.write(scratch, "missing.gguf")), Contains("no tensor 'blk.0.ffn_gate_inp.weight'"));
  SyntheticGguf wrong = mixtral_gguf();
  wrong.erase("blk.0.ffn_up_exps.weight");
  wrong.tensors.push_back({"blk.0.ffn_up_exps.weight", {3, 5, 8}});
  CHECK_THROWS_WITH(gsq::read_gguf_checkpoint(wrong.write(scratch, "wrong.gguf")),
                    Contains("tensor 'blk.0.ffn_up_exps.weight' has shape [3, 5, 8], not [3, 6, 8]"));
  SyntheticGguf stray = mixtral_gguf();
  stray.tensors.push_back({"blk.0.attn_q_norm.weight", {4}});
  CHECK_THROWS_WITH(gsq::read_gguf_checkpoint(stray.write(scratch, "stray.gguf")),
                    Contains("tensor 'blk.0.attn_q_norm.weight' has no place in the llama model this file's metadata describes"));
}

TEST_CASE("a qwen2moe GGUF reads with its biases, shared expert and its gate, q/k rows as stored") {
  const ScratchDirectory scratch;
  SyntheticGguf gguf = common_gguf("qwen2moe");
  for (const auto& [key, value] : std::vector<std::pair<std::string, std::uint32_t>>{
           {"expert_count", 2}, {"expert_used_count", 1}, {"expert_feed_forward_length", 4}, {"expert_shared_feed_forward_length", 6}})
    gguf.metadata.set("qwen2moe." + key, value);
  gguf.tensors.insert(gguf.tensors.end(), {{"blk.0.attn_q.weight", {8, 8}}, {"blk.0.attn_k.weight", {4, 8}},
                                           {"blk.0.attn_v.weight", {4, 8}}, {"blk.0.attn_q.bias", {8}}, {"blk.0.attn_k.bias", {4}},
                                           {"blk.0.attn_v.bias", {4}}, {"blk.0.ffn_gate_inp.weight", {2, 8}},
                                           {"blk.0.ffn_gate_exps.weight", {2, 4, 8}}, {"blk.0.ffn_up_exps.weight", {2, 4, 8}},
                                           {"blk.0.ffn_down_exps.weight", {2, 8, 4}}, {"blk.0.ffn_gate_shexp.weight", {6, 8}},
                                           {"blk.0.ffn_up_shexp.weight", {6, 8}}, {"blk.0.ffn_down_shexp.weight", {8, 6}},
                                           {"blk.0.ffn_gate_inp_shexp.weight", {1, 8}}});
  const gsq::GgufCheckpoint read = gsq::read_gguf_checkpoint(gguf.write(scratch, "qwen2moe.gguf"));
  const gsq::LlamaConfig config = read.model_config();
  CHECK(config.architecture == "Qwen2MoeForCausalLM");
  CHECK(config.qkv_bias);
  CHECK_FALSE(config.mixture.normalize_top_k);  // llama.cpp's qwen2moe graph does not renormalise
  CHECK(config.mixture.gated_shared_expert);
  const gsq::Checkpoint& checkpoint = read.checkpoint;
  CHECK(checkpoint.float_tensor("model.layers.0.self_attn.q_proj.weight").values == gguf.of("blk.0.attn_q.weight"));
  CHECK(checkpoint.float_tensor("model.layers.0.self_attn.k_proj.bias").values == gguf.of("blk.0.attn_k.bias"));
  CHECK(checkpoint.float_tensor("model.layers.0.mlp.shared_expert.down_proj.weight").values == gguf.of("blk.0.ffn_down_shexp.weight"));
  CHECK(checkpoint.float_tensor("model.layers.0.mlp.shared_expert_gate.weight").values == gguf.of("blk.0.ffn_gate_inp_shexp.weight"));
  CHECK(checkpoint.float_tensor("model.layers.0.mlp.experts.1.up_proj.weight").values ==
        rows_of(gguf.of("blk.0.ffn_up_exps.weight"), 4, 4, 8));
  CHECK(gsq::open_model(scratch.file("qwen2moe.gguf")).forward({0, 4}, 2).values.size() == 2 * 5);
}

TEST_CASE("a deepseek2 GGUF reads with kv_b_proj rebuilt from its two halves, and softmax routing is refused") {
  const ScratchDirectory scratch;
  // Latent attention: q_lora_rank 4, kv_lora_rank 4, a head's nope 2 + rope 2 dimensions, values 3.
  SyntheticGguf gguf = common_gguf("deepseek2");
  for (const auto& [key, value] : std::vector<std::pair<std::string, std::uint32_t>>{
           {"attention.q_lora_rank", 4}, {"attention.kv_lora_rank", 4}, {"attention.key_length_mla", 4},
           {"attention.value_length_mla", 3}, {"rope.dimension_count", 2}, {"expert_count", 4}, {"expert_used_count", 2},
           {"expert_feed_forward_length", 2}, {"expert_shared_count", 1}, {"expert_gating_func", 2}, {"leading_dense_block_count", 0}})
    gguf.metadata.set("deepseek2." + key, value);
  gguf.erase("blk.0.attn_output.weight");
  gguf.tensors.insert(gguf.tensors.end(), {{"blk.0.attn_output.weight", {8, 6}}, {"blk.0.attn_q_a.weight", {4, 8}},
                                           {"blk.0.attn_q_a_norm.weight", {4}}, {"blk.0.attn_q_b.weight", {8, 4}},
                                           {"blk.0.attn_kv_a_mqa.weight", {6, 8}}, {"blk.0.attn_kv_a_norm.weight", {4}},
                                           {"blk.0.attn_k_b.weight", {2, 4, 2}}, {"blk.0.attn_v_b.weight", {2, 3, 4}},
                                           {"blk.0.ffn_gate_inp.weight", {4, 8}}, {"blk.0.exp_probs_b.bias", {4}},
                                           {"blk.0.ffn_gate_exps.weight", {4, 2, 8}}, {"blk.0.ffn_up_exps.weight", {4, 2, 8}},
                                           {"blk.0.ffn_down_exps.weight", {4, 8, 2}}, {"blk.0.ffn_gate_shexp.weight", {2, 8}},
                                           {"blk.0.ffn_up_shexp.weight", {2, 8}}, {"blk.0.ffn_down_shexp.weight", {8, 2}}});
  const gsq::GgufCheckpoint read = gsq::read_gguf_checkpoint(gguf.write(scratch, "deepseek.gguf"));
  const gsq::LlamaConfig config = read.model_config();
  CHECK(config.architecture == "DeepseekV3ForCausalLM");
  CHECK(config.latent.nope_dim == 2);
  CHECK(config.latent.interleaved_rope);
  // kv_b_proj: per head, the nope rows (attn_k_b[h] transposed), then the value rows (attn_v_b[h]).
  const std::vector<float> merged = read.checkpoint.float_tensor("model.layers.0.self_attn.kv_b_proj.weight").values;
  const std::vector<float> keys = gguf.of("blk.0.attn_k_b.weight"), values = gguf.of("blk.0.attn_v_b.weight");
  REQUIRE(merged.size() == 2 * 5 * 4);
  for (long head = 0; head < 2; ++head)
    for (long col = 0; col < 4; ++col) {
      for (long row = 0; row < 2; ++row) CHECK(merged[(head * 5 + row) * 4 + col] == keys[(head * 4 + col) * 2 + row]);
      for (long row = 0; row < 3; ++row) CHECK(merged[(head * 5 + 2 + row) * 4 + col] == values[(head * 3 + row) * 4 + col]);
    }
  CHECK(read.checkpoint.float_tensor("model.layers.0.mlp.gate.e_score_correction_bias").values == gguf.of("blk.0.exp_probs_b.bias"));
  CHECK(gsq::open_model(scratch.file("deepseek.gguf")).forward({0, 1, 2}, 3).values.size() == 3 * 5);

  gguf.metadata.set("deepseek2.expert_gating_func", std::uint32_t{1});
  CHECK_THROWS_WITH(gsq::read_gguf_checkpoint(gguf.write(scratch, "softmax.gguf")),
                    Contains("deepseek2.expert_gating_func is 1; gsq runs DeepSeek-V3's sigmoid routing (2)"));
}

TEST_CASE("a llama3-scaled rope, kept by llama.cpp only as rope_freqs, is applied as those factors") {
  // The factors as llama.cpp's converter computes them (in float) for tests/data/tiny-llama3's
  // rope; each frequency divided by its factor must be Hugging Face's llama3-scaled frequency.
  const gsq::LlamaConfig llama3 = gsq::LlamaConfig::load(GSQ_SOURCE_DIR "/tests/data/tiny-llama3/config.json");
  const gsq::RotaryConfig& rope = llama3.rotary;
  const auto context = static_cast<float>(rope.original_max_position_embeddings), factor = static_cast<float>(rope.factor),
             low = static_cast<float>(rope.low_freq_factor), high = static_cast<float>(rope.high_freq_factor);
  const long dim = llama3.rotary_dim, half = dim / 2;
  std::vector<float> factors;
  for (long i = 0; i < half; ++i) {
    const float wavelength = 2 * static_cast<float>(std::acos(-1.0)) *
                             std::pow(static_cast<float>(rope.theta), static_cast<float>(2 * i) / static_cast<float>(dim));
    const float smooth = (context / wavelength - low) / (high - low);
    factors.push_back(wavelength < context / high  ? 1.0f
                      : wavelength > context / low ? factor
                                                   : 1 / ((1 - smooth) / factor + smooth));
  }
  REQUIRE(std::count(factors.begin(), factors.end(), 1.0f) < half);  // the fixture's rope is scaled

  const ScratchDirectory scratch;
  SyntheticGguf gguf = common_gguf("llama");  // one head of tiny-llama3's width
  gguf.metadata.set("llama.rope.freq_base", static_cast<float>(rope.theta));
  gguf.metadata.set("llama.attention.head_count", std::uint32_t{1});
  gguf.metadata.set("llama.attention.key_length", static_cast<std::uint32_t>(dim));
  gguf.erase("blk.0.attn_output.weight");
  gguf.tensors.insert(gguf.tensors.end(), {{"rope_freqs.weight", {half}}, {"blk.0.attn_q.weight", {dim, 8}},
                                           {"blk.0.attn_k.weight", {dim, 8}}, {"blk.0.attn_v.weight", {dim, 8}},
                                           {"blk.0.attn_output.weight", {8, dim}}, {"blk.0.ffn_gate.weight", {6, 8}},
                                           {"blk.0.ffn_up.weight", {6, 8}}, {"blk.0.ffn_down.weight", {8, 6}}});
  gguf.given["rope_freqs.weight"] = factors;
  const gsq::GgufCheckpoint read = gsq::read_gguf_checkpoint(gguf.write(scratch, "llama3.gguf"));
  CHECK_FALSE(read.config.contains("rope_scaling"));
  CHECK(read.rope_frequency_factors == factors);
  const std::vector<float> from_gguf = gsq::rotary_inverse_frequencies(read.model_config()),
                           hugging_face = gsq::rotary_inverse_frequencies(llama3);
  REQUIRE(from_gguf.size() == hugging_face.size());
  for (std::size_t i = 0; i < from_gguf.size(); ++i) CHECK(from_gguf[i] == Approx(hugging_face[i]).epsilon(1e-6));

  gguf.given["rope_freqs.weight"][1] = 0;
  CHECK_THROWS_WITH(gsq::read_gguf_checkpoint(gguf.write(scratch, "zero.gguf")), Contains("rope_freqs.weight holds 0"));
}
