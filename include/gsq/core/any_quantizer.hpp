// gsq/core/any_quantizer.hpp -- a quantizer whose grid, grouping and parametrisation are chosen
// at run time: what a model whose linears differ in format (a llama.cpp mix: attn_v in Q6_K
// beside q/k in Q4_K) trains jointly on one objective.
//
//   gsq::AnyQuantizer<> any(gsq::KQuantQuantizer<gsq::Q4K>(start, init));
//   gsq::train_jointly(objective, config, on_step, any, other);   // as any Quantizer
//   const auto& held = any.held<gsq::KQuantQuantizer<gsq::Q4K>>(); // its hard result
//
// It offers the interface gsq::train drives (gsq/core/train.hpp), each call passed on to the
// quantizer held: one virtual call per pass over a layer's logits, nothing per weight. The
// schedule, optimizer and backend stay compile-time: every quantizer of a run shares them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "gsq/backend/host.hpp"
#include "gsq/common/error.hpp"
#include "gsq/core/quantizer.hpp"
#include "gsq/policy/optimizer.hpp"
#include "gsq/policy/schedule.hpp"

namespace gsq {

template <class Optimizer = Lion, class Schedule = LinearAnneal, class Backend_ = Host<float>>
class AnyQuantizer {
 public:
  using Backend = Backend_;
  using Real = typename Backend::Real;
  template <class T>
  using vector = typename Backend::template vector<T>;
  using LogitUpdate = typename Optimizer::template Update<Real>;

  template <class Quantizer>
  explicit AnyQuantizer(Quantizer quantizer) : held_(std::make_unique<Held<Quantizer>>(std::move(quantizer))) {
    static_assert(std::is_same<typename Quantizer::Schedule, Schedule>::value &&
                      std::is_same<typename Quantizer::Backend, Backend>::value,
                  "the quantizers of one run share its schedule and backend");
  }

  /// The quantizer held, which must be a `Quantizer`.
  template <class Quantizer>
  const Quantizer& held() const {
    const auto* held = dynamic_cast<const Held<Quantizer>*>(held_.get());
    require(held != nullptr, "AnyQuantizer: asked for a quantizer of another type than the one it holds");
    return held->quantizer;
  }

  static RelaxationPoint<Real> relaxation_at(const AnnealConfig& anneal, long step, long steps, std::uint64_t seed) {
    return relaxation_point<Schedule, Real>(anneal, step, steps, seed);
  }

  long rows() const { return held_->rows(); }
  long cols() const { return held_->cols(); }
  std::size_t size() const { return static_cast<std::size_t>(rows() * cols()); }
  vector<Real>& logits() { return held_->logits(); }
  vector<Real>& parameters() { return held_->parameters(); }
  std::vector<std::int8_t> codes() const { return held_->codes(); }
  void forward(const RelaxationPoint<Real>& point, Real* weight) { held_->forward(point, weight); }
  void parameter_gradient(const Real* weight_grad, Real* parameter_grad) { held_->parameter_gradient(weight_grad, parameter_grad); }
  void project_parameters() { held_->project_parameters(); }
  void step_logits(const RelaxationPoint<Real>& point, const Real* forward_parameters, const Real* weight_grad,
                   const LogitUpdate& update) {
    held_->step_logits(point, forward_parameters, weight_grad, update);
  }
  void step_logits_and_forward(const RelaxationPoint<Real>& point, const Real* forward_parameters, const Real* weight_grad,
                               const LogitUpdate& update, const RelaxationPoint<Real>& next, Real* weight) {
    held_->step_logits_and_forward(point, forward_parameters, weight_grad, update, next, weight);
  }

 private:
  struct Interface {
    virtual ~Interface() = default;
    virtual long rows() const = 0;
    virtual long cols() const = 0;
    virtual vector<Real>& logits() = 0;
    virtual vector<Real>& parameters() = 0;
    virtual std::vector<std::int8_t> codes() const = 0;
    virtual void forward(const RelaxationPoint<Real>& point, Real* weight) = 0;
    virtual void parameter_gradient(const Real* weight_grad, Real* parameter_grad) = 0;
    virtual void project_parameters() = 0;
    virtual void step_logits(const RelaxationPoint<Real>& point, const Real* forward_parameters, const Real* weight_grad,
                             const LogitUpdate& update) = 0;
    virtual void step_logits_and_forward(const RelaxationPoint<Real>& point, const Real* forward_parameters,
                                         const Real* weight_grad, const LogitUpdate& update,
                                         const RelaxationPoint<Real>& next, Real* weight) = 0;
  };

  template <class Quantizer>
  struct Held final : Interface {
    Quantizer quantizer;
    explicit Held(Quantizer quantizer_) : quantizer(std::move(quantizer_)) {}
    long rows() const override { return quantizer.rows(); }
    long cols() const override { return quantizer.cols(); }
    vector<Real>& logits() override { return quantizer.logits(); }
    vector<Real>& parameters() override { return quantizer.parameters(); }
    std::vector<std::int8_t> codes() const override { return quantizer.codes(); }
    void forward(const RelaxationPoint<Real>& point, Real* weight) override { quantizer.forward(point, weight); }
    void parameter_gradient(const Real* weight_grad, Real* parameter_grad) override {
      quantizer.parameter_gradient(weight_grad, parameter_grad);
    }
    void project_parameters() override { quantizer.project_parameters(); }
    void step_logits(const RelaxationPoint<Real>& point, const Real* forward_parameters, const Real* weight_grad,
                     const LogitUpdate& update) override {
      quantizer.step_logits(point, forward_parameters, weight_grad, update);
    }
    void step_logits_and_forward(const RelaxationPoint<Real>& point, const Real* forward_parameters, const Real* weight_grad,
                                 const LogitUpdate& update, const RelaxationPoint<Real>& next, Real* weight) override {
      quantizer.step_logits_and_forward(point, forward_parameters, weight_grad, update, next, weight);
    }
  };

  std::unique_ptr<Interface> held_;
};

}  // namespace gsq
