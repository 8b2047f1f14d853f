// Tests of the quantize_layer driver (experiments/quantize_layer.cpp), run as a program: its
// JSON records, its table, the layers it reads and writes, its saved results, its errors and its
// help.
#include <catch2/catch.hpp>

#include "program_runner.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/backend/host.hpp"
#include "gsq/objective/synthetic_layer.hpp"
#include <gsq/format/packed.hpp>
#include "gsq/core/train_k_quant.hpp"
#include "gsq/format/k_quant.hpp"
#include "gsq/format/quantized_tensor.hpp"
#include "gsq/io/safetensors.hpp"
#include "gsq/objective/hessian.hpp"
#include "gsq/policy/grid.hpp"

namespace fs = std::filesystem;

namespace {

using gsq::testing::Outcome;
using gsq::testing::read_file;
using gsq::testing::ScratchDirectory;




/// The records of a --json report ({"producer": "gsq", "records": [...]}).
nlohmann::json read_records(const fs::path& path) {
  const nlohmann::json report = nlohmann::json::parse(read_file(path));
  REQUIRE(report.at("producer") == "gsq");
  return report.at("records");
}

std::size_t entries_in(const fs::path& directory) {
  return static_cast<std::size_t>(std::distance(fs::directory_iterator(directory), fs::directory_iterator()));
}

Outcome run_quantize_layer(const std::string& arguments) { return gsq::testing::run_program("quantize_layer", arguments); }

/// Runs quantize_layer with `arguments` plus --json, requires success and returns the records.
nlohmann::json run_records(const std::string& arguments, const ScratchDirectory& scratch) {
  const std::string json_path = scratch.file("records.json");
  const Outcome outcome = run_quantize_layer(arguments + " --json '" + json_path + "'");
  INFO(arguments << "\nstderr: " << outcome.err);
  REQUIRE(outcome.status == 0);
  return read_records(json_path);
}

const nlohmann::json& record_of(const nlohmann::json& records, const std::string& method) {
  for (const nlohmann::json& record : records)
    if (record.at("method") == method) return record;
  FAIL("no record of method " << method << " in " << records.dump());
  throw;  // unreachable: FAIL throws
}

double rel_error(const nlohmann::json& records, const std::string& method) {
  return record_of(records, method).at("rel_error").get<double>();
}

// Small enough for a test; one thread so that a busy machine does not slow it down.
const std::string small_layer = "--rows 128 --cols 256 --tokens 512 --threads 1";

}  // namespace

TEST_CASE("quantize_layer: by default RTN, GPTQ and GSQ from GPTQ, and the JSON says so") {
  const ScratchDirectory scratch;
  const fs::path json_path = scratch.path / "result.json";
  const Outcome outcome = run_quantize_layer(small_layer + " --steps 60 --json '" + json_path.string() + "'");
  INFO("stderr: " << outcome.err);
  REQUIRE(outcome.status == 0);

  // Written atomically: the file and nothing else (no temporary left behind).
  REQUIRE(fs::exists(json_path));
  CHECK(entries_in(scratch.path) == 1);

  const nlohmann::json records = read_records(json_path);
  REQUIRE(records.is_array());
  REQUIRE(records.size() == 3);
  const nlohmann::json& rtn = records[0];
  const nlohmann::json& gptq = records[1];
  const nlohmann::json& gsq = records[2];
  CHECK(rtn.at("method") == "rtn");
  CHECK(gptq.at("method") == "gptq");
  CHECK(gsq.at("method") == "gsq");
  for (const nlohmann::json& record : records) {
    CHECK(record.at("bits").is_number_integer());
    CHECK(record.at("bits") == 2);
    CHECK(record.at("grid") == "int2");
    CHECK(record.at("group").is_number_integer());
    CHECK(record.at("group") == 128);
    CHECK(record.at("rel_error").is_number_float());
    CHECK(record.at("rel_error").get<double>() > 0);
    CHECK(record.at("bpp").is_number());
    CHECK(record.at("bpp").get<double>() == 2.125);
    CHECK(record.at("seconds").is_number());
    CHECK(record.at("seconds").get<double>() >= 0);
    CHECK(record.at("scale_search") == "weighted");
  }
  CHECK(gptq.at("percdamp") == 0.01);
  CHECK(gptq.at("act_order") == false);
  CHECK_FALSE(rtn.contains("percdamp"));
  CHECK(gptq.at("rel_error").get<double>() <= rtn.at("rel_error").get<double>());

  // GSQ starts from the GPTQ result above (the paper's recipe), not from a recomputed one.
  CHECK(gsq.at("init") == "gptq");
  REQUIRE(gsq.at("init_rel_error").is_number_float());
  CHECK(gsq.at("init_rel_error").get<double>() == gptq.at("rel_error").get<double>());
  CHECK(gsq.at("percdamp") == 0.01);
  CHECK(gsq.at("steps") == 60);
  CHECK(gsq.at("step_seconds_median").is_number_float());
  CHECK(gsq.at("step_seconds_median").get<double>() > 0);
  CHECK(gsq.at("estimator") == "relaxed");
  CHECK(gsq.at("schedule") == "linear");
  CHECK(gsq.at("optimizer") == "lion");
  CHECK(gsq.at("tau_start") == 2.0);
  CHECK(gsq.at("kappa_end") == 500.0);

  CHECK_THAT(outcome.out, Catch::Contains("rel. error") && Catch::Contains("rtn") && Catch::Contains("gptq") &&
                              Catch::Contains("gsq") && Catch::Contains("2.125"));
  CHECK_THAT(outcome.err, Catch::Contains("step 60/60"));  // progress reaches the last step
}

