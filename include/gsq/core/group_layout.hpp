// gsq/core/group_layout.hpp -- where a weight's group parameters live, as plain run-time numbers that
// element-wise functors on any backend can use.
#pragma once

#include <cstddef>

#include "gsq/common/config.hpp"

namespace gsq {

struct GroupLayout {
  long cols;              // input columns per row
  long group_width;       // consecutive columns sharing one group; divides cols
  long groups_per_row;    // cols / group_width
  double inverse_width;   // 1 / group_width

  template <class Grouping>
  static GroupLayout of(long cols) {
    Grouping::validate(static_cast<int>(cols));
    const long width = Grouping::group_width(static_cast<int>(cols));
    return {cols, width, Grouping::group_count(static_cast<int>(cols)), 1.0 / static_cast<double>(width)};
  }

  /// Index of the group of the row-major element `element`. Groups tile each row, so it is
  /// element / group_width; computed through the reciprocal in double (then corrected by one
  /// either way, exact for any element below 2^52) because integer division blocks SIMD.
  GSQ_HOST_DEVICE std::size_t group_of(std::size_t element) const {
    const long long e = static_cast<long long>(element);
    long long group = static_cast<long long>(static_cast<double>(e) * inverse_width);
    group += (group + 1) * group_width <= e ? 1 : 0;
    group -= group * group_width > e ? 1 : 0;
    return static_cast<std::size_t>(group);
  }
};

}  // namespace gsq
