// gsq/export/quantized_model.hpp -- what every export is written from: a checkpoint directory
// (config.json, tokenizer files, the tensors that stay in full precision) and the quantized
// linear layers by tensor name, in the paper's grid format (codes and fp16 scales) or in a
// llama.cpp K-quant format. quantize_model's output directory is such a pair: model.safetensors
// and quantized.safetensors (gsq/format/packed.hpp).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/common/error.hpp"
#include "gsq/format/packed.hpp"
#include "gsq/format/k_quant.hpp"
#include "gsq/format/quantized_tensor.hpp"
#include "gsq/io/safetensors.hpp"
#include "gsq/model/llama.hpp"
#include "gsq/policy/ggml_layout.hpp"
#include "gsq/policy/grid.hpp"
#include "gsq/policy/grid_scheme.hpp"

namespace gsq {

/// The grids gsq writes, by the name quantized.safetensors records.
inline GridSpec grid_named(const std::string& name) {
  for (const GridSpec& grid : {grid_spec<Ternary>(), grid_spec<Int<2>>(), grid_spec<Int<3>>(), grid_spec<Int<4>>()})
    if (name == grid.name) return grid;
  throw Error("unknown grid '" + name + "' (gsq writes ternary, int2, int3 and int4)");
}

/// The "ggml_types" metadata of a mix's quantized.safetensors (GgmlMixFormat::metadata): each
/// linear's ggml type by tensor name; `path` names the file in errors.
inline std::map<std::string, GgmlType> ggml_types_from_metadata(const std::string& text, const std::string& path) {
  const nlohmann::json parsed = nlohmann::json::parse(text, nullptr, false);
  require(parsed.is_object(), path + ": \"ggml_types\" is not a JSON object");
  std::map<std::string, GgmlType> types;
  for (const auto& [name, type] : parsed.items()) {
    require(type.is_string(), path + ": \"ggml_types\" gives " + name + " no type name");
    types[name] = ggml_type_named(type.get<std::string>(), path + ": " + name);
  }
  return types;
}

/// The "grid_schemes" metadata of a grid mix's quantized.safetensors (GridMixFormat::metadata):
/// each linear's scheme by tensor name; `path` names the file in errors.
inline std::map<std::string, GridScheme> grid_schemes_from_metadata(const std::string& text, const std::string& path) {
  const nlohmann::json parsed = nlohmann::json::parse(text, nullptr, false);
  require(parsed.is_object(), path + ": \"grid_schemes\" is not a JSON object");
  std::map<std::string, GridScheme> schemes;
  for (const auto& [name, scheme] : parsed.items()) {
    require(scheme.is_string(), path + ": \"grid_schemes\" gives " + name + " no scheme name");
    schemes[name] = grid_scheme_named(scheme.get<std::string>(), path + ": " + name);
  }
  return schemes;
}

/// The last component of `directory`'s path ("model" for "out/model/"): a model's default name.
inline std::string directory_name(const std::string& directory) {
  std::filesystem::path path = std::filesystem::path(directory).lexically_normal();
  if (path.filename().empty()) path = path.parent_path();  // "out/model/"
  return path.filename().string();
}

struct QuantizedModel {
  std::string directory;        // config.json, tokenizer files and full-precision tensors are read here
  std::string name;             // the model's name in exports that carry one (GGUF's general.name)
  nlohmann::json config_json;   // config.json as written
  LlamaConfig config;
  Checkpoint checkpoint;        // every tensor of the model (the linears' dequantized weights too)
  std::map<std::string, QuantizedTensor> linears;  // by tensor name ("model.layers.0.mlp.up_proj.weight")
  std::map<std::string, KQuantTensor> k_quants;    // the linears of a model in K-quant formats instead
  // llama.cpp's name of the tokenizer's pre-tokenizer (GGUF's tokenizer.ggml.pre), which programs
  // that run the tokenizer find (gsq/text/llama_cpp_pre_tokenizer.hpp); empty: unknown
  std::string tokenizer_pre;

