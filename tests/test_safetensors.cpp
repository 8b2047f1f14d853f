// Tests for gsq/io/safetensors.hpp: float conversions, round trips, validation of malformed files,
// atomic writing, sharded checkpoints, and the real checkpoints in data/ and tests/data/.
#include <signal.h>
#include <sys/resource.h>

#include <catch2/catch.hpp>
#include <gsq/io/safetensors.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using gsq::Dtype;

namespace {

/// A fresh directory under the build tree, removed with everything in it at scope exit.
struct TemporaryDirectory {
  fs::path path;
  TemporaryDirectory() {
    std::string pattern = std::string(GSQ_BINARY_DIR) + "/test_safetensors-XXXXXX";
    REQUIRE(::mkdtemp(&pattern[0]) != nullptr);
    path = pattern;
  }
  ~TemporaryDirectory() { fs::remove_all(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
  std::vector<std::string> file_names() const {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(path)) names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
};

/// A safetensors file: the 8-byte length of `header`, `header`, then `data_size` data bytes.
std::vector<std::uint8_t> file_bytes(const std::string& header, std::size_t data_size) {
  std::vector<std::uint8_t> bytes(8 + header.size() + data_size);
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<std::uint8_t>(std::uint64_t(header.size()) >> (8 * i));
  std::copy(header.begin(), header.end(), bytes.begin() + 8);
  for (std::size_t i = 0; i < data_size; ++i) bytes[8 + header.size() + i] = static_cast<std::uint8_t>(i);
  return bytes;
}

/// The message gsq::Error gives for parsing `bytes`, or "(accepted)".
std::string parse_error(const std::vector<std::uint8_t>& bytes) {
  try {
    gsq::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "bad.safetensors");
  } catch (const gsq::Error& error) {
    return error.what();
  }
  return "(accepted)";
}

gsq::SafetensorsFile parse(const std::vector<std::uint8_t>& bytes) {
  return gsq::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "test.safetensors");
}

void write_text(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

std::string read_text(const std::string& path) {
  std::ifstream stream(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(stream), std::istreambuf_iterator<char>());
}

float float_from_bits(std::uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

}  // namespace

TEST_CASE("float to half rounds to nearest even, with IEEE overflow, subnormals and NaN") {
  CHECK(gsq::float_to_half_bits(1.0f) == 0x3C00);
  CHECK(gsq::float_to_half_bits(-2.0f) == 0xC000);
  CHECK(gsq::float_to_half_bits(0.0f) == 0x0000);
  CHECK(gsq::float_to_half_bits(-0.0f) == 0x8000);
  CHECK(gsq::float_to_half_bits(65504.f) == 0x7BFF);  // the largest half
  CHECK(gsq::float_to_half_bits(65519.f) == 0x7BFF);  // below the halfway point to 65536
  CHECK(gsq::float_to_half_bits(65520.f) == 0x7C00);  // halfway, 0x7BFF is odd: rounds up to Inf
  CHECK(gsq::float_to_half_bits(1e10f) == 0x7C00);
  CHECK(gsq::float_to_half_bits(-std::numeric_limits<float>::infinity()) == 0xFC00);
  // 1 + 2^-11 lies halfway between 1 (0x3C00, even) and 1 + 2^-10 (0x3C01): ties to even.
  CHECK(gsq::float_to_half_bits(1.0f + std::ldexp(1.0f, -11)) == 0x3C00);
  CHECK(gsq::float_to_half_bits(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3C02);
  CHECK(gsq::float_to_half_bits(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)) == 0x3C01);
  // Subnormals: 2^-24 is the smallest; 2^-25 ties to 0; 1.5 * 2^-25 rounds up to 2^-24.
  CHECK(gsq::float_to_half_bits(std::ldexp(1.0f, -24)) == 0x0001);
  CHECK(gsq::float_to_half_bits(std::ldexp(1.0f, -25)) == 0x0000);
  CHECK(gsq::float_to_half_bits(std::ldexp(1.5f, -25)) == 0x0001);
  CHECK(gsq::float_to_half_bits(std::ldexp(3.0f, -25)) == 0x0002);  // 1.5 units ties to even 2
  CHECK(gsq::float_to_half_bits(std::ldexp(1.0f, -14)) == 0x0400);  // the smallest normal
  CHECK(gsq::float_to_half_bits(std::ldexp(1023.0f, -24)) == 0x03FF);  // the largest subnormal
  CHECK(gsq::float_to_half_bits(std::ldexp(2047.0f, -25)) == 0x0400);  // rounds up into the normals
  CHECK(gsq::float_to_half_bits(std::ldexp(1.0f, -30)) == 0x0000);
  const std::uint16_t nan = gsq::float_to_half_bits(std::numeric_limits<float>::quiet_NaN());
  CHECK((nan & 0x7C00) == 0x7C00);
  CHECK((nan & 0x03FF) != 0);
  CHECK((gsq::float_to_half_bits(float_from_bits(0x7F800001u)) & 0x03FF) != 0);  // payload only in low bits

  CHECK(gsq::half_bits_to_float(0x3C00) == 1.0f);
  CHECK(gsq::half_bits_to_float(0xC000) == -2.0f);
  CHECK(gsq::half_bits_to_float(0x7BFF) == 65504.f);
  CHECK(gsq::half_bits_to_float(0x0001) == std::ldexp(1.0f, -24));
  CHECK(gsq::half_bits_to_float(0x8001) == -std::ldexp(1.0f, -24));
  CHECK(gsq::half_bits_to_float(0x03FF) == std::ldexp(1023.0f, -24));
  CHECK(std::signbit(gsq::half_bits_to_float(0x8000)));
  CHECK(gsq::half_bits_to_float(0x7C00) == std::numeric_limits<float>::infinity());
  CHECK(std::isnan(gsq::half_bits_to_float(0x7E00)));
  CHECK(std::isnan(gsq::half_bits_to_float(0x7C01)));
  // Every half survives a round trip through float.
  for (std::uint32_t bits = 0; bits <= 0xFFFF; ++bits) {
    const float value = gsq::half_bits_to_float(static_cast<std::uint16_t>(bits));
    if (!std::isnan(value)) REQUIRE(gsq::float_to_half_bits(value) == bits);
  }
}

TEST_CASE("float to bfloat16 rounds to nearest even, NaN stays NaN") {
  CHECK(gsq::float_to_bfloat16_bits(1.0f) == 0x3F80);
  CHECK(gsq::float_to_bfloat16_bits(-1.0f) == 0xBF80);
  CHECK(gsq::float_to_bfloat16_bits(float_from_bits(0x3F808000u)) == 0x3F80);  // halfway, to even
  CHECK(gsq::float_to_bfloat16_bits(float_from_bits(0x3F818000u)) == 0x3F82);  // halfway, to even
  CHECK(gsq::float_to_bfloat16_bits(float_from_bits(0x3F808001u)) == 0x3F81);  // just above halfway
  CHECK(gsq::float_to_bfloat16_bits(float_from_bits(0x3F807FFFu)) == 0x3F80);  // just below
  CHECK(gsq::float_to_bfloat16_bits(std::numeric_limits<float>::max()) == 0x7F80);  // overflows to Inf
  CHECK(gsq::float_to_bfloat16_bits(std::numeric_limits<float>::infinity()) == 0x7F80);
  CHECK(gsq::float_to_bfloat16_bits(-0.0f) == 0x8000);
  CHECK(gsq::float_to_bfloat16_bits(float_from_bits(0x00000001u)) == 0x0000);  // tiny subnormal
  // A NaN whose payload sits only in the low 16 bits would truncate to Inf; it must stay NaN.
  const std::uint16_t nan = gsq::float_to_bfloat16_bits(float_from_bits(0x7F800001u));
  CHECK(std::isnan(gsq::bfloat16_bits_to_float(nan)));
  CHECK(std::isnan(gsq::bfloat16_bits_to_float(gsq::float_to_bfloat16_bits(-std::numeric_limits<float>::quiet_NaN()))));
  CHECK(gsq::bfloat16_bits_to_float(0x3F80) == 1.0f);
  CHECK(gsq::bfloat16_bits_to_float(0x4049) == 3.140625f);
}

TEST_CASE("F32, F16 and BF16 tensors round-trip through a file") {
  const std::vector<float> values = {1.0f, -2.5f, 3.14159265f, 65520.f, std::ldexp(1.0f, -24), 1e-30f,
                                     std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()};
  TemporaryDirectory directory;
  gsq::SafetensorsWriter writer;
  writer.add("f32", {2, 4}, values, Dtype::F32);
  writer.add("f16", {2, 4}, values, Dtype::F16);
  writer.add("bf16", {8}, values, Dtype::BF16);
  writer.write(directory / "model.safetensors");
  CHECK(directory.file_names() == std::vector<std::string>{"model.safetensors"});  // no temporary left

  const gsq::SafetensorsFile file = gsq::SafetensorsFile::open(directory / "model.safetensors");
  REQUIRE(file.tensors().size() == 3);
  const gsq::FloatTensor f32 = file.float_tensor("f32");
  CHECK(f32.shape == std::vector<std::int64_t>{2, 4});
  const gsq::Matrix<float> f16 = file.matrix("f16");
  CHECK(f16.rows == 2);
  CHECK(f16.cols == 4);
  const std::vector<float> bf16 = file.float_values("bf16");
  for (std::size_t i = 0; i + 1 < values.size(); ++i) {
    INFO("element " << i);
    CHECK(f32.values[i] == values[i]);
    CHECK(f16.values[i] == gsq::half_bits_to_float(gsq::float_to_half_bits(values[i])));
    CHECK(bf16[i] == gsq::bfloat16_bits_to_float(gsq::float_to_bfloat16_bits(values[i])));
  }
  CHECK(std::isnan(f32.values[7]));
  CHECK(std::isnan(f16.values[7]));
  CHECK(std::isnan(bf16[7]));
  // Hand-checked values after rounding.
  CHECK(f16.values[1] == -2.5f);
  CHECK(f16.values[2] == 3.140625f);
  CHECK(f16.values[3] == std::numeric_limits<float>::infinity());
  CHECK(f16.values[4] == std::ldexp(1.0f, -24));
  CHECK(f16.values[5] == 0.0f);
  CHECK(bf16[2] == 3.140625f);
  CHECK(bf16[3] == 65536.f);
  // The stored bytes are little-endian: 1.0 is 00 3C in F16 and 80 3F in BF16.
  const gsq::ByteView half_bytes = file.raw_bytes("f16");
  REQUIRE(half_bytes.size == 16);
  CHECK(half_bytes.data[0] == 0x00);
  CHECK(half_bytes.data[1] == 0x3C);
  const gsq::ByteView bfloat_bytes = file.raw_bytes("bf16");
  CHECK(bfloat_bytes.data[0] == 0x80);
  CHECK(bfloat_bytes.data[1] == 0x3F);
}

TEST_CASE("deferred tensors, made only when written, give the file their eager twins give") {
  const std::vector<float> values = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -0.5f};
  gsq::SafetensorsWriter eager, deferred;
  eager.add("w", {2, 3}, values);
  eager.add_integers("ids", Dtype::I32, {2}, {4, 5});
  eager.set_metadata("format", "pt");
  const std::vector<std::uint8_t> file = eager.to_bytes();
  const gsq::SafetensorsFile reference = gsq::SafetensorsFile::from_bytes(file.data(), file.size());
  int made = 0;
  for (const std::string name : {"w", "ids"}) {
    const gsq::TensorInfo& info = reference.info(name);
    deferred.add_deferred(name, info.dtype, info.shape, [&reference, &made, name] {
      ++made;
      const gsq::ByteView bytes = reference.raw_bytes(name);
      return std::vector<std::uint8_t>(bytes.data, bytes.data + bytes.size);
    });
  }
  deferred.set_metadata("format", "pt");
  CHECK(made == 0);  // nothing is made before the file is written
  CHECK(deferred.to_bytes() == file);
  CHECK(made == 2);
}

TEST_CASE("integer tensors round-trip, and out-of-range values are refused") {
  gsq::SafetensorsWriter writer;
  writer.add_integers("input_ids", Dtype::I32, {2, 3}, {0, 1, -7, 2147483647, -2147483648LL, 42});
  writer.add_integers("signed_codes", Dtype::I8, {4}, {-128, -1, 0, 127});
  writer.add_bytes("packed_codes", Dtype::U8, {5}, {0x00, 0x1B, 0xE4, 0xFF, 0x80});
  writer.add_integers("flags", Dtype::Bool, {3}, {1, 0, 1});
  writer.add_integers("big", Dtype::I64, {1}, {std::numeric_limits<std::int64_t>::min()});
  const gsq::SafetensorsFile file = parse(writer.to_bytes());
  CHECK(file.info("input_ids").dtype == Dtype::I32);
  CHECK(file.integer_values("input_ids") == std::vector<std::int64_t>{0, 1, -7, 2147483647, -2147483648LL, 42});
  CHECK(file.integer_values("signed_codes") == std::vector<std::int64_t>{-128, -1, 0, 127});
  CHECK(file.integer_values("packed_codes") == std::vector<std::int64_t>{0x00, 0x1B, 0xE4, 0xFF, 0x80});
  CHECK(file.raw_bytes("packed_codes").size == 5);
  CHECK(file.raw_bytes("packed_codes").data[2] == 0xE4);
  CHECK(file.integer_values("flags") == std::vector<std::int64_t>{1, 0, 1});
  CHECK(file.integer_values("big") == std::vector<std::int64_t>{std::numeric_limits<std::int64_t>::min()});
  CHECK_THROWS_WITH(file.float_values("input_ids"), Contains("tensor 'input_ids'") && Contains("I32 is not a float"));

  gsq::SafetensorsWriter refusing;
  CHECK_THROWS_WITH(refusing.add_integers("codes", Dtype::U8, {2}, {3, 256}),
                    Contains("tensor 'codes'") && Contains("value 256 at element 1 does not fit U8"));
  CHECK_THROWS_WITH(refusing.add_integers("codes", Dtype::I8, {1}, {-129}), Contains("does not fit I8"));
  CHECK_THROWS_WITH(refusing.add_integers("codes", Dtype::F32, {1}, {1}), Contains("F32 is not an integer type"));
  CHECK_THROWS_WITH(refusing.add_bytes("ids", Dtype::I32, {2}, {1, 2, 3}), Contains("3 bytes are not whole I32"));
  CHECK_THROWS_WITH(refusing.add_bytes("ids", Dtype::I32, {3}, {1, 2, 3, 4}), Contains("holds 3 elements but 1"));
}

TEST_CASE("metadata is preserved") {
  gsq::SafetensorsWriter writer;
  writer.set_metadata("format", "pt");
  writer.set_metadata("gsq.bits", "2");
  writer.set_metadata("empty", "");
  writer.add("w", {1}, {1.0f});
  const gsq::SafetensorsFile file = parse(writer.to_bytes());
  CHECK(file.metadata() == std::map<std::string, std::string>{{"format", "pt"}, {"gsq.bits", "2"}, {"empty", ""}});

  gsq::SafetensorsWriter without_metadata;
  without_metadata.add("w", {1}, {1.0f});
  CHECK(parse(without_metadata.to_bytes()).metadata().empty());
}

TEST_CASE("the writer aligns the data section to 8 bytes and each tensor to its element size") {
  gsq::SafetensorsWriter writer;
  writer.add_bytes("odd_bytes", Dtype::U8, {3}, {1, 2, 3});
  writer.add("two_halves", {2}, {1.0f, 2.0f}, Dtype::F16);
  writer.add("three_floats", {3}, {1.0f, 2.0f, 3.0f});
  writer.add("two_floats", {2}, {1.0f, 2.0f});
  writer.add_integers("one_i64", Dtype::I64, {1}, {5});
  writer.add("empty", {0, 4}, std::vector<float>{});
  writer.add("scalar", {}, {7.0f}, Dtype::BF16);
  const std::vector<std::uint8_t> bytes = writer.to_bytes();
  std::uint64_t header_size = 0;
  for (int i = 0; i < 8; ++i) header_size |= std::uint64_t(bytes[i]) << (8 * i);
  CHECK(header_size % 8 == 0);
  CHECK(bytes[8 + header_size - 1] != '\0');

  const gsq::SafetensorsFile file = parse(bytes);
  REQUIRE(file.tensors().size() == 7);
  for (const gsq::TensorInfo& tensor : file.tensors()) {
    INFO(tensor.name << " starts at " << tensor.data_begin);
    CHECK(tensor.data_begin % gsq::dtype_size(tensor.dtype) == 0);
    if (tensor.byte_size() % 8 == 0) CHECK(tensor.data_begin % 8 == 0);
  }
  CHECK(file.info("empty").shape == std::vector<std::int64_t>{0, 4});
  CHECK(file.float_values("empty").empty());
  CHECK(file.info("scalar").shape.empty());
  CHECK(file.float_values("scalar") == std::vector<float>{7.0f});
  CHECK(file.float_values("three_floats") == std::vector<float>{1.0f, 2.0f, 3.0f});
  CHECK(file.integer_values("odd_bytes") == std::vector<std::int64_t>{1, 2, 3});
}

TEST_CASE("valid files in unusual but legal forms are read") {
  SECTION("names out of order, header padded with spaces, offsets not in name order") {
    const auto bytes = file_bytes(R"({"b": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},)"
                                  R"( "a": {"dtype": "U8", "shape": [1], "data_offsets": [2, 3]}}     )",
                                  3);
    const gsq::SafetensorsFile file = parse(bytes);
    CHECK(file.tensors()[0].name == "b");
    CHECK(file.integer_values("a") == std::vector<std::int64_t>{2});
    CHECK(file.integer_values("b") == std::vector<std::int64_t>{0, 1});
  }
  SECTION("no tensors at all") {
    CHECK(parse(file_bytes("{}", 0)).tensors().empty());
    CHECK(parse(file_bytes(R"({"__metadata__": {"k": "v"}})", 0)).metadata().at("k") == "v");
  }
  SECTION("zero-size tensors share an offset") {
    const auto bytes = file_bytes(R"({"x": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]},)"
                                  R"( "y": {"dtype": "F16", "shape": [3, 0], "data_offsets": [0, 0]},)"
                                  R"( "z": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})",
                                  4);
    CHECK(parse(bytes).tensors().size() == 3);
  }
  SECTION("F64 reads as float") {
    std::vector<std::uint8_t> bytes = file_bytes(R"({"d": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}})", 0);
    const double value = -0.375;
    std::uint8_t encoded[8];
    std::memcpy(encoded, &value, 8);  // the test machine is little-endian, as is the format
    bytes.insert(bytes.end(), encoded, encoded + 8);
    CHECK(parse(bytes).float_values("d") == std::vector<float>{-0.375f});
  }
}

TEST_CASE("malformed files are rejected with a message naming the file, the tensor and the problem") {
  struct Case {
    const char* problem;
    std::vector<std::uint8_t> bytes;
    std::vector<std::string> expected;  // fragments the message must contain
  };
  const std::string ok_entry = R"({"dtype": "F32", "shape": [2], "data_offsets": [0, 8]})";
  std::vector<std::uint8_t> huge_length(16, 0);
  huge_length[5] = 1;  // 2^40 bytes of header
  std::vector<std::uint8_t> just_past_end = file_bytes("{}", 0);
  just_past_end[0] = 3;
  const std::string deep = std::string(20, '[') + std::string(20, ']');
  const std::vector<Case> cases = {
      {"empty file", {}, {"file is 0 bytes long, shorter than the 8-byte header length"}},
      {"7 bytes", {2, 0, 0, 0, 0, 0, 0}, {"file is 7 bytes long"}},
      {"header length past the end", just_past_end, {"header length 3 runs past the end of the file (10 bytes)"}},
      {"header length absurd", huge_length, {"header length 1099511627776 exceeds the limit"}},
      {"invalid JSON", file_bytes(R"({"w": )", 0), {"header: not valid JSON"}},
      {"NUL padding", file_bytes(std::string("{}\0\0", 4), 0), {"not valid JSON (a NUL byte at offset 2)"}},
      {"text after a NUL", file_bytes(std::string("{}\0{\"w\": 1}", 10), 0), {"a NUL byte at offset 2"}},
      {"text after the JSON", file_bytes("{} {}", 0), {"not valid JSON"}},
      {"invalid UTF-8 in a name", file_bytes("{\"\xff\": 1}", 0), {"not valid JSON"}},
      {"header an array", file_bytes("[1, 2]", 0), {"header is not a JSON object"}},
      {"header a string", file_bytes(R"("text")", 0), {"header is not a JSON object"}},
      {"nesting too deep", file_bytes(R"({"w": )" + deep + "}", 0), {"nests deeper than 8 levels"}},
      {"entry not an object", file_bytes(R"({"w": [1, 2]})", 0), {"tensor 'w'", "header entry is not a JSON object"}},
      {"no dtype", file_bytes(R"({"w": {"shape": [2], "data_offsets": [0, 8]}})", 8), {"tensor 'w'", "has no \"dtype\""}},
      {"no shape", file_bytes(R"({"w": {"dtype": "F32", "data_offsets": [0, 8]}})", 8), {"tensor 'w'", "has no \"shape\""}},
      {"no data_offsets", file_bytes(R"({"w": {"dtype": "F32", "shape": [2]}})", 8),
       {"tensor 'w'", "has no \"data_offsets\""}},
      {"dtype not a string", file_bytes(R"({"w": {"dtype": 4, "shape": [2], "data_offsets": [0, 8]}})", 8),
       {"tensor 'w'", "\"dtype\" is not a string: 4"}},
      {"unknown dtype", file_bytes(R"({"w": {"dtype": "F31", "shape": [2], "data_offsets": [0, 8]}})", 8),
       {"tensor 'w'", "unknown dtype \"F31\""}},
      {"shape not an array", file_bytes(R"({"w": {"dtype": "F32", "shape": 2, "data_offsets": [0, 8]}})", 8),
       {"tensor 'w'", "\"shape\" is not an array: 2"}},
      {"negative dimension", file_bytes(R"({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", 8),
       {"tensor 'w'", "\"shape\" holds -2, not a dimension"}},
      {"fractional dimension", file_bytes(R"({"w": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}})", 8),
       {"tensor 'w'", "\"shape\" holds 2.5"}},
      {"integral float dimension", file_bytes(R"({"w": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}})", 8),
       {"tensor 'w'", "\"shape\" holds 2.0"}},
      {"string dimension", file_bytes(R"({"w": {"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]}})", 8),
       {"tensor 'w'", "\"shape\" holds \"2\""}},
      {"dimension beyond int64", file_bytes(R"({"w": {"dtype": "F32", "shape": [0, 18446744073709551615], "data_offsets": [0, 0]}})", 0),
       {"tensor 'w'", "\"shape\" holds 18446744073709551615"}},
      {"one offset", file_bytes(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8]}})", 8),
       {"tensor 'w'", "\"data_offsets\" is not an array of two non-negative integers: [8]"}},
      {"three offsets", file_bytes(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4, 8]}})", 8),
       {"tensor 'w'", "\"data_offsets\" is not an array of two"}},
      {"negative offset", file_bytes(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}})", 8),
       {"tensor 'w'", "\"data_offsets\" is not an array of two"}},
      {"offsets an object", file_bytes(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": {"a": 0}}})", 8),
       {"tensor 'w'", "\"data_offsets\" is not an array of two"}},
      {"begin after end", file_bytes(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})", 8),
       {"tensor 'w'", "data_offsets [8, 0] begin after they end"}},
      {"offsets past the data", file_bytes(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 7),
       {"tensor 'w'", "data_offsets [0, 8] run past the end of the data section (7 bytes)"}},
      {"huge offsets", file_bytes(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 18446744073709551615]}})", 8),
       {"tensor 'w'", "run past the end of the data section"}},
      {"size not matching the shape", file_bytes(R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8),
       {"tensor 'w'", "shape [3] of dtype F32 needs 12 bytes but data_offsets [0, 8] span 8"}},
      {"size not matching the dtype", file_bytes(R"({"w": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 8]}})", 8),
       {"tensor 'w'", "shape [2] of dtype BF16 needs 4 bytes"}},
      {"element count overflowing 64 bits",
       file_bytes(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296, 2], "data_offsets": [0, 8]}})", 8),
       {"tensor 'w'", "shape [4294967296, 4294967296, 2] of dtype F32 has more bytes than fit in 64 bits"}},
      {"byte size overflowing 64 bits",
       file_bytes(R"({"w": {"dtype": "F32", "shape": [4611686018427387904, 1], "data_offsets": [0, 0]}})", 0),
       {"tensor 'w'", "has more bytes than fit in 64 bits"}},
      {"byte size wrapping to the span", file_bytes(R"({"w": {"dtype": "F64", "shape": [2305843009213693953], "data_offsets": [0, 8]}})", 8),
       {"tensor 'w'", "has more bytes than fit in 64 bits"}},
      {"overlapping tensors",
       file_bytes(R"({"a": )" + ok_entry + R"(, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", 8),
       {"tensors 'a' and 'b' overlap in the data section (at byte 4)"}},
      {"the same range twice",
       file_bytes(R"({"a": )" + ok_entry + R"(, "b": )" + ok_entry + "}", 8), {"tensors 'a' and 'b' overlap"}},
      {"a hole between tensors",
       file_bytes(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})", 12),
       {"bytes [4, 8) of the data section belong to no tensor (a hole before tensor 'b')"}},
      {"a hole at the start", file_bytes(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", 8),
       {"bytes [0, 4) of the data section belong to no tensor"}},
      {"trailing bytes", file_bytes(R"({"w": )" + ok_entry + "}", 11), {"the last 3 bytes of the data section belong to no tensor"}},
      {"data but no tensors", file_bytes("{}", 1), {"the last 1 bytes of the data section belong to no tensor"}},
      {"duplicate tensor names", file_bytes(R"({"w": )" + ok_entry + R"(, "w": )" + ok_entry + "}", 8),
       {"duplicate JSON key \"w\""}},
      {"duplicate field", file_bytes(R"({"w": {"dtype": "F32", "dtype": "F16", "shape": [2], "data_offsets": [0, 8]}})", 8),
       {"duplicate JSON key \"dtype\""}},
      {"duplicate metadata key", file_bytes(R"({"__metadata__": {"k": "a", "k": "b"}})", 0), {"duplicate JSON key \"k\""}},
      {"duplicate metadata", file_bytes(R"({"__metadata__": {}, "__metadata__": {}})", 0), {"duplicate JSON key \"__metadata__\""}},
      {"metadata not an object", file_bytes(R"({"__metadata__": ["a"]})", 0), {"\"__metadata__\" is not a JSON object"}},
      {"metadata value a number", file_bytes(R"({"__metadata__": {"bits": 2}})", 0),
       {"\"__metadata__\" value of key \"bits\" is not a string: 2"}},
      {"metadata value null", file_bytes(R"({"__metadata__": {"k": null}})", 0), {"value of key \"k\" is not a string: null"}},
  };
  for (const Case& bad : cases) {
    INFO(bad.problem);
    const std::string message = parse_error(bad.bytes);
    CHECK_THAT(message, Contains("safetensors file 'bad.safetensors': "));
    for (const std::string& fragment : bad.expected) CHECK_THAT(message, Contains(fragment));
  }
}

