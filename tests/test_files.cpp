// What gsq promises about the user's files (docs/files.md), tried as a careless or hostile user
// would: outputs over, into or above the inputs, over the user's own files, unwritable places,
// FIFOs and directories where files belong, a kill in the middle of replacing an output, settings
// that must be refused before any file is made, sizes the machine cannot hold, and results that
// cannot be stored.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <gsq/io/atomic_file.hpp>
#include <gsq/io/output_location.hpp>
#include <gsq/io/regular_file.hpp>
#include <gsq/io/safetensors.hpp>

#include "program_runner.hpp"

namespace {

namespace fs = std::filesystem;
using gsq::testing::Outcome;
using gsq::testing::read_file;
using gsq::testing::ScratchDirectory;

const std::string model_dir = GSQ_SOURCE_DIR "/data/llama-bytes-3m";

void write(const fs::path& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

/// A copy of the bundled model (config, weights, calibration and evaluation text) at `path`.
void copy_model(const fs::path& path) {
  fs::create_directories(path);
  for (const char* name : {"config.json", "model.safetensors", "calib.txt", "eval.txt"})
    fs::copy_file(fs::path(model_dir) / name, path / name);
}

/// A directory and a file of the user's, which no run may touch.
struct UserFiles {
  fs::path directory, file;
  explicit UserFiles(const fs::path& where) : directory(where / "mine"), file(where / "notes.txt") {
    fs::create_directories(directory);
    write(directory / "thesis.tex", "keep me");
    write(file, "keep me too");
  }
  bool intact() const { return read_file(directory / "thesis.tex") == "keep me" && read_file(file) == "keep me too"; }
};

/// A directory gsq would recognise as its own output.
void make_gsq_output(const fs::path& path) {
  fs::create_directories(path);
  write(path / "manifest.json", R"({"producer": "gsq", "method": "rtn"})");
}

/// A process id that no process has: a child's, after it ended.
long dead_pid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  return child;
}

/// The message of the gsq::Error that `claim` throws ("" if it throws none).
template <class Claim>
std::string refusal(Claim&& claim) {
  try {
    claim();
  } catch (const gsq::Error& error) {
    return error.what();
  }
  return "";
}

std::string claim_directory(const std::string& out, const std::vector<gsq::NamedPath>& apart) {
  return gsq::claim_output({"--out", out}, gsq::OutputKind::directory, apart);
}

/// quantize_model on the byte-level `model` with `arguments`.
Outcome quantize_model(const std::string& model, const std::string& arguments) {
  return gsq::testing::run_program("quantize_model", "--model '" + model + "' --byte-tokens --quiet " + arguments);
}

/// A quick run's flags, calibrating on `model`'s calib.txt: RTN, or `method` with the flags given.
std::string quick(const std::string& model, const std::string& method = "--method rtn",
                  const std::string& tokens = "--calib-tokens 1024") {
  return method + " --calib '" + model + "/calib.txt' " + tokens + " ";
}

}  // namespace

TEST_CASE("an output may not be, contain or lie inside an input, however the path is spelled", "[files]") {
  const ScratchDirectory scratch;
  const fs::path model = scratch.path / "model";
  copy_model(model);
  const std::vector<gsq::NamedPath> inputs{{"--model", model.string()}};
  for (const std::string& out : {model.string(), model.string() + "/", (model / "." / ".." / "model").string(),
                                 (model / "quantized").string(), scratch.path.string(), scratch.path.string() + "/"}) {
    INFO(out);
    const std::string message = refusal([&] { claim_directory(out, inputs); });
    CHECK(message.find("--model") != std::string::npos);
  }
  fs::create_directory_symlink(model, scratch.path / "link");
  CHECK(refusal([&] { claim_directory((scratch.path / "link").string(), inputs); }).find("is --model") != std::string::npos);
  CHECK(fs::exists(model / "calib.txt"));
}

TEST_CASE("the working directory and the directories above it are never an output", "[files]") {
  for (const char* out : {".", "./", "..", "/"}) {
    INFO(out);
    CHECK(refusal([&] { claim_directory(out, {}); }).find("working directory") != std::string::npos);
  }
}

