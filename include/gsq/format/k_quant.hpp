// gsq/format/k_quant.hpp -- llama.cpp's K-quant formats as result types: exactly what a block
// stores, dequantized exactly as ggml does, packed into ggml's byte layout.
//
// Rows are cut into super-blocks of 256 weights; each super-block into sub-blocks that carry a
// small integer scale (and min) code, under fp16 super-block factors d (and dmin):
//   Q2_K  16 sub-blocks of 16, 4-bit scale and min codes   w = d sc q - dmin m, q in 0..3     84 bytes
//   Q3_K  16 sub-blocks of 16, 6-bit signed scale codes     w = d sc q,          q in -4..3   110 bytes
//   Q4_K   8 sub-blocks of 32, 6-bit scale and min codes   w = d sc q - dmin m, q in 0..15   144 bytes
//   Q5_K   8 sub-blocks of 32, 6-bit scale and min codes   w = d sc q - dmin m, q in 0..31   176 bytes
//   Q6_K  16 sub-blocks of 16, 8-bit signed scale codes     w = d sc q,          q in -32..31 210 bytes
// d sc and d sc q are exact in float (at most 11 + 7 + 5 significant bits: Q6_K's extremes -128
// and -32 are powers of two), so the one rounding of d sc q - dmin m is the same whether a reader
// fuses the multiply-add or not.
//
// llama.cpp's legacy blocks with a min are the degenerate case, held here so that every method in
// a K-quant format runs in them unchanged: a super-block of one block of 32, whose scale and min
// codes are always 1 under the block's fp16 d and dmin (ggml's m is -dmin):
//   Q4_1   1 block of 32, no codes (scale and min are d, dmin) w = d q - dmin, q in 0..15   20 bytes
//   Q5_1   1 block of 32, no codes                          w = d q - dmin, q in 0..31   24 bytes
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "gsq/common/dtype.hpp"
#include "gsq/common/error.hpp"
#include "gsq/common/matrix.hpp"

namespace gsq {

/// The facts of one K-quant layout.
struct KQuantFormat {
  const char* name;
  std::uint32_t ggml_type;  // ggml's type number
  int sub_block;            // weights per sub-block
  int min_code, max_code;   // the stored weight codes q
  int scale_bits;           // bits of a sub-block's scale (and min) code; 0: no code, always 1
  bool has_min;             // weight = d sc q - dmin m, or d sc q
  bool signed_scales;       // scale codes are -2^(bits-1) .. 2^(bits-1) - 1 (Q3_K, Q6_K)
  int block_bytes;          // bytes per super-block
  const char* fallback;     // what llama-quantize writes instead for rows that are not whole super-blocks
  long super_block = 256;   // weights per super-block (one ggml block)

