// experiments/driver.hpp -- what the experiment drivers share: failures become one-line messages
// and exit statuses (2: bad input or settings, 1: anything else), and text files are written
// atomically.
#pragma once

#include <cstdio>
#include <exception>
#include <string>

#include <boost/program_options/errors.hpp>

#include <gsq/error.hpp>
#include <gsq/safetensors.hpp>

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
  } catch (const std::exception& error) {
    std::fprintf(stderr, "%s: error: %s\n", program, error.what());
    return 1;
  }
}

/// Writes `text` to `path` through a temporary file renamed into place.
inline void write_text_atomically(const std::string& path, const std::string& text) {
  detail::write_file_atomically(path, {{text.data(), text.size()}});
}

}  // namespace gsq::driver
