// experiments/sweep.cpp -- hyper-parameter sweeps over compile-time quantizer variants.
//
//   sweep --list                                              the variants compiled in
//   sweep --variants '*-int2' --tau-end 0.05,0.1,0.2 --seed 0:2:1 --out results/tau
//   sweep --variants all --layers layers/ --steps 100:700:200 --config sweep.cfg --threads 8
//   sweep --summary --out results/tau                         the table of an existing sweep
//   sweep --help                                              every flag, with its default
//
// Every combination of the hyper-parameter values runs with every chosen variant on every layer;
// each run appends one record to PREFIX.csv and PREFIX.jsonl as it completes, and a rerun with
// the same --out skips the runs already recorded (docs/sweeps.md). The reusable parts (variants,
// value lists, records, the result store, the summary) are in sweep_store.hpp beside it.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/program_options.hpp>

#include "driver.hpp"
#include <gsq/policy/dispatch.hpp>
#include "sweep_store.hpp"
#include <gsq/gsq.hpp>
#include <gsq/init/gptq.hpp>

namespace po = boost::program_options;
namespace fs = std::filesystem;
using gsq::Clock;
using gsq::seconds_since;

namespace {

constexpr const char* program_name = "sweep";

/// The variants this driver compiles in: every estimator x schedule x grid gsq ships (36, each
/// instantiated with both optimizers: about 50 s of g++ -O3). A further variant is one more line.
using Variants = gsq::ConcatLists<
    gsq::VariantProduct<gsq::EstimatorPolicies, gsq::SchedulePolicies, gsq::GridPolicies>
    // , gsq::TypeList<gsq::SweepVariant<gsq::Int<2>, gsq::Relaxed, MyAnneal>>   (named relaxed-my-int2)
    >;
/// Group sizes a run may use (--group). Each one multiplies the instantiations of gsq::train.
using Groupings = gsq::TypeList<gsq::GroupSize<128>>;

using VariantChoice = gsq::Choice<Variants, gsq::ByVariantName>;
using GroupingChoice = gsq::Choice<Groupings, gsq::ByGroupSize>;
using OptimizerChoice = gsq::Choice<gsq::OptimizerPolicies>;

struct Options {
  std::vector<std::string> variants;
  gsq::SweepGrid grid;
  std::string layers_directory;
  long synthetic_layers = 1;
  gsq::SyntheticLayerConfig synthetic;
  std::string out = "sweep";
  int threads = 0;
  bool list = false;
  bool summary = false;
  bool quiet = false;
};

/// The hyper-parameters of `point` that the grid sweeps (more than one value), as flag=value.
std::string swept_values(const gsq::SweepPoint& point, const gsq::SweepGrid& grid) {
  std::string text;
  gsq::for_each_axis(
      [&](const char* flag, const char*, const auto& value, const auto& values) {
        if (values.size() > 1) text += std::string(" ") + flag + "=" + gsq::format_list(std::vector{value});
      },
      point, grid);
  return text;
}

/// Checks every value of the grid before anything runs, so a typo fails in a second, not an hour in.
void validate_grid(const gsq::SweepGrid& grid) {
  for (const std::string& optimizer : grid.optimizer) OptimizerChoice("--optimizer", optimizer).validate();
  for (const std::string& init : grid.init)
    gsq::require(init == "rtn" || init == "gptq", "invalid --init '" + init + "': expected one of rtn, gptq");
  for (const long group : grid.group) GroupingChoice("--group", std::to_string(group)).validate();
  for (const long seed : grid.seed) gsq::require(seed >= 0, "--seed: seeds must be non-negative, got " + std::to_string(seed));
  for (const gsq::SweepPoint& point : gsq::grid_points(grid)) try {
      gsq::train_config(point).validate();
    } catch (const gsq::Error& error) {
      const std::string combination = swept_values(point, grid);
      throw gsq::Error(std::string(error.what()) + (combination.empty() ? "" : " at" + combination));
    }
}

/// Parses the command line (and --config); std::nullopt when --help was asked for (and printed).
std::optional<Options> parse_options(int argc, char** argv) {
  Options options;
  options.synthetic.rows = options.synthetic.cols = 256;
  options.synthetic.tokens = 1024;
  std::string variants = "relaxed-linear-int2";
  po::options_description variant_options("Variants (compile-time policy combinations, named estimator-schedule-grid)");
  variant_options.add_options()
      ("variants", po::value(&variants)->default_value(variants)->value_name("LIST"),
       "comma-separated names, globs such as '*-int2' or 'relaxed-*', or all")
      ("list", po::bool_switch(&options.list), "print the variants (those --variants selects, if given) and exit");
  po::options_description layer_options("Layers (every run runs on each)");
  layer_options.add_options()
      ("layers", po::value(&options.layers_directory)->value_name("DIR"),
       "every *.safetensors file in DIR, each holding W (out x in) and H = X^T X / N (in x in); "
       "the layer is named after the file. Default: synthetic layers")
      ("synthetic", po::value(&options.synthetic_layers)->default_value(options.synthetic_layers)->value_name("N"),
       "without --layers: N synthetic LLM-like layers, seeds 1..N")
      ("rows", po::value(&options.synthetic.rows)->default_value(options.synthetic.rows)->value_name("N"), "output rows of a synthetic layer")
      ("cols", po::value(&options.synthetic.cols)->default_value(options.synthetic.cols)->value_name("N"), "input columns of a synthetic layer")
      ("tokens", po::value(&options.synthetic.tokens)->default_value(options.synthetic.tokens)->value_name("N"),
       "calibration tokens of a synthetic layer's Hessian");
  po::options_description grid_options(
      "Hyper-parameters: each takes a list (0.05,0.1,0.2) or a range start:stop:step, stop included\n"
      "when it lands on it (100:700:200 is 100,300,500,700); every combination runs");
  std::map<std::string, std::string> axis_texts;
  gsq::for_each_axis(
      [&](const char* flag, const char* description, const auto& defaults) {
        axis_texts[flag] = gsq::format_list(defaults);
        const std::string text = std::string(description) +
                                 (std::string(flag) == "group" ? " (compiled in: " + gsq::format_list(GroupingChoice::spellings()) + ")" : "");
        grid_options.add_options()(flag, po::value(&axis_texts[flag])->default_value(axis_texts[flag])->value_name("LIST"),
                                   text.c_str());
      },
      options.grid);
  po::options_description run_options("Run");
  run_options.add_options()
      ("config", po::value<std::string>()->value_name("FILE"),
       "read options from FILE too, one 'name = value' a line (tau-end = 0.05,0.1); the command line wins")
      ("out", po::value(&options.out)->default_value(options.out)->value_name("PREFIX"),
       "append one record per run to PREFIX.csv and PREFIX.jsonl; runs already in PREFIX.csv are skipped")
      ("threads", po::value(&options.threads)->default_value(options.threads)->value_name("N"),
       "runs in parallel, each on one thread (0: one per hardware thread); results do not depend on it")
      ("summary", po::bool_switch(&options.summary), "print the summary of PREFIX.csv and exit (runs nothing)")
      ("quiet", po::bool_switch(&options.quiet), "no progress lines on stderr")
      ("help", "print this help and exit");
  po::options_description all;
  all.add(variant_options).add(layer_options).add(grid_options).add(run_options);

  po::variables_map values;
  const po::positional_options_description no_positional;  // so that a stray word is an error
  po::store(po::command_line_parser(argc, argv).options(all).positional(no_positional).run(), values);
  if (values.count("help")) {
    std::cout << "Usage: " << program_name << " [options]\n\n"
              << "Runs GSQ for every combination of the hyper-parameter values, with every chosen variant, on\n"
              << "every layer, and records each run's starting and final relative Hessian error. The table at\n"
              << "the end (and --summary) ranks the variants by the mean final error of their best configuration.\n"
              << all << "\n";
    return std::nullopt;
  }
  if (values.count("config")) {
    std::ifstream config(values["config"].as<std::string>());
    gsq::require(static_cast<bool>(config), "cannot read --config " + values["config"].as<std::string>());
    po::store(po::parse_config_file(config, all), values);  // stored second: the command line wins
  }
  po::notify(values);

  gsq::for_each_axis([&](const char* flag, const char*, auto& list) {
    list = gsq::parse_axis<typename std::decay_t<decltype(list)>::value_type>(std::string("--") + flag, axis_texts[flag]);
  }, options.grid);
  gsq::driver::set_threads(options.threads);  // refused now, before any output
  options.variants = gsq::select_variants(variants, VariantChoice::spellings());
  if (options.list && values["variants"].defaulted()) options.variants = VariantChoice::spellings();
  if (options.list || options.summary) return options;
  validate_grid(options.grid);
  gsq::require(options.synthetic_layers > 0, "--synthetic must be positive");
  return options;
}

/// One layer and its objective, shared read-only by the runs.
struct Layer {
  std::string name;
  gsq::Matrix<float> weight, hessian;
  gsq::HessianObjective<> objective;
};

std::vector<Layer> load_layers(const Options& options) {
  std::vector<Layer> layers;
  if (options.layers_directory.empty()) {
    for (long seed = 1; seed <= options.synthetic_layers; ++seed) {
      gsq::SyntheticLayerConfig config = options.synthetic;
      config.seed = static_cast<std::uint64_t>(seed);
      gsq::SyntheticLayer layer = gsq::make_synthetic_layer(config);
      auto objective = gsq::HessianObjective<>::from_inputs(layer.weight, layer.inputs);
      layers.push_back({"synthetic-s" + std::to_string(seed) + "-" + std::to_string(config.rows) + "x" +
                            std::to_string(config.cols) + "-t" + std::to_string(config.tokens),
                        std::move(layer.weight), objective.hessian(), std::move(objective)});
    }
    return layers;
  }
  gsq::require(fs::is_directory(options.layers_directory), "--layers " + options.layers_directory + " is not a directory");
  std::vector<fs::path> paths;
  for (const fs::directory_entry& entry : fs::directory_iterator(options.layers_directory))
    if (entry.path().extension() == ".safetensors") paths.push_back(entry.path());
  std::sort(paths.begin(), paths.end());
  gsq::require(!paths.empty(), "--layers " + options.layers_directory + " holds no *.safetensors file");
  for (const fs::path& path : paths) {
    const std::string name = path.stem().string();
    for (const char c : name)
      gsq::require(static_cast<unsigned char>(c) >= 0x20, "the layer file name " + path.string() + " holds a control character");
    const gsq::SafetensorsFile file = gsq::SafetensorsFile::open(path.string());
    gsq::Matrix<float> weight = file.matrix("W"), hessian = file.matrix("H");
    try {
      gsq::HessianObjective<> objective(weight, hessian);  // validates the shapes and H
      layers.push_back({name, std::move(weight), objective.hessian(), std::move(objective)});
    } catch (const gsq::Error& error) {
      throw gsq::Error(path.string() + ": " + error.what());
    }
  }
  return layers;
}

/// The policy-dependent part of a run, kept small: it is instantiated for every variant,
/// grouping and optimizer, and compile time grows with what it holds.
template <class Variant, class Grouping, class Optimizer>
gsq::QuantizedTensor train_variant(gsq::HessianObjective<>& objective, const gsq::QuantizedTensor& start,
                                   const gsq::TrainConfig& config) {
  using Quantizer = gsq::Quantizer<typename Variant::Grid, Grouping, typename Variant::Schedule, typename Variant::Estimator>;
  gsq::LogitInit init;
  init.seed = config.seed;
  Quantizer quantizer(start, init);
  gsq::train<Optimizer>(quantizer, objective, config);
  return quantizer.result();
}

/// One run to do: its record with the variant, point and layer set, and the layer itself.
struct Job {
  gsq::SweepRecord record;
  const Layer* layer;
};

/// Runs the job and fills in its record's results.
gsq::SweepRecord run(const Job& job_to_run) {
  gsq::SweepRecord job = job_to_run.record;
  const Layer& layer = *job_to_run.layer;
  const Clock::time_point started = Clock::now();
  const VariantChoice variant("variant", job.variant);
  const GroupingChoice grouping("--group", std::to_string(job.point.group));
  const OptimizerChoice optimizer("--optimizer", job.point.optimizer);
  const gsq::GridSpec grid = variant.visit([](auto tag) { return gsq::grid_spec<typename gsq::type_of<decltype(tag)>::Grid>(); });
  const long group_width = grouping.visit([&](auto tag) { return gsq::type_of<decltype(tag)>::group_width(static_cast<int>(layer.weight.cols)); });
  const gsq::QuantizedTensor start = job.point.init == "gptq" ? gsq::gptq(layer.weight, layer.hessian, grid, group_width)
                                                               : gsq::round_to_nearest(layer.weight, grid, group_width);
  gsq::HessianObjective<> objective = layer.objective;  // the run's own: evaluating writes its buffers
  const gsq::QuantizedTensor result = gsq::dispatch(
      [&](auto variant_tag, auto grouping_tag, auto optimizer_tag) {
        return train_variant<gsq::type_of<decltype(variant_tag)>, gsq::type_of<decltype(grouping_tag)>,
                             gsq::type_of<decltype(optimizer_tag)>>(objective, start, gsq::train_config(job.point));
      },
      variant, grouping, optimizer);
  job.init_error = objective.relative_error(start.dequantize());
  job.final_error = objective.relative_error(result.dequantize());
  job.bpp = result.bits_per_parameter();
  job.seconds = seconds_since(started);
  return job;
}

/// The progress line on stderr after each run: count, done/total, elapsed time and ETA.
class Progress {
 public:
  Progress(const gsq::SweepGrid& grid, std::size_t total, std::size_t already_done, std::size_t to_run, bool quiet)
      : grid_(grid), total_(total), done_(already_done), to_run_(to_run), quiet_(quiet) {}

