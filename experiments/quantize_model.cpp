// quantize_model: quantizes a Hugging Face Llama-family checkpoint layer by layer (RTN, GPTQ or
// GSQ), evaluates it, and writes a loadable checkpoint plus the packed format.
//
//   quantize_model --model data/llama-bytes-3m --out out/gsq2 --byte-tokens
//       --calib data/llama-bytes-3m/calib.txt --eval data/llama-bytes-3m/eval.txt
//   quantize_model ... --method rtn,gptq,gsq      (one output per method, one table)
//   mpirun -np 4 quantize_model ...               (each layer's work spread over 4 processes)
//
// See docs/quantize_model.md.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include "driver.hpp"
#include <gsq/policy/dispatch.hpp>
#include <gsq/export/dequantized_checkpoint.hpp>
#include <gsq/export/exports.hpp>
#include <gsq/gsq.hpp>
#include <gsq/io/fingerprint.hpp>
#include <gsq/io/output_location.hpp>
#include <gsq/io/resumable_output.hpp>
#include <gsq/model/comparison.hpp>
#include <gsq/model/evaluation.hpp>
#include <gsq/model/layer_divergence.hpp>
#include <gsq/pipeline/budget.hpp>
#include <gsq/pipeline/ggml_mix.hpp>
#include <gsq/pipeline/ggml_mix_format.hpp>
#include <gsq/pipeline/grid_mix_format.hpp>
#include <gsq/pipeline/report.hpp>
#include <gsq/pipeline/sensitivity.hpp>
#include <gsq/pipeline/sequential.hpp>
#include <gsq/text/llama_cpp_pre_tokenizer.hpp>
#include <gsq/text/tokenizer.hpp>
#ifdef GSQ_WITH_MPI
#include <gsq/distributed/mpi_communicator.hpp>
#endif

namespace {

namespace fs = std::filesystem;
namespace po = boost::program_options;
using gsq::Clock;
using gsq::seconds_since;
using GridChoice = gsq::Choice<gsq::GridPolicies, gsq::ByBits>;
using GroupingChoice =
    gsq::Choice<gsq::TypeList<gsq::PerChannel, gsq::GroupSize<64>, gsq::GroupSize<128>, gsq::GroupSize<256>>, gsq::ByGroupSize>;
using KQuantLayoutChoice = gsq::Choice<gsq::KQuantLayoutPolicies>;

/// Thrown when --stop-after ends a run early on purpose (to exercise --resume).
struct Stopped {};

struct Options {
  std::string model, out, calib, eval, json, dump_layers;
  std::vector<gsq::Method> methods;
  std::vector<gsq::ExportFormat> exports;
  GridChoice grid{"--bits", "2"};
  GroupingChoice grouping{"--group", "128"};
  const gsq::KQuantFormat* k_quant = nullptr;  // --format: a llama.cpp K-quant layout instead of the grid
  std::optional<gsq::GgmlMix> mix;             // --format PRESET or --like: each linear in its own ggml type
  std::optional<std::map<std::string, gsq::GridScheme>> schemes;  // a budget for compressed-tensors: each linear in its own grid scheme
  std::string preset, like;                    // --format PRESET, --like FILE
  struct Budget {                              // --target-bpw / --target-size: the mix chosen from measured sensitivity
    double bits_per_weight = 0;
    std::uint64_t bytes = 0;
    std::vector<gsq::GgmlType> types;          // the candidates of a GGUF budget ...
    std::vector<gsq::GridScheme> schemes;      // ... or of a compressed-tensors one
    std::string sensitivity;                   // --sensitivity FILE: the measurement kept or reused
    long windows = 0;
    bool plan_only = false;
  };
  std::optional<Budget> budget;
  gsq::ModelQuantizationConfig config;
  long calib_tokens = 0, calib_window = 0, window = 0, stop_after = 0, layer_kl_windows = 0;
  std::string tokenizer;
  bool byte_tokens = false, resume = false, quiet = false, expert_kl = false;
  int threads = 0;
};

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream stream(text);
  for (std::string part; std::getline(stream, part, ',');) parts.push_back(part);
  return parts;
}

