// llama.cpp's K-quant blocks (gsq/format/k_quant.hpp): bytes written where ggml's layout puts
// them, checked on hand-made blocks; dequantization as ggml computes it; the formats' names and
// llama-quantize's fallbacks. (tests/test_gguf.cpp
// has gguf-py, llama.cpp's reader, dequantize whole K-quant tensors to exactly gsq's weights.)
// Decoding inverts the encoding exactly.
#include <catch2/catch.hpp>

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <gsq/format/k_quant.hpp>

#include "random_k_quant.hpp"

namespace {

/// One super-block with every weight code `code`, scale codes `scales`, min codes `mins`.
gsq::KQuantTensor block(const gsq::KQuantFormat& format, int code, std::vector<std::int8_t> scales,
                        std::vector<std::int8_t> mins, float d, float dmin) {
  return {&format, 1, 256, std::vector<std::int8_t>(256, static_cast<std::int8_t>(code)), std::move(scales),
          std::move(mins), {d}, format.has_min ? std::vector<float>{dmin} : std::vector<float>{}};
}

std::vector<std::int8_t> iota(int count, int first, int step = 1) {
  std::vector<std::int8_t> values;
  for (int i = 0; i < count; ++i) values.push_back(static_cast<std::int8_t>(first + step * i));
  return values;
}

}  // namespace

TEST_CASE("K-quant formats: sizes and bits per weight are ggml's", "[k_quant]") {
  CHECK(gsq::q2_k().bits_per_weight() == 2.625);
  CHECK(gsq::q3_k().bits_per_weight() == 3.4375);
  CHECK(gsq::q4_k().bits_per_weight() == 4.5);
  CHECK(gsq::q5_k().bits_per_weight() == 5.5);
  CHECK(gsq::q6_k().bits_per_weight() == 6.5625);
  CHECK(gsq::q4_1().bits_per_weight() == 5.0);
  CHECK(gsq::q5_1().bits_per_weight() == 6.0);
  CHECK(gsq::q4_1().min_scale_code() == 1);
  CHECK(gsq::q5_1().max_scale_code() == 1);
  CHECK(gsq::q3_k().min_scale_code() == -32);
  CHECK(gsq::q4_k().max_scale_code() == 63);
  CHECK(gsq::q5_k().max_scale_code() == 63);
  CHECK(gsq::q6_k().min_scale_code() == -128);
  CHECK(gsq::q6_k().max_scale_code() == 127);
}

TEST_CASE("K-quant formats by name, and llama-quantize's fallback for rows that are not whole super-blocks", "[k_quant]") {
  for (const gsq::KQuantFormat* format : gsq::k_quant_formats()) CHECK(&gsq::k_quant_format_named(format->name) == format);
  CHECK(gsq::k_quant_formats().size() == 7);
  CHECK_THROWS_WITH(gsq::k_quant_format_named("q8_k"), Catch::Contains("'q8_k'") && Catch::Contains("q4_1 and q5_1"));
  // llama.cpp's tensor_type_fallback (src/llama-quant.cpp).
  CHECK(gsq::q2_k().fallback == std::string("Q4_0"));
  CHECK(gsq::q3_k().fallback == std::string("Q4_0"));
  CHECK(gsq::q4_k().fallback == std::string("Q5_0"));
  CHECK(gsq::q5_k().fallback == std::string("Q5_1"));
  CHECK(gsq::q6_k().fallback == std::string("Q8_0"));
  CHECK(gsq::q5_1().fallback == std::string("F16"));
  CHECK_THROWS_WITH(gsq::require_whole_super_blocks(gsq::q6_k(), "blk.0.ffn_down", 320), Catch::Contains("falls back to Q8_0"));
}

TEST_CASE("Q2_K: scale | min << 4, four codes per byte by quarter of each half, then d, dmin", "[k_quant]") {
  gsq::KQuantTensor tensor = block(gsq::q2_k(), 0, iota(16, 0), iota(16, 15, -1), 0.5f, 0.25f);
  tensor.codes[0] = 1, tensor.codes[32] = 2, tensor.codes[64] = 3, tensor.codes[96] = 1;  // byte 16: 1 | 2<<2 | 3<<4 | 1<<6
  tensor.codes[128 + 31] = 3;                                                           // byte 16 + 32 + 31, bits 0-1
  const std::vector<std::uint8_t> bytes = gsq::encode_k_quant(tensor);
  REQUIRE(bytes.size() == 84);
  CHECK(bytes[0] == 0xF0);  // sub-block 0: scale 0, min 15
  CHECK(bytes[15] == 0x0F);
  CHECK(bytes[16] == (1 | 2 << 2 | 3 << 4 | 1 << 6));
  CHECK(bytes[16 + 63] == 3);
  CHECK(bytes[80] == 0x00);  // d = 0.5 = fp16 0x3800, little-endian
  CHECK(bytes[81] == 0x38);
  CHECK(bytes[83] == 0x34);  // dmin = 0.25 = 0x3400
  const gsq::Matrix<float> weight = tensor.dequantize();
  CHECK(weight.values[32] == 0.5f * 2 * 2 - 0.25f * 13);  // sub-block 2: scale 2, min 13
}

