// tests/skip.hpp -- skipping a test case whose prerequisite is missing (Catch2 2 has no SKIP).
#pragma once

#include <catch2/catch.hpp>

namespace gsq::testing {

/// Set when a test case of this run was skipped; tests/main.cpp then exits 77 if nothing failed,
/// which ctest (SKIP_RETURN_CODE 77, tests/CMakeLists.txt) reports as skipped, not passed: ctest
/// runs each test case in its own process.
inline bool& skipped() {
  static bool value = false;
  return value;
}

}  // namespace gsq::testing

/// Ends the current test case as skipped, saying why (the reason may use <<, as in WARN).
#define GSQ_SKIP(reason)                 \
  do {                                   \
    WARN("SKIP: " << reason);            \
    gsq::testing::skipped() = true;      \
    return;                              \
  } while (false)
