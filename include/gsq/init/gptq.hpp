// gsq/init/gptq.hpp -- GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for
// Generative Pre-trained Transformers"), the strong initializer of docs/design.md section 5.
//
// Columns are quantized one at a time; each column's rounding error, divided by U[p][p], is
// spread onto the columns not yet quantized through row p of U, the upper Cholesky factor of
// H^-1 (H^-1 = U^T U). This is the optimal (OBS) compensation of the layer-wise objective
// tr((What - W) H (What - W)^T) when the remaining columns are still free. Columns go in blocks:
// inside a block the update is immediate, the columns after it receive the whole block's update
// at once (one matrix product, the "lazy batch" update).
//
// Each group's scale is fitted (gsq/init/scale_fit.hpp) when the sweep reaches the group's first
// column, on the group's current, error-compensated weights. With act-order, columns are
// processed in order of decreasing diag(H), but groups stay the original contiguous column
// groups, so the result has the same format as RTN's.
//
//   gsq::QuantizedTensor start = gsq::gptq(weight, hessian, gsq::grid_spec<gsq::Int<2>>(), 128);
//   gsq::Quantizer<gsq::Int<2>> quantizer(start);
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include <Eigen/Dense>

#include "gsq/backend/host.hpp"
#include "gsq/common/error.hpp"
#include "gsq/common/hessian_check.hpp"
#include "gsq/common/matrix.hpp"
#include "gsq/format/quantized_tensor.hpp"
#include "gsq/init/scale_fit.hpp"
#include "gsq/policy/grid.hpp"

