// Tests of gsq/format/ggml_types.hpp: every ggml type gsq reads dequantizes as gguf-py, llama.cpp's
// Python package, dequantizes it (known-answer vectors made by tests/data/make_ggml_blocks.py:
// random blocks with ordinary fp16 scales), and the blocks gsq writes (Q4_0, Q5_0, Q8_0, TQ2_0,
// Q5_K, Q6_K) read back as the weights they encode.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <gsq/format/ggml_types.hpp>
#include <gsq/format/gguf.hpp>
#include <gsq/format/k_quant.hpp>
#include <gsq/policy/grid.hpp>
#include <gsq/io/safetensors.hpp>

#include "random_k_quant.hpp"

using Catch::Matchers::Contains;

TEST_CASE("each ggml type dequantizes as gguf-py dequantizes it") {
  const gsq::SafetensorsFile vectors = gsq::SafetensorsFile::open(GSQ_SOURCE_DIR "/tests/data/ggml_blocks.safetensors");
  long checked = 0;
  for (const gsq::GgmlTypeInfo& info : gsq::ggml_types()) {
    // F32: below. Q2_0: the gguf-py on PyPI does not decode it; tests/test_gguf.cpp decodes it by
    // ggml's definition and llama.cpp scores gsq's Q2_0 files (tests/interop/check_llama_cpp.sh).
    if (info.type == gsq::GgmlType::F32 || info.type == gsq::GgmlType::Q2_0) continue;
    const std::string name = info.name;
    INFO(name);
    REQUIRE(vectors.contains(name + ".bytes"));
    const gsq::ByteView bytes = vectors.raw_bytes(name + ".bytes");
    const std::vector<float> expected = vectors.float_values(name + ".values");
    REQUIRE(gsq::ggml_bytes(info.type, expected.size()) == bytes.size);
    const std::vector<float> values = gsq::dequantize_ggml(info.type, bytes.data, expected.size(), name);
    long differing = 0;
    for (std::size_t i = 0; i < values.size(); ++i)
      if (values[i] != expected[i]) ++differing;
    CHECK(differing == 0);
    ++checked;
  }
  CHECK(checked == 14);
}

TEST_CASE("F32 reads its little-endian floats; an unknown type and a partial block are refused") {
  const std::vector<float> values = {1.5f, -2.25f, 3e-8f, 65504.0f};
  gsq::Matrix<float> row(1, 4);
  row.values = values;
  const std::vector<std::uint8_t> bytes = gsq::encode_float(row, gsq::GgmlType::F32);
  CHECK(gsq::dequantize_ggml(gsq::GgmlType::F32, bytes.data(), 4, "x") == values);
  CHECK(gsq::find_ggml_type(16) == nullptr);  // IQ2_XXS
  CHECK(gsq::find_ggml_type(14)->name == std::string("Q6_K"));
  CHECK(gsq::ggml_type_name(16) == "IQ2_XXS");
  CHECK(gsq::ggml_type_name(29) == "IQ1_M");
  CHECK(gsq::ggml_type_name(15) == "Q8_K");
  CHECK(gsq::ggml_type_name(14) == "Q6_K");
  CHECK(gsq::ggml_type_name(12345) == "type 12345");
  const std::vector<std::uint8_t> block(18, 0);
  CHECK_THROWS_WITH(gsq::dequantize_ggml(gsq::GgmlType::Q4_0, block.data(), 16, "blk.0.attn_q.weight"),
                    Contains("blk.0.attn_q.weight: 16 elements are not whole Q4_0 blocks of 32"));
}

TEST_CASE("the Q4_0 and TQ2_0 blocks gsq writes read back as the weights they encode") {
  gsq::QuantizedTensor int4{gsq::grid_spec<gsq::Int<4>>(), 2, 64, 32, {}, {}};
  for (long i = 0; i < 128; ++i) int4.codes.push_back(static_cast<std::int8_t>(i % 16 - 8));
  int4.scales = {0.5f, -0.25f, 0.125f, 2.0f};
  const std::vector<std::uint8_t> q4 = gsq::encode_q4_0(int4);
  CHECK(gsq::dequantize_ggml(gsq::GgmlType::Q4_0, q4.data(), 128, "q4") == int4.dequantize().values);

  gsq::QuantizedTensor int2{gsq::grid_spec<gsq::Int<2>>(), 1, 256, 256, {}, {}};
  for (long i = 0; i < 256; ++i) int2.codes.push_back(static_cast<std::int8_t>((i * 7) % 4 - 2));
  int2.scales = {0.75f};
  const std::vector<std::uint8_t> tq2 = gsq::encode_tq2_0(int2);
  CHECK(gsq::dequantize_ggml(gsq::GgmlType::TQ2_0, tq2.data(), 256, "tq2") == int2.dequantize().values);
}

