// gsq/io/resumable_output.hpp -- an output directory that takes long to make, built so that a run
// stopped part-way (killed, out of time) can continue where it stopped instead of starting over,
// and so that the destination never holds a half-made output.
//
//   OUT.partial/settings.json          the settings of the run that fills OUT.partial: a run may
//                                      continue it (resume) only with the same settings
//   OUT.partial/<unit>.safetensors     one completed unit of work (say, a quantized layer),
//                                      each written atomically as it completes
//   OUT.writing-<pid>/                 the final output while it is written, then renamed to OUT
//
//   gsq::ResumableOutput output("out/gsq2", settings, resume);
//   if (!output.completed("layer-0")) output.store("layer-0", writer);  // else output.read("layer-0")
//   output.publish([&](const std::string& directory) { /* write the files into directory */ });
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "gsq/common/error.hpp"
#include "gsq/io/atomic_file.hpp"
#include "gsq/io/safetensors.hpp"

namespace gsq {

class ResumableOutput {
 public:
  /// Opens `destination`.partial for a run with `settings`. If it exists, an earlier run stopped
  /// part-way: it is reopened only with `resume` and the same settings (the messages name the
  /// --resume flag of the drivers), so that no stopped run is silently redone or mixed with a
  /// run of other settings.
  ResumableOutput(std::string destination, const nlohmann::json& settings, bool resume)
      : destination_(std::move(destination)), partial_(destination_ + ".partial") {
    namespace fs = std::filesystem;
    const std::string settings_path = partial_ + "/settings.json";
    require_startable(destination_, resume);
    if (fs::exists(partial_)) {
      // Compared as written: text that is not UTF-8 (a path of odd bytes) is stored replaced.
      const nlohmann::json as_written =
          nlohmann::json::parse(settings.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
      require(read_json(settings_path) == as_written, "--resume: the settings differ from those of the stopped run in " +
                                                        partial_ + " (compare with its settings.json)");
      return;
    }
    fs::create_directories(partial_);
    write_json_atomically(settings_path, settings);
  }

  /// Throws gsq::Error if a run into `destination` stopped part-way and `resume` is not set:
  /// drivers call it before any work, the constructor again.
  static void require_startable(const std::string& destination, bool resume) {
    const std::string partial = destination + ".partial";
    require(resume || !std::filesystem::exists(partial),
            "a run into this output stopped part-way (" + partial + " exists): add --resume to continue it, or delete that directory");
  }

  /// The file that holds completed unit `unit`.
  std::string unit_path(const std::string& unit) const { return partial_ + "/" + unit + ".safetensors"; }

  /// Whether unit `unit` was completed (by this run or by the stopped run it continues).
  bool completed(const std::string& unit) const { return std::filesystem::exists(unit_path(unit)); }

  /// Keeps completed unit `unit`; the file appears whole or not at all.
  void store(const std::string& unit, const SafetensorsWriter& writer) const { writer.write(unit_path(unit)); }

  SafetensorsFile read(const std::string& unit) const { return SafetensorsFile::open(unit_path(unit)); }

  /// Publishes the output: `fill` writes it into a new directory beside the destination, which
  /// then replaces the destination by renames (gsq::replace_directory), and the completed units
  /// are deleted. If `fill` throws, its directory is removed and the destination and the
  /// completed units stay as they were.
  void publish(const std::function<void(const std::string& directory)>& fill) const {
    namespace fs = std::filesystem;
    const std::string staged = destination_ + ".writing-" + std::to_string(::getpid());
    fs::remove_all(staged);
    fs::create_directory(staged);
    try {
      fill(staged);
    } catch (...) {
      fs::remove_all(staged);
      throw;
    }
    replace_directory(staged, destination_);
    fs::remove_all(partial_);
  }

 private:
  static nlohmann::json read_json(const std::string& path) {
    std::ifstream stream(path);
    require(static_cast<bool>(stream), "cannot read " + path);
    try {
      return nlohmann::json::parse(stream);
    } catch (const nlohmann::json::exception& error) {
      throw Error(path + " is not valid JSON: " + error.what());
    }
  }

  std::string destination_;
  std::string partial_;
};

}  // namespace gsq
