// experiments/evaluate_model.cpp -- evaluates a Llama-family checkpoint on a token stream: mean
// negative log-likelihood per predicted token, perplexity and bits per token, over
// non-overlapping windows (gsq/model/evaluation.hpp states the rule).
//
//   evaluate_model --model data/llama-bytes-3m --eval data/llama-bytes-3m/eval.txt --byte-tokens
//   evaluate_model --model DIR --eval tokens.npy --window 2048 --json result.json
//   evaluate_model --help                           every flag, with its default
#include <chrono>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include "driver.hpp"
#include <gsq/io/atomic_file.hpp>
#include <gsq/io/output_location.hpp>
#include <gsq/io/safetensors.hpp>
#include <gsq/model/evaluation.hpp>
#include <gsq/model/llama.hpp>

namespace po = boost::program_options;
using gsq::Clock;
using gsq::seconds_since;

namespace {

constexpr const char* program_name = "evaluate_model";

struct Options {
  std::string model;
  std::string eval;
  bool byte_tokens = false;
  gsq::EvaluationOptions evaluation;
  std::string json_path;
  int threads = 0;
  bool quiet = false;
};

/// Parses the command line; std::nullopt when --help was asked for (and printed).
std::optional<Options> parse_options(int argc, char** argv) {
  Options options;
  po::options_description flags("Options");
  flags.add_options()
      ("model", po::value(&options.model)->required(),
       "checkpoint directory: config.json plus model.safetensors or a sharded model.safetensors.index.json "
       "(LlamaForCausalLM, MistralForCausalLM or Qwen2ForCausalLM)")
      ("eval", po::value(&options.eval)->required(),
       "token stream to evaluate on: raw little-endian uint32 ids, a NumPy .npy array (<u4, <i4, <u2 or <i8), "
       "or with --byte-tokens a text file")
      ("byte-tokens", po::bool_switch(&options.byte_tokens),
       "read --eval as bytes, each byte one token id (for byte-level models)")
      ("window", po::value(&options.evaluation.window)->default_value(options.evaluation.window),
       "tokens per window: the stream is cut into non-overlapping windows (the incomplete tail dropped), each a "
       "fresh context scoring window - 1 predictions")
      ("max-windows", po::value(&options.evaluation.max_windows)->default_value(0),
       "evaluate only the first N windows (0: all)")
      ("json", po::value(&options.json_path),
       "also write the results to FILE as a JSON object: nll, ppl, bits_per_token, tokens (predictions), windows, "
       "window, seconds")
      ("threads", po::value(&options.threads)->default_value(options.threads), "host threads (0: OpenMP's default)")
      ("quiet", po::bool_switch(&options.quiet), "no progress lines on stderr")
      ("help", "print this help and exit");

  po::variables_map values;
  po::store(po::command_line_parser(argc, argv).options(flags).run(), values);
  if (values.count("help")) {
    std::cout << "Usage: " << program_name << " --model DIR --eval FILE [options]\n\n"
              << "Evaluates a Llama-family checkpoint on a token stream and prints the mean negative\n"
              << "log-likelihood per predicted token (nats), the perplexity, the bits per token (bits per\n"
              << "byte with --byte-tokens), the number of predictions and the evaluation time.\n"
              << "Progress goes to stderr.\n\n"
              << flags << "\n";
    return std::nullopt;
  }
  po::notify(values);
  gsq::require(options.evaluation.window >= 2, "--window must be at least 2, got " + std::to_string(options.evaluation.window));
  gsq::require(options.evaluation.max_windows >= 0, "--max-windows must not be negative");
  gsq::require(options.threads >= 0, "--threads must not be negative, got " + std::to_string(options.threads));
  return options;
}

/// Prints a progress line on stderr at most every two seconds, and at the end.
class ProgressPrinter {
 public:
  void operator()(long done, long total) {
    const double elapsed = seconds_since(start_);
    if (done < total && elapsed - printed_ < 2.0) return;
    printed_ = elapsed;
    const double eta = elapsed / static_cast<double>(done) * static_cast<double>(total - done);
    std::fprintf(stderr, "%s: window %ld/%ld (%3.0f%%)  elapsed %.1f s  eta %.1f s\n", program_name, done, total,
                 100.0 * static_cast<double>(done) / static_cast<double>(total), elapsed, eta);
  }

 private:
  Clock::time_point start_ = Clock::now();
  double printed_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  return gsq::driver::run(program_name, [&] {
    std::optional<Options> options = parse_options(argc, argv);
    if (!options) return 0;
    gsq::driver::set_threads(options->threads);
    if (!options->json_path.empty())
      options->json_path = gsq::claim_output({"--json", options->json_path}, gsq::OutputKind::file,
                                             {{"--model", options->model}, {"--eval", options->eval}});
    const gsq::LlamaConfig model_config = gsq::LlamaConfig::load(options->model + "/config.json");
    gsq::require_memory(gsq::evaluation_bytes(model_config, options->evaluation.window),
                        "an evaluation window of " + std::to_string(options->evaluation.window) + " tokens (--window)");
    model_config.require_within_positions(options->evaluation.window, "--window: evaluation windows of");

    const Clock::time_point loading = Clock::now();
    const gsq::LlamaModel model = gsq::LlamaModel::open(options->model);  // streamed, layer by layer
    const std::vector<gsq::TokenId> tokens =
        options->byte_tokens ? gsq::read_byte_tokens(options->eval) : gsq::read_token_file(options->eval);
    const gsq::LlamaConfig& config = model.config();
    std::printf("model: %s (%s, %ld layers, hidden %ld, vocabulary %ld), loaded in %.2f s\n", options->model.c_str(),
                config.architecture.c_str(), config.layers, config.hidden_size, config.vocab_size,
                seconds_since(loading));
    std::printf("eval: %s, %zu tokens, windows of %ld\n", options->eval.c_str(), tokens.size(), options->evaluation.window);
    std::fflush(stdout);

    if (!options->quiet) options->evaluation.on_progress = ProgressPrinter{};
    const Clock::time_point evaluating = Clock::now();
    const gsq::EvaluationResult result = gsq::evaluate(model, tokens, options->evaluation);
    const double seconds = seconds_since(evaluating);

    std::printf("nll %.6f nats/token  ppl %.4f  bits/token %.6f  tokens %ld (%ld windows)  time %.2f s\n",
                result.mean_nll(), result.perplexity(), result.bits_per_token(), result.predictions, result.windows,
                seconds);
    if (!options->json_path.empty()) {
      nlohmann::json record = result;
      record.update({{"producer", gsq::producer}, {"seconds", seconds}, {"model", options->model}, {"eval", options->eval},
                     {"byte_tokens", options->byte_tokens}});
      gsq::write_json_atomically(options->json_path, record);
    }
    return 0;
  });
}
