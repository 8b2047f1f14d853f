// Tests of gsq/format/llama_quantize_mix.hpp: llama-quantize's per-tensor types for its presets,
// known answers worked out by hand from llama.cpp's rules (src/llama-quant.cpp) on small synthetic
// llama-shaped models (8 layers, rows of 512: use_more_bits picks layers 0, 3, 6 and 7; SmolLM2's
// rows of 576, which are not whole super-blocks of 256), and, where
// tests/interop/check_llama_quantize_mix.sh has run llama-quantize itself (GSQ_LLAMA_QUANTIZE_DIR),
// every tensor of every file it wrote.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <cstdint>
#include <string>
#include <vector>

#include <gsq/format/gguf_file.hpp>
#include <gsq/format/llama_quantize_mix.hpp>

#include "skip.hpp"

using Catch::Matchers::Contains;
using gsq::GgmlType;
using gsq::LlamaQuantizeModel;
using gsq::LlamaQuantizeTensor;

namespace {

/// A llama-shaped model in llama.cpp's names: `layers` layers of rows `hidden`, MLP `ffn`, value
/// rows `kv`; an output matrix unless the embeddings are tied.
std::vector<LlamaQuantizeTensor> llama_tensors(long layers, std::int64_t hidden, std::int64_t ffn, std::int64_t kv,
                                               std::int64_t vocab, bool tied) {
  std::vector<LlamaQuantizeTensor> tensors = {{"token_embd.weight", {hidden, vocab}}, {"output_norm.weight", {hidden}}};
  if (!tied) tensors.push_back({"output.weight", {hidden, vocab}});
  // the order a converter writes them in (not llama.cpp's: the counters must not depend on it)
  for (long l = layers - 1; l >= 0; --l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    tensors.push_back({b + "attn_norm.weight", {hidden}});
    tensors.push_back({b + "attn_q.weight", {hidden, hidden}});
    tensors.push_back({b + "attn_k.weight", {hidden, kv}});
    tensors.push_back({b + "attn_v.weight", {hidden, kv}});
    tensors.push_back({b + "attn_output.weight", {hidden, hidden}});
    tensors.push_back({b + "ffn_norm.weight", {hidden}});
    tensors.push_back({b + "ffn_gate.weight", {hidden, ffn}});
    tensors.push_back({b + "ffn_up.weight", {hidden, ffn}});
    tensors.push_back({b + "ffn_down.weight", {ffn, hidden}});
  }
  return tensors;
}

std::map<std::string, GgmlType> mix(const std::string& preset, const LlamaQuantizeModel& model,
                                    const std::vector<LlamaQuantizeTensor>& tensors, bool imatrix = false) {
  const std::vector<GgmlType> types = gsq::llama_quantize_types(gsq::llama_quantize_preset(preset), model, tensors, imatrix);
  std::map<std::string, GgmlType> by_name;
  for (std::size_t i = 0; i < tensors.size(); ++i) by_name[tensors[i].name] = types[i];
  return by_name;
}

std::string name(GgmlType type) { return gsq::ggml_type_info(type).name; }

/// The type of `part` in each layer, as names ("Q4_K Q6_K ...").
std::string per_layer(const std::map<std::string, GgmlType>& types, long layers, const std::string& part) {
  std::string out;
  for (long l = 0; l < layers; ++l) out += (l ? " " : "") + name(types.at("blk." + std::to_string(l) + "." + part + ".weight"));
  return out;
}

const LlamaQuantizeModel eight_layers{"llama", 8, 0, 8, 2};  // n_gqa 4

}  // namespace