  void finished(const gsq::SweepRecord& record, const std::string& failure) {
    const std::lock_guard<std::mutex> lock(mutex_);
    ++finished_;
    if (failure.empty()) ++done_;
    else ++failed_;
    if (quiet_ && failure.empty()) return;
    const double elapsed = seconds_since(start_);
    const double eta = elapsed / static_cast<double>(finished_) * static_cast<double>(to_run_ - finished_);
    const std::string run = record.variant + swept_values(record.point, grid_) + " on " + record.layer;
    if (failure.empty())
      std::fprintf(stderr, "%s: run %zu/%zu (%zu/%zu recorded) %s: %.5g -> %.5g in %.1f s; elapsed %.0f s, eta %.0f s\n",
                   program_name, finished_, to_run_, done_, total_, run.c_str(), record.init_error,
                   record.final_error, record.seconds, elapsed, eta);
    else
      std::fprintf(stderr, "%s: run %zu/%zu %s failed: %s\n", program_name, finished_, to_run_, run.c_str(), failure.c_str());
  }

  std::size_t failed() const { return failed_; }

 private:
  const gsq::SweepGrid& grid_;
  std::mutex mutex_;
  Clock::time_point start_ = Clock::now();
  std::size_t total_, done_, to_run_, finished_ = 0, failed_ = 0;
  bool quiet_;
};

/// Runs the jobs on `threads` worker threads, each run single-threaded (so its numbers do not
/// depend on the thread count), appending each record as it completes. Returns the failures.
std::size_t run_all(const std::vector<Job>& jobs, gsq::SweepStore& store, Progress& progress, int threads) {
  std::atomic<std::size_t> next{0};
  std::exception_ptr store_failure;  // writing the results failed: stop, the disk is the problem
  std::mutex failure_mutex;
  const auto worker = [&] {
    gsq::set_host_threads(1);
    for (std::size_t i; (i = next++) < jobs.size();) {
      gsq::SweepRecord record;
      try {
        record = run(jobs[i]);
      } catch (const std::exception& error) {
        progress.finished(jobs[i].record, error.what());
        continue;
      }
      try {
        store.append(record);
      } catch (...) {
        const std::lock_guard<std::mutex> lock(failure_mutex);
        if (!store_failure) store_failure = std::current_exception();
        next = jobs.size();
        return;
      }
      progress.finished(record, "");
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(worker);
  for (std::thread& thread : pool) thread.join();
  if (store_failure) std::rethrow_exception(store_failure);
  return progress.failed();
}

int sweep(const Options& options) {
  if (options.list) {
    for (const std::string& name : options.variants) std::printf("%s\n", name.c_str());
    return 0;
  }
  if (options.summary) {
    gsq::print_sweep_summary(std::cout, gsq::read_sweep_records(options.out + ".csv"), options.out + ".csv");
    return 0;
  }
  const int threads = options.threads > 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency());
  gsq::driver::set_threads(threads);  // loading the layers; each run then uses one thread
  const std::vector<Layer> layers = load_layers(options);
  for (const Layer& layer : layers)
    for (const long group : options.grid.group)
      GroupingChoice("--group", std::to_string(group)).visit([&](auto tag) {
        gsq::type_of<decltype(tag)>::validate(static_cast<int>(layer.weight.cols));
      });

  gsq::SweepStore store(options.out);
  if (store.repaired_line())
    std::fprintf(stderr, "%s: cut a torn last line from %s: '%s'\n", program_name, store.csv_path().c_str(),
                 store.repaired_line()->c_str());
  std::vector<Job> jobs;
  std::size_t total = 0;
  for (const gsq::SweepPoint& point : gsq::grid_points(options.grid))
    for (const std::string& variant : options.variants)
      for (const Layer& layer : layers) {
        gsq::SweepRecord record;
        record.variant = variant;
        record.point = point;
        record.layer = layer.name;
        record.rows = layer.weight.rows;
        record.cols = layer.weight.cols;
        ++total;
        if (!store.contains(record)) jobs.push_back({std::move(record), &layer});
      }
  const int workers = static_cast<int>(std::min<std::size_t>(threads, std::max<std::size_t>(1, jobs.size())));
  if (!options.quiet)
    std::fprintf(stderr, "%s: %zu runs (%zu variants x %zu points x %zu layers), %zu already in %s, %zu to run on %d threads\n",
                 program_name, total, options.variants.size(), gsq::point_count(options.grid), layers.size(),
                 total - jobs.size(), store.csv_path().c_str(), jobs.size(), workers);
  Progress progress(options.grid, total, total - jobs.size(), jobs.size(), options.quiet);
  const std::size_t failed = run_all(jobs, store, progress, workers);
  gsq::print_sweep_summary(std::cout, gsq::read_sweep_records(store.csv_path()), store.csv_path());
  if (failed == 0) return 0;
  std::fprintf(stderr, "%s: %zu runs failed; they are not recorded, so a rerun retries them\n", program_name, failed);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  return gsq::driver::run(program_name, [&] {
    const std::optional<Options> options = parse_options(argc, argv);
    return options ? sweep(*options) : 0;
  });
}
