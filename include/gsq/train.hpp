// gsq/train.hpp -- the optimizer loop: anneal, sample, evaluate the objective, back-propagate,
// update (DESIGN sections 2-3). One call quantizes one layer.
//
//   for t in 0 .. steps-1:
//     point      = Quantizer::relaxation_at(anneal, t, steps, seed)   temperature, logit scale
//     weight     = quantizer.forward(point)                           element-wise (functors)
//     loss, dL/dweight = objective.value_and_gradient(weight)         one matrix product
//     dL/dlogits, dL/dscales = quantizer.backward(point, dL/dweight)  element-wise + per group
//     Optimizer updates logits (decoupled weight decay) and scales    element-wise
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "gsq/error.hpp"
#include "gsq/optimizer.hpp"
#include "gsq/quantizer.hpp"

namespace gsq {

/// The run-time settings of one GSQ run; defaults are the reference's (DESIGN section 3).
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

/// Trains `quantizer` on `objective` with optimizer policy `Optimizer` (Lion, Adam).
/// `on_step`, when given, is called after every step (progress output, logging).
template <class Optimizer = Lion, class Quantizer, class Objective>
TrainReport train(Quantizer& quantizer, Objective& objective, const TrainConfig& config,
                  const std::function<void(const StepReport&)>& on_step = {}) {
  using Backend = typename Quantizer::Backend;
  using Real = typename Quantizer::Real;
  static_assert(std::is_same<Real, typename Objective::Real>::value, "quantizer and objective must share a scalar type");
  config.validate();
  require(objective.rows() == quantizer.rows() && objective.cols() == quantizer.cols(),
          "the objective's layer is " + std::to_string(objective.rows()) + " x " + std::to_string(objective.cols()) +
              " but the quantizer's is " + std::to_string(quantizer.rows()) + " x " + std::to_string(quantizer.cols()));

  const double beta1 = config.beta1.value_or(Optimizer::default_beta1);
  const double beta2 = config.beta2.value_or(Optimizer::default_beta2);
  GroupOptimizer<Optimizer, Backend> logit_optimizer(quantizer.logits().size(), config.logits, beta1, beta2, config.epsilon);
  GroupOptimizer<Optimizer, Backend> scale_optimizer(quantizer.parameters().size(), config.scales, beta1, beta2, config.epsilon);
  typename Backend::template vector<Real> weight(quantizer.size()), weight_grad(quantizer.size()),
      logit_grad(quantizer.logits().size()), parameter_grad(quantizer.parameters().size());

  TrainReport report;
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  for (long step = 0; step < config.steps; ++step) {
    const Clock::time_point step_start = Clock::now();
    const auto point = Quantizer::relaxation_at(config.anneal, step, config.steps, config.seed);
    quantizer.forward(point, Backend::raw(weight));
    const double loss = objective.value_and_gradient(Backend::raw(weight), Backend::raw(weight_grad));
    require(std::isfinite(loss), "the objective became non-finite at step " + std::to_string(step));
    quantizer.backward(point, Backend::raw(weight_grad), Backend::raw(logit_grad), Backend::raw(parameter_grad));
    const double rate_factor = config.learning_rate.factor(step, config.steps);
    logit_optimizer.update(Backend::raw(quantizer.logits()), Backend::raw(logit_grad), step, rate_factor);
    scale_optimizer.update(Backend::raw(quantizer.parameters()), Backend::raw(parameter_grad), step, rate_factor);

    const Clock::time_point now = Clock::now();
    report.losses.push_back(loss);
    report.step_seconds.push_back(std::chrono::duration<double>(now - step_start).count());
    if (on_step)
      on_step({step, config.steps, loss, static_cast<double>(point.temperature), static_cast<double>(point.logit_scale),
               std::chrono::duration<double>(now - start).count()});
  }
  return report;
}

}  // namespace gsq
