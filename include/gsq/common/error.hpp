// gsq/common/error.hpp -- the one exception type the library throws for bad input or settings.
#pragma once

#include <stdexcept>
#include <string>

namespace gsq {

/// Thrown for invalid settings or malformed input; the message names the problem.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Throws gsq::Error(message) unless `condition` holds.
inline void require(bool condition, const std::string& message) {
  if (!condition) throw Error(message);
}

}  // namespace gsq
