// gsq/model/layer_divergence.hpp -- each decoder layer's own share of a quantized model's
// divergence from its original: for layer L, the original model run with only layer L's weights
// taken from the quantized one, compared with the original prediction by prediction (KL, same top
// token; gsq/model/comparison.hpp). Where the divergence comes from, layer by layer: what a user
// reads to see which layers a format hurts, and what a size budget spends bits on.
//
//   for (const gsq::LayerDivergence& layer : gsq::layer_divergences(original, quantized, tokens, options))
//     std::printf("layer %ld: KL %.5f\n", layer.layer, layer.kl);
//
// Cost: the original's hidden states at every layer are kept for the windows evaluated (checked
// against memory first); then per layer the layers from it up run once and the head twice: about
// layers / 2 forward passes and 2 * layers head products of one evaluation, so it is meant for a
// few windows.
#pragma once

#include <algorithm>
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

/// The divergence of the original model with only `layer` quantized.
struct LayerDivergence {
  long layer = 0;
  double kl = 0, kl_error = 0;  // mean KL(P_original || P), nats, and its standard error
  double same_top = 0;          // the share of predictions whose top token stays the original's
  long predictions = 0;
};

inline void to_json(nlohmann::json& json, const LayerDivergence& divergence) {
  json = {{"layer", divergence.layer}, {"kl", divergence.kl}, {"kl_error", divergence.kl_error},
          {"same_top", divergence.same_top}, {"predictions", divergence.predictions}};
}

/// Bytes layer_divergences needs on `windows` windows of `window` tokens: the original's hidden
/// states at every layer, and two evaluations' widest step (the original's and the changed model's).
inline double layer_divergence_bytes(const LlamaConfig& config, long window, long windows) {
  return 4.0 * static_cast<double>(config.layers + 1) * static_cast<double>(windows) * static_cast<double>(window - 1) *
             static_cast<double>(config.hidden_size) +
         2 * evaluation_bytes(config, window);
}

/// Each decoder layer's divergence, layer by layer (`on_layer` sees each as it is measured), on
/// `tokens` by evaluation.hpp's rule. `quantized` has `original`'s shape; only its decoder layers'
/// weights are used. The result does not depend on the thread count.
inline std::vector<LayerDivergence> layer_divergences(const LlamaModel& original, const LlamaModel& quantized,
                                                      const std::vector<TokenId>& tokens, const EvaluationOptions& options,
                                                      const std::function<void(const LayerDivergence&)>& on_layer = {}) {
  const LlamaConfig& config = original.config();
  require(quantized.config().layers == config.layers && quantized.config().hidden_size == config.hidden_size,
          "the quantized model's shape differs from the original's: its layers cannot stand in for the original's");
  const EvaluationWindows windows = evaluation_windows(tokens, config.vocab_size, options);
  const long batch = options.windows_per_batch > 0 ? options.windows_per_batch : default_windows_per_batch(config, windows.window);
  require_memory(layer_divergence_bytes(config, windows.window, windows.count),
                 "each layer's divergence over " + std::to_string(windows.count) + " windows (the hidden states of every layer kept)");

  // The original's input to every layer, batch by batch.
  std::vector<std::vector<HiddenStates>> inputs;  // [batch][layer]: the input of each layer, then the last one's output
  for (long first = 0; first < windows.count; first += batch) {
    const long count = std::min(batch, windows.count - first);
    std::vector<TokenId> batch_tokens;
    for (long w = first; w < first + count; ++w)
      batch_tokens.insert(batch_tokens.end(), tokens.begin() + w * windows.window, tokens.begin() + w * windows.window + windows.inputs());
    std::vector<HiddenStates> per_layer{original.embed(batch_tokens, windows.inputs())};
    for (long layer = 0; layer < config.layers; ++layer) per_layer.push_back(original.decoder_layer(layer, per_layer.back()));
    inputs.push_back(std::move(per_layer));
  }

  std::vector<LayerDivergence> result;
  const long vocabulary = config.vocab_size;
  for (long layer = 0; layer < config.layers; ++layer) {
    std::vector<PredictionComparison> compared(static_cast<std::size_t>(windows.predictions()));
    for (std::size_t b = 0; b < inputs.size(); ++b) {
      const long first = static_cast<long>(b) * batch;
      const long count = inputs[b][0].values.rows / windows.inputs();
      HiddenStates changed = quantized.decoder_layer(layer, inputs[b][static_cast<std::size_t>(layer)]);
      for (long above = layer + 1; above < config.layers; ++above) changed = original.decoder_layer(above, changed);
      const Matrix<float> reference_logits = original.logits(inputs[b].back()), logits = original.logits(changed);
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
    const auto [mean, error] = detail::mean_and_error(kl);
    result.push_back({layer, mean, error, same / static_cast<double>(compared.size()), static_cast<long>(compared.size())});
    if (on_layer) on_layer(result.back());
  }
  return result;
}

}  // namespace gsq