TEST_CASE("quantize_layer: --method and --init choose what runs and where GSQ starts") {
  const ScratchDirectory scratch;
  // GSQ from RTN, as a list over two flags: it improves on RTN and reports RTN as its start.
  const nlohmann::json from_rtn =
      run_records(small_layer + " --steps 60 --quiet --method rtn --method gsq --init rtn", scratch);
  REQUIRE(from_rtn.size() == 2);
  CHECK(from_rtn[0].at("method") == "rtn");
  CHECK(from_rtn[1].at("init") == "rtn");
  CHECK(from_rtn[1].at("init_rel_error").get<double>() == rel_error(from_rtn, "rtn"));
  CHECK(rel_error(from_rtn, "gsq") < rel_error(from_rtn, "rtn"));

  // GSQ alone still starts from GPTQ, computed for it: the same start as a run that lists GPTQ.
  const nlohmann::json alone = run_records(small_layer + " --steps 5 --quiet --method gsq", scratch);
  REQUIRE(alone.size() == 1);
  const nlohmann::json listed = run_records(small_layer + " --steps 5 --quiet --method gptq,gsq --act-order", scratch);
  REQUIRE(listed.size() == 2);
  CHECK(alone[0].at("init") == "gptq");
  CHECK(listed[0].at("act_order") == true);
  // Act-order changes GPTQ, and GSQ's start with it.
  CHECK(alone[0].at("init_rel_error").get<double>() != listed[1].at("init_rel_error").get<double>());
  const nlohmann::json plain = run_records(small_layer + " --steps 5 --quiet --method gptq", scratch);
  CHECK(alone[0].at("init_rel_error").get<double>() == rel_error(plain, "gptq"));

  // The scale search reaches RTN and GPTQ: max-abs scales are worse on this layer.
  const nlohmann::json max_abs = run_records(small_layer + " --quiet --method rtn,gptq --scale-search maxabs", scratch);
  CHECK(record_of(max_abs, "rtn").at("scale_search") == "maxabs");
  CHECK(rel_error(max_abs, "rtn") > rel_error(from_rtn, "rtn"));
  CHECK(rel_error(max_abs, "gptq") > rel_error(plain, "gptq"));
}

TEST_CASE("quantize_layer: --bits and --group select the grid and the grouping") {
  struct Case {
    std::string flags, grid;
    int bits, group;
    double bpp;
  };
  for (const Case& c : {Case{"--bits ternary --group 0", "ternary", 2, 0, 2 + 16.0 / 256},
                        Case{"--bits 4 --group 64", "int4", 4, 64, 4 + 16.0 / 64},
                        Case{"--bits 3 --group per-channel --estimator ste --schedule cosine --optimizer adam", "int3", 3,
                             0, 3 + 16.0 / 256}}) {
    const ScratchDirectory scratch;
    const fs::path json_path = scratch.path / "result.json";
    const Outcome outcome = run_quantize_layer(small_layer + " --steps 5 --quiet " + c.flags + " --json '" +
                                               json_path.string() + "'");
    INFO(c.flags << "\nstderr: " << outcome.err);
    REQUIRE(outcome.status == 0);
    CHECK(outcome.err.empty());  // --quiet
    const nlohmann::json records = read_records(json_path);
    REQUIRE(records.size() == 3);
    for (const nlohmann::json& record : records) {
      CHECK(record.at("grid") == c.grid);
      CHECK(record.at("bits") == c.bits);
      CHECK(record.at("group") == c.group);
      CHECK(record.at("bpp").get<double>() == Approx(c.bpp));
    }
  }
}

