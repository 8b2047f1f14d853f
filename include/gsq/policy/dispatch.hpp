// gsq/policy/dispatch.hpp -- from run-time names to compile-time policies.
//
// Drivers read policy names from the command line ("--estimator ste") but the quantizer takes
// policies as template arguments. A TypeList names the policies a program compiles in; a Choice
// picks one of them by a run-time key and calls a generic lambda with a Tag of that type:
//
//   gsq::Choice<gsq::EstimatorPolicies> estimator("--estimator", "ste");
//   estimator.visit([&](auto tag) { using Estimator = gsq::type_of<decltype(tag)>; ... });
//
//   gsq::dispatch([&](auto grid, auto estimator) { ... }, grid_choice, estimator_choice);
//
// A key policy decides how a policy is spelled: ByName (its `name`), ByBits (--bits: "2" or
// "ternary"), ByGroupSize (--group: "128" or "per-channel"). An unknown key throws gsq::Error
// listing the valid spellings.
//
// Every policy of every list is instantiated: dispatching over several lists costs compile
// time proportional to the product of their sizes, so list only what a program needs.
#pragma once

#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "gsq/common/error.hpp"
#include "gsq/policy/estimator.hpp"
#include "gsq/policy/grid.hpp"
#include "gsq/policy/grouping.hpp"
#include "gsq/policy/k_quant_layout.hpp"
#include "gsq/policy/optimizer.hpp"
#include "gsq/policy/schedule.hpp"

namespace gsq {

/// A compile-time list of policies.
template <class... Policies>
struct TypeList {
  static constexpr std::size_t size = sizeof...(Policies);
};

/// An empty value standing for the type `Policy`, what a dispatch passes to its visitor.
template <class Policy>
struct Tag {
  using type = Policy;
};

/// The policy a tag stands for: `gsq::type_of<decltype(tag)>`.
template <class TagType>
using type_of = typename std::decay_t<TagType>::type;

/// Policies spelled by their `name` member ("int2", "ste", "cosine", "lion").
struct ByName {
  template <class Policy>
  static std::string spelling() { return Policy::name; }
  template <class Policy>
  static bool matches(const std::string& key) { return key == Policy::name; }
};

/// Grids spelled as --bits spells them: an integer grid (2^b levels) by its code bits ("2",
/// "3", "4"), any other grid by its name ("ternary").
struct ByBits {
  template <class Grid>
  static std::string spelling() {
    const bool integer_grid = (1 << Grid::code_bits) == Grid::max_level - Grid::min_level + 1;
    return integer_grid ? std::to_string(Grid::code_bits) : std::string(Grid::name);
  }
  template <class Grid>
  static bool matches(const std::string& key) { return key == spelling<Grid>(); }
};

/// Groupings spelled by their group size ("128"); per-channel (size 0) as "per-channel" or "0".
struct ByGroupSize {
  template <class Grouping>
  static std::string spelling() { return Grouping::size == 0 ? "per-channel" : std::to_string(Grouping::size); }
  template <class Grouping>
  static bool matches(const std::string& key) {
    return key == spelling<Grouping>() || (Grouping::size == 0 && key == "0");
  }
};

namespace detail {
template <class Key, class Result, class Visitor>
Result visit_first_match(TypeList<>, const std::string& key, Visitor&) {
  throw Error("no policy matches '" + key + "'");  // unreachable: Choice::visit validates first
}

template <class Key, class Result, class Visitor, class First, class... Rest>
Result visit_first_match(TypeList<First, Rest...>, const std::string& key, Visitor& visitor) {
  if (Key::template matches<First>(key)) return visitor(Tag<First>{});
  return visit_first_match<Key, Result>(TypeList<Rest...>{}, key, visitor);
}

template <class Visitor>
auto dispatch_validated(Visitor&& visitor) {
  return visitor();
}

template <class Visitor, class First, class... Rest>
auto dispatch_validated(Visitor&& visitor, const First& first, const Rest&... rest) {
  return first.visit([&](auto tag) {
    return dispatch_validated([&](auto... tags) { return visitor(tag, tags...); }, rest...);
  });
}
}  // namespace detail

/// One policy of `List`, chosen at run time by `key` as spelled under `Key`.
/// `what` names the setting in error messages ("--estimator", "the grid").
template <class List, class Key = ByName>
class Choice {
  static_assert(List::size > 0, "Choice<List>: the list of policies is empty");

 public:
  Choice(std::string what, std::string key) : what_(std::move(what)), key_(std::move(key)) {}

  const std::string& what() const { return what_; }
  const std::string& key() const { return key_; }

  /// The valid keys, in list order.
  static std::vector<std::string> spellings() { return spellings(List{}); }

  bool valid() const { return matches(List{}); }

  /// Throws gsq::Error naming the setting, the bad key and the valid ones, unless valid().
  void validate() const {
    if (valid()) return;
    std::string expected;
    for (const std::string& spelling : spellings()) expected += (expected.empty() ? "" : ", ") + spelling;
    throw Error("invalid " + what_ + " '" + key_ + "': expected one of " + expected);
  }

  /// The chosen policy's canonical spelling ("per-channel" for a key of "0").
  std::string spelling() const {
    return visit([](auto tag) { return Key::template spelling<type_of<decltype(tag)>>(); });
  }

  /// Calls visitor(Tag<P>{}) for the first policy P of List that `key` spells and returns its
  /// result; every policy's call must return the same type.
  template <class Visitor>
  auto visit(Visitor&& visitor) const {
    validate();
    return visit_in(List{}, visitor);
  }

 private:
  template <class... Policies>
  static std::vector<std::string> spellings(TypeList<Policies...>) { return {Key::template spelling<Policies>()...}; }

  template <class... Policies>
  bool matches(TypeList<Policies...>) const { return (Key::template matches<Policies>(key_) || ...); }

  template <class First, class... Rest, class Visitor>
  auto visit_in(TypeList<First, Rest...> list, Visitor& visitor) const {
    using Result = decltype(visitor(Tag<First>{}));
    return detail::visit_first_match<Key, Result>(list, key_, visitor);
  }

  std::string what_;
  std::string key_;
};

/// Calls visitor(Tag<P1>{}, Tag<P2>{}, ...) with the policy each choice picks. Every choice is
/// validated before anything runs, so a bad key fails before any work starts.
template <class Visitor, class... Choices>
auto dispatch(Visitor&& visitor, const Choices&... choices) {
  (choices.validate(), ...);
  return detail::dispatch_validated(visitor, choices...);
}

/// The policies gsq ships, for drivers that offer all of them. Dispatching a quantizer over all
/// five lists is 360 instantiations of gsq::train: about 80 s of g++ -O3 for one translation unit.
using GridPolicies = TypeList<Ternary, Int<2>, Int<3>, Int<4>>;
using GroupingPolicies = TypeList<PerChannel, GroupSize<32>, GroupSize<64>, GroupSize<128>, GroupSize<256>>;
using SchedulePolicies = TypeList<LinearAnneal, CosineAnneal, ExponentialAnneal>;
using EstimatorPolicies = TypeList<Relaxed, StraightThrough, Deterministic>;
using OptimizerPolicies = TypeList<Lion, Adam>;
/// llama.cpp's K-quant layouts (and the legacy blocks with a min), spelled by format name ("q2_k"), for --format.
using KQuantLayoutPolicies = TypeList<Q2K, Q3K, Q4K, Q5K, Q6K, Q41, Q51>;

}  // namespace gsq