namespace gsq {

struct GptqConfig {
  double percdamp = 0.01;       // diag(H) += percdamp * mean(diag H) before inverting (paper runs: 0.1)
  long block_size = 128;        // columns per lazy batch update
  bool act_order = false;       // process columns in order of decreasing diag(H)
  ScaleFit scale_fit = ScaleFit::max_abs;
};

namespace detail {

/// Below this many elements a thread team costs more than it saves.
constexpr long parallel_work = 1L << 15;

/// The order GPTQ visits columns in: 0 .. cols-1, or by decreasing diag(H) with act-order (a
/// stable sort, so ties keep their column order and the result is reproducible).
inline std::vector<long> gptq_column_order(const std::vector<double>& diagonal, bool act_order) {
  std::vector<long> order(diagonal.size());
  std::iota(order.begin(), order.end(), 0L);
  if (act_order)
    std::stable_sort(order.begin(), order.end(), [&](long a, long b) { return diagonal[a] > diagonal[b]; });
  return order;
}

/// The upper Cholesky factor U of the damped H^-1 (H^-1 = U^T U), in processing order:
/// position p is column order[p], whose diagonal is diagonal[order[p]] (dead inputs set to 1).
///
/// Computed in double without forming H^-1: with J the reversal permutation and
/// J H J = L L^T, H = (J L J)(J L J)^T where J L J is upper triangular, so U = (J L J)^-1 =
/// J L^-1 J. Costs one Cholesky and one triangular inverse (n^3 / 3 flops each) instead of the
/// reference's Cholesky, inverse and second Cholesky.
inline Matrix<float> upper_cholesky_of_inverse(const Matrix<float>& hessian, const std::vector<long>& order,
                                               const std::vector<double>& diagonal, double percdamp) {
  const long n = hessian.rows;
  double diagonal_sum = 0;  // in processing order, so permuting the input permutes the result exactly
  for (long p = 0; p < n; ++p) diagonal_sum += diagonal[order[p]];
  const double damping = percdamp * diagonal_sum / static_cast<double>(n);
  Eigen::MatrixXd reversed(n, n);  // J H J, damped; column-major, so it reads H's rows (H = H^T)
  for (long j = 0; j < n; ++j)
    for (long i = 0; i < n; ++i) {
      const long p = order[n - 1 - i], q = order[n - 1 - j];
      reversed(i, j) = i == j ? diagonal[p] + damping : static_cast<double>(hessian(q, p));
    }
  const auto not_positive_definite = [&] {
    return Error("the Hessian H is not positive definite even after adding percdamp * mean(diag H) = " +
                 std::to_string(damping) + " to its diagonal (percdamp = " + std::to_string(percdamp) +
                 "): use a larger percdamp (say 0.1), or check H = X^T X / N");
  };
  // In place, single-threaded (Eigen's LLT never splits its products across threads).
  Eigen::LLT<Eigen::Ref<Eigen::MatrixXd>> cholesky(reversed);
  if (cholesky.info() != Eigen::Success) throw not_positive_definite();

  // L X = I column panel by column panel: X is lower triangular, so panel [first, first + w)
  // solves only L[first:, first:] Y = I[first:, first:first + w]. Panels are independent and
  // each is the same computation on any thread: the result is thread-count independent.
  Eigen::MatrixXd inverse = Eigen::MatrixXd::Zero(n, n);
  const long panel = 64;
#pragma omp parallel for schedule(dynamic) if (n >= 4 * panel)
  for (long first = 0; first < n; first += panel) {
    const long width = std::min(panel, n - first);
    auto columns = inverse.block(first, first, n - first, width);
    columns.topRows(width).setIdentity();
    cholesky.matrixLLT().bottomRightCorner(n - first, n - first).triangularView<Eigen::Lower>().solveInPlace(columns);
  }

  Matrix<float> upper(n, n);
  for (long i = 0; i < n; ++i)
    for (long j = i; j < n; ++j) {
      upper(i, j) = static_cast<float>(inverse(n - 1 - i, n - 1 - j));
      if (!std::isfinite(upper(i, j)) || (i == j && !(upper(i, j) > 0))) throw not_positive_definite();
    }
  return upper;
}

}  // namespace detail

namespace detail {

/// GPTQ's sweep with the format left to `Rounding`, which provides
///   long group_width() const                  consecutive columns sharing the format's parameters
///   void enter(long row, long group, const float* weights, const double* importance)
///                                             fits the group's parameters of `row` to its current,
///                                             error-compensated weights (in column order) with
///                                             their columns' importance diag(H)
///   float round(long row, long column, float value)
///                                             stores the code of weight (row, column) under them
///                                             and returns the weight it dequantizes to
/// The caller has checked that the group width divides the columns (it sized the result by it).
/// Rows are swept in parallel: calls for different rows come from different threads, each row's
/// in sweep order. Dead inputs (diag(H) = 0) get diag 1 and their weights zeroed.
template <class Rounding>
void gptq_sweep(const Matrix<float>& weight, const Matrix<float>& hessian, const GptqConfig& config, Rounding& rounding) {
  require_finite_nonempty(weight, "the weight matrix");
  require_valid_hessian(hessian, weight.cols);
  const long group_width = rounding.group_width();
  require(std::isfinite(config.percdamp) && config.percdamp >= 0,
          "GPTQ's percdamp must be finite and non-negative, got " + std::to_string(config.percdamp));
  require(config.block_size > 0, "GPTQ's block size must be positive, got " + std::to_string(config.block_size));
  const long rows = weight.rows, cols = weight.cols;
  const std::vector<double> importance = hessian_diagonal(hessian);
  for (long j = 0; j < cols; ++j)
    if (importance[j] < 0)
      throw Error("the Hessian H has a negative diagonal entry H[" + std::to_string(j) + "][" + std::to_string(j) +
                  "] = " + std::to_string(importance[j]) + ": it is not positive semi-definite (X^T X / N always is)");

  // Dead inputs never reach the layer: any weight there is free, zero is the cheapest to store.
  std::vector<double> diagonal = importance;
  for (double& d : diagonal)
    if (d == 0) d = 1;
  const std::vector<long> order = gptq_column_order(diagonal, config.act_order);

  // U and W in processing order: position p holds column order[p].
  const Matrix<float> factor = upper_cholesky_of_inverse(hessian, order, diagonal, config.percdamp);
  Matrix<float> working(rows, cols);
  for (long r = 0; r < rows; ++r)
    for (long p = 0; p < cols; ++p) working(r, p) = importance[order[p]] == 0 ? 0.0f : weight(r, order[p]);

  // Each group's positions in processing order; the first is where the group's parameters are fitted.
  std::vector<std::vector<long>> group_positions(static_cast<std::size_t>(cols / group_width));
  for (long p = 0; p < cols; ++p) group_positions[order[p] / group_width].push_back(p);

  // Buffers of the lazy update, allocated once: the first block's are the largest.
  const long block_size = std::min(config.block_size, cols);
  std::vector<float> block_error(static_cast<std::size_t>(rows * block_size));  // (w - q) / U[p][p]
  std::vector<float> factor_rows(static_cast<std::size_t>(block_size * (cols - block_size)));
  std::vector<float> update(static_cast<std::size_t>(rows * (cols - block_size)));
  for (long block_start = 0; block_start < cols; block_start += block_size) {
    const long block_end = std::min(cols, block_start + block_size), width = block_end - block_start;
    // Inside a block every row is an independent sweep: the result is thread-count independent.
#pragma omp parallel if (rows * width >= parallel_work)
    {
      std::vector<float> group_weights(static_cast<std::size_t>(group_width));
#pragma omp for schedule(dynamic, 8)
      for (long r = 0; r < rows; ++r) {
        float* row = &working(r, 0);
        float* error = &block_error[static_cast<std::size_t>(r * width)];
        for (long p = block_start; p < block_end; ++p) {
          const long group = order[p] / group_width;
          const std::vector<long>& positions = group_positions[static_cast<std::size_t>(group)];
          if (positions.front() == p) {
            // The group's current weights. Its columns past this block (a suffix: positions
            // ascend) still lack this block's updates so far, which come with the lazy update:
            // apply them here, row by row of U.
            const std::size_t past_block = static_cast<std::size_t>(
                std::lower_bound(positions.begin(), positions.end(), block_end) - positions.begin());
            for (std::size_t k = 0; k < positions.size(); ++k) {
              float value = row[positions[k]];
              if (k >= past_block)
                for (long done = block_start; done < p; ++done) value -= error[done - block_start] * factor(done, positions[k]);
              group_weights[static_cast<std::size_t>(order[positions[k]] - group * group_width)] = value;
            }
            rounding.enter(r, group, group_weights.data(), importance.data() + group * group_width);
          }
          const float column_error = (row[p] - rounding.round(r, order[p], row[p])) / factor(p, p);
          error[p - block_start] = column_error;
          for (long q = p + 1; q < block_end; ++q) row[q] -= column_error * factor(p, q);
        }
      }
    }
    if (block_end == cols) break;
    // Lazy batch update: W[:, block_end:] -= E U[block, block_end:], one product.
    const long rest = cols - block_end;
    for (long i = 0; i < width; ++i)
      std::copy_n(&factor(block_start + i, block_end), rest, &factor_rows[static_cast<std::size_t>(i * rest)]);
    Host<float>::gemm(false, rows, rest, width, 1.0f, block_error.data(), factor_rows.data(), update.data());
#pragma omp parallel for schedule(static) if (rows * rest >= parallel_work)
    for (long r = 0; r < rows; ++r) {
      float* row = &working(r, block_end);
      const float* row_update = &update[static_cast<std::size_t>(r * rest)];
      for (long q = 0; q < rest; ++q) row[q] -= row_update[q];
    }
  }
}

/// GPTQ's rounding in the symmetric format: one scale per group from the scale fit, then the
/// nearest grid level.
struct SymmetricRounding {
  QuantizedTensor& result;
  ScaleFit scale_fit;

