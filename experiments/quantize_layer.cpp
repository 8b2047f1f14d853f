// experiments/quantize_layer.cpp -- quantizes one linear layer with round-to-nearest (RTN) and
// with GSQ started from RTN, and compares them on the relative Hessian error (DESIGN section 4).
//
//   quantize_layer                                  synthetic 512 x 512 layer, 2 bits, g128
//   quantize_layer --bits 3 --group 64 --steps 200 --json result.json
//   quantize_layer --help                           every flag, with its default
//
// The run-time policy names (--bits, --group, --estimator, --schedule, --optimizer) select
// compile-time policies through gsq/dispatch.hpp. Where the layer comes from (load_layer) and
// which methods run on it (run_methods) are separate, so file input and GPTQ slot in beside.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include <gsq/dispatch.hpp>
#include <gsq/gsq.hpp>

namespace po = boost::program_options;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* program_name = "quantize_layer";

using GridChoice = gsq::Choice<gsq::GridPolicies, gsq::ByBits>;
using GroupingChoice = gsq::Choice<gsq::GroupingPolicies, gsq::ByGroupSize>;
using ScheduleChoice = gsq::Choice<gsq::SchedulePolicies>;
using EstimatorChoice = gsq::Choice<gsq::EstimatorPolicies>;
using OptimizerChoice = gsq::Choice<gsq::OptimizerPolicies>;

/// The default synthetic layer is smaller than gsq's (1024 x 1024, 2048 tokens) so that the
/// default run of 640 steps takes seconds, not minutes, on a 2-core machine.
gsq::SyntheticLayerConfig default_synthetic_layer() {
  gsq::SyntheticLayerConfig config;
  config.rows = 512;
  config.cols = 512;
  config.tokens = 1024;
  return config;
}

struct Options {
  gsq::SyntheticLayerConfig synthetic = default_synthetic_layer();
  GridChoice grid{"--bits", "2"};
  GroupingChoice grouping{"--group", "128"};
  ScheduleChoice schedule{"--schedule", "linear"};
  EstimatorChoice estimator{"--estimator", "relaxed"};
  OptimizerChoice optimizer{"--optimizer", "lion"};
  gsq::TrainConfig train;
  std::string lr_decay = "cosine";
  int threads = 0;
  std::string json_path;
  bool quiet = false;
};

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

template <class Choice>
std::string alternatives() {
  std::string text;
  const std::vector<std::string> spellings = Choice::spellings();
  for (std::size_t i = 0; i < spellings.size(); ++i)
    text += (i == 0 ? "" : i + 1 == spellings.size() ? " or " : ", ") + spellings[i];
  return text;
}

/// Fails now, not after the run, when `path` cannot be created because its directory is missing.
void require_writable_location(const std::string& path) {
  const std::filesystem::path directory = std::filesystem::absolute(path).parent_path();
  gsq::require(std::filesystem::is_directory(directory),
               "--json " + path + ": the directory " + directory.string() + " does not exist");
}

