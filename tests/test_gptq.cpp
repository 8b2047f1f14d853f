// Tests of gsq/init/gptq.hpp: exact agreements with RTN and with brute force on tiny problems, the
// OBS optimality of the last column, act-order, dead inputs, and errors.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "gsq/backend/host.hpp"
#include "gsq/core/quantizer.hpp"
#include "gsq/objective/synthetic_layer.hpp"
#include "gsq/init/gptq.hpp"
#include "gsq/init/rtn.hpp"
#include "gsq/objective/hessian.hpp"
#include "gsq/policy/grouping.hpp"

namespace {

const std::vector<gsq::GridSpec> all_grids = {gsq::grid_spec<gsq::Ternary>(), gsq::grid_spec<gsq::Int<2>>(),
                                              gsq::grid_spec<gsq::Int<3>>(), gsq::grid_spec<gsq::Int<4>>()};
const std::vector<gsq::ScaleFit> all_fits = {gsq::ScaleFit::max_abs, gsq::ScaleFit::mse, gsq::ScaleFit::weighted};

gsq::Matrix<float> random_matrix(long rows, long cols, std::uint64_t seed) {
  gsq::Matrix<float> m(rows, cols);
  for (std::size_t i = 0; i < m.size(); ++i) m.values[i] = static_cast<float>(gsq::detail::standard_normal(seed, 1, i));
  return m;
}

/// H = X^T X / N for `tokens` random inputs whose columns have spread-out magnitudes; positive
/// definite when tokens >= cols.
gsq::Matrix<float> random_hessian(long cols, long tokens, std::uint64_t seed) {
  gsq::Matrix<float> inputs = random_matrix(tokens, cols, seed ^ 0xABCDEFull);
  for (long c = 0; c < cols; ++c) {
    const double gain = std::exp(gsq::detail::standard_normal(seed, 2, c));
    for (long t = 0; t < tokens; ++t) inputs(t, c) *= static_cast<float>(gain);
  }
  gsq::Matrix<float> hessian(cols, cols);
  gsq::Host<float>::gemm(true, cols, cols, tokens, 1.0f / tokens, inputs.data(), inputs.data(), hessian.data());
  for (long i = 0; i < cols; ++i)  // exactly symmetric
    for (long j = 0; j < i; ++j) hessian(i, j) = hessian(j, i);
  return hessian;
}

gsq::Matrix<float> diagonal_hessian(long cols, std::uint64_t seed) {
  gsq::Matrix<float> hessian(cols, cols);
  for (long c = 0; c < cols; ++c) hessian(c, c) = static_cast<float>(std::exp(gsq::detail::standard_normal(seed, 3, c)));
  return hessian;
}

/// d^T H d in double.
double quadratic_form(const std::vector<double>& difference, const gsq::Matrix<float>& hessian) {
  double total = 0;
  for (std::size_t i = 0; i < difference.size(); ++i) {
    double row = 0;
    for (std::size_t j = 0; j < difference.size(); ++j) row += hessian(i, j) * difference[j];
    total += difference[i] * row;
  }
  return total;
}

/// tr((What - W) H (What - W)^T) in double, for any estimate.
double hessian_error(const gsq::Matrix<float>& weight, const gsq::Matrix<float>& estimate, const gsq::Matrix<float>& hessian) {
  double total = 0;
  std::vector<double> difference(static_cast<std::size_t>(weight.cols));
  for (long r = 0; r < weight.rows; ++r) {
    for (long c = 0; c < weight.cols; ++c) difference[c] = static_cast<double>(estimate(r, c)) - weight(r, c);
    total += quadratic_form(difference, hessian);
  }
  return total;
}

double relative_error(const gsq::Matrix<float>& weight, const gsq::Matrix<float>& hessian, const gsq::QuantizedTensor& result) {
  gsq::HessianObjective<> objective(weight, hessian);
  return objective.relative_error(result.dequantize());
}

template <class Index>
gsq::Matrix<float> permute_columns(const gsq::Matrix<float>& m, const std::vector<Index>& source) {
  gsq::Matrix<float> out(m.rows, m.cols);
  for (long r = 0; r < m.rows; ++r)
    for (long c = 0; c < m.cols; ++c) out(r, c) = m(r, source[c]);
  return out;
}

template <class Index>
gsq::Matrix<float> permute_symmetric(const gsq::Matrix<float>& h, const std::vector<Index>& source) {
  gsq::Matrix<float> out(h.rows, h.cols);
  for (long i = 0; i < h.rows; ++i)
    for (long j = 0; j < h.cols; ++j) out(i, j) = h(source[i], source[j]);
  return out;
}

}  // namespace

