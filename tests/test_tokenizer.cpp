// Tests of gsq/text/: the tokenizer gives transformers' ids for every text of
// tests/data/tokenizers/expected.json on six tokenizers set up as Llama-3, Qwen2, SmolLM2, GPT-2
// (prefix space), Llama-2 and Mistral set theirs up (tests/data/make_tokenizers.py made them
// with Hugging Face's tokenizers and recorded transformers' ids); the split behaviors against
// tokenizers' own outputs; the bundled byte-level model's tokenizer against its byte tokens;
// bad tokenizers and texts refused by name; the tokenize driver and token files.
#include <catch2/catch.hpp>

#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <gsq/io/token_file.hpp>
#include <gsq/io/sha256.hpp>
#include <gsq/text/llama_cpp_pre_tokenizer.hpp>
#include <gsq/text/pre_tokenizer.hpp>
#include <gsq/text/tokenizer.hpp>

#include "error_message.hpp"
#include "program_runner.hpp"

using Catch::Matchers::Contains;
using gsq::testing::error_of;
using gsq::testing::ScratchDirectory;

namespace {

const std::string fixtures = std::string(GSQ_SOURCE_DIR) + "/tests/data/tokenizers/";

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(gsq::testing::read_file(path)); }

std::vector<std::string> texts_of(const std::vector<gsq::TextPiece>& pieces) {
  std::vector<std::string> texts;
  for (const gsq::TextPiece& piece : pieces) texts.push_back(piece.text);
  return texts;
}

/// The pieces `spec` (a pre-tokenizer) cuts `text` into.
std::vector<std::string> pre_tokenize(const nlohmann::json& spec, const std::string& text) {
  std::vector<gsq::TextPiece> pieces = {{text, true}};
  gsq::make_pre_tokenizer(spec, "test")(pieces);
  return texts_of(pieces);
}

/// The smallest tokenizer.json: bytes "a", "b", "c", " " and the merge "a b".
nlohmann::json small_spec() {
  return nlohmann::json::parse(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, " ": 3, "ab": 4},
                                             "merges": ["a b"]}})");
}

}  // namespace

TEST_CASE("tokenizer gives transformers' ids for every fixture tokenizer and text", "[tokenizer]") {
  const nlohmann::json expected = read_json(fixtures + "expected.json");
  const std::vector<std::string> texts = expected.at("texts");
  REQUIRE(texts.size() > 100);
  for (const auto& [name, all_ids] : expected.at("ids").items()) {
    const gsq::Tokenizer tokenizer = gsq::Tokenizer::from_file(fixtures + name + ".json");
    long differing = 0;
    for (std::size_t i = 0; i < texts.size(); ++i) {
      const std::vector<gsq::TokenId> want = all_ids.at(i);
      const std::vector<gsq::TokenId> got = tokenizer.encode(texts[i]);
      if (got != want && ++differing <= 3) {
        INFO(name << ": text " << i << " '" << texts[i] << "'");
        CHECK(got == want);
      }
    }
    INFO(name);
    CHECK(differing == 0);
  }
}

