// The SwiGLU block objective: its gradients against central finite differences (double), its
// value against a direct computation, and joint GSQ training of gate/up/down below RTN.
#include <catch2/catch.hpp>

#include <cmath>

#include <gsq/gsq.hpp>

namespace {

using Block = gsq::SwiGluBlockObjective<gsq::Host<double>>;

gsq::Matrix<double> random_matrix(long rows, long cols, std::uint64_t seed, double scale) {
  gsq::Matrix<double> m(rows, cols);
  for (std::size_t i = 0; i < m.size(); ++i) m.values[i] = scale * gsq::detail::standard_normal(seed, 0, i);
  return m;
}

/// The block's relative error computed directly, one token at a time.
double direct_relative_error(const gsq::Matrix<double>& g, const gsq::Matrix<double>& u, const gsq::Matrix<double>& d,
                             const gsq::Matrix<double>& g0, const gsq::Matrix<double>& u0, const gsq::Matrix<double>& d0,
                             const gsq::Matrix<double>& x) {
  const auto output = [&](const gsq::Matrix<double>& gw, const gsq::Matrix<double>& uw, const gsq::Matrix<double>& dw,
                          long t, long o) {
    double y = 0;
    for (long i = 0; i < gw.rows; ++i) {
      double a = 0, b = 0;
      for (long h = 0; h < x.cols; ++h) a += gw(i, h) * x(t, h), b += uw(i, h) * x(t, h);
      y += dw(o, i) * a / (1 + std::exp(-a)) * b;
    }
    return y;
  };
  double error = 0, energy = 0;
  for (long t = 0; t < x.rows; ++t)
    for (long o = 0; o < d.rows; ++o) {
      const double reference = output(g0, u0, d0, t, o);
      error += std::pow(output(g, u, d, t, o) - reference, 2);
      energy += reference * reference;
    }
  return error / energy;
}

}  // namespace

TEST_CASE("block objective: value matches a direct computation, gradients match finite differences") {
  const long hidden = 6, intermediate = 10, tokens = 8;
  const gsq::Matrix<double> gate = random_matrix(intermediate, hidden, 1, 0.5), up = random_matrix(intermediate, hidden, 2, 0.5),
                            down = random_matrix(hidden, intermediate, 3, 0.5), x = random_matrix(tokens, hidden, 4, 1.0);
  Block objective(gate, up, down, x, tokens);  // one batch: the whole set
  std::array<gsq::Matrix<double>, 3> soft{random_matrix(intermediate, hidden, 5, 0.5), random_matrix(intermediate, hidden, 6, 0.5),
                                          random_matrix(hidden, intermediate, 7, 0.5)};
  std::array<std::vector<double>, 3> grads{std::vector<double>(soft[0].size()), std::vector<double>(soft[1].size()),
                                           std::vector<double>(soft[2].size())};
  const auto loss = [&] {
    return objective.value_and_gradient(0, {soft[0].data(), soft[1].data(), soft[2].data()},
                                        {grads[0].data(), grads[1].data(), grads[2].data()});
  };
  const double value = loss();
  CHECK(value == Approx(direct_relative_error(soft[0], soft[1], soft[2], gate, up, down, x)).epsilon(1e-10));
  const std::array<std::vector<double>, 3> analytic = grads;
  const double h = 1e-6;
  for (int w = 0; w < 3; ++w)
    for (std::size_t i = 0; i < soft[w].size(); ++i) {
      const double saved = soft[w].values[i];
      soft[w].values[i] = saved + h;
      const double plus = loss();
      soft[w].values[i] = saved - h;
      const double minus = loss();
      soft[w].values[i] = saved;
      INFO("weight " << w << " element " << i);
      CHECK(analytic[w][i] == Approx((plus - minus) / (2 * h)).margin(1e-7).epsilon(1e-5));
    }
}

TEST_CASE("block objective: mini-batches cycle with the step, and bad shapes are rejected") {
  const gsq::Matrix<double> gate = random_matrix(8, 4, 1, 0.5), up = random_matrix(8, 4, 2, 0.5),
                            down = random_matrix(4, 8, 3, 0.5), x = random_matrix(10, 4, 4, 1.0);
  Block objective(gate, up, down, x, 3);
  CHECK(objective.batch_count() == 3);  // the tenth token does not fill a batch
  std::vector<double> g0(32), g1(32), g2(32);
  const gsq::Matrix<double> shifted = random_matrix(8, 4, 9, 0.5);
  const auto at = [&](long step) { return objective.value_and_gradient(step, {shifted.data(), up.data(), down.data()}, {g0.data(), g1.data(), g2.data()}); };
  CHECK(at(0) == at(3));
  CHECK(at(0) != at(1));
  CHECK_THROWS_WITH(Block(gate, up, random_matrix(4, 7, 3, 0.5), x, 3), Catch::Contains("intermediate size"));
  CHECK_THROWS_WITH(Block(gate, up, down, x, 11), Catch::Contains("mini-batch size"));
  CHECK_THROWS_WITH(Block(gate, random_matrix(8, 5, 2, 0.5), down, x, 3), Catch::Contains("up weight"));
}

TEST_CASE("block objective: joint GSQ of gate, up and down ends below its RTN start") {
  const long hidden = 128, intermediate = 256, tokens = 512;
  const gsq::SyntheticLayer layer = gsq::make_synthetic_layer({intermediate, hidden, tokens, 11});
  const gsq::Matrix<float> gate = layer.weight;
  const gsq::Matrix<float> up = gsq::make_synthetic_layer({intermediate, hidden, 1, 12}).weight;
  const gsq::Matrix<float> down = gsq::make_synthetic_layer({hidden, intermediate, 1, 13}).weight;
  gsq::SwiGluBlockObjective<> objective(gate, up, down, layer.inputs, 128);
  const auto grid = gsq::grid_spec<gsq::Int<2>>();
  const gsq::QuantizedTensor gate0 = gsq::round_to_nearest(gate, grid, 128), up0 = gsq::round_to_nearest(up, grid, 128),
                             down0 = gsq::round_to_nearest(down, grid, 128);
  gsq::Quantizer<gsq::Int<2>> qgate(gate0), qup(up0), qdown(down0);
  gsq::TrainConfig config;
  config.steps = 150;
  gsq::train_jointly(objective, config, {}, qgate, qup, qdown);
  const double rtn = objective.relative_error(gate0.dequantize(), up0.dequantize(), down0.dequantize());
  const double gsq_error =
      objective.relative_error(qgate.result().dequantize(), qup.result().dequantize(), qdown.result().dequantize());
  INFO("RTN " << rtn << ", GSQ " << gsq_error);
  CHECK(gsq_error < rtn);
}
