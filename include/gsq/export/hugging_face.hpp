// gsq/export/hugging_face.hpp -- a Hugging Face checkpoint directory whose linear layers are
// stored in a quantized format that transformers and vLLM read (compressed-tensors, GPTQ): the
// model's config.json with the format's "quantization_config", its tokenizer files, and one
// model.safetensors in which each quantized linear's weight is replaced by the format's tensors
// and every other tensor is copied byte for byte.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/export/quantized_model.hpp"
#include "gsq/export/dequantized_checkpoint.hpp"
#include "gsq/io/atomic_file.hpp"
#include "gsq/io/safetensors.hpp"

namespace gsq {

/// Adds the tensors one format stores for a quantized linear; `prefix` is its checkpoint name
/// without ".weight" ("model.layers.0.mlp.up_proj").
using QuantizedLinearWriter = std::function<void(SafetensorsWriter&, const std::string& prefix, const QuantizedTensor&)>;

/// Adds an I32 tensor of `shape` from `values` (row-major).
inline void add_int32(SafetensorsWriter& writer, const std::string& name, const std::vector<std::int64_t>& shape,
                      const std::vector<std::int32_t>& values) {
  std::vector<std::uint8_t> bytes(values.size() * 4);
  std::memcpy(bytes.data(), values.data(), bytes.size());  // little-endian, as every host gsq builds for
  writer.add_bytes(name, Dtype::I32, shape, std::move(bytes));
}

/// The unsigned value a symmetric b-bit format stores for `code`: code + 2^(b-1) (ternary codes
/// are 2-bit codes that never use -2).
inline std::uint32_t offset_code(int code, int bits) { return static_cast<std::uint32_t>(code + (1 << (bits - 1))); }

/// Writes `model` into the new directory `directory` (created): config.json with
/// `quantization_config` and dtype float16 (the fp16 scales stay exact; a bf16 load would round
/// them), `extra_files` (name -> JSON), the tokenizer files, and model.safetensors.
inline void write_quantized_checkpoint(const QuantizedModel& model, const std::string& directory,
                                       const nlohmann::json& quantization_config,
                                       const QuantizedLinearWriter& write_linear,
                                       const std::map<std::string, nlohmann::json>& extra_files = {}) {
  require(model.hugging_face_export_missing().empty(), quantization_config.value("quant_method", std::string("this")) +
                                                   " export: " + model.hugging_face_export_missing());
  std::filesystem::create_directory(directory);
  copy_companion_files(model.directory, directory, {"config.json", "manifest.json"});
  nlohmann::json config = model.config_json;
  config["quantization_config"] = quantization_config;
  config["torch_dtype"] = "float16";
  config["dtype"] = "float16";
  write_json_atomically(directory + "/config.json", config);
  for (const auto& [name, json] : extra_files) write_json_atomically(directory + "/" + name, json);

  SafetensorsWriter writer;
  const std::string suffix = ".weight";
  for (const std::string& name : model.checkpoint.tensor_names()) {
    if (const QuantizedTensor* tensor = model.linear(name)) {
      write_linear(writer, name.substr(0, name.size() - suffix.size()), *tensor);
    } else {
      const TensorInfo& info = model.checkpoint.info(name);
      writer.add_bytes(name, info.dtype, info.shape, model.raw_bytes(name));
    }
  }
  writer.set_metadata("format", "pt");
  writer.set_metadata("producer", producer);
  writer.write(directory + "/model.safetensors");
}

}  // namespace gsq
