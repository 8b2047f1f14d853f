// gsq/policy/optimizer.hpp -- optimizer policies (Lion, Adam), parameter groups and the learning-rate
// schedule (docs/design.md section 3).
//
// An optimizer policy gives `state_slots` (values of state per parameter), its default betas,
// and `Update<Real>`: an element-wise functor that applies one step to parameter i, from the
// stored gradient (operator()) or from one its caller has just computed (apply).
#pragma once

#include <cmath>
#include <cstddef>
#include <string>

#include "gsq/common/config.hpp"
#include "gsq/common/error.hpp"
#include "gsq/policy/schedule.hpp"

namespace gsq {

/// The run-time numbers of one optimizer step, shared by every policy.
template <class Real>
struct UpdateStep {
  Real learning_rate;
  Real weight_decay;  // decoupled: parameter *= 1 - learning_rate * weight_decay
  Real beta1, beta2, epsilon;
  Real bias_correction1, bias_correction2;  // 1 - beta^t, for optimizers that correct
};

/// Lion (Chen et al. 2023): the sign of an interpolated momentum; the reference's optimizer.
struct Lion {
  static constexpr const char* name = "lion";
  static constexpr int state_slots = 1;
  static constexpr double default_beta1 = 0.9, default_beta2 = 0.95;

  template <class Real>
  struct Update {
    Real* parameter;
    const Real* gradient;
    Real* state;  // momentum
    UpdateStep<Real> step;

    GSQ_HOST_DEVICE void operator()(std::size_t i) const { apply(i, gradient[i]); }

    /// The step of parameter i with gradient g, for passes that compute g and apply it at once.
    GSQ_HOST_DEVICE void apply(std::size_t i, Real g) const {
      const Real direction = step.beta1 * state[i] + (Real(1) - step.beta1) * g;
      const Real sign = direction > Real(0) ? Real(1) : direction < Real(0) ? Real(-1) : Real(0);
      parameter[i] = parameter[i] * (Real(1) - step.learning_rate * step.weight_decay) - step.learning_rate * sign;
      state[i] = step.beta2 * state[i] + (Real(1) - step.beta2) * g;
    }
  };
};

/// Adam with decoupled weight decay (AdamW) and bias correction.
struct Adam {
  static constexpr const char* name = "adam";
  static constexpr int state_slots = 2;
  static constexpr double default_beta1 = 0.9, default_beta2 = 0.999;

  template <class Real>
  struct Update {
    Real* parameter;
    const Real* gradient;
    Real* state;  // per parameter: first moment, second moment
    UpdateStep<Real> step;

    GSQ_HOST_DEVICE void operator()(std::size_t i) const { apply(i, gradient[i]); }

    GSQ_HOST_DEVICE void apply(std::size_t i, Real g) const {
      Real& mean = state[2 * i];
      Real& square = state[2 * i + 1];
      mean = step.beta1 * mean + (Real(1) - step.beta1) * g;
      square = step.beta2 * square + (Real(1) - step.beta2) * g * g;
      const Real corrected_mean = mean / step.bias_correction1;
      const Real corrected_square = square / step.bias_correction2;
      parameter[i] = parameter[i] * (Real(1) - step.learning_rate * step.weight_decay) -
                     step.learning_rate * corrected_mean / (std::sqrt(corrected_square) + step.epsilon);
    }
  };
};

/// One group of parameters with its own learning rate and decoupled weight decay.
struct ParameterGroup {
  double learning_rate;
  double weight_decay;
};

/// Linear warm-up over `warmup_steps`, then decay of the learning rate to `floor` times its
/// peak at the last step (cosine by default, as the reference).
struct LearningRateSchedule {
  enum class Decay { cosine, linear, constant };
  long warmup_steps = 0;
  Decay decay = Decay::cosine;
  double floor = 0.1;

  void validate(long steps) const {
    require(warmup_steps >= 0 && warmup_steps < steps,
            "the learning-rate warm-up (" + std::to_string(warmup_steps) + " steps) must be shorter than the run (" +
                std::to_string(steps) + " steps)");
    require(floor >= 0 && floor <= 1, "the learning-rate floor must be in [0, 1], got " + std::to_string(floor));
  }

  /// Multiplier of the peak learning rate at `step` (0-based) of `steps`.
  double factor(long step, long steps) const {
    if (step < warmup_steps) return static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
    const double progress = schedule_progress(step - warmup_steps, steps - warmup_steps);
    switch (decay) {
      case Decay::cosine: return CosineAnneal::at(1.0, floor, progress);
      case Decay::linear: return LinearAnneal::at(1.0, floor, progress);
      case Decay::constant: break;
    }
    return 1.0;
  }
};

inline LearningRateSchedule::Decay parse_decay(const std::string& name) {
  if (name == "cosine") return LearningRateSchedule::Decay::cosine;
  if (name == "linear") return LearningRateSchedule::Decay::linear;
  if (name == "constant") return LearningRateSchedule::Decay::constant;
  throw Error("unknown learning-rate decay '" + name + "' (expected cosine, linear or constant)");
}

/// The state of one parameter group under optimizer policy `Optimizer`, in backend memory.
template <class Optimizer, class Backend>
class GroupOptimizer {
 public:
  using Real = typename Backend::Real;

  GroupOptimizer(std::size_t count, ParameterGroup group, double beta1, double beta2, double epsilon)
      : count_(count), group_(group), beta1_(beta1), beta2_(beta2), epsilon_(epsilon),
        state_(count * Optimizer::state_slots, Real(0)) {}

  /// Applies step `step` (0-based) with the peak learning rate times `rate_factor`.
  void update(Real* parameter, const Real* gradient, long step, double rate_factor) {
    Backend::for_each_index(count_, update_at(parameter, gradient, step, rate_factor));
  }

  /// Step `step` as a functor (its apply(i, g) takes the gradient from the caller; `gradient`
  /// may then be null), for a pass that computes the gradient and applies it at once.
  typename Optimizer::template Update<Real> update_at(Real* parameter, const Real* gradient, long step,
                                                      double rate_factor) {
    const UpdateStep<Real> numbers{static_cast<Real>(group_.learning_rate * rate_factor),
                                   static_cast<Real>(group_.weight_decay), static_cast<Real>(beta1_),
                                   static_cast<Real>(beta2_), static_cast<Real>(epsilon_),
                                   static_cast<Real>(1 - std::pow(beta1_, step + 1)),
                                   static_cast<Real>(1 - std::pow(beta2_, step + 1))};
    return {parameter, gradient, Backend::raw(state_), numbers};
  }

 private:
  std::size_t count_;
  ParameterGroup group_;
  double beta1_, beta2_, epsilon_;
  typename Backend::template vector<Real> state_;
};

}  // namespace gsq
