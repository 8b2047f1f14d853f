// gsq/io/fingerprint.hpp -- content fingerprints, so that a resumed run notices an input that
// changed since the run it continues (gsq/io/resumable_output.hpp, docs/files.md).
//
// A fingerprint is a 64-bit hash of bytes, written as 16 hex digits. It detects change, not
// tampering: it is not cryptographic. Four independent lanes take 8-byte words in turn (a
// multiply and an xor-shift each), so hashing runs at memory speed on a checkpoint's tensors.
//
//   gsq::Fingerprint hash;
//   hash.add(bytes, size);
//   std::string hex = hash.hex();
//   nlohmann::json file = gsq::file_fingerprint("calib.txt");   // {"size", "mtime", "hash"}
//   nlohmann::json layer = gsq::tensors_fingerprint(checkpoint, "model.layers.0.");  // {"size", "hash"}
#pragma once

#include <sys/stat.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/common/error.hpp"
#include "gsq/io/safetensors.hpp"

namespace gsq {

class Fingerprint {
 public:
  /// Adds `size` bytes; the result depends on the bytes and their order, not on how they were cut.
  void add(const void* data, std::size_t size) {
    const auto* bytes = static_cast<const unsigned char*>(data);
    total_ += size;
    while (size > 0) {
      if (buffered_ == 0 && size >= sizeof block_) {  // whole blocks straight from the input
        const std::size_t whole = size / sizeof block_ * sizeof block_;
        mix_blocks(bytes, whole / sizeof block_, lanes_);
        bytes += whole;
        size -= whole;
        continue;
      }
      const std::size_t taken = std::min(size, sizeof block_ - buffered_);
      std::memcpy(block_ + buffered_, bytes, taken);
      buffered_ += taken;
      bytes += taken;
      size -= taken;
      if (buffered_ == sizeof block_) {
        mix_block(block_);
        buffered_ = 0;
      }
    }
  }

  void add(const std::string& text) {
    add(text.data(), text.size());
    const std::uint64_t length = text.size();  // so that "ab" + "c" differs from "a" + "bc"
    add(&length, sizeof length);
  }

  /// The hash of everything added, as 16 hex digits.
  std::string hex() const {
    std::array<std::uint64_t, 4> lanes = lanes_;
    unsigned char tail[sizeof block_] = {};
    std::memcpy(tail, block_, buffered_);
    mix_blocks(tail, 1, lanes);  // the tail, zero-padded; the length below tells the padding apart
    std::uint64_t hash = total_;
    for (std::uint64_t lane : lanes) hash = finish(hash ^ finish(lane));
    char text[17];
    std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(hash));
    return text;
  }

 private:
  static constexpr std::uint64_t multiplier = 0x9e3779b97f4a7c15ULL;  // odd; 2^64 / golden ratio

  /// Mixes `count` blocks of 32 bytes into `lanes`. The lanes are kept in locals: through the
  /// byte pointer the compiler would assume they alias the input and reload them every word.
  static void mix_blocks(const unsigned char* blocks, std::size_t count, std::array<std::uint64_t, 4>& lanes) {
    std::uint64_t a = lanes[0], b = lanes[1], c = lanes[2], d = lanes[3];
    const auto mix = [](std::uint64_t lane, const unsigned char* bytes) {
      std::uint64_t word;
      std::memcpy(&word, bytes, sizeof word);
      const std::uint64_t value = (lane ^ word) * multiplier;
      return value ^ (value >> 29);
    };
    for (std::size_t block = 0; block < count; ++block, blocks += 32) {
      a = mix(a, blocks);
      b = mix(b, blocks + 8);
      c = mix(c, blocks + 16);
      d = mix(d, blocks + 24);
    }
    lanes = {a, b, c, d};
  }
  void mix_block(const unsigned char* block) { mix_blocks(block, 1, lanes_); }

  /// A bijective mix of 64 bits (multiply and xor-shift rounds), so every input bit reaches every output bit.
  static std::uint64_t finish(std::uint64_t value) {
    value ^= value >> 31;
    value *= 0xbf58476d1ce4e5b9ULL;
    value ^= value >> 27;
    value *= 0x94d049bb133111ebULL;
    return value ^ (value >> 33);
  }

  std::array<std::uint64_t, 4> lanes_{0x243f6a8885a308d3ULL, 0x13198a2e03707344ULL, 0xa4093822299f31d0ULL,
                                      0x082efa98ec4e6c89ULL};  // digits of pi: distinct starting lanes
  unsigned char block_[32] = {};
  std::size_t buffered_ = 0;
  std::uint64_t total_ = 0;
};

/// The fingerprint of `size` bytes.
inline std::string fingerprint_bytes(const void* data, std::size_t size) {
  Fingerprint hash;
  hash.add(data, size);
  return hash.hex();
}

/// What a resumed run compares of an input file: its size, its modification time (nanoseconds
/// since the epoch, for the message: a file touched but unchanged still resumes) and the
/// fingerprint of its bytes.
inline nlohmann::json file_fingerprint(const std::string& path) {
  struct stat status{};
  require(::stat(path.c_str(), &status) == 0, "cannot read " + path + " (" + std::strerror(errno) + ")");
  std::ifstream stream(path, std::ios::binary);
  require(static_cast<bool>(stream), "cannot read " + path);
  Fingerprint hash;
  std::vector<char> buffer(std::size_t(1) << 20);
  while (stream) {
    stream.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    hash.add(buffer.data(), static_cast<std::size_t>(stream.gcount()));
  }
  require(stream.eof(), "cannot read " + path + " to its end");
  const long long mtime = static_cast<long long>(status.st_mtim.tv_sec) * 1000000000LL + status.st_mtim.tv_nsec;
  return {{"size", static_cast<long long>(status.st_size)}, {"mtime", mtime}, {"hash", hash.hex()}};
}

/// The fingerprint of the tensors of `checkpoint` whose names `chosen` accepts (names, dtypes,
/// shapes and bytes, in name order) and their size in bytes: what a run read of a checkpoint,
/// however it is sharded. The mapped pages are let go once hashed.
inline nlohmann::json tensors_fingerprint(const Checkpoint& checkpoint, const std::function<bool(const std::string&)>& chosen) {
  Fingerprint hash;
  long long size = 0;
  for (const std::string& name : checkpoint.tensor_names()) {
    if (!chosen(name)) continue;
    const SafetensorsFile& file = checkpoint.file_of(name);
    const TensorInfo& info = file.info(name);
    hash.add(name);
    hash.add(std::string(dtype_name(info.dtype)));
    for (std::int64_t extent : info.shape) hash.add(&extent, sizeof extent);
    const ByteView bytes = file.raw_bytes(name);
    hash.add(bytes.data, bytes.size);
    file.release_pages(name);
    size += static_cast<long long>(bytes.size);
  }
  return {{"size", size}, {"hash", hash.hex()}};
}

/// The fingerprint of the tensors whose names start with `prefix` ("model.layers.3.").
inline nlohmann::json tensors_fingerprint(const Checkpoint& checkpoint, const std::string& prefix) {
  return tensors_fingerprint(checkpoint, [&](const std::string& name) { return name.compare(0, prefix.size(), prefix) == 0; });
}

}  // namespace gsq
