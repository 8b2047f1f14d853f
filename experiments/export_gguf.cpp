// experiments/export_gguf.cpp -- writes a model as one GGUF file for llama.cpp (gsq's GGUF export,
// gsq/export/gguf_model.hpp): a quantize_model output (its quantized.safetensors: the linears in
// the ggml types that hold them exactly), or a Hugging Face checkpoint as it is stored (F32, F16
// or BF16). quantize_model --export gguf writes the same file after a run; this writes it from a
// finished output, or a full-precision model (as llama.cpp's convert_hf_to_gguf.py would).
//
//   export_gguf --model OUT/gptq --out model.gguf
//   export_gguf --model MODEL_DIR --out model-f32.gguf
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>

#include <boost/program_options.hpp>

#include "driver.hpp"
#include <gsq/export/gguf_model.hpp>
#include <gsq/export/quantized_model.hpp>
#include <gsq/io/output_location.hpp>
#include <gsq/text/llama_cpp_pre_tokenizer.hpp>
#include <gsq/text/tokenizer.hpp>

namespace po = boost::program_options;

int main(int argc, char** argv) {
  return gsq::driver::run("export_gguf", [&] {
    std::string model_path, out, name;
    bool quiet = false;
    po::options_description flags(
        "export_gguf: a model as one GGUF file for llama.cpp (Llama, Mistral, Mixtral, Qwen2, Qwen3, Qwen2-MoE,\n"
        "Qwen3-MoE, DeepSeek-V3 / Kimi-K2; docs/run_elsewhere.md)\n\nFlags");
    flags.add_options()
        ("help", "print this help")
        ("model", po::value(&model_path)->required(), "a quantize_model output directory (with quantized.safetensors), "
                                                      "or a Hugging Face checkpoint directory, written as stored")
        ("out", po::value(&out)->required(), "the GGUF file to write (atomically; an existing file gsq did not write is refused)")
        ("name", po::value(&name), "general.name (default: the model directory's name)")
        ("quiet", po::bool_switch(&quiet), "no progress output");
    po::variables_map values;
    po::store(po::parse_command_line(argc, argv, flags), values);
    if (values.count("help")) {
      std::cout << flags << "\n";
      return 0;
    }
    po::notify(values);
    out = gsq::claim_output({"--out", out}, gsq::OutputKind::file, {{"--model", model_path}});

    const std::string quantized_path = model_path + "/quantized.safetensors";
    gsq::QuantizedModel model = std::filesystem::exists(quantized_path) ? gsq::QuantizedModel::open(model_path, quantized_path)
                                                                         : gsq::QuantizedModel::full_precision(model_path);
    if (!name.empty()) model.name = name;
    const std::string unsupported = gsq::gguf_unsupported(model);
    gsq::require(unsupported.empty(), "--model '" + model_path + "': " + unsupported);
    const gsq::LlamaCppPreTokenizer pre = gsq::llama_cpp_pre_tokenizer(gsq::Tokenizer::from_file(model_path));
    model.tokenizer_pre = pre.name;
    if (!pre.warning().empty()) std::fprintf(stderr, "export_gguf: warning: %s\n", pre.warning().c_str());
    gsq::write_gguf(model, out);
    if (!quiet)
      std::fprintf(stderr, "export_gguf: wrote %s (%s, tokenizer.ggml.pre %s)\n", out.c_str(), model.config.architecture.c_str(),
                   pre.name.empty() ? "default" : pre.name.c_str());
    return 0;
  });
}