Options parse_options(int argc, char** argv) {
  Options options;
  gsq::TrainConfig& train = options.config.train;
  std::string methods, init, objective, target_inputs, attention, scale_search, exports, format, expert_calibration, seed;
  std::string target_size, candidates;
  Options::Budget budget;
  po::options_description flags("quantize_model: quantize a Llama-family checkpoint layer by layer and evaluate it");
  flags.add_options()
      ("help", "print this help")
      ("model", po::value(&options.model)->required(), "input checkpoint directory (config.json + model.safetensors or a sharded index)")
      ("out", po::value(&options.out), "output directory (replaced atomically); with several methods, one subdirectory per method")
      ("method", po::value(&methods)->default_value("gsq"), "rtn, gptq or gsq, or a comma list (e.g. rtn,gptq,gsq)")
      ("bits", po::value<std::string>()->default_value("2"), "grid: ternary, 2, 3 or 4")
      ("group", po::value<std::string>()->default_value("128"), "input columns per scale: 64, 128, 256, or per-channel (0)")
      ("format", po::value(&format), "instead of --bits/--group, a llama.cpp format. In lower case, every linear in one "
                                     "K-quant: q2_k, q3_k, q4_k, q5_k or q6_k (2.625, 3.4375, 4.5, 5.5, 6.5625 bits per "
                                     "weight; rows whole super-blocks of 256), or q4_1, q5_1 (5, 6; blocks of 32 with an "
                                     "fp16 scale and min). In llama-quantize's upper case, its preset "
                                     "for this model, each linear in the type llama-quantize gives it: Q2_K, Q3_K_S, Q3_K_M, "
                                     "Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_0 (as with an "
                                     "importance matrix; docs/k_quants.md). rtn is the importance-weighted fit (K-quants) or the "
                                     "weighted scale search, gptq GPTQ in each type, gsq trains the codes under GPTQ's scales; "
                                     "--export gguf writes each linear in its type")
      ("like", po::value(&options.like), "instead of --bits/--group/--format, the layout of an existing GGUF of this model "
                                          "(llama-quantize's, a hand-made mix): each linear in the ggml type that file gives it")
      ("target-bpw", po::value(&budget.bits_per_weight), "instead of --bits/--group/--format, a size budget in bits per weight over the "
                                                          "whole file (embeddings, head and norms included): each tensor's type chosen "
                                                          "from --candidates by its measured effect on the model's output, the least total "
                                                          "KL that fits (docs/budget.md). The file is the GGUF, or with --export "
                                                          "compressed-tensors that checkpoint (q/k/v and gate/up sharing a scheme)")
      ("target-size", po::value(&target_size), "the budget as the file's tensor bytes instead (e.g. 1236480)")
      ("candidates", po::value(&candidates), "what a budget chooses from: ggml types for a GGUF (default Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0, "
                                             "each as llama-quantize writes it for rows that are not whole blocks of it), grid schemes "
                                             "for compressed-tensors (default int2-g128,int3-g128,int4-g128,int8-g128; "
                                             "int2/int3/int4/int8 with -g32, -g64, -g128, -g256 or -per-channel)")
      ("sensitivity", po::value(&budget.sensitivity), "with a budget, the file each tensor's measured sensitivity is kept in: "
                                                       "read when it holds this model's, calibration's and candidates' "
                                                       "measurement, else measured and written there (another budget then "
                                                       "costs no measurement)")
      ("sensitivity-windows", po::value(&budget.windows)->default_value(8), "with a budget, the calibration windows (--calib-window) "
                                                                             "each tensor's divergence is measured on")
      ("plan-only", po::bool_switch(&budget.plan_only), "with a budget, print each tensor's chosen type, the size and the predicted "
                                                         "KL, and stop (no --out needed)")
      ("objective", po::value(&objective)->default_value("layer-output"), "what GSQ trains on: layer-output (q, k, v, o, gate, up, down jointly on the decoder layer's output, from --init; dense layers; docs/layer_objective.md), block (the paper's recipe: gate/up/down jointly on the SwiGLU block's output, attention by GPTQ; the default for Mixture-of-Experts and latent-attention models) or layer (each projection on its Hessian objective; the default with --format)")
      ("target-inputs", po::value(&target_inputs)->default_value("full-precision"), "layer-output objective: the full-precision layer it matches runs on the quantized model's inputs to the layer (quantized) or on the full-precision model's (full-precision: the layer also makes up for the earlier layers' error)")
      ("attention", po::value(&attention)->default_value("gptq"), "attention projections under --method gsq: gptq (the reference) or gsq (Hessian objective); with --format: gsq")
      ("init", po::value(&init)->default_value("gptq"), "GSQ's starting point: gptq (the paper's recipe) or rtn")
      ("steps", po::value(&train.steps)->default_value(640), "GSQ optimizer steps per layer (or per MLP block)")
      ("tau-start", po::value(&train.anneal.tau_start)->default_value(2.0), "temperature at the first step")
      ("tau-end", po::value(&train.anneal.tau_end)->default_value(0.05), "temperature at the last step")
      ("kappa-start", po::value(&train.anneal.kappa_start)->default_value(100.0), "logit scale at the first step")
      ("kappa-end", po::value(&train.anneal.kappa_end)->default_value(500.0), "logit scale at the last step")
      ("lr-logits", po::value(&train.logits.learning_rate)->default_value(1e-4), "Lion learning rate of the logits (with --format: 3e-4)")
      ("lr-scales", po::value(&train.scales.learning_rate)->default_value(5e-5), "Lion learning rate of the scales (with --format: 0)")
      ("batches", po::value(&options.config.block_batches)->default_value(64), "mini-batches the calibration tokens are cut into (block objective; layer-output: whole sequences, at least one each)")
      ("expert-calibration", po::value(&expert_calibration)->default_value("routed"), "Mixture-of-Experts models: each expert is calibrated on the tokens the router sends it (routed) or on all tokens (all); the layer's output always mixes the experts as routed")
      ("expert-min-tokens", po::value(&options.config.expert_min_tokens)->default_value(0.005), "an expert routed fewer than this share of the calibration tokens is quantized by RTN on its weights alone (and listed so in the manifest)")
      ("scale-search", po::value(&scale_search)->default_value("weighted"), "scale fit of RTN and GPTQ: maxabs, mse or weighted (diag(H)-weighted search; wins on the layers measured, docs/quantize_layer.md)")
      ("percdamp", po::value(&options.config.gptq.percdamp)->default_value(0.01), "GPTQ damping, a fraction of mean(diag H)")
      ("act-order", po::bool_switch(&options.config.gptq.act_order), "GPTQ processes columns by decreasing diag(H)")
      ("calib", po::value(&options.calib)->required(), "calibration data: a UTF-8 text file named *.txt, tokenized by the "
                                                       "model's own tokenizer.json as transformers does (see --tokenizer), or token ids "
                                                       "(raw uint32 or .npy); with --byte-tokens, any file read as bytes")
      ("calib-tokens", po::value(&options.calib_tokens)->default_value(8192), "calibration tokens used (0: all)")
      ("calib-window", po::value(&options.calib_window)->default_value(256), "tokens per calibration sequence")
      ("eval", po::value(&options.eval),
       "evaluation tokens (same formats as --calib); each quantized model is scored on them beside the original: bits "
       "per token, and its KL divergence from the original and same-top-token rate (the manifest's \"comparison\" holds "
       "every statistic of evaluate_model --reference); omitted: no evaluation")
      ("window", po::value(&options.window)->default_value(256), "evaluation window: window-1 predictions each")
      ("layer-kl-windows", po::value(&options.layer_kl_windows)->default_value(4),
       "with --eval: on its first windows, each decoder layer's own share of the divergence, the original model run with "
       "only that layer quantized (KL, same top token; progress lines and the manifest's \"layer_divergence\"); 0: off")
      ("expert-kl", po::bool_switch(&options.expert_kl),
       "with --layer-kl-windows, also each routed expert's own share (\"expert_divergence\"): a forward pass from its layer up "
       "per expert, and the mixture layers held in memory as floats meanwhile")
      ("tokenizer", po::value(&options.tokenizer), "the tokenizer.json (or a directory holding one) that tokenizes a --calib "
                                                    "or --eval *.txt (default: --model's own)")
      ("byte-tokens", po::bool_switch(&options.byte_tokens), "read --calib and --eval as bytes, each byte one token (byte-level "
                                                             "models; tables then say bits/byte)")
      ("seed", po::value(&seed)->default_value("0"), "seed of the logit initialisation and the Gumbel noise (0 to 2^64 - 1)")
      ("threads", po::value(&options.threads)->default_value(0), "threads (0: all cores); results do not depend on it")
      ("export", po::value(&exports), "also write each method's model for other engines, inside its output: a comma list of "
                                       "compressed-tensors (transformers, vLLM), gptq (transformers, vLLM), gguf (llama.cpp); "
                                       "see docs/run_elsewhere.md")
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
  gsq::require(!(values.count("format") && values.count("like")), "--format and --like both choose the format: give one");
  gsq::require(!(values.count("target-bpw") && values.count("target-size")), "--target-bpw and --target-size both set the budget: give one");
  options.exports = gsq::parse_exports(exports);
  if (values.count("target-bpw") || values.count("target-size")) {
    gsq::require(!values.count("format") && !values.count("like") && values["bits"].defaulted() && values["group"].defaulted(),
                 "a budget (--target-bpw, --target-size) chooses every tensor's type: give no --bits, --group, --format or --like");
    if (values.count("target-size")) {
      const std::uint64_t bytes = gsq::driver::parse_unsigned("--target-size", target_size);
      gsq::require(bytes > 0, "--target-size must be positive");
      budget.bytes = bytes;
    } else {
      gsq::require(std::isfinite(budget.bits_per_weight) && budget.bits_per_weight > 0,
                   "--target-bpw must be a positive number of bits per weight");
    }
    const auto exported = [&](const char* name) {
      return std::any_of(options.exports.begin(), options.exports.end(), [&](const gsq::ExportFormat& format) { return name == std::string(format.name); });
    };
    gsq::require(!exported("gptq"), "--export gptq: a budget's mix of grid schemes is written as compressed-tensors (GPTQ checkpoints "
                                    "of a mix, GPTQModel's per-module overrides, are not checked against their loaders)");
    gsq::require(!(exported("gguf") && exported("compressed-tensors")),
                 "a budget is solved for one file: give --export gguf or --export compressed-tensors, not both");
    const bool schemes = exported("compressed-tensors");
    if (!values.count("candidates"))
      candidates = schemes ? "int2-g128,int3-g128,int4-g128,int8-g128" : "Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0";
    for (const std::string& name : split(candidates)) {
      if (schemes) budget.schemes.push_back(gsq::grid_scheme_named(name, "--candidates"));
      else budget.types.push_back(gsq::ggml_type_named(name, "--candidates"));
    }
    gsq::require(!candidates.empty(), "--candidates names no type");
    gsq::require(budget.windows > 0, "--sensitivity-windows must be positive");
    options.budget = budget;
  } else {
    gsq::require(!values.count("sensitivity") && !budget.plan_only && !values.count("candidates") &&
                     values["sensitivity-windows"].defaulted(),
                 "--candidates, --sensitivity, --sensitivity-windows and --plan-only go with a budget: give --target-bpw or --target-size");
  }
  gsq::require(!options.out.empty() || budget.plan_only, "--out is required (except with --plan-only)");
  const bool grid_budget = options.budget && options.budget->types.empty();  // a mix of grid schemes: the grid's defaults
  if (grid_budget) options.preset = "budget";  // the mix itself is chosen once the sensitivity is measured
  if (!grid_budget && (values.count("format") || values.count("like") || options.budget)) {
    const bool preset = values.count("format") && std::any_of(format.begin(), format.end(), [](char c) { return std::isupper(c); });
    if (preset) options.preset = format;
    if (options.budget) {
      options.preset = "budget";  // the mix itself is chosen once the sensitivity is measured
    } else if (values.count("like") || preset) {
      const gsq::LlamaConfig model = gsq::LlamaConfig::load(options.model + "/config.json");
      options.mix = values.count("like") ? gsq::ggml_mix_like(model, gsq::GgufFile::open(options.like))
                                         : gsq::llama_quantize_mix(model, gsq::Checkpoint::open(options.model),
                                                                   gsq::llama_quantize_preset(format));
    } else {
      options.k_quant = &gsq::k_quant_format_named(format);
    }
    gsq::require(values["bits"].defaulted() && values["group"].defaulted(),
                 std::string(values.count("like") ? "--like" : "--format") + " replaces --bits and --group: give one or the other");
    const gsq::TrainConfig k_quant_defaults = gsq::k_quant_train_config();
    if (values["lr-logits"].defaulted()) train.logits.learning_rate = k_quant_defaults.logits.learning_rate;
    if (values["lr-scales"].defaulted()) train.scales.learning_rate = k_quant_defaults.scales.learning_rate;
    // In the K-quant formats GSQ on each layer's Hessian objective, attention included, gave the
    // bundled model's lowest loss; the block objective fitted the calibration set and lost
    // (docs/k_quants.md).
    if (values["objective"].defaulted()) objective = "layer";
    if (values["attention"].defaulted() && objective != "layer-output") attention = "gsq";
  } else if (values["objective"].defaulted() &&
             !gsq::DecoderLayerObjective<>::supports(gsq::LlamaConfig::load(options.model + "/config.json"))) {
    objective = "block";  // the layer-output objective trains dense layers only
  }
  options.config.gsq_init = gsq::parse_method(init);
  options.config.objective = gsq::parse_gsq_objective(objective);
  options.config.target_inputs = gsq::parse_target_inputs(target_inputs);
  options.config.expert_calibration = gsq::parse_expert_calibration(expert_calibration);
  gsq::require(attention == "gptq" || attention == "gsq", "--attention must be gptq or gsq, got '" + attention + "'");
  options.config.gsq_attention = attention == "gsq";
  options.config.gptq.scale_fit = gsq::parse_scale_fit(scale_search);
  train.seed = gsq::driver::parse_unsigned("--seed", seed);
  options.config.logit_init.seed = train.seed;
  gsq::require(options.calib_tokens >= 0 && options.calib_window >= 2 && options.window >= 2,
               "--calib-tokens must not be negative, --calib-window and --window at least 2");
  gsq::require(options.stop_after >= 0, "--stop-after must not be negative");
  gsq::require(options.layer_kl_windows >= 0, "--layer-kl-windows must not be negative");
  gsq::require(!options.expert_kl || (options.layer_kl_windows > 0 && !options.eval.empty()),
               "--expert-kl measures on the --layer-kl-windows first windows of --eval: give --eval and --layer-kl-windows above 0");
  options.config.validate();
  return options;
}

