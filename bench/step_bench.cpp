// Times GSQ optimizer steps over a whole annealed run (temperature 2 -> 0.05, logit scale
// 100 -> 500) against their floor, the matrix products a step cannot avoid:
//   - the Hessian objective on a size x size layer: floor = one size x size x size product;
//   - the SwiGLU block objective on SmolLM2-135M's MLP shapes (gate/up 1536 x 576, down
//     576 x 1536; --block-shape 7168x2048 for a DeepSeek-V3 expert) with quantize_model's default
//     128-token batches (--block-tokens): floor = the block's seven products of a step;
//   - the layer-output objective (quantize_model's default) on one decoder layer of SmolLM2-135M's
//     shape, one 256-token sequence a step: floor = its linears' 18 products and attention's.
// Each runs the code quantize_model runs (gsq::train_jointly on the objective it builds), with its
// default batch, so the bench and the driver cannot drift apart.
// For each it reports the median step in the first, middle and last eighth of the run (the late
// anneal is where subnormal softmax tails used to cost 3-4x), the median of all steps, and the
// ratio of that median to the floor, and the per-weight cost beyond the floor (the element-wise
// work). Floors are medians of repeated products in the same run, timed before, between the
// steps throughout, and after it.
//
//   build/step_bench [--grids int2,int3] [--sizes 1024,2048,4096] [--steps 64] [--block-steps 128]
//                    [--block-shape 576x1536] [--block-tokens 128] [--layer-steps 64] [--threads 2]
//                    [--json FILE]
#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "random_checkpoint.hpp"
#include "timing.hpp"
#include <gsq/common/array_of.hpp>
#include <gsq/model/llama.hpp>
#include <gsq/objective/decoder_layer.hpp>
#include <gsq/policy/dispatch.hpp>
#include <gsq/gsq.hpp>

