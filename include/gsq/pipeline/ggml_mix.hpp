// gsq/pipeline/ggml_mix.hpp -- which ggml type each tensor of a model goes into for a llama.cpp
// file: the types llama-quantize gives this model under one of its presets
// (gsq/format/llama_quantize_mix.hpp), or those of an existing GGUF of the model (--like), laid
// over the tensors of the model's GGUF (gsq/model/gguf_layout.hpp) and carried back to the
// checkpoint's linears, token embedding and head.
//
//   gsq::GgmlMix mix = gsq::llama_quantize_mix(config, checkpoint, gsq::llama_quantize_preset("Q4_K_M"));
//   gsq::GgmlMix same = gsq::ggml_mix_like(config, gsq::GgufFile::open("model-Q4_K_M.gguf"));
//   gsq::GgmlMixFormat format(mix.linears);
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "gsq/common/error.hpp"
#include "gsq/format/ggml_types.hpp"
#include "gsq/format/gguf_file.hpp"
#include "gsq/format/llama_quantize_mix.hpp"
#include "gsq/io/safetensors.hpp"
#include "gsq/model/config.hpp"
#include "gsq/model/gguf_layout.hpp"
#include "gsq/model/llama.hpp"
#include "gsq/policy/ggml_layout.hpp"

namespace gsq {

/// Whether `type` stores values as they are (F32, F16, BF16) rather than quantized.
inline bool ggml_float_type(GgmlType type) { return type == GgmlType::F32 || type == GgmlType::F16 || type == GgmlType::BF16; }

struct GgmlMix {
  std::string source;                       // "llama-quantize Q4_K_M", "like model.gguf": for messages and manifests
  std::map<std::string, GgmlType> linears;  // every decoder linear, by checkpoint name
  GgmlType embedding = GgmlType::F32;       // token_embd: quantized, or the float type it is written in
  GgmlType head = GgmlType::F32;            // output, likewise (a tied model's head is its embedding)
  bool tied = false;                        // the model's head is its embedding: one tensor, of type `embedding`

