// Tests of SequentialQuantizer::quantize_layers (gsq/pipeline/sequential.hpp) on a tiny Llama: each
// completed layer is kept in the resumable output, and a run stopped after a layer and resumed
// gives the packed file, the reports and the model an uninterrupted run gives.
#include <catch2/catch.hpp>

#include "program_runner.hpp"
#include "thread_communicator.hpp"

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <gsq/io/resumable_output.hpp>
#include <gsq/pipeline/sequential.hpp>

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

/// Every linear layer's weight, layer by layer.
std::vector<std::vector<float>> linear_weights(const gsq::LlamaModel& model) {
  std::vector<std::vector<float>> weights;
  for (long layer = 0; layer < model.config().layers; ++layer)
    for (const std::string& linear : model.config().linear_names(layer))
      weights.push_back(model.linear_weight(layer, linear).values);
  return weights;
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
  run.weights = linear_weights(model);
  return run;
}

/// A layer's record without its timings.
nlohmann::json errors_of(const gsq::LayerResult& layer) {
  nlohmann::json record = layer;
  record.erase("seconds");
  for (nlohmann::json& linear : record["linears"]) linear.erase("seconds");
  for (nlohmann::json& block : record["blocks"]) block.erase("train_seconds"), block.erase("step_seconds_median");
  return record;
}

}  // namespace

TEST_CASE("quantize_layers: a run stopped after a layer and resumed equals an uninterrupted one") {
  const ScratchDirectory scratch;
  const Run whole = quantize(scratch.file("whole"), false);
  REQUIRE(whole.layers.size() == 2);
  CHECK(whole.resumed_from == std::vector<std::string>{"", ""});
  REQUIRE(whole.layers[1].blocks.size() == 1);  // the block objective ran
  CHECK(whole.layers[1].blocks[0].error >= 0);

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
    CHECK(errors_of(resumed.layers[layer]) == errors_of(whole.layers[layer]));  // every error, every block
    for (std::size_t linear = 0; linear < 7; ++linear) {
      CHECK(resumed.layers[layer].linears[linear].error == whole.layers[layer].linears[linear].error);
      const auto codes = [&](const Run& run) { return std::get<gsq::QuantizedTensor>(run.layers[layer].linears[linear].tensor).codes; };
      CHECK(codes(resumed) == codes(whole));
    }
  }
}

namespace {

const std::string fixtures = GSQ_SOURCE_DIR "/tests/data/";

/// `count` token ids below `vocabulary`, from a fixed generator.
std::vector<gsq::TokenId> tokens_below(long vocabulary, std::size_t count) {
  std::vector<gsq::TokenId> tokens(count);
  std::uint64_t state = 12345;
  for (gsq::TokenId& token : tokens) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    token = static_cast<gsq::TokenId>((state >> 33) % static_cast<std::uint64_t>(vocabulary));
  }
  return tokens;
}

struct MixtureRun {
  std::vector<std::uint8_t> packed;
  std::vector<gsq::LayerResult> layers;
  std::vector<std::vector<float>> weights;  // every linear layer's weight afterwards
};

/// Quantizes the fixture `name` (streamed) on 320 tokens (8 sequences of 40) into `out`, as rank
/// `communicator` of its ranks; stops after `stop_after` layers unless it is 0.
MixtureRun quantize_mixture(const std::string& name, const gsq::ModelQuantizationConfig& config, const std::string& out,
                            bool resume = false, long stop_after = 0,
                            const gsq::Communicator* communicator = &gsq::serial_communicator()) {
  gsq::LlamaModel model = gsq::LlamaModel::open(fixtures + name);
  TinyQuantizer quantizer(model, config, *communicator);
  const gsq::ResumableOutput output(out, {{"test", "mixture"}}, resume, nlohmann::json::object(), *communicator);
  MixtureRun run;
  const gsq::SafetensorsWriter packed = quantizer.quantize_layers(
      tokens_below(model.config().vocab_size, 320), 40, output, [&](const gsq::LayerResult& result, const gsq::LayerProgress&) {
        run.layers.push_back(result);
        if (result.layer + 1 == stop_after) throw Stopped{};
      });
  run.packed = packed.to_bytes();
  run.weights = linear_weights(model);
  return run;
}

/// Each routed expert's calibration tokens and whether it fell back, in layer `layer` of `run`.
std::vector<std::pair<long, bool>> experts_of(const MixtureRun& run, long layer) {
  std::vector<std::pair<long, bool>> experts;
  const std::vector<gsq::LinearResult>& linears = run.layers[static_cast<std::size_t>(layer)].linears;
  for (std::size_t i = 0; i < linears.size(); ++i)
    if (linears[i].tokens >= 0 && linears[i].name.find("gate_proj") != std::string::npos) {
      CHECK(linears[i + 1].tokens == linears[i].tokens);  // up and down share the gate's tokens and fate
      CHECK(linears[i + 2].fallback == linears[i].fallback);
      experts.emplace_back(linears[i].tokens, linears[i].fallback);
    }
  return experts;
}

}  // namespace

