// gsq/model/gguf_checkpoint.hpp -- a llama.cpp GGUF file as the Hugging Face checkpoint it was made
// from: its config.json rebuilt from the GGUF metadata, its tensors dequantized (as ggml does)
// under Hugging Face's names and in Hugging Face's layout. So `evaluate_model --model FILE.gguf`
// scores a GGUF exactly as its safetensors twin, and one tool compares gsq's files with
// llama-quantize's.
//
//   const gsq::LlamaModel model = gsq::open_model("model-Q4_K_M.gguf");  // or a checkpoint directory
//
// Read: general.architecture as llama.cpp's convert_hf_to_gguf.py writes it --
//   llama       Llama, Mistral, SmolLM; with experts, Mixtral. Only for llama does the converter
//               permute the q/k rows into llama.cpp's rotary order: they are put back. A llama3
//               rope is kept by llama.cpp only as one divisor per rotary frequency (rope_freqs)
//               and is applied as exactly those divisors.
//   qwen2, qwen3, qwen2moe, qwen3moe
//               Qwen2's q/k/v biases, Qwen3's q/k norms, Qwen2-MoE's shared expert and its gate.
//   deepseek2   DeepSeek-V3 and Kimi-K2: latent attention (kv_b_proj rebuilt from the attn_k_b and
//               attn_v_b halves the converter splits it into), sigmoid routing with its
//               correction bias, YaRN.
// Which tensor is which, and what each is made of (a stacked expert tensor, ffn_gate_exps ...:
// experts x out x in, becomes one tensor per expert), is gsq/model/gguf_layout.hpp's table, the
// one the GGUF export writes by.
// What the metadata leaves out is read as llama.cpp runs the file: top-k weights renormalised
// for qwen3moe and Mixtral, not for qwen2moe; a mixture in every qwen*moe layer; DeepSeek's
// rotary pairs adjacent, YaRN's mscale equal to mscale_all_dim. Refused by name: other
// architectures; a deepseek2 file routed by softmax (DeepSeek-V2: no expert_gating_func 2);
// rotary scaling other than none, linear, llama's rope_freqs and deepseek2's YaRN; a missing
// tensor, and any tensor the model has no place for (by llama.cpp's name). Checked against
// llama.cpp's own converter on every tiny fixture (tests/interop/check_gguf_fixtures.sh). The
// tensors are held in memory as 32-bit floats (4 bytes a weight; 8 while they are converted,
// checked against the machine's memory first).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/common/error.hpp"
#include "gsq/common/memory.hpp"
#include "gsq/format/gguf_file.hpp"
#include "gsq/io/safetensors.hpp"
#include "gsq/model/config.hpp"
#include "gsq/model/gguf_layout.hpp"
#include "gsq/model/llama.hpp"

namespace gsq {

struct GgufCheckpoint {
  nlohmann::json config;  // as a config.json would say it, but for a llama3-scaled rope (below)
  std::vector<float> rope_frequency_factors;  // llama.cpp's rope_freqs (its llama3 scaling); empty: none
  Checkpoint checkpoint;  // Hugging Face's names and layout, F32, in memory

