// gsq/io/safetensors.hpp -- reading and writing safetensors files, the checkpoint format of Hugging
// Face models, as single files or sharded checkpoints (element types and their conversions:
// gsq/common/dtype.hpp).
//
// The format: an 8-byte little-endian header length N, N bytes of JSON header
//   {"__metadata__": {"key": "value"}, "name": {"dtype": "BF16", "shape": [768, 256],
//    "data_offsets": [begin, end]}, ...}
// then the data section, which the tensors' byte ranges (relative to its start) cover exactly.
//
//   gsq::SafetensorsFile file = gsq::SafetensorsFile::open("model.safetensors");
//   gsq::Matrix<float> gate = file.matrix("model.layers.0.mlp.gate_proj.weight");
//
//   gsq::Checkpoint checkpoint = gsq::Checkpoint::open("path/to/model_dir");  // sharded or not
//
//   gsq::SafetensorsWriter writer;
//   writer.add("w", gate, gsq::Dtype::BF16);
//   writer.write("out.safetensors");  // atomic: a temporary file renamed into place
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/common/dtype.hpp"
#include "gsq/common/error.hpp"
#include "gsq/common/matrix.hpp"
#include "gsq/io/atomic_file.hpp"
#include "gsq/io/regular_file.hpp"

namespace gsq {

// ---------------------------------------------------------------------------------------------
// Tensors as the library hands them out.

/// Where a tensor lives in a safetensors file, and what it is.
struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<std::int64_t> shape;  // empty for a scalar
  std::uint64_t data_begin = 0;     // byte range [data_begin, data_end) in the data section
  std::uint64_t data_end = 0;

  std::uint64_t byte_size() const { return data_end - data_begin; }
  std::uint64_t element_count() const { return byte_size() / dtype_size(dtype); }
};

/// A tensor of any rank converted to float: row-major `values`, `shape` as in the file.
struct FloatTensor {
  std::vector<std::int64_t> shape;
  std::vector<float> values;
};

/// A read-only view of a tensor's raw bytes (little-endian elements), valid while its file is.
struct ByteView {
  const std::uint8_t* data = nullptr;
  std::size_t size = 0;
};

namespace detail {

/// The largest header gsq parses: real ones are kilobytes; the cap bounds memory on bad input.
constexpr std::uint64_t max_header_bytes = 100u * 1000u * 1000u;
/// JSON parse events (keys, values, container starts and ends) a header may hold: about 16 per
/// tensor, so this admits a quarter million tensors while bounding the parsed tree's memory.
constexpr std::size_t max_header_json_values = std::size_t(1) << 22;
/// A valid header nests three levels (object -> tensor entry -> shape array).
constexpr int max_header_json_depth = 8;

/// The number of elements of `shape`, or nothing if a dimension is negative or the product
/// overflows 64 bits.
inline std::optional<std::uint64_t> checked_element_count(const std::vector<std::int64_t>& shape) {
  std::uint64_t count = 1;
  for (std::int64_t dimension : shape) {
    if (dimension < 0) return std::nullopt;
    const auto extent = static_cast<std::uint64_t>(dimension);
    if (extent != 0 && count > std::numeric_limits<std::uint64_t>::max() / extent) return std::nullopt;
    count *= extent;
  }
  return count;
}

/// The byte size of `count` elements of `dtype`, or nothing on overflow.
inline std::optional<std::uint64_t> checked_byte_size(std::uint64_t count, Dtype dtype) {
  const std::uint64_t size = dtype_size(dtype);
  if (count > std::numeric_limits<std::uint64_t>::max() / size) return std::nullopt;
  return count * size;
}

inline std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

/// A JSON value as text for an error message, cut short: the value may be arbitrary input.
inline std::string json_excerpt(const nlohmann::json& value) {
  std::string text = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return text.size() > 64 ? text.substr(0, 61) + "..." : text;
}

/// Throws unless `text` is valid UTF-8, which JSON (so the header) requires.
inline void require_utf8(const std::string& text, const std::string& what) {
  try {
    (void)nlohmann::json(text).dump();
  } catch (const nlohmann::json::exception&) {
    throw Error(what + " is not valid UTF-8");
  }
}

/// Parses `text` as JSON, rejecting NUL bytes, duplicate object keys (which nlohmann would
/// silently resolve to the last one), nesting deeper than `max_depth`, and more than `max_values` values.
/// `context` prefixes every error message.
inline nlohmann::json parse_json_strictly(const char* first, const char* last, const std::string& context,
                                          int max_depth, std::size_t max_values) {
  std::vector<std::set<std::string>> keys_of_open_objects;
  std::size_t value_count = 0;
  auto check = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using Event = nlohmann::json::parse_event_t;
    if (++value_count > max_values)
      throw Error(context + ": JSON holds more than " + std::to_string(max_values) + " keys and values");
    if ((event == Event::object_start || event == Event::array_start) && depth >= max_depth)
      throw Error(context + ": JSON nests deeper than " + std::to_string(max_depth) + " levels");
    if (event == Event::object_start) keys_of_open_objects.emplace_back();
    if (event == Event::object_end) keys_of_open_objects.pop_back();
    if (event == Event::key) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!keys_of_open_objects.back().insert(key).second)
        throw Error(context + ": duplicate JSON key \"" + key + "\"");
    }
    return true;
  };
  // nlohmann stops at a NUL byte as if the input ended there, which would leave the rest unread.
  if (const void* nul = std::memchr(first, '\0', static_cast<std::size_t>(last - first)))
    throw Error(context + ": not valid JSON (a NUL byte at offset " +
                std::to_string(static_cast<const char*>(nul) - first) + ")");
  try {
    return nlohmann::json::parse(first, last, check);
  } catch (const nlohmann::json::exception& error) {
    throw Error(context + ": not valid JSON (" + error.what() + ")");
  }
}

