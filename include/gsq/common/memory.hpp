// gsq/common/memory.hpp -- sizes a user gives (windows, token counts, layer shapes) are checked
// against the memory they imply before anything is allocated, so that a setting too large for
// the machine is refused by name instead of ending in std::bad_alloc part-way through.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <string>

#include "gsq/common/error.hpp"

namespace gsq {

/// The machine's physical memory in bytes (0 if unknown).
inline double physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page_size = ::sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page_size > 0 ? static_cast<double>(pages) * static_cast<double>(page_size) : 0.0;
}

inline std::string gibibytes(double bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
  return text;
}

/// Throws gsq::Error if `bytes` exceed the machine's memory; `what` says what needs them and
/// which setting to change ("an evaluation window of 100000 tokens (--window)").
inline void require_memory(double bytes, const std::string& what) {
  const double available = physical_memory_bytes();
  require(available == 0 || bytes <= available,
          what + " needs about " + gibibytes(bytes) + ", more than this machine's " + gibibytes(available));
}

}  // namespace gsq
