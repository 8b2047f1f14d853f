// gsq/format/gguf_file.hpp -- a GGUF file (llama.cpp's format; gsq/format/gguf.hpp writes one)
// read and checked: its metadata, its tensors' names, shapes and ggml types, and their values
// dequantized as ggml does (gsq/format/ggml_types.hpp). Versions 2 and 3; every count, length,
// type and offset is checked against the file before it is used, so a malformed file is an
// error naming what is wrong, never a crash.
//
//   const gsq::GgufFile file = gsq::GgufFile::open("model.gguf");
//   file.metadata().at("general.architecture");            // nlohmann::json values
//   std::vector<float> weight = file.float_values("blk.0.attn_q.weight");
#pragma once

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/common/dtype.hpp"
#include "gsq/common/error.hpp"
#include "gsq/format/ggml_types.hpp"
#include "gsq/io/safetensors.hpp"

namespace gsq {

/// One tensor of a GGUF file: its shape outermost first (as gsq and PyTorch write shapes; the
/// file lists dimensions innermost first), its type, and where its bytes lie in the file.
struct GgufTensor {
  std::string name;
  std::vector<std::int64_t> shape;
  GgmlType type = GgmlType::F32;
  std::size_t begin = 0, bytes = 0;
  std::int64_t elements() const {
    std::int64_t count = 1;
    for (const std::int64_t size : shape) count *= size;
    return count;
  }
};

class GgufFile {
 public:
  /// Maps the file at `path` read-only and checks its header, metadata and tensor table.
  static GgufFile open(const std::string& path) {
    GgufFile file;
    file.path_ = path;
    file.mapping_ = std::make_shared<const detail::MappedFile>(path, "GGUF file");
    file.parse();
    return file;
  }

  const std::string& path() const { return path_; }
  const std::map<std::string, nlohmann::json>& metadata() const { return metadata_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }

  /// A metadata value, or an error naming the missing key.
  const nlohmann::json& value(const std::string& key) const {
    const auto found = metadata_.find(key);
    require(found != metadata_.end(), path_ + ": no metadata \"" + key + "\"");
    return found->second;
  }

  const GgufTensor& tensor(const std::string& name) const {
    const auto found = index_.find(name);
    require(found != index_.end(), path_ + ": no tensor named '" + name + "'");
    return tensors_[found->second];
  }

  /// Tensor `name`'s values, dequantized, row-major in its shape.
  std::vector<float> float_values(const std::string& name) const {
    const GgufTensor& info = tensor(name);
    return dequantize_ggml(info.type, mapping_->bytes() + info.begin, static_cast<std::size_t>(info.elements()),
                           path_ + ": tensor '" + name + "'");
  }

 private:
  /// Reads the file front to back; `at` is the next byte.
  class Cursor {
   public:
    Cursor(const std::uint8_t* bytes, std::size_t size, const std::string& path) : bytes_(bytes), size_(size), path_(path) {}
    std::size_t at() const { return at_; }
    const std::uint8_t* take(std::size_t count, const char* what) {
      require(count <= size_ - at_, path_ + ": the file ends inside " + what + " (at byte " + std::to_string(at_) + ")");
      const std::uint8_t* start = bytes_ + at_;
      at_ += count;
      return start;
    }
    template <class UInt>
    UInt number(const char* what) {
      return detail::load_little_endian<UInt>(take(sizeof(UInt), what));
    }
    std::string text(const char* what) {
      const auto length = number<std::uint64_t>(what);
      require(length <= size_ - at_, path_ + ": a string of " + std::to_string(length) + " bytes in " + what +
                                         " runs past the end of the file");
      const auto* start = reinterpret_cast<const char*>(take(static_cast<std::size_t>(length), what));
      return std::string(start, static_cast<std::size_t>(length));
    }

   private:
    const std::uint8_t* bytes_;
    std::size_t size_, at_ = 0;
    const std::string& path_;
  };

  /// A metadata value of GGUF type `type`.
  nlohmann::json read_value(Cursor& cursor, std::uint32_t type, const std::string& key, int depth) const {
    const char* what = "a metadata value";
    switch (type) {
      case 0: return cursor.number<std::uint8_t>(what);
      case 1: return static_cast<std::int8_t>(cursor.number<std::uint8_t>(what));
      case 2: return cursor.number<std::uint16_t>(what);
      case 3: return static_cast<std::int16_t>(cursor.number<std::uint16_t>(what));
      case 4: return cursor.number<std::uint32_t>(what);
      case 5: return static_cast<std::int32_t>(cursor.number<std::uint32_t>(what));
      case 6: return detail::bits_to_float(cursor.number<std::uint32_t>(what));
      case 7: return cursor.number<std::uint8_t>(what) != 0;
      case 8: return cursor.text(what);
      case 9: {
        require(depth == 0, path_ + ": metadata \"" + key + "\" nests arrays, which GGUF files do not");
        const auto element_type = cursor.number<std::uint32_t>(what);
        const auto count = cursor.number<std::uint64_t>(what);
        require(count <= mapping_->size(), path_ + ": metadata \"" + key + "\" claims " + std::to_string(count) +
                                               " elements, more than the file has bytes");
        nlohmann::json array = nlohmann::json::array();
        for (std::uint64_t i = 0; i < count; ++i) array.push_back(read_value(cursor, element_type, key, depth + 1));
        return array;
      }
      case 10: return cursor.number<std::uint64_t>(what);
      case 11: return static_cast<std::int64_t>(cursor.number<std::uint64_t>(what));
      case 12: {
        const auto bits = cursor.number<std::uint64_t>(what);
        double value = 0;
        std::memcpy(&value, &bits, sizeof value);
        return value;
      }
      default:
        throw Error(path_ + ": metadata \"" + key + "\" has value type " + std::to_string(type) + ", which GGUF does not define");
    }
  }