/// Calls visitor(format) with the linear format the options name (gsq/pipeline/linear_format.hpp):
/// --format's or --like's mix, --format's K-quant layout, or --bits and --group's grid format.
template <class Visitor>
void visit_format(const Options& options, Visitor&& visitor) {
  if (options.mix)
    visitor(gsq::GgmlMixFormat(options.mix->quantized_tensors()));
  else if (options.schemes)
    visitor(gsq::GridMixFormat(*options.schemes));
  else if (options.k_quant)
    KQuantLayoutChoice("--format", options.k_quant->name).visit([&](auto layout) {
      visitor(gsq::KQuantLinearFormat<gsq::type_of<decltype(layout)>>());
    });
  else
    gsq::dispatch([&](auto grid, auto grouping) {
      visitor(gsq::GridFormat<gsq::type_of<decltype(grid)>, gsq::type_of<decltype(grouping)>>());
    }, options.grid, options.grouping);
}

/// The "bits" and "group" labels of the run's format: a preset's name and "mix", "like" and the
/// file's name, or the driver's.
std::string bits_label(const Options& options) {
  return !options.mix && !options.schemes ? gsq::driver::bits_label(options) : options.like.empty() ? options.preset : "like";
}
std::string group_label(const Options& options) {
  return !options.mix && !options.schemes ? gsq::driver::group_label(options)
         : options.like.empty()           ? "mix"
                                          : fs::path(options.like).filename().string();
}


