// gsq/model/comparison.hpp -- a model judged against a reference (the full-precision model) the way
// users compare quantized files: for every scored prediction, the KL divergence
// KL(P_ref || P_model) over the whole vocabulary, whether both rank the same token first, the
// change of the next token's probability (Δp) and both models' NLL; summarised as llama.cpp's
// `llama-perplexity --kl-divergence` summarises them (means with standard errors, percentiles,
// the perplexity ratio), so figures from either tool read alike (docs/evaluation.md).
//
// The windows and the scored predictions follow evaluation.hpp's rule (EvaluationOptions;
// first_scored = window / 2 is llama-perplexity's). The reference is either a model run beside
// the judged one (exact), or a SavedReference: per prediction the reference's k most probable
// tokens with their log-probabilities and the next token's NLL, so that a large model's
// reference is kept in k * 8 + 4 bytes per prediction. With a saved reference everything is
// exact but the KL divergence, which becomes that of the two distributions over the k tokens
// plus one outcome "any other token": a lower bound of the exact one (the log-sum inequality),
// equal when the reference puts no mass outside its k tokens.
//
//   gsq::SavedReference kept;
//   kept.k = 64;
//   const gsq::Comparison result = gsq::compare(quantized, reference, tokens, options, &kept);
//   nlohmann::json summary = gsq::summarize(result);  // "kl": {"mean", "error", "p99", ...}, "same_top", ...
//   gsq::reference_file(kept).write("reference.safetensors");  // later: gsq::compare(other, gsq::read_reference(...), options)
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/common/error.hpp"
#include "gsq/common/matrix.hpp"
#include "gsq/io/safetensors.hpp"
#include "gsq/model/evaluation.hpp"
#include "gsq/model/gguf_checkpoint.hpp"
#include "gsq/model/llama.hpp"

namespace gsq {

namespace detail {
/// llama-perplexity's reference keeps log-probabilities down to 16 nats below the top token and
/// sums the KL divergence over those above -16 (tools/perplexity/perplexity.cpp, log_softmax).
inline constexpr double llama_cpp_log_p_floor = -16;
}  // namespace detail

/// One scored prediction of a model compared with the reference's.
struct PredictionComparison {
  double nll = 0;            // the model's -log p(next token), nats
  double reference_nll = 0;  // the reference's
  double kl = 0;             // KL(P_ref || P_model), nats
  double kl_llama_cpp = 0;   // the same sum as llama-perplexity takes it: over the tokens whose reference
                             // log-probability is above -16 only (its reference file keeps no others)
  double delta_p = 0;        // p_model(next token) - p_ref(next token) (llama.cpp's Δp)
  double top_delta_p = 0;    // p_model(t) - p_ref(t) of the reference's most probable token t
  bool same_top = false;     // both rank the same token first (the lowest id among equals)
};

/// The comparison of one prediction from both models' logits (whole vocabulary; exact).
inline PredictionComparison compare_prediction(const float* logits, const float* reference_logits, long vocabulary,
                                               TokenId next) {
  const detail::LogNormaliser model = detail::log_normaliser(logits, vocabulary);
  const detail::LogNormaliser reference = detail::log_normaliser(reference_logits, vocabulary);
  double kl = 0, kl_llama_cpp = 0;
  for (long i = 0; i < vocabulary; ++i) {
    const double reference_log_p = static_cast<double>(reference_logits[i]) - reference.log_sum;
    const double term = std::exp(reference_log_p) * (reference_log_p - (static_cast<double>(logits[i]) - model.log_sum));
    kl += term;
    if (reference_log_p > detail::llama_cpp_log_p_floor) kl_llama_cpp += term;
  }
  PredictionComparison result;
  result.kl_llama_cpp = kl_llama_cpp;
  result.nll = model.log_sum - logits[next];
  result.reference_nll = reference.log_sum - reference_logits[next];
  result.kl = kl;
  result.delta_p = std::exp(-result.nll) - std::exp(-result.reference_nll);
  result.top_delta_p = std::exp(logits[reference.top] - model.log_sum) - std::exp(reference_logits[reference.top] - reference.log_sum);
  result.same_top = model.top == reference.top;
  return result;
}

/// What a saved reference keeps of one prediction: its `k` most probable tokens, most probable
/// first (equal logits by increasing id), their log-probabilities, and the next token's NLL.
struct KeptPrediction {
  const std::int32_t* ids;
  const float* log_probs;
  double nll;
};

/// Keeps the `k` most probable tokens of `reference_logits` (ids, log_probs: k each) and
/// returns the next token's NLL.
inline double keep_prediction(const float* reference_logits, long vocabulary, long k, TokenId next, std::int32_t* ids,
                              float* log_probs) {
  const detail::LogNormaliser reference = detail::log_normaliser(reference_logits, vocabulary);
  std::vector<std::int32_t> order(static_cast<std::size_t>(vocabulary));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](std::int32_t a, std::int32_t b) {
    return reference_logits[a] > reference_logits[b] || (reference_logits[a] == reference_logits[b] && a < b);
  });
  for (long j = 0; j < k; ++j) {
    ids[j] = order[static_cast<std::size_t>(j)];
    log_probs[j] = static_cast<float>(reference_logits[ids[j]] - reference.log_sum);
  }
  return reference.log_sum - reference_logits[next];
}

