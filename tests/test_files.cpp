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
#include <cstdlib>
#include <cstring>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <gsq/format/packed.hpp>
#include <gsq/io/atomic_file.hpp>
#include <gsq/io/output_location.hpp>
#include <gsq/io/regular_file.hpp>
#include <gsq/io/safetensors.hpp>
#include <gsq/policy/grid.hpp>

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

/// Marks `directory` as the work of process `pid`, as gsq::mark_as_work does for its own.
void mark_as_work_of(const fs::path& directory, long pid) {
  write(directory / gsq::work_marker, R"({"producer": "gsq", "pid": )" + std::to_string(pid) + "}");
}

std::vector<std::string> entries(const fs::path& directory) {
  std::vector<std::string> names;
  for (const fs::directory_entry& entry : fs::directory_iterator(directory)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST_CASE("replacing an output leaves the old or the new one, and a killed run's marked debris is cleared", "[files]") {
  const ScratchDirectory scratch;
  const fs::path out = scratch.path / "out";
  make_gsq_output(out);
  write(out / "old.txt", "old");
  {
    const gsq::WorkDirectory staged(out.string());
    CHECK(gsq::work_marker_pid(staged.path()) == ::getpid());
    make_gsq_output(staged.path());
    write(fs::path(staged.path()) / "new.txt", "new");
    gsq::replace_directory(staged.path(), out.string());
    CHECK_FALSE(fs::exists(staged.path()));
  }
  CHECK(entries(out) == std::vector<std::string>{"manifest.json", "new.txt"});  // no marker left in the output

  // A run killed between the two renames of the fallback replacement: the old output is aside
  // (marked by that run), the new one staged, nothing at the destination. The next claim puts
  // the old one back and removes the staged one.
  const long pid = dead_pid();
  const fs::path previous = scratch.path / ("out.previous-" + std::to_string(pid)),
                 staged = scratch.path / ("out.writing-" + std::to_string(pid));
  fs::rename(out, previous);
  mark_as_work_of(previous, pid);
  make_gsq_output(staged);
  mark_as_work_of(staged, pid);
  const fs::path live = scratch.path / ("out.writing-" + std::to_string(::getppid()));  // a running process's
  fs::create_directories(live);
  mark_as_work_of(live, ::getppid());
  CHECK(claim_directory(out.string(), {}) == out.string());
  CHECK(entries(out) == std::vector<std::string>{"manifest.json", "new.txt"});
  CHECK(entries(scratch.path) == std::vector<std::string>{"out", live.filename().string()});
}

TEST_CASE("what only looks like gsq's debris by its name is left alone and named", "[files]") {
  const ScratchDirectory scratch;
  const fs::path out = scratch.path / "out", other = scratch.path / "other";
  make_gsq_output(out);
  const long pid = dead_pid();
  // The user's copy of a gsq output, a directory named like a dead run's, a file an old gsq left
  // half-written, a directory marked by another process than its name says.
  const fs::path copy = scratch.path / "out.previous-2024", named = scratch.path / ("other.previous-" + std::to_string(pid)),
                 half = scratch.path / ("out.tmp-" + std::to_string(pid) + "-0"),
                 mismatched = scratch.path / ("out.writing-" + std::to_string(pid));
  make_gsq_output(copy);
  write(copy / "NOTES.txt", "mine");
  make_gsq_output(named);
  write(half, "half a file");
  make_gsq_output(mismatched);
  mark_as_work_of(mismatched, pid + 1);
  std::vector<fs::path> left = gsq::clear_debris(out);
  std::sort(left.begin(), left.end());
  CHECK(left == std::vector<fs::path>{copy, half, mismatched});
  // With nothing at the destination, a directory named like its replacement aside is not put back.
  CHECK(gsq::clear_debris(other) == std::vector<fs::path>{named});
  CHECK(claim_directory(out.string(), {}) == out.string());
  CHECK(claim_directory(other.string(), {}) == other.string());
  CHECK_FALSE(fs::exists(other));
  CHECK(read_file(copy / "NOTES.txt") == "mine");
  CHECK(entries(scratch.path) == std::vector<std::string>{"other.previous-" + std::to_string(pid), "out", "out.previous-2024",
                                                          half.filename().string(), mismatched.filename().string()});
}

TEST_CASE("quantize_model leaves a user's directory named like its debris alone, and says so", "[files][drivers]") {
  const ScratchDirectory scratch;
  const fs::path out = scratch.path / "dw", copy = scratch.path / "dw.previous-2024", lone = scratch.path / "dy.previous-999996";
  REQUIRE(quantize_model(model_dir, quick(model_dir) + "--out '" + out.string() + "'").status == 0);
  fs::copy(out, copy);
  write(copy / "NOTES.txt", "notes");
  fs::create_directories(lone);
  write(lone / "NOTES.txt", "notes");
  for (const fs::path& target : {out, scratch.path / "dy"}) {
    const Outcome outcome = quantize_model(model_dir, quick(model_dir) + "--out '" + target.string() + "'");
    INFO(outcome.err);
    CHECK(outcome.status == 0);
    CHECK(outcome.err.find("warning") != std::string::npos);
  }
  CHECK(read_file(copy / "NOTES.txt") == "notes");
  CHECK(read_file(lone / "NOTES.txt") == "notes");
  CHECK_FALSE(fs::exists(scratch.path / "dy" / "NOTES.txt"));
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

/// Flips one bit of the first byte of tensor `name` in safetensors file `path`.
void flip_tensor_byte(const fs::path& path, const std::string& name) {
  std::string content = read_file(path);
  std::uint64_t header = 0;
  std::memcpy(&header, content.data(), sizeof header);
  const nlohmann::json tensors = nlohmann::json::parse(content.substr(8, static_cast<std::size_t>(header)));
  const std::size_t first = 8 + static_cast<std::size_t>(header) + tensors[name]["data_offsets"][0].get<std::size_t>();
  content[first] = static_cast<char>(content[first] ^ 0x40);
  write(path, content);
}

TEST_CASE("resuming is refused, naming it, when an input or a completed layer changed since the stopped run", "[files][drivers]") {
  const ScratchDirectory scratch;
  const fs::path model = scratch.path / "model", out = scratch.path / "out";
  const std::string partial = out.string() + ".partial";
  const std::string run = quick(model.string()) + "--out '" + out.string() + "' ";
  const auto stop_after_two = [&] {
    fs::remove_all(partial);
    copy_model(model);
    REQUIRE(quantize_model(model.string(), run + "--stop-after 2").status == 3);
  };
  const auto resumed = [&](const std::string& named) {
    const Outcome outcome = quantize_model(model.string(), run + "--resume");
    INFO(outcome.err);
    CHECK(outcome.status == 2);
    CHECK(outcome.err.find(named) != std::string::npos);
    CHECK_FALSE(fs::exists(out));
    CHECK(fs::exists(partial));  // the stopped run's work is kept
    fs::remove_all(model);
  };
  stop_after_two();
  flip_tensor_byte(model / "model.safetensors", "model.layers.0.mlp.up_proj.weight");
  resumed("decoder layer 0's weights");
  stop_after_two();
  std::string calibration = read_file(model / "calib.txt");
  calibration[10] = calibration[10] == 'x' ? 'y' : 'x';
  write(model / "calib.txt", calibration);
  resumed("--calib");
  stop_after_two();
  flip_tensor_byte(model / "model.safetensors", "model.embed_tokens.weight");
  resumed("tensors outside the decoder layers");
  stop_after_two();
  nlohmann::json config = nlohmann::json::parse(read_file(model / "config.json"));
  config["note"] = "edited";  // a key gsq does not read: the file changed all the same
  write(model / "config.json", config.dump());
  resumed("config.json");
  stop_after_two();
  flip_tensor_byte(partial + "/layer-1.safetensors", "model.layers.1.mlp.up_proj.weight.scales");
  resumed("damaged");

  // Touched but unchanged, the inputs still resume.
  stop_after_two();
  fs::last_write_time(model / "calib.txt", fs::file_time_type::clock::now());
  const Outcome outcome = quantize_model(model.string(), run + "--resume");
  INFO(outcome.err);
  CHECK(outcome.status == 0);
}

TEST_CASE("a run refused part-way leaves nothing, and the corrected rerun just starts", "[files][drivers]") {
  const ScratchDirectory scratch;
  const fs::path out = scratch.path / "out", model = scratch.path / "model";
  copy_model(model);
  fs::copy_file(fs::path(model_dir) / "tokenizer.json", model / "tokenizer.json");
  nlohmann::json tokenizer = nlohmann::json::parse(read_file(model / "tokenizer.json"));
  tokenizer["added_tokens"] = {{{"id", 300}, {"content", "<|beyond|>"}, {"special", true}}};
  write(model / "tokenizer.json", tokenizer.dump());
  // A tokenizer with ids beyond the vocabulary, refused for the GGUF export before any layer.
  Outcome outcome = quantize_model(model.string(), quick(model.string()) + "--bits 4 --export gguf --out '" + out.string() + "'");
  INFO(outcome.err);
  CHECK(outcome.status == 2);
  CHECK(outcome.err.find(model.string() + "/tokenizer.json: token id 300") != std::string::npos);
  CHECK(entries(scratch.path) == std::vector<std::string>{"model"});
  // Every token on id 0.
  tokenizer.erase("added_tokens");
  for (auto& [text, id] : tokenizer["model"]["vocab"].items()) id = 0;
  write(model / "tokenizer.json", tokenizer.dump());
  outcome = quantize_model(model.string(), quick(model.string()) + "--bits 4 --export gguf --out '" + out.string() + "'");
  CHECK(outcome.status == 2);
  CHECK(outcome.err.find("token id 0 is given to both") != std::string::npos);
  // Temperatures the float relaxation cannot hold.
  outcome = quantize_model(model_dir, quick(model_dir, "--method gsq --tau-start 1e-300 --tau-end 1e-310") + "--out '" + out.string() + "'");
  CHECK(outcome.status == 2);
  CHECK(outcome.err.find("temperature") != std::string::npos);
  CHECK(entries(scratch.path) == std::vector<std::string>{"model"});
  outcome = quantize_model(model_dir, quick(model_dir, "--method gsq --steps 3") + "--out '" + out.string() + "'");
  CHECK(outcome.status == 0);

  // A group size that does not divide a model's rows (tiny-llama3: 64 and 160 columns).
  const std::string tiny = GSQ_SOURCE_DIR "/tests/data/tiny-llama3";
  std::vector<std::uint32_t> ids(512);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::uint32_t>(i * 7 % 89);
  std::ofstream(scratch.path / "tokens.bin", std::ios::binary)
      .write(reinterpret_cast<const char*>(ids.data()), static_cast<std::streamsize>(ids.size() * sizeof ids[0]));
  const std::string tiny_run = "--model '" + tiny + "' --method rtn --calib '" + (scratch.path / "tokens.bin").string() +
                               "' --calib-window 64 --quiet --out '" + (scratch.path / "tiny").string() + "' ";
  outcome = gsq::testing::run_program("quantize_model", tiny_run);
  CHECK(outcome.status == 2);
  CHECK(outcome.err.find("groups of 128 do not divide") != std::string::npos);
  CHECK_FALSE(fs::exists(scratch.path / "tiny.partial"));
  CHECK(gsq::testing::run_program("quantize_model", tiny_run + "--group 0").status == 0);
}

TEST_CASE("the drivers refuse thread counts the machine cannot run, and unsigned flags given negative", "[files][drivers]") {
  const ScratchDirectory scratch;
  const std::string threads = " --threads 100000";
  for (const auto& [program, arguments] : std::vector<std::pair<std::string, std::string>>{
           {"quantize_model", "--model '" + model_dir + "' --byte-tokens " + quick(model_dir) + "--out '" + scratch.file("out") + "'"},
           {"evaluate_model", "--model '" + model_dir + "' --byte-tokens --eval '" + model_dir + "/eval.txt'"},
           {"quantize_layer", "--rows 8 --cols 128 --method rtn --quiet"},
           {"sweep", "--layers '" + scratch.path.string() + "' --steps 3 --quiet --out '" + scratch.file("sweep") + "'"}}) {
    const Outcome outcome = gsq::testing::run_program(program, arguments + threads);
    INFO(program << ": " << outcome.err);
    CHECK(outcome.status == 2);
    CHECK(outcome.err.find("--threads") != std::string::npos);
  }
  const Outcome outcome = quantize_model(model_dir, quick(model_dir) + "--seed -1 --out '" + scratch.file("out") + "'");
  CHECK(outcome.status == 2);
  CHECK(outcome.err.find("--seed") != std::string::npos);
  const Outcome short_calibration = quantize_model(model_dir, quick(model_dir, "--method rtn", "--calib-tokens 1") + "--out '" + scratch.file("out") + "'");
  CHECK(short_calibration.status == 2);
  CHECK(short_calibration.err.find("--calib-tokens 1 is less than one calibration sequence") != std::string::npos);
  CHECK(entries(scratch.path) == std::vector<std::string>{});
}

TEST_CASE("windows beyond the model's positions and an ambiguous tied head are refused", "[files][drivers]") {
  const ScratchDirectory scratch;
  const std::string eval = " --eval '" + model_dir + "/eval.txt' ";
  Outcome outcome = gsq::testing::run_program("evaluate_model", "--model '" + model_dir + "' --byte-tokens --window 600" + eval);
  CHECK(outcome.status == 2);
  CHECK(outcome.err.find("longer than the model's 512 positions") != std::string::npos);
  outcome = quantize_model(model_dir, quick(model_dir) + "--calib-window 513 --out '" + scratch.file("out") + "'");
  CHECK(outcome.status == 2);
  CHECK(outcome.err.find("--calib-window") != std::string::npos);
  outcome = quantize_model(model_dir, quick(model_dir) + "--window 1024" + eval + "--out '" + scratch.file("out") + "'");
  CHECK(outcome.status == 2);
  CHECK(outcome.err.find("--window") != std::string::npos);

  // The bundled model's head is its own: tying it to the embedding as well is a conflict.
  const fs::path model = scratch.path / "model";
  copy_model(model);
  nlohmann::json config = nlohmann::json::parse(read_file(model / "config.json"));
  config["tie_word_embeddings"] = true;
  write(model / "config.json", config.dump());
  outcome = gsq::testing::run_program("evaluate_model", "--model '" + model.string() + "' --byte-tokens" + eval);
  CHECK(outcome.status == 2);
  CHECK(outcome.err.find("tie_word_embeddings") != std::string::npos);
  outcome = quantize_model(model.string(), quick(model.string()) + "--out '" + scratch.file("out") + "'");
  CHECK(outcome.status == 2);
  CHECK(outcome.err.find("lm_head.weight") != std::string::npos);
  CHECK(entries(scratch.path) == std::vector<std::string>{"model"});
}

TEST_CASE("a disk that fails a write ends a run with status 1, leaving nothing half-written", "[files][drivers]") {
  const ScratchDirectory scratch;
  // A file size limit makes writes fail (EFBIG) as a full disk would (ENOSPC): with SIGXFSZ
  // ignored, write() returns the error to gsq. (PMIX_MCA_gds=hash: Open MPI's start-up, where
  // quantize_model is built with MPI, then keeps its data in memory instead of a file the limit
  // would break.)
  const std::string command = "trap '' XFSZ; ulimit -f 1024; PMIX_MCA_gds=hash exec '" GSQ_BINARY_DIR "/quantize_model' --model '" + model_dir +
                              "' --byte-tokens --quiet " + quick(model_dir) + "--out '" + scratch.file("out") + "' 2>'" +
                              scratch.file("err") + "'";
  const int status = std::system(("sh -c \"" + command + "\"").c_str());
  INFO(read_file(scratch.path / "err"));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 1);
  CHECK(read_file(scratch.path / "err").find("File too large") != std::string::npos);
  // The completed layers are kept for --resume once the disk has room again; nothing else is left.
  CHECK(entries(scratch.path) == std::vector<std::string>{"err", "out.partial"});
  const Outcome resumed = quantize_model(model_dir, quick(model_dir) + "--out '" + scratch.file("out") + "' --resume");
  INFO(resumed.err);
  CHECK(resumed.status == 0);
  CHECK(entries(scratch.path) == std::vector<std::string>{"err", "out"});
}

TEST_CASE("exports do not depend on staging names, interruptions or threads: resumed equals uninterrupted", "[files][drivers]") {
  const ScratchDirectory scratch;
  const std::vector<std::pair<std::string, std::vector<std::string>>> runs{
      {"--bits 4 --export gguf,compressed-tensors,gptq",
       {"model.gguf", "compressed-tensors/model.safetensors", "gptq/model.safetensors"}},
      {"--format q2_k --export gguf", {"model.gguf"}}};
  for (const auto& [flags, exports] : runs) {
    const std::string run = quick(model_dir, "--method gptq") + flags + " ";
    const fs::path whole = scratch.path / "a" / "model", resumed = scratch.path / "b" / "model";
    REQUIRE(quantize_model(model_dir, run + "--threads 1 --out '" + whole.string() + "'").status == 0);
    REQUIRE(quantize_model(model_dir, run + "--threads 2 --out '" + resumed.string() + "' --stop-after 1").status == 3);
    REQUIRE(quantize_model(model_dir, run + "--threads 2 --out '" + resumed.string() + "' --resume").status == 0);
    std::vector<std::string> files = exports;
    files.insert(files.end(), {"quantized.safetensors", "model.safetensors"});
    for (const std::string& file : files) {
      INFO(flags << ": " << file);
      CHECK(read_file(whole / file) == read_file(resumed / file));
    }
    CHECK(read_file(whole / "model.gguf").find("writing-") == std::string::npos);
  }
}

TEST_CASE("a GGUF is never written from a quantized.safetensors with a non-finite scale", "[files]") {
  const ScratchDirectory scratch;
  gsq::QuantizedTensor tensor{gsq::grid_spec<gsq::Int<4>>(), 2, 32, 32, std::vector<std::int8_t>(64, 1), {0.5f, std::nanf("")}};
  gsq::SafetensorsWriter writer;
  for (const auto& [key, value] : gsq::packed_metadata(tensor.grid, 32)) writer.set_metadata(key, value);
  gsq::add_packed(writer, "w", tensor);
  writer.write(scratch.file("quantized.safetensors"));
  const gsq::SafetensorsFile file = gsq::SafetensorsFile::open(scratch.file("quantized.safetensors"));
  CHECK_THROWS_WITH(gsq::read_packed(file, "w", tensor.grid, 2, 32, 32), Catch::Contains("w.scales holds nan at row 1"));
}

TEST_CASE("several methods' outputs: a rerun with fewer leaves none stale, and a single method may replace them", "[files][drivers]") {
  const ScratchDirectory scratch;
  const fs::path out = scratch.path / "out";
  const std::string run = quick(model_dir, "--steps 2") + "--out '" + out.string() + "' --method ";
  REQUIRE(quantize_model(model_dir, run + "rtn,gptq,gsq").status == 0);
  CHECK(entries(out) == std::vector<std::string>{"gptq", "gsq", "manifest.json", "rtn"});
  REQUIRE(quantize_model(model_dir, run + "rtn,gptq").status == 0);
  CHECK(entries(out) == std::vector<std::string>{"gptq", "manifest.json", "rtn"});
  REQUIRE(quantize_model(model_dir, run + "rtn").status == 0);
  CHECK(nlohmann::json::parse(read_file(out / "manifest.json"))["method"] == "rtn");
  const Outcome outcome = quantize_model(model_dir, run + "rtn,gptq");
  CHECK(outcome.status == 2);
  CHECK(outcome.err.find("single method") != std::string::npos);
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