TEST_CASE("quantize_layer: --save-layer writes the layer that --input --weight W --hessian H reads back") {
  const ScratchDirectory scratch;
  const std::string layer_path = scratch.file("layer.safetensors");
  const std::string synthetic = "--rows 64 --cols 256 --tokens 384 --layer-seed 3 --threads 1 --quiet --method rtn,gptq";
  const nlohmann::json generated = run_records(synthetic + " --save-layer '" + layer_path + "'", scratch);

  // The file holds the synthetic layer's weight, bit for bit, and its Hessian.
  const gsq::SafetensorsFile file = gsq::SafetensorsFile::open(layer_path);
  CHECK(file.info("W").dtype == gsq::Dtype::F32);
  CHECK(file.info("H").dtype == gsq::Dtype::F32);
  gsq::SyntheticLayerConfig config;
  config.rows = 64;
  config.cols = 256;
  config.tokens = 384;
  config.seed = 3;
  const gsq::SyntheticLayer layer = gsq::make_synthetic_layer(config);
  CHECK(file.matrix("W").values == layer.weight.values);
  const gsq::Matrix<float> hessian = file.matrix("H");
  REQUIRE(hessian.rows == 256);
  REQUIRE(hessian.cols == 256);
  double largest_gap = 0;  // H = X^T X / N, as the float product forms it
  for (long i = 0; i < 256; i += 17)
    for (long j = 0; j < 256; j += 13) {
      double exact = 0;
      for (long t = 0; t < config.tokens; ++t) exact += double(layer.inputs(t, i)) * layer.inputs(t, j);
      exact /= static_cast<double>(config.tokens);
      largest_gap = std::max(largest_gap, std::fabs(hessian(i, j) - exact) / std::sqrt(hessian(i, i) * hessian(j, j)));
    }
  CHECK(largest_gap < 1e-5);

  // Read back, the layer gives exactly the synthetic run's errors.
  const nlohmann::json loaded = run_records(
      "--input '" + layer_path + "' --weight W --hessian H --threads 1 --quiet --method rtn,gptq", scratch);
  CHECK(rel_error(loaded, "rtn") == rel_error(generated, "rtn"));
  CHECK(rel_error(loaded, "gptq") == rel_error(generated, "gptq"));
  CHECK_THAT(record_of(loaded, "rtn").at("layer").get<std::string>(), Catch::Contains("layer.safetensors"));
}

TEST_CASE("quantize_layer: --inputs X gives the errors of --hessian H = X^T X / N") {
  const ScratchDirectory scratch;
  gsq::SyntheticLayerConfig config;
  config.rows = 64;
  config.cols = 256;
  config.tokens = 512;
  const gsq::SyntheticLayer layer = gsq::make_synthetic_layer(config);
  gsq::Matrix<float> hessian(config.cols, config.cols);  // in double, independently of the driver
  for (long i = 0; i < config.cols; ++i)
    for (long j = 0; j <= i; ++j) {
      double sum = 0;
      for (long t = 0; t < config.tokens; ++t) sum += double(layer.inputs(t, i)) * layer.inputs(t, j);
      hessian(i, j) = hessian(j, i) = static_cast<float>(sum / static_cast<double>(config.tokens));
    }
  const std::string path = scratch.file("activations.safetensors");
  gsq::SafetensorsWriter writer;
  writer.add("weight", layer.weight);
  writer.add("acts", layer.inputs, gsq::Dtype::F32);
  writer.add("hessian", hessian);
  writer.write(path);

  for (const std::string scale_search : {"maxabs", "weighted"}) {
    INFO("--scale-search " << scale_search);
    const std::string common = "--input '" + path + "' --weight weight --threads 1 --quiet --method rtn,gptq --scale-search " + scale_search;
    const nlohmann::json from_inputs = run_records(common + " --inputs acts", scratch);
    const nlohmann::json from_hessian = run_records(common + " --hessian hessian", scratch);
    for (const std::string method : {"rtn", "gptq"}) {
      INFO(method);
      CHECK(rel_error(from_inputs, method) == Approx(rel_error(from_hessian, method)).epsilon(1e-5));
    }
    CHECK_THAT(record_of(from_inputs, "rtn").at("layer").get<std::string>(), Catch::Contains("512 tokens"));
  }
}

