// gsq/model/evaluation.hpp -- the language-model evaluation every quantized model is compared
// on: mean negative log-likelihood per predicted token, perplexity, bits per token.
//
// The rule (data/llama-bytes-3m/README.md): cut the stream into non-overlapping windows of
// `window` tokens, dropping the incomplete tail; run each window's first window - 1 tokens as a
// fresh sequence (positions from 0) and score the prediction at every position from
// `first_scored` on (0 by default; llama-perplexity scores from window / 2) against the next
// token: window - 1 - first_scored predictions per window.
//
//   std::vector<gsq::TokenId> tokens = gsq::read_byte_tokens("data/llama-bytes-3m/eval.txt");
//   gsq::EvaluationResult result = gsq::evaluate(model, tokens, gsq::EvaluationOptions{});
//   result.bits_per_token();  // bits per byte for a byte-level model
//
// Token streams come from gsq/io/token_file.hpp (token files) or gsq/text/tokenizer.hpp (text).
#pragma once

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/common/error.hpp"
#include "gsq/common/matrix.hpp"
#include "gsq/io/token_file.hpp"
#include "gsq/model/llama.hpp"

namespace gsq {

struct EvaluationOptions {
  long window = 256;         // tokens per window; window - 1 predictions each
  long first_scored = 0;     // the first position of a window whose prediction is scored (llama-perplexity: window / 2)
  long max_windows = 0;      // evaluate only the first windows (0: all)
  long windows_per_batch = 0;  // windows per forward call (0: about 32k tokens, memory permitting)
  /// Called after each batch with the windows done and the windows in all.
  std::function<void(long done, long total)> on_progress;
};

struct EvaluationResult {
  double total_nll = 0;  // nats, summed over predictions
  long predictions = 0;
  long windows = 0;
  long window = 0;
  long first_scored = 0;

  double mean_nll() const { return total_nll / static_cast<double>(predictions); }
  double perplexity() const { return std::exp(mean_nll()); }
  double bits_per_token() const { return mean_nll() / std::log(2.0); }
};

/// The JSON record of an evaluation (manifests, --json files): nlohmann's conversion, so
/// `nlohmann::json record = result;` works.
inline void to_json(nlohmann::json& json, const EvaluationResult& result) {
  json = {{"nll", result.mean_nll()}, {"ppl", result.perplexity()}, {"bits_per_token", result.bits_per_token()},
          {"tokens", result.predictions}, {"windows", result.windows}, {"window", result.window}};
  if (result.first_scored > 0) json["first_scored"] = result.first_scored;
}

/// The windows a stream of `tokens` tokens holds (the incomplete tail dropped).
inline long count_windows(long tokens, long window) { return window > 0 ? tokens / window : 0; }

namespace detail {

/// log sum_i exp(logits[i]) in double, and the first index of the largest logit.
struct LogNormaliser {
  double log_sum = 0;
  long top = 0;
};

inline LogNormaliser log_normaliser(const float* logits, long vocabulary) {
  const long top = static_cast<long>(std::max_element(logits, logits + vocabulary) - logits);
  const double largest = logits[top];
  double sum = 0;
  for (long i = 0; i < vocabulary; ++i) sum += std::exp(static_cast<double>(logits[i]) - largest);
  return {largest + std::log(sum), top};
}

}  // namespace detail

/// -log softmax(logits)[target], in double (log-sum-exp with the largest logit factored out).
inline double token_nll(const float* logits, long vocabulary, TokenId target) {
  return detail::log_normaliser(logits, vocabulary).log_sum - static_cast<double>(logits[target]);
}

/// Windows per forward call when EvaluationOptions::windows_per_batch is 0: about 32k tokens,
/// for large products and few parallel regions (each a barrier, costly when the cores are
/// shared), while the widest activation (logits or the MLP's) stays under 128 MB.
inline long default_windows_per_batch(const LlamaConfig& config, long window) {
  const long inputs = window - 1;
  const long affordable = (32L << 20) / std::max(config.vocab_size, config.intermediate_size) / inputs;
  return std::max(1L, std::min(32768 / inputs + 1, affordable));
}

/// Bytes an evaluation in windows of `window` tokens needs at its widest (one call's forward
/// pass): drivers check it against the machine before they start (gsq::require_memory).
inline double evaluation_bytes(const LlamaConfig& config, long window) {
  const long inputs = window - 1;
  return config.forward_bytes(default_windows_per_batch(config, window) * inputs, inputs);
}

/// The windows of a token stream an evaluation scores (the rule at the top of this file), and
/// where each scored prediction lands: prediction (w, t) is window w's prediction at position t
/// (first_scored <= t < window - 1) of token t + 1.
struct EvaluationWindows {
  long window = 0;
  long first_scored = 0;
  long count = 0;  // windows

