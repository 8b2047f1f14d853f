// gsq/rtn.hpp -- round-to-nearest with max-abs scales (DESIGN section 5), the simplest
// initializer and the baseline every method is compared with.
#pragma once

#include <cmath>
#include <string>

#include "gsq/grid.hpp"
#include "gsq/matrix.hpp"
#include "gsq/quantized_tensor.hpp"

namespace gsq {

/// The max-abs scale of a group whose largest magnitude is `max_abs`; an all-zero group gets
/// scale 1 so that nothing divides by zero.
inline float max_abs_scale(double max_abs, const GridSpec& grid) {
  return max_abs > 0 ? static_cast<float>(max_abs / grid.rtn_divisor) : 1.0f;
}

/// The grid level nearest to weight / scale (ties to even, as torch.round).
inline int nearest_level(double weight, double scale, const GridSpec& grid) {
  const double level = std::nearbyint(weight / scale);
  return static_cast<int>(std::fmin(std::fmax(level, grid.min_level), grid.max_level));
}

/// RTN of `weight` on `grid`, one max-abs scale per group of `group_width` columns.
inline QuantizedTensor round_to_nearest(const Matrix<float>& weight, const GridSpec& grid, long group_width) {
  require_finite_nonempty(weight, "the weight matrix");
  require(group_width > 0 && weight.cols % group_width == 0,
          "group size " + std::to_string(group_width) + " does not divide the layer's " +
              std::to_string(weight.cols) + " input columns");
  QuantizedTensor result{grid, weight.rows, weight.cols, group_width, {}, {}};
  result.codes.resize(weight.size());
  result.scales.resize(static_cast<std::size_t>(weight.rows * result.groups_per_row()));
  for (long r = 0; r < weight.rows; ++r)
    for (long g = 0; g < result.groups_per_row(); ++g) {
      double max_abs = 0;
      for (long c = g * group_width; c < (g + 1) * group_width; ++c) max_abs = std::fmax(max_abs, std::fabs(weight(r, c)));
      const float scale = max_abs_scale(max_abs, grid);
      result.scales[static_cast<std::size_t>(r * result.groups_per_row() + g)] = scale;
      for (long c = g * group_width; c < (g + 1) * group_width; ++c)
        result.codes[static_cast<std::size_t>(r * weight.cols + c)] =
            static_cast<std::int8_t>(nearest_level(weight(r, c), scale, grid));
    }
  return result;
}

}  // namespace gsq
