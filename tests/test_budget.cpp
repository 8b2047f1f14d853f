// Tests of the size budget (gsq/pipeline/sensitivity.hpp, gsq/pipeline/budget.hpp, quantize_model
// --target-bpw / --target-size): each tensor's measured KL against the whole model's with only
// that tensor quantized (gsq::compare, an independent path), the same table for any thread count,
// the plan against brute force over every assignment, bad budgets refused before any work, and a
// planned GGUF or compressed-tensors checkpoint whose tensors and bytes are the plan's.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gsq/backend/host.hpp>
#include <gsq/export/quantized_model.hpp>
#include <gsq/format/gguf_file.hpp>
#include <gsq/model/comparison.hpp>
#include <gsq/pipeline/budget.hpp>
#include <gsq/pipeline/sensitivity.hpp>

#include "program_runner.hpp"

using Catch::Matchers::Contains;
using gsq::GgmlType;

namespace {

std::vector<gsq::TokenId> random_tokens(long count, long vocabulary, unsigned seed) {
  std::mt19937 random(seed);
  std::vector<gsq::TokenId> tokens(static_cast<std::size_t>(count));
  for (gsq::TokenId& token : tokens) token = static_cast<gsq::TokenId>(random() % static_cast<unsigned>(vocabulary));
  return tokens;
}

/// A measured table of made-up tensors: `choices` types each, bytes and KL decreasing together
/// (with a random bump, so that a larger type is not always better).
gsq::SensitivityTable random_table(std::size_t tensors, std::size_t choices, unsigned seed) {
  std::mt19937 random(seed);
  std::uniform_real_distribution<double> uniform(0, 1);
  gsq::SensitivityTable table;
  table.fixed_bytes = 100;
  table.parameters = 1000 * tensors;
  table.measured = true;
  for (std::size_t i = 0; i < tensors; ++i) {
    gsq::TensorSensitivity tensor{"t" + std::to_string(i), {"t" + std::to_string(i)}, 100, 1000, {}};
    std::uint64_t bytes = 100 + static_cast<std::uint64_t>(uniform(random) * 50);
    double kl = 0.01 + uniform(random);
    for (std::size_t c = 0; c < choices; ++c) {
      tensor.choices.push_back({"Q4_0", bytes, kl, 0, 0});
      bytes += 20 + static_cast<std::uint64_t>(uniform(random) * 200);
      kl *= 0.1 + 0.8 * uniform(random) + (uniform(random) < 0.1 ? 0.5 : 0.0);
    }
    table.tensors.push_back(tensor);
  }
  return table;
}

/// The least KL over every assignment that fits `budget`, by enumeration.
double brute_force(const gsq::SensitivityTable& table, std::uint64_t budget) {
  std::vector<std::size_t> choice(table.tensors.size(), 0);
  double best = std::numeric_limits<double>::infinity();
  for (;;) {
    std::uint64_t bytes = table.fixed_bytes;
    double kl = 0;
    for (std::size_t i = 0; i < choice.size(); ++i) bytes += table.tensors[i].choices[choice[i]].bytes, kl += table.tensors[i].choices[choice[i]].kl;
    if (bytes <= budget) best = std::min(best, kl);
    std::size_t i = 0;
    while (i < choice.size() && ++choice[i] == table.tensors[i].choices.size()) choice[i++] = 0;
    if (i == choice.size()) return best;
  }
}

/// RTN with max-abs scales, whose result does not depend on H: a test can make each quantized
/// tensor on its own and compare whole models (windows of 16 tokens).
gsq::SensitivityOptions rtn_on_windows(long windows) {
  gsq::SensitivityOptions options;
  options.method = gsq::Method::rtn;
  options.gptq.scale_fit = gsq::ScaleFit::max_abs;
  options.window = 16;
  options.windows = windows;
  return options;
}

/// The mean KL of `model` from `original` on `tokens` in windows of 16, by gsq::compare.
double mean_kl(const gsq::LlamaModel& model, const gsq::LlamaModel& original, const std::vector<gsq::TokenId>& tokens) {
  gsq::EvaluationOptions windows;
  windows.window = 16;
  const gsq::Comparison compared = gsq::compare(model, original, tokens, windows);
  double kl = 0;
  for (const gsq::PredictionComparison& prediction : compared.predictions) kl += prediction.kl;
  return kl / static_cast<double>(compared.predictions.size());
}

}  // namespace

