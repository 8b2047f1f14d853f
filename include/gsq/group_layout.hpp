// gsq/group_layout.hpp -- where a weight's group parameters live, as plain run-time numbers that
// element-wise functors on any backend can use.
#pragma once

#include <cstddef>

#include "gsq/config.hpp"

namespace gsq {

struct GroupLayout {
  long cols;            // input columns per row
  long group_width;     // consecutive columns sharing one group
  long groups_per_row;  // cols / group_width

  template <class Grouping>
  static GroupLayout of(long cols) {
    Grouping::validate(static_cast<int>(cols));
    return {cols, Grouping::group_width(static_cast<int>(cols)),
            Grouping::group_count(static_cast<int>(cols))};
  }

  /// Index of the group of the row-major element `element`.
  GSQ_HOST_DEVICE std::size_t group_of(std::size_t element) const {
    const std::size_t row = element / static_cast<std::size_t>(cols);
    const std::size_t col = element % static_cast<std::size_t>(cols);
    return row * static_cast<std::size_t>(groups_per_row) + col / static_cast<std::size_t>(group_width);
  }
};

}  // namespace gsq
