// GGUF: the block encodings against a decoder written from ggml's documented layouts, and the
// whole file read back by gguf-py, llama.cpp's own reader (installed by scripts/install_interop.sh
// into the build tree), whose dequantize must return exactly the weights gsq meant.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <gsq/export/gguf_model.hpp>
#include <gsq/format/gguf.hpp>
#include <gsq/format/ggml_types.hpp>
#include <gsq/format/k_quant.hpp>
#include <gsq/init/rtn.hpp>
#include <gsq/policy/grid.hpp>

#include "program_runner.hpp"
#include "random_k_quant.hpp"
#include "random_matrix.hpp"
#include "skip.hpp"

namespace {

namespace fs = std::filesystem;

/// A quantized tensor whose scales are already fp16 values (as gsq stores them).
template <class Grid>
gsq::QuantizedTensor quantized(long rows, long cols, long group, unsigned seed) {
  gsq::QuantizedTensor tensor = gsq::round_to_nearest(gsq::testing::gaussian_matrix(rows, cols, seed), gsq::grid_spec<Grid>(), group);
  for (float& scale : tensor.scales) scale = gsq::half_bits_to_float(gsq::float_to_half_bits(scale));
  return tensor;
}

float half_at(const std::uint8_t* bytes) {
  return gsq::half_bits_to_float(static_cast<std::uint16_t>(bytes[0] | (bytes[1] << 8)));
}

/// Q4_0, Q2_0 and TQ2_0 decoded as ggml's documentation and source describe them.
std::vector<float> decode(gsq::GgmlType type, const std::vector<std::uint8_t>& bytes) {
  std::vector<float> values;
  if (type == gsq::GgmlType::Q4_0) {
    for (std::size_t block = 0; block < bytes.size(); block += 18) {
      const float d = half_at(&bytes[block]);
      std::vector<float> out(32);
      for (int j = 0; j < 16; ++j) {
        out[j] = static_cast<float>((bytes[block + 2 + j] & 15) - 8) * d;
        out[j + 16] = static_cast<float>((bytes[block + 2 + j] >> 4) - 8) * d;
      }
      values.insert(values.end(), out.begin(), out.end());
    }
  } else if (type == gsq::GgmlType::Q2_0) {  // ggml-quants.c, dequantize_row_q2_0
    for (std::size_t block = 0; block < bytes.size(); block += 18) {
      const float d = half_at(&bytes[block]);
      for (int j = 0; j < 64; ++j) values.push_back(static_cast<float>(((bytes[block + 2 + j / 4] >> (2 * (j % 4))) & 3) - 1) * d);
    }
  } else {
    for (std::size_t block = 0; block < bytes.size(); block += 66) {
      const float d = half_at(&bytes[block + 64]);
      for (int chunk = 0; chunk < 2; ++chunk)
        for (int shift = 0; shift < 4; ++shift)
          for (int m = 0; m < 32; ++m)
            values.push_back(static_cast<float>(((bytes[block + 32 * chunk + m] >> (2 * shift)) & 3) - 1) * d);
    }
  }
  return values;
}

void save_npy(const fs::path& path, const gsq::Matrix<float>& matrix) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(matrix.rows) + ", " +
                       std::to_string(matrix.cols) + "), }";
  header.append(63 - (10 + header.size()) % 64, ' ');
  header += '\n';
  std::ofstream out(path, std::ios::binary);
  out.write("\x93NUMPY\x01\x00", 8);
  const auto length = static_cast<std::uint16_t>(header.size());
  out.write(reinterpret_cast<const char*>(&length), 2);
  out << header;
  out.write(reinterpret_cast<const char*>(matrix.data()), static_cast<std::streamsize>(matrix.size() * sizeof(float)));
}

}  // namespace

