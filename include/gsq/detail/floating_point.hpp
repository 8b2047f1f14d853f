// gsq/detail/floating_point.hpp -- the floating-point mode of the host backend's own work.
//
// Late in the anneal (temperature 0.05, logit scale 500) the softmax tails, their gradients and
// the optimizer momenta fall below FLT_MIN. x86 cores (and some ARM cores) do arithmetic on
// subnormal numbers through a microcode slow path, which made a late step 3-4x slower than an
// early one. Values that small carry no information here (a probability of 1e-39 is zero), so the
// host backend runs its element-wise work and its products with subnormals flushed to zero
// (x86: MXCSR FTZ and DAZ; AArch64: FPCR FZ) and restores the calling thread's mode afterwards:
// a library must not change its user's floating-point environment.
#pragma once

#include <cstdint>

#if defined(__SSE2__) || defined(_M_X64)
#include <xmmintrin.h>
#endif

namespace gsq::detail {

/// While alive, the current thread treats subnormal floats and doubles as zero, as inputs and as
/// results; the destructor restores the thread's previous mode. Where the architecture has no
/// such mode it does nothing and subnormals are computed with, as before.
class SubnormalsFlushed {
 public:
  SubnormalsFlushed() : saved_(mode()) { set_mode(saved_ | flush_bits); }
  ~SubnormalsFlushed() { set_mode(saved_); }
  SubnormalsFlushed(const SubnormalsFlushed&) = delete;
  SubnormalsFlushed& operator=(const SubnormalsFlushed&) = delete;

 private:
#if defined(__SSE2__) || defined(_M_X64)
  using Mode = unsigned int;
  static constexpr Mode flush_bits = 0x8040u;  // MXCSR bit 15 flush-to-zero, bit 6 denormals-are-zero
  static Mode mode() { return _mm_getcsr(); }
  static void set_mode(Mode value) { _mm_setcsr(value); }
#elif defined(__aarch64__)
  using Mode = std::uint64_t;
  static constexpr Mode flush_bits = Mode{1} << 24;  // FPCR.FZ: single and double, inputs and results
  static Mode mode() {
    Mode value;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(value));
    return value;
  }
  static void set_mode(Mode value) { __asm__ __volatile__("msr fpcr, %0" : : "r"(value)); }
#else
  using Mode = int;
  static constexpr Mode flush_bits = 0;
  static Mode mode() { return 0; }
  static void set_mode(Mode) {}
#endif
  Mode saved_;
};

}  // namespace gsq::detail
