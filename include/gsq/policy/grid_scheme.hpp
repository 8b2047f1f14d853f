// gsq/policy/grid_scheme.hpp -- one linear's scheme in the paper's grid format, chosen at run time:
// a grid and a group size, spelled as a size budget's candidates are ("int4-g128", "int8-per-channel").
// What a model whose linears differ in bits or groups (a budget's plan for compressed-tensors,
// gsq/pipeline/grid_mix_format.hpp) is made of, and what its files record per linear.
//
//   gsq::GridScheme scheme = gsq::grid_scheme_named("int3-g64", "--candidates");
//   gsq::with_grid_scheme(scheme, "q_proj", [&](auto grid, auto grouping) { ... });   // the policies
#pragma once

#include <cstdint>
#include <string>

#include "gsq/common/error.hpp"
#include "gsq/format/grid_spec.hpp"
#include "gsq/format/quantized_tensor.hpp"
#include "gsq/policy/dispatch.hpp"
#include "gsq/policy/grid.hpp"
#include "gsq/policy/grouping.hpp"

namespace gsq {

/// The grids and groupings a scheme may name: the integer grids of 2, 3, 4 and 8 bits (what the
/// Hugging Face formats and their kernels hold) and gsq's group sizes.
using SchemeGrids = TypeList<Int<2>, Int<3>, Int<4>, Int<8>>;
using SchemeGroupings = GroupingPolicies;

struct GridScheme {
  GridSpec grid = grid_spec<Int<4>>();
  int group_size = 128;  // 0: one scale per row (per-channel)

  /// Its name: "int4-g128", "int8-per-channel".
  std::string name() const { return std::string(grid.name) + (group_size == 0 ? "-per-channel" : "-g" + std::to_string(group_size)); }
  /// Columns per scale in a linear of `cols` inputs.
  long group_width(long cols) const { return group_size == 0 ? cols : group_size; }
  bool operator==(const GridScheme& other) const { return grid == other.grid && group_size == other.group_size; }
  bool operator!=(const GridScheme& other) const { return !(*this == other); }
};

/// The scheme `tensor` is in (a tensor of a whole row's group is per-channel).
inline GridScheme grid_scheme_of(const QuantizedTensor& tensor) {
  return {tensor.grid, tensor.group_width == tensor.cols ? 0 : static_cast<int>(tensor.group_width)};
}

/// Bytes of a rows x cols linear in `scheme` as compressed-tensors' pack-quantized checkpoint
/// stores it: weight_packed (I32, each row's codes a bit stream of whole 32-bit words),
/// weight_scale (F16, one per row and group) and weight_shape (I64[2]).
inline std::uint64_t pack_quantized_bytes(const GridScheme& scheme, long rows, long cols) {
  const auto words = (static_cast<std::uint64_t>(cols) * static_cast<std::uint64_t>(scheme.grid.code_bits) + 31) / 32;
  const auto groups = static_cast<std::uint64_t>(cols / scheme.group_width(cols));
  return static_cast<std::uint64_t>(rows) * (4 * words + 2 * groups) + 16;
}

/// Calls visit(Tag<Grid>{}, Tag<Grouping>{}) with the policies of `scheme`; `what` names whose
/// scheme it is in the error for one no policy holds.
template <class Visit>
auto with_grid_scheme(const GridScheme& scheme, const std::string& what, Visit&& visit) {
  const Choice<SchemeGroupings, ByGroupSize> grouping(what + "'s group size", scheme.group_size == 0 ? "per-channel"
                                                                                                   : std::to_string(scheme.group_size));
  const Choice<SchemeGrids> grid(what + "'s grid", scheme.grid.name);
  return dispatch(visit, grid, grouping);
}

/// The scheme `spelling` names: "<grid>-g<group size>" or "<grid>-per-channel", the grid int2,
/// int3, int4 or int8; an error names `what` and the spellings.
inline GridScheme grid_scheme_named(const std::string& spelling, const std::string& what) {
  const auto dash = spelling.find('-');
  const std::string grid = spelling.substr(0, dash), group = dash == std::string::npos ? "" : spelling.substr(dash + 1);
  const bool per_channel = group == "per-channel", sized = group.size() > 1 && group[0] == 'g';
  const Choice<SchemeGrids> grid_choice(what, grid);
  const Choice<SchemeGroupings, ByGroupSize> grouping_choice(what, per_channel ? "per-channel" : sized ? group.substr(1) : "");
  require(grid_choice.valid() && grouping_choice.valid() && (per_channel || sized),
          what + ": '" + spelling + "' is no grid scheme (int2, int3, int4 or int8, then -g32, -g64, -g128, -g256 or "
                 "-per-channel: \"int4-g128\")");
  return grid_choice.visit([&](auto tag) {
    return GridScheme{grid_spec<type_of<decltype(tag)>>(), per_channel ? 0 : std::stoi(group.substr(1))};
  });
}

}  // namespace gsq
