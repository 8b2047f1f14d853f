// experiments/evaluate_model.cpp -- evaluates a Llama-family checkpoint on a token stream: mean
// negative log-likelihood per predicted token, perplexity and bits per token, over
// non-overlapping windows (gsq/model/evaluation.hpp states the rule); with --reference, compared
// with the full-precision model as llama-perplexity --kl-divergence compares (KL divergence,
// same top token, Δp, perplexity ratio: gsq/model/comparison.hpp; docs/evaluation.md).
//
//   evaluate_model --model data/llama-bytes-3m --eval data/llama-bytes-3m/eval.txt --byte-tokens
//   evaluate_model --model DIR --eval tokens.npy --window 2048 --json result.json
//   evaluate_model --model QUANTIZED --reference ORIGINAL --eval tokens.npy --save-reference ref.safetensors
//   evaluate_model --model OTHER --reference ref.safetensors     the windows and tokens the file holds
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
#include <gsq/model/comparison.hpp>
#include <gsq/model/evaluation.hpp>
#include <gsq/model/gguf_checkpoint.hpp>
#include <gsq/model/llama.hpp>
#include <gsq/text/tokenizer.hpp>

namespace po = boost::program_options;
using gsq::Clock;
using gsq::seconds_since;

namespace {

constexpr const char* program_name = "evaluate_model";

struct Options {
  std::string model;
  std::string eval;
  std::string tokenizer;
  bool byte_tokens = false;
  gsq::EvaluationOptions evaluation;
  bool second_half = false;
  bool window_given = false;  // --window or --second-half on the command line
  std::string reference;        // a checkpoint directory, or a saved reference file
  std::string save_reference;
  long top_k = 64;
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
       "(the architectures quantize_model reads), or a llama.cpp GGUF file (FILE.gguf of architecture llama, qwen2, qwen3, "
       "qwen2moe, qwen3moe or deepseek2; any of "
       "the types F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K to Q6_K, TQ1_0, TQ2_0), read as its Hugging Face twin")
      ("eval", po::value(&options.eval),
       "what to evaluate on: a UTF-8 text file named *.txt, tokenized by the model's own tokenizer.json as transformers "
       "does (see --tokenizer), or token ids: raw little-endian uint32, a NumPy .npy array (<u4, <i4, <u2 or <i8); "
       "with --byte-tokens any file read as bytes (not needed with a saved --reference, which holds its tokens)")
      ("tokenizer", po::value(&options.tokenizer),
       "the tokenizer.json (or a directory holding one) that tokenizes an --eval *.txt (default: --model's own; "
       "needed for a GGUF --model)")
      ("byte-tokens", po::bool_switch(&options.byte_tokens),
       "read --eval as bytes, each byte one token id (for byte-level models)")
      ("window", po::value(&options.evaluation.window)->default_value(options.evaluation.window),
       "tokens per window: the stream is cut into non-overlapping windows (the incomplete tail dropped), each a "
       "fresh context scoring window - 1 predictions")
      ("second-half", po::bool_switch(&options.second_half),
       "score only the predictions of each window's second half, as llama-perplexity does (each scored token then "
       "sees at least half a window of context)")
      ("max-windows", po::value(&options.evaluation.max_windows)->default_value(0),
       "evaluate only the first N windows (0: all)")
      ("reference", po::value(&options.reference),
       "compare with a reference: the full-precision checkpoint directory or GGUF (run beside --model; exact), or a file "
       "--save-reference wrote (its windows and tokens; exact but for the KL divergence, a lower bound). Prints the "
       "KL divergence KL(P_ref || P_model) per prediction (mean, percentiles), the same-top-token rate, the change "
       "of the next token's probability and the perplexity ratio, each mean with its standard error, as "
       "llama-perplexity --kl-divergence does")
      ("save-reference", po::value(&options.save_reference),
       "with --reference DIR (or a GGUF): also keep the reference's --top-k most probable tokens of every prediction in FILE "
       "(safetensors, about 8 * k bytes per prediction), to compare other models without running the reference")
      ("top-k", po::value(&options.top_k)->default_value(options.top_k),
       "tokens per prediction --save-reference keeps")
      ("json", po::value(&options.json_path),
       "also write the results to FILE as a JSON object: nll, ppl, bits_per_token, tokens (predictions), windows, "
       "window, seconds; with --reference, \"comparison\" holds every statistic (docs/evaluation.md)")
      ("threads", po::value(&options.threads)->default_value(options.threads), "host threads (0: OpenMP's default)")
      ("quiet", po::bool_switch(&options.quiet), "no progress lines on stderr")
      ("help", "print this help and exit");