/// Bits per parameter of the linears: the format's, or a mix's average over them.
double linear_bits_per_parameter(const Options& options, const gsq::LlamaConfig& config) {
  double bits = 0, parameters = 0;
  for (long layer = 0; layer < config.layers; ++layer)
    for (const gsq::LinearShape& linear : config.linears(layer)) {
      const double count = static_cast<double>(linear.rows * linear.cols);
      const std::string name = gsq::LlamaModel::tensor_name(layer, linear.name);
      if (options.mix) {
        bits += 8.0 * static_cast<double>(gsq::ggml_bytes(options.mix->linears.at(name), static_cast<std::size_t>(count)));
      } else if (options.schemes) {
        bits += count * gsq::with_grid_format(options.schemes->at(name), name, [&](auto format) {
          return gsq::type_of<decltype(format)>::bits_per_parameter(linear.cols);
        });
      } else {
        visit_format(options, [&](const auto& format) {
          using Format = std::decay_t<decltype(format)>;
          if constexpr (!std::is_same<Format, gsq::GgmlMixFormat>::value && !std::is_same<Format, gsq::GridMixFormat>::value)
            bits += count * format.bits_per_parameter(linear.cols);
        });
      }
      parameters += count;
    }
  return bits / parameters;
}

/// What a run reads, checked, and where it writes, claimed: all before any work or any file.
struct Plan {
  std::vector<gsq::TokenId> calibration, evaluation;
  std::vector<std::string> outs;  // one output directory per method
  std::string parent;             // with several methods, the directory that holds their outputs
  std::string json, dump_layers;
  nlohmann::json inputs;  // what a resumed run must find unchanged
  gsq::SensitivityTable sensitivity;  // a budget's tensors and candidates: measured, or read from --sensitivity
  std::uint64_t budget_bytes = 0;
  nlohmann::json budget;              // the budget's plan, for the manifests
};

/// What a resumed run must find unchanged (docs/files.md): the files the run reads, whole, and the
/// checkpoint's tensors outside the decoder layers (each layer's own are checked with its unit).
nlohmann::json input_fingerprints(const Options& options) {
  nlohmann::json inputs;
  const auto add = [&](const std::string& name, const std::string& path, nlohmann::json fingerprint) {
    fingerprint["path"] = path;
    inputs[name] = std::move(fingerprint);
  };
  for (const char* file : {"config.json", "tokenizer.json", "tokenizer_config.json"}) {
    const std::string path = options.model + "/" + file;
    if (fs::exists(path)) add(std::string("--model's ") + file, path, gsq::file_fingerprint(path));
  }
  if (!options.tokenizer.empty()) {
    const std::string tokenizer = gsq::tokenizer_file(options.tokenizer);
    add("--tokenizer", tokenizer, gsq::file_fingerprint(tokenizer));
  }
  add("--calib", options.calib, gsq::file_fingerprint(options.calib));
  if (!options.eval.empty()) add("--eval", options.eval, gsq::file_fingerprint(options.eval));
  add("--model's tensors outside the decoder layers in", options.model,
      gsq::tensors_fingerprint(gsq::Checkpoint::open(options.model),
                               [](const std::string& name) { return name.rfind("model.layers.", 0) != 0; }));
  return inputs;
}

std::vector<gsq::TokenId> read_checked_tokens(const std::string& flag, const std::string& path, const gsq::TokenSource& source,
                                              long vocabulary) {
  try {
    std::vector<gsq::TokenId> tokens = source.read(path);
    gsq::require_token_ids_below(tokens.data(), tokens.size(), vocabulary);
    return tokens;
  } catch (const gsq::SystemError&) {
    throw;
  } catch (const gsq::Error& error) {
    throw gsq::Error(flag + " " + path + ": " + error.what());
  }
}

/// How a budget's sensitivity is measured: as the run starts each tensor (GPTQ, or RTN when only RTN runs).
gsq::SensitivityOptions sensitivity_options(const Options& options) {
  gsq::SensitivityOptions measure;
  const bool rtn_only = std::all_of(options.methods.begin(), options.methods.end(), [](gsq::Method m) { return m == gsq::Method::rtn; });
  measure.method = rtn_only ? gsq::Method::rtn : gsq::Method::gptq;
  measure.gptq = options.config.gptq;
  measure.expert_min_tokens = options.config.expert_min_tokens;
  measure.window = options.calib_window;
  measure.windows = options.budget->windows;
  return measure;
}

