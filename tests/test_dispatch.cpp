// Tests of gsq/policy/dispatch.hpp: run-time keys select the right compile-time policy, and unknown
// keys fail with a message that names the setting, the key and the valid spellings.
#include <catch2/catch.hpp>

#include <string>
#include <type_traits>
#include <vector>

#include <gsq/policy/dispatch.hpp>

namespace {

/// The `name` of the policy a visitor receives, to check which one was chosen.
struct NameOfChosen {
  template <class TagType>
  std::string operator()(TagType) const { return gsq::type_of<TagType>::name; }
};

template <class Choice>
std::string validation_message(const Choice& choice) {
  try {
    choice.validate();
  } catch (const gsq::Error& error) {
    return error.what();
  }
  return "";
}

}  // namespace

TEST_CASE("a Choice finds every policy of a list by its name") {
  for (const std::string name : {"relaxed", "ste", "deterministic"})
    CHECK(gsq::Choice<gsq::EstimatorPolicies>("--estimator", name).visit(NameOfChosen{}) == name);
  for (const std::string name : {"linear", "cosine", "exponential"})
    CHECK(gsq::Choice<gsq::SchedulePolicies>("--schedule", name).visit(NameOfChosen{}) == name);
  for (const std::string name : {"lion", "adam"})
    CHECK(gsq::Choice<gsq::OptimizerPolicies>("--optimizer", name).visit(NameOfChosen{}) == name);
}

TEST_CASE("the visitor receives a tag of the chosen type") {
  const bool straight_through = gsq::Choice<gsq::EstimatorPolicies>("--estimator", "ste").visit([](auto tag) {
    return std::is_same<gsq::type_of<decltype(tag)>, gsq::StraightThrough>::value;
  });
  CHECK(straight_through);
}

TEST_CASE("grids are spelled as --bits spells them") {
  using Bits = gsq::Choice<gsq::GridPolicies, gsq::ByBits>;
  CHECK(Bits::spellings() == std::vector<std::string>{"ternary", "2", "3", "4"});
  CHECK(Bits("--bits", "ternary").visit(NameOfChosen{}) == "ternary");
  CHECK(Bits("--bits", "2").visit(NameOfChosen{}) == "int2");
  CHECK(Bits("--bits", "3").visit(NameOfChosen{}) == "int3");
  CHECK(Bits("--bits", "4").visit(NameOfChosen{}) == "int4");
  CHECK_FALSE(Bits("--bits", "int2").valid());  // --bits takes the bit count, not the grid name
  CHECK_FALSE(Bits("--bits", "5").valid());
}

TEST_CASE("groupings are spelled by group size and per-channel also as 0") {
  using Group = gsq::Choice<gsq::GroupingPolicies, gsq::ByGroupSize>;
  const auto size_of_chosen = [](auto tag) { return gsq::type_of<decltype(tag)>::size; };
  CHECK(Group("--group", "128").visit(size_of_chosen) == 128);
  CHECK(Group("--group", "32").visit(size_of_chosen) == 32);
  CHECK(Group("--group", "0").visit(size_of_chosen) == 0);
  CHECK(Group("--group", "per-channel").visit(size_of_chosen) == 0);
  CHECK(Group("--group", "0").spelling() == "per-channel");
  CHECK(Group("--group", "256").spelling() == "256");
  CHECK_FALSE(Group("--group", "100").valid());
  CHECK_FALSE(Group("--group", "").valid());
}

TEST_CASE("an unknown key names the setting, the key and every valid spelling") {
  const std::string estimator = validation_message(gsq::Choice<gsq::EstimatorPolicies>("--estimator", "nope"));
  CHECK(estimator == "invalid --estimator 'nope': expected one of relaxed, ste, deterministic");

  const std::string group = validation_message(gsq::Choice<gsq::GroupingPolicies, gsq::ByGroupSize>("--group", "100"));
  for (const std::string expected : {"--group", "'100'", "per-channel", "32", "64", "128", "256"})
    CHECK_THAT(group, Catch::Contains(expected));

  CHECK_THROWS_AS(gsq::Choice<gsq::OptimizerPolicies>("--optimizer", "sgd").visit(NameOfChosen{}), gsq::Error);
  CHECK(validation_message(gsq::Choice<gsq::OptimizerPolicies>("--optimizer", "adam")).empty());
}

TEST_CASE("dispatch calls the visitor with one tag per choice") {
  const gsq::Choice<gsq::GridPolicies, gsq::ByBits> grid("--bits", "3");
  const gsq::Choice<gsq::EstimatorPolicies> estimator("--estimator", "deterministic");
  const gsq::Choice<gsq::OptimizerPolicies> optimizer("--optimizer", "adam");
  const std::string chosen = gsq::dispatch(
      [](auto grid_tag, auto estimator_tag, auto optimizer_tag) {
        return std::string(gsq::type_of<decltype(grid_tag)>::name) + "/" + gsq::type_of<decltype(estimator_tag)>::name +
               "/" + gsq::type_of<decltype(optimizer_tag)>::name;
      },
      grid, estimator, optimizer);
  CHECK(chosen == "int3/deterministic/adam");
}

TEST_CASE("dispatch validates every choice before calling anything") {
  const gsq::Choice<gsq::GridPolicies, gsq::ByBits> grid("--bits", "2");
  const gsq::Choice<gsq::SchedulePolicies> schedule("--schedule", "quadratic");
  int calls = 0;
  try {
    gsq::dispatch([&](auto, auto) { ++calls; }, grid, schedule);
    FAIL("an unknown schedule was accepted");
  } catch (const gsq::Error& error) {
    CHECK_THAT(error.what(), Catch::Contains("--schedule") && Catch::Contains("quadratic") &&
                                 Catch::Contains("linear, cosine, exponential"));
  }
  CHECK(calls == 0);
}
