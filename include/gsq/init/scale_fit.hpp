// gsq/init/scale_fit.hpp -- how the symmetric scale of one group is chosen (docs/design.md section 5); RTN
// uses it for every group, GPTQ when its sweep enters a group.
//
//   ScaleFit::max_abs   scale = max|w| / rtn_divisor: the grid's end points reach the largest
//                       weight (the reference's default)
//   ScaleFit::mse       the reference's `mse` search: try the shrunk ranges p * max|w| for
//                       p = 1 - i/100, i < 80, and keep the scale that minimises
//                       sum |scale * code - w|^2.4 over the group
//   ScaleFit::weighted  the same search with each weight's error multiplied by its column's
//                       importance, diag(H) when H is known (llama.cpp's importance matrix)
//
//   float scale = gsq::fit_group_scale(weights, 128, gsq::grid_spec<gsq::Int<2>>(), gsq::ScaleFit::mse);
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "gsq/common/error.hpp"
#include "gsq/common/matrix.hpp"
#include "gsq/policy/grid.hpp"

namespace gsq {

enum class ScaleFit { max_abs, mse, weighted };

/// The run-time name of a scale fit: "maxabs", "mse" or "weighted".
inline const char* scale_fit_name(ScaleFit fit) {
  switch (fit) {
    case ScaleFit::max_abs: return "maxabs";
    case ScaleFit::mse: return "mse";
    case ScaleFit::weighted: return "weighted";
  }
  return "unknown";
}

/// Inverse of scale_fit_name; throws gsq::Error for any other name.
inline ScaleFit parse_scale_fit(const std::string& name) {
  for (const ScaleFit fit : {ScaleFit::max_abs, ScaleFit::mse, ScaleFit::weighted})
    if (name == scale_fit_name(fit)) return fit;
  throw Error("unknown scale fit '" + name + "': expected maxabs, mse or weighted");
}

/// Throws unless `grid` takes one symmetric scale per group (the unsigned K-quant grids take a
/// scale and a min: gsq/init/k_quant_fit.hpp fits them).
inline void require_symmetric_grid(const GridSpec& grid) {
  require(grid.rtn_divisor > 0, std::string("the ") + grid.name +
                                    " grid is stored with a scale and a min per group; fit it in its K-quant format "
                                    "(gsq::fit_k_quant, gsq::gptq_k_quant)");
}

/// The max-abs scale of a group whose largest magnitude is `max_abs`; an all-zero group gets
/// scale 1 so that nothing divides by zero.
inline float max_abs_scale(double max_abs, const GridSpec& grid) {
  return max_abs > 0 ? static_cast<float>(max_abs / grid.rtn_divisor) : 1.0f;
}

/// The grid level nearest to weight / scale (ties to even, as torch.round), as a double: the
/// form loops over many weights vectorise (an int conversion inside stops the compiler).
inline double nearest_level_value(double weight, double scale, const GridSpec& grid) {
  // std::min/max, not fmin/fmax (whose NaN rules block vectorisation): weights and scales are finite.
  return std::min(std::max(std::nearbyint(weight / scale), static_cast<double>(grid.min_level)),
                  static_cast<double>(grid.max_level));
}

/// The grid level nearest to weight / scale (ties to even, as torch.round).
inline int nearest_level(double weight, double scale, const GridSpec& grid) {
  return static_cast<int>(nearest_level_value(weight, scale, grid));
}

namespace detail {
// The reference's search (quant.py: grid = 100, maxshrink = 0.8, norm = 2.4).
constexpr int scale_search_steps = 80;
constexpr double scale_search_resolution = 100;
constexpr double scale_search_norm = 2.4;

/// sum_k importance_k |scale * code_k - w_k|^2.4 (importance 1 when null); stops early, returning
/// a value >= `give_up_above`, once the partial sum reaches it (every term is non-negative).
///
/// The search calls this 80 times per group, so it runs in chunks that vectorise: the misses in
/// double, then |miss|^2.4 through Eigen's vectorised float pow (std::pow is 4x slower), summed
/// in double.
inline double group_error_up_to(const float* weights, long count, float scale, const GridSpec& grid,
                                const double* importance, double give_up_above) {
  constexpr long chunk = 64;
  float misses[chunk];
  const GridSpec levels = grid;  // a local copy: the stores to `misses` cannot change it
  double error = 0;
  for (long first = 0; first < count && error < give_up_above; first += chunk) {
    const long size = std::min(chunk, count - first);
    for (long k = 0; k < size; ++k) {
      const double weight = weights[first + k];
      misses[k] = static_cast<float>(std::fabs(scale * nearest_level_value(weight, scale, levels) - weight));
    }
    const auto powered =
        Eigen::Map<const Eigen::ArrayXf>(misses, size).pow(static_cast<float>(scale_search_norm)).cast<double>();
    error += importance ? (powered * Eigen::Map<const Eigen::ArrayXd>(importance + first, size)).sum() : powered.sum();
  }
  return error;
}
}  // namespace detail

/// The error the mse search minimises for one group quantized with `scale`:
/// sum_k importance_k |scale * nearest_level(w_k) - w_k|^2.4, importance 1 when null.
inline double group_quantization_error(const float* weights, long count, float scale, const GridSpec& grid,
                                       const double* importance = nullptr) {
  return detail::group_error_up_to(weights, count, scale, grid, importance, std::numeric_limits<double>::infinity());
}

/// The scale of one group of `count` weights on `grid`. `importance` (one non-negative value per
/// weight: diag(H) of its column) is required by ScaleFit::weighted and ignored otherwise.
inline float fit_group_scale(const float* weights, long count, const GridSpec& grid, ScaleFit fit,
                             const double* importance = nullptr) {
  double max_abs = 0;
  for (long k = 0; k < count; ++k) max_abs = std::fmax(max_abs, std::fabs(weights[k]));
  if (fit == ScaleFit::max_abs || max_abs == 0) return max_abs_scale(max_abs, grid);
  require(fit != ScaleFit::weighted || importance != nullptr,
          "the weighted scale fit needs each column's importance (diag H)");
  const double* weighting = fit == ScaleFit::weighted ? importance : nullptr;
  // p = 1 comes first and only a strictly smaller error replaces it, so the search never does
  // worse than max-abs on its own objective.
  float best_scale = 0;
  double best_error = std::numeric_limits<double>::infinity();
  for (int i = 0; i < detail::scale_search_steps; ++i) {
    const double shrink = 1 - i / detail::scale_search_resolution;
    const float scale = max_abs_scale(shrink * max_abs, grid);
    const double error = detail::group_error_up_to(weights, count, scale, grid, weighting, best_error);
    if (error < best_error) {
      best_error = error;
      best_scale = scale;
    }
  }
  return best_scale;
}

/// Throws gsq::Error unless `importance` holds `cols` finite, non-negative values.
inline void require_valid_importance(const std::vector<double>& importance, long cols) {
  require(importance.size() == static_cast<std::size_t>(cols),
          "the column importance has " + std::to_string(importance.size()) + " values but the weight has " +
              std::to_string(cols) + " input columns");
  for (std::size_t j = 0; j < importance.size(); ++j)
    if (!(std::isfinite(importance[j]) && importance[j] >= 0))
      throw Error("the importance of column " + std::to_string(j) + " is " + std::to_string(importance[j]) +
                  ": importances must be finite and non-negative");
}

/// diag(H): the per-column importance the weighted scale fit uses.
template <class Real>
std::vector<double> hessian_diagonal(const Matrix<Real>& hessian) {
  require(hessian.rows == hessian.cols, "the Hessian H is not square (" + std::to_string(hessian.rows) +
                                            " x " + std::to_string(hessian.cols) + ")");
  std::vector<double> diagonal(static_cast<std::size_t>(hessian.rows));
  for (long j = 0; j < hessian.rows; ++j) diagonal[static_cast<std::size_t>(j)] = static_cast<double>(hessian(j, j));
  return diagonal;
}

}  // namespace gsq