TEST_CASE("reading a tensor the wrong way is a clear error") {
  gsq::SafetensorsWriter writer;
  writer.add("vector", {3}, {1.0f, 2.0f, 3.0f});
  writer.add_bytes("fp8", Dtype::F8_E4M3, {1}, {0x38});
  const gsq::SafetensorsFile file = parse(writer.to_bytes());
  CHECK_THROWS_WITH(file.matrix("vector"), Contains("tensor 'vector'") && Contains("shape [3] is not 2-D"));
  CHECK_THROWS_WITH(file.info("missing"), Contains("safetensors file 'test.safetensors': no tensor named 'missing'"));
  CHECK_THROWS_WITH(file.integer_values("vector"), Contains("F32 is not an integer type"));
  CHECK_THROWS_WITH(file.float_values("fp8"), Contains("F8_E4M3 is not a float type"));
  CHECK(file.raw_bytes("fp8").data[0] == 0x38);
}

TEST_CASE("opening files that are not safetensors files") {
  TemporaryDirectory directory;
  CHECK_THROWS_WITH(gsq::SafetensorsFile::open(directory / "absent.safetensors"),
                    Contains("cannot open safetensors file '" + (directory / "absent.safetensors") + "'") &&
                        Contains("No such file"));
  CHECK_THROWS_WITH(gsq::SafetensorsFile::open(directory.path.string()), Contains("not a regular file"));
  write_text(directory / "empty.safetensors", "");
  CHECK_THROWS_WITH(gsq::SafetensorsFile::open(directory / "empty.safetensors"),
                    Contains("empty.safetensors'") && Contains("file is 0 bytes long"));
}

