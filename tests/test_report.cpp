// Tests of the JSON records of a model quantization run (gsq/pipeline/report.hpp, and a layer's record
// beside LayerResult in gsq/pipeline/sequential.hpp): the keys that manifests, settings.json and the
// scripts reading them rely on, optional keys only when measured, and a layer record read back
// as it was written (a resumed run reports completed layers from their files).
#include <catch2/catch.hpp>

#include <cmath>

#include <nlohmann/json.hpp>

#include <gsq/pipeline/report.hpp>

TEST_CASE("report: an evaluation's record") {
  gsq::EvaluationResult result;
  result.total_nll = 2 * std::log(2.0) * 30;  // 2 bits per token over 30 predictions
  result.predictions = 30;
  result.windows = 2;
  result.window = 16;
  const nlohmann::json json = result;
  CHECK(json.size() == 6);
  CHECK(json["nll"].get<double>() == Approx(2 * std::log(2.0)));
  CHECK(json["ppl"].get<double>() == Approx(4.0));
  CHECK(json["bits_per_token"].get<double>() == Approx(2.0));
  CHECK(json["tokens"] == 30);
  CHECK(json["windows"] == 2);
  CHECK(json["window"] == 16);
}

TEST_CASE("report: the settings a resumed run must share") {
  gsq::ModelQuantizationConfig config;
  config.method = gsq::Method::gptq;
  config.gsq_init = gsq::Method::rtn;
  config.objective = gsq::GsqObjective::layer;
  config.target_inputs = gsq::TargetInputs::full_precision;
  config.gsq_attention = true;
  config.train.steps = 30;
  config.train.anneal = {1.5, 0.1, 50, 400};
  config.train.logits.learning_rate = 2e-4;
  config.train.scales.learning_rate = 1e-5;
  config.train.seed = 7;
  config.block_batches = 8;
  config.gptq.scale_fit = gsq::ScaleFit::mse;
  config.gptq.percdamp = 0.1;
  config.gptq.act_order = true;
  config.expert_calibration = gsq::ExpertCalibration::all;
  config.expert_min_tokens = 0.25;
  CHECK(gsq::settings_json(config) == nlohmann::json{{"method", "gptq"},
                                                     {"objective", "layer"},
                                                     {"target_inputs", "full-precision"},
                                                     {"attention", "gsq"},
                                                     {"init", "rtn"},
                                                     {"steps", 30},
                                                     {"tau", {1.5, 0.1}},
                                                     {"kappa", {50.0, 400.0}},
                                                     {"lr", {2e-4, 1e-5}},
                                                     {"batches", 8},
                                                     {"scale_search", "mse"},
                                                     {"percdamp", 0.1},
                                                     {"act_order", true},
                                                     {"expert_calibration", "all"},
                                                     {"expert_min_tokens", 0.25},
                                                     {"seed", 7}});
}

TEST_CASE("report: a layer's record has the block and starting-point errors only when measured") {
  gsq::LayerResult gptq;
  gptq.layer = 3;
  gptq.seconds = 1.25;
  gptq.linears.push_back({"model.layers.3.self_attn.q_proj.weight", {}, 0.125, -1, 0.5});
  const nlohmann::json json = gptq;
  CHECK(json == nlohmann::json{{"layer", 3},
                               {"seconds", 1.25},
                               {"linears", nlohmann::json::array({{{"name", "model.layers.3.self_attn.q_proj.weight"},
                                                                   {"rel_error", 0.125},
                                                                   {"seconds", 0.5}}})}});

  gsq::LayerResult block = gptq;
  block.linears[0].init_error = 0.25;
  block.linears[0].tokens = 40;
  block.linears[0].fallback = true;
  block.blocks.push_back({"mlp.experts.3", 40, 0.0625, 0.09375, 2.5, 0.125});
  const nlohmann::json block_json = block;
  CHECK(block_json["linears"][0]["init_rel_error"] == 0.25);
  CHECK(block_json["linears"][0]["tokens"] == 40);
  CHECK(block_json["linears"][0]["fallback"] == "rtn");
  CHECK(block_json["blocks"] == nlohmann::json::array({{{"name", "mlp.experts.3"},
                                                         {"tokens", 40},
                                                         {"rel_error", 0.0625},
                                                         {"init_rel_error", 0.09375},
                                                         {"train_seconds", 2.5},
                                                         {"step_seconds_median", 0.125}}}));
}

TEST_CASE("report: a layer's record reads back as it was written") {
  gsq::LayerResult layer;
  layer.layer = 1;
  layer.seconds = 0.1 + 0.2;  // not exactly representable: the round trip must keep every bit
  layer.blocks.push_back({"mlp", 12, 1.0 / 3, 2.0 / 3, 0.7, 0.1 + 0.2});
  layer.linears.push_back({"a", {}, 1e-7 / 3, 0.7, 0.01, 12, true});
  layer.linears.push_back({"b", {}, 0.3, -1, 0.02});
  const nlohmann::json written = layer;
  const gsq::LayerResult read = nlohmann::json::parse(written.dump()).get<gsq::LayerResult>();
  CHECK(read.layer == 1);
  CHECK(read.seconds == layer.seconds);
  REQUIRE(read.blocks.size() == 1);
  CHECK(read.blocks[0].error == layer.blocks[0].error);
  CHECK(read.blocks[0].init_error == layer.blocks[0].init_error);
  CHECK(read.blocks[0].tokens == 12);
  CHECK(read.blocks[0].train_seconds == layer.blocks[0].train_seconds);
  CHECK(read.blocks[0].step_seconds == layer.blocks[0].step_seconds);
  CHECK(read.linears[0].tokens == 12);
  CHECK(read.linears[0].fallback);
  CHECK_FALSE(read.linears[1].fallback);
  REQUIRE(read.linears.size() == 2);
  CHECK(read.linears[0].name == "a");
  CHECK(read.linears[0].error == layer.linears[0].error);
  CHECK(read.linears[0].init_error == 0.7);
  CHECK(read.linears[1].init_error == -1);
  CHECK(nlohmann::json(read).dump() == written.dump());
}