/// Parses the command line; std::nullopt when --help was asked for (and printed).
std::optional<Options> parse_options(int argc, char** argv) {
  Options options;
  std::string bits = options.grid.key(), group = options.grouping.key(), schedule = options.schedule.key(),
              estimator = options.estimator.key(), optimizer = options.optimizer.key();
  long layer_seed = 1, seed = 0;
  gsq::TrainConfig& train = options.train;
  po::options_description layer("Layer (synthetic LLM-like: heavy-tailed weights, correlated inputs with outlier channels)");
  layer.add_options()
      ("rows", po::value(&options.synthetic.rows)->default_value(options.synthetic.rows)->value_name("N"), "output rows of the layer")
      ("cols", po::value(&options.synthetic.cols)->default_value(options.synthetic.cols)->value_name("N"), "input columns of the layer")
      ("tokens", po::value(&options.synthetic.tokens)->default_value(options.synthetic.tokens)->value_name("N"),
       "calibration tokens forming the Hessian H = X^T X / tokens")
      ("layer-seed", po::value(&layer_seed)->default_value(layer_seed)->value_name("N"), "seed of the synthetic layer");
  po::options_description format("Quantized format");
  format.add_options()
      ("bits", po::value(&bits)->default_value(bits)->value_name("BITS"), ("grid: " + alternatives<GridChoice>()).c_str())
      ("group", po::value(&group)->default_value(group)->value_name("SIZE"),
       ("input columns sharing one scale: " + alternatives<GroupingChoice>() + " (0 = per-channel)").c_str());
  po::options_description gsq_options("GSQ (defaults: the reference's, DESIGN section 3)");
  gsq_options.add_options()
      ("steps", po::value(&train.steps)->default_value(train.steps)->value_name("N"), "optimizer steps")
      ("seed", po::value(&seed)->default_value(seed)->value_name("N"), "seed of the Gumbel noise and the logit initialisation")
      ("estimator", po::value(&estimator)->default_value(estimator)->value_name("NAME"),
       ("gradient estimator: " + alternatives<EstimatorChoice>()).c_str())
      ("schedule", po::value(&schedule)->default_value(schedule)->value_name("NAME"),
       ("shape of the temperature and logit-scale annealing: " + alternatives<ScheduleChoice>()).c_str())
      ("tau-start", po::value(&train.anneal.tau_start)->default_value(train.anneal.tau_start, "2")->value_name("X"),
       "Gumbel-softmax temperature at the first step")
      ("tau-end", po::value(&train.anneal.tau_end)->default_value(train.anneal.tau_end, "0.05")->value_name("X"),
       "temperature at the last step")
      ("kappa-start", po::value(&train.anneal.kappa_start)->default_value(train.anneal.kappa_start, "100")->value_name("X"),
       "logit scale at the first step")
      ("kappa-end", po::value(&train.anneal.kappa_end)->default_value(train.anneal.kappa_end, "500")->value_name("X"),
       "logit scale at the last step")
      ("optimizer", po::value(&optimizer)->default_value(optimizer)->value_name("NAME"), ("optimizer: " + alternatives<OptimizerChoice>()).c_str())
      ("lr-logits", po::value(&train.logits.learning_rate)->default_value(train.logits.learning_rate, "1e-4")->value_name("X"),
       "peak learning rate of the logits")
      ("weight-decay", po::value(&train.logits.weight_decay)->default_value(train.logits.weight_decay, "1")->value_name("X"),
       "decoupled weight decay of the logits (the scales have none)")
      ("lr-scales", po::value(&train.scales.learning_rate)->default_value(train.scales.learning_rate, "5e-5")->value_name("X"),
       "peak learning rate of the scales")
      ("lr-decay", po::value(&options.lr_decay)->default_value(options.lr_decay)->value_name("NAME"),
       "learning-rate decay after warm-up: cosine, linear or constant")
      ("lr-floor", po::value(&train.learning_rate.floor)->default_value(train.learning_rate.floor, "0.1")->value_name("X"),
       "final learning rate as a fraction of the peak")
      ("warmup", po::value(&train.learning_rate.warmup_steps)->default_value(train.learning_rate.warmup_steps)->value_name("N"),
       "steps of linear learning-rate warm-up");
  po::options_description run("Run");
  run.add_options()
      ("threads", po::value(&options.threads)->default_value(options.threads)->value_name("N"), "host threads (0: OpenMP's default)")
      ("json", po::value(&options.json_path)->value_name("FILE"), "also write the results to FILE as a JSON array, one record per method")
      ("quiet", po::bool_switch(&options.quiet), "no progress lines on stderr")
      ("help", "print this help and exit");
  po::options_description all;
  all.add(layer).add(format).add(gsq_options).add(run);

  po::variables_map values;
  const po::positional_options_description no_positional;  // so that a stray word is an error
  po::store(po::command_line_parser(argc, argv).options(all).positional(no_positional).run(), values);
  if (values.count("help")) {
    std::cout << "Usage: " << program_name << " [options]\n\n"
              << "Quantizes one linear layer with round-to-nearest (RTN) and with GSQ started from RTN,\n"
              << "and prints for each method its relative Hessian error tr(dW H dW^T) / tr(W H W^T),\n"
              << "bits per parameter (16-bit scales) and wall time. Progress goes to stderr.\n"
              << all << "\n";
    return std::nullopt;
  }
  po::notify(values);

  gsq::require(layer_seed >= 0 && seed >= 0, "seeds must be non-negative");
  gsq::require(options.threads >= 0, "--threads must be non-negative, got " + std::to_string(options.threads));
  options.synthetic.seed = static_cast<std::uint64_t>(layer_seed);
  train.seed = static_cast<std::uint64_t>(seed);
  train.learning_rate.decay = gsq::parse_decay(options.lr_decay);
  options.grid = GridChoice("--bits", bits);
  options.grouping = GroupingChoice("--group", group);
  options.schedule = ScheduleChoice("--schedule", schedule);
  options.estimator = EstimatorChoice("--estimator", estimator);
  options.optimizer = OptimizerChoice("--optimizer", optimizer);
  options.grid.validate();
  options.grouping.validate();
  options.schedule.validate();
  options.estimator.validate();
  options.optimizer.validate();
  train.validate();
  if (!options.json_path.empty()) require_writable_location(options.json_path);
  return options;
}

