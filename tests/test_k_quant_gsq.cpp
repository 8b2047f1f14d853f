// GPTQ and GSQ inside llama.cpp's K-quant formats (gsq/init/k_quant_gptq.hpp,
// gsq/core/train_k_quant.hpp, the coded parametrisations of gsq/policy/parametrisation.hpp):
// GPTQ without column coupling is the fit, with coupling it beats it; the coded scale rounds as
// the store does; the relaxation's code gradients against finite differences and its
// straight-through scale gradients against their formula; GSQ's result is a valid tensor whose
// error is the objective's, below its start, the same on any thread count.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <gsq/backend/host.hpp>
#include <gsq/core/train_k_quant.hpp>
#include <gsq/objective/synthetic_layer.hpp>
#include <gsq/init/k_quant_fit.hpp>
#include <gsq/init/k_quant_gptq.hpp>
#include <gsq/objective/hessian.hpp>

#include "random_matrix.hpp"

namespace {


/// A small LLM-like layer: heavy-tailed weights, correlated inputs with outlier channels.
gsq::SyntheticLayer coupled_layer(long rows) {
  gsq::SyntheticLayerConfig config;
  config.rows = rows;
  config.cols = 512;
  config.tokens = 1024;
  return gsq::make_synthetic_layer(config);
}

std::vector<float> diagonal_of(const gsq::Matrix<float>& hessian) {
  std::vector<float> diagonal;
  for (long j = 0; j < hessian.rows; ++j) diagonal.push_back(hessian(j, j));
  return diagonal;
}

/// GSQ's K-quant settings with the full 640 steps: a short anneal scrambles Q4_K's codes early
/// and does not recover them (120 steps: 18x the start's error on the layer below).
const gsq::TrainConfig gsq_config = gsq::k_quant_train_config();

}  // namespace

TEST_CASE("GPTQ in a K-quant format: without coupled columns it is the importance-weighted fit; with them it beats it",
          "[k_quant][gptq]") {
  const gsq::Matrix<float> weight = gsq::testing::gaussian_matrix(8, 512, 3);
  gsq::Matrix<float> diagonal_hessian(512, 512);
  std::vector<float> importance;
  for (long j = 0; j < 512; ++j) importance.push_back(diagonal_hessian(j, j) = 0.5f + static_cast<float>(j % 7));
  const gsq::SyntheticLayer layer = coupled_layer(32);
  gsq::HessianObjective<> objective = gsq::HessianObjective<>::from_inputs(layer.weight, layer.inputs);
  const gsq::Matrix<float> hessian = objective.hessian();
  for (const gsq::KQuantFormat* format : gsq::k_quant_formats()) {
    INFO(format->name);
    // A diagonal H spreads no error: every super-block is fitted to the weights as they are.
    const gsq::KQuantTensor swept = gsq::gptq_k_quant(weight, diagonal_hessian, *format);
    const gsq::KQuantTensor fitted = gsq::fit_k_quant(weight, importance, *format);
    CHECK(swept.codes == fitted.codes);
    CHECK(swept.scale_codes == fitted.scale_codes);
    CHECK(swept.min_codes == fitted.min_codes);
    CHECK(swept.d == fitted.d);
    CHECK(swept.dmin == fitted.dmin);

    const double fit_error = objective.relative_error(gsq::fit_k_quant(layer.weight, diagonal_of(hessian), *format).dequantize());
    const double gptq_error = objective.relative_error(gsq::gptq_k_quant(layer.weight, hessian, *format).dequantize());
    CHECK(gptq_error < 0.8 * fit_error);
  }
}

