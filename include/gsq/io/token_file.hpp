// gsq/io/token_file.hpp -- token streams on disk: raw little-endian uint32 ids, NumPy .npy arrays
// (dtype <u4, <i4, <u2 or <i8 read; <u4 written), or a text's bytes as the ids of a byte-level
// model. Text through a model's own tokenizer is gsq/text/tokenizer.hpp's.
//
//   std::vector<gsq::TokenId> tokens = gsq::read_token_file("eval.npy");
//   gsq::write_token_file("eval.u32", tokens);
#pragma once

#include <cctype>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gsq/common/error.hpp"
#include "gsq/common/token_id.hpp"
#include "gsq/io/atomic_file.hpp"
#include "gsq/io/regular_file.hpp"

namespace gsq {

namespace detail {

inline bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

inline std::vector<std::uint8_t> read_whole_file(const std::string& path, const std::string& what) {
  const std::string content = read_regular_file(path, what);
  return std::vector<std::uint8_t>(content.begin(), content.end());
}

inline std::uint64_t load_unsigned(const std::uint8_t* bytes, std::size_t size) {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < size; ++i) value |= static_cast<std::uint64_t>(bytes[i]) << (8 * i);
  return value;
}

/// The text after `key` and a colon in a .npy header's Python dict literal, or throws.
inline std::string npy_field(const std::string& header, const std::string& key, const std::string& context) {
  std::size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) at = header.find("\"" + key + "\"");
  require(at != std::string::npos, context + ": the header has no '" + key + "'");
  at = header.find(':', at + key.size() + 2);
  require(at != std::string::npos, context + ": the header's '" + key + "' has no value");
  at = header.find_first_not_of(' ', at + 1);
  require(at != std::string::npos, context + ": the header's '" + key + "' has no value");
  return header.substr(at);
}

}  // namespace detail

/// Parses a NumPy .npy file held in memory as token ids: a C-order array (any shape, read
/// flat) of dtype <u4, <i4, <u2 or <i8, with every value in [0, 2^32). `label` names it in errors.
inline std::vector<TokenId> parse_npy_tokens(const std::vector<std::uint8_t>& file, const std::string& label) {
  const std::string context = "token file '" + label + "'";
  static const char magic[] = "\x93NUMPY";
  require(file.size() >= 10 && std::memcmp(file.data(), magic, 6) == 0,
          context + ": not a .npy file (no \\x93NUMPY magic at its start)");
  const unsigned major = file[6];
  require(major >= 1 && major <= 3, context + ": .npy format version " + std::to_string(major) + " is not supported");
  // Version 1 stores the header length in 2 bytes, versions 2 and 3 in 4.
  const std::size_t length_size = major == 1 ? 2 : 4;
  require(file.size() >= 8 + length_size, context + ": truncated in the header length");
  const std::uint64_t header_size = detail::load_unsigned(file.data() + 8, length_size);
  const std::size_t data_begin = 8 + length_size + static_cast<std::size_t>(header_size);
  require(header_size <= file.size() && data_begin <= file.size(), context + ": truncated in the header");
  const std::string header(reinterpret_cast<const char*>(file.data() + 8 + length_size), static_cast<std::size_t>(header_size));

  const std::string descr = detail::npy_field(header, "descr", context);
  require(!descr.empty() && (descr[0] == '\'' || descr[0] == '"'), context + ": the header's 'descr' is not a string");
  const std::string dtype = descr.substr(1, descr.find(descr[0], 1) - 1);
  std::size_t item_size = 0;
  if (dtype == "<u4" || dtype == "<i4") item_size = 4;
  if (dtype == "<u2") item_size = 2;
  if (dtype == "<i8") item_size = 8;
  require(item_size != 0, context + ": dtype '" + dtype + "' is not a token type (gsq reads <u4, <i4, <u2 and <i8)");

  const std::string fortran = detail::npy_field(header, "fortran_order", context);
  require(fortran.compare(0, 5, "False") == 0 || fortran.compare(0, 4, "True") == 0,
          context + ": the header's 'fortran_order' is neither True nor False");
  const std::string shape = detail::npy_field(header, "shape", context);
  require(!shape.empty() && shape[0] == '(' && shape.find(')') != std::string::npos,
          context + ": the header's 'shape' is not a tuple");
  std::uint64_t count = 1;
  long dimensions = 0;
  for (std::size_t at = 1; shape[at] != ')';) {
    if (shape[at] == ' ' || shape[at] == ',') {
      ++at;
      continue;
    }
    require(std::isdigit(static_cast<unsigned char>(shape[at])) != 0,
            context + ": the header's 'shape' holds something other than integers");
    std::uint64_t dimension = 0;
    for (; std::isdigit(static_cast<unsigned char>(shape[at])) != 0; ++at) {
      dimension = dimension * 10 + static_cast<std::uint64_t>(shape[at] - '0');
      require(dimension < (1ULL << 40), context + ": the header's 'shape' is too large");
    }
    count *= dimension;
    require(count < (1ULL << 40), context + ": the header's 'shape' is too large");
    ++dimensions;
  }
  require(fortran[0] == 'F' || dimensions <= 1,
          context + ": the array is in Fortran order; gsq reads tokens in C order");

  const std::uint64_t data_size = file.size() - data_begin;
  require(data_size >= count * item_size, context + ": truncated: the shape needs " + std::to_string(count * item_size) +
                                              " data bytes but the file holds " + std::to_string(data_size));
  require(data_size == count * item_size, context + ": " + std::to_string(data_size - count * item_size) +
                                              " bytes follow the array's data");
  std::vector<TokenId> tokens(static_cast<std::size_t>(count));
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    const std::uint64_t bits = detail::load_unsigned(file.data() + data_begin + i * item_size, item_size);
    // <i4 is sign-extended and <i8 reinterpreted, so negative ids are seen as such.
    const std::int64_t value = dtype == "<i4" ? static_cast<std::int32_t>(static_cast<std::uint32_t>(bits))
                                              : static_cast<std::int64_t>(bits);
    if (value < 0 || value > std::numeric_limits<TokenId>::max())
      throw Error(context + ": value " + std::to_string(value) + " at position " + std::to_string(i) +
                  " is not a token id");
    tokens[i] = static_cast<TokenId>(value);
  }
  return tokens;
}

