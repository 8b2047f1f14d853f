// gsq/objective/input_hessian.hpp -- the calibration H = X^T X / N of a linear layer from its
// inputs, what every objective and every method (RTN's weighted fit, GPTQ, GSQ) measures a
// layer's error on; and H = I for a tensor whose inputs are one-hot (a token embedding).
#pragma once

#include "gsq/backend/host.hpp"
#include "gsq/common/matrix.hpp"

namespace gsq {

/// H = X^T X / N of a linear layer's inputs (tokens x features).
inline Matrix<float> input_hessian(const Matrix<float>& inputs) {
  Matrix<float> hessian(inputs.cols, inputs.cols);
  Host<float>::gemm(true, inputs.cols, inputs.cols, inputs.rows, 1.0f / static_cast<float>(inputs.rows), inputs.data(),
                    inputs.data(), hessian.data());
  return hessian;
}

/// H = I: every input alike (the embedding's, a tensor without calibration data).
inline Matrix<float> identity_hessian(long size) {
  Matrix<float> result(size, size);
  for (long i = 0; i < size; ++i) result(i, i) = 1;
  return result;
}

}  // namespace gsq