TEST_CASE("quantize_layer: --save writes packed codes and fp16 scales that give the saved weight and the error") {
  struct Case {
    std::string flags, method, grid;
    int code_bits, packed_bits, min_level;
  };
  for (const Case& c : {Case{"--steps 30", "gsq", "int2", 2, 2, -2},
                        Case{"--bits 3 --group 64 --method rtn", "rtn", "int3", 3, 4, -4},
                        Case{"--bits ternary --method gptq", "gptq", "ternary", 2, 2, -1}}) {
    INFO(c.flags);
    const ScratchDirectory scratch;
    const std::string layer_path = scratch.file("layer.safetensors"), saved_path = scratch.file("quantized.safetensors");
    const nlohmann::json records =
        run_records("--rows 64 --cols 256 --tokens 512 --threads 1 --quiet " + c.flags + " --save-layer '" +
                        layer_path + "' --save '" + saved_path + "'",
                    scratch);
    CHECK(entries_in(scratch.path) == 3);  // layer, result, records: no temporary files left
    const nlohmann::json& last = records.back();
    REQUIRE(last.at("method") == c.method);

    const gsq::SafetensorsFile saved = gsq::SafetensorsFile::open(saved_path);
    const std::map<std::string, std::string>& metadata = saved.metadata();
    CHECK(metadata.at("method") == c.method);
    CHECK(metadata.at("grid") == c.grid);
    CHECK(metadata.at("code_bits") == std::to_string(c.code_bits));
    CHECK(metadata.at("min_level") == std::to_string(c.min_level));
    CHECK(metadata.at("group") == std::to_string(last.at("group").get<int>()));
    CHECK(metadata.at("packed_code_bits") == std::to_string(c.packed_bits));
    CHECK(metadata.at("rows") == "64");
    CHECK(metadata.at("cols") == "256");
    CHECK(metadata.count("init") == (c.method == "gsq" ? 1u : 0u));

    const long group_width = std::stol(metadata.at("group_width"));
    CHECK(group_width == last.at("group_width").get<long>());
    const gsq::TensorInfo& codes = saved.info("weight.codes");
    CHECK(codes.dtype == gsq::Dtype::U8);
    CHECK(codes.shape == std::vector<std::int64_t>{64 * 256 * c.packed_bits / 8});
    const gsq::TensorInfo& scales = saved.info("weight.scales");
    CHECK(scales.dtype == gsq::Dtype::F16);
    CHECK(scales.shape == std::vector<std::int64_t>{64, 256 / group_width});
    CHECK(saved.info("weight").dtype == gsq::Dtype::F32);

    // Unpack the codes and multiply by the fp16 scales: that is the saved weight, exactly.
    gsq::GridSpec grid;
    for (const gsq::GridSpec& candidate : {gsq::grid_spec<gsq::Ternary>(), gsq::grid_spec<gsq::Int<2>>(),
                                           gsq::grid_spec<gsq::Int<3>>(), gsq::grid_spec<gsq::Int<4>>()})
      if (candidate.name == c.grid) grid = candidate;
    const gsq::QuantizedTensor tensor = gsq::read_packed(saved, "weight", grid, 64, 256, group_width);
    const gsq::Matrix<float> weight = saved.matrix("weight");
    CHECK(tensor.dequantize().values == weight.values);

    // ... and its relative Hessian error on the saved layer is the reported one.
    const gsq::SafetensorsFile layer = gsq::SafetensorsFile::open(layer_path);
    gsq::HessianObjective<> objective(layer.matrix("W"), layer.matrix("H"));
    CHECK(objective.relative_error(weight) == Approx(last.at("rel_error").get<double>()).epsilon(1e-12));
  }
}