  /// Every tensor it quantizes, by checkpoint name: the linears, and the embedding and head
  /// unless they stay floats.
  std::map<std::string, GgmlType> quantized_tensors() const {
    std::map<std::string, GgmlType> tensors = linears;
    if (!ggml_float_type(embedding)) tensors["model.embed_tokens.weight"] = embedding;
    if (!tied && !ggml_float_type(head)) tensors["lm_head.weight"] = head;
    return tensors;
  }
};

namespace detail {

/// The mix that gives each tensor of `layout` the type at its index in `types`; an error names a
/// tensor gsq keeps in full precision that `source` quantizes, a type gsq does not write, or a
/// linear whose GGUF tensors differ in type.
inline GgmlMix ggml_mix_of(const LlamaConfig& config, const std::vector<GgufTensorLayout>& layout, const std::vector<GgmlType>& types,
                           const std::string& source) {
  GgmlMix mix{source, {}, GgmlType::F32, GgmlType::F32, config.tie_word_embeddings};
  std::map<std::string, bool> linear;
  for (long layer = 0; layer < config.layers; ++layer)
    for (const std::string& name : config.linear_names(layer)) linear[LlamaModel::tensor_name(layer, name)] = true;
  for (std::size_t i = 0; i < layout.size(); ++i) {
    const GgufTensorLayout& tensor = layout[i];
    const GgmlType type = types[i];
    const std::string what = source + " gives " + tensor.gguf + " " + ggml_type_name(static_cast<std::uint32_t>(type));
    if (tensor.gguf == "token_embd.weight") {
      mix.embedding = type;
      if (config.tie_word_embeddings) mix.head = type;
    } else if (tensor.gguf == "output.weight") {
      mix.head = type;
    } else if (linear.count(tensor.checkpoint.front())) {
      for (const std::string& name : tensor.checkpoint) {
        const auto [placed, fresh] = mix.linears.emplace(name, type);
        require(fresh || placed->second == type, what + ", but " + name + "'s other GGUF tensor " +
                                                     ggml_type_name(static_cast<std::uint32_t>(placed->second)) +
                                                     ": gsq quantizes a linear in one type");
      }
      continue;
    } else {
      require(ggml_float_type(type), what + ": gsq keeps it in full precision (F32, F16 or BF16)");
      continue;
    }
    if (!ggml_float_type(type)) require_ggml_type_written(type, source + ": " + tensor.gguf);
  }
  for (const auto& [name, type] : mix.linears) require_ggml_type_written(type, source + ": " + name);
  return mix;
}

/// The ggml type a checkpoint tensor of dtype `dtype` is written in when left as it is.
inline GgmlType float_ggml_type(Dtype dtype) {
  return dtype == Dtype::F16 ? GgmlType::F16 : dtype == Dtype::BF16 ? GgmlType::BF16 : GgmlType::F32;
}

}  // namespace detail

/// The types llama-quantize gives the GGUF of the model (`config`, its tensors in `checkpoint`)
/// under `preset`; `importance_matrix`: as llama-quantize does when given one (gsq's GPTQ and GSQ
/// calibrate, as llama-quantize does with an imatrix).
inline GgmlMix llama_quantize_mix(const LlamaConfig& config, const Checkpoint& checkpoint, LlamaQuantizePreset preset,
                                  bool importance_matrix = true) {
  const std::vector<GgufTensorLayout> layout = gguf_layout(config);
  LlamaQuantizeModel model;
  model.architecture = llama_cpp_architecture(config.architecture);
  require(!model.architecture.empty(), "llama-quantize's mixes: no llama.cpp architecture for " + config.architecture);
  model.n_layer = config.layers;
  model.n_expert = config.mixture.experts;
  model.n_head = config.attention_heads;
  model.n_head_kv = config.key_value_heads;
  std::vector<LlamaQuantizeTensor> tensors;
  for (const GgufTensorLayout& tensor : layout) {
    const std::vector<std::int64_t> shape = tensor.gguf_shape(config);
    // 1-D tensors llama.cpp's converter writes in F32; the rest as the checkpoint holds them.
    const GgmlType type = shape.size() == 1 ? GgmlType::F32 : detail::float_ggml_type(checkpoint.info(tensor.checkpoint.front()).dtype);
    tensors.push_back({tensor.gguf, std::vector<std::int64_t>(shape.rbegin(), shape.rend()), type});
  }
  const std::string source = std::string("llama-quantize ") + llama_quantize_preset_info(preset).name;
  return detail::ggml_mix_of(config, layout, llama_quantize_types(preset, model, tensors, importance_matrix), source);
}

/// The types of `file`, a GGUF of the same model (`config`): every tensor of the model's GGUF must
/// be in it with its shape, and nothing else (llama.cpp's rope_freqs apart).
inline GgmlMix ggml_mix_like(const LlamaConfig& config, const GgufFile& file) {
  const std::vector<GgufTensorLayout> layout = gguf_layout(config);
  const std::string source = "--like " + file.path();
  require(file.value("general.architecture").get<std::string>() == llama_cpp_architecture(config.architecture),
          source + ": a " + file.value("general.architecture").get<std::string>() + " file, but the model is " +
              config.architecture + " (llama.cpp's " + llama_cpp_architecture(config.architecture) + ")");
  std::map<std::string, const GgufTensor*> by_name;
  for (const GgufTensor& tensor : file.tensors()) by_name[tensor.name] = &tensor;
  std::vector<GgmlType> types;
  for (const GgufTensorLayout& tensor : layout) {
    const auto found = by_name.find(tensor.gguf);
    require(found != by_name.end(), source + " has no tensor " + tensor.gguf + " (the model's GGUF has)");
    const std::vector<std::int64_t> shape = tensor.gguf_shape(config);
    require(found->second->shape == shape, source + ": " + tensor.gguf + " is not the shape of the model's");
    types.push_back(found->second->type);
    by_name.erase(found);
  }
  by_name.erase("rope_freqs.weight");
  require(by_name.empty(), source + " holds " + (by_name.empty() ? "" : by_name.begin()->first) +
                               ", which the model's GGUF does not: not a file of this model");
  return detail::ggml_mix_of(config, layout, types, source);
}

}  // namespace gsq
