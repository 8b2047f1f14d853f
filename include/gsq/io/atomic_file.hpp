// gsq/io/atomic_file.hpp -- writing outputs so that nothing is ever half-written: a file is
// written beside its destination, synced, and renamed into place; a directory is built beside
// its destination and renamed into place. Readers see the old output or the new one.
//
// Whatever gsq builds beside a destination lives in a work directory DESTINATION.writing-PID (or,
// for an output being replaced, DESTINATION.previous-PID) that holds gsq's marker file naming the
// process PID. A later run removes such debris only when it carries that mark and the process is
// gone (gsq::clear_debris): a user's directory of a similar name is never touched.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <stdio.h>  // renameat2
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/common/error.hpp"

namespace gsq {

/// Thrown when the system fails a write (a full disk, a lost device): not the user's input or
/// settings, so the drivers exit with status 1 rather than 2 (docs/files.md).
struct SystemError : Error {
  using Error::Error;
};

/// The mark gsq puts on the outputs it writes (a safetensors file's metadata "producer", the
/// key "producer" of a JSON report or manifest, a work directory's marker), so that a later run
/// knows which existing files are its own to replace (gsq/io/output_location.hpp).
inline constexpr const char* producer = "gsq";

/// The marker file of a directory that is gsq's work in progress (see the top of this header).
inline constexpr const char* work_marker = ".gsq-work";

/// Marks `directory` as the work of this process. The marker is not synced: it only identifies
/// debris, and a crash that loses it leaves a directory that the next run names in a warning
/// instead of removing.
inline void mark_as_work(const std::string& directory) {
  const std::string path = directory + "/" + work_marker;
  const std::string text = nlohmann::json({{"producer", producer}, {"pid", static_cast<long>(::getpid())}}).dump() + "\n";
  std::ofstream stream(path, std::ios::binary | std::ios::trunc);
  stream << text;
  if (!stream.flush()) throw SystemError("cannot write " + path + " (" + std::strerror(errno) + ")");
}

/// The process id that marked `directory` as its work, or 0 when it carries no gsq marker.
inline long work_marker_pid(const std::filesystem::path& directory) {
  std::error_code error;
  if (!std::filesystem::is_directory(std::filesystem::symlink_status(directory, error))) return 0;
  std::ifstream stream(directory / work_marker);
  if (!stream) return 0;
  const nlohmann::json marker = nlohmann::json::parse(stream, nullptr, /*allow_exceptions=*/false);
  if (!marker.is_object() || marker.value("producer", std::string()) != producer) return 0;
  const nlohmann::json& pid = marker.value("pid", nlohmann::json());
  return pid.is_number_integer() ? pid.get<long>() : 0;
}

inline void remove_work_marker(const std::string& directory) {
  std::error_code ignored;
  std::filesystem::remove(std::filesystem::path(directory) / work_marker, ignored);
}

/// Whether process `pid` runs (on this machine).
inline bool process_alive(long pid) { return pid > 0 && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM); }

/// A marked work directory beside `destination` (DESTINATION.writing-PID), removed with whatever
/// is left in it when the object goes, unless dismiss() says its content has moved on.
class WorkDirectory {
 public:
  explicit WorkDirectory(const std::string& destination)
      : path_(destination + ".writing-" + std::to_string(::getpid())) {
    namespace fs = std::filesystem;
    // A directory of this name is this process's own (an earlier attempt) only when it is marked so.
    if (fs::exists(fs::symlink_status(path_))) {
      if (work_marker_pid(path_) != ::getpid())
        throw Error("cannot write '" + destination + "': " + path_ + " is in the way (gsq did not make it; move it away)");
      fs::remove_all(path_);
    }
    if (::mkdir(path_.c_str(), 0777) != 0) {
      const int error = errno;
      path_.clear();
      const std::string message =
          "writing '" + destination + "' failed (cannot create a temporary directory beside it: " + std::strerror(error) + ")";
      // A missing or forbidden place is the user's path; anything else (a full disk) the system's.
      if (error == ENOENT || error == ENOTDIR || error == EACCES || error == EPERM) throw Error(message);
      throw SystemError(message);
    }
    mark_as_work(path_);
  }
  WorkDirectory(const WorkDirectory&) = delete;
  WorkDirectory& operator=(const WorkDirectory&) = delete;
  ~WorkDirectory() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }

  const std::string& path() const { return path_; }
  void dismiss() { path_.clear(); }

 private:
  std::string path_;
};

/// Takes the next bytes of a file being written.
using ByteSink = std::function<void(const void* data, std::size_t size)>;