TEST_CASE("budget: the plan is the least KL that fits, as enumeration finds it", "[budget]") {
  for (unsigned seed = 1; seed <= 40; ++seed) {
    const gsq::SensitivityTable table = random_table(2 + seed % 5, 2 + seed % 4, seed);
    const std::uint64_t smallest = gsq::budget_smallest(table), largest = gsq::budget_largest(table);
    for (const double share : {0.0, 0.1, 0.37, 0.5, 0.81, 1.0}) {
      const std::uint64_t budget = smallest + static_cast<std::uint64_t>(share * static_cast<double>(largest - smallest));
      INFO("seed " << seed << ", budget " << budget);
      const gsq::BudgetPlan exact = gsq::plan_budget(table, budget);  // cells above the slack: one byte a step
      CHECK(exact.bytes <= budget);
      CHECK(exact.predicted_kl == Approx(brute_force(table, budget)).epsilon(1e-12));
      const gsq::BudgetPlan coarse = gsq::plan_budget(table, budget, 7);  // steps of many bytes: still fits
      CHECK(coarse.bytes <= budget);
      CHECK(coarse.predicted_kl >= exact.predicted_kl - 1e-12);
      double sum = 0;
      std::uint64_t bytes = table.fixed_bytes;
      for (std::size_t i = 0; i < table.tensors.size(); ++i)
        sum += table.tensors[i].choices[coarse.choice[i]].kl, bytes += table.tensors[i].choices[coarse.choice[i]].bytes;
      CHECK(coarse.predicted_kl == Approx(sum));
      CHECK(coarse.bytes == bytes);
    }
  }
}

TEST_CASE("budget: budgets no file can meet are refused, naming the bounds", "[budget]") {
  const gsq::SensitivityTable table = random_table(3, 3, 5);
  const std::uint64_t smallest = gsq::budget_smallest(table), largest = gsq::budget_largest(table);
  CHECK_NOTHROW(gsq::require_budget(table, smallest, "--target-size"));
  CHECK_NOTHROW(gsq::require_budget(table, largest, "--target-size"));
  CHECK_THROWS_WITH(gsq::require_budget(table, smallest - 1, "--target-size"),
                    Contains("--target-size") && Contains("below the smallest file") && Contains(std::to_string(smallest)));
  CHECK_THROWS_WITH(gsq::require_budget(table, largest + 1, "--target-size"), Contains("above the largest file"));
  CHECK_THROWS_WITH(gsq::require_budget(table, 2 * table.parameters, "--target-bpw"), Contains("16 bits per weight or more"));
  CHECK_THROWS_WITH(gsq::budget_bytes_of_bpw(table, -1), Contains("positive"));
  CHECK_THROWS_WITH(gsq::budget_bytes_of_bpw(table, std::numeric_limits<double>::quiet_NaN()), Contains("positive"));
  gsq::SensitivityTable unmeasured = table;
  unmeasured.measured = false;
  CHECK_THROWS_WITH(gsq::plan_budget(unmeasured, largest), Contains("measured"));
}

TEST_CASE("sensitivity: the candidates as llama-quantize writes them for each tensor's rows, the rest of the file in float", "[budget]") {
  const std::string fixture = std::string(GSQ_SOURCE_DIR) + "/tests/data/tiny-llama3";  // rows of 64 and 160
  const gsq::LlamaConfig config = gsq::LlamaConfig::load(fixture + "/config.json");
  const gsq::SensitivityTable table =
      gsq::sensitivity_table(config, gsq::Checkpoint::open(fixture), {GgmlType::Q2_K, GgmlType::Q2_0, GgmlType::Q4_K, GgmlType::Q8_0});
  REQUIRE(table.tensors.size() == 2 + 7 * static_cast<std::size_t>(config.layers));  // token_embd, output, the linears
  for (const gsq::TensorSensitivity& tensor : table.tensors) {
    INFO(tensor.name);
    std::vector<std::string> types;
    for (const gsq::SensitivityChoice& choice : tensor.choices) {
      types.push_back(choice.type);
      CHECK(choice.bytes == gsq::ggml_bytes(gsq::ggml_type_named(choice.type, ""), static_cast<std::size_t>(tensor.parameters)));
    }
    if (tensor.cols == 64)  // Q2_K falls back to Q4_0, Q4_K to Q5_0; Q2_0's blocks of 64 fit
      CHECK(types == std::vector<std::string>{"Q2_0", "Q4_0", "Q5_0", "Q8_0"});
    else  // ffn_down, rows of 160: not whole blocks of 64 either
      CHECK(types == std::vector<std::string>{"Q4_0", "Q5_0", "Q8_0"});
  }
  // Norms in F32 (2 a layer and the final one, 64 each) and llama3's rope_freqs (head_dim / 2).
  CHECK(table.fixed_bytes == 4 * (64 * (2 * static_cast<std::uint64_t>(config.layers) + 1) + 24 / 2));
  CHECK_THROWS_WITH(gsq::sensitivity_table(config, gsq::Checkpoint::open(fixture), {GgmlType::Q2_K, GgmlType::TQ1_0}),
                    Contains("does not quantize into ggml type TQ1_0"));
  const std::string latent = std::string(GSQ_SOURCE_DIR) + "/tests/data/tiny-deepseek-v3";
  CHECK_THROWS_WITH(
      gsq::sensitivity_table(gsq::LlamaConfig::load(latent + "/config.json"), gsq::Checkpoint::open(latent), {GgmlType::Q4_0}),
      Contains("latent attention"));
}