namespace {

using Backend = gsq::Host<float>;
using gsq::bench::median;
using gsq::bench::seconds_of;

struct Settings {
  std::vector<std::string> grids{"int2", "int3"};
  std::vector<long> sizes{1024, 2048, 4096};
  long steps = 64, block_steps = 128, layer_steps = 64;
  long block_hidden = 576, block_intermediate = 1536;
  long block_tokens = 128;  // quantize_model's batch: 8192 calibration tokens in 64 batches
  int threads = 2;
  std::string json_path;
};

/// The floor: the median of timings of `work` taken before the run, between its steps (every
/// sixteenth of it, outside the steps' own timing) and after it, so a machine that changes pace
/// during the run moves the floor as it moves the steps. `run(on_step)` trains with the callback.
template <class Run>
auto with_floor(const std::function<void()>& work, long steps, const Run& run) {
  constexpr int repeats_each_side = 4, timings_during = 16;
  std::vector<double> times;
  for (int i = 0; i < repeats_each_side; ++i) times.push_back(seconds_of(work));
  const long every = std::max(1L, steps / timings_during);
  const gsq::TrainReport report = run([&](const gsq::StepReport& step) {
    if (step.step % every == every / 2) times.push_back(seconds_of(work));
  });
  for (int i = 0; i < repeats_each_side; ++i) times.push_back(seconds_of(work));
  return std::make_pair(median(times), report);
}

/// Medians of the steps in the first, middle and last eighth of a run, of all steps, and the
/// ratios the targets are stated in.
nlohmann::json summarise(const gsq::TrainReport& report, double floor, double weights) {
  const std::vector<double>& steps = report.step_seconds;
  const std::size_t eighth = std::max<std::size_t>(1, steps.size() / 8), middle = steps.size() / 2 - eighth / 2;
  const auto window = [&](std::size_t first) {
    return median(std::vector<double>(steps.begin() + static_cast<long>(first), steps.begin() + static_cast<long>(first + eighth)));
  };
  const double start = window(0), end = window(steps.size() - eighth), all = median(steps);
  return {{"floor_seconds", floor},   {"start_seconds", start},       {"middle_seconds", window(middle)},
          {"end_seconds", end},       {"median_seconds", all},        {"median_over_floor", all / floor},
          {"end_over_start", end / start}, {"ns_per_weight_beyond_floor", (all - floor) / weights * 1e9},
          {"steps", steps.size()},   {"final_loss", report.losses.back()}};
}

gsq::TrainConfig annealed_run(long steps) {
  gsq::TrainConfig config;
  config.steps = steps;
  return config;
}

template <class Grid, class Grouping>
gsq::Quantizer<Grid, Grouping> rtn_start(const gsq::Matrix<float>& weight) {
  return gsq::Quantizer<Grid, Grouping>(
      gsq::round_to_nearest(weight, gsq::grid_spec<Grid>(), Grouping::group_width(static_cast<int>(weight.cols))));
}

/// The Hessian objective on a size x size synthetic layer, groups of 128.
template <class Grid>
nlohmann::json bench_layer(long size, long steps) {
  const gsq::SyntheticLayer layer = gsq::make_synthetic_layer({size, size, 512, 5});
  gsq::Matrix<float> hessian(size, size);
  Backend::gemm(true, size, size, layer.inputs.rows, 1.0f / layer.inputs.rows, layer.inputs.data(), layer.inputs.data(),
                hessian.data());
  for (long i = 0; i < size; ++i) hessian(i, i) += 1e-2f;  // full rank
  gsq::HessianObjective<> objective(layer.weight, hessian);
  auto quantizer = rtn_start<Grid, gsq::GroupSize<128>>(layer.weight);

  std::vector<float> product(layer.weight.size());
  const auto [floor, report] = with_floor(
      [&] { Backend::gemm(false, size, size, size, 1.0f, layer.weight.data(), hessian.data(), product.data()); }, steps,
      [&](const auto& on_step) { return gsq::train(quantizer, objective, annealed_run(steps), on_step); });
  nlohmann::json result = summarise(report, floor, double(size) * size);
  result.update({{"objective", "hessian"}, {"grid", Grid::name}, {"shape", std::to_string(size) + "x" + std::to_string(size)}});
  return result;
}

/// The SwiGLU block objective on an MLP of `hidden` x `intermediate` (SmolLM2-135M's: 576 x
/// 1536), groups of 64 (128 does not divide 576).
template <class Grid>
nlohmann::json bench_block(long steps, long hidden, long intermediate, long batch) {
  constexpr long batches = 8;
  const gsq::SyntheticLayer gate = gsq::make_synthetic_layer({intermediate, hidden, batch * batches, 11});
  const gsq::SyntheticLayer up = gsq::make_synthetic_layer({intermediate, hidden, 1, 12});
  const gsq::SyntheticLayer down = gsq::make_synthetic_layer({hidden, intermediate, 1, 13});
  gsq::SwiGluBlockObjective<> objective(gate.weight, up.weight, down.weight, gate.inputs, batch);
  using Grouping = gsq::GroupSize<64>;
  auto gate_q = rtn_start<Grid, Grouping>(gate.weight), up_q = rtn_start<Grid, Grouping>(up.weight),
       down_q = rtn_start<Grid, Grouping>(down.weight);

  // The products of one step (SwiGluBlockObjective::value_and_gradient): three forward
  // (A = X Wg^T, U = X Wu^T, Y = M Wd^T) and four backward (dWd = dY^T M, dM = dY Wd,
  // dWg = dA^T X, dWu = dU^T X).
  std::vector<float> a(batch * intermediate), u(a.size()), m(a.size()), y(batch * hidden), grad(intermediate * hidden);
  const float* x = gate.inputs.data();
  const auto products = [&] {
    Backend::gemm(false, batch, intermediate, hidden, 1.0f, x, gate.weight.data(), a.data(), true);
    Backend::gemm(false, batch, intermediate, hidden, 1.0f, x, up.weight.data(), u.data(), true);
    Backend::gemm(false, batch, hidden, intermediate, 1.0f, m.data(), down.weight.data(), y.data(), true);
    Backend::gemm(true, hidden, intermediate, batch, 1.0f, y.data(), m.data(), grad.data());
    Backend::gemm(false, batch, intermediate, hidden, 1.0f, y.data(), down.weight.data(), m.data());
    Backend::gemm(true, intermediate, hidden, batch, 1.0f, a.data(), x, grad.data());
    Backend::gemm(true, intermediate, hidden, batch, 1.0f, u.data(), x, grad.data());
  };
  const auto [floor, report] = with_floor(products, steps, [&](const auto& on_step) {
    return gsq::train_jointly(objective, annealed_run(steps), on_step, gate_q, up_q, down_q);
  });
  nlohmann::json result = summarise(report, floor, 3.0 * hidden * intermediate);
  result.update({{"objective", "swiglu block"},
                 {"grid", Grid::name},
                 {"shape", std::to_string(hidden) + "x" + std::to_string(intermediate) + " mlp, " + std::to_string(batch) + " tokens"}});
  return result;
}

/// The layer-output objective (quantize_model's default for dense models) on one decoder layer of
/// SmolLM2-135M's shape, as the driver runs it by default: 8192 calibration tokens in 64
/// batches, so one 256-token sequence a step; the seven linears in groups of 64, RTN start. Floor:
/// the step's products: the linears' 18 (7 forward, 7 weight gradients, the input gradients of o,
/// gate, up and down) and attention's six per head (S = Q K^T, P V; dP, dQ, dK, dV).
template <class Grid>
nlohmann::json bench_layer_output(long steps) {
  constexpr long length = 256, sequences = 32;
  gsq::bench::RandomModelShape shape;
  shape.layers = 1;
  shape.vocab = 256;
  const std::filesystem::path directory =
      std::filesystem::temp_directory_path() / ("gsq-step-bench-" + std::to_string(::getpid()));
  gsq::bench::write_random_model(shape, directory.string());
  const gsq::LlamaModel model = gsq::LlamaModel::load(directory.string());  // every weight in memory
  std::filesystem::remove_all(directory);

  std::vector<gsq::TokenId> tokens(static_cast<std::size_t>(sequences * length));
  for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<gsq::TokenId>((i * 2654435761u >> 13) & 255);
  const gsq::HiddenStates inputs = model.embed(tokens, length);
  gsq::DecoderLayerObjective<> objective(model, 0, inputs, model.decoder_layer(0, inputs).values, 1);
  using Objective = gsq::DecoderLayerObjective<>;
  using Grouping = gsq::GroupSize<64>;
  std::array<gsq::Matrix<float>, Objective::linear_count> weights;
  for (std::size_t i = 0; i < weights.size(); ++i) weights[i] = model.linear_weight(0, Objective::linear_names()[i]);
  auto quantizers = gsq::array_of<Objective::linear_count>([&](std::size_t i) { return rtn_start<Grid, Grouping>(weights[i]); });

  const long hidden = shape.hidden, head_dim = hidden / shape.heads;
  std::vector<float> x(length * shape.intermediate), y(x.size()), grad(static_cast<std::size_t>(hidden * shape.intermediate));
  const auto products = [&] {
    for (std::size_t i = 0; i < weights.size(); ++i) {
      const long rows = weights[i].rows, cols = weights[i].cols;
      Backend::gemm(false, length, rows, cols, 1.0f, x.data(), weights[i].data(), y.data(), true);
      Backend::gemm(true, rows, cols, length, 1.0f, y.data(), x.data(), grad.data());
      if (i >= Objective::out) Backend::gemm(false, length, cols, rows, 1.0f, y.data(), weights[i].data(), x.data());
    }
#pragma omp parallel
    {
      std::vector<float> a(length * length), b(length * head_dim), c(b.size());
#pragma omp for schedule(dynamic)
      for (long head = 0; head < shape.heads; ++head) {
        Backend::gemm(true, length, length, head_dim, 1.0f, b.data(), c.data(), a.data());          // S = Q K^T
        Backend::gemm(false, length, head_dim, length, 1.0f, a.data(), b.data(), c.data());         // O = P V
        Backend::gemm(false, length, length, head_dim, 1.0f, b.data(), c.data(), a.data(), true);   // dP = dO V^T
        Backend::gemm(false, length, head_dim, length, 1.0f, a.data(), c.data(), b.data(), true);   // dQ = dS K
        Backend::gemm(true, length, head_dim, length, 1.0f, a.data(), b.data(), c.data(), true);    // dK = dS^T Q
        Backend::gemm(true, length, head_dim, length, 1.0f, a.data(), c.data(), b.data());          // dV = P^T dO
      }
    }
  };
  const auto [floor, report] = with_floor(products, steps, [&](const auto& on_step) {
    return std::apply([&](auto&... each) { return gsq::train_jointly(objective, annealed_run(steps), on_step, each...); },
                      quantizers);
  });
  double parameters = 0;
  for (const gsq::Matrix<float>& weight : weights) parameters += static_cast<double>(weight.size());
  nlohmann::json result = summarise(report, floor, parameters);
  result.update({{"objective", "layer output"}, {"grid", Grid::name}, {"shape", "576x1536 layer, 256 tokens"}});
  return result;
}

// Bad flags and values throw gsq::Error, which main reports in one line with exit status 2, the
// rule of the experiment drivers (experiments/driver.hpp, not included here: it needs Boost's
// program_options, which the benchmarks do not link).
long parse_number(const std::string& flag, const std::string& text) {
  std::size_t end = 0;
  long value = 0;
  try {
    value = std::stol(text, &end);
  } catch (const std::logic_error&) {  // std::invalid_argument, std::out_of_range
    end = 0;
  }
  gsq::require(!text.empty() && end == text.size(), flag + ": '" + text + "' is not a whole number");
  return value;
}

template <class T>
std::vector<T> parse_list(const std::string& text, const std::function<T(const std::string&)>& parse) {
  std::vector<T> items;
  std::stringstream stream(text);
  for (std::string item; std::getline(stream, item, ',');) items.push_back(parse(item));
  return items;
}

constexpr const char* usage =
    "usage: step_bench [--grids int2,int3] [--sizes 1024,2048,4096] [--steps 64] [--block-steps 128] "
    "[--block-shape 576x1536] [--block-tokens 128] [--layer-steps 64] [--threads 2] [--json FILE]\n"
    "  (steps at least 8; block sides multiples of 64; --sizes \"\" and --layer-steps 0 leave those rows out)\n";

void parse_settings(int argc, char** argv, Settings& settings) {
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    gsq::require(flag == "--grids" || flag == "--sizes" || flag == "--steps" || flag == "--block-steps" || flag == "--layer-steps" ||
                     flag == "--block-shape" || flag == "--block-tokens" || flag == "--threads" || flag == "--json",
                 "unknown option '" + flag + "'");
    gsq::require(i + 1 < argc, flag + " needs a value");
    const std::string value = argv[i + 1];
    if (flag == "--grids") {
      settings.grids = parse_list<std::string>(value, [](const std::string& s) { return s; });
      // Checked here, not when the grid's turn comes after the earlier grids' runs.
      for (const std::string& grid : settings.grids) gsq::Choice<gsq::GridPolicies>("--grids", grid).validate();
    } else if (flag == "--sizes") {
      settings.sizes = parse_list<long>(value, [&](const std::string& s) { return parse_number(flag, s); });
      for (long size : settings.sizes) gsq::require(size > 0, "--sizes: sizes must be positive");
    } else if (flag == "--steps") settings.steps = parse_number(flag, value);
    else if (flag == "--block-steps") settings.block_steps = parse_number(flag, value);
    else if (flag == "--layer-steps") settings.layer_steps = parse_number(flag, value);
    else if (flag == "--block-shape") {
      const std::size_t x = value.find('x');
      gsq::require(x != std::string::npos, "--block-shape: '" + value + "' is not HIDDENxINTERMEDIATE");
      settings.block_hidden = parse_number(flag, value.substr(0, x));
      settings.block_intermediate = parse_number(flag, value.substr(x + 1));
    } else if (flag == "--block-tokens") settings.block_tokens = parse_number(flag, value);
    else if (flag == "--threads") settings.threads = static_cast<int>(parse_number(flag, value));
    else settings.json_path = value;
  }
  gsq::require(settings.steps >= 8 && settings.block_steps >= 8, "--steps and --block-steps must be at least 8");
  gsq::require(settings.layer_steps == 0 || settings.layer_steps >= 8, "--layer-steps must be 0 (no layer-output row) or at least 8");
  gsq::require(settings.block_hidden > 0 && settings.block_intermediate > 0 && settings.block_hidden % 64 == 0 &&
                   settings.block_intermediate % 64 == 0,
               "--block-shape: both sides must be positive multiples of 64");
  gsq::require(settings.block_tokens > 0, "--block-tokens must be positive");
  gsq::require(settings.threads >= 1, "--threads must be at least 1");
}

