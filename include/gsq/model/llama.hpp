// gsq/model/llama.hpp -- a Llama-family causal language model on the host: a Hugging Face checkpoint's
// config (gsq/model/config.hpp) and weights, and its forward pass in the pieces layer-by-layer
// quantization needs.
//
// Each decoder layer is
//   h = x + attention(n),  n = rms_norm(x)
//   y = h + mlp(m),        m = rms_norm(h)
// Attention is grouped-query causal attention with rotary embeddings in Hugging Face's convention
// (q/k/v biases in Qwen2, a per-head RMSNorm of q and k in Qwen3), or DeepSeek-V3's multi-head
// latent attention. The MLP is SwiGLU, down_proj(silu(gate_proj(m)) * up_proj(m)), or a mixture of
// SwiGLU experts that a router picks per token (gsq/model/routing.hpp), with an optional shared
// expert (Mixtral, Qwen2-MoE, Qwen3-MoE, DeepSeek-V3).
//
//   gsq::LlamaModel model = gsq::LlamaModel::load("data/llama-bytes-3m");
//   gsq::HiddenStates hidden = model.embed(tokens, 256);        // tokens: whole windows of 256
//   for (long layer = 0; layer < model.config().layers; ++layer)
//     hidden = model.decoder_layer(layer, hidden, observer);    // observer sees each linear's input
//   gsq::Matrix<float> logits = model.logits(hidden);           // tokens x vocabulary
//
//   gsq::Matrix<float> w = model.linear_weight(0, "mlp.down_proj");   // out x in, as in PyTorch
//   model.set_linear_weight(0, "mlp.down_proj", dequantized);         // swap in a quantized one
//
// load() keeps every weight in float32; open() streams: each decoder layer is read from the
// memory-mapped checkpoint when it runs (or kept from load_layer until release_layer), so that a
// model larger than memory runs one layer at a time.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "gsq/backend/host.hpp"
#include "gsq/common/error.hpp"
#include "gsq/common/matrix.hpp"
#include "gsq/common/memory.hpp"
#include "gsq/common/token_id.hpp"
#include "gsq/io/safetensors.hpp"
#include "gsq/model/attention.hpp"
#include "gsq/model/config.hpp"
#include "gsq/model/rms_norm.hpp"
#include "gsq/model/rotary.hpp"
#include "gsq/model/routing.hpp"

namespace gsq {

/// Throws gsq::Error unless each of the `count` ids is below `vocabulary_size`, naming the
/// position of the first that is not.
inline void require_token_ids_below(const TokenId* tokens, std::size_t count, long vocabulary_size) {
  const TokenId* bad = std::find_if(tokens, tokens + count,
                                    [&](TokenId id) { return static_cast<long>(id) >= vocabulary_size; });
  if (bad != tokens + count)
    throw Error("token id " + std::to_string(*bad) + " at position " + std::to_string(bad - tokens) +
                " is not below the vocabulary size " + std::to_string(vocabulary_size));
}

namespace detail {
/// The index of the first NaN or Inf among `count` values, or -1.
inline long first_non_finite(const float* values, std::size_t count) {
  const float* bad = std::find_if(values, values + count, [](float value) { return !std::isfinite(value); });
  return bad == values + count ? -1 : static_cast<long>(bad - values);
}
}  // namespace detail

/// Hidden states of a batch of independent sequences of equal length, each starting at position
/// 0: row s * sequence_length + t is token t of sequence s.
struct HiddenStates {
  long sequence_length = 0;
  Matrix<float> values;  // (sequences x sequence_length) x hidden_size

  long sequences() const { return sequence_length > 0 ? values.rows / sequence_length : 0; }
};

/// Called by LlamaModel::decoder_layer with the input rows (one per token) of each linear layer
/// it applies, in the order of LlamaConfig::linears(layer). Linears that share an input (q/k/v,
/// gate/up) receive the same matrix object: an observer accumulating X^T X can compute it once
/// for each. A mixture's router ("<block>.gate", never quantized) receives the MLP's input
/// before the experts; an expert receives the rows of the tokens routed to it, possibly none.
using LinearInputObserver = std::function<void(long layer, const std::string& linear, const Matrix<float>& inputs)>;

/// Where a decoder layer's linear weights are read once it is released from memory: called with a
/// linear's checkpoint tensor name and its shape (out x in), it returns the weight.
using LinearSource = std::function<Matrix<float>(const std::string& tensor_name, long rows, long cols)>;

class LlamaModel {
 public:
  /// The checkpoint name of a linear layer's weight: "model.layers.<layer>.<linear>.weight".
  static std::string tensor_name(long layer, const std::string& linear) {
    return "model.layers." + std::to_string(layer) + "." + linear + ".weight";
  }

