// Tests for gsq/model/routing.hpp: both routers against brute force, bias and group limits, a known answer, errors.
#include <catch2/catch.hpp>

#include "error_message.hpp"
#include <gsq/model/routing.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

using Catch::Matchers::Contains;

using gsq::testing::error_of;

namespace {

/// Calls `visit` with every k-subset of {0, ..., n - 1}, each in increasing order.
void for_each_subset(long n, long k, const std::function<void(const std::vector<long>&)>& visit) {
  std::vector<long> subset(static_cast<std::size_t>(k));
  std::function<void(long, long)> extend = [&](long position, long first) {
    if (position == k) {
      visit(subset);
      return;
    }
    for (long i = first; i <= n - (k - position); ++i) {
      subset[static_cast<std::size_t>(position)] = i;
      extend(position + 1, i + 1);
    }
  };
  extend(0, 0);
}

/// One token's routing: its experts in increasing order and their weights.
struct Choice {
  std::vector<long> experts;
  std::vector<double> weights;
};

/// The k-subset of `candidates` with the largest sum of `values`, in increasing order.
std::vector<long> best_subset(const std::vector<long>& candidates, const std::vector<double>& values, long k) {
  std::vector<long> best;
  double best_sum = -INFINITY;
  for_each_subset(static_cast<long>(candidates.size()), k, [&](const std::vector<long>& subset) {
    double sum = 0;
    for (long i : subset) sum += values[static_cast<std::size_t>(candidates[static_cast<std::size_t>(i)])];
    if (sum > best_sum) {
      best_sum = sum;
      best.clear();
      for (long i : subset) best.push_back(candidates[static_cast<std::size_t>(i)]);
    }
  });
  std::sort(best.begin(), best.end());
  return best;
}

std::vector<long> all_experts(long experts) {
  std::vector<long> result(static_cast<std::size_t>(experts));
  for (long e = 0; e < experts; ++e) result[static_cast<std::size_t>(e)] = e;
  return result;
}

/// Softmax routing of one token by brute force, in double.
Choice brute_force_softmax(const std::vector<double>& logits, long k, bool normalize) {
  std::vector<double> probabilities(logits.size());
  double sum = 0;
  for (std::size_t e = 0; e < logits.size(); ++e) sum += probabilities[e] = std::exp(logits[e]);
  for (double& p : probabilities) p /= sum;
  Choice choice;
  choice.experts = best_subset(all_experts(static_cast<long>(logits.size())), probabilities, k);
  double chosen_sum = 0;
  for (long e : choice.experts) chosen_sum += probabilities[static_cast<std::size_t>(e)];
  for (long e : choice.experts)
    choice.weights.push_back(probabilities[static_cast<std::size_t>(e)] / (normalize ? chosen_sum : 1.0));
  return choice;
}

/// DeepSeek-V3 grouped sigmoid routing of one token by brute force, in double.
Choice brute_force_grouped(const std::vector<double>& logits, const std::vector<float>& bias, long groups,
                           long top_groups, long k, bool normalize, double scaling) {
  const long experts = static_cast<long>(logits.size()), group_size = experts / groups;
  std::vector<double> scores(logits.size()), biased(logits.size());
  for (std::size_t e = 0; e < logits.size(); ++e) {
    scores[e] = 1.0 / (1.0 + std::exp(-logits[e]));
    biased[e] = scores[e] + double(bias[e]);
  }
  std::vector<double> group_scores(static_cast<std::size_t>(groups));
  for (long g = 0; g < groups; ++g) {
    std::vector<double> members(biased.begin() + g * group_size, biased.begin() + (g + 1) * group_size);
    std::sort(members.begin(), members.end(), std::greater<double>());
    group_scores[static_cast<std::size_t>(g)] = members[0] + members[1];
  }
  const std::vector<long> kept_groups = best_subset(all_experts(groups), group_scores, top_groups);
  std::vector<long> candidates;
  for (long g : kept_groups)
    for (long e = g * group_size; e < (g + 1) * group_size; ++e) candidates.push_back(e);
  Choice choice;
  choice.experts = best_subset(candidates, biased, k);
  double chosen_sum = 0;
  for (long e : choice.experts) chosen_sum += scores[static_cast<std::size_t>(e)];
  for (long e : choice.experts)
    choice.weights.push_back(scores[static_cast<std::size_t>(e)] / (normalize ? chosen_sum + 1e-20 : 1.0) * scaling);
  return choice;
}

gsq::MixtureConfig softmax_mixture(long experts, long k, bool normalize) {
  gsq::MixtureConfig mixture;
  mixture.router = gsq::MixtureConfig::Router::softmax;
  mixture.experts = experts;
  mixture.experts_per_token = k;
  mixture.normalize_top_k = normalize;
  return mixture;
}

gsq::MixtureConfig grouped_mixture(long experts, long groups, long top_groups, long k, bool normalize, double scaling) {
  gsq::MixtureConfig mixture;
  mixture.router = gsq::MixtureConfig::Router::grouped_sigmoid;
  mixture.experts = experts;
  mixture.experts_per_token = k;
  mixture.normalize_top_k = normalize;
  mixture.groups = groups;
  mixture.top_groups = top_groups;
  mixture.routed_scaling = scaling;
  return mixture;
}

gsq::Matrix<float> random_logits(long tokens, long experts, std::mt19937& generator) {
  std::normal_distribution<float> normal(0.0f, 2.0f);
  gsq::Matrix<float> logits(tokens, experts);
  for (float& v : logits.values) v = normal(generator);
  return logits;
}

std::vector<double> row_of(const gsq::Matrix<float>& logits, long token) {
  std::vector<double> row(static_cast<std::size_t>(logits.cols));
  for (long e = 0; e < logits.cols; ++e) row[static_cast<std::size_t>(e)] = double(logits(token, e));
  return row;
}

std::vector<long> experts_of(const gsq::Routing& routing, long token) {
  std::vector<long> experts;
  for (long j = 0; j < routing.per_token; ++j) experts.push_back(routing.expert(token, j));
  return experts;
}

/// Checks token `token` of `routing` against `expected`: the same experts in the same (increasing)
/// order, weights within `tolerance` relative; returns the sum of its weights.
double check_token(const gsq::Routing& routing, long token, const Choice& expected, double tolerance = 1e-6) {
  INFO("token " << token);
  CHECK(experts_of(routing, token) == expected.experts);
  double sum = 0;
  for (long j = 0; j < routing.per_token && j < static_cast<long>(expected.weights.size()); ++j) {
    CHECK(double(routing.weight(token, j)) == Approx(expected.weights[static_cast<std::size_t>(j)]).epsilon(tolerance));
    sum += routing.weight(token, j);
  }
  return sum;
}

/// The logit whose sigmoid is `score`.
float logit_of(double score) { return static_cast<float>(std::log(score / (1.0 - score))); }

}  // namespace

