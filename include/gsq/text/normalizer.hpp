// gsq/text/normalizer.hpp -- tokenizer.json's "normalizer": what is done to the text before it
// is split into words. Unicode normal forms come from ICU (Debian's libicu-dev); the rest are
// string edits. Read: NFC, NFD, NFKC, NFKD, Prepend, Replace (a string or a regex), Sequence,
// and null. Other kinds are refused by name.
#pragma once

#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/common/error.hpp"
#include "gsq/text/regex.hpp"

namespace gsq {

/// A text edit: normalized text from text.
using Normalizer = std::function<std::string(const std::string&)>;

namespace detail {

/// `text` in the Unicode normal form `form` (an ICU instance: NFC, NFKC, ...).
inline std::string unicode_normal_form(const std::string& text, const UNormalizer2* form) {
  if (std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; })) return text;
  UErrorCode status = U_ZERO_ERROR;
  int32_t length = 0;
  u_strFromUTF8(nullptr, 0, &length, text.data(), static_cast<int32_t>(text.size()), &status);
  std::u16string wide(static_cast<std::size_t>(length), u'\0');
  status = U_ZERO_ERROR;
  u_strFromUTF8(wide.data(), length, nullptr, text.data(), static_cast<int32_t>(text.size()), &status);
  std::u16string normal(wide.size() * 3 + 16, u'\0');  // the longest expansion NFKD makes of a code unit is 18; retried below
  status = U_ZERO_ERROR;
  int32_t normal_length = unorm2_normalize(form, wide.data(), length, normal.data(), static_cast<int32_t>(normal.size()), &status);
  if (status == U_BUFFER_OVERFLOW_ERROR) {
    normal.resize(static_cast<std::size_t>(normal_length));
    status = U_ZERO_ERROR;
    normal_length = unorm2_normalize(form, wide.data(), length, normal.data(), normal_length, &status);
  }
  require(U_SUCCESS(status), std::string("Unicode normalization failed: ") + u_errorName(status));
  std::string out(static_cast<std::size_t>(normal_length) * 3, '\0');
  int32_t out_length = 0;
  status = U_ZERO_ERROR;
  u_strToUTF8(out.data(), static_cast<int32_t>(out.size()), &out_length, normal.data(), normal_length, &status);
  require(U_SUCCESS(status), std::string("Unicode normalization failed: ") + u_errorName(status));
  out.resize(static_cast<std::size_t>(out_length));
  return out;
}

/// Every occurrence of `pattern` in `text` replaced by `content`.
inline std::string replace_all(const std::string& text, const std::string& pattern, const std::string& content) {
  if (pattern.empty()) return text;
  std::string out;
  std::size_t from = 0;
  for (std::size_t at = text.find(pattern); at != std::string::npos; at = text.find(pattern, from)) {
    out.append(text, from, at - from).append(content);
    from = at + pattern.size();
  }
  return out.append(text, from, std::string::npos);
}

}  // namespace detail

/// The normalizer that tokenizer.json's `spec` describes (null: none); `what` names the file.
inline Normalizer make_normalizer(const nlohmann::json& spec, const std::string& what) {
  if (spec.is_null()) return [](const std::string& text) { return text; };
  const std::string type = spec.value("type", "");
  using Instance = const UNormalizer2* (*)(UErrorCode*);
  const std::vector<std::pair<std::string, Instance>> forms = {
      {"NFC", unorm2_getNFCInstance}, {"NFD", unorm2_getNFDInstance}, {"NFKC", unorm2_getNFKCInstance}, {"NFKD", unorm2_getNFKDInstance}};
  for (const auto& [name, instance] : forms) {
    if (type != name) continue;
    UErrorCode status = U_ZERO_ERROR;
    const UNormalizer2* form = instance(&status);
    require(U_SUCCESS(status), what + ": ICU has no " + name + " normalizer: " + u_errorName(status));
    return [form](const std::string& text) { return detail::unicode_normal_form(text, form); };
  }
  if (type == "Sequence") {
    std::vector<Normalizer> steps;
    for (const nlohmann::json& step : spec.at("normalizers")) steps.push_back(make_normalizer(step, what));
    return [steps](std::string text) {
      for (const Normalizer& step : steps) text = step(text);
      return text;
    };
  }
  if (type == "Prepend") {
    const std::string prefix = spec.at("prepend").get<std::string>();
    return [prefix](const std::string& text) { return text.empty() ? text : prefix + text; };
  }
  if (type == "Replace") {
    const nlohmann::json& pattern = spec.at("pattern");
    const std::string content = spec.at("content").get<std::string>();
    if (pattern.contains("String")) {
      const std::string literal = pattern.at("String").get<std::string>();
      return [literal, content](const std::string& text) { return detail::replace_all(text, literal, content); };
    }
    const auto regex = std::make_shared<Regex>(pattern.at("Regex").get<std::string>(), what + ": normalizer Replace pattern");
    return [regex, content](const std::string& text) {
      std::string out;
      std::size_t from = 0;
      for (const ByteRange& match : regex->matches(text)) {
        out.append(text, from, match.first - from).append(content);
        from = match.second;
      }
      return out.append(text, from, std::string::npos);
    };
  }
  throw Error(what + ": normalizer '" + type +
              "' is not implemented (gsq reads NFC, NFD, NFKC, NFKD, Prepend, Replace and Sequence)");
}

}  // namespace gsq