/// Owns a read-only memory mapping of a whole file.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path, const std::string& what = "safetensors file") {
    const int descriptor = open_regular_file(path, what);
    struct stat status {};
    ::fstat(descriptor, &status);
    size_ = static_cast<std::size_t>(status.st_size);
    if (size_ > 0) {  // mmap rejects length 0; an empty file is reported by the header parser
      void* mapping = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, descriptor, 0);
      const int map_errno = errno;
      ::close(descriptor);
      require(mapping != MAP_FAILED, "cannot map " + what + " '" + path + "': " + std::strerror(map_errno));
      bytes_ = static_cast<const std::uint8_t*>(mapping);
    } else {
      ::close(descriptor);
    }
  }
  ~MappedFile() {
    if (bytes_) ::munmap(const_cast<std::uint8_t*>(bytes_), size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::uint8_t* bytes() const { return bytes_; }
  std::size_t size() const { return size_; }

  /// Drops the whole pages inside bytes [first, first + count) from this process's memory; they
  /// are read from the file again if touched (the mapping is private and never written).
  void release(std::size_t first, std::size_t count) const {
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    const std::size_t begin = (first + page - 1) / page * page, end = (first + count) / page * page;
    if (bytes_ && end > begin) ::madvise(const_cast<std::uint8_t*>(bytes_) + begin, end - begin, MADV_DONTNEED);
  }

 private:
  const std::uint8_t* bytes_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Reading.

/// One safetensors file, memory-mapped (or a buffer in memory), its header parsed and fully
/// validated on construction: every tensor's dtype, shape and byte range agree, and the ranges
/// cover the data section exactly. Cheap to copy (copies share the mapping).
class SafetensorsFile {
 public:
  /// Maps the file at `path` read-only and validates it.
  static SafetensorsFile open(const std::string& path) {
    auto mapping = std::make_shared<const detail::MappedFile>(path);
    SafetensorsFile file(path, mapping, mapping->bytes(), mapping->size());
    file.mapping_ = mapping;
    return file;
  }

  /// Copies `size` bytes of a safetensors file held in memory; `label` names it in errors.
  static SafetensorsFile from_bytes(const void* bytes, std::size_t size, const std::string& label = "<memory>") {
    const auto* first = static_cast<const std::uint8_t*>(bytes);
    return from_bytes(std::vector<std::uint8_t>(first, first + size), label);
  }

  /// Takes a safetensors file's bytes (moved in, not copied: a model converted in memory).
  static SafetensorsFile from_bytes(std::vector<std::uint8_t> bytes, const std::string& label = "<memory>") {
    auto held = std::make_shared<const std::vector<std::uint8_t>>(std::move(bytes));
    return SafetensorsFile(label, held, held->data(), held->size());
  }

  /// The path (or label) the file was opened with.
  const std::string& path() const { return path_; }
  /// The header's "__metadata__" (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  /// Every tensor, in the order of their data.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  bool contains(const std::string& name) const { return index_of_.count(name) != 0; }

  const TensorInfo& info(const std::string& name) const {
    const auto found = index_of_.find(name);
    require(found != index_of_.end(), context() + ": no tensor named '" + name + "'");
    return tensors_[found->second];
  }

  /// Lets the memory-mapped bytes of tensor `name` leave this process's memory once read (a model
  /// read tensor by tensor then keeps only what it converted); they are read from the file again
  /// if needed. Nothing happens for a file held in memory (from_bytes).
  void release_pages(const std::string& name) const {
    const TensorInfo& tensor = info(name);
    if (mapping_) mapping_->release(static_cast<std::size_t>(data_ - mapping_->bytes() + tensor.data_begin), tensor.byte_size());
  }

  /// The tensor's bytes as stored (little-endian elements), without conversion.
  ByteView raw_bytes(const std::string& name) const {
    const TensorInfo& tensor = info(name);
    return {data_ + tensor.data_begin, static_cast<std::size_t>(tensor.byte_size())};
  }

  /// The tensor (F32, F16, BF16 or F64) converted to float, with its shape.
  FloatTensor float_tensor(const std::string& name) const {
    const TensorInfo& tensor = info(name);
    return {tensor.shape, float_values(tensor)};
  }
  std::vector<float> float_values(const std::string& name) const { return float_values(info(name)); }

  /// A 2-D float tensor as a matrix (rows = shape[0]).
  Matrix<float> matrix(const std::string& name) const {
    const TensorInfo& tensor = info(name);
    require(tensor.shape.size() == 2, context(name) + ": shape " + detail::shape_text(tensor.shape) +
                                          " is not 2-D, so it is not a matrix");
    Matrix<float> result;
    result.rows = static_cast<long>(tensor.shape[0]);
    result.cols = static_cast<long>(tensor.shape[1]);
    result.values = float_values(tensor);
    return result;
  }

  /// The tensor (BOOL, U8, I8, U16, I16, U32, I32, I64, or U64 up to 2^63 - 1) as integers.
  std::vector<std::int64_t> integer_values(const std::string& name) const {
    const TensorInfo& tensor = info(name);
    require(is_integer_dtype(tensor.dtype), context(name) + ": dtype " + dtype_name(tensor.dtype) +
                                                " is not an integer type");
    const std::uint8_t* bytes = data_ + tensor.data_begin;
    const std::size_t size = dtype_size(tensor.dtype);
    std::vector<std::int64_t> values(static_cast<std::size_t>(tensor.element_count()));
    for (std::size_t i = 0; i < values.size(); ++i) {
      const std::uint8_t* element = bytes + i * size;
      switch (tensor.dtype) {
        case Dtype::Bool: values[i] = element[0] != 0; break;
        case Dtype::U8: values[i] = element[0]; break;
        case Dtype::I8: values[i] = static_cast<std::int8_t>(element[0]); break;
        case Dtype::U16: values[i] = detail::load_little_endian<std::uint16_t>(element); break;
        case Dtype::I16: values[i] = static_cast<std::int16_t>(detail::load_little_endian<std::uint16_t>(element)); break;
        case Dtype::U32: values[i] = detail::load_little_endian<std::uint32_t>(element); break;
        case Dtype::I32: values[i] = static_cast<std::int32_t>(detail::load_little_endian<std::uint32_t>(element)); break;
        case Dtype::I64: values[i] = static_cast<std::int64_t>(detail::load_little_endian<std::uint64_t>(element)); break;
        default: {  // U64
          const auto value = detail::load_little_endian<std::uint64_t>(element);
          if (value > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
            throw Error(context(name) + ": U64 element " + std::to_string(i) + " exceeds the int64 range");
          values[i] = static_cast<std::int64_t>(value);
        }
      }
    }
    return values;
  }

 private:
  SafetensorsFile(std::string path, std::shared_ptr<const void> owner, const std::uint8_t* bytes, std::size_t size)
      : path_(std::move(path)), owner_(std::move(owner)) {
    parse(bytes, size);
  }

  std::string context() const { return "safetensors file '" + path_ + "'"; }
  std::string context(const std::string& tensor) const { return context() + ": tensor '" + tensor + "'"; }

  void parse(const std::uint8_t* bytes, std::size_t size) {
    require(size >= 8, context() + ": file is " + std::to_string(size) +
                           " bytes long, shorter than the 8-byte header length");
    const auto header_size = detail::load_little_endian<std::uint64_t>(bytes);
    require(header_size <= detail::max_header_bytes,
            context() + ": header length " + std::to_string(header_size) + " exceeds the limit of " +
                std::to_string(detail::max_header_bytes) + " bytes");
    require(header_size <= size - 8, context() + ": header length " + std::to_string(header_size) +
                                         " runs past the end of the file (" + std::to_string(size) + " bytes)");
    const auto* header_text = reinterpret_cast<const char*>(bytes + 8);
    const nlohmann::json header =
        detail::parse_json_strictly(header_text, header_text + header_size, context() + ": header",
                                    detail::max_header_json_depth, detail::max_header_json_values);
    require(header.is_object(), context() + ": header is not a JSON object");

    data_ = bytes + 8 + header_size;
    const std::uint64_t data_size = size - 8 - header_size;
    for (const auto& [key, value] : header.items()) {
      if (key == "__metadata__")
        parse_metadata(value);
      else
        tensors_.push_back(parse_tensor(key, value, data_size));
    }
    check_coverage(data_size);
    for (std::size_t i = 0; i < tensors_.size(); ++i) index_of_[tensors_[i].name] = i;
  }

  void parse_metadata(const nlohmann::json& metadata) {
    require(metadata.is_object(), context() + ": \"__metadata__\" is not a JSON object");
    for (const auto& [key, value] : metadata.items()) {
      require(value.is_string(), context() + ": \"__metadata__\" value of key \"" + key +
                                     "\" is not a string: " + detail::json_excerpt(value));
      metadata_[key] = value.get<std::string>();
    }
  }

  TensorInfo parse_tensor(const std::string& name, const nlohmann::json& entry, std::uint64_t data_size) const {
    const std::string where = context(name);
    require(entry.is_object(), where + ": header entry is not a JSON object");
    for (const char* field : {"dtype", "shape", "data_offsets"})
      require(entry.contains(field), where + ": header entry has no \"" + field + "\"");

    TensorInfo tensor;
    tensor.name = name;
    const nlohmann::json& dtype = entry["dtype"];
    require(dtype.is_string(), where + ": \"dtype\" is not a string: " + detail::json_excerpt(dtype));
    const std::optional<Dtype> known = dtype_from_name(dtype.get<std::string>());
    require(known.has_value(), where + ": unknown dtype " + detail::json_excerpt(dtype));
    tensor.dtype = *known;

    const nlohmann::json& shape = entry["shape"];
    require(shape.is_array(), where + ": \"shape\" is not an array: " + detail::json_excerpt(shape));
    for (const nlohmann::json& dimension : shape) {
      require(dimension.is_number_unsigned() &&
                  dimension.get<std::uint64_t>() <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()),
              where + ": \"shape\" holds " + detail::json_excerpt(dimension) +
                  ", not a dimension (an integer from 0 to 2^63 - 1)");
      tensor.shape.push_back(dimension.get<std::int64_t>());
    }

    const nlohmann::json& offsets = entry["data_offsets"];
    require(offsets.is_array() && offsets.size() == 2 && offsets[0].is_number_unsigned() &&
                offsets[1].is_number_unsigned(),
            where + ": \"data_offsets\" is not an array of two non-negative integers: " + detail::json_excerpt(offsets));
    tensor.data_begin = offsets[0].get<std::uint64_t>();
    tensor.data_end = offsets[1].get<std::uint64_t>();
    const std::string range = "data_offsets [" + std::to_string(tensor.data_begin) + ", " +
                              std::to_string(tensor.data_end) + "]";
    require(tensor.data_begin <= tensor.data_end, where + ": " + range + " begin after they end");
    require(tensor.data_end <= data_size, where + ": " + range + " run past the end of the data section (" +
                                              std::to_string(data_size) + " bytes)");

    const std::optional<std::uint64_t> count = detail::checked_element_count(tensor.shape);
    const std::optional<std::uint64_t> bytes = count ? detail::checked_byte_size(*count, tensor.dtype) : std::nullopt;
    require(bytes.has_value(), where + ": shape " + detail::shape_text(tensor.shape) + " of dtype " +
                                   dtype_name(tensor.dtype) + " has more bytes than fit in 64 bits");
    require(*bytes == tensor.byte_size(), where + ": shape " + detail::shape_text(tensor.shape) + " of dtype " +
                                              dtype_name(tensor.dtype) + " needs " + std::to_string(*bytes) +
                                              " bytes but " + range + " span " +
                                              std::to_string(tensor.byte_size()));
    return tensor;
  }

  /// The tensors' byte ranges must tile the data section: no overlap, no hole, nothing after.
  void check_coverage(std::uint64_t data_size) {
    std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
      return std::tie(a.data_begin, a.data_end, a.name) < std::tie(b.data_begin, b.data_end, b.name);
    });
    std::uint64_t covered = 0;  // the data section's bytes [0, covered) belong to tensors seen so far
    for (std::size_t i = 0; i < tensors_.size(); ++i) {
      const TensorInfo& tensor = tensors_[i];
      if (tensor.data_begin < covered)
        throw Error(context() + ": tensors '" + tensors_[i - 1].name + "' and '" + tensor.name +
                    "' overlap in the data section (at byte " + std::to_string(tensor.data_begin) + ")");
      if (tensor.data_begin > covered)
        throw Error(context() + ": bytes [" + std::to_string(covered) + ", " + std::to_string(tensor.data_begin) +
                    ") of the data section belong to no tensor (a hole before tensor '" + tensor.name + "')");
      covered = tensor.data_end;
    }
    require(covered == data_size, context() + ": the last " + std::to_string(data_size - covered) +
                                      " bytes of the data section belong to no tensor");
  }

  std::vector<float> float_values(const TensorInfo& tensor) const {
    require(is_float_dtype(tensor.dtype), context(tensor.name) + ": dtype " + dtype_name(tensor.dtype) +
                                              " is not a float type (F16, BF16, F32, F64)");
    const std::uint8_t* bytes = data_ + tensor.data_begin;
    std::vector<float> values(static_cast<std::size_t>(tensor.element_count()));
    for (std::size_t i = 0; i < values.size(); ++i) {
      switch (tensor.dtype) {
        case Dtype::F16: values[i] = half_bits_to_float(detail::load_little_endian<std::uint16_t>(bytes + 2 * i)); break;
        case Dtype::BF16: values[i] = bfloat16_bits_to_float(detail::load_little_endian<std::uint16_t>(bytes + 2 * i)); break;
        case Dtype::F32: values[i] = detail::bits_to_float(detail::load_little_endian<std::uint32_t>(bytes + 4 * i)); break;
        default: {  // F64
          const auto bits = detail::load_little_endian<std::uint64_t>(bytes + 8 * i);
          double value;
          std::memcpy(&value, &bits, sizeof value);
          values[i] = static_cast<float>(value);
        }
      }
    }
    return values;
  }

  std::string path_;
  std::shared_ptr<const void> owner_;  // keeps the mapping or buffer behind data_ alive
  std::shared_ptr<const detail::MappedFile> mapping_;  // the mapping, for a file opened from disk
  const std::uint8_t* data_ = nullptr;  // start of the data section
  std::map<std::string, std::string> metadata_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t> index_of_;
};

