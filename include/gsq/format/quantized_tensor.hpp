// gsq/format/quantized_tensor.hpp -- the result of any quantizer (RTN, GPTQ, GSQ): integer codes on a
// symmetric grid plus one scale per (row, group), the format every scalar int kernel reads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "gsq/common/error.hpp"
#include "gsq/common/matrix.hpp"
#include "gsq/format/grid_spec.hpp"

namespace gsq {

struct QuantizedTensor {
  GridSpec grid;
  long rows = 0;
  long cols = 0;
  long group_width = 0;            // consecutive input columns per scale (cols: per-channel)
  std::vector<std::int8_t> codes;  // grid levels, row-major, rows x cols
  std::vector<float> scales;       // row-major, rows x groups_per_row()

  long groups_per_row() const { return cols / group_width; }
  float scale(long row, long col) const { return scales[static_cast<std::size_t>(row * groups_per_row() + col / group_width)]; }
  std::int8_t code(long row, long col) const { return codes[static_cast<std::size_t>(row * cols + col)]; }

  /// The weights this result stands for: scale * code.
  Matrix<float> dequantize() const {
    Matrix<float> weight(rows, cols);
    for (long r = 0; r < rows; ++r)
      for (long c = 0; c < cols; ++c) weight(r, c) = scale(r, c) * static_cast<float>(code(r, c));
    return weight;
  }

  /// Storage cost: code bits plus the scale's bits shared by a group (2-bit, g128, 16-bit
  /// scales: 2 + 16/128 = 2.125).
  double bits_per_parameter(int scale_bits = 16) const {
    return grid.code_bits + static_cast<double>(scale_bits) / static_cast<double>(group_width);
  }

  /// Bits one packed code occupies: 2 for grids of up to four levels, 4 up to sixteen, else 8.
  int packed_code_bits() const { return grid.level_count() <= 4 ? 2 : grid.level_count() <= 16 ? 4 : 8; }

  /// Codes packed little-endian within each byte, as (code - min_level); rows are packed
  /// back to back, the last byte zero-padded.
  std::vector<std::uint8_t> pack_codes() const {
    const int bits = packed_code_bits();
    const int per_byte = 8 / bits;
    std::vector<std::uint8_t> packed((codes.size() + per_byte - 1) / per_byte, 0);
    for (std::size_t i = 0; i < codes.size(); ++i)
      packed[i / per_byte] |= static_cast<std::uint8_t>((codes[i] - grid.min_level) << (bits * (i % per_byte)));
    return packed;
  }

  /// Inverse of pack_codes for this tensor's grid and shape.
  void unpack_codes(const std::vector<std::uint8_t>& packed) {
    const int bits = packed_code_bits();
    const int per_byte = 8 / bits;
    const std::size_t count = static_cast<std::size_t>(rows * cols);
    require(packed.size() == (count + per_byte - 1) / per_byte,
            "packed codes hold " + std::to_string(packed.size()) + " bytes, expected " +
                std::to_string((count + per_byte - 1) / per_byte));
    codes.resize(count);
    const unsigned mask = (1u << bits) - 1u;
    for (std::size_t i = 0; i < count; ++i) {
      const int level = static_cast<int>((packed[i / per_byte] >> (bits * (i % per_byte))) & mask) + grid.min_level;
      if (level > grid.max_level)  // not require(): its message would be built for every code
        throw Error("packed code " + std::to_string(level) + " is outside the " + grid.name + " grid");
      codes[i] = static_cast<std::int8_t>(level);
    }
  }
};

}  // namespace gsq
