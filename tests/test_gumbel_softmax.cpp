// Tests of the relaxation (gsq/core/gumbel_softmax.hpp) through the quantizer that runs it
// (gsq/core/quantizer.hpp): analytic gradients of every estimator on every grid against central
// finite differences of the full loss L(logits, scales) = HessianObjective(forward(...)), in
// double; noise replay; the hard result; invalid construction.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

#include <gsq/gsq.hpp>

namespace {

constexpr long rows = 5, cols = 16, group_width = 8;

// The layers here are tiny and finite differences run thousands of passes: one thread avoids
// paying a parallel region's start-up each time, which dominates on a loaded machine. That
// results do not depend on the thread count is tested in test_train.cpp.
const bool single_threaded = (gsq::set_host_threads(1), true);

template <class Grid, class Estimator>
using DoubleQuantizer =
    gsq::Quantizer<Grid, gsq::GroupSize<group_width>, gsq::LinearAnneal, Estimator, gsq::SymmetricScale, gsq::Host<double>>;
using Objective = gsq::HessianObjective<gsq::Host<double>>;
using Point = gsq::RelaxationPoint<double>;
#define GSQ_ALL_GRIDS gsq::Ternary, gsq::Int<2>, gsq::Int<3>, gsq::Int<4>

// A moderate temperature and logit scale keep the softmax far from one-hot, so every candidate
// carries gradient.
constexpr Point point{1.0, 3.0, 42, 5};

/// The level candidate k stands for: every level on a full grid, the starting code plus
/// {-2 .. 2} on a shift grid (docs/design.md section 2), whether on the grid or not.
template <class Grid>
constexpr bool is_shift_grid() {
  return Grid::candidate_count < Grid::max_level - Grid::min_level + 1;
}
template <class Grid>
int candidate_level(int base, int k) {
  return is_shift_grid<Grid>() ? base + k - 2 : Grid::min_level + k;
}
template <class Grid>
bool on_grid(int level) {
  return level >= Grid::min_level && level <= Grid::max_level;
}

/// Where logit k of element e lives: weights in tiles of 64, candidate-major within a tile
/// (gsq/backend/candidate_tiles.hpp). The test layer spans a whole tile and part of a second.
template <class Grid>
std::size_t logit_index(std::size_t element, int k) {
  const std::size_t tile = element / 64, lane = element % 64;
  return (tile * Grid::candidate_count + static_cast<std::size_t>(k)) * 64 + lane;
}

/// Starting codes cycling through every level (so shift grids start at their edges too and mask
/// candidates), with random positive scales.
template <class Grid>
gsq::QuantizedTensor starting_point() {
  const gsq::GridSpec grid = gsq::grid_spec<Grid>();
  gsq::QuantizedTensor start{grid, rows, cols, group_width, {}, {}};
  for (long i = 0; i < rows * cols; ++i)
    start.codes.push_back(static_cast<std::int8_t>(grid.min_level + (5 * i) % grid.level_count()));
  std::mt19937 generator(3);
  std::uniform_real_distribution<float> scale(0.5f, 1.5f);
  for (long g = 0; g < rows * (cols / group_width); ++g) start.scales.push_back(scale(generator));
  return start;
}

/// The layer the start approximates: its dequantized weights plus noise, under H = X^T X / N
/// with correlated random inputs.
template <class Grid>
Objective layer_objective() {
  std::mt19937 generator(4);
  std::normal_distribution<double> normal;
  gsq::Matrix<double> weight = starting_point<Grid>().dequantize().template cast<double>();
  for (double& w : weight.values) w += 0.7 * normal(generator);
  gsq::Matrix<double> inputs(3 * cols, cols);
  for (long t = 0; t < inputs.rows; ++t) {
    const double shared = normal(generator);
    for (long c = 0; c < cols; ++c) inputs(t, c) = normal(generator) + 0.5 * shared;
  }
  return Objective::from_inputs(weight, inputs);
}

/// A quantizer at the start whose logits are replaced by reproducible values of order one, so
/// the probabilities are spread out rather than peaked at the starting code.
template <class Quantizer>
Quantizer spread_out_quantizer() {
  Quantizer quantizer(starting_point<typename Quantizer::Grid>());
  std::mt19937 generator(5);
  std::uniform_real_distribution<double> logit(-1.0, 1.0);
  for (double& a : quantizer.logits()) a = logit(generator);
  return quantizer;
}

template <class Quantizer>
std::vector<double> forward_weights(Quantizer& quantizer, const Point& at) {
  std::vector<double> weight(quantizer.size());
  quantizer.forward(at, weight.data());
  return weight;
}

template <class Quantizer>
double loss(Quantizer& quantizer, Objective& objective, const Point& at) {
  std::vector<double> weight = forward_weights(quantizer, at), gradient(weight.size());
  return objective.value_and_gradient(weight.data(), gradient.data());
}

struct Gradients {
  std::vector<double> weight;  // dL/dweight at the forward weights
  std::vector<double> logits;
  std::vector<double> parameters;
};

/// One forward, objective and backward pass at `at`.
template <class Quantizer>
Gradients analytic_gradients(Quantizer& quantizer, Objective& objective, const Point& at) {
  Gradients out{std::vector<double>(quantizer.size()), {}, std::vector<double>(quantizer.parameters().size())};
  std::vector<double> weight = forward_weights(quantizer, at);
  objective.value_and_gradient(weight.data(), out.weight.data());
  quantizer.backward(at, out.weight.data(), out.parameters.data());
  out.logits = quantizer.logit_gradient();
  return out;
}

/// Central differences of `function` with respect to each entry of `variables`, restored after.
std::vector<double> finite_differences(std::vector<double>& variables, const std::function<double()>& function) {
  const double step = 1e-6;
  std::vector<double> derivative(variables.size());
  for (std::size_t i = 0; i < variables.size(); ++i) {
    const double saved = variables[i];
    variables[i] = saved + step;
    const double plus = function();
    variables[i] = saved - step;
    const double minus = function();
    variables[i] = saved;
    derivative[i] = (plus - minus) / (2 * step);
  }
  return derivative;
}

void require_close(const std::vector<double>& analytic, const std::vector<double>& numeric, const char* what) {
  REQUIRE(analytic.size() == numeric.size());
  double largest = 0;
  for (const double g : numeric) largest = std::max(largest, std::fabs(g));
  REQUIRE(largest > 1e-3);  // the check has something to compare
  for (std::size_t i = 0; i < analytic.size(); ++i) {
    INFO(what << " " << i << ": analytic " << analytic[i] << ", finite difference " << numeric[i]);
    REQUIRE(std::fabs(analytic[i] - numeric[i]) <= 1e-6 * largest);
  }
}

/// Candidates a shift grid masks out take no part in the sample: zero gradient.
template <class Grid>
void require_masked_candidates_have_zero_gradient(const std::vector<double>& logit_grad) {
  const gsq::QuantizedTensor start = starting_point<Grid>();
  int masked = 0;
  for (std::size_t e = 0; e < start.codes.size(); ++e)
    for (int k = 0; k < Grid::candidate_count; ++k) {
      if (on_grid<Grid>(candidate_level<Grid>(start.codes[e], k))) continue;
      REQUIRE(logit_grad[logit_index<Grid>(e, k)] == 0.0);
      ++masked;
    }
  REQUIRE((masked > 0) == is_shift_grid<Grid>());
}

/// For estimators whose forward pass is the soft sample: both gradients are those of the loss.
template <class Grid, class Estimator>
void require_gradients_of_the_loss() {
  auto quantizer = spread_out_quantizer<DoubleQuantizer<Grid, Estimator>>();
  Objective objective = layer_objective<Grid>();
  const Gradients analytic = analytic_gradients(quantizer, objective, point);
  const auto full_loss = [&] { return loss(quantizer, objective, point); };
  require_close(analytic.logits, finite_differences(quantizer.logits(), full_loss), "logit");
  require_close(analytic.parameters, finite_differences(quantizer.parameters(), full_loss), "scale");
  require_masked_candidates_have_zero_gradient<Grid>(analytic.logits);
}

/// Straight-through: the forward pass is hard, so the loss is piecewise constant in the logits;
/// by definition the logit gradient is that of the relaxed sample (same noise) under the
/// dL/dweight of the hard weights: the gradient of a -> <G, relaxed_forward(a)> with G fixed.
/// The scales enter the hard forward smoothly: their gradient is that of the loss itself.
template <class Grid>
void require_straight_through_gradients() {
  auto straight = spread_out_quantizer<DoubleQuantizer<Grid, gsq::StraightThrough>>();
  auto relaxed = spread_out_quantizer<DoubleQuantizer<Grid, gsq::Relaxed>>();
  Objective objective = layer_objective<Grid>();
  const Gradients analytic = analytic_gradients(straight, objective, point);

  const auto surrogate = [&] {
    const std::vector<double> soft = forward_weights(relaxed, point);
    double sum = 0;
    for (std::size_t e = 0; e < soft.size(); ++e) sum += analytic.weight[e] * soft[e];
    return sum;
  };
  require_close(analytic.logits, finite_differences(relaxed.logits(), surrogate), "logit");
  require_masked_candidates_have_zero_gradient<Grid>(analytic.logits);

  const auto hard_loss = [&] { return loss(straight, objective, point); };
  require_close(analytic.parameters, finite_differences(straight.parameters(), hard_loss), "scale");
}

/// docs/design.md section 2: every estimator but the deterministic one perturbs the logits with noise.
template <class Estimator>
constexpr bool draws_noise() {
  return !std::is_same<Estimator, gsq::Deterministic>::value;
}

/// docs/design.md section 2's forward pass for one weight, written out: p_k = softmax_k((kappa a_k + g_k)
/// / tau) over the admissible candidates, the soft code sum_k p_k d_k, or under a hard-forward
/// estimator the sampled candidate argmax_k (kappa a_k + g_k). Noise is gsq::gumbel_noise (tested
/// in test_philox.cpp), zero for the deterministic estimator.
template <class Grid, class Estimator>
double design_forward_code(const std::vector<double>& logits, int base, std::size_t element) {
  constexpr int K = Grid::candidate_count;
  double noise[K] = {};
  if (draws_noise<Estimator>()) gsq::gumbel_noise<double, K>(point.seed, point.step, element, noise);
  double total = 0, weighted = 0, best_score = -std::numeric_limits<double>::infinity();
  int sampled_level = 0;
  for (int k = 0; k < K; ++k) {
    const int level = candidate_level<Grid>(base, k);
    if (!on_grid<Grid>(level)) continue;
    const double score = point.logit_scale * logits[logit_index<Grid>(element, k)] + noise[k];
    const double unnormalised = std::exp(score / point.temperature);
    total += unnormalised;
    weighted += unnormalised * level;
    if (score > best_score) best_score = score, sampled_level = level;
  }
  return std::is_same<Estimator, gsq::StraightThrough>::value ? sampled_level : weighted / total;
}

template <class Grid, class Estimator>
void require_design_forward() {
  INFO(Grid::name << ", " << Estimator::name);
  auto quantizer = spread_out_quantizer<DoubleQuantizer<Grid, Estimator>>();
  const gsq::QuantizedTensor start = starting_point<Grid>();
  const std::vector<double> weight = forward_weights(quantizer, point);
  for (std::size_t e = 0; e < weight.size(); ++e) {
    const double scale = start.scales[quantizer.layout().group_of(e)];
    INFO("element " << e);
    REQUIRE(weight[e] == Approx(scale * design_forward_code<Grid, Estimator>(quantizer.logits(), start.codes[e], e))
                             .epsilon(1e-12).margin(1e-14));
  }
}

template <class Grid, class Estimator>
void require_noise_replay() {
  INFO(Grid::name << ", " << Estimator::name);
  auto quantizer = spread_out_quantizer<DoubleQuantizer<Grid, Estimator>>();
  const std::vector<double> first = forward_weights(quantizer, point);
  Point next_step = point;
  ++next_step.step;
  Point other_seed = point;
  ++other_seed.seed;
  const std::vector<double> later = forward_weights(quantizer, next_step);
  const std::vector<double> reseeded = forward_weights(quantizer, other_seed);
  REQUIRE(forward_weights(quantizer, point) == first);  // the same point replays the same noise
  REQUIRE((later != first) == draws_noise<Estimator>());
  REQUIRE((reseeded != first) == draws_noise<Estimator>());
}

}  // namespace