// ---------------------------------------------------------------------------------------------
// Sharded checkpoints.

/// A model's tensors across one or more safetensors files: a Hugging Face sharded checkpoint
/// (`model.safetensors.index.json` naming each tensor's shard) or a single `model.safetensors`.
/// Every tensor the index lists must be in its shard, and every shard tensor must be listed there.
class Checkpoint {
 public:
  static constexpr const char* index_file_name = "model.safetensors.index.json";
  static constexpr const char* single_file_name = "model.safetensors";

  /// Opens a model directory (its index if it has one, else its model.safetensors), an index
  /// file (*.json) or a single safetensors file.
  static Checkpoint open(const std::string& path) {
    struct stat status {};
    if (::stat(path.c_str(), &status) != 0)
      throw Error("cannot open checkpoint '" + path + "': " + std::strerror(errno));
    if (S_ISDIR(status.st_mode)) {
      const std::string index = path + "/" + index_file_name;
      if (::stat(index.c_str(), &status) == 0) return open_index(index);
      const std::string single = path + "/" + single_file_name;
      require(::stat(single.c_str(), &status) == 0, "checkpoint directory '" + path + "' holds neither " +
                                                        index_file_name + " nor " + single_file_name);
      return open_file(single);
    }
    const std::string json_suffix = ".json";
    if (path.size() >= json_suffix.size() && path.compare(path.size() - json_suffix.size(), json_suffix.size(), json_suffix) == 0)
      return open_index(path);
    return open_file(path);
  }

