// Tests of gsq/init/scale_fit.hpp and of RTN with each scale fit (gsq/init/rtn.hpp).
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "gsq/objective/synthetic_layer.hpp"
#include "gsq/init/rtn.hpp"
#include "gsq/init/scale_fit.hpp"

namespace {

const std::vector<gsq::GridSpec> all_grids = {gsq::grid_spec<gsq::Ternary>(), gsq::grid_spec<gsq::Int<2>>(),
                                              gsq::grid_spec<gsq::Int<3>>(), gsq::grid_spec<gsq::Int<4>>()};

/// A heavy-tailed group (normal / |normal|-ish spread) from Philox, `stream` picks the group.
std::vector<float> random_group(long count, std::uint64_t stream) {
  std::vector<float> group(static_cast<std::size_t>(count));
  for (long k = 0; k < count; ++k) {
    const double spread = std::exp(gsq::detail::standard_normal(7, 2 * stream + 1, k));
    group[k] = static_cast<float>(spread * gsq::detail::standard_normal(7, 2 * stream, k));
  }
  return group;
}

std::vector<double> random_importance(long count, std::uint64_t stream) {
  std::vector<double> importance(static_cast<std::size_t>(count));
  for (long k = 0; k < count; ++k) importance[k] = std::exp(3 * gsq::detail::standard_normal(11, stream, k));
  return importance;
}

/// Brute force of the search: the smallest error over the 80 candidate scales.
double smallest_candidate_error(const std::vector<float>& group, const gsq::GridSpec& grid, const double* importance) {
  double max_abs = 0;
  for (const float w : group) max_abs = std::fmax(max_abs, std::fabs(w));
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < 80; ++i) {
    const float scale = static_cast<float>((1 - i / 100.0) * max_abs / grid.rtn_divisor);
    best = std::fmin(best, gsq::group_quantization_error(group.data(), static_cast<long>(group.size()), scale, grid, importance));
  }
  return best;
}

}  // namespace

TEST_CASE("scale fit names round-trip and unknown names are errors", "[scale_fit]") {
  for (const gsq::ScaleFit fit : {gsq::ScaleFit::max_abs, gsq::ScaleFit::mse, gsq::ScaleFit::weighted})
    REQUIRE(gsq::parse_scale_fit(gsq::scale_fit_name(fit)) == fit);
  REQUIRE(gsq::parse_scale_fit("maxabs") == gsq::ScaleFit::max_abs);
  REQUIRE_THROWS_WITH(gsq::parse_scale_fit("MSE"), Catch::Contains("unknown scale fit 'MSE'") &&
                                                       Catch::Contains("maxabs, mse or weighted"));
  REQUIRE_THROWS_AS(gsq::parse_scale_fit(""), gsq::Error);
}

TEST_CASE("max-abs scale is max|w| / rtn_divisor, and 1 for an all-zero group", "[scale_fit]") {
  const std::vector<float> group = {0.5f, -3.0f, 1.0f, 2.0f};
  REQUIRE(gsq::fit_group_scale(group.data(), 4, gsq::grid_spec<gsq::Int<2>>(), gsq::ScaleFit::max_abs) == 2.0f);
  REQUIRE(gsq::fit_group_scale(group.data(), 4, gsq::grid_spec<gsq::Ternary>(), gsq::ScaleFit::max_abs) == 3.0f);
  REQUIRE(gsq::fit_group_scale(group.data(), 4, gsq::grid_spec<gsq::Int<4>>(), gsq::ScaleFit::max_abs) == 3.0f / 7.5f);
  const std::vector<float> zeros(8, 0.0f);
  const std::vector<double> importance(8, 1.0);
  for (const gsq::ScaleFit fit : {gsq::ScaleFit::max_abs, gsq::ScaleFit::mse, gsq::ScaleFit::weighted})
    REQUIRE(gsq::fit_group_scale(zeros.data(), 8, gsq::grid_spec<gsq::Int<2>>(), fit, importance.data()) == 1.0f);
}

