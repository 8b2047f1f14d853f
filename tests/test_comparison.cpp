// Tests of gsq/model/comparison.hpp: a model judged against a reference as llama-perplexity
// --kl-divergence judges it. Each prediction's statistics against direct sums in long double, the
// kept top-k reference against the exact comparison and against its own definition (the KL
// divergence over the k tokens and "any other"), the summary's means, errors and quantiles
// against their formulas, and whole models (a model against itself; a perturbed one, exactly
// and through a saved file); malformed reference files refused by name; and evaluate_model's
// --reference, --save-reference and --second-half.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <gsq/model/comparison.hpp>

#include "program_runner.hpp"

using Catch::Matchers::Contains;
using gsq::testing::ScratchDirectory;

namespace {

const std::string bundled = GSQ_SOURCE_DIR "/data/llama-bytes-3m";

std::vector<float> random_logits(long vocabulary, std::uint32_t seed, float spread) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, spread);
  std::vector<float> logits(static_cast<std::size_t>(vocabulary));
  for (float& logit : logits) logit = normal(generator);
  return logits;
}

std::vector<long double> probabilities(const std::vector<float>& logits) {
  long double sum = 0;
  for (const float logit : logits) sum += std::exp(static_cast<long double>(logit));
  std::vector<long double> p;
  for (const float logit : logits) p.push_back(std::exp(static_cast<long double>(logit)) / sum);
  return p;
}

/// The bundled model's evaluation text, as byte tokens.
std::vector<gsq::TokenId> bundled_text() { return gsq::read_byte_tokens(bundled + "/eval.txt"); }

/// The first `windows` windows of `window` tokens, every prediction scored.
gsq::EvaluationOptions first_windows(long window, long windows) {
  gsq::EvaluationOptions options;
  options.window = window;
  options.max_windows = windows;
  return options;
}

long double direct_kl(const std::vector<long double>& p, const std::vector<long double>& q) {
  long double kl = 0;
  for (std::size_t i = 0; i < p.size(); ++i) kl += p[i] * std::log(p[i] / q[i]);
  return kl;
}

}  // namespace

TEST_CASE("a prediction compared over the whole vocabulary equals the direct sums") {
  const long vocabulary = 97;
  const std::vector<float> reference = random_logits(vocabulary, 1, 3), model = random_logits(vocabulary, 2, 3);
  const std::vector<long double> p = probabilities(reference), q = probabilities(model);
  const gsq::TokenId next = 41;
  const gsq::PredictionComparison result = gsq::compare_prediction(model.data(), reference.data(), vocabulary, next);
  CHECK(result.kl == Approx(static_cast<double>(direct_kl(p, q))).epsilon(1e-12));
  CHECK(result.nll == Approx(static_cast<double>(-std::log(q[next]))).epsilon(1e-12));
  CHECK(result.reference_nll == Approx(static_cast<double>(-std::log(p[next]))).epsilon(1e-12));
  CHECK(result.delta_p == Approx(static_cast<double>(q[next] - p[next])).margin(1e-14));
  const std::size_t top = static_cast<std::size_t>(std::max_element(p.begin(), p.end()) - p.begin());
  CHECK(result.top_delta_p == Approx(static_cast<double>(q[top] - p[top])).margin(1e-14));
  CHECK(result.same_top == (std::max_element(q.begin(), q.end()) - q.begin() == static_cast<long>(top)));

  // llama-perplexity's sum leaves out the tokens of reference log-probability -16 and below: with
  // logits spread over 40 nats many are, and the direct sums over the others and over them agree.
  std::vector<float> spread = reference;
  for (std::size_t i = 0; i < spread.size(); ++i) spread[i] = -40.0f * static_cast<float>(i) / static_cast<float>(vocabulary) + 0.01f * reference[i];
  const std::vector<long double> wide = probabilities(spread);
  long double kept_terms = 0, left_out_terms = 0;
  long left_out = 0;
  for (std::size_t i = 0; i < wide.size(); ++i) {
    const long double term = wide[i] * (std::log(wide[i]) - std::log(q[i]));
    if (std::log(wide[i]) > -16) kept_terms += term;
    else left_out_terms += term, ++left_out;
  }
  REQUIRE(left_out > 20);
  const gsq::PredictionComparison wide_result = gsq::compare_prediction(model.data(), spread.data(), vocabulary, next);
  CHECK(wide_result.kl_llama_cpp == Approx(static_cast<double>(kept_terms)).epsilon(1e-12));
  CHECK(wide_result.kl - wide_result.kl_llama_cpp == Approx(static_cast<double>(left_out_terms)).epsilon(1e-6));

  const gsq::PredictionComparison itself = gsq::compare_prediction(reference.data(), reference.data(), vocabulary, next);
  CHECK(std::abs(itself.kl) < 1e-15);
  CHECK(itself.same_top);
  CHECK(itself.delta_p == 0);
}