  /// A checkpoint of one safetensors file.
  static Checkpoint open_file(const std::string& path) {
    Checkpoint checkpoint;
    checkpoint.source_ = path;
    checkpoint.add_shard(SafetensorsFile::open(path));
    return checkpoint;
  }

  /// A checkpoint of one safetensors file already open (one held in memory: a model converted from
  /// another format); `source` names it.
  static Checkpoint of_file(SafetensorsFile file, std::string source) {
    Checkpoint checkpoint;
    checkpoint.source_ = std::move(source);
    checkpoint.add_shard(std::move(file));
    return checkpoint;
  }

  /// The directory, index or file the checkpoint was opened from.
  const std::string& source() const { return source_; }
  /// The index's "metadata" object (an empty object without an index).
  const nlohmann::json& index_metadata() const { return index_metadata_; }
  const std::vector<SafetensorsFile>& shards() const { return shards_; }

  /// All tensor names, sorted.
  std::vector<std::string> tensor_names() const {
    std::vector<std::string> names;
    for (const auto& entry : shard_of_) names.push_back(entry.first);
    return names;
  }
  bool contains(const std::string& name) const { return shard_of_.count(name) != 0; }

  /// The shard holding tensor `name`: read the tensor through it (info, matrix, float_tensor, ...).
  const SafetensorsFile& file_of(const std::string& name) const {
    const auto found = shard_of_.find(name);
    require(found != shard_of_.end(), "checkpoint '" + source_ + "': no tensor named '" + name + "'");
    return shards_[found->second];
  }
  const TensorInfo& info(const std::string& name) const { return file_of(name).info(name); }
  Matrix<float> matrix(const std::string& name) const { return file_of(name).matrix(name); }
  FloatTensor float_tensor(const std::string& name) const { return file_of(name).float_tensor(name); }

