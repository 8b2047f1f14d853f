// The export writers' pieces: the dense bit streams of compressed-tensors and GPTQ, GPTQ's
// transposed layout and v1 zeros, the GGUF rotary row order, and the combinations each format
// refuses. (tests/interop/check_exports.sh loads whole exports in the real readers.)
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <gsq/export/exports.hpp>

namespace {

/// Value i of a dense little-endian bit stream, read bit by bit (independent of the packer).
std::uint32_t read_stream(const std::vector<std::int32_t>& words, std::size_t stride, std::size_t first, std::size_t i,
                          int bits) {
  std::uint32_t value = 0;
  for (int b = 0; b < bits; ++b) {
    const std::size_t bit = i * static_cast<std::size_t>(bits) + static_cast<std::size_t>(b);
    const auto word = static_cast<std::uint32_t>(words[first + bit / 32 * stride]);
    value |= ((word >> (bit % 32)) & 1u) << b;
  }
  return value;
}

gsq::QuantizedTensor random_tensor(const gsq::GridSpec& grid, long rows, long cols, long group, unsigned seed) {
  gsq::QuantizedTensor tensor{grid, rows, cols, group, {}, {}};
  std::mt19937 random(seed);
  std::uniform_int_distribution<int> code(grid.min_level, grid.max_level);
  for (long i = 0; i < rows * cols; ++i) tensor.codes.push_back(static_cast<std::int8_t>(code(random)));
  for (long i = 0; i < rows * (cols / group); ++i) tensor.scales.push_back(0.01f * static_cast<float>(i + 1));
  return tensor;
}

}  // namespace

TEST_CASE("bit streams: known answers, and every width read back bit by bit", "[exports]") {
  std::vector<std::int32_t> words(1);
  gsq::pack_bit_stream(3, 3, [](std::size_t i) { return static_cast<std::uint32_t>(i + 1); }, words.data());
  CHECK(words[0] == (1 | 2 << 3 | 3 << 6));
  // Eleven 3-bit sevens: ten fill bits 0-29, the eleventh spills one bit into the next word.
  words.assign(2, 0);
  gsq::pack_bit_stream(11, 3, [](std::size_t) { return 7u; }, words.data());
  CHECK(static_cast<std::uint32_t>(words[0]) == 0xFFFFFFFFu);
  CHECK(words[1] == 1);
  for (int bits : {2, 3, 4}) {
    std::mt19937 random(static_cast<unsigned>(bits));
    std::vector<std::uint32_t> values(101);
    for (std::uint32_t& value : values) value = random() % (1u << bits);
    words.assign(gsq::bit_stream_words(values.size(), bits), -1);
    gsq::pack_bit_stream(values.size(), bits, [&](std::size_t i) { return values[i]; }, words.data());
    for (std::size_t i = 0; i < values.size(); ++i) CHECK(read_stream(words, 1, 0, i, bits) == values[i]);
    const std::size_t tail = values.size() * static_cast<std::size_t>(bits) % 32;
    CHECK(static_cast<std::uint32_t>(words.back()) >> tail == 0u);  // tail bits zero
  }
  CHECK_THROWS_WITH(gsq::pack_bit_stream(1, 2, [](std::size_t) { return 4u; }, words.data()),
                    Catch::Contains("does not fit"));
}

TEST_CASE("compressed-tensors rows and GPTQ columns hold code + 2^(b-1); GPTQ's zeros are v1", "[exports]") {
  for (const gsq::GridSpec& grid : {gsq::grid_spec<gsq::Int<2>>(), gsq::grid_spec<gsq::Int<3>>(),
                                    gsq::grid_spec<gsq::Int<4>>(), gsq::grid_spec<gsq::Ternary>()}) {
    INFO(grid.name);
    const int bits = grid.code_bits;
    const gsq::QuantizedTensor tensor = random_tensor(grid, 32, 64, 32, 7);
    const std::vector<std::int32_t> packed = gsq::pack_quantized_codes(tensor);
    const std::size_t row_words = gsq::bit_stream_words(64, bits);
    REQUIRE(packed.size() == 32 * row_words);
    for (long r = 0; r < 32; ++r)
      for (long c = 0; c < 64; ++c)
        CHECK(static_cast<int>(read_stream(packed, 1, static_cast<std::size_t>(r) * row_words, static_cast<std::size_t>(c), bits)) -
                  (1 << (bits - 1)) == tensor.code(r, c));

    gsq::SafetensorsWriter writer;
    gsq::add_gptq_linear(writer, "p", tensor);
    const std::vector<std::uint8_t> bytes = writer.to_bytes();
    const gsq::SafetensorsFile file = gsq::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "gptq");
    const auto int32s = [&](const std::string& name) {
      const gsq::ByteView view = file.raw_bytes(name);
      std::vector<std::int32_t> values(view.size / 4);
      std::memcpy(values.data(), view.data, view.size);
      return values;
    };
    const std::vector<std::int32_t> qweight = int32s("p.qweight"), qzeros = int32s("p.qzeros"), g_idx = int32s("p.g_idx");
    CHECK(file.info("p.qweight").shape == std::vector<std::int64_t>{64 * bits / 32, 32});
    CHECK(file.info("p.qzeros").shape == std::vector<std::int64_t>{2, 32 * bits / 32});
    for (long r = 0; r < 32; ++r)
      for (long c = 0; c < 64; ++c)
        CHECK(static_cast<int>(read_stream(qweight, 32, static_cast<std::size_t>(r), static_cast<std::size_t>(c), bits)) -
                  (1 << (bits - 1)) == tensor.code(r, c));
    for (std::size_t g = 0; g < 2; ++g)
      for (std::size_t j = 0; j < 32; ++j)  // v1: the zero point 2^(b-1), stored less one
        CHECK(read_stream(qzeros, 1, g * static_cast<std::size_t>(bits), j, bits) == (1u << (bits - 1)) - 1);
    const gsq::Matrix<float> scales = file.matrix("p.scales");
    CHECK(scales.rows == 2);
    CHECK(scales(1, 5) == gsq::half_bits_to_float(gsq::float_to_half_bits(tensor.scale(5, 32))));  // fp16, transposed
    CHECK(g_idx[31] == 0);
    CHECK(g_idx[32] == 1);
  }
}

