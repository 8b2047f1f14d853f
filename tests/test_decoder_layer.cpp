// A decoder layer's pieces and the decoder-layer objective: every backward pass against central
// finite differences of its forward pass in double; rotate_back as the transpose of rotate; the
// objective's forward against LlamaModel's (checked against transformers by test_llama).
#include <catch2/catch.hpp>

#include "error_message.hpp"
#include <gsq/objective/decoder_layer.hpp>

#include <array>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace {

using gsq::testing::error_of;

const std::string models = GSQ_SOURCE_DIR "/tests/data/";

template <class Real>
gsq::Matrix<Real> random_matrix(long rows, long cols, std::mt19937_64& random, double scale = 1) {
  std::normal_distribution<double> normal(0, scale);
  gsq::Matrix<Real> m(rows, cols);
  for (Real& value : m.values) value = static_cast<Real>(normal(random));
  return m;
}

double inner(const gsq::Matrix<double>& a, const gsq::Matrix<double>& b) {
  double sum = 0;
  for (std::size_t i = 0; i < a.size(); ++i) sum += a.values[i] * b.values[i];
  return sum;
}

gsq::Matrix<double> plus(const gsq::Matrix<double>& a, const gsq::Matrix<double>& direction, double step) {
  gsq::Matrix<double> result = a;
  for (std::size_t i = 0; i < a.size(); ++i) result.values[i] += step * direction.values[i];
  return result;
}

/// (f(x + h v) - f(x - h v)) / 2h against <gradient, v>, relative to the larger of the two.
void check_directional_derivative(const std::function<double(const gsq::Matrix<double>&)>& f, const gsq::Matrix<double>& x,
                                  const gsq::Matrix<double>& gradient, std::mt19937_64& random, double tolerance = 1e-6) {
  for (int trial = 0; trial < 3; ++trial) {
    const gsq::Matrix<double> direction = random_matrix<double>(x.rows, x.cols, random);
    const double h = 1e-5;
    const double numeric = (f(plus(x, direction, h)) - f(plus(x, direction, -h))) / (2 * h);
    const double analytic = inner(gradient, direction);
    INFO("numeric " << numeric << " analytic " << analytic);
    CHECK(std::abs(numeric - analytic) <= tolerance * std::max(1.0, std::abs(analytic)));
  }
}

std::vector<float> random_weight(long size, std::mt19937_64& random) {
  std::normal_distribution<double> normal(1, 0.3);
  std::vector<float> weight(static_cast<std::size_t>(size));
  for (float& value : weight) value = static_cast<float>(normal(random));
  return weight;
}

}  // namespace

TEST_CASE("rms_norm_backward is the gradient of rms_norm, over rows and over heads", "[decoder_layer]") {
  std::mt19937_64 random(1);
  for (const long width : {12L, 4L}) {  // a whole row, or three heads of four
    const std::vector<float> weight = random_weight(width, random);
    const gsq::Matrix<double> x = random_matrix<double>(5, 12, random), probe = random_matrix<double>(5, 12, random);
    const auto loss = [&](const gsq::Matrix<double>& at) { return inner(probe, gsq::rms_norm(at, weight, 1e-5)); };
    check_directional_derivative(loss, x, gsq::rms_norm_backward(x, weight, 1e-5, probe), random);
  }
}

TEST_CASE("RotaryEmbedding::rotate_back is the transpose of rotate, with every scaling read", "[decoder_layer]") {
  std::mt19937_64 random(2);
  for (const std::string model : {"tiny-llama3", "tiny-qwen2", "tiny-deepseek-v3"}) {
    INFO(model);
    const gsq::LlamaConfig config = gsq::LlamaConfig::load(models + model + "/config.json");
    const long length = 7, width = config.latent_attention() ? config.latent.nope_dim + config.latent.rope_dim : config.head_dim;
    const long offset = config.latent_attention() ? config.latent.nope_dim : 0;
    const gsq::RotaryEmbedding<double> rotary(config, length);
    const gsq::Matrix<double> a = random_matrix<double>(2 * length, 3 * width, random);
    const gsq::Matrix<double> b = random_matrix<double>(2 * length, 3 * width, random);
    gsq::Matrix<double> rotated = a, back = b;
    rotary.rotate(rotated, width, offset);
    rotary.rotate_back(back, width, offset);
    CHECK(inner(rotated, b) == Approx(inner(a, back)).epsilon(1e-12));
    CHECK(inner(rotated, b) != Approx(inner(a, b)).epsilon(1e-3));  // it does turn
  }
}