/// The comparison of one prediction from the model's logits and the reference's kept
/// prediction of `k` tokens: exact but for the KL divergence, taken over the k tokens and "any
/// other token" (a lower bound of the exact one).
inline PredictionComparison compare_prediction(const float* logits, long vocabulary, const KeptPrediction& reference,
                                               long k, TokenId next) {
  const detail::LogNormaliser model = detail::log_normaliser(logits, vocabulary);
  std::vector<bool> kept(static_cast<std::size_t>(vocabulary), false);
  double kl = 0, kl_llama_cpp = 0, kept_mass = 0;
  for (long j = 0; j < k; ++j) {
    const double reference_log_p = reference.log_probs[j];
    kept[static_cast<std::size_t>(reference.ids[j])] = true;
    kept_mass += std::exp(reference_log_p);
    const double term = std::exp(reference_log_p) * (reference_log_p - (static_cast<double>(logits[reference.ids[j]]) - model.log_sum));
    kl += term;
    if (reference_log_p > detail::llama_cpp_log_p_floor) kl_llama_cpp += term;
  }
  const double rest = k < vocabulary ? std::max(0.0, 1 - kept_mass) : 0.0;  // 0 when nothing else is left, whatever the rounding
  if (rest > 0) {
    double model_rest = 0;  // summed over the other tokens, not as 1 - kept: exact when it is small
    for (long i = 0; i < vocabulary; ++i)
      if (!kept[static_cast<std::size_t>(i)]) model_rest += std::exp(static_cast<double>(logits[i]) - model.log_sum);
    kl += rest * (std::log(rest) - std::log(model_rest));
  }
  PredictionComparison result;
  result.nll = model.log_sum - logits[next];
  result.reference_nll = reference.nll;
  result.kl = kl;
  result.kl_llama_cpp = kl_llama_cpp;  // over the kept tokens: below llama.cpp's where more than k are above its floor
  result.delta_p = std::exp(-result.nll) - std::exp(-result.reference_nll);
  result.top_delta_p = std::exp(logits[reference.ids[0]] - model.log_sum) - std::exp(static_cast<double>(reference.log_probs[0]));
  result.same_top = model.top == reference.ids[0];
  return result;
}

/// Every scored prediction of an evaluation compared, in order (window by window).
struct Comparison {
  std::vector<PredictionComparison> predictions;
  long windows = 0;
  long window = 0;
  long first_scored = 0;
};

/// A reference's kept predictions over an evaluation's windows, and the tokens they were made on:
/// what `evaluate_model --save-reference` writes and `--reference FILE` reads.
struct SavedReference {
  std::vector<TokenId> tokens;       // windows * window: the evaluated windows
  long window = 0, first_scored = 0, vocabulary = 0, k = 0;
  std::vector<std::int32_t> ids;     // predictions x k
  std::vector<float> log_probs;      // predictions x k
  std::vector<float> nll;            // per prediction
  std::string source;                // the reference checkpoint, as given

  long windows() const { return window > 0 ? static_cast<long>(tokens.size()) / window : 0; }
  long predictions() const { return static_cast<long>(nll.size()); }
  KeptPrediction prediction(long i) const {
    return {ids.data() + i * k, log_probs.data() + i * k, nll[static_cast<std::size_t>(i)]};
  }
};

/// Whether `path` names a saved reference (a file) rather than a model (a checkpoint directory or a GGUF file).
inline bool is_saved_reference(const std::string& path) {
  return !path.empty() && std::filesystem::is_regular_file(path) && !is_gguf_path(path);
}