TEST_CASE("a kept top-k prediction gives the KL divergence over its k tokens and the rest, exact at k = vocabulary and below it otherwise") {
  const long vocabulary = 64;
  const std::vector<float> reference = random_logits(vocabulary, 3, 2), model = random_logits(vocabulary, 4, 2);
  const std::vector<long double> p = probabilities(reference), q = probabilities(model);
  const gsq::TokenId next = 7;
  const double exact = gsq::compare_prediction(model.data(), reference.data(), vocabulary, next).kl;
  for (const long k : {1L, 5L, 20L, vocabulary}) {
    std::vector<std::int32_t> ids(static_cast<std::size_t>(k));
    std::vector<float> log_probs(static_cast<std::size_t>(k));
    const double nll = gsq::keep_prediction(reference.data(), vocabulary, k, next, ids.data(), log_probs.data());
    CHECK(nll == Approx(static_cast<double>(-std::log(p[next]))).epsilon(1e-12));
    // The k most probable, most probable first, with their log-probabilities.
    std::vector<std::int32_t> order(static_cast<std::size_t>(vocabulary));
    for (long i = 0; i < vocabulary; ++i) order[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i);
    std::sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) { return p[a] > p[b]; });
    for (long j = 0; j < k; ++j) {
      REQUIRE(ids[static_cast<std::size_t>(j)] == order[static_cast<std::size_t>(j)]);
      CHECK(log_probs[static_cast<std::size_t>(j)] == Approx(static_cast<double>(std::log(p[order[j]]))).epsilon(1e-6));
    }
    // The definition: KL over the k tokens plus the outcome "any other token".
    long double kept_p = 0, kept_q = 0, coarse = 0;
    for (long j = 0; j < k; ++j) {
      const std::int32_t id = ids[static_cast<std::size_t>(j)];
      kept_p += p[id];
      kept_q += q[id];
      coarse += p[id] * std::log(p[id] / q[id]);
    }
    if (k < vocabulary) coarse += (1 - kept_p) * std::log((1 - kept_p) / (1 - kept_q));
    const gsq::PredictionComparison kept =
        gsq::compare_prediction(model.data(), vocabulary, gsq::KeptPrediction{ids.data(), log_probs.data(), nll}, k, next);
    INFO("k = " << k);
    CHECK(kept.kl == Approx(static_cast<double>(coarse)).epsilon(1e-5));
    CHECK(kept.kl <= exact + 1e-6);
    CHECK(kept.same_top == (ids[0] == std::max_element(model.begin(), model.end()) - model.begin()));
    if (k == vocabulary) CHECK(kept.kl == Approx(exact).epsilon(1e-5));
  }
}

