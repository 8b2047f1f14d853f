// tests/program_runner.hpp -- what the tests of the experiment drivers share: scratch
// directories, file reading, and running a built driver to collect its exit status and output.
#pragma once

#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <sys/wait.h>
#include <unistd.h>

namespace gsq::testing {

namespace fs = std::filesystem;

struct Outcome {
  int status;  // exit status; -1 when the program did not exit normally (a crash)
  std::string out;
  std::string err;
};

/// A fresh directory for one test's files, removed afterwards.
struct ScratchDirectory {
  fs::path path = fs::temp_directory_path() /
                  ("gsq_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++));
  ScratchDirectory() { fs::create_directories(path); }
  ~ScratchDirectory() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
  static int& counter() {
    static int next = 0;
    return next;
  }
};

inline std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

/// Runs the built driver `name` (in GSQ_BINARY_DIR) with `arguments`, a shell word list.
inline Outcome run_program(const std::string& name, const std::string& arguments) {
  const std::string executable = std::string(GSQ_BINARY_DIR) + "/" + name;
  if (!fs::exists(executable))
    FAIL("the " << name << " executable is missing at " << executable << ": build the " << name << " target first");
  const ScratchDirectory scratch;
  const fs::path err_path = scratch.path / "stderr.txt";
  const std::string command = "'" + executable + "' " + arguments + " 2>'" + err_path.string() + "'";
  FILE* pipe = ::popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string out;
  char buffer[4096];
  for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) out.append(buffer, n);
  const int wait_status = ::pclose(pipe);
  const int status = WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : -1;
  return {status, out, read_file(err_path)};
}

}  // namespace gsq::testing