TEST_CASE("Mixture-of-Experts models: every expert of every family is quantized, the model holds the results",
          "[moe]") {
  const ScratchDirectory scratch;
  for (const std::string name : {"tiny-mixtral", "tiny-qwen2-moe", "tiny-qwen3-moe", "tiny-deepseek-v3"}) {
    INFO(name);
    const gsq::LlamaModel original = gsq::LlamaModel::load(fixtures + name);
    const MixtureRun run = quantize_mixture(name, short_gsq(), scratch.file(name));
    std::size_t index = 0;
    for (long layer = 0; layer < original.config().layers; ++layer) {
      const std::vector<std::string> linears = original.config().linear_names(layer);
      const gsq::LayerResult& result = run.layers[static_cast<std::size_t>(layer)];
      REQUIRE(result.linears.size() == linears.size());
      for (std::size_t i = 0; i < linears.size(); ++i, ++index) {
        INFO(linears[i]);
        CHECK(result.linears[i].name == gsq::LlamaModel::tensor_name(layer, linears[i]));
        const std::vector<float> stored = std::get<gsq::QuantizedTensor>(result.linears[i].tensor).dequantize().values;
        CHECK(run.weights[index] == stored);  // the model holds what is written
        CHECK(stored != original.linear_weight(layer, linears[i]).values);
        CHECK(std::isfinite(result.linears[i].error));
      }
      // Every SwiGLU block with calibration tokens was trained on its output.
      auto trained = static_cast<long>(original.config().swiglu_blocks(layer).size());
      for (const auto& expert : experts_of(run, layer)) trained -= expert.second;
      CHECK(static_cast<long>(result.blocks.size()) == trained);
    }
  }
}

TEST_CASE("an expert the router never picks falls back to RTN and is reported; --expert-calibration all calibrates on every token",
          "[moe]") {
  const ScratchDirectory scratch;
  const MixtureRun routed = quantize_mixture("tiny-deepseek-v3", short_gsq(), scratch.file("routed"));
  CHECK(routed.layers[0].linears[5].tokens == -1);  // layer 0 is dense
  const std::vector<std::pair<long, bool>> experts = experts_of(routed, 1);
  REQUIRE(experts.size() == 8);
  long total = 0;
  for (std::size_t expert = 0; expert < experts.size(); ++expert) {
    INFO("expert " << expert);
    const bool never_picked = expert == 4 || expert == 5;  // the fixture's -100 correction bias sinks their group
    CHECK((experts[expert].first == 0) == never_picked);
    CHECK(experts[expert].second == never_picked);
    total += experts[expert].first;
  }
  CHECK(total == 320 * 2);  // two experts per token
  const nlohmann::json record = routed.layers[1];
  CHECK(record["linears"][5 + 3 * 4]["fallback"] == "rtn");  // after the 5 attention linears, expert 4's gate
  CHECK(record["linears"][5 + 3 * 4]["tokens"] == 0);

  gsq::ModelQuantizationConfig all = short_gsq();
  all.expert_calibration = gsq::ExpertCalibration::all;
  for (const auto& expert : experts_of(quantize_mixture("tiny-deepseek-v3", all, scratch.file("all")), 1))
    CHECK(expert == std::pair<long, bool>{320, false});

  gsq::ModelQuantizationConfig strict = short_gsq();
  strict.expert_min_tokens = 1;  // no routed expert gets every token: all fall back, the shared one is trained
  const MixtureRun fallback = quantize_mixture("tiny-deepseek-v3", strict, scratch.file("strict"));
  for (const auto& expert : experts_of(fallback, 1)) CHECK(expert.second);
  REQUIRE(fallback.layers[1].blocks.size() == 1);
  CHECK(fallback.layers[1].blocks[0].name == "mlp.shared_experts");
}

TEST_CASE("Mixture-of-Experts quantization: the same bytes on any thread count, and after a resume", "[moe]") {
  const ScratchDirectory scratch;
  gsq::set_host_threads(1);
  const MixtureRun one = quantize_mixture("tiny-deepseek-v3", short_gsq(), scratch.file("one"));
  gsq::set_host_threads(2);
  const MixtureRun two = quantize_mixture("tiny-deepseek-v3", short_gsq(), scratch.file("two"));
  CHECK(one.packed == two.packed);
  CHECK(one.weights == two.weights);

  const std::string out = scratch.file("resumed");
  CHECK_THROWS_AS(quantize_mixture("tiny-deepseek-v3", short_gsq(), out, false, 2), Stopped);
  const MixtureRun resumed = quantize_mixture("tiny-deepseek-v3", short_gsq(), out, true);
  CHECK(resumed.packed == two.packed);
  CHECK(resumed.weights == two.weights);
}