TEST_CASE("presets by llama-quantize's names; unknown names refused, naming the known", "[gguf_mix]") {
  CHECK(gsq::llama_quantize_preset("Q4_K_M") == gsq::LlamaQuantizePreset::Q4_K_M);
  CHECK(gsq::llama_quantize_preset_info(gsq::llama_quantize_preset("Q3_K_S")).ftype == 11);
  CHECK(gsq::llama_quantize_preset_info(gsq::llama_quantize_preset("Q8_0")).base == GgmlType::Q8_0);
  CHECK(gsq::llama_quantize_presets().size() == 15);
  CHECK_THROWS_WITH(gsq::llama_quantize_preset("Q4_K_X"), Contains("unknown llama-quantize preset \"Q4_K_X\"") &&
                                                                 Contains("Q2_K") && Contains("Q5_K_M") && Contains("Q5_1"));
  CHECK_THROWS_WITH(gsq::llama_quantize_preset("q4_k_m"), Contains("unknown llama-quantize preset"));
}

TEST_CASE("Q4_K_M and Q5_K_M: attn_v and ffn_down of layers 0, 3, 6, 7 (use_more_bits) in Q6_K", "[gguf_mix]") {
  const auto tensors = llama_tensors(8, 512, 1024, 128, 1000, false);
  const auto q4 = mix("Q4_K_M", eight_layers, tensors);
  CHECK(per_layer(q4, 8, "attn_v") == "Q6_K Q4_K Q4_K Q6_K Q4_K Q4_K Q6_K Q6_K");
  CHECK(per_layer(q4, 8, "ffn_down") == "Q6_K Q4_K Q4_K Q6_K Q4_K Q4_K Q6_K Q6_K");
  for (const char* part : {"attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"}) CHECK(per_layer(q4, 8, part) == "Q4_K Q4_K Q4_K Q4_K Q4_K Q4_K Q4_K Q4_K");
  CHECK(q4.at("output.weight") == GgmlType::Q6_K);
  CHECK(q4.at("token_embd.weight") == GgmlType::Q4_K);
  CHECK(q4.at("output_norm.weight") == GgmlType::F32);
  CHECK(q4.at("blk.5.attn_norm.weight") == GgmlType::F32);
  const auto q5 = mix("Q5_K_M", eight_layers, tensors);
  CHECK(per_layer(q5, 8, "attn_v") == "Q6_K Q5_K Q5_K Q6_K Q5_K Q5_K Q6_K Q6_K");
  CHECK(per_layer(q5, 8, "ffn_down") == "Q6_K Q5_K Q5_K Q6_K Q5_K Q5_K Q6_K Q6_K");
  CHECK(q5.at("blk.2.attn_q.weight") == GgmlType::Q5_K);
  CHECK(q5.at("output.weight") == GgmlType::Q6_K);
}

TEST_CASE("Q3_K_M: attn_v of the first two layers Q5_K, the rest Q4_K; ffn_down Q4_K, Q5_K in the first sixteenth", "[gguf_mix]") {
  const auto q3 = mix("Q3_K_M", eight_layers, llama_tensors(8, 512, 1024, 128, 1000, false));
  CHECK(per_layer(q3, 8, "attn_v") == "Q5_K Q5_K Q4_K Q4_K Q4_K Q4_K Q4_K Q4_K");
  CHECK(per_layer(q3, 8, "ffn_down") == "Q4_K Q4_K Q4_K Q4_K Q4_K Q4_K Q4_K Q4_K");  // 8 / 16 = 0 layers in Q5_K
  CHECK(per_layer(q3, 8, "attn_output") == "Q4_K Q4_K Q4_K Q4_K Q4_K Q4_K Q4_K Q4_K");
  CHECK(per_layer(q3, 8, "attn_q") == "Q3_K Q3_K Q3_K Q3_K Q3_K Q3_K Q3_K Q3_K");
  CHECK(q3.at("output.weight") == GgmlType::Q6_K);
  CHECK(q3.at("token_embd.weight") == GgmlType::Q3_K);
  const LlamaQuantizeModel thirty_two{"llama", 32, 0, 8, 2};
  const auto deep = mix("Q3_K_M", thirty_two, llama_tensors(32, 512, 1024, 128, 1000, false));
  CHECK(deep.at("blk.0.ffn_down.weight") == GgmlType::Q5_K);
  CHECK(deep.at("blk.1.ffn_down.weight") == GgmlType::Q5_K);
  CHECK(deep.at("blk.2.ffn_down.weight") == GgmlType::Q4_K);
  CHECK(deep.at("blk.10.attn_v.weight") == GgmlType::Q4_K);  // blk.10 after blk.2, not after blk.1
  CHECK(deep.at("blk.1.attn_v.weight") == GgmlType::Q5_K);
}

