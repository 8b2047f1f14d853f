// gsq/distributed/mpi_communicator.hpp -- the Communicator over MPI's MPI_COMM_WORLD (needs
// <mpi.h> and MPI::MPI_CXX; not in the umbrella header). One per process: it initialises MPI and
// finalises it when destroyed.
//
//   gsq::MpiCommunicator communicator(&argc, &argv);   // mpirun -np 4 program ...
#pragma once

#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "gsq/common/error.hpp"
#include "gsq/distributed/communicator.hpp"

namespace gsq {

class MpiCommunicator : public Communicator {
 public:
  MpiCommunicator(int* argc, char*** argv) {
    check(MPI_Init(argc, argv), "MPI_Init");
    check(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(MPI_COMM_WORLD, &size_), "MPI_Comm_size");
  }
  ~MpiCommunicator() override { MPI_Finalize(); }
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  std::vector<std::vector<std::uint8_t>> all_gather(const std::vector<std::uint8_t>& bytes) const override {
    std::uint64_t mine = bytes.size();
    std::vector<std::uint64_t> sizes(static_cast<std::size_t>(size_));
    check(MPI_Allgather(&mine, 1, MPI_UINT64_T, sizes.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD), "MPI_Allgather");
    // Each rank's bytes broadcast from it in pieces MPI's int counts can hold.
    constexpr std::uint64_t piece = std::uint64_t(1) << 30;
    std::vector<std::vector<std::uint8_t>> all(static_cast<std::size_t>(size_));
    for (int root = 0; root < size_; ++root) {
      std::vector<std::uint8_t>& buffer = all[static_cast<std::size_t>(root)];
      buffer = root == rank_ ? bytes : std::vector<std::uint8_t>(sizes[static_cast<std::size_t>(root)]);
      for (std::uint64_t first = 0; first < buffer.size(); first += piece) {
        const int count = static_cast<int>(std::min<std::uint64_t>(piece, buffer.size() - first));
        check(MPI_Bcast(buffer.data() + first, count, MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast");
      }
    }
    return all;
  }

  void barrier() const override { check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }
  void abort(int status) const override { MPI_Abort(MPI_COMM_WORLD, status); }

 private:
  static void check(int code, const char* call) {
    if (code == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(code, text, &length);
    throw Error(std::string(call) + " failed: " + std::string(text, static_cast<std::size_t>(length)));
  }

  int rank_ = 0;
  int size_ = 1;
};

}  // namespace gsq
