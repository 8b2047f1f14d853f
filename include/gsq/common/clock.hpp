// gsq/common/clock.hpp -- the clock runs and reports are timed with (wall time, monotonic).
#pragma once

#include <chrono>

namespace gsq {

using Clock = std::chrono::steady_clock;

/// Seconds from `start` until now.
inline double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

}  // namespace gsq
