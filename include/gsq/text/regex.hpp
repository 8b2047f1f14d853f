// gsq/text/regex.hpp -- the regular expressions of tokenizer.json (pre-tokenizer splits, Replace
// normalizers), matched by PCRE2 (Debian's libpcre2-dev). The patterns are written for
// Oniguruma, which Hugging Face's tokenizers uses; PCRE2 reads what they use (\p{L}, \p{N},
// (?i:...), lookahead) the same way once Unicode character classes are on (PCRE2_UCP).
#pragma once

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gsq/common/error.hpp"
#include "gsq/text/utf8.hpp"

namespace gsq {

/// A [begin, end) range of bytes in a string.
using ByteRange = std::pair<std::size_t, std::size_t>;

/// A compiled pattern over UTF-8 text. Matching is read-only and may run on several threads.
class Regex {
 public:
  /// Compiles `pattern`; `what` names it in errors ("pre_tokenizer Split pattern").
  Regex(const std::string& pattern, const std::string& what) : what_(what) {
    int code = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* compiled = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                         PCRE2_UTF | PCRE2_UCP, &code, &offset, nullptr);
    require(compiled != nullptr, what + " '" + pattern + "' does not compile: " + message(code) + " at offset " +
                                     std::to_string(offset));
    code_.reset(compiled, pcre2_code_free);
    pcre2_jit_compile(compiled, PCRE2_JIT_COMPLETE);  // the interpreter runs where JIT cannot
  }

  /// The non-overlapping matches in `text` (valid UTF-8), leftmost first. An empty match is kept
  /// (it separates what is on either side) and the search moves on one character.
  std::vector<ByteRange> matches(const std::string& text) const {
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(
        pcre2_match_data_create_from_pattern(code_.get(), nullptr), pcre2_match_data_free);
    std::vector<ByteRange> found;
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    std::size_t from = 0;
    while (from <= text.size()) {
      const int result = pcre2_match(code_.get(), subject, text.size(), from, PCRE2_NO_UTF_CHECK, data.get(), nullptr);
      if (result == PCRE2_ERROR_NOMATCH) break;
      require(result >= 0, what_ + ": matching failed: " + message(result));
      const PCRE2_SIZE* range = pcre2_get_ovector_pointer(data.get());
      found.emplace_back(range[0], range[1]);
      from = range[1] > range[0] ? range[1]
                                 : range[1] + (range[1] < text.size() ? utf8_length(static_cast<unsigned char>(text[range[1]])) : 1);
    }
    return found;
  }

 private:
  static std::string message(int code) {
    PCRE2_UCHAR buffer[256];
    pcre2_get_error_message(code, buffer, sizeof buffer);
    return reinterpret_cast<const char*>(buffer);
  }

  std::string what_;
  std::shared_ptr<pcre2_code> code_;
};

}  // namespace gsq
