// gsq/text/bpe.hpp -- the byte-pair-encoding model of tokenizer.json ("model": {"type": "BPE"}):
// a word starts as one symbol per character (per byte-character after ByteLevel), and the
// adjacent pair whose merge ranks first is merged until no listed merge applies; on ties the
// leftmost pair goes first. Characters outside the vocabulary become their UTF-8 bytes'
// <0xNN> tokens (byte_fallback, SentencePiece-style models) or the unknown token (fused into
// one when fuse_unk says so). ignore_merges (Llama-3) takes a word that is itself in the
// vocabulary whole.
#pragma once

#include <array>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <queue>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/common/error.hpp"
#include "gsq/common/token_id.hpp"
#include "gsq/text/utf8.hpp"

namespace gsq {

class BytePairEncoding {
 public:
  /// The model that tokenizer.json's "model" object `model` describes; `what` names the file.
  BytePairEncoding(const nlohmann::json& model, const std::string& what) {
    require(model.value("type", "BPE") == "BPE", what + ": model type '" + model.value("type", "") +
                                                     "' is not implemented (gsq reads BPE tokenizers)");
    require(model.value("dropout", nlohmann::json()).is_null() || model.at("dropout").get<double>() == 0,
            what + ": BPE dropout randomises tokenization; gsq reads only tokenizers without it");
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
      require(model.value(key, nlohmann::json()).is_null() || model.at(key).get<std::string>().empty(),
              what + ": BPE with " + key + " is not implemented");
    for (const auto& [token, id] : model.at("vocab").items()) {
      require(id.is_number_unsigned() && id.get<std::uint64_t>() <= 0xFFFFFFFFu, what + ": vocab id of '" + token + "' is not a token id");
      vocabulary_.emplace(token, id.get<TokenId>());
    }
    std::uint32_t rank = 0;
    for (const nlohmann::json& merge : model.at("merges")) {
      std::pair<std::string, std::string> pair;
      if (merge.is_array() && merge.size() == 2) {
        pair = {merge[0].get<std::string>(), merge[1].get<std::string>()};
      } else {
        const std::string line = merge.get<std::string>();
        const std::size_t space = line.find(' ');
        require(space != std::string::npos && line.find(' ', space + 1) == std::string::npos,
                what + ": merge '" + line + "' is not two tokens separated by one space");
        pair = {line.substr(0, space), line.substr(space + 1)};
      }
      const TokenId left = id_of(pair.first, what), right = id_of(pair.second, what);
      const TokenId merged = id_of(pair.first + pair.second, what);
      merges_.insert_or_assign(key(left, right), Merge{rank++, merged});  // a pair listed twice ranks last, as in tokenizers
    }
    const nlohmann::json unknown = model.value("unk_token", nlohmann::json());
    if (!unknown.is_null()) unknown_ = id_of(unknown.get<std::string>(), what);
    fuse_unknown_ = model.value("fuse_unk", false);
    ignore_merges_ = model.value("ignore_merges", false);
    byte_fallback_ = model.value("byte_fallback", false);
    if (byte_fallback_)
      for (int byte = 0; byte < 256; ++byte) {
        char name[8];
        std::snprintf(name, sizeof name, "<0x%02X>", byte);
        byte_tokens_[byte] = id_of(name, what + " (byte_fallback needs all 256 byte tokens)");
      }
  }

  /// Appends the ids of `word` (valid UTF-8, non-empty) to `out`.
  void encode(const std::string& word, std::vector<TokenId>& out) const {
    if (ignore_merges_) {
      const auto whole = vocabulary_.find(word);
      if (whole != vocabulary_.end()) return out.push_back(whole->second);
    }
    const bool cached = word.size() < 256;  // long words are rare and would crowd the cache
    if (cached) {
      const auto hit = cache_.find(word);
      if (hit != cache_.end()) return out.insert(out.end(), hit->second.begin(), hit->second.end()), void();
    }
    std::vector<TokenId> ids = merge(initial_symbols(word));
    out.insert(out.end(), ids.begin(), ids.end());
    if (cached) {
      if (cache_.size() > 100000) cache_.clear();
      cache_.emplace(word, std::move(ids));
    }
  }