 private:
  static Checkpoint open_index(const std::string& index_path) {
    const std::string context = "safetensors index '" + index_path + "'";
    const std::string text = read_regular_file(index_path, "safetensors index", detail::max_header_bytes);
    const nlohmann::json index = detail::parse_json_strictly(text.data(), text.data() + text.size(), context, 16,
                                                             detail::max_header_json_values);
    require(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(),
            context + ": not a JSON object with a \"weight_map\" object");

    Checkpoint checkpoint;
    checkpoint.source_ = index_path;
    if (index.contains("metadata")) {
      require(index["metadata"].is_object(), context + ": \"metadata\" is not a JSON object");
      checkpoint.index_metadata_ = index["metadata"];
    }
    std::map<std::string, std::string> shard_of_tensor;
    for (const auto& [tensor, shard] : index["weight_map"].items()) {
      require(shard.is_string(), context + ": tensor '" + tensor + "' maps to " + detail::json_excerpt(shard) +
                                     ", not a shard file name");
      const std::string& file_name = shard.get_ref<const std::string&>();
      // Shards sit beside the index; a path could reach outside the model directory.
      require(!file_name.empty() && file_name.find('/') == std::string::npos && file_name != "." && file_name != "..",
              context + ": tensor '" + tensor + "' maps to '" + file_name + "', not a plain file name");
      shard_of_tensor[tensor] = file_name;
    }

    const std::size_t slash = index_path.rfind('/');
    const std::string directory = slash == std::string::npos ? "." : index_path.substr(0, slash);
    std::set<std::string> shard_names;
    for (const auto& entry : shard_of_tensor) shard_names.insert(entry.second);
    for (const std::string& shard_name : shard_names) {
      const std::string shard_path = directory + "/" + shard_name;
      require(::access(shard_path.c_str(), F_OK) == 0,
              context + ": shard '" + shard_name + "' does not exist (" + shard_path + ")");
      const SafetensorsFile& shard = checkpoint.add_shard(SafetensorsFile::open(shard_path));
      for (const TensorInfo& tensor : shard.tensors()) {
        const auto listed = shard_of_tensor.find(tensor.name);
        if (listed == shard_of_tensor.end() || listed->second != shard_name)
          throw Error(context + ": shard '" + shard_name + "' holds tensor '" + tensor.name + "', which the index " +
                      (listed == shard_of_tensor.end() ? "does not list" : "maps to '" + listed->second + "'"));
      }
    }
    for (const auto& [tensor, shard_name] : shard_of_tensor)
      if (!checkpoint.contains(tensor))
        throw Error(context + ": tensor '" + tensor + "' is missing from its shard '" + shard_name + "'");
    return checkpoint;
  }

