// gsq/policy/grid.hpp -- grid policies: the integer levels a weight can take, and the candidates the
// relaxation chooses among.
//
// A grid policy is an empty struct exposing, at compile time:
//   min_level, max_level   the symmetric integer grid {min_level .. max_level}
//   code_bits              bits one code occupies in the format (bits-per-parameter accounting)
//   candidate_count        K: logits per weight in the Gumbel-softmax relaxation
//   candidate(base, k)     the integer level of candidate k for a weight whose starting code is
//                          `base`; full grids ignore `base`, shift grids centre on it
//   admissible(base, k)    whether that candidate lies on the grid (shift grids mask the rest)
//   rtn_divisor            RTN's scale is max|w| / rtn_divisor (docs/design.md section 5)
#pragma once

#include <type_traits>

#include "gsq/common/config.hpp"
#include "gsq/format/grid_spec.hpp"

namespace gsq {

namespace detail {

/// Every level of {min_level .. max_level} is a candidate: K = max_level - min_level + 1.
template <int MinLevel, int MaxLevel>
struct FullGrid {
  static constexpr int min_level = MinLevel;
  static constexpr int max_level = MaxLevel;
  static constexpr int candidate_count = MaxLevel - MinLevel + 1;
  GSQ_HOST_DEVICE static constexpr int candidate(int /*base*/, int k) { return MinLevel + k; }
  GSQ_HOST_DEVICE static constexpr bool admissible(int /*base*/, int /*k*/) { return true; }
};

/// The reference's grid for 3-4 bits: each weight chooses among its starting code plus
/// {-Radius .. Radius}, so K = 2 Radius + 1 stays small however many levels the grid has.
template <int MinLevel, int MaxLevel, int Radius>
struct ShiftGrid {
  static constexpr int min_level = MinLevel;
  static constexpr int max_level = MaxLevel;
  static constexpr int candidate_count = 2 * Radius + 1;
  GSQ_HOST_DEVICE static constexpr int candidate(int base, int k) { return base + k - Radius; }
  GSQ_HOST_DEVICE static constexpr bool admissible(int base, int k) {
    // `&`, not `&&`: no branch, so per-element loops stay vectorisable.
    return (candidate(base, k) >= MinLevel) & (candidate(base, k) <= MaxLevel);
  }
};

}  // namespace detail

/// Ternary grid {-1, 0, 1}: log2(3) = 1.58 bits of information, stored in 2 bits.
struct Ternary : detail::FullGrid<-1, 1> {
  static constexpr int code_bits = 2;
  static constexpr double rtn_divisor = 1.0;  // scale = max|w|: codes round at max|w| / 2
  static constexpr const char* name = "ternary";
};

namespace detail {
// The grids' names by bits, 2 to 8, as results and files record them.
inline constexpr const char* int_grid_names[] = {"int2", "int3", "int4", "int5", "int6", "int7", "int8"};
inline constexpr const char* unsigned_grid_names[] = {"uint2", "uint3", "uint4", "uint5", "uint6", "uint7", "uint8"};

template <int Bits>
using IntGridBase = typename std::conditional<(Bits <= 2),
    FullGrid<-(1 << (Bits - 1)), (1 << (Bits - 1)) - 1>,
    ShiftGrid<-(1 << (Bits - 1)), (1 << (Bits - 1)) - 1, 2>>::type;
}  // namespace detail

/// The b-bit symmetric integer grid {-2^(b-1) .. 2^(b-1) - 1}. Two bits relax over all four
/// levels; three and more use the reference's shift grid (K = 5 around the starting code).
template <int Bits>
struct Int : detail::IntGridBase<Bits> {
  static_assert(Bits >= 2 && Bits <= 8, "Int<Bits>: Bits must be in [2, 8]");
  static constexpr int code_bits = Bits;
  // RTN's zero point sits at 2^(b-1) over maxq = 2^b - 1 steps: scale = 2 max|w| / maxq.
  static constexpr double rtn_divisor = ((1 << Bits) - 1) / 2.0;
  static constexpr const char* name = detail::int_grid_names[Bits - 2];
};

/// The unsigned b-bit grid {0 .. 2^b - 1} of llama.cpp's K-quants with a min (Q2_K, Q4_K,
/// Q5_K), where weight = scale * code - min. Two bits relax over all four levels, more over the
/// shift grid. Not an RTN grid: its formats are fitted with a min (gsq/init/k_quant_fit.hpp).
template <int Bits>
struct Unsigned : std::conditional<(Bits <= 2), detail::FullGrid<0, (1 << Bits) - 1>,
                                   detail::ShiftGrid<0, (1 << Bits) - 1, 2>>::type {
  static_assert(Bits >= 2 && Bits <= 8, "Unsigned<Bits>: Bits must be in [2, 8]");
  static constexpr int code_bits = Bits;
  static constexpr double rtn_divisor = 0;  // marks a grid RTN cannot fit symmetrically
  static constexpr const char* name = detail::unsigned_grid_names[Bits - 2];
};

}  // namespace gsq

namespace gsq {

/// The run-time description (gsq/format/grid_spec.hpp) of grid policy `Grid`.
template <class Grid>
constexpr GridSpec grid_spec() {
  return {Grid::name, Grid::min_level, Grid::max_level, Grid::code_bits, Grid::rtn_divisor};
}

}  // namespace gsq
