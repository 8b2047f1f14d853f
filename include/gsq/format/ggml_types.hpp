// gsq/format/ggml_types.hpp -- ggml's tensor types (the element encodings of GGUF files), their
// block sizes, and their dequantization to float exactly as ggml computes it, for the types
// llama.cpp writes that gsq reads: F32, F16, BF16, the legacy blocks of 32 (Q4_0, Q4_1, Q5_0,
// Q5_1, Q8_0), the K-quants (Q2_K to Q6_K, super-blocks of 256), the ternary TQ1_0, TQ2_0, and the
// 2-bit Q2_0 (blocks of 64). Known-answer vectors from gguf-py's dequantization check every one
// but Q2_0, which the gguf-py on PyPI does not decode; llama.cpp scores gsq's Q2_0 files instead
// (tests/test_ggml_types.cpp, tests/interop/check_llama_cpp.sh).
//
// Each block of the legacy and K types holds its weights along a row; a row is whole blocks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "gsq/common/dtype.hpp"
#include "gsq/common/error.hpp"
#include "gsq/format/k_quant.hpp"

namespace gsq {

/// ggml's tensor types by ggml's numbers: those gsq writes and reads.
enum class GgmlType : std::uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, BF16 = 30, TQ1_0 = 34, TQ2_0 = 35, Q2_0 = 42
};

/// A type's name, the weights a block holds and the bytes it takes.
struct GgmlTypeInfo {
  GgmlType type;
  const char* name;
  long block;
  long bytes;
};

inline const std::vector<GgmlTypeInfo>& ggml_types() {
  static const std::vector<GgmlTypeInfo> types = {
      {GgmlType::F32, "F32", 1, 4},       {GgmlType::F16, "F16", 1, 2},       {GgmlType::BF16, "BF16", 1, 2},
      {GgmlType::Q4_0, "Q4_0", 32, 18},   {GgmlType::Q4_1, "Q4_1", 32, 20},   {GgmlType::Q5_0, "Q5_0", 32, 22},
      {GgmlType::Q5_1, "Q5_1", 32, 24},   {GgmlType::Q8_0, "Q8_0", 32, 34},   {GgmlType::Q2_K, "Q2_K", 256, 84},
      {GgmlType::Q3_K, "Q3_K", 256, 110}, {GgmlType::Q4_K, "Q4_K", 256, 144}, {GgmlType::Q5_K, "Q5_K", 256, 176},
      {GgmlType::Q6_K, "Q6_K", 256, 210}, {GgmlType::TQ1_0, "TQ1_0", 256, 54}, {GgmlType::TQ2_0, "TQ2_0", 256, 66},
      {GgmlType::Q2_0, "Q2_0", 64, 18}};
  return types;
}

/// The type numbered `number`, or nullptr for one gsq does not read (an IQ type, say).
inline const GgmlTypeInfo* find_ggml_type(std::uint32_t number) {
  for (const GgmlTypeInfo& info : ggml_types())
    if (static_cast<std::uint32_t>(info.type) == number) return &info;
  return nullptr;
}

/// ggml's name of type number `number`, read by gsq or not ("IQ2_XXS"), for messages.
inline std::string ggml_type_name(std::uint32_t number) {
  if (const GgmlTypeInfo* info = find_ggml_type(number)) return info->name;
  static const char* const unread[] = {"Q8_1", nullptr, nullptr, nullptr, nullptr, nullptr, "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS",
                                       "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M"};
  const std::uint32_t first = 9;  // Q8_1; then 15 Q8_K, 16 IQ2_XXS ... 29 IQ1_M
  if (number >= first && number - first < sizeof unread / sizeof unread[0] && unread[number - first]) return unread[number - first];
  return "type " + std::to_string(number);
}

inline const GgmlTypeInfo& ggml_type_info(GgmlType type) {
  const GgmlTypeInfo* info = find_ggml_type(static_cast<std::uint32_t>(type));
  require(info != nullptr, "unknown ggml type " + std::to_string(static_cast<std::uint32_t>(type)));
  return *info;
}

/// The type ggml calls `name` ("Q4_K"); `what` says whose type it is in the error.
inline GgmlType ggml_type_named(const std::string& name, const std::string& what) {
  for (const GgmlTypeInfo& info : ggml_types())
    if (name == info.name) return info.type;
  throw Error(what + ": unknown ggml type \"" + name + "\"");
}

/// Bytes of `count` elements (a multiple of the type's block) of `type`.
inline std::size_t ggml_bytes(GgmlType type, std::size_t count) {
  const GgmlTypeInfo& info = ggml_type_info(type);
  return count / static_cast<std::size_t>(info.block) * static_cast<std::size_t>(info.bytes);
}

