// gsq/policy/k_quant_layout.hpp -- the policies GSQ composes for each llama.cpp K-quant format
// (gsq/format/k_quant.hpp): the format's code grid, its sub-block as the group, and how a
// sub-block's parameters turn a code into a weight.
//
//   Q2K  Unsigned<2> (0..3)    GroupSize<16>  CodedScaleAndMin<0, 15>  w = d sc q - dmin m
//   Q3K  Int<3> (-4..3)        GroupSize<16>  CodedScale<-32, 31>      w = d sc q
//   Q4K  Unsigned<4> (0..15)   GroupSize<32>  CodedScaleAndMin<0, 63>  w = d sc q - dmin m
//   Q5K  Unsigned<5> (0..31)   GroupSize<32>  CodedScaleAndMin<0, 63>  w = d sc q - dmin m
//   Q6K  Int<6> (-32..31)      GroupSize<16>  CodedScale<-128, 127>    w = d sc q
//   Q41  Unsigned<4> (0..15)   GroupSize<32>  CodedScaleAndMin<1, 1>   w = d q - dmin (legacy Q4_1)
//   Q51  Unsigned<5> (0..31)   GroupSize<32>  CodedScaleAndMin<1, 1>   w = d q - dmin (legacy Q5_1)
//
// Grids of three bits and more relax over the shift grid (K = 5 candidates around the start's
// code, gsq/policy/grid.hpp), so the wider grids of Q5_K and Q6_K cost no more per step.
//
// The relaxation learns the sub-block scales (and mins) as continuous values that the forward
// pass rounds to their stored codes sc (and m) (gsq/core/train_k_quant.hpp).
#pragma once

#include "gsq/format/k_quant.hpp"
#include "gsq/policy/grid.hpp"
#include "gsq/policy/grouping.hpp"
#include "gsq/policy/parametrisation.hpp"

namespace gsq {

template <class Grid_, int SubBlock, class Parametrisation_, const KQuantFormat& (*Format)()>
struct KQuantLayout {
  using Grid = Grid_;
  using Grouping = GroupSize<SubBlock>;
  using Parametrisation = Parametrisation_;
  static const KQuantFormat& format() { return Format(); }
};

struct Q2K : KQuantLayout<Unsigned<2>, 16, CodedScaleAndMin<0, 15>, q2_k> {
  static constexpr const char* name = "q2_k";
};
struct Q3K : KQuantLayout<Int<3>, 16, CodedScale<-32, 31>, q3_k> {
  static constexpr const char* name = "q3_k";
};
struct Q4K : KQuantLayout<Unsigned<4>, 32, CodedScaleAndMin<0, 63>, q4_k> {
  static constexpr const char* name = "q4_k";
};
struct Q5K : KQuantLayout<Unsigned<5>, 32, CodedScaleAndMin<0, 63>, q5_k> {
  static constexpr const char* name = "q5_k";
};
struct Q6K : KQuantLayout<Int<6>, 16, CodedScale<-128, 127>, q6_k> {
  static constexpr const char* name = "q6_k";
};
struct Q41 : KQuantLayout<Unsigned<4>, 32, CodedScaleAndMin<1, 1>, q4_1> {
  static constexpr const char* name = "q4_1";
};
struct Q51 : KQuantLayout<Unsigned<5>, 32, CodedScaleAndMin<1, 1>, q5_1> {
  static constexpr const char* name = "q5_1";
};

}  // namespace gsq