TEMPLATE_TEST_CASE("the forward pass is docs/design.md's Gumbel-softmax sample times the group scale", "[gumbel_softmax]",
                   GSQ_ALL_GRIDS) {
  require_design_forward<TestType, gsq::Relaxed>();
  require_design_forward<TestType, gsq::StraightThrough>();
  require_design_forward<TestType, gsq::Deterministic>();
}

TEMPLATE_TEST_CASE("relaxed estimator: logit and scale gradients match finite differences of the loss",
                   "[gumbel_softmax][gradient]", GSQ_ALL_GRIDS) {
  require_gradients_of_the_loss<TestType, gsq::Relaxed>();
}

TEMPLATE_TEST_CASE("deterministic estimator: logit and scale gradients match finite differences of the loss",
                   "[gumbel_softmax][gradient]", GSQ_ALL_GRIDS) {
  require_gradients_of_the_loss<TestType, gsq::Deterministic>();
}

TEMPLATE_TEST_CASE("straight-through estimator: relaxed logit gradient, exact scale gradient",
                   "[gumbel_softmax][gradient]", GSQ_ALL_GRIDS) {
  require_straight_through_gradients<TestType>();
}

TEMPLATE_TEST_CASE("the same relaxation point replays the same noise, another step or seed draws new noise",
                   "[gumbel_softmax]", GSQ_ALL_GRIDS) {
  require_noise_replay<TestType, gsq::Relaxed>();
  require_noise_replay<TestType, gsq::StraightThrough>();
  require_noise_replay<TestType, gsq::Deterministic>();
}