TEST_CASE("mse and weighted fits find the best of the 80 shrunk scales and never lose to max-abs", "[scale_fit]") {
  for (const gsq::GridSpec& grid : all_grids)
    for (std::uint64_t stream = 0; stream < 50; ++stream) {
      CAPTURE(grid.name, stream);
      const long count = 16 + static_cast<long>(stream % 5) * 28;
      const std::vector<float> group = random_group(count, stream);
      const std::vector<double> importance = random_importance(count, stream);
      const float max_abs = gsq::fit_group_scale(group.data(), count, grid, gsq::ScaleFit::max_abs);
      const float mse = gsq::fit_group_scale(group.data(), count, grid, gsq::ScaleFit::mse);
      const float weighted = gsq::fit_group_scale(group.data(), count, grid, gsq::ScaleFit::weighted, importance.data());

      const double mse_error = gsq::group_quantization_error(group.data(), count, mse, grid);
      REQUIRE(mse_error <= gsq::group_quantization_error(group.data(), count, max_abs, grid));
      REQUIRE(mse_error == smallest_candidate_error(group, grid, nullptr));
      REQUIRE(mse <= max_abs);
      REQUIRE(mse >= 0.2f * max_abs);

      const double weighted_error = gsq::group_quantization_error(group.data(), count, weighted, grid, importance.data());
      REQUIRE(weighted_error <= gsq::group_quantization_error(group.data(), count, max_abs, grid, importance.data()));
      REQUIRE(weighted_error == smallest_candidate_error(group, grid, importance.data()));
    }
}

TEST_CASE("the mse search helps a heavy-tailed group at 2 bits", "[scale_fit]") {
  const gsq::GridSpec grid = gsq::grid_spec<gsq::Int<2>>();
  int improved = 0;
  double mse_total = 0, max_abs_total = 0;
  for (std::uint64_t stream = 0; stream < 20; ++stream) {
    const std::vector<float> group = random_group(128, stream);
    const float max_abs = gsq::fit_group_scale(group.data(), 128, grid, gsq::ScaleFit::max_abs);
    const float mse = gsq::fit_group_scale(group.data(), 128, grid, gsq::ScaleFit::mse);
    const double mse_error = gsq::group_quantization_error(group.data(), 128, mse, grid);
    const double max_abs_error = gsq::group_quantization_error(group.data(), 128, max_abs, grid);
    improved += mse_error < max_abs_error;
    mse_total += mse_error;
    max_abs_total += max_abs_error;
  }
  REQUIRE(improved >= 15);
  REQUIRE(mse_total < 0.8 * max_abs_total);  // measured: 19 of 20 groups better, total 0.69x
}

TEST_CASE("the weighted fit equals mse under uniform importance and follows the important weights", "[scale_fit]") {
  const gsq::GridSpec grid = gsq::grid_spec<gsq::Int<3>>();
  for (std::uint64_t stream = 0; stream < 20; ++stream) {
    const std::vector<float> group = random_group(64, stream);
    // Multiplying every error by 2 is exact in floating point: the same argmin.
    const std::vector<double> twos(64, 2.0);
    REQUIRE(gsq::fit_group_scale(group.data(), 64, grid, gsq::ScaleFit::weighted, twos.data()) ==
            gsq::fit_group_scale(group.data(), 64, grid, gsq::ScaleFit::mse));
  }
  // Only weight 0 matters: the fit picks a scale that puts it (nearly) on the grid.
  std::vector<float> group = {0.3f, 1.0f, -0.9f, 0.55f, 0.1f, -0.2f, 0.7f, 0.45f};
  std::vector<double> importance(8, 0.0);
  importance[0] = 1.0;
  const float scale = gsq::fit_group_scale(group.data(), 8, grid, gsq::ScaleFit::weighted, importance.data());
  const double miss = std::fabs(scale * gsq::nearest_level(group[0], scale, grid) - group[0]);
  const float max_abs = gsq::fit_group_scale(group.data(), 8, grid, gsq::ScaleFit::max_abs);
  REQUIRE(miss < std::fabs(max_abs * gsq::nearest_level(group[0], max_abs, grid) - group[0]));
  REQUIRE(miss < 0.005);
}

