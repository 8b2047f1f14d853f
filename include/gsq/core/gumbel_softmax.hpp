// gsq/core/gumbel_softmax.hpp -- the per-weight math of GSQ (docs/design.md section 2), written once as
// __host__ __device__ functors that Thrust runs on the host (OpenMP/C++) or on CUDA.
//
// Each weight (row-major element e) has K logits a_k over the grid's candidates d_k. At a
// relaxation point (temperature tau, logit scale kappa, seed, step):
//   p_k = softmax_k((kappa a_k + g_k) / tau),  g_k = Gumbel noise of (seed, step, e, k)
//   soft code q = sum_k p_k d_k;  weight = Parametrisation::weight(q, group parameters)
//   dL/da_k = (kappa / tau) p_k (d_k - q) dL/dq
// Candidates a shift grid masks out get probability 0. The forward pass saves p_k; the backward
// pass reads them and either overwrites them with dL/da_k or hands dL/da_k straight to the
// optimizer, so the pair costs one buffer the size of the logits and the noise is drawn once per
// step. Logits and everything laid out like them are in candidate tiles
// (gsq/backend/candidate_tiles.hpp): the functors over them take (element, tile shift) and run
// through Backend::for_each_tile.
#pragma once

#include <cstddef>
#include <cstdint>

#include "gsq/common/config.hpp"
#include "gsq/backend/candidate_tiles.hpp"
#include "gsq/core/group_layout.hpp"
#include "gsq/core/philox.hpp"
#include "gsq/detail/fast_math.hpp"

namespace gsq {

/// The run-time values of one optimizer step that the relaxation depends on.
template <class Real>
struct RelaxationPoint {
  Real temperature;
  Real logit_scale;
  std::uint64_t seed;
  std::uint32_t step;
};

namespace detail {

/// One weight's relaxed sample: probabilities, the soft code and the code the forward pass uses.
template <class Grid, class Estimator, class Real>
struct Sample {
  static constexpr int K = Grid::candidate_count;
  Real probability[K];
  Real soft_code;     // sum_k p_k d_k
  Real forward_code;  // soft_code, or the sampled candidate under a hard-forward estimator

  GSQ_HOST_DEVICE Sample(const Real* logits, std::size_t shift, std::size_t element, int base,
                         const RelaxationPoint<Real>& point) {
    Real noise[K] = {};
    if (Estimator::noisy) gumbel_noise<Real, K>(point.seed, point.step, element, noise);
    // Arithmetic masks instead of branches over K (a masked candidate sits 1e30 below the rest,
    // then gets weight 0), so the per-element loop around this vectorises. Full grids test the
    // starting code too (always on the grid, so nothing changes): GCC sizes a SIMD loop by the
    // narrowest type it reads, and that byte per weight makes it run four float vectors side by
    // side, hiding the latency of Philox's and the polynomials' dependency chains (the 2-bit
    // forward pass runs 1.6x faster).
    const bool on_grid = base >= Grid::min_level;
    Real admissible[K];
    Real largest = Real(-1e30);
    int sampled = 0;
    GSQ_UNROLL
    for (int k = 0; k < K; ++k) {
      admissible[k] = Grid::admissible(base, k) & on_grid ? Real(1) : Real(0);
      probability[k] = (point.logit_scale * logits[CandidateTiles<K>::at(shift, k, element)] + noise[k]) /
                           point.temperature *
                           admissible[k] + (admissible[k] - Real(1)) * Real(1e30);
      sampled = probability[k] > largest ? k : sampled;
      largest = probability[k] > largest ? probability[k] : largest;
    }
    Real total = Real(0);  // >= 1: the largest term is exp(0)
    GSQ_UNROLL
    for (int k = 0; k < K; ++k) {
      probability[k] = exp_fast(probability[k] - largest) * admissible[k];
      total += probability[k];
    }
    soft_code = Real(0);
    const Real inverse_total = Real(1) / total;  // one division, not K
    GSQ_UNROLL
    for (int k = 0; k < K; ++k) {
      probability[k] *= inverse_total;
      soft_code += probability[k] * static_cast<Real>(Grid::candidate(base, k));
    }
    forward_code = Estimator::hard_forward ? static_cast<Real>(Grid::candidate(base, sampled)) : soft_code;
  }
};

}  // namespace detail

/// Forward: writes each weight's forward code, its soft (or hard-sampled) weight, and the
/// probabilities the backward pass needs.
template <class Grid, class Estimator, class Parametrisation, class Real>
struct RelaxedForward {
  static constexpr int candidate_count = Grid::candidate_count;
  const Real* logits;          // K per weight, in candidate tiles
  const std::int8_t* base;     // starting codes (the centre of a shift grid)
  const Real* parameters;      // Parametrisation::parameter_count per group
  GroupLayout layout;
  RelaxationPoint<Real> point;
  Real* code;                  // out: forward code per weight
  Real* weight;                // out: weight per element
  Real* probability;           // out: p_k, laid out like the logits

