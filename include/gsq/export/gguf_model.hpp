// gsq/export/gguf_model.hpp -- a whole Llama model as one GGUF file that llama.cpp runs: the
// hyper-parameters from config.json as llama.* metadata, the tokenizer from tokenizer.json, and
// the tensors under llama.cpp's names (the container and the block encodings are
// gsq/format/gguf.hpp). Quantized linears are stored exactly: 4-bit codes with groups that are a
// multiple of 32 as Q4_0, 2-bit and ternary codes with groups of 256 as TQ2_0 and with other
// groups that are a multiple of 64 as Q2_0, K-quant linears as
// their own type (Q2_K, Q3_K, Q4_K). Everything else keeps its stored precision (F32, F16 or
// BF16; norms F32).
//
// llama.cpp applies rotary embeddings to adjacent pairs of dimensions, Hugging Face's Llama to
// the two halves of each head; so, as llama.cpp's own converter does, the rows of q_proj and
// k_proj are permuted within each head: row h d + 2 i + j of the GGUF tensor is row
// h d + j d / 2 + i of the checkpoint's. A row moves with its codes and scales, so the
// permutation keeps the quantization exact (K-quant rows hold whole super-blocks).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/export/quantized_model.hpp"
#include "gsq/format/gguf.hpp"
#include "gsq/io/regular_file.hpp"
#include "gsq/model/gguf_checkpoint.hpp"
#include "gsq/model/rotary.hpp"

