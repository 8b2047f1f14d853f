// gsq/backend/host.hpp -- the host backend: memory in std::vector, element-wise functors through
// Thrust's OpenMP system (C++ system without OpenMP), matrix products through Eigen.
//
// A backend contributes only memory, the matrix product, the reduction and copies; every
// formula lives in functors shared with the CUDA backend (gsq/backend/cuda.cuh). Its work runs
// with subnormals flushed to zero, on whichever thread does it, and leaves the caller's
// floating-point mode as it was (gsq/detail/floating_point.hpp).
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>
#include <thread>
#include <vector>

// Eigen must not thread its products itself (see gemm); the CMake target defines this too, for
// translation units that include Eigen before gsq.
#ifndef EIGEN_DONT_PARALLELIZE
#define EIGEN_DONT_PARALLELIZE
#endif
#include <Eigen/Core>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>
#if defined(_OPENMP)
#include <omp.h>
#include <thrust/system/omp/execution_policy.h>
#else
#include <thrust/system/cpp/execution_policy.h>
#endif

#include "gsq/backend/fwd.hpp"
#include "gsq/common/error.hpp"
#include "gsq/backend/candidate_tiles.hpp"
#include "gsq/detail/floating_point.hpp"

namespace gsq {

template <class Real_>
struct Host {
  using Real = Real_;
  template <class T>
  using vector = std::vector<T>;
  static constexpr const char* name = "host";

  static auto execution() {
#if defined(_OPENMP)
    return thrust::omp::par;
#else
    return thrust::cpp::par;
#endif
  }

  /// Calls functor(i) for i in [0, count); calls must be independent of each other. Threads
  /// take chunks of indices; within a chunk the calls are SIMD lanes.
  template <class Functor>
  static void for_each_index(std::size_t count, const Functor& functor) {
    for_each_chunk(count, functor, [](const Functor& lane_functor, std::size_t first, std::size_t end) {
#pragma omp simd
      for (std::size_t i = first; i < end; ++i) lane_functor(i);
    });
  }

  /// Calls functor(i, shift) for i in [0, count), shift being the CandidateTiles shift of i's
  /// tile (gsq/backend/candidate_tiles.hpp): for functors over per-candidate arrays. A tile's calls
  /// are SIMD lanes with the shift constant, so their loads are contiguous vectors.
  template <class Functor>
  static void for_each_tile(std::size_t count, const Functor& functor) {
    using Tiles = CandidateTiles<Functor::candidate_count>;
    static_assert(chunk % Tiles::width == 0, "a chunk holds whole tiles");
    for_each_chunk(count, functor, [](const Functor& lane_functor, std::size_t first, std::size_t end) {
      for (std::size_t tile = first; tile < end; tile += Tiles::width) {
        const std::size_t shift = Tiles::shift(tile), tile_end = std::min(end, tile + Tiles::width);
#pragma omp simd
        for (std::size_t i = tile; i < tile_end; ++i) lane_functor(i, shift);
      }
    });
  }