TEST_CASE("work spread over ranks gives every rank the bytes one process gives, for dense and MoE models", "[moe][ranks]") {
  const ScratchDirectory scratch;
  for (const std::string name : {"tiny-llama3", "tiny-deepseek-v3"}) {
    INFO(name);
    const MixtureRun alone = quantize_mixture(name, short_gsq(), scratch.file(name + "-alone"));
    for (const int ranks : {2, 3}) {
      INFO(ranks << " ranks");
      const std::string out = scratch.file(name + "-ranks-" + std::to_string(ranks));
      std::vector<MixtureRun> runs(static_cast<std::size_t>(ranks));
      gsq::testing::run_ranks(ranks, [&](const gsq::Communicator& communicator) {
        runs[static_cast<std::size_t>(communicator.rank())] = quantize_mixture(name, short_gsq(), out, false, 0, &communicator);
      });
      for (const MixtureRun& run : runs) {
        CHECK(run.packed == alone.packed);
        CHECK(run.weights == alone.weights);
        REQUIRE(run.layers.size() == alone.layers.size());
        for (std::size_t layer = 0; layer < run.layers.size(); ++layer)
          CHECK(errors_of(run.layers[layer]) == errors_of(alone.layers[layer]));
      }
    }
  }
}

TEST_CASE("the layer-output objective trains each dense layer on its output: the same bytes on any thread count, on ranks, "
          "after a resume",
          "[layer_output]") {
  const ScratchDirectory scratch;
  gsq::ModelQuantizationConfig config = short_gsq();
  config.objective = gsq::GsqObjective::layer_output;
  config.train.steps = 128;  // enough to beat GPTQ on this random layer
  std::vector<std::vector<std::uint8_t>> packed_by_target;
  for (const gsq::TargetInputs target : {gsq::TargetInputs::quantized, gsq::TargetInputs::full_precision}) {
    const std::string name = target == gsq::TargetInputs::quantized ? "quantized" : "full-precision";
    INFO("target inputs " << name);
    config.target_inputs = target;
    gsq::set_host_threads(1);
    const MixtureRun one = quantize_mixture("tiny-qwen3", config, scratch.file(name + "-one"));
    REQUIRE(one.layers.size() == 2);
    for (const gsq::LayerResult& layer : one.layers) {
      REQUIRE(layer.blocks.size() == 1);  // the layer, not its MLP block
      CHECK(layer.blocks[0].name == "layer");
      CHECK(layer.blocks[0].error < layer.blocks[0].init_error);  // training beat the GPTQ start
      REQUIRE(layer.linears.size() == 7);
      for (const gsq::LinearResult& linear : layer.linears) CHECK(linear.init_error > 0);  // each started from GPTQ
    }
    gsq::set_host_threads(2);
    const MixtureRun two = quantize_mixture("tiny-qwen3", config, scratch.file(name + "-two"));
    CHECK(one.packed == two.packed);
    CHECK(one.weights == two.weights);

    const std::string out = scratch.file(name + "-resumed");
    CHECK_THROWS_AS(quantize_mixture("tiny-qwen3", config, out, false, 1), Stopped);
    const MixtureRun resumed = quantize_mixture("tiny-qwen3", config, out, true);
    CHECK(resumed.packed == one.packed);  // the full-precision targets are rebuilt through the resumed layer

    std::vector<MixtureRun> ranks(2);
    gsq::testing::run_ranks(2, [&](const gsq::Communicator& communicator) {
      ranks[static_cast<std::size_t>(communicator.rank())] =
          quantize_mixture("tiny-qwen3", config, scratch.file(name + "-ranks"), false, 0, &communicator);
    });
    for (const MixtureRun& run : ranks) CHECK(run.packed == one.packed);
    packed_by_target.push_back(one.packed);
  }
  CHECK(packed_by_target[0] != packed_by_target[1]);  // the target's inputs matter
}

TEST_CASE("the layer-output objective refuses what it cannot train, before any work", "[layer_output]") {
  gsq::ModelQuantizationConfig config = short_gsq();
  config.objective = gsq::GsqObjective::layer_output;
  for (const std::string name : {"tiny-mixtral", "tiny-deepseek-v3"}) {
    gsq::LlamaModel model = gsq::LlamaModel::open(fixtures + name);
    CHECK_THROWS_WITH(TinyQuantizer(model, config), Catch::Contains("the decoder-layer objective trains"));
  }
  config.gsq_attention = true;
  CHECK_THROWS_WITH(config.validate(), Catch::Contains("trains attention itself"));
}
