// Times one full GSQ optimizer step (noise, forward, objective, backward, update) against its
// floor, the rows x cols x cols matrix product a step cannot avoid, and breaks the step into
// its phases. Medians over several steps.
//
//   build/step_bench [--sizes 1024,4096] [--steps 9] [--threads 2] [--json FILE]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "timing.hpp"
#include <gsq/gsq.hpp>

namespace {

using Backend = gsq::Host<float>;
using Quantizer = gsq::Quantizer<gsq::Int<2>>;

using gsq::bench::median;
using gsq::bench::seconds_of;

/// A layer with the right shape and statistics; H from a random Gram matrix is enough for timing.
struct Problem {
  gsq::Matrix<float> weight;
  gsq::Matrix<float> hessian;
};

Problem make_problem(long size) {
  const gsq::SyntheticLayer layer = gsq::make_synthetic_layer({size, size, 256, 5});
  Problem problem{layer.weight, gsq::Matrix<float>(size, size)};
  Backend::gemm(true, size, size, layer.inputs.rows, 1.0f / layer.inputs.rows, layer.inputs.data(),
                layer.inputs.data(), problem.hessian.data());
  for (long i = 0; i < size; ++i) problem.hessian(i, i) += 1e-2f;  // full rank
  return problem;
}

nlohmann::json bench_size(long size, int steps) {
  const Problem problem = make_problem(size);
  gsq::HessianObjective<> objective(problem.weight, problem.hessian);
  Quantizer quantizer(gsq::round_to_nearest(problem.weight, gsq::grid_spec<gsq::Int<2>>(), 128));
  const std::size_t count = quantizer.size();
  std::vector<float> weight(count), weight_grad(count), logit_grad(quantizer.logits().size()),
      parameter_grad(quantizer.parameters().size()), product(count);

  std::vector<double> floor, forward, objective_time, backward;
  for (int i = 0; i < steps; ++i) {
    const auto point = Quantizer::relaxation_at(gsq::AnnealConfig{}, i, steps, 0);
    floor.push_back(seconds_of([&] { Backend::gemm(false, size, size, size, 1.0f, problem.weight.data(), problem.hessian.data(), product.data()); }));
    forward.push_back(seconds_of([&] { quantizer.forward(point, weight.data()); }));
    objective_time.push_back(seconds_of([&] { objective.value_and_gradient(weight.data(), weight_grad.data()); }));
    backward.push_back(seconds_of([&] { quantizer.backward(point, weight_grad.data(), logit_grad.data(), parameter_grad.data()); }));
  }
  gsq::TrainConfig config;
  config.steps = steps;
  const gsq::TrainReport report = gsq::train(quantizer, objective, config);
  const double step = report.median_step_seconds();
  const double update = std::max(0.0, step - median(forward) - median(objective_time) - median(backward));
  return {{"size", size},
          {"step_seconds", step},
          {"matmul_seconds", median(floor)},
          {"step_over_matmul", step / median(floor)},
          {"forward_seconds", median(forward)},
          {"objective_seconds", median(objective_time)},
          {"backward_seconds", median(backward)},
          {"update_seconds", update},
          {"matmul_share", median(floor) / step}};
}

std::vector<long> parse_sizes(const std::string& text) {
  std::vector<long> sizes;
  std::stringstream stream(text);
  for (std::string item; std::getline(stream, item, ',');) sizes.push_back(std::stol(item));
  return sizes;
}

}  // namespace

int main(int argc, char** argv) {
  std::string sizes = "1024,4096", json_path;
  int steps = 9, threads = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--sizes") sizes = value;
    else if (flag == "--steps") steps = std::stoi(value);
    else if (flag == "--threads") threads = std::stoi(value);
    else if (flag == "--json") json_path = value;
    else { std::fprintf(stderr, "usage: step_bench [--sizes 1024,4096] [--steps 9] [--threads 2] [--json FILE]\n"); return 2; }
  }
  gsq::set_host_threads(threads);
  nlohmann::json results = nlohmann::json::array();
  std::printf("GSQ step, int2 g128, Lion, %d threads, median of %d steps\n", threads, steps);
  std::printf("%6s %10s %10s %8s %9s %9s %9s %9s\n", "size", "step s", "matmul s", "ratio", "forward", "objective", "backward", "update");
  for (long size : parse_sizes(sizes)) {
    const nlohmann::json r = bench_size(size, steps);
    std::printf("%6ld %10.4f %10.4f %8.2f %9.4f %9.4f %9.4f %9.4f\n", size, r["step_seconds"].get<double>(),
                r["matmul_seconds"].get<double>(), r["step_over_matmul"].get<double>(), r["forward_seconds"].get<double>(),
                r["objective_seconds"].get<double>(), r["backward_seconds"].get<double>(), r["update_seconds"].get<double>());
    results.push_back(r);
  }
  if (!json_path.empty()) std::ofstream(json_path) << results.dump(2) << "\n";
}