  /// Loads config.json and every weight (model.safetensors or a sharded index) of a directory.
  static LlamaModel load(const std::string& directory) {
    LlamaModel model = open(directory);
    for (long layer = 0; layer < model.config_.layers; ++layer) model.load_layer(layer);
    return model;
  }

  /// Opens a directory for streaming: the embeddings, final norm and head are read now; a decoder
  /// layer's weights are read from the memory-mapped checkpoint each time the layer runs, unless
  /// load_layer keeps them. Every tensor's presence and shape is checked now, its values when read.
  static LlamaModel open(const std::string& directory) {
    return open(LlamaConfig::load(directory + "/config.json"), Checkpoint::open(directory));
  }

  static LlamaModel open(const LlamaConfig& config, Checkpoint checkpoint) {
    check_checkpoint(config, checkpoint);
    LlamaModel model;
    model.config_ = config;
    model.checkpoint_ = std::make_shared<const Checkpoint>(std::move(checkpoint));
    const Loader load{*model.checkpoint_};
    const long hidden = config.hidden_size;
    model.embedding_ = load.matrix("model.embed_tokens.weight", config.vocab_size, hidden);
    model.head_transposed_ = transposed(config.tie_word_embeddings
                                            ? model.embedding_
                                            : load.matrix("lm_head.weight", config.vocab_size, hidden));
    model.final_norm_ = load.vector("model.norm.weight", hidden);
    model.layers_.resize(static_cast<std::size_t>(config.layers));
    model.linear_sources_.resize(model.layers_.size());
    return model;
  }

  /// Checks, without reading the weights, that `checkpoint` holds every tensor `config` implies in
  /// its shape, and that its head is not ambiguous: with tie_word_embeddings the head is the
  /// embedding, so a checkpoint that also holds a different lm_head.weight is refused (engines
  /// disagree on which of the two they use). Drivers call it before any work; open() does too.
  static void check_checkpoint(const LlamaConfig& config, const Checkpoint& checkpoint) {
    LlamaModel shapes;
    shapes.config_ = config;
    const Loader load{checkpoint};
    const std::string embedding = "model.embed_tokens.weight", head = "lm_head.weight";
    load.require_tensor(embedding, {config.vocab_size, config.hidden_size});
    if (!config.tie_word_embeddings) {
      load.require_tensor(head, {config.vocab_size, config.hidden_size});
    } else if (checkpoint.contains(head)) {
      const ByteView tied = checkpoint.file_of(embedding).raw_bytes(embedding), own = checkpoint.file_of(head).raw_bytes(head);
      require(checkpoint.info(head).dtype == checkpoint.info(embedding).dtype && own.size == tied.size &&
                  std::equal(own.data, own.data + own.size, tied.data),
              "checkpoint '" + checkpoint.source() + "': config.json says tie_word_embeddings: true (the head is " + embedding +
                  "), but the checkpoint also holds a different " + head +
                  "; set tie_word_embeddings to false to use " + head + ", or remove it to use the embedding");
    }
    load.require_tensor("model.norm.weight", {config.hidden_size});
    for (long layer = 0; layer < config.layers; ++layer)
      for (const auto& [name, shape] : shapes.layer_tensors(layer)) load.require_tensor(name, shape);
  }

  /// Keeps decoder layer `layer`'s weights in memory (set_linear_weight does so itself).
  void load_layer(long layer) {
    require_layer(layer);
    std::optional<DecoderLayer>& resident = layers_[static_cast<std::size_t>(layer)];
    if (!resident) resident = read_layer(layer);
  }

  /// Frees decoder layer `layer`'s weights; from now on its linears are read from `linears`
  /// (called with a linear's checkpoint tensor name and shape), its other tensors from the checkpoint.
  void release_layer(long layer, LinearSource linears) {
    require_layer(layer);
    layers_[static_cast<std::size_t>(layer)].reset();
    linear_sources_[static_cast<std::size_t>(layer)] = std::move(linears);
  }

  const LlamaConfig& config() const { return config_; }
  /// The checkpoint the weights are read from.
  const Checkpoint& checkpoint() const { return *checkpoint_; }

