// gsq/distributed/communicator.hpp -- what layer-by-layer quantization needs from processes that
// share its work: each process's rank, the number of processes, every process's bytes gathered on
// every process, and a barrier. SerialCommunicator is the one process of a run without MPI;
// gsq/distributed/mpi_communicator.hpp is the MPI one (built where MPI is found).
//
// Work is spread by a pure function of what every process has (assign_units), so every process
// issues the same collectives in the same order, and the results do not depend on the number of
// processes.
//
//   std::vector<int> owner = gsq::assign_units(costs, communicator.size());
//   ... do the units with owner[u] == communicator.rank(), serialise their results ...
//   std::vector<std::vector<std::uint8_t>> all = communicator.all_gather(mine);   // rank order
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "gsq/common/error.hpp"

namespace gsq {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// Every process's `bytes`, in rank order, on every process.
  virtual std::vector<std::vector<std::uint8_t>> all_gather(const std::vector<std::uint8_t>& bytes) const = 0;
  /// Returns once every process has called it.
  virtual void barrier() const = 0;
  /// Ends every process with `status` after an error in one of them, so that none waits forever
  /// in a collective the failed one will never join.
  virtual void abort(int status) const = 0;
};

/// The one process of a run that is not spread.
class SerialCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::vector<std::vector<std::uint8_t>> all_gather(const std::vector<std::uint8_t>& bytes) const override { return {bytes}; }
  void barrier() const override {}
  void abort(int /*status*/) const override {}
};

inline const Communicator& serial_communicator() {
  static const SerialCommunicator serial;
  return serial;
}

/// The rank that does each unit of work, from the units' costs: the costliest first (the lower
/// index among equals), each to the rank with the least cost so far (the lowest among equals).
inline std::vector<int> assign_units(const std::vector<double>& costs, int ranks) {
  require(ranks > 0, "work is assigned to at least one rank, not " + std::to_string(ranks));
  std::vector<long> order(costs.size());
  std::iota(order.begin(), order.end(), 0L);
  std::stable_sort(order.begin(), order.end(), [&](long a, long b) {
    return costs[static_cast<std::size_t>(a)] > costs[static_cast<std::size_t>(b)];
  });
  std::vector<double> load(static_cast<std::size_t>(ranks), 0.0);
  std::vector<int> owner(costs.size());
  for (long unit : order) {
    const auto least = std::min_element(load.begin(), load.end());  // the first among equals
    owner[static_cast<std::size_t>(unit)] = static_cast<int>(least - load.begin());
    *least += costs[static_cast<std::size_t>(unit)];
  }
  return owner;
}

}  // namespace gsq
