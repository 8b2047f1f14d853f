// Tests for gsq/model/evaluation.hpp: token files, the windowing rule, and the bits per byte of the
// bundled llama-bytes-3m against the value Hugging Face transformers computed.
#include <catch2/catch.hpp>

#include "error_message.hpp"
#include <gsq/model/evaluation.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

using gsq::testing::error_of;

namespace {

const std::string bytes_model = GSQ_SOURCE_DIR "/data/llama-bytes-3m";
const std::string tiny_qwen2 = GSQ_SOURCE_DIR "/tests/data/tiny-qwen2";

struct TemporaryDirectory {
  fs::path path;
  TemporaryDirectory() {
    std::string pattern = std::string(GSQ_BINARY_DIR) + "/test_evaluation-XXXXXX";
    REQUIRE(::mkdtemp(&pattern[0]) != nullptr);
    path = pattern;
  }
  ~TemporaryDirectory() { fs::remove_all(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

void write_bytes(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream stream(path, std::ios::binary);
  stream.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

/// Values as `size`-byte little-endian integers (two's complement for negative ones).
std::vector<std::uint8_t> little_endian(const std::vector<std::int64_t>& values, std::size_t size) {
  std::vector<std::uint8_t> bytes;
  for (const std::int64_t value : values)
    for (std::size_t i = 0; i < size; ++i) bytes.push_back(static_cast<std::uint8_t>(static_cast<std::uint64_t>(value) >> (8 * i)));
  return bytes;
}

/// A .npy file as NumPy writes it: magic, version, header length, a dict literal padded with
/// spaces to a multiple of 64 bytes and ended by a newline, then the data.
std::vector<std::uint8_t> npy_file(const std::string& descr, const std::string& shape, const std::vector<std::uint8_t>& data,
                                   int version = 1, const std::string& fortran = "False") {
  const std::size_t length_size = version == 1 ? 2 : 4;
  std::string header = "{'descr': '" + descr + "', 'fortran_order': " + fortran + ", 'shape': " + shape + ", }";
  while ((8 + length_size + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::vector<std::uint8_t> file = {0x93, 'N', 'U', 'M', 'P', 'Y', static_cast<std::uint8_t>(version), 0};
  const std::vector<std::uint8_t> length = little_endian({static_cast<std::int64_t>(header.size())}, length_size);
  file.insert(file.end(), length.begin(), length.end());
  file.insert(file.end(), header.begin(), header.end());
  file.insert(file.end(), data.begin(), data.end());
  return file;
}

std::string npy_error(const std::vector<std::uint8_t>& file) {
  return error_of([&] { gsq::parse_npy_tokens(file, "bad.npy"); });
}

}  // namespace

TEST_CASE("llama-bytes-3m reproduces the bits per byte of Hugging Face transformers on eval.txt", "[evaluation]") {
  std::ifstream reference_stream(bytes_model + "/reference_eval.json");
  const nlohmann::json reference = nlohmann::json::parse(reference_stream);
  const gsq::LlamaModel model = gsq::LlamaModel::load(bytes_model);
  const std::vector<gsq::TokenId> tokens = gsq::read_byte_tokens(bytes_model + "/eval.txt");

  const auto start = std::chrono::steady_clock::now();
  const gsq::EvaluationResult result = gsq::evaluate(model, tokens, gsq::EvaluationOptions{});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  INFO("bits per byte " << result.bits_per_token() << " vs reference " << reference["bits_per_byte"].get<double>()
                        << ", evaluated in " << seconds << " s");
  CHECK(result.window == 256);
  CHECK(result.windows == reference["windows"].get<long>());
  CHECK(result.predictions == reference["predicted"].get<long>());
  CHECK(result.predictions == 105060);
  CHECK(result.bits_per_token() == Approx(reference["bits_per_byte"].get<double>()).epsilon(1e-4));
  CHECK(result.mean_nll() == Approx(reference["nll_per_byte_nats"].get<double>()).epsilon(1e-4));
  CHECK(result.perplexity() == Approx(std::exp(result.mean_nll())));
  CHECK(result.bits_per_token() == Approx(result.mean_nll() / std::log(2.0)));
}

TEST_CASE("windows: non-overlapping, tail dropped, window - 1 predictions each, fresh context", "[evaluation]") {
  const gsq::LlamaModel model = gsq::LlamaModel::load(tiny_qwen2);
  // 11 tokens in windows of 4: windows [0, 4) and [4, 8), the tail [8, 11) dropped.
  const std::vector<gsq::TokenId> tokens = {5, 17, 3, 88, 40, 2, 61, 9, 70, 71, 72};
  gsq::EvaluationOptions options;
  options.window = 4;
  const gsq::EvaluationResult result = gsq::evaluate(model, tokens, options);
  CHECK(result.windows == 2);
  CHECK(result.predictions == 6);
  CHECK(gsq::count_windows(11, 4) == 2);
  CHECK(gsq::count_windows(12, 4) == 3);

  // By hand: each window's first 3 tokens run alone, predictions scored against the next token.
  double expected = 0;
  for (long w = 0; w < 2; ++w) {
    const std::vector<gsq::TokenId> inputs(tokens.begin() + 4 * w, tokens.begin() + 4 * w + 3);
    const gsq::Matrix<float> logits = model.forward(inputs, 3);
    for (long t = 0; t < 3; ++t) {
      double sum = 0;
      for (long v = 0; v < logits.cols; ++v) sum += std::exp(double(logits(t, v)));
      expected += std::log(sum) - logits(t, static_cast<long>(tokens[std::size_t(4 * w + t + 1)]));
    }
  }
  CHECK(result.total_nll == Approx(expected).epsilon(1e-6));
  CHECK(result.mean_nll() == Approx(expected / 6).epsilon(1e-6));

  options.windows_per_batch = 1;  // batching changes a window's score by float rounding only
  CHECK(gsq::evaluate(model, tokens, options).total_nll == Approx(result.total_nll).epsilon(1e-6));
  options.max_windows = 1;
  const gsq::EvaluationResult first = gsq::evaluate(model, tokens, options);
  CHECK(first.windows == 1);
  CHECK(first.predictions == 3);

  options = gsq::EvaluationOptions{};
  options.window = 12;
  CHECK_THAT(error_of([&] { gsq::evaluate(model, tokens, options); }), Contains("fewer than one evaluation window of 12"));
  options.window = 1;
  CHECK_THAT(error_of([&] { gsq::evaluate(model, tokens, options); }), Contains("at least 2"));
}

TEST_CASE("the evaluation does not depend on the thread count", "[evaluation]") {
  const gsq::LlamaModel model = gsq::LlamaModel::load(bytes_model);
  const std::vector<gsq::TokenId> tokens = gsq::read_byte_tokens(bytes_model + "/calib.txt");
  gsq::EvaluationOptions options;
  options.window = 128;
  options.max_windows = 24;
  gsq::set_host_threads(1);
  const gsq::EvaluationResult one = gsq::evaluate(model, tokens, options);
  gsq::set_host_threads(2);
  const gsq::EvaluationResult two = gsq::evaluate(model, tokens, options);
  CHECK(one.total_nll == two.total_nll);
  CHECK(one.predictions == 24 * 127);
}

TEST_CASE("out-of-vocabulary token ids are rejected with their position", "[evaluation]") {
  const gsq::LlamaModel model = gsq::LlamaModel::load(tiny_qwen2);  // vocabulary 89
  std::vector<gsq::TokenId> tokens(16, 7);
  tokens[9] = 89;
  gsq::EvaluationOptions options;
  options.window = 8;
  CHECK_THAT(error_of([&] { gsq::evaluate(model, tokens, options); }),
             Contains("token id 89 at position 9") && Contains("vocabulary size 89"));
  tokens[9] = 88;
  CHECK(gsq::evaluate(model, tokens, options).predictions == 14);
}

TEST_CASE("token files: raw uint32, .npy and text bytes", "[evaluation][tokens]") {
  TemporaryDirectory directory;
  const std::vector<std::int64_t> ids = {0, 1, 255, 256, 65535, 70000, 4294967295};

  write_bytes(directory / "tokens.bin", little_endian(ids, 4));
  CHECK(gsq::read_token_file(directory / "tokens.bin") == std::vector<gsq::TokenId>(ids.begin(), ids.end()));
  std::vector<std::uint8_t> truncated = little_endian(ids, 4);
  truncated.pop_back();
  write_bytes(directory / "truncated.bin", truncated);
  CHECK_THAT(error_of([&] { gsq::read_token_file(directory / "truncated.bin"); }), Contains("not whole uint32"));
  CHECK_THAT(error_of([&] { gsq::read_token_file(directory / "missing.bin"); }), Contains("cannot open"));

  write_bytes(directory / "tokens.npy", npy_file("<u4", "(7,)", little_endian(ids, 4)));
  CHECK(gsq::read_token_file(directory / "tokens.npy") == std::vector<gsq::TokenId>(ids.begin(), ids.end()));
  const std::vector<gsq::TokenId> small = {3, 1, 4, 1, 5, 9};
  const std::vector<std::int64_t> small_ids(small.begin(), small.end());
  CHECK(gsq::parse_npy_tokens(npy_file("<i4", "(6,)", little_endian(small_ids, 4)), "a") == small);
  CHECK(gsq::parse_npy_tokens(npy_file("<u2", "(6,)", little_endian(small_ids, 2)), "a") == small);
  CHECK(gsq::parse_npy_tokens(npy_file("<i8", "(6,)", little_endian(small_ids, 8)), "a") == small);
  CHECK(gsq::parse_npy_tokens(npy_file("<i8", "(2, 3)", little_endian(small_ids, 8)), "a") == small);  // read flat
  CHECK(gsq::parse_npy_tokens(npy_file("<u4", "(6,)", little_endian(small_ids, 4), 2), "a") == small);  // version 2
  CHECK(gsq::parse_npy_tokens(npy_file("<u4", "(0,)", {}), "a").empty());

  std::vector<std::uint8_t> bad_magic = npy_file("<u4", "(6,)", little_endian(small_ids, 4));
  bad_magic[1] = 'X';
  CHECK_THAT(npy_error(bad_magic), Contains("bad.npy") && Contains("magic"));
  CHECK_THAT(npy_error({0x93, 'N'}), Contains("magic"));
  CHECK_THAT(npy_error(npy_file("<f4", "(6,)", little_endian(small_ids, 4))), Contains("'<f4'"));
  CHECK_THAT(npy_error(npy_file(">u4", "(6,)", little_endian(small_ids, 4))), Contains("'>u4'"));
  CHECK_THAT(npy_error(npy_file("<u4", "(7,)", little_endian(small_ids, 4))), Contains("truncated"));
  CHECK_THAT(npy_error(npy_file("<u4", "(5,)", little_endian(small_ids, 4))), Contains("4 bytes follow"));
  CHECK_THAT(npy_error(npy_file("<u4", "(2, 3)", little_endian(small_ids, 4), 1, "True")), Contains("Fortran"));
  CHECK_THAT(npy_error(npy_file("<i4", "(2,)", little_endian({7, -3}, 4))), Contains("value -3 at position 1"));
  CHECK_THAT(npy_error(npy_file("<i8", "(2,)", little_endian({1LL << 33, 0}, 8))), Contains("at position 0"));
  std::vector<std::uint8_t> cut_header = npy_file("<u4", "(6,)", {});
  cut_header.resize(30);
  CHECK_THAT(npy_error(cut_header), Contains("truncated in the header"));
  write_bytes(directory / "bad.npy", bad_magic);  // a .npy name is parsed as .npy
  CHECK_THAT(error_of([&] { gsq::read_token_file(directory / "bad.npy"); }), Contains("magic"));

  write_bytes(directory / "text.txt", {'h', 'i', 0xFF, '\n'});
  CHECK(gsq::read_byte_tokens(directory / "text.txt") == std::vector<gsq::TokenId>{'h', 'i', 255, '\n'});
}