  /// C (rows x cols) = alpha * op(A) * op(B), all row-major; op(A) is rows x inner, op(B)
  /// inner x cols. op(X) = X^T when its flag is set (X is then stored transposed).
  ///
  /// Eigen's own threading picks its k-blocking from the thread count, which changes the
  /// summation order; so threads here take fixed panels of 1/16 of C, each a single-threaded
  /// Eigen product (gsq::gsq defines EIGEN_DONT_PARALLELIZE), and results are identical for any
  /// thread count. The panels cut C's longer side: each panel packs the whole operand of the
  /// other side again, so cutting 128 token rows of X W^T would pack all of W sixteen times.
  static void gemm(bool transpose_a, long rows, long cols, long inner, Real alpha, const Real* a,
                   const Real* b, Real* c, bool transpose_b = false) {
    using RowMajor = Eigen::Matrix<Real, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using Stored = Eigen::Map<const RowMajor>;
    using Panel = Eigen::Map<RowMajor, 0, Eigen::OuterStride<>>;
    const bool by_rows = rows >= cols;
    const long side = by_rows ? rows : cols;
    const long panel = std::max(8L, (side + 15) / 16);
    const long panels = (side + panel - 1) / panel;
    // Small products are not worth a thread team (the split stays the same, so do the results).
    const bool threaded = static_cast<double>(rows) * static_cast<double>(cols) * static_cast<double>(inner) >= 1 << 20;
#pragma omp parallel for schedule(dynamic) if (threaded)
    for (long p = 0; p < panels; ++p) {
      const detail::SubnormalsFlushed flushed;
      const long first = p * panel, count = std::min(panel, side - first);
      const long first_row = by_rows ? first : 0, row_count = by_rows ? count : rows;
      const long first_col = by_rows ? 0 : first, col_count = by_rows ? cols : count;
      Panel product(c + first_row * cols + first_col, row_count, col_count, Eigen::OuterStride<>(cols));
      const auto left = [&](auto&& right) {
        if (transpose_a)
          product.noalias() = alpha * Stored(a, inner, rows).middleCols(first_row, row_count).transpose() * right;
        else
          product.noalias() = alpha * Stored(a + first_row * inner, row_count, inner) * right;
      };
      if (transpose_b)
        left(Stored(b + first_col * inner, col_count, inner).transpose());
      else
        left(Stored(b, inner, cols).middleCols(first_col, col_count));
    }
  }

  /// sum_i a[i] b[i], accumulated in double in a fixed order (thread-count independent).
  static double dot(const Real* a, const Real* b, std::size_t count) {
    const detail::SubnormalsFlushed flushed;
    using Column = Eigen::Matrix<Real, Eigen::Dynamic, 1>;
    return Eigen::Map<const Column>(a, count).template cast<double>().dot(
        Eigen::Map<const Column>(b, count).template cast<double>());
  }

  template <class T>
  static std::vector<T> to_host(const vector<T>& values) { return values; }
  template <class T>
  static vector<T> from_host(const std::vector<T>& values) { return values; }
  template <class T>
  static T* raw(vector<T>& values) { return values.data(); }
  template <class T>
  static const T* raw(const vector<T>& values) { return values.data(); }

 private:
  static constexpr std::size_t chunk = 1024;

  /// Runs run(functor copy, first, end) over chunks of [0, count), threads taking chunks, each with
  /// subnormals flushed. A single chunk runs on the calling thread: opening a parallel region
  /// would cost more than the work.
  template <class Functor, class Run>
  static void for_each_chunk(std::size_t count, const Functor& functor, const Run& run) {
    const auto run_chunk = [count, &functor, &run](std::size_t index) {
      const detail::SubnormalsFlushed flushed;
      const Functor lane_functor = functor;  // a local copy: its members cannot alias the outputs
      run(lane_functor, index * chunk, std::min(count, (index + 1) * chunk));
    };
    const std::size_t chunks = (count + chunk - 1) / chunk;
    if (chunks == 1)
      run_chunk(0);
    else
      thrust::for_each_n(execution(), thrust::counting_iterator<std::size_t>(0), chunks, run_chunk);
  }
};

/// The threads the host backend's parallel work runs on.
inline int host_thread_count() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// The most threads set_host_threads accepts: four per hardware thread. More never helps, and
/// tens of thousands exhaust the address space with thread stacks (a crash inside OpenMP).
inline int max_host_threads() { return 4 * static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

/// Sets the threads the host backend uses (OpenMP); 0 keeps the default. An error names a count
/// that is negative or beyond max_host_threads().
inline void set_host_threads(int threads) {
  require(threads >= 0 && threads <= max_host_threads(),
          "the number of threads must be between 0 (all cores) and " + std::to_string(max_host_threads()) +
              " (four per hardware thread of this machine), got " + std::to_string(threads));
#if defined(_OPENMP)
  if (threads > 0) omp_set_num_threads(threads);
#endif
}

}  // namespace gsq
