// gsq/export/bit_stream.hpp -- b-bit values packed densely into 32-bit words, as compressed-tensors'
// pack-quantized and GPTQ store codes: value i of a stream occupies bits [i b, (i + 1) b) of
// the stream read little-endian, so a value may spill from one word into the next (at 3 bits,
// GPTQ's 10|1|10|1|10 layout). The tail bits of the last word are zero.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "gsq/common/error.hpp"

namespace gsq {

/// Words a stream of `count` values of `bits` bits occupies.
inline std::size_t bit_stream_words(std::size_t count, int bits) {
  return (count * static_cast<std::size_t>(bits) + 31) / 32;
}

/// Packs `count` values, value i read as value_of(i) (below 2^bits), into
/// bit_stream_words(count, bits) words written at out[w * stride] for word w.
template <class ValueOf>
void pack_bit_stream(std::size_t count, int bits, const ValueOf& value_of, std::int32_t* out, std::size_t stride = 1) {
  require(bits >= 1 && bits <= 8, "bit streams hold 1- to 8-bit values");
  std::uint64_t pending = 0;  // bits not yet written, the oldest lowest
  int pending_bits = 0;
  std::size_t word = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const std::uint32_t value = value_of(i);
    require(value < (1u << bits), "a value does not fit the bit stream's width");
    pending |= static_cast<std::uint64_t>(value) << pending_bits;
    pending_bits += bits;
    if (pending_bits >= 32) {
      out[word++ * stride] = static_cast<std::int32_t>(static_cast<std::uint32_t>(pending));
      pending >>= 32;
      pending_bits -= 32;
    }
  }
  if (pending_bits > 0) out[word * stride] = static_cast<std::int32_t>(static_cast<std::uint32_t>(pending));
}

}  // namespace gsq
