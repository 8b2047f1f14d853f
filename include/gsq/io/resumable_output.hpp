// gsq/io/resumable_output.hpp -- an output directory that takes long to make, built so that a run
// stopped part-way (killed, out of time) can continue where it stopped instead of starting over,
// and so that the destination never holds a half-made output.
//
//   OUT.partial/settings.json          the settings of the run that fills OUT.partial: a run may
//                                      continue it (resume) only with the same settings
//   OUT.partial/inputs.json            the fingerprints of the input files it read (size,
//                                      modification time, content hash): a run may continue it
//                                      only while each is unchanged
//   OUT.partial/<unit>.safetensors     one completed unit of work (say, a quantized layer),
//                                      each written atomically as it completes
//   OUT.partial/<unit>.json            that unit's own fingerprint and that of the inputs it was
//                                      made from: a damaged unit, or one whose inputs changed, is
//                                      refused on resume
//   OUT.writing-<pid>/                 the final output while it is written, then renamed to OUT
//
// A run that fails before it completes any unit removes the OUT.partial it created: it leaves
// nothing behind, and a rerun with corrected settings just starts.
//
// Over several ranks (a Communicator; they share the file system) every rank opens the output
// and publishes it alike: rank 0 opens OUT.partial first and the others join it; rank 0 makes the
// directory the output is written into and every rank writes its share there.
//
//   gsq::ResumableOutput output("out/gsq2", settings, resume, inputs);
//   if (!output.completed("layer-0")) output.store("layer-0", writer, fingerprint);
//   else output.verify("layer-0", fingerprint, "layer 0's weights"), output.read("layer-0");
//   output.publish([&](const std::string& directory) { /* write the files into directory */ });
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/common/error.hpp"
#include "gsq/distributed/communicator.hpp"
#include "gsq/io/atomic_file.hpp"
#include "gsq/io/fingerprint.hpp"
#include "gsq/io/safetensors.hpp"

namespace gsq {

/// Whether a run continues a stopped one, and what the user calls that setting, for messages:
/// a driver passes its flag ({options.resume, "--resume"}), a program may pass just the bool.
struct Resume {
  bool on = false;
  std::string name = "resume";
  Resume(bool on_, std::string name_ = "resume") : on(on_), name(std::move(name_)) {}  // NOLINT: a bool is a Resume
};

class ResumableOutput {
 public:
  /// Opens `destination`.partial for a run with `settings` that read the files `inputs` (a name
  /// for messages -> file_fingerprint, plus "path"). If it exists, an earlier run stopped
  /// part-way: it is reopened only with `resume` on, the same settings and unchanged inputs (the
  /// messages call the setting by resume.name), so that no stopped run is silently redone, mixed
  /// with a run of other settings, or continued on other data.
  ResumableOutput(std::string destination, const nlohmann::json& settings, Resume resume,
                  const nlohmann::json& inputs = nlohmann::json::object(),
                  const Communicator& communicator = serial_communicator())
      : destination_(std::move(destination)), partial_(destination_ + ".partial"), resume_(std::move(resume.name)),
        communicator_(&communicator) {
    // Rank 0 opens OUT.partial first; the others then join it.
    if (communicator.rank() == 0) open(settings, resume.on, inputs);
    communicator.barrier();
    if (communicator.rank() != 0) open(settings, true, inputs);
  }

  ResumableOutput(const ResumableOutput&) = delete;
  ResumableOutput& operator=(const ResumableOutput&) = delete;

  /// A run that created OUT.partial and failed before completing a unit leaves nothing behind.
  ~ResumableOutput() {
    std::error_code ignored;
    if (created_ && stored_ == 0 && !published_) std::filesystem::remove_all(partial_, ignored);
  }

  /// Throws gsq::Error if a run into `destination` stopped part-way and `resume` is not set:
  /// drivers call it before any work, the constructor again.
  static void require_startable(const std::string& destination, const Resume& resume) {
    const std::string partial = destination + ".partial";
    require(resume.on || !std::filesystem::exists(partial), "a run into this output stopped part-way (" + partial +
                                                                " exists): continue it with " + resume.name + ", or delete that directory");
  }

  /// The file that holds completed unit `unit`.
  std::string unit_path(const std::string& unit) const { return partial_ + "/" + unit + ".safetensors"; }

  /// Whether unit `unit` was completed (by this run or by the stopped run it continues).
  bool completed(const std::string& unit) const {
    return std::filesystem::exists(unit_path(unit)) && std::filesystem::exists(record_path(unit));
  }

  /// Keeps completed unit `unit`, made from inputs of fingerprint `inputs`; the file appears whole
  /// or not at all, and counts as completed once its record (its own fingerprint) follows it.
  void store(const std::string& unit, const SafetensorsWriter& writer, const std::string& inputs = {}) const {
    Fingerprint hash;
    write_file_atomically(unit_path(unit), [&](const ByteSink& sink) {
      writer.stream([&](const void* data, std::size_t size) {
        hash.add(data, size);
        sink(data, size);
      });
    });
    write_json_atomically(record_path(unit), {{"hash", hash.hex()}, {"inputs", inputs}});
    ++stored_;
  }

