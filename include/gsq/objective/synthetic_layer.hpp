// gsq/objective/synthetic_layer.hpp -- a synthetic LLM-like linear layer for experiments, tests and
// benchmarks, reproducible on any platform (all randomness from Philox).
//
// Weights: heavy-tailed (Student-t, 4 degrees of freedom) with per-row scales spread
// log-normally around 0.02. Calibration inputs: Gaussian features correlated through a shared
// low-rank component, and a few outlier channels 20-100x larger, as LLM activations have.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "gsq/common/error.hpp"
#include "gsq/common/matrix.hpp"
#include "gsq/core/philox.hpp"

namespace gsq {

struct SyntheticLayerConfig {
  long rows = 1024;
  long cols = 1024;
  long tokens = 2048;
  std::uint64_t seed = 1;
  int correlation_rank = 16;
  double outlier_fraction = 0.01;  // of the input channels, at least two
};

struct SyntheticLayer {
  Matrix<float> weight;  // rows x cols
  Matrix<float> inputs;  // tokens x cols
};

namespace detail {
/// A reproducible stream of standard normals: element i of stream `stream` under `seed`.
inline double standard_normal(std::uint64_t seed, std::uint64_t stream, std::uint64_t i) {
  double value[1];
  normal_noise<double, 1>(seed ^ (stream * 0x9E3779B97F4A7C15ull), i, value);
  return value[0];
}
inline double uniform(std::uint64_t seed, std::uint64_t stream, std::uint64_t i) {
  const Philox4x32::Block bits = Philox4x32::generate(
      {{static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(i >> 32), static_cast<std::uint32_t>(stream), 0x40000000u}},
      static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
  return uniform_open<double>(bits.word[0]);
}
}  // namespace detail

inline SyntheticLayer make_synthetic_layer(const SyntheticLayerConfig& config) {
  require(config.rows > 0 && config.cols > 0 && config.tokens > 0,
          "the synthetic layer needs positive rows, cols and tokens");
  enum class Stream : std::uint64_t { weight_normal = 1, weight_chi, row_scale, feature, shared, mixing, outlier };
  const auto id = [](Stream s) { return static_cast<std::uint64_t>(s); };
  const std::uint64_t seed = config.seed;
  SyntheticLayer layer{Matrix<float>(config.rows, config.cols), Matrix<float>(config.tokens, config.cols)};

  for (long r = 0; r < config.rows; ++r) {
    const double row_scale = 0.02 * std::exp(0.5 * detail::standard_normal(seed, id(Stream::row_scale), r));
    for (long c = 0; c < config.cols; ++c) {
      const std::uint64_t e = static_cast<std::uint64_t>(r * config.cols + c);
      double chi = 0;  // chi-square with 4 degrees of freedom
      for (int d = 0; d < 4; ++d) chi += std::pow(detail::standard_normal(seed, id(Stream::weight_chi), 4 * e + d), 2);
      const double student = detail::standard_normal(seed, id(Stream::weight_normal), e) / std::sqrt(chi / 4);
      layer.weight(r, c) = static_cast<float>(row_scale * student / std::sqrt(2.0));  // t_4 has variance 2
    }
  }

  const int rank = config.correlation_rank;
  Matrix<double> mixing(rank, config.cols);
  for (long i = 0; i < rank * config.cols; ++i)
    mixing.values[static_cast<std::size_t>(i)] = detail::standard_normal(seed, id(Stream::mixing), i) / std::sqrt(rank);
  const long outliers = std::max<long>(2, static_cast<long>(config.outlier_fraction * config.cols));
  std::vector<double> channel_gain(static_cast<std::size_t>(config.cols), 1.0);
  for (long i = 0; i < outliers; ++i) {
    const long channel = static_cast<long>(detail::uniform(seed, id(Stream::outlier), 2 * i) * config.cols) % config.cols;
    channel_gain[static_cast<std::size_t>(channel)] = 20.0 + 80.0 * detail::uniform(seed, id(Stream::outlier), 2 * i + 1);
  }
  std::vector<double> shared_factors(static_cast<std::size_t>(rank));
  for (long t = 0; t < config.tokens; ++t) {
    for (int k = 0; k < rank; ++k) shared_factors[k] = detail::standard_normal(seed, id(Stream::shared), t * rank + k);
    for (long c = 0; c < config.cols; ++c) {
      double value = detail::standard_normal(seed, id(Stream::feature), static_cast<std::uint64_t>(t * config.cols + c));
      for (int k = 0; k < rank; ++k) value += shared_factors[k] * mixing(k, c);
      layer.inputs(t, c) = static_cast<float>(channel_gain[static_cast<std::size_t>(c)] * value);
    }
  }
  return layer;
}

}  // namespace gsq