TEST_CASE("the weighted fit without importance is an error", "[scale_fit][errors]") {
  const std::vector<float> group = {1.0f, 2.0f};
  REQUIRE_THROWS_WITH(gsq::fit_group_scale(group.data(), 2, gsq::grid_spec<gsq::Int<2>>(), gsq::ScaleFit::weighted),
                      Catch::Contains("importance"));
}

TEST_CASE("RTN uses the chosen scale fit per group and defaults to max-abs", "[scale_fit][rtn]") {
  const gsq::SyntheticLayer layer = gsq::make_synthetic_layer({16, 256, 8, 3});
  std::vector<double> importance(256);
  for (long c = 0; c < 256; ++c) importance[c] = 1.0 + c % 7;
  for (const gsq::GridSpec& grid : all_grids) {
    CAPTURE(grid.name);
    const gsq::QuantizedTensor plain = gsq::round_to_nearest(layer.weight, grid, 64);
    const gsq::QuantizedTensor max_abs = gsq::round_to_nearest(layer.weight, grid, 64, gsq::ScaleFit::max_abs);
    REQUIRE(plain.codes == max_abs.codes);
    REQUIRE(plain.scales == max_abs.scales);
    for (const gsq::ScaleFit fit : {gsq::ScaleFit::mse, gsq::ScaleFit::weighted}) {
      const gsq::QuantizedTensor fitted = gsq::round_to_nearest(layer.weight, grid, 64, fit, importance);
      double fitted_error = 0, max_abs_error = 0;
      for (long r = 0; r < 16; ++r)
        for (long g = 0; g < 4; ++g) {
          const float* weights = &layer.weight(r, g * 64);
          const double* weighting = fit == gsq::ScaleFit::weighted ? &importance[g * 64] : nullptr;
          REQUIRE(fitted.scales[r * 4 + g] == gsq::fit_group_scale(weights, 64, grid, fit, &importance[g * 64]));
          fitted_error += gsq::group_quantization_error(weights, 64, fitted.scales[r * 4 + g], grid, weighting);
          max_abs_error += gsq::group_quantization_error(weights, 64, max_abs.scales[r * 4 + g], grid, weighting);
          for (long c = g * 64; c < (g + 1) * 64; ++c)
            REQUIRE(fitted.code(r, c) == gsq::nearest_level(layer.weight(r, c), fitted.scale(r, c), grid));
        }
      REQUIRE(fitted_error < max_abs_error);
    }
  }
}

TEST_CASE("RTN with a bad importance is an error naming the problem", "[scale_fit][rtn][errors]") {
  const gsq::GridSpec grid = gsq::grid_spec<gsq::Int<2>>();
  const gsq::Matrix<float> weight(4, 16, 0.5f);
  REQUIRE_THROWS_WITH(gsq::round_to_nearest(weight, grid, 8, gsq::ScaleFit::weighted),
                      Catch::Contains("importance") && Catch::Contains("hessian_diagonal"));
  REQUIRE_THROWS_WITH(gsq::round_to_nearest(weight, grid, 8, gsq::ScaleFit::weighted, std::vector<double>(15, 1.0)),
                      Catch::Contains("15 values") && Catch::Contains("16 input columns"));
  std::vector<double> importance(16, 1.0);
  importance[5] = -1;
  REQUIRE_THROWS_WITH(gsq::round_to_nearest(weight, grid, 8, gsq::ScaleFit::weighted, importance),
                      Catch::Contains("column 5") && Catch::Contains("non-negative"));
  importance[5] = std::numeric_limits<double>::quiet_NaN();
  REQUIRE_THROWS_WITH(gsq::round_to_nearest(weight, grid, 8, gsq::ScaleFit::mse, importance),
                      Catch::Contains("column 5"));
}

TEST_CASE("hessian_diagonal reads diag(H)", "[scale_fit]") {
  gsq::Matrix<float> hessian(3, 3, 0.25f);
  hessian(0, 0) = 1, hessian(1, 1) = 2, hessian(2, 2) = 3;
  REQUIRE(gsq::hessian_diagonal(hessian) == std::vector<double>{1, 2, 3});
  REQUIRE_THROWS_WITH(gsq::hessian_diagonal(gsq::Matrix<float>(2, 3)), Catch::Contains("not square"));
}