Plan plan_run(const Options& options) {
  const gsq::LlamaConfig model = gsq::LlamaConfig::load(options.model + "/config.json");
  gsq::LlamaModel::check_checkpoint(model, gsq::Checkpoint::open(options.model));  // before its sizes are trusted
  model.require_within_positions(options.calib_window, "--calib-window: calibration sequences of");
  if (!options.eval.empty()) model.require_within_positions(options.window, "--window: evaluation windows of");
  if (!options.budget)  // a budget's candidates are taken as each tensor's rows allow
    visit_format(options, [&](const auto& format) {
      for (long layer = 0; layer < model.layers; ++layer)
        for (const gsq::LinearShape& linear : model.linears(layer))
          format.require_fits(gsq::LlamaModel::tensor_name(layer, linear.name), linear.cols);
    });
  const bool gsq_run = std::find(options.methods.begin(), options.methods.end(), gsq::Method::gsq) != options.methods.end();
  if (gsq_run && options.config.objective == gsq::GsqObjective::layer_output)  // refused before OUT.partial exists
    for (long layer = 0; layer < model.layers; ++layer) gsq::DecoderLayerObjective<>::require_supported(model, layer);
  Plan plan;
  gsq::require(options.calib_tokens == 0 || options.calib_tokens >= options.calib_window,
               "--calib-tokens " + std::to_string(options.calib_tokens) + " is less than one calibration sequence (--calib-window " +
                   std::to_string(options.calib_window) + "): calibration uses whole sequences");
  const gsq::TokenSource tokens(options.tokenizer.empty() ? options.model : options.tokenizer, options.byte_tokens);
  plan.calibration = read_checked_tokens("--calib", options.calib, tokens, model.vocab_size);
  const std::size_t available = plan.calibration.size();
  if (options.calib_tokens > 0 && static_cast<long>(available) > options.calib_tokens)
    plan.calibration.resize(static_cast<std::size_t>(options.calib_tokens));
  const auto window = static_cast<std::size_t>(options.calib_window);
  plan.calibration.resize(plan.calibration.size() / window * window);
  gsq::require(!plan.calibration.empty(), "--calib " + options.calib + " holds " + std::to_string(available) +
                                              " calibration tokens, fewer than --calib-window = " + std::to_string(window));
  if (options.calib_tokens > static_cast<long>(plan.calibration.size()) && !options.quiet)
    std::fprintf(stderr, "note: --calib-tokens %ld, but --calib holds %zu tokens: using %zu (whole windows of %zu)\n",
                 options.calib_tokens, available, plan.calibration.size(), window);
  gsq::require_memory(model.forward_bytes(static_cast<long>(plan.calibration.size()), options.calib_window),
                      "calibrating on " + std::to_string(plan.calibration.size()) + " tokens in windows of " +
                          std::to_string(window) + " (--calib-tokens, --calib-window)");
  if (!options.eval.empty()) {
    plan.evaluation = read_checked_tokens("--eval", options.eval, tokens, model.vocab_size);
    gsq::require_memory(2 * gsq::evaluation_bytes(model, options.window),  // each quantized model beside the original
                        "an evaluation window of " + std::to_string(options.window) + " tokens (--window)");
    gsq::require_memory(gsq::layer_divergence_bytes(model, options.window, options.layer_kl_windows),
                        "each layer's divergence on " + std::to_string(options.layer_kl_windows) + " windows (--layer-kl-windows)");
  }

  if (options.budget) {  // the budget checked, and the kept measurement read, before any work
    const Options::Budget& budget = *options.budget;
    const gsq::Checkpoint checkpoint = gsq::Checkpoint::open(options.model);
    plan.sensitivity = budget.types.empty() ? gsq::sensitivity_table(model, checkpoint, budget.schemes)
                                            : gsq::sensitivity_table(model, checkpoint, budget.types);
    plan.budget_bytes = budget.bytes > 0 ? budget.bytes : gsq::budget_bytes_of_bpw(plan.sensitivity, budget.bits_per_weight);
    gsq::require_budget(plan.sensitivity, plan.budget_bytes, budget.bytes > 0 ? "--target-size" : "--target-bpw");
    if (!options.exports.empty()) {  // what the export needs of the model (its tokenizer, ...), whatever the plan
      const gsq::BudgetPlan any_plan{std::vector<std::size_t>(plan.sensitivity.tensors.size(), 0)};
      gsq::require_exportable(options.exports,
                              budget.types.empty()
                                  ? gsq::QuantizedModel::planned(options.model, gsq::budget_schemes(plan.sensitivity, any_plan))
                                  : gsq::QuantizedModel::planned(options.model, gsq::budget_mix(model, plan.sensitivity, any_plan, "").linears));
    }
    const nlohmann::json settings = gsq::sensitivity_settings(plan.sensitivity, checkpoint,
                                                              plan.calibration, sensitivity_options(options));
    if (!budget.sensitivity.empty() && fs::exists(budget.sensitivity))
      plan.sensitivity = gsq::load_sensitivity(budget.sensitivity, settings);
    else
      plan.sensitivity.settings = settings;
  }
  if (options.mix && !options.exports.empty()) {  // what each export can hold, before any work
    gsq::require_exportable(options.exports, gsq::QuantizedModel::planned(options.model, options.mix->linears));
  } else if (options.k_quant && !options.exports.empty()) {
    gsq::require_exportable(options.exports, gsq::QuantizedModel::planned(options.model, *options.k_quant));
  } else if (!options.exports.empty()) {
    gsq::dispatch(
        [&](auto grid, auto grouping) {
          using Grouping = gsq::type_of<decltype(grouping)>;
          gsq::require_exportable(options.exports,
                                  gsq::QuantizedModel::planned(options.model, gsq::grid_spec<gsq::type_of<decltype(grid)>>(),
                                                               [](long cols) { return Grouping::group_width(static_cast<int>(cols)); }));
        },
        options.grid, options.grouping);
  }

  std::vector<gsq::NamedPath> inputs{{"--model", options.model}, {"--calib", options.calib}, {"--eval", options.eval}};
  if (plan.sensitivity.measured) inputs.push_back({"--sensitivity", options.budget->sensitivity});
  std::vector<gsq::NamedPath> apart = inputs;
  const bool plan_only = options.budget && options.budget->plan_only;
  if (!plan_only && options.methods.size() == 1) {
    plan.outs.push_back(gsq::claim_output({"--out", options.out}, gsq::OutputKind::directory, inputs));
  } else if (!plan_only) {
    // Several methods: one output each inside --out, which its own manifest marks as gsq's.
    plan.parent = gsq::claim_output({"--out", options.out}, gsq::OutputKind::directory, inputs);
    std::ifstream earlier(plan.parent + "/manifest.json");
    gsq::require(!fs::exists(plan.parent) || nlohmann::json::parse(earlier, nullptr, false).contains("methods"),
                 "--out " + options.out + " holds the output of a single method; a run of several methods writes one "
                 "directory per method inside --out: choose another path or move it away");
    for (gsq::Method method : options.methods)
      plan.outs.push_back(gsq::claim_output({"--out", plan.parent + "/" + gsq::method_name(method)}, gsq::OutputKind::directory, inputs));
  }
  for (const std::string& out : plan.outs) {
    gsq::ResumableOutput::require_startable(out, {options.resume, "--resume"});
    apart.push_back({"--out", out, true});
  }
  if (!options.json.empty() && !plan_only) {
    plan.json = gsq::claim_output({"--json", options.json}, gsq::OutputKind::file, apart);
    apart.push_back({"--json", plan.json, true});
  }
  if (!options.dump_layers.empty() && !plan_only)
    plan.dump_layers = gsq::claim_output({"--dump-layers", options.dump_layers}, gsq::OutputKind::container, apart);
  if (options.budget && !options.budget->sensitivity.empty() && !plan.sensitivity.measured)  // kept apart from every output
    gsq::claim_output({"--sensitivity", options.budget->sensitivity}, gsq::OutputKind::file, apart);
  plan.inputs = input_fingerprints(options);
  return plan;
}

