// gsq/format/grid_spec.hpp -- a grid described at run time (its levels, code bits, RTN divisor):
// what a quantized result records about its grid. The compile-time grid policies
// (gsq/policy/grid.hpp) describe themselves as one with grid_spec<Grid>().
#pragma once

namespace gsq {

/// A grid described at run time: what a quantized result records about its grid, so results,
/// files and reports need no template parameter.
struct GridSpec {
  const char* name;
  int min_level;
  int max_level;
  int code_bits;
  double rtn_divisor;

  int level_count() const { return max_level - min_level + 1; }
  bool operator==(const GridSpec& other) const {
    return min_level == other.min_level && max_level == other.max_level &&
           code_bits == other.code_bits && rtn_divisor == other.rtn_divisor;
  }
};

}  // namespace gsq
