// gsq/format/gguf.hpp -- GGUF, the file format of llama.cpp (version 3), written by our own code.
//
//   header    "GGUF", version 3 (u32), tensor count (u64), metadata count (u64)
//   metadata  key (string), value type (u32), value; strings are a u64 length and UTF-8 bytes,
//             arrays an element type (u32), a count (u64) and the elements
//   tensors   name, dimension count (u32), dimensions innermost first (u64 each), ggml type (u32),
//             offset of its data within the data section (u64, a multiple of the alignment)
//   data      each tensor's bytes, every one starting on a multiple of general.alignment (32)
//
// Our scalar format maps exactly onto ggml's symmetric block types (encode_q4_0, encode_q5_0,
// encode_q8_0, encode_tq2_0, encode_q2_0): the learned codes and fp16 scales are stored as they
// are, nothing is re-quantized.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "gsq/common/dtype.hpp"
#include "gsq/common/error.hpp"
#include "gsq/common/matrix.hpp"
#include "gsq/format/ggml_types.hpp"
#include "gsq/format/quantized_tensor.hpp"
#include "gsq/io/atomic_file.hpp"

namespace gsq {

/// The weights in F32 or F16, row-major.
inline std::vector<std::uint8_t> encode_float(const Matrix<float>& weight, GgmlType type) {
  require(type == GgmlType::F32 || type == GgmlType::F16, "encode_float writes F32 or F16");
  std::vector<std::uint8_t> bytes(ggml_bytes(type, weight.size()));
  for (std::size_t i = 0; i < weight.size(); ++i) {
    if (type == GgmlType::F32)
      std::memcpy(&bytes[4 * i], &weight.values[i], 4);
    else
      detail::store_little_endian(float_to_half_bits(weight.values[i]), 2, &bytes[2 * i]);
  }
  return bytes;
}

namespace detail {

/// The blocks of 32 weights along a row that Q4_0, Q5_0 and Q8_0 share: each its group's scale
/// as fp16 d, then `payload(row, first, out)` writes the codes of columns first .. first + 31
/// after it. Exact for codes on the symmetric `bits`-bit grid and groups that are a multiple of
/// 32: each block repeats its group's scale.
template <class Payload>
std::vector<std::uint8_t> encode_blocks_of_32(const QuantizedTensor& tensor, GgmlType type, int bits, Payload payload) {
  const GgmlTypeInfo& info = ggml_type_info(type);
  const int low = -(1 << (bits - 1)), high = (1 << (bits - 1)) - 1;
  require(tensor.grid.min_level == low && tensor.grid.max_level == high,
          std::string(info.name) + " holds " + std::to_string(bits) + "-bit codes (" + std::to_string(low) + ".." +
              std::to_string(high) + "); this tensor is on the " + tensor.grid.name + " grid");
  require(tensor.group_width % 32 == 0, std::string(info.name) + " needs groups that are a multiple of 32 columns, not " +
                                            std::to_string(tensor.group_width));
  std::vector<std::uint8_t> bytes(ggml_bytes(type, tensor.codes.size()), 0);
  std::uint8_t* block = bytes.data();
  for (long row = 0; row < tensor.rows; ++row)
    for (long first = 0; first < tensor.cols; first += 32, block += info.bytes) {
      store_little_endian(float_to_half_bits(tensor.scale(row, first)), 2, block);
      payload(row, first, block + 2);
    }
  return bytes;
}

}  // namespace detail

/// 4-bit codes as Q4_0: blocks of 32 weights along a row, each an fp16 scale d and 16 bytes
/// whose low nibbles hold weights 0-15 and high nibbles weights 16-31, as code + 8
/// (weight = (nibble - 8) d). Exact for groups that are a multiple of 32.
inline std::vector<std::uint8_t> encode_q4_0(const QuantizedTensor& tensor) {
  return detail::encode_blocks_of_32(tensor, GgmlType::Q4_0, 4, [&](long row, long first, std::uint8_t* qs) {
    for (long j = 0; j < 16; ++j)
      qs[j] = static_cast<std::uint8_t>((tensor.code(row, first + j) + 8) | ((tensor.code(row, first + j + 16) + 8) << 4));
  });
}

/// 5-bit codes as Q5_0: blocks of 32 weights along a row, each an fp16 d, 32 bits qh (bit j: the
/// fifth bit of weight j) and 16 bytes of low nibbles as Q4_0's, all of code + 16
/// (weight = (value - 16) d). Exact for groups that are a multiple of 32.
inline std::vector<std::uint8_t> encode_q5_0(const QuantizedTensor& tensor) {
  return detail::encode_blocks_of_32(tensor, GgmlType::Q5_0, 5, [&](long row, long first, std::uint8_t* out) {
    std::uint32_t qh = 0;
    for (long j = 0; j < 32; ++j) {
      const int value = tensor.code(row, first + j) + 16;
      qh |= static_cast<std::uint32_t>(value >> 4) << j;
      out[4 + j % 16] |= static_cast<std::uint8_t>((value & 15) << (j < 16 ? 0 : 4));
    }
    detail::store_little_endian(qh, 4, out);
  });
}

/// 8-bit codes as Q8_0: blocks of 32 weights along a row, each an fp16 d and the 32 codes as
/// int8 (weight = code d). Exact for groups that are a multiple of 32.
inline std::vector<std::uint8_t> encode_q8_0(const QuantizedTensor& tensor) {
  return detail::encode_blocks_of_32(tensor, GgmlType::Q8_0, 8, [&](long row, long first, std::uint8_t* qs) {
    for (long j = 0; j < 32; ++j) qs[j] = static_cast<std::uint8_t>(tensor.code(row, first + j));
  });
}

/// 2-bit and ternary codes as TQ2_0: blocks of 256 weights along a row, 64 bytes of 2-bit values
/// then an fp16 d; byte 32 c + m holds weights 128 c + 32 l + m at bits 2l, and
/// weight = (value - 1) d. With d = -scale and value = 1 - code this is exactly scale * code for
/// codes -2..1. Exact for groups of 256.
inline std::vector<std::uint8_t> encode_tq2_0(const QuantizedTensor& tensor) {
  require(tensor.grid.min_level >= -2 && tensor.grid.max_level <= 1,
          std::string("TQ2_0 holds 2-bit and ternary codes (-2..1); this tensor is on the ") + tensor.grid.name + " grid");
  require(tensor.group_width == 256, "TQ2_0 needs groups of 256 columns, not " + std::to_string(tensor.group_width));
  std::vector<std::uint8_t> bytes(ggml_bytes(GgmlType::TQ2_0, tensor.codes.size()), 0);
  std::uint8_t* block = bytes.data();
  for (long row = 0; row < tensor.rows; ++row)
    for (long first = 0; first < tensor.cols; first += 256, block += 66) {
      for (long i = 0; i < 256; ++i) {
        const auto value = static_cast<std::uint8_t>(1 - tensor.code(row, first + i));
        block[32 * (i / 128) + i % 32] |= static_cast<std::uint8_t>(value << (2 * (i % 128 / 32)));
      }
      detail::store_little_endian(float_to_half_bits(-tensor.scale(row, first)), 2, block + 64);
    }
  return bytes;
}

/// 2-bit and ternary codes as Q2_0: blocks of 64 weights along a row, an fp16 d then 16 bytes,
/// byte j / 4 holding weight j at bits 2 (j % 4), and weight = (value - 1) d. With d = -scale and
/// value = 1 - code this is exactly scale * code for codes -2..1. Exact for groups that are a
/// multiple of 64: each block repeats its group's scale.
inline std::vector<std::uint8_t> encode_q2_0(const QuantizedTensor& tensor) {
  require(tensor.grid.min_level >= -2 && tensor.grid.max_level <= 1,
          std::string("Q2_0 holds 2-bit and ternary codes (-2..1); this tensor is on the ") + tensor.grid.name + " grid");
  require(tensor.group_width % 64 == 0, "Q2_0 needs groups that are a multiple of 64 columns, not " +
                                            std::to_string(tensor.group_width));
  std::vector<std::uint8_t> bytes(ggml_bytes(GgmlType::Q2_0, tensor.codes.size()), 0);
  std::uint8_t* block = bytes.data();
  for (long row = 0; row < tensor.rows; ++row)
    for (long first = 0; first < tensor.cols; first += 64, block += 18) {
      detail::store_little_endian(float_to_half_bits(-tensor.scale(row, first)), 2, block);
      for (long j = 0; j < 64; ++j)
        block[2 + j / 4] |= static_cast<std::uint8_t>((1 - tensor.code(row, first + j)) << (2 * (j % 4)));
    }
  return bytes;
}

/// Collects metadata and tensors, then writes one GGUF file (atomically).
class GgufWriter {
 public:
  using Value = std::variant<std::uint32_t, std::int32_t, float, bool, std::string, std::vector<std::string>,
                             std::vector<std::int32_t>, std::vector<float>>;