TEMPLATE_TEST_CASE("the single-precision relaxation matches the double-precision one to float accuracy",
                   "[gumbel_softmax]", GSQ_ALL_GRIDS) {
  // The float path has its own exp and log (gsq/detail/fast_math.hpp); double uses libm.
  auto exact = spread_out_quantizer<DoubleQuantizer<TestType, gsq::Relaxed>>();
  gsq::Quantizer<TestType, gsq::GroupSize<group_width>, gsq::LinearAnneal, gsq::Relaxed> single(
      starting_point<TestType>());
  single.logits().assign(exact.logits().begin(), exact.logits().end());
  single.parameters().assign(exact.parameters().begin(), exact.parameters().end());
  const std::vector<double> expected = forward_weights(exact, point);
  std::vector<float> weight(single.size());
  single.forward({1.0f, 3.0f, point.seed, point.step}, weight.data());
  for (std::size_t e = 0; e < weight.size(); ++e) {
    INFO("element " << e);
    REQUIRE(weight[e] == Approx(expected[e]).margin(1e-5 * TestType::max_level));
  }
}

TEMPLATE_TEST_CASE("the fused pass of a logit step and the next forward pass equals the two passes in turn",
                   "[gumbel_softmax][quantizer]", GSQ_ALL_GRIDS) {
  // In float, as training runs it, with a Lion step of the logits and scales that have stepped
  // between the forward pass and the logits' step (the training loop's order).
  using Quantizer = gsq::Quantizer<TestType, gsq::GroupSize<group_width>, gsq::LinearAnneal, gsq::Relaxed>;
  using Host = gsq::Host<float>;
  const gsq::RelaxationPoint<float> now{0.7f, 150.0f, 3, 11}, next{0.6f, 160.0f, 3, 12};
  Quantizer apart(starting_point<TestType>()), fused(starting_point<TestType>());
  const auto lion = [](const Quantizer& q) {
    return gsq::GroupOptimizer<gsq::Lion, Host>(q.logits().size(), {1e-2, 0.5}, 0.9, 0.95, 1e-8);
  };
  auto apart_lion = lion(apart), fused_lion = lion(fused);
  std::vector<float> weight_grad(apart.size()), apart_weight(apart.size()), fused_weight(fused.size());
  std::mt19937 generator(8);
  std::normal_distribution<float> normal;
  for (float& g : weight_grad) g = normal(generator);
  const auto forward_then_step_scales = [&](Quantizer& quantizer, std::vector<float>& weight) {
    quantizer.forward(now, weight.data());
    const std::vector<float> used = quantizer.parameters();
    for (float& scale : quantizer.parameters()) scale *= 1.25f;
    return used;
  };
  const std::vector<float> apart_used = forward_then_step_scales(apart, apart_weight),
                           fused_used = forward_then_step_scales(fused, fused_weight);
  apart.step_logits(now, apart_used.data(), weight_grad.data(), apart_lion.update_at(apart.logits().data(), nullptr, 4, 1.0));
  apart.forward(next, apart_weight.data());
  fused.step_logits_and_forward(now, fused_used.data(), weight_grad.data(),
                                fused_lion.update_at(fused.logits().data(), nullptr, 4, 1.0), next, fused_weight.data());
  REQUIRE(fused.logits() != Quantizer(starting_point<TestType>()).logits());  // the logits stepped
  CHECK(fused.logits() == apart.logits());
  CHECK(fused.logit_gradient() == apart.logit_gradient());  // the probabilities
  CHECK(fused_weight == apart_weight);
  CHECK(fused.codes() == apart.codes());
}

