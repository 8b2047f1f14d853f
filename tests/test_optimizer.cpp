// Tests of gsq/policy/optimizer.hpp: two steps of Lion and of AdamW through GroupOptimizer against
// values worked out by hand from the published update rules.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include <gsq/gsq.hpp>

namespace {

using Backend = gsq::Host<double>;

/// Applies one step per gradient vector to `parameters` and returns them.
template <class Optimizer>
std::vector<double> run_steps(std::vector<double> parameters, const std::vector<std::vector<double>>& gradients,
                              gsq::ParameterGroup group, double beta1, double beta2, double rate_factor = 1.0) {
  gsq::GroupOptimizer<Optimizer, Backend> optimizer(parameters.size(), group, beta1, beta2, 1e-8);
  for (std::size_t step = 0; step < gradients.size(); ++step)
    optimizer.update(parameters.data(), gradients[step].data(), static_cast<long>(step), rate_factor);
  return parameters;
}

}  // namespace

// Lion: c = b1 m + (1 - b1) g;  p = p (1 - lr wd) - lr sign(c);  m = b2 m + (1 - b2) g.
// lr = 0.1, wd = 0.5 (decay factor 0.95), b1 = 0.9, b2 = 0.99, m starts at 0.
TEST_CASE("Lion steps match the update rule worked by hand", "[optimizer]") {
  const gsq::ParameterGroup group{0.1, 0.5};
  // Parameters: p = 1, -2, 0.3, 0.5.
  // Step 1, g = (0.5, -3, 0, 0.2): c = 0.1 g, sign = (1, -1, 0, 1).
  //   p = (0.95 - 0.1, -1.9 + 0.1, 0.285, 0.475 - 0.1) = (0.85, -1.8, 0.285, 0.375)
  //   m = 0.01 g = (0.005, -0.03, 0, 0.002)
  const std::vector<double> start{1.0, -2.0, 0.3, 0.5};
  const std::vector<double> step1{0.5, -3.0, 0.0, 0.2};
  const std::vector<double> after1 = run_steps<gsq::Lion>(start, {step1}, group, 0.9, 0.99);
  const std::vector<double> expected1{0.85, -1.8, 0.285, 0.375};
  for (std::size_t i = 0; i < start.size(); ++i) REQUIRE(after1[i] == Approx(expected1[i]).epsilon(1e-12));

  // Step 2, g = (-0.01, 0.1, 0, -1):
  //   c = 0.9 m + 0.1 g = (0.0045 - 0.001, -0.027 + 0.01, 0, 0.0018 - 0.1) = (0.0035, -0.017, 0, -0.0982)
  //   sign = (1, -1, 0, -1): the momentum outweighs the first two gradients' signs.
  //   p = 0.95 p - 0.1 sign = (0.8075 - 0.1, -1.71 + 0.1, 0.27075, 0.35625 + 0.1)
  const std::vector<double> step2{-0.01, 0.1, 0.0, -1.0};
  const std::vector<double> after2 = run_steps<gsq::Lion>(start, {step1, step2}, group, 0.9, 0.99);
  const std::vector<double> expected2{0.7075, -1.61, 0.27075, 0.45625};
  for (std::size_t i = 0; i < start.size(); ++i) REQUIRE(after2[i] == Approx(expected2[i]).epsilon(1e-12));
}

TEST_CASE("the learning-rate factor scales Lion's step and its decay", "[optimizer]") {
  // lr 0.1 x factor 0.5 = 0.05: p = 1 (1 - 0.05 * 0.5) - 0.05 = 0.925.
  const std::vector<double> after = run_steps<gsq::Lion>({1.0}, {{2.0}}, {0.1, 0.5}, 0.9, 0.99, 0.5);
  REQUIRE(after[0] == Approx(0.925).epsilon(1e-12));
}

// AdamW: m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//        p = p (1 - lr wd) - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
// lr = 0.1, wd = 0.5, b1 = 0.9, b2 = 0.999, eps = 1e-8.
TEST_CASE("Adam steps match the bias-corrected AdamW rule worked by hand", "[optimizer]") {
  const gsq::ParameterGroup group{0.1, 0.5};
  // Step 1, g = 0.5: m = 0.05, v = 0.00025; corrected 0.5 and 0.25 -> step 0.1 * 0.5 / (0.5 + eps).
  //   p = 0.95 - 0.1 * 0.5 / (0.5 + 1e-8)
  const std::vector<double> after1 = run_steps<gsq::Adam>({1.0}, {{0.5}}, group, 0.9, 0.999);
  REQUIRE(after1[0] == Approx(0.95 - 0.1 * 0.5 / (0.5 + 1e-8)).epsilon(1e-12));
  // Step 2, g = -0.25: m = 0.045 - 0.025 = 0.02, v = 0.00024975 + 0.0000625 = 0.00031225;
  //   bias corrections 1 - 0.81 = 0.19 and 1 - 0.998001 = 0.001999.
  const double p1 = after1[0];
  const double expected2 = p1 * 0.95 - 0.1 * (0.02 / 0.19) / (std::sqrt(0.00031225 / 0.001999) + 1e-8);
  const std::vector<double> after2 = run_steps<gsq::Adam>({1.0}, {{0.5}, {-0.25}}, group, 0.9, 0.999);
  REQUIRE(after2[0] == Approx(expected2).epsilon(1e-12));
  REQUIRE(expected2 == Approx(0.7809).margin(1e-4));  // 0.8075 - 0.1 * 0.10526 / 0.39523, by hand
}