namespace detail {

/// Legacy blocks of 32: weights j and j + 16 share byte j's low and high nibble; Q5 types add a
/// fifth bit from 32 bits qh (bit j for weight j). Q4_0/Q5_0 are (q - 8 or 16) d, Q4_1/Q5_1 q d + m.
inline void dequantize_legacy(GgmlType type, const std::uint8_t* block, float* out) {
  const float d = load_half(block);
  if (type == GgmlType::Q8_0) {
    for (int j = 0; j < 32; ++j) out[j] = static_cast<float>(static_cast<std::int8_t>(block[2 + j])) * d;
    return;
  }
  const bool with_min = type == GgmlType::Q4_1 || type == GgmlType::Q5_1, five_bits = type == GgmlType::Q5_0 || type == GgmlType::Q5_1;
  const float m = with_min ? load_half(block + 2) : 0.0f;
  const std::uint8_t* high = block + (with_min ? 4 : 2);
  const std::uint32_t qh = five_bits ? load_little_endian<std::uint32_t>(high) : 0;
  const std::uint8_t* qs = high + (five_bits ? 4 : 0);
  const int offset = with_min ? 0 : five_bits ? 16 : 8;
  for (int j = 0; j < 16; ++j) {
    const int low = (qs[j] & 15) | static_cast<int>((qh >> j) & 1) << 4;
    const int upper = (qs[j] >> 4) | static_cast<int>((qh >> (j + 16)) & 1) << 4;
    out[j] = with_min ? static_cast<float>(low) * d + m : static_cast<float>(low - offset) * d;
    out[j + 16] = with_min ? static_cast<float>(upper) * d + m : static_cast<float>(upper - offset) * d;
  }
}

/// The 6-bit scale and min of sub-block `j` (of 8) from the 12 packed bytes Q4_K and Q5_K share.
inline void scale_and_min(const std::uint8_t* packed, int j, int& scale, int& min) {
  if (j < 4) {
    scale = packed[j] & 63;
    min = packed[j + 4] & 63;
  } else {
    scale = (packed[j + 4] & 15) | (packed[j - 4] >> 6) << 4;
    min = (packed[j + 4] >> 4) | (packed[j] >> 6) << 4;
  }
}

/// Q5_K: d, dmin, 12 bytes of scales and mins, 32 bytes qh, 128 bytes of nibbles; in 4 chunks
/// of 64 weights, the chunk's first 32 take the low nibbles of 32 bytes and the next 32 their
/// high nibbles, each with a fifth bit from qh (bits 2c and 2c + 1 for chunk c).
inline void dequantize_q5_k(const std::uint8_t* block, float* out) {
  const float d = load_half(block), dmin = load_half(block + 2);
  const std::uint8_t *packed = block + 4, *qh = block + 16, *qs = block + 48;
  for (int chunk = 0; chunk < 4; ++chunk)
    for (int half = 0; half < 2; ++half) {
      int scale = 0, min = 0;
      scale_and_min(packed, 2 * chunk + half, scale, min);
      const float factor = d * static_cast<float>(scale), offset = dmin * static_cast<float>(min);
      for (int l = 0; l < 32; ++l) {
        const int q = (qs[32 * chunk + l] >> (4 * half) & 15) | ((qh[l] >> (2 * chunk + half)) & 1) << 4;
        out[64 * chunk + 32 * half + l] = factor * static_cast<float>(q) - offset;
      }
    }
}

/// Q6_K: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 int8 scales, d; two halves of
/// 128 weights, each four rows of 32 (quarter r: low nibble of byte l or l + 32, high pair r of qh[l]).
inline void dequantize_q6_k(const std::uint8_t* block, float* out) {
  const float d = load_half(block + 208);
  for (int half = 0; half < 2; ++half) {
    const std::uint8_t *ql = block + 64 * half, *qh = block + 128 + 32 * half;
    const auto* scales = reinterpret_cast<const std::int8_t*>(block + 192 + 8 * half);
    for (int l = 0; l < 32; ++l)
      for (int quarter = 0; quarter < 4; ++quarter) {
        const int low = ql[l + 32 * (quarter % 2)] >> (4 * (quarter / 2)) & 15;
        const int q = (low | ((qh[l] >> (2 * quarter)) & 3) << 4) - 32;
        out[128 * half + 32 * quarter + l] = d * static_cast<float>(scales[l / 16 + 2 * quarter]) * static_cast<float>(q);
      }
  }
}

/// TQ1_0: 48 + 4 bytes each holding 5 (or 4) base-3 digits as a fraction of 256, then d; digit n of
/// byte b is ((b * 3^n mod 256) * 3) >> 8, weight (digit - 1) d. The 48 bytes go in runs of 32
/// then 16, each digit position over the whole run before the next; the last 4 bytes 4 digits each.
inline void dequantize_tq1_0(const std::uint8_t* block, float* out) {
  const float d = load_half(block + 52);
  const auto digit = [](std::uint8_t byte, int n) {
    static const std::uint8_t powers[5] = {1, 3, 9, 27, 81};
    const auto shifted = static_cast<std::uint8_t>(byte * powers[n]);
    return (static_cast<int>(shifted) * 3 >> 8) - 1;
  };
  float* y = out;
  for (const auto& [first, length] : {std::pair<int, int>{0, 32}, std::pair<int, int>{32, 16}})
    for (int n = 0; n < 5; ++n)
      for (int m = 0; m < length; ++m) *y++ = static_cast<float>(digit(block[first + m], n)) * d;
  for (int n = 0; n < 4; ++n)
    for (int j = 0; j < 4; ++j) *y++ = static_cast<float>(digit(block[48 + j], n)) * d;
}

/// TQ2_0: 64 bytes of 2-bit values then d; byte 32 c + m holds weights 128 c + 32 l + m at bits 2l,
/// weight (value - 1) d.
inline void dequantize_tq2_0(const std::uint8_t* block, float* out) {
  const float d = load_half(block + 64);
  for (int e = 0; e < 256; ++e) out[e] = static_cast<float>((block[32 * (e / 128) + e % 32] >> (2 * (e % 128 / 32)) & 3) - 1) * d;
}

/// Q2_0: d, then 16 bytes; byte j / 4 holds weight j at bits 2 (j % 4), weight (value - 1) d
/// (ggml's dequantize_row_q2_0).
inline void dequantize_q2_0(const std::uint8_t* block, float* out) {
  const float d = load_half(block);
  for (int j = 0; j < 64; ++j) out[j] = static_cast<float>((block[2 + j / 4] >> (2 * (j % 4)) & 3) - 1) * d;
}

}  // namespace detail