TEMPLATE_TEST_CASE("the result takes each weight's most likely admissible candidate and the learned scales",
                   "[gumbel_softmax][quantizer]", GSQ_ALL_GRIDS) {
  auto quantizer = spread_out_quantizer<DoubleQuantizer<TestType, gsq::Relaxed>>();
  quantizer.parameters()[1] = 0.25;
  const gsq::QuantizedTensor start = starting_point<TestType>();
  const gsq::QuantizedTensor result = quantizer.result();
  REQUIRE(result.grid == gsq::grid_spec<TestType>());
  REQUIRE(result.group_width == group_width);
  REQUIRE(result.scales[1] == 0.25f);
  constexpr int K = TestType::candidate_count;
  for (std::size_t e = 0; e < result.codes.size(); ++e) {
    int best_level = 0;
    double best_logit = -std::numeric_limits<double>::infinity();
    for (int k = 0; k < K; ++k) {
      const int level = candidate_level<TestType>(start.codes[e], k);
      if (!on_grid<TestType>(level)) continue;
      if (quantizer.logits()[logit_index<TestType>(e, k)] > best_logit) best_logit = quantizer.logits()[logit_index<TestType>(e, k)], best_level = level;
    }
    INFO("element " << e);
    REQUIRE(result.codes[e] == best_level);
  }
}