TEST_CASE("sensitivity: each choice's KL is the whole model's with only that tensor quantized", "[budget]") {
  // RTN with max-abs scales in the legacy types: the quantized tensor does not depend on H, so the
  // test can make it on its own and run gsq::compare, full forward passes, beside the measurement.
  for (const char* name : {"tiny-llama3", "tiny-qwen3"}) {  // untied; tied embeddings and head
    const std::string fixture = std::string(GSQ_SOURCE_DIR) + "/tests/data/" + name;
    INFO(name);
    const gsq::LlamaModel original = gsq::LlamaModel::load(fixture);
    const gsq::LlamaConfig& config = original.config();
    gsq::SensitivityTable table = gsq::sensitivity_table(config, gsq::Checkpoint::open(fixture), {GgmlType::Q4_0, GgmlType::Q8_0});
    const std::vector<gsq::TokenId> calibration = random_tokens(5 * 16, config.vocab_size, 3);
    gsq::SensitivityOptions options = rtn_on_windows(3);
    long heard = 0;
    options.on_tensor = [&](const gsq::TensorSensitivity&, long done, long total) {
      CHECK(done == ++heard);
      CHECK(total == static_cast<long>(table.tensors.size()));
    };
    gsq::LlamaModel model = gsq::LlamaModel::load(fixture);
    gsq::measure_sensitivity(model, table, calibration, options);
    CHECK(table.measured);
    CHECK(heard == static_cast<long>(table.tensors.size()));
    const std::vector<gsq::TokenId> measured(calibration.begin(), calibration.begin() + 3 * 16);
    gsq::EvaluationOptions windows;
    windows.window = 16;
    for (const gsq::TensorSensitivity& tensor : table.tensors) {
      if (!(tensor.name == "token_embd.weight" || tensor.name == "output.weight" || tensor.name == "blk.1.ffn_down.weight" ||
            tensor.name == "blk.0.attn_k.weight"))
        continue;
      INFO(tensor.name);
      for (const gsq::SensitivityChoice& choice : tensor.choices) {
        INFO(choice.type);
        gsq::LlamaModel changed = gsq::LlamaModel::load(fixture);
        const bool head = tensor.name == "output.weight", embedding = tensor.name == "token_embd.weight";
        const long layer = embedding || head ? -1 : tensor.name[4] - '0';
        const std::string linear = tensor.name == "blk.0.attn_k.weight" ? "self_attn.k_proj" : "mlp.down_proj";
        const gsq::Matrix<float> original_weight =
            embedding ? original.embedding() : head ? original.head() : original.linear_weight(layer, linear);
        const gsq::Matrix<float> quantized = gsq::detail::quantized_in("gguf", choice.type, tensor.checkpoint.front(), original_weight,
                                                                       gsq::identity_hessian(original_weight.cols), gsq::Method::rtn,
                                                                       options.gptq);
        if (embedding || head) changed.set_embedding_or_head(head, quantized);
        else changed.set_linear_weight(layer, linear, quantized);
        const double kl = mean_kl(changed, original, measured);
        CHECK(kl > 0);
        CHECK(choice.kl == Approx(kl).epsilon(1e-6));
      }
      CHECK(tensor.choices.front().kl > tensor.choices.back().kl);  // Q4_0 hurts more than Q8_0
    }
    // The model is put back, bit for bit.
    const gsq::Comparison after = gsq::compare(model, original, measured, windows);
    for (const gsq::PredictionComparison& prediction : after.predictions) CHECK(prediction.kl == 0);
  }
}

