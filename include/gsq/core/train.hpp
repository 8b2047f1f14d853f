// gsq/core/train.hpp -- the optimizer loop: anneal, sample, evaluate the objective, back-propagate,
// update (docs/design.md sections 2-3). One call quantizes one layer (train) or several layers that one
// objective couples (train_jointly).
//
//   for t in 0 .. steps-1:
//     point      = Quantizer::relaxation_at(anneal, t, steps, seed)   temperature, logit scale
//     weight     = quantizer.forward(point)                           element-wise (functors)
//     loss, dL/dweight = objective.value_and_gradient(weight)         one matrix product
//     dL/dlogits, dL/dscales = quantizer.backward(point, dL/dweight)  element-wise + per group
//     Optimizer updates logits (decoupled weight decay) and scales    element-wise
// The passes over the logits are fused: each logit steps as its gradient is computed, and the
// same pass runs step t + 1's forward pass (Quantizer::step_logits_and_forward), so the logits
// are read once a step. The group parameters step first; the logits' gradient uses the ones
// step t's forward pass used.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "gsq/common/error.hpp"
#include "gsq/core/quantizer.hpp"
#include "gsq/policy/optimizer.hpp"

namespace gsq {

/// The run-time settings of one GSQ run; defaults are the reference's (docs/design.md section 3).
struct TrainConfig {
  long steps = 640;  // 10 epochs of 64 mini-batches
  std::uint64_t seed = 0;
  AnnealConfig anneal;
  ParameterGroup logits{1e-4, 1.0};
  ParameterGroup scales{5e-5, 0.0};
  LearningRateSchedule learning_rate;
  std::optional<double> beta1, beta2;  // unset: the optimizer policy's defaults
  double epsilon = 1e-8;

  void validate() const {
    require(steps > 0, "the number of steps must be positive, got " + std::to_string(steps));
    require(steps < (1L << 32), "the number of steps must fit the noise counter (below 2^32)");
    anneal.validate();
    learning_rate.validate(steps);
    for (const ParameterGroup& group : {logits, scales})
      require(group.learning_rate >= 0 && group.weight_decay >= 0 && std::isfinite(group.learning_rate) &&
                  std::isfinite(group.weight_decay),
              "learning rates and weight decays must be non-negative and finite");
    for (const std::optional<double>& beta : {beta1, beta2})
      require(!beta || (*beta >= 0 && *beta < 1), "optimizer betas must be in [0, 1)");
  }
};

/// What the loop reports after each step.
struct StepReport {
  long step;
  long steps;
  double loss;  // the objective at the relaxed weights of this step
  double temperature;
  double logit_scale;
  double elapsed_seconds;
};

struct TrainReport {
  std::vector<double> losses;
  std::vector<double> step_seconds;

  double median_step_seconds() const {
    std::vector<double> sorted = step_seconds;
    if (sorted.empty()) return 0;
    std::nth_element(sorted.begin(), sorted.begin() + sorted.size() / 2, sorted.end());
    return sorted[sorted.size() / 2];
  }
};

namespace detail {

/// One quantizer in a run: its buffers, its optimizer states and the noise seed it samples with.
template <class Optimizer, class Quantizer>
struct Trainee {
  using Backend = typename Quantizer::Backend;
  using Real = typename Quantizer::Real;
  template <class T>
  using vector = typename Backend::template vector<T>;

  Quantizer& quantizer;
  std::uint64_t seed;
  GroupOptimizer<Optimizer, Backend> logit_optimizer, scale_optimizer;
  vector<Real> weight, weight_grad, parameter_grad;
  vector<Real> forward_parameters;  // the group parameters of the last forward pass
  RelaxationPoint<Real> point{};    // ... and its relaxation point

  Trainee(Quantizer& quantizer_, std::uint64_t seed_, const TrainConfig& config, double beta1, double beta2)
      : quantizer(quantizer_), seed(seed_),
        logit_optimizer(quantizer_.logits().size(), config.logits, beta1, beta2, config.epsilon),
        scale_optimizer(quantizer_.parameters().size(), config.scales, beta1, beta2, config.epsilon),
        weight(quantizer_.size()), weight_grad(quantizer_.size()), parameter_grad(quantizer_.parameters().size()) {}

  void forward(const AnnealConfig& anneal, long step, long steps) {
    point = Quantizer::relaxation_at(anneal, step, steps, seed);
    quantizer.forward(point, Backend::raw(weight));
  }

