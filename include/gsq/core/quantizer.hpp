// gsq/core/quantizer.hpp -- the GSQ quantizer type that the policies compose into.
//
//   Quantizer<Grid, Grouping, Schedule, Estimator, Parametrisation, Backend>
//
//   Grid             Ternary, Int<2>, Int<3>, Int<4>          (gsq/policy/grid.hpp)
//   Grouping         GroupSize<G>, PerChannel                  (gsq/policy/grouping.hpp)
//   Schedule         LinearAnneal, CosineAnneal, ExponentialAnneal  (gsq/policy/schedule.hpp)
//   Estimator        Relaxed, StraightThrough, Deterministic   (gsq/policy/estimator.hpp)
//   Parametrisation  SymmetricScale, CodedScaleAndMin, CodedScale (gsq/policy/parametrisation.hpp)
//   Backend          Host<float>, Host<double>, Cuda<float>    (gsq/backend/)
//
// Defaults are the paper's choice, so `Quantizer<Int<2>>` is GSQ at 2 bits, group 128, linear
// annealing, the relaxed estimator, on the host. The quantizer holds the logits (K per weight),
// the group parameters and the gradient of the logits; it offers the relaxed forward pass, its
// backward pass, and the hard result. The optimizer loop that drives it is gsq::train (gsq/core/train.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <string>
#include <vector>

#include "gsq/backend/fwd.hpp"
#include "gsq/common/error.hpp"
#include "gsq/backend/candidate_tiles.hpp"
#include "gsq/core/group_layout.hpp"
#include "gsq/core/gumbel_softmax.hpp"
#include "gsq/format/quantized_tensor.hpp"
#include "gsq/policy/estimator.hpp"
#include "gsq/policy/grid.hpp"
#include "gsq/policy/grouping.hpp"
#include "gsq/policy/parametrisation.hpp"
#include "gsq/policy/schedule.hpp"

namespace gsq {

/// The run-time end points of the temperature and logit-scale schedules (reference defaults).
struct AnnealConfig {
  double tau_start = 2.0;
  double tau_end = 0.05;
  double kappa_start = 100.0;
  double kappa_end = 500.0;

  /// The relaxation divides by tau and multiplies by kappa in float: outside these bounds its
  /// logits overflow or vanish, and training fails part-way instead of here.
  static constexpr double min_temperature = 1e-6, max_logit_scale = 1e6;

  void validate() const {
    const auto text = [](double value) {  // %g: std::to_string writes 1e-300 as 0.000000
      char buffer[32];
      std::snprintf(buffer, sizeof buffer, "%g", value);
      return std::string(buffer);
    };
    require(tau_start >= min_temperature && tau_end >= min_temperature && std::isfinite(tau_start) && std::isfinite(tau_end),
            "the temperature end points must be finite and at least 1e-6 (tau " + text(tau_start) + " -> " + text(tau_end) + ")");
    require(kappa_start > 0 && kappa_end > 0 && kappa_start <= max_logit_scale && kappa_end <= max_logit_scale,
            "the logit-scale end points must be positive and at most 1e6 (kappa " + text(kappa_start) + " -> " +
                text(kappa_end) + ")");
  }
};

/// How the logits start around a starting point (reference defaults, docs/design.md section 2).
struct LogitInit {
  double noise_std = 0.01;
  double strength = 6.0;
  std::uint64_t seed = 0;
};

/// Temperature and logit scale at `step` of `steps` under the Schedule shape.
template <class Schedule, class Real>
RelaxationPoint<Real> relaxation_point(const AnnealConfig& anneal, long step, long steps, std::uint64_t seed) {
  const double progress = schedule_progress(step, steps);
  return {static_cast<Real>(Schedule::at(anneal.tau_start, anneal.tau_end, progress)),
          static_cast<Real>(Schedule::at(anneal.kappa_start, anneal.kappa_end, progress)), seed,
          static_cast<std::uint32_t>(step)};
}

template <class Grid_ = Int<2>, class Grouping_ = GroupSize<128>, class Schedule_ = LinearAnneal,
          class Estimator_ = Relaxed, class Parametrisation_ = SymmetricScale, class Backend_ = Host<float>>
class Quantizer {
 public:
  using Grid = Grid_;
  using Grouping = Grouping_;
  using Schedule = Schedule_;
  using Estimator = Estimator_;
  using Parametrisation = Parametrisation_;
  using Backend = Backend_;
  using Real = typename Backend::Real;
  template <class T>
  using vector = typename Backend::template vector<T>;
  static constexpr int candidate_count = Grid::candidate_count;
  static constexpr int parameter_count = Parametrisation::parameter_count;

