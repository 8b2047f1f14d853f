// experiments/tokenize.cpp -- turns UTF-8 text into the token ids of a model's own tokenizer.json
// (gsq/text/tokenizer.hpp), the ids transformers' `tokenizer(text).input_ids` gives: a token file
// for quantize_model and evaluate_model, or the ids printed. (Those two read FILE.txt through the
// model's tokenizer themselves; this writes the ids once for reuse or inspection.)
//
//   tokenize --tokenizer MODEL_DIR --text eval.txt --out eval.npy     (.npy, or raw uint32)
//   tokenize --tokenizer MODEL_DIR/tokenizer.json --text eval.txt --print
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <boost/program_options.hpp>

#include "driver.hpp"
#include <gsq/io/output_location.hpp>
#include <gsq/io/regular_file.hpp>
#include <gsq/io/token_file.hpp>
#include <gsq/text/tokenizer.hpp>

namespace po = boost::program_options;

int main(int argc, char** argv) {
  return gsq::driver::run("tokenize", [&] {
    std::string tokenizer_path, text_path, out;
    bool print = false, no_special_tokens = false;
    po::options_description flags(
        "tokenize: UTF-8 text to the token ids of a model's tokenizer.json (byte-level BPE as Llama-3, Qwen2,\n"
        "SmolLM2 and GPT-2 define it; SentencePiece-style BPE as Llama-2 and Mistral), equal to transformers'\n"
        "tokenizer(text).input_ids. Other tokenizer kinds are refused by name.\n\nFlags");
    flags.add_options()
        ("help", "print this help")
        ("tokenizer", po::value(&tokenizer_path)->required(), "a tokenizer.json, or the checkpoint directory holding one")
        ("text", po::value(&text_path)->required(), "the UTF-8 text file to tokenize")
        ("out", po::value(&out), "write the ids here: a NumPy <u4 array when the name ends in .npy, else raw "
                                 "little-endian uint32 (written atomically; an existing file is refused, as is the text "
                                 "or the tokenizer itself)")
        ("print", po::bool_switch(&print), "print the ids, one line, separated by spaces")
        ("no-special-tokens", po::bool_switch(&no_special_tokens),
         "leave out the special tokens the tokenizer's post-processor adds (a BOS), as add_special_tokens=False");
    po::variables_map values;
    po::store(po::parse_command_line(argc, argv, flags), values);
    if (values.count("help")) {
      std::cout << flags << "\n";
      return 0;
    }
    po::notify(values);
    gsq::require(print || !out.empty(), "nothing to do: give --out FILE or --print");
    if (!out.empty())  // before any work: never over the text, the tokenizer or a file gsq did not write
      out = gsq::claim_output({"--out", out}, gsq::OutputKind::file, {{"--text", text_path}, {"--tokenizer", tokenizer_path}});

    const gsq::Tokenizer tokenizer = gsq::Tokenizer::from_file(tokenizer_path);
    const std::string text = gsq::read_regular_file(text_path, "text file");
    std::vector<gsq::TokenId> ids;
    try {
      ids = tokenizer.encode(text, !no_special_tokens);
    } catch (const gsq::Error& error) {
      throw gsq::Error("--text '" + text_path + "': " + error.what());
    }
    if (!out.empty()) gsq::write_token_file(out, ids);
    if (print) {
      for (std::size_t i = 0; i < ids.size(); ++i) std::printf(i ? " %u" : "%u", ids[i]);
      std::printf("\n");
    } else {
      std::printf("%zu tokens from %zu bytes -> %s\n", ids.size(), text.size(), out.c_str());
    }
    return 0;
  });
}