TEST_CASE("sensitivity: the same table for any thread count, kept and read back only for the same measurement", "[budget]") {
  const std::string fixture = std::string(GSQ_SOURCE_DIR) + "/tests/data/tiny-llama3";
  const gsq::LlamaConfig config = gsq::LlamaConfig::load(fixture + "/config.json");
  const gsq::Checkpoint checkpoint = gsq::Checkpoint::open(fixture);
  const std::vector<gsq::TokenId> calibration = random_tokens(4 * 32, config.vocab_size, 11);
  gsq::SensitivityOptions options;  // GPTQ on each tensor's calibration H
  options.window = 32;
  options.windows = 2;
  const int default_threads = gsq::host_thread_count();
  std::vector<nlohmann::json> tables;
  for (const int threads : {1, 2}) {
    gsq::set_host_threads(threads);
    gsq::SensitivityTable table = gsq::sensitivity_table(config, checkpoint, {GgmlType::Q2_0, GgmlType::Q4_0, GgmlType::Q8_0});
    table.settings = gsq::sensitivity_settings(table, checkpoint, calibration, options);
    gsq::LlamaModel model = gsq::LlamaModel::load(fixture);
    gsq::measure_sensitivity(model, table, calibration, options);
    tables.push_back(table);
  }
  gsq::set_host_threads(default_threads);
  CHECK(tables[0].dump() == tables[1].dump());

  const gsq::testing::ScratchDirectory scratch;
  const gsq::SensitivityTable table = tables[0];
  gsq::save_sensitivity(scratch.file("sensitivity.json"), table);
  const gsq::SensitivityTable read = gsq::load_sensitivity(scratch.file("sensitivity.json"), table.settings);
  CHECK(nlohmann::json(read).dump() == tables[0].dump());
  gsq::SensitivityOptions other = options;
  other.windows = 3;
  const gsq::SensitivityTable sizes = gsq::sensitivity_table(config, checkpoint, {GgmlType::Q2_0, GgmlType::Q4_0, GgmlType::Q8_0});
  CHECK_THROWS_WITH(gsq::load_sensitivity(scratch.file("sensitivity.json"), gsq::sensitivity_settings(sizes, checkpoint, calibration, other)),
                    Contains("its windows differs"));
  CHECK_THROWS_WITH(gsq::load_sensitivity(scratch.file("sensitivity.json"),
                                          gsq::sensitivity_settings(sizes, checkpoint, random_tokens(4 * 32, config.vocab_size, 12), options)),
                    Contains("its calibration differs"));
  std::ofstream(scratch.file("broken.json")) << "{\"settings\": 1";
  CHECK_THROWS_WITH(gsq::load_sensitivity(scratch.file("broken.json"), table.settings), Contains("not a sensitivity table"));
}