TEST_CASE("quantize_layer: --format runs the fit, GPTQ and GSQ in a K-quant layout; --save holds ggml's blocks, the weight and the error") {
  // 300 steps: the logits start around GPTQ's codes with the reference's noise, which flips a few
  // percent of them; at 60 steps Lion's small K-quant rate has not yet won them back.
  for (const gsq::KQuantFormat* format : gsq::k_quant_formats()) {
    INFO(format->name);
    const ScratchDirectory scratch;
    const std::string layer_path = scratch.file("layer.safetensors"), saved_path = scratch.file("quantized.safetensors");
    const nlohmann::json records =
        run_records("--rows 16 --cols 512 --tokens 256 --threads 1 --quiet --steps 300 --format " + std::string(format->name) +
                        " --save-layer '" + layer_path + "' --save '" + saved_path + "'",
                    scratch);
    REQUIRE(records.size() == 3);
    CHECK(records[0].at("method") == "rtn");
    CHECK(records[1].at("method") == "gptq");
    const nlohmann::json& record = records.back();
    CHECK(record.at("method") == "gsq");
    CHECK(record.at("init") == "gptq");
    CHECK(record.at("lr_logits").get<double>() == gsq::k_quant_train_config().logits.learning_rate);
    CHECK(record.at("lr_scales").get<double>() == 0);
    CHECK(record.at("rel_error").get<double>() < records[1].at("rel_error").get<double>());
    CHECK(record.at("format") == format->name);
    CHECK(record.at("bpp").get<double>() == format->bits_per_weight());
    const gsq::SafetensorsFile saved = gsq::SafetensorsFile::open(saved_path);
    CHECK(saved.metadata().at("ggml_type") == std::to_string(format->ggml_type));
    CHECK(saved.info("weight.blocks").shape == std::vector<std::int64_t>{16L * 512 / format->super_block * format->block_bytes});
    const gsq::SafetensorsFile layer = gsq::SafetensorsFile::open(layer_path);
    gsq::HessianObjective<> objective(layer.matrix("W"), layer.matrix("H"));
    CHECK(objective.relative_error(saved.matrix("weight")) == Approx(record.at("rel_error").get<double>()).epsilon(1e-12));
  }
}

