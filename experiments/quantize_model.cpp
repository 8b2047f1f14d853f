// quantize_model: quantizes a Hugging Face Llama-family checkpoint layer by layer (RTN, GPTQ or
// GSQ), evaluates it, and writes a loadable checkpoint plus the packed format.
//
//   quantize_model --model data/llama-bytes-3m --out out/gsq2 --byte-tokens \
//       --calib data/llama-bytes-3m/calib.txt --eval data/llama-bytes-3m/eval.txt
//   quantize_model ... --method rtn,gptq,gsq      (one output per method, one table)
//
// See docs/quantize_model.md.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include "driver.hpp"
#include <gsq/dispatch.hpp>
#include <gsq/evaluation.hpp>
#include <gsq/gsq.hpp>
#include <gsq/model_output.hpp>
#include <gsq/sequential.hpp>

namespace {

namespace fs = std::filesystem;
namespace po = boost::program_options;
using Clock = std::chrono::steady_clock;
using GridChoice = gsq::Choice<gsq::GridPolicies, gsq::ByBits>;
using GroupingChoice = gsq::Choice<gsq::TypeList<gsq::PerChannel, gsq::GroupSize<64>, gsq::GroupSize<128>>, gsq::ByGroupSize>;

/// Thrown when --stop-after ends a run early on purpose (to exercise --resume).
struct Stopped {};

struct Options {
  std::string model, out, calib, eval, json, dump_layers;
  std::vector<gsq::Method> methods;
  GridChoice grid{"--bits", "2"};
  GroupingChoice grouping{"--group", "128"};
  gsq::ModelQuantizationConfig config;
  long calib_tokens = 0, calib_window = 0, window = 0, stop_after = 0;
  bool byte_tokens = false, resume = false, quiet = false;
  int threads = 0;
};

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream stream(text);
  for (std::string part; std::getline(stream, part, ',');) parts.push_back(part);
  return parts;
}