TEST_CASE("only gsq's own outputs are replaced; anything else is refused and left alone", "[files]") {
  const ScratchDirectory scratch;
  const UserFiles user(scratch.path);
  CHECK(refusal([&] { claim_directory(user.directory.string(), {}); }).find("did not write") != std::string::npos);
  CHECK(refusal([&] { claim_directory(user.file.string(), {}); }).find("did not write") != std::string::npos);
  CHECK(refusal([&] { gsq::claim_output({"--json", user.file.string()}, gsq::OutputKind::file, {}); }).find("did not write") !=
        std::string::npos);
  CHECK(user.intact());

  const fs::path earlier = scratch.path / "earlier", legacy = scratch.path / "legacy";
  make_gsq_output(earlier);
  CHECK(claim_directory(earlier.string() + "/", {}) == earlier.string());
  fs::create_directories(legacy);  // an output of a gsq release before the mark
  write(legacy / "manifest.json", R"({"method": "gsq", "settings": {}, "layers": []})");
  CHECK(claim_directory(legacy.string(), {}) == legacy.string());
  const fs::path report = scratch.path / "report.json";
  write(report, R"({"producer": "gsq", "runs": []})");
  CHECK(gsq::claim_output({"--json", report.string()}, gsq::OutputKind::file, {}) == report.string());
  const fs::path saved = scratch.path / "saved.safetensors";
  gsq::SafetensorsWriter writer;
  writer.add("W", gsq::Matrix<float>(2, 2));
  writer.write(saved.string());
  CHECK_FALSE(refusal([&] { gsq::claim_output({"--save", saved.string()}, gsq::OutputKind::file, {}); }).empty());
  writer.set_metadata("producer", gsq::producer);
  writer.write(saved.string());
  CHECK(refusal([&] { gsq::claim_output({"--save", saved.string()}, gsq::OutputKind::file, {}); }).empty());
}

TEST_CASE("an output's directory must take new files, checked before any work", "[files]") {
  CHECK(refusal([] { gsq::claim_output({"--json", "/proc/gsq.json"}, gsq::OutputKind::file, {}); })
            .find("cannot write into /proc") != std::string::npos);
  const ScratchDirectory scratch;
  write(scratch.path / "file", "");
  CHECK_FALSE(refusal([&] { claim_directory((scratch.path / "file" / "out").string(), {}); }).empty());
}

TEST_CASE("replacing an output leaves the old or the new one, and a killed run's debris is cleared", "[files]") {
  const ScratchDirectory scratch;
  const fs::path out = scratch.path / "out";
  make_gsq_output(out);
  write(out / "old.txt", "old");
  const fs::path staged = scratch.path / ("out.writing-" + std::to_string(::getpid()));
  make_gsq_output(staged);
  write(staged / "new.txt", "new");
  gsq::replace_directory(staged.string(), out.string());
  CHECK(fs::exists(out / "new.txt"));
  CHECK_FALSE(fs::exists(out / "old.txt"));
  CHECK_FALSE(fs::exists(staged));

  // A run killed between the two renames of the fallback replacement: the old output is aside,
  // the new one staged, nothing at the destination. The next claim puts the old one back.
  const long pid = dead_pid();
  fs::rename(out, scratch.path / ("out.previous-" + std::to_string(pid)));
  make_gsq_output(scratch.path / ("out.writing-" + std::to_string(pid)));
  write(scratch.path / ("out.tmp-" + std::to_string(pid) + "-0"), "half a file");
  const fs::path live = scratch.path / ("out.writing-" + std::to_string(::getpid()));  // a running process's
  fs::create_directories(live);
  CHECK(claim_directory(out.string(), {}) == out.string());
  CHECK(fs::exists(out / "new.txt"));
  std::vector<std::string> left;
  for (const fs::directory_entry& entry : fs::directory_iterator(scratch.path)) left.push_back(entry.path().filename().string());
  std::sort(left.begin(), left.end());
  CHECK(left == std::vector<std::string>{"out", live.filename().string()});
}

