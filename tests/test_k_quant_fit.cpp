// The importance-weighted K-quant fit (gsq/init/k_quant_fit.hpp): a sub-block's fit against a
// brute-force search, the whole fit against a plain min/max rounding, importance at work, and
// the stored result consistent with the format.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include <gsq/backend/host.hpp>
#include <gsq/init/k_quant_fit.hpp>

#include "random_matrix.hpp"

namespace {


double weighted_error(const gsq::Matrix<float>& a, const gsq::Matrix<float>& b, const std::vector<float>& importance) {
  double error = 0;
  for (long r = 0; r < a.rows; ++r)
    for (long c = 0; c < a.cols; ++c) {
      const double difference = a(r, c) - b(r, c);
      error += (importance.empty() ? 1.0 : importance[static_cast<std::size_t>(c)]) * difference * difference;
    }
  return error;
}

/// The plain rounding: each sub-block's step from its range, the min its smallest value (codes
/// symmetric about the largest |x| for Q3_K and Q6_K), fp16 factors from the largest, no search.
gsq::Matrix<float> plain_rounding(const gsq::Matrix<float>& weight, const gsq::KQuantFormat& format) {
  gsq::Matrix<float> out(weight.rows, weight.cols);
  const int n = format.sub_block;
  for (std::size_t first = 0; first < weight.values.size(); first += static_cast<std::size_t>(n)) {
    float low = 0, high = 0;
    for (int i = 0; i < n; ++i) low = std::fmin(low, weight.values[first + i]), high = std::fmax(high, weight.values[first + i]);
    const float amax = std::fmax(-low, high);
    const float scale = format.has_min ? (high - low) / format.max_code : amax / -format.min_code;
    const float min = format.has_min ? -low : 0;
    for (int i = 0; i < n; ++i) {
      const int q = scale == 0 ? 0 : gsq::detail::round_code((weight.values[first + i] + min) / scale, format.min_code, format.max_code);
      out.values[first + i] = scale * static_cast<float>(q) - min;
    }
  }
  return out;
}

}  // namespace