Options parse_options(int argc, char** argv) {
  Options options;
  gsq::TrainConfig& train = options.config.train;
  std::string methods, init, objective, attention, scale_search;
  po::options_description flags("quantize_model: quantize a Llama-family checkpoint layer by layer and evaluate it");
  flags.add_options()
      ("help", "print this help")
      ("model", po::value(&options.model)->required(), "input checkpoint directory (config.json + model.safetensors or a sharded index)")
      ("out", po::value(&options.out)->required(), "output directory (replaced atomically); with several methods, one subdirectory per method")
      ("method", po::value(&methods)->default_value("gsq"), "rtn, gptq or gsq, or a comma list (e.g. rtn,gptq,gsq)")
      ("bits", po::value<std::string>()->default_value("2"), "grid: ternary, 2, 3 or 4")
      ("group", po::value<std::string>()->default_value("128"), "input columns per scale: 64, 128, or per-channel (0)")
      ("objective", po::value(&objective)->default_value("block"), "GSQ's MLP objective: block (gate/up/down jointly on the SwiGLU output) or layer (each on its Hessian objective)")
      ("attention", po::value(&attention)->default_value("gptq"), "attention projections under --method gsq: gptq (the reference) or gsq (Hessian objective)")
      ("init", po::value(&init)->default_value("gptq"), "GSQ's starting point: gptq (the paper's recipe) or rtn")
      ("steps", po::value(&train.steps)->default_value(640), "GSQ optimizer steps per layer (or per MLP block)")
      ("tau-start", po::value(&train.anneal.tau_start)->default_value(2.0), "temperature at the first step")
      ("tau-end", po::value(&train.anneal.tau_end)->default_value(0.05), "temperature at the last step")
      ("kappa-start", po::value(&train.anneal.kappa_start)->default_value(100.0), "logit scale at the first step")
      ("kappa-end", po::value(&train.anneal.kappa_end)->default_value(500.0), "logit scale at the last step")
      ("lr-logits", po::value(&train.logits.learning_rate)->default_value(1e-4), "Lion learning rate of the logits")
      ("lr-scales", po::value(&train.scales.learning_rate)->default_value(5e-5), "Lion learning rate of the scales")
      ("batches", po::value(&options.config.block_batches)->default_value(64), "mini-batches the calibration tokens are cut into (block objective)")
      ("scale-search", po::value(&scale_search)->default_value("weighted"), "scale fit of RTN and GPTQ: maxabs, mse or weighted (diag(H)-weighted search; wins on the layers measured, docs/quantize_layer.md)")
      ("percdamp", po::value(&options.config.gptq.percdamp)->default_value(0.01), "GPTQ damping, a fraction of mean(diag H)")
      ("act-order", po::bool_switch(&options.config.gptq.act_order), "GPTQ processes columns by decreasing diag(H)")
      ("calib", po::value(&options.calib)->required(), "calibration tokens: a token-id file (uint32 or .npy), or text with --byte-tokens")
      ("calib-tokens", po::value(&options.calib_tokens)->default_value(8192), "calibration tokens used (0: all)")
      ("calib-window", po::value(&options.calib_window)->default_value(256), "tokens per calibration sequence")
      ("eval", po::value(&options.eval), "evaluation tokens (same formats as --calib); omitted: no evaluation")
      ("window", po::value(&options.window)->default_value(256), "evaluation window: window-1 predictions each")
      ("byte-tokens", po::bool_switch(&options.byte_tokens), "read --calib and --eval as bytes (byte-level models)")
      ("seed", po::value(&train.seed)->default_value(0), "seed of the logit initialisation and the Gumbel noise")
      ("threads", po::value(&options.threads)->default_value(0), "threads (0: all cores); results do not depend on it")
      ("json", po::value(&options.json), "write the manifests and evaluations as JSON to this file")
      ("dump-layers", po::value(&options.dump_layers), "also save each linear layer's weight W and calibration H as DIR/<tensor>.safetensors")
      ("resume", po::bool_switch(&options.resume), "continue a run that stopped part-way, after its last completed layer")
      ("stop-after", po::value(&options.stop_after)->default_value(0), "stop after this many layers, as an interruption would (to test --resume)")
      ("quiet", po::bool_switch(&options.quiet), "no progress output");
  po::variables_map values;
  po::store(po::parse_command_line(argc, argv, flags), values);
  if (values.count("help")) {
    std::cout << flags << "\n";
    std::exit(0);
  }
  po::notify(values);
  for (const std::string& method : split(methods)) options.methods.push_back(gsq::parse_method(method));
  gsq::require(!options.methods.empty(), "--method names no method");
  options.grid = GridChoice("--bits", values["bits"].as<std::string>());
  options.grouping = GroupingChoice("--group", values["group"].as<std::string>());
  options.grid.validate();
  options.grouping.validate();
  options.config.gsq_init = gsq::parse_method(init);
  options.config.mlp_objective = gsq::parse_mlp_objective(objective);
  gsq::require(attention == "gptq" || attention == "gsq", "--attention must be gptq or gsq, got '" + attention + "'");
  options.config.gsq_attention = attention == "gsq";
  options.config.gptq.scale_fit = gsq::parse_scale_fit(scale_search);
  options.config.logit_init.seed = train.seed;
  gsq::require(options.calib_tokens >= 0 && options.calib_window >= 2 && options.window >= 2,
               "--calib-tokens must not be negative, --calib-window and --window at least 2");
  gsq::require(options.stop_after >= 0, "--stop-after must not be negative");
  return options;
}

std::vector<gsq::TokenId> read_tokens(const std::string& path, bool byte_tokens) {
  return byte_tokens ? gsq::read_byte_tokens(path) : gsq::read_token_file(path);
}

nlohmann::json evaluation_json(const gsq::EvaluationResult& result) {
  return {{"nll", result.mean_nll()}, {"ppl", result.perplexity()}, {"bits_per_token", result.bits_per_token()},
          {"tokens", result.predictions}, {"windows", result.windows}, {"window", result.window}};
}

nlohmann::json layer_json(const gsq::LayerResult& layer) {
  nlohmann::json linears = nlohmann::json::array();
  for (const gsq::LinearResult& linear : layer.linears) {
    nlohmann::json entry = {{"name", linear.name}, {"rel_error", linear.error}, {"seconds", linear.seconds}};
    if (linear.init_error >= 0) entry["init_rel_error"] = linear.init_error;
    linears.push_back(entry);
  }
  nlohmann::json result = {{"layer", layer.layer}, {"seconds", layer.seconds}, {"linears", linears}};
  if (layer.block_error >= 0) result.update({{"block_rel_error", layer.block_error}, {"block_init_rel_error", layer.block_init_error}});
  return result;
}