/// Compares `model` with `reference` (the same vocabulary) on `tokens` by evaluation.hpp's rule,
/// both run on every window. With `keep` (its k set, 1 <= k <= the vocabulary), the same pass
/// also keeps the reference's k most probable tokens of every prediction there, to be saved
/// (reference_file). The result does not depend on the thread count.
inline Comparison compare(const LlamaModel& model, const LlamaModel& reference, const std::vector<TokenId>& tokens,
                          const EvaluationOptions& options, SavedReference* keep = nullptr) {
  const long vocabulary = model.config().vocab_size;
  require(reference.config().vocab_size == vocabulary,
          "the reference's vocabulary has " + std::to_string(reference.config().vocab_size) + " tokens, the model's " +
              std::to_string(vocabulary) + ": a comparison needs the same vocabulary");
  const EvaluationWindows windows = evaluation_windows(tokens, vocabulary, options);
  const auto predictions = static_cast<std::size_t>(windows.predictions());
  if (keep) {
    require(keep->k >= 1 && keep->k <= vocabulary, "the reference keeps k tokens per prediction, 1 <= k <= the vocabulary (" +
                                                       std::to_string(vocabulary) + "), got " + std::to_string(keep->k));
    keep->tokens.assign(tokens.begin(), tokens.begin() + windows.count * windows.window);
    keep->window = windows.window;
    keep->first_scored = windows.first_scored;
    keep->vocabulary = vocabulary;
    keep->ids.resize(predictions * static_cast<std::size_t>(keep->k));
    keep->log_probs.resize(predictions * static_cast<std::size_t>(keep->k));
    keep->nll.resize(predictions);
  }
  Comparison result{std::vector<PredictionComparison>(predictions), windows.count, windows.window, windows.first_scored};
  for_each_window_batch(model, tokens, windows, options, [&](long first, long count, const std::vector<TokenId>& inputs,
                                                          const Matrix<float>& logits) {
    const Matrix<float> reference_logits = reference.forward(inputs, windows.inputs());
#pragma omp parallel for
    for (long w = 0; w < count; ++w)
      for (long t = windows.first_scored; t < windows.inputs(); ++t) {
        const long row = w * windows.inputs() + t, i = windows.prediction_index(first + w, t);
        const TokenId next = windows.next_token(tokens, first + w, t);
        result.predictions[static_cast<std::size_t>(i)] =
            compare_prediction(logits.data() + row * vocabulary, reference_logits.data() + row * vocabulary, vocabulary, next);
        if (keep)
          keep->nll[static_cast<std::size_t>(i)] = static_cast<float>(keep_prediction(
              reference_logits.data() + row * vocabulary, vocabulary, keep->k, next, keep->ids.data() + i * keep->k,
              keep->log_probs.data() + i * keep->k));
      }
  });
  return result;
}

/// Compares `model` with a saved reference, on the windows it was made on.
inline Comparison compare(const LlamaModel& model, const SavedReference& reference, const EvaluationOptions& options) {
  const long vocabulary = model.config().vocab_size;
  require(reference.vocabulary == vocabulary,
          "the saved reference was made with a vocabulary of " + std::to_string(reference.vocabulary) + " tokens, the model has " +
              std::to_string(vocabulary) + ": a comparison needs the same vocabulary");
  EvaluationOptions rule = options;
  rule.window = reference.window;
  rule.first_scored = reference.first_scored;
  rule.max_windows = 0;
  const EvaluationWindows windows = evaluation_windows(reference.tokens, vocabulary, rule);
  require(windows.predictions() == reference.predictions(), "the saved reference holds " + std::to_string(reference.predictions()) +
                                                                " predictions where its windows score " +
                                                                std::to_string(windows.predictions()));
  Comparison result{std::vector<PredictionComparison>(static_cast<std::size_t>(windows.predictions())), windows.count,
                    windows.window, windows.first_scored};
  for_each_window_batch(model, reference.tokens, windows, rule, [&](long first, long count, const std::vector<TokenId>&,
                                                                  const Matrix<float>& logits) {
#pragma omp parallel for
    for (long w = 0; w < count; ++w)
      for (long t = windows.first_scored; t < windows.inputs(); ++t) {
        const long i = windows.prediction_index(first + w, t);
        result.predictions[static_cast<std::size_t>(i)] =
            compare_prediction(logits.data() + (w * windows.inputs() + t) * vocabulary, vocabulary, reference.prediction(i),
                               reference.k, windows.next_token(reference.tokens, first + w, t));
      }
  });
  return result;
}

