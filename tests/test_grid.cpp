// Tests of gsq/policy/grid.hpp (levels, candidates, masks, run-time descriptors) and of the column to
// group mapping the grids are used with (gsq/policy/grouping.hpp, gsq/core/group_layout.hpp).
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include <gsq/core/group_layout.hpp>
#include <gsq/policy/grid.hpp>
#include <gsq/policy/grouping.hpp>

namespace {

/// The symmetric b-bit integer grid of docs/design.md section 1, written out independently.
std::vector<int> integer_levels(int bits) {
  std::vector<int> levels;
  for (int level = -(1 << (bits - 1)); level <= (1 << (bits - 1)) - 1; ++level) levels.push_back(level);
  return levels;
}

/// The levels a grid policy's candidates reach from `base`, skipping masked candidates.
template <class Grid>
std::vector<int> admissible_candidates(int base) {
  std::vector<int> levels;
  for (int k = 0; k < Grid::candidate_count; ++k)
    if (Grid::admissible(base, k)) levels.push_back(Grid::candidate(base, k));
  return levels;
}

template <class Grid>
void require_full_grid(const std::vector<int>& levels) {
  REQUIRE(Grid::min_level == levels.front());
  REQUIRE(Grid::max_level == levels.back());
  REQUIRE(Grid::candidate_count == static_cast<int>(levels.size()));
  for (const int base : levels) REQUIRE(admissible_candidates<Grid>(base) == levels);  // base is ignored
}

/// Shift grids (docs/design.md section 2): starting code plus {-2 .. 2}, off-grid candidates masked.
template <class Grid>
void require_shift_grid(const std::vector<int>& levels) {
  REQUIRE(Grid::min_level == levels.front());
  REQUIRE(Grid::max_level == levels.back());
  REQUIRE(Grid::candidate_count == 5);
  for (const int base : levels) {
    std::vector<int> expected;
    for (int shift = -2; shift <= 2; ++shift)
      if (base + shift >= levels.front() && base + shift <= levels.back()) expected.push_back(base + shift);
    INFO("base " << base);
    REQUIRE(admissible_candidates<Grid>(base) == expected);
  }
  REQUIRE(admissible_candidates<Grid>(levels.front()).size() == 3);  // two masked below the grid
  REQUIRE(admissible_candidates<Grid>(levels.back()).size() == 3);   // two masked above
}

}  // namespace

TEST_CASE("full grids relax over every level of the paper's grids", "[grid]") {
  require_full_grid<gsq::Ternary>({-1, 0, 1});
  require_full_grid<gsq::Int<2>>({-2, -1, 0, 1});
}

TEST_CASE("3- and 4-bit grids are shift grids of five candidates around the starting code", "[grid]") {
  require_shift_grid<gsq::Int<3>>(integer_levels(3));
  require_shift_grid<gsq::Int<4>>(integer_levels(4));
}

TEST_CASE("grid_spec records levels, code bits and the RTN divisor of docs/design.md section 5", "[grid]") {
  const gsq::GridSpec ternary = gsq::grid_spec<gsq::Ternary>();
  REQUIRE(ternary.level_count() == 3);
  REQUIRE(ternary.code_bits == 2);  // 1.58 bits of information stored in 2
  REQUIRE(ternary.rtn_divisor == 1.0);
  for (const int bits : {2, 3, 4}) {
    const gsq::GridSpec spec = bits == 2 ? gsq::grid_spec<gsq::Int<2>>()
                               : bits == 3 ? gsq::grid_spec<gsq::Int<3>>()
                                           : gsq::grid_spec<gsq::Int<4>>();
    INFO(bits << " bits");
    REQUIRE(spec.code_bits == bits);
    REQUIRE(spec.level_count() == (1 << bits));
    REQUIRE(spec.min_level == integer_levels(bits).front());
    // scale = 2 max|w| / (2^b - 1), i.e. max|w| / divisor
    REQUIRE(spec.rtn_divisor == (static_cast<double>(1 << bits) - 1) / 2);
  }
  REQUIRE(gsq::grid_spec<gsq::Int<2>>() == gsq::grid_spec<gsq::Int<2>>());
  REQUIRE_FALSE(gsq::grid_spec<gsq::Int<2>>() == gsq::grid_spec<gsq::Ternary>());
  REQUIRE_FALSE(gsq::grid_spec<gsq::Int<3>>() == gsq::grid_spec<gsq::Int<4>>());
}

TEST_CASE("the group layout maps every element to the scale of its row and column group", "[grouping]") {
  const long rows = 3, cols = 24;
  const gsq::GroupLayout grouped = gsq::GroupLayout::of<gsq::GroupSize<8>>(cols);
  const gsq::GroupLayout per_channel = gsq::GroupLayout::of<gsq::PerChannel>(cols);
  REQUIRE(grouped.groups_per_row == 3);
  REQUIRE(per_channel.groups_per_row == 1);
  for (long r = 0; r < rows; ++r)
    for (long c = 0; c < cols; ++c) {
      const auto element = static_cast<std::size_t>(r * cols + c);
      REQUIRE(grouped.group_of(element) == static_cast<std::size_t>(r * 3 + c / 8));
      REQUIRE(per_channel.group_of(element) == static_cast<std::size_t>(r));
    }
}

TEST_CASE("a group size that does not divide the columns is an error naming both numbers", "[grouping][errors]") {
  REQUIRE_THROWS_AS(gsq::GroupLayout::of<gsq::GroupSize<8>>(20), gsq::Error);
  REQUIRE_THROWS_WITH(gsq::GroupLayout::of<gsq::GroupSize<8>>(20),
                      Catch::Contains("group size 8") && Catch::Contains("20 input columns"));
  REQUIRE_THROWS_WITH(gsq::GroupLayout::of<gsq::PerChannel>(0), Catch::Contains("input column"));
}
