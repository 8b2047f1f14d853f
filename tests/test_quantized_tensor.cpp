// Tests of gsq/format/quantized_tensor.hpp: bits-per-parameter accounting (docs/design.md section 1) and the
// packed code layout.
#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include <gsq/gsq.hpp>

namespace {

/// A rows x cols tensor on `grid` whose codes cycle through every level.
gsq::QuantizedTensor cycling_codes(const gsq::GridSpec& grid, long rows, long cols, long group_width) {
  gsq::QuantizedTensor tensor{grid, rows, cols, group_width, {}, std::vector<float>(rows * (cols / group_width), 1.0f)};
  for (long i = 0; i < rows * cols; ++i)
    tensor.codes.push_back(static_cast<std::int8_t>(grid.min_level + (7 * i) % grid.level_count()));
  return tensor;
}

gsq::QuantizedTensor with_codes(const gsq::GridSpec& grid, const std::vector<std::int8_t>& codes) {
  const long count = static_cast<long>(codes.size());
  return {grid, 1, count, count, codes, {1.0f}};
}

void require_round_trip(const gsq::GridSpec& grid, long codes_per_byte) {
  INFO(grid.name);
  const gsq::QuantizedTensor tensor = cycling_codes(grid, 3, 10, 10);  // 30 codes: a padded last byte
  const std::vector<std::uint8_t> packed = tensor.pack_codes();
  REQUIRE(static_cast<long>(packed.size()) == (30 + codes_per_byte - 1) / codes_per_byte);
  gsq::QuantizedTensor unpacked = tensor;
  unpacked.codes.assign(30, 0);
  unpacked.unpack_codes(packed);
  REQUIRE(unpacked.codes == tensor.codes);
}

}  // namespace

TEST_CASE("bits per parameter are code bits plus 16 scale bits per group", "[quantized_tensor]") {
  REQUIRE(cycling_codes(gsq::grid_spec<gsq::Int<2>>(), 2, 256, 128).bits_per_parameter() == 2.125);
  REQUIRE(cycling_codes(gsq::grid_spec<gsq::Int<4>>(), 2, 256, 128).bits_per_parameter() == 4.125);
  REQUIRE(cycling_codes(gsq::grid_spec<gsq::Int<3>>(), 2, 256, 256).bits_per_parameter() == 3.0 + 16.0 / 256.0);
  REQUIRE(cycling_codes(gsq::grid_spec<gsq::Ternary>(), 2, 256, 64).bits_per_parameter() == 2.25);
  REQUIRE(cycling_codes(gsq::grid_spec<gsq::Int<2>>(), 2, 256, 128).bits_per_parameter(32) == 2.25);
}

TEST_CASE("packing round-trips for every grid at 2 or 4 bits per code", "[quantized_tensor]") {
  require_round_trip(gsq::grid_spec<gsq::Ternary>(), 4);
  require_round_trip(gsq::grid_spec<gsq::Int<2>>(), 4);
  require_round_trip(gsq::grid_spec<gsq::Int<3>>(), 2);
  require_round_trip(gsq::grid_spec<gsq::Int<4>>(), 2);
}

TEST_CASE("packed bytes hold (code - min_level), first code in the low bits", "[quantized_tensor]") {
  // 2 bits: -2,-1,0,1 -> 0,1,2,3 -> 0b11'10'01'00; the fifth code opens a zero-padded byte.
  REQUIRE(with_codes(gsq::grid_spec<gsq::Int<2>>(), {-2, -1, 0, 1, 1}).pack_codes() ==
          std::vector<std::uint8_t>{0xE4, 0x03});
  // Ternary: 1,0,-1,1 -> 2,1,0,2 -> 0b10'00'01'10.
  REQUIRE(with_codes(gsq::grid_spec<gsq::Ternary>(), {1, 0, -1, 1}).pack_codes() == std::vector<std::uint8_t>{0x86});
  // 3 bits (stored in 4): -4,3 -> 0,7 -> 0x70.
  REQUIRE(with_codes(gsq::grid_spec<gsq::Int<3>>(), {-4, 3}).pack_codes() == std::vector<std::uint8_t>{0x70});
  // 4 bits: 7,-8,-1,2 -> 15,0,7,10 -> 0x0F, 0xA7.
  REQUIRE(with_codes(gsq::grid_spec<gsq::Int<4>>(), {7, -8, -1, 2}).pack_codes() == std::vector<std::uint8_t>{0x0F, 0xA7});
}

TEST_CASE("unpacking rejects a wrong byte count and codes off the grid", "[quantized_tensor][errors]") {
  gsq::QuantizedTensor ternary = with_codes(gsq::grid_spec<gsq::Ternary>(), {0, 0, 0, 0, 0});
  REQUIRE_THROWS_WITH(ternary.unpack_codes({0x00}), Catch::Contains("1 bytes, expected 2"));
  // 0b11 would be level 2, outside {-1, 0, 1}.
  REQUIRE_THROWS_WITH(ternary.unpack_codes({0x03, 0x00}), Catch::Contains("outside the ternary grid"));
}