  GSQ_HOST_DEVICE void operator()(std::size_t element, std::size_t shift) const {
    constexpr int K = Grid::candidate_count;
    const detail::Sample<Grid, Estimator, Real> sample(logits, shift, element, base[element], point);
    GSQ_UNROLL
    for (int k = 0; k < K; ++k) probability[CandidateTiles<K>::at(shift, k, element)] = sample.probability[k];
    code[element] = sample.forward_code;
    weight[element] = Parametrisation::weight(
        sample.forward_code, parameters + layout.group_of(element) * Parametrisation::parameter_count);
  }
};

/// Where RelaxedLogitGradient puts dL/da_k of logit i: stored (over the probabilities), or
/// handed to an optimizer's Update::apply, which steps the logit without a pass of its own.
template <class Real>
struct StoreGradient {
  Real* gradient;
  GSQ_HOST_DEVICE void apply(std::size_t i, Real value) const { gradient[i] = value; }
};

/// Backward to the logits, from the probabilities the forward pass saved: the softmax Jacobian
/// applied without forming it (docs/design.md section 2). Every estimator back-propagates through the
/// soft sample. Reading the saved probabilities gives the values a replay of the noise would
/// give, without drawing it a second time.
template <class Grid, class Parametrisation, class Real, class Sink = StoreGradient<Real>>
struct RelaxedLogitGradient {
  static constexpr int candidate_count = Grid::candidate_count;
  const std::int8_t* base;
  const Real* parameters;
  GroupLayout layout;
  RelaxationPoint<Real> point;
  const Real* weight_grad;   // dL/dweight per element
  const Real* probability;   // p_k from RelaxedForward
  Sink sink;                 // receives dL/da_k at the logit's index (may write over `probability`)

  GSQ_HOST_DEVICE void operator()(std::size_t element, std::size_t shift) const {
    constexpr int K = Grid::candidate_count;
    Real p[K];
    Real soft_code = Real(0);  // summed in the order detail::Sample sums it
    GSQ_UNROLL
    for (int k = 0; k < K; ++k) {
      p[k] = probability[CandidateTiles<K>::at(shift, k, element)];
      soft_code += p[k] * static_cast<Real>(Grid::candidate(base[element], k));
    }
    const Real code_grad = Parametrisation::code_gradient(
        weight_grad[element], parameters + layout.group_of(element) * Parametrisation::parameter_count);
    const Real factor = point.logit_scale / point.temperature * code_grad;
    GSQ_UNROLL
    for (int k = 0; k < K; ++k)
      sink.apply(CandidateTiles<K>::at(shift, k, element),
                 factor * p[k] * (static_cast<Real>(Grid::candidate(base[element], k)) - soft_code));
  }
};

/// Step t's backward pass with the logits' optimizer step, then step t + 1's forward pass from
/// the updated logits, weight by weight in one pass: the logits are read once instead of twice,
/// and the memory traffic of the backward pass overlaps the noise's arithmetic of the forward
/// pass. The same values as the two passes one after the other.
template <class Grid, class Estimator, class Parametrisation, class Real, class LogitUpdate>
struct LogitStepAndForward {
  static constexpr int candidate_count = Grid::candidate_count;
  RelaxedLogitGradient<Grid, Parametrisation, Real, LogitUpdate> step;  // on step t's group parameters
  RelaxedForward<Grid, Estimator, Parametrisation, Real> next;          // on step t + 1's