  const SafetensorsFile& add_shard(SafetensorsFile shard) {
    shards_.push_back(std::move(shard));
    for (const TensorInfo& tensor : shards_.back().tensors()) shard_of_[tensor.name] = shards_.size() - 1;
    return shards_.back();
  }

  std::string source_;
  nlohmann::json index_metadata_ = nlohmann::json::object();
  std::vector<SafetensorsFile> shards_;
  std::map<std::string, std::size_t> shard_of_;
};

// ---------------------------------------------------------------------------------------------
// Writing.


/// Collects named tensors and metadata, then writes them as one safetensors file. Each add()
/// validates and converts at once, so a bad tensor is reported before any file is touched.
///
/// Layout: the header is padded with spaces so the data section starts 8-byte aligned, and the
/// tensors are ordered by the largest power of two (up to 8) dividing their byte size, so each
/// starts at an offset aligned to its element size, and at 8 bytes when its size is a multiple
/// of 8. (Padding between tensors would align all of them, but the format forbids holes.)
class SafetensorsWriter {
 public:
  void set_metadata(const std::string& key, const std::string& value) {
    detail::require_utf8(key, "safetensors writer: metadata key '" + key + "'");
    detail::require_utf8(value, "safetensors writer: metadata value of key '" + key + "'");
    metadata_[key] = value;
  }

