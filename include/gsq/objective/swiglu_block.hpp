// gsq/objective/swiglu_block.hpp -- the SwiGLU block objective (docs/design.md section 4), the reference's
// default for the MLP: gate, up and down are trained jointly on the block's output.
//
//   y = W_down (silu(W_gate x) * (W_up x)),   L = sum_batch |y_soft - y_full|^2 / sum_batch |y_full|^2
//
// over mini-batches of calibration tokens (batch `step mod batch_count`), against the output of
// the full-precision block. With X (B x hidden) the batch's inputs:
//   A = X Wg^T, U = X Wu^T, M = silu(A) * U, Y = M Wd^T
//   dY = 2 (Y - Y_full) / sum |Y_full|^2
//   dWd = dY^T M,  dM = dY Wd,  dA = dM * U * silu'(A),  dU = dM * silu(A)
//   dWg = dA^T X,  dWu = dU^T X
// six products per step; the element-wise parts are functors.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <string>

#include "gsq/backend/fwd.hpp"
#include "gsq/common/config.hpp"
#include "gsq/common/error.hpp"
#include "gsq/common/matrix.hpp"
#include "gsq/detail/fast_math.hpp"
#include "gsq/objective/hessian.hpp"

namespace gsq {

namespace detail {

template <class Real>
GSQ_HOST_DEVICE inline Real sigmoid(Real x) {
  return Real(1) / (Real(1) + exp_fast(-x));
}

/// M = silu(A) * U, the SwiGLU activation.
template <class Real>
struct SwiGlu {
  const Real* gate;
  const Real* up;
  Real* out;
  GSQ_HOST_DEVICE void operator()(std::size_t i) const { out[i] = gate[i] * sigmoid(gate[i]) * up[i]; }
};

/// From dM, in place: gate <- dM * U * silu'(A), up <- dM * silu(A).
template <class Real>
struct SwiGluBackward {
  const Real* activation_grad;
  Real* gate;  // in: A, out: dA
  Real* up;    // in: U, out: dU
  GSQ_HOST_DEVICE void operator()(std::size_t i) const {
    const Real s = sigmoid(gate[i]);
    const Real silu = gate[i] * s;
    const Real silu_slope = s * (Real(1) + gate[i] * (Real(1) - s));
    const Real grad = activation_grad[i];
    gate[i] = grad * up[i] * silu_slope;
    up[i] = grad * silu;
  }
};

}  // namespace detail

template <class Backend = Host<float>>
class SwiGluBlockObjective {
 public:
  using Real = typename Backend::Real;
  template <class T>
  using vector = typename Backend::template vector<T>;
  enum Weight { gate = 0, up = 1, down = 2 };

  /// The block of `gate`, `up` (intermediate x hidden) and `down` (hidden_out x intermediate) on
  /// calibration inputs (tokens x hidden), in mini-batches of `batch_tokens` tokens (the tail that
  /// does not fill a batch is left out).
  SwiGluBlockObjective(const Matrix<Real>& gate_weight, const Matrix<Real>& up_weight, const Matrix<Real>& down_weight,
                       const Matrix<Real>& inputs, long batch_tokens)
      : hidden_(gate_weight.cols), intermediate_(gate_weight.rows), outputs_(down_weight.rows),
        batch_tokens_(batch_tokens) {
    require_finite_nonempty(gate_weight, "the gate weight");
    require_finite_nonempty(up_weight, "the up weight");
    require_finite_nonempty(down_weight, "the down weight");
    require_finite_nonempty(inputs, "the calibration inputs X");
    require(up_weight.rows == intermediate_ && up_weight.cols == hidden_,
            "the up weight must have the gate weight's shape " + shape(gate_weight));
    require(down_weight.cols == intermediate_, "the down weight has " + std::to_string(down_weight.cols) +
                                                   " input columns but the block's intermediate size is " +
                                                   std::to_string(intermediate_));
    require(inputs.cols == hidden_, "the calibration inputs have " + std::to_string(inputs.cols) +
                                        " features but the block's hidden size is " + std::to_string(hidden_));
    require(batch_tokens > 0 && batch_tokens <= inputs.rows,
            "the mini-batch size must be in [1, " + std::to_string(inputs.rows) + " calibration tokens], got " +
                std::to_string(batch_tokens));
    batch_count_ = inputs.rows / batch_tokens;
    inputs_ = Backend::from_host(std::vector<Real>(inputs.values.begin(),
                                                   inputs.values.begin() + batch_count_ * batch_tokens * hidden_));
    gate_act_ = vector<Real>(static_cast<std::size_t>(batch_tokens * intermediate_));
    up_act_ = vector<Real>(gate_act_.size());
    activation_ = vector<Real>(gate_act_.size());
    output_ = vector<Real>(static_cast<std::size_t>(batch_tokens * outputs_));
    reference_ = vector<Real>(static_cast<std::size_t>(batch_count_ * batch_tokens * outputs_));
    const vector<Real> g = Backend::from_host(gate_weight.values), u = Backend::from_host(up_weight.values),
                       d = Backend::from_host(down_weight.values);
    batch_energy_.resize(static_cast<std::size_t>(batch_count_));
    for (long batch = 0; batch < batch_count_; ++batch) {
      Real* reference = Backend::raw(reference_) + batch * batch_tokens_ * outputs_;
      block_output(batch, Backend::raw(g), Backend::raw(u), Backend::raw(d), reference);
      batch_energy_[static_cast<std::size_t>(batch)] =
          Backend::dot(reference, reference, static_cast<std::size_t>(batch_tokens_ * outputs_));
      require(batch_energy_[static_cast<std::size_t>(batch)] > 0,
              "the full-precision block output is zero on calibration batch " + std::to_string(batch));
    }
  }

