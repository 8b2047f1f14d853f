// Tests of the host backend's matrix product (gsq::Host::gemm): every transpose combination, on
// shapes whose fixed panels cut the rows (rows >= cols) or the columns (cols > rows, such as token
// rows times a layer's outputs), threaded and not, against a product summed in double; and the
// same bits for any thread count.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <random>
#include <vector>

#include <gsq/gsq.hpp>

namespace {

using Backend = gsq::Host<float>;

struct Shape {
  long rows, cols, inner;
};

std::vector<float> random_values(std::size_t count, std::mt19937& random) {
  std::normal_distribution<float> normal;
  std::vector<float> values(count);
  for (float& value : values) value = normal(random);
  return values;
}

/// alpha op(A) op(B), summed in double.
std::vector<double> reference(bool transpose_a, bool transpose_b, const Shape& s, float alpha, const std::vector<float>& a,
                              const std::vector<float>& b) {
  std::vector<double> c(static_cast<std::size_t>(s.rows * s.cols));
  for (long i = 0; i < s.rows; ++i)
    for (long j = 0; j < s.cols; ++j) {
      double sum = 0;
      for (long k = 0; k < s.inner; ++k) {
        const float left = transpose_a ? a[static_cast<std::size_t>(k * s.rows + i)] : a[static_cast<std::size_t>(i * s.inner + k)];
        const float right = transpose_b ? b[static_cast<std::size_t>(j * s.inner + k)] : b[static_cast<std::size_t>(k * s.cols + j)];
        sum += static_cast<double>(left) * right;
      }
      c[static_cast<std::size_t>(i * s.cols + j)] = alpha * sum;
    }
  return c;
}

}  // namespace

TEST_CASE("the host product equals a product summed in double, cut along either side", "[backend]") {
  std::mt19937 random(7);
  // Small (one thread team is not worth it), rows >= cols, cols > rows (128 token rows x 1536
  // outputs: X W^T), panels that do not divide the side, and a 1-row and 1-column product.
  for (const Shape shape : {Shape{5, 7, 3}, Shape{200, 48, 130}, Shape{128, 1536, 96}, Shape{37, 301, 150},
                            Shape{1, 1000, 64}, Shape{1000, 1, 64}}) {
    for (const bool transpose_a : {false, true})
      for (const bool transpose_b : {false, true}) {
        INFO("rows " << shape.rows << " cols " << shape.cols << " inner " << shape.inner << " transpose_a " << transpose_a
                     << " transpose_b " << transpose_b);
        const std::vector<float> a = random_values(static_cast<std::size_t>(shape.rows * shape.inner), random);
        const std::vector<float> b = random_values(static_cast<std::size_t>(shape.inner * shape.cols), random);
        const std::vector<double> expected = reference(transpose_a, transpose_b, shape, 0.5f, a, b);
        std::vector<float> c(expected.size(), -1.0f);
        Backend::gemm(transpose_a, shape.rows, shape.cols, shape.inner, 0.5f, a.data(), b.data(), c.data(), transpose_b);
        double worst = 0;
        for (std::size_t i = 0; i < c.size(); ++i) worst = std::max(worst, std::abs(c[i] - expected[i]));
        // Each entry sums `inner` products of N(0, 1) values: float's error stays far below 1e-3.
        CHECK(worst < 1e-3);
      }
  }
}

TEST_CASE("the host product gives the same bits for any thread count", "[backend]") {
  std::mt19937 random(11);
  for (const Shape shape : {Shape{128, 1536, 576}, Shape{1536, 576, 128}}) {
    const std::vector<float> a = random_values(static_cast<std::size_t>(shape.rows * shape.inner), random);
    const std::vector<float> b = random_values(static_cast<std::size_t>(shape.inner * shape.cols), random);
    std::vector<std::vector<float>> results;
    const int default_threads = gsq::host_thread_count();
    for (const int threads : {1, 2, 3}) {
      gsq::set_host_threads(threads);
      results.emplace_back(static_cast<std::size_t>(shape.rows * shape.cols));
      Backend::gemm(false, shape.rows, shape.cols, shape.inner, 1.0f, a.data(), b.data(), results.back().data(), true);
    }
    gsq::set_host_threads(default_threads);
    CHECK(results[0] == results[1]);
    CHECK(results[0] == results[2]);
  }
}
