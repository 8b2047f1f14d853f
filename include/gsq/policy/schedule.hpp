// gsq/policy/schedule.hpp -- schedule shapes: how a value moves from `start` to `end` over a run.
//
// A shape is an empty struct with `static double at(start, end, progress)`, progress in [0, 1]
// (0 at the first step, 1 at the last). The quantizer anneals its temperature and logit scale
// with one shape; the end points are run-time values, the shape is a compile-time choice.
#pragma once

#include <cmath>

namespace gsq {

/// Fraction of a run completed at `step` of `steps`: 0 at the first step, 1 at the last.
inline double schedule_progress(long step, long steps) {
  return steps > 1 ? static_cast<double>(step) / static_cast<double>(steps - 1) : 1.0;
}

/// Straight line from start to end (the reference's schedule).
struct LinearAnneal {
  static constexpr const char* name = "linear";
  static double at(double start, double end, double progress) {
    return start + (end - start) * progress;
  }
};

/// Half a cosine: flat near both ends, fastest in the middle.
struct CosineAnneal {
  static constexpr const char* name = "cosine";
  static double at(double start, double end, double progress) {
    return end + (start - end) * 0.5 * (1.0 + std::cos(3.14159265358979323846 * progress));
  }
};

/// Geometric interpolation (constant ratio per step); both end points must be positive.
struct ExponentialAnneal {
  static constexpr const char* name = "exponential";
  static double at(double start, double end, double progress) {
    return start * std::pow(end / start, progress);
  }
};

}  // namespace gsq