TEST_CASE("the writer refuses bad tensors before touching any file") {
  gsq::SafetensorsWriter writer;
  writer.add("w", {2}, {1.0f, 2.0f});
  CHECK_THROWS_WITH(writer.add("x", {2, 2}, {1.0f, 2.0f, 3.0f}),
                    Contains("tensor 'x'") && Contains("shape [2, 2] holds 4 elements but 3 were given"));
  CHECK_THROWS_WITH(writer.add("x", {-1}, {}), Contains("shape [-1] has a negative dimension"));
  CHECK_THROWS_WITH(writer.add("w", {1}, {1.0f}), Contains("tensor 'w'") && Contains("added twice"));
  CHECK_THROWS_WITH(writer.add("__metadata__", {1}, {1.0f}), Contains("reserved for the metadata"));
  CHECK_THROWS_WITH(writer.add("x", {1}, {1.0f}, Dtype::I32), Contains("I32 is not a float type the writer produces"));
  CHECK_THROWS_WITH(writer.add("bad\xff", {1}, {1.0f}), Contains("not valid UTF-8"));
  CHECK_THROWS_WITH(writer.set_metadata("k", "\xc3"), Contains("metadata value of key 'k' is not valid UTF-8"));
  gsq::Matrix<float> inconsistent(2, 2);
  inconsistent.values.pop_back();
  CHECK_THROWS_WITH(writer.add("m", inconsistent), Contains("holds 4 elements but 3 were given"));
  // The failed adds left the writer as it was.
  const gsq::SafetensorsFile file = parse(writer.to_bytes());
  REQUIRE(file.tensors().size() == 1);
  CHECK(file.tensors()[0].name == "w");
}

