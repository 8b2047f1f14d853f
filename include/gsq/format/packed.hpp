// gsq/format/packed.hpp -- quantized.safetensors, the format of a quantized model's linears as
// gsq writes and reads it back:
//   "<name>.codes"   U8, row-major codes packed little-endian within bytes as code - min_level
//   "<name>.scales"  F16, rows x groups
// with the grid, bits, group and packing in __metadata__; or, in a llama.cpp K-quant format,
//   "<name>.q2_k" (or q3_k, q4_k)  U8, ggml's blocks as a GGUF holds them.
// A quantized model's directory is described in gsq/export/dequantized_checkpoint.hpp.
#pragma once

#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "gsq/common/error.hpp"
#include "gsq/format/grid_spec.hpp"
#include "gsq/format/k_quant.hpp"
#include "gsq/format/quantized_tensor.hpp"
#include "gsq/io/safetensors.hpp"

namespace gsq {

/// Adds `tensor` to `writer` as "<name>.codes" and "<name>.scales".
inline void add_packed(SafetensorsWriter& writer, const std::string& name, const QuantizedTensor& tensor) {
  std::vector<std::uint8_t> codes = tensor.pack_codes();
  const auto count = static_cast<std::int64_t>(codes.size());
  writer.add_bytes(name + ".codes", Dtype::U8, {count}, std::move(codes));
  writer.add(name + ".scales", {tensor.rows, tensor.groups_per_row()}, tensor.scales, Dtype::F16);
}

/// The metadata that lets read_packed rebuild tensors on `grid` with groups of `group_width`.
inline std::map<std::string, std::string> packed_metadata(const GridSpec& grid, long group_width) {
  return {{"format", "gsq symmetric integer grid, one fp16 scale per group; weight = scale * code"},
          {"grid", grid.name},
          {"min_level", std::to_string(grid.min_level)},
          {"max_level", std::to_string(grid.max_level)},
          {"code_bits", std::to_string(grid.code_bits)},
          {"group_width", std::to_string(group_width)},
          {"codes", "U8, row-major, packed little-endian within bytes as code - min_level"}};
}

/// Reads tensor `name` (a `rows` x `cols` weight) written by add_packed.
inline QuantizedTensor read_packed(const SafetensorsFile& file, const std::string& name, const GridSpec& grid,
                                   long rows, long cols, long group_width) {
  QuantizedTensor tensor{grid, rows, cols, group_width, {}, {}};
  const ByteView codes = file.raw_bytes(name + ".codes");
  tensor.unpack_codes(std::vector<std::uint8_t>(codes.data, codes.data + codes.size));
  const Matrix<float> scales = file.matrix(name + ".scales");
  require(scales.rows == rows && scales.cols == tensor.groups_per_row(),
          file.path() + ": " + name + ".scales does not have one scale per row and group");
  for (std::size_t i = 0; i < scales.values.size(); ++i)
    require(std::isfinite(scales.values[i]), file.path() + ": " + name + ".scales holds " + std::to_string(scales.values[i]) +
                                                 " at row " + std::to_string(static_cast<long>(i) / scales.cols) + ", group " +
                                                 std::to_string(static_cast<long>(i) % scales.cols) + " (not a finite scale)");
  tensor.scales = scales.values;
  return tensor;
}

/// Adds `tensor` to `writer` as "<name>.<format>": ggml's blocks.
inline void add_packed(SafetensorsWriter& writer, const std::string& name, const KQuantTensor& tensor) {
  std::vector<std::uint8_t> blocks = encode_k_quant(tensor);
  const auto count = static_cast<std::int64_t>(blocks.size());
  writer.add_bytes(name + "." + tensor.format->name, Dtype::U8, {count}, std::move(blocks));
}

/// The metadata of a quantized.safetensors whose linears are K-quant blocks.
inline std::map<std::string, std::string> k_quant_metadata() {
  return {{"format", "llama.cpp K-quant blocks, as ggml stores them: <name>.q2_k ... <name>.q6_k, <name>.q4_1, <name>.q5_1 (U8)"}};
}

/// Reads tensor `name` (a `rows` x `cols` weight) written by add_packed in a K-quant format, or
/// nothing when `file` holds no K-quant blocks under that name.
inline std::optional<KQuantTensor> read_k_quant_packed(const SafetensorsFile& file, const std::string& name, long rows,
                                                       long cols) {
  for (const KQuantFormat* format : k_quant_formats()) {
    const std::string blocks = name + "." + format->name;
    if (!file.contains(blocks)) continue;
    const ByteView bytes = file.raw_bytes(blocks);
    return decode_k_quant(std::vector<std::uint8_t>(bytes.data, bytes.data + bytes.size), *format, rows, cols,
                          file.path() + ": " + blocks);
  }
  return std::nullopt;
}

/// A quantized linear layer: in the paper's grid format or in a K-quant format.
using QuantizedLinear = std::variant<QuantizedTensor, KQuantTensor>;

inline void add_packed(SafetensorsWriter& writer, const std::string& name, const QuantizedLinear& tensor) {
  std::visit([&](const auto& held) { add_packed(writer, name, held); }, tensor);
}

/// The weights a quantized tensor stands for, whatever its format.
inline Matrix<float> dequantize(const QuantizedTensor& tensor) { return tensor.dequantize(); }
inline Matrix<float> dequantize(const KQuantTensor& tensor) { return tensor.dequantize(); }
inline Matrix<float> dequantize(const QuantizedLinear& tensor) {
  return std::visit([](const auto& held) { return held.dequantize(); }, tensor);
}

}  // namespace gsq