TEST_CASE("tokenizer split behaviors cut as tokenizers cuts", "[tokenizer]") {
  // Expected pieces printed by tokenizers 0.23.3's pre_tokenize_str.
  const auto split = [](const std::string& pattern, const std::string& behavior, bool regex) {
    return nlohmann::json{{"type", "Split"}, {"pattern", {{regex ? "Regex" : "String", pattern}}}, {"behavior", behavior}, {"invert", false}};
  };
  using Pieces = std::vector<std::string>;
  CHECK(pre_tokenize(split(R"(\s+)", "MergedWithPrevious", true), "a b  c ") == Pieces{"a ", "b  ", "c "});
  CHECK(pre_tokenize(split(R"(\s+)", "Contiguous", true), "a b  c ") == Pieces{"a", " ", "b", "  ", "c", " "});
  CHECK(pre_tokenize(split(" ", "Contiguous", false), "a b  c  ") == Pieces{"a", " ", "b", "  ", "c", "  "});
  CHECK(pre_tokenize(split(" ", "MergedWithNext", false), "  a b  c  ") == Pieces{" ", " a", " b", " ", " c", " ", " "});
  CHECK(pre_tokenize(split(" ", "Removed", false), " a  b ") == Pieces{"a", "b"});
  CHECK(pre_tokenize(split(" ", "Isolated", false), "a  b") == Pieces{"a", " ", " ", "b"});
  CHECK(pre_tokenize({{"type", "Digits"}, {"individual_digits", false}}, "ab12\u06634c\uff156") ==
        Pieces{"ab", "12\u06634", "c", "\uff156"});
  CHECK(pre_tokenize({{"type", "Digits"}, {"individual_digits", true}}, "a12\u0663") == Pieces{"a", "1", "2", "\u0663"});
  CHECK(pre_tokenize({{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "first"}, {"split", true}}, "hello  world a") ==
        Pieces{"\u2581hello", "\u2581", "\u2581world", "\u2581a"});
  CHECK(pre_tokenize({{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}}, "hello  world\n\n x") ==
        Pieces{"\u0120hello", "\u0120", "\u0120world", "\u010a\u010a", "\u0120x"});
}

TEST_CASE("tokenizer BPE merges the lowest-ranked pair first and the leftmost of equals", "[tokenizer]") {
  // "aaa" with the merge "a a": the left pair merges first ("aa", "a"), as tokenizers does.
  const gsq::Tokenizer tokenizer(nlohmann::json::parse(R"({"model": {"type": "BPE",
      "vocab": {"a": 0, "b": 1, "aa": 2, "ab": 3, "aab": 4}, "merges": ["a b", "a a", "aa b"]}})"), "test");
  CHECK(tokenizer.encode("aaa") == std::vector<gsq::TokenId>{2, 0});
  CHECK(tokenizer.encode("aab") == std::vector<gsq::TokenId>{0, 3});  // "a b" ranks before "a a"
  CHECK(tokenizer.encode("aaab") == std::vector<gsq::TokenId>{2, 3});
}

TEST_CASE("tokenizer of the bundled byte-level model gives its byte tokens", "[tokenizer]") {
  const std::string model = std::string(GSQ_SOURCE_DIR) + "/data/llama-bytes-3m";
  const gsq::Tokenizer tokenizer = gsq::Tokenizer::from_file(model);
  CHECK(tokenizer.vocabulary_size() == 256);
  CHECK(gsq::tokenize_file(tokenizer, model + "/eval.txt") == gsq::read_byte_tokens(model + "/eval.txt"));
  // A TokenSource reads FILE.txt through the tokenizer and token files as they are.
  const ScratchDirectory scratch;
  const std::vector<gsq::TokenId> ids = {5, 0, 4294967295u, 77};
  gsq::write_token_file(scratch.file("ids.npy"), ids);
  gsq::write_token_file(scratch.file("ids.u32"), ids);
  const gsq::TokenSource source(model, false);
  CHECK(source.read(scratch.file("ids.npy")) == ids);
  CHECK(source.read(scratch.file("ids.u32")) == ids);
  CHECK(source.read(model + "/calib.txt") == gsq::read_byte_tokens(model + "/calib.txt"));
}