TEST_CASE("GGUF: q/k rows go to llama.cpp's rotary order", "[exports][gguf]") {
  // Two heads of dimension 4: checkpoint rows h*4 + j*2 + i become h*4 + 2i + j.
  CHECK(gsq::llama_cpp_rotary_order(8, 2) == std::vector<long>{0, 2, 1, 3, 4, 6, 5, 7});
}

TEST_CASE("exports refuse what their format cannot hold, naming it", "[exports]") {
  std::string why;
  CHECK(gsq::exact_ggml_type(random_tensor(gsq::grid_spec<gsq::Int<4>>(), 2, 64, 64, 1)) == gsq::GgmlType::Q4_0);
  CHECK(gsq::exact_ggml_type(random_tensor(gsq::grid_spec<gsq::Ternary>(), 2, 256, 256, 1)) == gsq::GgmlType::TQ2_0);
  CHECK(gsq::exact_ggml_type(random_tensor(gsq::grid_spec<gsq::Int<2>>(), 2, 256, 128, 1)) == gsq::GgmlType::Q2_0);
  CHECK(gsq::exact_ggml_type(random_tensor(gsq::grid_spec<gsq::Int<2>>(), 2, 96, 32, 1), &why) == gsq::GgmlType::F32);
  CHECK_THAT(why, Catch::Contains("int2 with groups of 32"));
  CHECK(gsq::exact_ggml_type(random_tensor(gsq::grid_spec<gsq::Int<3>>(), 2, 256, 256, 1), &why) == gsq::GgmlType::F32);
  CHECK_THAT(why, Catch::Contains("TQ2_0 (int2 or ternary, groups of 256)"));

  CHECK_THROWS_WITH(gsq::parse_exports("gguf,onnx"), Catch::Contains("unknown export 'onnx'"));
  CHECK(gsq::parse_exports("gguf,gptq,gguf").size() == 2);
  CHECK(gsq::parse_exports("").empty());

  // The bundled model, planned at 3 bits with groups of 128: GGUF refuses, the others accept.
  const gsq::QuantizedModel planned = gsq::QuantizedModel::planned(
      GSQ_SOURCE_DIR "/data/llama-bytes-3m", gsq::grid_spec<gsq::Int<3>>(), [](long) { return 128L; });
  CHECK_NOTHROW(gsq::require_exportable(gsq::parse_exports("compressed-tensors,gptq"), planned));
  CHECK_THROWS_WITH(gsq::require_exportable(gsq::parse_exports("gguf"), planned),
                    Catch::StartsWith("cannot export gguf: GGUF holds gsq's codes exactly"));
  // A checkpoint without tokenizer.json cannot become a GGUF.
  const gsq::QuantizedModel no_tokenizer = gsq::QuantizedModel::planned(
      GSQ_SOURCE_DIR "/tests/data/tiny-llama3", gsq::grid_spec<gsq::Int<4>>(), [](long cols) { return cols; });
  CHECK_THROWS_WITH(gsq::require_exportable(gsq::parse_exports("gguf"), no_tokenizer),
                    Catch::Contains("needs the model's tokenizer.json"));
}

