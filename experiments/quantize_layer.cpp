// experiments/quantize_layer.cpp -- quantizes one linear layer with round-to-nearest (RTN), GPTQ
// and GSQ (started from GPTQ, the paper's recipe, or from RTN) and compares them on the relative
// Hessian error tr(dW H dW^T) / tr(W H W^T) (docs/design.md section 4). The layer is synthetic or read
// from a safetensors file; docs/quantize_layer.md walks through both.
//
//   quantize_layer                                  synthetic 512 x 512 layer, 2 bits, g128
//   quantize_layer --save-layer layer.safetensors   ... and write that layer (W, H) to a file
//   quantize_layer --input layer.safetensors --weight W --hessian H --method gptq --save q.safetensors
//   quantize_layer --input acts.safetensors --weight W --inputs X --bits 3 --json result.json
//   quantize_layer --help                           every flag, with its default
//
// The run-time policy names (--bits, --group, --estimator, --schedule, --optimizer) select
// compile-time policies through gsq/policy/dispatch.hpp. Where the layer comes from (load_layer) and
// which methods run on it (run_methods) are separate.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include <gsq/core/train_k_quant.hpp>
#include <gsq/policy/dispatch.hpp>
#include <gsq/format/packed.hpp>
#include <gsq/format/k_quant.hpp>
#include <gsq/gsq.hpp>
#include <gsq/init/k_quant_fit.hpp>
#include <gsq/init/k_quant_gptq.hpp>
#include <gsq/io/output_location.hpp>
#include <gsq/pipeline/linear_format.hpp>

#include "driver.hpp"

namespace po = boost::program_options;
using gsq::Clock;
using gsq::seconds_since;

