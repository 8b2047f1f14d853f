// gsq/text/pre_tokenizer.hpp -- tokenizer.json's "pre_tokenizer": the normalized text cut into
// words, which BPE then encodes one at a time and never merges across. Read: ByteLevel (GPT-2's
// split and byte-to-character map, as SmolLM2 and GPT-2 use it), Split (a regex or a string,
// with each of Hugging Face's five behaviors: Llama-3's and Qwen2's patterns), Digits,
// Metaspace (SentencePiece-style "▁" words: Llama-2, Mistral), Sequence and null. Other kinds
// are refused by name.
#pragma once

#include <algorithm>
#include <array>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/common/error.hpp"
#include "gsq/text/normalizer.hpp"
#include "gsq/text/regex.hpp"
#include "gsq/text/utf8.hpp"

namespace gsq {

/// A piece of the text on its way to the model; `at_start`: it begins the text (Metaspace's
/// "first" scheme marks only that word).
struct TextPiece {
  std::string text;
  bool at_start = false;
};

/// Cuts each piece into smaller ones, in order.
using PreTokenizer = std::function<void(std::vector<TextPiece>&)>;

/// What happens to the matches of a Split pattern (Hugging Face's SplitDelimiterBehavior).
enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

namespace detail {

/// `piece` cut at `matches` (ascending, non-overlapping byte ranges): the runs between matches
/// and the matches, joined as `behavior` says, empty runs dropped.
inline std::vector<TextPiece> split_piece(const TextPiece& piece, const std::vector<ByteRange>& matches, SplitBehavior behavior) {
  std::vector<std::pair<ByteRange, bool>> runs;  // (range, is a match)
  std::size_t from = 0;
  for (const ByteRange& match : matches) {
    if (match.first > from) runs.push_back({{from, match.first}, false});
    runs.push_back({match, true});
    from = match.second;
  }
  if (from < piece.text.size()) runs.push_back({{from, piece.text.size()}, false});

  std::vector<ByteRange> kept;
  bool previous_match = false;
  if (behavior == SplitBehavior::MergedWithNext) {  // a match joins the run after it: walk backwards
    for (auto run = runs.rbegin(); run != runs.rend(); ++run) {
      if (run->second && !previous_match && !kept.empty()) kept.back().first = run->first.first;
      else kept.push_back(run->first);
      previous_match = run->second;
    }
    std::reverse(kept.begin(), kept.end());
  } else {
    for (const auto& [range, is_match] : runs) {
      const bool joins = behavior == SplitBehavior::MergedWithPrevious ? is_match && !previous_match
                         : behavior == SplitBehavior::Contiguous       ? is_match == previous_match
                                                                       : false;
      if (behavior == SplitBehavior::Removed && is_match) continue;
      if (joins && !kept.empty()) kept.back().second = range.second;
      else kept.push_back(range);
      previous_match = is_match;
    }
  }
  std::vector<TextPiece> pieces;
  for (const ByteRange& range : kept)
    if (range.second > range.first)
      pieces.push_back({piece.text.substr(range.first, range.second - range.first), piece.at_start && range.first == 0});
  return pieces;
}

/// Applies `split` (one piece to several) to every piece.
template <class Split>
void split_each(std::vector<TextPiece>& pieces, const Split& split) {
  std::vector<TextPiece> out;
  for (const TextPiece& piece : pieces)
    for (TextPiece& part : split(piece)) out.push_back(std::move(part));
  pieces = std::move(out);
}

/// The matches of `literal` in `text`, left to right.
inline std::vector<ByteRange> literal_matches(const std::string& text, const std::string& literal) {
  std::vector<ByteRange> found;
  if (literal.empty()) return found;
  for (std::size_t at = text.find(literal); at != std::string::npos; at = text.find(literal, at + literal.size()))
    found.emplace_back(at, at + literal.size());
  return found;
}

/// GPT-2's byte-to-character map: printable bytes stand for themselves, the others for the code
/// points from U+0100 up, so that every byte is a visible character in the vocabulary.
inline const std::array<std::string, 256>& byte_characters() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> characters;
    char32_t next = 256;
    for (int byte = 0; byte < 256; ++byte) {
      const bool printable = (byte >= 33 && byte <= 126) || (byte >= 161 && byte <= 172) || (byte >= 174);
      append_utf8(printable ? static_cast<char32_t>(byte) : next++, characters[byte]);
    }
    return characters;
  }();
  return table;
}

/// The pattern tokenizers' ByteLevel splits with when use_regex is on (GPT-2's).
inline const char* gpt2_split_pattern() {
  return R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
}

