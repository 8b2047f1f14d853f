// gsq/io/output_location.hpp -- where an output may go, decided before any work: nothing the
// user had is ever destroyed (docs/files.md).
//
// Every writer claims its destination first. The path is normalised (a trailing slash, ".",
// "..", symlinks) and refused when it
//   - is, contains, or lies inside an input (the model, a token file, a layer file),
//   - is the working directory or a directory above it,
//   - holds something gsq did not write: gsq replaces only its own outputs, which it knows by
//     their mark (gsq::producer, "gsq"): the key "producer" in a directory's manifest.json, at
//     the top of a JSON file, or in a safetensors file's metadata,
//   - cannot be written (its directory refuses a new file).
// Claiming also clears the debris that a killed earlier run left beside the destination: only
// work directories that carry gsq's marker naming a process that is gone (gsq/io/atomic_file.hpp);
// anything else of a debris-like name is left alone and named in a warning.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/common/error.hpp"
#include "gsq/io/atomic_file.hpp"
#include "gsq/io/safetensors.hpp"

namespace gsq {

enum class OutputKind {
  directory,  // replaced as a whole (a quantized model, a method's output)
  file,       // replaced as a whole (a JSON report, a safetensors result)
  container,  // a directory gsq writes outputs into, leaving the rest of it alone (--dump-layers, a sweep's folder)
};

namespace detail {

namespace fs = std::filesystem;

/// Absolute, without ".", "..", a trailing separator or symlinks (where the path exists).
inline fs::path normalised(const std::string& path) {
  fs::path result = fs::weakly_canonical(fs::absolute(fs::path(path)).lexically_normal());
  while (result.has_relative_path() && result.filename().empty()) result = result.parent_path();
  return result;
}

/// Whether `inner` is `outer` or lies below it (both normalised).
inline bool within(const fs::path& inner, const fs::path& outer) {
  auto in = inner.begin();
  for (auto out = outer.begin(); out != outer.end(); ++out, ++in)
    if (in == inner.end() || *in != *out) return false;
  return true;
}

inline bool is_gsq_json(const fs::path& path) {
  if (!fs::is_regular_file(path)) return false;
  std::ifstream stream(path);
  const nlohmann::json json = nlohmann::json::parse(stream, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return false;
  const auto has = [&](std::initializer_list<const char*> keys) {
    for (const char* key : keys)
      if (!json.contains(key)) return false;
    return true;
  };
  // Manifests and reports of gsq releases before the mark carry these keys together.
  return json.value("producer", std::string()) == producer || has({"method", "settings", "layers"}) ||
         has({"baseline", "runs"});
}

inline bool is_gsq_safetensors(const fs::path& path) {
  try {
    const std::map<std::string, std::string> metadata = SafetensorsFile::open(path.string()).metadata();
    const auto mark = metadata.find("producer");
    return mark != metadata.end() && mark->second == producer;
  } catch (const Error&) {
    return false;
  }
}

/// What is at `path`, in words, for refusals.
inline std::string describe(const fs::path& path) {
  const fs::file_status status = fs::symlink_status(path);
  if (fs::is_directory(status)) return "a directory gsq did not write (it has no manifest.json marked as gsq's)";
  if (fs::is_regular_file(status)) return "a file gsq did not write";
  return "something that is not a regular file or directory";
}

/// The process id in a debris name's tail "<pid>" or "<pid>-<n>"; 0 if it is not one.
inline long debris_pid(const std::string& tail) {
  const std::size_t digits = std::min(tail.find_first_not_of("0123456789"), tail.size());
  if (digits == 0 || digits > 9 || (digits < tail.size() && tail[digits] != '-')) return 0;
  return std::stol(tail.substr(0, digits));
}

}  // namespace detail

/// Whether `path` is an output gsq wrote and may therefore replace.
inline bool is_gsq_output(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  const fs::file_status status = fs::symlink_status(path);
  if (fs::is_directory(status)) return detail::is_gsq_json(path / "manifest.json");
  if (!fs::is_regular_file(status)) return false;
  return path.extension() == ".json" ? detail::is_gsq_json(path) : detail::is_gsq_safetensors(path);
}

/// Removes what a killed run left beside `destination`: NAME.writing-PID (a staged output or a
/// file being written) and NAME.previous-PID (an output being replaced: put back if NAME itself
/// is missing), when the directory carries gsq's marker naming PID and that process is gone; and
/// a marker left inside NAME itself by a run killed just after its swap. Returns what looks like
/// debris by its name but is not marked as gsq's (NAME.tmp-..., a user's NAME.previous-2024):
/// left alone.
inline std::vector<std::filesystem::path> clear_debris(const std::filesystem::path& destination) {
  namespace fs = std::filesystem;
  std::vector<fs::path> left_alone;
  const fs::path directory = destination.parent_path();
  if (!fs::is_directory(directory)) return left_alone;
  const std::string name = destination.filename().string();
  std::vector<fs::path> staged, previous;
  std::error_code ignored;
  for (const fs::directory_entry& entry : fs::directory_iterator(directory, ignored)) {
    const std::string entry_name = entry.path().filename().string();
    if (entry_name.compare(0, name.size() + 1, name + ".") != 0) continue;
    const std::string tail = entry_name.substr(name.size() + 1);
    for (const char* kind : {"writing-", "previous-", "tmp-"}) {
      const std::size_t length = std::strlen(kind);
      if (tail.compare(0, length, kind) != 0) continue;
      const long pid = detail::debris_pid(tail.substr(length));
      if (pid == 0 || work_marker_pid(entry.path()) != pid)
        left_alone.push_back(entry.path());
      else if (!process_alive(pid))
        (std::strcmp(kind, "previous-") == 0 ? previous : staged).push_back(entry.path());
    }
  }
  for (const fs::path& old : previous) {
    if (!fs::exists(fs::symlink_status(destination))) {
      fs::rename(old, destination);  // killed between the two renames of a replacement
      remove_work_marker(destination.string());
    } else {
      fs::remove_all(old);
    }
  }
  for (const fs::path& path : staged) fs::remove_all(path);
  const long marked = work_marker_pid(destination);
  if (marked != 0 && !process_alive(marked)) remove_work_marker(destination.string());
  return left_alone;
}

/// A path as the user gave it, with the flag that gave it ("--model", "--out"), for messages.
struct NamedPath {
  std::string flag;
  std::string path;
  bool output = false;  // another output of the run, rather than an input
  std::string text() const { return flag + " " + path; }
};

/// Checks that `output` may receive an output of `kind`, before any work: see the top of this
/// header. `apart` are the paths the output must keep clear of: the run's inputs, and its
/// other outputs. Creates the missing parents of an output directory (a file's directory must
/// exist) and clears a killed run's debris; returns the normalised destination.
inline std::string claim_output(const NamedPath& output, OutputKind kind, const std::vector<NamedPath>& apart) {
  namespace fs = std::filesystem;
  require(!output.path.empty(), output.flag + " is empty: name the output");
  const fs::path destination = detail::normalised(output.path);
  const std::string named = output.text();
  const fs::path working = detail::normalised(".");
  require(!detail::within(working, destination),
          named + " is the working directory or a directory above it: name a new directory for the output");
  for (const NamedPath& other : apart) {
    if (other.path.empty()) continue;
    const fs::path kept = detail::normalised(other.path);
    require(destination != kept, named + " is " + other.text() +
                                     (other.output ? ": two outputs cannot share a path" : ": gsq never writes over what it reads"));
    require(!detail::within(destination, kept), named + " lies inside " + other.text());
    require(!detail::within(kept, destination), named + " contains " + other.text() + ", which replacing it would delete");
  }
  for (const fs::path& path : clear_debris(destination))
    std::cerr << "warning: " << named << ": left " << path.string()
              << " alone: its name is like that of gsq's leftovers, but gsq did not mark it as its own\n";
  const fs::file_status status = fs::status(destination);
  if (fs::exists(status)) {
    if (kind == OutputKind::container) {
      require(fs::is_directory(status), named + " is not a directory");
    } else {
      require(is_gsq_output(destination), named + " holds " + detail::describe(destination) +
                                              ": gsq replaces only its own outputs; choose another path or move it away");
      const bool directory = kind == OutputKind::directory;
      require(directory == fs::is_directory(status),
              named + (directory ? " is a file, not a directory" : " is a directory, not a file"));
    }
  }
  const fs::path parent = destination.parent_path();
  require(kind != OutputKind::file || fs::is_directory(parent),
          named + ": the directory " + parent.string() + " does not exist");
  std::error_code error;
  fs::create_directories(parent, error);  // an output directory's missing parents, as mkdir -p
  require(!error && fs::is_directory(parent), named + ": cannot create the directory " + parent.string() +
                                                  (error ? " (" + error.message() + ")" : " (a file is in the way)"));
  // A work directory created and removed now is the only sure test that the directory takes new entries.
  try {
    const WorkDirectory probe(destination.string());
  } catch (const Error& error) {
    throw Error(named + ": cannot write into " + parent.string() + " (" + error.what() + ")");
  }
  if (kind == OutputKind::container) fs::create_directories(destination);
  return destination.string();
}

}  // namespace gsq
