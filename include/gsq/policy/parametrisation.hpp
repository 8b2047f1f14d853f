// gsq/policy/parametrisation.hpp -- how a group's learned parameters turn an integer code into a weight.
//
// A parametrisation policy gives, for the `parameter_count` values one group holds:
//   weight(code, params)                           the dequantized weight
//   code_gradient(weight_grad, params)              dL/dcode from dL/dweight
//   add_parameter_gradient(weight_grad, code, g)    accumulates dL/dparams of the group into g
// The relaxation functors and the optimizer loop only go through these, so a new format (say an
// asymmetric scale-and-min) is a new policy, not a change to the loop.
#pragma once

#include "gsq/common/config.hpp"

namespace gsq {

/// One symmetric scale per group: weight = scale * code (the format of DESIGN section 1).
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
};

}  // namespace gsq