TEST_CASE("GPTQ in a K-quant format: each format of more bits holds the layer with less error", "[k_quant][gptq]") {
  const gsq::SyntheticLayer layer = coupled_layer(32);
  gsq::HessianObjective<> objective = gsq::HessianObjective<>::from_inputs(layer.weight, layer.inputs);
  const gsq::Matrix<float> hessian = objective.hessian();
  std::vector<double> errors;
  std::string report;
  for (const gsq::KQuantFormat* format : {&gsq::q2_k(), &gsq::q3_k(), &gsq::q4_k(), &gsq::q5_k(), &gsq::q6_k()}) {
    errors.push_back(objective.relative_error(gsq::gptq_k_quant(layer.weight, hessian, *format).dequantize()));
    report += std::string(format->name) + " " + std::to_string(errors.back()) + " ";
  }
  INFO(report);
  for (std::size_t i = 1; i < errors.size(); ++i) CHECK(errors[i] < 0.5 * errors[i - 1]);
  // The legacy blocks with a min: an fp16 scale and min per 32 against Q4_K's and Q5_K's coded ones.
  const double q4_1 = objective.relative_error(gsq::gptq_k_quant(layer.weight, hessian, gsq::q4_1()).dequantize()),
               q5_1 = objective.relative_error(gsq::gptq_k_quant(layer.weight, hessian, gsq::q5_1()).dequantize());
  INFO("q4_1 " << q4_1 << " q5_1 " << q5_1);
  CHECK(q4_1 < errors[2]);
  CHECK(q5_1 < errors[3]);
  CHECK(q5_1 < 0.5 * q4_1);
}

TEST_CASE("GPTQ in a K-quant format refuses rows that are not whole super-blocks", "[k_quant][gptq]") {
  const gsq::Matrix<float> weight = gsq::testing::gaussian_matrix(4, 384, 1);
  gsq::Matrix<float> hessian(384, 384);
  for (long j = 0; j < 384; ++j) hessian(j, j) = 1;
  CHECK_THROWS_WITH(gsq::gptq_k_quant(weight, hessian, gsq::q2_k()), Catch::Contains("384 columns"));
}

TEST_CASE("a coded scale rounds half to even, clamps to its codes, and is 0 under a zero factor", "[k_quant][parametrisation]") {
  using gsq::detail::coded;
  CHECK(coded<0, 15>(0.875, 0.25) == 4);  // 3.5: to even
  CHECK(coded<0, 15>(0.625, 0.25) == 2);  // 2.5: to even
  CHECK(coded<0, 15>(0.65, 0.25) == 3);
  CHECK(coded<0, 15>(2.0, 0.1) == 15);
  CHECK(coded<0, 15>(-0.3, 0.1) == 0);
  CHECK(coded<-32, 31>(-4.0, 0.1) == -32);
  CHECK(coded<-32, 31>(0.3, -0.1) == -3);
  CHECK(coded<-128, 127>(13.0, 0.1) == 127);  // Q6_K's int8 scale codes
  CHECK(coded<-128, 127>(13.0, -0.1) == -128);
  CHECK(coded<0, 63>(1.0, 0.0) == 0);
}

namespace {

/// A quantizer in Layout's format on a random double layer, its logits spread out, its scales
/// and mins off their codes (so the rounding is at work).
template <class Layout>
struct RelaxedLayer {
  using Quantizer = gsq::Quantizer<typename Layout::Grid, typename Layout::Grouping, gsq::LinearAnneal, gsq::Relaxed,
                                   typename Layout::Parametrisation, gsq::Host<double>>;
  gsq::KQuantTensor start;
  gsq::HessianObjective<gsq::Host<double>> objective;
  Quantizer quantizer;

  explicit RelaxedLayer(const gsq::Matrix<double>& inputs)
      : start(gsq::fit_k_quant(gsq::testing::gaussian_matrix(2, 256, 7), {}, Layout::format())),
        objective(gsq::HessianObjective<gsq::Host<double>>::from_inputs(
            gsq::testing::gaussian_matrix(2, 256, 8).template cast<double>(), inputs)),
        quantizer(start.rows, start.cols, start.codes, gsq::detail::coded_parameters(start)) {
    std::mt19937 generator(5);
    std::uniform_real_distribution<double> logit(-1.0, 1.0), nudge(-0.3, 0.3);
    for (double& a : quantizer.logits()) a = logit(generator);
    const int per = Layout::Parametrisation::parameter_count;
    for (std::size_t i = 0; i < quantizer.parameters().size(); i += per) {
      const double d = quantizer.parameters()[i + per / 2];
      quantizer.parameters()[i] += nudge(generator) * d;
      if (per == 4) quantizer.parameters()[i + 1] += nudge(generator) * quantizer.parameters()[i + 3];
    }
  }