namespace {

/// docs/design.md section 2's initial logits, a_k = std (xi_k + strength (z_k - mean z)) with
/// z_k = -0.5 (code - d_k)^2 centred over the admissible candidates, recomputed here.
template <class Grid>
void require_initial_logits(const gsq::LogitInit& init) {
  INFO(Grid::name);
  const gsq::QuantizedTensor start = starting_point<Grid>();
  const DoubleQuantizer<Grid, gsq::Relaxed> quantizer(start, init);
  constexpr int K = Grid::candidate_count;
  for (std::size_t e = 0; e < start.codes.size(); ++e) {
    double xi[K];
    gsq::normal_noise<double, K>(init.seed, e, xi);
    double closeness[K], mean = 0;
    int admissible = 0;
    for (int k = 0; k < K; ++k) {
      const int level = candidate_level<Grid>(start.codes[e], k);
      closeness[k] = -0.5 * (start.codes[e] - level) * (start.codes[e] - level);
      if (on_grid<Grid>(level)) mean += closeness[k], ++admissible;
    }
    mean /= admissible;
    for (int k = 0; k < K; ++k) {
      INFO("element " << e << ", candidate " << k);
      REQUIRE(quantizer.logits()[logit_index<Grid>(e, k)] ==
              Approx(init.noise_std * (xi[k] + init.strength * (closeness[k] - mean))).epsilon(1e-12).margin(1e-15));
    }
  }
  REQUIRE(quantizer.result().scales == start.scales);
}

}  // namespace