  po::variables_map values;
  po::store(po::command_line_parser(argc, argv).options(flags).run(), values);
  if (values.count("help")) {
    std::cout << "Usage: " << program_name << " --model DIR|FILE.gguf --eval FILE [--reference DIR|FILE] [options]\n\n"
              << "Evaluates a Llama-family checkpoint on a token stream and prints the mean negative\n"
              << "log-likelihood per predicted token (nats), the perplexity, the bits per token (bits per\n"
              << "byte with --byte-tokens), the number of predictions and the evaluation time; with\n"
              << "--reference, its KL divergence from the reference model and the other statistics of\n"
              << "llama-perplexity --kl-divergence (docs/evaluation.md). Progress goes to stderr.\n\n"
              << flags << "\n";
    return std::nullopt;
  }
  po::notify(values);
  options.window_given = !values["window"].defaulted() || options.second_half;
  gsq::require(options.evaluation.window >= 2, "--window must be at least 2, got " + std::to_string(options.evaluation.window));
  if (options.second_half) options.evaluation.first_scored = options.evaluation.window / 2;
  gsq::require(options.evaluation.first_scored < options.evaluation.window - 1, "--second-half needs a --window of at least 3");
  gsq::require(options.evaluation.max_windows >= 0, "--max-windows must not be negative");
  gsq::require(!options.eval.empty() || gsq::is_saved_reference(options.reference),
               "--eval is required (unless --reference names a saved reference, which holds its tokens)");
  gsq::require(options.save_reference.empty() || (!options.reference.empty() && !gsq::is_saved_reference(options.reference)),
               "--save-reference needs --reference DIR: the checkpoint whose predictions it keeps");
  gsq::require(options.top_k >= 1, "--top-k must be at least 1, got " + std::to_string(options.top_k));
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

/// Prints a comparison's summary in llama-perplexity --kl-divergence's order and units.
void print_comparison(const nlohmann::json& summary, const std::string& reference, bool saved) {
  const auto percent = [](const nlohmann::json& value) { return 100 * value.get<double>(); };
  std::printf("\ncompared with %s (%s)\n", reference.c_str(),
              saved ? "a saved reference: exact but for the KL divergence, a lower bound" : "exact");
  std::printf("====== perplexity ======\n");
  for (const char* key : {"ppl", "reference_ppl", "ln_ppl_ratio", "ppl_ratio", "ppl_difference"})
    std::printf("%-24s %12.6f +- %10.6f\n", key, summary[key]["value"].get<double>(), summary[key]["error"].get<double>());
  std::printf("%-24s %11.2f%%\n", "ppl_correlation", percent(summary["ppl_correlation"]));
  std::printf("====== KL divergence (nats) ======\n");
  const nlohmann::json& kl = summary["kl"];
  std::printf("%-24s %12.6f +- %10.6f\n", "mean", kl["mean"].get<double>(), kl["error"].get<double>());
  const nlohmann::json& truncated = summary["kl_llama_cpp"];  // to set beside llama-perplexity's figure
  std::printf("%-24s %12.6f +- %10.6f\n", "mean, llama.cpp's sum", truncated["mean"].get<double>(), truncated["error"].get<double>());
  for (const char* key : {"max", "p99.9", "p99", "p95", "p90", "median", "p10", "p5", "p1", "p0.1", "min"})
    std::printf("%-24s %12.6f\n", key, kl[key].get<double>());
  std::printf("====== next token probability: p_model - p_reference (%%) ======\n");
  const nlohmann::json& delta = summary["delta_p"];
  std::printf("%-24s %12.3f +- %10.3f\n", "mean", percent(delta["mean"]), percent(delta["error"]));
  for (const char* key : {"max", "p99.9", "p99", "p95", "p90", "p75", "median", "p25", "p10", "p5", "p1", "p0.1", "min"})
    std::printf("%-24s %12.3f\n", key, percent(delta[key]));
  std::printf("%-24s %12.3f +- %10.3f\n", "rms", percent(delta["rms"]), percent(delta["rms_error"]));
  const nlohmann::json& top = summary["top_delta_p"];
  std::printf("%-24s %12.3f +- %10.3f\n", "reference top token: rms", percent(top["rms"]), percent(top["rms_error"]));
  std::printf("%-24s %12.3f +- %10.3f\n", "same top token", percent(summary["same_top"]["value"]),
              percent(summary["same_top"]["error"]));
}

}  // namespace