/// Writes what `produce` gives its sink (in order) to `path` through a temporary file in a work
/// directory beside it (WorkDirectory) that is fsynced and then renamed over `path`: readers see
/// the old file or the whole new one, and a failure (of a write, or an exception from `produce`)
/// removes the temporary file and leaves any existing file untouched. The bytes need not all be
/// in memory at once. A failing write throws SystemError.
inline void write_file_atomically(const std::string& path, const std::function<void(const ByteSink&)>& produce) {
  const WorkDirectory work(path);
  const std::string temporary = work.path() + "/" + std::filesystem::path(path).filename().string();
  int descriptor = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (descriptor < 0)
    throw SystemError("writing '" + path + "' failed (cannot create a temporary file beside it: " + std::strerror(errno) + ")");
  auto fail = [&](const std::string& step) {
    const std::string reason = std::strerror(errno);
    if (descriptor >= 0) ::close(descriptor);
    descriptor = -1;
    throw SystemError("writing '" + path + "' failed (" + step + ": " + reason + "); any existing file is unchanged");
  };
  try {
    produce([&](const void* data, std::size_t size) {
      const auto* next = static_cast<const char*>(data);
      std::size_t left = size;
      while (left > 0) {
        const ssize_t written = ::write(descriptor, next, left);
        if (written < 0 && errno == EINTR) continue;
        if (written <= 0) fail("write");
        next += written;
        left -= static_cast<std::size_t>(written);
      }
    });
  } catch (...) {
    if (descriptor >= 0) ::close(descriptor);  // produce failed (a failed write has closed it already)
    throw;
  }
  if (::fsync(descriptor) != 0) fail("fsync");
  const int closed = ::close(descriptor);
  descriptor = -1;
  if (closed != 0) fail("close");
  if (::rename(temporary.c_str(), path.c_str()) != 0) fail("rename");
  // Make the rename itself durable; a directory that cannot be synced is not worth failing for.
  const std::size_t slash = path.rfind('/');
  const std::string directory = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  const int directory_descriptor = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (directory_descriptor >= 0) {
    ::fsync(directory_descriptor);
    ::close(directory_descriptor);
  }
}

/// Writes `chunks` (in order) to `path` atomically.
inline void write_file_atomically(const std::string& path, const std::vector<std::pair<const void*, std::size_t>>& chunks) {
  write_file_atomically(path, [&](const ByteSink& sink) {
    for (const auto& [data, size] : chunks) sink(data, size);
  });
}

/// Writes `text` to `path` atomically (see write_file_atomically).
inline void write_text_atomically(const std::string& path, const std::string& text) {
  write_file_atomically(path, {{text.data(), text.size()}});
}

/// Writes `json` to `path` atomically, indented. Text that is not UTF-8 (a path of odd bytes)
/// is written with U+FFFD in its place rather than failing the write.
inline void write_json_atomically(const std::string& path, const nlohmann::json& json) {
  write_text_atomically(path, json.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

/// Replaces directory `destination` by `staged` (a complete work directory beside it, see
/// WorkDirectory) so that at every instant the destination is the old output or the new one: the
/// two are swapped in one atomic exchange (Linux renameat2), then the old one is removed. The old
/// output is marked as this process's work first, so that a kill after the swap leaves debris
/// the next run recognises. Where the file system cannot exchange, the old output is renamed
/// aside to DESTINATION.previous-PID first; a kill between the two renames leaves it there, and
/// the next claim of the destination puts it back (gsq::clear_debris).
inline void replace_directory(const std::string& staged, const std::string& destination) {
  namespace fs = std::filesystem;
  if (!fs::exists(fs::symlink_status(destination))) {
    fs::rename(staged, destination);
    remove_work_marker(destination);
    return;
  }
  mark_as_work(destination);
#if defined(RENAME_EXCHANGE)
  if (::renameat2(AT_FDCWD, staged.c_str(), AT_FDCWD, destination.c_str(), RENAME_EXCHANGE) == 0) {
    fs::remove_all(staged);  // now the old output
    remove_work_marker(destination);
    return;
  }
  if (errno != EINVAL && errno != ENOSYS) {
    const std::string reason = std::strerror(errno);
    remove_work_marker(destination);
    throw SystemError("cannot replace '" + destination + "': " + reason + "; the new output is in " + staged);
  }
#endif
  const std::string previous = destination + ".previous-" + std::to_string(::getpid());
  fs::rename(destination, previous);
  fs::rename(staged, destination);
  fs::remove_all(previous);
  remove_work_marker(destination);
}

}  // namespace gsq
