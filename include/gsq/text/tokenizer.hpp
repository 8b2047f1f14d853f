// gsq/text/tokenizer.hpp -- a Hugging Face tokenizer.json run in C++: text in, the ids
// transformers' `tokenizer(text).input_ids` gives out. The stages are tokenizers' own:
//   1. added tokens (<|endoftext|>, <s>, ...) found in the raw text and kept whole;
//   2. the rest normalized (text/normalizer.hpp), then the added tokens that match normalized
//      text found;
//   3. pre-tokenized into words (text/pre_tokenizer.hpp), each encoded by BPE (text/bpe.hpp);
//   4. the post-processor's special tokens (a BOS) put around the ids.
// Byte-level BPE as GPT-2, Llama-3, Qwen2 and SmolLM2 define it and SentencePiece-style BPE as
// Llama-2 and Mistral do are read; other kinds (Unigram, WordPiece, added tokens that strip
// whitespace) are refused by name. Truncation and padding settings are not applied: a text is
// tokenized whole, as transformers does by default.
//
//   const gsq::Tokenizer tokenizer = gsq::Tokenizer::from_file("SmolLM2-135M");  // DIR or DIR/tokenizer.json
//   std::vector<gsq::TokenId> ids = tokenizer.encode("The quick brown fox");
//
// Programs that use this header link gsq::text (PCRE2 and ICU).
#pragma once

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/common/error.hpp"
#include "gsq/common/token_id.hpp"
#include "gsq/io/regular_file.hpp"
#include "gsq/io/token_file.hpp"
#include "gsq/text/bpe.hpp"
#include "gsq/text/normalizer.hpp"
#include "gsq/text/pre_tokenizer.hpp"
#include "gsq/text/utf8.hpp"

namespace gsq {

/// The tokenizer.json that `path` names: itself, or the one inside the directory `path`.
inline std::string tokenizer_file(const std::string& path) {
  struct stat status {};
  return ::stat(path.c_str(), &status) == 0 && S_ISDIR(status.st_mode) ? path + "/tokenizer.json" : path;
}

class Tokenizer {
 public:
  /// The tokenizer of `path`: a tokenizer.json, or a checkpoint directory holding one.
  static Tokenizer from_file(const std::string& path) {
    const std::string file = tokenizer_file(path);
    require(!detail::ends_with(file, ".gguf"), "tokenizer '" + file + "': gsq does not read a GGUF's tokenizer; "
                                              "give the tokenizer.json of the checkpoint it was made from");
    nlohmann::json spec;
    try {
      spec = nlohmann::json::parse(read_regular_file(file, "tokenizer"));
    } catch (const nlohmann::json::exception& error) {
      throw Error("tokenizer '" + file + "' is not valid JSON: " + error.what());
    }
    return Tokenizer(spec, "tokenizer '" + file + "'");
  }

  /// The tokenizer that the parsed tokenizer.json `spec` describes; `what` names it in errors.
  Tokenizer(const nlohmann::json& spec, const std::string& what) try
      : normalizer_(make_normalizer(spec.value("normalizer", nlohmann::json()), what)),
        pre_tokenizer_(make_pre_tokenizer(spec.value("pre_tokenizer", nlohmann::json()), what)),
        model_(spec.at("model"), what) {
    for (const nlohmann::json& token : spec.value("added_tokens", nlohmann::json::array())) {
      const std::string content = token.at("content").get<std::string>();
      for (const char* flag : {"single_word", "lstrip", "rstrip"})
        require(!token.value(flag, false), what + ": added token '" + content + "' has " + flag +
                                               ": true, which gsq does not implement");
      require(!content.empty(), what + ": an added token is empty");
      const TokenId id = token.at("id").get<TokenId>();
      // A token matched in normalized text is looked for as the normalizer writes it.
      if (token.value("normalized", false)) {
        const std::string normalized = normalizer_(content);
        require(!normalized.empty(), what + ": added token '" + content + "' normalizes to nothing");
        matched_after_normalizing_.push_back({normalized, id});
      } else {
        matched_in_raw_text_.push_back({content, id});
      }
      vocabulary_size_ = std::max<long>(vocabulary_size_, static_cast<long>(id) + 1);
    }
    for (const auto& [token, id] : spec.at("model").at("vocab").items())
      vocabulary_size_ = std::max<long>(vocabulary_size_, id.get<long>() + 1);
    read_post_processor(spec.value("post_processor", nlohmann::json()), what);
  } catch (const nlohmann::json::exception& error) {
    throw Error(what + " is malformed: " + error.what());
  }

  /// The ids of `text` (UTF-8), with the post-processor's special tokens when
  /// `add_special_tokens` (transformers' default).
  std::vector<TokenId> encode(const std::string& text, bool add_special_tokens = true) const {
    require_utf8(text, "the text to tokenize");
    std::vector<TokenId> ids;
    if (add_special_tokens) ids = prefix_;
    for (const Segment& raw : split_added_tokens({text, true}, matched_in_raw_text_)) {
      if (raw.id) {
        ids.push_back(*raw.id);
        continue;
      }
      TextPiece normalized{normalizer_(raw.piece.text), raw.piece.at_start};
      for (const Segment& segment : split_added_tokens(normalized, matched_after_normalizing_)) {
        if (segment.id) {
          ids.push_back(*segment.id);
          continue;
        }
        std::vector<TextPiece> words = {segment.piece};
        pre_tokenizer_(words);
        for (const TextPiece& word : words)
          if (!word.text.empty()) model_.encode(word.text, ids);
      }
    }
    if (add_special_tokens) ids.insert(ids.end(), suffix_.begin(), suffix_.end());
    return ids;
  }