TEST_CASE("on a diagonal H, GPTQ is RTN exactly, for every grid, scale fit and block layout", "[gptq]") {
  const gsq::Matrix<float> weight = random_matrix(8, 96, 1);
  const gsq::Matrix<float> hessian = diagonal_hessian(96, 2);
  const std::vector<double> importance = gsq::hessian_diagonal(hessian);
  for (const gsq::GridSpec& grid : all_grids)
    for (const gsq::ScaleFit fit : all_fits)
      for (const long group_width : {16L, 48L, 96L})  // groups inside blocks, across them, per channel
        for (const bool act_order : {false, true}) {
          // Act-order gathers a group in processing order, so only max-abs is order-free bit for bit.
          if (act_order && fit != gsq::ScaleFit::max_abs) continue;
          CAPTURE(grid.name, gsq::scale_fit_name(fit), group_width, act_order);
          gsq::GptqConfig config;
          config.block_size = 32;
          config.act_order = act_order;
          config.scale_fit = fit;
          const gsq::QuantizedTensor gptq = gsq::gptq(weight, hessian, grid, group_width, config);
          const gsq::QuantizedTensor rtn = gsq::round_to_nearest(weight, grid, group_width, fit, importance);
          REQUIRE(gptq.grid == rtn.grid);
          REQUIRE(gptq.group_width == group_width);
          REQUIRE(gptq.codes == rtn.codes);
          REQUIRE(gptq.scales == rtn.scales);
        }
}

TEST_CASE("on tiny problems GPTQ never beats the exhaustive optimum and beats RTN on average", "[gptq]") {
  const gsq::GridSpec grid = gsq::grid_spec<gsq::Int<2>>();
  const long rows = 2, cols = 8, group_width = 4;
  double gptq_total = 0, rtn_total = 0;
  int optimal_rows = 0;
  for (std::uint64_t seed = 0; seed < 200; ++seed) {
    const gsq::Matrix<float> weight = random_matrix(rows, cols, 100 + seed);
    const gsq::Matrix<float> hessian = random_hessian(cols, 12, 100 + seed);
    const gsq::QuantizedTensor gptq = gsq::gptq(weight, hessian, grid, group_width);
    gptq_total += hessian_error(weight, gptq.dequantize(), hessian);
    rtn_total += hessian_error(weight, gsq::round_to_nearest(weight, grid, group_width).dequantize(), hessian);

    // Rows are independent: every code assignment of a row (4^8) with GPTQ's own scales.
    const gsq::Matrix<float> estimate = gptq.dequantize();
    std::vector<double> difference(cols);
    for (long r = 0; r < rows; ++r) {
      for (long c = 0; c < cols; ++c) difference[c] = static_cast<double>(estimate(r, c)) - weight(r, c);
      const double gptq_row = quadratic_form(difference, hessian);
      double optimum = INFINITY;
      for (long assignment = 0; assignment < (1L << (2 * cols)); ++assignment) {
        for (long c = 0; c < cols; ++c) {
          const int level = static_cast<int>((assignment >> (2 * c)) & 3) + grid.min_level;
          difference[c] = static_cast<double>(gptq.scale(r, c) * static_cast<float>(level)) - weight(r, c);
        }
        optimum = std::fmin(optimum, quadratic_form(difference, hessian));
      }
      REQUIRE(optimum <= gptq_row * (1 + 1e-12));
      optimal_rows += gptq_row <= optimum * (1 + 1e-9);
    }
  }
  REQUIRE(gptq_total < 0.95 * rtn_total);  // measured: 0.85x
  REQUIRE(optimal_rows >= 20);             // measured: the greedy sweep is optimal in 36 of 400 rows
}

