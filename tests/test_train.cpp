// Tests of gsq/core/train.hpp: results independent of the thread count, GSQ improving on its RTN
// start at 2 bits, the per-step report, and invalid settings.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <vector>

#include <gsq/gsq.hpp>
#include <gsq/pipeline/linear_format.hpp>

namespace {

/// A layer big enough that the host backend splits every pass over threads.
struct Layer {
  gsq::SyntheticLayer data = gsq::make_synthetic_layer({256, 512, 1024, 7});
  gsq::HessianObjective<> objective = gsq::HessianObjective<>::from_inputs(data.weight, data.inputs);
  gsq::QuantizedTensor rtn = gsq::round_to_nearest(data.weight, gsq::grid_spec<gsq::Int<2>>(), 128);
};

Layer& shared_layer() {
  static Layer layer;
  return layer;
}

struct Run {
  std::vector<double> losses;
  std::vector<float> logits;
  gsq::QuantizedTensor result;
};

Run train_from_rtn(const gsq::TrainConfig& config) {
  Layer& layer = shared_layer();
  gsq::Quantizer<gsq::Int<2>> quantizer(layer.rtn);
  const gsq::TrainReport report = gsq::train(quantizer, layer.objective, config);
  return {report.losses, quantizer.logits(), quantizer.result()};
}

gsq::TrainConfig short_run(long steps, std::uint64_t seed) {
  gsq::TrainConfig config;
  config.steps = steps;
  config.seed = seed;
  return config;
}

}  // namespace

TEST_CASE("the same seed gives bit-identical results with 1 and 2 threads, another seed does not", "[train]") {
  gsq::set_host_threads(1);
  const Run one_thread = train_from_rtn(short_run(4, 11));
  gsq::set_host_threads(2);
  const Run two_threads = train_from_rtn(short_run(4, 11));
  REQUIRE(one_thread.losses == two_threads.losses);
  REQUIRE(one_thread.logits == two_threads.logits);
  REQUIRE(one_thread.result.codes == two_threads.result.codes);
  REQUIRE(one_thread.result.scales == two_threads.result.scales);

  const Run other_seed = train_from_rtn(short_run(4, 12));
  REQUIRE(other_seed.losses != one_thread.losses);
  REQUIRE(other_seed.logits != one_thread.logits);
}

TEST_CASE("at 2 bits, group 128, GSQ ends strictly below its RTN starting error", "[train]") {
  Layer& layer = shared_layer();
  const double rtn_error = layer.objective.relative_error(layer.rtn.dequantize());
  const Run run = train_from_rtn(short_run(200, 0));
  const double gsq_error = layer.objective.relative_error(run.result.dequantize());
  INFO("RTN " << rtn_error << ", GSQ " << gsq_error);
  REQUIRE(gsq_error < rtn_error);
  REQUIRE(run.result.codes != layer.rtn.codes);  // it moved codes, not only scales
  REQUIRE(run.losses.size() == 200);
  // Annealing to a hard sample: the last relaxed loss is close to the hard result's error.
  REQUIRE(run.losses.back() < run.losses.front());
}

TEST_CASE("the step callback reports every step with its annealed temperature and logit scale", "[train]") {
  const gsq::SyntheticLayer data = gsq::make_synthetic_layer({8, 128, 64, 3});
  gsq::HessianObjective<> objective = gsq::HessianObjective<>::from_inputs(data.weight, data.inputs);
  gsq::Quantizer<gsq::Int<2>> quantizer(gsq::round_to_nearest(data.weight, gsq::grid_spec<gsq::Int<2>>(), 128));
  const gsq::TrainConfig config = short_run(5, 0);
  std::vector<gsq::StepReport> reports;
  const gsq::TrainReport report =
      gsq::train(quantizer, objective, config, [&](const gsq::StepReport& step) { reports.push_back(step); });
  REQUIRE(reports.size() == 5);
  REQUIRE(report.losses.size() == 5);
  for (long step = 0; step < 5; ++step) {
    REQUIRE(reports[step].step == step);
    REQUIRE(reports[step].steps == 5);
    REQUIRE(reports[step].loss == report.losses[step]);
  }
  REQUIRE(reports.front().temperature == Approx(config.anneal.tau_start));
  REQUIRE(reports.back().temperature == Approx(config.anneal.tau_end));
  REQUIRE(reports.front().logit_scale == Approx(config.anneal.kappa_start));
  REQUIRE(reports.back().logit_scale == Approx(config.anneal.kappa_end));
}

