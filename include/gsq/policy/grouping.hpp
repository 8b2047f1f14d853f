// gsq/policy/grouping.hpp -- grouping policies: which scale a weight's column shares.
//
// A grouping policy maps an input column to its group within a row:
//   group_count(cols)      groups per row
//   group_width(cols)      consecutive columns per group
//   validate(cols)         throws gsq::Error when the layer cannot be grouped this way
// The scale of weight (r, c) is scales[r * group_count(cols) + c / group_width(cols)].
#pragma once

#include <string>

#include "gsq/common/error.hpp"

namespace gsq {

/// Groups of G consecutive input columns (G = 128 is the paper's and the format's default).
template <int G>
struct GroupSize {
  static_assert(G > 0, "GroupSize<G>: G must be positive");
  static constexpr int size = G;
  static int group_width(int /*cols*/) { return G; }
  static int group_count(int cols) { return cols / G; }
  static void validate(int cols) {
    require(cols > 0 && cols % G == 0, "group size " + std::to_string(G) +
                                           " does not divide the layer's " + std::to_string(cols) +
                                           " input columns");
  }
};

/// One group per output row ("per-channel" scales).
struct PerChannel {
  static constexpr int size = 0;  // 0 marks "the whole row" in reports and files
  static int group_width(int cols) { return cols; }
  static int group_count(int /*cols*/) { return 1; }
  static void validate(int cols) { require(cols > 0, "a layer needs at least one input column"); }
};

}  // namespace gsq