TEST_CASE("quantize_model --target-size: the planned GGUF holds the plan's types in the plan's bytes", "[budget][driver]") {
  const gsq::testing::ScratchDirectory scratch;
  const std::string model = std::string(GSQ_SOURCE_DIR) + "/data/llama-bytes-3m";
  const std::string common = "--model '" + model + "' --byte-tokens --calib '" + model + "/calib.txt' " +
                             "--sensitivity-windows 1 --quiet --threads 2 --sensitivity '" + scratch.file("sensitivity.json") + "' ";
  const std::string measured = common + "--calib-tokens 1024 ";
  // Bad budgets and settings: refused before any work or file.
  for (const std::string& bad : {std::string("--target-bpw 1 --plan-only"), std::string("--target-bpw 17 --plan-only"),
                                 std::string("--target-bpw 9 --plan-only"), std::string("--target-bpw nan --plan-only"),
                                 std::string("--target-size 0 --plan-only"), std::string("--target-bpw 3 --target-size 100000 --plan-only"),
                                 std::string("--target-bpw 3 --bits 3 --plan-only"), std::string("--target-bpw 3 --candidates Q3_K,Q9_X --plan-only"),
                                 std::string("--target-bpw 3 --export gptq --out '" + scratch.file("out") + "'"),
                                 std::string("--target-bpw 3 --export gguf,compressed-tensors --out '" + scratch.file("out") + "'"),
                                 std::string("--target-bpw 3 --export compressed-tensors --candidates Q4_K --out '" + scratch.file("out") + "'"),
                                 std::string("--target-bpw 3 --candidates int4-g128 --plan-only"),
                                 std::string("--plan-only"), std::string("--target-bpw 3")}) {
    INFO(bad);
    const gsq::testing::Outcome refused = gsq::testing::run_program("quantize_model", measured + bad);
    CHECK(refused.status == 2);
    CHECK(refused.err.find("quantize_model: ") != std::string::npos);
    CHECK(!gsq::testing::fs::exists(scratch.file("sensitivity.json")));
    CHECK(!gsq::testing::fs::exists(scratch.file("out")));
  }
  {  // what the export needs of the model is checked before the measurement, too
    const std::vector<gsq::TokenId> tokens = random_tokens(512, 96, 9);
    std::ofstream(scratch.file("calib.u32"), std::ios::binary)
        .write(reinterpret_cast<const char*>(tokens.data()), static_cast<std::streamsize>(tokens.size() * sizeof(gsq::TokenId)));
    const gsq::testing::Outcome refused = gsq::testing::run_program(
        "quantize_model", "--model '" + std::string(GSQ_SOURCE_DIR) + "/tests/data/tiny-mixtral' --calib '" + scratch.file("calib.u32") +
                              "' --calib-window 64 --target-bpw 5 --export gguf --out '" + scratch.file("out") + "'");
    CHECK(refused.status == 2);
    CHECK_THAT(refused.err, Contains("needs the model's tokenizer.json"));
    CHECK(refused.err.find("sensitivity") == std::string::npos);
    CHECK(!gsq::testing::fs::exists(scratch.file("out")));
  }
  const gsq::testing::Outcome too_small = gsq::testing::run_program("quantize_model", measured + "--target-bpw 1 --plan-only");
  CHECK_THAT(too_small.err, Contains("below the smallest file the candidate types make"));

  // --plan-only measures once and keeps the measurement; another budget reads it.
  const gsq::testing::Outcome planned = gsq::testing::run_program("quantize_model", measured + "--target-bpw 3.5 --plan-only");
  REQUIRE(planned.status == 0);
  CHECK_THAT(planned.out, Contains("predicted KL") && Contains("blk.3:"));
  REQUIRE(gsq::testing::fs::exists(scratch.file("sensitivity.json")));
  const std::string kept = gsq::testing::read_file(scratch.file("sensitivity.json"));
  const gsq::testing::Outcome run = gsq::testing::run_program(
      "quantize_model", measured + "--target-size 1300000 --method gptq --export gguf --out '" + scratch.file("out") + "'");
  REQUIRE(run.status == 0);
  CHECK(gsq::testing::read_file(scratch.file("sensitivity.json")) == kept);  // read, not measured again
  const nlohmann::json manifest = nlohmann::json::parse(gsq::testing::read_file(scratch.file("out/manifest.json")));
  const nlohmann::json& budget = manifest.at("budget");
  CHECK(budget.at("budget_bytes") == 1300000);
  CHECK(budget.at("bytes").get<std::uint64_t>() <= 1300000);
  CHECK(budget.at("bytes").get<std::uint64_t>() > 1300000 * 0.995);
  const gsq::GgufFile file = gsq::GgufFile::open(scratch.file("out/model.gguf"));
  std::uint64_t bytes = 0;
  for (const gsq::GgufTensor& tensor : file.tensors()) bytes += tensor.bytes;
  CHECK(bytes == budget.at("bytes").get<std::uint64_t>());
  std::set<std::string> types;
  for (const nlohmann::json& tensor : budget.at("tensors")) {
    const auto found = std::find_if(file.tensors().begin(), file.tensors().end(),
                                    [&](const gsq::GgufTensor& t) { return t.name == tensor.at("tensor").get<std::string>(); });
    REQUIRE(found != file.tensors().end());
    CHECK(gsq::ggml_type_name(static_cast<std::uint32_t>(found->type)) == tensor.at("type").get<std::string>());
    types.insert(tensor.at("type").get<std::string>());
  }
  CHECK(types.size() >= 2);  // a mix, not one type
  // A kept measurement of another calibration is refused, and left as it was.
  const gsq::testing::Outcome other = gsq::testing::run_program(
      "quantize_model", common + "--calib-tokens 2048 --target-bpw 3.5 --plan-only");
  CHECK(other.status == 2);
  CHECK_THAT(other.err, Contains("its calibration differs"));
  CHECK(gsq::testing::read_file(scratch.file("sensitivity.json")) == kept);
}

