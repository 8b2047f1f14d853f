// gsq/io/atomic_file.hpp -- writing outputs so that nothing is ever half-written: a file is
// written beside its destination, synced, and renamed into place; a directory is built beside
// its destination and renamed into place. Readers see the old output or the new one.
#pragma once

#include <fcntl.h>
#include <stdio.h>  // renameat2
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/common/error.hpp"

namespace gsq {

/// Takes the next bytes of a file being written.
using ByteSink = std::function<void(const void* data, std::size_t size)>;

/// Writes what `produce` gives its sink (in order) to `path` through a temporary file in the same
/// directory that is fsynced and then renamed over `path`: readers see the old file or the whole
/// new one, and a failure (of a write, or an exception from `produce`) removes the temporary file
/// and leaves any existing file untouched. The bytes need not all be in memory at once.
inline void write_file_atomically(const std::string& path, const std::function<void(const ByteSink&)>& produce) {
  std::string temporary;
  int descriptor = -1;
  for (int attempt = 0; descriptor < 0; ++attempt) {
    temporary = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(attempt);
    descriptor = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (descriptor < 0 && (errno != EEXIST || attempt == 100))
      throw Error("writing '" + path + "' failed (cannot create a temporary file beside it: " +
                  std::strerror(errno) + ")");
  }
  auto fail = [&](const std::string& step) {
    const std::string reason = std::strerror(errno);
    if (descriptor >= 0) ::close(descriptor);
    descriptor = -1;
    ::unlink(temporary.c_str());
    throw Error("writing '" + path + "' failed (" + step + ": " + reason + "); any existing file is unchanged");
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
    if (descriptor >= 0) {  // produce failed (a failed write has cleaned up already)
      ::close(descriptor);
      ::unlink(temporary.c_str());
    }
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

/// Replaces directory `destination` by `staged` (a complete directory beside it, named
/// DESTINATION.writing-PID) so that at every instant the destination is the old output or the
/// new one: the two are swapped in one atomic exchange (Linux renameat2), then the old one is
/// removed. Where the file system cannot exchange, the old output is renamed aside to
/// DESTINATION.previous-PID first; a kill between the two renames leaves it there, and the next
/// claim of the destination puts it back (gsq::clear_debris).
inline void replace_directory(const std::string& staged, const std::string& destination) {
  namespace fs = std::filesystem;
  if (!fs::exists(fs::symlink_status(destination))) {
    fs::rename(staged, destination);
    return;
  }
#if defined(RENAME_EXCHANGE)
  if (::renameat2(AT_FDCWD, staged.c_str(), AT_FDCWD, destination.c_str(), RENAME_EXCHANGE) == 0) {
    fs::remove_all(staged);  // now the old output
    return;
  }
  if (errno != EINVAL && errno != ENOSYS)
    throw Error("cannot replace '" + destination + "': " + std::strerror(errno) + "; the new output is in " + staged);
#endif
  const std::string previous = destination + ".previous-" + std::to_string(::getpid());
  fs::rename(destination, previous);
  fs::rename(staged, destination);
  fs::remove_all(previous);
}

}  // namespace gsq
