// gsq/policy/estimator.hpp -- estimator policies: what the forward pass samples and how the backward
// pass differentiates it (docs/design.md section 2).
//
//   noisy          whether Gumbel noise perturbs the logits
//   hard_forward   whether the forward pass uses the one-hot of the sampled argmax instead of
//                  the soft sample; the backward pass always uses the softmax's Jacobian
#pragma once

namespace gsq {

/// The reference: soft sample forward, exact gradient of it backward.
struct Relaxed {
  static constexpr bool noisy = true;
  static constexpr bool hard_forward = false;
  static constexpr const char* name = "relaxed";
};

/// Straight-through: hard sample forward, the relaxed sample's gradient backward.
struct StraightThrough {
  static constexpr bool noisy = true;
  static constexpr bool hard_forward = true;
  static constexpr const char* name = "ste";
};

/// No noise: a plain annealed softmax, for ablations.
struct Deterministic {
  static constexpr bool noisy = false;
  static constexpr bool hard_forward = false;
  static constexpr const char* name = "deterministic";
};

}  // namespace gsq
