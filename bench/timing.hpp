// bench/timing.hpp -- what the benchmarks share: wall time of a piece of work, and medians.
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

namespace gsq::bench {

inline double median(std::vector<double> values) {
  std::nth_element(values.begin(), values.begin() + values.size() / 2, values.end());
  return values[values.size() / 2];
}

inline double seconds_of(const std::function<void()>& work) {
  const auto start = std::chrono::steady_clock::now();
  work();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace gsq::bench
