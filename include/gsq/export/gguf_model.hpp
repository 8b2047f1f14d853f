// gsq/export/gguf_model.hpp -- a whole model as one GGUF file that llama.cpp runs: the
// hyper-parameters from config.json and the tensors under llama.cpp's names, laid out as its
// converter lays them out, for every architecture gsq reads back (gsq/export/gguf_architecture.hpp),
// the tokenizer from tokenizer.json (gsq/export/gguf_tokenizer.hpp); the container and the block
// encodings are gsq/format/gguf.hpp. Quantized linears are stored exactly (exact_ggml_type: 4-,
// 5- and 8-bit codes with groups a multiple of 32 as Q4_0, Q5_0, Q8_0; 2-bit and ternary codes
// with groups of 256 as TQ2_0, with other groups a multiple of 64 as Q2_0), K-quant linears as
// their own type (Q2_K, Q3_K, Q4_K), each by gguf_tensor_data. Everything else keeps its stored
// precision (F32, F16 or BF16; vectors F32).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/export/gguf_architecture.hpp"
#include "gsq/export/gguf_tokenizer.hpp"
#include "gsq/export/quantized_model.hpp"
#include "gsq/format/gguf.hpp"
#include "gsq/model/gguf_layout.hpp"
#include "gsq/model/rotary.hpp"

namespace gsq {

/// The ggml type that holds `tensor` exactly, or why none does.
inline GgmlType exact_ggml_type(const QuantizedTensor& tensor, std::string* why = nullptr) {
  const GridSpec& grid = tensor.grid;
  const bool blocks_of_32 = tensor.group_width % 32 == 0;
  if (grid.min_level == -8 && grid.max_level == 7 && blocks_of_32) return GgmlType::Q4_0;
  if (grid.min_level == -16 && grid.max_level == 15 && blocks_of_32) return GgmlType::Q5_0;
  if (grid.min_level == -128 && grid.max_level == 127 && blocks_of_32) return GgmlType::Q8_0;
  if (grid.min_level >= -2 && grid.max_level <= 1 && tensor.group_width == 256) return GgmlType::TQ2_0;  // 2.06 bits
  if (grid.min_level >= -2 && grid.max_level <= 1 && tensor.group_width % 64 == 0) return GgmlType::Q2_0;
  if (why)
    *why = std::string("GGUF holds gsq's codes exactly as Q4_0, Q5_0 or Q8_0 (int4, int5, int8, groups a multiple of 32), "
                       "TQ2_0 (int2 or ternary, groups of 256) or Q2_0 (int2 or ternary, groups a multiple of 64); this model "
                       "is ") + grid.name + " with groups of " + std::to_string(tensor.group_width) + " columns";
  return GgmlType::F32;
}

/// `tensor`'s bytes in the type exact_ggml_type gives it.
inline std::vector<std::uint8_t> encode_exact(const QuantizedTensor& tensor) {
  switch (exact_ggml_type(tensor)) {
    case GgmlType::Q4_0: return encode_q4_0(tensor);
    case GgmlType::Q5_0: return encode_q5_0(tensor);
    case GgmlType::Q8_0: return encode_q8_0(tensor);
    case GgmlType::TQ2_0: return encode_tq2_0(tensor);
    case GgmlType::Q2_0: return encode_q2_0(tensor);
    default: throw Error(std::string("no ggml type holds a ") + tensor.grid.name + " tensor with groups of " +
                         std::to_string(tensor.group_width) + " exactly");
  }
}

namespace detail {

/// Checkpoint tensor `name` of `model` as the GGUF stores it (see the top of this file).
inline GgufTensorData gguf_tensor_data(const QuantizedModel& model, const std::string& name) {
  const TensorInfo& info = model.checkpoint.info(name);
  if (const QuantizedTensor* linear = model.linear(name)) return {exact_ggml_type(*linear), encode_exact(*linear)};
  if (const KQuantTensor* blocks = model.k_quant(name)) return {static_cast<GgmlType>(blocks->format->ggml_type), encode_k_quant(*blocks)};
  if (info.shape.size() == 2 && (info.dtype == Dtype::F32 || info.dtype == Dtype::F16 || info.dtype == Dtype::BF16))
    // Same little-endian element encoding in both files.
    return {info.dtype == Dtype::F32 ? GgmlType::F32 : info.dtype == Dtype::F16 ? GgmlType::F16 : GgmlType::BF16, model.raw_bytes(name)};
  const FloatTensor values = model.checkpoint.float_tensor(name);
  Matrix<float> flat(1, static_cast<long>(values.values.size()));
  flat.values = values.values;
  return {GgmlType::F32, encode_float(flat, GgmlType::F32)};
}

}  // namespace detail

/// Why `model` cannot be written as GGUF, or empty; when it can, `tokenizer` (if given) receives
/// its parsed tokenizer.json.
inline std::string gguf_unsupported(const QuantizedModel& model, nlohmann::json* tokenizer = nullptr) {
  const LlamaConfig& config = model.config;
  const std::string architecture = gguf_architecture_unsupported(config, model.config_json);
  if (!architecture.empty()) return architecture;
  const std::vector<std::string> left = tensors_without_gguf_place(gguf_layout(config), model.checkpoint.tensor_names());
  if (!left.empty()) return "tensor '" + left[0] + "' has no place in llama.cpp's " + llama_cpp_architecture(config.architecture);
  for (const auto& [name, tensor] : model.linears) {
    std::string why;
    if (exact_ggml_type(tensor, &why) == GgmlType::F32) return why;
  }
  try {
    nlohmann::json parsed = detail::bpe_tokenizer(model.directory);
    detail::gguf_tokens(parsed, config.vocab_size, model.directory + "/tokenizer.json");  // checked before any work
    if (tokenizer) *tokenizer = std::move(parsed);
  } catch (const Error& error) {
    return error.what();
  }
  return {};
}

/// Writes `model` as the GGUF file `path` (atomically).
inline void write_gguf(const QuantizedModel& model, const std::string& path) {
  nlohmann::json tokenizer;
  const std::string unsupported = gguf_unsupported(model, &tokenizer);
  require(unsupported.empty(), "GGUF export: " + unsupported);
  const LlamaConfig& config = model.config;
  GgufWriter writer;
  writer.set("general.type", std::string("model"));
  writer.set("general.name", model.name);
  writer.set("general.quantization_version", std::uint32_t{2});  // ggml's block layouts as of 2023, which gsq writes
  set_gguf_hyperparameters(writer, config, model.config_json);
  detail::set_gguf_tokenizer(writer, model, tokenizer);
  for (const GgufTensorLayout& tensor : gguf_layout(config))
    add_gguf_tensor(writer, tensor, config, [&](const std::string& name) { return detail::gguf_tensor_data(model, name); });
  if (config.rotary.type == "llama3") {
    // llama.cpp divides each rotary frequency by these factors: the unscaled over the scaled.
    LlamaConfig unscaled = config;
    unscaled.rotary.type = "default";
    const std::vector<float> plain = rotary_inverse_frequencies(unscaled),
                             scaled = rotary_inverse_frequencies(config);
    Matrix<float> factors(1, static_cast<long>(plain.size()));
    for (std::size_t i = 0; i < plain.size(); ++i) factors.values[i] = plain[i] / scaled[i];
    writer.add_tensor("rope_freqs.weight", {factors.cols}, GgmlType::F32, encode_float(factors, GgmlType::F32));
  }
  writer.write(path);
}

}  // namespace gsq