namespace {

constexpr const char* program_name = "quantize_layer";

using GridChoice = gsq::Choice<gsq::GridPolicies, gsq::ByBits>;
using GroupingChoice = gsq::Choice<gsq::GroupingPolicies, gsq::ByGroupSize>;
using ScheduleChoice = gsq::Choice<gsq::SchedulePolicies>;
using EstimatorChoice = gsq::Choice<gsq::EstimatorPolicies>;
using OptimizerChoice = gsq::Choice<gsq::OptimizerPolicies>;
using KQuantLayoutChoice = gsq::Choice<gsq::KQuantLayoutPolicies>;

/// The default synthetic layer is smaller than gsq's (1024 x 1024, 2048 tokens) so that the
/// default run of 640 steps takes seconds, not minutes, on a 2-core machine.
gsq::SyntheticLayerConfig default_synthetic_layer() {
  gsq::SyntheticLayerConfig config;
  config.rows = 512;
  config.cols = 512;
  config.tokens = 1024;
  return config;
}

/// Where the layer comes from when it is read from a file (--input); empty input: synthetic.
struct LayerFile {
  std::string input, weight, hessian, inputs;
};

struct Options {
  gsq::SyntheticLayerConfig synthetic = default_synthetic_layer();
  LayerFile file;
  std::vector<gsq::Method> methods;
  gsq::Method init = gsq::Method::gptq;
  gsq::GptqConfig gptq;  // its scale fit is RTN's too
  GridChoice grid{"--bits", "2"};
  GroupingChoice grouping{"--group", "128"};
  const gsq::KQuantFormat* k_quant = nullptr;  // --format: a llama.cpp K-quant layout instead of the grid
  ScheduleChoice schedule{"--schedule", "linear"};
  EstimatorChoice estimator{"--estimator", "relaxed"};
  OptimizerChoice optimizer{"--optimizer", "lion"};
  gsq::TrainConfig train;
  std::string lr_decay = "cosine";
  int threads = 0;
  std::string json_path, save_path, save_layer_path;
  bool quiet = false;
};

template <class Choice>
std::string alternatives() {
  std::string text;
  const std::vector<std::string> spellings = Choice::spellings();
  for (std::size_t i = 0; i < spellings.size(); ++i)
    text += (i == 0 ? "" : i + 1 == spellings.size() ? " or " : ", ") + spellings[i];
  return text;
}

/// Runs `read` and puts `flag` in front of the message of any gsq::Error it raises.
template <class Read>
auto for_flag(const std::string& flag, Read&& read) {
  try {
    return read();
  } catch (const gsq::Error& error) {
    throw gsq::Error(flag + ": " + error.what());
  }
}

/// The methods of --method: each value one name or a comma-separated list of names.
std::vector<gsq::Method> parse_methods(const std::vector<std::string>& values) {
  std::vector<gsq::Method> methods;
  for (const std::string& value : values)
    for (std::size_t first = 0; first <= value.size();) {
      const std::size_t comma = std::min(value.find(',', first), value.size());
      const std::string name = value.substr(first, comma - first);
      gsq::require(!name.empty(), "--method '" + value + "' has an empty name: expected rtn, gptq or gsq");
      const gsq::Method method = for_flag("--method", [&] { return gsq::parse_method(name); });
      gsq::require(std::find(methods.begin(), methods.end(), method) == methods.end(),
                   "--method names " + name + " twice");
      methods.push_back(method);
      first = comma + 1;
    }
  return methods;
}

/// Fails now, not after the run, when `path` cannot be created because its directory is missing.
/// Claims the files the run writes (gsq/io/output_location.hpp), apart from --input and each
/// other, before any work.
void claim_outputs(Options& options) {
  std::vector<gsq::NamedPath> apart{{"--input", options.file.input}};
  for (auto [flag, path] : {std::pair<const char*, std::string*>{"--json", &options.json_path},
                            {"--save", &options.save_path}, {"--save-layer", &options.save_layer_path}}) {
    if (path->empty()) continue;
    *path = gsq::claim_output({flag, *path}, gsq::OutputKind::file, apart);
    apart.push_back({flag, *path});
  }
}

/// Where the layer comes from: the synthetic generator's flags, or --input with its tensor names.
void check_layer_source(const Options& options, const po::variables_map& values) {
  const LayerFile& file = options.file;
  if (file.input.empty()) {
    for (const char* flag : {"weight", "hessian", "inputs"})
      gsq::require(!values.count(flag), std::string("--") + flag + " names a tensor of --input FILE, which is missing");
    gsq::require(options.synthetic.rows > 0 && options.synthetic.cols > 0 && options.synthetic.tokens > 0,
                 "--rows, --cols and --tokens must be positive");
    return;
  }
  for (const char* flag : {"rows", "cols", "tokens", "layer-seed"})
    gsq::require(values[flag].defaulted(),
                 std::string("--") + flag + " shapes the synthetic layer and does not apply with --input");
  gsq::require(!file.weight.empty(), "--input needs --weight NAME, the weight tensor (rows x cols) to quantize");
  gsq::require(!(file.hessian.empty() && file.inputs.empty()),
               "--input needs --hessian NAME (H, cols x cols) or --inputs NAME (calibration inputs X, tokens x cols)");
  gsq::require(file.hessian.empty() || file.inputs.empty(),
               "--hessian and --inputs both give the layer's Hessian: name one of them");
}

/// Parses the command line; std::nullopt when --help was asked for (and printed).
std::optional<Options> parse_options(int argc, char** argv) {
  Options options;
  std::string bits = options.grid.key(), group = options.grouping.key(), schedule = options.schedule.key(),
              estimator = options.estimator.key(), optimizer = options.optimizer.key();
  std::vector<std::string> method_values;
  // The diag(H)-weighted search is the driver's default (gsq::GptqConfig's is max-abs): it gave
  // the lowest RTN and GPTQ errors on the synthetic layer and on the bundled model's layers
  // (docs/quantize_layer.md).
  std::string init = gsq::method_name(options.init), scale_search = "weighted", k_quant;
  long layer_seed = 1, seed = 0;
  gsq::TrainConfig& train = options.train;
  po::options_description layer("Layer (default: synthetic LLM-like: heavy-tailed weights, correlated inputs with outlier channels)");
  layer.add_options()
      ("rows", po::value(&options.synthetic.rows)->default_value(options.synthetic.rows)->value_name("N"), "output rows of the synthetic layer")
      ("cols", po::value(&options.synthetic.cols)->default_value(options.synthetic.cols)->value_name("N"), "input columns of the synthetic layer")
      ("tokens", po::value(&options.synthetic.tokens)->default_value(options.synthetic.tokens)->value_name("N"),
       "calibration tokens forming the synthetic layer's Hessian H = X^T X / tokens")
      ("layer-seed", po::value(&layer_seed)->default_value(layer_seed)->value_name("N"), "seed of the synthetic layer")
      ("input", po::value(&options.file.input)->value_name("FILE"),
       "read the layer from this safetensors file instead (float tensors: F32, F16, BF16 or F64)")
      ("weight", po::value(&options.file.weight)->value_name("NAME"), "with --input: the weight tensor, rows x cols")
      ("hessian", po::value(&options.file.hessian)->value_name("NAME"),
       "with --input: the Hessian tensor H = X^T X / N, cols x cols (or give --inputs)")
      ("inputs", po::value(&options.file.inputs)->value_name("NAME"),
       "with --input: the calibration inputs X, tokens x cols, from which H = X^T X / tokens is formed")
      ("save-layer", po::value(&options.save_layer_path)->value_name("FILE"),
       "write the layer (synthetic or read) to FILE as safetensors: W and H, F32, as --input --weight W --hessian H "
       "reads them back");
  po::options_description format("Quantized format");
  format.add_options()
      ("bits", po::value(&bits)->default_value(bits)->value_name("BITS"), ("grid: " + alternatives<GridChoice>()).c_str())
      ("group", po::value(&group)->default_value(group)->value_name("SIZE"),
       ("input columns sharing one scale: " + alternatives<GroupingChoice>() + " (0 = per-channel)").c_str())
      ("format", po::value(&k_quant)->value_name("NAME"),
       "instead of --bits/--group, llama.cpp's K-quant layout q2_k, q3_k, q4_k, q5_k or q6_k (2.625, 3.4375, 4.5, 5.5, "
       "6.5625 bits per weight; rows whole super-blocks of 256), or its blocks of 32 with a min, q4_1 or q5_1 (5, 6): rtn is the importance-weighted (diag H) fit, gptq GPTQ fitting each "
       "super-block as its sweep enters it, gsq learns codes and sub-block scales (and mins) under the stored "
       "rounding of the scales");
  po::options_description methods("Methods");
  methods.add_options()
      ("method", po::value(&method_values)->default_value({"rtn,gptq,gsq"}, "rtn,gptq,gsq")->value_name("LIST"),
       "methods to run, in order: rtn, gptq, gsq; repeat the flag or give a comma-separated list")
      ("init", po::value(&init)->default_value(init)->value_name("METHOD"),
       "GSQ's starting point: rtn or gptq (the paper's recipe); a result of --method is reused")
      ("scale-search", po::value(&scale_search)->default_value(scale_search)->value_name("NAME"),
       "how RTN and GPTQ (so GSQ's start) fit each group's scale: maxabs (the grid's ends reach max|w|), "
       "mse (search of shrunk ranges, sum |error|^2.4) or weighted (that search weighted by diag(H))")
      ("percdamp", po::value(&options.gptq.percdamp)->default_value(options.gptq.percdamp, "0.01")->value_name("X"),
       "GPTQ: add X * mean(diag H) to diag(H) before inverting it")
      ("act-order", po::bool_switch(&options.gptq.act_order), "GPTQ: quantize columns in order of decreasing diag(H)");
  po::options_description gsq_options("GSQ (defaults: the reference's, docs/design.md section 3)");
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
       "peak learning rate of the logits (with --format: 3e-4)")
      ("weight-decay", po::value(&train.logits.weight_decay)->default_value(train.logits.weight_decay, "1")->value_name("X"),
       "decoupled weight decay of the logits (the scales have none)")
      ("lr-scales", po::value(&train.scales.learning_rate)->default_value(train.scales.learning_rate, "5e-5")->value_name("X"),
       "peak learning rate of the scales (with --format: 0, the sub-block scales and mins stay the start's)")
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
      ("save", po::value(&options.save_path)->value_name("FILE"),
       "write the last method's result to FILE as safetensors: packed codes (U8 'weight.codes'), scales (F16 "
       "'weight.scales', rows x groups) and the dequantized weight (F32 'weight'), with the format in __metadata__; "
       "with --format, ggml's blocks as a GGUF holds them (U8 'weight.blocks') and the weight")
      ("quiet", po::bool_switch(&options.quiet), "no progress lines on stderr")
      ("help", "print this help and exit");
  po::options_description all;
  all.add(layer).add(format).add(methods).add(gsq_options).add(run);

