// gsq/text/utf8.hpp -- UTF-8 as the tokenizer walks it: one character at a time, checked once
// on the way in so that everything after (the regex, the merges) may trust it.
#pragma once

#include <cstddef>
#include <string>

#include "gsq/common/error.hpp"

namespace gsq {

/// The length in bytes of the UTF-8 character that starts with `lead` (1 for a stray byte, which
/// require_utf8 has ruled out by the time this is used).
inline std::size_t utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;
}

/// Throws gsq::Error unless `text` is well-formed UTF-8 (no overlong forms, surrogates or code
/// points above U+10FFFF), naming the byte offset of the first fault; `what` names the text.
inline void require_utf8(const std::string& text, const std::string& what) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  std::size_t at = 0;
  while (at < text.size()) {
    const std::size_t length = utf8_length(bytes[at]);
    bool valid = (bytes[at] < 0x80) || (length > 1 && at + length <= text.size());
    char32_t code = length == 1 ? bytes[at] : bytes[at] & (0x7F >> length);
    for (std::size_t k = 1; valid && k < length; ++k) {
      valid = (bytes[at + k] & 0xC0) == 0x80;
      code = (code << 6) | (bytes[at + k] & 0x3F);
    }
    static constexpr char32_t smallest[] = {0, 0, 0x80, 0x800, 0x10000};
    valid = valid && code >= smallest[length] && code <= 0x10FFFF && !(code >= 0xD800 && code <= 0xDFFF);
    require(valid, what + " is not valid UTF-8 at byte " + std::to_string(at));
    at += length;
  }
}

/// Appends code point `code` to `out` in UTF-8.
inline void append_utf8(char32_t code, std::string& out) {
  if (code < 0x80) {
    out += static_cast<char>(code);
  } else if (code < 0x800) {
    out += static_cast<char>(0xC0 | (code >> 6));
    out += static_cast<char>(0x80 | (code & 0x3F));
  } else if (code < 0x10000) {
    out += static_cast<char>(0xE0 | (code >> 12));
    out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (code >> 18));
    out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code & 0x3F));
  }
}

}  // namespace gsq