namespace gsq {

/// The ggml type that holds `tensor` exactly, or why none does.
inline GgmlType exact_ggml_type(const QuantizedTensor& tensor, std::string* why = nullptr) {
  const GridSpec& grid = tensor.grid;
  if (grid.min_level == -8 && grid.max_level == 7 && tensor.group_width % 32 == 0) return GgmlType::Q4_0;
  if (grid.min_level >= -2 && grid.max_level <= 1 && tensor.group_width == 256) return GgmlType::TQ2_0;  // 2.06 bits
  if (grid.min_level >= -2 && grid.max_level <= 1 && tensor.group_width % 64 == 0) return GgmlType::Q2_0;
  if (why)
    *why = std::string("GGUF holds gsq's codes exactly as Q4_0 (int4, groups a multiple of 32), TQ2_0 (int2 or "
                       "ternary, groups of 256) or Q2_0 (int2 or ternary, groups a multiple of 64); this model is ") +
           grid.name + " with groups of " +
           std::to_string(tensor.group_width) + " columns";
  return GgmlType::F32;
}

namespace detail {

/// The parsed tokenizer.json of `directory`; an error unless it is a BPE tokenizer (what the
/// GGUF export writes).
inline nlohmann::json bpe_tokenizer(const std::string& directory) {
  const std::string path = directory + "/tokenizer.json";
  require(std::filesystem::exists(path), "the GGUF export needs the model's tokenizer.json, and " + directory + " has none");
  const nlohmann::json tokenizer =
      nlohmann::json::parse(read_regular_file(path, "tokenizer", std::size_t(1) << 30), nullptr, false);
  require(tokenizer.is_object() && tokenizer.contains("model") && tokenizer["model"].is_object() &&
              tokenizer["model"].value("type", "") == "BPE" && tokenizer["model"].contains("vocab"),
          path + ": the GGUF export writes BPE tokenizers (model.type \"BPE\" with a vocab)");
  return tokenizer;
}

/// Copies row `from` of `source` into row `to` of `target`: `per_row` values a row.
template <class T>
void copy_row(const std::vector<T>& source, std::vector<T>& target, long per_row, long from, long to) {
  std::copy_n(source.begin() + from * per_row, per_row, target.begin() + to * per_row);
}

/// Row `from` of `source` into row `to` of `target`: its codes and scales...
inline void copy_row(const QuantizedTensor& source, QuantizedTensor& target, long from, long to) {
  copy_row(source.codes, target.codes, source.cols, from, to);
  copy_row(source.scales, target.scales, source.groups_per_row(), from, to);
}

/// ... or its codes, sub-block codes and super-block factors (rows hold whole super-blocks).
inline void copy_row(const KQuantTensor& source, KQuantTensor& target, long from, long to) {
  const long subs = source.cols / source.format->sub_block, supers = source.cols / KQuantFormat::super_block;
  copy_row(source.codes, target.codes, source.cols, from, to);
  copy_row(source.scale_codes, target.scale_codes, subs, from, to);
  copy_row(source.d, target.d, supers, from, to);
  if (source.format->has_min) {
    copy_row(source.min_codes, target.min_codes, subs, from, to);
    copy_row(source.dmin, target.dmin, supers, from, to);
  }
}

/// `tensor` with its rows permuted from Hugging Face's rotary layout to llama.cpp's (see above),
/// for `heads` heads.
template <class Tensor>
Tensor rotary_rows_interleaved(const Tensor& tensor, long heads) {
  Tensor out = tensor;
  const long head_dim = tensor.rows / heads, half = head_dim / 2;
  for (long head = 0; head < heads; ++head)
    for (long i = 0; i < half; ++i)
      for (long j = 0; j < 2; ++j) copy_row(tensor, out, head * head_dim + j * half + i, head * head_dim + 2 * i + j);
  return out;
}

/// The token table (text and type per id) of the model's tokenizer.json (`tokenizer`, parsed by
/// bpe_tokenizer), for a vocabulary of `vocab_size`: an error names an id outside it or an id
/// given to two different tokens.
struct GgufTokens {
  std::vector<std::string> texts;
  std::vector<std::int32_t> types;  // llama.cpp's: 1 normal, 3 control, 4 user-defined, 5 unused
};
inline GgufTokens gguf_tokens(const nlohmann::json& tokenizer, long vocab_size, const std::string& path) {
  GgufTokens table{std::vector<std::string>(static_cast<std::size_t>(vocab_size)), std::vector<std::int32_t>(static_cast<std::size_t>(vocab_size), 0)};
  const auto place = [&](const nlohmann::json& id_value, const std::string& text, std::int32_t type) {
    require(id_value.is_number_integer(), path + ": token '" + text + "' has no integer id");
    const long id = id_value.get<long>();
    require(id >= 0 && id < vocab_size, path + ": token id " + std::to_string(id) + " is outside the model's vocabulary of " +
                                            std::to_string(vocab_size));
    const auto index = static_cast<std::size_t>(id);
    require(table.types[index] == 0 || table.texts[index] == text,
            path + ": token id " + std::to_string(id) + " is given to both '" + table.texts[index] + "' and '" + text + "'");
    table.texts[index] = text;
    table.types[index] = type;
  };
  for (const auto& [text, id] : tokenizer["model"]["vocab"].items()) place(id, text, 1);  // normal
  if (tokenizer.contains("added_tokens"))
    for (const nlohmann::json& added : tokenizer["added_tokens"]) {
      require(added.is_object() && added.contains("content") && added["content"].is_string(),
              path + ": an added token without \"content\"");
      place(added.value("id", nlohmann::json()), added["content"].get<std::string>(), added.value("special", false) ? 3 : 4);
    }
  for (std::size_t id = 0; id < table.texts.size(); ++id)
    if (table.types[id] == 0) table.texts[id] = "[PAD" + std::to_string(id) + "]", table.types[id] = 5;  // unused
  return table;
}

/// The tokenizer.ggml.* metadata from the model's tokenizer.json (`tokenizer`, parsed by
/// bpe_tokenizer) and tokenizer_config.json, for the model's vocabulary.
inline void set_gguf_tokenizer(GgufWriter& writer, const QuantizedModel& model, const nlohmann::json& tokenizer) {
  const GgufTokens table = gguf_tokens(tokenizer, model.config.vocab_size, model.directory + "/tokenizer.json");
  std::vector<std::string> merges;
  for (const nlohmann::json& merge : tokenizer["model"].value("merges", nlohmann::json::array()))
    merges.push_back(merge.is_string() ? merge.get<std::string>()
                                       : merge.at(0).get<std::string>() + " " + merge.at(1).get<std::string>());
  writer.set("tokenizer.ggml.model", std::string("gpt2"));
  writer.set("tokenizer.ggml.pre", std::string("default"));
  writer.set("tokenizer.ggml.tokens", table.texts);
  writer.set("tokenizer.ggml.token_type", table.types);
  writer.set("tokenizer.ggml.merges", merges);
  for (const char* key : {"bos_token_id", "eos_token_id", "pad_token_id"})
    if (model.config_json.contains(key) && model.config_json[key].is_number_integer())
      writer.set(std::string("tokenizer.ggml.") + key, model.config_json[key].get<std::uint32_t>());
  bool add_bos = false;
  const std::string config_path = model.directory + "/tokenizer_config.json";
  if (std::filesystem::exists(config_path)) {
    const nlohmann::json config = nlohmann::json::parse(read_regular_file(config_path, "tokenizer config", std::size_t(1) << 26),
                                                        nullptr, false);
    if (config.is_object() && config.contains("add_bos_token") && config["add_bos_token"].is_boolean())
      add_bos = config["add_bos_token"].get<bool>();
  }
  writer.set("tokenizer.ggml.add_bos_token", add_bos);
}

}  // namespace detail

/// Why `model` cannot be written as GGUF, or empty; when it can, `tokenizer` (if given) receives
/// its parsed tokenizer.json.
inline std::string gguf_unsupported(const QuantizedModel& model, nlohmann::json* tokenizer = nullptr) {
  const LlamaConfig& config = model.config;
  if (config.architecture != "LlamaForCausalLM")
    return "the GGUF export writes Llama models (LlamaForCausalLM), not " + config.architecture;
  if (config.qkv_bias || config.output_bias || config.mlp_bias) return "the GGUF export writes Llama models without biases";
  if (config.rotary.type != "default" && config.rotary.type != "linear" && config.rotary.type != "llama3")
    return "the GGUF export writes rotary scaling default, linear or llama3, not " + config.rotary.type;
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
  const auto count = [](long value) { return static_cast<std::uint32_t>(value); };
  GgufWriter writer;
  writer.set("general.architecture", std::string("llama"));
  writer.set("general.name", model.name);
  writer.set("llama.vocab_size", count(config.vocab_size));
  writer.set("llama.context_length", count(model.config_json.value("max_position_embeddings", 2048L)));
  writer.set("llama.embedding_length", count(config.hidden_size));
  writer.set("llama.block_count", count(config.layers));
  writer.set("llama.feed_forward_length", count(config.intermediate_size));
  writer.set("llama.attention.head_count", count(config.attention_heads));
  writer.set("llama.attention.head_count_kv", count(config.key_value_heads));
  writer.set("llama.attention.key_length", count(config.head_dim));
  writer.set("llama.attention.value_length", count(config.head_dim));
  writer.set("llama.attention.layer_norm_rms_epsilon", static_cast<float>(config.rms_norm_eps));
  writer.set("llama.rope.dimension_count", count(config.head_dim));
  writer.set("llama.rope.freq_base", static_cast<float>(config.rotary.theta));
  if (config.rotary.type == "linear") {
    writer.set("llama.rope.scaling.type", std::string("linear"));
    writer.set("llama.rope.scaling.factor", static_cast<float>(config.rotary.factor));
  }
  detail::set_gguf_tokenizer(writer, model, tokenizer);

  for (const std::string& name : model.checkpoint.tensor_names()) {
    const std::string gguf_name = detail::llama_cpp_tensor_name(name);
    if (gguf_name.empty()) {
      require(name.find("rotary_emb.inv_freq") != std::string::npos,
              "GGUF export: tensor '" + name + "' has no place in llama.cpp's Llama");
      continue;  // recomputed from the metadata
    }
    const TensorInfo& info = model.checkpoint.info(name);
    const bool query = gguf_name.find("attn_q.") != std::string::npos, key = gguf_name.find("attn_k.") != std::string::npos;
    const auto in_llama_cpp_order = [&](const auto& tensor) {
      return query || key ? detail::rotary_rows_interleaved(tensor, query ? config.attention_heads : config.key_value_heads)
                          : tensor;
    };
    if (const QuantizedTensor* linear = model.linear(name)) {
      const QuantizedTensor stored = in_llama_cpp_order(*linear);
      const GgmlType type = exact_ggml_type(stored);
      writer.add_tensor(gguf_name, info.shape, type, type == GgmlType::Q4_0   ? encode_q4_0(stored)
                                                      : type == GgmlType::TQ2_0 ? encode_tq2_0(stored)
                                                                                : encode_q2_0(stored));
    } else if (const KQuantTensor* blocks = model.k_quant(name)) {
      writer.add_tensor(gguf_name, info.shape, static_cast<GgmlType>(blocks->format->ggml_type),
                        encode_k_quant(in_llama_cpp_order(*blocks)));
    } else if (info.shape.size() == 2 && (info.dtype == Dtype::F32 || info.dtype == Dtype::F16 || info.dtype == Dtype::BF16)) {
      // Same little-endian element encoding in both files.
      const GgmlType type = info.dtype == Dtype::F32 ? GgmlType::F32 : info.dtype == Dtype::F16 ? GgmlType::F16 : GgmlType::BF16;
      writer.add_tensor(gguf_name, info.shape, type, model.raw_bytes(name));
    } else {
      const FloatTensor values = model.checkpoint.float_tensor(name);
      Matrix<float> flat(1, static_cast<long>(values.values.size()));
      flat.values = values.values;
      writer.add_tensor(gguf_name, values.shape, GgmlType::F32, encode_float(flat, GgmlType::F32));
    }
  }
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