  po::variables_map values;
  const po::positional_options_description no_positional;  // so that a stray word is an error
  po::store(po::command_line_parser(argc, argv).options(all).positional(no_positional).run(), values);
  if (values.count("help")) {
    std::cout << "Usage: " << program_name << " [options]\n\n"
              << "Quantizes one linear layer (synthetic, or W with H or X from a safetensors file) with each\n"
              << "method and prints its relative Hessian error tr(dW H dW^T) / tr(W H W^T), bits per parameter\n"
              << "(16-bit scales; errors are measured with the scales rounded to fp16, as stored) and wall time\n"
              << "(GSQ's excludes its starting point's). Progress goes to stderr.\n"
              << all << "\n";
    return std::nullopt;
  }
  po::notify(values);

  gsq::require(layer_seed >= 0 && seed >= 0, "seeds must be non-negative");
  gsq::require(options.threads >= 0, "--threads must be non-negative, got " + std::to_string(options.threads));
  check_layer_source(options, values);
  options.synthetic.seed = static_cast<std::uint64_t>(layer_seed);
  options.methods = parse_methods(method_values);
  options.init = for_flag("--init", [&] { return gsq::parse_method(init); });
  gsq::require(options.init != gsq::Method::gsq, "--init gsq: GSQ starts from rtn or gptq");
  options.gptq.scale_fit = for_flag("--scale-search", [&] { return gsq::parse_scale_fit(scale_search); });
  gsq::require(std::isfinite(options.gptq.percdamp) && options.gptq.percdamp >= 0,
               "--percdamp must be finite and non-negative, got " + std::to_string(options.gptq.percdamp));
  train.seed = static_cast<std::uint64_t>(seed);
  train.learning_rate.decay = gsq::parse_decay(options.lr_decay);
  if (values.count("format")) {
    options.k_quant = for_flag("--format", [&] { return &gsq::k_quant_format_named(k_quant); });
    gsq::require(values["bits"].defaulted() && values["group"].defaulted(), "--format replaces --bits and --group: give one or the other");
    const gsq::TrainConfig k_quant_defaults = gsq::k_quant_train_config();
    if (values["lr-logits"].defaulted()) train.logits.learning_rate = k_quant_defaults.logits.learning_rate;
    if (values["lr-scales"].defaulted()) train.scales.learning_rate = k_quant_defaults.scales.learning_rate;
  }
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
  claim_outputs(options);
  return options;
}

