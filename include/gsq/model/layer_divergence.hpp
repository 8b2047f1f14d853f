// gsq/model/layer_divergence.hpp -- each decoder layer's (and each routed expert's) own share of
// a quantized model's divergence from its original: for layer L, the original model run with only
// layer L's weights taken from the quantized one (for expert e of layer L, only that expert's
// three linears), compared with the original prediction by prediction (KL, same top token;
// gsq/model/comparison.hpp). Where the divergence comes from: what a user reads to see which
// layers a format hurts, and what a size budget spends bits on.
//
//   for (const gsq::LayerDivergence& layer : gsq::layer_divergences(original, quantized, tokens, options))
//     std::printf("layer %ld: KL %.5f\n", layer.layer, layer.kl);
//
// Cost: the original's hidden states at every layer are kept for the windows evaluated (checked
// against memory first); then each layer (or expert) measured costs a forward pass from its layer
// up and two head products: about layers / 2 forward passes of one evaluation for all layers,
// experts x layers / 2 for all experts, so it is meant for a few windows.
#pragma once

#include <algorithm>
#include <array>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/common/error.hpp"
#include "gsq/common/memory.hpp"
#include "gsq/model/comparison.hpp"
#include "gsq/model/evaluation.hpp"
#include "gsq/model/llama.hpp"

