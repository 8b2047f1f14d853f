// Quantizes a small synthetic layer with the installed gsq; exits non-zero unless GSQ beats RTN.
#include <cstdio>

#include <gsq/gsq.hpp>

int main() {
  const gsq::SyntheticLayer layer = gsq::make_synthetic_layer({64, 256, 512, 3});
  auto objective = gsq::HessianObjective<>::from_inputs(layer.weight, layer.inputs);
  const gsq::QuantizedTensor start = gsq::round_to_nearest(layer.weight, gsq::grid_spec<gsq::Int<2>>(), 128);
  gsq::Quantizer<gsq::Int<2>> quantizer(start);
  gsq::TrainConfig config;
  config.steps = 150;
  gsq::train(quantizer, objective, config);
  const double rtn = objective.relative_error(start.dequantize());
  const double gsq_error = objective.relative_error(quantizer.result().dequantize());
  std::printf("consumer: RTN %.4f, GSQ %.4f\n", rtn, gsq_error);
  // The safetensors writer and reader come with the package too (nlohmann_json is found for us).
  gsq::SafetensorsWriter writer;
  writer.add("codes", quantizer.result().dequantize(), gsq::Dtype::BF16);
  const std::vector<std::uint8_t> file = writer.to_bytes();
  if (gsq::SafetensorsFile::from_bytes(file.data(), file.size()).matrix("codes").rows != 64) return 1;
  return gsq_error < rtn ? 0 : 1;
}
