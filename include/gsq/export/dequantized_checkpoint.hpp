// gsq/export/dequantized_checkpoint.hpp -- a quantized model written as the Hugging Face
// checkpoint any stack loads. A quantize_model output directory holds
//   config.json, tokenizer files, ...  copied from the input checkpoint
//   model.safetensors                  every input tensor under its name and dtype, the linear
//                                      layers holding their dequantized weights in F32 (exact)
//                                      (or Hugging Face's sharded layout, for a sharded or large model)
//   quantized.safetensors              the format itself (gsq/format/packed.hpp)
//   manifest.json                      method, settings, per-layer errors, timings, evaluation
// Directories are built beside the destination and renamed into place (ResumableOutput::publish,
// gsq/io/resumable_output.hpp): a reader sees the old output or the new one, never a mixture.
#pragma once

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "gsq/common/error.hpp"
#include "gsq/distributed/communicator.hpp"
#include "gsq/io/atomic_file.hpp"
#include "gsq/io/safetensors.hpp"
#include "gsq/model/llama.hpp"

namespace gsq {

/// The files other stacks load beside a checkpoint's weights: config, generation config,
/// tokenizer (not the shard index, which names the weight files).
inline std::vector<std::filesystem::path> companion_files(const std::string& directory) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  for (const fs::directory_entry& entry : fs::directory_iterator(directory)) {
    const std::string file = entry.path().filename().string(), extension = entry.path().extension().string();
    if (entry.is_regular_file() && file != "model.safetensors.index.json" &&
        (extension == ".json" || extension == ".model" || extension == ".tiktoken" || extension == ".jinja" ||
         file == "merges.txt" || file == "vocab.txt"))
      files.push_back(entry.path());
  }
  return files;
}

/// Copies companion_files(source) into `directory`, except those named in `except`.
inline void copy_companion_files(const std::string& source, const std::string& directory,
                                 const std::vector<std::string>& except = {}) {
  namespace fs = std::filesystem;
  for (const fs::path& file : companion_files(source))
    if (std::find(except.begin(), except.end(), file.filename().string()) == except.end())
      fs::copy_file(file, fs::path(directory) / file.filename());
}

/// The output size past which write_checkpoint writes Hugging Face's sharded layout.
inline constexpr double default_shard_bytes = 2147483648.0;  // 2 GiB