/// The settings a run's result depends on, as used: a resumed run must have the same.
nlohmann::json run_settings(const Options& options, const gsq::ModelQuantizationConfig& config, std::size_t calib_tokens) {
  nlohmann::json settings = gsq::settings_json(config);
  settings.update({{"model", fs::absolute(options.model).string()}, {"bits", bits_label(options)},
                   {"group", group_label(options)}, {"calib", fs::absolute(options.calib).string()},
                   {"calib_tokens", calib_tokens}, {"calib_window", options.calib_window},
                   {"byte_tokens", options.byte_tokens}});
  if (options.mix) {  // a resumed run must quantize each linear into the same type
    nlohmann::json& types = settings["ggml_types"] = nlohmann::json::object();
    for (const auto& [name, type] : options.mix->linears) types[name] = gsq::ggml_type_name(static_cast<std::uint32_t>(type));
  }
  if (options.schemes) {
    nlohmann::json& schemes = settings["grid_schemes"] = nlohmann::json::object();
    for (const auto& [name, scheme] : *options.schemes) schemes[name] = scheme.name();
  }
  return settings;
}

struct ProgressPrinter {
  bool quiet;
  Clock::time_point last = Clock::now();
  void operator()(long layer, const std::string& part, const gsq::StepReport& step) {
    if (quiet || seconds_since(last) < 5) return;  // a line every few seconds, however many parts a layer has
    last = Clock::now();
    const double eta = step.elapsed_seconds / (step.step + 1) * (step.steps - step.step - 1);
    std::fprintf(stderr, "  layer %ld %s: step %ld/%ld, loss %.5f, %.0f s, ETA %.0f s\n", layer, part.c_str(),
                 step.step + 1, step.steps, step.loss, step.elapsed_seconds, eta);
  }
};

void print_layer(const gsq::LayerResult& result, const gsq::LayerProgress& progress) {
  const long layer = result.layer;
  if (!progress.resumed_from.empty()) {
    std::fprintf(stderr, "layer %ld/%ld: resumed from %s\n", layer + 1, progress.layers, progress.resumed_from.c_str());
    return;
  }
  // The dense linears by short name (q, k, v, o, gate, up, down; MLA's q_a ...); experts summarised.
  std::string names, errors;
  std::vector<long> expert_tokens;
  long without_data = 0;
  for (const gsq::LinearResult& linear : result.linears) {
    if (linear.tokens >= 0) {
      expert_tokens.push_back(linear.tokens);
      without_data += linear.fallback;
      continue;
    }
    std::string name = linear.name.substr(0, linear.name.size() - std::string(".weight").size());
    name = name.substr(name.rfind('.') + 1);
    const std::size_t proj = name.find("_proj");
    if (proj != std::string::npos) name.erase(proj, 5);
    char text[32];
    std::snprintf(text, sizeof text, " %.4f", linear.error);
    names += " " + name;
    errors += text;
  }
  const double eta = progress.elapsed_seconds / (layer + 1) * (progress.layers - layer - 1);
  std::fprintf(stderr, "layer %ld/%ld: rel. errors%s%s", layer + 1, progress.layers, names.c_str(), errors.c_str());
  if (!expert_tokens.empty())
    std::fprintf(stderr, ", %zu experts: %ld-%ld tokens each, %ld without data (RTN)", expert_tokens.size() / 3,
                 *std::min_element(expert_tokens.begin(), expert_tokens.end()),
                 *std::max_element(expert_tokens.begin(), expert_tokens.end()), without_data / 3);
  if (result.blocks.size() == 1)
    std::fprintf(stderr, ", %s %.4f (start %.4f)", result.blocks[0].name == "layer" ? "layer output" : "block",
                 result.blocks[0].error, result.blocks[0].init_error);
  if (result.blocks.size() > 1) {
    double error = 0, start = 0;
    for (const gsq::BlockResult& block : result.blocks) error += block.error, start += block.init_error;
    std::fprintf(stderr, ", %zu blocks: mean %.4f (start %.4f)", result.blocks.size(), error / result.blocks.size(),
                 start / result.blocks.size());
  }
  std::fprintf(stderr, ", %.1f s, ETA %.0f s\n", result.seconds, eta);
}

/// Saves each linear layer's W and H as DIR/<tensor>.safetensors (--dump-layers).
gsq::LinearObserver layer_dumper(const std::string& directory) {
  return [directory](const std::string& name, const gsq::Matrix<float>& weight, const gsq::Matrix<float>& hessian) {
    gsq::SafetensorsWriter writer;
    writer.add("W", weight);
    writer.add("H", hessian);
    writer.set_metadata("tensor", name);
    writer.set_metadata("producer", gsq::producer);
    writer.write(directory + "/" + name + ".safetensors");
  };
}

struct MethodRun {
  nlohmann::json manifest;
  double bpp = 0;
};