TEST_CASE("sensitivity of a Mixture-of-Experts model: each projection of a layer's experts as GGUF stacks it", "[budget]") {
  const std::string fixture = std::string(GSQ_SOURCE_DIR) + "/tests/data/tiny-mixtral";
  const gsq::LlamaModel original = gsq::LlamaModel::load(fixture);
  const gsq::LlamaConfig& config = original.config();
  gsq::SensitivityTable table = gsq::sensitivity_table(config, gsq::Checkpoint::open(fixture), {GgmlType::Q4_0, GgmlType::Q8_0});
  const auto stacked = std::find_if(table.tensors.begin(), table.tensors.end(),
                                    [](const gsq::TensorSensitivity& tensor) { return tensor.name == "blk.1.ffn_down_exps.weight"; });
  REQUIRE(stacked != table.tensors.end());
  REQUIRE(static_cast<long>(stacked->checkpoint.size()) == config.mixture.experts);
  CHECK(stacked->choices.front().bytes ==
        gsq::ggml_bytes(GgmlType::Q4_0, static_cast<std::size_t>(stacked->parameters)));
  CHECK(stacked->parameters == static_cast<std::uint64_t>(config.mixture.experts * config.hidden_size * config.mixture.expert_intermediate_size));
  for (const gsq::TensorSensitivity& tensor : table.tensors) CHECK(tensor.name.find("ffn_gate_inp") == std::string::npos);  // routers stay float

  const std::vector<gsq::TokenId> calibration = random_tokens(4 * 16, config.vocab_size, 5);
  const gsq::SensitivityOptions options = rtn_on_windows(2);
  gsq::LlamaModel model = gsq::LlamaModel::load(fixture);
  gsq::measure_sensitivity(model, table, calibration, options);
  // Every expert's down projection in Q4_0 at once, against gsq::compare.
  gsq::LlamaModel changed = gsq::LlamaModel::load(fixture);
  for (const std::string& name : stacked->checkpoint) {
    const std::string linear = name.substr(std::string("model.layers.1.").size(), name.size() - std::string("model.layers.1.").size() - 7);
    const gsq::Matrix<float> weight = original.linear_weight(1, linear);
    changed.set_linear_weight(1, linear, gsq::detail::quantized_in("gguf", "Q4_0", name, weight, gsq::identity_hessian(weight.cols),
                                                                   gsq::Method::rtn, options.gptq));
  }
  const double kl = mean_kl(changed, original, std::vector<gsq::TokenId>(calibration.begin(), calibration.begin() + 2 * 16));
  CHECK(kl > 0);
  CHECK(stacked->choices.front().kl == Approx(kl).epsilon(1e-6));

  // A plan of it as a mix: every expert's tensor in its stacked tensor's type.
  const gsq::BudgetPlan plan = gsq::plan_budget(table, (gsq::budget_smallest(table) + gsq::budget_largest(table)) / 2);
  const gsq::GgmlMix mix = gsq::budget_mix(config, table, plan, "a test budget");
  for (std::size_t i = 0; i < table.tensors.size(); ++i)
    for (const std::string& name : table.tensors[i].checkpoint)
      if (table.tensors[i].name != "token_embd.weight" && table.tensors[i].name != "output.weight")
        CHECK(gsq::ggml_type_name(static_cast<std::uint32_t>(mix.linears.at(name))) == table.tensors[i].choices[plan.choice[i]].type);
}