/// The model's own evaluation within a comparison: its NLL of every scored prediction.
inline EvaluationResult evaluation_of(const Comparison& comparison) {
  EvaluationResult result;
  for (const PredictionComparison& prediction : comparison.predictions) result.total_nll += prediction.nll;
  result.predictions = static_cast<long>(comparison.predictions.size());
  result.windows = comparison.windows;
  result.window = comparison.window;
  result.first_scored = comparison.first_scored;
  return result;
}

// ---------------------------------------------------------------------------------------------
// The summary, as llama-perplexity --kl-divergence gives it.

namespace detail {

/// The mean of `values` and its standard error, sqrt(sum (x - mean)^2 / (n (n - 1))); the error
/// is 0 for ten values or fewer (too few to say).
inline std::pair<double, double> mean_and_error(const std::vector<double>& values) {
  const double n = static_cast<double>(values.size());
  if (values.empty()) return {0, 0};
  const double mean = std::accumulate(values.begin(), values.end(), 0.0) / n;
  double squares = 0;
  for (const double value : values) squares += (value - mean) * (value - mean);
  return {mean, values.size() > 10 ? std::sqrt(squares / (n * (n - 1))) : 0.0};
}

/// The covariance of the means of `a` and `b`: sum (a - mean a)(b - mean b) / (n (n - 1)).
inline double covariance_of_means(const std::vector<double>& a, const std::vector<double>& b) {
  const double n = static_cast<double>(a.size());
  if (a.size() < 10) return 0;
  const double mean_a = std::accumulate(a.begin(), a.end(), 0.0) / n, mean_b = std::accumulate(b.begin(), b.end(), 0.0) / n;
  double sum = 0;
  for (std::size_t i = 0; i < a.size(); ++i) sum += (a[i] - mean_a) * (b[i] - mean_b);
  return sum / (n * (n - 1));
}

/// The `fraction` quantile of sorted `values`, interpolated linearly between neighbours (at
/// fraction * (n - 1)), so 0.5 is the median.
inline double quantile(const std::vector<double>& sorted, double fraction) {
  const double at = fraction * static_cast<double>(sorted.size() - 1);
  const auto below = static_cast<std::size_t>(at);
  const std::size_t above = std::min(below + 1, sorted.size() - 1);
  return sorted[below] + (at - static_cast<double>(below)) * (sorted[above] - sorted[below]);
}

inline nlohmann::json value_and_error(double value, double error) { return {{"value", value}, {"error", error}}; }

/// Mean with its standard error, then the quantiles named by percent ("p99.9", "median", "max", ...).
inline nlohmann::json distribution(std::vector<double> values, const std::vector<double>& percents) {
  const auto [mean, error] = mean_and_error(values);
  std::sort(values.begin(), values.end());
  nlohmann::json json = {{"mean", mean}, {"error", error}, {"max", values.back()}, {"min", values.front()},
                         {"median", quantile(values, 0.5)}};
  for (const double percent : percents) {
    std::string name = std::to_string(percent);
    name.erase(name.find_last_not_of('0') + 1);
    if (name.back() == '.') name.pop_back();
    json["p" + name] = quantile(values, percent / 100);
  }
  return json;
}

}  // namespace detail