TEST_CASE("a sub-block's fit comes within a few percent of the best (scale, min) a brute-force grid finds",
          "[k_quant][fit]") {
  std::mt19937 random(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(0.1f, 2.0f);
  for (const gsq::KQuantFormat* format : gsq::k_quant_formats()) {
    // The grid's steps: finer for the formats of more codes, whose scales are smaller.
    const float scale_step = 0.16f / static_cast<float>(format->max_code - format->min_code),
                min_step = format->max_code > 15 ? 0.01f : 0.02f;
    double ours_total = 0, best_total = 0;
    for (int trial = 0; trial < 20; ++trial) {
      const int n = format->sub_block;
      std::vector<float> x(static_cast<std::size_t>(n)), w(static_cast<std::size_t>(n));
      for (int i = 0; i < n; ++i) x[i] = normal(random), w[i] = uniform(random);
      const gsq::detail::SubBlockFit fit = gsq::detail::fit_sub_block(x.data(), w.data(), n, *format);
      const double ours = gsq::detail::sub_block_error(x.data(), w.data(), n, *format, fit.scale, fit.min);
      double best = gsq::detail::sub_block_error(x.data(), w.data(), n, *format, 0, 0);
      for (int a = -400; a <= 400; ++a)
        for (int b = 0; b <= (format->has_min ? 200 : 0); ++b) {
          const float scale = scale_step * static_cast<float>(a), min = min_step * static_cast<float>(b);
          if (format->has_min && scale < 0) continue;
          best = std::min(best, gsq::detail::sub_block_error(x.data(), w.data(), n, *format, scale, min));
        }
      INFO(format->name << " trial " << trial << ": fit " << ours << ", brute force " << best);
      CHECK(ours <= 1.12 * best);
      ours_total += ours, best_total += best;
    }
    INFO(format->name << ": fit " << ours_total << ", brute force " << best_total << " over 20 sub-blocks");
    CHECK(ours_total <= 1.03 * best_total);
  }
}

TEST_CASE("the K-quant fit beats plain min/max rounding, and stores what it fitted", "[k_quant][fit]") {
  const gsq::Matrix<float> weight = gsq::testing::gaussian_matrix(16, 512, 3);
  for (const gsq::KQuantFormat* format : gsq::k_quant_formats()) {
    INFO(format->name);
    const gsq::KQuantTensor fitted = gsq::fit_k_quant(weight, {}, *format);
    const gsq::Matrix<float> stored = fitted.dequantize();
    const double fit_error = weighted_error(stored, weight, {}), plain = weighted_error(plain_rounding(weight, *format), weight, {});
    CHECK(fit_error < 0.9 * plain);  // the fit searches; the plain rounding does not
    CHECK(gsq::encode_k_quant(fitted).size() == static_cast<std::size_t>(16 * 512 / format->super_block * format->block_bytes));
  }
  // More bits, less error.
  const double q2 = weighted_error(gsq::fit_k_quant(weight, {}, gsq::q2_k()).dequantize(), weight, {}),
               q3 = weighted_error(gsq::fit_k_quant(weight, {}, gsq::q3_k()).dequantize(), weight, {}),
               q4 = weighted_error(gsq::fit_k_quant(weight, {}, gsq::q4_k()).dequantize(), weight, {}),
               q5 = weighted_error(gsq::fit_k_quant(weight, {}, gsq::q5_k()).dequantize(), weight, {}),
               q6 = weighted_error(gsq::fit_k_quant(weight, {}, gsq::q6_k()).dequantize(), weight, {}),
               q4_1 = weighted_error(gsq::fit_k_quant(weight, {}, gsq::q4_1()).dequantize(), weight, {}),
               q5_1 = weighted_error(gsq::fit_k_quant(weight, {}, gsq::q5_1()).dequantize(), weight, {});
  INFO("q2_k " << q2 << ", q3_k " << q3 << ", q4_k " << q4 << ", q5_k " << q5 << ", q6_k " << q6 << ", q4_1 " << q4_1
               << ", q5_1 " << q5_1);
  CHECK(q3 < 0.5 * q2);
  CHECK(q4 < 0.5 * q3);
  CHECK(q5 < 0.5 * q4);
  CHECK(q6 < 0.5 * q5);
  CHECK(q4_1 < 0.5 * q3);  // four bits and fp16 scale and min per 32
  CHECK(q5_1 < 0.5 * q4_1);
}

TEST_CASE("importance moves the K-quant fit's error away from the columns that matter", "[k_quant][fit]") {
  const gsq::Matrix<float> weight = gsq::testing::gaussian_matrix(32, 256, 9);
  std::vector<float> importance(256, 1.0f);
  for (int c = 0; c < 256; c += 16) importance[static_cast<std::size_t>(c)] = 100.0f;  // one column per sub-block
  const std::vector<float> marked(importance.begin(), importance.end());
  std::vector<float> only_marked(256, 0.0f);
  for (int c = 0; c < 256; c += 16) only_marked[static_cast<std::size_t>(c)] = 1.0f;
  for (const gsq::KQuantFormat* format : {&gsq::q2_k(), &gsq::q3_k(), &gsq::q6_k()}) {
    INFO(format->name);
    const gsq::Matrix<float> plain = gsq::fit_k_quant(weight, {}, *format).dequantize(),
                             weighted = gsq::fit_k_quant(weight, marked, *format).dequantize();
    CHECK(weighted_error(weighted, weight, only_marked) < 0.5 * weighted_error(plain, weight, only_marked));
    CHECK(weighted_error(weighted, weight, marked) < weighted_error(plain, weight, marked));
  }
}

TEST_CASE("the K-quant fit refuses what it cannot fit", "[k_quant][fit]") {
  CHECK_THROWS_WITH(gsq::fit_k_quant(gsq::testing::gaussian_matrix(2, 128, 1), {}, gsq::q4_k()), Catch::Contains("blocks of 256"));
  CHECK_THROWS_WITH(gsq::fit_k_quant(gsq::testing::gaussian_matrix(2, 48, 1), {}, gsq::q4_1()), Catch::Contains("blocks of 32"));
  CHECK_THROWS_WITH(gsq::fit_k_quant(gsq::testing::gaussian_matrix(2, 256, 1), std::vector<float>(3, 1.0f), gsq::q4_k()),
                    Catch::Contains("one value per input column"));
  gsq::Matrix<float> bad = gsq::testing::gaussian_matrix(1, 256, 1);
  bad.values[7] = NAN;
  CHECK_THROWS_WITH(gsq::fit_k_quant(bad, {}, gsq::q2_k()), Catch::Contains("non-finite"));
  // All zero: every scale zero, and the result dequantizes to zero.
  const gsq::KQuantTensor zero = gsq::fit_k_quant(gsq::Matrix<float>(2, 256), {}, gsq::q3_k());
  for (float value : zero.dequantize().values) CHECK(value == 0.0f);
}

TEST_CASE("the K-quant fit gives the same bytes on any number of threads", "[k_quant][fit]") {
  const gsq::Matrix<float> weight = gsq::testing::gaussian_matrix(24, 768, 4);
  for (const gsq::KQuantFormat* format : {&gsq::q4_k(), &gsq::q6_k()}) {
    gsq::set_host_threads(1);
    const std::vector<std::uint8_t> one = gsq::encode_k_quant(gsq::fit_k_quant(weight, {}, *format));
    gsq::set_host_threads(2);
    const std::vector<std::uint8_t> two = gsq::encode_k_quant(gsq::fit_k_quant(weight, {}, *format));
    CHECK(one == two);
  }
  gsq::set_host_threads(0);
}