  /// Starts from `start` (RTN, GPTQ, ... on the same grid and grouping): its codes become the
  /// logits' argmax and its scales the initial scales.
  explicit Quantizer(const QuantizedTensor& start, const LogitInit& init = {})
      : rows_(start.rows), cols_(start.cols), layout_(GroupLayout::of<Grouping>(start.cols)) {
    static_assert(parameter_count == 1, "a QuantizedTensor holds one scale per group");
    require(start.grid == grid_spec<Grid>(), std::string("the starting point is on the ") + start.grid.name +
                                                 " grid but the quantizer's grid is " + Grid::name);
    require(start.group_width == layout_.group_width,
            "the starting point has groups of " + std::to_string(start.group_width) +
                " columns but the quantizer's grouping has " + std::to_string(layout_.group_width));
    require(std::all_of(start.scales.begin(), start.scales.end(), [](float s) { return std::isfinite(s) && s > 0; }),
            "the starting point's scales must be positive and finite");
    initialise_from_codes(start.codes, start.scales, init);
  }

  /// Starts from codes on the grid (rows x cols, row-major) and parameter_count finite
  /// parameters per group (a K-quant sub-block's scale and min, ...).
  Quantizer(long rows, long cols, const std::vector<std::int8_t>& codes, const std::vector<float>& parameters,
            const LogitInit& init = {})
      : rows_(rows), cols_(cols), layout_(GroupLayout::of<Grouping>(cols)) {
    require(rows > 0, "a layer needs at least one row");
    require(std::all_of(parameters.begin(), parameters.end(), [](float p) { return std::isfinite(p); }),
            "the starting point's group parameters must be finite");
    initialise_from_codes(codes, parameters, init);
  }

  /// Starts from any weights `start` with the given scales (rows x groups): the logits favour
  /// the grid level nearest to start / scale.
  Quantizer(const Matrix<float>& start, const std::vector<float>& scales, const LogitInit& init = {})
      : rows_(start.rows), cols_(start.cols), layout_(GroupLayout::of<Grouping>(start.cols)) {
    static_assert(parameter_count == 1, "starting from weights and scales assumes one scale per group");
    require_finite_nonempty(start, "the starting weights");
    require(scales.size() == static_cast<std::size_t>(rows_ * layout_.groups_per_row),
            "expected " + std::to_string(rows_ * layout_.groups_per_row) + " scales, got " + std::to_string(scales.size()));
    std::vector<std::int8_t> base(start.size());
    std::vector<Real> target(start.size());
    for (std::size_t e = 0; e < start.size(); ++e) {
      const float scale = scales[layout_.group_of(e)];
      if (!(std::isfinite(scale) && scale > 0)) throw Error("scales must be positive and finite");
      target[e] = static_cast<Real>(start.values[e] / scale);
      base[e] = static_cast<std::int8_t>(std::fmin(std::fmax(std::nearbyint(target[e]), Grid::min_level), Grid::max_level));
    }
    initialise(base, target, std::vector<Real>(scales.begin(), scales.end()), init);
  }