TEST_CASE("the initial logits follow docs/design.md's formula around the starting codes", "[gumbel_softmax][quantizer]") {
  require_initial_logits<gsq::Ternary>({0.01, 6.0, 0});
  require_initial_logits<gsq::Int<2>>({0.01, 6.0, 0});
  require_initial_logits<gsq::Int<3>>({0.02, 4.0, 17});
  require_initial_logits<gsq::Int<4>>({0.01, 6.0, 3});
  // With little noise against the pull of the starting code, the argmax is the starting code.
  const gsq::QuantizedTensor start = starting_point<gsq::Int<4>>();
  REQUIRE(DoubleQuantizer<gsq::Int<4>, gsq::Relaxed>(start, {0.01, 30.0, 0}).result().codes == start.codes);
}

TEST_CASE("invalid quantizer starts are errors naming the problem", "[quantizer][errors]") {
  using Quantizer = DoubleQuantizer<gsq::Int<3>, gsq::Relaxed>;
  gsq::QuantizedTensor start = starting_point<gsq::Int<3>>();
  SECTION("a group size that does not divide the columns") {
    gsq::QuantizedTensor narrow{start.grid, 2, 12, 4, std::vector<std::int8_t>(24, 0), std::vector<float>(6, 1.0f)};
    REQUIRE_THROWS_WITH(Quantizer(narrow), Catch::Contains("group size 8 does not divide the layer's 12 input columns"));
    REQUIRE_THROWS_WITH(Quantizer(gsq::Matrix<float>(2, 12, 0.5f), std::vector<float>(2, 1.0f)),
                        Catch::Contains("group size 8 does not divide the layer's 12 input columns"));
  }
  SECTION("a start on another grid or grouping") {
    using Int4Quantizer = DoubleQuantizer<gsq::Int<4>, gsq::Relaxed>;
    REQUIRE_THROWS_WITH(Int4Quantizer(start), Catch::Contains("int3 grid"));
    gsq::QuantizedTensor wide = start;
    wide.group_width = 16;
    wide.scales.resize(rows);
    REQUIRE_THROWS_WITH(Quantizer(wide), Catch::Contains("groups of 16 columns"));
  }
  SECTION("starting weights that are empty, non-finite, or with bad scales") {
    REQUIRE_THROWS_AS(Quantizer(gsq::Matrix<float>(), {}), gsq::Error);
    gsq::Matrix<float> weight = start.dequantize();
    std::vector<float> scales = start.scales;
    weight(1, 1) = std::numeric_limits<float>::infinity();
    REQUIRE_THROWS_WITH(Quantizer(weight, scales), Catch::Contains("non-finite"));
    weight = start.dequantize();
    REQUIRE_THROWS_WITH(Quantizer(weight, std::vector<float>(3, 1.0f)), Catch::Contains("expected 10 scales, got 3"));
    scales[2] = 0.0f;
    REQUIRE_THROWS_WITH(Quantizer(weight, scales), Catch::Contains("scales must be positive"));
  }
  SECTION("a start whose codes or scales do not match its shape, or whose codes are off the grid") {
    gsq::QuantizedTensor short_codes = start;
    short_codes.codes.pop_back();
    CHECK_THROWS_AS(Quantizer(short_codes), gsq::Error);
    gsq::QuantizedTensor short_scales = start;
    short_scales.scales.pop_back();
    CHECK_THROWS_AS(Quantizer(short_scales), gsq::Error);
    gsq::QuantizedTensor off_grid = start;
    off_grid.codes[3] = 6;  // int3 levels are -4 .. 3
    CHECK_THROWS_AS(Quantizer(off_grid), gsq::Error);
  }
}
