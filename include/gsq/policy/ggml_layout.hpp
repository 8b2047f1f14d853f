// gsq/policy/ggml_layout.hpp -- the ggml types gsq quantizes into, each as the policies that hold
// it exactly: the K-quants and the legacy blocks with a min (Q4_1, Q5_1) as their layouts
// (gsq/policy/k_quant_layout.hpp), the legacy symmetric types as gsq's grid format with one fp16 scale per block (Q4_0: int4 codes in
// blocks of 32, Q5_0 int5, Q8_0 int8; Q2_0: int2 in blocks of 64; gsq/format/gguf.hpp writes
// them). What a llama.cpp mix (gsq/pipeline/ggml_mix_format.hpp) and its reader share.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "gsq/common/error.hpp"
#include "gsq/format/ggml_types.hpp"
#include "gsq/policy/dispatch.hpp"
#include "gsq/policy/grid.hpp"
#include "gsq/policy/grouping.hpp"
#include "gsq/policy/k_quant_layout.hpp"

namespace gsq {

/// ggml type `Type` as K-quant layout `Layout`.
template <GgmlType Type, class Layout_>
struct GgmlKQuant {
  static constexpr GgmlType type = Type;
  using Layout = Layout_;
};

/// ggml type `Type` as codes on `Grid` with one scale per `Group` columns.
template <GgmlType Type, class Grid_, int Group>
struct GgmlGrid {
  static constexpr GgmlType type = Type;
  using Grid = Grid_;
  using Grouping = GroupSize<Group>;
};

using GgmlLayouts = TypeList<GgmlKQuant<GgmlType::Q2_K, Q2K>, GgmlKQuant<GgmlType::Q3_K, Q3K>, GgmlKQuant<GgmlType::Q4_K, Q4K>,
                             GgmlKQuant<GgmlType::Q5_K, Q5K>, GgmlKQuant<GgmlType::Q6_K, Q6K>,
                             GgmlKQuant<GgmlType::Q4_1, Q41>, GgmlKQuant<GgmlType::Q5_1, Q51>,
                             GgmlGrid<GgmlType::Q4_0, Int<4>, 32>, GgmlGrid<GgmlType::Q5_0, Int<5>, 32>,
                             GgmlGrid<GgmlType::Q8_0, Int<8>, 32>, GgmlGrid<GgmlType::Q2_0, Int<2>, 64>>;

namespace detail {

template <class... Layouts>
std::vector<GgmlType> ggml_types_of(TypeList<Layouts...>) {
  return {Layouts::type...};
}

template <class Visit>
auto with_ggml_layout(TypeList<>, GgmlType, Visit& visit) -> decltype(visit(Tag<GgmlGrid<GgmlType::Q4_0, Int<4>, 32>>{})) {
  throw Error("unreachable: with_ggml_layout checks the type first");
}

template <class Visit, class First, class... Rest>
auto with_ggml_layout(TypeList<First, Rest...>, GgmlType type, Visit& visit) {
  if (First::type == type) return visit(Tag<First>{});
  return with_ggml_layout(TypeList<Rest...>{}, type, visit);
}

}  // namespace detail

/// The ggml types gsq quantizes into.
inline const std::vector<GgmlType>& ggml_types_written() {
  static const std::vector<GgmlType> types = detail::ggml_types_of(GgmlLayouts{});
  return types;
}

/// An error unless gsq quantizes into ggml type `type`; `what` says whose type it is.
inline void require_ggml_type_written(GgmlType type, const std::string& what) {
  for (GgmlType written : ggml_types_written())
    if (written == type) return;
  std::string known;
  for (GgmlType written : ggml_types_written()) known += (known.empty() ? "" : ", ") + ggml_type_name(static_cast<std::uint32_t>(written));
  throw Error(what + ": gsq does not quantize into ggml type " + ggml_type_name(static_cast<std::uint32_t>(type)) +
              " (it writes " + known + ")");
}

/// Calls visit(Tag<Layout>{}) with the GgmlKQuant or GgmlGrid of `type`; `what` names whose type
/// it is in the error for a type gsq does not write.
template <class Visit>
auto with_ggml_layout(GgmlType type, const std::string& what, Visit&& visit) {
  require_ggml_type_written(type, what);
  return detail::with_ggml_layout(GgmlLayouts{}, type, visit);
}

/// Whether a GgmlKQuant or GgmlGrid layout is a K-quant's.
template <class Layout>
struct is_ggml_k_quant : std::false_type {};
template <GgmlType Type, class Layout>
struct is_ggml_k_quant<GgmlKQuant<Type, Layout>> : std::true_type {};

}  // namespace gsq
