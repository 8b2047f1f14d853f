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
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/export/bit_stream.hpp"
#include "gsq/export/hugging_face.hpp"
#include "gsq/policy/grid_scheme.hpp"

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

/// Why `model` cannot be written as compressed-tensors, or empty.
inline std::string compressed_tensors_unsupported(const QuantizedModel& model) {
  if (!model.hugging_face_export_missing().empty()) return model.hugging_face_export_missing();
  for (const auto& [name, tensor] : model.linears)
    if (tensor.grid.code_bits > 4 && tensor.grid.code_bits != 8)
      return name + " is in " + tensor.grid.name + ", and gsq writes compressed-tensors checkpoints of 2, 3, 4 and 8-bit codes";
  return {};
}

/// The "weights" quantization arguments of linears in `scheme`.
inline nlohmann::json compressed_tensors_weights(const GridScheme& scheme) {
  const bool channel = scheme.group_size == 0;
  return {{"num_bits", scheme.grid.code_bits}, {"type", "int"}, {"symmetric", true}, {"strategy", channel ? "channel" : "group"},
          {"group_size", channel ? nlohmann::json(nullptr) : nlohmann::json(scheme.group_size)},
          {"dynamic", false}, {"actorder", nullptr}, {"observer", "minmax"}};
}

/// One config group: `targets` (module names, or "Linear") in `scheme`.
inline nlohmann::json compressed_tensors_group(const nlohmann::json& targets, const GridScheme& scheme) {
  return {{"targets", targets}, {"weights", compressed_tensors_weights(scheme)}, {"input_activations", nullptr},
          {"output_activations", nullptr}, {"format", "pack-quantized"}};
}

/// The quantization_config: one group targeting every Linear, or for a mix one group per scheme
/// naming its modules (fused modules, q/k/v and gate/up, share a scheme in gsq's mixes, as vLLM
/// requires).
inline nlohmann::json compressed_tensors_config(const QuantizedModel& model) {
  nlohmann::json groups = nlohmann::json::object();
  if (!model.mixed()) {
    groups["group_0"] = compressed_tensors_group({"Linear"}, {model.grid(), model.per_channel() ? 0 : static_cast<int>(model.group_width())});
  } else {
    std::map<std::string, std::pair<GridScheme, nlohmann::json>> by_scheme;  // by name: the groups in a fixed order
    const std::string suffix = ".weight";
    for (const auto& [name, tensor] : model.linears) {
      const GridScheme scheme = grid_scheme_of(tensor);
      auto& group = by_scheme.try_emplace(scheme.name(), scheme, nlohmann::json::array()).first->second;
      group.second.push_back(name.substr(0, name.size() - suffix.size()));
    }
    for (const auto& [scheme_name, group] : by_scheme)
      groups["group_" + std::to_string(groups.size())] = compressed_tensors_group(group.second, group.first);
  }
  return {{"quant_method", "compressed-tensors"},
          {"format", "pack-quantized"},
          {"quantization_status", "compressed"},
          {"config_groups", groups},
          {"ignore", compressed_tensors_ignore(model.config)},
          {"kv_cache_scheme", nullptr},
          {"version", "0.18.0"}};
}

/// Writes `model` as a compressed-tensors pack-quantized checkpoint in the new directory `directory`.
inline void write_compressed_tensors(const QuantizedModel& model, const std::string& directory) {
  const std::string unsupported = compressed_tensors_unsupported(model);
  require(unsupported.empty(), "compressed-tensors export: " + unsupported);
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
