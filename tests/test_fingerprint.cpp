// Tests of gsq/io/fingerprint.hpp: a fingerprint depends on the bytes alone (not on how they are
// cut), changes with any bit, length or order, and stays the same across releases (a resumed run
// compares fingerprints written by an earlier binary).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <gsq/io/fingerprint.hpp>

#include "program_runner.hpp"

namespace {

std::vector<unsigned char> random_bytes(std::size_t count, unsigned seed) {
  std::mt19937 generator(seed);
  std::vector<unsigned char> bytes(count);
  for (unsigned char& byte : bytes) byte = static_cast<unsigned char>(generator());
  return bytes;
}

}  // namespace

TEST_CASE("fingerprint: the same bytes give the same hash however they are cut") {
  const std::vector<unsigned char> bytes = random_bytes(1000, 1);
  const std::string whole = gsq::fingerprint_bytes(bytes.data(), bytes.size());
  CHECK(whole.size() == 16);
  for (std::size_t piece : {1, 7, 31, 32, 33, 500}) {
    gsq::Fingerprint hash;
    for (std::size_t offset = 0; offset < bytes.size(); offset += piece)
      hash.add(bytes.data() + offset, std::min(piece, bytes.size() - offset));
    INFO(piece);
    CHECK(hash.hex() == whole);
  }
}

TEST_CASE("fingerprint: any flipped bit, any length and any order change it") {
  const std::vector<unsigned char> bytes = random_bytes(200, 2);
  const std::string original = gsq::fingerprint_bytes(bytes.data(), bytes.size());
  for (std::size_t bit = 0; bit < 8 * bytes.size(); ++bit) {
    std::vector<unsigned char> flipped = bytes;
    flipped[bit / 8] = static_cast<unsigned char>(flipped[bit / 8] ^ (1u << (bit % 8)));
    INFO(bit);
    REQUIRE(gsq::fingerprint_bytes(flipped.data(), flipped.size()) != original);
  }
  const std::vector<unsigned char> zeros(64, 0);
  std::vector<std::string> by_length;
  for (std::size_t length = 0; length <= zeros.size(); ++length) by_length.push_back(gsq::fingerprint_bytes(zeros.data(), length));
  std::sort(by_length.begin(), by_length.end());
  CHECK(std::unique(by_length.begin(), by_length.end()) == by_length.end());
  // Swapping two 8-byte words of different lanes, or of the same lane in different blocks.
  for (std::size_t other : {8, 32}) {
    std::vector<unsigned char> swapped = bytes;
    std::swap_ranges(swapped.begin(), swapped.begin() + 8, swapped.begin() + static_cast<long>(other));
    CHECK(gsq::fingerprint_bytes(swapped.data(), swapped.size()) != original);
  }
  gsq::Fingerprint ab_c, a_bc;
  ab_c.add(std::string("ab"));
  ab_c.add(std::string("c"));
  a_bc.add(std::string("a"));
  a_bc.add(std::string("bc"));
  CHECK(ab_c.hex() != a_bc.hex());
}

TEST_CASE("fingerprint: known answers, so that a resumed run can trust an earlier binary's") {
  CHECK(gsq::fingerprint_bytes("", 0) == gsq::Fingerprint().hex());
  const std::string text = "Gumbel-Softmax Quantization";
  CHECK(gsq::fingerprint_bytes(text.data(), text.size()) == "83d07d13ae5c9a76");
  std::vector<unsigned char> counting(1 << 16);
  for (std::size_t i = 0; i < counting.size(); ++i) counting[i] = static_cast<unsigned char>(i * 31 + 7);
  CHECK(gsq::fingerprint_bytes(counting.data(), counting.size()) == "6d82a37a170ba280");
}

TEST_CASE("fingerprint: a file's size, modification time and content") {
  const gsq::testing::ScratchDirectory scratch;
  const std::string path = scratch.file("calib.txt");
  std::ofstream(path) << "some calibration text";
  const nlohmann::json fingerprint = gsq::file_fingerprint(path);
  CHECK(fingerprint["size"] == 21);
  CHECK(fingerprint["hash"] == gsq::fingerprint_bytes("some calibration text", 21));
  CHECK(fingerprint["mtime"].get<long long>() > 0);
  CHECK_THROWS_WITH(gsq::file_fingerprint(scratch.file("missing")), Catch::Contains("cannot read"));
}

TEST_CASE("fingerprint: a checkpoint's tensors by name prefix") {
  gsq::SafetensorsWriter writer;
  writer.add("model.layers.0.a.weight", {1, 2}, {1.0f, 2.0f});
  writer.add("model.layers.1.a.weight", {1, 2}, {3.0f, 4.0f});
  writer.add("model.layers.10.a.weight", {1, 2}, {5.0f, 6.0f});
  const gsq::testing::ScratchDirectory scratch;
  writer.write(scratch.file("model.safetensors"));
  const nlohmann::json first = gsq::tensors_fingerprint(gsq::Checkpoint::open(scratch.path.string()), "model.layers.1.");
  CHECK(first["size"] == 8);  // layer 1 only, not layer 10

  gsq::SafetensorsWriter changed;
  changed.add("model.layers.0.a.weight", {1, 2}, {1.0f, 2.0f});
  changed.add("model.layers.1.a.weight", {1, 2}, {3.0f, 4.5f});
  changed.add("model.layers.10.a.weight", {1, 2}, {5.0f, 6.0f});
  changed.write(scratch.file("model.safetensors"));
  const gsq::Checkpoint checkpoint = gsq::Checkpoint::open(scratch.path.string());
  CHECK(gsq::tensors_fingerprint(checkpoint, "model.layers.1.")["hash"] != first["hash"]);
  gsq::SafetensorsWriter reshaped;  // the same bytes in another shape
  reshaped.add("model.layers.1.a.weight", {2, 1}, {3.0f, 4.0f});
  reshaped.write(scratch.file("model.safetensors"));
  CHECK(gsq::tensors_fingerprint(gsq::Checkpoint::open(scratch.path.string()), "model.layers.1.")["hash"] != first["hash"]);
}
