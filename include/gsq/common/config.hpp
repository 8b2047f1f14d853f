// gsq/common/config.hpp -- compiler portability for code shared by the host and CUDA builds.
#pragma once

// Element-wise functors are compiled for both the host (g++/clang, Thrust's OpenMP or C++
// system) and the GPU (nvcc, Thrust's CUDA system) from one source.
#if defined(__CUDACC__)
#define GSQ_HOST_DEVICE __host__ __device__
#else
#define GSQ_HOST_DEVICE
#endif

// Fully unrolls a short loop with a compile-time trip count (the rounds of Philox, the K
// candidates), so that the per-element loop around it has no inner control flow and vectorises.
#if defined(__CUDACC__) || defined(__clang__)
#define GSQ_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define GSQ_UNROLL _Pragma("GCC unroll 16")
#else
#define GSQ_UNROLL
#endif