  long batch_count() const { return batch_count_; }

  /// L on the mini-batch of `step`, and dL/dW for gate, up and down (backend memory).
  double value_and_gradient(long step, const std::array<const Real*, 3>& weights, const std::array<Real*, 3>& gradients) {
    const long batch = step % batch_count_;
    const std::size_t out_count = static_cast<std::size_t>(batch_tokens_ * outputs_);
    const Real* reference = Backend::raw(reference_) + batch * batch_tokens_ * outputs_;
    const Real* x = batch_inputs(batch);
    block_output(batch, weights[gate], weights[up], weights[down], Backend::raw(output_));
    Backend::for_each_index(out_count, detail::Difference<Real>{Backend::raw(output_), reference, Backend::raw(output_)});
    const double energy = batch_energy_[static_cast<std::size_t>(batch)];
    const double value = Backend::dot(Backend::raw(output_), Backend::raw(output_), out_count) / energy;
    Backend::for_each_index(out_count, detail::ScaleBy<Real>{Backend::raw(output_), static_cast<Real>(2 / energy)});
    // output_ now holds dY; activation_ still holds M from the forward pass.
    Backend::gemm(true, outputs_, intermediate_, batch_tokens_, Real(1), Backend::raw(output_), Backend::raw(activation_),
                  gradients[down]);
    Backend::gemm(false, batch_tokens_, intermediate_, outputs_, Real(1), Backend::raw(output_), weights[down],
                  Backend::raw(activation_));
    Backend::for_each_index(gate_act_.size(), detail::SwiGluBackward<Real>{Backend::raw(activation_), Backend::raw(gate_act_),
                                                                             Backend::raw(up_act_)});
    Backend::gemm(true, intermediate_, hidden_, batch_tokens_, Real(1), Backend::raw(gate_act_), x, gradients[gate]);
    Backend::gemm(true, intermediate_, hidden_, batch_tokens_, Real(1), Backend::raw(up_act_), x, gradients[up]);
    return value;
  }

  /// The same for {gate, up, down}, as joint objectives take them.
  double relative_error(const std::array<Matrix<float>, 3>& weights) { return relative_error(weights[0], weights[1], weights[2]); }

  /// L over every calibration batch for host weights: the block's relative output error.
  double relative_error(const Matrix<float>& gate_weight, const Matrix<float>& up_weight, const Matrix<float>& down_weight) {
    const vector<Real> g = Backend::from_host(gate_weight.template cast<Real>().values),
                       u = Backend::from_host(up_weight.template cast<Real>().values),
                       d = Backend::from_host(down_weight.template cast<Real>().values);
    double error = 0, energy = 0;
    const std::size_t out_count = static_cast<std::size_t>(batch_tokens_ * outputs_);
    for (long batch = 0; batch < batch_count_; ++batch) {
      block_output(batch, Backend::raw(g), Backend::raw(u), Backend::raw(d), Backend::raw(output_));
      Backend::for_each_index(out_count, detail::Difference<Real>{Backend::raw(output_),
                                                                  Backend::raw(reference_) + batch * out_count,
                                                                  Backend::raw(output_)});
      error += Backend::dot(Backend::raw(output_), Backend::raw(output_), out_count);
      energy += batch_energy_[static_cast<std::size_t>(batch)];
    }
    return error / energy;
  }

 private:
  static std::string shape(const Matrix<Real>& m) { return std::to_string(m.rows) + " x " + std::to_string(m.cols); }

  const Real* batch_inputs(long batch) const { return Backend::raw(inputs_) + batch * batch_tokens_ * hidden_; }

  /// Y = silu(X Wg^T) * (X Wu^T) Wd^T on one batch, keeping A, U and M for the backward pass.
  void block_output(long batch, const Real* gate_weight, const Real* up_weight, const Real* down_weight, Real* output) {
    const Real* x = batch_inputs(batch);
    Backend::gemm(false, batch_tokens_, intermediate_, hidden_, Real(1), x, gate_weight, Backend::raw(gate_act_), true);
    Backend::gemm(false, batch_tokens_, intermediate_, hidden_, Real(1), x, up_weight, Backend::raw(up_act_), true);
    Backend::for_each_index(gate_act_.size(), detail::SwiGlu<Real>{Backend::raw(gate_act_), Backend::raw(up_act_),
                                                                   Backend::raw(activation_)});
    Backend::gemm(false, batch_tokens_, outputs_, intermediate_, Real(1), Backend::raw(activation_), down_weight, output, true);
  }

  long hidden_, intermediate_, outputs_, batch_tokens_, batch_count_ = 0;
  vector<Real> inputs_, reference_, gate_act_, up_act_, activation_, output_;
  std::vector<double> batch_energy_;
};

}  // namespace gsq
