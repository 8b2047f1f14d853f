// gsq/common/dtype.hpp -- the element types of stored tensors (safetensors' names: "F32", "BF16",
// "U8", ...), the float <-> half / bfloat16 conversions (IEEE round to nearest, ties to even), and
// little-endian integers as files store them.
// Vocabulary shared by the file formats, the K-quant blocks and the linear formats, none of which
// needs the safetensors reader to convert a half.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>

#include "gsq/common/error.hpp"

namespace gsq {

// ---------------------------------------------------------------------------------------------
// Float conversions (IEEE round to nearest, ties to even).

namespace detail {
/// The unsigned integer stored little-endian (files store every element so) at `bytes`.
template <class UInt>
UInt load_little_endian(const std::uint8_t* bytes) {
  UInt value = 0;
  for (std::size_t i = 0; i < sizeof(UInt); ++i) value |= static_cast<UInt>(static_cast<UInt>(bytes[i]) << (8 * i));
  return value;
}
/// Stores the low `size` bytes of `value`, least significant first.
inline void store_little_endian(std::uint64_t value, std::size_t size, std::uint8_t* bytes) {
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::uint8_t>(value >> (8 * i));
}

inline std::uint32_t float_to_bits(float value) {
  std::uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}
inline float bits_to_float(std::uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}
}  // namespace detail

/// The IEEE binary16 ("half", F16) bits nearest to `value`. Values from 65520 up overflow to Inf,
/// as round-to-nearest-even demands; NaN stays NaN (quiet, sign and top payload bits kept).
inline std::uint16_t float_to_half_bits(float value) {
  const std::uint32_t bits = detail::float_to_bits(value);
  const auto sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  const std::uint32_t magnitude = bits & 0x7FFFFFFFu;
  if (magnitude > 0x7F800000u) return static_cast<std::uint16_t>(sign | 0x7E00u | ((magnitude >> 13) & 0x3FFu));
  if (magnitude >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);  // >= 65520: Inf
  if (magnitude >= 0x38800000u) {  // >= 2^-14: a normal half
    // Re-bias the exponent (127 -> 15) and round away 13 mantissa bits; a carry out of the
    // mantissa correctly bumps the exponent.
    const std::uint32_t rebiased = magnitude - 0x38000000u;
    const std::uint32_t rounded = (rebiased + 0x0FFFu + ((rebiased >> 13) & 1u)) >> 13;
    return static_cast<std::uint16_t>(sign | rounded);
  }
  if (magnitude <= 0x33000000u) return sign;  // <= 2^-25: half of the smallest subnormal ties to 0
  // Subnormal half: count units of 2^-24. exponent is in [102, 112], so the shift is in [14, 24].
  const std::uint32_t exponent = magnitude >> 23;
  const std::uint32_t mantissa = (magnitude & 0x7FFFFFu) | 0x800000u;
  const std::uint32_t shift = 126u - exponent;
  std::uint32_t units = mantissa >> shift;
  const std::uint32_t remainder = mantissa & ((1u << shift) - 1u);
  const std::uint32_t halfway = 1u << (shift - 1u);
  if (remainder > halfway || (remainder == halfway && (units & 1u))) ++units;  // may reach 2^-14
  return static_cast<std::uint16_t>(sign | units);
}

/// The float value of IEEE binary16 bits (exact: every half is a float).
inline float half_bits_to_float(std::uint16_t half) {
  const std::uint32_t sign = static_cast<std::uint32_t>(half & 0x8000u) << 16;
  const std::uint32_t exponent = (half >> 10) & 0x1Fu;
  const std::uint32_t mantissa = half & 0x3FFu;
  if (exponent == 0x1Fu) return detail::bits_to_float(sign | 0x7F800000u | (mantissa << 13));  // Inf, NaN
  if (exponent == 0) {
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);  // zero or subnormal
    return sign ? -magnitude : magnitude;
  }
  return detail::bits_to_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

/// The bfloat16 (BF16) bits nearest to `value`: the top 16 bits of the float, rounded to nearest
/// even (large finite values overflow to Inf); NaN stays NaN (quiet).
inline std::uint16_t float_to_bfloat16_bits(float value) {
  const std::uint32_t bits = detail::float_to_bits(value);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((bits >> 16) | 0x0040u);
  return static_cast<std::uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

/// The float value of bfloat16 bits (exact).
inline float bfloat16_bits_to_float(std::uint16_t bfloat16) {
  return detail::bits_to_float(static_cast<std::uint32_t>(bfloat16) << 16);
}

// ---------------------------------------------------------------------------------------------
// Element types.

/// A safetensors element type; names as in the format ("F32", "BF16", "U8", ...).
enum class Dtype { Bool, U8, I8, U16, I16, F16, BF16, U32, I32, F32, U64, I64, F64, F8_E4M3, F8_E5M2 };

namespace detail {
struct DtypeDescription {
  Dtype dtype;
  const char* name;
  std::size_t size;  // bytes per element
};
inline const std::array<DtypeDescription, 15>& dtype_descriptions() {
  static const std::array<DtypeDescription, 15> table = {{
      {Dtype::Bool, "BOOL", 1}, {Dtype::U8, "U8", 1},           {Dtype::I8, "I8", 1},
      {Dtype::U16, "U16", 2},   {Dtype::I16, "I16", 2},         {Dtype::F16, "F16", 2},
      {Dtype::BF16, "BF16", 2}, {Dtype::U32, "U32", 4},         {Dtype::I32, "I32", 4},
      {Dtype::F32, "F32", 4},   {Dtype::U64, "U64", 8},         {Dtype::I64, "I64", 8},
      {Dtype::F64, "F64", 8},   {Dtype::F8_E4M3, "F8_E4M3", 1}, {Dtype::F8_E5M2, "F8_E5M2", 1},
  }};
  return table;
}
inline const DtypeDescription& describe(Dtype dtype) {
  for (const DtypeDescription& description : dtype_descriptions())
    if (description.dtype == dtype) return description;
  throw Error("unknown gsq::Dtype value " + std::to_string(static_cast<int>(dtype)));
}
}  // namespace detail

inline const char* dtype_name(Dtype dtype) { return detail::describe(dtype).name; }
inline std::size_t dtype_size(Dtype dtype) { return detail::describe(dtype).size; }

/// The dtype called `name` in a safetensors header, or nothing if gsq does not know it.
inline std::optional<Dtype> dtype_from_name(const std::string& name) {
  for (const detail::DtypeDescription& description : detail::dtype_descriptions())
    if (name == description.name) return description.dtype;
  return std::nullopt;
}

/// The dtypes gsq converts to float on read and from float on write (F64 on read only).
inline bool is_float_dtype(Dtype dtype) {
  return dtype == Dtype::F16 || dtype == Dtype::BF16 || dtype == Dtype::F32 || dtype == Dtype::F64;
}
/// The dtypes gsq reads and writes as integer values.
inline bool is_integer_dtype(Dtype dtype) {
  return !is_float_dtype(dtype) && dtype != Dtype::F8_E4M3 && dtype != Dtype::F8_E5M2;
}

}  // namespace gsq