/// Quantizes with `method` into `out`. Every rank of `communicator` runs it and shares each
/// layer's work; rank 0 writes the files (the ranks share a file system) and evaluates, the other
/// ranks write their share of a sharded checkpoint.
MethodRun run_method(gsq::Method method, const Options& options, const Plan& plan, const std::string& out,
                     const gsq::Communicator& communicator) {
  const std::vector<gsq::TokenId>& calibration = plan.calibration;
  const std::vector<gsq::TokenId>& evaluation = plan.evaluation;
  const Clock::time_point start = Clock::now();
  const gsq::Checkpoint source = gsq::Checkpoint::open(options.model);
  gsq::LlamaModel model = gsq::LlamaModel::open(options.model);  // streamed: one decoder layer in memory at a time
  gsq::ModelQuantizationConfig config = options.config;
  config.method = method;
  const nlohmann::json settings = run_settings(options, config, calibration.size());
  const gsq::ResumableOutput output(out, settings, {options.resume, "--resume"}, plan.inputs, communicator);
  const bool quiet = options.quiet || communicator.rank() != 0;
  if (!quiet) std::fprintf(stderr, "%s: quantizing %s into %s\n", gsq::method_name(method), options.model.c_str(), out.c_str());

  nlohmann::json layers = nlohmann::json::array();
  const auto finished = [&](const gsq::LayerResult& result, const gsq::LayerProgress& progress) {
    layers.push_back(result);
    if (!quiet) print_layer(result, progress);
    const long done = result.layer + 1;
    if (options.stop_after > 0 && done == options.stop_after && done < progress.layers) throw Stopped{};
  };
  gsq::SafetensorsWriter packed;
  nlohmann::json beyond_layers = nlohmann::json::array();  // a mix's quantized embedding and head
  double bpp = 0;
  visit_format(options, [&](const auto& format) {
    using Format = std::decay_t<decltype(format)>;
    gsq::SequentialQuantizer<Format> quantizer(model, config, communicator, format);
    if (!plan.dump_layers.empty()) quantizer.observe_linears(layer_dumper(plan.dump_layers));
    packed = quantizer.quantize_layers(calibration, options.calib_window, output, finished, ProgressPrinter{quiet});
    for (const gsq::LinearResult& tensor : quantizer.beyond_layers()) {
      beyond_layers.push_back({{"name", tensor.name}, {"rel_error", tensor.error}});
      if (!quiet) std::fprintf(stderr, "%s: rel. error %.4f\n", tensor.name.c_str(), tensor.error);
    }
  });
  bpp = linear_bits_per_parameter(options, model.config());
  packed.set_metadata("method", gsq::method_name(method));
  const double quantize_seconds = seconds_since(start);

  nlohmann::json manifest = {{"producer", gsq::producer}, {"method", gsq::method_name(method)}, {"bits", bits_label(options)},
                             {"group", group_label(options)}, {"bpp", bpp}, {"settings", settings},
                             {"layers", layers}, {"quantize_seconds", quantize_seconds}};
  if (!beyond_layers.empty()) manifest["beyond_layers"] = beyond_layers;
  if (options.budget) manifest["budget"] = plan.budget, manifest["sensitivity"] = plan.sensitivity;
  if (!evaluation.empty() && communicator.rank() == 0) {  // judged beside the original (gsq/model/comparison.hpp)
    const Clock::time_point eval_start = Clock::now();
    gsq::EvaluationOptions eval_options;
    eval_options.window = options.window;
    const gsq::Comparison compared = gsq::compare(model, gsq::LlamaModel::open(options.model), evaluation, eval_options);
    manifest["evaluation"] = gsq::evaluation_of(compared);
    manifest["evaluation"]["seconds"] = seconds_since(eval_start);
    manifest["comparison"] = gsq::summarize(compared);
    if (options.layer_kl_windows > 0) {  // where the divergence comes from: each layer quantized alone
      eval_options.max_windows = options.layer_kl_windows;
      manifest["layer_divergence"] = gsq::layer_divergences(
          gsq::LlamaModel::open(options.model), model, evaluation, eval_options, [&](const gsq::LayerDivergence& layer) {
            if (!quiet)
              std::fprintf(stderr, "%s: layer %ld quantized alone: KL %.6f +- %.6f, same top %.2f%%\n", gsq::method_name(method),
                           layer.layer, layer.kl, layer.kl_error, 100 * layer.same_top);
          });
      if (options.expert_kl) {
        gsq::LlamaModel original = gsq::LlamaModel::open(options.model);
        manifest["expert_divergence"] = gsq::expert_divergences(
            original, model, evaluation, eval_options, [&](const gsq::LayerDivergence& expert) {
              if (!quiet)
                std::fprintf(stderr, "%s: layer %ld expert %ld quantized alone: KL %.6f +- %.6f, same top %.2f%%\n",
                             gsq::method_name(method), expert.layer, expert.expert, expert.kl, expert.kl_error, 100 * expert.same_top);
            });
      }
    }
  }

  output.publish([&](const std::string& directory) {
    gsq::write_checkpoint(model, options.model, source, directory, gsq::default_shard_bytes, communicator);
    if (communicator.rank() != 0) return;  // the other ranks have written their share of the shards
    packed.write(directory + "/quantized.safetensors");
    if (!options.exports.empty()) {
      gsq::QuantizedModel quantized = gsq::QuantizedModel::open(directory, directory + "/quantized.safetensors");
      quantized.name = gsq::directory_name(options.model);  // the input model's, whatever the output's
      const auto gguf = [](const gsq::ExportFormat& format) { return std::string(format.name) == "gguf"; };
      if (std::any_of(options.exports.begin(), options.exports.end(), gguf)) {  // its tokenizer.ggml.pre
        const gsq::LlamaCppPreTokenizer pre = gsq::llama_cpp_pre_tokenizer(gsq::Tokenizer::from_file(directory));
        quantized.tokenizer_pre = pre.name;
        if (!pre.warning().empty()) std::fprintf(stderr, "%s: warning: %s\n", gsq::method_name(method), pre.warning().c_str());
      }
      for (const gsq::ExportFormat& format : options.exports) {
        if (!options.quiet) std::fprintf(stderr, "%s: writing the %s export\n", gsq::method_name(method), format.name);
        format.write(quantized, directory + "/" + format.path);
        manifest["exports"][format.name] = format.path;
      }
    }
    gsq::write_json_atomically(directory + "/manifest.json", manifest);
  });
  if (communicator.rank() != 0) return {};
  return {manifest, bpp};
}

/// One row of the table: a method's size, its evaluation, and its divergence from the original
/// (mean KL in nats, the rate of predictions whose top token is the original's), if evaluated.
void print_row(const std::string& method, const std::string& bits, const std::string& group, double bpp,
               const nlohmann::json& evaluation, const nlohmann::json& comparison, double seconds) {
  const auto shown = [](const nlohmann::json& value, const char* format, double scale) {
    if (!value.is_number()) return std::string("-");
    char text[32];
    std::snprintf(text, sizeof text, format, scale * value.get<double>());
    return std::string(text);
  };
  const bool compared = comparison.is_object();
  std::printf("%-8s %-8s %-12s %7.3f %12s %10s %9s %9s %9.1f\n", method.c_str(), bits.c_str(), group.c_str(), bpp,
              shown(evaluation.is_object() ? evaluation["bits_per_token"] : nlohmann::json(), "%.5f", 1).c_str(),
              shown(evaluation.is_object() ? evaluation["ppl"] : nlohmann::json(), "%.5f", 1).c_str(),
              shown(compared ? comparison["kl"]["mean"] : nlohmann::json(), "%.5f", 1).c_str(),
              shown(compared ? comparison["same_top"]["value"] : nlohmann::json(), "%.2f%%", 100).c_str(), seconds);
}

/// The budget's plan: each tensor's type by layer, the totals and the prediction.
void print_budget(const gsq::SensitivityTable& table, const gsq::BudgetPlan& plan) {
  std::printf("budget %llu bytes (%.4f bits per weight): the plan takes %llu bytes (%.4f bits per weight), predicted KL %.5f\n",
              static_cast<unsigned long long>(plan.budget), 8.0 * plan.budget / table.parameters,
              static_cast<unsigned long long>(plan.bytes), plan.bits_per_weight(table), plan.predicted_kl);
  std::string layer, line;
  for (std::size_t i = 0; i < table.tensors.size(); ++i) {
    std::string name = table.tensors[i].name;  // "blk.3.attn_q.weight", "model.layers.3.self_attn.q_proj+k_proj+v_proj"
    if (name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0) name.resize(name.size() - 7);
    const std::size_t start = name.rfind("blk.", 0) == 0 ? 4 : name.rfind("model.layers.", 0) == 0 ? 13 : std::string::npos;
    const std::size_t dot = start == std::string::npos ? std::string::npos : name.find('.', start);
    const std::string here = dot == std::string::npos ? "" : name.substr(0, dot);
    if (here != layer && !line.empty()) std::printf("%s\n", line.c_str()), line.clear();
    layer = here;
    line += (line.empty() && !here.empty() ? here + ":" : std::string()) + " " + (here.empty() ? name : name.substr(dot + 1)) + " " +
            table.tensors[i].choices[plan.choice[i]].type;
  }
  if (!line.empty()) std::printf("%s\n", line.c_str());
}