TEST_CASE("invalid training settings are errors naming the problem", "[train][errors]") {
  const gsq::SyntheticLayer data = gsq::make_synthetic_layer({4, 128, 32, 3});
  gsq::HessianObjective<> objective = gsq::HessianObjective<>::from_inputs(data.weight, data.inputs);
  gsq::Quantizer<gsq::Int<2>> quantizer(gsq::round_to_nearest(data.weight, gsq::grid_spec<gsq::Int<2>>(), 128));
  const auto train_with = [&](const gsq::TrainConfig& config) { gsq::train(quantizer, objective, config); };

  gsq::TrainConfig config = short_run(0, 0);
  REQUIRE_THROWS_WITH(train_with(config), Catch::Contains("number of steps must be positive"));
  config = short_run(3, 0);
  config.anneal.tau_end = 0;
  REQUIRE_THROWS_WITH(train_with(config), Catch::Contains("temperature"));
  config = short_run(3, 0);
  config.anneal.tau_start = -1;
  REQUIRE_THROWS_WITH(train_with(config), Catch::Contains("temperature"));
  config = short_run(3, 0);
  config.anneal.kappa_start = 0;
  REQUIRE_THROWS_WITH(train_with(config), Catch::Contains("logit-scale"));
  config = short_run(3, 0);
  config.logits.learning_rate = -1e-4;
  REQUIRE_THROWS_WITH(train_with(config), Catch::Contains("learning rates"));
  config = short_run(3, 0);
  config.beta1 = 1.0;
  REQUIRE_THROWS_WITH(train_with(config), Catch::Contains("betas"));
  config = short_run(3, 0);
  config.learning_rate.warmup_steps = 3;
  REQUIRE_THROWS_WITH(train_with(config), Catch::Contains("warm-up"));

  const gsq::SyntheticLayer other = gsq::make_synthetic_layer({8, 128, 32, 3});
  gsq::HessianObjective<> other_objective = gsq::HessianObjective<>::from_inputs(other.weight, other.inputs);
  REQUIRE_THROWS_WITH(gsq::train(quantizer, other_objective, short_run(3, 0)),
                      Catch::Contains("8 x 128") && Catch::Contains("4 x 128"));
}

TEST_CASE("learned scales stay positive and storable, however far the optimizer walks them", "[train]") {
  float scale = -0.001f;
  gsq::SymmetricScale::project(&scale);
  CHECK(scale == Approx(5.96e-8).epsilon(1e-3));  // fp16's smallest step
  float kept = 0.25f;
  gsq::SymmetricScale::project(&kept);
  CHECK(kept == 0.25f);

  // Codes of the wrong sign under scales of 1e-6: the gradient pulls every scale below zero, and
  // Lion's sign steps of 1e-4 would carry it there within a few steps.
  Layer& layer = shared_layer();
  gsq::QuantizedTensor tiny = layer.rtn;
  for (std::int8_t& code : tiny.codes) code = static_cast<std::int8_t>(std::clamp(-code, -2, 1));
  for (float& value : tiny.scales) value = 1e-6f;
  gsq::Quantizer<gsq::Int<2>> quantizer(tiny);
  gsq::TrainConfig config;
  config.steps = 40;
  config.scales.learning_rate = 1e-4;
  gsq::train(quantizer, layer.objective, config);
  gsq::QuantizedTensor result = quantizer.result();
  CHECK(*std::min_element(result.scales.begin(), result.scales.end()) > 0);
  CHECK_NOTHROW(gsq::store_result(result, "tiny scales"));
}