/// One linear layer and the objective every method is measured on.
struct Layer {
  std::string description;
  gsq::Matrix<float> weight;
  gsq::HessianObjective<> objective;
};

Layer load_layer(const Options& options) {
  const gsq::SyntheticLayerConfig& config = options.synthetic;
  gsq::require(config.rows > 0 && config.cols > 0 && config.tokens > 0,
               "--rows, --cols and --tokens must be positive");
  gsq::SyntheticLayer synthetic = gsq::make_synthetic_layer(config);
  gsq::HessianObjective<> objective = gsq::HessianObjective<>::from_inputs(synthetic.weight, synthetic.inputs);
  return {"synthetic " + std::to_string(config.rows) + " x " + std::to_string(config.cols) + ", " +
              std::to_string(config.tokens) + " calibration tokens, seed " + std::to_string(config.seed),
          std::move(synthetic.weight), std::move(objective)};
}

/// What one method produced, and the numbers it is compared on.
struct MethodResult {
  std::string method;
  gsq::QuantizedTensor quantized;
  double rel_error;
  double seconds;
  nlohmann::json details;  // method-specific fields of the JSON record
};

MethodResult run_rtn(Layer& layer, const Options& options) {
  const gsq::GridSpec grid = options.grid.visit([](auto tag) { return gsq::grid_spec<gsq::type_of<decltype(tag)>>(); });
  const long group_width = options.grouping.visit([&](auto tag) {
    using Grouping = gsq::type_of<decltype(tag)>;
    Grouping::validate(static_cast<int>(layer.weight.cols));
    return static_cast<long>(Grouping::group_width(static_cast<int>(layer.weight.cols)));
  });
  const Clock::time_point start = Clock::now();
  gsq::QuantizedTensor quantized = gsq::round_to_nearest(layer.weight, grid, group_width);
  const double seconds = seconds_since(start);
  const double rel_error = layer.objective.relative_error(quantized.dequantize());
  return {"rtn", std::move(quantized), rel_error, seconds, nlohmann::json::object()};
}

/// Prints a progress line on stderr every ~5% of the steps (at most one a second), at least
/// every 10 seconds, and at the last step.
class ProgressPrinter {
 public:
  void operator()(const gsq::StepReport& report) {
    const long done = report.step + 1;
    const bool last = done == report.steps;
    const bool five_percent = (done - printed_step_) * 20 >= report.steps;
    const double since_print = report.elapsed_seconds - printed_seconds_;
    if (!last && !(five_percent && since_print >= 1.0) && since_print < 10.0) return;
    const double eta = report.elapsed_seconds / static_cast<double>(done) * static_cast<double>(report.steps - done);
    std::fprintf(stderr, "%s: gsq step %ld/%ld (%3.0f%%)  loss %.6g  tau %.3g  kappa %.4g  elapsed %.1f s  eta %.1f s\n",
                 program_name, done, report.steps, 100.0 * static_cast<double>(done) / static_cast<double>(report.steps),
                 report.loss, report.temperature, report.logit_scale, report.elapsed_seconds, eta);
    printed_step_ = done;
    printed_seconds_ = report.elapsed_seconds;
  }

 private:
  long printed_step_ = 0;
  double printed_seconds_ = 0;
};

/// The policy-dependent part of a GSQ run, kept small: it is instantiated for every policy
/// combination the driver offers, and compile time grows with what it holds.
struct GsqRun {
  gsq::QuantizedTensor quantized;
  gsq::TrainReport report;
};

template <class Quantizer, class Optimizer>
GsqRun train_gsq(gsq::HessianObjective<>& objective, const gsq::QuantizedTensor& start, const gsq::TrainConfig& config,
                 const std::function<void(const gsq::StepReport&)>& on_step) {
  gsq::LogitInit init;
  init.seed = config.seed;
  Quantizer quantizer(start, init);
  gsq::TrainReport report = gsq::train<Optimizer>(quantizer, objective, config, on_step);
  return {quantizer.result(), std::move(report)};
}