TEST_CASE("the other presets: attn_v, ffn_down, attn_output, output and token_embd", "[gguf_mix]") {
  const auto tensors = llama_tensors(8, 512, 1024, 128, 1000, false);
  struct Row {
    const char* preset;
    const char* attn_v;
    const char* ffn_down;
    GgmlType attn_output, attn_q, output, token_embd;
  };
  using T = GgmlType;
  const Row rows[] = {
      {"Q2_K", "Q4_K Q4_K Q4_K Q4_K Q4_K Q4_K Q4_K Q4_K", "Q3_K Q3_K Q3_K Q3_K Q3_K Q3_K Q3_K Q3_K", T::Q3_K, T::Q2_K, T::Q6_K, T::Q2_K},
      {"Q3_K_S", "Q3_K Q3_K Q3_K Q3_K Q3_K Q3_K Q3_K Q3_K", "Q3_K Q3_K Q3_K Q3_K Q3_K Q3_K Q3_K Q3_K", T::Q3_K, T::Q3_K, T::Q6_K, T::Q3_K},
      {"Q3_K_L", "Q5_K Q5_K Q5_K Q5_K Q5_K Q5_K Q5_K Q5_K", "Q5_K Q5_K Q5_K Q5_K Q5_K Q5_K Q5_K Q5_K", T::Q5_K, T::Q3_K, T::Q6_K, T::Q3_K},
      {"Q4_K_S", "Q5_K Q5_K Q5_K Q5_K Q4_K Q4_K Q4_K Q4_K", "Q5_K Q4_K Q4_K Q4_K Q4_K Q4_K Q4_K Q4_K", T::Q4_K, T::Q4_K, T::Q6_K, T::Q4_K},
      {"Q5_K_S", "Q5_K Q5_K Q5_K Q5_K Q5_K Q5_K Q5_K Q5_K", "Q5_K Q5_K Q5_K Q5_K Q5_K Q5_K Q5_K Q5_K", T::Q5_K, T::Q5_K, T::Q6_K, T::Q5_K},
      {"Q6_K", "Q6_K Q6_K Q6_K Q6_K Q6_K Q6_K Q6_K Q6_K", "Q6_K Q6_K Q6_K Q6_K Q6_K Q6_K Q6_K Q6_K", T::Q6_K, T::Q6_K, T::Q6_K, T::Q6_K},
      {"Q8_0", "Q8_0 Q8_0 Q8_0 Q8_0 Q8_0 Q8_0 Q8_0 Q8_0", "Q8_0 Q8_0 Q8_0 Q8_0 Q8_0 Q8_0 Q8_0 Q8_0", T::Q8_0, T::Q8_0, T::Q8_0, T::Q8_0},
      {"Q4_0", "Q4_0 Q4_0 Q4_0 Q4_0 Q4_0 Q4_0 Q4_0 Q4_0", "Q4_0 Q4_0 Q4_0 Q4_0 Q4_0 Q4_0 Q4_0 Q4_0", T::Q4_0, T::Q4_0, T::Q6_K, T::Q4_0},
      {"Q4_1", "Q4_1 Q4_1 Q4_1 Q4_1 Q4_1 Q4_1 Q4_1 Q4_1", "Q4_1 Q4_1 Q4_1 Q4_1 Q4_1 Q4_1 Q4_1 Q4_1", T::Q4_1, T::Q4_1, T::Q6_K, T::Q4_1},
      {"Q5_0", "Q5_0 Q5_0 Q5_0 Q5_0 Q5_0 Q5_0 Q5_0 Q5_0", "Q5_0 Q5_0 Q5_0 Q5_0 Q5_0 Q5_0 Q5_0 Q5_0", T::Q5_0, T::Q5_0, T::Q6_K, T::Q5_0},
      {"Q5_1", "Q5_1 Q5_1 Q5_1 Q5_1 Q5_1 Q5_1 Q5_1 Q5_1", "Q5_1 Q5_1 Q5_1 Q5_1 Q5_1 Q5_1 Q5_1 Q5_1", T::Q5_1, T::Q5_1, T::Q6_K, T::Q5_1},
      {"Q2_0", "Q2_0 Q2_0 Q2_0 Q2_0 Q2_0 Q2_0 Q2_0 Q2_0", "Q2_0 Q2_0 Q2_0 Q2_0 Q2_0 Q2_0 Q2_0 Q2_0", T::Q2_0, T::Q2_0, T::Q6_K, T::Q4_K},
  };
  for (const Row& row : rows) {
    INFO(row.preset);
    const auto types = mix(row.preset, eight_layers, tensors);
    CHECK(per_layer(types, 8, "attn_v") == row.attn_v);
    CHECK(per_layer(types, 8, "ffn_down") == row.ffn_down);
    CHECK(types.at("blk.4.attn_output.weight") == row.attn_output);
    CHECK(types.at("blk.4.attn_q.weight") == row.attn_q);
    CHECK(types.at("output.weight") == row.output);
    CHECK(types.at("token_embd.weight") == row.token_embd);
    CHECK(types.at("blk.4.ffn_norm.weight") == T::F32);
  }
  // Q2_K's attn_v is Q3_K without grouped-query attention of 4 heads or more per value head
  CHECK(mix("Q2_K", {"llama", 8, 0, 8, 8}, tensors).at("blk.3.attn_v.weight") == T::Q3_K);
  CHECK(mix("Q2_K", {"llama", 8, 0, 8, 4}, tensors).at("blk.3.attn_v.weight") == T::Q3_K);  // n_gqa 2
  // an imatrix moves Q4_0's and Q5_0's ffn_down of the first eighth of the layers to Q4_1 / Q5_1
  CHECK(per_layer(mix("Q4_0", eight_layers, tensors, true), 8, "ffn_down") == "Q4_1 Q4_0 Q4_0 Q4_0 Q4_0 Q4_0 Q4_0 Q4_0");
  CHECK(per_layer(mix("Q5_0", eight_layers, tensors, true), 8, "ffn_down") == "Q5_1 Q5_0 Q5_0 Q5_0 Q5_0 Q5_0 Q5_0 Q5_0");
  CHECK(per_layer(mix("Q4_K_M", eight_layers, tensors, true), 8, "ffn_down") == "Q6_K Q4_K Q4_K Q6_K Q4_K Q4_K Q6_K Q6_K");
}

