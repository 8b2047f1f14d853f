// gsq/init/rtn.hpp -- round-to-nearest (docs/design.md section 5), the simplest initializer and the baseline
// every method is compared with: each group's scale from a scale fit (max-abs by default, see
// gsq/init/scale_fit.hpp), then every weight to its nearest grid level.
//
//   gsq::QuantizedTensor plain = gsq::round_to_nearest(weight, gsq::grid_spec<gsq::Int<2>>(), 128);
//   gsq::QuantizedTensor searched = gsq::round_to_nearest(weight, grid, 128, gsq::ScaleFit::weighted,
//                                                         gsq::hessian_diagonal(hessian));
#pragma once

#include <string>
#include <vector>

#include "gsq/common/matrix.hpp"
#include "gsq/format/quantized_tensor.hpp"
#include "gsq/init/scale_fit.hpp"
#include "gsq/policy/grid.hpp"

namespace gsq {

/// RTN of `weight` on `grid`, one scale per group of `group_width` columns chosen by `fit`.
/// `column_importance` (one value per input column, diag(H)) is needed by ScaleFit::weighted
/// only; leave it empty otherwise.
inline QuantizedTensor round_to_nearest(const Matrix<float>& weight, const GridSpec& grid, long group_width,
                                        ScaleFit fit = ScaleFit::max_abs,
                                        const std::vector<double>& column_importance = {}) {
  require_finite_nonempty(weight, "the weight matrix");
  require_symmetric_grid(grid);
  require(group_width > 0 && weight.cols % group_width == 0,
          "group size " + std::to_string(group_width) + " does not divide the layer's " +
              std::to_string(weight.cols) + " input columns");
  require(fit != ScaleFit::weighted || !column_importance.empty(),
          "the weighted scale fit needs each column's importance (diag H): pass hessian_diagonal(H)");
  if (!column_importance.empty()) require_valid_importance(column_importance, weight.cols);
  QuantizedTensor result{grid, weight.rows, weight.cols, group_width, {}, {}};
  result.codes.resize(weight.size());
  result.scales.resize(static_cast<std::size_t>(weight.rows * result.groups_per_row()));
  // Rows are independent, so the result does not depend on the thread count.
#pragma omp parallel for schedule(dynamic, 16) if (weight.size() >= (1u << 15))
  for (long r = 0; r < weight.rows; ++r)
    for (long g = 0; g < result.groups_per_row(); ++g) {
      const long first = g * group_width;
      const float scale = fit_group_scale(&weight(r, first), group_width, grid, fit,
                                          column_importance.empty() ? nullptr : &column_importance[first]);
      result.scales[static_cast<std::size_t>(r * result.groups_per_row() + g)] = scale;
      for (long c = first; c < first + group_width; ++c)
        result.codes[static_cast<std::size_t>(r * weight.cols + c)] =
            static_cast<std::int8_t>(nearest_level(weight(r, c), scale, grid));
    }
  return result;
}

}  // namespace gsq