/// The summary of a comparison (values in nats; probabilities as fractions), each mean with its
/// standard error as llama.cpp computes them:
///   "predictions", "ppl", "reference_ppl" {"value", "error"}; "ppl_correlation" (of the NLLs);
///   "ln_ppl_ratio", "ppl_ratio", "ppl_difference" {"value", "error"};
///   "kl" {"mean", "error", "max", "p99.9", "p99", "p95", "p90", "median", "p10", "p5", "p1", "p0.1", "min"};
///   "kl_llama_cpp" {"mean", "error"}: the KL summed as llama-perplexity sums it (reference log-probabilities above -16);
///   "delta_p" (of the next token) the same with "p75", "p25", and "rms", "rms_error";
///   "top_delta_p" (of the reference's most probable token) {"mean", "error", "rms", "rms_error"};
///   "same_top" {"value", "error"}.
inline nlohmann::json summarize(const Comparison& comparison) {
  const std::vector<PredictionComparison>& all = comparison.predictions;
  require(all.size() >= 2, "a comparison needs at least two scored predictions, got " + std::to_string(all.size()));
  const auto column = [&](double PredictionComparison::*field) {
    std::vector<double> values;
    values.reserve(all.size());
    for (const PredictionComparison& prediction : all) values.push_back(prediction.*field);
    return values;
  };
  const std::vector<double> nll = column(&PredictionComparison::nll), reference_nll = column(&PredictionComparison::reference_nll);
  const auto [mean_nll, nll_error] = detail::mean_and_error(nll);
  const auto [mean_reference_nll, reference_nll_error] = detail::mean_and_error(reference_nll);
  const double covariance = detail::covariance_of_means(nll, reference_nll);
  const double ppl = std::exp(mean_nll), reference_ppl = std::exp(mean_reference_nll);
  const double ln_ratio = mean_nll - mean_reference_nll;
  const double ln_ratio_error =
      std::sqrt(std::max(0.0, nll_error * nll_error + reference_nll_error * reference_nll_error - 2 * covariance));
  const double ppl_error = ppl * nll_error, reference_ppl_error = reference_ppl * reference_nll_error;

  // Root mean square of a column, with the error of the mean of its squares carried through the root.
  const auto rms = [&](double PredictionComparison::*field, nlohmann::json& json) {
    std::vector<double> squares = column(field);
    for (double& value : squares) value *= value;
    const auto [mean_square, mean_square_error] = detail::mean_and_error(squares);
    json["rms"] = std::sqrt(mean_square);
    json["rms_error"] = mean_square > 0 ? 0.5 / std::sqrt(mean_square) * mean_square_error : 0.0;
  };
  nlohmann::json delta_p = detail::distribution(column(&PredictionComparison::delta_p),
                                                {99.9, 99, 95, 90, 75, 25, 10, 5, 1, 0.1});
  rms(&PredictionComparison::delta_p, delta_p);
  const auto [top_mean, top_error] = detail::mean_and_error(column(&PredictionComparison::top_delta_p));
  nlohmann::json top_delta_p = {{"mean", top_mean}, {"error", top_error}};
  rms(&PredictionComparison::top_delta_p, top_delta_p);
  const auto [llama_cpp_kl, llama_cpp_kl_error] = detail::mean_and_error(column(&PredictionComparison::kl_llama_cpp));
  const double n = static_cast<double>(all.size());
  const double same = static_cast<double>(std::count_if(all.begin(), all.end(), [](const PredictionComparison& p) { return p.same_top; })) / n;

  return {{"predictions", all.size()},
          {"windows", comparison.windows},
          {"window", comparison.window},
          {"first_scored", comparison.first_scored},
          {"ppl", detail::value_and_error(ppl, ppl_error)},
          {"reference_ppl", detail::value_and_error(reference_ppl, reference_ppl_error)},
          {"ppl_correlation", nll_error > 0 && reference_nll_error > 0 ? covariance / (nll_error * reference_nll_error) : 0.0},
          {"ln_ppl_ratio", detail::value_and_error(ln_ratio, ln_ratio_error)},
          {"ppl_ratio", detail::value_and_error(std::exp(ln_ratio), std::exp(ln_ratio) * ln_ratio_error)},
          {"ppl_difference",
           detail::value_and_error(ppl - reference_ppl,
                                   std::sqrt(std::max(0.0, ppl_error * ppl_error + reference_ppl_error * reference_ppl_error -
                                                               2 * ppl * reference_ppl * covariance)))},
          {"kl", detail::distribution(column(&PredictionComparison::kl), {99.9, 99, 95, 90, 10, 5, 1, 0.1})},
          {"kl_llama_cpp", {{"mean", llama_cpp_kl}, {"error", llama_cpp_kl_error}}},
          {"delta_p", delta_p},
          {"top_delta_p", top_delta_p},
          {"same_top", detail::value_and_error(same, std::sqrt(same * (1 - same) / (n - 1)))}};
}

// ---------------------------------------------------------------------------------------------
// Saved references: a safetensors file.