TEST_CASE("Q4_0 and TQ2_0 hold gsq's codes and fp16 scales exactly", "[gguf]") {
  const gsq::QuantizedTensor int4 = quantized<gsq::Int<4>>(3, 128, 64, 1);
  CHECK(decode(gsq::GgmlType::Q4_0, gsq::encode_q4_0(int4)) == int4.dequantize().values);
  for (const gsq::QuantizedTensor& tensor :
       {quantized<gsq::Int<2>>(2, 512, 256, 2), quantized<gsq::Ternary>(2, 256, 256, 3)})
    CHECK(decode(gsq::GgmlType::TQ2_0, gsq::encode_tq2_0(tensor)) == tensor.dequantize().values);
}

TEST_CASE("Q2_0 holds gsq's 2-bit and ternary codes exactly for groups a multiple of 64", "[gguf]") {
  for (const gsq::QuantizedTensor& tensor : {quantized<gsq::Int<2>>(2, 256, 64, 5), quantized<gsq::Int<2>>(3, 384, 128, 6),
                                             quantized<gsq::Ternary>(2, 192, 64, 7)}) {
    const std::vector<std::uint8_t> bytes = gsq::encode_q2_0(tensor);
    CHECK(bytes.size() == tensor.codes.size() / 64 * 18);
    CHECK(decode(gsq::GgmlType::Q2_0, bytes) == tensor.dequantize().values);
    CHECK(gsq::dequantize_ggml(gsq::GgmlType::Q2_0, bytes.data(), tensor.codes.size(), "q2_0") == tensor.dequantize().values);
    CHECK(gsq::exact_ggml_type(tensor) == (tensor.group_width == 256 ? gsq::GgmlType::TQ2_0 : gsq::GgmlType::Q2_0));
  }
  CHECK_THROWS_WITH(gsq::encode_q2_0(quantized<gsq::Int<2>>(2, 96, 32, 4)), Catch::Contains("multiple of 64"));
  CHECK_THROWS_WITH(gsq::encode_q2_0(quantized<gsq::Int<4>>(2, 128, 64, 4)), Catch::Contains("int4"));
}

TEST_CASE("Q5_0 and Q8_0 hold gsq's 5- and 8-bit codes exactly for groups a multiple of 32", "[gguf]") {
  for (const gsq::QuantizedTensor& tensor : {quantized<gsq::Int<5>>(3, 128, 32, 11), quantized<gsq::Int<5>>(2, 256, 128, 12)}) {
    const std::vector<std::uint8_t> bytes = gsq::encode_q5_0(tensor);
    CHECK(bytes.size() == tensor.codes.size() / 32 * 22);
    CHECK(gsq::dequantize_ggml(gsq::GgmlType::Q5_0, bytes.data(), tensor.codes.size(), "q5_0") == tensor.dequantize().values);
  }
  for (const gsq::QuantizedTensor& tensor : {quantized<gsq::Int<8>>(3, 128, 32, 13), quantized<gsq::Int<8>>(2, 256, 256, 14)}) {
    const std::vector<std::uint8_t> bytes = gsq::encode_q8_0(tensor);
    CHECK(bytes.size() == tensor.codes.size() / 32 * 34);
    CHECK(gsq::dequantize_ggml(gsq::GgmlType::Q8_0, bytes.data(), tensor.codes.size(), "q8_0") == tensor.dequantize().values);
  }
  // Where the bits go: Q5_0 is d, qh (bit j: weight j's fifth bit), then Q4_0's nibbles, of code + 16.
  gsq::QuantizedTensor tensor{gsq::grid_spec<gsq::Int<5>>(), 1, 32, 32, std::vector<std::int8_t>(32, -16), {1.0f}};
  tensor.codes[0] = 15, tensor.codes[17] = 0, tensor.codes[31] = 1;
  const std::vector<std::uint8_t> q5 = gsq::encode_q5_0(tensor);
  CHECK(half_at(&q5[0]) == 1.0f);
  CHECK((q5[2] | q5[3] << 8 | q5[4] << 16 | q5[5] << 24) == (1 << 0 | 1 << 17 | 1 << 31));
  CHECK(q5[6 + 0] == 15);
  CHECK(q5[6 + 1] == 0);
  CHECK(q5[6 + 15] == 1 << 4);
  tensor.grid = gsq::grid_spec<gsq::Int<8>>(), tensor.codes[1] = -128, tensor.codes[2] = 127;
  const std::vector<std::uint8_t> q8 = gsq::encode_q8_0(tensor);
  CHECK(q8[2 + 1] == 0x80);
  CHECK(q8[2 + 2] == 0x7F);
  CHECK(q8[2 + 3] == static_cast<std::uint8_t>(-16));
}

