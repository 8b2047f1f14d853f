// experiments/driver.hpp -- what the experiment drivers share: failures become one-line messages
// and exit statuses (2: bad input or settings, 1: anything else); the labels of a run's format.
#pragma once

#include <cstdio>
#include <exception>
#include <new>
#include <string>

#include <boost/program_options/errors.hpp>

#include <gsq/common/error.hpp>

namespace gsq::driver {

/// Runs `body` (returning the exit status), printing "<program>: error: <message>" for failures.
template <class Body>
int run(const char* program, Body&& body) {
  try {
    return body();
  } catch (const boost::program_options::error& error) {
    std::fprintf(stderr, "%s: error: %s (see --help)\n", program, error.what());
    return 2;
  } catch (const Error& error) {
    std::fprintf(stderr, "%s: error: %s\n", program, error.what());
    return 2;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "%s: error: out of memory (the settings ask for more than this machine can give; "
                         "try fewer tokens, a shorter window or a smaller layer)\n", program);
    return 1;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "%s: error: %s\n", program, error.what());
    return 1;
  }
}

/// The "bits" and "group" labels of a run's format (tables, manifests): the grid and grouping, or
/// the K-quant format chosen by --format and its sub-block.
template <class Options>
std::string bits_label(const Options& options) {
  return options.k_quant ? options.k_quant->name : options.grid.spelling();
}
template <class Options>
std::string group_label(const Options& options) {
  return options.k_quant ? "sub " + std::to_string(options.k_quant->sub_block) : options.grouping.spelling();
}

}  // namespace gsq::driver