TEST_CASE("causal_attention_backward is the gradient of causal attention (grouped-query)", "[decoder_layer]") {
  std::mt19937_64 random(3);
  const gsq::AttentionShape shape{4, 2, 3, 5, 0.7};
  const long length = 6, rows = 2 * length;
  const gsq::Matrix<double> q = random_matrix<double>(rows, 4 * 3, random), k = random_matrix<double>(rows, 2 * 3, random);
  const gsq::Matrix<double> v = random_matrix<double>(rows, 2 * 5, random), probe = random_matrix<double>(rows, 4 * 5, random);
  std::vector<double> probabilities;
  const gsq::Matrix<double> output = gsq::causal_attention(q, k, v, shape, length, &probabilities);
  const gsq::AttentionGradients<double> grads =
      gsq::causal_attention_backward(q, k, v, output, probabilities, probe, shape, length);
  check_directional_derivative([&](const gsq::Matrix<double>& at) { return inner(probe, gsq::causal_attention(at, k, v, shape, length)); },
                               q, grads.queries, random);
  check_directional_derivative([&](const gsq::Matrix<double>& at) { return inner(probe, gsq::causal_attention(q, at, v, shape, length)); },
                               k, grads.keys, random);
  check_directional_derivative([&](const gsq::Matrix<double>& at) { return inner(probe, gsq::causal_attention(q, k, at, shape, length)); },
                               v, grads.values, random);
  // Causal: the first token of each sequence attends to itself only.
  for (long sequence = 0; sequence < 2; ++sequence)
    for (long head = 0; head < 4; ++head)
      for (long d = 0; d < 5; ++d) CHECK(output(sequence * length, head * 5 + d) == Approx(v(sequence * length, head / 2 * 5 + d)));
}

namespace {

using Objective = gsq::DecoderLayerObjective<double>;

/// A layer's seven weights, in the objective's order.
std::array<gsq::Matrix<float>, Objective::linear_count> layer_weights(const gsq::LlamaModel& model, long layer) {
  std::array<gsq::Matrix<float>, Objective::linear_count> weights;
  for (std::size_t i = 0; i < weights.size(); ++i) weights[i] = model.linear_weight(layer, Objective::linear_names()[i]);
  return weights;
}

gsq::HiddenStates random_states(const gsq::LlamaModel& model, long sequences, long length, std::uint64_t seed) {
  std::mt19937_64 random(seed);
  return {length, random_matrix<float>(sequences * length, model.config().hidden_size, random)};
}

}  // namespace