  /// Reads `directory` (config.json and a checkpoint) and every linear layer from
  /// `quantized_path` (quantized.safetensors): their codes and scales, all on one grid and, apart
  /// from per-channel scales, with one group width, or each in the scheme "grid_schemes" names;
  /// or their K-quant blocks.
  static QuantizedModel open(const std::string& directory, const std::string& quantized_path) {
    QuantizedModel model = unquantized(directory);
    const SafetensorsFile packed = SafetensorsFile::open(quantized_path);
    const auto grid_entry = packed.metadata().find("grid");
    if (const auto mix = packed.metadata().find("ggml_types"); mix != packed.metadata().end()) {
      const std::map<std::string, GgmlType> types = ggml_types_from_metadata(mix->second, quantized_path);
      model.for_each_linear([&](const std::string& name, long, long) {
        require(types.count(name), quantized_path + ": \"ggml_types\" gives linear " + name + " no type");
      });
      for (const auto& [name, type] : types) {  // the linears, and the embedding and head where quantized
        require(model.checkpoint.contains(name), quantized_path + ": \"ggml_types\" names " + name + ", which the model does not hold");
        const std::vector<std::int64_t>& shape = model.checkpoint.info(name).shape;
        require(shape.size() == 2, name + " is not a matrix");
        const long rows = static_cast<long>(shape[0]), cols = static_cast<long>(shape[1]);
        with_ggml_layout(type, quantized_path + ": " + name, [&, &name = name](auto tag) {
          using Layout = type_of<decltype(tag)>;
          if constexpr (is_ggml_k_quant<Layout>::value) {
            std::optional<KQuantTensor> blocks = read_k_quant_packed(packed, name, rows, cols);
            require(blocks && blocks->format == &Layout::Layout::format(),
                    quantized_path + ": no " + Layout::Layout::format().name + " blocks for " + name);
            model.k_quants.emplace(name, std::move(*blocks));
          } else {
            model.linears.emplace(name, read_packed(packed, name, grid_spec<typename Layout::Grid>(), rows, cols,
                                                    Layout::Grouping::group_width(static_cast<int>(cols))));
          }
        });
      }
      return model;
    }
    if (const auto mix = packed.metadata().find("grid_schemes"); mix != packed.metadata().end()) {
      const std::map<std::string, GridScheme> schemes = grid_schemes_from_metadata(mix->second, quantized_path);
      model.for_each_linear([&](const std::string& name, long rows, long cols) {
        const auto scheme = schemes.find(name);
        require(scheme != schemes.end(), quantized_path + ": \"grid_schemes\" gives linear " + name + " no scheme");
        model.linears.emplace(name, read_packed(packed, name, scheme->second.grid, rows, cols, scheme->second.group_width(cols)));
      });
      return model;
    }
    model.for_each_linear([&](const std::string& name, long rows, long cols) {
      if (std::optional<KQuantTensor> blocks = read_k_quant_packed(packed, name, rows, cols)) {
        model.k_quants.emplace(name, std::move(*blocks));
        return;
      }
      require(grid_entry != packed.metadata().end(),
              quantized_path + ": neither K-quant blocks for " + name + " nor \"grid\" metadata (not gsq's quantized.safetensors)");
      const TensorInfo& scales = packed.info(name + ".scales");
      require(scales.shape.size() == 2 && scales.shape[0] == rows && scales.shape[1] > 0 && cols % scales.shape[1] == 0,
              quantized_path + ": " + name + ".scales does not have one scale per row and group");
      model.linears.emplace(name, read_packed(packed, name, grid_named(grid_entry->second), rows, cols, cols / scales.shape[1]));
    });
    return model;
  }

  /// The checkpoint `directory` as it is: every tensor in its stored precision.
  static QuantizedModel full_precision(const std::string& directory) { return unquantized(directory); }

  /// The model checkpoint `directory` becomes once its linears are quantized on `grid` with
  /// group_width(cols) columns per scale: shapes, grid and groups, no codes. Exports check it
  /// before any work is done.
  static QuantizedModel planned(const std::string& directory, const GridSpec& grid,
                                const std::function<long(long)>& group_width) {
    QuantizedModel model = unquantized(directory);
    model.for_each_linear([&](const std::string& name, long rows, long cols) {
      model.linears.emplace(name, QuantizedTensor{grid, rows, cols, group_width(cols), {}, {}});
    });
    return model;
  }

  /// The model `directory` becomes once its linears are quantized in K-quant `format`; an error
  /// names a linear whose rows are not whole super-blocks.
  static QuantizedModel planned(const std::string& directory, const KQuantFormat& format) {
    QuantizedModel model = unquantized(directory);
    model.for_each_linear([&](const std::string& name, long rows, long cols) {
      require_whole_super_blocks(format, name, cols);
      model.k_quants.emplace(name, KQuantTensor{&format, rows, cols, {}, {}, {}, {}, {}});
    });
    return model;
  }

