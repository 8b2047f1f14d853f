// Tests of gsq/policy/schedule.hpp (annealing shapes), Quantizer::relaxation_at, and the learning-rate
// schedule of gsq/policy/optimizer.hpp.
#include <catch2/catch.hpp>

#include <cmath>

#include <gsq/gsq.hpp>

namespace {

/// Progress values 0, 1/n, ..., 1.
constexpr int progress_points = 64;
double progress_at(int i) { return static_cast<double>(i) / progress_points; }

/// The shape starts at `start`, ends at `end`, and moves monotonically between them.
template <class Shape>
void require_endpoints_and_monotone(double start, double end) {
  INFO(Shape::name << " from " << start << " to " << end);
  REQUIRE(Shape::at(start, end, 0.0) == Approx(start));
  REQUIRE(Shape::at(start, end, 1.0) == Approx(end));
  const double direction = end > start ? 1.0 : -1.0;
  for (int i = 1; i <= progress_points; ++i) {
    INFO("progress " << progress_at(i));
    REQUIRE(direction * (Shape::at(start, end, progress_at(i)) - Shape::at(start, end, progress_at(i - 1))) > 0);
  }
}

template <class Shape>
void require_shape_contract() {
  require_endpoints_and_monotone<Shape>(2.0, 0.05);   // the reference's temperature
  require_endpoints_and_monotone<Shape>(100.0, 500.0);  // the reference's logit scale
}

}  // namespace

TEST_CASE("every schedule shape hits its end points and is monotone", "[schedule]") {
  require_shape_contract<gsq::LinearAnneal>();
  require_shape_contract<gsq::CosineAnneal>();
  require_shape_contract<gsq::ExponentialAnneal>();
}

TEST_CASE("schedule shapes take their documented values half-way", "[schedule]") {
  REQUIRE(gsq::LinearAnneal::at(2.0, 0.0, 0.5) == Approx(1.0));
  REQUIRE(gsq::CosineAnneal::at(2.0, 0.0, 0.5) == Approx(1.0));   // half a cosine is symmetric
  REQUIRE(gsq::CosineAnneal::at(2.0, 0.0, 0.25) == Approx(1.0 + std::sqrt(0.5)));
  REQUIRE(gsq::ExponentialAnneal::at(100.0, 1.0, 0.5) == Approx(10.0));  // geometric mean
}

TEST_CASE("progress runs from 0 at the first step to 1 at the last", "[schedule]") {
  REQUIRE(gsq::schedule_progress(0, 11) == 0.0);
  REQUIRE(gsq::schedule_progress(5, 11) == Approx(0.5));
  REQUIRE(gsq::schedule_progress(10, 11) == 1.0);
  REQUIRE(gsq::schedule_progress(0, 1) == 1.0);  // a one-step run is at its end
}

TEMPLATE_TEST_CASE("relaxation_at gives the anneal end points at the first and last step", "[schedule][quantizer]",
                   gsq::LinearAnneal, gsq::CosineAnneal, gsq::ExponentialAnneal) {
  using Quantizer = gsq::Quantizer<gsq::Int<2>, gsq::GroupSize<128>, TestType, gsq::Relaxed, gsq::SymmetricScale,
                                   gsq::Host<double>>;
  const gsq::AnnealConfig anneal{1.5, 0.1, 20.0, 300.0};
  const long steps = 37;
  const auto first = Quantizer::relaxation_at(anneal, 0, steps, 9);
  const auto last = Quantizer::relaxation_at(anneal, steps - 1, steps, 9);
  REQUIRE(first.temperature == Approx(1.5));
  REQUIRE(first.logit_scale == Approx(20.0));
  REQUIRE(last.temperature == Approx(0.1));
  REQUIRE(last.logit_scale == Approx(300.0));
  REQUIRE(first.step == 0u);
  REQUIRE(last.step == 36u);
  REQUIRE(last.seed == 9u);
  const auto middle = Quantizer::relaxation_at(anneal, 18, steps, 9);
  REQUIRE(middle.temperature == Approx(TestType::at(1.5, 0.1, 0.5)));
}

TEST_CASE("the learning rate warms up linearly, then decays to its floor at the last step", "[schedule][optimizer]") {
  const long steps = 50;
  for (const auto decay : {gsq::LearningRateSchedule::Decay::cosine, gsq::LearningRateSchedule::Decay::linear}) {
    gsq::LearningRateSchedule schedule;
    schedule.warmup_steps = 10;
    schedule.decay = decay;
    schedule.floor = 0.2;
    REQUIRE_NOTHROW(schedule.validate(steps));
    for (long step = 0; step < 10; ++step) REQUIRE(schedule.factor(step, steps) == Approx((step + 1) / 10.0));
    REQUIRE(schedule.factor(10, steps) == Approx(1.0));  // the peak right after warm-up
    for (long step = 11; step < steps; ++step) REQUIRE(schedule.factor(step, steps) < schedule.factor(step - 1, steps));
    REQUIRE(schedule.factor(steps - 1, steps) == Approx(0.2));
  }
  SECTION("the reference's default: no warm-up, cosine to 0.1") {
    const gsq::LearningRateSchedule schedule;
    REQUIRE(schedule.factor(0, steps) == Approx(1.0));
    REQUIRE(schedule.factor(steps - 1, steps) == Approx(0.1));
    REQUIRE(schedule.factor((steps - 1) / 2, steps) == Approx(0.55).margin(0.02));  // cosine half-way: mean of the ends
  }
  SECTION("constant decay keeps the peak") {
    gsq::LearningRateSchedule schedule;
    schedule.decay = gsq::LearningRateSchedule::Decay::constant;
    for (long step = 0; step < steps; ++step) REQUIRE(schedule.factor(step, steps) == 1.0);
  }
}

TEST_CASE("invalid learning-rate schedules are errors naming the problem", "[schedule][errors]") {
  gsq::LearningRateSchedule schedule;
  schedule.warmup_steps = 20;
  REQUIRE_THROWS_WITH(schedule.validate(20), Catch::Contains("warm-up"));
  schedule.warmup_steps = 0;
  schedule.floor = 1.5;
  REQUIRE_THROWS_WITH(schedule.validate(20), Catch::Contains("floor"));
  REQUIRE_THROWS_WITH(gsq::parse_decay("step"), Catch::Contains("unknown learning-rate decay 'step'"));
  REQUIRE(gsq::parse_decay("linear") == gsq::LearningRateSchedule::Decay::linear);
}