  /// A linear layer's weight, out x in (PyTorch's Linear.weight layout).
  Matrix<float> linear_weight(long layer, const std::string& linear) const {
    const LinearShape shape = linear_shape(layer, linear);
    const std::optional<DecoderLayer>& resident = layers_[static_cast<std::size_t>(layer)];
    return resident ? transposed(resident->linears.at(linear).weight_transposed) : read_linear(layer, shape);
  }

  /// A norm's weight in decoder layer `layer` ("input_layernorm", "self_attn.q_norm", ...).
  std::vector<float> norm_weight(long layer, const std::string& name) const {
    require_layer(layer);
    std::optional<DecoderLayer> read;
    const DecoderLayer& weights = weights_of(layer, read);
    const auto found = weights.vectors.find(name);
    require(found != weights.vectors.end(), "decoder layer " + std::to_string(layer) + " has no norm named '" + name + "'");
    return found->second;
  }

  /// A linear layer's bias, one per output; empty if it has none.
  std::vector<float> linear_bias(long layer, const std::string& linear) const {
    linear_shape(layer, linear);
    std::optional<DecoderLayer> read;
    return weights_of(layer, read).linears.at(linear).bias;
  }

  /// Replaces a linear layer's weight (out x in, the shape it has; finite); its bias stays. The
  /// layer is kept in memory from then on (until release_layer).
  void set_linear_weight(long layer, const std::string& linear, const Matrix<float>& weight) {
    linear_shape(layer, linear);
    load_layer(layer);
    Linear& target = layers_[static_cast<std::size_t>(layer)]->linears.at(linear);
    const long rows = target.weight_transposed.cols, cols = target.weight_transposed.rows;
    const std::string what = "replacement weight of layer " + std::to_string(layer) + " " + linear;
    require(weight.rows == rows && weight.cols == cols,
            what + " is " + std::to_string(weight.rows) + " x " + std::to_string(weight.cols) + " but must be " +
                std::to_string(rows) + " x " + std::to_string(cols));
    const long bad = detail::first_non_finite(weight.data(), weight.size());
    require(bad < 0, what + " holds a non-finite value (NaN or Inf) at row " + std::to_string(bad / cols) +
                         ", column " + std::to_string(bad % cols));
    target.weight_transposed = transposed(weight);
  }

  /// The token embedding and the head (vocabulary x hidden each; one tensor when tied).
  const Matrix<float>& embedding() const { return embedding_; }
  Matrix<float> head() const { return transposed(head_transposed_); }

  /// Replaces the token embedding (`head` false) or the head (vocabulary x hidden, finite); with
  /// tied embeddings either is both. replaced() names it from then on.
  void set_embedding_or_head(bool head, const Matrix<float>& weight) {
    const std::string name = head && !config_.tie_word_embeddings ? "lm_head.weight" : "model.embed_tokens.weight";
    require(weight.rows == config_.vocab_size && weight.cols == config_.hidden_size,
            "replacement " + name + " is " + std::to_string(weight.rows) + " x " + std::to_string(weight.cols) + ", not " +
                std::to_string(config_.vocab_size) + " x " + std::to_string(config_.hidden_size));
    require(detail::first_non_finite(weight.data(), weight.size()) < 0, "replacement " + name + " holds a non-finite value");
    if (!head || config_.tie_word_embeddings) embedding_ = weight;
    if (head || config_.tie_word_embeddings) head_transposed_ = transposed(weight);
    replaced_.insert(name);
  }

  /// Whether tensor `name` outside the decoder layers (the embedding, the head) was replaced.
  bool replaced(const std::string& name) const { return replaced_.count(name) > 0; }

  /// The final norm of `hidden`: the head's input.
  Matrix<float> final_normed(const HiddenStates& hidden) const { return rms_norm(hidden.values, final_norm_); }