  void set(const std::string& key, Value value) {
    for (auto& entry : metadata_)
      if (entry.first == key) {
        entry.second = std::move(value);
        return;
      }
    metadata_.emplace_back(key, std::move(value));
  }

  /// Adds a tensor of row-major `shape` (outermost first, as gsq and PyTorch write it) whose
  /// bytes `data` are in ggml type `type`.
  void add_tensor(const std::string& name, const std::vector<std::int64_t>& shape, GgmlType type,
                  std::vector<std::uint8_t> data) {
    std::size_t count = 1;
    for (std::int64_t extent : shape) {
      require(extent > 0, "GGUF tensor '" + name + "': dimensions must be positive");
      count *= static_cast<std::size_t>(extent);
    }
    require(data.size() == ggml_bytes(type, count),
            "GGUF tensor '" + name + "': " + std::to_string(data.size()) + " bytes for " + std::to_string(count) + " elements");
    tensors_.push_back({name, shape, type, std::move(data)});
  }

  void write(const std::string& path) const {
    std::string head;
    put(head, std::uint32_t{0x46554747});  // "GGUF"
    put(head, std::uint32_t{3});
    put(head, static_cast<std::uint64_t>(tensors_.size()));
    put(head, static_cast<std::uint64_t>(metadata_.size() + 1));
    put_string(head, "general.alignment");
    put(head, std::uint32_t{4});  // UINT32
    put(head, std::uint32_t{alignment});
    for (const auto& [key, value] : metadata_) {
      put_string(head, key);
      std::visit([&](const auto& v) { put_value(head, v); }, value);
    }
    std::uint64_t offset = 0;
    for (const Tensor& tensor : tensors_) {
      put_string(head, tensor.name);
      put(head, static_cast<std::uint32_t>(tensor.shape.size()));
      for (auto extent = tensor.shape.rbegin(); extent != tensor.shape.rend(); ++extent)
        put(head, static_cast<std::uint64_t>(*extent));  // innermost first
      put(head, static_cast<std::uint32_t>(tensor.type));
      put(head, offset);
      offset += padded(tensor.data.size());
    }
    head.resize(padded(head.size()), '\0');
    static const std::uint8_t zeros[alignment] = {};
    std::vector<std::pair<const void*, std::size_t>> chunks{{head.data(), head.size()}};
    for (const Tensor& tensor : tensors_) {
      chunks.push_back({tensor.data.data(), tensor.data.size()});
      chunks.push_back({zeros, padded(tensor.data.size()) - tensor.data.size()});
    }
    write_file_atomically(path, chunks);
  }

