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

#include "gsq/backend/host.hpp"
#include "gsq/block_objective.hpp"
#include "gsq/error.hpp"
#include "gsq/estimator.hpp"
#include "gsq/gptq.hpp"
#include "gsq/grid.hpp"
#include "gsq/group_layout.hpp"
#include "gsq/grouping.hpp"
#include "gsq/gumbel_softmax.hpp"
#include "gsq/matrix.hpp"
#include "gsq/objective.hpp"
#include "gsq/optimizer.hpp"
#include "gsq/parametrisation.hpp"
#include "gsq/philox.hpp"
#include "gsq/quantized_tensor.hpp"
#include "gsq/quantizer.hpp"
#include "gsq/rtn.hpp"
#include "gsq/safetensors.hpp"
#include "gsq/scale_fit.hpp"
#include "gsq/schedule.hpp"
#include "gsq/synthetic_layer.hpp"
#include "gsq/train.hpp"