TEST_CASE("Q3_K: high bit set for codes >= 0, low bits as Q2_K, 6-bit scales split 4 + 2", "[k_quant]") {
  gsq::KQuantTensor tensor = block(gsq::q3_k(), -4, iota(16, -32, 4), {}, 1.0f, 0.0f);
  tensor.codes[0] = 3;     // hmask[0] bit 0, qs[0] bits 0-1 = 3
  tensor.codes[160] = -1;  // half 1, quarter 1, l = 0: qs[32] bits 2-3 = 3, no high bit
  tensor.codes[161] = 0;   // hmask[1] bit 5
  const std::vector<std::uint8_t> bytes = gsq::encode_k_quant(tensor);
  REQUIRE(bytes.size() == 110);
  CHECK(bytes[0] == 1);
  CHECK(bytes[1] == 1 << 5);
  CHECK(bytes[32] == 3);
  CHECK(bytes[32 + 32] == 3 << 2);
  // Scale s stores s * 4 (= code + 32): s = 1 -> 4: byte 96 + 1 low nibble 4; s = 9 -> 36 = 0b100100:
  // low nibble 4 in byte 96 + 1's high nibble, top bits 0b10 in byte 104 + 1 at bits 4-5.
  CHECK(bytes[97] == (4 | 4 << 4));
  CHECK(bytes[105] == (0 | 1 << 2 | 2 << 4 | 3 << 6));  // scales 1, 5, 9, 13 -> 4, 20, 36, 52: top bits 0, 1, 2, 3
  CHECK(bytes[108] == 0x00);
  CHECK(bytes[109] == 0x3C);  // d = 1.0
  const gsq::Matrix<float> weight = tensor.dequantize();
  CHECK(weight.values[0] == -32.0f * 3);
  CHECK(weight.values[160] == (-32.0f + 4 * 10) * -1);
}

TEST_CASE("Q4_K: d, dmin, 6-bit scales and mins of sub-blocks 4-7 split 4 + 2, then nibbles", "[k_quant]") {
  const std::vector<std::int8_t> scales = {1, 2, 3, 4, 63, 17, 32, 5}, mins = {10, 11, 12, 13, 0, 48, 1, 62};
  gsq::KQuantTensor tensor = block(gsq::q4_k(), 0, scales, mins, 2.0f, 1.0f);
  tensor.codes[0] = 15, tensor.codes[32] = 9, tensor.codes[255] = 7;
  const std::vector<std::uint8_t> bytes = gsq::encode_k_quant(tensor);
  REQUIRE(bytes.size() == 144);
  CHECK(bytes[1] == 0x40);  // d = 2.0 = 0x4000
  CHECK(bytes[3] == 0x3C);  // dmin = 1.0
  CHECK(bytes[4 + 0] == (1 | (63 >> 4) << 6));   // scale 0, top bits of scale 4
  CHECK(bytes[4 + 4] == (10 | (0 >> 4) << 6));   // min 0, top bits of min 4
  CHECK(bytes[4 + 5] == (11 | (48 >> 4) << 6));  // min 1, top bits of min 5
  CHECK(bytes[4 + 8] == ((63 & 15) | (0 & 15) << 4));
  CHECK(bytes[4 + 11] == ((5 & 15) | (62 & 15) << 4));
  CHECK(bytes[16] == (15 | 9 << 4));  // sub-blocks 0 and 1 share byte 0 of qs
  CHECK(bytes[143] == 7 << 4);        // weight 255: sub-block 7, high nibble of the last byte
  const gsq::Matrix<float> weight = tensor.dequantize();
  CHECK(weight.values[0] == 2.0f * 1 * 15 - 10.0f);
  CHECK(weight.values[255] == 2.0f * 5 * 7 - 62.0f);
}

