// Composes a quantizer type from policies and runs it on one layer: ternary codes, groups of
// 64 columns, cosine annealing, the straight-through estimator, trained with Adam.
// Built and run by the test suite (docs_example); see docs/policies.md.
#include <cstdio>

#include <gsq/gsq.hpp>

int main() {
  using Quantizer = gsq::Quantizer<gsq::Ternary, gsq::GroupSize<64>, gsq::CosineAnneal, gsq::StraightThrough>;

  const gsq::SyntheticLayer layer = gsq::make_synthetic_layer({128, 256, 1024, /*seed=*/7});
  auto objective = gsq::HessianObjective<>::from_inputs(layer.weight, layer.inputs);
  const gsq::QuantizedTensor start = gsq::round_to_nearest(layer.weight, gsq::grid_spec<gsq::Ternary>(), 64);

  Quantizer quantizer(start);
  gsq::TrainConfig config;  // the reference's defaults, then what this experiment changes
  config.steps = 300;
  config.anneal.tau_end = 0.1;
  config.logits.learning_rate = 5e-4;
  config.scales.learning_rate = 5e-5;
  gsq::train<gsq::Adam>(quantizer, objective, config);

  const gsq::QuantizedTensor result = quantizer.result();
  const double rtn = objective.relative_error(start.dequantize());
  const double gsq_error = objective.relative_error(result.dequantize());
  std::printf("ternary g64: RTN %.4f -> GSQ %.4f at %.3f bits per parameter\n", rtn, gsq_error,
              result.bits_per_parameter());
  return gsq_error < rtn ? 0 : 1;
}
