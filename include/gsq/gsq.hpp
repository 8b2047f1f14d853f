// gsq/gsq.hpp -- the umbrella header: everything a host program needs.
//
//   #include <gsq/gsq.hpp>
//   gsq::QuantizedTensor start = gsq::round_to_nearest(weight, gsq::grid_spec<gsq::Int<2>>(), 128);
//   gsq::Quantizer<gsq::Int<2>> quantizer(start);
//   gsq::HessianObjective<> objective(weight, hessian);
//   gsq::train(quantizer, objective, gsq::TrainConfig{});
//   gsq::QuantizedTensor result = quantizer.result();
//
// CUDA programs (nvcc) add #include <gsq/backend/cuda.cuh> and name gsq::Cuda<float>.
#pragma once

// Common vocabulary: errors, element types and half conversions, the host matrix.
#include "gsq/common/dtype.hpp"
#include "gsq/common/error.hpp"
#include "gsq/common/matrix.hpp"
// Policies: what a quantizer is composed of.
#include "gsq/policy/estimator.hpp"
#include "gsq/policy/grid.hpp"
#include "gsq/policy/grouping.hpp"
#include "gsq/policy/optimizer.hpp"
#include "gsq/policy/parametrisation.hpp"
#include "gsq/policy/schedule.hpp"
// The optimisation core: noise, the relaxation's functors, the quantizer, the loop.
#include "gsq/backend/candidate_tiles.hpp"
#include "gsq/core/group_layout.hpp"
#include "gsq/core/gumbel_softmax.hpp"
#include "gsq/core/philox.hpp"
#include "gsq/core/quantizer.hpp"
#include "gsq/core/train.hpp"
// Objectives the loop minimises.
#include "gsq/objective/hessian.hpp"
#include "gsq/objective/swiglu_block.hpp"
// Initializers: starting points.
#include "gsq/init/gptq.hpp"
#include "gsq/init/rtn.hpp"
#include "gsq/init/scale_fit.hpp"
// Formats and I/O.
#include "gsq/format/quantized_tensor.hpp"
#include "gsq/io/atomic_file.hpp"
#include "gsq/io/safetensors.hpp"
// Backends and experiment tooling.
#include "gsq/backend/host.hpp"
#include "gsq/objective/synthetic_layer.hpp"
