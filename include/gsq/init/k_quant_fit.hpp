// gsq/init/k_quant_fit.hpp -- an importance-weighted fit of a weight matrix in a K-quant format
// (gsq/format/k_quant.hpp): the idea llama.cpp applies with an importance matrix, written for
// gsq. The importance of input column c is a weight on the squared error of every weight in
// that column: diag(H), so the fit minimises the diagonal part of tr(dW H dW^T).
//
//   1. each sub-block: the continuous scale (and min) that minimise sum_i w_i (s q_i - m - x_i)^2
//      with the codes rounded: a scan of scales (and mins), then from the best sixteen an
//      alternation of weighted least-squares refits of (s, m) to the codes and re-roundings (the
//      min kept >= 0: the format stores it unsigned), then a pattern search around the best;
//   2. each super-block: fp16 d (and dmin) so the largest scale (min) takes the largest code,
//      and every sub-block's scale (min) rounded to its code;
//   3. each sub-block: its scale and min codes moved by one step where that lowers the weighted
//      error of the codes rounded under them, which are then the stored codes.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "gsq/common/dtype.hpp"
#include "gsq/common/error.hpp"
#include "gsq/common/matrix.hpp"
#include "gsq/format/k_quant.hpp"

namespace gsq {

namespace detail {

/// A sub-block's continuous parameters: weight = scale q - min.
struct SubBlockFit {
  float scale = 0, min = 0;
};

inline int round_code(float value, int low, int high) {
  return static_cast<int>(std::fmin(std::fmax(std::nearbyint(value), static_cast<float>(low)), static_cast<float>(high)));
}

/// sum_i w_i (scale q_i - min - x_i)^2 with q_i rounded (and clamped) under (scale, min).
inline double sub_block_error(const float* x, const float* w, int n, const KQuantFormat& format, float scale, float min) {
  double error = 0;
  for (int i = 0; i < n; ++i) {
    const int q = scale == 0 ? 0 : round_code((x[i] + min) / scale, format.min_code, format.max_code);
    const double difference = static_cast<double>(scale) * q - min - x[i];
    error += w[i] * difference * difference;
  }
  return error;
}

/// The weighted least-squares (scale, min) for fixed codes q; min >= 0 and scale >= 0 where
/// the format stores them unsigned.
inline SubBlockFit refit_to_codes(const float* x, const float* w, const int* q, int n, const KQuantFormat& format) {
  double sw = 0, swq = 0, swqq = 0, swx = 0, swqx = 0;
  for (int i = 0; i < n; ++i) {
    sw += w[i], swq += w[i] * q[i], swqq += w[i] * q[i] * q[i], swx += w[i] * x[i], swqx += w[i] * q[i] * x[i];
  }
  SubBlockFit fit;
  const double determinant = sw * swqq - swq * swq;
  if (format.has_min && determinant > 0) {
    fit.scale = static_cast<float>((sw * swqx - swq * swx) / determinant);
    fit.min = static_cast<float>(-(swqq * swx - swq * swqx) / determinant);
  }
  if (!format.has_min || determinant <= 0 || fit.min < 0 || fit.scale < 0) {
    fit.min = 0;
    fit.scale = swqq > 0 ? static_cast<float>(swqx / swqq) : 0;
    if (format.has_min && fit.scale < 0) fit.scale = 0;
  }
  return fit;
}

/// Step 1 for one sub-block of n weights x with importances w.
inline SubBlockFit fit_sub_block(const float* x, const float* w, int n, const KQuantFormat& format) {
  float low = 0, high = 0;  // low <= 0 <= high
  for (int i = 0; i < n; ++i) low = std::fmin(low, x[i]), high = std::fmax(high, x[i]);
  SubBlockFit best;
  double best_error = sub_block_error(x, w, n, format, 0, 0);
  if (high - low == 0) return best;
  // A scan of (scale, min) on the rounded error: scales from the whole range over the codes
  // down to a 24th of it (small ones clip the outliers an unimportant column may hold), and for
  // formats with a min, mins from 0 to a little past the smallest value; for signed codes both
  // signs (the extreme value at either end of the codes, -4..3 or -32..31).
  const float amax = std::fmax(-low, high);
  const float full = (format.has_min ? high - low : amax) / static_cast<float>(format.max_code);
  std::vector<SubBlockFit> starts;
  for (int r = 0; r < 32; ++r) {
    const float scale = full * std::pow(24.0f, -static_cast<float>(r) / 31.0f);
    if (format.has_min) {
      for (float fraction : {0.0f, 0.25f, 0.5f, 0.7f, 0.85f, 1.0f, 1.1f, 1.25f, 1.5f}) starts.push_back({scale, -low * fraction});
    } else {
      starts.push_back({scale, 0});
      starts.push_back({-scale, 0});
    }
  }
  if (format.has_min) {  // and the codes spanning the range, or a slightly clipped or widened one
    for (float from : {1.1f, 1.0f, 0.85f, 0.7f})
      for (float to : {1.0f, 0.85f})
        for (int stretch = -10; stretch <= 10; ++stretch)
          starts.push_back({(high * to - low * from) / (static_cast<float>(format.max_code) + 0.1f * static_cast<float>(stretch)),
                            -low * from});
  } else {
    // and the extreme value t codes from 0, t from 0.7 of the codes' reach (4, 32) to one past it
    // in tenths of a code: the rounded error is jagged in the scale, the more so the more codes.
    const int reach = -format.min_code;
    for (int tenths = 7 * reach; tenths <= 10 * reach + 10; ++tenths) {
      starts.push_back({10 * amax / static_cast<float>(tenths), 0});
      starts.push_back({-10 * amax / static_cast<float>(tenths), 0});
    }
  }
  std::vector<double> errors;
  for (const SubBlockFit& start : starts) errors.push_back(sub_block_error(x, w, n, format, start.scale, start.min));
  // From the sixteen best: alternate a refit of (scale, min) to the codes and a re-rounding.
  std::vector<int> q(static_cast<std::size_t>(n));
  for (int pick = 0; pick < 16; ++pick) {
    const std::size_t index = static_cast<std::size_t>(std::min_element(errors.begin(), errors.end()) - errors.begin());
    SubBlockFit fit = starts[index];
    if (errors[index] < best_error) best_error = errors[index], best = fit;
    errors[index] = std::numeric_limits<double>::infinity();
    for (int round = 0; round < 4 && fit.scale != 0; ++round) {
      for (int i = 0; i < n; ++i) q[i] = round_code((x[i] + fit.min) / fit.scale, format.min_code, format.max_code);
      fit = refit_to_codes(x, w, q.data(), n, format);
      const double error = sub_block_error(x, w, n, format, fit.scale, fit.min);
      if (error < best_error) best_error = error, best = fit;
    }
  }
  // Last, a pattern search on the rounded error itself, which the refits only approximate: the
  // eight neighbours of the best (scale, min), the steps shrinking.
  for (float size : {0.08f, 0.04f, 0.02f, 0.01f, 0.005f}) {
    for (bool moved = true; moved;) {
      moved = false;
      const SubBlockFit centre = best;
      for (int ds = -1; ds <= 1; ++ds)
        for (int dm = format.has_min ? -1 : 0; dm <= (format.has_min ? 1 : 0); ++dm) {
          const SubBlockFit trial{centre.scale * (1 + size * static_cast<float>(ds)),
                                  centre.min + size * std::fabs(centre.scale) * static_cast<float>(dm)};
          if ((ds == 0 && dm == 0) || trial.min < 0) continue;
          const double error = sub_block_error(x, w, n, format, trial.scale, trial.min);
          if (error < best_error) best_error = error, best = trial, moved = true;
        }
    }
  }
  return best;
}

/// The fp16 factor that maps the largest of `values` onto code `top`.
inline float super_block_factor(const std::vector<float>& values, int top) {
  float largest = 0;
  for (float value : values) largest = std::fmax(largest, std::fabs(value));
  return half_bits_to_float(float_to_half_bits(largest / static_cast<float>(top)));
}

/// Step 2: the fp16 factors d (and dmin, 0 without a min) for continuous sub-block scales and mins.
inline std::pair<float, float> super_block_factors(const std::vector<float>& scales, const std::vector<float>& mins,
                                                   const KQuantFormat& format) {
  // Signed scale codes reach -2^(b-1) but only 2^(b-1) - 1 (Q3_K -32..31, Q6_K -128..127): the
  // largest |scale| takes the negative end (d < 0 if it is positive), as llama.cpp sets it.
  const int top = format.signed_scales ? -format.min_scale_code() : format.max_scale_code();
  float d = super_block_factor(scales, top);
  if (format.signed_scales) {
    const float extreme = *std::max_element(scales.begin(), scales.end(),
                                            [](float a, float b) { return std::fabs(a) < std::fabs(b); });
    if (extreme > 0) d = -d;
  }
  return {d, format.has_min ? super_block_factor(mins, top) : 0.0f};
}

/// Step 3 for super-block `super` of `out` under the factors d and dmin: each sub-block's scale
/// and min rounded to codes (then moved by one step either way where that lowers its error), and
/// the codes of the weights `x` (the super-block's) rounded under them; the importances
/// `importance` (one per weight) weight the error.
inline void round_super_block(const float* x, const float* importance, const std::vector<float>& scales,
                                const std::vector<float>& mins, float d, float dmin, long super, KQuantTensor& out) {
  const KQuantFormat& format = *out.format;
  const int n = format.sub_block, subs = format.sub_blocks();
  out.d[static_cast<std::size_t>(super)] = d;
  if (format.has_min) out.dmin[static_cast<std::size_t>(super)] = dmin;
  for (int sub = 0; sub < subs; ++sub) {
    const float* xs = x + sub * n;
    const float* ws = importance + sub * n;
    const auto code_of = [&](float value, float factor) {
      return round_code(factor == 0 ? 0.0f : value / factor, format.min_scale_code(), format.max_scale_code());
    };
    int scale_code = code_of(scales[sub], d);
    int min_code = code_of(mins[sub], dmin);
    const auto error_of = [&](int sc, int mc) {
      return sub_block_error(xs, ws, n, format, d * static_cast<float>(sc), dmin * static_cast<float>(mc));
    };
    double best = error_of(scale_code, min_code);
    const int best_scale = scale_code, best_min = min_code;
    for (int ds = -1; ds <= 1; ++ds)
      for (int dm = format.has_min ? -1 : 0; dm <= (format.has_min ? 1 : 0); ++dm) {
        const int sc = best_scale + ds, mc = best_min + dm;
        if (sc < format.min_scale_code() || sc > format.max_scale_code() || mc < format.min_scale_code() ||
            mc > format.max_scale_code())
          continue;
        const double error = error_of(sc, mc);
        if (error < best) best = error, scale_code = sc, min_code = mc;
      }
    const std::size_t index = static_cast<std::size_t>(super * subs + sub);
    out.scale_codes[index] = static_cast<std::int8_t>(scale_code);
    if (format.has_min) out.min_codes[index] = static_cast<std::int8_t>(min_code);
    const float scale = d * static_cast<float>(scale_code), min = dmin * static_cast<float>(min_code);
    for (int i = 0; i < n; ++i)
      out.codes[static_cast<std::size_t>(super * format.super_block + sub * n + i)] = static_cast<std::int8_t>(
          scale == 0 ? 0 : round_code((xs[i] + min) / scale, format.min_code, format.max_code));
  }
}

/// Steps 1-3 for super-block `super` of `out`: its weights `x` with their importances.
inline void fit_super_block(const float* x, const float* importance, long super, KQuantTensor& out) {
  const KQuantFormat& format = *out.format;
  const int n = format.sub_block, subs = format.sub_blocks();
  std::vector<float> scales(static_cast<std::size_t>(subs)), mins(static_cast<std::size_t>(subs));
  for (int sub = 0; sub < subs; ++sub) {
    const SubBlockFit fit = fit_sub_block(x + sub * n, importance + sub * n, n, format);
    scales[sub] = fit.scale, mins[sub] = fit.min;
  }
  const auto [d, dmin] = super_block_factors(scales, mins, format);
  round_super_block(x, importance, scales, mins, d, dmin, super, out);
}

/// Throws unless `weight` can be stored in `format` with one importance per column (or none).
inline void require_k_quant_shape(const Matrix<float>& weight, const std::vector<float>& importance,
                                  const KQuantFormat& format) {
  require(weight.cols > 0 && weight.cols % format.super_block == 0,
          std::string(format.name) + " stores rows in blocks of " + std::to_string(format.super_block) +
              " weights; this matrix has " + std::to_string(weight.cols) + " columns");
  require(importance.empty() || static_cast<long>(importance.size()) == weight.cols,
          "the importance must have one value per input column");
  for (float value : weight.values) require(std::isfinite(value), "the weight to fit holds a non-finite value");
  for (float value : importance) require(std::isfinite(value) && value >= 0, "importances must be finite and non-negative");
}

}  // namespace detail

/// Fits `weight` (rows x cols, cols a multiple of the super-block) in `format`, weighting the
/// squared error of column c by importance[c] (diag H; empty: all 1).
inline KQuantTensor fit_k_quant(const Matrix<float>& weight, const std::vector<float>& importance, const KQuantFormat& format) {
  detail::require_k_quant_shape(weight, importance, format);
  KQuantTensor out = empty_k_quant(weight.rows, weight.cols, format);
  const std::vector<float> ones(static_cast<std::size_t>(format.super_block), 1.0f);
  // Super-blocks are fitted independently: the result does not depend on the thread count.
#pragma omp parallel for schedule(dynamic, 16)
  for (long super = 0; super < out.super_blocks(); ++super) {
    const long first_col = super * format.super_block % weight.cols;
    detail::fit_super_block(weight.values.data() + super * format.super_block,
                            importance.empty() ? ones.data() : importance.data() + first_col, super, out);
  }
  out.validate();
  return out;
}

}  // namespace gsq