  /// Step `step`'s backward pass and optimizer steps from weight_grad, then (unless it is the
  /// last) step + 1's forward pass.
  void backward_update_and_forward(const AnnealConfig& anneal, long step, long steps, double rate_factor) {
    quantizer.parameter_gradient(Backend::raw(weight_grad), Backend::raw(parameter_grad));
    forward_parameters = quantizer.parameters();
    scale_optimizer.update(Backend::raw(quantizer.parameters()), Backend::raw(parameter_grad), step, rate_factor);
    quantizer.project_parameters();
    const auto logit_update = logit_optimizer.update_at(Backend::raw(quantizer.logits()), nullptr, step, rate_factor);
    if (step + 1 == steps) {
      quantizer.step_logits(point, Backend::raw(forward_parameters), Backend::raw(weight_grad), logit_update);
      return;
    }
    const RelaxationPoint<Real> next = Quantizer::relaxation_at(anneal, step + 1, steps, seed);
    quantizer.step_logits_and_forward(point, Backend::raw(forward_parameters), Backend::raw(weight_grad), logit_update,
                                      next, Backend::raw(weight));
    point = next;
  }
};

/// A one-weight objective (the Hessian objective) seen through the joint interface.
template <class Objective>
struct SingleWeightObjective {
  using Real = typename Objective::Real;
  Objective& objective;
  double value_and_gradient(long /*step*/, const std::array<const Real*, 1>& weights,
                            const std::array<Real*, 1>& gradients) {
    return objective.value_and_gradient(weights[0], gradients[0]);
  }
  double relative_error(const std::array<Matrix<float>, 1>& weights) { return objective.relative_error(weights[0]); }
};

/// The noise seed of the index-th quantizer of a joint run: the run's seed for the first, so a
/// single-quantizer run samples with exactly `seed`.
inline std::uint64_t trainee_seed(std::uint64_t seed, std::size_t index) {
  return seed + 0x9E3779B97F4A7C15ull * index;
}

template <class Optimizer, class Objective, std::size_t... Index, class... Quantizers>
TrainReport train_jointly(Objective& objective, const TrainConfig& config,
                          const std::function<void(const StepReport&)>& on_step, std::index_sequence<Index...>,
                          Quantizers&... quantizers) {
  using Real = typename std::tuple_element<0, std::tuple<Quantizers...>>::type::Real;
  static_assert((std::is_same<Real, typename Quantizers::Real>::value && ...),
                "jointly trained quantizers must share a scalar type");
  config.validate();
  const double beta1 = config.beta1.value_or(Optimizer::default_beta1);
  const double beta2 = config.beta2.value_or(Optimizer::default_beta2);
  std::tuple<Trainee<Optimizer, Quantizers>...> trainees{
      Trainee<Optimizer, Quantizers>(quantizers, trainee_seed(config.seed, Index), config, beta1, beta2)...};

  TrainReport report;
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  for (long step = 0; step < config.steps; ++step) {
    const Clock::time_point step_start = Clock::now();
    // Step 0's forward pass; each later one runs inside the step before (backward_update_and_forward).
    if (step == 0) (std::get<Index>(trainees).forward(config.anneal, step, config.steps), ...);
    const RelaxationPoint<Real> point = std::get<0>(trainees).point;
    const double loss = objective.value_and_gradient(
        step, std::array<const Real*, sizeof...(Index)>{Quantizers::Backend::raw(std::get<Index>(trainees).weight)...},
        std::array<Real*, sizeof...(Index)>{Quantizers::Backend::raw(std::get<Index>(trainees).weight_grad)...});
    require(std::isfinite(loss), "the objective became non-finite at step " + std::to_string(step));
    const double rate_factor = config.learning_rate.factor(step, config.steps);
    (std::get<Index>(trainees).backward_update_and_forward(config.anneal, step, config.steps, rate_factor), ...);

    const Clock::time_point now = Clock::now();
    report.losses.push_back(loss);
    report.step_seconds.push_back(std::chrono::duration<double>(now - step_start).count());
    if (on_step)
      on_step({step, config.steps, loss, static_cast<double>(point.temperature), static_cast<double>(point.logit_scale),
               std::chrono::duration<double>(now - start).count()});
  }
  return report;
}

}  // namespace detail

/// Trains several quantizers together on one objective (the SwiGLU block objective trains
/// gate, up and down jointly). The objective provides
///   double value_and_gradient(long step, std::array<const Real*, N> weights, std::array<Real*, N> gradients)
/// with the relaxed weights and dL/dweights in the quantizers' order. Each quantizer samples its
/// own noise (seeds derived from config.seed) and has its own optimizer state.
template <class Optimizer = Lion, class Objective, class... Quantizers>
TrainReport train_jointly(Objective& objective, const TrainConfig& config,
                          const std::function<void(const StepReport&)>& on_step, Quantizers&... quantizers) {
  return detail::train_jointly<Optimizer>(objective, config, on_step, std::index_sequence_for<Quantizers...>{},
                                          quantizers...);
}

/// Trains `quantizer` on a one-weight `objective` (HessianObjective) with optimizer policy
/// `Optimizer` (Lion, Adam). `on_step`, when given, is called after every step (progress output,
/// logging).
template <class Optimizer = Lion, class Quantizer, class Objective>
TrainReport train(Quantizer& quantizer, Objective& objective, const TrainConfig& config,
                  const std::function<void(const StepReport&)>& on_step = {}) {
  static_assert(std::is_same<typename Quantizer::Real, typename Objective::Real>::value,
                "quantizer and objective must share a scalar type");
  require(objective.rows() == quantizer.rows() && objective.cols() == quantizer.cols(),
          "the objective's layer is " + std::to_string(objective.rows()) + " x " + std::to_string(objective.cols()) +
              " but the quantizer's is " + std::to_string(quantizer.rows()) + " x " + std::to_string(quantizer.cols()));
  detail::SingleWeightObjective<Objective> single{objective};
  return train_jointly<Optimizer>(single, config, on_step, quantizer);
}

}  // namespace gsq
