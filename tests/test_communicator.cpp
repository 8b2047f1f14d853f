// Tests of gsq/distributed/communicator.hpp: the assignment of work to ranks (a pure function every
// rank computes alike) and the in-process ranks the other tests spread work over.
#include <catch2/catch.hpp>

#include "error_message.hpp"
#include "thread_communicator.hpp"

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include <gsq/distributed/communicator.hpp>

using gsq::testing::error_of;
using Catch::Matchers::Contains;

TEST_CASE("assign_units: costliest first to the least-loaded rank, the same answer every time", "[ranks]") {
  // Known answer: costs 5 4 3 3 1 on two ranks: 5 -> 0, 4 -> 1, 3 (unit 2) -> 1 (loads 5, 7), 3 (unit 3) -> 0
  // (8, 7), 1 -> 1.
  CHECK(gsq::assign_units({5, 4, 3, 3, 1}, 2) == std::vector<int>{0, 1, 1, 0, 1});
  CHECK(gsq::assign_units({1, 1, 1}, 1) == std::vector<int>{0, 0, 0});
  CHECK(gsq::assign_units({2, 7, 1}, 5) == std::vector<int>{1, 0, 2});  // more ranks than units: one each
  CHECK(gsq::assign_units({}, 3).empty());

  // On random costs: every unit gets a rank, and the busiest rank carries at most the average
  // load plus the largest unit (the greedy rule's bound), whatever the number of ranks.
  std::mt19937 random(7);
  std::uniform_real_distribution<double> cost(0.5, 10.0);
  for (int ranks = 1; ranks <= 6; ++ranks) {
    std::vector<double> costs(40);
    for (double& c : costs) c = cost(random);
    const std::vector<int> owner = gsq::assign_units(costs, ranks);
    CHECK(owner == gsq::assign_units(costs, ranks));
    std::vector<double> load(static_cast<std::size_t>(ranks));
    for (std::size_t unit = 0; unit < costs.size(); ++unit) {
      REQUIRE(owner[unit] >= 0);
      REQUIRE(owner[unit] < ranks);
      load[static_cast<std::size_t>(owner[unit])] += costs[unit];
    }
    double total = 0;
    for (double c : costs) total += c;
    CHECK(*std::max_element(load.begin(), load.end()) <= total / ranks + *std::max_element(costs.begin(), costs.end()));
  }
  CHECK_THAT(error_of([] { gsq::assign_units({1}, 0); }), Contains("at least one rank"));
}

TEST_CASE("ranks as threads: all_gather gives every rank every rank's bytes in rank order, round after round", "[ranks]") {
  constexpr int ranks = 3;
  std::vector<std::vector<std::vector<std::uint8_t>>> seen(ranks);
  gsq::testing::run_ranks(ranks, [&](const gsq::Communicator& communicator) {
    for (std::uint8_t round = 0; round < 20; ++round) {
      const std::vector<std::uint8_t> mine(static_cast<std::size_t>(communicator.rank() + 1), round);
      const std::vector<std::vector<std::uint8_t>> all = communicator.all_gather(mine);
      for (int rank = 0; rank < ranks; ++rank)
        if (all[static_cast<std::size_t>(rank)] != std::vector<std::uint8_t>(static_cast<std::size_t>(rank + 1), round))
          seen[static_cast<std::size_t>(communicator.rank())].push_back(all[static_cast<std::size_t>(rank)]);
      communicator.barrier();
    }
  });
  for (const auto& wrong : seen) CHECK(wrong.empty());
  CHECK(gsq::serial_communicator().all_gather({1, 2}) == std::vector<std::vector<std::uint8_t>>{{1, 2}});
}
