// Tests of gsq/detail/floating_point.hpp and its use by the host backend: the backend's work
// flushes subnormal numbers to zero on every thread, the caller's floating-point mode is left as
// it was, and late in the anneal a step's buffers hold no subnormal numbers.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include <gsq/gsq.hpp>

namespace {

using Backend = gsq::Host<float>;

/// A product whose exact value (1e-40) is subnormal in float, computed where the compiler cannot
/// fold it: nonzero under the default mode, zero with subnormals flushed.
float subnormal_product() {
  volatile float small = 1e-20f, tiny = 1e-20f;
  return small * tiny;
}

struct TinyProducts {
  const float* left;
  const float* right;
  float* out;
  void operator()(std::size_t i) const { out[i] = left[i] * right[i]; }
};

bool holds_subnormal(const std::vector<float>& values) {
  for (float v : values)
    if (std::fpclassify(v) == FP_SUBNORMAL) return true;
  return false;
}

}  // namespace

TEST_CASE("the host backend's element-wise work flushes subnormals on every thread and restores the caller's mode",
          "[floating_point][backend]") {
  REQUIRE(subnormal_product() != 0.0f);  // the caller computes with subnormals
  const std::size_t count = 64 * 1024;   // many chunks: the worker threads take some
  const std::vector<float> left(count, 1e-20f), right(count, 1e-20f);
  std::vector<float> out(count, 1.0f);
  for (int threads : {1, 2}) {
    gsq::set_host_threads(threads);
    Backend::for_each_index(count, TinyProducts{left.data(), right.data(), out.data()});
    for (std::size_t i = 0; i < count; i += 997) REQUIRE(out[i] == 0.0f);
    REQUIRE(subnormal_product() != 0.0f);  // and still does afterwards
  }
  {
    const gsq::detail::SubnormalsFlushed flushed;
    REQUIRE(subnormal_product() == 0.0f);
  }
  REQUIRE(subnormal_product() != 0.0f);
}

TEST_CASE("the host backend's products flush subnormals and restore the caller's mode", "[floating_point][backend]") {
  const long size = 64;
  const std::vector<float> a(size * size, 1e-20f), b(size * size, 1e-21f);
  std::vector<float> c(size * size, 1.0f);
  Backend::gemm(false, size, size, size, 1.0f, a.data(), b.data(), c.data());  // exact entries: 6.4e-40
  REQUIRE(std::all_of(c.begin(), c.end(), [](float v) { return v == 0.0f; }));
  REQUIRE(Backend::dot(a.data(), b.data(), a.size()) > 0);  // in double: 4096e-41 is normal
  REQUIRE(subnormal_product() != 0.0f);
}

TEST_CASE("late in the anneal the logits and their gradient hold no subnormal numbers", "[floating_point][train]") {
  const gsq::SyntheticLayer layer = gsq::make_synthetic_layer({128, 256, 512, 3});
  gsq::HessianObjective<> objective = gsq::HessianObjective<>::from_inputs(layer.weight, layer.inputs);
  gsq::Quantizer<gsq::Int<3>> quantizer(gsq::round_to_nearest(layer.weight, gsq::grid_spec<gsq::Int<3>>(), 128));
  gsq::TrainConfig config;
  config.steps = 40;  // the whole anneal: tau 2 -> 0.05, kappa 100 -> 500
  gsq::train(quantizer, objective, config);
  // One more backward at the last point of the anneal: train fuses the logits' update into the
  // backward pass and so leaves no gradient behind.
  const auto point = decltype(quantizer)::relaxation_at(config.anneal, config.steps - 1, config.steps, config.seed);
  std::vector<float> weight(quantizer.size()), weight_grad(quantizer.size()), parameter_grad(quantizer.parameters().size());
  quantizer.forward(point, weight.data());
  CHECK_FALSE(holds_subnormal(quantizer.logit_gradient()));  // the probabilities
  objective.value_and_gradient(weight.data(), weight_grad.data());
  quantizer.backward(point, weight_grad.data(), parameter_grad.data());
  const std::vector<float>& gradient = quantizer.logit_gradient();
  // At tau 0.05 most candidates' probabilities, and so their gradients, are below FLT_MIN.
  const auto zeros = std::count(gradient.begin(), gradient.end(), 0.0f);
  CHECK(zeros > static_cast<long>(gradient.size() / 4));
  CHECK_FALSE(holds_subnormal(gradient));
  CHECK_FALSE(holds_subnormal(quantizer.logits()));
}