/// Token ids from a file: a NumPy array when the name ends in ".npy", otherwise raw
/// little-endian uint32 values.
inline std::vector<TokenId> read_token_file(const std::string& path) {
  const std::vector<std::uint8_t> bytes = detail::read_whole_file(path, "token file");
  if (detail::ends_with(path, ".npy"))
    return parse_npy_tokens(bytes, path);
  require(bytes.size() % 4 == 0, "token file '" + path + "': " + std::to_string(bytes.size()) +
                                     " bytes are not whole uint32 token ids (truncated?)");
  std::vector<TokenId> tokens(bytes.size() / 4);
  for (std::size_t i = 0; i < tokens.size(); ++i)
    tokens[i] = static_cast<TokenId>(detail::load_unsigned(bytes.data() + 4 * i, 4));
  return tokens;
}

/// A text file's bytes as token ids 0-255, the tokens of a byte-level model.
inline std::vector<TokenId> read_byte_tokens(const std::string& path) {
  const std::vector<std::uint8_t> bytes = detail::read_whole_file(path, "text file");
  return std::vector<TokenId>(bytes.begin(), bytes.end());
}

/// Writes `tokens` to `path` atomically: a NumPy <u4 array when the name ends in ".npy", else
/// raw little-endian uint32 ids (read_token_file reads either back).
inline void write_token_file(const std::string& path, const std::vector<TokenId>& tokens) {
  std::string data(tokens.size() * 4, '\0');
  for (std::size_t i = 0; i < tokens.size(); ++i)
    for (int byte = 0; byte < 4; ++byte) data[4 * i + byte] = static_cast<char>((tokens[i] >> (8 * byte)) & 0xFF);
  std::string header;
  if (detail::ends_with(path, ".npy")) {
    std::string dictionary = "{'descr': '<u4', 'fortran_order': False, 'shape': (" + std::to_string(tokens.size()) + ",), }";
    dictionary.append(63 - (10 + dictionary.size()) % 64, ' ') += '\n';  // the data starts 64-byte aligned
    header = std::string("\x93NUMPY\x01\x00", 8);
    header += static_cast<char>(dictionary.size() & 0xFF);
    header += static_cast<char>(dictionary.size() >> 8);
    header += dictionary;
  }
  write_file_atomically(path, {{header.data(), header.size()}, {data.data(), data.size()}});
}

}  // namespace gsq
