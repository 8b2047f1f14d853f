// gsq/backend/candidate_tiles.hpp -- where the K logits of each weight live, and everything laid out
// like them (probabilities, logit gradients, the logits' optimizer state).
//
// Weights go in tiles of 64; a tile's 64 K logits are candidate-major: the 64 candidate-0 logits,
// then the 64 candidate-1 ones, and so on. A pass over the weights then reads each such array as
// one stream (K streams per array, candidate-major over the whole layer, were too many for the
// hardware prefetchers once a pass touched three of them), SIMD lanes and GPU warps still read
// contiguous memory, and a tile is 64 x K x 4 bytes, whole cache lines.
//
// A functor over such arrays takes (element, shift) with shift = CandidateTiles<K>::shift(element)
// and reads candidate k of `element` at shift + k * width + element. Backends run it through
// for_each_tile, which computes the shift once per tile: constant across a tile's SIMD lanes, the
// addresses stay affine in the element and the lanes load contiguous vectors.
#pragma once

#include <cstddef>

#include "gsq/common/config.hpp"

namespace gsq {

template <int K>
struct CandidateTiles {
  static constexpr std::size_t width = 64;  // weights per tile

  /// What element's tile adds to shift + k * width + element (the tiles before it hold K - 1
  /// more values per weight than weights).
  GSQ_HOST_DEVICE static std::size_t shift(std::size_t element) { return element / width * (width * (K - 1)); }

  /// Index of candidate k of `element`, given the shift of its tile.
  GSQ_HOST_DEVICE static std::size_t at(std::size_t shift, int k, std::size_t element) {
    return shift + static_cast<std::size_t>(k) * width + element;
  }

  /// Index of candidate k of `element`.
  GSQ_HOST_DEVICE static std::size_t index(int k, std::size_t element) { return at(shift(element), k, element); }

  /// Values an array of `elements` weights holds: whole tiles (the last one padded).
  static std::size_t size(std::size_t elements) { return (elements + width - 1) / width * width * K; }
};

}  // namespace gsq
