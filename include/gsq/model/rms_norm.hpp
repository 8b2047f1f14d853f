// gsq/model/rms_norm.hpp -- Hugging Face's RMSNorm and its backward pass, over each run of
// `width` = weight.size() values (a row, or one head of a row):
//
//   y = w * x / r,   r = sqrt(mean(x^2) + eps)
//   dx = (w * dy) / r - x * sum(w * dy * x) / (width * r^3)
//
// The weight w stays in full precision: only dx is needed.
#pragma once

#include <cmath>
#include <vector>

#include "gsq/common/matrix.hpp"

namespace gsq {

namespace detail {
/// 1 / r of one run, the sum of squares accumulated in double.
template <class Real>
Real inverse_rms(const Real* values, long width, double eps) {
  double sum_of_squares = 0;
  for (long i = 0; i < width; ++i) sum_of_squares += static_cast<double>(values[i]) * values[i];
  return static_cast<Real>(1.0 / std::sqrt(sum_of_squares / static_cast<double>(width) + eps));
}
}  // namespace detail

template <class Real>
Matrix<Real> rms_norm(const Matrix<Real>& inputs, const std::vector<float>& weight, double eps) {
  Matrix<Real> result(inputs.rows, inputs.cols);
  const long width = static_cast<long>(weight.size()), runs = static_cast<long>(inputs.size()) / width;
#pragma omp parallel for
  for (long run = 0; run < runs; ++run) {
    const Real* in = inputs.data() + run * width;
    const Real inverse = detail::inverse_rms(in, width, eps);
    Real* out = result.data() + run * width;
    for (long i = 0; i < width; ++i) out[i] = static_cast<Real>(weight[static_cast<std::size_t>(i)]) * (in[i] * inverse);
  }
  return result;
}

/// dL/dx of rms_norm at `inputs` from dL/dy.
template <class Real>
Matrix<Real> rms_norm_backward(const Matrix<Real>& inputs, const std::vector<float>& weight, double eps,
                               const Matrix<Real>& output_grad) {
  Matrix<Real> result(inputs.rows, inputs.cols);
  const long width = static_cast<long>(weight.size()), runs = static_cast<long>(inputs.size()) / width;
#pragma omp parallel for
  for (long run = 0; run < runs; ++run) {
    const Real* in = inputs.data() + run * width;
    const Real* grad = output_grad.data() + run * width;
    const Real inverse = detail::inverse_rms(in, width, eps);
    double weighted = 0;  // sum(w * dy * x)
    for (long i = 0; i < width; ++i)
      weighted += static_cast<double>(weight[static_cast<std::size_t>(i)]) * grad[i] * in[i];
    const auto correction = static_cast<Real>(weighted / static_cast<double>(width)) * inverse * inverse * inverse;
    Real* out = result.data() + run * width;
    for (long i = 0; i < width; ++i)
      out[i] = static_cast<Real>(weight[static_cast<std::size_t>(i)]) * grad[i] * inverse - in[i] * correction;
  }
  return result;
}

}  // namespace gsq