  /// One more than the largest id the tokenizer can give.
  long vocabulary_size() const { return vocabulary_size_; }

 private:
  struct AddedToken {
    std::string content;
    TokenId id;
  };
  /// A run of text, or an added token found in it (then `id` is set).
  struct Segment {
    TextPiece piece;
    std::optional<TokenId> id;
  };

  /// `piece` cut around the added tokens in it: at each position the leftmost match, the longest
  /// there, as tokenizers' Aho-Corasick search finds them.
  static std::vector<Segment> split_added_tokens(const TextPiece& piece, const std::vector<AddedToken>& tokens) {
    std::vector<Segment> segments;
    const std::string& text = piece.text;
    std::array<bool, 256> starts_a_token{};
    for (const AddedToken& token : tokens) starts_a_token[static_cast<unsigned char>(token.content[0])] = true;
    std::size_t from = 0;
    for (std::size_t at = 0; at < text.size() && !tokens.empty(); ++at) {
      if (!starts_a_token[static_cast<unsigned char>(text[at])]) continue;
      const AddedToken* longest = nullptr;
      for (const AddedToken& token : tokens)
        if ((!longest || token.content.size() > longest->content.size()) && text.compare(at, token.content.size(), token.content) == 0)
          longest = &token;
      if (!longest) continue;
      if (at > from) segments.push_back({{text.substr(from, at - from), piece.at_start && from == 0}, std::nullopt});
      segments.push_back({{longest->content, false}, longest->id});
      from = at + longest->content.size();
      at = from - 1;
    }
    if (from < text.size()) segments.push_back({{text.substr(from), piece.at_start && from == 0}, std::nullopt});
    return segments;
  }

  /// The special tokens a post-processor puts before and after a single text: TemplateProcessing
  /// (its "single" template), ByteLevel (offsets only), Sequence, null.
  void read_post_processor(const nlohmann::json& spec, const std::string& what) {
    if (spec.is_null()) return;
    const std::string type = spec.value("type", "");
    if (type == "Sequence") {
      for (const nlohmann::json& step : spec.at("processors")) read_post_processor(step, what);
    } else if (type == "TemplateProcessing") {
      bool after_text = false;
      for (const nlohmann::json& item : spec.at("single")) {
        if (item.contains("Sequence")) {
          require(item.at("Sequence").at("id") == "A", what + ": the single template names sequence B");
          after_text = true;
          continue;
        }
        const std::string name = item.at("SpecialToken").at("id").get<std::string>();
        require(spec.at("special_tokens").contains(name), what + ": the template's special token '" + name + "' is not defined");
        for (const nlohmann::json& id : spec.at("special_tokens").at(name).at("ids"))
          (after_text ? suffix_ : prefix_).push_back(id.get<TokenId>());
      }
    } else {
      require(type == "ByteLevel", what + ": post_processor '" + type +
                                       "' is not implemented (gsq reads TemplateProcessing, ByteLevel and Sequence)");
    }
  }

  Normalizer normalizer_;
  PreTokenizer pre_tokenizer_;
  BytePairEncoding model_;
  std::vector<AddedToken> matched_in_raw_text_, matched_after_normalizing_;
  std::vector<TokenId> prefix_, suffix_;
  long vocabulary_size_ = 0;
};

/// The ids of the UTF-8 text file `path`, tokenized by `tokenizer` as transformers would.
inline std::vector<TokenId> tokenize_file(const Tokenizer& tokenizer, const std::string& path) {
  const std::string text = read_regular_file(path, "text file");
  try {
    return tokenizer.encode(text);
  } catch (const Error& error) {
    throw Error("text file '" + path + "': " + error.what());
  }
}

/// Where a program's token streams come from: a file whose name ends in ".txt" is text,
/// tokenized by the tokenizer at `tokenizer` (a tokenizer.json or a directory holding one, read
/// when first needed); any other file holds token ids (gsq/io/token_file.hpp). With `bytes`,
/// every file is read as the byte tokens of a byte-level model.
class TokenSource {
 public:
  TokenSource(std::string tokenizer, bool bytes) : tokenizer_path_(std::move(tokenizer)), bytes_(bytes) {}

  std::vector<TokenId> read(const std::string& path) const {
    if (bytes_) return read_byte_tokens(path);
    if (!detail::ends_with(path, ".txt")) return read_token_file(path);
    if (!tokenizer_) tokenizer_ = Tokenizer::from_file(tokenizer_path_);
    return tokenize_file(*tokenizer_, path);
  }

 private:
  std::string tokenizer_path_;
  bool bytes_;
  mutable std::optional<Tokenizer> tokenizer_;
};

}  // namespace gsq
