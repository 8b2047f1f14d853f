// gsq/format/llama_quantize_mix.hpp -- the ggml type llama.cpp's llama-quantize gives each tensor
// of a model for a preset ("Q4_K_M", "Q3_K_S", "Q8_0", ...): its "mix". The rules are those of
// llama.cpp's src/llama-quant.cpp (the commit llama-cpp-python 0.3.36 vendors), written here from
// reading them: tensor_allows_quantization (what stays as it is: norms, 1-D tensors, routers),
// tensor_get_category, llama_tensor_get_type_impl (output and token_embd, the attn_v and
// ffn_down layers that get more bits, use_more_bits, the MoE, GQA, Falcon and 70B cases) and
// tensor_type_fallback (rows that are not whole blocks of the chosen type). Default
// llama-quantize only: no --pure, no --output-tensor-type / --token-embedding-type / --tensor-type
// overrides; the one choice of these presets an imatrix changes (Q4_0 / Q5_0 ffn_down of the first
// eighth of the layers) is a flag. tests/test_gguf_mix.cpp checks known answers, and
// tests/interop/check_llama_quantize_mix.sh checks every tensor against llama-quantize itself.
//
//   const gsq::GgufFile source = gsq::GgufFile::open("model-f32.gguf");
//   std::vector<gsq::GgmlType> types = gsq::llama_quantize_types(gsq::llama_quantize_preset("Q4_K_M"),
//       gsq::llama_quantize_model(source), gsq::llama_quantize_tensors(source));
#pragma once

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "gsq/common/error.hpp"
#include "gsq/format/ggml_types.hpp"
#include "gsq/format/gguf_file.hpp"