TEST_CASE("the summary's means, standard errors, quantiles and rates follow their formulas") {
  gsq::Comparison comparison;
  comparison.windows = 1;
  comparison.window = 41;
  const long n = 40;
  for (long i = 0; i < n; ++i) {
    gsq::PredictionComparison prediction;
    prediction.kl = static_cast<double>(i) / 100;  // 0, 0.01, ..., 0.39
    prediction.nll = 1 + 0.1 * std::sin(static_cast<double>(i));
    prediction.reference_nll = 1 + 0.05 * std::sin(static_cast<double>(i)) + 0.01 * std::cos(3.0 * static_cast<double>(i));
    prediction.delta_p = (i % 2 == 0 ? 1 : -1) * 0.01 * static_cast<double>(i % 5);
    prediction.same_top = i % 4 != 0;
    comparison.predictions.push_back(prediction);
  }
  const nlohmann::json summary = gsq::summarize(comparison);
  CHECK(summary["predictions"] == n);
  CHECK(summary["kl"]["mean"].get<double>() == Approx(0.195));
  // Standard error of the mean of 0, 0.01, ..., 0.39: sqrt(var / n), var = sum (x - mean)^2 / (n - 1).
  double squares = 0;
  for (long i = 0; i < n; ++i) squares += std::pow(static_cast<double>(i) / 100 - 0.195, 2);
  CHECK(summary["kl"]["error"].get<double>() == Approx(std::sqrt(squares / (n - 1) / n)));
  CHECK(summary["kl"]["median"].get<double>() == Approx(0.195));         // between 0.19 and 0.20
  CHECK(summary["kl"]["p90"].get<double>() == Approx(0.351));            // at 0.9 * 39 = 35.1
  CHECK(summary["kl"]["p99.9"].get<double>() == Approx(0.38961));        // at 38.961
  CHECK(summary["kl"]["max"].get<double>() == Approx(0.39));
  CHECK(summary["kl"]["min"].get<double>() == 0);
  CHECK(summary["same_top"]["value"].get<double>() == Approx(0.75));
  CHECK(summary["same_top"]["error"].get<double>() == Approx(std::sqrt(0.75 * 0.25 / (n - 1))));
  // The perplexity ratio is exp of the difference of the mean NLLs.
  double nll = 0, reference_nll = 0, delta_squares = 0;
  for (const gsq::PredictionComparison& prediction : comparison.predictions) {
    nll += prediction.nll / n;
    reference_nll += prediction.reference_nll / n;
    delta_squares += prediction.delta_p * prediction.delta_p / n;
  }
  CHECK(summary["ppl"]["value"].get<double>() == Approx(std::exp(nll)));
  CHECK(summary["ppl_ratio"]["value"].get<double>() == Approx(std::exp(nll - reference_nll)));
  CHECK(summary["ln_ppl_ratio"]["value"].get<double>() == Approx(nll - reference_nll));
  CHECK(summary["delta_p"]["rms"].get<double>() == Approx(std::sqrt(delta_squares)));
  // Correlated NLLs: the ratio's error is below what independent ones would give.
  const double independent = std::hypot(summary["ppl"]["error"].get<double>() / summary["ppl"]["value"].get<double>(),
                                        summary["reference_ppl"]["error"].get<double>() / summary["reference_ppl"]["value"].get<double>());
  CHECK(summary["ln_ppl_ratio"]["error"].get<double>() < independent);
  CHECK(summary["ppl_correlation"].get<double>() > 0.9);
}

TEST_CASE("a model compared with itself shows no divergence, the same top token everywhere and its own evaluation") {
  const gsq::LlamaModel model = gsq::LlamaModel::load(bundled);
  const std::vector<gsq::TokenId> tokens = bundled_text();
  const gsq::EvaluationOptions options = first_windows(64, 6);
  const gsq::Comparison comparison = gsq::compare(model, model, tokens, options);
  REQUIRE(comparison.predictions.size() == 6 * 63);
  const nlohmann::json summary = gsq::summarize(comparison);
  CHECK(std::abs(summary["kl"]["max"].get<double>()) < 1e-12);
  CHECK(summary["same_top"]["value"] == 1.0);
  CHECK(summary["ppl_ratio"]["value"].get<double>() == Approx(1.0).epsilon(1e-12));
  CHECK(gsq::evaluation_of(comparison).mean_nll() == Approx(gsq::evaluate(model, tokens, options).mean_nll()).epsilon(1e-12));
}

TEST_CASE("with llama-perplexity's rule only the second half of each window is scored") {
  const gsq::LlamaModel model = gsq::LlamaModel::load(bundled);
  const std::vector<gsq::TokenId> tokens = bundled_text();
  gsq::EvaluationOptions options = first_windows(32, 3);
  options.first_scored = 16;
  options.windows_per_batch = 1;  // as below: the same products, the same rounding
  const gsq::EvaluationResult result = gsq::evaluate(model, tokens, options);
  CHECK(result.predictions == 3 * 15);
  double nll = 0;
  for (long w = 0; w < 3; ++w) {
    const std::vector<gsq::TokenId> inputs(tokens.begin() + w * 32, tokens.begin() + w * 32 + 31);
    const gsq::Matrix<float> logits = model.forward(inputs, 31);
    for (long t = 16; t < 31; ++t) nll += gsq::token_nll(logits.data() + t * logits.cols, logits.cols, tokens[w * 32 + t + 1]);
  }
  CHECK(result.total_nll == Approx(nll).epsilon(1e-12));
  options.first_scored = 31;
  CHECK_THROWS_WITH(gsq::evaluate(model, tokens, options), Contains("first scored position must lie in [0, window - 1)"));
}

