// Random matrices the tests quantize: normal entries of standard deviation 0.02 (a typical LLM
// weight scale), reproducible from a seed.
#pragma once

#include <random>

#include <gsq/common/matrix.hpp>

namespace gsq::testing {

inline Matrix<float> gaussian_matrix(long rows, long cols, unsigned seed) {
  Matrix<float> weight(rows, cols);
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (float& value : weight.values) value = normal(generator);
  return weight;
}

}  // namespace gsq::testing