TEST_CASE("compressed-tensors writes Mixture-of-Experts and latent-attention models, routers ignored; GPTQ refuses them", "[exports]") {
  const gsq::QuantizedModel qwen2_moe = gsq::QuantizedModel::planned(
      GSQ_SOURCE_DIR "/tests/data/tiny-qwen2-moe", gsq::grid_spec<gsq::Int<4>>(), [](long cols) { return cols; });
  CHECK_NOTHROW(gsq::require_exportable(gsq::parse_exports("compressed-tensors"), qwen2_moe));
  CHECK_THROWS_WITH(gsq::require_exportable(gsq::parse_exports("gptq"), qwen2_moe),
                    Catch::StartsWith("cannot export gptq: Qwen2MoeForCausalLM has experts or latent attention"));
  // Layers 0 and 2 are mixtures (router and shared-expert gate each), layer 1 a dense MLP.
  CHECK(gsq::compressed_tensors_config(qwen2_moe).at("ignore") ==
        nlohmann::json({"lm_head", "model.layers.0.mlp.gate", "model.layers.0.mlp.shared_expert_gate", "model.layers.2.mlp.gate",
                        "model.layers.2.mlp.shared_expert_gate"}));
  // Every name it ignores is a tensor of the checkpoint, and none is quantized.
  for (const auto& name : gsq::compressed_tensors_config(qwen2_moe).at("ignore")) {
    if (name == "lm_head") continue;
    INFO(name);
    CHECK(qwen2_moe.checkpoint.contains(name.get<std::string>() + ".weight"));
    CHECK(qwen2_moe.linear(name.get<std::string>() + ".weight") == nullptr);
  }
  const gsq::QuantizedModel deepseek = gsq::QuantizedModel::planned(
      GSQ_SOURCE_DIR "/tests/data/tiny-deepseek-v3", gsq::grid_spec<gsq::Int<4>>(), [](long cols) { return cols; });
  CHECK_NOTHROW(gsq::require_exportable(gsq::parse_exports("compressed-tensors"), deepseek));
  CHECK_THROWS_WITH(gsq::require_exportable(gsq::parse_exports("gptq"), deepseek), Catch::Contains("latent attention"));
}

TEST_CASE("a mix of grid schemes: compressed-tensors writes a config group per scheme naming its modules; GPTQ refuses it", "[exports]") {
  const std::string model = GSQ_SOURCE_DIR "/data/llama-bytes-3m";
  std::map<std::string, gsq::GridScheme> schemes;
  const gsq::LlamaConfig config = gsq::LlamaConfig::load(model + "/config.json");
  for (long layer = 0; layer < config.layers; ++layer)
    for (const std::string& linear : config.linear_names(layer))
      schemes[gsq::LlamaModel::tensor_name(layer, linear)] =
          gsq::grid_scheme_named(linear == "mlp.down_proj" ? "int8-per-channel" : layer == 0 ? "int3-g64" : "int4-g128", "a test");
  const gsq::QuantizedModel mix = gsq::QuantizedModel::planned(model, schemes);
  CHECK(mix.mixed());
  CHECK_NOTHROW(gsq::require_exportable(gsq::parse_exports("compressed-tensors"), mix));
  CHECK_THROWS_WITH(gsq::require_exportable(gsq::parse_exports("gptq"), mix), Catch::Contains("differ in grid or group size"));
  const nlohmann::json groups = gsq::compressed_tensors_config(mix).at("config_groups");
  REQUIRE(groups.size() == 3);
  std::map<std::string, nlohmann::json> weights_of;  // module -> its group's weights
  for (const auto& [name, group] : groups.items())
    for (const nlohmann::json& target : group.at("targets")) {
      CHECK(!weights_of.count(target.get<std::string>()));  // in one group only
      weights_of[target.get<std::string>()] = group.at("weights");
    }
  CHECK(weights_of.size() == schemes.size());
  const nlohmann::json& down = weights_of.at("model.layers.2.mlp.down_proj");
  CHECK(down.at("num_bits") == 8);
  CHECK(down.at("strategy") == "channel");
  CHECK(down.at("group_size").is_null());
  CHECK(weights_of.at("model.layers.0.self_attn.k_proj").at("num_bits") == 3);
  CHECK(weights_of.at("model.layers.0.self_attn.k_proj").at("group_size") == 64);
  CHECK(weights_of.at("model.layers.3.mlp.up_proj").at("group_size") == 128);
  // A uniform model keeps the one group that targets every Linear.
  const gsq::QuantizedModel uniform = gsq::QuantizedModel::planned(model, gsq::grid_spec<gsq::Int<4>>(), [](long) { return 128L; });
  CHECK(!uniform.mixed());
  CHECK(gsq::compressed_tensors_config(uniform).at("config_groups").at("group_0").at("targets") == nlohmann::json({"Linear"}));
  // What compressed-tensors cannot hold: 5-bit codes (a llama.cpp mix's Q5_0), a quantized embedding.
  std::map<std::string, gsq::GgmlType> types;
  for (const auto& [name, scheme] : schemes) types[name] = name.find("down_proj") != std::string::npos ? gsq::GgmlType::Q5_0 : gsq::GgmlType::Q8_0;
  CHECK_THROWS_WITH(gsq::require_exportable(gsq::parse_exports("compressed-tensors"), gsq::QuantizedModel::planned(model, types)),
                    Catch::Contains("2, 3, 4 and 8-bit codes"));
  gsq::QuantizedModel embedded = gsq::QuantizedModel::planned(model, schemes);
  embedded.linears.emplace("model.embed_tokens.weight", gsq::QuantizedTensor{gsq::grid_spec<gsq::Int<8>>(), 256, 256, 32, {}, {}});
  CHECK_THROWS_WITH(gsq::require_exportable(gsq::parse_exports("compressed-tensors"), embedded), Catch::Contains("only the gguf export holds"));
}
