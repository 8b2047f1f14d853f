// experiments/driver.hpp -- what the experiment drivers share: failures become one-line messages
// and exit statuses (2: bad input or settings, 1: anything else: the disk, memory); flags read
// strictly; the labels of a run's format.
#pragma once

#include <cstdint>
#include <cstdio>
#include <exception>
#include <new>
#include <string>

#include <boost/program_options/errors.hpp>

#include <gsq/backend/host.hpp>
#include <gsq/common/clock.hpp>
#include <gsq/common/error.hpp>
#include <gsq/io/atomic_file.hpp>

namespace gsq::driver {

/// Runs `body` (returning the exit status), printing "<program>: error: <message>" for failures.
template <class Body>
int run(const char* program, Body&& body) {
  try {
    return body();
  } catch (const boost::program_options::error& error) {
    std::fprintf(stderr, "%s: error: %s (see --help)\n", program, error.what());
    return 2;
  } catch (const SystemError& error) {  // the system failed (a full disk), not the user's input
    std::fprintf(stderr, "%s: error: %s\n", program, error.what());
    return 1;
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

/// Sets the host threads from --threads (gsq::set_host_threads), naming the flag in a refusal.
inline void set_threads(int threads) {
  try {
    set_host_threads(threads);
  } catch (const Error& error) {
    throw Error(std::string("--threads: ") + error.what());
  }
}

/// The value of a non-negative integer flag (a seed) from its text. Read as text because boost
/// reads "-1" into an unsigned flag as 2^64 - 1 without a word.
inline std::uint64_t parse_unsigned(const std::string& flag, const std::string& text) {
  const bool digits = !text.empty() && text.size() <= 20 && text.find_first_not_of("0123456789") == std::string::npos;
  require(digits && (text.size() < 20 || text <= "18446744073709551615"),
          flag + " must be a whole number from 0 to 2^64 - 1, got '" + text + "'");
  return std::stoull(text);
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
