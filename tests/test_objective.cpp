// Tests of gsq/objective/hessian.hpp: the layer objective's value against a direct trace computation,
// its gradient against central finite differences, from_inputs against H = X^T X / N formed
// here, and invalid input.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <gsq/gsq.hpp>

namespace {

using Objective = gsq::HessianObjective<gsq::Host<double>>;

// The layers here are tiny and finite differences run thousands of passes: one thread avoids
// paying a parallel region's start-up each time, which dominates on a loaded machine. That
// results do not depend on the thread count is tested in test_train.cpp.
const bool single_threaded = (gsq::set_host_threads(1), true);

gsq::Matrix<double> random_matrix(long rows, long cols, unsigned seed) {
  std::mt19937 generator(seed);
  std::normal_distribution<double> distribution;
  gsq::Matrix<double> m(rows, cols);
  for (double& v : m.values) v = distribution(generator);
  return m;
}

/// H = X^T X / N by explicit sums.
gsq::Matrix<double> hessian_of(const gsq::Matrix<double>& inputs) {
  gsq::Matrix<double> h(inputs.cols, inputs.cols);
  for (long i = 0; i < inputs.cols; ++i)
    for (long j = 0; j < inputs.cols; ++j) {
      for (long t = 0; t < inputs.rows; ++t) h(i, j) += inputs(t, i) * inputs(t, j);
      h(i, j) /= static_cast<double>(inputs.rows);
    }
  return h;
}

/// tr(A H B^T) = sum_{r, i, j} A[r][i] H[i][j] B[r][j].
double trace_product(const gsq::Matrix<double>& a, const gsq::Matrix<double>& h, const gsq::Matrix<double>& b) {
  double sum = 0;
  for (long r = 0; r < a.rows; ++r)
    for (long i = 0; i < a.cols; ++i)
      for (long j = 0; j < a.cols; ++j) sum += a(r, i) * h(i, j) * b(r, j);
  return sum;
}

/// docs/design.md section 4: tr(E H E^T) / tr(W H W^T) with E = estimate - W.
double direct_relative_error(const gsq::Matrix<double>& weight, const gsq::Matrix<double>& h,
                             const gsq::Matrix<double>& estimate) {
  gsq::Matrix<double> error = estimate;
  for (std::size_t i = 0; i < error.size(); ++i) error.values[i] -= weight.values[i];
  return trace_product(error, h, error) / trace_product(weight, h, weight);
}

double value_at(Objective& objective, const gsq::Matrix<double>& estimate) {
  std::vector<double> gradient(estimate.size());
  return objective.value_and_gradient(estimate.data(), gradient.data());
}

struct Fixture {
  gsq::Matrix<double> weight = random_matrix(6, 12, 1);
  gsq::Matrix<double> inputs = random_matrix(40, 12, 2);
  gsq::Matrix<double> hessian = hessian_of(inputs);
  gsq::Matrix<double> estimate = [this] {
    gsq::Matrix<double> e = random_matrix(6, 12, 3);
    for (std::size_t i = 0; i < e.size(); ++i) e.values[i] = weight.values[i] + 0.3 * e.values[i];
    return e;
  }();
};

}  // namespace

TEST_CASE_METHOD(Fixture, "the objective's value is tr(E H E^T) / tr(W H W^T)", "[objective]") {
  Objective objective(weight, hessian);
  REQUIRE(objective.energy() == Approx(trace_product(weight, hessian, weight)).epsilon(1e-12));
  REQUIRE(value_at(objective, estimate) == Approx(direct_relative_error(weight, hessian, estimate)).epsilon(1e-12));
  REQUIRE(value_at(objective, gsq::Matrix<double>(6, 12)) == Approx(1.0).epsilon(1e-12));  // all-zero estimate
  REQUIRE(value_at(objective, weight) == 0.0);
  // relative_error takes float weights (results of quantizers) and must agree.
  const gsq::Matrix<float> estimate_float = estimate.cast<float>();
  REQUIRE(objective.relative_error(estimate_float) ==
          Approx(direct_relative_error(weight, hessian, estimate_float.cast<double>())).epsilon(1e-12));
}

