// gsq/common/hessian_check.hpp -- what every consumer of a calibration Hessian H = X^T X / N
// (the Hessian objective, GPTQ, the scale fits) checks first: that it is one.
#pragma once

#include <cmath>
#include <string>

#include "gsq/common/error.hpp"
#include "gsq/common/matrix.hpp"

namespace gsq {

/// Throws gsq::Error unless `hessian` is a finite, symmetric cols x cols matrix.
template <class Real>
void require_valid_hessian(const Matrix<Real>& hessian, long cols) {
  require_finite_nonempty(hessian, "the Hessian H");
  require(hessian.rows == hessian.cols, "the Hessian H is not square (" + std::to_string(hessian.rows) +
                                            " x " + std::to_string(hessian.cols) + ")");
  require(hessian.rows == cols, "the Hessian H is " + std::to_string(hessian.rows) + " x " +
                                    std::to_string(hessian.cols) + " but the weight has " +
                                    std::to_string(cols) + " input columns");
  double largest = 0;
  for (const Real v : hessian.values) largest = std::fmax(largest, std::fabs(static_cast<double>(v)));
  for (long i = 0; i < cols; ++i)
    for (long j = i + 1; j < cols; ++j) {
      // Products computed in float by other tools differ in the last bits; more is a real asymmetry.
      const double gap = std::fabs(static_cast<double>(hessian(i, j)) - static_cast<double>(hessian(j, i)));
      if (gap > 1e-5 * largest)  // not require(): no message per element
        throw Error("the Hessian H is not symmetric: H[" + std::to_string(i) + "][" + std::to_string(j) +
                    "] = " + std::to_string(hessian(i, j)) + " but H[" + std::to_string(j) + "][" +
                    std::to_string(i) + "] = " + std::to_string(hessian(j, i)));
    }
}

}  // namespace gsq