TEST_CASE("Q5_K: Q4_K's d, dmin and scales, then a fifth bit per weight in qh, then Q4_K's nibbles", "[k_quant]") {
  const std::vector<std::int8_t> scales = {1, 2, 3, 4, 63, 17, 32, 5}, mins = {10, 11, 12, 13, 0, 48, 1, 62};
  gsq::KQuantTensor tensor = block(gsq::q5_k(), 0, scales, mins, 2.0f, 1.0f);
  tensor.codes[0] = 31;    // qs[0] low nibble 15, qh[0] bit 0
  tensor.codes[32] = 16;   // qs[0] high nibble 0, qh[0] bit 1
  tensor.codes[65] = 9;    // sub-block 2: qs[32 + 1] low nibble 9, no fifth bit
  tensor.codes[255] = 17;  // sub-block 7: qs[127] high nibble 1, qh[31] bit 7
  const std::vector<std::uint8_t> bytes = gsq::encode_k_quant(tensor);
  REQUIRE(bytes.size() == 176);
  CHECK(bytes[1] == 0x40);  // d = 2.0
  CHECK(bytes[3] == 0x3C);  // dmin = 1.0
  CHECK(bytes[4 + 0] == (1 | (63 >> 4) << 6));  // the scales and mins packed as Q4_K's
  CHECK(bytes[4 + 5] == (11 | (48 >> 4) << 6));
  CHECK(bytes[4 + 11] == ((5 & 15) | (62 & 15) << 4));
  CHECK(bytes[16 + 0] == (1 | 1 << 1));
  CHECK(bytes[16 + 1] == 0);
  CHECK(bytes[16 + 31] == 1 << 7);
  CHECK(bytes[48 + 0] == 15);
  CHECK(bytes[48 + 33] == 9);
  CHECK(bytes[48 + 127] == 1 << 4);
  const gsq::Matrix<float> weight = tensor.dequantize();
  CHECK(weight.values[0] == 2.0f * 1 * 31 - 10.0f);
  CHECK(weight.values[32] == 2.0f * 2 * 16 - 11.0f);
  CHECK(weight.values[255] == 2.0f * 5 * 17 - 62.0f);
}

TEST_CASE("Q6_K: low nibbles in ql, top two bits in qh, both by quarter of each half; int8 scales; then d", "[k_quant]") {
  gsq::KQuantTensor tensor = block(gsq::q6_k(), -32, iota(16, -128, 17), {}, 0.5f, 0.0f);  // scales -128 .. 127
  tensor.codes[0] = 31;          // stored 63: ql[0] low nibble 15, qh[0] bits 0-1 = 3
  tensor.codes[96 + 5] = 0;      // half 0, quarter 3, l = 5; stored 32: ql[32 + 5] high nibble 0, qh[5] bits 6-7 = 2
  tensor.codes[128 + 64 + 1] = -31;  // half 1, quarter 2, l = 1; stored 1: ql[64 + 1] high nibble 1, qh[32 + 1] bits 4-5 = 0
  tensor.codes[128 + 32 + 2] = 5;    // half 1, quarter 1, l = 2; stored 37 = 0b100101:
                                     // ql[64 + 32 + 2] low nibble 5, qh[32 + 2] bits 2-3 = 2
  const std::vector<std::uint8_t> bytes = gsq::encode_k_quant(tensor);
  REQUIRE(bytes.size() == 210);
  CHECK(bytes[0] == 15);
  CHECK(bytes[37] == 0);
  CHECK(bytes[64 + 1] == 1 << 4);
  CHECK(bytes[64 + 34] == 5);
  CHECK(bytes[128 + 0] == 3);
  CHECK(bytes[128 + 5] == 2 << 6);
  CHECK(bytes[128 + 33] == 0);
  CHECK(bytes[128 + 34] == 2 << 2);
  CHECK(bytes[192] == 0x80);       // scale -128
  CHECK(bytes[192 + 15] == 0x7F);  // scale 127
  CHECK(bytes[192 + 1] == static_cast<std::uint8_t>(-111));
  CHECK(bytes[208] == 0x00);
  CHECK(bytes[209] == 0x38);  // d = 0.5
  const gsq::Matrix<float> weight = tensor.dequantize();
  CHECK(weight.values[0] == 0.5f * -128 * 31);
  CHECK(weight.values[96 + 5] == 0.0f);
  CHECK(weight.values[128 + 64 + 1] == 0.5f * (-128 + 17 * 12) * -31);  // sub-block 12
  CHECK(weight.values[255] == 0.5f * 127 * -32);
}

