// gsq/policy/parametrisation.hpp -- how a group's learned parameters turn an integer code into a weight.
//
// A parametrisation policy gives, for the `parameter_count` values one group holds:
//   weight(code, params)                           the dequantized weight
//   code_gradient(weight_grad, params)              dL/dcode from dL/dweight
//   add_parameter_gradient(weight_grad, code, g)    accumulates dL/dparams of the group into g
//   project(params)                                 puts the group back into the format after an optimizer step
// The relaxation functors and the optimizer loop only go through these, so a new format (say an
// asymmetric scale-and-min) is a new policy, not a change to the loop.
#pragma once

#include <cmath>
#include <cstddef>

#include "gsq/common/config.hpp"

namespace gsq {

/// One symmetric scale per group: weight = scale * code (the format of docs/design.md section 1).
struct SymmetricScale {
  static constexpr int parameter_count = 1;
  static constexpr const char* name = "symmetric";

  template <class Real>
  GSQ_HOST_DEVICE static Real weight(Real code, const Real* params) { return params[0] * code; }

  template <class Real>
  GSQ_HOST_DEVICE static Real code_gradient(Real weight_grad, const Real* params) {
    return weight_grad * params[0];
  }

  template <class Real>
  GSQ_HOST_DEVICE static void add_parameter_gradient(Real weight_grad, Real code, Real* grad) {
    grad[0] += weight_grad * code;
  }

  /// The scale stays positive and storable: Lion moves every scale by its learning rate whatever
  /// its gradient, and can walk a small one past zero. The floor is fp16's smallest step, 2^-24.
  template <class Real>
  GSQ_HOST_DEVICE static void project(Real* params) {
    const Real floor = Real(5.9604644775390625e-8);
    params[0] = params[0] > floor ? params[0] : floor;
  }
};

namespace detail {

/// Parametrisation::project of each group (one call per group).
template <class Parametrisation, class Real>
struct ProjectParameters {
  Real* parameters;
  GSQ_HOST_DEVICE void operator()(std::size_t group) const {
    Parametrisation::project(parameters + group * Parametrisation::parameter_count);
  }
};

/// The code of a continuous sub-block scale `value` under the factor `factor`: round(value /
/// factor) (ties to even, as the storing step rounds) clamped to {MinCode .. MaxCode}; 0 clamped
/// when the factor is 0 (an all-zero super-block).
template <int MinCode, int MaxCode, class Real>
GSQ_HOST_DEVICE Real coded(Real value, Real factor) {
  using std::rint;
  const Real code = factor != Real(0) ? rint(value / factor) : Real(0);
  return code < Real(MinCode) ? Real(MinCode) : code > Real(MaxCode) ? Real(MaxCode) : code;
}

}  // namespace detail

/// llama.cpp's K-quant sub-block with a min (Q2_K, Q4_K): parameters (scale s, min m, d, dmin),
/// weight = d coded(s / d) code - dmin coded(m / dmin), the scale and min codes in
/// {MinCode .. MaxCode} under the super-block's fp16 factors d and dmin ({0 .. 15} for Q2_K;
/// {1 .. 1} for Q4_1, whose block stores d and dmin alone). The forward pass uses the
/// stored (coded) values, the gradient passes straight through the rounding to s and m, and d,
/// dmin get no gradient (they stay as the starting point set them): the codes are trained under
/// exactly the scales the file will hold.
template <int MinCode, int MaxCode>
struct CodedScaleAndMin {
  static constexpr int parameter_count = 4;
  static constexpr const char* name = "coded-scale-and-min";

  template <class Real>
  GSQ_HOST_DEVICE static Real scale_code(const Real* params) { return detail::coded<MinCode, MaxCode>(params[0], params[2]); }
  template <class Real>
  GSQ_HOST_DEVICE static Real min_code(const Real* params) { return detail::coded<MinCode, MaxCode>(params[1], params[3]); }
  template <class Real>
  GSQ_HOST_DEVICE static Real scale(const Real* params) { return params[2] * scale_code(params); }
  template <class Real>
  GSQ_HOST_DEVICE static Real min(const Real* params) { return params[3] * min_code(params); }

  template <class Real>
  GSQ_HOST_DEVICE static Real weight(Real code, const Real* params) { return scale(params) * code - min(params); }

  template <class Real>
  GSQ_HOST_DEVICE static Real code_gradient(Real weight_grad, const Real* params) { return weight_grad * scale(params); }

  template <class Real>
  GSQ_HOST_DEVICE static void add_parameter_gradient(Real weight_grad, Real code, Real* grad) {
    grad[0] += weight_grad * code;
    grad[1] -= weight_grad;
  }

  /// Nothing to do: any value codes into {MinCode .. MaxCode}.
  template <class Real>
  GSQ_HOST_DEVICE static void project(Real* /*params*/) {}
};

/// llama.cpp's K-quant sub-block without a min (Q3_K): parameters (scale s, d), weight =
/// d coded(s / d) code with signed scale codes {MinCode .. MaxCode}; straight through as above.
template <int MinCode, int MaxCode>
struct CodedScale {
  static constexpr int parameter_count = 2;
  static constexpr const char* name = "coded-scale";

  template <class Real>
  GSQ_HOST_DEVICE static Real scale_code(const Real* params) { return detail::coded<MinCode, MaxCode>(params[0], params[1]); }
  template <class Real>
  GSQ_HOST_DEVICE static Real scale(const Real* params) { return params[1] * scale_code(params); }

  template <class Real>
  GSQ_HOST_DEVICE static Real weight(Real code, const Real* params) { return scale(params) * code; }

  template <class Real>
  GSQ_HOST_DEVICE static Real code_gradient(Real weight_grad, const Real* params) { return weight_grad * scale(params); }

  template <class Real>
  GSQ_HOST_DEVICE static void add_parameter_gradient(Real weight_grad, Real code, Real* grad) {
    grad[0] += weight_grad * code;
  }

  /// Nothing to do: any value codes into {MinCode .. MaxCode}.
  template <class Real>
  GSQ_HOST_DEVICE static void project(Real* /*params*/) {}
};

}  // namespace gsq