TEST_CASE("softmax routing matches brute force over every k-subset of experts", "[routing]") {
  std::mt19937 generator(20240611);
  const long tokens = 200, experts = 8;
  const gsq::Matrix<float> logits = random_logits(tokens, experts, generator);
  for (long k : {1L, 2L, 3L})
    for (bool normalize : {false, true}) {
      INFO("k " << k << ", normalize_top_k " << normalize);
      const gsq::Routing routing = gsq::route(logits, softmax_mixture(experts, k, normalize), {});
      REQUIRE(routing.per_token == k);
      REQUIRE(routing.experts.size() == static_cast<std::size_t>(tokens * k));
      REQUIRE(routing.weights.size() == static_cast<std::size_t>(tokens * k));
      for (long token = 0; token < tokens; ++token) {
        const double sum = check_token(routing, token, brute_force_softmax(row_of(logits, token), k, normalize));
        if (normalize) CHECK(sum == Approx(1.0).epsilon(1e-6));
        else CHECK(sum < 1.0);
      }
    }
}

TEST_CASE("grouped sigmoid routing matches brute force over every choice of groups and experts", "[routing]") {
  std::mt19937 generator(7);
  std::uniform_real_distribution<float> small_bias(-0.02f, 0.02f);  // every biased score stays positive
  const long tokens = 100;
  const double scaling = 2.5;
  struct Shape {
    long experts, groups;
  };
  for (const Shape shape : {Shape{16, 4}, Shape{8, 4}, Shape{12, 3}}) {
    const long group_size = shape.experts / shape.groups;
    const gsq::Matrix<float> logits = random_logits(tokens, shape.experts, generator);
    std::vector<float> bias(static_cast<std::size_t>(shape.experts));
    for (float& b : bias) b = small_bias(generator);
    for (long top_groups = 1; top_groups <= std::min(3L, shape.groups); ++top_groups)
      for (long k = 1; k <= std::min(4L, top_groups * group_size); ++k)
        for (bool normalize : {false, true}) {
          INFO(shape.experts << " experts in " << shape.groups << " groups, top_groups " << top_groups << ", k " << k
                             << ", normalize_top_k " << normalize);
          const gsq::MixtureConfig mixture =
              grouped_mixture(shape.experts, shape.groups, top_groups, k, normalize, scaling);
          const gsq::Routing routing = gsq::route(logits, mixture, bias);
          REQUIRE(routing.per_token == k);
          REQUIRE(routing.experts.size() == static_cast<std::size_t>(tokens * k));
          for (long token = 0; token < tokens; ++token) {
            const Choice expected =
                brute_force_grouped(row_of(logits, token), bias, shape.groups, top_groups, k, normalize, scaling);
            const double sum = check_token(routing, token, expected);
            if (normalize) CHECK(sum == Approx(scaling).epsilon(1e-6));
          }
        }
  }
}

