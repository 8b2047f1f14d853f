// gsq/config.hpp -- compiler portability for code shared by the host and CUDA builds.
#pragma once

// Element-wise functors are compiled for both the host (g++/clang, Thrust's OpenMP or C++
// system) and the GPU (nvcc, Thrust's CUDA system) from one source.
#if defined(__CUDACC__)
#define GSQ_HOST_DEVICE __host__ __device__
#else
#define GSQ_HOST_DEVICE
#endif