  /// The model `directory` becomes once each linear is quantized in the ggml type `types` gives
  /// it by tensor name (a llama.cpp mix); an error names a linear its type cannot hold.
  static QuantizedModel planned(const std::string& directory, const std::map<std::string, GgmlType>& types) {
    QuantizedModel model = unquantized(directory);
    model.for_each_linear([&](const std::string& name, long rows, long cols) {
      const auto type = types.find(name);
      require(type != types.end(), "the mix gives linear " + name + " no ggml type");
      with_ggml_layout(type->second, name, [&](auto tag) {
        using Layout = type_of<decltype(tag)>;
        if constexpr (is_ggml_k_quant<Layout>::value) {
          require_whole_super_blocks(Layout::Layout::format(), name, cols);
          model.k_quants.emplace(name, KQuantTensor{&Layout::Layout::format(), rows, cols, {}, {}, {}, {}, {}});
        } else {
          const long width = Layout::Grouping::group_width(static_cast<int>(cols));
          require(cols % width == 0, name + " has " + std::to_string(cols) + " input columns, which blocks of " +
                                         std::to_string(width) + " do not divide: " +
                                         ggml_type_name(static_cast<std::uint32_t>(type->second)) + " cannot hold it");
          model.linears.emplace(name, QuantizedTensor{grid_spec<typename Layout::Grid>(), rows, cols, width, {}, {}});
        }
      });
    });
    return model;
  }

  /// The model `directory` becomes once each linear is quantized in the scheme `schemes` gives it
  /// by tensor name (a grid mix); an error names a linear its scheme's groups do not divide.
  static QuantizedModel planned(const std::string& directory, const std::map<std::string, GridScheme>& schemes) {
    QuantizedModel model = unquantized(directory);
    model.for_each_linear([&](const std::string& name, long rows, long cols) {
      const auto scheme = schemes.find(name);
      require(scheme != schemes.end(), "the mix gives linear " + name + " no grid scheme");
      const long width = scheme->second.group_width(cols);
      require(cols % width == 0, name + " has " + std::to_string(cols) + " input columns, which groups of " + std::to_string(width) +
                                     " do not divide: " + scheme->second.name() + " cannot hold it");
      model.linears.emplace(name, QuantizedTensor{scheme->second.grid, rows, cols, width, {}, {}});
    });
    return model;
  }

  /// Why a Hugging Face export (the paper's grid format in the checkpoint's own layout: compressed-
  /// tensors, GPTQ) cannot write this model, or empty.
  std::string hugging_face_export_missing() const {
    if (!k_quants.empty())
      return std::string("this model's linears are in llama.cpp's ") + k_quants.begin()->second.format->name +
             " format, which only the gguf export holds";
    for (const auto& [name, tensor] : linears)
      if (name.rfind("model.layers.", 0) != 0)
        return "this model quantizes " + name + " (a llama.cpp mix), which only the gguf export holds";
    return {};
  }

  /// Whether the linears differ in grid or group size (a mix).
  bool mixed() const {
    for (const auto& [name, tensor] : linears)
      if (!(tensor.grid == grid()) || (tensor.group_width != group_width() && !per_channel())) return true;
    return false;
  }

  /// The quantized tensor stored under checkpoint name `name`, or null for a full-precision one.
  const QuantizedTensor* linear(const std::string& name) const {
    const auto found = linears.find(name);
    return found == linears.end() ? nullptr : &found->second;
  }

  /// The K-quant tensor stored under checkpoint name `name`, or null.
  const KQuantTensor* k_quant(const std::string& name) const {
    const auto found = k_quants.find(name);
    return found == k_quants.end() ? nullptr : &found->second;
  }

  const GridSpec& grid() const { return linears.begin()->second.grid; }
  /// The scale group width: columns per scale, the same for every linear unless per-channel.
  long group_width() const { return linears.begin()->second.group_width; }
  bool per_channel() const {
    for (const auto& [name, tensor] : linears)
      if (tensor.group_width != tensor.cols) return false;
    return true;
  }

  /// The bytes of full-precision tensor `name`, as stored.
  std::vector<std::uint8_t> raw_bytes(const std::string& name) const {
    const ByteView bytes = checkpoint.file_of(name).raw_bytes(name);
    return {bytes.data, bytes.data + bytes.size};
  }

 private:
  /// Calls visit(name, rows, cols) for every linear layer of the checkpoint.
  template <class Visit>
  void for_each_linear(const Visit& visit) const {
    for (long layer = 0; layer < config.layers; ++layer)
      for (const std::string& linear : config.linear_names(layer)) {
        const std::string name = LlamaModel::tensor_name(layer, linear);
        const std::vector<std::int64_t>& shape = checkpoint.info(name).shape;
        require(shape.size() == 2, name + " is not a matrix");
        visit(name, static_cast<long>(shape[0]), static_cast<long>(shape[1]));
      }
  }

  static QuantizedModel unquantized(const std::string& directory) {
    const std::string config_path = directory + "/config.json";
    nlohmann::json config = LlamaConfig::read_json(config_path);
    LlamaConfig parsed = LlamaConfig::from_json(config, "model config '" + config_path + "'");
    return {directory, directory_name(directory), std::move(config), std::move(parsed), Checkpoint::open(directory), {}, {}, {}};
  }
};

}  // namespace gsq
