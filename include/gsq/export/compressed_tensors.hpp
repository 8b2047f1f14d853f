// gsq/export/compressed_tensors.hpp -- the compressed-tensors "pack-quantized" checkpoint that
// transformers (with the compressed-tensors package) and vLLM load. Per quantized linear P:
//   P.weight_packed  I32 [out, ceil(in b / 32)]  each row a bit stream of code + 2^(b-1)
//                                                (gsq/export/bit_stream.hpp)
//   P.weight_scale   F16 [out, in / group]       the learned fp16 scales
//   P.weight_shape   I64 [2] = {out, in}
// and no zero point (symmetric). A Mixture-of-Experts model keeps its checkpoint's per-expert
// linears (experts.<e>.w1 ...), which vLLM's fused-MoE loader and transformers' fused experts
// read, and lists its full-precision routers under "ignore". The dense 3-bit stream is
// compressed-tensors 0.18's layout (earlier releases packed ten 3-bit values per word): read it
// with 0.18 or later. Ternary codes are written as 2-bit codes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/export/bit_stream.hpp"
#include "gsq/export/hugging_face.hpp"

namespace gsq {

/// The compressed-tensors pack-quantized form of one linear's codes: [rows, words per row].
inline std::vector<std::int32_t> pack_quantized_codes(const QuantizedTensor& tensor) {
  const int bits = tensor.grid.code_bits;
  const std::size_t cols = static_cast<std::size_t>(tensor.cols), words = bit_stream_words(cols, bits);
  std::vector<std::int32_t> packed(static_cast<std::size_t>(tensor.rows) * words);
  for (long row = 0; row < tensor.rows; ++row)
    pack_bit_stream(cols, bits, [&](std::size_t col) { return offset_code(tensor.code(row, static_cast<long>(col)), bits); },
                    packed.data() + static_cast<std::size_t>(row) * words);
  return packed;
}

/// What the checkpoint keeps in full precision: the head and a mixture's routers, by module name
/// (transformers and vLLM would otherwise expect every Linear to be quantized).
inline nlohmann::json compressed_tensors_ignore(const LlamaConfig& config) {
  nlohmann::json ignore = {"lm_head"};
  for (long layer = 0; layer < config.layers; ++layer)
    for (const LinearShape& router : config.routers(layer))
      ignore.push_back("model.layers." + std::to_string(layer) + "." + router.name);
  return ignore;
}

inline nlohmann::json compressed_tensors_config(const QuantizedModel& model) {
  const bool channel = model.per_channel();
  nlohmann::json weights = {{"num_bits", model.grid().code_bits}, {"type", "int"}, {"symmetric", true},
                            {"strategy", channel ? "channel" : "group"}, {"group_size", nullptr},
                            {"dynamic", false}, {"actorder", nullptr}, {"observer", "minmax"}};
  if (!channel) weights["group_size"] = model.group_width();
  return {{"quant_method", "compressed-tensors"},
          {"format", "pack-quantized"},
          {"quantization_status", "compressed"},
          {"config_groups", {{"group_0", {{"targets", {"Linear"}}, {"weights", weights}, {"input_activations", nullptr},
                                          {"output_activations", nullptr}, {"format", "pack-quantized"}}}}},
          {"ignore", compressed_tensors_ignore(model.config)},
          {"kv_cache_scheme", nullptr},
          {"version", "0.18.0"}};
}

/// Writes `model` as a compressed-tensors pack-quantized checkpoint in the new directory `directory`.
inline void write_compressed_tensors(const QuantizedModel& model, const std::string& directory) {
  write_quantized_checkpoint(model, directory, compressed_tensors_config(model),
                             [](SafetensorsWriter& writer, const std::string& prefix, const QuantizedTensor& tensor) {
                               const std::int64_t words = static_cast<std::int64_t>(
                                   bit_stream_words(static_cast<std::size_t>(tensor.cols), tensor.grid.code_bits));
                               add_int32(writer, prefix + ".weight_packed", {tensor.rows, words}, pack_quantized_codes(tensor));
                               writer.add(prefix + ".weight_scale", {tensor.rows, tensor.groups_per_row()}, tensor.scales, Dtype::F16);
                               writer.add_integers(prefix + ".weight_shape", Dtype::I64, {2}, {tensor.rows, tensor.cols});
                             });
}

}  // namespace gsq