TEST_CASE("a perturbed model compared exactly and through a saved top-k reference, written and read back") {
  const gsq::LlamaModel reference = gsq::LlamaModel::load(bundled);
  gsq::LlamaModel perturbed = gsq::LlamaModel::load(bundled);
  gsq::Matrix<float> weight = perturbed.linear_weight(1, "mlp.down_proj");
  for (std::size_t i = 0; i < weight.values.size(); i += 3) weight.values[i] *= 1.5f;
  perturbed.set_linear_weight(1, "mlp.down_proj", weight);
  const std::vector<gsq::TokenId> tokens = bundled_text();
  gsq::EvaluationOptions options = first_windows(64, 8);
  options.first_scored = 32;

  gsq::SavedReference kept;
  kept.k = 256;  // the whole vocabulary: exact
  kept.source = bundled;
  const gsq::Comparison exact = gsq::compare(perturbed, reference, tokens, options, &kept);
  const nlohmann::json summary = gsq::summarize(exact);
  CHECK(summary["kl"]["mean"].get<double>() > 1e-3);
  CHECK(summary["same_top"]["value"].get<double>() < 1);

  const ScratchDirectory scratch;
  const std::string path = scratch.file("reference.safetensors");
  gsq::reference_file(kept).write(path);
  const gsq::SavedReference read = gsq::read_reference(path);
  CHECK(read.tokens == kept.tokens);
  CHECK(read.window == 64);
  CHECK(read.first_scored == 32);
  CHECK(read.source == bundled);
  const nlohmann::json whole = gsq::summarize(gsq::compare(perturbed, read, options));
  CHECK(whole["kl"]["mean"].get<double>() == Approx(summary["kl"]["mean"].get<double>()).epsilon(1e-5));
  CHECK(whole["same_top"] == summary["same_top"]);
  CHECK(whole["ppl_ratio"]["value"].get<double>() == Approx(summary["ppl_ratio"]["value"].get<double>()).epsilon(1e-6));

  gsq::SavedReference few;
  few.k = 8;
  gsq::compare(perturbed, reference, tokens, options, &few);
  const nlohmann::json coarse = gsq::summarize(gsq::compare(perturbed, few, options));
  CHECK(coarse["kl"]["mean"].get<double>() <= summary["kl"]["mean"].get<double>() * (1 + 1e-6));
  CHECK(coarse["kl"]["mean"].get<double>() > 0.5 * summary["kl"]["mean"].get<double>());
  CHECK(coarse["same_top"] == summary["same_top"]);
}

TEST_CASE("malformed or mismatched references are refused, naming the problem") {
  const ScratchDirectory scratch;
  const gsq::LlamaModel model = gsq::LlamaModel::load(bundled);
  const std::vector<gsq::TokenId> tokens = bundled_text();
  const gsq::EvaluationOptions options = first_windows(16, 2);
  gsq::SavedReference kept;
  kept.k = 4;
  gsq::compare(model, model, tokens, options, &kept);

  const auto written = [&](const gsq::SavedReference& reference, const std::string& name) {
    const std::string path = scratch.file(name);
    gsq::reference_file(reference).write(path);
    return path;
  };
  gsq::SavedReference bad_id = kept;
  bad_id.ids[3] = 300;
  CHECK_THROWS_WITH(gsq::read_reference(written(bad_id, "id.safetensors")), Contains("kept token id 300 is outside the vocabulary"));
  {  // metadata that disagrees with the tensors: k = 3 where they hold 4 per prediction
    const std::string good = written(kept, "good.safetensors");
    const gsq::SafetensorsFile file = gsq::SafetensorsFile::open(good);
    gsq::SafetensorsWriter tampered;
    for (const auto& [key, value] : file.metadata()) tampered.set_metadata(key, key == "k" ? "3" : value);
    for (const gsq::TensorInfo& tensor : file.tensors()) {
      const gsq::ByteView bytes = file.raw_bytes(tensor.name);
      tampered.add_bytes(tensor.name, tensor.dtype, tensor.shape, std::vector<std::uint8_t>(bytes.data, bytes.data + bytes.size));
    }
    tampered.write(scratch.file("k.safetensors"));
    CHECK_THROWS_WITH(gsq::read_reference(scratch.file("k.safetensors")), Contains("must hold 30 predictions (of k = 3)"));
  }
  gsq::SavedReference bad_nll = kept;
  bad_nll.nll[0] = std::nanf("");
  CHECK_THROWS_WITH(gsq::read_reference(written(bad_nll, "nll.safetensors")), Contains("an NLL is not a finite value"));
  gsq::SavedReference other_vocabulary = kept;
  other_vocabulary.vocabulary = 512;
  CHECK_THROWS_WITH(gsq::compare(model, gsq::read_reference(written(other_vocabulary, "vocabulary.safetensors")), options),
                    Contains("made with a vocabulary of 512 tokens, the model has 256"));
  // A safetensors file that is not a reference.
  CHECK_THROWS_WITH(gsq::read_reference(bundled + "/model.safetensors"), Contains("not a reference saved by gsq"));
}