TEST_CASE("sensitivity for compressed-tensors: the linears an engine fuses one unit, in the schemes whose groups fit", "[budget]") {
  const std::string fixture = std::string(GSQ_SOURCE_DIR) + "/tests/data/tiny-llama3";  // q 96 x 64, k and v 24 x 64, down 64 x 160
  const gsq::LlamaConfig config = gsq::LlamaConfig::load(fixture + "/config.json");
  const gsq::Checkpoint checkpoint = gsq::Checkpoint::open(fixture);
  const auto scheme = [](const char* name) { return gsq::grid_scheme_named(name, "a test"); };
  const gsq::SensitivityTable table =
      gsq::sensitivity_table(config, checkpoint, {scheme("int8-per-channel"), scheme("int2-g32"), scheme("int4-g64")});
  CHECK(table.format == "compressed-tensors");
  REQUIRE(table.tensors.size() == 4 * static_cast<std::size_t>(config.layers));  // q/k/v, o, gate/up, down
  const gsq::TensorSensitivity& attention = table.tensors[4];
  CHECK(attention.name == "model.layers.1.self_attn.q_proj+k_proj+v_proj");
  CHECK(attention.checkpoint == std::vector<std::string>{"model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight",
                                                         "model.layers.1.self_attn.v_proj.weight"});
  CHECK(attention.parameters == (96 + 24 + 24) * 64);
  REQUIRE(attention.choices.size() == 3);  // by bytes: int2-g32, int4-g64, int8-per-channel
  CHECK(attention.choices[0].type == "int2-g32");
  // Each row of 64 2-bit codes is 4 words, beside 2 fp16 scales; each tensor's shape is 2 int64s.
  CHECK(attention.choices[0].bytes == (96 + 24 + 24) * (4 * 4 + 2 * 2) + 3 * 16);
  CHECK(attention.choices[1].type == "int4-g64");
  CHECK(attention.choices[2].bytes == (96 + 24 + 24) * (16 * 4 + 2) + 3 * 16);
  CHECK(table.tensors[6].name == "model.layers.1.mlp.gate_proj+up_proj");
  const gsq::TensorSensitivity& down = table.tensors[7];
  CHECK(down.name == "model.layers.1.mlp.down_proj");
  std::vector<std::string> types;
  for (const gsq::SensitivityChoice& choice : down.choices) types.push_back(choice.type);
  CHECK(types == std::vector<std::string>{"int2-g32", "int8-per-channel"});  // groups of 64 do not divide 160 inputs
  // The rest as the checkpoint stores it: embedding and head (97 x 64), norms (64), all in F32.
  CHECK(table.fixed_bytes == 4 * (2 * 97 * 64 + 64 * (2 * static_cast<std::uint64_t>(config.layers) + 1)));
  CHECK_THROWS_WITH(gsq::sensitivity_table(config, checkpoint, {scheme("int4-g128")}), Contains("none of the candidate types"));
  CHECK_THROWS_WITH(scheme("int5-g32"), Contains("no grid scheme"));
  CHECK_THROWS_WITH(scheme("int4-g48"), Contains("no grid scheme"));
  CHECK_THROWS_WITH(scheme("int4"), Contains("no grid scheme"));
  CHECK(scheme("int3-per-channel").name() == "int3-per-channel");

  // Mixtral: each layer's experts stacked by projection, gate and up (w1, w3) one unit; the router stays float.
  const std::string moe = std::string(GSQ_SOURCE_DIR) + "/tests/data/tiny-mixtral";
  const gsq::LlamaConfig moe_config = gsq::LlamaConfig::load(moe + "/config.json");
  const gsq::SensitivityTable experts = gsq::sensitivity_table(moe_config, gsq::Checkpoint::open(moe), {scheme("int4-per-channel")});
  const auto unit = std::find_if(experts.tensors.begin(), experts.tensors.end(), [](const gsq::TensorSensitivity& tensor) {
    return tensor.name == "model.layers.1.block_sparse_moe.experts.*.w1+w3";
  });
  REQUIRE(unit != experts.tensors.end());
  CHECK(static_cast<long>(unit->checkpoint.size()) == 2 * moe_config.mixture.experts);
  for (const gsq::TensorSensitivity& tensor : experts.tensors) CHECK(tensor.name.find(".gate") == std::string::npos);
}

TEST_CASE("sensitivity for compressed-tensors: a unit's KL is the whole model's with its linears quantized together", "[budget]") {
  const std::string fixture = std::string(GSQ_SOURCE_DIR) + "/tests/data/tiny-llama3";
  const gsq::LlamaModel original = gsq::LlamaModel::load(fixture);
  const gsq::LlamaConfig& config = original.config();
  gsq::SensitivityTable table = gsq::sensitivity_table(
      config, gsq::Checkpoint::open(fixture), {gsq::grid_scheme_named("int3-g32", ""), gsq::grid_scheme_named("int8-g32", "")});
  const std::vector<gsq::TokenId> calibration = random_tokens(4 * 16, config.vocab_size, 7);
  const gsq::SensitivityOptions options = rtn_on_windows(3);
  gsq::LlamaModel model = gsq::LlamaModel::load(fixture);
  gsq::measure_sensitivity(model, table, calibration, options);
  const std::vector<gsq::TokenId> measured(calibration.begin(), calibration.begin() + 3 * 16);
  for (const std::size_t unit : {std::size_t{0}, std::size_t{6}}) {  // layer 0's q/k/v, layer 1's gate/up
    const gsq::TensorSensitivity& tensor = table.tensors[unit];
    INFO(tensor.name);
    for (const gsq::SensitivityChoice& choice : tensor.choices) {
      INFO(choice.type);
      gsq::LlamaModel changed = gsq::LlamaModel::load(fixture);
      const long layer = unit / 4;
      for (const std::string& name : tensor.checkpoint) {
        const std::string prefix = "model.layers." + std::to_string(layer) + ".";
        const std::string linear = name.substr(prefix.size(), name.size() - prefix.size() - 7);
        const gsq::Matrix<float> weight = original.linear_weight(layer, linear);
        changed.set_linear_weight(layer, linear, gsq::detail::quantized_in("compressed-tensors", choice.type, name, weight,
                                                                           gsq::identity_hessian(weight.cols), gsq::Method::rtn, options.gptq));
      }
      const double kl = mean_kl(changed, original, measured);
      CHECK(kl > 0);
      CHECK(choice.kl == Approx(kl).epsilon(1e-6));
    }
    CHECK(tensor.choices.front().kl > tensor.choices.back().kl);
  }
}