/// One linear layer, its Hessian, and the objective every method is measured on (which holds
/// H symmetrised: `hessian` is that copy, so a saved layer reads back to the same objective).
struct Layer {
  std::string description;
  gsq::Matrix<float> weight;
  gsq::Matrix<float> hessian;
  gsq::HessianObjective<> objective;
};

Layer make_layer(std::string description, gsq::Matrix<float> weight, const gsq::Matrix<float>& hessian) {
  gsq::HessianObjective<> objective(weight, hessian);
  gsq::Matrix<float> symmetric = objective.hessian();
  return {std::move(description), std::move(weight), std::move(symmetric), std::move(objective)};
}

gsq::Matrix<float> hessian_of_inputs(const gsq::Matrix<float>& weight, const gsq::Matrix<float>& inputs) {
  return gsq::HessianObjective<>::from_inputs(weight, inputs).hessian();
}

/// Tensor `name` of `file` as a matrix; errors name the flag that named the tensor.
gsq::Matrix<float> read_matrix(const gsq::SafetensorsFile& file, const std::string& flag, const std::string& name) {
  if (!file.contains(name)) {
    std::string names;
    const std::vector<gsq::TensorInfo>& tensors = file.tensors();
    const std::size_t shown = std::min<std::size_t>(tensors.size(), 8);
    for (std::size_t i = 0; i < shown; ++i) names += (i ? ", " : "") + tensors[i].name;
    if (shown < tensors.size()) names += ", ... (" + std::to_string(tensors.size()) + " in all)";
    throw gsq::Error(flag + " " + name + ": " + file.path() + " holds no tensor named '" + name + "' (it holds " +
                     (names.empty() ? "none" : names) + ")");
  }
  return for_flag(flag + " " + name, [&] { return file.matrix(name); });
}