namespace gsq {

/// llama-quantize's presets gsq maps (llama.cpp's llama_ftype values in the table below).
enum class LlamaQuantizePreset { Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, Q2_0 };

/// A preset: llama-quantize's name for it, its llama_ftype number (the file's general.file_type)
/// and the type of every tensor no rule moves (llama_ftype_get_default_type).
struct LlamaQuantizePresetInfo {
  LlamaQuantizePreset preset;
  const char* name;
  int ftype;
  GgmlType base;
};

inline const std::vector<LlamaQuantizePresetInfo>& llama_quantize_presets() {
  using P = LlamaQuantizePreset;
  using T = GgmlType;
  static const std::vector<LlamaQuantizePresetInfo> presets = {
      {P::Q4_0, "Q4_0", 2, T::Q4_0},       {P::Q4_1, "Q4_1", 3, T::Q4_1},       {P::Q5_0, "Q5_0", 8, T::Q5_0},
      {P::Q5_1, "Q5_1", 9, T::Q5_1},       {P::Q8_0, "Q8_0", 7, T::Q8_0},       {P::Q2_K, "Q2_K", 10, T::Q2_K},
      {P::Q3_K_S, "Q3_K_S", 11, T::Q3_K},  {P::Q3_K_M, "Q3_K_M", 12, T::Q3_K},  {P::Q3_K_L, "Q3_K_L", 13, T::Q3_K},
      {P::Q4_K_S, "Q4_K_S", 14, T::Q4_K},  {P::Q4_K_M, "Q4_K_M", 15, T::Q4_K},  {P::Q5_K_S, "Q5_K_S", 16, T::Q5_K},
      {P::Q5_K_M, "Q5_K_M", 17, T::Q5_K},  {P::Q6_K, "Q6_K", 18, T::Q6_K},      {P::Q2_0, "Q2_0", 41, T::Q2_0}};
  return presets;
}

inline const LlamaQuantizePresetInfo& llama_quantize_preset_info(LlamaQuantizePreset preset) {
  for (const LlamaQuantizePresetInfo& info : llama_quantize_presets())
    if (info.preset == preset) return info;
  throw Error("unknown llama-quantize preset " + std::to_string(static_cast<int>(preset)));
}

/// The preset llama-quantize calls `name` ("Q4_K_M"; case as llama-quantize spells it), or an
/// error naming the presets gsq knows.
inline LlamaQuantizePreset llama_quantize_preset(const std::string& name) {
  std::string known;
  for (const LlamaQuantizePresetInfo& info : llama_quantize_presets()) {
    if (name == info.name) return info.preset;
    known += (known.empty() ? "" : ", ") + std::string(info.name);
  }
  throw Error("unknown llama-quantize preset \"" + name + "\" (gsq knows " + known + ")");
}

/// One tensor as the source GGUF holds it: llama.cpp's name, ggml's ne (columns first) and its
/// type there (what a tensor llama-quantize leaves alone keeps).
struct LlamaQuantizeTensor {
  std::string name;
  std::vector<std::int64_t> ne;
  GgmlType type = GgmlType::F32;
};

/// The facts about the model the rules read: general.architecture, {arch}.block_count,
/// {arch}.expert_count (0 for a dense model), head counts of the first layer (n_gqa() is their
/// quotient).
struct LlamaQuantizeModel {
  std::string architecture = "llama";
  long n_layer = 0;
  long n_expert = 0;
  long n_head = 0;
  long n_head_kv = 0;
};

namespace detail {

inline bool contains(const std::string& text, const char* part) { return text.find(part) != std::string::npos; }

/// ggml_n_dims: the dimensions up to the last one above 1 (a [64, 1] tensor is 1-D).
inline int ggml_dimensions(const std::vector<std::int64_t>& ne) {
  int dims = 1;
  for (std::size_t d = 0; d < ne.size(); ++d)
    if (ne[d] > 1) dims = static_cast<int>(d) + 1;
  return dims;
}

/// The number n of a name "blk.n....", or false (as sscanf(name, "blk.%d.") reads it).
inline bool block_number(const std::string& name, long& layer) {
  if (name.compare(0, 4, "blk.") != 0) return false;
  std::size_t at = 4;
  bool negative = false;
  if (at < name.size() && (name[at] == '-' || name[at] == '+')) negative = name[at++] == '-';
  const std::size_t first = at;
  long value = 0;
  while (at < name.size() && std::isdigit(static_cast<unsigned char>(name[at]))) value = 10 * value + (name[at++] - '0');
  if (at == first) return false;
  layer = negative ? -value : value;
  return true;
}

/// llama.cpp's tensor_allows_quantization (default parameters): what llama-quantize may quantize.
inline bool llama_allows_quantization(const std::string& arch, const LlamaQuantizeTensor& tensor) {
  if (ggml_dimensions(tensor.ne) < 2) return false;
  const std::string& name = tensor.name;
  if (name.size() < 6 || name.compare(name.size() - 6, 6, "weight") != 0) return false;
  if (name == "position_embd.weight" || name == "token_types.weight") return false;
  static const char* const kept[] = {
      "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel", "per_layer_model_proj",
      "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight", "indexer.q_proj.weight",
      "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight", "time_mix_v0.weight",
      "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight",
      "time_mix_g1.weight", "time_mix_g2.weight", "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
      "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.", "sam.net_",
      ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd"};
  for (const char* part : kept)
    if (contains(name, part)) return false;
  if (arch == "glm5-next") {
    static const char* const glm[] = {"hc_", "indexer.attn_q_b", "indexer.attn_k", "indexer.proj", "indexer_compressor_gate",
                                      "indexer_compressor_ape", "ssm_f_a.weight", "ssm_f_b.weight", "ssm_g_a.weight",
                                      "ssm_g_b.weight", "ssm_beta.weight", "attn_kv_a_mqa.weight", "attn_k_b.weight",
                                      "attn_v_b.weight"};
    for (const char* part : glm)
      if (contains(name, part)) return false;
  }
  return true;
}

/// llama.cpp's tensor_get_category: the broad roles the rules name.
enum class LlamaTensorRole { Output, TokenEmbedding, AttentionQkv, AttentionKvB, AttentionV, AttentionK, AttentionQ,
                             AttentionOutput, FfnUp, FfnGate, FfnDown, Other };

inline LlamaTensorRole llama_tensor_role(const std::string& name) {
  using R = LlamaTensorRole;
  if (name == "output.weight") return R::Output;
  if (name == "token_embd.weight" || name == "per_layer_token_embd.weight") return R::TokenEmbedding;
  static const std::pair<const char*, R> parts[] = {
      {"attn_qkv.weight", R::AttentionQkv}, {"attn_kv_b.weight", R::AttentionKvB}, {"attn_v.weight", R::AttentionV},
      {"attn_k.weight", R::AttentionK},     {"attn_q.weight", R::AttentionQ},      {"attn_output.weight", R::AttentionOutput},
      {"ffn_up", R::FfnUp},                 {"ffn_gate", R::FfnGate},              {"ffn_down", R::FfnDown}};
  for (const auto& [part, role] : parts)
    if (contains(name, part)) return role;
  return R::Other;
}

/// category_is_attn_v: the value projections (alone, fused or latent) the rules give more bits.
inline bool llama_value_role(LlamaTensorRole role) {
  return role == LlamaTensorRole::AttentionV || role == LlamaTensorRole::AttentionQkv || role == LlamaTensorRole::AttentionKvB;
}

/// The model types llama.cpp's loaders call LLM_TYPE_70B (only they change a rule): llama with 80
/// layers and grouped-query attention (not 8 experts), qwen2 / deci / olmo with 80, jais2 with 68.
inline bool llama_is_70b(const LlamaQuantizeModel& model) {
  const std::string& arch = model.architecture;
  if (arch == "llama") return model.n_expert != 8 && model.n_layer == 80 && model.n_head != model.n_head_kv;
  if (arch == "qwen2" || arch == "deci" || arch == "olmo") return model.n_layer == 80;
  return arch == "jais2" && model.n_layer == 68;
}

}  // namespace detail

/// The type llama-quantize writes instead of `type` for rows of `columns` values (its
/// tensor_type_fallback): `type` where the rows are whole blocks of it; else the type of blocks of
/// 32 next to it, and F16 where the rows are not whole blocks of 32 either.
inline GgmlType llama_quantize_fallback(GgmlType type, std::int64_t columns) {
  using T = GgmlType;
  const auto block = [](T of) { return static_cast<std::int64_t>(ggml_type_info(of).block); };
  if (columns % block(type) == 0) return type;
  T smaller = type;
  switch (type) {
    case T::Q2_0: case T::Q2_K: case T::Q3_K: case T::TQ1_0: case T::TQ2_0: smaller = T::Q4_0; break;
    case T::Q4_K: smaller = T::Q5_0; break;
    case T::Q5_K: smaller = T::Q5_1; break;
    case T::Q6_K: smaller = T::Q8_0; break;
    default: require(block(type) <= 32, std::string("llama-quantize has no fallback for ") + ggml_type_info(type).name);
  }
  return columns % block(smaller) == 0 ? smaller : T::F16;
}

/// The ggml type llama-quantize writes for each of `tensors` (in their order) under `preset`,
/// default options, an imatrix given or not. llama-quantize decides in the order its loader
/// keeps the tensors (those outside the layers first, then layer by layer, by name within one);
/// the counters of value projections and ffn_down layers run in that order here too.
inline std::vector<GgmlType> llama_quantize_types(LlamaQuantizePreset preset, const LlamaQuantizeModel& model,
                                                  const std::vector<LlamaQuantizeTensor>& tensors, bool has_imatrix = false) {
  using P = LlamaQuantizePreset;
  using T = GgmlType;
  using R = detail::LlamaTensorRole;
  require(model.n_layer > 0, "llama_quantize_types: the model has no layers (block_count " + std::to_string(model.n_layer) + ")");
  const T base = llama_quantize_preset_info(preset).base;
  const std::string& arch = model.architecture;
  const bool falcon = arch == "falcon", seventy_b = detail::llama_is_70b(model);
  const long n_gqa = model.n_head_kv == 0 ? 0 : model.n_head / model.n_head_kv;  // llama_hparams::n_gqa
  const auto block = [](T type) { return ggml_type_info(type).block; };

  // llama_model_loader's weight_name_comparer: layer number (-1 outside the layers), then name.
  std::vector<std::size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  const auto layer_of = [&](std::size_t i) {
    long layer = -1;
    detail::block_number(tensors[i].name, layer);
    return layer;
  };
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const long la = layer_of(a), lb = layer_of(b);
    return la != lb ? la < lb : tensors[a].name < tensors[b].name;
  });