  double loss(const gsq::RelaxationPoint<double>& at) {
    std::vector<double> weight(quantizer.size()), gradient(quantizer.size());
    quantizer.forward(at, weight.data());
    return objective.value_and_gradient(weight.data(), gradient.data());
  }
};

template <class Layout>
void check_gradients() {
  gsq::Matrix<double> inputs(300, 256);
  std::mt19937 generator(4);
  std::normal_distribution<double> normal;
  for (long t = 0; t < inputs.rows; ++t) {
    const double shared = normal(generator);
    for (long c = 0; c < inputs.cols; ++c) inputs(t, c) = normal(generator) + 0.5 * shared;
  }
  RelaxedLayer<Layout> layer(inputs);
  auto& quantizer = layer.quantizer;
  const gsq::RelaxationPoint<double> at{1.0, 3.0, 42, 5};
  std::vector<double> weight(quantizer.size()), weight_grad(quantizer.size()), parameter_grad(quantizer.parameters().size());
  quantizer.forward(at, weight.data());
  layer.objective.value_and_gradient(weight.data(), weight_grad.data());
  quantizer.backward(at, weight_grad.data(), parameter_grad.data());
  const std::vector<double> logit_grad = quantizer.logit_gradient();

  // The codes' gradient: central differences of the loss, on a spread of logits.
  for (std::size_t i = 0; i < logit_grad.size(); i += logit_grad.size() / 37) {
    const double saved = quantizer.logits()[i], step = 1e-6;
    quantizer.logits()[i] = saved + step;
    const double plus = layer.loss(at);
    quantizer.logits()[i] = saved - step;
    const double minus = layer.loss(at);
    quantizer.logits()[i] = saved;
    CHECK(logit_grad[i] == Approx((plus - minus) / (2 * step)).margin(1e-9).epsilon(1e-5));
  }

  // The scales' gradient passes straight through the rounding: dL/ds = sum g q, dL/dm = -sum g
  // over the sub-block, with q the forward's soft code (w - w(0)) / scale; none for d, dmin.
  const int per = Layout::Parametrisation::parameter_count, n = Layout::format().sub_block;
  for (std::size_t sub = 0; sub < parameter_grad.size() / per; ++sub) {
    const double* p = &quantizer.parameters()[sub * per];
    double scale_grad = 0, min_grad = 0;
    for (int i = 0; i < n; ++i) {
      const std::size_t e = sub * n + i;
      using P = typename Layout::Parametrisation;
      scale_grad += weight_grad[e] * (weight[e] - P::weight(0.0, p)) / P::scale(p);
      min_grad -= weight_grad[e];
    }
    CHECK(parameter_grad[sub * per] == Approx(scale_grad).margin(1e-12));
    CHECK(parameter_grad[sub * per + per / 2] == 0);  // d
    if (per == 4) {
      CHECK(parameter_grad[sub * per + 1] == Approx(min_grad).margin(1e-12));
      CHECK(parameter_grad[sub * per + 3] == 0);  // dmin
    }
  }
}

}  // namespace

TEST_CASE("the coded parametrisations: code gradients match finite differences, scale gradients pass straight through",
          "[k_quant][parametrisation]") {
  SECTION("q2_k") { check_gradients<gsq::Q2K>(); }
  SECTION("q3_k") { check_gradients<gsq::Q3K>(); }
  SECTION("q4_k") { check_gradients<gsq::Q4K>(); }
  SECTION("q5_k") { check_gradients<gsq::Q5K>(); }
  SECTION("q6_k") { check_gradients<gsq::Q6K>(); }
  SECTION("q4_1") { check_gradients<gsq::Q41>(); }
  SECTION("q5_1") { check_gradients<gsq::Q51>(); }
}