namespace detail {

/// The decoder layer a checkpoint tensor belongs to ("model.layers.<n>." with n < layers), or -1.
inline long layer_of_tensor(const std::string& name, long layers) {
  const std::string prefix = "model.layers.";
  if (name.compare(0, prefix.size(), prefix) != 0) return -1;
  const std::size_t dot = name.find('.', prefix.size());
  const std::string digits = name.substr(prefix.size(), dot == std::string::npos ? std::string::npos : dot - prefix.size());
  if (digits.empty() || digits.size() > 9 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return -1;
  const long layer = std::stol(digits);
  return layer < layers ? layer : -1;
}

}  // namespace detail

/// Writes `model` (whose linear weights may have been replaced) as a checkpoint in directory
/// `directory` (created if missing; meant to be a new, empty one): every tensor of `source` keeps
/// its name, the linear layers are taken from the model in F32 (their dequantized weights, scale *
/// code, are exact there and not in BF16), everything else is copied byte for byte.
///
/// A single model.safetensors unless the source is sharded or the output passes `shard_bytes`;
/// then Hugging Face's sharded layout: model-0000k-of-0000n.safetensors, the first holding what is
/// not in a decoder layer and each further one a decoder layer, with model.safetensors.index.json.
/// Tensors are made and written one at a time, so that writing needs no more memory than the
/// largest of them.
///
/// With several ranks (every rank calling it alike, sharing the file system), rank 0 writes the
/// companion files, a single file and the index, and the shards are shared out: shard k is written
/// by rank k mod size.
inline void write_checkpoint(const LlamaModel& model, const std::string& source_directory, const Checkpoint& source,
                             const std::string& directory, double shard_bytes = default_shard_bytes,
                             const Communicator& communicator = serial_communicator()) {
  if (communicator.rank() == 0) {
    std::filesystem::create_directory(directory);
    copy_companion_files(source_directory, directory);
  }
  communicator.barrier();
  const LlamaConfig& config = model.config();
  std::map<std::string, std::string> linear_of;  // tensor name -> linear name
  for (long layer = 0; layer < config.layers; ++layer)
    for (const std::string& linear : config.linear_names(layer)) linear_of[LlamaModel::tensor_name(layer, linear)] = linear;
  // The tensors of each shard: [0] outside the decoder layers, [l + 1] layer l.
  std::vector<std::vector<std::string>> shards(static_cast<std::size_t>(config.layers + 1));
  double total_bytes = 0;
  for (const std::string& name : source.tensor_names()) {
    shards[static_cast<std::size_t>(detail::layer_of_tensor(name, config.layers) + 1)].push_back(name);
    const TensorInfo& info = source.info(name);
    total_bytes += linear_of.count(name) || model.replaced(name) ? 4.0 * static_cast<double>(info.shape.at(0) * info.shape.at(1))
                                                                 : static_cast<double>(info.byte_size());
  }
  // Each tensor is made when its turn comes in the file: one tensor in memory at a time.
  const auto shard_writer = [&](const std::vector<std::string>& names) {
    SafetensorsWriter writer;
    for (const std::string& name : names) {
      const TensorInfo& info = source.info(name);
      const auto linear = linear_of.find(name);
      const auto f32 = [](const Matrix<float>& weight) {  // F32: scale * code exactly
        std::vector<std::uint8_t> bytes(4 * weight.values.size());
        for (std::size_t i = 0; i < weight.values.size(); ++i)
          detail::store_little_endian(detail::float_to_bits(weight.values[i]), 4, &bytes[4 * i]);
        return bytes;
      };
      if (linear != linear_of.end()) {
        const long layer = detail::layer_of_tensor(name, config.layers);
        writer.add_deferred(name, Dtype::F32, info.shape,
                            [&model, f32, layer, linear = linear->second] { return f32(model.linear_weight(layer, linear)); });
      } else if (model.replaced(name)) {  // a quantized embedding or head
        writer.add_deferred(name, Dtype::F32, info.shape, [&model, f32, head = name == "lm_head.weight"] {
          return f32(head ? model.head() : model.embedding());
        });
      } else {
        writer.add_deferred(name, info.dtype, info.shape, [&source, name] {
          const ByteView bytes = source.file_of(name).raw_bytes(name);
          std::vector<std::uint8_t> copy(bytes.data, bytes.data + bytes.size);
          source.file_of(name).release_pages(name);
          return copy;
        });
      }
    }
    writer.set_metadata("format", "pt");
    writer.set_metadata("quantized_by", "gsq");
    return writer;
  };
  if (source.shards().size() == 1 && total_bytes <= shard_bytes) {
    if (communicator.rank() == 0) shard_writer(source.tensor_names()).write(directory + "/" + Checkpoint::single_file_name);
    communicator.barrier();
    return;
  }
  shards.erase(std::remove_if(shards.begin(), shards.end(), [](const auto& names) { return names.empty(); }), shards.end());
  nlohmann::json weight_map = nlohmann::json::object();
  for (std::size_t k = 0; k < shards.size(); ++k) {
    char file[64];
    std::snprintf(file, sizeof file, "model-%05zu-of-%05zu.safetensors", k + 1, shards.size());
    if (static_cast<int>(k % static_cast<std::size_t>(communicator.size())) == communicator.rank())
      shard_writer(shards[k]).write(directory + "/" + file);
    for (const std::string& name : shards[k]) weight_map[name] = file;
  }
  communicator.barrier();
  if (communicator.rank() == 0)
    write_json_atomically(directory + "/" + Checkpoint::index_file_name,
                          {{"metadata", {{"total_size", static_cast<std::int64_t>(total_bytes)}}}, {"weight_map", weight_map}});
}

}  // namespace gsq
