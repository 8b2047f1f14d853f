// Tests of gsq/model/layer_divergence.hpp: with one layer changed, every other layer's divergence
// is exactly zero and that layer's equals the whole model's divergence (gsq::compare, an
// independent path through full forward passes); the result does not depend on the batching.
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include <gsq/model/comparison.hpp>
#include <gsq/model/layer_divergence.hpp>
#include <gsq/model/llama.hpp>

TEST_CASE("layer divergence: only the changed layer diverges and by the whole model's amount", "[evaluation][divergence]") {
  const std::string fixture = std::string(GSQ_SOURCE_DIR) + "/tests/data/tiny-llama3";
  const gsq::LlamaModel original = gsq::LlamaModel::load(fixture);
  gsq::LlamaModel changed = gsq::LlamaModel::load(fixture);
  const long layer = 1;
  const std::string linear = original.config().linear_names(layer).back();
  gsq::Matrix<float> weight = original.linear_weight(layer, linear);
  for (std::size_t i = 0; i < weight.size(); ++i) weight.data()[i] *= (i % 3 == 0) ? 1.5f : 0.9f;
  changed.set_linear_weight(layer, linear, weight);

  std::mt19937 random(7);
  std::vector<gsq::TokenId> tokens(6 * 16);
  for (gsq::TokenId& token : tokens) token = static_cast<gsq::TokenId>(random() % static_cast<unsigned>(original.config().vocab_size));
  gsq::EvaluationOptions options;
  options.window = 16;
  options.windows_per_batch = 4;  // two batches, the second part-filled

  const std::vector<gsq::LayerDivergence> layers = gsq::layer_divergences(original, changed, tokens, options);
  REQUIRE(static_cast<long>(layers.size()) == original.config().layers);
  const gsq::Comparison whole = gsq::compare(changed, original, tokens, options);
  double whole_kl = 0;
  long whole_same = 0;
  for (const gsq::PredictionComparison& prediction : whole.predictions) whole_kl += prediction.kl, whole_same += prediction.same_top;
  whole_kl /= static_cast<double>(whole.predictions.size());
  for (const gsq::LayerDivergence& divergence : layers) {
    INFO("layer " << divergence.layer);
    CHECK(divergence.predictions == 6 * 15);
    if (divergence.layer == layer) {
      CHECK(divergence.kl > 1e-4);
      CHECK(divergence.kl == Approx(whole_kl).epsilon(1e-6));
      CHECK(divergence.same_top == Approx(static_cast<double>(whole_same) / 90.0));
    } else {
      CHECK(divergence.kl == 0);  // the same weights: the same hidden states, bit for bit
      CHECK(divergence.same_top == 1);
    }
  }
  options.windows_per_batch = 6;
  const std::vector<gsq::LayerDivergence> one_batch = gsq::layer_divergences(original, changed, tokens, options);
  CHECK(one_batch[layer].kl == Approx(layers[layer].kl).epsilon(1e-6));
}

TEST_CASE("expert divergence: only the changed expert diverges, and the original is put back", "[evaluation][divergence]") {
  const std::string fixture = std::string(GSQ_SOURCE_DIR) + "/tests/data/tiny-mixtral";
  gsq::LlamaModel original = gsq::LlamaModel::load(fixture);
  gsq::LlamaModel changed = gsq::LlamaModel::load(fixture);
  const long layer = 1, expert = 2;
  const gsq::SwiGluBlock block = original.config().swiglu_blocks(layer).at(expert);
  REQUIRE(block.expert == expert);
  gsq::Matrix<float> weight = original.linear_weight(layer, block.linears[2]);
  for (std::size_t i = 0; i < weight.size(); ++i) weight.data()[i] *= (i % 2 == 0) ? 2.0f : -1.0f;
  changed.set_linear_weight(layer, block.linears[2], weight);

  std::mt19937 random(11);
  std::vector<gsq::TokenId> tokens(4 * 16);
  for (gsq::TokenId& token : tokens) token = static_cast<gsq::TokenId>(random() % static_cast<unsigned>(original.config().vocab_size));
  gsq::EvaluationOptions options;
  options.window = 16;
  const gsq::Matrix<float> before = original.forward(tokens, 16);

  const std::vector<gsq::LayerDivergence> experts = gsq::expert_divergences(original, changed, tokens, options);
  REQUIRE(static_cast<long>(experts.size()) == original.config().layers * original.config().mixture.experts);
  const gsq::Comparison whole = gsq::compare(changed, original, tokens, options);
  double whole_kl = 0;
  for (const gsq::PredictionComparison& prediction : whole.predictions) whole_kl += prediction.kl;
  whole_kl /= static_cast<double>(whole.predictions.size());
  for (const gsq::LayerDivergence& divergence : experts) {
    INFO("layer " << divergence.layer << " expert " << divergence.expert);
    if (divergence.layer == layer && divergence.expert == expert) {
      CHECK(divergence.kl > 1e-4);
      CHECK(divergence.kl == Approx(whole_kl).epsilon(1e-6));
    } else {
      CHECK(divergence.kl == 0);
    }
  }
  const gsq::Matrix<float> after = original.forward(tokens, 16);
  CHECK(std::equal(before.data(), before.data() + before.size(), after.data()));
}