  /// The hidden states of `tokens`: whole sequences of `sequence_length` tokens each.
  HiddenStates embed(const std::vector<TokenId>& tokens, long sequence_length) const {
    require(sequence_length > 0, "sequence length must be positive, got " + std::to_string(sequence_length));
    require(!tokens.empty() && tokens.size() % static_cast<std::size_t>(sequence_length) == 0,
            std::to_string(tokens.size()) + " tokens are not whole sequences of " + std::to_string(sequence_length));
    require_token_ids_below(tokens.data(), tokens.size(), config_.vocab_size);
    require_memory(config_.forward_bytes(static_cast<long>(tokens.size()), sequence_length),
                   "a forward pass over " + std::to_string(tokens.size()) + " tokens in sequences of " +
                       std::to_string(sequence_length));
    const long hidden = config_.hidden_size;
    HiddenStates states{sequence_length, Matrix<float>(static_cast<long>(tokens.size()), hidden)};
#pragma omp parallel for
    for (long row = 0; row < states.values.rows; ++row)
      std::copy_n(embedding_.data() + static_cast<long>(tokens[static_cast<std::size_t>(row)]) * hidden, hidden,
                  states.values.data() + row * hidden);
    return states;
  }

  /// Runs decoder layer `layer` on `input`; `observer` (if set) sees each linear layer's input.
  HiddenStates decoder_layer(long layer, const HiddenStates& input, const LinearInputObserver& observer = {}) const {
    require_layer(layer);
    require(input.sequence_length > 0 && input.values.rows % input.sequence_length == 0 &&
                input.values.cols == config_.hidden_size,
            "hidden states of " + std::to_string(input.values.rows) + " x " + std::to_string(input.values.cols) +
                " are not whole sequences of " + std::to_string(input.sequence_length) + " tokens x hidden size " +
                std::to_string(config_.hidden_size));
    require(config_.sliding_window == 0 || input.sequence_length <= config_.sliding_window,
            "sequence length " + std::to_string(input.sequence_length) + " exceeds the model's sliding attention window " +
                std::to_string(config_.sliding_window) + ", which gsq does not implement");
    std::optional<DecoderLayer> read;
    const LayerPass pass{*this, weights_of(layer, read), layer, observer};
    const Matrix<float> attention_input = rms_norm(input.values, pass.vector("input_layernorm"));
    HiddenStates output{input.sequence_length, config_.latent_attention()
                                                   ? latent_attention(pass, attention_input, input.sequence_length)
                                                   : grouped_query_attention(pass, attention_input, input.sequence_length)};
    add_to(output.values, input.values);
    const Matrix<float> mlp_input = rms_norm(output.values, pass.vector("post_attention_layernorm"));
    add_to(output.values, config_.mixture.in_layer(layer) ? mixture_of_experts(pass, mlp_input)
                                                         : swiglu(pass, config_.swiglu_blocks(layer).front(), mlp_input));
    return output;
  }

  /// The experts each token of `mlp_inputs` (the MLP's input in decoder layer `layer`, a mixture)
  /// goes to, as the forward pass routes them.
  Routing route(long layer, const Matrix<float>& mlp_inputs) const {
    require_layer(layer);
    require(config_.mixture.in_layer(layer), "decoder layer " + std::to_string(layer) + " has no mixture of experts");
    std::optional<DecoderLayer> read;
    return route(weights_of(layer, read), mlp_inputs);
  }

  /// silu(gate(x)) * up(x) of `block` in decoder layer `layer` on the rows of `inputs`: the input
  /// of its down projection, computed as the forward pass does.
  Matrix<float> swiglu_activations(long layer, const SwiGluBlock& block, const Matrix<float>& inputs) const {
    require_layer(layer);
    std::optional<DecoderLayer> read;
    return activations({*this, weights_of(layer, read), layer, {}}, block, inputs);
  }

  /// The final norm and the language-model head: one row of vocabulary logits per token.
  Matrix<float> logits(const HiddenStates& hidden) const {
    require(hidden.values.cols == config_.hidden_size,
            "hidden states have " + std::to_string(hidden.values.cols) + " columns, not hidden size " +
                std::to_string(config_.hidden_size));
    const Matrix<float> normed = final_normed(hidden);
    Matrix<float> result(normed.rows, config_.vocab_size);
    Host<float>::gemm(false, normed.rows, config_.vocab_size, config_.hidden_size, 1.0f, normed.data(),
                      head_transposed_.data(), result.data());
    return result;
  }

  /// The whole forward pass: logits (tokens x vocabulary) of sequences of `sequence_length`.
  Matrix<float> forward(const std::vector<TokenId>& tokens, long sequence_length) const {
    HiddenStates hidden = embed(tokens, sequence_length);
    for (long layer = 0; layer < config_.layers; ++layer) hidden = decoder_layer(layer, hidden);
    return logits(hidden);
  }