  /// The id of `token` in the vocabulary, if it has one.
  std::optional<TokenId> find(const std::string& token) const {
    const auto found = vocabulary_.find(token);
    return found == vocabulary_.end() ? std::nullopt : std::optional<TokenId>(found->second);
  }

 private:
  struct Merge {
    std::uint32_t rank;
    TokenId merged;
  };
  static std::uint64_t key(TokenId left, TokenId right) { return (std::uint64_t{left} << 32) | right; }

  TokenId id_of(const std::string& token, const std::string& what) const {
    const auto found = vocabulary_.find(token);
    require(found != vocabulary_.end(), what + ": token '" + token + "' is not in the vocabulary");
    return found->second;
  }

  /// One symbol per character; a character outside the vocabulary as its bytes' tokens or as
  /// the unknown token.
  std::vector<TokenId> initial_symbols(const std::string& word) const {
    std::vector<TokenId> symbols;
    bool previous_unknown = false;
    for (std::size_t at = 0; at < word.size();) {
      const std::size_t length = utf8_length(static_cast<unsigned char>(word[at]));
      const auto known = vocabulary_.find(word.substr(at, length));
      if (known != vocabulary_.end()) {
        symbols.push_back(known->second);
        previous_unknown = false;
      } else if (byte_fallback_) {
        for (std::size_t k = 0; k < length; ++k) symbols.push_back(byte_tokens_[static_cast<unsigned char>(word[at + k])]);
      } else {
        require(unknown_.has_value(), "the tokenizer has no token for '" + word.substr(at, length) +
                                          "' and neither byte_fallback nor an unk_token");
        if (!(fuse_unknown_ && previous_unknown)) symbols.push_back(*unknown_);
        previous_unknown = true;
      }
      at += length;
    }
    return symbols;
  }

  /// The symbols merged pair by pair, the lowest-ranked (then leftmost) first.
  std::vector<TokenId> merge(std::vector<TokenId> symbols) const {
    const int count = static_cast<int>(symbols.size());
    std::vector<int> previous(count), next(count);
    std::vector<bool> alive(count, true);
    for (int i = 0; i < count; ++i) previous[i] = i - 1, next[i] = i + 1 < count ? i + 1 : -1;
    using Candidate = std::pair<std::uint32_t, int>;  // (rank, left position)
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
    const auto offer = [&](int left) {
      if (left < 0 || next[left] < 0) return;
      const auto found = merges_.find(key(symbols[left], symbols[next[left]]));
      if (found != merges_.end()) queue.emplace(found->second.rank, left);
    };
    for (int i = 0; i + 1 < count; ++i) offer(i);
    while (!queue.empty()) {
      const auto [rank, left] = queue.top();
      queue.pop();
      if (!alive[left] || next[left] < 0) continue;
      const auto found = merges_.find(key(symbols[left], symbols[next[left]]));
      if (found == merges_.end() || found->second.rank != rank) continue;  // the pair changed since it was offered
      const int right = next[left];
      symbols[left] = found->second.merged;
      alive[right] = false;
      next[left] = next[right];
      if (next[right] >= 0) previous[next[right]] = left;
      offer(previous[left]);
      offer(left);
    }
    std::vector<TokenId> ids;
    for (int i = 0; i < count; ++i)
      if (alive[i]) ids.push_back(symbols[i]);
    return ids;
  }

  std::unordered_map<std::string, TokenId> vocabulary_;
  std::unordered_map<std::uint64_t, Merge> merges_;
  std::optional<TokenId> unknown_;
  bool fuse_unknown_ = false, ignore_merges_ = false, byte_fallback_ = false;
  std::array<TokenId, 256> byte_tokens_{};
  mutable std::unordered_map<std::string, std::vector<TokenId>> cache_;  // words seen before
};

}  // namespace gsq