int main(int argc, char** argv) {
  return gsq::driver::run(program_name, [&] {
    std::optional<Options> options = parse_options(argc, argv);
    if (!options) return 0;
    gsq::driver::set_threads(options->threads);
    std::vector<gsq::NamedPath> apart{{"--model", options->model}, {"--eval", options->eval}, {"--reference", options->reference}};
    if (!options->save_reference.empty()) {
      options->save_reference = gsq::claim_output({"--save-reference", options->save_reference}, gsq::OutputKind::file, apart);
      apart.push_back({"--save-reference", options->save_reference, true});
    }
    if (!options->json_path.empty())
      options->json_path = gsq::claim_output({"--json", options->json_path}, gsq::OutputKind::file, apart);

    // A saved reference brings its windows and tokens.
    const bool saved = gsq::is_saved_reference(options->reference);
    std::optional<gsq::SavedReference> kept;
    if (saved) {
      kept = gsq::read_reference(options->reference);
      gsq::require(!options->window_given || (kept->window == options->evaluation.window &&
                                              kept->first_scored == options->evaluation.first_scored),
                   "--reference " + options->reference + " was saved with windows of " + std::to_string(kept->window) +
                       " scored from position " + std::to_string(kept->first_scored) +
                       ": leave out --window and --second-half, or give the ones it was saved with");
      options->evaluation.window = kept->window;
      options->evaluation.first_scored = kept->first_scored;
    }
    const Clock::time_point loading = Clock::now();
    const gsq::LlamaModel model = gsq::open_model(options->model);  // a directory streamed layer by layer, or a GGUF
    gsq::require_memory((options->reference.empty() || saved ? 1 : 2) * gsq::evaluation_bytes(model.config(), options->evaluation.window),
                        "an evaluation window of " + std::to_string(options->evaluation.window) + " tokens (--window)");
    model.config().require_within_positions(options->evaluation.window, "--window: evaluation windows of");
    std::vector<gsq::TokenId> tokens;
    if (!options->eval.empty())
      tokens = gsq::TokenSource(options->tokenizer.empty() ? options->model : options->tokenizer, options->byte_tokens).read(options->eval);
    if (kept) {
      gsq::require(options->eval.empty() || (tokens.size() >= kept->tokens.size() &&
                                             std::equal(kept->tokens.begin(), kept->tokens.end(), tokens.begin())),
                   "--eval " + options->eval + " does not begin with the tokens --reference " + options->reference +
                       " was saved on: leave out --eval to use them");
      tokens = kept->tokens;
    }
    const gsq::LlamaConfig& config = model.config();
    std::printf("model: %s (%s, %ld layers, hidden %ld, vocabulary %ld), loaded in %.2f s\n", options->model.c_str(),
                config.architecture.c_str(), config.layers, config.hidden_size, config.vocab_size,
                seconds_since(loading));
    std::printf("eval: %s, %zu tokens, windows of %ld%s\n", options->eval.empty() ? options->reference.c_str() : options->eval.c_str(),
                tokens.size(), options->evaluation.window, options->evaluation.first_scored > 0 ? ", second halves scored" : "");
    std::fflush(stdout);

    if (!options->quiet) options->evaluation.on_progress = ProgressPrinter{};
    const Clock::time_point evaluating = Clock::now();
    gsq::EvaluationResult result;
    nlohmann::json comparison;
    if (options->reference.empty()) {
      result = gsq::evaluate(model, tokens, options->evaluation);
    } else {
      gsq::Comparison compared;
      if (kept) {
        compared = gsq::compare(model, *kept, options->evaluation);
      } else {
        const gsq::LlamaModel reference = gsq::open_model(options->reference);
        gsq::SavedReference keep;
        keep.k = std::min(options->top_k, reference.config().vocab_size);
        keep.source = options->reference;
        compared = gsq::compare(model, reference, tokens, options->evaluation, options->save_reference.empty() ? nullptr : &keep);
        if (!options->save_reference.empty()) gsq::reference_file(keep).write(options->save_reference);
      }
      result = gsq::evaluation_of(compared);
      comparison = gsq::summarize(compared);
    }
    const double seconds = seconds_since(evaluating);

    std::printf("nll %.6f nats/token  ppl %.4f  bits/token %.6f  tokens %ld (%ld windows)  time %.2f s\n",
                result.mean_nll(), result.perplexity(), result.bits_per_token(), result.predictions, result.windows,
                seconds);
    if (!comparison.is_null()) print_comparison(comparison, options->reference, saved);
    if (!options->json_path.empty()) {
      nlohmann::json record = result;
      record.update({{"producer", gsq::producer}, {"seconds", seconds}, {"model", options->model}, {"eval", options->eval},
                     {"byte_tokens", options->byte_tokens}});
      if (!comparison.is_null()) {
        record["reference"] = options->reference;
        record["comparison"] = comparison;
      }
      gsq::write_json_atomically(options->json_path, record);
    }
    return 0;
  });
}
