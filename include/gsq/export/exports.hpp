// gsq/export/exports.hpp -- the exports quantize_model writes inside a method's output, by name:
//   compressed-tensors  directory compressed-tensors/  (transformers + compressed-tensors, vLLM)
//   gptq                directory gptq/                (transformers + GPTQModel or optimum, vLLM)
//   gguf                file model.gguf                (llama.cpp)
// Each loads on its own: config, tokenizer files and weights.
#pragma once

#include <algorithm>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "gsq/common/error.hpp"
#include "gsq/export/compressed_tensors.hpp"
#include "gsq/export/gguf_model.hpp"
#include "gsq/export/gptq_checkpoint.hpp"
#include "gsq/export/quantized_model.hpp"

namespace gsq {

struct ExportFormat {
  const char* name;
  const char* path;  // inside the method's output directory
  std::string (*unsupported)(const QuantizedModel&);  // why a model cannot be written, or empty
  void (*write)(const QuantizedModel&, const std::string& path);
};

inline const std::vector<ExportFormat>& export_formats() {
  static const std::vector<ExportFormat> formats = {
      {"compressed-tensors", "compressed-tensors", compressed_tensors_unsupported, write_compressed_tensors},
      {"gptq", "gptq", gptq_unsupported, write_gptq},
      {"gguf", "model.gguf", [](const QuantizedModel& model) { return gguf_unsupported(model); }, write_gguf}};
  return formats;
}

/// The formats of a comma-separated list ("gguf,gptq"); an unknown name is an error that lists
/// the known ones. Empty: none.
inline std::vector<ExportFormat> parse_exports(const std::string& list) {
  std::vector<ExportFormat> chosen;
  std::stringstream stream(list);
  for (std::string name; std::getline(stream, name, ',');) {
    if (name.empty()) continue;
    const auto named = [&](const ExportFormat& format) { return name == format.name; };
    const auto format = std::find_if(export_formats().begin(), export_formats().end(), named);
    require(format != export_formats().end(), "unknown export '" + name + "' (the exports are compressed-tensors, gptq and gguf)");
    if (std::none_of(chosen.begin(), chosen.end(), named)) chosen.push_back(*format);
  }
  return chosen;
}

/// An error naming the first of `formats` that cannot hold `model` (QuantizedModel::planned
/// before a run, so a bad combination is refused before any work).
inline void require_exportable(const std::vector<ExportFormat>& formats, const QuantizedModel& model) {
  for (const ExportFormat& format : formats) {
    const std::string why = format.unsupported(model);
    require(why.empty(), std::string("cannot export ") + format.name + ": " + why);
  }
}

}  // namespace gsq