TEST_CASE("rows of 576 (SmolLM2): K types fall back to blocks of 32, tied embeddings to Q8_0", "[gguf_mix]") {
  // SmolLM2-135M: 30 layers, hidden 576, MLP 1536, 9 heads over 3 key-value heads, tied embeddings
  const LlamaQuantizeModel smollm2{"llama", 30, 0, 9, 3};
  const auto tensors = llama_tensors(30, 576, 1536, 192, 49152, true);
  const auto q4 = mix("Q4_K_M", smollm2, tensors);
  CHECK(q4.count("output.weight") == 0);
  CHECK(q4.at("token_embd.weight") == GgmlType::Q8_0);  // tied: the output's rule, and 576 is not whole Q4_K blocks
  CHECK(q4.at("blk.7.attn_q.weight") == GgmlType::Q5_0);    // Q4_K -> Q5_0
  CHECK(q4.at("blk.7.ffn_gate.weight") == GgmlType::Q5_0);
  CHECK(q4.at("blk.7.ffn_down.weight") == GgmlType::Q4_K);  // rows of 1536: whole blocks
  // use_more_bits(i, 30): i < 3, i >= 26, (i - 3) % 3 == 2
  CHECK(per_layer(q4, 30, "ffn_down") == "Q6_K Q6_K Q6_K Q4_K Q4_K Q6_K Q4_K Q4_K Q6_K Q4_K Q4_K Q6_K Q4_K Q4_K Q6_K Q4_K "
                                         "Q4_K Q6_K Q4_K Q4_K Q6_K Q4_K Q4_K Q6_K Q4_K Q4_K Q6_K Q6_K Q6_K Q6_K");
  CHECK(per_layer(q4, 30, "attn_v") == "Q8_0 Q8_0 Q8_0 Q5_0 Q5_0 Q8_0 Q5_0 Q5_0 Q8_0 Q5_0 Q5_0 Q8_0 Q5_0 Q5_0 Q8_0 Q5_0 "
                                       "Q5_0 Q8_0 Q5_0 Q5_0 Q8_0 Q5_0 Q5_0 Q8_0 Q5_0 Q5_0 Q8_0 Q8_0 Q8_0 Q8_0");  // Q6_K -> Q8_0
  const auto q3 = mix("Q3_K_M", smollm2, tensors);
  CHECK(q3.at("blk.0.attn_v.weight") == GgmlType::Q5_1);  // Q5_K -> Q5_1
  CHECK(q3.at("blk.2.attn_v.weight") == GgmlType::Q5_0);  // Q4_K -> Q5_0
  CHECK(q3.at("blk.2.attn_q.weight") == GgmlType::Q4_0);  // Q3_K -> Q4_0
  CHECK(q3.at("blk.0.ffn_down.weight") == GgmlType::Q5_K);  // 30 / 16 = 1 layer
  CHECK(q3.at("blk.1.ffn_down.weight") == GgmlType::Q4_K);
  CHECK(q3.at("token_embd.weight") == GgmlType::Q8_0);
  const auto q40 = mix("Q4_0", smollm2, tensors);
  CHECK(q40.at("token_embd.weight") == GgmlType::Q8_0);  // Q6_K for rows of whole Q4_0 blocks, then Q6_K -> Q8_0
  CHECK(q40.at("blk.3.attn_q.weight") == GgmlType::Q4_0);
  CHECK(mix("Q8_0", smollm2, tensors).at("token_embd.weight") == GgmlType::Q8_0);
  CHECK(mix("Q6_K", smollm2, tensors).at("blk.3.attn_q.weight") == GgmlType::Q8_0);
  CHECK(mix("Q5_K_S", smollm2, tensors).at("blk.3.attn_q.weight") == GgmlType::Q5_1);
  CHECK(mix("Q2_K", smollm2, tensors).at("blk.3.attn_q.weight") == GgmlType::Q4_0);
  // Q2_0 (blocks of 64) holds 576-column rows: every linear 2-bit, the tied embedding Q6_K -> Q8_0
  const auto q20 = mix("Q2_0", smollm2, tensors);
  CHECK(q20.at("blk.3.attn_q.weight") == GgmlType::Q2_0);
  CHECK(q20.at("blk.3.ffn_down.weight") == GgmlType::Q2_0);
  CHECK(q20.at("token_embd.weight") == GgmlType::Q8_0);
  // rows of 48 are not whole blocks of 32 either: F16
  const auto narrow = mix("Q4_K_M", {"qwen2", 2, 0, 4, 2}, llama_tensors(2, 48, 96, 24, 89, true));
  CHECK(narrow.at("token_embd.weight") == GgmlType::F16);
  CHECK(narrow.at("blk.0.attn_q.weight") == GgmlType::F16);
  CHECK(narrow.at("blk.0.ffn_down.weight") == GgmlType::Q5_0);  // 2 layers: use_more_bits only for layer 1 (>= 7 * 2 / 8)
  CHECK(narrow.at("blk.1.ffn_down.weight") == GgmlType::Q8_0);  // Q6_K on rows of 96
}