TEST_CASE("grouped sigmoid routing: a -100 correction bias excludes an expert; the group limit holds",
          "[routing]") {
  SECTION("an expert with correction bias -100 is never chosen, however large its logit") {
    std::mt19937 generator(99);
    const long tokens = 200, experts = 16, groups = 4, banned = 5;
    gsq::Matrix<float> logits = random_logits(tokens, experts, generator);
    for (long token = 0; token < tokens; ++token) logits(token, banned) = 10.0f;  // the best unbiased score
    std::vector<float> bias(static_cast<std::size_t>(experts), 0.0f);
    for (long top_groups : {2L, groups}) {
      INFO("top_groups " << top_groups);
      const gsq::MixtureConfig mixture = grouped_mixture(experts, groups, top_groups, 4, true, 2.5);
      // Control: without the bias the expert is the best and, with every group kept, always chosen.
      if (top_groups == groups) {
        const gsq::Routing unbiased = gsq::route(logits, mixture, bias);
        for (long token = 0; token < tokens; ++token) {
          const std::vector<long> chosen = experts_of(unbiased, token);
          CHECK(std::count(chosen.begin(), chosen.end(), banned) == 1);
        }
      }
      std::vector<float> banning = bias;
      banning[static_cast<std::size_t>(banned)] = -100.0f;
      const gsq::Routing routing = gsq::route(logits, mixture, banning);
      long times_chosen = 0;
      for (long token = 0; token < tokens; ++token) {
        const std::vector<long> chosen = experts_of(routing, token);
        times_chosen += std::count(chosen.begin(), chosen.end(), banned);
        CHECK(std::is_sorted(chosen.begin(), chosen.end()));
      }
      CHECK(times_chosen == 0);
    }
  }

  SECTION("the best expert is not chosen when its group loses on the sum of its two best scores") {
    // Two groups of four. Group 0 holds the single best expert (0.95) with weak partners (0.1):
    // group score 1.05. Group 1 holds 0.8, 0.75, 0.7, 0.65: group score 1.55.
    const std::vector<double> scores = {0.95, 0.1, 0.12, 0.08, 0.8, 0.75, 0.7, 0.65};
    gsq::Matrix<float> logits(1, 8);
    for (long e = 0; e < 8; ++e) logits(0, e) = logit_of(scores[static_cast<std::size_t>(e)]);
    const std::vector<float> bias(8, 0.0f);

    const gsq::Routing limited = gsq::route(logits, grouped_mixture(8, 2, 1, 2, true, 1.0), bias);
    CHECK(experts_of(limited, 0) == std::vector<long>{4, 5});
    CHECK(limited.weight(0, 0) == Approx(0.8 / 1.55).epsilon(1e-6));
    CHECK(limited.weight(0, 1) == Approx(0.75 / 1.55).epsilon(1e-6));

    const gsq::Routing unlimited = gsq::route(logits, grouped_mixture(8, 2, 2, 2, true, 1.0), bias);
    CHECK(experts_of(unlimited, 0) == std::vector<long>{0, 4});
    CHECK(unlimited.weight(0, 0) == Approx(0.95 / 1.75).epsilon(1e-6));
    CHECK(unlimited.weight(0, 1) == Approx(0.8 / 1.75).epsilon(1e-6));

    // The bias moves the group choice: +0.6 on expert 1 lifts group 0 to 1.05 + 0.6 = 1.65 > 1.55,
    // and expert 1 (biased 0.7) then loses to expert 0 only; its weight stays its unbiased score.
    std::vector<float> lifting = bias;
    lifting[1] = 0.6f;
    const gsq::Routing lifted = gsq::route(logits, grouped_mixture(8, 2, 1, 2, false, 2.0), lifting);
    CHECK(experts_of(lifted, 0) == std::vector<long>{0, 1});
    CHECK(lifted.weight(0, 0) == Approx(0.95 * 2.0).epsilon(1e-6));
    CHECK(lifted.weight(0, 1) == Approx(0.1 * 2.0).epsilon(1e-6));
  }
}