  /// The model's settings: `config` parsed, the rope's frequency factors applied.
  LlamaConfig model_config() const {
    LlamaConfig parsed = LlamaConfig::from_json(config, checkpoint.source() + " (its GGUF metadata)");
    parsed.rotary.frequency_factors = rope_frequency_factors;
    return parsed;
  }
};

namespace detail {

/// Rows of `values` (rows x cols) from llama.cpp's rotary order back to Hugging Face's, for
/// `heads` heads.
inline std::vector<float> rotary_rows_halved(const std::vector<float>& values, long rows, long cols, long heads) {
  std::vector<float> out(values.size());
  const std::vector<long> order = llama_cpp_rotary_order(rows, heads);
  for (long row = 0; row < rows; ++row)
    std::copy_n(values.begin() + row * cols, cols, out.begin() + order[static_cast<std::size_t>(row)] * cols);
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

/// An architecture's hyper-parameters: the metadata under "<architecture>.".
struct GgufHyperparameters {
  const GgufFile& file;
  std::string architecture;

  std::string key(const std::string& name) const { return architecture + "." + name; }
  bool has(const std::string& name) const { return file.metadata().count(key(name)) != 0; }
  long count(const std::string& name) const { return gguf_count(file, key(name)); }
  long count(const std::string& name, long fallback) const { return has(name) ? count(name) : fallback; }
  double number(const std::string& name, double fallback) const { return gguf_number(file, key(name), fallback); }
  bool flag(const std::string& name, bool fallback) const {
    if (!has(name)) return fallback;
    const nlohmann::json& value = file.value(key(name));
    require(value.is_boolean(), file.path() + ": metadata \"" + key(name) + "\" is not true or false");
    return value.get<bool>();
  }
  std::string text(const std::string& name, const std::string& fallback) const {
    if (!has(name)) return fallback;
    const nlohmann::json& value = file.value(key(name));
    require(value.is_string(), file.path() + ": metadata \"" + key(name) + "\" is not a string");
    return value.get<std::string>();
  }
};

/// config.json of the GGUF `file` of architecture `architecture` (one of gguf_architectures()),
/// from its metadata; what the metadata leaves out as llama.cpp runs the file.
inline nlohmann::json gguf_config(const GgufFile& file, const std::string& architecture, const std::string& hugging_face) {
  const GgufHyperparameters meta{file, architecture};
  const std::string& path = file.path();
  const long heads = meta.count("attention.head_count"), hidden = meta.count("embedding_length");
  require(heads > 0 && hidden > 0, path + ": no attention heads or an empty embedding");
  require(file.contains("token_embd.weight") && file.tensor("token_embd.weight").shape.size() == 2,
          path + ": no 2-D token_embd.weight");
  nlohmann::json config = {{"architectures", {hugging_face}},
                           {"hidden_act", "silu"},
                           {"vocab_size", file.tensor("token_embd.weight").shape[0]},
                           {"hidden_size", hidden},
                           {"intermediate_size", meta.count("feed_forward_length")},
                           {"num_hidden_layers", meta.count("block_count")},
                           {"num_attention_heads", heads},
                           {"num_key_value_heads", meta.count("attention.head_count_kv", heads)},
                           {"rms_norm_eps", meta.number("attention.layer_norm_rms_epsilon", 1e-5)},
                           {"rope_theta", meta.number("rope.freq_base", 10000.0)},
                           {"max_position_embeddings", meta.count("context_length", 2048)},
                           {"tie_word_embeddings", !file.contains("output.weight")}};
  if (architecture == "deepseek2") {
    // llama.cpp's latent-attention layout: key_length_mla and value_length_mla are a head's
    // query/key and value widths (key_length and value_length describe its absorbed form).
    const long rope = meta.count("rope.dimension_count"), key = meta.count("attention.key_length_mla");
    require(key > rope, path + ": attention.key_length_mla " + std::to_string(key) + " leaves no room beside the rope's " +
                            std::to_string(rope) + " dimensions");
    const long gating = meta.count("expert_gating_func", 0);
    require(gating == 2, path + ": deepseek2.expert_gating_func is " +
                             (gating ? std::to_string(gating) : "absent (llama.cpp then routes by softmax, as DeepSeek-V2)") +
                             "; gsq runs DeepSeek-V3's sigmoid routing (2)");
    config.update({{"num_key_value_heads", heads},  // the converter writes 1 for the absorbed form
                   {"q_lora_rank", meta.count("attention.q_lora_rank", 0)},
                   {"kv_lora_rank", meta.count("attention.kv_lora_rank")},
                   {"qk_rope_head_dim", rope},
                   {"qk_nope_head_dim", key - rope},
                   {"v_head_dim", meta.count("attention.value_length_mla")},
                   {"rope_interleave", true},  // llama.cpp rotates adjacent pairs here, and the converter leaves rows alone
                   {"n_routed_experts", meta.count("expert_count")},
                   {"moe_intermediate_size", meta.count("expert_feed_forward_length")},
                   {"n_shared_experts", meta.count("expert_shared_count")},
                   {"n_group", meta.count("expert_group_count", 1)},
                   {"topk_group", meta.count("expert_group_used_count", 1)},
                   {"routed_scaling_factor", meta.number("expert_weights_scale", 1.0)},
                   {"norm_topk_prob", meta.flag("expert_weights_norm", false)},
                   {"first_k_dense_replace", meta.count("leading_dense_block_count", 0)},
                   {"scoring_func", "sigmoid"},
                   {"topk_method", "noaux_tc"}});
  } else {
    const long head_dim = meta.count("attention.key_length", hidden / heads);
    require(head_dim > 0 && (meta.has("attention.key_length") || hidden % heads == 0),
            path + ": the attention heads (" + std::to_string(heads) + ") do not divide the embedding length (" +
                std::to_string(hidden) + ")");
    require(meta.count("attention.value_length", head_dim) == head_dim, path + ": values wider or narrower than keys are not read");
    require(meta.count("rope.dimension_count", head_dim) == head_dim, path + ": rotary embeddings over part of a head are not read");
    config["head_dim"] = head_dim;
  }
  if (architecture == "qwen2" || architecture == "qwen2moe") config["qkv_bias"] = true;
  if (meta.has("expert_count")) config["num_experts_per_tok"] = meta.count("expert_used_count");
  if (architecture == "llama" && meta.has("expert_count")) {
    config["architectures"] = {"MixtralForCausalLM"};
    config["num_local_experts"] = meta.count("expert_count");
    config["intermediate_size"] = meta.count("expert_feed_forward_length", meta.count("feed_forward_length"));
  }
  if (architecture == "qwen2moe" || architecture == "qwen3moe") {
    config.update({{"num_experts", meta.count("expert_count")},
                   {"moe_intermediate_size", meta.count("expert_feed_forward_length")},
                   {"norm_topk_prob", architecture == "qwen3moe"},  // fixed in llama.cpp's graphs, not stored
                   {"decoder_sparse_step", 1},                     // llama.cpp has a mixture in every layer
                   {"mlp_only_layers", nlohmann::json::array()}});
    if (architecture == "qwen2moe")  // llama.cpp's fallback width: the dense one
      config["shared_expert_intermediate_size"] = meta.count("expert_shared_feed_forward_length", meta.count("feed_forward_length"));
  }

  const std::string scaling = meta.text("rope.scaling.type", "none");
  if (scaling == "linear") {
    config["rope_scaling"] = {{"rope_type", "linear"}, {"factor", meta.number("rope.scaling.factor", 1.0)}};
  } else if (scaling == "yarn" && architecture == "deepseek2") {
    // The converter stores 0.1 mscale_all_dim; llama.cpp takes mscale equal to it. Without it (or
    // with an attention factor of its own) llama.cpp scales otherwise than transformers would.
    const double mscale = static_cast<float>(meta.number("rope.scaling.yarn_log_multiplier", 0)) / 0.1f;
    require(mscale > 0 && !meta.has("rope.scaling.yarn_attn_factor") && !meta.has("rope.scaling.yarn_ext_factor"),
            path + ": YaRN is read with a positive yarn_log_multiplier and without yarn_attn_factor or yarn_ext_factor");
    config["rope_scaling"] = {{"rope_type", "yarn"},
                              {"factor", meta.number("rope.scaling.factor", 1.0)},
                              {"original_max_position_embeddings", meta.count("rope.scaling.original_context_length")},
                              {"beta_fast", meta.number("rope.scaling.yarn_beta_fast", 32.0)},
                              {"beta_slow", meta.number("rope.scaling.yarn_beta_slow", 1.0)},
                              {"mscale", mscale},
                              {"mscale_all_dim", mscale}};
  } else {
    require(scaling == "none", path + ": rotary scaling \"" + scaling + "\" is not read for " + architecture +
                                   " (none or linear; yarn for deepseek2; llama3 as llama's rope_freqs)");
  }
  return config;
}

/// The tensors of a GGUF file converted one by one into a safetensors writer, each taken once;
/// what is never taken has no place in the model.
class GgufTensorReader {
 public:
  explicit GgufTensorReader(const GgufFile& file) : file_(file) {}

  /// Tensor `name`'s values; an error unless it is there (in `shape`, if given).
  std::vector<float> take(const std::string& name, const std::vector<std::int64_t>& shape = {}) {
    require(file_.contains(name), file_.path() + ": no tensor '" + name + "'");
    const std::vector<std::int64_t>& stored = file_.tensor(name).shape;
    require(shape.empty() || stored == shape, file_.path() + ": tensor '" + name + "' has shape " + shape_text(stored) +
                                                  ", not " + shape_text(shape));
    taken_.insert(name);
    return file_.float_values(name);
  }

  /// Tensor `name`'s values, an error unless they are `shape`'s count (a 1 x n tensor may be
  /// stored as n).
  std::vector<float> take_as(const std::string& name, const std::vector<std::int64_t>& shape) {
    std::vector<float> values = take(name);
    require(static_cast<std::size_t>(shape_elements(shape)) == values.size(),
            file_.path() + ": tensor '" + name + "' has shape " + shape_text(file_.tensor(name).shape) + ", not " + shape_text(shape));
    return values;
  }

  void add(const std::string& hugging_face, const std::vector<std::int64_t>& shape, const std::vector<float>& values) {
    writer_.add(hugging_face, shape, values);
  }

  /// The checkpoint, after an error for any tensor not taken.
  Checkpoint finish(const std::string& architecture) {
    for (const GgufTensor& tensor : file_.tensors())
      require(taken_.count(tensor.name) != 0, file_.path() + ": tensor '" + tensor.name + "' has no place in the " + architecture +
                                                  " model this file's metadata describes");
    return Checkpoint::of_file(SafetensorsFile::from_bytes(writer_.to_bytes(), file_.path()), file_.path());
  }

 private:
  static std::int64_t shape_elements(const std::vector<std::int64_t>& shape) {
    std::int64_t count = 1;
    for (const std::int64_t size : shape) count *= size;
    return count;
  }

  const GgufFile& file_;
  SafetensorsWriter writer_;
  std::set<std::string> taken_;
};

}  // namespace detail

/// Reads the GGUF file at `path` as a Hugging Face checkpoint (see the top of this file).
inline GgufCheckpoint read_gguf_checkpoint(const std::string& path) {
  const GgufFile file = GgufFile::open(path);
  const nlohmann::json& architecture_value = file.value("general.architecture");
  const auto& architectures = gguf_architectures();
  const auto family = std::find_if(architectures.begin(), architectures.end(),
                                   [&](const GgufArchitecture& pair) { return architecture_value == pair.llama_cpp; });
  if (family == architectures.end()) {
    std::string names;
    for (const GgufArchitecture& pair : architectures)
      if (names.find(pair.llama_cpp) == std::string::npos) names += (names.empty() ? "" : ", ") + std::string(pair.llama_cpp);
    throw Error(path + ": general.architecture is " + architecture_value.dump() + "; gsq reads GGUF files of architecture " + names);
  }
  const std::string architecture = family->llama_cpp;

  GgufCheckpoint result;
  result.config = detail::gguf_config(file, architecture, family->hugging_face);
  const LlamaConfig config = LlamaConfig::from_json(result.config, path + " (its GGUF metadata)");
  double elements = 0;
  for (const GgufTensor& tensor : file.tensors()) elements += static_cast<double>(tensor.elements());
  require_memory(8 * elements, "reading " + path + " as 32-bit floats (" + std::to_string(static_cast<long>(elements)) + " weights)");

  detail::GgufTensorReader tensors(file);
  if (architecture == "llama" && file.contains("rope_freqs.weight")) {
    result.rope_frequency_factors = tensors.take("rope_freqs.weight", {config.rotary_dim / 2});
    for (const float factor : result.rope_frequency_factors)
      require(factor > 0 && std::isfinite(factor), path + ": rope_freqs.weight holds " + std::to_string(factor) + ", not a positive factor");
  }
  std::vector<float> keys;  // attn_k_b, until attn_v_b (next) completes kv_b_proj
  for (const GgufTensorLayout& tensor : gguf_layout(config)) {
    const std::vector<float> values = tensors.take_as(tensor.gguf, tensor.gguf_shape(config));
    const std::vector<std::int64_t>& shape = tensor.shape;
    switch (tensor.form) {
      case GgufForm::same:
        tensors.add(tensor.checkpoint[0], shape, values);
        break;
      case GgufForm::rotary_rows: {
        const long rows = shape[0], cols = shape.size() > 1 ? shape[1] : 1;
        require(rows % (2 * tensor.heads) == 0, path + ": tensor '" + tensor.gguf + "' is not whole heads");
        tensors.add(tensor.checkpoint[0], shape, detail::rotary_rows_halved(values, rows, cols, tensor.heads));
        break;
      }
      case GgufForm::stacked: {
        const std::size_t size = values.size() / tensor.checkpoint.size();
        for (std::size_t expert = 0; expert < tensor.checkpoint.size(); ++expert)
          tensors.add(tensor.checkpoint[expert], shape,
                      std::vector<float>(values.begin() + static_cast<long>(expert * size), values.begin() + static_cast<long>((expert + 1) * size)));
        break;
      }
      case GgufForm::key_latent:
        keys = values;
        break;
      case GgufForm::value_latent: {
        const long heads = tensor.heads, rank = config.latent.key_value_rank, nope = config.latent.nope_dim,
                   value = config.latent.value_dim, width = nope + value;
        std::vector<float> merged(static_cast<std::size_t>(heads * width * rank));
        for (long head = 0; head < heads; ++head) {
          for (long row = 0; row < nope; ++row)
            for (long col = 0; col < rank; ++col) merged[(head * width + row) * rank + col] = keys[(head * rank + col) * nope + row];
          std::copy_n(values.begin() + head * value * rank, value * rank, merged.begin() + (head * width + nope) * rank);
        }
        tensors.add(tensor.checkpoint[0], shape, merged);
        break;
      }
    }
  }
  result.checkpoint = tensors.finish(architecture);
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
  const LlamaConfig config = gguf.model_config();
  return LlamaModel::open(config, std::move(gguf.checkpoint));
}

}  // namespace gsq