void print_row(const nlohmann::json& r) {
  std::printf("%-12s %-5s %-26s %9.4f %9.4f %9.4f %9.4f %9.4f %8.2f %8.2f %8.2f\n", r["objective"].get<std::string>().c_str(),
              r["grid"].get<std::string>().c_str(), r["shape"].get<std::string>().c_str(), r["floor_seconds"].get<double>(),
              r["start_seconds"].get<double>(), r["middle_seconds"].get<double>(), r["end_seconds"].get<double>(),
              r["median_seconds"].get<double>(), r["median_over_floor"].get<double>(), r["end_over_start"].get<double>(),
              r["ns_per_weight_beyond_floor"].get<double>());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  // --help prints the usage and succeeds, as the experiment drivers' --help does.
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
      std::fputs(usage, stdout);
      return 0;
    }
  Settings settings;
  try {
    parse_settings(argc, argv, settings);
    gsq::set_host_threads(settings.threads);
    std::printf("GSQ steps over an annealed run (tau 2 -> 0.05, kappa 100 -> 500), Lion, RTN start, %d threads;\n"
                "seconds: floor = the products a step cannot avoid; start/middle/end = median step of that eighth "
                "of the run;\nns/wt = (median - floor) per weight\n", settings.threads);
    std::printf("%-12s %-5s %-26s %9s %9s %9s %9s %9s %8s %8s %8s\n", "objective", "grid", "shape", "floor", "start",
                "middle", "end", "median", "med/flr", "end/sta", "ns/wt");
    nlohmann::json results = nlohmann::json::array();
    for (const std::string& name : settings.grids) {
      gsq::Choice<gsq::GridPolicies> grid("--grids", name);
      grid.visit([&](auto tag) {
        using Grid = gsq::type_of<decltype(tag)>;
        for (long size : settings.sizes) {
          results.push_back(bench_layer<Grid>(size, settings.steps));
          print_row(results.back());
        }
        results.push_back(bench_block<Grid>(settings.block_steps, settings.block_hidden, settings.block_intermediate,
                                            settings.block_tokens));
        print_row(results.back());
        if (settings.layer_steps > 0) {
          results.push_back(bench_layer_output<Grid>(settings.layer_steps));
          print_row(results.back());
        }
      });
    }
    if (!settings.json_path.empty()) std::ofstream(settings.json_path) << results.dump(2) << "\n";
  } catch (const gsq::Error& error) {  // bad flags or values: 2, as in experiments/driver.hpp
    std::fprintf(stderr, "step_bench: error: %s\n", error.what());
    return 2;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "step_bench: error: %s\n", error.what());
    return 1;
  }
}