 private:
  /// A linear layer; its weight is kept transposed (in x out), the layout the product wants.
  struct Linear {
    Matrix<float> weight_transposed;
    std::vector<float> bias;  // empty, or one per output
  };
  struct DecoderLayer {
    std::map<std::string, Linear> linears;              // by checkpoint name: config.linears(layer) and routers
    std::map<std::string, std::vector<float>> vectors;  // norms by checkpoint name; a router's correction bias
  };

  /// One decoder layer's run: its weights, and the observer told of each linear's input.
  struct LayerPass {
    const LlamaModel& model;
    const DecoderLayer& weights;
    long layer;
    const LinearInputObserver& observer;

    const std::vector<float>& vector(const std::string& name) const { return weights.vectors.at(name); }
    /// inputs (tokens x in) W^T + bias of linear `name`, after the observer has seen `inputs`.
    Matrix<float> apply(const std::string& name, const Matrix<float>& inputs) const {
      if (observer) observer(layer, name, inputs);
      return LlamaModel::apply(weights.linears.at(name), inputs);
    }
  };

  /// Reads checkpoint tensors, checking their presence, shape and finiteness.
  struct Loader {
    const Checkpoint& checkpoint;

    void require_tensor(const std::string& name, const std::vector<std::int64_t>& shape) const {
      require(checkpoint.contains(name), "checkpoint '" + checkpoint.source() + "' has no tensor '" + name + "'");
      const std::vector<std::int64_t>& stored = checkpoint.info(name).shape;
      require(stored == shape, "checkpoint '" + checkpoint.source() + "': tensor '" + name + "' has shape " +
                                   detail::shape_text(stored) + " but the config implies " + detail::shape_text(shape));
    }
    FloatTensor tensor(const std::string& name, const std::vector<std::int64_t>& shape) const {
      require_tensor(name, shape);
      FloatTensor result = checkpoint.float_tensor(name);
      checkpoint.file_of(name).release_pages(name);  // converted: the mapped bytes may go
      const long bad = detail::first_non_finite(result.values.data(), result.values.size());
      require(bad < 0, "checkpoint '" + checkpoint.source() + "': tensor '" + name +
                           "' holds a non-finite value (NaN or Inf) at element " + std::to_string(bad));
      return result;
    }
    Matrix<float> matrix(const std::string& name, long rows, long cols) const {
      Matrix<float> result;
      result.rows = rows;
      result.cols = cols;
      result.values = tensor(name, {rows, cols}).values;
      return result;
    }
    std::vector<float> vector(const std::string& name, long size) const { return tensor(name, {size}).values; }
  };

  void require_layer(long layer) const {
    require(layer >= 0 && layer < config_.layers, "decoder layer " + std::to_string(layer) + " does not exist (the model has " +
                                                      std::to_string(config_.layers) + ")");
  }

  /// The shape of a linear layer that quantization may replace (one of config.linears(layer)).
  LinearShape linear_shape(long layer, const std::string& linear) const {
    require_layer(layer);
    const std::vector<LinearShape> linears = config_.linears(layer);
    const auto found = std::find_if(linears.begin(), linears.end(), [&](const LinearShape& shape) { return shape.name == linear; });
    if (found == linears.end()) {
      std::string known;
      for (std::size_t i = 0; i < std::min<std::size_t>(linears.size(), 10); ++i) known += (i ? ", " : "") + linears[i].name;
      if (linears.size() > 10) known += " and " + std::to_string(linears.size() - 10) + " more";
      throw Error("decoder layer " + std::to_string(layer) + " has no linear layer named '" + linear + "' (its linears are " +
                  known + ")");
    }
    return *found;
  }

  /// Every tensor of decoder layer `layer` by checkpoint name, with its shape.
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> layer_tensors(long layer) const {
    const std::string prefix = "model.layers." + std::to_string(layer) + ".";
    std::vector<std::pair<std::string, std::vector<std::int64_t>>> tensors;
    for (const auto& [name, size] : layer_vectors()) tensors.push_back({prefix + name + ".weight", {size}});
    for (const LinearShape& linear : layer_linears(layer)) {
      tensors.push_back({tensor_name(layer, linear.name), {linear.rows, linear.cols}});
      if (linear.bias) tensors.push_back({prefix + linear.name + ".bias", {linear.rows}});
    }
    if (config_.mixture.in_layer(layer) && config_.mixture.router == MixtureConfig::Router::grouped_sigmoid)
      tensors.push_back({prefix + config_.mixture.block + ".gate.e_score_correction_bias", {config_.mixture.experts}});
    return tensors;
  }