/// Writes `reference` as a safetensors file: tensors "tokens" (U32, windows x window),
/// "top_ids" (I32, predictions x k), "top_log_probs" (F32, predictions x k), "nll" (F32,
/// predictions); metadata "format" = "gsq-reference", "window", "first_scored", "vocabulary",
/// "k", "source".
inline SafetensorsWriter reference_file(const SavedReference& reference) {
  SafetensorsWriter writer;
  writer.set_metadata("format", "gsq-reference");
  writer.set_metadata("window", std::to_string(reference.window));
  writer.set_metadata("first_scored", std::to_string(reference.first_scored));
  writer.set_metadata("vocabulary", std::to_string(reference.vocabulary));
  writer.set_metadata("k", std::to_string(reference.k));
  writer.set_metadata("source", reference.source);
  writer.add_integers("tokens", Dtype::U32, {reference.windows(), reference.window},
                      std::vector<std::int64_t>(reference.tokens.begin(), reference.tokens.end()));
  writer.add_integers("top_ids", Dtype::I32, {reference.predictions(), reference.k},
                      std::vector<std::int64_t>(reference.ids.begin(), reference.ids.end()));
  writer.add("top_log_probs", {reference.predictions(), reference.k}, reference.log_probs);
  writer.add("nll", {reference.predictions()}, reference.nll);
  return writer;
}

/// Reads what reference_file wrote, checking that its parts agree.
inline SavedReference read_reference(const std::string& path) {
  const SafetensorsFile file = [&] {
    try {
      return SafetensorsFile::open(path);
    } catch (const Error& error) {
      throw Error(path + " is not a reference saved by gsq (evaluate_model --save-reference): " + error.what());
    }
  }();
  const auto field = [&](const std::string& key) {
    const auto found = file.metadata().find(key);
    require(found != file.metadata().end(), path + ": no \"" + key + "\" metadata: not a reference saved by gsq (evaluate_model --save-reference)");
    return found->second;
  };
  require(field("format") == "gsq-reference",
          path + ": metadata \"format\" is not \"gsq-reference\": not a reference saved by gsq (evaluate_model --save-reference)");
  const auto number = [&](const std::string& key) {
    const std::string text = field(key);
    require(!text.empty() && text.find_first_not_of("0123456789") == std::string::npos,
            path + ": metadata \"" + key + "\" is not a number: '" + text + "'");
    return std::stol(text);
  };
  SavedReference saved;
  saved.window = number("window");
  saved.first_scored = number("first_scored");
  saved.vocabulary = number("vocabulary");
  saved.k = number("k");
  saved.source = field("source");
  require(saved.window >= 2 && saved.first_scored < saved.window - 1 && saved.k >= 1 && saved.k <= saved.vocabulary,
          path + ": its window (" + std::to_string(saved.window) + "), first scored position (" +
              std::to_string(saved.first_scored) + ") and k (" + std::to_string(saved.k) + ") do not make a reference");
  const std::vector<std::int64_t> tokens = file.integer_values("tokens");
  const long predictions_per_window = saved.window - 1 - saved.first_scored;
  require(file.info("tokens").shape == std::vector<std::int64_t>{static_cast<std::int64_t>(tokens.size()) / saved.window, saved.window} &&
              !tokens.empty(),
          path + ": \"tokens\" is not whole windows of " + std::to_string(saved.window));
  const long predictions = static_cast<long>(tokens.size()) / saved.window * predictions_per_window;
  const std::vector<std::int64_t> shape = {predictions, saved.k};
  require(file.info("top_ids").shape == shape && file.info("top_log_probs").shape == shape &&
              file.info("nll").shape == std::vector<std::int64_t>{predictions},
          path + ": \"top_ids\", \"top_log_probs\" and \"nll\" must hold " + std::to_string(predictions) +
              " predictions (of k = " + std::to_string(saved.k) + ")");
  for (const std::int64_t token : tokens)
    require(token >= 0 && token < saved.vocabulary, path + ": token id " + std::to_string(token) + " is outside the vocabulary");
  saved.tokens.assign(tokens.begin(), tokens.end());
  const std::vector<std::int64_t> ids = file.integer_values("top_ids");
  for (const std::int64_t id : ids)
    require(id >= 0 && id < saved.vocabulary, path + ": kept token id " + std::to_string(id) + " is outside the vocabulary");
  saved.ids.assign(ids.begin(), ids.end());
  saved.log_probs = file.float_values("top_log_probs");
  saved.nll = file.float_values("nll");
  for (const float value : saved.log_probs)
    require(std::isfinite(value) && value <= 0, path + ": a kept log-probability is not a finite value <= 0");
  for (const float value : saved.nll) require(std::isfinite(value) && value >= 0, path + ": an NLL is not a finite value >= 0");
  return saved;
}

}  // namespace gsq
