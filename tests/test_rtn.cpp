// Tests of gsq/init/rtn.hpp: max-abs scales per docs/design.md section 5 and codes equal to a brute-force
// nearest-level search, for every grid; invalid input is an error.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <random>

#include <gsq/gsq.hpp>

namespace {

/// Random weights (dense enough that every group reaches every level) with one all-zero group
/// (row 1, columns 0..width-1), so the scale-1 guard is exercised.
gsq::Matrix<float> random_weight(long rows, long cols, long zero_group_width, unsigned seed) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> distribution(-0.05f, 0.05f);
  gsq::Matrix<float> weight(rows, cols);
  for (float& w : weight.values) w = distribution(generator);
  for (long c = 0; c < zero_group_width; ++c) weight(1, c) = 0.0f;
  return weight;
}

/// The level d of [min_level, max_level] minimising |w - s d| (exact in double for float w, s);
/// an exact tie goes to the even level, as torch.round's ties-to-even does.
int brute_force_nearest_level(float weight, float scale, const gsq::GridSpec& grid) {
  int best = grid.min_level;
  double best_distance = std::numeric_limits<double>::infinity();
  for (int level = grid.min_level; level <= grid.max_level; ++level) {
    const double distance = std::fabs(static_cast<double>(weight) - static_cast<double>(scale) * level);
    if (distance < best_distance || (distance == best_distance && level % 2 == 0))
      best = level, best_distance = distance;
  }
  return best;
}

/// docs/design.md section 5: scale = 2 max|w| / (2^b - 1) on b-bit grids, max|w| on the ternary grid.
double design_scale(double max_abs, const gsq::GridSpec& grid) {
  if (max_abs == 0) return 1.0;
  return grid.level_count() == 3 ? max_abs : 2 * max_abs / ((1 << grid.code_bits) - 1);
}

void require_rtn_matches_brute_force(const gsq::GridSpec& grid, long group_width) {
  INFO(grid.name << ", group width " << group_width);
  const gsq::Matrix<float> weight = random_weight(6, 64, group_width, 5);
  const gsq::QuantizedTensor rtn = gsq::round_to_nearest(weight, grid, group_width);
  REQUIRE(rtn.rows == 6);
  REQUIRE(rtn.cols == 64);
  REQUIRE(rtn.grid == grid);
  REQUIRE(rtn.scales.size() == static_cast<std::size_t>(6 * (64 / group_width)));
  for (long r = 0; r < weight.rows; ++r)
    for (long g = 0; g < 64 / group_width; ++g) {
      double max_abs = 0;
      for (long c = g * group_width; c < (g + 1) * group_width; ++c) max_abs = std::fmax(max_abs, std::fabs(weight(r, c)));
      INFO("row " << r << ", group " << g);
      REQUIRE(rtn.scale(r, g * group_width) == Approx(design_scale(max_abs, grid)).epsilon(1e-6));
    }
  int levels_seen_mask = 0;
  for (long r = 0; r < weight.rows; ++r)
    for (long c = 0; c < weight.cols; ++c) {
      INFO("row " << r << ", column " << c << ", weight " << weight(r, c));
      REQUIRE(rtn.code(r, c) == brute_force_nearest_level(weight(r, c), rtn.scale(r, c), grid));
      levels_seen_mask |= 1 << (rtn.code(r, c) - grid.min_level);
    }
  // The data reached every level; the lowest one only at an exact tie of the most negative weight.
  REQUIRE((levels_seen_mask | 1) == (1 << grid.level_count()) - 1);
  const gsq::Matrix<float> dequantized = rtn.dequantize();
  for (long r = 0; r < weight.rows; ++r)
    for (long c = 0; c < weight.cols; ++c) REQUIRE(dequantized(r, c) == rtn.scale(r, c) * rtn.code(r, c));
}

}  // namespace

TEST_CASE("RTN codes are the nearest grid levels under docs/design.md's max-abs scales", "[rtn]") {
  require_rtn_matches_brute_force(gsq::grid_spec<gsq::Ternary>(), 16);
  require_rtn_matches_brute_force(gsq::grid_spec<gsq::Int<2>>(), 16);
  require_rtn_matches_brute_force(gsq::grid_spec<gsq::Int<3>>(), 32);
  require_rtn_matches_brute_force(gsq::grid_spec<gsq::Int<4>>(), 64);  // per-channel
}

TEST_CASE("an all-zero group gets scale 1 and zero codes", "[rtn]") {
  const gsq::QuantizedTensor rtn = gsq::round_to_nearest(gsq::Matrix<float>(2, 8), gsq::grid_spec<gsq::Int<2>>(), 4);
  for (const float scale : rtn.scales) REQUIRE(scale == 1.0f);
  for (const std::int8_t code : rtn.codes) REQUIRE(code == 0);
}

TEST_CASE("RTN's largest weight lands on the grid's end level", "[rtn]") {
  // 2 bits: scale = 2 * 3 / 3 = 2, so 3 -> 1.5 -> clamped to 1; 1 -> 0.5 -> 0 (tie to even);
  // -2 -> -1; -2.9 -> -1.45 -> -1.
  gsq::Matrix<float> weight(1, 4);
  weight.values = {3.0f, 1.0f, -2.0f, -2.9f};
  const gsq::QuantizedTensor rtn = gsq::round_to_nearest(weight, gsq::grid_spec<gsq::Int<2>>(), 4);
  REQUIRE(rtn.scales[0] == 2.0f);
  REQUIRE(rtn.codes == std::vector<std::int8_t>{1, 0, -1, -1});
  // Ternary: scale = max|w| = 3, threshold at 1.5.
  weight.values = {3.0f, 1.4f, -1.6f, -3.0f};
  const gsq::QuantizedTensor ternary = gsq::round_to_nearest(weight, gsq::grid_spec<gsq::Ternary>(), 4);
  REQUIRE(ternary.scales[0] == 3.0f);
  REQUIRE(ternary.codes == std::vector<std::int8_t>{1, 0, -1, -1});
}

TEST_CASE("invalid RTN input is an error naming the problem", "[rtn][errors]") {
  const gsq::GridSpec grid = gsq::grid_spec<gsq::Int<2>>();
  REQUIRE_THROWS_WITH(gsq::round_to_nearest(gsq::Matrix<float>(4, 12), grid, 8),
                      Catch::Contains("group size 8 does not divide") && Catch::Contains("12 input columns"));
  REQUIRE_THROWS_WITH(gsq::round_to_nearest(gsq::Matrix<float>(4, 12), grid, 0), Catch::Contains("group size 0"));
  REQUIRE_THROWS_WITH(gsq::round_to_nearest(gsq::Matrix<float>(), grid, 8), Catch::Contains("empty"));
  gsq::Matrix<float> weight(4, 16, 0.5f);
  weight(2, 3) = std::numeric_limits<float>::quiet_NaN();
  REQUIRE_THROWS_WITH(gsq::round_to_nearest(weight, grid, 8),
                      Catch::Contains("non-finite") && Catch::Contains("row 2, column 3"));
  weight(2, 3) = -std::numeric_limits<float>::infinity();
  REQUIRE_THROWS_WITH(gsq::round_to_nearest(weight, grid, 8), Catch::Contains("non-finite"));
}