  /// A decoder layer's norms by name (without "model.layers.<i>." and ".weight"), with their sizes.
  std::vector<std::pair<std::string, long>> layer_vectors() const {
    std::vector<std::pair<std::string, long>> vectors = {{"input_layernorm", config_.hidden_size},
                                                         {"post_attention_layernorm", config_.hidden_size}};
    if (config_.qk_norm) vectors.insert(vectors.end(), {{"self_attn.q_norm", config_.head_dim}, {"self_attn.k_norm", config_.head_dim}});
    if (config_.latent_attention()) {
      if (config_.latent.query_rank > 0) vectors.push_back({"self_attn.q_a_layernorm", config_.latent.query_rank});
      vectors.push_back({"self_attn.kv_a_layernorm", config_.latent.key_value_rank});
    }
    return vectors;
  }

  /// A decoder layer's linears: those quantization replaces, and a mixture's routers.
  std::vector<LinearShape> layer_linears(long layer) const {
    std::vector<LinearShape> linears = config_.linears(layer);
    const std::vector<LinearShape> routers = config_.routers(layer);
    linears.insert(linears.end(), routers.begin(), routers.end());
    return linears;
  }

  /// Linear `shape` of decoder layer `layer` as stored: from its release_layer source if it has
  /// one, else from the checkpoint.
  Matrix<float> read_linear(long layer, const LinearShape& shape) const {
    const LinearSource& source = linear_sources_[static_cast<std::size_t>(layer)];
    const std::string name = tensor_name(layer, shape.name);
    return source ? source(name, shape.rows, shape.cols) : Loader{*checkpoint_}.matrix(name, shape.rows, shape.cols);
  }

  /// Reads decoder layer `layer`'s weights.
  DecoderLayer read_layer(long layer) const {
    const Loader load{*checkpoint_};
    const std::string prefix = "model.layers." + std::to_string(layer) + ".";
    const std::vector<LinearShape> replaceable = config_.linears(layer);
    DecoderLayer weights;
    for (const auto& [name, size] : layer_vectors()) weights.vectors[name] = load.vector(prefix + name + ".weight", size);
    for (const LinearShape& shape : layer_linears(layer)) {
      Linear& linear = weights.linears[shape.name];
      const bool quantized = std::any_of(replaceable.begin(), replaceable.end(),
                                         [&](const LinearShape& candidate) { return candidate.name == shape.name; });
      linear.weight_transposed =
          transposed(quantized ? read_linear(layer, shape) : load.matrix(tensor_name(layer, shape.name), shape.rows, shape.cols));
      if (shape.bias) linear.bias = load.vector(prefix + shape.name + ".bias", shape.rows);
    }
    const MixtureConfig& mixture = config_.mixture;
    if (mixture.in_layer(layer) && mixture.router == MixtureConfig::Router::grouped_sigmoid)
      weights.vectors["correction_bias"] = load.vector(prefix + mixture.block + ".gate.e_score_correction_bias", mixture.experts);
    return weights;
  }

  /// Decoder layer `layer`'s weights: those kept in memory, or else read into `read`.
  const DecoderLayer& weights_of(long layer, std::optional<DecoderLayer>& read) const {
    const std::optional<DecoderLayer>& resident = layers_[static_cast<std::size_t>(layer)];
    if (resident) return *resident;
    read = read_layer(layer);
    return *read;
  }

  static void add_to(Matrix<float>& target, const Matrix<float>& addend) {
    float* sum = target.data();
    const float* term = addend.data();
    Host<float>::for_each_index(target.size(), [=](std::size_t i) { sum[i] += term[i]; });
  }

  static Matrix<float> transposed(const Matrix<float>& matrix) {
    Matrix<float> result(matrix.cols, matrix.rows);
    constexpr long tile = 32;  // square tiles keep both the reads and the writes in cache
#pragma omp parallel for
    for (long first_row = 0; first_row < result.rows; first_row += tile)
      for (long first_col = 0; first_col < result.cols; first_col += tile)
        for (long r = first_row; r < std::min(first_row + tile, result.rows); ++r)
          for (long c = first_col; c < std::min(first_col + tile, result.cols); ++c) result(r, c) = matrix(c, r);
    return result;
  }

