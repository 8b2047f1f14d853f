// The Catch2 entry point of the test suite.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "skip.hpp"

int main(int argc, char** argv) {
  const int status = Catch::Session().run(argc, argv);
  // 77 means "skipped" to ctest: a failing run never exits with it, a run that skipped a test case
  // (GSQ_SKIP) and failed nothing always does.
  if (status != 0) return status == 77 ? 1 : status;
  return gsq::testing::skipped() ? 77 : 0;
}
