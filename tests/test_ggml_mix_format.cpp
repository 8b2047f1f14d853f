// Tests of GgmlMixFormat (gsq/pipeline/ggml_mix_format.hpp) and AnyQuantizer
// (gsq/core/any_quantizer.hpp): a model whose linears are each in a ggml type of their own,
// trained jointly on the decoder layer's output.
#include <catch2/catch.hpp>

#include "program_runner.hpp"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <gsq/io/resumable_output.hpp>
#include <gsq/pipeline/ggml_mix_format.hpp>
#include <gsq/pipeline/sequential.hpp>

using gsq::GgmlType;
using gsq::testing::ScratchDirectory;

namespace {

const std::string tiny_llama3 = GSQ_SOURCE_DIR "/tests/data/tiny-llama3";  // 2 layers, hidden 64, MLP 160, 4 x 24 heads

/// GSQ on each dense layer's output, short enough for a test.
gsq::ModelQuantizationConfig layer_output_gsq() {
  gsq::ModelQuantizationConfig config;
  config.objective = gsq::GsqObjective::layer_output;
  config.train.steps = 64;
  config.block_batches = 2;
  return config;
}

std::vector<gsq::TokenId> calibration_tokens() {
  std::vector<gsq::TokenId> tokens(128);
  for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<gsq::TokenId>((i * 37 + 11) % 97);
  return tokens;
}

/// Each linear of tiny-llama3 in the type `type_of(linear)` gives its name ("self_attn.q_proj").
template <class TypeOf>
std::map<std::string, GgmlType> mix_of(const TypeOf& type_of) {
  std::map<std::string, GgmlType> types;
  const gsq::LlamaConfig config = gsq::LlamaConfig::load(tiny_llama3 + "/config.json");
  for (long layer = 0; layer < config.layers; ++layer)
    for (const std::string& linear : config.linear_names(layer)) types[gsq::LlamaModel::tensor_name(layer, linear)] = type_of(linear);
  return types;
}

struct Run {
  std::vector<gsq::LayerResult> layers;
  std::vector<std::vector<float>> weights;  // every linear's weight afterwards
  std::vector<std::uint8_t> packed;
};

template <class Format>
Run quantize(const std::string& out, Format format = Format(), bool resume = false, long stop_after = 0) {
  gsq::LlamaModel model = gsq::LlamaModel::load(tiny_llama3);
  gsq::SequentialQuantizer<Format> quantizer(model, layer_output_gsq(), gsq::serial_communicator(), std::move(format));
  const gsq::ResumableOutput output(out, {{"test", "mix"}}, resume);
  Run run;
  const gsq::SafetensorsWriter packed =
      quantizer.quantize_layers(calibration_tokens(), 16, output, [&](const gsq::LayerResult& result, const gsq::LayerProgress&) {
        run.layers.push_back(result);
        if (result.layer + 1 == stop_after) throw std::runtime_error("stopped");
      });
  for (long layer = 0; layer < model.config().layers; ++layer)
    for (const std::string& linear : model.config().linear_names(layer)) run.weights.push_back(model.linear_weight(layer, linear).values);
  run.packed = packed.to_bytes();
  return run;
}

}  // namespace

TEST_CASE("a mix of one ggml type trains exactly as that type's own format", "[mix]") {
  const ScratchDirectory scratch;
  const Run own = quantize<gsq::GridFormat<gsq::Int<4>, gsq::GroupSize<32>>>(scratch.file("own"));
  const Run mix = quantize(scratch.file("mix"), gsq::GgmlMixFormat(mix_of([](const std::string&) { return GgmlType::Q4_0; })));
  CHECK(mix.weights == own.weights);
  REQUIRE(mix.layers.size() == own.layers.size());
  for (std::size_t layer = 0; layer < own.layers.size(); ++layer) {
    REQUIRE(mix.layers[layer].blocks.size() == 1);
    CHECK(mix.layers[layer].blocks[0].error == own.layers[layer].blocks[0].error);
    CHECK(mix.layers[layer].blocks[0].error < mix.layers[layer].blocks[0].init_error);  // GSQ beat its GPTQ start
  }
}

TEST_CASE("a mix quantizes each linear in its own type, trains them jointly, and resumes exactly", "[mix]") {
  const ScratchDirectory scratch;
  const auto type_of = [](const std::string& linear) {
    if (linear == "self_attn.v_proj") return GgmlType::Q8_0;
    if (linear == "self_attn.o_proj") return GgmlType::Q5_0;
    if (linear == "mlp.down_proj") return GgmlType::Q5_1;  // rows of 160: blocks of 32 with a min
    if (linear == "mlp.up_proj") return GgmlType::Q4_1;
    if (linear == "mlp.gate_proj") return GgmlType::Q4_0;
    return GgmlType::Q2_0;  // q and k: rows of 64
  };
  const gsq::GgmlMixFormat mix(mix_of(type_of));
  const Run whole = quantize(scratch.file("whole"), mix);
  REQUIRE(whole.layers.size() == 2);
  for (const gsq::LayerResult& layer : whole.layers) {
    REQUIRE(layer.blocks.size() == 1);
    CHECK(layer.blocks[0].error < layer.blocks[0].init_error);
    for (const gsq::LinearResult& linear : layer.linears) {
      INFO(linear.name);
      CHECK(gsq::ggml_type_of(linear.tensor) == mix.type_of(linear.name));
      CHECK(linear.error > 0);
    }
    // More bits, less error: v in Q8_0 against q in Q2_0 on the same input.
    CHECK(layer.linears[2].error < layer.linears[0].error);
  }
  const std::string out = scratch.file("resumed");
  CHECK_THROWS(quantize(out, mix, false, 1));
  const Run resumed = quantize(out, mix, true);
  CHECK(resumed.weights == whole.weights);
  CHECK(resumed.packed == whole.packed);
}

TEST_CASE("a mix refuses types gsq does not write and linears a type cannot hold, by name", "[mix]") {
  CHECK_THROWS_WITH(gsq::GgmlMixFormat(mix_of([](const std::string&) { return GgmlType::TQ1_0; })),
                    Catch::Contains("model.layers.0.mlp.down_proj.weight: gsq does not quantize into ggml type TQ1_0"));
  const gsq::GgmlMixFormat two_bit(mix_of([](const std::string&) { return GgmlType::Q2_0; }));
  CHECK_NOTHROW(two_bit.require_fits("model.layers.0.self_attn.q_proj.weight", 64));
  CHECK_THROWS_WITH(two_bit.require_fits("model.layers.0.self_attn.o_proj.weight", 96),
                    Catch::Contains("o_proj") && Catch::Contains("96"));
  CHECK_THROWS_WITH(two_bit.type_of("lm_head.weight"), Catch::Contains("lm_head.weight"));
}