TEST_CASE("the Q5_0 and Q8_0 blocks gsq writes read back as the weights they encode") {
  std::mt19937 random(3);
  std::uniform_real_distribution<float> scale(-3.0f, 3.0f);
  const auto tensor = [&](gsq::GridSpec grid, long group) {  // every code of the grid, fp16 scales of both signs
    gsq::QuantizedTensor result{grid, 3, 128, group, {}, {}};
    std::uniform_int_distribution<int> code(grid.min_level, grid.max_level);
    for (long i = 0; i < 3 * 128; ++i)
      result.codes.push_back(static_cast<std::int8_t>(i < grid.level_count() ? grid.min_level + i : code(random)));
    for (long g = 0; g < 3 * 128 / group; ++g)
      result.scales.push_back(gsq::half_bits_to_float(gsq::float_to_half_bits(scale(random))));
    return result;
  };
  for (long group : {32, 64, 128}) {
    INFO("group " << group);
    const gsq::QuantizedTensor int5 = tensor(gsq::grid_spec<gsq::Int<5>>(), group),
                               int8 = tensor(gsq::grid_spec<gsq::Int<8>>(), group);
    const std::vector<std::uint8_t> q5 = gsq::encode_q5_0(int5), q8 = gsq::encode_q8_0(int8);
    CHECK(q5.size() == 12 * 22);
    CHECK(q8.size() == 12 * 34);
    CHECK(gsq::dequantize_ggml(gsq::GgmlType::Q5_0, q5.data(), 384, "q5") == int5.dequantize().values);
    CHECK(gsq::dequantize_ggml(gsq::GgmlType::Q8_0, q8.data(), 384, "q8") == int8.dequantize().values);
  }
}

TEST_CASE("the K-quant, Q4_1 and Q5_1 blocks gsq writes dequantize as ggml computes them") {
  // ggml_types.hpp decodes them by its own reading of ggml, not through k_quant.hpp.
  std::mt19937 random(4);
  for (const gsq::KQuantFormat* format : gsq::k_quant_formats()) {
    INFO(format->name);
    const gsq::KQuantTensor tensor = gsq::testing::random_k_quant(*format, 2, 512, random, 0.01f);
    const std::vector<std::uint8_t> bytes = gsq::encode_k_quant(tensor);
    const auto type = static_cast<gsq::GgmlType>(format->ggml_type);
    const std::vector<float> values = gsq::dequantize_ggml(type, bytes.data(), 1024, "k");
    CHECK(values == tensor.dequantize().values);
  }
}

TEST_CASE("gsq's K-quant, Q4_1 and Q5_1 codecs read gguf-py's blocks as gguf-py does and write back the same bytes") {
  const gsq::SafetensorsFile vectors = gsq::SafetensorsFile::open(GSQ_SOURCE_DIR "/tests/data/ggml_blocks.safetensors");
  for (const gsq::KQuantFormat* format : gsq::k_quant_formats()) {
    const std::string name = gsq::ggml_type_name(format->ggml_type);
    INFO(name);
    const gsq::ByteView view = vectors.raw_bytes(name + ".bytes");
    const std::vector<std::uint8_t> bytes(view.data, view.data + view.size);
    const std::vector<float> expected = vectors.float_values(name + ".values");
    const long cols = 256;  // 8 blocks: one row of 256 for Q4_1 and Q5_1, 8 rows for the K-quants
    const gsq::KQuantTensor tensor = gsq::decode_k_quant(bytes, *format, static_cast<long>(expected.size()) / cols, cols, name);
    CHECK(tensor.dequantize().values == expected);
    CHECK(gsq::encode_k_quant(tensor) == bytes);
  }
}