inline SplitBehavior split_behavior(const std::string& name, const std::string& what) {
  const std::vector<std::pair<std::string, SplitBehavior>> names = {
      {"Removed", SplitBehavior::Removed},
      {"Isolated", SplitBehavior::Isolated},
      {"MergedWithPrevious", SplitBehavior::MergedWithPrevious},
      {"MergedWithNext", SplitBehavior::MergedWithNext},
      {"Contiguous", SplitBehavior::Contiguous}};
  for (const auto& [known, behavior] : names)
    if (name == known) return behavior;
  throw Error(what + ": Split behavior '" + name + "' is unknown");
}

/// A pre-tokenizer that cuts every piece at a regex's matches.
inline PreTokenizer regex_split(const std::string& pattern, SplitBehavior behavior, const std::string& what) {
  const auto regex = std::make_shared<Regex>(pattern, what);
  return [regex, behavior](std::vector<TextPiece>& pieces) {
    split_each(pieces, [&](const TextPiece& piece) { return split_piece(piece, regex->matches(piece.text), behavior); });
  };
}

}  // namespace detail

/// The pre-tokenizer that tokenizer.json's `spec` describes (null: the text is one word).
inline PreTokenizer make_pre_tokenizer(const nlohmann::json& spec, const std::string& what) {
  if (spec.is_null()) return [](std::vector<TextPiece>&) {};
  const std::string type = spec.value("type", "");
  if (type == "Sequence") {
    std::vector<PreTokenizer> steps;
    for (const nlohmann::json& step : spec.at("pretokenizers")) steps.push_back(make_pre_tokenizer(step, what));
    return [steps](std::vector<TextPiece>& pieces) {
      for (const PreTokenizer& step : steps) step(pieces);
    };
  }
  if (type == "ByteLevel") {
    const bool add_prefix_space = spec.value("add_prefix_space", true);
    const PreTokenizer split = spec.value("use_regex", true)
                                   ? detail::regex_split(detail::gpt2_split_pattern(), SplitBehavior::Isolated, what)
                                   : PreTokenizer([](std::vector<TextPiece>&) {});
    return [add_prefix_space, split](std::vector<TextPiece>& pieces) {
      if (add_prefix_space)
        for (TextPiece& piece : pieces)
          if (piece.text.empty() || piece.text.front() != ' ') piece.text.insert(0, 1, ' ');
      split(pieces);
      for (TextPiece& piece : pieces) {
        std::string mapped;
        for (const char byte : piece.text) mapped += detail::byte_characters()[static_cast<unsigned char>(byte)];
        piece.text = std::move(mapped);
      }
    };
  }
  if (type == "Split") {
    require(!spec.value("invert", false), what + ": a Split pre-tokenizer with invert: true is not implemented");
    const nlohmann::json& pattern = spec.at("pattern");
    const SplitBehavior behavior = detail::split_behavior(spec.at("behavior").get<std::string>(), what);
    if (pattern.contains("Regex")) return detail::regex_split(pattern.at("Regex").get<std::string>(), behavior, what + ": pre_tokenizer Split pattern");
    const std::string literal = pattern.at("String").get<std::string>();
    return [literal, behavior](std::vector<TextPiece>& pieces) {
      detail::split_each(pieces, [&](const TextPiece& piece) {
        return detail::split_piece(piece, detail::literal_matches(piece.text, literal), behavior);
      });
    };
  }
  if (type == "Digits")  // Rust's char::is_numeric is Unicode's N categories
    return detail::regex_split(spec.value("individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)", SplitBehavior::Isolated, what);
  if (type == "Metaspace") {
    const std::string replacement = spec.value("replacement", std::string("\u2581"));
    // Older files say add_prefix_space (true: always) instead of prepend_scheme.
    const std::string scheme = spec.value("prepend_scheme", spec.value("add_prefix_space", true) ? "always" : "never");
    require(scheme == "always" || scheme == "first" || scheme == "never", what + ": Metaspace prepend_scheme '" + scheme + "' is unknown");
    const bool split = spec.value("split", true);
    return [replacement, scheme, split](std::vector<TextPiece>& pieces) {
      for (TextPiece& piece : pieces) {
        piece.text = detail::replace_all(piece.text, " ", replacement);
        const bool prepend = scheme == "always" || (scheme == "first" && piece.at_start);
        if (prepend && piece.text.compare(0, replacement.size(), replacement) != 0) piece.text.insert(0, replacement);
      }
      if (split)
        detail::split_each(pieces, [&](const TextPiece& piece) {
          return detail::split_piece(piece, detail::literal_matches(piece.text, replacement), SplitBehavior::MergedWithNext);
        });
    };
  }
  throw Error(what + ": pre_tokenizer '" + type +
              "' is not implemented (gsq reads ByteLevel, Split, Digits, Metaspace and Sequence)");
}

}  // namespace gsq