  GSQ_HOST_DEVICE void operator()(std::size_t element, std::size_t shift) const {
    step(element, shift);
    next(element, shift);
  }
};

/// Backward to the group parameters: one functor call per group sums its weights' terms in a
/// fixed order, so the result does not depend on the thread count.
template <class Parametrisation, class Real>
struct GroupParameterGradient {
  const Real* weight_grad;
  const Real* code;  // the forward codes saved by RelaxedForward
  GroupLayout layout;
  Real* parameter_grad;  // out: parameter_count per group

  GSQ_HOST_DEVICE void operator()(std::size_t group) const {
    constexpr int P = Parametrisation::parameter_count;
    Real grad[P] = {};
    const std::size_t row = group / static_cast<std::size_t>(layout.groups_per_row);
    const std::size_t first = row * static_cast<std::size_t>(layout.cols) +
                              (group % static_cast<std::size_t>(layout.groups_per_row)) *
                                  static_cast<std::size_t>(layout.group_width);
    for (std::size_t e = first; e < first + static_cast<std::size_t>(layout.group_width); ++e)
      Parametrisation::add_parameter_gradient(weight_grad[e], code[e], grad);
    for (int i = 0; i < P; ++i) parameter_grad[group * P + i] = grad[i];
  }
};

/// The final code of each weight: its most likely admissible candidate, argmax_k a_k.
template <class Grid, class Real>
struct ArgmaxCode {
  static constexpr int candidate_count = Grid::candidate_count;
  const Real* logits;
  const std::int8_t* base;
  std::int8_t* code;  // out

  GSQ_HOST_DEVICE void operator()(std::size_t element, std::size_t shift) const {
    constexpr int K = Grid::candidate_count;
    const int centre = base[element];
    int best = -1;
    GSQ_UNROLL
    for (int k = 0; k < K; ++k)
      if (Grid::admissible(centre, k) &&
          (best < 0 || logits[CandidateTiles<K>::at(shift, k, element)] >
                           logits[CandidateTiles<K>::at(shift, best, element)]))
        best = k;
    code[element] = static_cast<std::int8_t>(Grid::candidate(centre, best));
  }
};

/// Logit initialisation from a starting point (docs/design.md section 2): with t = Q / s the starting
/// weight in grid units, z_k = -0.5 (t - d_k)^2 centred over the admissible k, and
/// a_k = std (xi_k + strength z_k), xi ~ N(0, 1). The starting code is the most likely one, and
/// the argmax for most weights (with the reference's std 0.01 and strength 6, the noise turns a
/// few percent of them to a neighbouring level).
template <class Grid, class Real>
struct InitialLogits {
  static constexpr int candidate_count = Grid::candidate_count;
  const Real* target;  // Q / s per element
  const std::int8_t* base;
  Real noise_std;
  Real strength;
  std::uint64_t seed;
  Real* logits;  // out, in candidate tiles

  GSQ_HOST_DEVICE void operator()(std::size_t element, std::size_t shift) const {
    constexpr int K = Grid::candidate_count;
    Real xi[K];
    normal_noise<Real, K>(seed, element, xi);
    Real closeness[K];
    Real mean = Real(0);
    int admissible = 0;
    GSQ_UNROLL
    for (int k = 0; k < K; ++k) {
      const Real distance = target[element] - static_cast<Real>(Grid::candidate(base[element], k));
      closeness[k] = Real(-0.5) * distance * distance;
      if (Grid::admissible(base[element], k)) mean += closeness[k], ++admissible;
    }
    mean /= static_cast<Real>(admissible);
    GSQ_UNROLL
    for (int k = 0; k < K; ++k)
      logits[CandidateTiles<K>::at(shift, k, element)] = noise_std * (xi[k] + strength * (closeness[k] - mean));
  }
};

}  // namespace gsq