  /// Checks completed unit `unit` before it is used: its file is what was stored (not damaged or
  /// replaced since), and it was made from inputs of fingerprint `inputs` (`what` names them for
  /// the message).
  void verify(const std::string& unit, const std::string& inputs, const std::string& what) const {
    const nlohmann::json record = read_json(record_path(unit));
    require(record.is_object() && record.value("hash", std::string()) == file_fingerprint(unit_path(unit))["hash"],
            resume_ + ": " + unit_path(unit) + " is damaged (it is not what the stopped run stored): delete it and its " +
                record_path(unit) + " to redo it");
    require(record.value("inputs", std::string()) == inputs,
            resume_ + ": " + what + " changed since the stopped run in " + partial_ + " made " + unit +
                " from it; start afresh (delete " + partial_ + ") or restore the input");
  }

  SafetensorsFile read(const std::string& unit) const { return SafetensorsFile::open(unit_path(unit)); }

  /// Publishes the output: `fill` writes it into a work directory beside the destination (every
  /// rank calls it with the same directory, to write its share), which then replaces the
  /// destination (gsq::replace_directory), and the completed units are deleted. If `fill` throws,
  /// its directory is removed and the destination and the completed units stay as they were.
  void publish(const std::function<void(const std::string& directory)>& fill) const {
    std::optional<WorkDirectory> staged;
    if (communicator_->rank() == 0) staged.emplace(destination_);
    const std::string made = staged ? staged->path() : std::string();
    const std::vector<std::uint8_t> named = communicator_->all_gather(std::vector<std::uint8_t>(made.begin(), made.end())).front();
    const std::string directory(named.begin(), named.end());
    fill(directory);
    communicator_->barrier();  // every rank's share is written
    if (!staged) return;
    replace_directory(directory, destination_);
    staged->dismiss();
    std::filesystem::remove_all(partial_);
    published_ = true;
  }

 private:
  /// Opens OUT.partial on this rank: see the constructor.
  void open(const nlohmann::json& settings, bool resume, const nlohmann::json& inputs) {
    namespace fs = std::filesystem;
    require_startable(destination_, {resume, resume_});
    if (fs::exists(partial_)) {
      require_same_inputs(inputs);
      // Compared as written: text that is not UTF-8 (a path of odd bytes) is stored replaced.
      require(read_json(settings_path()) == as_written(settings),
              resume_ + ": the settings differ from those of the stopped run in " + partial_ + " (compare with its settings.json)");
      clear_dead_work();
      return;
    }
    fs::create_directories(partial_);
    created_ = true;
    write_json_atomically(settings_path(), settings);
    write_json_atomically(inputs_path(), inputs);
  }

  std::string settings_path() const { return partial_ + "/settings.json"; }
  std::string inputs_path() const { return partial_ + "/inputs.json"; }
  std::string record_path(const std::string& unit) const { return partial_ + "/" + unit + ".json"; }

  static nlohmann::json as_written(const nlohmann::json& json) {
    return nlohmann::json::parse(json.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }

  /// Names the first input whose size or content differs from the stopped run's.
  void require_same_inputs(const nlohmann::json& inputs) const {
    const nlohmann::json recorded = std::filesystem::exists(inputs_path()) ? read_json(inputs_path()) : nlohmann::json::object();
    const nlohmann::json current = as_written(inputs);
    for (const auto& [name, now] : current.items()) {
      const std::string path = now.value("path", name);
      require(recorded.contains(name), resume_ + ": the stopped run in " + partial_ + " did not record " + name + " (" + path +
                                           "); start afresh (delete " + partial_ + ")");
      const nlohmann::json& then = recorded[name];
      require(then.value("size", -1LL) == now.value("size", -2LL) && then.value("hash", "") == now.value("hash", ""),
              resume_ + ": " + name + " " + path + " changed since the stopped run in " + partial_ + " read it (" +
                  (then.value("size", -1LL) != now.value("size", -2LL)
                       ? "its size was " + std::to_string(then.value("size", -1LL)) + " bytes, now " +
                             std::to_string(now.value("size", -2LL))
                       : std::string("its content differs")) +
                  "); start afresh (delete " + partial_ + ") or restore the file");
    }
  }

  /// Removes what a killed unit write left in OUT.partial (gsq's marked work directories).
  void clear_dead_work() const {
    for (const std::filesystem::directory_entry& entry : std::filesystem::directory_iterator(partial_)) {
      const long pid = work_marker_pid(entry.path());
      if (pid != 0 && !process_alive(pid)) std::filesystem::remove_all(entry.path());
    }
  }

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
  std::string resume_;  // what the user calls the resume setting
  const Communicator* communicator_;
  bool created_ = false;
  // What the run has done with its output, for the destructor (store and publish are const: they
  // change files, not what the object describes).
  mutable long stored_ = 0;
  mutable bool published_ = false;
};

}  // namespace gsq