TEST_CASE("GPTQ's last column is the best code given all the others (OBS compensation)", "[gptq]") {
  for (const gsq::GridSpec& grid : all_grids)
    for (const bool act_order : {false, true})
      for (std::uint64_t seed = 0; seed < 20; ++seed) {
        CAPTURE(grid.name, act_order, seed);
        const long cols = 12;
        const gsq::Matrix<float> weight = random_matrix(4, cols, 300 + seed);
        const gsq::Matrix<float> hessian = random_hessian(cols, 40, 300 + seed);
        gsq::GptqConfig config;
        config.percdamp = 0;  // the optimality holds for the H GPTQ inverts
        config.block_size = 5;
        config.act_order = act_order;
        const gsq::QuantizedTensor gptq = gsq::gptq(weight, hessian, grid, 4, config);
        long last = cols - 1;
        if (act_order)
          for (long c = 0; c < cols; ++c)
            if (hessian(c, c) < hessian(last, last)) last = c;
        const gsq::Matrix<float> estimate = gptq.dequantize();
        const double error = hessian_error(weight, estimate, hessian);
        for (long r = 0; r < weight.rows; ++r)
          for (int level = grid.min_level; level <= grid.max_level; ++level) {
            gsq::Matrix<float> changed = estimate;
            changed(r, last) = gptq.scale(r, last) * static_cast<float>(level);
            REQUIRE(error <= hessian_error(weight, changed, hessian) + 1e-6 * error);
          }
      }
}

TEST_CASE("GPTQ beats RTN on the synthetic layer for every grid, with and without act-order", "[gptq]") {
  const gsq::SyntheticLayer layer = gsq::make_synthetic_layer({256, 512, 1024, 5});
  auto objective = gsq::HessianObjective<>::from_inputs(layer.weight, layer.inputs);
  const gsq::Matrix<float> hessian = objective.hessian();
  for (const gsq::GridSpec& grid : all_grids) {
    const double rtn = objective.relative_error(gsq::round_to_nearest(layer.weight, grid, 128).dequantize());
    for (const bool act_order : {false, true}) {
      gsq::GptqConfig config;
      config.act_order = act_order;
      const gsq::QuantizedTensor gptq = gsq::gptq(layer.weight, hessian, grid, 128, config);
      const double error = objective.relative_error(gptq.dequantize());
      CAPTURE(grid.name, act_order, rtn, error);
      REQUIRE(gptq.rows == 256);
      REQUIRE(gptq.cols == 512);
      REQUIRE(gptq.scales.size() == 256 * 4);
      for (const float scale : gptq.scales) REQUIRE((std::isfinite(scale) && scale > 0));
      REQUIRE(error < 0.9 * rtn);
    }
  }
}

TEST_CASE("act-order is permutation-equivariant: the result comes back in the original column order", "[gptq]") {
  const long cols = 24;
  const gsq::Matrix<float> weight = random_matrix(6, cols, 7);
  const gsq::Matrix<float> hessian = random_hessian(cols, 64, 7);
  std::vector<long> shuffle(cols);
  std::iota(shuffle.begin(), shuffle.end(), 0L);
  for (long i = cols - 1; i > 0; --i)
    std::swap(shuffle[i], shuffle[static_cast<long>(gsq::detail::uniform(7, 9, i) * (i + 1)) % (i + 1)]);
  for (const gsq::ScaleFit fit : all_fits) {
    CAPTURE(gsq::scale_fit_name(fit));
    gsq::GptqConfig config;
    config.act_order = true;
    config.block_size = 8;
    config.scale_fit = fit;
    const gsq::QuantizedTensor original = gsq::gptq(weight, hessian, gsq::grid_spec<gsq::Int<3>>(), cols, config);
    const gsq::QuantizedTensor shuffled = gsq::gptq(permute_columns(weight, shuffle), permute_symmetric(hessian, shuffle),
                                                    gsq::grid_spec<gsq::Int<3>>(), cols, config);
    REQUIRE(shuffled.scales == original.scales);
    for (long r = 0; r < weight.rows; ++r)
      for (long c = 0; c < cols; ++c) REQUIRE(shuffled.code(r, c) == original.code(r, shuffle[c]));
  }
}

