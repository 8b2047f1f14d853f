// gsq/backend/cuda.cuh -- the CUDA backend: memory in thrust::device_vector, element-wise
// functors through Thrust's CUDA system, matrix products through cuBLAS. Include it only from
// translation units compiled by nvcc.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include <cublas_v2.h>
#include <thrust/copy.h>
#include <thrust/device_vector.h>
#include <thrust/for_each.h>
#include <thrust/inner_product.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/system/cuda/execution_policy.h>

#include "gsq/backend/fwd.hpp"
#include "gsq/backend/candidate_tiles.hpp"
#include "gsq/common/error.hpp"

namespace gsq {

namespace detail {
/// One cuBLAS handle per host thread, created on first use.
inline cublasHandle_t cublas_handle() {
  struct Handle {
    cublasHandle_t value = nullptr;
    Handle() { require(cublasCreate(&value) == CUBLAS_STATUS_SUCCESS, "cuBLAS could not be initialised"); }
    ~Handle() { cublasDestroy(value); }
  };
  thread_local Handle handle;
  return handle.value;
}
// Column-major C (m x n) = op(A) (m x k) * op(B) (k x n).
inline cublasStatus_t gemm_column_major(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                        const float* alpha, const float* a, int lda, const float* b, int ldb,
                                        float* c, int ldc) {
  const float beta = 0.0f;
  return cublasSgemm(cublas_handle(), ta, tb, m, n, k, alpha, a, lda, b, ldb, &beta, c, ldc);
}
inline cublasStatus_t gemm_column_major(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                        const double* alpha, const double* a, int lda, const double* b, int ldb,
                                        double* c, int ldc) {
  const double beta = 0.0;
  return cublasDgemm(cublas_handle(), ta, tb, m, n, k, alpha, a, lda, b, ldb, &beta, c, ldc);
}

/// A per-candidate functor called with its element's tile shift.
template <class Functor>
struct WithTileShift {
  Functor functor;
  __device__ void operator()(std::size_t i) const {
    functor(i, CandidateTiles<Functor::candidate_count>::shift(i));
  }
};
}  // namespace detail

template <class Real_>
struct Cuda {
  using Real = Real_;
  template <class T>
  using vector = thrust::device_vector<T>;
  static constexpr const char* name = "cuda";

  static auto execution() { return thrust::cuda::par; }

  template <class Functor>
  static void for_each_index(std::size_t count, const Functor& functor) {
    thrust::for_each_n(execution(), thrust::counting_iterator<std::size_t>(0), count, functor);
  }

  /// Calls functor(i, shift) for i in [0, count) with i's CandidateTiles shift
  /// (gsq/backend/candidate_tiles.hpp), one thread per element.
  template <class Functor>
  static void for_each_tile(std::size_t count, const Functor& functor) {
    for_each_index(count, detail::WithTileShift<Functor>{functor});
  }

  /// Row-major C = alpha op(A) op(B), computed as the column-major C^T = op(B)^T op(A)^T.
  static void gemm(bool transpose_a, long rows, long cols, long inner, Real alpha, const Real* a,
                   const Real* b, Real* c, bool transpose_b = false) {
    // Read column-major, row-major storage is the transpose: a stored X (r x c) reads as X^T
    // (ld c). So op(B)^T is B's storage read as is when B is not transposed (ld cols), or
    // transposed when it is (stored cols x inner, ld inner); likewise for A.
    const cublasStatus_t status = detail::gemm_column_major(
        transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N, transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<int>(cols),
        static_cast<int>(rows), static_cast<int>(inner), &alpha, b, static_cast<int>(transpose_b ? inner : cols), a,
        static_cast<int>(transpose_a ? rows : inner), c, static_cast<int>(cols));
    require(status == CUBLAS_STATUS_SUCCESS, "cuBLAS gemm failed with status " + std::to_string(status));
  }

  static double dot(const Real* a, const Real* b, std::size_t count) {
    return static_cast<double>(thrust::inner_product(execution(), a, a + count, b, Real(0)));
  }

  template <class T>
  static std::vector<T> to_host(const vector<T>& values) {
    std::vector<T> host(values.size());
    thrust::copy(values.begin(), values.end(), host.begin());
    return host;
  }
  template <class T>
  static vector<T> from_host(const std::vector<T>& values) { return vector<T>(values.begin(), values.end()); }
  template <class T>
  static T* raw(vector<T>& values) { return thrust::raw_pointer_cast(values.data()); }
  template <class T>
  static const T* raw(const vector<T>& values) { return thrust::raw_pointer_cast(values.data()); }
};

}  // namespace gsq
