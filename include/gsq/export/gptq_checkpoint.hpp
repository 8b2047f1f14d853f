// gsq/export/gptq_checkpoint.hpp -- the GPTQ checkpoint format (checkpoint_format "gptq", the v1 zero-point
// convention) that transformers (through GPTQModel or optimum) and vLLM load. Per quantized
// linear P, with out x in weights, b bits and groups of g input columns:
//   P.qweight  I32 [in b / 32, out]      column j: the bit stream (gsq/export/bit_stream.hpp) of
//                                        code + 2^(b-1) down the inputs (3 bits: 10|1|10|1|10)
//   P.qzeros   I32 [in / g, out b / 32]  each row the bit stream of zero - 1 = 2^(b-1) - 1 along
//                                        the outputs: v1 stores the zero point less one, and
//                                        readers add the one back (a v2 reader would not)
//   P.scales   F16 [in / g, out]
//   P.g_idx    I32 [in] = column / g     no activation reordering (desc_act false)
// so that weight = scale (q - zero) = scale code. Ternary codes are written as 2-bit codes.
#pragma once

#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/export/bit_stream.hpp"
#include "gsq/export/hugging_face.hpp"

namespace gsq {

/// Why `model` cannot be written as GPTQ, or empty: the packed dimensions must fill whole words.
inline std::string gptq_unsupported(const QuantizedModel& model) {
  if (!model.hugging_face_export_missing().empty()) return model.hugging_face_export_missing();
  if (model.mixed())
    return "its linears differ in grid or group size, and GPTQ checkpoints of a mix (GPTQModel's per-module \"dynamic\" "
           "overrides) are not checked against their loaders: export compressed-tensors";
  if (model.config.mixture.experts > 0 || model.config.latent_attention())
    return model.config.architecture + " has experts or latent attention, and GPTQ checkpoints of such models are not "
                                       "checked against their loaders: export compressed-tensors or gguf";
  const int bits = model.grid().code_bits;
  for (const auto& [name, tensor] : model.linears)
    if ((tensor.cols * bits) % 32 != 0 || (tensor.rows * bits) % 32 != 0)
      return name + " is " + std::to_string(tensor.rows) + " x " + std::to_string(tensor.cols) +
             ": GPTQ packs " + std::to_string(bits) + "-bit values into 32-bit words along both dimensions, which needs "
             "both to be multiples of " + std::to_string(32 / std::gcd(32, bits));
  return {};
}

inline nlohmann::json gptq_config(const QuantizedModel& model) {
  return {{"quant_method", "gptq"}, {"bits", model.grid().code_bits},
          {"group_size", model.per_channel() ? -1 : model.group_width()},
          {"desc_act", false}, {"sym", true}, {"static_groups", false}, {"true_sequential", true},
          {"lm_head", false}, {"damp_percent", 0.01}, {"checkpoint_format", "gptq"},
          {"meta", {{"quantizer", {"gsq"}}}}};
}

/// Adds P.qweight, P.qzeros, P.scales and P.g_idx for one linear (`prefix` = P).
inline void add_gptq_linear(SafetensorsWriter& writer, const std::string& prefix, const QuantizedTensor& tensor) {
  const int bits = tensor.grid.code_bits;
  const std::size_t out = static_cast<std::size_t>(tensor.rows), in = static_cast<std::size_t>(tensor.cols);
  const std::size_t groups = static_cast<std::size_t>(tensor.groups_per_row());
  std::vector<std::int32_t> qweight(bit_stream_words(in, bits) * out);
  for (std::size_t j = 0; j < out; ++j)
    pack_bit_stream(in, bits, [&](std::size_t i) { return offset_code(tensor.code(static_cast<long>(j), static_cast<long>(i)), bits); },
                    qweight.data() + j, out);
  const std::size_t zero_words = bit_stream_words(out, bits);
  std::vector<std::int32_t> qzeros(groups * zero_words);
  const std::uint32_t stored_zero = (1u << (bits - 1)) - 1;
  for (std::size_t g = 0; g < groups; ++g)
    pack_bit_stream(out, bits, [&](std::size_t) { return stored_zero; }, qzeros.data() + g * zero_words);
  std::vector<float> scales(groups * out);
  std::vector<std::int32_t> group_index(in);
  for (std::size_t j = 0; j < out; ++j)
    for (std::size_t g = 0; g < groups; ++g) scales[g * out + j] = tensor.scales[j * groups + g];
  for (std::size_t i = 0; i < in; ++i) group_index[i] = static_cast<std::int32_t>(i / static_cast<std::size_t>(tensor.group_width));
  const auto extent = [](std::size_t n) { return static_cast<std::int64_t>(n); };
  add_int32(writer, prefix + ".qweight", {extent(bit_stream_words(in, bits)), extent(out)}, qweight);
  add_int32(writer, prefix + ".qzeros", {extent(groups), extent(zero_words)}, qzeros);
  writer.add(prefix + ".scales", {extent(groups), extent(out)}, scales, Dtype::F16);
  add_int32(writer, prefix + ".g_idx", {extent(in)}, group_index);
}

/// Writes `model` as a GPTQ checkpoint (with quantize_config.json) in the new directory `directory`.
inline void write_gptq(const QuantizedModel& model, const std::string& directory) {
  const std::string unsupported = gptq_unsupported(model);
  require(unsupported.empty(), "GPTQ export: " + unsupported);
  const nlohmann::json config = gptq_config(model);
  write_quantized_checkpoint(model, directory, config, add_gptq_linear, {{"quantize_config.json", config}});
}

}  // namespace gsq
