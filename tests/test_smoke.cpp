#include <catch2/catch.hpp>
#include <gsq/gsq.hpp>
TEST_CASE("placeholder until the suite lands") { REQUIRE(gsq::Int<2>::candidate_count == 4); }