  /// Columns [first, first + count) of `matrix`.
  static Matrix<float> columns(const Matrix<float>& matrix, long first, long count) {
    Matrix<float> result(matrix.rows, count);
    for (long row = 0; row < matrix.rows; ++row)
      std::copy_n(matrix.data() + row * matrix.cols + first, count, result.data() + row * count);
    return result;
  }

  /// inputs (tokens x in) W^T + bias.
  static Matrix<float> apply(const Linear& linear, const Matrix<float>& inputs) {
    const Matrix<float>& weight = linear.weight_transposed;
    Matrix<float> outputs(inputs.rows, weight.cols);
    if (inputs.rows == 0) return outputs;
    Host<float>::gemm(false, inputs.rows, weight.cols, weight.rows, 1.0f, inputs.data(), weight.data(), outputs.data());
    if (!linear.bias.empty()) {
      float* out = outputs.data();
      const float* bias = linear.bias.data();
      const std::size_t width = linear.bias.size();
      Host<float>::for_each_index(outputs.size(), [=](std::size_t i) { out[i] += bias[i % width]; });
    }
    return outputs;
  }

  /// x / sqrt(mean(x^2) + eps) * weight over each run of weight.size() columns (a row, or a head
  /// of it): Hugging Face's LlamaRMSNorm.
  Matrix<float> rms_norm(const Matrix<float>& inputs, const std::vector<float>& weight) const {
    return gsq::rms_norm(inputs, weight, config_.rms_norm_eps);
  }
  /// q, k, v, o: grouped-query attention (with Qwen3's per-head q/k norms).
  Matrix<float> grouped_query_attention(const LayerPass& pass, const Matrix<float>& inputs, long length) const {
    Matrix<float> queries = pass.apply("self_attn.q_proj", inputs);
    Matrix<float> keys = pass.apply("self_attn.k_proj", inputs);
    const Matrix<float> values = pass.apply("self_attn.v_proj", inputs);
    if (config_.qk_norm) {
      queries = rms_norm(queries, pass.vector("self_attn.q_norm"));
      keys = rms_norm(keys, pass.vector("self_attn.k_norm"));
    }
    const RotaryEmbedding<float> rotary(config_, length);
    rotary.rotate(queries, config_.head_dim, 0);
    rotary.rotate(keys, config_.head_dim, 0);
    return pass.apply("self_attn.o_proj", causal_attention(queries, keys, values, attention_shape(config_), length));
  }

  /// DeepSeek-V3's multi-head latent attention: each head's query and key are [nope | rope]
  /// parts; the keys' nope parts and the values come from one normed latent, the keys' rope part
  /// is a single rotated head shared by all heads.
  Matrix<float> latent_attention(const LayerPass& pass, const Matrix<float>& inputs, long length) const {
    const LatentAttentionConfig& latent = config_.latent;
    constexpr double latent_eps = 1e-6;  // Hugging Face's q_a_layernorm and kv_a_layernorm ignore rms_norm_eps
    const long heads = config_.attention_heads, head_width = latent.nope_dim + latent.rope_dim;
    Matrix<float> queries =
        latent.query_rank > 0
            ? pass.apply("self_attn.q_b_proj", gsq::rms_norm(pass.apply("self_attn.q_a_proj", inputs),
                                                             pass.vector("self_attn.q_a_layernorm"), latent_eps))
            : pass.apply("self_attn.q_proj", inputs);
    const Matrix<float> compressed = pass.apply("self_attn.kv_a_proj_with_mqa", inputs);
    const Matrix<float> key_values =
        pass.apply("self_attn.kv_b_proj", gsq::rms_norm(columns(compressed, 0, latent.key_value_rank),
                                                        pass.vector("self_attn.kv_a_layernorm"), latent_eps));
    Matrix<float> shared_rope = columns(compressed, latent.key_value_rank, latent.rope_dim);
    const RotaryEmbedding<float> rotary(config_, length);
    rotary.rotate(queries, head_width, latent.nope_dim);
    rotary.rotate(shared_rope, latent.rope_dim, 0);
    // Per head: the key [k_nope | shared rope], the value from the rest of kv_b_proj's head.
    Matrix<float> keys(inputs.rows, heads * head_width), values(inputs.rows, heads * latent.value_dim);
    const long kv_width = latent.nope_dim + latent.value_dim;
#pragma omp parallel for
    for (long row = 0; row < inputs.rows; ++row)
      for (long head = 0; head < heads; ++head) {
        const float* source = key_values.data() + row * key_values.cols + head * kv_width;
        float* key = keys.data() + row * keys.cols + head * head_width;
        std::copy_n(source, latent.nope_dim, key);
        std::copy_n(shared_rope.data() + row * latent.rope_dim, latent.rope_dim, key + latent.nope_dim);
        std::copy_n(source + latent.nope_dim, latent.value_dim, values.data() + row * values.cols + head * latent.value_dim);
      }
    return pass.apply("self_attn.o_proj", causal_attention(queries, keys, values, attention_shape(config_), length));
  }

