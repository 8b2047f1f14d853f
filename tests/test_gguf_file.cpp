// Tests of gsq/format/gguf_file.hpp and gsq/model/gguf_checkpoint.hpp: a GGUF file read back as it
// was written (metadata of every type, tensors of several ggml types), malformed files refused
// by name, and quantize_model's GGUF export read as the checkpoint beside it: the same weights,
// q/k rows back in Hugging Face's order, the same logits.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <gsq/format/gguf.hpp>
#include <gsq/format/gguf_file.hpp>
#include <gsq/model/evaluation.hpp>
#include <gsq/model/gguf_checkpoint.hpp>
#include <gsq/model/llama.hpp>
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

TEST_CASE("a GGUF of another architecture is refused by name") {
  const ScratchDirectory scratch;
  gsq::GgufWriter writer;
  writer.set("general.architecture", std::string("qwen2moe"));
  const std::string path = scratch.file("other.gguf");
  writer.write(path);
  CHECK_THROWS_WITH(gsq::read_gguf_checkpoint(path), Contains("general.architecture is \"qwen2moe\"; gsq reads GGUF files of architecture \"llama\""));
}
