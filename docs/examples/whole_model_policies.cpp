// Quantizes a whole model with policies of one's own: the bundled byte-level Llama, one decoder
// layer at a time, in the paper's 2-bit format with groups of 128, but GSQ annealed on a cosine
// schedule with the straight-through estimator and trained with Adam, each layer's seven linears
// jointly on the layer's output. Then it scores the model on text it never saw, beside RTN.
// Built and run by the test suite (docs_example_whole_model); see docs/policies.md.
//
//   whole_model_policies [MODEL_DIR]     (default: data/llama-bytes-3m)
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <gsq/gsq.hpp>
#include <gsq/io/resumable_output.hpp>
#include <gsq/model/evaluation.hpp>
#include <gsq/pipeline/sequential.hpp>

using Format = gsq::GridFormat<gsq::Int<2>, gsq::GroupSize<128>, gsq::CosineAnneal, gsq::StraightThrough, gsq::Adam>;

/// Bits per byte of `model_dir`'s model on the first 64 windows of its eval.txt once quantized with `config`.
double quantized_bits_per_byte(const std::string& model_dir, const gsq::ModelQuantizationConfig& config) {
  gsq::LlamaModel model = gsq::LlamaModel::open(model_dir);
  std::vector<gsq::TokenId> calibration = gsq::read_byte_tokens(model_dir + "/calib.txt");
  calibration.resize(4096);
  // Completed layers are kept in a resumable output (OUT.partial) while the run lasts.
  const std::string out = (std::filesystem::temp_directory_path() / ("gsq_example_" + std::to_string(::getpid()))).string();
  {
    const gsq::ResumableOutput layers(out, {{"example", "whole_model_policies"}}, /*resume=*/false);
    gsq::SequentialQuantizer<Format>(model, config).quantize_layers(calibration, /*sequence_length=*/256, layers);
  }
  std::filesystem::remove_all(out + ".partial");
  gsq::EvaluationOptions evaluation;
  evaluation.max_windows = 64;
  return gsq::evaluate(model, gsq::read_byte_tokens(model_dir + "/eval.txt"), evaluation).bits_per_token();
}

int main(int argc, char** argv) {
  const std::string model_dir = argc > 1 ? argv[1] : "data/llama-bytes-3m";
  gsq::ModelQuantizationConfig config;  // the defaults, then what this experiment changes
  config.method = gsq::Method::rtn;
  const double rtn = quantized_bits_per_byte(model_dir, config);

  config.method = gsq::Method::gsq;
  config.objective = gsq::GsqObjective::layer_output;
  config.train.steps = 160;
  const double gsq_bits = quantized_bits_per_byte(model_dir, config);
  std::printf("2-bit g128, cosine anneal, straight-through, Adam: RTN %.5f -> GSQ %.5f bits per byte\n", rtn, gsq_bits);
  return gsq_bits < rtn ? 0 : 1;
}