 private:
  static constexpr std::uint32_t alignment = 32;
  struct Tensor {
    std::string name;
    std::vector<std::int64_t> shape;
    GgmlType type;
    std::vector<std::uint8_t> data;
  };

  static std::size_t padded(std::size_t size) { return (size + alignment - 1) / alignment * alignment; }

  template <class T>
  static void put(std::string& out, T value) {
    char bytes[sizeof(T)];
    std::memcpy(bytes, &value, sizeof(T));  // GGUF is little-endian, as every host gsq builds for
    out.append(bytes, sizeof(T));
  }
  static void put_string(std::string& out, const std::string& text) {
    put(out, static_cast<std::uint64_t>(text.size()));
    out += text;
  }
  // Value types: UINT32 4, INT32 5, FLOAT32 6, BOOL 7, STRING 8, ARRAY 9.
  static std::uint32_t type_of(std::uint32_t) { return 4; }
  static std::uint32_t type_of(std::int32_t) { return 5; }
  static std::uint32_t type_of(float) { return 6; }
  static std::uint32_t type_of(bool) { return 7; }
  static std::uint32_t type_of(const std::string&) { return 8; }
  static void put_element(std::string& out, const std::string& text) { put_string(out, text); }
  static void put_element(std::string& out, bool value) { put(out, static_cast<std::uint8_t>(value)); }
  template <class T>
  static void put_element(std::string& out, T value) { put(out, value); }
  template <class T>
  static void put_value(std::string& out, const T& value) {
    put(out, type_of(value));
    put_element(out, value);
  }
  template <class T>
  static void put_value(std::string& out, const std::vector<T>& values) {
    put(out, std::uint32_t{9});
    put(out, type_of(T{}));
    put(out, static_cast<std::uint64_t>(values.size()));
    for (const T& value : values) put_element(out, value);
  }

  std::vector<std::pair<std::string, Value>> metadata_;
  std::vector<Tensor> tensors_;
};

}  // namespace gsq