TEST_CASE("act-order on columns already in decreasing diag(H) order is plain GPTQ", "[gptq]") {
  const long cols = 64;
  const gsq::Matrix<float> hessian_any = random_hessian(cols, 128, 11);
  std::vector<long> by_diagonal(cols);
  std::iota(by_diagonal.begin(), by_diagonal.end(), 0L);
  std::sort(by_diagonal.begin(), by_diagonal.end(), [&](long a, long b) { return hessian_any(a, a) > hessian_any(b, b); });
  const gsq::Matrix<float> hessian = permute_symmetric(hessian_any, by_diagonal);
  const gsq::Matrix<float> weight = random_matrix(8, cols, 11);
  for (const gsq::ScaleFit fit : all_fits) {
    gsq::GptqConfig plain;
    plain.block_size = 16;
    plain.scale_fit = fit;
    gsq::GptqConfig act_order = plain;
    act_order.act_order = true;
    const gsq::QuantizedTensor a = gsq::gptq(weight, hessian, gsq::grid_spec<gsq::Int<2>>(), 16, plain);
    const gsq::QuantizedTensor b = gsq::gptq(weight, hessian, gsq::grid_spec<gsq::Int<2>>(), 16, act_order);
    REQUIRE(a.codes == b.codes);
    REQUIRE(a.scales == b.scales);
  }
}

TEST_CASE("the block size changes only rounding, not the algorithm", "[gptq]") {
  // One block: every update is immediate. Smaller blocks defer updates to the lazy product, and
  // a group entered inside a block gets the pending part first: the same scales either way.
  const gsq::Matrix<float> weight = random_matrix(16, 64, 13);
  const gsq::Matrix<float> hessian = random_hessian(64, 256, 13);
  const gsq::GridSpec grid = gsq::grid_spec<gsq::Int<4>>();
  for (const bool act_order : {false, true}) {
    gsq::GptqConfig one_block;
    one_block.block_size = 64;
    one_block.act_order = act_order;
    const gsq::QuantizedTensor reference = gsq::gptq(weight, hessian, grid, 16, one_block);
    const double reference_error = relative_error(weight, hessian, reference);
    for (const long block_size : {1L, 7L, 16L, 100L}) {
      gsq::GptqConfig config = one_block;
      config.block_size = block_size;
      const gsq::QuantizedTensor result = gsq::gptq(weight, hessian, grid, 16, config);
      std::size_t differing = 0;
      for (std::size_t i = 0; i < result.codes.size(); ++i) differing += result.codes[i] != reference.codes[i];
      CAPTURE(act_order, block_size, differing);
      for (std::size_t i = 0; i < result.scales.size(); ++i)
        REQUIRE(result.scales[i] == Approx(reference.scales[i]).epsilon(1e-5));
      REQUIRE(differing <= result.codes.size() / 100);  // float rounding may flip a near-tie
      REQUIRE(relative_error(weight, hessian, result) == Approx(reference_error).epsilon(0.02));
    }
  }
}

TEST_CASE("dead inputs (zero diag H) are quantized to zero without NaN", "[gptq]") {
  const long cols = 32;
  gsq::Matrix<float> inputs = random_matrix(64, cols, 17);
  const std::vector<long> dead = {3, 10, 31};
  for (const long c : dead)
    for (long t = 0; t < inputs.rows; ++t) inputs(t, c) = 0;
  gsq::Matrix<float> weight = random_matrix(8, cols, 18);
  const gsq::Matrix<float> hessian = gsq::HessianObjective<>::from_inputs(weight, inputs).hessian();
  for (const gsq::GridSpec& grid : all_grids)
    for (const gsq::ScaleFit fit : all_fits)
      for (const bool act_order : {false, true}) {
        CAPTURE(grid.name, gsq::scale_fit_name(fit), act_order);
        gsq::GptqConfig config;
        config.scale_fit = fit;
        config.act_order = act_order;
        config.block_size = 8;
        const gsq::QuantizedTensor result = gsq::gptq(weight, hessian, grid, 16, config);
        for (const float scale : result.scales) REQUIRE((std::isfinite(scale) && scale > 0));
        for (long r = 0; r < weight.rows; ++r)
          for (const long c : dead) REQUIRE(result.code(r, c) == 0);
        const double error = relative_error(weight, hessian, result);
        REQUIRE(std::isfinite(error));
        // A dead input's weights never matter: they are zeroed before anything sees them.
        gsq::Matrix<float> other = weight;
        for (long r = 0; r < weight.rows; ++r) other(r, 3) = 100.0f;
        const gsq::QuantizedTensor same = gsq::gptq(other, hessian, grid, 16, config);
        REQUIRE(same.codes == result.codes);
        REQUIRE(same.scales == result.scales);
      }
}

