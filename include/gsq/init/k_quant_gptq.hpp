// gsq/init/k_quant_gptq.hpp -- GPTQ in a llama.cpp K-quant format (gsq/format/k_quant.hpp).
//
// The sweep is GPTQ's (gsq/init/gptq.hpp): columns in order, each rounding error spread onto the
// columns not yet quantized. Only the format's parameters differ: the group is the super-block
// (256 columns; 32 for Q4_1 and Q5_1), and when the sweep enters one it fits the whole super-block (sub-block scales and
// mins, fp16 d and dmin: gsq/init/k_quant_fit.hpp) to the row's current, error-compensated
// weights; each column is then rounded under its sub-block's stored scale and min.
//
//   gsq::KQuantTensor start = gsq::gptq_k_quant(weight, hessian, gsq::q2_k());
#pragma once

#include <vector>

#include "gsq/format/k_quant.hpp"
#include "gsq/init/gptq.hpp"
#include "gsq/init/k_quant_fit.hpp"

namespace gsq {

namespace detail {

/// GPTQ's rounding in a K-quant format (the Rounding of detail::gptq_sweep).
struct KQuantRounding {
  KQuantTensor& result;

  long group_width() const { return result.format->super_block; }

  void enter(long row, long group, const float* weights, const double* importance) {
    float weighting[256];  // the largest super-block
    for (long i = 0; i < group_width(); ++i) weighting[i] = static_cast<float>(importance[i]);
    fit_super_block(weights, weighting, row * (result.cols / group_width()) + group, result);
  }

  float round(long row, long column, float value) {
    const KQuantFormat& format = *result.format;
    const std::size_t element = static_cast<std::size_t>(row * result.cols + column);
    const std::size_t sub = element / static_cast<std::size_t>(format.sub_block);
    const std::size_t super = element / static_cast<std::size_t>(format.super_block);
    const float scale = result.d[super] * static_cast<float>(result.scale_codes[sub]);
    const float min = format.has_min ? result.dmin[super] * static_cast<float>(result.min_codes[sub]) : 0.0f;
    const int code = scale == 0 ? 0 : round_code((value + min) / scale, format.min_code, format.max_code);
    result.codes[element] = static_cast<std::int8_t>(code);
    return scale * static_cast<float>(code) - min;
  }
};

}  // namespace detail

/// GPTQ of `weight` (rows x cols, cols whole super-blocks) in `format` under the layer's Hessian
/// (H = X^T X / N); config.scale_fit does not apply (the super-block fit weights by diag(H)).
inline KQuantTensor gptq_k_quant(const Matrix<float>& weight, const Matrix<float>& hessian, const KQuantFormat& format,
                                 const GptqConfig& config = {}) {
  detail::require_k_quant_shape(weight, {}, format);
  KQuantTensor result = empty_k_quant(weight.rows, weight.cols, format);
  detail::KQuantRounding rounding{result};
  detail::gptq_sweep(weight, hessian, config, rounding);
  result.validate();
  return result;
}

}  // namespace gsq