  long group_width() const { return result.group_width; }
  void enter(long row, long group, const float* weights, const double* importance) {
    result.scales[static_cast<std::size_t>(row * result.groups_per_row() + group)] =
        fit_group_scale(weights, result.group_width, result.grid, scale_fit, importance);
  }
  float round(long row, long column, float value) {
    const float scale = result.scales[static_cast<std::size_t>(row * result.groups_per_row() + column / result.group_width)];
    const int level = nearest_level(value, scale, result.grid);
    result.codes[static_cast<std::size_t>(row * result.cols + column)] = static_cast<std::int8_t>(level);
    return scale * static_cast<float>(level);
  }
};

}  // namespace detail

/// GPTQ of `weight` (rows x cols) under the layer's Hessian `hessian` (cols x cols, H = X^T X / N)
/// on `grid` with one scale per group of `group_width` consecutive columns. Returns the codes and
/// scales in the original column order, ready to start GSQ (gsq::Quantizer<...>(result)).
///
/// Dead inputs (diag(H) = 0) get diag 1 and their weights zeroed (code 0), as in the reference.
/// Throws gsq::Error for mismatched shapes, a non-symmetric H, or an H that is not positive
/// definite after damping.
inline QuantizedTensor gptq(const Matrix<float>& weight, const Matrix<float>& hessian, const GridSpec& grid,
                            long group_width, const GptqConfig& config = {}) {
  require_symmetric_grid(grid);
  require(group_width > 0 && weight.cols % group_width == 0,
          "group size " + std::to_string(group_width) + " does not divide the layer's " +
              std::to_string(weight.cols) + " input columns");
  QuantizedTensor result{grid, weight.rows, weight.cols, group_width, std::vector<std::int8_t>(weight.size()),
                         std::vector<float>(static_cast<std::size_t>(weight.rows * weight.cols / group_width))};
  detail::SymmetricRounding rounding{result, config.scale_fit};
  detail::gptq_sweep(weight, hessian, config, rounding);
  return result;
}

}  // namespace gsq