TEST_CASE("the coded forward pass at one-hot codes is the K-quant tensor ggml dequantizes", "[k_quant][parametrisation]") {
  const gsq::KQuantTensor start = gsq::fit_k_quant(gsq::testing::gaussian_matrix(2, 256, 9), {}, gsq::q2_k());
  gsq::Quantizer<gsq::Unsigned<2>, gsq::GroupSize<16>, gsq::LinearAnneal, gsq::Deterministic, gsq::CodedScaleAndMin<0, 15>>
      quantizer(start.rows, start.cols, start.codes, gsq::detail::coded_parameters(start));
  for (std::size_t e = 0; e < start.codes.size(); ++e)  // each weight's logits: its code far ahead
    for (int k = 0; k < 4; ++k) quantizer.logits()[gsq::CandidateTiles<4>::index(k, e)] = k == start.codes[e] ? 1.0f : -1.0f;
  std::vector<float> weight(quantizer.size());
  quantizer.forward({0.01f, 100.0f, 0, 0}, weight.data());
  CHECK(weight == start.dequantize().values);
  CHECK(quantizer.codes() == start.codes);
}

TEST_CASE("GSQ in a K-quant format: a valid tensor on the start's factors, below its start, the same on any thread count",
          "[k_quant][gsq]") {
  const gsq::SyntheticLayer layer = coupled_layer(16);
  gsq::HessianObjective<> objective = gsq::HessianObjective<>::from_inputs(layer.weight, layer.inputs);
  const gsq::Matrix<float> hessian = objective.hessian();
  const auto check = [&](auto layout) {
    using Layout = decltype(layout);
    INFO(Layout::name);
    const gsq::KQuantTensor start = gsq::fit_k_quant(layer.weight, diagonal_of(hessian), Layout::format());
    gsq::set_host_threads(1);
    const gsq::KQuantTraining one = gsq::train_k_quant<Layout>(start, objective, gsq_config);
    gsq::set_host_threads(2);
    const gsq::KQuantTraining two = gsq::train_k_quant<Layout>(start, objective, gsq_config);
    gsq::set_host_threads(0);
    CHECK(one.result.codes == two.result.codes);
    CHECK(one.report.losses == two.report.losses);
    CHECK_NOTHROW(one.result.validate());
    CHECK(one.result.d == start.d);  // the factors stay the start's
    CHECK(one.result.dmin == start.dmin);
    CHECK(one.result.scale_codes == start.scale_codes);  // the default rate of the scales is 0
    CHECK(one.result.codes != start.codes);
    CHECK(objective.relative_error(one.result.dequantize()) < objective.relative_error(start.dequantize()));
  };
  check(gsq::Q2K{});
  check(gsq::Q3K{});
  check(gsq::Q4K{});
  check(gsq::Q5K{});
  check(gsq::Q6K{});
}

TEST_CASE("GSQ in a K-quant format learns the scale codes when their rate is positive, and refuses a start in another format",
          "[k_quant][gsq]") {
  const gsq::SyntheticLayer layer = coupled_layer(16);
  gsq::HessianObjective<> objective = gsq::HessianObjective<>::from_inputs(layer.weight, layer.inputs);
  const gsq::KQuantTensor start = gsq::fit_k_quant(layer.weight, diagonal_of(objective.hessian()), gsq::q2_k());
  gsq::TrainConfig config = gsq_config;
  config.steps = 120;
  config.scales.learning_rate = 1e-4;
  const gsq::KQuantTraining run = gsq::train_k_quant<gsq::Q2K>(start, objective, config);
  CHECK(run.result.scale_codes != start.scale_codes);
  CHECK(run.result.min_codes != start.min_codes);
  CHECK_NOTHROW(run.result.validate());
  CHECK_THROWS_WITH(gsq::train_k_quant<gsq::Q4K>(start, objective, config), Catch::Contains("q2_k, not q4_k"));
}