  // init_quantize_state_counters
  long n_value = 0;
  bool tied_embeddings = true;
  for (const LlamaQuantizeTensor& tensor : tensors) {
    const R role = detail::llama_tensor_role(tensor.name);
    if (detail::llama_value_role(role)) ++n_value;
    if (role == R::Output) tied_embeddings = false;
  }
  const long n_ffn = model.n_layer;
  long i_value = 0, i_ffn_down = 0, i_ffn_gate = 0, i_ffn_up = 0;

  // use_more_bits: the first and last eighth of the layers and every third one between.
  const auto more_bits = [](long i, long n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; };
  // layer_info: with experts, the layer is the one the name says (expert tensors need not be in order).
  const long experts = std::max(1L, model.n_expert);
  const auto layer_info = [&](long counter, const std::string& name) {
    long layer = counter;
    if (experts > 1) {
      require(detail::block_number(name, layer), "llama_quantize_types: cannot tell the layer of tensor " + name);
      require(layer >= 0 && layer < n_ffn, "llama_quantize_types: tensor " + name + " is in layer " + std::to_string(layer) +
                                               ", not in [0, " + std::to_string(n_ffn) + ")");
    }
    return layer;
  };

  // llama_tensor_get_type_impl, for these presets: the type before any fallback.
  const auto choose = [&](const LlamaQuantizeTensor& tensor, R role) -> T {
    const std::string& name = tensor.name;
    T type = base;
    if (arch == "glm5-next" &&
        (detail::contains(name, "attn_q_a") || detail::contains(name, "attn_q_b") || detail::contains(name, "nextn.eh_proj")))
      return T::Q8_0;
    if (role == R::Output || (tied_embeddings && role == R::TokenEmbedding)) {
      if (falcon || tensor.ne[0] % block(base) != 0) return T::Q8_0;
      return base == T::Q8_0 ? T::Q8_0 : T::Q6_K;
    }
    if (role == R::TokenEmbedding) return preset == P::Q2_0 ? T::Q4_K : type;
    if (detail::llama_value_role(role)) {  // (a fused attn_qkv is taken here, never by the attn_qkv rule after it)
      if (preset == P::Q2_K) type = n_gqa >= 4 ? T::Q4_K : T::Q3_K;
      else if (preset == P::Q3_K_M) type = i_value < 2 ? T::Q5_K : T::Q4_K;
      else if (preset == P::Q3_K_L) type = T::Q5_K;
      else if ((preset == P::Q4_K_M || preset == P::Q5_K_M) && more_bits(i_value, n_value)) type = T::Q6_K;
      else if (preset == P::Q4_K_S && i_value < 4) type = T::Q5_K;
      if (seventy_b && (type == T::Q3_K || type == T::Q4_K)) type = T::Q5_K;  // v shared by 8 heads: cheap to widen
      if (model.n_expert == 8) type = T::Q8_0;
      ++i_value;
      return type;
    }
    if (role == R::AttentionK) return model.n_expert == 8 ? T::Q8_0 : type;
    if (role == R::FfnDown) {
      const long layer = layer_info(i_ffn_down, name), n = n_ffn;
      ++i_ffn_down;
      switch (preset) {
        case P::Q2_K: return T::Q3_K;
        case P::Q3_K_M: return layer < n / 16 ? T::Q5_K : !falcon || more_bits(layer, n) ? T::Q4_K : T::Q3_K;
        case P::Q3_K_L: return falcon ? T::Q4_K : T::Q5_K;
        case P::Q4_K_M:
          if (falcon) return layer < n / 16 ? T::Q6_K : more_bits(layer, n) ? T::Q5_K : T::Q4_K;
          return more_bits(layer, n) ? T::Q6_K : type;
        case P::Q5_K_M: return more_bits(layer, n) ? T::Q6_K : type;
        case P::Q4_K_S: return !falcon && layer < n / 8 ? T::Q5_K : type;
        case P::Q4_0: return has_imatrix && layer < n / 8 ? T::Q4_1 : type;
        case P::Q5_0: return has_imatrix && layer < n / 8 ? T::Q5_1 : type;
        default: return type;
      }
    }
    if (role == R::AttentionOutput) {
      if (falcon) return preset == P::Q3_K_L ? T::Q4_K : type;
      if (model.n_expert == 8)
        return preset == P::Q2_K || preset == P::Q3_K_S || preset == P::Q3_K_M || preset == P::Q4_K_S || preset == P::Q4_K_M
                   ? T::Q5_K : type;
      if (preset == P::Q2_K) return T::Q3_K;
      if (preset == P::Q3_K_M) return T::Q4_K;
      if (preset == P::Q3_K_L) return T::Q5_K;
      return type;
    }
    if (role == R::FfnGate) layer_info(i_ffn_gate++, name);  // (no rule of these presets; its checks still run)
    if (role == R::FfnUp) layer_info(i_ffn_up++, name);
    return type;
  };