TEST_CASE("inputs that are not regular files are refused by name, without blocking", "[files]") {
  const ScratchDirectory scratch;
  const fs::path fifo = scratch.path / "pipe";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THROWS_WITH(gsq::read_regular_file(fifo.string(), "model config"), Catch::Contains("FIFO"));
  CHECK_THROWS_WITH(gsq::SafetensorsFile::open(fifo.string()), Catch::Contains("FIFO"));
  CHECK_THROWS_WITH(gsq::read_regular_file(scratch.path.string(), "calibration tokens"), Catch::Contains("a directory"));
  CHECK_THROWS_WITH(gsq::read_regular_file("/dev/null", "token file"), Catch::Contains("a device"));
}

TEST_CASE("quantize_model never writes over, into or above its input model", "[files][drivers]") {
  const ScratchDirectory scratch;
  const fs::path model = scratch.path / "dir" / "model";
  copy_model(model);
  write(scratch.path / "dir" / "mine.txt", "mine");
  for (const std::string& out : {model.string(), model.string() + "/", (scratch.path / "dir").string(),
                                 (model / ".." / "model").string(), (model / "out").string()}) {
    const Outcome outcome = quantize_model(model.string(), quick(model.string()) + "--out '" + out + "'");
    INFO(out << "\n" << outcome.err);
    CHECK(outcome.status == 2);
    CHECK(outcome.err.find("--model") != std::string::npos);
  }
  CHECK(read_file(scratch.path / "dir" / "mine.txt") == "mine");
  CHECK(read_file(model / "calib.txt") == read_file(fs::path(model_dir) / "calib.txt"));
  CHECK(fs::file_size(model / "model.safetensors") == fs::file_size(fs::path(model_dir) / "model.safetensors"));
}

TEST_CASE("quantize_model refuses a user's directory or file as --out, and a trailing slash works", "[files][drivers]") {
  const ScratchDirectory scratch;
  const UserFiles user(scratch.path);
  for (const fs::path& out : {user.directory, user.file}) {
    const Outcome outcome = quantize_model(model_dir, quick(model_dir) + "--out '" + out.string() + "'");
    INFO(outcome.err);
    CHECK(outcome.status == 2);
    CHECK(outcome.err.find("did not write") != std::string::npos);
  }
  CHECK(user.intact());

  const fs::path out = scratch.path / "out";
  for (int run = 0; run < 2; ++run) {  // the second run replaces the first's output
    const Outcome outcome = quantize_model(model_dir, quick(model_dir) + "--out '" + out.string() + "/'");
    INFO(outcome.err);
    REQUIRE(outcome.status == 0);
    CHECK(nlohmann::json::parse(read_file(out / "manifest.json"))["producer"] == "gsq");
  }
  std::vector<std::string> left;
  for (const fs::directory_entry& entry : fs::directory_iterator(scratch.path)) left.push_back(entry.path().filename().string());
  std::sort(left.begin(), left.end());
  CHECK(left == std::vector<std::string>{"mine", "notes.txt", "out"});
}