  int sub_blocks() const { return static_cast<int>(super_block / sub_block); }
  double bits_per_weight() const { return 8.0 * block_bytes / static_cast<double>(super_block); }
  int min_scale_code() const { return scale_bits == 0 ? 1 : signed_scales ? -(1 << (scale_bits - 1)) : 0; }
  int max_scale_code() const { return scale_bits == 0 ? 1 : signed_scales ? (1 << (scale_bits - 1)) - 1 : (1 << scale_bits) - 1; }
};

/// An error unless linear `name`'s rows of `cols` weights are whole super-blocks of `format`.
inline void require_whole_super_blocks(const KQuantFormat& format, const std::string& name, long cols) {
  require(cols % format.super_block == 0,
          name + " has " + std::to_string(cols) + " input columns, not whole blocks of " + std::to_string(format.super_block) +
              ": " + format.name + " cannot hold it (llama-quantize falls back to " + format.fallback + " for such a tensor)");
}

inline const KQuantFormat& q2_k() {
  static const KQuantFormat format{"q2_k", 10, 16, 0, 3, 4, true, false, 84, "Q4_0"};
  return format;
}
inline const KQuantFormat& q3_k() {
  static const KQuantFormat format{"q3_k", 11, 16, -4, 3, 6, false, true, 110, "Q4_0"};
  return format;
}
inline const KQuantFormat& q4_k() {
  static const KQuantFormat format{"q4_k", 12, 32, 0, 15, 6, true, false, 144, "Q5_0"};
  return format;
}
inline const KQuantFormat& q5_k() {
  static const KQuantFormat format{"q5_k", 13, 32, 0, 31, 6, true, false, 176, "Q5_1"};
  return format;
}
inline const KQuantFormat& q6_k() {
  static const KQuantFormat format{"q6_k", 14, 16, -32, 31, 8, false, true, 210, "Q8_0"};
  return format;
}
/// A row that is not whole blocks of 32 is F16 in llama-quantize's file.
inline const KQuantFormat& q4_1() {
  static const KQuantFormat format{"q4_1", 3, 32, 0, 15, 0, true, false, 20, "F16", 32};
  return format;
}
inline const KQuantFormat& q5_1() {
  static const KQuantFormat format{"q5_1", 7, 32, 0, 31, 0, true, false, 24, "F16", 32};
  return format;
}

/// Every K-quant format gsq writes (and the legacy blocks with a min), fewest bits first.
inline const std::vector<const KQuantFormat*>& k_quant_formats() {
  static const std::vector<const KQuantFormat*> formats = {&q2_k(), &q3_k(), &q4_k(), &q4_1(), &q5_k(), &q5_1(), &q6_k()};
  return formats;
}

/// The format named `name` (q2_k ... q6_k, q4_1, q5_1).
inline const KQuantFormat& k_quant_format_named(const std::string& name) {
  for (const KQuantFormat* format : k_quant_formats())
    if (name == format->name) return *format;
  throw Error("unknown K-quant format '" + name + "' (gsq writes q2_k, q3_k, q4_k, q5_k, q6_k, q4_1 and q5_1)");
}

/// A matrix in a K-quant format: per weight its code, per sub-block its scale (and min) code,
/// per super-block its fp16 d (and dmin), all row-major.
struct KQuantTensor {
  const KQuantFormat* format = nullptr;
  long rows = 0, cols = 0;
  std::vector<std::int8_t> codes;         // rows x cols, format.min_code .. max_code
  std::vector<std::int8_t> scale_codes;   // rows x cols / sub_block
  std::vector<std::int8_t> min_codes;     // rows x cols / sub_block (formats with a min), else empty
  std::vector<float> d, dmin;             // rows x cols / super_block, fp16 values (dmin empty without a min)

  long super_blocks() const { return rows * cols / format->super_block; }

  /// Throws unless the sizes, the code ranges and the fp16 factors are those of the format.
  void validate() const {
    require(format != nullptr, "a K-quant tensor needs a format");
    const std::string what = std::string(format->name) + " tensor: ";
    require(rows > 0 && cols > 0 && cols % format->super_block == 0,
            what + "rows must be whole super-blocks of " + std::to_string(format->super_block) + " weights, not " +
                std::to_string(cols) + " columns");
    const std::size_t weights = static_cast<std::size_t>(rows * cols);
    const std::size_t subs = weights / static_cast<std::size_t>(format->sub_block), supers = static_cast<std::size_t>(super_blocks());
    require(codes.size() == weights && scale_codes.size() == subs && d.size() == supers &&
                min_codes.size() == (format->has_min ? subs : 0) && dmin.size() == (format->has_min ? supers : 0),
            what + "the codes, scale codes and factors do not match its shape");
    // Checked before any message is built: these loops run over every weight.
    const auto within = [](const std::vector<std::int8_t>& values, int low, int high) {
      return std::all_of(values.begin(), values.end(), [&](std::int8_t code) { return code >= low && code <= high; });
    };
    require(within(codes, format->min_code, format->max_code), what + "a weight code is outside the format's range");
    require(within(scale_codes, format->min_scale_code(), format->max_scale_code()) &&
                within(min_codes, format->min_scale_code(), format->max_scale_code()),
            what + "a sub-block code is outside " + std::to_string(format->scale_bits) + " bits" +
                (format->scale_bits == 0 ? " (it must be 1)" : ""));
    const auto fp16 = [](float value) { return std::isfinite(value) && half_bits_to_float(float_to_half_bits(value)) == value; };
    require(std::all_of(d.begin(), d.end(), fp16) && std::all_of(dmin.begin(), dmin.end(), fp16),
            what + "the super-block factors must be fp16 values");
  }