std::string shape_text(const gsq::Matrix<float>& matrix) {
  return std::to_string(matrix.rows) + " x " + std::to_string(matrix.cols);
}

Layer load_layer(const Options& options) {
  const LayerFile& source = options.file;
  if (source.input.empty()) {
    const gsq::SyntheticLayerConfig& config = options.synthetic;
    gsq::SyntheticLayer synthetic = gsq::make_synthetic_layer(config);
    const gsq::Matrix<float> hessian = hessian_of_inputs(synthetic.weight, synthetic.inputs);
    return make_layer("synthetic " + shape_text(synthetic.weight) + ", " + std::to_string(config.tokens) +
                          " calibration tokens, seed " + std::to_string(config.seed),
                      std::move(synthetic.weight), hessian);
  }
  const gsq::SafetensorsFile file = gsq::SafetensorsFile::open(source.input);
  gsq::Matrix<float> weight = read_matrix(file, "--weight", source.weight);
  for_flag("--weight " + source.weight, [&] { gsq::require_finite_nonempty(weight, "the weight"); });
  gsq::Matrix<float> hessian;
  std::string hessian_source;
  if (!source.hessian.empty()) {
    hessian = read_matrix(file, "--hessian", source.hessian);
    gsq::require(hessian.rows == hessian.cols,
                 "--hessian " + source.hessian + " is " + shape_text(hessian) + ", not square");
    gsq::require(hessian.rows == weight.cols, "--hessian " + source.hessian + " is " + shape_text(hessian) +
                                                  " but --weight " + source.weight + " has " +
                                                  std::to_string(weight.cols) + " input columns");
    hessian_source = "Hessian " + source.hessian;
  } else {
    const gsq::Matrix<float> inputs = read_matrix(file, "--inputs", source.inputs);
    gsq::require(inputs.cols == weight.cols, "--inputs " + source.inputs + " is " + shape_text(inputs) +
                                                 " (tokens x features) but --weight " + source.weight + " has " +
                                                 std::to_string(weight.cols) + " input columns");
    hessian = for_flag("--inputs " + source.inputs, [&] { return hessian_of_inputs(weight, inputs); });
    hessian_source = "Hessian from " + source.inputs + " (" + std::to_string(inputs.rows) + " tokens)";
  }
  // The objective's checks (finite values, a symmetric H, a layer with signal under H).
  const std::string tensors = "--weight " + source.weight + (source.hessian.empty() ? " --inputs " + source.inputs
                                                                                    : " --hessian " + source.hessian);
  const std::string description = source.input + ": " + source.weight + " (" + shape_text(weight) + "), " + hessian_source;
  return for_flag(tensors, [&] { return make_layer(description, std::move(weight), hessian); });
}

/// Writes the layer as --input --weight W --hessian H reads it.
void save_layer(const Layer& layer, const std::string& path) {
  gsq::SafetensorsWriter writer;
  writer.add("W", layer.weight);
  writer.add("H", layer.hessian);
  writer.set_metadata("layer", layer.description);
  writer.set_metadata("producer", gsq::producer);
  writer.write(path);
}

/// The grid and the group width every method quantizes to.
struct Format {
  gsq::GridSpec grid;
  long group_width;
};

Format format_of(const Layer& layer, const Options& options) {
  const int cols = static_cast<int>(layer.weight.cols);
  return {options.grid.visit([](auto tag) { return gsq::grid_spec<gsq::type_of<decltype(tag)>>(); }),
          options.grouping.visit([&](auto tag) {
            using Grouping = gsq::type_of<decltype(tag)>;
            Grouping::validate(cols);
            return static_cast<long>(Grouping::group_width(cols));
          })};
}

