// Times GPTQ (gsq/init/gptq.hpp) on a size x size layer with groups of 128 against one
// size x size x size matrix product, its natural unit (GPTQ's lazy updates add up to half of
// one); medians over several runs. With --errors, prints instead the relative Hessian error of
// RTN and GPTQ under each scale fit on the synthetic layer, the table of docs/gptq.md.
//
//   build/gptq_bench [--size 4096] [--runs 3] [--threads 2]
//   build/gptq_bench --errors [--rows 512] [--cols 1024] [--tokens 2048] [--threads 2]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "timing.hpp"
#include <gsq/backend/host.hpp>
#include <gsq/objective/synthetic_layer.hpp>
#include <gsq/init/gptq.hpp>
#include <gsq/init/rtn.hpp>
#include <gsq/objective/hessian.hpp>

namespace {

using gsq::bench::median;
using gsq::bench::seconds_of;

/// H = X^T X / N of the synthetic layer's inputs, exactly symmetric.
gsq::Matrix<float> hessian_of(const gsq::SyntheticLayer& layer) {
  const long cols = layer.inputs.cols, tokens = layer.inputs.rows;
  gsq::Matrix<float> hessian(cols, cols);
  gsq::Host<float>::gemm(true, cols, cols, tokens, 1.0f / static_cast<float>(tokens), layer.inputs.data(),
                         layer.inputs.data(), hessian.data());
  for (long i = 0; i < cols; ++i)
    for (long j = 0; j < i; ++j) hessian(i, j) = hessian(j, i);
  return hessian;
}

void time_gptq(long size, int runs) {
  std::printf("setting up a %ld x %ld synthetic layer (%ld tokens) ...\n", size, size, size);
  const gsq::SyntheticLayer layer = gsq::make_synthetic_layer({size, size, size, 1});
  const gsq::Matrix<float> hessian = hessian_of(layer);
  const gsq::GridSpec grid = gsq::grid_spec<gsq::Int<2>>();

  struct Operation {
    std::string name;
    std::function<void()> work;
    std::vector<double> seconds;
  };
  gsq::Matrix<float> product(size, size);
  std::vector<Operation> operations;
  operations.push_back({"gemm " + std::to_string(size) + "^3 (Host<float>::gemm)", [&] {
    gsq::Host<float>::gemm(false, size, size, size, 1.0f, layer.weight.data(), hessian.data(), product.data());
  }, {}});
  for (const bool act_order : {false, true})
    for (const gsq::ScaleFit fit : {gsq::ScaleFit::max_abs, gsq::ScaleFit::mse}) {
      gsq::GptqConfig config;
      config.act_order = act_order;
      config.scale_fit = fit;
      operations.push_back({std::string("gptq int2 g128 ") + gsq::scale_fit_name(fit) + (act_order ? " act-order" : ""),
                            [&, config] { gsq::gptq(layer.weight, hessian, grid, 128, config); }, {}});
    }
  operations.push_back({"  of each: input validation (W and H)", [&] {
    gsq::require_finite_nonempty(layer.weight, "the weight matrix");
    gsq::require_valid_hessian(hessian, size);
  }, {}});
  // Round-robin, so that a change in the machine's load touches every operation alike.
  for (int run = 0; run < runs; ++run)
    for (Operation& operation : operations) operation.seconds.push_back(seconds_of(operation.work));

  const double gemm = median(operations.front().seconds);
  std::printf("\n%-44s %10s %10s\n", "operation", "median s", "x gemm");
  for (const Operation& operation : operations) {
    const double seconds = median(operation.seconds);
    std::printf("%-44s %10.3f %10.2f\n", operation.name.c_str(), seconds, seconds / gemm);
  }
}

void print_errors(long rows, long cols, long tokens) {
  const gsq::SyntheticLayer layer = gsq::make_synthetic_layer({rows, cols, tokens, 1});
  const gsq::Matrix<float> hessian = hessian_of(layer);
  gsq::HessianObjective<> objective(layer.weight, hessian);
  const std::vector<double> importance = gsq::hessian_diagonal(hessian);
  const std::vector<gsq::ScaleFit> fits = {gsq::ScaleFit::max_abs, gsq::ScaleFit::mse, gsq::ScaleFit::weighted};
  std::printf("relative Hessian error, synthetic layer %ld x %ld, %ld tokens, group 128, percdamp 0.01\n\n", rows,
              cols, tokens);
  std::printf("| grid    | method          |");
  for (const gsq::ScaleFit fit : fits) std::printf(" %9s |", gsq::scale_fit_name(fit));
  std::printf("\n|---------|-----------------|");
  for (std::size_t i = 0; i < fits.size(); ++i) std::printf("-----------|");
  std::printf("\n");
  for (const gsq::GridSpec& grid : {gsq::grid_spec<gsq::Ternary>(), gsq::grid_spec<gsq::Int<2>>(),
                                    gsq::grid_spec<gsq::Int<3>>(), gsq::grid_spec<gsq::Int<4>>()})
    for (const std::string method : {"RTN", "GPTQ", "GPTQ act-order"}) {
      std::printf("| %-7s | %-15s |", grid.name, method.c_str());
      for (const gsq::ScaleFit fit : fits) {
        gsq::GptqConfig config;
        config.scale_fit = fit;
        config.act_order = method == "GPTQ act-order";
        const gsq::QuantizedTensor result = method == "RTN"
                                                ? gsq::round_to_nearest(layer.weight, grid, 128, fit, importance)
                                                : gsq::gptq(layer.weight, hessian, grid, 128, config);
        std::printf(" %9.4f |", objective.relative_error(result.dequantize()));
      }
      std::printf("\n");
    }
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, long> options = {{"--size", 4096}, {"--runs", 3}, {"--threads", 2},
                                         {"--rows", 512},  {"--cols", 1024}, {"--tokens", 2048}};
  bool errors = false;
  for (int i = 1; i < argc; ++i) {
    const std::string name = argv[i];
    if (name == "--errors") {
      errors = true;
    } else if (options.count(name) && i + 1 < argc && std::string(argv[i + 1]).find_first_not_of("0123456789") == std::string::npos) {
      options[name] = std::stol(argv[++i]);
    } else {
      std::fprintf(stderr,
                   "unknown or incomplete option '%s'\nusage: gptq_bench [--size N] [--runs N] [--threads N]\n"
                   "       gptq_bench --errors [--rows N] [--cols N] [--tokens N] [--threads N]\n",
                   name.c_str());
      return 2;
    }
  }
  gsq::set_host_threads(static_cast<int>(options["--threads"]));
  std::printf("threads: %ld\n", options["--threads"]);
  try {
    if (errors)
      print_errors(options["--rows"], options["--cols"], options["--tokens"]);
    else
      time_gptq(options["--size"], static_cast<int>(options["--runs"]));
  } catch (const gsq::Error& error) {
    std::fprintf(stderr, "error: %s\n", error.what());
    return 1;
  }
  return 0;
}
