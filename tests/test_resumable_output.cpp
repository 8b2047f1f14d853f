// Tests of gsq/io/resumable_output.hpp: a stopped run is continued only on request and with the
// same settings, completed units survive until the output is published, and publishing replaces
// the destination whole or not at all.
#include <catch2/catch.hpp>

#include "program_runner.hpp"

#include <algorithm>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <gsq/io/resumable_output.hpp>

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using gsq::testing::read_file;
using gsq::testing::ScratchDirectory;

namespace {

const nlohmann::json settings = {{"method", "gsq"}, {"steps", 30}};

gsq::SafetensorsWriter unit_holding(float value) {
  gsq::SafetensorsWriter writer;
  writer.add("x", {1, 1}, {value});
  writer.set_metadata("report", "done");
  return writer;
}

std::vector<std::string> entries(const fs::path& directory) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(directory)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

TEST_CASE("resumable output: a new run records its settings in OUT.partial") {
  const ScratchDirectory scratch;
  const std::string out = scratch.file("nested/out");
  const gsq::ResumableOutput output(out, settings, false);
  CHECK(read_file(out + ".partial/settings.json") == settings.dump(2) + "\n");
  CHECK_FALSE(fs::exists(out));
  CHECK_FALSE(output.completed("layer-0"));
  CHECK(output.unit_path("layer-0") == out + ".partial/layer-0.safetensors");
}

TEST_CASE("resumable output: completed units are kept and read back") {
  const ScratchDirectory scratch;
  const std::string out = scratch.file("out");
  gsq::ResumableOutput(out, settings, false).store("layer-0", unit_holding(2.5f));

  const gsq::ResumableOutput resumed(out, settings, true);
  REQUIRE(resumed.completed("layer-0"));
  CHECK_FALSE(resumed.completed("layer-1"));
  const gsq::SafetensorsFile file = resumed.read("layer-0");
  CHECK(file.metadata().at("report") == "done");
  CHECK(file.matrix("x").values == std::vector<float>{2.5f});
}

TEST_CASE("resumable output: a stopped run is continued only with resume on and the same settings, named as the caller names it") {
  const ScratchDirectory scratch;
  const std::string out = scratch.file("out");
  gsq::ResumableOutput(out, settings, false).store("layer-0", unit_holding(1));

  CHECK_THROWS_WITH(gsq::ResumableOutput(out, settings, false),
                    Contains("stopped part-way (" + out + ".partial exists): continue it with resume,"));
  CHECK_THROWS_WITH(gsq::ResumableOutput(out, settings, {false, "--resume"}), Contains("continue it with --resume,"));
  nlohmann::json other = settings;
  other["steps"] = 31;
  CHECK_THROWS_WITH(gsq::ResumableOutput(out, other, {true, "--resume"}), Contains("--resume: the settings differ"));
  // Neither refusal touched what the stopped run completed.
  CHECK(read_file(out + ".partial/settings.json") == settings.dump(2) + "\n");
  CHECK(gsq::ResumableOutput(out, settings, true).completed("layer-0"));
}

TEST_CASE("resumable output: unreadable settings are named") {
  const ScratchDirectory scratch;
  const std::string out = scratch.file("out");
  fs::create_directories(out + ".partial");
  CHECK_THROWS_WITH(gsq::ResumableOutput(out, settings, true), Contains("cannot read " + out + ".partial/settings.json"));
  gsq::write_text_atomically(out + ".partial/settings.json", "{\"method\": ");
  CHECK_THROWS_WITH(gsq::ResumableOutput(out, settings, true), Contains("settings.json is not valid JSON"));
}

TEST_CASE("resumable output: publishing replaces an existing output and removes OUT.partial") {
  const ScratchDirectory scratch;
  const std::string out = scratch.file("out");
  fs::create_directories(out);
  gsq::write_text_atomically(out + "/old.txt", "old");
  const gsq::ResumableOutput output(out, settings, false);
  output.store("layer-0", unit_holding(1));

  std::string filled;
  output.publish([&](const std::string& directory) {
    filled = directory;
    CHECK(fs::is_directory(directory));
    CHECK(read_file(out + "/old.txt") == "old");  // the old output stays until the new one is whole
    gsq::write_text_atomically(directory + "/new.txt", "new");
  });
  CHECK(fs::path(filled).parent_path() == scratch.path);
  CHECK(entries(out) == std::vector<std::string>{"new.txt"});
  CHECK(entries(scratch.path) == std::vector<std::string>{"out"});  // no .partial, .writing-, .previous-
}

TEST_CASE("resumable output: a failed publish leaves the destination and the completed units") {
  const ScratchDirectory scratch;
  const std::string out = scratch.file("out");
  fs::create_directories(out);
  gsq::write_text_atomically(out + "/old.txt", "old");
  const gsq::ResumableOutput output(out, settings, false);
  output.store("layer-0", unit_holding(1));

  CHECK_THROWS_WITH(output.publish([](const std::string& directory) {
    gsq::write_text_atomically(directory + "/half.txt", "half");
    throw std::runtime_error("disk full");
  }),
                    "disk full");
  CHECK(entries(out) == std::vector<std::string>{"old.txt"});
  CHECK(entries(scratch.path) == std::vector<std::string>{"out", "out.partial"});
  CHECK(gsq::ResumableOutput(out, settings, true).completed("layer-0"));
}