TEST_CASE_METHOD(Fixture, "the objective's gradient matches central finite differences", "[objective]") {
  Objective objective(weight, hessian);
  std::vector<double> gradient(estimate.size());
  objective.value_and_gradient(estimate.data(), gradient.data());
  const double step = 1e-5;
  for (std::size_t i = 0; i < estimate.size(); ++i) {
    gsq::Matrix<double> plus = estimate, minus = estimate;
    plus.values[i] += step;
    minus.values[i] -= step;
    const double finite_difference = (value_at(objective, plus) - value_at(objective, minus)) / (2 * step);
    INFO("element " << i);
    REQUIRE(gradient[i] == Approx(finite_difference).epsilon(1e-7).margin(1e-9));
  }
}

TEST_CASE_METHOD(Fixture, "from_inputs equals the objective built from H = X^T X / N", "[objective]") {
  Objective from_h(weight, hessian);
  Objective from_x = Objective::from_inputs(weight, inputs);
  const gsq::Matrix<double> h = from_x.hessian();
  for (std::size_t i = 0; i < h.size(); ++i) REQUIRE(h.values[i] == Approx(hessian.values[i]).epsilon(1e-12).margin(1e-14));
  REQUIRE(from_x.energy() == Approx(from_h.energy()).epsilon(1e-12));
  REQUIRE(value_at(from_x, estimate) == Approx(value_at(from_h, estimate)).epsilon(1e-12));
  SECTION("and in single precision, to float accuracy") {
    gsq::HessianObjective<gsq::Host<float>> single = gsq::HessianObjective<gsq::Host<float>>::from_inputs(
        weight.cast<float>(), inputs.cast<float>());
    REQUIRE(single.relative_error(estimate.cast<float>()) ==
            Approx(direct_relative_error(weight, hessian, estimate)).epsilon(1e-4));
  }
}

TEST_CASE_METHOD(Fixture, "invalid objective input is an error naming the problem", "[objective][errors]") {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  SECTION("weights") {
    REQUIRE_THROWS_WITH(Objective(gsq::Matrix<double>(), hessian), Catch::Contains("weight matrix is empty"));
    gsq::Matrix<double> bad = weight;
    bad(1, 2) = nan;
    REQUIRE_THROWS_WITH(Objective(bad, hessian), Catch::Contains("weight matrix holds a non-finite value"));
    bad(1, 2) = inf;
    REQUIRE_THROWS_WITH(Objective::from_inputs(bad, inputs), Catch::Contains("weight matrix holds a non-finite value"));
  }
  SECTION("H") {
    gsq::Matrix<double> bad = hessian;
    bad(3, 4) = bad(4, 3) = inf;
    REQUIRE_THROWS_WITH(Objective(weight, bad), Catch::Contains("Hessian H holds a non-finite value"));
    bad = hessian;
    bad(3, 4) += 0.1;
    REQUIRE_THROWS_WITH(Objective(weight, bad), Catch::Contains("not symmetric") && Catch::Contains("H[3][4]"));
    REQUIRE_THROWS_WITH(Objective(weight, gsq::Matrix<double>(12, 11, 1.0)), Catch::Contains("not square"));
    REQUIRE_THROWS_WITH(Objective(weight, gsq::Matrix<double>(11, 11, 1.0)),
                        Catch::Contains("11 x 11") && Catch::Contains("12 input columns"));
    REQUIRE_THROWS_WITH(Objective(weight, gsq::Matrix<double>(12, 12)), Catch::Contains("tr(W H W^T)"));
  }
  SECTION("calibration inputs") {
    REQUIRE_THROWS_WITH(Objective::from_inputs(weight, random_matrix(40, 10, 4)),
                        Catch::Contains("10 features") && Catch::Contains("12 input columns"));
    gsq::Matrix<double> bad = inputs;
    bad(7, 0) = nan;
    REQUIRE_THROWS_WITH(Objective::from_inputs(weight, bad), Catch::Contains("calibration inputs X holds a non-finite"));
  }
  SECTION("estimates of the wrong shape") {
    Objective objective(weight, hessian);
    REQUIRE_THROWS_WITH(objective.relative_error(gsq::Matrix<float>(6, 11)), Catch::Contains("shape"));
  }
}