TEST_CASE("writing is atomic: a failed write leaves the old file and no temporary behind") {
  TemporaryDirectory directory;
  const std::string path = directory / "model.safetensors";
  gsq::SafetensorsWriter old_writer;
  old_writer.add("old", {2}, {1.0f, 2.0f});
  old_writer.write(path);
  const std::string old_contents = read_text(path);

  SECTION("overwriting replaces the file") {
    gsq::SafetensorsWriter writer;
    writer.add("new", {1}, {3.0f});
    writer.write(path);
    CHECK(gsq::SafetensorsFile::open(path).contains("new"));
    CHECK_FALSE(gsq::SafetensorsFile::open(path).contains("old"));
  }
  SECTION("a write that fails half way (file size limit)") {
    gsq::SafetensorsWriter writer;
    writer.add("big", {1 << 16}, std::vector<float>(1 << 16, 1.0f));
    struct FileSizeLimit {  // makes write() fail with EFBIG past 4 KiB, for this scope only
      rlimit saved{};
      void (*saved_handler)(int);
      FileSizeLimit() {
        saved_handler = ::signal(SIGXFSZ, SIG_IGN);
        ::getrlimit(RLIMIT_FSIZE, &saved);
        rlimit limited = saved;
        limited.rlim_cur = 4096;
        ::setrlimit(RLIMIT_FSIZE, &limited);
      }
      ~FileSizeLimit() {
        ::setrlimit(RLIMIT_FSIZE, &saved);
        ::signal(SIGXFSZ, saved_handler);
      }
    };
    {
      FileSizeLimit limit;
      CHECK_THROWS_WITH(writer.write(path), Contains("writing '" + path + "' failed (write: File too large)") &&
                                                Contains("any existing file is unchanged"));
    }
    CHECK(read_text(path) == old_contents);
  }
  SECTION("a write whose rename fails (the target is a directory)") {
    fs::create_directory(directory / "taken");
    gsq::SafetensorsWriter writer;
    writer.add("new", {1}, {3.0f});
    CHECK_THROWS_WITH(writer.write(directory / "taken"), Contains("failed (rename"));
    CHECK(fs::is_directory(directory / "taken"));
    fs::remove(directory / "taken");
  }
  SECTION("a write into a directory that does not exist") {
    gsq::SafetensorsWriter writer;
    writer.add("new", {1}, {3.0f});
    CHECK_THROWS_WITH(writer.write(directory / "absent/model.safetensors"),
                      Contains("cannot create a temporary directory beside it"));
  }
  SECTION("a deferred tensor that fails or makes the wrong number of bytes") {
    gsq::SafetensorsWriter failing, short_one;
    failing.add_deferred("late", Dtype::F32, {2}, []() -> std::vector<std::uint8_t> { throw gsq::Error("no data"); });
    CHECK_THROWS_WITH(failing.write(path), Contains("no data"));
    short_one.add_deferred("late", Dtype::F32, {2}, [] { return std::vector<std::uint8_t>(4); });
    CHECK_THROWS_WITH(short_one.write(path), Contains("'late'") && Contains("4 bytes made for 8 declared"));
    CHECK(read_text(path) == old_contents);
  }
  SECTION("a bad tensor is refused before the write") {
    gsq::SafetensorsWriter writer;
    writer.add("good", {1}, {3.0f});
    CHECK_THROWS(writer.add("bad", {4}, {1.0f, 2.0f}));
    CHECK(read_text(path) == old_contents);
  }
  CHECK(directory.file_names() == std::vector<std::string>{"model.safetensors"});
}