TEST_CASE("tokenizer refuses what it does not implement and bad text by name", "[tokenizer]") {
  nlohmann::json spec = small_spec();
  spec["model"]["type"] = "Unigram";
  CHECK_THAT(error_of([&] { gsq::Tokenizer(spec, "t"); }), Contains("model type 'Unigram' is not implemented"));
  spec = small_spec();
  spec["pre_tokenizer"] = {{"type", "WhitespaceSplit"}};
  CHECK_THAT(error_of([&] { gsq::Tokenizer(spec, "t"); }), Contains("pre_tokenizer 'WhitespaceSplit' is not implemented"));
  spec = small_spec();
  spec["normalizer"] = {{"type", "Lowercase"}};
  CHECK_THAT(error_of([&] { gsq::Tokenizer(spec, "t"); }), Contains("normalizer 'Lowercase' is not implemented"));
  spec = small_spec();
  spec["post_processor"] = {{"type", "RobertaProcessing"}};
  CHECK_THAT(error_of([&] { gsq::Tokenizer(spec, "t"); }), Contains("post_processor 'RobertaProcessing' is not implemented"));
  spec = small_spec();
  spec["added_tokens"] = {{{"id", 5}, {"content", "<x>"}, {"lstrip", true}}};
  CHECK_THAT(error_of([&] { gsq::Tokenizer(spec, "t"); }), Contains("added token '<x>' has lstrip: true"));
  spec = small_spec();
  spec["model"]["merges"] = {"a d"};
  CHECK_THAT(error_of([&] { gsq::Tokenizer(spec, "t"); }), Contains("token 'd' is not in the vocabulary"));
  spec = small_spec();
  spec["model"]["byte_fallback"] = true;
  CHECK_THAT(error_of([&] { gsq::Tokenizer(spec, "t"); }), Contains("byte_fallback needs all 256 byte tokens"));
  spec = small_spec();
  spec["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  CHECK_THAT(error_of([&] { gsq::Tokenizer(spec, "t"); }), Contains("does not compile"));
  spec = small_spec();
  spec.erase("model");
  CHECK_THAT(error_of([&] { gsq::Tokenizer(spec, "t"); }), Contains("t is malformed"));

  const gsq::Tokenizer tokenizer(small_spec(), "t");
  CHECK(tokenizer.encode("ab c") == std::vector<gsq::TokenId>{4, 3, 2});
  CHECK_THAT(error_of([&] { tokenizer.encode("ab\xC3("); }), Contains("not valid UTF-8 at byte 2"));
  CHECK_THAT(error_of([&] { tokenizer.encode("ab\xED\xA0\x80"); }), Contains("not valid UTF-8 at byte 2"));  // a surrogate
  CHECK_THAT(error_of([&] { tokenizer.encode("abd"); }), Contains("no token for 'd'"));

  const ScratchDirectory scratch;
  std::ofstream(scratch.file("broken.json")) << "{\"model\": ";
  CHECK_THAT(error_of([&] { gsq::Tokenizer::from_file(scratch.file("broken.json")); }), Contains("is not valid JSON"));
  CHECK_THAT(error_of([&] { gsq::Tokenizer::from_file(scratch.path.string()); }), Contains("tokenizer.json"));
  CHECK_THAT(error_of([&] { gsq::Tokenizer::from_file(scratch.file("model.gguf")); }), Contains("does not read a GGUF's tokenizer"));
}

TEST_CASE("tokenize driver writes the ids transformers gives", "[tokenizer][driver]") {
  const nlohmann::json expected = read_json(fixtures + "expected.json");
  const ScratchDirectory scratch;
  std::ofstream(scratch.file("text.txt"), std::ios::binary) << expected.at("texts").at(3).get<std::string>();
  const std::string common = "--tokenizer " + fixtures + "llama3.json --text " + scratch.file("text.txt");
  const auto outcome = gsq::testing::run_program("tokenize", common + " --out " + scratch.file("ids.npy"));
  REQUIRE(outcome.status == 0);
  const std::vector<gsq::TokenId> want = expected.at("ids").at("llama3").at(3);
  CHECK(gsq::read_token_file(scratch.file("ids.npy")) == want);
  const auto plain = gsq::testing::run_program("tokenize", common + " --print --no-special-tokens");
  REQUIRE(plain.status == 0);
  std::istringstream printed(plain.out);
  const std::vector<gsq::TokenId> without_bos{std::istream_iterator<gsq::TokenId>(printed), std::istream_iterator<gsq::TokenId>()};
  CHECK(without_bos == std::vector<gsq::TokenId>(want.begin() + 1, want.end()));
  const auto refused = gsq::testing::run_program("tokenize", "--tokenizer " + fixtures + "llama3.json --text " + scratch.file("missing.txt") + " --print");
  CHECK(refused.status == 2);
  CHECK_THAT(refused.err, Contains("missing.txt"));
  // The text as the output, or a file of the user's: refused before anything is written.
  const std::string text_before = gsq::testing::read_file(scratch.file("text.txt"));
  const auto over_input = gsq::testing::run_program("tokenize", common + " --out " + scratch.file("text.txt"));
  CHECK(over_input.status == 2);
  CHECK_THAT(over_input.err, Contains("gsq never writes over what it reads"));
  CHECK(gsq::testing::read_file(scratch.file("text.txt")) == text_before);
  std::ofstream(scratch.file("notes.u32")) << "the user's";
  const auto over_user = gsq::testing::run_program("tokenize", common + " --out " + scratch.file("notes.u32"));
  CHECK(over_user.status == 2);
  CHECK(gsq::testing::read_file(scratch.file("notes.u32")) == "the user's");
}

TEST_CASE("evaluate_model reads a text file through the model's own tokenizer", "[tokenizer][driver]") {
  const std::string model = std::string(GSQ_SOURCE_DIR) + "/data/llama-bytes-3m";
  const ScratchDirectory scratch;
  const std::string common = "--model " + model + " --eval " + model + "/eval.txt --window 128 --max-windows 3 --quiet --json ";
  const auto text = gsq::testing::run_program("evaluate_model", common + scratch.file("text.json"));
  const auto bytes = gsq::testing::run_program("evaluate_model", common + scratch.file("bytes.json") + " --byte-tokens");
  REQUIRE(text.status == 0);
  REQUIRE(bytes.status == 0);
  CHECK(read_json(scratch.file("text.json"))["nll"] == read_json(scratch.file("bytes.json"))["nll"]);
  const auto refused = gsq::testing::run_program(
      "evaluate_model", "--model " + model + " --eval " + model + "/eval.txt --tokenizer " + fixtures + "llama3.json");
  CHECK(refused.status == 2);  // llama3.json's ids run past the bundled model's 256
  CHECK_THAT(refused.err, Contains("256"));
}

TEST_CASE("tokenizer.ggml.pre: the converter's hash of a tokenizer's ids on its check text, and its name", "[tokenizer][gguf]") {
  // Python: hashlib.sha256(b"abc").hexdigest(), and of str([1, 2, 3]).
  CHECK(gsq::sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(gsq::sha256_hex(std::string(1000, 'a')) == "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3");
  CHECK(gsq::llama_cpp_token_hash({1, 2, 3}) == gsq::sha256_hex("[1, 2, 3]"));
  const auto name_of = [](const std::string& hash) {
    for (const auto& [known, name] : gsq::llama_cpp_pre_tokenizer_hashes())
      if (known == hash) return name;
    return std::string();
  };
  CHECK(name_of("855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249") == "smollm");
  CHECK(name_of("0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5") == "llama-bpe");
  CHECK(name_of("e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea") == "qwen2");
  CHECK(name_of("3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454") == "gpt-2");
  // The fixture tokenizers have 700 tokens: no model llama.cpp knows (their hashes, as transformers'
  // ids give them to the converter: tests/interop/check_gguf_tokenizer.py).
  const gsq::LlamaCppPreTokenizer pre = gsq::llama_cpp_pre_tokenizer(gsq::Tokenizer::from_file(fixtures + "smollm2.json"));
  CHECK(pre.hash == "30ad16f49bd7ef6285f6ac5fd62b8657b0e0c59c820728731352427b76875da3");
  CHECK(pre.name.empty());
  CHECK_THAT(pre.warning(), Catch::Contains("\"default\""));
}