/// The settings a run's result depends on: a resumed run must have the same.
nlohmann::json run_settings(const Options& options, gsq::Method method) {
  const gsq::ModelQuantizationConfig& c = options.config;
  return {{"model", fs::absolute(options.model).string()}, {"method", gsq::method_name(method)},
          {"bits", options.grid.spelling()}, {"group", options.grouping.spelling()},
          {"objective", c.mlp_objective == gsq::MlpObjective::block ? "block" : "layer"},
          {"attention", c.gsq_attention ? "gsq" : "gptq"}, {"init", gsq::method_name(c.gsq_init)},
          {"steps", c.train.steps}, {"tau", {c.train.anneal.tau_start, c.train.anneal.tau_end}},
          {"kappa", {c.train.anneal.kappa_start, c.train.anneal.kappa_end}},
          {"lr", {c.train.logits.learning_rate, c.train.scales.learning_rate}}, {"batches", c.block_batches},
          {"scale_search", gsq::scale_fit_name(c.gptq.scale_fit)}, {"percdamp", c.gptq.percdamp},
          {"act_order", c.gptq.act_order}, {"calib", fs::absolute(options.calib).string()},
          {"calib_tokens", options.calib_tokens}, {"calib_window", options.calib_window},
          {"byte_tokens", options.byte_tokens}, {"seed", c.train.seed}};
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream stream(path);
  gsq::require(static_cast<bool>(stream), "cannot read " + path);
  try {
    return nlohmann::json::parse(stream);
  } catch (const nlohmann::json::exception& error) {
    throw gsq::Error(path + " is not valid JSON: " + error.what());
  }
}

/// Opens (or, with --resume, reopens) the directory where completed layers are kept.
void prepare_partial(const std::string& partial, const nlohmann::json& settings, bool resume) {
  const std::string settings_path = partial + "/settings.json";
  if (fs::exists(partial)) {
    gsq::require(resume, "a run into this output stopped part-way (" + partial +
                             " exists): add --resume to continue it, or delete that directory");
    gsq::require(read_json(settings_path) == settings,
                 "--resume: the settings differ from those of the stopped run in " + partial +
                     " (compare with its settings.json)");
    return;
  }
  fs::create_directories(partial);
  gsq::driver::write_text_atomically(settings_path, settings.dump(2) + "\n");
}

struct ProgressPrinter {
  bool quiet;
  Clock::time_point last = Clock::now();
  void operator()(long layer, const std::string& part, const gsq::StepReport& step) {
    if (quiet || (seconds_since(last) < 5 && step.step + 1 < step.steps)) return;
    last = Clock::now();
    const double eta = step.elapsed_seconds / (step.step + 1) * (step.steps - step.step - 1);
    std::fprintf(stderr, "  layer %ld %s: step %ld/%ld, loss %.5f, %.0f s, ETA %.0f s\n", layer, part.c_str(),
                 step.step + 1, step.steps, step.loss, step.elapsed_seconds, eta);
  }
};

