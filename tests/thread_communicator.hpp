// tests/thread_communicator.hpp -- ranks as threads of one test process: a Communicator whose
// collectives meet in shared memory, to test work spread over ranks without MPI.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include <gsq/distributed/communicator.hpp>

namespace gsq::testing {

/// What the ranks of one ThreadCommunicator group share.
class ThreadGroup {
 public:
  explicit ThreadGroup(int size) : size_(size), slots_(static_cast<std::size_t>(size)) {}
  int size() const { return size_; }

  /// Every rank's bytes in rank order, once all ranks have given theirs.
  std::vector<std::vector<std::uint8_t>> all_gather(int rank, const std::vector<std::uint8_t>& bytes) {
    std::unique_lock<std::mutex> lock(mutex_);
    slots_[static_cast<std::size_t>(rank)] = bytes;
    arrive(lock);
    std::vector<std::vector<std::uint8_t>> all = slots_;
    arrive(lock);  // nobody writes a slot of the next collective before everyone has read this one
    return all;
  }

  void barrier() {
    std::unique_lock<std::mutex> lock(mutex_);
    arrive(lock);
  }

 private:
  void arrive(std::unique_lock<std::mutex>& lock) {
    const std::uint64_t generation = generation_;
    if (++arrived_ == size_) {
      arrived_ = 0;
      ++generation_;
      changed_.notify_all();
      return;
    }
    changed_.wait(lock, [&] { return generation_ != generation; });
  }

  const int size_;
  std::vector<std::vector<std::uint8_t>> slots_;
  std::mutex mutex_;
  std::condition_variable changed_;
  int arrived_ = 0;
  std::uint64_t generation_ = 0;
};

class ThreadCommunicator : public Communicator {
 public:
  ThreadCommunicator(ThreadGroup& group, int rank) : group_(group), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return group_.size(); }
  std::vector<std::vector<std::uint8_t>> all_gather(const std::vector<std::uint8_t>& bytes) const override {
    return group_.all_gather(rank_, bytes);
  }
  void barrier() const override { group_.barrier(); }
  void abort(int status) const override { throw std::runtime_error("rank aborted with status " + std::to_string(status)); }

 private:
  ThreadGroup& group_;
  int rank_;
};

/// Runs `body(communicator)` on `size` ranks, each a thread; returns once all have finished.
template <class Body>
void run_ranks(int size, Body body) {
  ThreadGroup group(size);
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < size; ++rank)
    ranks.emplace_back([&group, &body, rank] {
      const ThreadCommunicator communicator(group, rank);
      body(communicator);
    });
  for (std::thread& rank : ranks) rank.join();
}

}  // namespace gsq::testing