namespace gsq {

/// The divergence of the original model with only `layer` (or only routed `expert` of it) quantized.
struct LayerDivergence {
  long layer = 0;
  long expert = -1;             // -1: the whole layer
  double kl = 0, kl_error = 0;  // mean KL(P_original || P), nats, and its standard error
  double same_top = 0;          // the share of predictions whose top token stays the original's
  long predictions = 0;
};

inline void to_json(nlohmann::json& json, const LayerDivergence& divergence) {
  json = {{"layer", divergence.layer}, {"kl", divergence.kl}, {"kl_error", divergence.kl_error},
          {"same_top", divergence.same_top}, {"predictions", divergence.predictions}};
  if (divergence.expert >= 0) json["expert"] = divergence.expert;
}

/// Bytes layer_divergences needs on `windows` windows of `window` tokens: the original's hidden
/// states at every layer, and two evaluations' widest step (the original's and the changed model's).
inline double layer_divergence_bytes(const LlamaConfig& config, long window, long windows) {
  return 4.0 * static_cast<double>(config.layers + 1) * static_cast<double>(windows) * static_cast<double>(window - 1) *
             static_cast<double>(config.hidden_size) +
         2 * evaluation_bytes(config, window);
}

namespace detail {

/// The original model's hidden states on the evaluated windows, batch by batch: the input of
/// every layer, then the last layer's output.
struct OriginalStates {
  EvaluationWindows windows;
  long batch = 0;
  std::vector<std::vector<HiddenStates>> states;  // [batch][layer]
};

inline OriginalStates original_states(const LlamaModel& original, const std::vector<TokenId>& tokens, const EvaluationOptions& options) {
  const LlamaConfig& config = original.config();
  OriginalStates kept{evaluation_windows(tokens, config.vocab_size, options), 0, {}};
  const EvaluationWindows& windows = kept.windows;
  kept.batch = options.windows_per_batch > 0 ? options.windows_per_batch : default_windows_per_batch(config, windows.window);
  require_memory(layer_divergence_bytes(config, windows.window, windows.count),
                 "each layer's divergence over " + std::to_string(windows.count) + " windows (the hidden states of every layer kept)");
  for (long first = 0; first < windows.count; first += kept.batch) {
    const long count = std::min(kept.batch, windows.count - first);
    std::vector<TokenId> batch_tokens;
    for (long w = first; w < first + count; ++w)
      batch_tokens.insert(batch_tokens.end(), tokens.begin() + w * windows.window, tokens.begin() + w * windows.window + windows.inputs());
    std::vector<HiddenStates> per_layer{original.embed(batch_tokens, windows.inputs())};
    for (long layer = 0; layer < config.layers; ++layer) per_layer.push_back(original.decoder_layer(layer, per_layer.back()));
    kept.states.push_back(std::move(per_layer));
  }
  return kept;
}

/// The divergence of the original with decoder layer `layer` replaced by `changed_layer` (hidden
/// states in, hidden states out); the layers above and the head are the original's.
template <class ChangedLayer>
LayerDivergence divergence_with(const LlamaModel& original, const OriginalStates& kept, const std::vector<TokenId>& tokens,
                                long layer, const ChangedLayer& changed_layer) {
  const EvaluationWindows& windows = kept.windows;
  const long vocabulary = original.config().vocab_size;
  std::vector<PredictionComparison> compared(static_cast<std::size_t>(windows.predictions()));
  for (std::size_t b = 0; b < kept.states.size(); ++b) {
    const std::vector<HiddenStates>& states = kept.states[b];
    const long first = static_cast<long>(b) * kept.batch, count = states.front().values.rows / windows.inputs();
    HiddenStates changed = changed_layer(states[static_cast<std::size_t>(layer)]);
    for (long above = layer + 1; above < original.config().layers; ++above) changed = original.decoder_layer(above, changed);
    const Matrix<float> reference_logits = original.logits(states.back()), logits = original.logits(changed);
#pragma omp parallel for
    for (long w = 0; w < count; ++w)
      for (long t = windows.first_scored; t < windows.inputs(); ++t) {
        const long row = w * windows.inputs() + t;
        compared[static_cast<std::size_t>(windows.prediction_index(first + w, t))] =
            compare_prediction(logits.data() + row * vocabulary, reference_logits.data() + row * vocabulary, vocabulary,
                               windows.next_token(tokens, first + w, t));
      }
  }
  std::vector<double> kl;
  double same = 0;
  for (const PredictionComparison& prediction : compared) {
    kl.push_back(prediction.kl);
    same += prediction.same_top ? 1 : 0;
  }
  const auto [mean, error] = mean_and_error(kl);
  return {layer, -1, mean, error, same / static_cast<double>(compared.size()), static_cast<long>(compared.size())};
}

inline void require_same_shape(const LlamaModel& original, const LlamaModel& quantized) {
  require(quantized.config().layers == original.config().layers && quantized.config().hidden_size == original.config().hidden_size,
          "the quantized model's shape differs from the original's: its layers cannot stand in for the original's");
}

}  // namespace detail

/// Each decoder layer's divergence, layer by layer (`on_layer` sees each as it is measured), on
/// `tokens` by evaluation.hpp's rule. `quantized` has `original`'s shape; only its decoder layers'
/// weights are used. The result does not depend on the thread count.
inline std::vector<LayerDivergence> layer_divergences(const LlamaModel& original, const LlamaModel& quantized,
                                                      const std::vector<TokenId>& tokens, const EvaluationOptions& options,
                                                      const std::function<void(const LayerDivergence&)>& on_layer = {}) {
  detail::require_same_shape(original, quantized);
  const detail::OriginalStates kept = detail::original_states(original, tokens, options);
  std::vector<LayerDivergence> result;
  for (long layer = 0; layer < original.config().layers; ++layer) {
    result.push_back(detail::divergence_with(original, kept, tokens, layer,
                                             [&](const HiddenStates& input) { return quantized.decoder_layer(layer, input); }));
    if (on_layer) on_layer(result.back());
  }
  return result;
}

/// Each routed expert's divergence, in every mixture layer, expert by expert: the original with
/// only that expert's gate, up and down projections taken from `quantized`. `original` is changed
/// while an expert is measured and put back, bit for bit; the layers measured stay in its memory.
inline std::vector<LayerDivergence> expert_divergences(LlamaModel& original, const LlamaModel& quantized,
                                                       const std::vector<TokenId>& tokens, const EvaluationOptions& options,
                                                       const std::function<void(const LayerDivergence&)>& on_expert = {}) {
  detail::require_same_shape(original, quantized);
  const detail::OriginalStates kept = detail::original_states(original, tokens, options);
  std::vector<LayerDivergence> result;
  for (long layer = 0; layer < original.config().layers; ++layer)
    for (const SwiGluBlock& block : original.config().swiglu_blocks(layer)) {
      if (block.expert < 0) continue;
      std::array<Matrix<float>, 3> kept_weights;
      for (std::size_t i = 0; i < 3; ++i) {
        kept_weights[i] = original.linear_weight(layer, block.linears[i]);
        original.set_linear_weight(layer, block.linears[i], quantized.linear_weight(layer, block.linears[i]));
      }
      result.push_back(detail::divergence_with(original, kept, tokens, layer,
                                               [&](const HiddenStates& input) { return original.decoder_layer(layer, input); }));
      result.back().expert = block.expert;
      for (std::size_t i = 0; i < 3; ++i) original.set_linear_weight(layer, block.linears[i], kept_weights[i]);
      if (on_expert) on_expert(result.back());
    }
  return result;
}

}  // namespace gsq