TEST_CASE("experts, 70B and tensors left as they are", "[gguf_mix]") {
  using T = GgmlType;
  // 8 experts (Mixtral): attn_v and attn_k Q8_0, attn_output Q5_K; ffn_down by the layer its name says
  std::vector<LlamaQuantizeTensor> moe = {{"token_embd.weight", {512, 1000}}, {"output.weight", {512, 1000}}};
  for (int l = 0; l < 8; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    for (const char* part : {"attn_q", "attn_output"}) moe.push_back({b + part + ".weight", {512, 512}});
    for (const char* part : {"attn_k", "attn_v"}) moe.push_back({b + part + ".weight", {512, 128}});
    moe.push_back({b + "ffn_gate_inp.weight", {512, 8}});
    moe.push_back({b + "ffn_gate_exps.weight", {512, 1024, 8}});
    moe.push_back({b + "ffn_up_exps.weight", {512, 1024, 8}});
    moe.push_back({b + "ffn_down_exps.weight", {1024, 512, 8}});
  }
  const auto mixtral = mix("Q4_K_M", {"llama", 8, 8, 8, 2}, moe);
  CHECK(per_layer(mixtral, 8, "attn_v") == "Q8_0 Q8_0 Q8_0 Q8_0 Q8_0 Q8_0 Q8_0 Q8_0");
  CHECK(mixtral.at("blk.3.attn_k.weight") == T::Q8_0);
  CHECK(mixtral.at("blk.3.attn_output.weight") == T::Q5_K);
  CHECK(mixtral.at("blk.3.ffn_gate_inp.weight") == T::F32);
  CHECK(per_layer(mixtral, 8, "ffn_down_exps") == "Q6_K Q4_K Q4_K Q6_K Q4_K Q4_K Q6_K Q6_K");
  CHECK(mix("Q5_K_M", {"llama", 8, 8, 8, 2}, moe).at("blk.3.attn_output.weight") == T::Q5_K);
  // 4 experts: no expert rule
  CHECK(mix("Q4_K_M", {"qwen3moe", 8, 4, 8, 2}, moe).at("blk.3.attn_output.weight") == T::Q4_K);
  // a llama of 80 layers with grouped-query attention is a 70B: attn_v of Q3_K / Q4_K goes to Q5_K
  const auto seventy = llama_tensors(80, 1024, 2048, 256, 1000, false);
  CHECK(mix("Q4_K_M", {"llama", 80, 0, 64, 8}, seventy).at("blk.40.attn_v.weight") == T::Q5_K);
  CHECK(mix("Q4_K_M", {"llama", 80, 0, 64, 8}, seventy).at("blk.0.attn_v.weight") == T::Q6_K);
  CHECK(mix("Q4_K_M", {"llama", 80, 0, 64, 64}, seventy).at("blk.40.attn_v.weight") == T::Q4_K);  // 65B
  CHECK(mix("Q3_K_S", {"qwen2", 80, 0, 64, 64}, seventy).at("blk.40.attn_v.weight") == T::Q5_K);
  // kept: 1-D tensors, a matrix of one row ([64, 1] is 1-D to ggml), biases, norms; their own type
  const std::vector<LlamaQuantizeTensor> odd = {{"blk.0.ffn_gate_inp_shexp.weight", {512, 1}},
                                               {"blk.0.attn_q.bias", {512}},
                                               {"blk.0.attn_q_norm.weight", {64}, T::F16},
                                               {"rope_freqs.weight", {32}},
                                               {"blk.0.attn_k_b.weight", {512, 64, 4}}};
  const auto kept = gsq::llama_quantize_types(gsq::LlamaQuantizePreset::Q4_K_M, {"llama", 1, 0, 8, 2}, odd);
  CHECK(kept == std::vector<T>{T::F32, T::F32, T::F16, T::F32, T::Q4_K});
  // a MoE tensor whose layer cannot be read is an error, as in llama.cpp
  CHECK_THROWS_WITH(gsq::llama_quantize_types(gsq::LlamaQuantizePreset::Q4_K_M, {"llama", 2, 4, 8, 2},
                                              {{"blk.7.ffn_down_exps.weight", {256, 256, 4}}}),
                    Contains("blk.7.ffn_down_exps.weight") && Contains("[0, 2)"));
}