TEST_CASE("quantize_model --target-bpw --export compressed-tensors: a checkpoint of the plan's schemes in the plan's bytes", "[budget][driver]") {
  const gsq::testing::ScratchDirectory scratch;
  const std::string model = std::string(GSQ_SOURCE_DIR) + "/data/llama-bytes-3m";
  const gsq::testing::Outcome run = gsq::testing::run_program(
      "quantize_model", "--model '" + model + "' --byte-tokens --calib '" + model + "/calib.txt' --calib-tokens 1024 " +
                            "--sensitivity-windows 1 --quiet --threads 2 --method gptq --target-bpw 6 --export compressed-tensors " +
                            "--out '" + scratch.file("out") + "'");
  REQUIRE(run.status == 0);
  CHECK_THAT(run.out, Contains("model.layers.3: self_attn.q_proj+k_proj+v_proj int"));
  const nlohmann::json manifest = nlohmann::json::parse(gsq::testing::read_file(scratch.file("out/manifest.json")));
  const nlohmann::json& budget = manifest.at("budget");
  CHECK(budget.at("format") == "compressed-tensors");
  // The checkpoint's tensors take the plan's bytes, within 0.5% of the budget.
  const gsq::SafetensorsFile file = gsq::SafetensorsFile::open(scratch.file("out/compressed-tensors/model.safetensors"));
  std::uint64_t bytes = 0;
  for (const gsq::TensorInfo& tensor : file.tensors()) bytes += static_cast<std::uint64_t>(tensor.byte_size());
  CHECK(bytes == budget.at("bytes").get<std::uint64_t>());
  CHECK(bytes <= budget.at("budget_bytes").get<std::uint64_t>());
  CHECK(bytes > 0.99 * budget.at("budget_bytes").get<double>());  // 16 units of 16-400 KB steps: within a percent here
  // Every linear in exactly one config group, that of its unit's scheme; q/k/v and gate/up together.
  const nlohmann::json config = nlohmann::json::parse(gsq::testing::read_file(scratch.file("out/compressed-tensors/config.json")));
  std::map<std::string, std::string> scheme_of;  // module -> "int<bits>-g<group>"
  for (const auto& [name, group] : config.at("quantization_config").at("config_groups").items())
    for (const nlohmann::json& target : group.at("targets")) {
      const nlohmann::json& weights = group.at("weights");
      CHECK(!scheme_of.count(target.get<std::string>()));
      scheme_of[target.get<std::string>()] = "int" + std::to_string(weights.at("num_bits").get<int>()) + "-g" +
                                             std::to_string(weights.at("group_size").get<int>());
    }
  CHECK(scheme_of.size() == 4 * 7);
  std::set<std::string> schemes;
  for (const nlohmann::json& unit : budget.at("tensors")) {
    const std::string name = unit.at("tensor"), type = unit.at("type");
    schemes.insert(type);
    const std::string prefix = name.substr(0, name.rfind('.') + 1);
    std::stringstream members(name.substr(prefix.size()));
    for (std::string member; std::getline(members, member, '+');) CHECK(scheme_of.at(prefix + member) == type);
  }
  CHECK(schemes.size() >= 2);  // a mix
  // gsq's own reader gives back the same schemes.
  const gsq::QuantizedModel read = gsq::QuantizedModel::open(scratch.file("out"), scratch.file("out/quantized.safetensors"));
  for (const auto& [name, tensor] : read.linears) CHECK(gsq::grid_scheme_of(tensor).name() == scheme_of.at(name.substr(0, name.size() - 7)));
}