/// Quantizes every decoder layer of `model` with `method`, keeping each completed layer in
/// `partial`; returns the per-layer reports and the quantized tensors.
template <class Grid, class Grouping>
nlohmann::json quantize_layers(gsq::LlamaModel& model, const std::vector<gsq::TokenId>& calibration, gsq::Method method,
                               const Options& options, const std::string& partial, gsq::SafetensorsWriter& packed) {
  gsq::ModelQuantizationConfig config = options.config;
  config.method = method;
  gsq::SequentialQuantizer<Grid, Grouping> quantizer(model, config);
  if (!options.dump_layers.empty()) {
    fs::create_directories(options.dump_layers);
    quantizer.observe_linears([&](const std::string& name, const gsq::Matrix<float>& weight, const gsq::Matrix<float>& hessian) {
      gsq::SafetensorsWriter writer;
      writer.add("W", weight);
      writer.add("H", hessian);
      writer.set_metadata("tensor", name);
      writer.write(options.dump_layers + "/" + name + ".safetensors");
    });
  }
  const auto metadata = gsq::packed_metadata(gsq::grid_spec<Grid>(), Grouping::group_width(model.config().hidden_size));
  for (const auto& [key, value] : metadata) packed.set_metadata(key, value);

  nlohmann::json layers = nlohmann::json::array();
  gsq::HiddenStates hidden = model.embed(calibration, options.calib_window);
  const long count = model.config().layers;
  const Clock::time_point start = Clock::now();
  ProgressPrinter progress{options.quiet};
  for (long layer = 0; layer < count; ++layer) {
    const std::string path = partial + "/layer-" + std::to_string(layer) + ".safetensors";
    std::vector<std::pair<std::string, gsq::QuantizedTensor>> tensors;
    nlohmann::json report;
    if (fs::exists(path)) {  // completed before an interruption: rebuild it exactly
      const gsq::SafetensorsFile file = gsq::SafetensorsFile::open(path);
      for (const std::string& linear : gsq::LlamaModel::linear_names()) {
        const gsq::Matrix<float> weight = model.linear_weight(layer, linear);
        const std::string name = gsq::LlamaModel::tensor_name(layer, linear);
        gsq::QuantizedTensor tensor = gsq::read_packed(file, name, gsq::grid_spec<Grid>(), weight.rows, weight.cols,
                                                       Grouping::group_width(static_cast<int>(weight.cols)));
        model.set_linear_weight(layer, linear, gsq::store_result(tensor, config.weight_dtype));
        tensors.emplace_back(name, std::move(tensor));
      }
      report = nlohmann::json::parse(file.metadata().at("report"));
      hidden = model.decoder_layer(layer, hidden);
      if (!options.quiet) std::fprintf(stderr, "layer %ld/%ld: resumed from %s\n", layer + 1, count, path.c_str());
    } else {
      gsq::LayerResult result = quantizer.quantize_layer(layer, hidden, progress);
      report = layer_json(result);
      gsq::SafetensorsWriter writer;
      for (gsq::LinearResult& linear : result.linears) {
        gsq::add_packed(writer, linear.name, linear.tensor);
        tensors.emplace_back(linear.name, std::move(linear.tensor));
      }
      writer.set_metadata("report", report.dump());
      writer.write(path);
      if (!options.quiet) {
        std::string errors;
        for (const auto& linear : report["linears"]) {
          char text[32];
          std::snprintf(text, sizeof text, " %.4f", linear["rel_error"].get<double>());
          errors += text;
        }
        const double eta = seconds_since(start) / (layer + 1) * (count - layer - 1);
        std::fprintf(stderr, "layer %ld/%ld: rel. errors q k v o gate up down%s", layer + 1, count, errors.c_str());
        if (result.block_error >= 0) std::fprintf(stderr, ", block %.4f (start %.4f)", result.block_error, result.block_init_error);
        std::fprintf(stderr, ", %.1f s, ETA %.0f s\n", result.seconds, eta);
      }
    }
    for (const auto& [name, tensor] : tensors) gsq::add_packed(packed, name, tensor);
    layers.push_back(report);
    if (options.stop_after > 0 && layer + 1 == options.stop_after && layer + 1 < count) throw Stopped{};
  }
  return layers;
}

struct MethodRun {
  nlohmann::json manifest;
  double bpp = 0;
};

MethodRun run_method(gsq::Method method, const Options& options, const std::vector<gsq::TokenId>& calibration,
                     const std::vector<gsq::TokenId>& evaluation, const std::string& out) {
  const Clock::time_point start = Clock::now();
  const gsq::Checkpoint source = gsq::Checkpoint::open(options.model);
  gsq::LlamaModel model = gsq::LlamaModel::load(options.model);
  Options settings = options;
  settings.config.weight_dtype = source.info(gsq::LlamaModel::tensor_name(0, gsq::LlamaModel::linear_names()[0])).dtype;
  const std::string partial = out + ".partial";
  prepare_partial(partial, run_settings(options, method), options.resume);
  if (!options.quiet) std::fprintf(stderr, "%s: quantizing %s into %s\n", gsq::method_name(method), options.model.c_str(), out.c_str());

  gsq::SafetensorsWriter packed;
  packed.set_metadata("method", gsq::method_name(method));
  const auto [layers, bpp] = gsq::dispatch(
      [&](auto grid, auto grouping) {
        using Grid = gsq::type_of<decltype(grid)>;
        using Grouping = gsq::type_of<decltype(grouping)>;
        nlohmann::json reports = quantize_layers<Grid, Grouping>(model, calibration, method, settings, partial, packed);
        const long width = Grouping::group_width(static_cast<int>(model.config().hidden_size));
        return std::make_pair(reports, gsq::QuantizedTensor{gsq::grid_spec<Grid>(), 1, width, width, {}, {}}.bits_per_parameter());
      },
      options.grid, options.grouping);
  const double quantize_seconds = seconds_since(start);

  nlohmann::json manifest = {{"method", gsq::method_name(method)}, {"bits", options.grid.spelling()},
                             {"group", options.grouping.spelling()}, {"bpp", bpp}, {"settings", run_settings(options, method)},
                             {"layers", layers}, {"quantize_seconds", quantize_seconds}};
  if (!evaluation.empty()) {
    const Clock::time_point eval_start = Clock::now();
    gsq::EvaluationOptions eval_options;
    eval_options.window = options.window;
    manifest["evaluation"] = evaluation_json(gsq::evaluate(model, evaluation, eval_options));
    manifest["evaluation"]["seconds"] = seconds_since(eval_start);
  }

  const std::string staged = out + ".writing-" + std::to_string(::getpid());
  fs::remove_all(staged);
  gsq::write_checkpoint(model, options.model, source, staged);
  packed.write(staged + "/quantized.safetensors");
  gsq::driver::write_text_atomically(staged + "/manifest.json", manifest.dump(2) + "\n");
  gsq::replace_directory(staged, out);
  fs::remove_all(partial);
  return {manifest, bpp};
}