/// `count` elements of `type` from its bytes `data` (ggml_bytes(type, count) of them), as ggml
/// dequantizes them; `what` names the tensor in errors.
inline std::vector<float> dequantize_ggml(GgmlType type, const std::uint8_t* data, std::size_t count, const std::string& what) {
  const GgmlTypeInfo& info = ggml_type_info(type);
  require(count % static_cast<std::size_t>(info.block) == 0,
          what + ": " + std::to_string(count) + " elements are not whole " + info.name + " blocks of " + std::to_string(info.block));
  std::vector<float> values(count);
  const std::size_t blocks = count / static_cast<std::size_t>(info.block);
  switch (type) {
    case GgmlType::F32:
      for (std::size_t i = 0; i < count; ++i) values[i] = detail::bits_to_float(detail::load_little_endian<std::uint32_t>(data + 4 * i));
      break;
    case GgmlType::F16:
      for (std::size_t i = 0; i < count; ++i) values[i] = detail::load_half(data + 2 * i);
      break;
    case GgmlType::BF16:
      for (std::size_t i = 0; i < count; ++i) values[i] = bfloat16_bits_to_float(detail::load_little_endian<std::uint16_t>(data + 2 * i));
      break;
    case GgmlType::Q2_K:
    case GgmlType::Q3_K:
    case GgmlType::Q4_K: {  // gsq's own K-quant tensors decode these, as a row of all the super-blocks
      const KQuantFormat& format = type == GgmlType::Q2_K ? q2_k() : type == GgmlType::Q3_K ? q3_k() : q4_k();
      values = decode_k_quant(std::vector<std::uint8_t>(data, data + blocks * static_cast<std::size_t>(info.bytes)), format, 1,
                              static_cast<long>(count), what)
                   .dequantize()
                   .values;
      break;
    }
    default:
      for (std::size_t b = 0; b < blocks; ++b) {
        const std::uint8_t* block = data + b * static_cast<std::size_t>(info.bytes);
        float* out = values.data() + b * static_cast<std::size_t>(info.block);
        if (type == GgmlType::Q5_K) detail::dequantize_q5_k(block, out);
        else if (type == GgmlType::Q6_K) detail::dequantize_q6_k(block, out);
        else if (type == GgmlType::TQ1_0) detail::dequantize_tq1_0(block, out);
        else if (type == GgmlType::TQ2_0) detail::dequantize_tq2_0(block, out);
        else if (type == GgmlType::Q2_0) detail::dequantize_q2_0(block, out);
        else detail::dequantize_legacy(type, block, out);
      }
  }
  return values;
}

}  // namespace gsq