  /// The weights, as ggml computes them.
  Matrix<float> dequantize() const {
    validate();
    Matrix<float> weight(rows, cols);
    const long per_sub = format->sub_block, subs_per_super = format->sub_blocks();
    for (std::size_t e = 0; e < weight.values.size(); ++e) {
      const std::size_t sub = e / static_cast<std::size_t>(per_sub), super = sub / static_cast<std::size_t>(subs_per_super);
      const float scale = d[super] * static_cast<float>(scale_codes[sub]);
      const float offset = format->has_min ? dmin[super] * static_cast<float>(min_codes[sub]) : 0.0f;
      weight.values[e] = scale * static_cast<float>(codes[e]) - offset;
    }
    return weight;
  }
};

namespace detail {

inline void store_half(float value, std::uint8_t* out) { store_little_endian(float_to_half_bits(value), 2, out); }

/// Q2_K: scales[16] (scale code | min code << 4), qs[64], d, dmin. Within each half of 128
/// weights, byte l of its 32 holds weights l, l + 32, l + 64, l + 96 at bits 0, 2, 4, 6.
inline void encode_q2_k_block(const KQuantTensor& t, long super, std::uint8_t* block) {
  const std::size_t first = static_cast<std::size_t>(super * 256), sub0 = first / 16;
  for (int s = 0; s < 16; ++s)
    block[s] = static_cast<std::uint8_t>(t.scale_codes[sub0 + s] | t.min_codes[sub0 + s] << 4);
  for (int e = 0; e < 256; ++e)
    block[16 + 32 * (e / 128) + e % 32] |= static_cast<std::uint8_t>(t.codes[first + e] << (2 * (e % 128 / 32)));
  store_half(t.d[static_cast<std::size_t>(super)], block + 80);
  store_half(t.dmin[static_cast<std::size_t>(super)], block + 82);
}

/// Q3_K: hmask[32], qs[64], scales[12], d. A code q in -4..3 is stored as its low two bits
/// (in qs, laid out as Q2_K's) and a high bit set when q >= 0 (bit 4 h + j of hmask[l] for
/// weight 128 h + 32 j + l). Scale code s + 32 (6 bits): its low nibble in byte s % 8 (high
/// nibble for s >= 8), its top two bits in byte 8 + s % 4 at bit 2 (s / 4).
inline void encode_q3_k_block(const KQuantTensor& t, long super, std::uint8_t* block) {
  const std::size_t first = static_cast<std::size_t>(super * 256), sub0 = first / 16;
  for (int e = 0; e < 256; ++e) {
    const int code = t.codes[first + e], half = e / 128, lane = e % 128 / 32, l = e % 32;
    block[32 + 32 * half + l] |= static_cast<std::uint8_t>((code & 3) << (2 * lane));
    if (code >= 0) block[l] |= static_cast<std::uint8_t>(1 << (4 * half + lane));
  }
  for (int s = 0; s < 16; ++s) {
    const int value = t.scale_codes[sub0 + s] + 32;
    block[96 + s % 8] |= static_cast<std::uint8_t>((value & 15) << (s < 8 ? 0 : 4));
    block[96 + 8 + s % 4] |= static_cast<std::uint8_t>((value >> 4) << (2 * (s / 4)));
  }
  store_half(t.d[static_cast<std::size_t>(super)], block + 108);
}

/// The 6-bit scale and min codes of a super-block's 8 sub-blocks (from sub0) in the 12 bytes Q4_K
/// and Q5_K share: those of sub-blocks 0-3 fill the low six bits of bytes 0-3 and 4-7; those of
/// sub-blocks 4-7 put their low four bits in the nibbles of bytes 8-11 and their top two bits in
/// the top bits of bytes 0-3 (scales) and 4-7 (mins).
inline void pack_scales_and_mins(const KQuantTensor& t, std::size_t sub0, std::uint8_t* scales) {
  for (int s = 0; s < 8; ++s) {
    const int scale = t.scale_codes[sub0 + s], min = t.min_codes[sub0 + s];
    if (s < 4) {
      scales[s] |= static_cast<std::uint8_t>(scale);
      scales[s + 4] |= static_cast<std::uint8_t>(min);
    } else {
      scales[s + 4] |= static_cast<std::uint8_t>((scale & 15) | (min & 15) << 4);
      scales[s - 4] |= static_cast<std::uint8_t>((scale >> 4) << 6);
      scales[s] |= static_cast<std::uint8_t>((min >> 4) << 6);
    }
  }
}

/// Q4_K: d, dmin, scales[12], qs[128]; Q5_K: d, dmin, scales[12], qh[32], qs[128]. Sub-blocks
/// 2p and 2p + 1 share bytes 32 p .. 32 p + 31 of qs (low and high nibbles); Q5_K's fifth bit of
/// weight e is bit e / 32 of qh[e % 32].
inline void encode_q4_k_or_q5_k_block(const KQuantTensor& t, long super, std::uint8_t* block) {
  const std::size_t first = static_cast<std::size_t>(super * 256), sub0 = first / 32;
  const bool five_bits = t.format->max_code > 15;
  store_half(t.d[static_cast<std::size_t>(super)], block);
  store_half(t.dmin[static_cast<std::size_t>(super)], block + 2);
  pack_scales_and_mins(t, sub0, block + 4);
  std::uint8_t *qh = block + 16, *qs = block + (five_bits ? 48 : 16);
  for (int e = 0; e < 256; ++e) {
    const int code = t.codes[first + e];
    qs[32 * (e / 64) + e % 32] |= static_cast<std::uint8_t>((code & 15) << (4 * (e % 64 / 32)));
    if (five_bits) qh[e % 32] |= static_cast<std::uint8_t>((code >> 4) << (e / 32));
  }
}

/// Q6_K: ql[128], qh[64], scales[16] (int8), d. A code q in -32..31 is stored as q + 32; in each
/// half of 128 weights, weight 32 r + l puts its low nibble in byte l + 32 (r % 2) of the half's
/// 64 ql bytes (the high nibble for r >= 2) and its top two bits at bit 2 r of the half's qh[l].
inline void encode_q6_k_block(const KQuantTensor& t, long super, std::uint8_t* block) {
  const std::size_t first = static_cast<std::size_t>(super * 256), sub0 = first / 16;
  for (int e = 0; e < 256; ++e) {
    const int value = t.codes[first + e] + 32, half = e / 128, quarter = e % 128 / 32, l = e % 32;
    block[64 * half + l + 32 * (quarter % 2)] |= static_cast<std::uint8_t>((value & 15) << (4 * (quarter / 2)));
    block[128 + 32 * half + l] |= static_cast<std::uint8_t>((value >> 4) << (2 * quarter));
  }
  for (int s = 0; s < 16; ++s) block[192 + s] = static_cast<std::uint8_t>(t.scale_codes[sub0 + s]);
  store_half(t.d[static_cast<std::size_t>(super)], block + 208);
}

inline float load_half(const std::uint8_t* in) { return half_bits_to_float(load_little_endian<std::uint16_t>(in)); }

/// The inverses of the encoders above: super-block `super` of `t` from its block.
inline void decode_q2_k_block(const std::uint8_t* block, long super, KQuantTensor& t) {
  const std::size_t first = static_cast<std::size_t>(super * 256), sub0 = first / 16;
  for (int s = 0; s < 16; ++s) {
    t.scale_codes[sub0 + s] = static_cast<std::int8_t>(block[s] & 15);
    t.min_codes[sub0 + s] = static_cast<std::int8_t>(block[s] >> 4);
  }
  for (int e = 0; e < 256; ++e)
    t.codes[first + e] = static_cast<std::int8_t>(block[16 + 32 * (e / 128) + e % 32] >> (2 * (e % 128 / 32)) & 3);
  t.d[static_cast<std::size_t>(super)] = load_half(block + 80);
  t.dmin[static_cast<std::size_t>(super)] = load_half(block + 82);
}

inline void decode_q3_k_block(const std::uint8_t* block, long super, KQuantTensor& t) {
  const std::size_t first = static_cast<std::size_t>(super * 256), sub0 = first / 16;
  for (int e = 0; e < 256; ++e) {
    const int half = e / 128, lane = e % 128 / 32, l = e % 32;
    const int low = block[32 + 32 * half + l] >> (2 * lane) & 3, high = block[l] >> (4 * half + lane) & 1;
    t.codes[first + e] = static_cast<std::int8_t>(low - (high ? 0 : 4));
  }
  for (int s = 0; s < 16; ++s) {
    const int low = block[96 + s % 8] >> (s < 8 ? 0 : 4) & 15, high = block[96 + 8 + s % 4] >> (2 * (s / 4)) & 3;
    t.scale_codes[sub0 + s] = static_cast<std::int8_t>((low | high << 4) - 32);
  }
  t.d[static_cast<std::size_t>(super)] = load_half(block + 108);
}

inline void unpack_scales_and_mins(const std::uint8_t* scales, std::size_t sub0, KQuantTensor& t) {
  for (int s = 0; s < 8; ++s) {
    const bool low_half = s < 4;
    t.scale_codes[sub0 + s] = static_cast<std::int8_t>(low_half ? scales[s] & 63 : (scales[s + 4] & 15) | (scales[s - 4] >> 6) << 4);
    t.min_codes[sub0 + s] = static_cast<std::int8_t>(low_half ? scales[s + 4] & 63 : (scales[s + 4] >> 4) | (scales[s] >> 6) << 4);
  }
}

inline void decode_q4_k_or_q5_k_block(const std::uint8_t* block, long super, KQuantTensor& t) {
  const std::size_t first = static_cast<std::size_t>(super * 256), sub0 = first / 32;
  const bool five_bits = t.format->max_code > 15;
  t.d[static_cast<std::size_t>(super)] = load_half(block);
  t.dmin[static_cast<std::size_t>(super)] = load_half(block + 2);
  unpack_scales_and_mins(block + 4, sub0, t);
  const std::uint8_t *qh = block + 16, *qs = block + (five_bits ? 48 : 16);
  for (int e = 0; e < 256; ++e) {
    const int low = qs[32 * (e / 64) + e % 32] >> (4 * (e % 64 / 32)) & 15, high = five_bits ? qh[e % 32] >> (e / 32) & 1 : 0;
    t.codes[first + e] = static_cast<std::int8_t>(low | high << 4);
  }
}

inline void decode_q6_k_block(const std::uint8_t* block, long super, KQuantTensor& t) {
  const std::size_t first = static_cast<std::size_t>(super * 256), sub0 = first / 16;
  for (int e = 0; e < 256; ++e) {
    const int half = e / 128, quarter = e % 128 / 32, l = e % 32;
    const int low = block[64 * half + l + 32 * (quarter % 2)] >> (4 * (quarter / 2)) & 15;
    const int high = block[128 + 32 * half + l] >> (2 * quarter) & 3;
    t.codes[first + e] = static_cast<std::int8_t>((low | high << 4) - 32);
  }
  for (int s = 0; s < 16; ++s) t.scale_codes[sub0 + s] = static_cast<std::int8_t>(block[192 + s]);
  t.d[static_cast<std::size_t>(super)] = load_half(block + 208);
}

/// Q4_1: d, m, qs[16]; Q5_1: d, m, qh[4], qs[16]. Weights j and j + 16 share byte j's low and high
/// nibble; Q5_1's fifth bit of weight j is bit j of qh (little-endian). m = -dmin.
inline void encode_q4_1_or_q5_1_block(const KQuantTensor& t, long block_index, std::uint8_t* block) {
  const std::size_t first = static_cast<std::size_t>(block_index * 32), index = static_cast<std::size_t>(block_index);
  const bool five_bits = t.format->max_code > 15;
  store_half(t.d[index], block);
  store_half(-t.dmin[index], block + 2);
  std::uint8_t *qh = block + 4, *qs = block + (five_bits ? 8 : 4);
  for (int e = 0; e < 32; ++e) {
    const int code = t.codes[first + e];
    qs[e % 16] |= static_cast<std::uint8_t>((code & 15) << (4 * (e / 16)));
    if (five_bits) qh[e / 8] |= static_cast<std::uint8_t>((code >> 4) << (e % 8));
  }
}

inline void decode_q4_1_or_q5_1_block(const std::uint8_t* block, long block_index, KQuantTensor& t) {
  const std::size_t first = static_cast<std::size_t>(block_index * 32), index = static_cast<std::size_t>(block_index);
  const bool five_bits = t.format->max_code > 15;
  t.d[index] = load_half(block);
  t.dmin[index] = -load_half(block + 2);
  t.scale_codes[index] = 1, t.min_codes[index] = 1;
  const std::uint8_t *qh = block + 4, *qs = block + (five_bits ? 8 : 4);
  for (int e = 0; e < 32; ++e) {
    const int low = qs[e % 16] >> (4 * (e / 16)) & 15, high = five_bits ? qh[e / 8] >> (e % 8) & 1 : 0;
    t.codes[first + e] = static_cast<std::int8_t>(low | high << 4);
  }
}

/// A format's block encoder and its inverse.
struct KQuantBlockCodec {
  void (*encode)(const KQuantTensor& t, long super, std::uint8_t* block);
  void (*decode)(const std::uint8_t* block, long super, KQuantTensor& t);
};

inline KQuantBlockCodec block_codec(const KQuantFormat& format) {
  switch (format.ggml_type) {
    case 10: return {encode_q2_k_block, decode_q2_k_block};
    case 11: return {encode_q3_k_block, decode_q3_k_block};
    case 12:
    case 13: return {encode_q4_k_or_q5_k_block, decode_q4_k_or_q5_k_block};
    case 14: return {encode_q6_k_block, decode_q6_k_block};
    case 3:
    case 7: return {encode_q4_1_or_q5_1_block, decode_q4_1_or_q5_1_block};
    default: throw Error(std::string("no ggml block layout for the K-quant format ") + format.name);
  }
}

}  // namespace detail

/// A `rows` x `cols` tensor in `format` with nothing filled in yet.
inline KQuantTensor empty_k_quant(long rows, long cols, const KQuantFormat& format) {
  const std::size_t supers = static_cast<std::size_t>(rows * cols / format.super_block);
  const std::size_t subs = supers * static_cast<std::size_t>(format.sub_blocks());
  return {&format,
          rows,
          cols,
          std::vector<std::int8_t>(static_cast<std::size_t>(rows * cols)),
          std::vector<std::int8_t>(subs),
          std::vector<std::int8_t>(format.has_min ? subs : 0),
          std::vector<float>(supers),
          std::vector<float>(format.has_min ? supers : 0)};
}

/// The `rows` x `cols` tensor in `format` whose ggml blocks are `bytes`; `what` names them in errors.
inline KQuantTensor decode_k_quant(const std::vector<std::uint8_t>& bytes, const KQuantFormat& format, long rows, long cols,
                                   const std::string& what) {
  require(rows > 0 && cols > 0 && cols % format.super_block == 0,
          what + ": a " + std::string(format.name) + " matrix has rows of whole blocks of " + std::to_string(format.super_block) +
              ", not " + std::to_string(cols));
  KQuantTensor tensor = empty_k_quant(rows, cols, format);
  require(bytes.size() == static_cast<std::size_t>(tensor.super_blocks() * format.block_bytes),
          what + ": " + std::to_string(bytes.size()) + " bytes, but a " + std::to_string(rows) + " x " + std::to_string(cols) +
              " " + format.name + " matrix takes " + std::to_string(tensor.super_blocks() * format.block_bytes));
  const detail::KQuantBlockCodec codec = detail::block_codec(format);
  for (long super = 0; super < tensor.super_blocks(); ++super)
    codec.decode(bytes.data() + super * format.block_bytes, super, tensor);
  try {
    tensor.validate();
  } catch (const Error& error) {
    throw Error(what + ": " + error.what());
  }
  return tensor;
}

/// The tensor's bytes in ggml's layout of its format: super-blocks in row-major order.
inline std::vector<std::uint8_t> encode_k_quant(const KQuantTensor& tensor) {
  tensor.validate();
  const KQuantFormat& format = *tensor.format;
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(tensor.super_blocks() * format.block_bytes), 0);
  const detail::KQuantBlockCodec codec = detail::block_codec(format);
  for (long super = 0; super < tensor.super_blocks(); ++super)
    codec.encode(tensor, super, bytes.data() + super * format.block_bytes);
  return bytes;
}

}  // namespace gsq