  /// silu(gate(x)) * up(x) of `block`.
  static Matrix<float> activations(const LayerPass& pass, const SwiGluBlock& block, const Matrix<float>& inputs) {
    Matrix<float> gated = pass.apply(block.linears[0], inputs);
    const Matrix<float> up_values = pass.apply(block.linears[1], inputs);
    float* activation = gated.data();
    const float* up_value = up_values.data();
    Host<float>::for_each_index(gated.size(), [=](std::size_t i) {
      const float value = activation[i];
      activation[i] = value / (1.0f + std::exp(-value)) * up_value[i];  // silu(gate) * up
    });
    return gated;
  }

  /// down(silu(gate(x)) * up(x)) of `block`.
  static Matrix<float> swiglu(const LayerPass& pass, const SwiGluBlock& block, const Matrix<float>& inputs) {
    return pass.apply(block.linears[2], activations(pass, block, inputs));
  }

  /// The router of `weights` (a mixture layer's) on `mlp_inputs`.
  Routing route(const DecoderLayer& weights, const Matrix<float>& mlp_inputs) const {
    const auto correction = weights.vectors.find("correction_bias");
    return gsq::route(apply(weights.linears.at(config_.mixture.block + ".gate"), mlp_inputs), config_.mixture,
                      correction == weights.vectors.end() ? std::vector<float>{} : correction->second);
  }

  /// The routed experts' outputs weighted by the router, plus the shared expert's.
  Matrix<float> mixture_of_experts(const LayerPass& pass, const Matrix<float>& inputs) const {
    const MixtureConfig& mixture = config_.mixture;
    const std::string router = mixture.block + ".gate";
    if (pass.observer) pass.observer(pass.layer, router, inputs);
    const Routing routing = route(pass.weights, inputs);
    const std::vector<ExpertTokens> routed = tokens_by_expert(routing, mixture.experts);
    Matrix<float> output(inputs.rows, config_.hidden_size);
    for (const SwiGluBlock& block : config_.swiglu_blocks(pass.layer)) {
      if (block.expert < 0) {  // the shared expert sees every token
        Matrix<float> shared = swiglu(pass, block, inputs);
        if (mixture.gated_shared_expert) {
          const Matrix<float> gate = apply(pass.weights.linears.at(block.name + "_gate"), inputs);
          for (long row = 0; row < shared.rows; ++row) {
            const float weight = 1.0f / (1.0f + std::exp(-gate(row, 0)));
            for (long c = 0; c < shared.cols; ++c) shared(row, c) *= weight;
          }
        }
        add_to(output, shared);
        continue;
      }
      const ExpertTokens& expert = routed[static_cast<std::size_t>(block.expert)];
      const std::vector<long>& rows = expert.tokens;
      const Matrix<float> expert_output = swiglu(pass, block, gather_rows(inputs, rows));
      for (std::size_t i = 0; i < rows.size(); ++i) {
        const float weight = expert.weights[i];
        const float* from = expert_output.data() + static_cast<long>(i) * output.cols;
        float* to = output.data() + rows[i] * output.cols;
        for (long c = 0; c < output.cols; ++c) to[c] += weight * from[c];
      }
    }
    return output;
  }

  LlamaConfig config_;
  std::shared_ptr<const Checkpoint> checkpoint_;
  std::vector<std::optional<DecoderLayer>> layers_;  // the layers kept in memory
  std::vector<LinearSource> linear_sources_;         // where a released layer's linears are read
  Matrix<float> embedding_;        // vocabulary x hidden
  Matrix<float> head_transposed_;  // hidden x vocabulary (the embedding's transpose when tied)
  std::vector<float> final_norm_;
  std::set<std::string> replaced_;  // the embedding or head, once set_embedding_or_head replaced it
};

}  // namespace gsq
