// Tests of the quantize_layer driver (experiments/quantize_layer.cpp), run as a program: its
// JSON records, its table, its errors and its help.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fs = std::filesystem;

namespace {

const std::string executable = GSQ_BINARY_DIR "/quantize_layer";

struct Outcome {
  int status;  // exit status; -1 when the program did not exit normally (a crash)
  std::string out;
  std::string err;
};

/// A fresh directory for one test's files, removed afterwards.
struct ScratchDirectory {
  fs::path path = fs::temp_directory_path() /
                  ("gsq_test_quantize_layer_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++));
  ScratchDirectory() { fs::create_directories(path); }
  ~ScratchDirectory() { fs::remove_all(path); }
  static int& counter() {
    static int next = 0;
    return next;
  }
};

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

/// Runs quantize_layer with `arguments` (a shell word list) and collects its exit status and output.
Outcome run_quantize_layer(const std::string& arguments) {
  if (!fs::exists(executable))
    FAIL("the quantize_layer executable is missing at " << executable << ": build the quantize_layer target first");
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

// Small enough for a test; one thread so that a busy machine does not slow it down.
const std::string small_layer = "--rows 128 --cols 256 --tokens 512 --threads 1";

}  // namespace

TEST_CASE("quantize_layer: GSQ started from RTN beats it and the JSON says so") {
  const ScratchDirectory scratch;
  const fs::path json_path = scratch.path / "result.json";
  const Outcome outcome = run_quantize_layer(small_layer + " --steps 60 --json '" + json_path.string() + "'");
  INFO("stderr: " << outcome.err);
  REQUIRE(outcome.status == 0);

  // Written atomically: the file and nothing else (no temporary left behind).
  REQUIRE(fs::exists(json_path));
  CHECK(std::distance(fs::directory_iterator(scratch.path), fs::directory_iterator()) == 1);

  const nlohmann::json records = nlohmann::json::parse(read_file(json_path));
  REQUIRE(records.is_array());
  REQUIRE(records.size() == 2);
  const nlohmann::json& rtn = records[0];
  const nlohmann::json& gsq = records[1];
  CHECK(rtn.at("method") == "rtn");
  CHECK(gsq.at("method") == "gsq");
  for (const nlohmann::json& record : records) {
    CHECK(record.at("bits").is_number_integer());
    CHECK(record.at("bits") == 2);
    CHECK(record.at("grid") == "int2");
    CHECK(record.at("group").is_number_integer());
    CHECK(record.at("group") == 128);
    CHECK(record.at("rel_error").is_number_float());
    CHECK(record.at("rel_error").get<double>() > 0);
    CHECK(record.at("bpp").is_number());
    CHECK(record.at("bpp").get<double>() == 2.125);
    CHECK(record.at("seconds").is_number());
    CHECK(record.at("seconds").get<double>() >= 0);
  }
  CHECK(gsq.at("init") == "rtn");
  REQUIRE(gsq.at("init_rel_error").is_number_float());
  CHECK(gsq.at("init_rel_error").get<double>() == rtn.at("rel_error").get<double>());
  CHECK(gsq.at("steps") == 60);
  CHECK(gsq.at("step_seconds_median").is_number_float());
  CHECK(gsq.at("step_seconds_median").get<double>() > 0);
  CHECK(gsq.at("estimator") == "relaxed");
  CHECK(gsq.at("schedule") == "linear");
  CHECK(gsq.at("optimizer") == "lion");
  CHECK(gsq.at("tau_start") == 2.0);
  CHECK(gsq.at("kappa_end") == 500.0);
  CHECK(gsq.at("rel_error").get<double>() < rtn.at("rel_error").get<double>());

  CHECK_THAT(outcome.out, Catch::Contains("rel. error") && Catch::Contains("rtn") && Catch::Contains("gsq") &&
                              Catch::Contains("2.125"));
  CHECK_THAT(outcome.err, Catch::Contains("step 60/60"));  // progress reaches the last step
}

TEST_CASE("quantize_layer: --bits and --group select the grid and the grouping") {
  struct Case {
    std::string flags, grid;
    int bits, group;
    double bpp;
  };
  for (const Case& c : {Case{"--bits ternary --group 0", "ternary", 2, 0, 2 + 16.0 / 256},
                        Case{"--bits 4 --group 64", "int4", 4, 64, 4 + 16.0 / 64},
                        Case{"--bits 3 --group per-channel --estimator ste --schedule cosine --optimizer adam", "int3", 3,
                             0, 3 + 16.0 / 256}}) {
    const ScratchDirectory scratch;
    const fs::path json_path = scratch.path / "result.json";
    const Outcome outcome = run_quantize_layer(small_layer + " --steps 5 --quiet " + c.flags + " --json '" +
                                               json_path.string() + "'");
    INFO(c.flags << "\nstderr: " << outcome.err);
    REQUIRE(outcome.status == 0);
    CHECK(outcome.err.empty());  // --quiet
    const nlohmann::json records = nlohmann::json::parse(read_file(json_path));
    REQUIRE(records.size() == 2);
    for (const nlohmann::json& record : records) {
      CHECK(record.at("grid") == c.grid);
      CHECK(record.at("bits") == c.bits);
      CHECK(record.at("group") == c.group);
      CHECK(record.at("bpp").get<double>() == Approx(c.bpp));
    }
  }
}

TEST_CASE("quantize_layer: bad settings exit with status 2 and a message naming the problem") {
  struct Case {
    std::string flags;
    std::vector<std::string> mentions;
  };
  for (const Case& c : {Case{"--bits 5", {"--bits", "'5'", "ternary, 2, 3, 4"}},
                        Case{small_layer + " --group 100", {"--group", "'100'", "128"}},
                        Case{"--estimator nope", {"--estimator", "'nope'", "relaxed"}},
                        Case{"--schedule quadratic", {"--schedule", "quadratic"}},
                        Case{"--optimizer sgd", {"--optimizer", "sgd", "lion"}},
                        Case{"--lr-decay sideways", {"sideways", "cosine"}},
                        Case{"--steps 0", {"steps"}},
                        Case{"--tau-end=-1", {"temperature"}},
                        Case{"--rows abc", {"--rows", "abc"}},
                        Case{"--frobnicate", {"frobnicate"}},
                        Case{"layer.safetensors", {"positional"}},  // no input files yet: not silently ignored
                        Case{"--seed=-3", {"seed"}},
                        Case{"--rows 16 --cols 128 --tokens 64 --threads 1 --group 256", {"group size 256", "128"}},
                        // Checked before any work: the run would otherwise be lost at the end.
                        Case{small_layer + " --steps 2 --json /nonexistent-directory/result.json",
                             {"--json", "/nonexistent-directory"}}}) {
    const Outcome outcome = run_quantize_layer(c.flags);
    INFO(c.flags << "\nstderr: " << outcome.err);
    CHECK(outcome.status == 2);
    CHECK_THAT(outcome.err, Catch::StartsWith("quantize_layer: error: "));
    for (const std::string& mention : c.mentions) CHECK_THAT(outcome.err, Catch::Contains(mention));
  }
}

TEST_CASE("quantize_layer: --help exits 0 and explains every flag") {
  const Outcome outcome = run_quantize_layer("--help");
  REQUIRE(outcome.status == 0);
  for (const std::string flag :
       {"--rows", "--cols", "--tokens", "--layer-seed", "--bits", "--group", "--steps", "--seed", "--estimator",
        "--schedule", "--tau-start", "--tau-end", "--kappa-start", "--kappa-end", "--optimizer", "--lr-logits",
        "--weight-decay", "--lr-scales", "--lr-decay", "--lr-floor", "--warmup", "--threads", "--json", "--quiet",
        "--help"})
    CHECK_THAT(outcome.out, Catch::Contains(flag + " "));
  // Defaults are shown: the reference's 640 steps and its learning rates.
  CHECK_THAT(outcome.out, Catch::Contains("(=640)") && Catch::Contains("(=1e-4)") && Catch::Contains("(=5e-5)"));
}
