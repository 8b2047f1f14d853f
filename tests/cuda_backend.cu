// The CUDA build of the step code: instantiates every quantizer type on Thrust's CUDA system
// (with cuBLAS for the product) and, on a machine with a GPU, checks it against the host.
// Without a GPU it exits with 77, which ctest reports as skipped; compiling it is the test that
// keeps host-only constructs out of the shared code.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "gsq/backend/cuda.cuh"
#include "gsq/core/quantizer.hpp"
#include "gsq/core/train.hpp"
#include "gsq/objective/synthetic_layer.hpp"
#include "gsq/init/rtn.hpp"
#include "gsq/objective/hessian.hpp"
#include "gsq/policy/estimator.hpp"
#include "gsq/policy/grid.hpp"
#include "gsq/policy/grouping.hpp"
#include "gsq/policy/schedule.hpp"

namespace {

int failures = 0;

void check(bool condition, const std::string& what) {
  if (!condition) {
    std::printf("FAILED: %s\n", what.c_str());
    ++failures;
  }
}

template <class... Types>
struct List {};

/// One quantizer type on CUDA: its first forward pass matches the same functor run on the host,
/// and a short run ends below its RTN start.
template <class Grid, class Grouping, class Schedule, class Estimator>
void check_type(const gsq::SyntheticLayer& layer) {
  using Quantizer = gsq::Quantizer<Grid, Grouping, Schedule, Estimator, gsq::SymmetricScale, gsq::Cuda<float>>;
  const std::string name = std::string(Grid::name) + "/" + std::to_string(Grouping::size) + "/" + Schedule::name + "/" + Estimator::name;
  const gsq::QuantizedTensor start = gsq::round_to_nearest(layer.weight, gsq::grid_spec<Grid>(), Grouping::size ? Grouping::size : layer.weight.cols);
  Quantizer quantizer(start);
  auto objective = gsq::HessianObjective<gsq::Cuda<float>>::from_inputs(layer.weight, layer.inputs);

  const auto point = Quantizer::relaxation_at(gsq::AnnealConfig{}, 3, 10, 42);
  thrust::device_vector<float> weight(quantizer.size());
  quantizer.forward(point, gsq::Cuda<float>::raw(weight));
  const std::vector<float> device_weight = gsq::Cuda<float>::to_host(weight);

  const std::vector<float> logits = gsq::Cuda<float>::to_host(quantizer.logits());
  const std::vector<float> scales = gsq::Cuda<float>::to_host(quantizer.parameters());
  const std::vector<std::int8_t> base(start.codes.begin(), start.codes.end());
  std::vector<float> host_code(quantizer.size()), host_weight(quantizer.size()), host_probability(logits.size());
  const gsq::RelaxedForward<Grid, Estimator, gsq::SymmetricScale, float> host_forward{
      logits.data(), base.data(), scales.data(), quantizer.layout(), point, host_code.data(), host_weight.data(),
      host_probability.data()};
  double largest_gap = 0;
  for (std::size_t e = 0; e < quantizer.size(); ++e) {
    host_forward(e, gsq::CandidateTiles<Grid::candidate_count>::shift(e));
    largest_gap = std::fmax(largest_gap, std::fabs(host_weight[e] - device_weight[e]));
  }
  check(largest_gap < 1e-5, name + ": CUDA forward differs from the host by " + std::to_string(largest_gap));

  gsq::TrainConfig config;
  config.steps = 100;
  gsq::train(quantizer, objective, config);
  const double start_error = objective.relative_error(start.dequantize());
  const double final_error = objective.relative_error(quantizer.result().dequantize());
  check(std::isfinite(final_error) && final_error < start_error,
        name + ": error " + std::to_string(final_error) + " not below RTN's " + std::to_string(start_error));
}

template <class... Grids, class... Groupings, class... Schedules, class... Estimators>
void check_all(List<Grids...>, List<Groupings...>, List<Schedules...>, List<Estimators...>,
               const gsq::SyntheticLayer& layer) {
  const auto for_grid = [&](auto grid) {
    const auto for_grouping = [&](auto grouping) {
      const auto for_schedule = [&](auto schedule) {
        (check_type<decltype(grid), decltype(grouping), decltype(schedule), Estimators>(layer), ...);
      };
      (for_schedule(Schedules{}), ...);
    };
    (for_grouping(Groupings{}), ...);
  };
  (for_grid(Grids{}), ...);
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipped (the CUDA build compiled)\n");
    return 77;
  }
  const gsq::SyntheticLayer layer = gsq::make_synthetic_layer({128, 256, 512, 7});
  check_all(List<gsq::Ternary, gsq::Int<2>, gsq::Int<3>, gsq::Int<4>>{}, List<gsq::GroupSize<128>, gsq::PerChannel>{},
            List<gsq::LinearAnneal, gsq::CosineAnneal, gsq::ExponentialAnneal>{},
            List<gsq::Relaxed, gsq::StraightThrough, gsq::Deterministic>{}, layer);
  std::printf("%s\n", failures ? "CUDA backend: FAILED" : "CUDA backend: all quantizer types agree with the host");
  return failures ? 1 : 0;
}
