// gsq/common/matrix.hpp -- a dense row-major host matrix: the library's exchange type for weights,
// Hessians and calibration inputs (Eigen stays an implementation detail of the host backend).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "gsq/common/error.hpp"

namespace gsq {

template <class Real>
struct Matrix {
  long rows = 0;
  long cols = 0;
  std::vector<Real> values;  // row-major: (r, c) at r * cols + c

  Matrix() = default;
  explicit Matrix(long rows_, long cols_, Real fill = Real(0))
      : rows(rows_), cols(cols_), values(static_cast<std::size_t>(rows_ * cols_), fill) {}

  std::size_t size() const { return values.size(); }
  Real& operator()(long r, long c) { return values[static_cast<std::size_t>(r * cols + c)]; }
  const Real& operator()(long r, long c) const { return values[static_cast<std::size_t>(r * cols + c)]; }
  Real* data() { return values.data(); }
  const Real* data() const { return values.data(); }

  template <class Other>
  Matrix<Other> cast() const {
    Matrix<Other> out(rows, cols);
    for (std::size_t i = 0; i < size(); ++i) out.values[i] = static_cast<Other>(values[i]);
    return out;
  }
};

/// The rows of `matrix` listed in `rows` (indices in range), in that order.
template <class Real>
Matrix<Real> gather_rows(const Matrix<Real>& matrix, const std::vector<long>& rows) {
  Matrix<Real> result(static_cast<long>(rows.size()), matrix.cols);
  for (std::size_t i = 0; i < rows.size(); ++i)
    std::copy_n(matrix.data() + rows[i] * matrix.cols, matrix.cols, result.data() + static_cast<long>(i) * matrix.cols);
  return result;
}

/// Throws gsq::Error naming `what` if the matrix is empty or holds NaN or Inf.
template <class Real>
void require_finite_nonempty(const Matrix<Real>& m, const std::string& what) {
  require(m.rows > 0 && m.cols > 0, what + " is empty (" + std::to_string(m.rows) + " x " +
                                        std::to_string(m.cols) + ")");
  for (std::size_t i = 0; i < m.size(); ++i)
    if (!std::isfinite(static_cast<double>(m.values[i])))  // not require(): no message per element
      throw Error(what + " holds a non-finite value (NaN or Inf) at row " + std::to_string(i / m.cols) +
                  ", column " + std::to_string(i % m.cols));
}

}  // namespace gsq