  std::vector<T> types(tensors.size());
  for (const std::size_t i : order) {
    const LlamaQuantizeTensor& tensor = tensors[i];
    require(!tensor.ne.empty(), "llama_quantize_types: tensor " + tensor.name + " has no shape");
    if (!detail::llama_allows_quantization(arch, tensor)) {
      types[i] = tensor.type;
      continue;
    }
    types[i] = llama_quantize_fallback(choose(tensor, detail::llama_tensor_role(tensor.name)), tensor.ne[0]);
  }
  return types;
}

/// The model facts of a GGUF file's metadata (head counts of the first layer where they are lists).
inline LlamaQuantizeModel llama_quantize_model(const GgufFile& file) {
  LlamaQuantizeModel model;
  model.architecture = file.value("general.architecture").get<std::string>();
  const auto number = [&](const std::string& key, long otherwise) -> long {
    const auto found = file.metadata().find(model.architecture + "." + key);
    if (found == file.metadata().end()) return otherwise;
    const nlohmann::json& value = found->second.is_array() ? found->second.at(0) : found->second;
    return value.get<long>();
  };
  model.n_layer = number("block_count", 0);
  model.n_expert = number("expert_count", 0);
  model.n_head = number("attention.head_count", 0);
  model.n_head_kv = number("attention.head_count_kv", model.n_head);
  return model;
}

/// A GGUF file's tensors as llama_quantize_types takes them (ne: its shape innermost first).
inline std::vector<LlamaQuantizeTensor> llama_quantize_tensors(const GgufFile& file) {
  std::vector<LlamaQuantizeTensor> tensors;
  for (const GgufTensor& tensor : file.tensors())
    tensors.push_back({tensor.name, std::vector<std::int64_t>(tensor.shape.rbegin(), tensor.shape.rend()), tensor.type});
  return tensors;
}

}  // namespace gsq