TEST_CASE("Q4_1 and Q5_1: d, m = -dmin, (Q5_1: 32 fifth bits,) weights j and j + 16 in byte j's nibbles", "[k_quant]") {
  for (const gsq::KQuantFormat* format : {&gsq::q4_1(), &gsq::q5_1()}) {
    INFO(format->name);
    const bool five_bits = format == &gsq::q5_1();
    gsq::KQuantTensor tensor{format, 1, 32, iota(32, 0), {1}, {1}, {0.5f}, {0.25f}};
    if (!five_bits)
      for (std::int8_t& code : tensor.codes) code = static_cast<std::int8_t>(code % 16);
    const std::vector<std::uint8_t> bytes = gsq::encode_k_quant(tensor);
    REQUIRE(bytes.size() == (five_bits ? 24u : 20u));
    CHECK(bytes[1] == 0x38);  // d = 0.5
    CHECK(bytes[3] == 0xB4);  // m = -0.25 = fp16 0xB400
    const std::size_t qs = five_bits ? 8 : 4;
    CHECK(bytes[qs + 1] == 0x11);  // weights 1 and 17
    CHECK(bytes[qs + 15] == 0xFF);
    if (five_bits) {
      CHECK((bytes[4] | bytes[5]) == 0);  // weights 0-15 below 16
      CHECK((bytes[6] & bytes[7]) == 0xFF);
    }
    CHECK(tensor.dequantize().values[17] == 0.5f * (five_bits ? 17 : 1) - 0.25f);
    tensor.scale_codes[0] = 0;  // the block has no scale code: it is d itself
    CHECK_THROWS_WITH(tensor.validate(), Catch::Contains("must be 1"));
  }
}

TEST_CASE("K-quant tensors refuse what their format cannot store", "[k_quant]") {
  gsq::KQuantTensor tensor = block(gsq::q4_k(), 0, iota(8, 0), iota(8, 0), 1.0f, 1.0f);
  tensor.codes[3] = 16;
  CHECK_THROWS_WITH(tensor.validate(), Catch::Contains("weight code is outside"));
  tensor = block(gsq::q2_k(), 0, iota(16, 0), iota(16, 0), 1.0f, 1.0f);
  tensor.min_codes[2] = 16;
  CHECK_THROWS_WITH(tensor.validate(), Catch::Contains("outside 4 bits"));
  tensor = block(gsq::q3_k(), 0, iota(16, 0), {}, 0.1f, 0.0f);
  CHECK_THROWS_WITH(tensor.validate(), Catch::Contains("must be fp16 values"));
  tensor = block(gsq::q3_k(), 0, iota(16, 0), {}, 1.0f, 0.0f);
  tensor.cols = 128;
  CHECK_THROWS_WITH(tensor.validate(), Catch::Contains("whole super-blocks of 256"));
  tensor = block(gsq::q5_k(), 31, iota(8, 0), iota(8, 0), 1.0f, 1.0f);
  tensor.codes[5] = 32;
  CHECK_THROWS_WITH(tensor.validate(), Catch::Contains("weight code is outside"));
  tensor.codes[5] = 0;
  tensor.min_codes[7] = 64;
  CHECK_THROWS_WITH(tensor.validate(), Catch::Contains("outside 6 bits"));
  tensor = block(gsq::q6_k(), -32, iota(16, -128, 17), {}, 1.0f, 0.0f);
  tensor.codes[5] = 32;
  CHECK_THROWS_WITH(tensor.validate(), Catch::Contains("weight code is outside"));
}

TEST_CASE("K-quant blocks decode to exactly the tensor they encode; a wrong size or a broken factor is refused", "[k_quant]") {
  std::mt19937 random(11);
  const std::map<std::string, std::size_t> d_offsets = {{"q2_k", 80}, {"q3_k", 108}, {"q4_k", 0}, {"q5_k", 0},
                                                        {"q6_k", 208}, {"q4_1", 0}, {"q5_1", 0}};
  for (const gsq::KQuantFormat* format : gsq::k_quant_formats()) {
    INFO(format->name);
    const gsq::KQuantTensor tensor = gsq::testing::random_k_quant(*format, 3, 512, random, 2.0f);
    const std::vector<std::uint8_t> bytes = gsq::encode_k_quant(tensor);
    const gsq::KQuantTensor decoded = gsq::decode_k_quant(bytes, *format, 3, 512, "blocks");
    CHECK(decoded.codes == tensor.codes);
    CHECK(decoded.scale_codes == tensor.scale_codes);
    CHECK(decoded.min_codes == tensor.min_codes);
    CHECK(decoded.d == tensor.d);
    CHECK(decoded.dmin == tensor.dmin);

    CHECK_THROWS_WITH(gsq::decode_k_quant(std::vector<std::uint8_t>(bytes.begin(), bytes.end() - 1), *format, 3, 512, "blocks"),
                      Catch::Contains("blocks: " + std::to_string(bytes.size() - 1) + " bytes"));
    CHECK_THROWS_WITH(gsq::decode_k_quant(bytes, *format, 3, 496, "blocks"), Catch::Contains("not 496"));
    std::vector<std::uint8_t> broken = bytes;  // d of the first super-block: an fp16 infinity
    const std::size_t d_offset = d_offsets.at(format->name);
    broken[d_offset] = 0x00, broken[d_offset + 1] = 0x7c;
    CHECK_THROWS_WITH(gsq::decode_k_quant(broken, *format, 3, 512, "blocks"), Catch::Contains("fp16"));
  }
}