/// What one method produced, and the numbers it is compared on.
struct MethodResult {
  gsq::Method method;
  std::variant<gsq::QuantizedTensor, gsq::KQuantTensor> quantized;  // as stored (fp16 scales)
  double rel_error;
  double seconds;
  nlohmann::json details;  // method-specific fields of the JSON record

  const gsq::QuantizedTensor& tensor() const { return std::get<gsq::QuantizedTensor>(quantized); }
  double bits_per_parameter() const {
    if (const auto* k_quant = std::get_if<gsq::KQuantTensor>(&quantized)) return k_quant->format->bits_per_weight();
    return tensor().bits_per_parameter();
  }
};

/// diag(H): the importance of each input column, what llama.cpp's imatrix holds.
std::vector<float> column_importance(const Layer& layer) {
  const std::vector<double> diagonal = gsq::hessian_diagonal(layer.hessian);
  return {diagonal.begin(), diagonal.end()};
}

/// In the K-quant format of --format: the importance-weighted fit (rtn) or GPTQ in the format.
MethodResult run_k_quant_initializer(gsq::Method method, Layer& layer, const Options& options) {
  const Clock::time_point start = Clock::now();
  gsq::KQuantTensor quantized = method == gsq::Method::rtn
                                    ? gsq::fit_k_quant(layer.weight, column_importance(layer), *options.k_quant)
                                    : gsq::gptq_k_quant(layer.weight, layer.hessian, *options.k_quant, options.gptq);
  const double seconds = seconds_since(start);
  const double rel_error = layer.objective.relative_error(quantized.dequantize());
  nlohmann::json details = {{"scale_search", "imatrix"}};
  if (method == gsq::Method::gptq) details.update({{"percdamp", options.gptq.percdamp}, {"act_order", options.gptq.act_order}});
  return {method, std::move(quantized), rel_error, seconds, std::move(details)};
}

/// Rounds the scales to fp16 (what --save stores and bpp counts) and measures the result.
MethodResult measure(gsq::Method method, gsq::QuantizedTensor quantized, double seconds, nlohmann::json details,
                     Layer& layer) {
  const double rel_error = layer.objective.relative_error(gsq::store_result(quantized, layer.description));
  return {method, std::move(quantized), rel_error, seconds, std::move(details)};
}

/// The settings that shaped an RTN or GPTQ result (for GSQ: its starting point's).
nlohmann::json initializer_details(gsq::Method method, const Options& options) {
  nlohmann::json details = {{"scale_search", gsq::scale_fit_name(options.gptq.scale_fit)}};
  if (method == gsq::Method::gptq) {
    details["percdamp"] = options.gptq.percdamp;
    details["act_order"] = options.gptq.act_order;
  }
  return details;
}