namespace {

/// Writes a two-shard checkpoint: "a" and "b" in shard 1, "c" in shard 2, and its index.
void write_sharded_checkpoint(const TemporaryDirectory& directory, const std::string& weight_map) {
  gsq::SafetensorsWriter first;
  first.add("a", {2, 2}, {1.0f, 2.0f, 3.0f, 4.0f}, Dtype::BF16);
  first.add_integers("b", Dtype::I32, {2}, {7, 8});
  first.write(directory / "model-00001-of-00002.safetensors");
  gsq::SafetensorsWriter second;
  second.add("c", {3}, {5.0f, 6.0f, 7.0f});
  second.write(directory / "model-00002-of-00002.safetensors");
  write_text(directory / "model.safetensors.index.json",
             R"({"metadata": {"total_size": 24}, "weight_map": )" + weight_map + "}");
}

const std::string good_weight_map = R"({"a": "model-00001-of-00002.safetensors", )"
                                    R"("b": "model-00001-of-00002.safetensors", )"
                                    R"("c": "model-00002-of-00002.safetensors"})";

}  // namespace

TEST_CASE("a sharded checkpoint reads as one collection of tensors") {
  TemporaryDirectory directory;
  write_sharded_checkpoint(directory, good_weight_map);
  for (const std::string& path : {directory.path.string(), directory / "model.safetensors.index.json"}) {
    INFO(path);
    const gsq::Checkpoint checkpoint = gsq::Checkpoint::open(path);
    CHECK(checkpoint.tensor_names() == std::vector<std::string>{"a", "b", "c"});
    CHECK(checkpoint.shards().size() == 2);
    CHECK(checkpoint.index_metadata().at("total_size") == 24);
    CHECK(checkpoint.matrix("a").values == std::vector<float>{1.0f, 2.0f, 3.0f, 4.0f});
    CHECK(checkpoint.file_of("b").integer_values("b") == std::vector<std::int64_t>{7, 8});
    CHECK(checkpoint.float_tensor("c").values == std::vector<float>{5.0f, 6.0f, 7.0f});
    CHECK(checkpoint.info("c").dtype == Dtype::F32);
    CHECK_THAT(checkpoint.file_of("c").path(), Contains("model-00002-of-00002.safetensors"));
    CHECK_THROWS_WITH(checkpoint.info("d"), Contains("no tensor named 'd'"));
  }
}

