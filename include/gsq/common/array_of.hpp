// gsq/common/array_of.hpp -- std::array built element by element, for element types without a
// default constructor (a layer's seven quantizers):
//
//   std::array<Quantizer, 7> quantizers = gsq::array_of<7>([&](std::size_t i) { return Quantizer(starts[i]); });
#pragma once

#include <array>
#include <cstddef>
#include <utility>

namespace gsq {

namespace detail {
template <class Make, std::size_t... Index>
auto array_of(const Make& make, std::index_sequence<Index...>) {
  return std::array<decltype(make(std::size_t{0})), sizeof...(Index)>{make(Index)...};
}
}  // namespace detail

/// {make(0), ..., make(N - 1)}.
template <std::size_t N, class Make>
auto array_of(const Make& make) {
  return detail::array_of(make, std::make_index_sequence<N>{});
}

}  // namespace gsq