TEST_CASE("evaluate_model --reference prints the statistics, reuses a saved reference and refuses mismatches") {
  const ScratchDirectory scratch;
  const std::string text = scratch.file("eval.txt"), saved = scratch.file("reference.safetensors");
  {
    std::ofstream out(text, std::ios::binary);
    out << gsq::testing::read_file(bundled + "/eval.txt").substr(0, 4096);
  }
  // The bundled model perturbed: one linear scaled.
  const std::string perturbed = scratch.file("perturbed");
  std::filesystem::create_directories(perturbed);
  std::filesystem::copy(bundled + "/config.json", perturbed + "/config.json");
  {
    const gsq::SafetensorsFile original = gsq::SafetensorsFile::open(bundled + "/model.safetensors");
    gsq::SafetensorsWriter writer;
    for (const gsq::TensorInfo& tensor : original.tensors()) {
      std::vector<float> values = original.float_values(tensor.name);
      if (tensor.name == "model.layers.2.self_attn.o_proj.weight")
        for (float& value : values) value *= 1.25f;
      writer.add(tensor.name, tensor.shape, values);
    }
    writer.write(perturbed + "/model.safetensors");
  }
  const std::string common = "--model '" + perturbed + "' --byte-tokens --window 128 --quiet ";
  const gsq::testing::Outcome exact =
      gsq::testing::run_program("evaluate_model", common + "--eval '" + text + "' --reference '" + bundled + "' --second-half --save-reference '" +
                                                      saved + "' --top-k 256 --json '" + scratch.file("exact.json") + "'");
  INFO(exact.err);
  REQUIRE(exact.status == 0);
  CHECK_THAT(exact.out, Contains("====== KL divergence (nats) ======"));
  CHECK_THAT(exact.out, Contains("same top token"));
  const nlohmann::json record = nlohmann::json::parse(gsq::testing::read_file(scratch.file("exact.json")));
  CHECK(record["first_scored"] == 64);
  CHECK(record["tokens"] == 32 * 63);
  CHECK(record["comparison"]["kl"]["mean"].get<double>() > 0);

  // The saved reference (the whole vocabulary kept) gives the same figures without the reference model.
  const gsq::testing::Outcome reused =
      gsq::testing::run_program("evaluate_model", "--model '" + perturbed + "' --quiet --reference '" + saved + "' --json '" +
                                                      scratch.file("saved.json") + "'");
  INFO(reused.err);
  REQUIRE(reused.status == 0);
  const nlohmann::json again = nlohmann::json::parse(gsq::testing::read_file(scratch.file("saved.json")));
  CHECK(again["nll"].get<double>() == Approx(record["nll"].get<double>()).epsilon(1e-12));
  CHECK(again["comparison"]["kl"]["mean"].get<double>() == Approx(record["comparison"]["kl"]["mean"].get<double>()).epsilon(1e-5));
  CHECK(again["comparison"]["same_top"] == record["comparison"]["same_top"]);

  // Mismatches: other windows than the saved ones, other text, a reference of another vocabulary.
  gsq::testing::Outcome refused = gsq::testing::run_program("evaluate_model", common + "--reference '" + saved + "'");
  CHECK(refused.status == 2);
  CHECK_THAT(refused.err, Contains("was saved with windows of 128 scored from position 64"));
  refused = gsq::testing::run_program("evaluate_model", "--model '" + perturbed + "' --byte-tokens --eval '" + bundled +
                                                            "/calib.txt' --reference '" + saved + "'");
  CHECK(refused.status == 2);
  CHECK_THAT(refused.err, Contains("does not begin with the tokens --reference"));
  refused = gsq::testing::run_program("evaluate_model", common + "--eval '" + text + "' --reference '" + GSQ_SOURCE_DIR +
                                                            "/tests/data/tiny-llama3'");
  CHECK(refused.status == 2);
  CHECK_THAT(refused.err, Contains("needs the same vocabulary"));
  refused = gsq::testing::run_program("evaluate_model", common + "--eval '" + text + "' --save-reference '" + scratch.file("x") + "'");
  CHECK(refused.status == 2);
  CHECK_THAT(refused.err, Contains("--save-reference needs --reference DIR"));
  refused = gsq::testing::run_program("evaluate_model", common + "--eval '" + text + "' --reference '" + bundled +
                                                            "' --save-reference '" + bundled + "/model.safetensors'");
  CHECK(refused.status == 2);
}
