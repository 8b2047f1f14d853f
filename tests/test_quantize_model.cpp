// quantize_model end to end on the bundled model: an interrupted run resumed equals an
// uninterrupted one, the written checkpoint reloads exactly, the packed format rebuilds the
// weights, bad input is refused, and GSQ beats GPTQ at 2 bits; and on a tiny DeepSeek-V3, every
// expert quantized and the ones without calibration tokens listed.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include <gsq/export/dequantized_checkpoint.hpp>
#include <gsq/format/packed.hpp>
#include <gsq/model/comparison.hpp>
#include <gsq/model/evaluation.hpp>
#include <gsq/pipeline/sequential.hpp>

namespace {

namespace fs = std::filesystem;
const std::string model_dir = GSQ_SOURCE_DIR "/data/llama-bytes-3m";

fs::path scratch(const std::string& name) {
  const fs::path path = fs::temp_directory_path() / ("gsq_test_quantize_model_" + name);
  fs::remove_all(path);
  return path;
}

/// Runs quantize_model with `arguments` (and --quiet --threads 1); returns its exit status
/// (stderr kept in `log`).
int run_quantize_model(const std::string& arguments, const fs::path& log) {
  const std::string executable = GSQ_BINARY_DIR "/quantize_model";
  REQUIRE(fs::exists(executable));
  const std::string command = executable + " --quiet --threads 1 " + arguments + " > " + log.string() + " 2>&1";
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/// quantize_model on the bundled model, calibrated on its text.
int quantize_model(const std::string& arguments, const fs::path& log) {
  return run_quantize_model("--model " + model_dir + " --byte-tokens --calib " + model_dir + "/calib.txt " + arguments, log);
}

std::string slurp(const fs::path& path) {
  std::ifstream stream(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(stream), std::istreambuf_iterator<char>()};
}

nlohmann::json read_json(const fs::path& path) { return nlohmann::json::parse(slurp(path)); }

const std::string small_run = " --method gsq --calib-tokens 2048 --steps 30";

}  // namespace

TEST_CASE("quantize_model: a run stopped part-way and resumed equals an uninterrupted one") {
  const fs::path whole = scratch("whole"), resumed = scratch("resumed"), log = scratch("resume_log");
  REQUIRE(quantize_model("--out " + whole.string() + small_run, log) == 0);

  REQUIRE(quantize_model("--out " + resumed.string() + small_run + " --stop-after 2", log) == 3);
  CHECK_FALSE(fs::exists(resumed));  // nothing half-written where the output goes
  CHECK(fs::exists(resumed.string() + ".partial/layer-1.safetensors"));
  CHECK_FALSE(fs::exists(resumed.string() + ".partial/layer-2.safetensors"));
  // Without --resume the stopped run is not silently redone or overwritten.
  CHECK(quantize_model("--out " + resumed.string() + small_run, log) == 2);
  CHECK(slurp(log).find("--resume") != std::string::npos);
  // Different settings cannot resume it.
  CHECK(quantize_model("--out " + resumed.string() + small_run + " --seed 1 --resume", log) == 2);
  CHECK(slurp(log).find("settings differ") != std::string::npos);

  REQUIRE(quantize_model("--out " + resumed.string() + small_run + " --resume", log) == 0);
  CHECK_FALSE(fs::exists(resumed.string() + ".partial"));
  CHECK(slurp(whole / "quantized.safetensors") == slurp(resumed / "quantized.safetensors"));
  CHECK(slurp(whole / "model.safetensors") == slurp(resumed / "model.safetensors"));
  const nlohmann::json a = read_json(whole / "manifest.json"), b = read_json(resumed / "manifest.json");
  for (std::size_t layer = 0; layer < a["layers"].size(); ++layer)
    for (std::size_t linear = 0; linear < 7; ++linear)
      CHECK(a["layers"][layer]["linears"][linear]["rel_error"] == b["layers"][layer]["linears"][linear]["rel_error"]);
  fs::remove_all(whole);
  fs::remove_all(resumed);
}

TEST_CASE("quantize_model: the written checkpoint reloads exactly, and the packed format rebuilds it") {
  const fs::path out = scratch("gptq"), log = scratch("gptq_log"), json = scratch("json");
  REQUIRE(quantize_model("--out " + out.string() + " --method gptq --calib-tokens 2048 --bits 3 --group 64 --eval " +
                             model_dir + "/eval.txt --json " + json.string(),
                         log) == 0);
  const gsq::LlamaModel reloaded = gsq::LlamaModel::load(out.string());
  const gsq::LlamaModel original = gsq::LlamaModel::load(model_dir);
  const gsq::SafetensorsFile packed = gsq::SafetensorsFile::open((out / "quantized.safetensors").string());
  CHECK(packed.metadata().at("grid") == "int3");
  CHECK(packed.metadata().at("group_width") == "64");
  for (long layer = 0; layer < reloaded.config().layers; ++layer)
    for (const std::string& linear : reloaded.config().linear_names(layer)) {
      const gsq::Matrix<float> weight = reloaded.linear_weight(layer, linear);
      gsq::QuantizedTensor tensor = gsq::read_packed(packed, gsq::LlamaModel::tensor_name(layer, linear),
                                                     gsq::grid_spec<gsq::Int<3>>(), weight.rows, weight.cols, 64);
      INFO(gsq::LlamaModel::tensor_name(layer, linear));
      CHECK(gsq::store_result(tensor, "test").values == weight.values);
      CHECK(weight.values != original.linear_weight(layer, linear).values);
    }
  // The evaluation the run reported is that of the files it wrote.
  gsq::EvaluationOptions options;
  const gsq::EvaluationResult result = gsq::evaluate(reloaded, gsq::read_byte_tokens(model_dir + "/eval.txt"), options);
  const nlohmann::json report = read_json(json);
  CHECK(report["runs"][0]["evaluation"]["bits_per_token"].get<double>() == Approx(result.bits_per_token()).epsilon(1e-12));
  // And its divergence from the original is that of the files it wrote.
  const nlohmann::json compared = gsq::summarize(gsq::compare(reloaded, original, gsq::read_byte_tokens(model_dir + "/eval.txt"), options));
  CHECK(report["runs"][0]["comparison"]["kl"]["mean"].get<double>() == Approx(compared["kl"]["mean"].get<double>()).epsilon(1e-12));
  CHECK(report["runs"][0]["comparison"]["same_top"] == compared["same_top"]);
  CHECK(compared["kl"]["mean"].get<double>() > 0);
  CHECK(report["runs"][0]["bpp"].get<double>() == Approx(3.25));
  CHECK(report["baseline"]["bits_per_token"].get<double>() == Approx(2.35097372204944).epsilon(5e-3));
  CHECK(fs::exists(out / "config.json"));
  fs::remove_all(out);
}

TEST_CASE("quantize_model --format: K-quant blocks that rebuild the checkpoint, a run that resumes, formats that cannot hold them refused") {
  const fs::path whole = scratch("k_quant"), resumed = scratch("k_quant_resumed"), log = scratch("k_quant_log");
  const std::string run = " --method gsq --format q3_k --objective layer --calib-tokens 1024 --steps 20";
  REQUIRE(quantize_model("--out " + whole.string() + run, log) == 0);
  const gsq::LlamaModel reloaded = gsq::LlamaModel::load(whole.string());
  const gsq::SafetensorsFile packed = gsq::SafetensorsFile::open((whole / "quantized.safetensors").string());
  for (long layer = 0; layer < reloaded.config().layers; ++layer)
    for (const std::string& linear : reloaded.config().linear_names(layer)) {
      const std::string name = gsq::LlamaModel::tensor_name(layer, linear);
      const gsq::Matrix<float> weight = reloaded.linear_weight(layer, linear);
      const std::optional<gsq::KQuantTensor> tensor = gsq::read_k_quant_packed(packed, name, weight.rows, weight.cols);
      INFO(name);
      REQUIRE(tensor);
      CHECK(tensor->format == &gsq::q3_k());
      CHECK(tensor->dequantize().values == weight.values);
    }
  const nlohmann::json manifest = read_json(whole / "manifest.json");
  CHECK(manifest["bits"] == "q3_k");
  CHECK(manifest["bpp"].get<double>() == 3.4375);
  CHECK(manifest["settings"]["lr"][1].get<double>() == 0);  // the scales stay GPTQ's

  REQUIRE(quantize_model("--out " + resumed.string() + run + " --stop-after 1", log) == 3);
  REQUIRE(quantize_model("--out " + resumed.string() + run + " --resume", log) == 0);
  CHECK(slurp(whole / "quantized.safetensors") == slurp(resumed / "quantized.safetensors"));
  CHECK(slurp(whole / "model.safetensors") == slurp(resumed / "model.safetensors"));

  const fs::path refused = scratch("k_quant_refused");
  CHECK(quantize_model("--out " + refused.string() + run + " --export gptq", log) == 2);
  CHECK(slurp(log).find("only the gguf export holds") != std::string::npos);
  CHECK(quantize_model("--out " + refused.string() + run + " --bits 3", log) == 2);
  CHECK(slurp(log).find("--format replaces --bits") != std::string::npos);
  CHECK(quantize_model("--out " + refused.string() + " --format q8_k", log) == 2);
  CHECK(slurp(log).find("q8_k") != std::string::npos);
  // tiny-llama3's rows are 64 and 160 columns, not whole super-blocks.
  const std::string tiny = GSQ_SOURCE_DIR "/tests/data/tiny-llama3";
  const fs::path digits = scratch("k_quant_digits");  // calibration bytes within its vocabulary of 97
  std::ofstream(digits) << std::string(1000, '7');
  const std::string command = std::string(GSQ_BINARY_DIR "/quantize_model") + " --model " + tiny + " --out " +
                              refused.string() + " --format q4_k --byte-tokens --calib " + digits.string() + " > " +
                              log.string() + " 2>&1";
  const int status = std::system(command.c_str());
  CHECK(WEXITSTATUS(status) == 2);
  CHECK(slurp(log).find("64 input columns, not whole blocks of 256") != std::string::npos);
  CHECK(slurp(log).find("falls back to Q5_0") != std::string::npos);
  CHECK_FALSE(fs::exists(refused));
  fs::remove_all(whole);
  fs::remove_all(resumed);
}

TEST_CASE("quantize_model: bad input is refused with a message naming it") {
  const fs::path out = scratch("bad"), log = scratch("bad_log");
  CHECK(quantize_model("--out " + out.string() + " --bits 5", log) == 2);
  CHECK(slurp(log).find("--bits") != std::string::npos);
  CHECK(quantize_model("--out " + out.string() + " --method best", log) == 2);
  CHECK(slurp(log).find("unknown method 'best'") != std::string::npos);
  CHECK(quantize_model("--out " + out.string() + " --objective whole", log) == 2);
  CHECK(quantize_model("--out " + out.string() + " --calib-window 300000", log) == 2);
  CHECK(slurp(log).find("calibration") != std::string::npos);
  // A checkpoint with a mis-shaped tensor: the loader names it.
  const fs::path broken = scratch("broken_model");
  fs::create_directories(broken);
  fs::copy_file(model_dir + "/config.json", broken / "config.json");
  gsq::SafetensorsWriter writer;
  writer.add("model.embed_tokens.weight", gsq::Matrix<float>(3, 3));
  writer.write((broken / "model.safetensors").string());
  const std::string command = std::string(GSQ_BINARY_DIR "/quantize_model") + " --model " + broken.string() +
                              " --out " + out.string() + " --byte-tokens --calib " + model_dir + "/calib.txt > " +
                              log.string() + " 2>&1";
  const int status = std::system(command.c_str());
  CHECK(WEXITSTATUS(status) == 2);
  CHECK(slurp(log).find("model.embed_tokens.weight") != std::string::npos);
  CHECK_FALSE(fs::exists(out));
  fs::remove_all(broken);
}

TEST_CASE("quantize_model: at 2 bits GSQ gives lower bits-per-byte than GPTQ on eval.txt") {
  const fs::path out = scratch("compare"), log = scratch("compare_log"), json = scratch("compare_json");
  // Half the default calibration and a quarter of the steps: the margin stays clear (a sixteenth of
  // the work kept it, by 0.002 bits per byte), at a quarter of the default run's time.
  const int status = quantize_model("--out " + out.string() + " --method gptq,gsq --calib-tokens 4096 --steps 320 --eval " +
                                        model_dir + "/eval.txt --json " + json.string(),
                                    log);
  INFO(slurp(log));
  REQUIRE(status == 0);
  const nlohmann::json report = read_json(json);
  const double gptq = report["runs"][0]["evaluation"]["bits_per_token"], gsq = report["runs"][1]["evaluation"]["bits_per_token"];
  INFO("GPTQ " << gptq << " bits/byte, GSQ " << gsq);
  CHECK(gsq < gptq);
  fs::remove_all(out);
}

TEST_CASE("quantize_model on a Mixture-of-Experts model: every expert quantized, those without tokens listed, GPTQ export refused") {
  const std::string deepseek = GSQ_SOURCE_DIR "/tests/data/tiny-deepseek-v3";
  const fs::path tokens = scratch("moe_tokens.bin"), out = scratch("moe"), log = scratch("moe_log");
  {
    std::ofstream stream(tokens, std::ios::binary);
    for (std::uint32_t i = 0; i < 640; ++i) {
      const std::uint32_t token = (i * 37 + i / 7) % 96;
      stream.write(reinterpret_cast<const char*>(&token), sizeof token);
    }
  }
  const std::string run = "--model " + deepseek + " --calib " + tokens.string() + " --eval " + tokens.string() +
                          " --calib-tokens 320 --calib-window 40 --window 40 --bits 2 --group per-channel --steps 4 --batches 2";
  REQUIRE(run_quantize_model(run + " --out " + out.string() + " --layer-kl-windows 2 --expert-kl", log) == 0);
  const nlohmann::json manifest = read_json(out / "manifest.json");
  // Each layer's and each routed expert's own divergence; experts 4 and 5 of layer 1, never routed
  // to, change nothing (nor does an expert no token of the two windows goes to).
  CHECK(manifest.at("layer_divergence").size() == 3);
  CHECK(manifest.at("expert_divergence").size() == 2 * 8);
  long diverging = 0;
  for (const nlohmann::json& divergence : manifest.at("expert_divergence")) {
    INFO(divergence.dump());
    const long expert = divergence.at("expert");
    if (divergence.at("layer") == 1 && (expert == 4 || expert == 5)) CHECK(divergence.at("kl") == 0.0);
    diverging += divergence.at("kl").get<double>() > 0;
  }
  CHECK(diverging >= 10);
  long fallbacks = 0, experts = 0;
  for (const nlohmann::json& linear : manifest.at("layers").at(1).at("linears")) {
    if (!linear.contains("tokens")) continue;
    ++experts;
    fallbacks += linear.contains("fallback");
    CHECK(linear.contains("fallback") == (linear["tokens"] == 0));
  }
  CHECK(experts == 8 * 3);
  CHECK(fallbacks == 2 * 3);  // experts 4 and 5, never routed to
  // Every linear is in the packed file, and the written checkpoint evaluates as the run did.
  const gsq::LlamaModel reloaded = gsq::LlamaModel::load(out.string());
  const gsq::SafetensorsFile packed = gsq::SafetensorsFile::open((out / "quantized.safetensors").string());
  for (long layer = 0; layer < reloaded.config().layers; ++layer)
    for (const std::string& linear : reloaded.config().linear_names(layer))
      CHECK(packed.contains(gsq::LlamaModel::tensor_name(layer, linear) + ".codes"));

  CHECK(run_quantize_model(run + " --out " + scratch("moe_gptq").string() + " --export gptq", log) == 2);
  CHECK(slurp(log).find("DeepseekV3ForCausalLM has experts or latent attention") != std::string::npos);
}

TEST_CASE("write_checkpoint: Hugging Face's sharded layout for a sharded or large model, one decoder layer per shard") {
  const std::string deepseek = GSQ_SOURCE_DIR "/tests/data/tiny-deepseek-v3";
  const gsq::Checkpoint source = gsq::Checkpoint::open(deepseek);
  gsq::LlamaModel model = gsq::LlamaModel::open(deepseek);
  gsq::Matrix<float> changed = model.linear_weight(2, "mlp.experts.6.down_proj");
  changed(0, 0) += 1;
  model.set_linear_weight(2, "mlp.experts.6.down_proj", changed);

  const fs::path single = scratch("single_checkpoint"), sharded = scratch("sharded_checkpoint");
  gsq::write_checkpoint(model, deepseek, source, single.string());
  gsq::write_checkpoint(model, deepseek, source, sharded.string(), 1e5);  // "large": past 100 kB
  CHECK(fs::exists(single / "model.safetensors"));
  CHECK_FALSE(fs::exists(single / "model.safetensors.index.json"));
  const nlohmann::json index = read_json(sharded / "model.safetensors.index.json");
  CHECK(index["weight_map"]["model.embed_tokens.weight"] == "model-00001-of-00004.safetensors");
  CHECK(index["weight_map"]["model.layers.0.mlp.down_proj.weight"] == "model-00002-of-00004.safetensors");
  CHECK(index["weight_map"]["model.layers.2.mlp.gate.e_score_correction_bias"] == "model-00004-of-00004.safetensors");
  CHECK(index["weight_map"].size() == source.tensor_names().size());
  CHECK(index["metadata"]["total_size"].get<double>() > 1e5);

  // Both read back as the model that was written; a sharded source gives a sharded output.
  for (const fs::path& written : {single, sharded}) {
    const gsq::LlamaModel reloaded = gsq::LlamaModel::open(written.string());
    CHECK(reloaded.linear_weight(2, "mlp.experts.6.down_proj").values == changed.values);
    CHECK(reloaded.linear_weight(1, "self_attn.kv_b_proj").values == model.linear_weight(1, "self_attn.kv_b_proj").values);
  }
  const fs::path again = scratch("resharded_checkpoint");
  gsq::write_checkpoint(gsq::LlamaModel::open(sharded.string()), sharded.string(), gsq::Checkpoint::open(sharded.string()),
                        again.string());
  CHECK(read_json(again / "model.safetensors.index.json") == index);
}

TEST_CASE("quantize_model reads text files through the model's own tokenizer.json") {
  // The bundled model's tokenizer maps each byte to its own id, so text through it must give
  // the bytes of a --byte-tokens run: the same checkpoint and the same evaluation.
  const fs::path bytes = scratch("text_bytes"), text = scratch("text_tokenizer"), log = scratch("text_log");
  const fs::path eval = scratch("text_eval.txt");
  std::ofstream(eval, std::ios::binary) << slurp(model_dir + "/eval.txt").substr(0, 4096);
  const std::string run = " --method rtn --calib-tokens 1024 --window 128 --eval " + eval.string();
  REQUIRE(quantize_model("--out " + bytes.string() + run, log) == 0);
  REQUIRE(run_quantize_model("--model " + model_dir + " --calib " + model_dir + "/calib.txt --out " + text.string() + run, log) == 0);
  CHECK(slurp(text / "model.safetensors") == slurp(bytes / "model.safetensors"));
  CHECK(read_json(text / "manifest.json")["evaluation"]["nll"] == read_json(bytes / "manifest.json")["evaluation"]["nll"]);

  // A model without a tokenizer.json: refused by name before any output exists.
  const fs::path refused = scratch("text_refused");
  REQUIRE(run_quantize_model("--model " GSQ_SOURCE_DIR "/tests/data/tiny-llama3 --calib " + model_dir + "/calib.txt --group 0 --out " +
                                 refused.string(),
                             log) == 2);
  CHECK_THAT(slurp(log), Catch::Matchers::Contains("--calib") && Catch::Matchers::Contains("tokenizer.json"));
  CHECK(!fs::exists(refused));
  CHECK(!fs::exists(refused.string() + ".partial"));
  fs::remove_all(bytes), fs::remove_all(text), fs::remove(eval);
}