TEST_CASE("softmax routing of logits {0, ln 2, ln 3, ln 4}: probabilities 0.1 to 0.4, known weights", "[routing]") {
  gsq::Matrix<float> logits(1, 4);
  for (long e = 0; e < 4; ++e) logits(0, e) = static_cast<float>(std::log(double(e + 1)));

  const gsq::Routing normalized = gsq::route(logits, softmax_mixture(4, 2, true), {});
  REQUIRE(normalized.per_token == 2);
  CHECK(experts_of(normalized, 0) == std::vector<long>{2, 3});
  CHECK(normalized.weight(0, 0) == Approx(3.0 / 7.0).epsilon(1e-6));
  CHECK(normalized.weight(0, 1) == Approx(4.0 / 7.0).epsilon(1e-6));

  const gsq::Routing plain = gsq::route(logits, softmax_mixture(4, 2, false), {});
  CHECK(experts_of(plain, 0) == std::vector<long>{2, 3});
  CHECK(plain.weight(0, 0) == Approx(0.3).epsilon(1e-6));
  CHECK(plain.weight(0, 1) == Approx(0.4).epsilon(1e-6));

  const gsq::Routing one = gsq::route(logits, softmax_mixture(4, 1, false), {});
  CHECK(experts_of(one, 0) == std::vector<long>{3});
  CHECK(one.weight(0, 0) == Approx(0.4).epsilon(1e-6));
}

TEST_CASE("routing rejects logits of the wrong width, a missing correction bias and impossible settings, naming the problem",
          "[routing]") {
  const gsq::Matrix<float> seven_wide(3, 7);
  const std::string width = error_of([&] { gsq::route(seven_wide, softmax_mixture(8, 2, true), {}); });
  CHECK_THAT(width, Contains("7 columns") && Contains("one per expert") && Contains("(8)"));
  CHECK_THROWS_AS(gsq::route(seven_wide, grouped_mixture(8, 4, 2, 2, true, 1.0), std::vector<float>(8)), gsq::Error);

  const gsq::Matrix<float> logits(3, 8);
  for (const std::vector<float>& bias : {std::vector<float>{}, std::vector<float>(7), std::vector<float>(9)}) {
    INFO(bias.size() << " biases");
    CHECK_THAT(error_of([&] { gsq::route(logits, grouped_mixture(8, 4, 2, 2, true, 1.0), bias); }),
               Contains("correction bias") && Contains("per expert"));
  }
  // Softmax routing takes no correction bias and needs none.
  CHECK_NOTHROW(gsq::route(logits, softmax_mixture(8, 2, true), {}));

  const std::vector<float> bias(8);
  CHECK_THAT(error_of([&] { gsq::route(logits, softmax_mixture(8, 9, true), {}); }), Contains("num_experts_per_tok"));
  CHECK_THAT(error_of([&] { gsq::route(logits, grouped_mixture(8, 0, 1, 2, true, 1.0), bias); }), Contains("n_group"));
  CHECK_THAT(error_of([&] { gsq::route(logits, grouped_mixture(8, 8, 1, 1, true, 1.0), bias); }), Contains("n_group"));
  CHECK_THAT(error_of([&] { gsq::route(logits, grouped_mixture(8, 4, 1, 3, true, 1.0), bias); }), Contains("topk_group"));
}