/// RTN or GPTQ, with the scale search the options name.
MethodResult run_initializer(gsq::Method method, Layer& layer, const Format& format, const Options& options) {
  const Clock::time_point start = Clock::now();
  gsq::QuantizedTensor quantized =
      method == gsq::Method::rtn
          ? gsq::round_to_nearest(layer.weight, format.grid, format.group_width, options.gptq.scale_fit,
                                  gsq::hessian_diagonal(layer.hessian))
          : gsq::gptq(layer.weight, layer.hessian, format.grid, format.group_width, options.gptq);
  return measure(method, std::move(quantized), seconds_since(start), initializer_details(method, options), layer);
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
  std::variant<gsq::QuantizedTensor, gsq::KQuantTensor> quantized;
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

template <class Layout, class Schedule, class Estimator, class Optimizer>
GsqRun train_gsq_k_quant(Layer& layer, const gsq::KQuantTensor& start, const gsq::TrainConfig& config,
                         const std::function<void(const gsq::StepReport&)>& on_step) {
  gsq::KQuantTraining run = gsq::train_k_quant<Layout, Schedule, Estimator, Optimizer>(start, layer.objective, config, on_step);
  return {std::move(run.result), std::move(run.report)};
}

/// The GSQ run of the policies the options name, in the grid format or the K-quant one.
GsqRun dispatch_gsq(Layer& layer, const MethodResult& start, const Options& options,
                    const std::function<void(const gsq::StepReport&)>& on_step) {
  if (options.k_quant)
    return gsq::dispatch(
        [&](auto layout, auto schedule, auto estimator, auto optimizer) {
          return train_gsq_k_quant<gsq::type_of<decltype(layout)>, gsq::type_of<decltype(schedule)>,
                                   gsq::type_of<decltype(estimator)>, gsq::type_of<decltype(optimizer)>>(
              layer, std::get<gsq::KQuantTensor>(start.quantized), options.train, on_step);
        },
        KQuantLayoutChoice("--format", options.k_quant->name), options.schedule, options.estimator, options.optimizer);
  return gsq::dispatch(
      [&](auto grid, auto grouping, auto schedule, auto estimator, auto optimizer) {
        using Quantizer = gsq::Quantizer<gsq::type_of<decltype(grid)>, gsq::type_of<decltype(grouping)>,
                                         gsq::type_of<decltype(schedule)>, gsq::type_of<decltype(estimator)>>;
        return train_gsq<Quantizer, gsq::type_of<decltype(optimizer)>>(layer.objective, start.tensor(), options.train, on_step);
      },
      options.grid, options.grouping, options.schedule, options.estimator, options.optimizer);
}

/// GSQ started from `start`, with the policies the options name.
MethodResult run_gsq(Layer& layer, const MethodResult& start, const Options& options) {
  const gsq::TrainConfig& config = options.train;
  std::function<void(const gsq::StepReport&)> on_step;
  if (!options.quiet) on_step = ProgressPrinter{};
  const Clock::time_point started = Clock::now();
  GsqRun run = dispatch_gsq(layer, start, options, on_step);
  const double seconds = seconds_since(started);
  nlohmann::json details = start.details;
  details.update({
      {"init", gsq::method_name(start.method)},
      {"init_rel_error", start.rel_error},
      {"init_seconds", start.seconds},
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
  });
  if (options.k_quant) {
    gsq::KQuantTensor& quantized = std::get<gsq::KQuantTensor>(run.quantized);
    const double rel_error = layer.objective.relative_error(quantized.dequantize());
    return {gsq::Method::gsq, std::move(quantized), rel_error, seconds, std::move(details)};
  }
  return measure(gsq::Method::gsq, std::move(std::get<gsq::QuantizedTensor>(run.quantized)), seconds, std::move(details), layer);
}

/// The methods of --method in order; GSQ reuses its starting point when --method ran it before,
/// and otherwise computes it without reporting it as a method of its own.
std::vector<MethodResult> run_methods(Layer& layer, const Options& options) {
  const auto initializer = [&](gsq::Method method) {
    return options.k_quant ? run_k_quant_initializer(method, layer, options)
                           : run_initializer(method, layer, format_of(layer, options), options);
  };
  std::vector<MethodResult> results;
  for (const gsq::Method method : options.methods) {
    if (method != gsq::Method::gsq) {
      results.push_back(initializer(method));
      continue;
    }
    const auto ran = std::find_if(results.begin(), results.end(),
                                  [&](const MethodResult& result) { return result.method == options.init; });
    const MethodResult start = ran != results.end() ? *ran : initializer(options.init);
    results.push_back(run_gsq(layer, start, options));
  }
  return results;
}


void print_table(const Layer& layer, const Options& options, const std::vector<MethodResult>& results) {
  std::printf("layer: %s\n", layer.description.c_str());
  std::printf("%-7s %-6s %-9s %-5s %-12s %-12s %-8s %10s\n", "method", "init", "scales", "bits", "group",
              "rel. error", "bpp", "seconds");
  for (const MethodResult& result : results)
    std::printf("%-7s %-6s %-9s %-5s %-12s %-12.6g %-8.4g %10.3f\n", gsq::method_name(result.method),
                result.details.value("init", "-").c_str(), result.details.at("scale_search").get<std::string>().c_str(),
                gsq::driver::bits_label(options).c_str(), gsq::driver::group_label(options).c_str(), result.rel_error,
                result.bits_per_parameter(), result.seconds);
}

/// --group as spelled there: the group size, 0 for per-channel.
int group_size(const Options& options) {
  return options.grouping.visit([](auto tag) { return gsq::type_of<decltype(tag)>::size; });
}

/// The --json report: {"producer": "gsq", "records": [one per method]}.
nlohmann::json json_report(const Layer& layer, const Options& options, const std::vector<MethodResult>& results) {
  nlohmann::json records = nlohmann::json::array();
  for (const MethodResult& result : results) {
    nlohmann::json record = {
        {"method", gsq::method_name(result.method)},
        {"rel_error", result.rel_error},
        {"bpp", result.bits_per_parameter()},
        {"seconds", result.seconds},
        {"layer", layer.description},
        {"rows", layer.weight.rows},
        {"cols", layer.weight.cols},
        {"threads", options.threads},
    };
    if (options.k_quant) {
      record.update({{"format", options.k_quant->name}, {"sub_block", options.k_quant->sub_block}});
    } else {
      const gsq::QuantizedTensor& quantized = result.tensor();
      record.update({{"grid", quantized.grid.name}, {"bits", quantized.grid.code_bits}, {"group", group_size(options)},
                     {"group_width", quantized.group_width}});
    }
    record.update(result.details);
    records.push_back(std::move(record));
  }
  return {{"producer", gsq::producer}, {"records", std::move(records)}};
}

/// Writes a result as quantize_model's quantized.safetensors holds a layer (gsq/format/packed.hpp,
/// so gsq::read_packed(file, "weight", ...) reads it back), beside its dequantized weight.
void save_result(const MethodResult& result, const Options& options, const std::string& path) {
  gsq::SafetensorsWriter writer;
  writer.set_metadata("method", gsq::method_name(result.method));
  writer.set_metadata("producer", gsq::producer);
  if (const auto* k_quant = std::get_if<gsq::KQuantTensor>(&result.quantized)) {
    // The blocks exactly as a GGUF holds them (ggml type in the metadata), beside the weights.
    const std::vector<std::uint8_t> blocks = gsq::encode_k_quant(*k_quant);
    writer.add_bytes("weight.blocks", gsq::Dtype::U8, {static_cast<std::int64_t>(blocks.size())}, blocks);
    writer.add("weight", k_quant->dequantize());
    writer.set_metadata("format", k_quant->format->name);
    writer.set_metadata("ggml_type", std::to_string(k_quant->format->ggml_type));
    writer.set_metadata("rows", std::to_string(k_quant->rows));
    writer.set_metadata("cols", std::to_string(k_quant->cols));
    writer.write(path);
    return;
  }
  const gsq::QuantizedTensor& quantized = result.tensor();
  gsq::add_packed(writer, "weight", quantized);
  writer.add("weight", quantized.dequantize());
  for (const auto& [key, value] : gsq::packed_metadata(quantized.grid, quantized.group_width))
    writer.set_metadata(key, value);
  if (result.details.contains("init")) writer.set_metadata("init", result.details.at("init").get<std::string>());
  writer.set_metadata("group", std::to_string(group_size(options)));
  writer.set_metadata("packed_code_bits", std::to_string(quantized.packed_code_bits()));
  writer.set_metadata("rows", std::to_string(quantized.rows));
  writer.set_metadata("cols", std::to_string(quantized.cols));
  writer.write(path);
}

}  // namespace

int main(int argc, char** argv) {
  return gsq::driver::run(program_name, [&] {
    const std::optional<Options> options = parse_options(argc, argv);
    if (!options) return 0;
    gsq::driver::set_threads(options->threads);
    Layer layer = load_layer(*options);
    if (!options->save_layer_path.empty()) save_layer(layer, options->save_layer_path);
    const std::vector<MethodResult> results = run_methods(layer, *options);
    print_table(layer, *options, results);
    if (!options->json_path.empty())
      gsq::write_json_atomically(options->json_path, json_report(layer, *options, results));
    if (!options->save_path.empty()) save_result(results.back(), *options, options->save_path);
    return 0;
  });
}
