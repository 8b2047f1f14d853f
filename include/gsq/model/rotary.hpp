// gsq/model/rotary.hpp -- rotary position embeddings in Hugging Face's convention: the inverse
// frequencies with the config's scaling (linear, Llama 3.1, YaRN; a GGUF's per-frequency
// factors), and the rotation of each head's rotary dimensions by its token's position, with its
// transpose for the backward pass.
//
//   [first, second] <- [x cos - y sin, y cos + x sin]   (the rotation; cos and sin carry YaRN's factor)
//   [dx, dy]        <- [df cos + ds sin, ds cos - df sin] (its transpose)
//
// Dimension i pairs with i + rotary_dim/2 (rotate_half), or with its neighbour where DeepSeek-V3
// interleaves them.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "gsq/common/error.hpp"
#include "gsq/common/matrix.hpp"
#include "gsq/model/config.hpp"

namespace gsq {

/// Hugging Face's rotary inverse frequencies theta^(-2i/rotary_dim), with the config's scaling
/// (and then its frequency factors, as llama.cpp divides by them).
inline std::vector<float> rotary_inverse_frequencies(const LlamaConfig& config) {
  const RotaryConfig& rotary = config.rotary;
  const long dim = config.rotary_dim, half = dim / 2;
  std::vector<float> frequencies(static_cast<std::size_t>(half));
  require(rotary.frequency_factors.empty() || rotary.frequency_factors.size() == frequencies.size(),
          std::to_string(rotary.frequency_factors.size()) + " rotary frequency factors for " + std::to_string(half) + " frequencies");
  const double pi = std::acos(-1.0);
  // YaRN keeps the frequencies that turn more than beta_fast times over the original context,
  // interpolates those turning fewer than beta_slow times, and ramps linearly in between.
  const auto correction_dim = [&](double rotations) {
    return static_cast<double>(dim) * std::log(rotary.original_max_position_embeddings / (rotations * 2 * pi)) /
           (2 * std::log(rotary.theta));
  };
  double ramp_low = correction_dim(rotary.beta_fast), ramp_high = correction_dim(rotary.beta_slow);
  if (rotary.truncate) ramp_low = std::floor(ramp_low), ramp_high = std::ceil(ramp_high);
  ramp_low = std::max(ramp_low, 0.0), ramp_high = std::min(ramp_high, static_cast<double>(dim - 1));
  if (ramp_low == ramp_high) ramp_high += 0.001;
  for (long i = 0; i < half; ++i) {
    double frequency = 1.0 / std::pow(rotary.theta, static_cast<double>(2 * i) / static_cast<double>(dim));
    if (rotary.type == "linear") frequency /= rotary.factor;
    if (rotary.type == "llama3") {
      // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, and those in
      // between interpolated by where the wavelength falls relative to the original context.
      const double wavelength = 2 * pi / frequency;
      const double low_frequency_wavelength = rotary.original_max_position_embeddings / rotary.low_freq_factor;
      const double high_frequency_wavelength = rotary.original_max_position_embeddings / rotary.high_freq_factor;
      if (wavelength > low_frequency_wavelength) {
        frequency /= rotary.factor;
      } else if (wavelength >= high_frequency_wavelength) {
        const double smooth = (rotary.original_max_position_embeddings / wavelength - rotary.low_freq_factor) /
                              (rotary.high_freq_factor - rotary.low_freq_factor);
        frequency = (1 - smooth) * frequency / rotary.factor + smooth * frequency;
      }
    }
    if (rotary.type == "yarn") {
      const double kept = 1 - std::clamp((static_cast<double>(i) - ramp_low) / (ramp_high - ramp_low), 0.0, 1.0);
      frequency = frequency / rotary.factor * (1 - kept) + frequency * kept;
    }
    if (!rotary.frequency_factors.empty()) frequency /= rotary.frequency_factors[static_cast<std::size_t>(i)];
    frequencies[static_cast<std::size_t>(i)] = static_cast<float>(frequency);
  }
  return frequencies;
}

/// The rotation of sequences of one length under one config.
template <class Real>
class RotaryEmbedding {
 public:
  RotaryEmbedding(const LlamaConfig& config, long sequence_length)
      : sequence_length_(sequence_length), half_(config.rotary_dim / 2),
        interleaved_(config.latent_attention() && config.latent.interleaved_rope) {
    const std::vector<float> frequencies = rotary_inverse_frequencies(config);
    const auto factor = static_cast<Real>(config.rotary.attention_factor);
    cosines_.resize(static_cast<std::size_t>(sequence_length * half_));
    sines_.resize(cosines_.size());
    for (long position = 0; position < sequence_length; ++position)
      for (long i = 0; i < half_; ++i) {
        // The angle is formed in float, as Hugging Face does.
        const float angle = static_cast<float>(position) * frequencies[static_cast<std::size_t>(i)];
        cosines_[static_cast<std::size_t>(position * half_ + i)] = static_cast<Real>(std::cos(static_cast<double>(angle))) * factor;
        sines_[static_cast<std::size_t>(position * half_ + i)] = static_cast<Real>(std::sin(static_cast<double>(angle))) * factor;
      }
  }

  /// Rotates dimensions [offset, offset + rotary_dim) of each `head_width`-wide head of each row
  /// (rows: whole sequences) by the row's position in its sequence.
  void rotate(Matrix<Real>& heads, long head_width, long offset) const { turn(heads, head_width, offset, Real(1)); }

  /// The transpose of rotate (its backward pass): the rotation by the opposite angle, times
  /// the factor.
  void rotate_back(Matrix<Real>& heads, long head_width, long offset) const { turn(heads, head_width, offset, Real(-1)); }

 private:
  void turn(Matrix<Real>& heads, long head_width, long offset, Real direction) const {
    const long head_count = heads.cols / head_width;
    const long partner = interleaved_ ? 1 : half_, stride = interleaved_ ? 2 : 1;
#pragma omp parallel for
    for (long row = 0; row < heads.rows; ++row) {
      const long position = row % sequence_length_;
      const Real* cosine = cosines_.data() + position * half_;
      const Real* sine = sines_.data() + position * half_;
      for (long head = 0; head < head_count; ++head) {
        Real* dims = heads.data() + row * heads.cols + head * head_width + offset;
        for (long i = 0; i < half_; ++i) {
          Real& first = dims[i * stride];
          Real& second = dims[i * stride + partner];
          const Real x = first, y = second, s = direction * sine[i];
          first = x * cosine[i] - y * s;
          second = y * cosine[i] + x * s;
        }
      }
    }
  }

  long sequence_length_, half_;
  bool interleaved_;
  std::vector<Real> cosines_, sines_;
};

}  // namespace gsq
