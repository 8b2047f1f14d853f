// K-quant tensors the tests encode and decode: every code and scale code random within the
// format's range (the first two at its ends) and fp16 factors uniform in [-bound, bound].
#pragma once

#include <random>
#include <vector>

#include <gsq/format/k_quant.hpp>

namespace gsq::testing {

inline KQuantTensor random_k_quant(const KQuantFormat& format, long rows, long cols, std::mt19937& random, float bound) {
  KQuantTensor tensor = empty_k_quant(rows, cols, format);
  const auto fill = [&](std::vector<std::int8_t>& values, int low, int high) {
    std::uniform_int_distribution<int> draw(low, high);
    for (std::int8_t& value : values) value = static_cast<std::int8_t>(draw(random));
    if (values.size() >= 2) values[0] = static_cast<std::int8_t>(low), values[1] = static_cast<std::int8_t>(high);
  };
  fill(tensor.codes, format.min_code, format.max_code);
  fill(tensor.scale_codes, format.min_scale_code(), format.max_scale_code());
  fill(tensor.min_codes, format.min_scale_code(), format.max_scale_code());
  std::uniform_real_distribution<float> factor(-bound, bound);
  for (std::vector<float>* factors : {&tensor.d, &tensor.dmin})
    for (float& value : *factors) value = half_bits_to_float(float_to_half_bits(factor(random)));
  return tensor;
}

}  // namespace gsq::testing