TEST_CASE("quantize_layer: bad settings exit with status 2 and a message naming the problem") {
  const ScratchDirectory scratch;
  const std::string layer_path = scratch.file("bad.safetensors");
  {
    gsq::SafetensorsWriter writer;  // W 16 x 128 with several wrong Hessians
    gsq::Matrix<float> weight(16, 128), square(64, 64), wide(128, 64), inputs(32, 96), lopsided(128, 128),
        broken_inputs(32, 128);
    for (std::size_t i = 0; i < weight.size(); ++i) weight.values[i] = static_cast<float>(i % 7) - 3;
    for (long i = 0; i < 64; ++i) square(i, i) = 1;
    for (long i = 0; i < 128; ++i) lopsided(i, i) = 1;
    lopsided(0, 5) = 0.5f;
    broken_inputs(3, 7) = std::nanf("");
    writer.add("W", weight);
    writer.add("H_wide", wide);
    writer.add("H_small", square);
    writer.add("H_lopsided", lopsided);
    writer.add("X_narrow", inputs);
    writer.add("X_broken", broken_inputs);
    writer.add("vector", {128}, std::vector<float>(128, 1.0f));
    writer.write(layer_path);
  }
  const std::string input = "--input '" + layer_path + "' --threads 1 ";
  struct Case {
    std::string flags;
    std::vector<std::string> mentions;
  };
  for (const Case& c : {Case{"--bits 5", {"--bits", "'5'", "ternary, 2, 3, 4"}},
                        Case{small_layer + " --group 100", {"--group", "'100'", "128"}},
                        Case{"--estimator nope", {"--estimator", "'nope'", "relaxed"}},
                        Case{"--schedule quadratic", {"--schedule", "quadratic"}},
                        Case{"--optimizer sgd", {"--optimizer", "sgd", "lion"}},
                        Case{"--lr-decay sideways", {"sideways", "cosine"}},
                        Case{"--steps 0", {"steps"}},
                        Case{"--tau-end=-1", {"temperature"}},
                        Case{"--rows abc", {"--rows", "abc"}},
                        Case{"--frobnicate", {"frobnicate"}},
                        Case{"layer.safetensors", {"positional"}},  // a file is named by --input, not positionally
                        Case{"--seed=-3", {"seed"}},
                        Case{"--rows 16 --cols 128 --tokens 64 --threads 1 --group 256", {"group size 256", "128"}},
                        Case{"--method rtn,bogus", {"--method", "'bogus'", "rtn, gptq or gsq"}},
                        Case{"--method rtn,,gsq", {"--method", "empty"}},
                        Case{"--method gptq --method rtn,gptq", {"--method", "gptq twice"}},
                        Case{"--init gsq", {"--init", "rtn or gptq"}},
                        Case{"--init fancy", {"--init", "'fancy'"}},
                        Case{"--scale-search minmax", {"--scale-search", "'minmax'", "maxabs, mse or weighted"}},
                        Case{"--percdamp=-0.1", {"--percdamp", "non-negative"}},
                        // Checked before any work: the run would otherwise be lost at the end.
                        Case{small_layer + " --steps 2 --json /nonexistent-directory/result.json",
                             {"--json", "/nonexistent-directory"}},
                        Case{small_layer + " --steps 2 --save /nonexistent-directory/q.safetensors",
                             {"--save", "/nonexistent-directory"}},
                        Case{small_layer + " --steps 2 --save-layer /nonexistent-directory/l.safetensors",
                             {"--save-layer", "/nonexistent-directory"}},
                        // The layer's file and its tensors.
                        Case{"--weight W --hessian H", {"--weight", "--input"}},
                        Case{"--input /nonexistent.safetensors --weight W --hessian H", {"/nonexistent.safetensors"}},
                        Case{input + "--hessian H_small", {"--input needs --weight"}},
                        Case{input + "--weight W", {"--hessian NAME", "--inputs NAME"}},
                        Case{input + "--weight W --hessian H_small --inputs X_narrow", {"--hessian and --inputs"}},
                        Case{input + "--weight Q --hessian H_small", {"--weight Q", "no tensor named 'Q'", "H_small"}},
                        Case{input + "--weight W --hessian G", {"--hessian G", "no tensor named 'G'"}},
                        Case{input + "--weight vector --hessian H_small", {"--weight vector", "not 2-D"}},
                        Case{input + "--weight W --hessian H_wide", {"--hessian H_wide", "128 x 64", "not square"}},
                        Case{input + "--weight W --hessian H_small", {"--hessian H_small", "64 x 64", "128 input columns"}},
                        Case{input + "--weight W --inputs X_narrow", {"--inputs X_narrow", "32 x 96", "128 input columns"}},
                        Case{input + "--weight W --hessian H_lopsided", {"--hessian H_lopsided", "not symmetric"}},
                        Case{input + "--weight W --inputs X_broken", {"--inputs X_broken", "non-finite", "row 3"}},
                        Case{input + "--weight W --hessian H_small --rows 8", {"--rows", "--input"}},
                        Case{"--format q8_k", {"--format", "'q8_k'", "q2_k, q3_k, q4_k, q5_k, q6_k, q4_1 and q5_1"}},
                        Case{"--format ''", {"--format", "''"}},
                        Case{"--format q2_k --bits 3", {"--format replaces --bits and --group"}},
                        Case{"--rows 16 --cols 300 --tokens 64 --threads 1 --format q4_k", {"q4_k", "blocks of 256", "300 columns"}}}) {
    const Outcome outcome = run_quantize_layer(c.flags);
    INFO(c.flags << "\nstderr: " << outcome.err);
    CHECK(outcome.status == 2);
    CHECK_THAT(outcome.err, Catch::StartsWith("quantize_layer: error: "));
    for (const std::string& mention : c.mentions) CHECK_THAT(outcome.err, Catch::Contains(mention));
  }
}

TEST_CASE("quantize_layer: --help exits 0 and explains every flag") {
  const Outcome outcome = run_quantize_layer("--help");
  REQUIRE(outcome.status == 0);
  for (const std::string flag :
       {"--rows", "--cols", "--tokens", "--layer-seed", "--input", "--weight", "--hessian", "--inputs", "--save-layer",
        "--bits", "--group", "--method", "--init", "--scale-search", "--percdamp", "--act-order", "--steps", "--seed",
        "--estimator", "--schedule", "--tau-start", "--tau-end", "--kappa-start", "--kappa-end", "--optimizer",
        "--lr-logits", "--weight-decay", "--lr-scales", "--lr-decay", "--lr-floor", "--warmup", "--threads", "--json",
        "--save", "--quiet", "--help"})
    CHECK_THAT(outcome.out, Catch::Contains(flag + " "));
  // Defaults are shown: the reference's 640 steps and its learning rates, the methods compared.
  CHECK_THAT(outcome.out, Catch::Contains("(=640)") && Catch::Contains("(=1e-4)") && Catch::Contains("(=5e-5)") &&
                              Catch::Contains("(=rtn,gptq,gsq)") && Catch::Contains("(=gptq)") &&
                              Catch::Contains("(=weighted)") && Catch::Contains("(=0.01)"));
}
