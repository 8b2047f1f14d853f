// Tests of SequentialQuantizer::quantize_layers (gsq/model/sequential.hpp) on a tiny Llama: each
// completed layer is kept in the resumable output, and a run stopped after a layer and resumed
// gives the packed file, the reports and the model an uninterrupted run gives.
#include <catch2/catch.hpp>

#include "program_runner.hpp"

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <gsq/io/resumable_output.hpp>
#include <gsq/model/sequential.hpp>

namespace fs = std::filesystem;
using gsq::testing::ScratchDirectory;

namespace {

const std::string tiny_llama3 = GSQ_SOURCE_DIR "/tests/data/tiny-llama3";  // 2 layers
using TinyQuantizer = gsq::SequentialQuantizer<gsq::GridFormat<gsq::Int<2>, gsq::GroupSize<32>>>;

/// Thrown from the layer callback to stop a run, as quantize_model's --stop-after does.
struct Stopped {};

/// GSQ with the block objective, short enough for a test.
gsq::ModelQuantizationConfig short_gsq() {
  gsq::ModelQuantizationConfig config;
  config.train.steps = 4;
  config.block_batches = 2;
  return config;
}

std::vector<gsq::TokenId> calibration_tokens() {
  std::vector<gsq::TokenId> tokens(64);
  for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<gsq::TokenId>((i * 37 + 11) % 97);
  return tokens;
}

struct Run {
  std::vector<std::uint8_t> packed;
  std::vector<gsq::LayerResult> layers;
  std::vector<std::string> resumed_from;
  std::vector<std::vector<float>> weights;  // every linear layer's weight afterwards
};

/// Quantizes tiny-llama3 into `out`; stops after `stop_after` layers unless it is 0.
Run quantize(const std::string& out, bool resume, long stop_after = 0) {
  gsq::LlamaModel model = gsq::LlamaModel::load(tiny_llama3);
  TinyQuantizer quantizer(model, short_gsq());
  const gsq::ResumableOutput output(out, {{"test", "settings"}}, resume);
  Run run;
  const gsq::SafetensorsWriter packed = quantizer.quantize_layers(
      calibration_tokens(), 16, output, [&](const gsq::LayerResult& result, const gsq::LayerProgress& progress) {
        CHECK(progress.layers == 2);
        run.layers.push_back(result);
        run.resumed_from.push_back(progress.resumed_from);
        if (result.layer + 1 == stop_after) throw Stopped{};
      });
  run.packed = packed.to_bytes();
  for (long layer = 0; layer < model.config().layers; ++layer)
    for (const std::string& linear : gsq::LlamaModel::linear_names())
      run.weights.push_back(model.linear_weight(layer, linear).values);
  return run;
}

}  // namespace

TEST_CASE("quantize_layers: a run stopped after a layer and resumed equals an uninterrupted one") {
  const ScratchDirectory scratch;
  const Run whole = quantize(scratch.file("whole"), false);
  REQUIRE(whole.layers.size() == 2);
  CHECK(whole.resumed_from == std::vector<std::string>{"", ""});
  CHECK(whole.layers[1].block_error >= 0);  // the block objective ran

  const std::string out = scratch.file("resumed");
  CHECK_THROWS_AS(quantize(out, false, 1), Stopped);
  CHECK(fs::exists(out + ".partial/layer-0.safetensors"));
  CHECK_FALSE(fs::exists(out + ".partial/layer-1.safetensors"));

  const Run resumed = quantize(out, true);
  CHECK(resumed.resumed_from == std::vector<std::string>{out + ".partial/layer-0.safetensors", ""});
  CHECK(resumed.packed == whole.packed);
  CHECK(resumed.weights == whole.weights);
  REQUIRE(resumed.layers.size() == 2);
  for (std::size_t layer = 0; layer < 2; ++layer) {
    CHECK(resumed.layers[layer].block_error == whole.layers[layer].block_error);
    for (std::size_t linear = 0; linear < 7; ++linear) {
      CHECK(resumed.layers[layer].linears[linear].error == whole.layers[layer].linears[linear].error);
      const auto codes = [&](const Run& run) { return std::get<gsq::QuantizedTensor>(run.layers[layer].linears[linear].tensor).codes; };
      CHECK(codes(resumed) == codes(whole));
    }
  }
}
