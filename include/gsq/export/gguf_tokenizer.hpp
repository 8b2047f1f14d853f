// gsq/export/gguf_tokenizer.hpp -- a model's byte-level BPE tokenizer (tokenizer.json,
// tokenizer_config.json, chat_template.jinja) as the tokenizer.ggml.* metadata llama.cpp
// tokenizes by, written as llama.cpp's converter writes it (convert_hf_to_gguf.py's
// _set_vocab_gpt2 with gguf-py's SpecialVocab):
//   model "gpt2"; pre: llama.cpp's name of the pre-tokenizer (QuantizedModel::tokenizer_pre, which
//   a program that runs tokenizers finds by gsq/text/llama_cpp_pre_tokenizer.hpp), "default" when
//   unknown; tokens and their types (normal; added tokens control when special or named like one,
//   else user-defined; ids no token has "[PADn]", unused); merges (a space in a merge as U+0120);
//   the bos/eos/unk/sep/pad/cls/mask ids named in tokenizer_config.json (else config.json's);
//   add_bos_token / add_eos_token: whether the post-processor puts them around every text, as
//   transformers does (else tokenizer_config.json's flags; else no BOS, and EOS left unsaid, as
//   the converter leaves it); the chat template (tokenizer_config.json's, or chat_template.jinja).
// A SentencePiece-style BPE (byte_fallback: Llama 2, Mistral v0.1-v0.3) is llama.cpp's "llama"
// vocabulary, with scores; the export refuses it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/common/error.hpp"
#include "gsq/export/quantized_model.hpp"
#include "gsq/format/gguf.hpp"
#include "gsq/io/regular_file.hpp"

