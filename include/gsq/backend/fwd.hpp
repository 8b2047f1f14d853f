// gsq/backend/fwd.hpp -- declarations of the backends, so that headers can name a default
// backend without pulling in its implementation (Eigen for the host, cuBLAS for CUDA).
#pragma once

namespace gsq {
template <class Real>
struct Host;  // gsq/backend/host.hpp
template <class Real>
struct Cuda;  // gsq/backend/cuda.cuh
}  // namespace gsq
