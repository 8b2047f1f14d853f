// gsq/core/philox.hpp -- Philox4x32-10, a counter-based random number generator (Salmon et al.,
// "Parallel random numbers: as easy as 1, 2, 3", SC 2011), and the Gumbel noise drawn from it.
//
// A counter-based generator is a pure function (counter, key) -> 128 random bits, so the noise of
// (seed, step, element, level) can be recomputed anywhere: backward replays forward's noise
// without storing it, results do not depend on how elements are spread over threads, and the
// host and CUDA builds draw identical numbers.
#pragma once

#include <cmath>
#include <cstdint>
#include <utility>

#include "gsq/common/config.hpp"
#include "gsq/detail/fast_math.hpp"

namespace gsq {

struct Philox4x32 {
  struct Block {
    std::uint32_t word[4];
  };

  /// Ten rounds of the Philox-4x32 bijection of `counter` under `key`.
  GSQ_HOST_DEVICE static Block generate(Block counter, std::uint32_t key0, std::uint32_t key1) {
    constexpr std::uint32_t multiplier0 = 0xD2511F53u, multiplier1 = 0xCD9E8D57u;
    constexpr std::uint32_t weyl0 = 0x9E3779B9u, weyl1 = 0xBB67AE85u;  // key schedule increments
    GSQ_UNROLL
    for (int round = 0; round < 10; ++round) {
      const std::uint64_t product0 = static_cast<std::uint64_t>(multiplier0) * counter.word[0];
      const std::uint64_t product1 = static_cast<std::uint64_t>(multiplier1) * counter.word[2];
      const auto high0 = static_cast<std::uint32_t>(product0 >> 32);
      const auto high1 = static_cast<std::uint32_t>(product1 >> 32);
      counter = {{high1 ^ counter.word[1] ^ key0, static_cast<std::uint32_t>(product1),
                  high0 ^ counter.word[3] ^ key1, static_cast<std::uint32_t>(product0)}};
      key0 += weyl0;
      key1 += weyl1;
    }
    return counter;
  }
};

/// Uniform in the open interval (0, 1) from the top 23 bits: (i + 1/2) / 2^23 needs 24
/// significant bits, so it is exact in float and never rounds to 0 or 1.
template <class Real>
GSQ_HOST_DEVICE inline Real uniform_open(std::uint32_t bits) {
  return (static_cast<Real>(bits >> 9) + Real(0.5)) * Real(1.0 / 8388608.0);
}

/// Standard Gumbel noise -log(-log(u)). u stays inside [2^-24, 1 - 2^-24], so neither
/// logarithm sees 0 and the noise is bounded by about [-2.8, 16.6].
template <class Real>
GSQ_HOST_DEVICE inline Real gumbel_from_bits(std::uint32_t bits) {
  return -detail::log_fast(-detail::log_fast(uniform_open<Real>(bits)));
}

namespace detail {
/// The uniform bits of candidate `slot` (0..4) of a block: slots 0-3 are the block's words, whose
/// top 23 bits uniform_open reads; slot 4 gathers 23 of the 36 low bits the others leave unused
/// (9 from words 0 and 1, 5 from word 2), so one block serves five candidates.
GSQ_HOST_DEVICE inline std::uint32_t candidate_bits(const Philox4x32::Block& block, int slot) {
  return slot < 4 ? block.word[slot]
                  : ((block.word[0] & 0x1FFu) << 23) | ((block.word[1] & 0x1FFu) << 14) | ((block.word[2] & 0x1Fu) << 9);
}

template <class Real, int K, int... Candidate>
GSQ_HOST_DEVICE inline void gumbel_from_blocks(const Philox4x32::Block* blocks, Real (&noise)[K],
                                               std::integer_sequence<int, Candidate...>) {
  // A fold, not a loop with a bounds test: no control flow for the vectoriser to trip on.
  ((noise[Candidate] = gumbel_from_bits<Real>(candidate_bits(blocks[Candidate / 5], Candidate % 5))), ...);
}
}  // namespace detail

/// The Gumbel noise of one weight at one optimizer step, for all its K candidates: a pure
/// function of (seed, step, element, candidate). Counter = (element, step, block of five
/// candidates), key = seed. One Philox block covers the five candidates of a shift grid.
template <class Real, int K>
GSQ_HOST_DEVICE inline void gumbel_noise(std::uint64_t seed, std::uint32_t step,
                                         std::uint64_t element, Real (&noise)[K]) {
  constexpr int block_count = (K + 4) / 5;
  Philox4x32::Block blocks[block_count];
  GSQ_UNROLL
  for (int block = 0; block < block_count; ++block)
    blocks[block] = Philox4x32::generate(
        {{static_cast<std::uint32_t>(element), static_cast<std::uint32_t>(element >> 32), step,
          static_cast<std::uint32_t>(block)}},
        static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
  detail::gumbel_from_blocks(blocks, noise, std::make_integer_sequence<int, K>{});
}

/// Standard normal noise for (seed, element, k), k < K: Box-Muller on a Philox stream kept
/// apart from the Gumbel stream (the top bit of the fourth counter word is set).
template <class Real, int K>
GSQ_HOST_DEVICE inline void normal_noise(std::uint64_t seed, std::uint64_t element, Real (&noise)[K]) {
  for (int first = 0; first < K; first += 4) {
    const Philox4x32::Block bits = Philox4x32::generate(
        {{static_cast<std::uint32_t>(element), static_cast<std::uint32_t>(element >> 32), 0u,
          0x80000000u | static_cast<std::uint32_t>(first / 4)}},
        static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
    for (int pair = 0; pair < 2; ++pair) {
      const Real radius = std::sqrt(Real(-2) * std::log(uniform_open<Real>(bits.word[2 * pair])));
      const Real angle = Real(6.283185307179586) * uniform_open<Real>(bits.word[2 * pair + 1]);
      const int k = first + 2 * pair;
      if (k < K) noise[k] = radius * std::cos(angle);
      if (k + 1 < K) noise[k + 1] = radius * std::sin(angle);
    }
  }
}

}  // namespace gsq