/// A budget's mix (options.mix or options.schemes): the sensitivity measured (or read), the plan
/// solved and printed.
void plan_budget(Options& options, Plan& plan, const gsq::Communicator& communicator) {
  const Options::Budget& budget = *options.budget;
  gsq::SensitivityTable& table = plan.sensitivity;
  if (!table.measured) {
    const Clock::time_point start = Clock::now();
    gsq::SensitivityOptions measure = sensitivity_options(options);
    const bool quiet = options.quiet || communicator.rank() != 0;
    measure.on_tensor = [&](const gsq::TensorSensitivity& tensor, long done, long total) {
      if (quiet) return;
      std::string kls;
      for (const gsq::SensitivityChoice& choice : tensor.choices) {
        char text[48];
        std::snprintf(text, sizeof text, " %s %.5f", choice.type.c_str(), choice.kl);
        kls += text;
      }
      const double elapsed = seconds_since(start);
      std::fprintf(stderr, "sensitivity %ld/%ld %s:%s, ETA %.0f s\n", done, total, tensor.name.c_str(), kls.c_str(),
                   elapsed / done * (total - done));
    };
    gsq::LlamaModel model = gsq::LlamaModel::load(options.model);
    gsq::measure_sensitivity(model, table, plan.calibration, measure);
    if (!budget.sensitivity.empty() && communicator.rank() == 0) gsq::save_sensitivity(budget.sensitivity, table);
    if (budget.sensitivity.empty() && budget.plan_only && !quiet)
      std::fprintf(stderr, "note: the measurement is not kept; with --sensitivity FILE the next budget reads it instead\n");
  }
  const gsq::BudgetPlan chosen = gsq::plan_budget(table, plan.budget_bytes);
  if (communicator.rank() == 0) print_budget(table, chosen);
  plan.budget = gsq::budget_json(table, chosen);
  if (table.format != "gguf") {
    options.schemes = gsq::budget_schemes(table, chosen);
    return;
  }
  char source[64];
  std::snprintf(source, sizeof source, "a budget of %.4f bits per weight", 8.0 * plan.budget_bytes / table.parameters);
  options.mix = gsq::budget_mix(gsq::LlamaConfig::load(options.model + "/config.json"), table, chosen, source);
}

int run(Options options, const gsq::Communicator& communicator) {
  gsq::driver::set_threads(options.threads);
  Plan plan = plan_run(options);
  communicator.barrier();  // every rank has checked the plan before rank 0 creates anything
  if (options.budget) {
    plan_budget(options, plan, communicator);
    if (options.budget->plan_only) return 0;
  }
  const std::vector<gsq::TokenId>& calibration = plan.calibration;
  const std::vector<gsq::TokenId>& evaluation = plan.evaluation;

  nlohmann::json baseline;
  const Clock::time_point baseline_start = Clock::now();
  if (!evaluation.empty() && communicator.rank() == 0) {
    gsq::EvaluationOptions eval_options;
    eval_options.window = options.window;
    baseline = gsq::evaluate(gsq::LlamaModel::open(options.model), evaluation, eval_options);
  }
  const double baseline_seconds = seconds_since(baseline_start);

  nlohmann::json methods = nlohmann::json::array();
  for (gsq::Method method : options.methods) methods.push_back(gsq::method_name(method));
  if (!plan.parent.empty() && communicator.rank() == 0)
    gsq::write_json_atomically(plan.parent + "/manifest.json", {{"producer", gsq::producer}, {"methods", methods}});
  nlohmann::json runs = nlohmann::json::array();
  std::vector<double> bpps;
  for (std::size_t i = 0; i < options.methods.size(); ++i) {
    MethodRun run = run_method(options.methods[i], options, plan, plan.outs[i], communicator);
    runs.push_back(run.manifest);
    bpps.push_back(run.bpp);
  }
  if (communicator.rank() != 0) return 0;
  if (!plan.parent.empty())  // an earlier run's output of a method this run did not make is stale now
    for (gsq::Method method : {gsq::Method::rtn, gsq::Method::gptq, gsq::Method::gsq})
      if (std::find(options.methods.begin(), options.methods.end(), method) == options.methods.end() &&
          gsq::is_gsq_output(plan.parent + "/" + gsq::method_name(method)))
        fs::remove_all(plan.parent + "/" + gsq::method_name(method));

  std::printf("model %s: %zu calibration tokens, %zu evaluation tokens (window %ld)\n", options.model.c_str(),
              calibration.size(), evaluation.size(), options.window);
  std::printf("%-8s %-8s %-12s %7s %12s %10s %9s %9s %9s\n", "method", "bits", "group", "bpp",
              options.byte_tokens ? "bits/byte" : "bits/token", "ppl", "KL", "same top", "seconds");
  if (!evaluation.empty()) print_row("original", "16", "-", 16, baseline, nlohmann::json(), baseline_seconds);
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const nlohmann::json& run = runs[i];
    print_row(run["method"], run["bits"], run["group"], bpps[i], run.contains("evaluation") ? run["evaluation"] : nlohmann::json(),
              run.contains("comparison") ? run["comparison"] : nlohmann::json(), run["quantize_seconds"].get<double>());
  }
  if (!plan.json.empty())
    gsq::write_json_atomically(plan.json, {{"producer", gsq::producer}, {"baseline", baseline}, {"runs", runs}});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
#ifdef GSQ_WITH_MPI
  gsq::MpiCommunicator communicator(&argc, &argv);
#else
  const gsq::Communicator& communicator = gsq::serial_communicator();
#endif
  const int status = gsq::driver::run("quantize_model", [&] {
    try {
      return run(parse_options(argc, argv), communicator);
    } catch (const Stopped&) {
      if (communicator.rank() == 0)
        std::fprintf(stderr, "quantize_model: stopped after --stop-after layers; continue with --resume\n");
      return 3;
    }
  });
  // An error on one rank ends them all: none waits forever in a collective.
  if (status != 0 && status != 3 && communicator.size() > 1) communicator.abort(status);
  return status;
}
