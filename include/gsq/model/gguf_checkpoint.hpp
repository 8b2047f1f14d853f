// gsq/model/gguf_checkpoint.hpp -- a llama.cpp GGUF file as the Hugging Face checkpoint it was made
// from: its config.json rebuilt from the GGUF metadata, its tensors dequantized (as ggml does)
// under Hugging Face's names, the query and key rows put back from llama.cpp's rotary order
// into Hugging Face's. So `evaluate_model --model FILE.gguf` scores a GGUF exactly as its
// safetensors twin, and one tool compares gsq's files with llama-quantize's.
//
//   const gsq::LlamaModel model = gsq::open_model("model-Q4_K_M.gguf");  // or a checkpoint directory
//
// Read so far: general.architecture "llama" (Llama, Mistral and SmolLM files), rotary scaling
// none or linear. Other architectures and a llama3-scaled rope (rope_freqs) are refused by name.
// The tensors are held in memory as 32-bit floats (4 bytes a weight; 8 while they are converted,
// checked against the machine's memory first).
#pragma once

#include <algorithm>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/common/error.hpp"
#include "gsq/common/memory.hpp"
#include "gsq/format/gguf_file.hpp"
#include "gsq/io/safetensors.hpp"
#include "gsq/model/config.hpp"
#include "gsq/model/llama.hpp"

