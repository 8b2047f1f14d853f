// bench/ggml/llama_cpp_k_quants.cpp -- llama.cpp's own K-quant quantizer (ggml's Q2_K, Q3_K, Q4_K,
// with an importance matrix diag(H) and without one) on layer files, measured as gsq measures its
// methods: the relative Hessian error tr(dW H dW^T) / tr(W H W^T). Also an interop check: ggml
// decodes the bytes of gsq's fit (encode_k_quant of fit_k_quant) to exactly the weights that
// KQuantTensor::dequantize() gives; the exit status is 1 where it does not.
//
// It links ggml, which gsq does not depend on, so CMake (which builds every bench/*.cpp) leaves
// this folder alone: bench/k_quants_vs_llama_cpp.sh builds ggml and this program.
//
//   llama_cpp_k_quants --input layer.safetensors [--input ...] [--formats q2_k,q3_k,q4_k] [--json FILE]
//
// A layer file holds W (rows x cols, cols a multiple of 256) and H (cols x cols), as
// quantize_layer --save-layer and quantize_model --dump-layers write them.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <boost/program_options.hpp>
#include <ggml.h>
#include <nlohmann/json.hpp>

#include <gsq/backend/host.hpp>
#include <gsq/format/k_quant.hpp>
#include <gsq/init/k_quant_fit.hpp>
#include <gsq/init/scale_fit.hpp>
#include <gsq/io/atomic_file.hpp>
#include <gsq/io/output_location.hpp>
#include <gsq/io/safetensors.hpp>
#include <gsq/objective/hessian.hpp>

#include "../../experiments/driver.hpp"

namespace po = boost::program_options;

