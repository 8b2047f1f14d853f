// tests/error_message.hpp -- the message a failing call gives, for tests of error handling.
#pragma once

#include <string>

#include <gsq/common/error.hpp>

namespace gsq::testing {

/// The message of the gsq::Error `action` throws, or "(no error)".
template <class Action>
std::string error_of(Action action) {
  try {
    action();
  } catch (const gsq::Error& error) {
    return error.what();
  }
  return "(no error)";
}

}  // namespace gsq::testing