TEST_CASE("a single-file checkpoint opens from its directory or its path") {
  TemporaryDirectory directory;
  gsq::SafetensorsWriter writer;
  writer.add("w", {1}, {1.0f});
  writer.write(directory / "model.safetensors");
  CHECK(gsq::Checkpoint::open(directory.path.string()).tensor_names() == std::vector<std::string>{"w"});
  CHECK(gsq::Checkpoint::open(directory / "model.safetensors").contains("w"));
  CHECK(gsq::Checkpoint::open(directory / "model.safetensors").index_metadata().empty());

  TemporaryDirectory empty;
  CHECK_THROWS_WITH(gsq::Checkpoint::open(empty.path.string()),
                    Contains("holds neither model.safetensors.index.json nor model.safetensors"));
  CHECK_THROWS_WITH(gsq::Checkpoint::open(empty / "nothing"), Contains("cannot open checkpoint"));
}

TEST_CASE("an inconsistent sharded checkpoint is rejected") {
  TemporaryDirectory directory;
  const std::string index = directory / "model.safetensors.index.json";
  SECTION("a shard file is missing") {
    write_sharded_checkpoint(directory, R"({"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",)"
                                        R"( "c": "model-00003-of-00002.safetensors"})");
    CHECK_THROWS_WITH(gsq::Checkpoint::open(index),
                      Contains("safetensors index '" + index + "'") &&
                          Contains("shard 'model-00003-of-00002.safetensors' does not exist"));
  }
  SECTION("a listed tensor is missing from its shard") {
    write_sharded_checkpoint(directory, R"({"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",)"
                                        R"( "c": "model-00002-of-00002.safetensors", "d": "model-00002-of-00002.safetensors"})");
    CHECK_THROWS_WITH(gsq::Checkpoint::open(index),
                      Contains("tensor 'd' is missing from its shard 'model-00002-of-00002.safetensors'"));
  }
  SECTION("a shard holds a tensor the index does not list") {
    write_sharded_checkpoint(directory, R"({"a": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"})");
    CHECK_THROWS_WITH(gsq::Checkpoint::open(index),
                      Contains("shard 'model-00001-of-00002.safetensors' holds tensor 'b', which the index does not list"));
  }
  SECTION("a tensor is listed in the wrong shard") {
    write_sharded_checkpoint(directory, R"({"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors",)"
                                        R"( "c": "model-00002-of-00002.safetensors"})");
    CHECK_THROWS_WITH(gsq::Checkpoint::open(index), Contains("holds tensor 'b', which the index maps to 'model-00002"));
  }
  SECTION("a shard name is a path") {
    write_sharded_checkpoint(directory, R"({"a": "../model-00001-of-00002.safetensors"})");
    CHECK_THROWS_WITH(gsq::Checkpoint::open(index), Contains("tensor 'a' maps to '../model-00001-of-00002.safetensors', not a plain file name"));
  }
  SECTION("a shard name is not a string") {
    write_sharded_checkpoint(directory, R"({"a": 1})");
    CHECK_THROWS_WITH(gsq::Checkpoint::open(index), Contains("tensor 'a' maps to 1, not a shard file name"));
  }
  SECTION("a tensor is listed twice") {
    write_sharded_checkpoint(directory, R"({"a": "model-00001-of-00002.safetensors", "a": "model-00002-of-00002.safetensors"})");
    CHECK_THROWS_WITH(gsq::Checkpoint::open(index), Contains("duplicate JSON key \"a\""));
  }
  SECTION("no weight map") {
    write_sharded_checkpoint(directory, "{}");
    write_text(index, R"({"metadata": {}})");
    CHECK_THROWS_WITH(gsq::Checkpoint::open(index), Contains("not a JSON object with a \"weight_map\" object"));
  }
  SECTION("not JSON") {
    write_sharded_checkpoint(directory, "{");
    CHECK_THROWS_WITH(gsq::Checkpoint::open(directory.path.string()), Contains("safetensors index") && Contains("not valid JSON"));
  }
}

