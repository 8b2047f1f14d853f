// gsq/io/regular_file.hpp -- opening an input that must be a regular file, without blocking on
// one that is not: opening a FIFO for reading waits for a writer forever, so the file is opened
// non-blocking, checked, and only then read. Directories, FIFOs, sockets and devices are refused
// by name.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "gsq/common/error.hpp"

namespace gsq {

namespace detail {
/// What a non-regular file is, for refusals: "it is a FIFO (named pipe), not a regular file".
inline const char* file_type_name(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  return "of an unknown type";
}
}  // namespace detail

/// A descriptor of the regular file `path` opened with `flags` (read-only by default; the caller
/// closes it); `what` names the file in errors ("model config", "calibration tokens", ...).
inline int open_regular_file(const std::string& path, const std::string& what, int flags = O_RDONLY) {
  const int descriptor = ::open(path.c_str(), flags | O_NONBLOCK | O_CLOEXEC, 0644);
  require(descriptor >= 0, "cannot open " + what + " '" + path + "': " + std::strerror(errno));
  struct stat status {};
  const bool stat_ok = ::fstat(descriptor, &status) == 0;
  if (!stat_ok || !S_ISREG(status.st_mode)) {
    const std::string reason = stat_ok ? std::string("it is ") + detail::file_type_name(status.st_mode) + ", not a regular file"
                                       : std::string(std::strerror(errno));
    ::close(descriptor);
    throw Error("cannot read " + what + " '" + path + "': " + reason);
  }
  ::fcntl(descriptor, F_SETFL, ::fcntl(descriptor, F_GETFL) & ~O_NONBLOCK);
  return descriptor;
}

/// The whole content of the regular file `path`, refusing one larger than `limit` bytes.
inline std::string read_regular_file(const std::string& path, const std::string& what,
                                     std::size_t limit = static_cast<std::size_t>(-1)) {
  const int descriptor = open_regular_file(path, what);
  struct stat status {};
  ::fstat(descriptor, &status);
  if (static_cast<std::size_t>(status.st_size) > limit) {
    ::close(descriptor);
    throw Error(what + " '" + path + "' is larger than " + std::to_string(limit) + " bytes");
  }
  std::string content(static_cast<std::size_t>(status.st_size), '\0');
  std::size_t done = 0;
  while (done < content.size()) {
    const ssize_t got = ::read(descriptor, &content[done], content.size() - done);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      const std::string reason = got < 0 ? std::strerror(errno) : "the file shrank while it was read";
      ::close(descriptor);
      throw Error("cannot read " + what + " '" + path + "': " + reason);
    }
    done += static_cast<std::size_t>(got);
  }
  ::close(descriptor);
  return content;
}

}  // namespace gsq