// The interop half: tests/interop/check_llama_quantize_mix.sh makes, for each model, DIR/NAME/
// model-f32.gguf (llama.cpp's converter), DIR/NAME/PRESET.gguf (llama-quantize) and DIR/NAME/
// PRESET.types (gguf-py's list of its tensors' types: "name<TAB>ggml type number" lines), and sets
// GSQ_LLAMA_QUANTIZE_DIR=DIR; every tensor's type must be gsq's map, in both readings.
TEST_CASE("llama-quantize's own files: every tensor of every preset as gsq maps it", "[gguf_mix][interop]") {
  const char* directory = std::getenv("GSQ_LLAMA_QUANTIZE_DIR");
  if (directory == nullptr || *directory == 0)
    GSQ_SKIP("GSQ_LLAMA_QUANTIZE_DIR is not set: tests/interop/check_llama_quantize_mix.sh BUILD_DIR sets it");
  namespace fs = std::filesystem;
  std::vector<fs::path> models;
  for (const fs::directory_entry& entry : fs::directory_iterator(directory))
    if (fs::exists(entry.path() / "model-f32.gguf")) models.push_back(entry.path());
  std::sort(models.begin(), models.end());
  REQUIRE(!models.empty());
  long compared = 0, files = 0;
  for (const fs::path& model_directory : models) {
    const std::string model_name = model_directory.filename().string();
    const gsq::GgufFile source = gsq::GgufFile::open((model_directory / "model-f32.gguf").string());
    const LlamaQuantizeModel model = gsq::llama_quantize_model(source);
    const std::vector<LlamaQuantizeTensor> tensors = gsq::llama_quantize_tensors(source);
    for (const gsq::LlamaQuantizePresetInfo& preset : gsq::llama_quantize_presets()) {
      const fs::path file = model_directory / (std::string(preset.name) + ".gguf");
      const fs::path listing = model_directory / (std::string(preset.name) + ".types");
      if (!fs::exists(file)) continue;
      INFO(file.string());
      REQUIRE(fs::exists(listing));
      std::map<std::string, std::uint32_t> theirs;  // gguf-py's reading
      std::ifstream in(listing);
      for (std::string tensor_name, number; std::getline(in, tensor_name, '\t') && std::getline(in, number);)
        theirs[tensor_name] = static_cast<std::uint32_t>(std::stoul(number));
      CHECK(theirs.size() == tensors.size());
      const std::vector<GgmlType> types = gsq::llama_quantize_types(preset.preset, model, tensors);
      long mismatches = 0;
      for (std::size_t i = 0; i < tensors.size(); ++i, ++compared) {
        const auto found = theirs.find(tensors[i].name);
        const auto ours = static_cast<std::uint32_t>(types[i]);
        if (found == theirs.end() || found->second != ours) {
          std::cout << "MISMATCH " << model_name << " " << preset.name << " " << tensors[i].name << ": llama-quantize "
                    << (found == theirs.end() ? std::string("(none)") : gsq::ggml_type_name(found->second)) << ", gsq "
                    << gsq::ggml_type_name(ours) << "\n";
          ++mismatches;
        }
      }
      // gsq's own reader sees the same types and the preset's file type
      try {
        const gsq::GgufFile quantized = gsq::GgufFile::open(file.string());
        CHECK(quantized.value("general.file_type").get<long>() == preset.ftype);
        for (const gsq::GgufTensor& tensor : quantized.tensors()) {
          INFO(tensor.name);
          CHECK(theirs.count(tensor.name) == 1);
          if (theirs.count(tensor.name)) CHECK(static_cast<std::uint32_t>(tensor.type) == theirs.at(tensor.name));
        }
      } catch (const gsq::Error& error) {
        FAIL_CHECK("gsq::GgufFile does not read " << file.string() << ": " << error.what());
      }
      std::cout << (mismatches == 0 ? "ok:   " : "FAIL: ") << model_name << " " << preset.name << ": "
                << tensors.size() - static_cast<std::size_t>(mismatches) << " of " << tensors.size()
                << " tensors of the type gsq maps\n";
      CHECK(mismatches == 0);
      ++files;
    }
  }
  std::cout << files << " files, " << compared << " tensors compared\n";
  CHECK(files > 0);
}