TEST_CASE("quantize_model checks every setting and input before it creates any file", "[files][drivers]") {
  const ScratchDirectory scratch;
  const fs::path out = scratch.path / "out";
  std::vector<std::uint32_t> ids(1024, 65);
  ids[700] = 100000;  // beyond the byte model's vocabulary of 256
  std::ofstream(scratch.path / "tokens.bin", std::ios::binary)
      .write(reinterpret_cast<const char*>(ids.data()), static_cast<std::streamsize>(ids.size() * sizeof ids[0]));
  write(scratch.path / "file", "");
  const std::string model = model_dir;
  const std::vector<std::pair<std::string, std::string>> cases{
      {quick(model, "--method gsq --steps 0"), "steps"},
      {quick(model, "--method gsq --tau-end 0"), "temperature"},
      {quick(model, "--method gsq --batches 0"), "mini-batches"},
      {quick(model) + "--threads -3", "--threads"},
      {quick(model) + "--dump-layers '" + (scratch.path / "file").string() + "'", "not a directory"},
      {quick(model) + "--json /proc/gsq.json", "/proc"},
      {quick(model) + "--window 10000000 --eval '" + model + "/eval.txt'", "--window"},
      {quick(model, "--method rtn", "--calib-tokens 0") + "--calib-window 10000000", "calibration"},
      {"--method rtn --calib '" + scratch.path.string() + "'", "is a directory"},
  };
  for (const auto& [flags, named] : cases) {
    const Outcome outcome = quantize_model(model, "--out '" + out.string() + "' " + flags);
    INFO(flags << "\n" << outcome.err);
    CHECK(outcome.status == 2);
    CHECK(outcome.err.find(named) != std::string::npos);
    CHECK_FALSE(fs::exists(out));
    CHECK_FALSE(fs::exists(out.string() + ".partial"));
  }
  const Outcome outcome = gsq::testing::run_program(
      "quantize_model", "--model '" + model + "' --method rtn --calib '" + (scratch.path / "tokens.bin").string() +
                            "' --calib-window 256 --quiet --out '" + out.string() + "'");
  CHECK(outcome.status == 2);
  CHECK(outcome.err.find("tokens.bin") != std::string::npos);
  CHECK_FALSE(fs::exists(out.string() + ".partial"));
}

TEST_CASE("quantize_model records the calibration tokens it used, not those asked for", "[files][drivers]") {
  const ScratchDirectory scratch;
  const fs::path model = scratch.path / "model";
  copy_model(model);
  write(model / "calib.txt", read_file(model / "calib.txt").substr(0, 1000));
  const Outcome outcome = gsq::testing::run_program(
      "quantize_model", "--model '" + model.string() + "' --method rtn --byte-tokens --calib '" + (model / "calib.txt").string() +
                            "' --calib-tokens 100000 --out '" + (scratch.path / "out").string() + "'");
  INFO(outcome.err);
  REQUIRE(outcome.status == 0);
  CHECK(outcome.err.find("using 768") != std::string::npos);
  const nlohmann::json manifest = nlohmann::json::parse(read_file(scratch.path / "out" / "manifest.json"));
  CHECK(manifest["settings"]["calib_tokens"] == 768);
}

TEST_CASE("FIFOs and directories where the drivers expect files are refused, not waited on", "[files][drivers]") {
  const ScratchDirectory scratch;
  for (const char* name : {"config.json", "model.safetensors"}) {
    for (const bool fifo : {true, false}) {
      const fs::path model = scratch.path / (std::string(name) + (fifo ? "-fifo" : "-directory"));
      copy_model(model);
      fs::remove(model / name);
      if (fifo)
        REQUIRE(::mkfifo((model / name).c_str(), 0600) == 0);
      else
        fs::create_directory(model / name);
      const Outcome outcome = gsq::testing::run_program(
          "evaluate_model", "--model '" + model.string() + "' --eval '" + model.string() + "/eval.txt' --byte-tokens");
      INFO(model << "\n" << outcome.err);
      CHECK(outcome.status == 2);
      CHECK(outcome.err.find(fifo ? "FIFO" : "a directory, not a regular file") != std::string::npos);
    }
  }
  const fs::path layers = scratch.path / "layers";
  fs::create_directories(layers);
  REQUIRE(::mkfifo((layers / "proj.safetensors").c_str(), 0600) == 0);
  const Outcome sweep = gsq::testing::run_program(
      "sweep", "--layers '" + layers.string() + "' --steps 3 --quiet --out '" + (scratch.path / "sweep").string() + "'");
  CHECK(sweep.status == 2);
  CHECK(sweep.err.find("FIFO") != std::string::npos);
}

TEST_CASE("sizes the machine cannot hold are refused by name before anything is allocated", "[files][drivers]") {
  const Outcome outcome = gsq::testing::run_program(
      "evaluate_model", "--model '" + model_dir + "' --eval '" + model_dir + "/eval.txt' --byte-tokens --window 10000000");
  INFO(outcome.err);
  CHECK(outcome.status == 2);
  CHECK(outcome.err.find("--window") != std::string::npos);
  CHECK(outcome.err.find("GiB") != std::string::npos);
}