namespace gsq {

struct GgufCheckpoint {
  nlohmann::json config;  // as a config.json would say it
  Checkpoint checkpoint;  // Hugging Face's names and layout, F32, in memory
};

namespace detail {

/// The tensors of a Llama by their llama.cpp and Hugging Face names: the whole model's, then a
/// decoder layer's (after "blk.N." and "model.layers.N.").
struct TensorNamePair {
  const char* llama_cpp;
  const char* hugging_face;
};
inline const std::vector<TensorNamePair>& llama_model_tensor_names() {
  static const std::vector<TensorNamePair> names = {
      {"token_embd.weight", "model.embed_tokens.weight"}, {"output_norm.weight", "model.norm.weight"}, {"output.weight", "lm_head.weight"}};
  return names;
}
inline const std::vector<TensorNamePair>& llama_layer_tensor_names() {
  static const std::vector<TensorNamePair> names = {
      {"attn_norm.weight", "input_layernorm.weight"},  {"ffn_norm.weight", "post_attention_layernorm.weight"},
      {"attn_q.weight", "self_attn.q_proj.weight"},    {"attn_k.weight", "self_attn.k_proj.weight"},
      {"attn_v.weight", "self_attn.v_proj.weight"},    {"attn_output.weight", "self_attn.o_proj.weight"},
      {"ffn_gate.weight", "mlp.gate_proj.weight"},     {"ffn_up.weight", "mlp.up_proj.weight"},
      {"ffn_down.weight", "mlp.down_proj.weight"}};
  return names;
}

/// `name` in the other naming: from one side's prefix and names (`from`) to the other's (`to`), or
/// empty for a tensor a Llama has no place for.
inline std::string renamed_tensor(const std::string& name, const char* TensorNamePair::*from, const char* TensorNamePair::*to,
                                  const std::string& from_prefix, const std::string& to_prefix) {
  for (const TensorNamePair& pair : llama_model_tensor_names())
    if (name == pair.*from) return pair.*to;
  if (name.compare(0, from_prefix.size(), from_prefix) != 0) return {};
  const std::size_t dot = name.find('.', from_prefix.size());
  if (dot == std::string::npos) return {};
  const std::string layer = name.substr(from_prefix.size(), dot - from_prefix.size()), rest = name.substr(dot + 1);
  if (layer.empty() || layer.find_first_not_of("0123456789") != std::string::npos) return {};
  for (const TensorNamePair& pair : llama_layer_tensor_names())
    if (rest == pair.*from) return to_prefix + layer + "." + pair.*to;
  return {};
}

/// Hugging Face's name of llama.cpp tensor `name` in a Llama, or empty.
inline std::string hugging_face_tensor_name(const std::string& name) {
  return renamed_tensor(name, &TensorNamePair::llama_cpp, &TensorNamePair::hugging_face, "blk.", "model.layers.");
}

/// llama.cpp's name of checkpoint tensor `name` in a Llama, or empty for one it does not load.
inline std::string llama_cpp_tensor_name(const std::string& name) {
  return renamed_tensor(name, &TensorNamePair::hugging_face, &TensorNamePair::llama_cpp, "model.layers.", "blk.");
}

/// Rows of `values` (rows x cols) from llama.cpp's rotary order back to Hugging Face's, for
/// `heads` heads: llama.cpp's row 2i + j of a head is Hugging Face's row j * half + i.
inline std::vector<float> rotary_rows_halved(const std::vector<float>& values, long rows, long cols, long heads) {
  std::vector<float> out(values.size());
  const long head_dim = rows / heads, half = head_dim / 2;
  for (long head = 0; head < heads; ++head)
    for (long i = 0; i < half; ++i)
      for (long j = 0; j < 2; ++j)
        std::copy_n(values.begin() + (head * head_dim + 2 * i + j) * cols, cols, out.begin() + (head * head_dim + j * half + i) * cols);
  return out;
}

/// A count from the GGUF metadata: a non-negative integer.
inline long gguf_count(const GgufFile& file, const std::string& key) {
  const nlohmann::json& value = file.value(key);
  require(value.is_number_unsigned() || (value.is_number_integer() && value.get<long>() >= 0),
          file.path() + ": metadata \"" + key + "\" is " + value.dump() + ", not a count (a per-layer list is not read)");
  return value.get<long>();
}

inline double gguf_number(const GgufFile& file, const std::string& key, double fallback) {
  const auto found = file.metadata().find(key);
  if (found == file.metadata().end()) return fallback;
  require(found->second.is_number(), file.path() + ": metadata \"" + key + "\" is not a number");
  return found->second.get<double>();
}

}  // namespace detail

/// Reads the GGUF file at `path` as a Hugging Face checkpoint (see the top of this file).
inline GgufCheckpoint read_gguf_checkpoint(const std::string& path) {
  const GgufFile file = GgufFile::open(path);
  const nlohmann::json& architecture = file.value("general.architecture");
  require(architecture.is_string() && architecture.get<std::string>() == "llama",
          path + ": general.architecture is " + architecture.dump() + "; gsq reads GGUF files of architecture \"llama\" so far");
  const auto count = [&](const std::string& key) { return detail::gguf_count(file, "llama." + key); };
  const long heads = count("attention.head_count");
  const long key_value_heads = file.metadata().count("llama.attention.head_count_kv") ? count("attention.head_count_kv") : heads;
  const long hidden = count("embedding_length");
  require(heads > 0 && key_value_heads > 0 && hidden > 0 && hidden % heads == 0,
          path + ": the attention heads (" + std::to_string(heads) + ") do not divide the embedding length (" +
              std::to_string(hidden) + ")");
  const long head_dim = file.metadata().count("llama.attention.key_length") ? count("attention.key_length") : hidden / heads;
  if (file.metadata().count("llama.rope.dimension_count"))
    require(count("rope.dimension_count") == head_dim, path + ": rotary embeddings over part of a head are not read");
  require(!file.contains("rope_freqs.weight"), path + ": llama3-scaled rotary frequencies (rope_freqs) are not read yet");
  require(file.contains("token_embd.weight") && file.tensor("token_embd.weight").shape.size() == 2,
          path + ": no 2-D token_embd.weight");

  GgufCheckpoint result;
  nlohmann::json& config = result.config;
  config = {{"architectures", {"LlamaForCausalLM"}},
            {"model_type", "llama"},
            {"hidden_act", "silu"},
            {"vocab_size", file.tensor("token_embd.weight").shape[0]},
            {"hidden_size", hidden},
            {"intermediate_size", count("feed_forward_length")},
            {"num_hidden_layers", count("block_count")},
            {"num_attention_heads", heads},
            {"num_key_value_heads", key_value_heads},
            {"head_dim", head_dim},
            {"rms_norm_eps", detail::gguf_number(file, "llama.attention.layer_norm_rms_epsilon", 1e-5)},
            {"rope_theta", detail::gguf_number(file, "llama.rope.freq_base", 10000.0)},
            {"max_position_embeddings", file.metadata().count("llama.context_length") ? count("context_length") : 2048},
            {"tie_word_embeddings", !file.contains("output.weight")}};
  const auto scaling = file.metadata().find("llama.rope.scaling.type");
  if (scaling != file.metadata().end() && scaling->second != "none") {
    require(scaling->second == "linear", path + ": rotary scaling " + scaling->second.dump() + " is not read (none or linear)");
    config["rope_scaling"] = {{"type", "linear"}, {"factor", detail::gguf_number(file, "llama.rope.scaling.factor", 1.0)}};
  }

  double elements = 0;
  for (const GgufTensor& tensor : file.tensors()) elements += static_cast<double>(tensor.elements());
  require_memory(8 * elements, "reading " + path + " as 32-bit floats (" + std::to_string(static_cast<long>(elements)) + " weights)");
  SafetensorsWriter writer;
  for (const GgufTensor& tensor : file.tensors()) {
    const std::string name = detail::hugging_face_tensor_name(tensor.name);
    require(!name.empty(), path + ": tensor '" + tensor.name + "' has no place in a Llama");
    std::vector<float> values = file.float_values(tensor.name);
    const bool query = name.find("self_attn.q_proj") != std::string::npos, key = name.find("self_attn.k_proj") != std::string::npos;
    if (query || key) {
      require(tensor.shape.size() == 2 && tensor.shape[0] % (query ? heads : key_value_heads) == 0,
              path + ": tensor '" + tensor.name + "' is not whole heads");
      values = detail::rotary_rows_halved(values, tensor.shape[0], tensor.shape[1], query ? heads : key_value_heads);
    }
    writer.add(name, tensor.shape, values);
  }
  result.checkpoint = Checkpoint::of_file(SafetensorsFile::from_bytes(writer.to_bytes(), path), path);
  return result;
}

/// Whether `path` names a GGUF file (by its name: a model directory never ends in .gguf).
inline bool is_gguf_path(const std::string& path) {
  return path.size() > 5 && path.compare(path.size() - 5, 5, ".gguf") == 0;
}

/// The model at `path`: a checkpoint directory (streamed, LlamaModel::open) or a GGUF file.
inline LlamaModel open_model(const std::string& path) {
  if (!is_gguf_path(path)) return LlamaModel::open(path);
  GgufCheckpoint gguf = read_gguf_checkpoint(path);
  return LlamaModel::open(LlamaConfig::from_json(gguf.config, path + " (its GGUF metadata)"), std::move(gguf.checkpoint));
}

}  // namespace gsq