  long inputs() const { return window - 1; }
  long scored() const { return window - 1 - first_scored; }  // per window
  long predictions() const { return count * scored(); }
  long prediction_index(long w, long t) const { return w * scored() + t - first_scored; }
  TokenId next_token(const std::vector<TokenId>& tokens, long w, long t) const {
    return tokens[static_cast<std::size_t>(w * window + t + 1)];
  }
};

/// The windows `options` score in `tokens`, checked (the window, the first scored position,
/// enough tokens, every evaluated id below `vocabulary`).
inline EvaluationWindows evaluation_windows(const std::vector<TokenId>& tokens, long vocabulary, const EvaluationOptions& options) {
  require(options.window >= 2, "the evaluation window must be at least 2 tokens, got " + std::to_string(options.window));
  require(options.first_scored >= 0 && options.first_scored < options.window - 1,
          "the first scored position must lie in [0, window - 1) = [0, " + std::to_string(options.window - 1) + "), got " +
              std::to_string(options.first_scored));
  require(options.max_windows >= 0 && options.windows_per_batch >= 0,
          "max_windows and windows_per_batch must not be negative");
  EvaluationWindows windows{options.window, options.first_scored, count_windows(static_cast<long>(tokens.size()), options.window)};
  require(windows.count > 0, "the token stream has " + std::to_string(tokens.size()) +
                                 " tokens, fewer than one evaluation window of " + std::to_string(options.window));
  if (options.max_windows > 0) windows.count = std::min(windows.count, options.max_windows);
  require_token_ids_below(tokens.data(), static_cast<std::size_t>(windows.count * windows.window), vocabulary);
  return windows;
}

/// Runs `model` over `windows` of `tokens` in batches of windows: visit(first window, windows in
/// the batch, the batch's input tokens, its logits), logits row w * inputs() + t being window
/// first + w at position t. options.on_progress hears of each batch.
template <class Visit>
void for_each_window_batch(const LlamaModel& model, const std::vector<TokenId>& tokens, const EvaluationWindows& windows,
                           const EvaluationOptions& options, Visit&& visit) {
  const long batch = options.windows_per_batch > 0 ? options.windows_per_batch : default_windows_per_batch(model.config(), windows.window);
  for (long first = 0; first < windows.count; first += batch) {
    const long count = std::min(batch, windows.count - first);
    std::vector<TokenId> inputs;
    inputs.reserve(static_cast<std::size_t>(count * windows.inputs()));
    for (long w = first; w < first + count; ++w)
      inputs.insert(inputs.end(), tokens.begin() + w * windows.window, tokens.begin() + w * windows.window + windows.inputs());
    visit(first, count, inputs, model.forward(inputs, windows.inputs()));
    if (options.on_progress) options.on_progress(first + count, windows.count);
  }
}

/// Evaluates `model` on `tokens` by the rule at the top of this file. The result does not
/// depend on the thread count (the window NLLs are summed in a fixed order); the batch size
/// changes it only by float rounding (the products block differently).
inline EvaluationResult evaluate(const LlamaModel& model, const std::vector<TokenId>& tokens,
                                 const EvaluationOptions& options) {
  const long vocabulary = model.config().vocab_size;
  const EvaluationWindows windows = evaluation_windows(tokens, vocabulary, options);
  std::vector<double> window_nll(static_cast<std::size_t>(windows.count), 0.0);
  for_each_window_batch(model, tokens, windows, options, [&](long first, long count, const std::vector<TokenId>&,
                                                          const Matrix<float>& logits) {
#pragma omp parallel for
    for (long w = 0; w < count; ++w) {
      double sum = 0;
      for (long t = windows.first_scored; t < windows.inputs(); ++t)
        sum += token_nll(logits.data() + (w * windows.inputs() + t) * vocabulary, vocabulary, windows.next_token(tokens, first + w, t));
      window_nll[static_cast<std::size_t>(first + w)] = sum;
    }
  });

  EvaluationResult result;
  for (const double nll : window_nll) result.total_nll += nll;
  result.predictions = windows.predictions();
  result.windows = windows.count;
  result.window = windows.window;
  result.first_scored = windows.first_scored;
  return result;
}

}  // namespace gsq