namespace gsq {
namespace detail {

/// The parsed JSON file `name` of `directory`, or null when there is none.
inline nlohmann::json optional_json(const std::string& directory, const std::string& name) {
  const std::string path = directory + "/" + name;
  if (!std::filesystem::exists(path)) return nullptr;
  return nlohmann::json::parse(read_regular_file(path, name, std::size_t(1) << 26), nullptr, false);
}

/// The parsed tokenizer.json of `directory`; an error unless it is a byte-level BPE tokenizer
/// (what the GGUF export writes).
inline nlohmann::json bpe_tokenizer(const std::string& directory) {
  const std::string path = directory + "/tokenizer.json";
  require(std::filesystem::exists(path), "the GGUF export needs the model's tokenizer.json, and " + directory + " has none");
  const nlohmann::json tokenizer =
      nlohmann::json::parse(read_regular_file(path, "tokenizer", std::size_t(1) << 30), nullptr, false);
  require(tokenizer.is_object() && tokenizer.contains("model") && tokenizer["model"].is_object() &&
              tokenizer["model"].value("type", "") == "BPE" && tokenizer["model"].contains("vocab"),
          path + ": the GGUF export writes BPE tokenizers (model.type \"BPE\" with a vocab)");
  require(!tokenizer["model"].value("byte_fallback", false),
          path + ": a SentencePiece-style BPE (byte_fallback, as Llama 2's and Mistral's), which llama.cpp holds as its "
                 "\"llama\" vocabulary with scores; the GGUF export writes byte-level BPE tokenizers only");
  return tokenizer;
}

/// Whether an added token's text looks like a control token (the converter's
/// does_token_look_special).
inline bool looks_special(const std::string& text) {
  const auto wrapped = [&](const std::string& open, const std::string& close) {
    return text.size() >= open.size() + close.size() && text.compare(0, open.size(), open) == 0 &&
           text.compare(text.size() - close.size(), close.size(), close) == 0;
  };
  return text == "<pad>" || text == "<mask>" || text == "<2mass>" || text == "[@BOS@]" || wrapped("<|", "|>") ||
         wrapped("<\xEF\xBD\x9C", "\xEF\xBD\x9C>") || wrapped("<unused", ">");
}

/// The token table (text and type per id) of the model's tokenizer.json (`tokenizer`, parsed by
/// bpe_tokenizer), for a vocabulary of `vocab_size`: an error names an id outside it or an id
/// given to two different tokens.
struct GgufTokens {
  std::vector<std::string> texts;
  std::vector<std::int32_t> types;  // llama.cpp's: 1 normal, 3 control, 4 user-defined, 5 unused
};
inline GgufTokens gguf_tokens(const nlohmann::json& tokenizer, long vocab_size, const std::string& path) {
  GgufTokens table{std::vector<std::string>(static_cast<std::size_t>(vocab_size)), std::vector<std::int32_t>(static_cast<std::size_t>(vocab_size), 0)};
  const auto place = [&](const nlohmann::json& id_value, const std::string& text, std::int32_t type) {
    require(id_value.is_number_integer(), path + ": token '" + text + "' has no integer id");
    const long id = id_value.get<long>();
    require(id >= 0 && id < vocab_size, path + ": token id " + std::to_string(id) + " is outside the model's vocabulary of " +
                                            std::to_string(vocab_size));
    const auto index = static_cast<std::size_t>(id);
    require(table.types[index] == 0 || table.texts[index] == text,
            path + ": token id " + std::to_string(id) + " is given to both '" + table.texts[index] + "' and '" + text + "'");
    table.texts[index] = text;
    table.types[index] = type;
  };
  for (const auto& [text, id] : tokenizer["model"]["vocab"].items()) place(id, text, 1);  // normal
  if (tokenizer.contains("added_tokens"))
    for (const nlohmann::json& added : tokenizer["added_tokens"]) {
      require(added.is_object() && added.contains("content") && added["content"].is_string(),
              path + ": an added token without \"content\"");
      const std::string text = added["content"].get<std::string>();
      place(added.value("id", nlohmann::json()), text, added.value("special", false) || looks_special(text) ? 3 : 4);
    }
  for (std::size_t id = 0; id < table.texts.size(); ++id)
    if (table.types[id] == 0) table.texts[id] = "[PAD" + std::to_string(id) + "]", table.types[id] = 5;  // unused
  return table;
}

/// The text of special token `kind` ("bos", ...) in tokenizer_config.json (a string, or an
/// object with "content"), or empty.
inline std::string special_token_text(const nlohmann::json& config, const std::string& kind) {
  if (!config.is_object() || !config.contains(kind + "_token")) return {};
  const nlohmann::json& entry = config[kind + "_token"];
  if (entry.is_string()) return entry.get<std::string>();
  return entry.is_object() && entry.contains("content") && entry["content"].is_string() ? entry["content"].get<std::string>() : "";
}

/// Whether the tokenizer's post-processor puts special token `text` first (`first`) or last in
/// every single text, as the converter reads it (a template's end, Roberta's always, ByteLevel's
/// never); null when it does not say.
inline nlohmann::json template_adds(const nlohmann::json& tokenizer, const std::string& text, bool first) {
  const nlohmann::json processor = tokenizer.value("post_processor", nlohmann::json());
  if (!processor.is_object()) return nullptr;
  nlohmann::json adds;
  for (const nlohmann::json& step : processor.value("processors", nlohmann::json::array({processor}))) {
    if (!step.is_object()) continue;
    const std::string type = step.value("type", "");
    const nlohmann::json single = step.value("single", nlohmann::json::array());
    if (type == "ByteLevel" && adds.is_null()) adds = false;
    if (type == "RobertaProcessing") adds = true;
    if (type != "TemplateProcessing" || !single.is_array() || single.size() < 2) continue;
    const nlohmann::json& end = first ? single.front() : single.back();
    if (end.is_object() && end.contains("SpecialToken")) adds = end["SpecialToken"].value("id", "") == text;
  }
  return adds;
}

/// The tokenizer.ggml.* metadata of `model` from its tokenizer.json (`tokenizer`, parsed by
/// bpe_tokenizer), tokenizer_config.json and chat template.
inline void set_gguf_tokenizer(GgufWriter& writer, const QuantizedModel& model, const nlohmann::json& tokenizer) {
  const GgufTokens table = gguf_tokens(tokenizer, model.config.vocab_size, model.directory + "/tokenizer.json");
  // The pair form of a merge may hold spaces, which the "a b" form cannot: U+0120 stands in.
  const auto spaced = [](const nlohmann::json& part) {
    std::string text;
    for (const char c : part.get<std::string>()) text += c == ' ' ? std::string("\xC4\xA0") : std::string(1, c);
    return text;
  };
  std::vector<std::string> merges;
  for (const nlohmann::json& merge : tokenizer["model"].value("merges", nlohmann::json::array()))
    merges.push_back(merge.is_string() ? merge.get<std::string>() : spaced(merge.at(0)) + " " + spaced(merge.at(1)));
  writer.set("tokenizer.ggml.model", std::string("gpt2"));
  writer.set("tokenizer.ggml.pre", model.tokenizer_pre.empty() ? std::string("default") : model.tokenizer_pre);
  writer.set("tokenizer.ggml.tokens", table.texts);
  writer.set("tokenizer.ggml.token_type", table.types);
  writer.set("tokenizer.ggml.merges", merges);

  const nlohmann::json config = optional_json(model.directory, "tokenizer_config.json");
  // The special tokens, by llama.cpp's key names.
  const std::vector<std::pair<std::string, std::string>> specials = {
      {"bos", "bos_token_id"}, {"eos", "eos_token_id"}, {"unk", "unknown_token_id"}, {"sep", "seperator_token_id"},
      {"pad", "padding_token_id"}, {"cls", "cls_token_id"}, {"mask", "mask_token_id"}};
  for (const auto& [kind, key] : specials) {
    const std::string text = special_token_text(config, kind);
    nlohmann::json id;
    for (const nlohmann::json& added : tokenizer.value("added_tokens", nlohmann::json::array()))
      if (!text.empty() && added.value("content", "") == text) {
        id = added.value("id", nlohmann::json());
        break;
      }
    if (id.is_null()) id = model.config_json.value(kind + "_token_id", nlohmann::json());
    if (id.is_number_integer() && id.get<long>() >= 0 && id.get<long>() < model.config.vocab_size)
      writer.set("tokenizer.ggml." + key, id.get<std::uint32_t>());
  }
  // add_bos_token always (llama.cpp's default depends on the pre-tokenizer), add_eos_token where
  // the tokenizer says.
  for (const std::string kind : {"bos", "eos"}) {
    nlohmann::json adds = template_adds(tokenizer, special_token_text(config, kind), kind == "bos");
    if (adds.is_null() && config.is_object() && config.value("add_" + kind + "_token", nlohmann::json()).is_boolean())
      adds = config["add_" + kind + "_token"];
    if (adds.is_null() && kind == "bos") adds = false;
    if (!adds.is_null()) writer.set("tokenizer.ggml.add_" + kind + "_token", adds.get<bool>());
  }
  std::string chat_template;
  if (config.is_object() && config.value("chat_template", nlohmann::json()).is_string())
    chat_template = config["chat_template"].get<std::string>();
  else if (std::filesystem::exists(model.directory + "/chat_template.jinja"))
    chat_template = read_regular_file(model.directory + "/chat_template.jinja", "chat template", std::size_t(1) << 26);
  if (!chat_template.empty()) writer.set("tokenizer.chat_template", chat_template);
}

}  // namespace detail
}  // namespace gsq