void print_row(const std::string& method, const std::string& bits, const std::string& group, double bpp,
               const nlohmann::json& evaluation, double seconds) {
  const bool evaluated = evaluation.is_object();
  std::printf("%-8s %-8s %-12s %7.3f %12s %10s %9.1f\n", method.c_str(), bits.c_str(), group.c_str(), bpp,
              evaluated ? std::to_string(evaluation["bits_per_token"].get<double>()).substr(0, 7).c_str() : "-",
              evaluated ? std::to_string(evaluation["ppl"].get<double>()).substr(0, 7).c_str() : "-", seconds);
}

int run(const Options& options) {
  if (options.threads > 0) gsq::set_host_threads(options.threads);
  std::vector<gsq::TokenId> calibration = read_tokens(options.calib, options.byte_tokens);
  if (options.calib_tokens > 0 && static_cast<long>(calibration.size()) > options.calib_tokens)
    calibration.resize(static_cast<std::size_t>(options.calib_tokens));
  calibration.resize(calibration.size() / static_cast<std::size_t>(options.calib_window) * static_cast<std::size_t>(options.calib_window));
  gsq::require(!calibration.empty(), "the calibration set holds fewer than --calib-window = " +
                                         std::to_string(options.calib_window) + " tokens");
  const std::vector<gsq::TokenId> evaluation = options.eval.empty() ? std::vector<gsq::TokenId>{} : read_tokens(options.eval, options.byte_tokens);

  nlohmann::json baseline;
  const Clock::time_point baseline_start = Clock::now();
  if (!evaluation.empty()) {
    gsq::EvaluationOptions eval_options;
    eval_options.window = options.window;
    baseline = evaluation_json(gsq::evaluate(gsq::LlamaModel::load(options.model), evaluation, eval_options));
  }
  const double baseline_seconds = seconds_since(baseline_start);

  nlohmann::json runs = nlohmann::json::array();
  std::vector<double> bpps;
  if (options.methods.size() > 1) fs::create_directories(options.out);
  for (gsq::Method method : options.methods) {
    const std::string out = options.methods.size() > 1 ? options.out + "/" + gsq::method_name(method) : options.out;
    MethodRun run = run_method(method, options, calibration, evaluation, out);
    runs.push_back(run.manifest);
    bpps.push_back(run.bpp);
  }

  std::printf("model %s: %zu calibration tokens, %zu evaluation tokens (window %ld)\n", options.model.c_str(),
              calibration.size(), evaluation.size(), options.window);
  std::printf("%-8s %-8s %-12s %7s %12s %10s %9s\n", "method", "bits", "group", "bpp",
              options.byte_tokens ? "bits/byte" : "bits/token", "ppl", "seconds");
  if (!evaluation.empty()) print_row("original", "16", "-", 16, baseline, baseline_seconds);
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const nlohmann::json& run = runs[i];
    print_row(run["method"], run["bits"], run["group"], bpps[i], run.contains("evaluation") ? run["evaluation"] : nlohmann::json(),
              run["quantize_seconds"].get<double>());
  }
  if (!options.json.empty()) gsq::driver::write_text_atomically(options.json, nlohmann::json{{"baseline", baseline}, {"runs", runs}}.dump(2) + "\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return gsq::driver::run("quantize_model", [&] {
    try {
      return run(parse_options(argc, argv));
    } catch (const Stopped&) {
      std::fprintf(stderr, "quantize_model: stopped after --stop-after layers; continue with --resume\n");
      return 3;
    }
  });
}
