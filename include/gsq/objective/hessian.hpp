// gsq/objective/hessian.hpp -- the layer-wise Hessian objective (docs/design.md section 4):
//   L(What) = tr((What - W) H (What - W)^T) / tr(W H W^T),  H = X^T X / N,
//   dL/dWhat = 2 (What - W) H / tr(W H W^T),
// value and gradient from one rows x cols x cols product. L is also the relative error every
// method (RTN, GPTQ, GSQ) is compared on.
#pragma once

#include <cmath>
#include <cstddef>
#include <string>

#include "gsq/backend/fwd.hpp"
#include "gsq/common/config.hpp"
#include "gsq/common/error.hpp"
#include "gsq/common/hessian_check.hpp"
#include "gsq/common/matrix.hpp"

namespace gsq {

namespace detail {
template <class Real>
struct Difference {
  const Real* left;
  const Real* right;
  Real* out;
  GSQ_HOST_DEVICE void operator()(std::size_t i) const { out[i] = left[i] - right[i]; }
};
template <class Real>
struct ScaleBy {
  Real* values;
  Real factor;
  GSQ_HOST_DEVICE void operator()(std::size_t i) const { values[i] *= factor; }
};
}  // namespace detail

template <class Backend = Host<float>>
class HessianObjective {
 public:
  using Real = typename Backend::Real;
  template <class T>
  using vector = typename Backend::template vector<T>;

  /// The objective of approximating `weight` (rows x cols) under `hessian` (cols x cols).
  HessianObjective(const Matrix<Real>& weight, const Matrix<Real>& hessian)
      : rows_(weight.rows), cols_(weight.cols) {
    require_finite_nonempty(weight, "the weight matrix");
    require_valid_hessian(hessian, weight.cols);
    Matrix<Real> symmetric = hessian;  // exact symmetry, so the gradient is that of L
    for (long i = 0; i < cols_; ++i)
      for (long j = 0; j < i; ++j) symmetric(i, j) = symmetric(j, i) = (hessian(i, j) + hessian(j, i)) / 2;
    initialise(weight, Backend::from_host(symmetric.values));
  }

  /// The objective with H = X^T X / N formed from calibration inputs X (N tokens x cols).
  static HessianObjective from_inputs(const Matrix<Real>& weight, const Matrix<Real>& inputs) {
    require_finite_nonempty(inputs, "the calibration inputs X");
    require(inputs.cols == weight.cols, "the calibration inputs X have " + std::to_string(inputs.cols) +
                                            " features but the weight has " + std::to_string(weight.cols) +
                                            " input columns");
    require_finite_nonempty(weight, "the weight matrix");
    const vector<Real> x = Backend::from_host(inputs.values);
    vector<Real> hessian(static_cast<std::size_t>(weight.cols * weight.cols));
    Backend::gemm(true, weight.cols, weight.cols, inputs.rows, Real(1) / static_cast<Real>(inputs.rows),
                  Backend::raw(x), Backend::raw(x), Backend::raw(hessian));
    return HessianObjective(weight, std::move(hessian));
  }

  long rows() const { return rows_; }
  long cols() const { return cols_; }
  /// tr(W H W^T): the normaliser, the error of quantizing everything to zero.
  double energy() const { return energy_; }
  /// H as the objective holds it (symmetrised), copied to the host.
  Matrix<Real> hessian() const {
    Matrix<Real> h(cols_, cols_);
    h.values = Backend::to_host(hessian_);
    return h;
  }

  /// L(estimate), and dL/destimate written to `gradient`; both pointers in backend memory.
  double value_and_gradient(const Real* estimate, Real* gradient) {
    const std::size_t count = static_cast<std::size_t>(rows_ * cols_);
    Backend::for_each_index(count, detail::Difference<Real>{estimate, Backend::raw(weight_), Backend::raw(difference_)});
    Backend::gemm(false, rows_, cols_, cols_, static_cast<Real>(2 / energy_), Backend::raw(difference_),
                  Backend::raw(hessian_), gradient);
    return Backend::dot(Backend::raw(difference_), gradient, count) / 2;  // <E, 2 E H / tr> / 2 = L
  }

  /// L of a host matrix: the relative Hessian error of a quantized (or any) weight.
  double relative_error(const Matrix<float>& estimate) {
    require(estimate.rows == rows_ && estimate.cols == cols_, "the estimate's shape does not match the weight");
    const vector<Real> device_estimate = Backend::from_host(estimate.cast<Real>().values);
    vector<Real> gradient(device_estimate.size());
    return value_and_gradient(Backend::raw(device_estimate), Backend::raw(gradient));
  }

 private:
  HessianObjective(const Matrix<Real>& weight, vector<Real>&& hessian) : rows_(weight.rows), cols_(weight.cols) {
    initialise(weight, std::move(hessian));
  }

  void initialise(const Matrix<Real>& weight, vector<Real>&& hessian) {
    hessian_ = std::move(hessian);
    weight_ = Backend::from_host(weight.values);
    difference_ = vector<Real>(weight.size());
    Backend::gemm(false, rows_, cols_, cols_, Real(1), Backend::raw(weight_), Backend::raw(hessian_), Backend::raw(difference_));
    energy_ = Backend::dot(Backend::raw(weight_), Backend::raw(difference_), weight.size());
    require(energy_ > 0 && std::isfinite(energy_),
            "tr(W H W^T) = " + std::to_string(energy_) +
                ": the layer carries no signal under H (H zero, or not positive semi-definite?)");
  }

  long rows_, cols_;
  vector<Real> weight_, hessian_, difference_;
  double energy_ = 0;
};

}  // namespace gsq
