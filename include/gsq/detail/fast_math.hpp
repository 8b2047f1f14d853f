// gsq/detail/fast_math.hpp -- exp and log for the element-wise functors.
//
// libm's scalar expf/logf dominate a GSQ step on the host (each weight needs 2K logarithms and K
// exponentials per pass) and block vectorisation of the per-element loop. For float these are
// branch-free range reductions with short polynomials (relative error below 3e-7), which the
// compiler vectorises and which give the same values on every backend. Double keeps libm, so
// finite-difference tests in double see the exact functions.
#pragma once

#include <cmath>
#include <cstdint>

#include "gsq/common/config.hpp"

namespace gsq::detail {

GSQ_HOST_DEVICE inline float float_from_bits(std::uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  return __builtin_bit_cast(float, bits);
#endif
}

GSQ_HOST_DEVICE inline std::uint32_t bits_from_float(float value) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(value);
#else
  return __builtin_bit_cast(std::uint32_t, value);
#endif
}

/// e^x: x = n ln2 + r with |r| <= ln2 / 2 (ln2 split in two for exactness), Taylor to r^7
/// (truncation below 1e-8), then 2^n put into the exponent. Inputs clamp to [-87, 88].
GSQ_HOST_DEVICE inline float exp_fast(float x) {
  x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
  // Adding and removing 1.5 * 2^23 rounds to the nearest integer in plain float arithmetic
  // (std::floor or std::rint would block vectorisation).
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693145751953125f;
  r = r - n * 1.428606765330187e-6f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * float_from_bits(static_cast<std::uint32_t>(static_cast<std::int32_t>(n) + 127) << 23);
}

/// log(x) for positive normal x: x = 2^e m with m in [sqrt(1/2), sqrt(2)), then
/// log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172, odd series to s^7 (the next term,
/// 2 s^9 / 9 < 3e-8, is below float's resolution of log m; relative error below 3e-7 overall).
GSQ_HOST_DEVICE inline float log_fast(float x) {
  const std::uint32_t bits = bits_from_float(x);
  // Subtracting the bits of sqrt(1/2) moves the mantissa split from 1 to sqrt(1/2).
  const std::uint32_t shifted = bits - 0x3F3504F3u;
  const std::int32_t exponent = static_cast<std::int32_t>(shifted) >> 23;
  const float m = float_from_bits((shifted & 0x007FFFFFu) + 0x3F3504F3u);
  const float s = (m - 1.0f) / (m + 1.0f);
  const float s2 = s * s;
  float p = 2.0f / 7.0f;
  p = p * s2 + 2.0f / 5.0f;
  p = p * s2 + 2.0f / 3.0f;
  p = p * s2 + 2.0f;
  return static_cast<float>(exponent) * 0.693147180559945309f + p * s;
}

GSQ_HOST_DEVICE inline double exp_fast(double x) { return std::exp(x); }
GSQ_HOST_DEVICE inline double log_fast(double x) { return std::log(x); }

}  // namespace gsq::detail