TEST_CASE("formats that are not exact are refused, naming what is", "[gguf]") {
  CHECK_THROWS_WITH(gsq::encode_q4_0(quantized<gsq::Int<4>>(2, 96, 48, 4)), Catch::Contains("multiple of 32"));
  CHECK_THROWS_WITH(gsq::encode_q4_0(quantized<gsq::Int<3>>(2, 128, 64, 4)), Catch::Contains("int3"));
  CHECK_THROWS_WITH(gsq::encode_tq2_0(quantized<gsq::Int<2>>(2, 256, 128, 4)), Catch::Contains("groups of 256"));
  CHECK_THROWS_WITH(gsq::encode_tq2_0(quantized<gsq::Int<4>>(2, 256, 256, 4)), Catch::Contains("int4"));
  CHECK_THROWS_WITH(gsq::encode_q5_0(quantized<gsq::Int<4>>(2, 128, 32, 4)),
                    Catch::Contains("Q5_0 holds 5-bit codes (-16..15)") && Catch::Contains("int4 grid"));
  CHECK_THROWS_WITH(gsq::encode_q5_0(quantized<gsq::Int<5>>(2, 96, 48, 4)),
                    Catch::Contains("Q5_0 needs groups that are a multiple of 32"));
  CHECK_THROWS_WITH(gsq::encode_q8_0(quantized<gsq::Int<6>>(2, 128, 32, 4)),
                    Catch::Contains("Q8_0 holds 8-bit codes (-128..127)") && Catch::Contains("int6 grid"));
  CHECK_THROWS_WITH(gsq::encode_q8_0(quantized<gsq::Int<8>>(2, 64, 16, 4)),
                    Catch::Contains("Q8_0 needs groups that are a multiple of 32"));
  gsq::GgufWriter writer;
  CHECK_THROWS_WITH(writer.add_tensor("w", {2, 32}, gsq::GgmlType::Q4_0, std::vector<std::uint8_t>(10)),
                    Catch::Contains("10 bytes for 64 elements"));
}