TEST_CASE("the decoder-layer objective's gradients match finite differences of its value", "[decoder_layer]") {
  // GQA 4:1 and llama3 rope; q/k/v biases; Qwen3's per-head q/k norms
  for (const std::string name : {"tiny-llama3", "tiny-qwen2", "tiny-qwen3"}) {
    INFO(name);
    const gsq::LlamaModel model = gsq::LlamaModel::load(models + name);
    const long layer = 1, length = 6;
    const gsq::HiddenStates inputs = random_states(model, 4, length, 4);
    const gsq::Matrix<float> targets = model.decoder_layer(layer, inputs).values;
    Objective objective(model, layer, inputs, targets, 2);
    REQUIRE(objective.batch_count() == 2);
    // Away from the full-precision weights, so that the loss and its gradient are not zero.
    std::mt19937_64 random(5);
    std::array<gsq::Matrix<double>, Objective::linear_count> weights, gradients;
    const auto full = layer_weights(model, layer);
    for (std::size_t i = 0; i < weights.size(); ++i) {
      weights[i] = plus(full[i].cast<double>(), random_matrix<double>(full[i].rows, full[i].cols, random), 0.02);
      gradients[i] = gsq::Matrix<double>(full[i].rows, full[i].cols);
    }
    const auto value = [&](const std::array<gsq::Matrix<double>, Objective::linear_count>& at, Objective::Gradients into) {
      Objective::Weights pointers;
      for (std::size_t i = 0; i < at.size(); ++i) pointers[i] = at[i].data();
      return objective.value_and_gradient(1, pointers, into);
    };
    Objective::Gradients into;
    for (std::size_t i = 0; i < gradients.size(); ++i) into[i] = gradients[i].data();
    const double loss = value(weights, into);
    CHECK(loss > 1e-4);
    std::array<gsq::Matrix<double>, Objective::linear_count> scratch = gradients;
    Objective::Gradients discard;
    for (std::size_t i = 0; i < scratch.size(); ++i) discard[i] = scratch[i].data();
    for (std::size_t i = 0; i < weights.size(); ++i) {
      INFO(Objective::linear_names()[i]);
      check_directional_derivative(
          [&](const gsq::Matrix<double>& at) {
            std::array<gsq::Matrix<double>, Objective::linear_count> moved = weights;
            moved[i] = at;
            return value(moved, discard);
          },
          weights[i], gradients[i], random);
    }
  }
}

TEST_CASE("the decoder-layer objective's forward pass is LlamaModel's", "[decoder_layer]") {
  const gsq::LlamaModel model = gsq::LlamaModel::load(models + "tiny-llama3");
  const gsq::HiddenStates inputs = random_states(model, 3, 8, 6);
  const gsq::Matrix<float> targets = model.decoder_layer(0, inputs).values;
  gsq::DecoderLayerObjective<float> objective(model, 0, inputs, targets, 1);
  CHECK(objective.batch_count() == 3);
  auto weights = layer_weights(model, 0);
  CHECK(objective.relative_error(weights) < 1e-10);  // the same layer: only rounding differs
  for (float& value : weights[gsq::DecoderLayerObjective<float>::value].values) value *= 1.1f;
  CHECK(objective.relative_error(weights) > 1e-4);   // and it sees a change in attention
}

TEST_CASE("the decoder-layer objective refuses what it cannot train", "[decoder_layer]") {
  const gsq::LlamaModel dense = gsq::LlamaModel::load(models + "tiny-llama3");
  const gsq::HiddenStates inputs = random_states(dense, 2, 5, 7);
  const gsq::Matrix<float> targets = dense.decoder_layer(0, inputs).values;
  CHECK_THAT(error_of([&] { Objective(dense, 0, inputs, targets, 3); }), Catch::Contains("between 1 and the 2 calibration sequences"));
  CHECK_THAT(error_of([&] { Objective(dense, 0, inputs, inputs.values, 1); }), Catch::Contains("targets equal its inputs"));
  gsq::Matrix<float> short_targets(targets.rows - 5, targets.cols);
  CHECK_THAT(error_of([&] { Objective(dense, 0, inputs, short_targets, 1); }), Catch::Contains("targets are 5 x"));
  gsq::Matrix<float> bad = targets;
  bad(3, 2) = std::nanf("");
  CHECK_THAT(error_of([&] { Objective(dense, 0, inputs, bad, 1); }), Catch::Contains("targets"));
  CHECK_THAT(error_of([] { Objective::require_supported(gsq::LlamaConfig::load(models + "tiny-mixtral/config.json"), 0); }),
             Catch::Contains("mixture of experts"));
  CHECK_THAT(error_of([] { Objective::require_supported(gsq::LlamaConfig::load(models + "tiny-deepseek-v3/config.json"), 0); }),
             Catch::Contains("latent attention"));
}