  /// Adds float values (row-major, `shape`), stored as `dtype` (F32, F16 or BF16, rounded to
  /// nearest even).
  void add(const std::string& name, const std::vector<std::int64_t>& shape, const std::vector<float>& values,
           Dtype dtype = Dtype::F32) {
    require(dtype == Dtype::F32 || dtype == Dtype::F16 || dtype == Dtype::BF16,
            "safetensors writer: tensor '" + name + "': dtype " + dtype_name(dtype) +
                " is not a float type the writer produces (F32, F16, BF16)");
    std::vector<std::uint8_t>& bytes = new_entry(name, dtype, shape, values.size());
    for (std::size_t i = 0; i < values.size(); ++i) {
      if (dtype == Dtype::F32)
        detail::store_little_endian(detail::float_to_bits(values[i]), 4, &bytes[4 * i]);
      else if (dtype == Dtype::F16)
        detail::store_little_endian(float_to_half_bits(values[i]), 2, &bytes[2 * i]);
      else
        detail::store_little_endian(float_to_bfloat16_bits(values[i]), 2, &bytes[2 * i]);
    }
  }

  void add(const std::string& name, const Matrix<float>& matrix, Dtype dtype = Dtype::F32) {
    add(name, {matrix.rows, matrix.cols}, matrix.values, dtype);
  }

  /// Adds integer values stored as `dtype` (BOOL, U8, I8, U16, I16, U32, I32, U64, I64); a
  /// value outside the dtype's range is an error.
  void add_integers(const std::string& name, Dtype dtype, const std::vector<std::int64_t>& shape,
                    const std::vector<std::int64_t>& values) {
    require(is_integer_dtype(dtype), "safetensors writer: tensor '" + name + "': dtype " + dtype_name(dtype) +
                                         " is not an integer type");
    const auto [lowest, highest] = integer_range(dtype);
    for (std::size_t i = 0; i < values.size(); ++i)
      if (values[i] < lowest || values[i] > highest)
        throw Error("safetensors writer: tensor '" + name + "': value " + std::to_string(values[i]) +
                    " at element " + std::to_string(i) + " does not fit " + dtype_name(dtype));
    std::vector<std::uint8_t>& bytes = new_entry(name, dtype, shape, values.size());
    const std::size_t size = dtype_size(dtype);
    for (std::size_t i = 0; i < values.size(); ++i)
      detail::store_little_endian(static_cast<std::uint64_t>(values[i]), size, &bytes[i * size]);
  }

  /// Adds bytes already in the file's element encoding (little-endian), of any dtype: packed
  /// codes as U8, for example.
  void add_bytes(const std::string& name, Dtype dtype, const std::vector<std::int64_t>& shape,
                 std::vector<std::uint8_t> data) {  // by value: a temporary moves in, not copied
    require(data.size() % dtype_size(dtype) == 0, "safetensors writer: tensor '" + name + "': " +
                                                      std::to_string(data.size()) + " bytes are not whole " +
                                                      dtype_name(dtype) + " elements");
    new_entry(name, dtype, shape, data.size() / dtype_size(dtype)) = std::move(data);
  }

  /// Adds a tensor whose bytes (in the file's element encoding, `dtype`, `shape`) `produce` makes
  /// only when the file is written: a file larger than memory is written one tensor at a time.
  void add_deferred(const std::string& name, Dtype dtype, const std::vector<std::int64_t>& shape,
                    std::function<std::vector<std::uint8_t>()> produce) {
    const std::optional<std::uint64_t> count = detail::checked_element_count(shape);
    require(count.has_value(), "safetensors writer: tensor '" + name + "': shape " + detail::shape_text(shape) +
                                   " has a negative dimension or too many elements");
    new_entry(name, dtype, shape, static_cast<std::size_t>(*count), false);
    entries_.back().produce = std::move(produce);
  }

  /// The whole file, in memory.
  std::vector<std::uint8_t> to_bytes() const {
    std::vector<std::uint8_t> file;
    stream([&](const void* data, std::size_t size) {
      const auto* first = static_cast<const std::uint8_t*>(data);
      file.insert(file.end(), first, first + size);
    });
    return file;
  }