  long rows() const { return rows_; }
  long cols() const { return cols_; }
  std::size_t size() const { return static_cast<std::size_t>(rows_ * cols_); }
  const GroupLayout& layout() const { return layout_; }

  static RelaxationPoint<Real> relaxation_at(const AnnealConfig& anneal, long step, long steps, std::uint64_t seed) {
    return relaxation_point<Schedule, Real>(anneal, step, steps, seed);
  }

  /// Relaxed forward pass: writes the soft weights (rows x cols, backend memory) and keeps the
  /// forward codes and probabilities for the backward pass.
  void forward(const RelaxationPoint<Real>& point, Real* weight) {
    Backend::for_each_tile(size(), relaxed_forward(point, weight));
  }

  /// Backward pass of the last forward at the same point: from dL/dweight, writes
  /// dL/dparameters (per group) and leaves dL/dlogits in logit_gradient() (laid out as the logits).
  void backward(const RelaxationPoint<Real>& point, const Real* weight_grad, Real* parameter_grad) {
    parameter_gradient(weight_grad, parameter_grad);
    Backend::for_each_tile(size(), logit_gradient_into(point, Backend::raw(parameters_), weight_grad,
                                                       StoreGradient<Real>{Backend::raw(logit_grad_)}));
  }

  /// The training loop's backward pass, in two halves around the group parameters' optimizer
  /// step. First dL/dparameters of the last forward pass, from dL/dweight:
  void parameter_gradient(const Real* weight_grad, Real* parameter_grad) {
    Backend::for_each_index(static_cast<std::size_t>(rows_ * layout_.groups_per_row),
                            GroupParameterGradient<Parametrisation, Real>{weight_grad, Backend::raw(code_),
                                                                          layout_, parameter_grad});
  }

  /// Then the logits' gradient on the group parameters the forward pass at `point` used
  /// (`forward_parameters`: the current ones may have stepped since), each logit stepped by
  /// logit_update.apply(i, dL/da_i) (an optimizer policy's Update) as its gradient is computed:
  /// no gradient buffer, and one pass over the logits fewer. logit_gradient() keeps the forward's
  /// probabilities.
  template <class LogitUpdate>
  void step_logits(const RelaxationPoint<Real>& point, const Real* forward_parameters, const Real* weight_grad,
                   const LogitUpdate& logit_update) {
    Backend::for_each_tile(size(), logit_gradient_into(point, forward_parameters, weight_grad, logit_update));
  }

  /// step_logits, then the forward pass at `next` on the current group parameters, in one pass
  /// over the logits (LogitStepAndForward): the same values as step_logits and forward in turn.
  template <class LogitUpdate>
  void step_logits_and_forward(const RelaxationPoint<Real>& point, const Real* forward_parameters,
                               const Real* weight_grad, const LogitUpdate& logit_update,
                               const RelaxationPoint<Real>& next, Real* weight) {
    Backend::for_each_tile(size(), LogitStepAndForward<Grid, Estimator, Parametrisation, Real, LogitUpdate>{
                                        logit_gradient_into(point, forward_parameters, weight_grad, logit_update),
                                        relaxed_forward(next, weight)});
  }

  /// Puts each group's parameters back into the format after an optimizer step.
  void project_parameters() {
    Backend::for_each_index(parameters_.size() / parameter_count,
                            detail::ProjectParameters<Parametrisation, Real>{Backend::raw(parameters_)});
  }

  /// dL/dlogits of the last backward() (after forward() and before backward(): the
  /// probabilities), laid out as the logits.
  const vector<Real>& logit_gradient() const { return logit_grad_; }

  /// The hard codes: each weight's argmax candidate (rows x cols, on the host).
  std::vector<std::int8_t> codes() const {
    vector<std::int8_t> codes(size());
    Backend::for_each_tile(size(), ArgmaxCode<Grid, Real>{Backend::raw(logits_), Backend::raw(base_), Backend::raw(codes)});
    return Backend::to_host(codes);
  }