TEST_CASE("gguf-py, llama.cpp's reader, reads gsq's GGUF: metadata and every tensor exact", "[gguf][interop]") {
  const std::string python = GSQ_BINARY_DIR "/interop-venv/bin/python";
  if (!fs::exists(python))
    GSQ_SKIP("the interop readers are not installed in " GSQ_BINARY_DIR "/interop-venv: run scripts/install_interop.sh "
             GSQ_BINARY_DIR " (scripts/test.sh does)");
  const gsq::testing::ScratchDirectory scratch;
  const fs::path expected = scratch.path / "expected";
  fs::create_directories(expected);

  gsq::GgufWriter writer;
  writer.set("general.architecture", std::string("llama"));
  writer.set("general.name", std::string("gsq test"));
  writer.set("llama.block_count", std::uint32_t{2});
  writer.set("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  writer.set("tokenizer.ggml.tokens", std::vector<std::string>{"a", "b", "<s>"});
  writer.set("tokenizer.ggml.token_type", std::vector<std::int32_t>{1, 1, 3});
  writer.set("tokenizer.ggml.add_bos_token", false);
  const nlohmann::json metadata = {{"general.architecture", "llama"},       {"general.name", "gsq test"},
                                   {"llama.block_count", 2},                {"tokenizer.ggml.tokens", {"a", "b", "<s>"}},
                                   {"tokenizer.ggml.token_type", {1, 1, 3}}, {"tokenizer.ggml.add_bos_token", false},
                                   {"general.alignment", 32}};
  std::ofstream(expected / "expected.json") << metadata.dump();

  const gsq::Matrix<float> norm = gsq::testing::gaussian_matrix(1, 96, 5), embedding = gsq::testing::gaussian_matrix(7, 64, 6);
  writer.add_tensor("output_norm.weight", {96}, gsq::GgmlType::F32, gsq::encode_float(norm, gsq::GgmlType::F32));
  save_npy(expected / "output_norm.weight.npy", norm);
  gsq::Matrix<float> embedding_f16 = embedding;
  for (float& value : embedding_f16.values) value = gsq::half_bits_to_float(gsq::float_to_half_bits(value));
  writer.add_tensor("token_embd.weight", {7, 64}, gsq::GgmlType::F16, gsq::encode_float(embedding, gsq::GgmlType::F16));
  save_npy(expected / "token_embd.weight.npy", embedding_f16);
  const gsq::QuantizedTensor int4 = quantized<gsq::Int<4>>(5, 128, 64, 7), int2 = quantized<gsq::Int<2>>(3, 512, 256, 8),
                             ternary = quantized<gsq::Ternary>(4, 256, 256, 9);
  writer.add_tensor("blk.0.attn_q.weight", {5, 128}, gsq::GgmlType::Q4_0, gsq::encode_q4_0(int4));
  save_npy(expected / "blk.0.attn_q.weight.npy", int4.dequantize());
  writer.add_tensor("blk.0.ffn_up.weight", {3, 512}, gsq::GgmlType::TQ2_0, gsq::encode_tq2_0(int2));
  save_npy(expected / "blk.0.ffn_up.weight.npy", int2.dequantize());
  writer.add_tensor("blk.1.ffn_down.weight", {4, 256}, gsq::GgmlType::TQ2_0, gsq::encode_tq2_0(ternary));
  save_npy(expected / "blk.1.ffn_down.weight.npy", ternary.dequantize());
  const gsq::QuantizedTensor int5 = quantized<gsq::Int<5>>(3, 128, 64, 15), int8 = quantized<gsq::Int<8>>(2, 192, 32, 16);
  writer.add_tensor("blk.0.attn_k.weight", {3, 128}, gsq::GgmlType::Q5_0, gsq::encode_q5_0(int5));
  save_npy(expected / "blk.0.attn_k.weight.npy", int5.dequantize());
  writer.add_tensor("blk.0.attn_v.weight", {2, 192}, gsq::GgmlType::Q8_0, gsq::encode_q8_0(int8));
  save_npy(expected / "blk.0.attn_v.weight.npy", int8.dequantize());
  // K-quants (and Q4_1, Q5_1): random codes over each format's whole range, extremes included.
  std::mt19937 random(10);
  for (const gsq::KQuantFormat* format : gsq::k_quant_formats()) {
    const gsq::KQuantTensor tensor = gsq::testing::random_k_quant(*format, 3, 512, random, 0.01f);
    const std::string name = std::string("blk.1.") + format->name + ".weight";
    writer.add_tensor(name, {3, 512}, static_cast<gsq::GgmlType>(format->ggml_type), gsq::encode_k_quant(tensor));
    save_npy(expected / (name + ".npy"), tensor.dequantize());
  }
  const fs::path file = scratch.path / "model.gguf";
  writer.write(file.string());

  const std::string command = "'" + python + "' '" GSQ_SOURCE_DIR "/tests/interop/check_gguf.py' '" + file.string() +
                              "' '" + expected.string() + "' > '" + (scratch.path / "log").string() + "' 2>&1";
  const int status = std::system(command.c_str());
  INFO(gsq::testing::read_file(scratch.path / "log"));
  CHECK(status == 0);
}