  void parse() {
    Cursor cursor(mapping_->bytes(), mapping_->size(), path_);
    const std::uint8_t* magic = cursor.take(4, "the header");
    require(std::memcmp(magic, "GGUF", 4) == 0, path_ + ": not a GGUF file (it does not start with \"GGUF\")");
    const auto version = cursor.number<std::uint32_t>("the header");
    require(version == 2 || version == 3, path_ + ": GGUF version " + std::to_string(version) + " (gsq reads versions 2 and 3)");
    const auto tensor_count = cursor.number<std::uint64_t>("the header");
    const auto metadata_count = cursor.number<std::uint64_t>("the header");
    require(tensor_count <= mapping_->size() && metadata_count <= mapping_->size(),
            path_ + ": the header claims more tensors or metadata than the file has bytes");
    for (std::uint64_t i = 0; i < metadata_count; ++i) {
      const std::string key = cursor.text("a metadata key");
      const auto type = cursor.number<std::uint32_t>("a metadata key");
      require(!metadata_.count(key), path_ + ": metadata \"" + key + "\" appears twice");
      metadata_[key] = read_value(cursor, type, key, 0);
    }
    const auto alignment_value = metadata_.find("general.alignment");
    std::uint64_t alignment = 32;
    if (alignment_value != metadata_.end()) {
      require(alignment_value->second.is_number_unsigned() && alignment_value->second.get<std::uint64_t>() > 0 &&
                  alignment_value->second.get<std::uint64_t>() % 8 == 0,
              path_ + ": general.alignment must be a positive multiple of 8");
      alignment = alignment_value->second.get<std::uint64_t>();
    }
    std::vector<std::uint64_t> offsets;
    for (std::uint64_t i = 0; i < tensor_count; ++i) {
      GgufTensor tensor;
      tensor.name = cursor.text("a tensor's name");
      require(!index_.count(tensor.name), path_ + ": tensor '" + tensor.name + "' appears twice");
      const auto dimensions = cursor.number<std::uint32_t>("a tensor's dimensions");
      require(dimensions >= 1 && dimensions <= 4, path_ + ": tensor '" + tensor.name + "' has " + std::to_string(dimensions) +
                                                      " dimensions (ggml tensors have 1 to 4)");
      std::vector<std::int64_t> innermost_first;
      std::uint64_t elements = 1;
      for (std::uint32_t d = 0; d < dimensions; ++d) {
        const auto size = cursor.number<std::uint64_t>("a tensor's dimensions");
        require(size > 0 && size <= mapping_->size() * 8 && elements <= (std::uint64_t(1) << 50) / size,
                path_ + ": tensor '" + tensor.name + "' has a dimension of " + std::to_string(size));
        elements *= size;
        innermost_first.push_back(static_cast<std::int64_t>(size));
      }
      tensor.shape.assign(innermost_first.rbegin(), innermost_first.rend());
      const auto type = cursor.number<std::uint32_t>("a tensor's type");
      const GgmlTypeInfo* info = find_ggml_type(type);
      require(info != nullptr, path_ + ": tensor '" + tensor.name + "' is " + ggml_type_name(type) + " (ggml type " +
                                   std::to_string(type) + "), which gsq does not read (it reads F32, F16, BF16, Q4_0, Q4_1, "
                                   "Q5_0, Q5_1, Q8_0, Q2_K to Q6_K, TQ1_0, TQ2_0 and Q2_0)");
      tensor.type = info->type;
      require(innermost_first[0] % info->block == 0, path_ + ": tensor '" + tensor.name + "' has rows of " +
                                                         std::to_string(innermost_first[0]) + ", not whole " + info->name +
                                                         " blocks of " + std::to_string(info->block));
      tensor.bytes = ggml_bytes(tensor.type, static_cast<std::size_t>(elements));
      offsets.push_back(cursor.number<std::uint64_t>("a tensor's offset"));
      index_[tensor.name] = tensors_.size();
      tensors_.push_back(std::move(tensor));
    }
    const std::uint64_t data = (cursor.at() + alignment - 1) / alignment * alignment;
    for (std::size_t i = 0; i < tensors_.size(); ++i) {
      GgufTensor& tensor = tensors_[i];
      require(offsets[i] % alignment == 0, path_ + ": tensor '" + tensor.name + "' starts off the file's alignment");
      require(data <= mapping_->size() && offsets[i] <= mapping_->size() - data &&
                  tensor.bytes <= mapping_->size() - data - offsets[i],
              path_ + ": tensor '" + tensor.name + "' (" + std::to_string(tensor.bytes) + " bytes at offset " +
                  std::to_string(offsets[i]) + ") runs past the end of the file: is it truncated?");
      tensor.begin = static_cast<std::size_t>(data + offsets[i]);
    }
  }

  std::string path_;
  std::shared_ptr<const detail::MappedFile> mapping_;
  std::map<std::string, nlohmann::json> metadata_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, std::size_t> index_;
};

}  // namespace gsq