TEST_CASE("the llama-bytes-3m checkpoint matches its config") {
  const std::string directory = GSQ_SOURCE_DIR "/data/llama-bytes-3m";
  const nlohmann::json config = nlohmann::json::parse(read_text(directory + "/config.json"));
  const std::int64_t hidden = config.at("hidden_size");
  const std::int64_t intermediate = config.at("intermediate_size");
  const std::int64_t vocab = config.at("vocab_size");
  const std::int64_t head_dim = config.at("head_dim");
  const std::int64_t query_width = config.at("num_attention_heads").get<std::int64_t>() * head_dim;
  const std::int64_t key_value_width = config.at("num_key_value_heads").get<std::int64_t>() * head_dim;
  const int layers = config.at("num_hidden_layers");
  REQUIRE(hidden == 256);
  REQUIRE(intermediate == 768);
  REQUIRE(layers == 4);
  REQUIRE(vocab == 256);

  std::map<std::string, std::vector<std::int64_t>> expected = {{"model.embed_tokens.weight", {vocab, hidden}},
                                                               {"model.norm.weight", {hidden}},
                                                               {"lm_head.weight", {vocab, hidden}}};
  for (int layer = 0; layer < layers; ++layer) {
    const std::string prefix = "model.layers." + std::to_string(layer) + ".";
    expected[prefix + "input_layernorm.weight"] = {hidden};
    expected[prefix + "post_attention_layernorm.weight"] = {hidden};
    expected[prefix + "self_attn.q_proj.weight"] = {query_width, hidden};
    expected[prefix + "self_attn.k_proj.weight"] = {key_value_width, hidden};
    expected[prefix + "self_attn.v_proj.weight"] = {key_value_width, hidden};
    expected[prefix + "self_attn.o_proj.weight"] = {hidden, query_width};
    expected[prefix + "mlp.gate_proj.weight"] = {intermediate, hidden};
    expected[prefix + "mlp.up_proj.weight"] = {intermediate, hidden};
    expected[prefix + "mlp.down_proj.weight"] = {hidden, intermediate};
  }
  const gsq::Checkpoint checkpoint = gsq::Checkpoint::open(directory);
  const gsq::SafetensorsFile& file = checkpoint.shards().at(0);
  REQUIRE(file.tensors().size() == expected.size());
  CHECK(file.metadata().at("format") == "pt");
  for (const auto& [name, shape] : expected) {
    INFO(name);
    REQUIRE(checkpoint.contains(name));
    CHECK(checkpoint.info(name).dtype == Dtype::BF16);
    CHECK(checkpoint.info(name).shape == shape);
  }

  const gsq::Matrix<float> gate = checkpoint.matrix("model.layers.0.mlp.gate_proj.weight");
  CHECK(gate.rows == 768);
  CHECK(gate.cols == 256);
  CHECK(gate(0, 0) == gsq::bfloat16_bits_to_float(0x3C5D));  // the file's first two bytes: 5d 3c
  const gsq::ByteView raw = file.raw_bytes("model.layers.0.mlp.gate_proj.weight");
  double sum_of_squares = 0;
  for (std::size_t i = 0; i < gate.size(); ++i) {
    const auto bits = static_cast<std::uint16_t>(raw.data[2 * i] | raw.data[2 * i + 1] << 8);
    REQUIRE(gate.values[i] == gsq::bfloat16_bits_to_float(bits));
    sum_of_squares += double(gate.values[i]) * gate.values[i];
  }
  CHECK(std::isfinite(sum_of_squares));
  CHECK(sum_of_squares > 0);
}

TEST_CASE("the tiny-llama3 reference logits hold I32 input ids and F32 logits") {
  const std::string path = GSQ_SOURCE_DIR "/tests/data/tiny-llama3/reference_logits.safetensors";
  const gsq::SafetensorsFile file = gsq::SafetensorsFile::open(path);
  CHECK(file.metadata().at("made_by") == "transformers");
  CHECK(file.info("input_ids").dtype == Dtype::I32);
  CHECK(file.info("input_ids").shape == std::vector<std::int64_t>{2, 40});
  const std::vector<std::int64_t> ids = file.integer_values("input_ids");
  REQUIRE(ids.size() == 80);
  CHECK(std::vector<std::int64_t>(ids.begin(), ids.begin() + 4) == std::vector<std::int64_t>{71, 86, 11, 93});
  for (std::int64_t id : ids) CHECK((id >= 0 && id < 97));
  const gsq::FloatTensor logits = file.float_tensor("logits");
  CHECK(logits.shape == std::vector<std::int64_t>{2, 40, 97});
  REQUIRE(logits.values.size() == 2 * 40 * 97);
  CHECK(logits.values[0] == Approx(1.1396786));
  CHECK(logits.values[3] == Approx(-0.7981726));
}