TEST_CASE("a Hessian that is not positive definite is an error suggesting a larger percdamp", "[gptq][errors]") {
  const long cols = 8;
  const gsq::Matrix<float> weight = random_matrix(2, cols, 19);
  gsq::Matrix<float> negative(cols, cols);
  for (long c = 0; c < cols; ++c) negative(c, c) = -1;
  REQUIRE_THROWS_WITH(gsq::gptq(weight, negative, gsq::grid_spec<gsq::Int<2>>(), cols),
                      Catch::Contains("not positive semi-definite"));
  // Positive diagonal, yet indefinite: [[1, 2], [2, 1]] blocks.
  gsq::Matrix<float> indefinite(cols, cols);
  for (long c = 0; c < cols; c += 2) {
    indefinite(c, c) = indefinite(c + 1, c + 1) = 1;
    indefinite(c, c + 1) = indefinite(c + 1, c) = 2;
  }
  REQUIRE_THROWS_WITH(gsq::gptq(weight, indefinite, gsq::grid_spec<gsq::Int<2>>(), cols),
                      Catch::Contains("not positive definite") && Catch::Contains("larger percdamp"));
  gsq::GptqConfig damped;
  damped.percdamp = 1.5;  // diag 1 + 1.5 = 2.5 > 2: positive definite
  REQUIRE_NOTHROW(gsq::gptq(weight, indefinite, gsq::grid_spec<gsq::Int<2>>(), cols, damped));
}

TEST_CASE("invalid GPTQ input is an error naming the problem", "[gptq][errors]") {
  const gsq::GridSpec grid = gsq::grid_spec<gsq::Int<2>>();
  const gsq::Matrix<float> weight = random_matrix(4, 12, 23);
  const gsq::Matrix<float> hessian = random_hessian(12, 32, 23);
  REQUIRE_THROWS_WITH(gsq::gptq(weight, hessian, grid, 8), Catch::Contains("group size 8 does not divide"));
  REQUIRE_THROWS_WITH(gsq::gptq(weight, random_hessian(10, 32, 1), grid, 4), Catch::Contains("12 input columns"));
  gsq::Matrix<float> asymmetric = hessian;
  asymmetric(0, 5) += 1;
  REQUIRE_THROWS_WITH(gsq::gptq(weight, asymmetric, grid, 4), Catch::Contains("not symmetric"));
  gsq::GptqConfig config;
  config.percdamp = -0.1;
  REQUIRE_THROWS_WITH(gsq::gptq(weight, hessian, grid, 4, config), Catch::Contains("percdamp"));
  config = {};
  config.block_size = 0;
  REQUIRE_THROWS_WITH(gsq::gptq(weight, hessian, grid, 4, config), Catch::Contains("block size"));
  gsq::Matrix<float> broken = weight;
  broken(1, 1) = NAN;
  REQUIRE_THROWS_WITH(gsq::gptq(broken, hessian, grid, 4), Catch::Contains("non-finite"));
}

TEST_CASE("GPTQ's result does not depend on the thread count and starts GSQ", "[gptq]") {
  // Large enough that the sweep and the lazy update run on a thread team (detail::parallel_work).
  const gsq::SyntheticLayer layer = gsq::make_synthetic_layer({512, 256, 512, 29});
  const gsq::Matrix<float> hessian = gsq::HessianObjective<>::from_inputs(layer.weight, layer.inputs).hessian();
  gsq::GptqConfig config;
  config.block_size = 64;
  config.act_order = true;
  config.scale_fit = gsq::ScaleFit::weighted;
  gsq::set_host_threads(1);
  const gsq::QuantizedTensor single = gsq::gptq(layer.weight, hessian, gsq::grid_spec<gsq::Int<2>>(), 128, config);
  gsq::set_host_threads(3);
  const gsq::QuantizedTensor several = gsq::gptq(layer.weight, hessian, gsq::grid_spec<gsq::Int<2>>(), 128, config);
  REQUIRE(single.codes == several.codes);
  REQUIRE(single.scales == several.scales);

  gsq::Quantizer<gsq::Int<2>, gsq::GroupSize<128>> quantizer(several);
  REQUIRE(quantizer.result().scales == several.scales);
}
