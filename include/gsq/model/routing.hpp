// gsq/model/routing.hpp -- a Mixture-of-Experts router: from each token's router logits, the
// experts it goes to and the weights of their outputs (gsq/model/config.hpp, MixtureConfig).
//
//   gsq::Routing routing = gsq::route(logits, config.mixture, correction_bias);  // logits: tokens x experts
//   // token t goes to routing.expert(t, j) with weight routing.weight(t, j), j < routing.per_token
#pragma once

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "gsq/common/error.hpp"
#include "gsq/common/matrix.hpp"
#include "gsq/model/config.hpp"

namespace gsq {

/// The experts each token goes to, in increasing expert order, and their weights.
struct Routing {
  long per_token = 0;
  std::vector<long> experts;   // tokens x per_token
  std::vector<float> weights;  // tokens x per_token

  long expert(long token, long j) const { return experts[static_cast<std::size_t>(token * per_token + j)]; }
  float weight(long token, long j) const { return weights[static_cast<std::size_t>(token * per_token + j)]; }
};

/// The tokens an expert receives, in token order, and the weights of its output for them.
struct ExpertTokens {
  std::vector<long> tokens;
  std::vector<float> weights;
};

/// What each of `experts` experts receives under `routing`.
inline std::vector<ExpertTokens> tokens_by_expert(const Routing& routing, long experts) {
  std::vector<ExpertTokens> by_expert(static_cast<std::size_t>(experts));
  const long tokens = routing.per_token == 0 ? 0 : static_cast<long>(routing.experts.size()) / routing.per_token;
  for (long token = 0; token < tokens; ++token)
    for (long j = 0; j < routing.per_token; ++j) {
      ExpertTokens& expert = by_expert[static_cast<std::size_t>(routing.expert(token, j))];
      expert.tokens.push_back(token);
      expert.weights.push_back(routing.weight(token, j));
    }
  return by_expert;
}

namespace detail {

/// The indices of the `count` largest of `values`, the lower index first among equals.
inline std::vector<long> top_indices(const std::vector<float>& values, long count) {
  std::vector<long> order(values.size());
  std::iota(order.begin(), order.end(), 0L);
  std::partial_sort(order.begin(), order.begin() + count, order.end(), [&](long a, long b) {
    return values[static_cast<std::size_t>(a)] > values[static_cast<std::size_t>(b)] ||
           (values[static_cast<std::size_t>(a)] == values[static_cast<std::size_t>(b)] && a < b);
  });
  order.resize(static_cast<std::size_t>(count));
  return order;
}

/// Softmax over the experts, the top k, renormalised if asked (Mixtral, Qwen-MoE).
inline std::vector<std::pair<long, float>> softmax_choice(const float* logits, const MixtureConfig& mixture) {
  const long experts = mixture.experts;
  const float largest = *std::max_element(logits, logits + experts);
  std::vector<float> probabilities(static_cast<std::size_t>(experts));
  float sum = 0;
  for (long e = 0; e < experts; ++e) sum += probabilities[static_cast<std::size_t>(e)] = std::exp(logits[e] - largest);
  for (float& probability : probabilities) probability /= sum;
  std::vector<std::pair<long, float>> chosen;
  float chosen_sum = 0;
  for (long e : top_indices(probabilities, mixture.experts_per_token)) {
    chosen.emplace_back(e, probabilities[static_cast<std::size_t>(e)]);
    chosen_sum += probabilities[static_cast<std::size_t>(e)];
  }
  if (mixture.normalize_top_k)
    for (auto& [expert, weight] : chosen) weight /= chosen_sum;
  return chosen;
}

/// DeepSeek-V3: sigmoid scores; the best top_groups groups by the sum of their two best biased
/// scores; the top k biased scores within them; weights from the unbiased scores.
inline std::vector<std::pair<long, float>> grouped_sigmoid_choice(const float* logits, const MixtureConfig& mixture,
                                                                   const std::vector<float>& correction_bias) {
  const long experts = mixture.experts, group_size = experts / mixture.groups;
  std::vector<float> scores(static_cast<std::size_t>(experts)), biased(scores.size());
  for (long e = 0; e < experts; ++e) {
    scores[static_cast<std::size_t>(e)] = 1.0f / (1.0f + std::exp(-logits[e]));
    biased[static_cast<std::size_t>(e)] = scores[static_cast<std::size_t>(e)] + correction_bias[static_cast<std::size_t>(e)];
  }
  std::vector<float> group_scores(static_cast<std::size_t>(mixture.groups));
  for (long group = 0; group < mixture.groups; ++group) {
    const std::vector<float> members(biased.begin() + group * group_size, biased.begin() + (group + 1) * group_size);
    const std::vector<long> best = top_indices(members, 2);
    group_scores[static_cast<std::size_t>(group)] = members[static_cast<std::size_t>(best[0])] + members[static_cast<std::size_t>(best[1])];
  }
  std::vector<float> eligible(scores.size(), -INFINITY);
  for (long group : top_indices(group_scores, mixture.top_groups))
    std::copy_n(biased.begin() + group * group_size, group_size, eligible.begin() + group * group_size);
  std::vector<std::pair<long, float>> chosen;
  float chosen_sum = 0;
  for (long e : top_indices(eligible, mixture.experts_per_token)) {
    chosen.emplace_back(e, scores[static_cast<std::size_t>(e)]);
    chosen_sum += scores[static_cast<std::size_t>(e)];
  }
  for (auto& [expert, weight] : chosen) {
    if (mixture.normalize_top_k) weight /= chosen_sum + 1e-20f;
    weight *= static_cast<float>(mixture.routed_scaling);
  }
  return chosen;
}

}  // namespace detail

/// Routes each token (a row of `logits`, tokens x experts) by `mixture`'s router;
/// `correction_bias` (one per expert) is DeepSeek-V3's e_score_correction_bias, empty otherwise.
inline Routing route(const Matrix<float>& logits, const MixtureConfig& mixture, const std::vector<float>& correction_bias) {
  mixture.validate("the router");
  require(logits.cols == mixture.experts, "router logits have " + std::to_string(logits.cols) + " columns, not one per expert (" +
                                              std::to_string(mixture.experts) + ")");
  const bool grouped = mixture.router == MixtureConfig::Router::grouped_sigmoid;
  require(!grouped || static_cast<long>(correction_bias.size()) == mixture.experts,
          "grouped sigmoid routing needs one correction bias per expert");
  Routing routing{mixture.experts_per_token,
                  std::vector<long>(static_cast<std::size_t>(logits.rows * mixture.experts_per_token)),
                  std::vector<float>(static_cast<std::size_t>(logits.rows * mixture.experts_per_token))};
#pragma omp parallel for
  for (long token = 0; token < logits.rows; ++token) {
    const float* row = logits.data() + token * logits.cols;
    std::vector<std::pair<long, float>> chosen = grouped ? detail::grouped_sigmoid_choice(row, mixture, correction_bias)
                                                         : detail::softmax_choice(row, mixture);
    std::sort(chosen.begin(), chosen.end());
    for (long j = 0; j < routing.per_token; ++j) {
      routing.experts[static_cast<std::size_t>(token * routing.per_token + j)] = chosen[static_cast<std::size_t>(j)].first;
      routing.weights[static_cast<std::size_t>(token * routing.per_token + j)] = chosen[static_cast<std::size_t>(j)].second;
    }
  }
  return routing;
}

}  // namespace gsq
