// Tests of gsq/core/philox.hpp: Philox4x32-10 against the published known-answer vectors, and the
// Gumbel and normal noise drawn from it against their distributions' moments.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>

#include <gsq/core/philox.hpp>

namespace {

using Block = gsq::Philox4x32::Block;

void require_block(const Block& actual, const Block& expected) {
  for (int i = 0; i < 4; ++i) {
    INFO("word " << i);
    REQUIRE(actual.word[i] == expected.word[i]);
  }
}

/// Sample mean and variance of `count` draws of `draw(i)`, accumulated in double.
template <class Draw>
void sample_moments(long count, Draw draw, double& mean, double& variance) {
  double sum = 0, sum_of_squares = 0;
  for (long i = 0; i < count; ++i) {
    const double x = draw(i);
    sum += x;
    sum_of_squares += x * x;
  }
  mean = sum / static_cast<double>(count);
  variance = sum_of_squares / static_cast<double>(count) - mean * mean;
}

}  // namespace

// Random123's kat_vectors, philox4x32_10 lines: (counter, key) -> output.
TEST_CASE("Philox4x32-10 reproduces the Random123 known-answer vectors", "[philox]") {
  require_block(gsq::Philox4x32::generate({{0u, 0u, 0u, 0u}}, 0u, 0u),
                {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}});
  require_block(gsq::Philox4x32::generate({{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}}, 0xffffffffu, 0xffffffffu),
                {{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}});
  require_block(gsq::Philox4x32::generate({{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0xa4093822u, 0x299f31d0u),
                {{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}});
}

TEST_CASE("uniforms stay strictly inside (0, 1) and Gumbel noise stays finite at the extreme bit patterns", "[philox]") {
  for (const std::uint32_t bits : {0u, 1u, 0x1ffu, 0x200u, 0xfffffe00u, 0xffffffffu}) {
    INFO("bits " << bits);
    REQUIRE(gsq::uniform_open<float>(bits) > 0.0f);
    REQUIRE(gsq::uniform_open<float>(bits) < 1.0f);
    REQUIRE(std::isfinite(gsq::gumbel_from_bits<float>(bits)));
    REQUIRE(std::isfinite(gsq::gumbel_from_bits<double>(bits)));
  }
  // The Gumbel quantile function is increasing: the all-ones pattern is the largest noise.
  REQUIRE(gsq::gumbel_from_bits<double>(0u) < gsq::gumbel_from_bits<double>(0xffffffffu));
}

TEST_CASE("single-precision Gumbel noise agrees with the double-precision quantile function", "[philox]") {
  // The float path uses its own log (gsq/detail/fast_math.hpp); its error must stay at float
  // rounding level over the whole range of bit patterns, tails included.
  double worst = 0;
  for (std::uint64_t bits = 0; bits <= 0xffffffffull; bits += 0x1000ull + 7) {
    const double exact = -std::log(-std::log(gsq::uniform_open<double>(static_cast<std::uint32_t>(bits))));
    const double single = gsq::gumbel_from_bits<float>(static_cast<std::uint32_t>(bits));
    worst = std::fmax(worst, std::fabs(single - exact) / std::fmax(1.0, std::fabs(exact)));
  }
  REQUIRE(worst < 2e-6);
}

TEST_CASE("Gumbel noise has the mean (Euler-Mascheroni) and variance (pi^2/6) of a standard Gumbel", "[philox]") {
  constexpr int K = 5;  // the fifth candidate's bits are gathered from the low bits of the first four
  constexpr long elements = 60000;
  double mean = 0, variance = 0;
  sample_moments(elements * K, [](long i) {
    double noise[K];
    gsq::gumbel_noise<double, K>(7, 3, static_cast<std::uint64_t>(i / K), noise);
    return noise[i % K];
  }, mean, variance);
  // Standard errors: sqrt(1.645 / 3e5) = 0.0023 for the mean; tolerances are about 5 of them.
  REQUIRE(mean == Approx(0.5772156649).margin(0.012));
  REQUIRE(variance == Approx(3.14159265358979 * 3.14159265358979 / 6).margin(0.05));
}

TEST_CASE("the fifth candidate's noise is uncorrelated with the other four, and a sixth takes a new block", "[philox]") {
  constexpr int K = 7;
  constexpr long elements = 100000;
  double sum[K] = {}, square[K] = {}, product[K] = {};  // product[k] = sum of noise[4] * noise[k]
  for (long e = 0; e < elements; ++e) {
    double noise[K];
    gsq::gumbel_noise<double, K>(5, 1, static_cast<std::uint64_t>(e), noise);
    for (int k = 0; k < K; ++k) sum[k] += noise[k], square[k] += noise[k] * noise[k], product[k] += noise[4] * noise[k];
  }
  const auto correlation = [&](int k) {
    const double n = elements, mean4 = sum[4] / n, mean = sum[k] / n;
    return (product[k] / n - mean4 * mean) /
           std::sqrt((square[4] / n - mean4 * mean4) * (square[k] / n - mean * mean));
  };
  // Standard error of a correlation over 1e5 samples: 0.003.
  for (int k : {0, 1, 2, 3, 5, 6}) {
    INFO("candidate " << k);
    REQUIRE(std::fabs(correlation(k)) < 0.015);
  }
  double seven[K], five[5];
  gsq::gumbel_noise<double, K>(5, 1, 9, seven);
  gsq::gumbel_noise<double, 5>(5, 1, 9, five);
  for (int k = 0; k < 5; ++k) REQUIRE(seven[k] == five[k]);  // the first five do not depend on K
}

TEST_CASE("normal noise has mean 0 and variance 1", "[philox]") {
  constexpr int K = 3;
  constexpr long elements = 100000;
  double mean = 0, variance = 0;
  sample_moments(elements * K, [](long i) {
    double noise[K];
    gsq::normal_noise<double, K>(11, static_cast<std::uint64_t>(i / K), noise);
    return noise[i % K];
  }, mean, variance);
  REQUIRE(mean == Approx(0.0).margin(0.01));
  REQUIRE(variance == Approx(1.0).margin(0.02));
}

TEST_CASE("noise is a pure function of (seed, step, element) and changes with each of them", "[philox]") {
  constexpr int K = 4;
  const auto draw = [](std::uint64_t seed, std::uint32_t step, std::uint64_t element) {
    double noise[K];
    gsq::gumbel_noise<double, K>(seed, step, element, noise);
    return noise[0];
  };
  REQUIRE(draw(1, 2, 3) == draw(1, 2, 3));
  REQUIRE(draw(1, 2, 3) != draw(2, 2, 3));
  REQUIRE(draw(1, 2, 3) != draw(1, 3, 3));
  REQUIRE(draw(1, 2, 3) != draw(1, 2, 4));
  // The high halves of the 64-bit seed and element reach the generator too.
  REQUIRE(draw(1, 2, 3) != draw(1 + (1ull << 32), 2, 3));
  REQUIRE(draw(1, 2, 3) != draw(1, 2, 3 + (1ull << 32)));
}