  /// Writes the file atomically (see write_file_atomically), one tensor in memory at a time.
  void write(const std::string& path) const {
    write_file_atomically(path, [&](const ByteSink& sink) { stream(sink); });
  }

  /// The file's bytes in order, into `sink`: the header, then each tensor (a deferred one made,
  /// written and dropped in turn).
  void stream(const ByteSink& sink) const {
    const std::string text = header();
    sink(text.data(), text.size());
    for (const Entry* entry : layout()) {
      if (!entry->produce) {
        sink(entry->bytes.data(), entry->bytes.size());
        continue;
      }
      const std::vector<std::uint8_t> bytes = entry->produce();
      require(bytes.size() == entry->size, "safetensors writer: tensor '" + entry->name + "': " +
                                               std::to_string(bytes.size()) + " bytes made for " +
                                               std::to_string(entry->size) + " declared");
      sink(bytes.data(), bytes.size());
    }
  }

 private:
  struct Entry {
    std::string name;
    Dtype dtype;
    std::vector<std::int64_t> shape;
    std::size_t size = 0;                                // bytes in the file
    std::vector<std::uint8_t> bytes;                     // empty for a deferred entry
    std::function<std::vector<std::uint8_t>()> produce;  // a deferred entry's bytes, made when written
  };

  static std::pair<std::int64_t, std::int64_t> integer_range(Dtype dtype) {
    switch (dtype) {
      case Dtype::Bool: return {0, 1};
      case Dtype::U8: return {0, 255};
      case Dtype::I8: return {-128, 127};
      case Dtype::U16: return {0, 65535};
      case Dtype::I16: return {-32768, 32767};
      case Dtype::U32: return {0, 4294967295};
      case Dtype::I32: return {std::numeric_limits<std::int32_t>::min(), std::numeric_limits<std::int32_t>::max()};
      case Dtype::U64: return {0, std::numeric_limits<std::int64_t>::max()};
      default: return {std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::max()};
    }
  }

  /// Checks the name and that `shape` holds `count` elements, then returns the new entry's
  /// zeroed byte buffer to fill (left empty without `allocate`).
  std::vector<std::uint8_t>& new_entry(const std::string& name, Dtype dtype, const std::vector<std::int64_t>& shape,
                                       std::size_t count, bool allocate = true) {
    const std::string where = "safetensors writer: tensor '" + name + "'";
    require(name != "__metadata__", where + ": the name is reserved for the metadata");
    detail::require_utf8(name, where + ": the name");
    for (const Entry& entry : entries_) require(entry.name != name, where + ": added twice");
    const std::optional<std::uint64_t> expected = detail::checked_element_count(shape);
    require(expected.has_value(), where + ": shape " + detail::shape_text(shape) +
                                      " has a negative dimension or too many elements");
    require(*expected == count, where + ": shape " + detail::shape_text(shape) + " holds " +
                                    std::to_string(*expected) + " elements but " + std::to_string(count) +
                                    " were given");
    const std::size_t size = count * dtype_size(dtype);
    entries_.push_back({name, dtype, shape, size, std::vector<std::uint8_t>(allocate ? size : 0), {}});
    return entries_.back().bytes;
  }

  /// The entries in layout order (see the class comment).
  std::vector<const Entry*> layout() const {
    auto alignment = [](const Entry& entry) {
      std::size_t power = 1;
      while (power < 8 && entry.size % (2 * power) == 0) power *= 2;
      return power;
    };
    std::vector<const Entry*> order;
    for (const Entry& entry : entries_) order.push_back(&entry);
    std::stable_sort(order.begin(), order.end(),
                     [&](const Entry* a, const Entry* b) { return alignment(*a) > alignment(*b); });
    return order;
  }

  /// The 8-byte length and the JSON header, padded with spaces to a multiple of 8 bytes.
  std::string header() const {
    nlohmann::ordered_json json = nlohmann::ordered_json::object();
    if (!metadata_.empty()) json["__metadata__"] = metadata_;
    std::uint64_t offset = 0;
    for (const Entry* entry : layout()) {
      json[entry->name] = {{"dtype", dtype_name(entry->dtype)},
                           {"shape", entry->shape},
                           {"data_offsets", {offset, offset + entry->size}}};
      offset += entry->size;
    }
    std::string text = json.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
    text.append((8 - text.size() % 8) % 8, ' ');
    std::uint8_t length[8];
    detail::store_little_endian(text.size(), 8, length);
    return std::string(reinterpret_cast<const char*>(length), 8) + text;
  }



  std::map<std::string, std::string> metadata_;
  std::vector<Entry> entries_;
};

}  // namespace gsq