TEST_CASE("a sweep layer with a bad H names its file", "[files][drivers]") {
  const ScratchDirectory scratch;
  const fs::path layers = scratch.path / "layers";
  fs::create_directories(layers);
  gsq::Matrix<float> weight(4, 8), hessian(8, 8);
  for (long i = 0; i < 8; ++i) hessian(i, i) = 1.0f;
  hessian(0, 1) = 0.5f;  // not symmetric
  gsq::SafetensorsWriter writer;
  writer.add("W", weight);
  writer.add("H", hessian);
  writer.write((layers / "skewed.safetensors").string());
  const Outcome outcome = gsq::testing::run_program(
      "sweep", "--layers '" + layers.string() + "' --steps 3 --quiet --out '" + (scratch.path / "sweep").string() + "'");
  CHECK(outcome.status == 2);
  CHECK(outcome.err.find("skewed.safetensors") != std::string::npos);
  CHECK(outcome.err.find("symmetric") != std::string::npos);
}

TEST_CASE("a model path that is not UTF-8 is quantized, its manifest written", "[files][drivers]") {
  const ScratchDirectory scratch;
  const fs::path model = scratch.path / "model-\xff\xfe";
  copy_model(model);
  const fs::path out = scratch.path / "out";
  const Outcome outcome = quantize_model(model.string(), quick(model.string()) + "--out '" + out.string() + "'");
  INFO(outcome.err);
  CHECK(outcome.status == 0);
  CHECK(nlohmann::json::parse(read_file(out / "manifest.json"))["producer"] == "gsq");
}

TEST_CASE("quantize_layer never overwrites its input, and refuses a result fp16 scales cannot hold", "[files][drivers]") {
  const ScratchDirectory scratch;
  const fs::path layer = scratch.path / "layer.safetensors";
  gsq::Matrix<float> weight(8, 128), hessian(128, 128);
  for (std::size_t i = 0; i < weight.values.size(); ++i) weight.values[i] = 0.01f * static_cast<float>(i % 7) - 0.03f;
  for (long i = 0; i < 128; ++i) hessian(i, i) = 1.0f;
  gsq::SafetensorsWriter writer;
  writer.add("W", weight);
  writer.add("H", hessian);
  writer.write(layer.string());
  const std::string before = read_file(layer);
  const std::string input = "--input '" + layer.string() + "' --weight W --hessian H --method gptq --quiet ";
  Outcome outcome = gsq::testing::run_program("quantize_layer", input + "--save '" + layer.string() + "'");
  CHECK(outcome.status == 2);
  CHECK(outcome.err.find("is --input") != std::string::npos);
  CHECK(read_file(layer) == before);
  outcome = gsq::testing::run_program("quantize_layer", input + "--save /proc/gsq.safetensors");
  CHECK(outcome.status == 2);
  CHECK(outcome.err.find("cannot write into /proc") != std::string::npos);

  weight(3, 5) = 1e6f;  // a scale of about 6.7e5: beyond fp16
  writer = gsq::SafetensorsWriter();
  writer.add("W", weight);
  writer.add("H", hessian);
  writer.write(layer.string());
  const fs::path saved = scratch.path / "saved.safetensors";
  outcome = gsq::testing::run_program("quantize_layer", input + "--save '" + saved.string() + "'");
  INFO(outcome.err);
  CHECK(outcome.status == 2);
  CHECK(outcome.err.find("fp16") != std::string::npos);
  CHECK_FALSE(fs::exists(saved));

  weight(3, 5) = std::nanf("");
  writer = gsq::SafetensorsWriter();
  writer.add("W", weight);
  writer.add("H", hessian);
  writer.write(layer.string());
  outcome = gsq::testing::run_program("quantize_layer", input);
  CHECK(outcome.status == 2);
  CHECK(outcome.err.find("--weight W") != std::string::npos);
}