  /// The hard result: each weight's argmax candidate and the learned scales.
  QuantizedTensor result() const {
    static_assert(parameter_count == 1, "a QuantizedTensor holds one scale per group");
    const std::vector<Real> scales = Backend::to_host(parameters_);
    return {grid_spec<Grid>(), rows_, cols_, layout_.group_width, codes(), std::vector<float>(scales.begin(), scales.end())};
  }

  /// K per weight, in candidate tiles (gsq/backend/candidate_tiles.hpp).
  vector<Real>& logits() { return logits_; }
  const vector<Real>& logits() const { return logits_; }
  vector<Real>& parameters() { return parameters_; }
  const vector<Real>& parameters() const { return parameters_; }

 private:
  void initialise_from_codes(const std::vector<std::int8_t>& codes, const std::vector<float>& parameters,
                             const LogitInit& init) {
    require(codes.size() == size(), "the starting point holds " + std::to_string(codes.size()) + " codes for a " +
                                        std::to_string(rows_) + " x " + std::to_string(cols_) + " layer");
    const std::size_t expected = static_cast<std::size_t>(rows_ * layout_.groups_per_row * parameter_count);
    require(parameters.size() == expected, "the starting point holds " + std::to_string(parameters.size()) +
                                               " group parameters, expected " + std::to_string(expected));
    for (std::size_t e = 0; e < codes.size(); ++e)
      if (codes[e] < Grid::min_level || codes[e] > Grid::max_level)  // not require(): no message per element
        throw Error("starting code " + std::to_string(codes[e]) + " at element " + std::to_string(e) +
                    " is outside the " + Grid::name + " grid");
    initialise(codes, std::vector<Real>(codes.begin(), codes.end()), std::vector<Real>(parameters.begin(), parameters.end()), init);
  }

  void initialise(const std::vector<std::int8_t>& base, const std::vector<Real>& target,
                  const std::vector<Real>& parameters, const LogitInit& init) {
    base_ = Backend::from_host(base);
    parameters_ = Backend::from_host(parameters);
    code_ = vector<Real>(size());
    logits_ = vector<Real>(CandidateTiles<candidate_count>::size(size()));
    logit_grad_ = vector<Real>(logits_.size());
    const vector<Real> device_target = Backend::from_host(target);
    Backend::for_each_tile(size(), InitialLogits<Grid, Real>{Backend::raw(device_target), Backend::raw(base_),
                                                             static_cast<Real>(init.noise_std),
                                                             static_cast<Real>(init.strength), init.seed,
                                                             Backend::raw(logits_)});
  }

  RelaxedForward<Grid, Estimator, Parametrisation, Real> relaxed_forward(const RelaxationPoint<Real>& point, Real* weight) {
    return {Backend::raw(logits_), Backend::raw(base_), Backend::raw(parameters_), layout_, point,
            Backend::raw(code_),   weight,              Backend::raw(logit_grad_)};
  }

  template <class Sink>
  RelaxedLogitGradient<Grid, Parametrisation, Real, Sink> logit_gradient_into(const RelaxationPoint<Real>& point,
                                                                             const Real* forward_parameters,
                                                                             const Real* weight_grad, const Sink& sink) {
    return {Backend::raw(base_), forward_parameters, layout_, point, weight_grad, Backend::raw(logit_grad_), sink};
  }

  long rows_, cols_;
  GroupLayout layout_;
  vector<std::int8_t> base_;  // starting codes: the centre of a shift grid
  vector<Real> logits_;       // K per weight, in candidate tiles (gsq/backend/candidate_tiles.hpp)
  vector<Real> parameters_;   // Parametrisation::parameter_count per group
  vector<Real> code_;         // forward codes of the last forward pass
  vector<Real> logit_grad_;   // the last forward's probabilities, then the backward's dL/dlogits
};

}  // namespace gsq