namespace {

constexpr const char* program_name = "llama_cpp_k_quants";

struct Options {
  std::vector<std::string> inputs;
  std::vector<const gsq::KQuantFormat*> formats;
  std::string json_path;
};

std::optional<Options> parse_options(int argc, char** argv) {
  Options options;
  std::string formats = "q2_k,q3_k,q4_k";
  po::options_description all("Options");
  all.add_options()
      ("input", po::value(&options.inputs)->multitoken()->value_name("FILE"),
       "a layer: safetensors with W (rows x cols) and H (cols x cols); repeat the flag or list several files")
      ("formats", po::value(&formats)->default_value(formats)->value_name("LIST"), "K-quant formats, comma-separated")
      ("json", po::value(&options.json_path)->value_name("FILE"), "also write the results to FILE, one record per layer and format")
      ("help", "print this help and exit");
  po::variables_map values;
  const po::positional_options_description no_positional;  // so that a stray word is an error
  po::store(po::command_line_parser(argc, argv).options(all).positional(no_positional).run(), values);
  if (values.count("help")) {
    std::cout << "Usage: " << program_name << " --input FILE... [options]\n\n"
              << "Quantizes each layer with ggml's K-quant quantizer, with the importance matrix diag(H) and\n"
              << "without, and prints the relative Hessian errors beside gsq's fit (fit_k_quant); checks that\n"
              << "ggml decodes gsq's blocks to exactly gsq's weights (exit status 1 if not).\n"
              << all << "\n";
    return std::nullopt;
  }
  po::notify(values);
  gsq::require(!options.inputs.empty(), "--input: name at least one layer file");
  std::stringstream list(formats);
  for (std::string name; std::getline(list, name, ',');) options.formats.push_back(&gsq::k_quant_format_named(name));
  gsq::require(!options.formats.empty(), "--formats is empty: name q2_k, q3_k, q4_k, q5_k or q6_k");
  if (!options.json_path.empty()) {
    std::vector<gsq::NamedPath> apart;
    for (const std::string& input : options.inputs) apart.push_back({"--input", input});
    options.json_path = gsq::claim_output({"--json", options.json_path}, gsq::OutputKind::file, apart);
  }
  return options;
}

ggml_type ggml_type_of(const gsq::KQuantFormat& format) {
  const auto type = static_cast<ggml_type>(format.ggml_type);
  // gsq packs blocks of the sizes ggml reads, or its bytes are not ggml's blocks.
  const ggml_type_traits* traits = ggml_get_type_traits(type);
  gsq::require(traits->blck_size == format.super_block &&
                   traits->type_size == static_cast<std::size_t>(format.block_bytes),
               std::string(format.name) + ": ggml's " + traits->type_name + " blocks are not gsq's");
  return type;
}

/// The weights ggml decodes from `blocks` of `format` (rows x cols, row-major super-blocks).
gsq::Matrix<float> ggml_decode(const std::vector<std::uint8_t>& blocks, const gsq::KQuantFormat& format, long rows,
                               long cols) {
  gsq::Matrix<float> weight(rows, cols);
  ggml_get_type_traits(ggml_type_of(format))->to_float(blocks.data(), weight.data(), rows * cols);
  return weight;
}

/// ggml's quantization of `weight` in `format` under `imatrix` (one importance per column, or
/// nullptr), decoded by ggml.
gsq::Matrix<float> ggml_round_trip(const gsq::Matrix<float>& weight, const gsq::KQuantFormat& format,
                                   const float* imatrix) {
  const ggml_type type = ggml_type_of(format);
  std::vector<std::uint8_t> blocks(ggml_row_size(type, weight.cols) * static_cast<std::size_t>(weight.rows));
  ggml_quantize_chunk(type, weight.data(), blocks.data(), 0, weight.rows, weight.cols, imatrix);
  return ggml_decode(blocks, format, weight.rows, weight.cols);
}

struct Record {
  std::string layer;
  long rows, cols;
  const gsq::KQuantFormat* format;
  double llama_cpp, llama_cpp_imatrix, gsq_fit;  // relative Hessian errors
  long decode_mismatches;                        // weights where ggml's decoding of gsq's bytes differs
};

/// Every format of `options` on the layer in `path`.
std::vector<Record> measure_layer(const std::string& path, const Options& options) {
  const gsq::SafetensorsFile file = gsq::SafetensorsFile::open(path);
  const gsq::Matrix<float> weight = file.matrix("W");
  gsq::require(weight.cols % 256 == 0,  // whole blocks of every format
               path + ": W has " + std::to_string(weight.cols) + " columns, not whole super-blocks of 256");
  gsq::HessianObjective<> objective = [&]() -> gsq::HessianObjective<> {
    try {
      return {weight, file.matrix("H")};
    } catch (const gsq::Error& error) {  // the objective's checks of H do not name the file
      throw gsq::Error(path + ": " + error.what());
    }
  }();
  const std::vector<double> diagonal = gsq::hessian_diagonal(objective.hessian());
  const std::vector<float> importance(diagonal.begin(), diagonal.end());  // what llama.cpp's imatrix holds
  std::vector<Record> records;
  for (const gsq::KQuantFormat* format : options.formats) {
    const gsq::KQuantTensor fit = gsq::fit_k_quant(weight, importance, *format);
    const gsq::Matrix<float> ours = fit.dequantize();
    const gsq::Matrix<float> decoded = ggml_decode(gsq::encode_k_quant(fit), *format, weight.rows, weight.cols);
    long mismatches = 0;
    for (std::size_t i = 0; i < ours.size(); ++i) mismatches += ours.values[i] != decoded.values[i];
    records.push_back({path, weight.rows, weight.cols, format,
                       objective.relative_error(ggml_round_trip(weight, *format, nullptr)),
                       objective.relative_error(ggml_round_trip(weight, *format, importance.data())),
                       objective.relative_error(ours), mismatches});
  }
  return records;
}

void print_table(const std::vector<Record>& records) {
  int width = 5;
  for (const Record& r : records) width = std::max(width, static_cast<int>(r.layer.size()));
  std::printf("%-*s %-6s %12s %18s %12s  %s\n", width, "layer", "format", "llama.cpp", "llama.cpp imatrix", "gsq fit",
              "ggml decodes gsq's bytes");
  for (const Record& r : records) {
    const std::string decode = r.decode_mismatches == 0 ? "exactly" : std::to_string(r.decode_mismatches) + " weights differ";
    std::printf("%-*s %-6s %12.4g %18.4g %12.4g  %s\n", width, r.layer.c_str(), r.format->name, r.llama_cpp,
                r.llama_cpp_imatrix, r.gsq_fit, decode.c_str());
  }
}

/// The --json report: {"producer": "gsq", "records": [one per layer and format]}.
nlohmann::json json_report(const std::vector<Record>& records) {
  nlohmann::json list = nlohmann::json::array();
  for (const Record& r : records)
    list.push_back({{"layer", r.layer},
                    {"rows", r.rows},
                    {"cols", r.cols},
                    {"format", r.format->name},
                    {"bpw", r.format->bits_per_weight()},
                    {"llama_cpp_rel_error", r.llama_cpp},
                    {"llama_cpp_imatrix_rel_error", r.llama_cpp_imatrix},
                    {"gsq_fit_rel_error", r.gsq_fit},
                    {"decode_mismatches", r.decode_mismatches}});
  return {{"producer", gsq::producer}, {"records", std::move(list)}};
}

}  // namespace

int main(int argc, char** argv) {
  return gsq::driver::run(program_name, [&] {
    const std::optional<Options> options = parse_options(argc, argv);
    if (!options) return 0;
    std::vector<Record> records;
    for (const std::string& input : options->inputs)
      for (Record& record : measure_layer(input, *options)) records.push_back(std::move(record));
    print_table(records);
    if (!options->json_path.empty()) gsq::write_json_atomically(options->json_path, json_report(records));
    int status = 0;
    for (const Record& r : records)
      if (r.decode_mismatches != 0) {
        std::fprintf(stderr, "%s: error: %s, %s: ggml decodes gsq's blocks to other weights than gsq's in %ld places\n",
                     program_name, r.layer.c_str(), r.format->name, r.decode_mismatches);
        status = 1;
      }
    return status;
  });
}