/// GSQ started from `start`, with the policies the options name.
MethodResult run_gsq(Layer& layer, const MethodResult& start, const Options& options) {
  const gsq::TrainConfig& config = options.train;
  std::function<void(const gsq::StepReport&)> on_step;
  if (!options.quiet) on_step = ProgressPrinter{};
  const Clock::time_point started = Clock::now();
  GsqRun run = gsq::dispatch(
      [&](auto grid, auto grouping, auto schedule, auto estimator, auto optimizer) {
        using Quantizer = gsq::Quantizer<gsq::type_of<decltype(grid)>, gsq::type_of<decltype(grouping)>,
                                         gsq::type_of<decltype(schedule)>, gsq::type_of<decltype(estimator)>>;
        return train_gsq<Quantizer, gsq::type_of<decltype(optimizer)>>(layer.objective, start.quantized, config, on_step);
      },
      options.grid, options.grouping, options.schedule, options.estimator, options.optimizer);
  const double seconds = seconds_since(started);
  const double rel_error = layer.objective.relative_error(run.quantized.dequantize());
  nlohmann::json details = {
      {"init", start.method},
      {"init_rel_error", start.rel_error},
      {"steps", config.steps},
      {"step_seconds_median", run.report.median_step_seconds()},
      {"final_relaxed_loss", run.report.losses.back()},
      {"estimator", options.estimator.spelling()},
      {"schedule", options.schedule.spelling()},
      {"optimizer", options.optimizer.spelling()},
      {"seed", config.seed},
      {"tau_start", config.anneal.tau_start},
      {"tau_end", config.anneal.tau_end},
      {"kappa_start", config.anneal.kappa_start},
      {"kappa_end", config.anneal.kappa_end},
      {"lr_logits", config.logits.learning_rate},
      {"weight_decay", config.logits.weight_decay},
      {"lr_scales", config.scales.learning_rate},
      {"lr_decay", options.lr_decay},
      {"lr_floor", config.learning_rate.floor},
      {"warmup", config.learning_rate.warmup_steps},
  };
  return {"gsq", std::move(run.quantized), rel_error, seconds, std::move(details)};
}

std::vector<MethodResult> run_methods(Layer& layer, const Options& options) {
  std::vector<MethodResult> results;
  results.push_back(run_rtn(layer, options));
  results.push_back(run_gsq(layer, results.front(), options));
  return results;
}

void print_table(const Layer& layer, const Options& options, const std::vector<MethodResult>& results) {
  std::printf("layer: %s\n", layer.description.c_str());
  std::printf("%-8s %-8s %-12s %-12s %-8s %10s\n", "method", "bits", "group", "rel. error", "bpp", "seconds");
  for (const MethodResult& result : results)
    std::printf("%-8s %-8s %-12s %-12.6g %-8.4g %10.3f\n", result.method.c_str(), options.grid.spelling().c_str(),
                options.grouping.spelling().c_str(), result.rel_error, result.quantized.bits_per_parameter(),
                result.seconds);
}

nlohmann::json json_records(const Layer& layer, const Options& options, const std::vector<MethodResult>& results) {
  const int group = options.grouping.visit([](auto tag) { return gsq::type_of<decltype(tag)>::size; });
  nlohmann::json records = nlohmann::json::array();
  for (const MethodResult& result : results) {
    const gsq::QuantizedTensor& quantized = result.quantized;
    nlohmann::json record = {
        {"method", result.method},
        {"grid", quantized.grid.name},
        {"bits", quantized.grid.code_bits},
        {"group", group},  // 0: per-channel, as --group spells it
        {"group_width", quantized.group_width},
        {"rel_error", result.rel_error},
        {"bpp", quantized.bits_per_parameter()},
        {"seconds", result.seconds},
        {"layer", layer.description},
        {"rows", quantized.rows},
        {"cols", quantized.cols},
        {"threads", options.threads},
    };
    record.update(result.details);
    records.push_back(std::move(record));
  }
  return records;
}

/// Writes `text` to `path` through a temporary file in the same directory and a rename, so a
/// reader never sees a half-written file.
void write_file_atomically(const std::string& path, const std::string& text) {
  const std::string temporary = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    gsq::require(static_cast<bool>(out), "cannot write " + path + " (opening " + temporary + " failed)");
    out << text;
    out.close();
    if (!out) {
      std::remove(temporary.c_str());
      throw gsq::Error("cannot write " + path + " (writing " + temporary + " failed)");
    }
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    std::remove(temporary.c_str());
    throw gsq::Error("cannot write " + path + " (renaming " + temporary + " to it failed)");
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::optional<Options> options = parse_options(argc, argv);
    if (!options) return 0;
    gsq::set_host_threads(options->threads);
    Layer layer = load_layer(*options);
    const std::vector<MethodResult> results = run_methods(layer, *options);
    print_table(layer, *options, results);
    if (!options->json_path.empty())
      write_file_atomically(options->json_path, json_records(layer, *options, results).dump(2) + "\n");
    return 0;
  } catch (const gsq::Error& error) {
    std::fprintf(stderr, "%s: error: %s\n", program_name, error.what());
    return 2;
  } catch (const po::error& error) {
    std::fprintf(stderr, "%s: error: %s (see --help)\n", program_name, error.what());
    return 2;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "%s: error: %s\n", program_name, error.what());
    return 1;
  }
}
