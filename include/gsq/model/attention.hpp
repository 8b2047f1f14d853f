// gsq/model/attention.hpp -- causal grouped-query attention, forward and backward, on the host.
// Each (sequence, head) on its own, query head h reading key/value head h / (heads / key_value_heads):
//
//   S = scale Q K^T,  P = softmax over the keys at positions <= the query's,  O = P V
//   dP = dO V^T,  dS = P * (dP - rowsum(dO * O)),  dQ = scale dS K,  dK += scale dS^T Q,  dV += P^T dO
//
// Queries, keys, values and outputs are rows of tokens (whole sequences of `length`) with the heads
// side by side. The forward pass can keep P for the backward pass.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "gsq/backend/host.hpp"
#include "gsq/common/matrix.hpp"
#include "gsq/model/config.hpp"

namespace gsq {

struct AttentionShape {
  long heads = 0;
  long key_value_heads = 0;
  long head_dim = 0;   // a query's and a key's width per head
  long value_dim = 0;  // a value's width per head
  double scale = 0;    // of the scores, usually 1 / sqrt(head_dim)
};

/// A model's attention: grouped-query heads scaled by 1 / sqrt(head_dim), or DeepSeek-V3's latent
/// attention with its softmax scale.
inline AttentionShape attention_shape(const LlamaConfig& config) {
  return {config.attention_heads, config.key_value_heads, config.head_dim, config.value_head_dim,
          config.latent_attention() ? config.latent.softmax_scale : 1.0 / std::sqrt(static_cast<double>(config.head_dim))};
}

template <class Real>
struct AttentionGradients {
  Matrix<Real> queries, keys, values;
};

namespace detail {

/// One head's rows of a sequence, transposed (width x length) or as they are (length x width).
template <class Real>
void gather_head(const Matrix<Real>& rows, long first_row, long length, long offset, long width, bool transpose, Real* out) {
  for (long t = 0; t < length; ++t) {
    const Real* from = rows.data() + (first_row + t) * rows.cols + offset;
    if (transpose)
      for (long d = 0; d < width; ++d) out[d * length + t] = from[d];
    else
      std::copy_n(from, width, out + t * width);
  }
}

/// Writes a length x width block into one head's rows of a sequence.
template <class Real>
void scatter_head(const Real* block, long first_row, long length, long offset, long width, Matrix<Real>& rows) {
  for (long t = 0; t < length; ++t) std::copy_n(block + t * width, width, rows.data() + (first_row + t) * rows.cols + offset);
}

}  // namespace detail

/// O = softmax(scale Q K^T) V, causal; `probabilities`, if given, receives P of every
/// (sequence, head) in that order (sequences x heads x length x length).
template <class Real>
Matrix<Real> causal_attention(const Matrix<Real>& queries, const Matrix<Real>& keys, const Matrix<Real>& values,
                              const AttentionShape& shape, long length, std::vector<Real>* probabilities = nullptr) {
  const long head_dim = shape.head_dim, value_dim = shape.value_dim, heads = shape.heads;
  const long group = heads / shape.key_value_heads, sequences = queries.rows / length;
  const auto scale = static_cast<Real>(shape.scale);
  Matrix<Real> output(queries.rows, heads * value_dim);
  if (probabilities) probabilities->assign(static_cast<std::size_t>(sequences * heads * length * length), Real(0));
#pragma omp parallel
  {
    // Per-thread scratch: the head's queries and keys transposed (head_dim x length), its values
    // and output (length x value_dim), and the scores (length x length).
    std::vector<Real> query_columns(static_cast<std::size_t>(head_dim * length)), key_columns(query_columns.size());
    std::vector<Real> value_rows(static_cast<std::size_t>(value_dim * length)), output_rows(value_rows.size());
    std::vector<Real> scores(static_cast<std::size_t>(length * length));
#pragma omp for schedule(dynamic)
    for (long pair = 0; pair < sequences * heads; ++pair) {
      const long sequence = pair / heads, head = pair % heads, key_value_head = head / group;
      const long first_row = sequence * length;
      detail::gather_head(queries, first_row, length, head * head_dim, head_dim, true, query_columns.data());
      detail::gather_head(keys, first_row, length, key_value_head * head_dim, head_dim, true, key_columns.data());
      detail::gather_head(values, first_row, length, key_value_head * value_dim, value_dim, false, value_rows.data());
      Host<Real>::gemm(true, length, length, head_dim, scale, query_columns.data(), key_columns.data(), scores.data());
      for (long t = 0; t < length; ++t) {  // softmax over the keys at positions <= t
        Real* row = scores.data() + t * length;
        const Real largest = *std::max_element(row, row + t + 1);
        Real sum = 0;
        for (long j = 0; j <= t; ++j) sum += (row[j] = std::exp(row[j] - largest));
        for (long j = 0; j <= t; ++j) row[j] /= sum;
        std::fill(row + t + 1, row + length, Real(0));
      }
      if (probabilities) std::copy(scores.begin(), scores.end(), probabilities->begin() + pair * length * length);
      Host<Real>::gemm(false, length, value_dim, length, Real(1), scores.data(), value_rows.data(), output_rows.data());
      detail::scatter_head(output_rows.data(), first_row, length, head * value_dim, value_dim, output);
    }
  }
  return output;
}

/// dL/dQ, dL/dK, dL/dV of causal_attention from dL/dO, given the forward pass's inputs, its
/// output and its probabilities.
template <class Real>
AttentionGradients<Real> causal_attention_backward(const Matrix<Real>& queries, const Matrix<Real>& keys,
                                                   const Matrix<Real>& values, const Matrix<Real>& output,
                                                   const std::vector<Real>& probabilities, const Matrix<Real>& output_grad,
                                                   const AttentionShape& shape, long length) {
  const long head_dim = shape.head_dim, value_dim = shape.value_dim, heads = shape.heads;
  const long kv_heads = shape.key_value_heads, group = heads / kv_heads, sequences = queries.rows / length;
  const auto scale = static_cast<Real>(shape.scale);
  AttentionGradients<Real> grads{Matrix<Real>(queries.rows, queries.cols), Matrix<Real>(keys.rows, keys.cols),
                                 Matrix<Real>(values.rows, values.cols)};
#pragma omp parallel
  {
    std::vector<Real> query_columns(static_cast<std::size_t>(head_dim * length)), key_columns(query_columns.size());
    std::vector<Real> value_rows(static_cast<std::size_t>(value_dim * length)), output_rows(value_rows.size());
    std::vector<Real> output_grad_rows(value_rows.size()), value_grad(value_rows.size()), value_part(value_rows.size());
    std::vector<Real> query_grad(static_cast<std::size_t>(length * head_dim)), key_grad(query_grad.size()), key_part(query_grad.size());
    std::vector<Real> score_grad(static_cast<std::size_t>(length * length));
    // Each (sequence, key/value head) gathers the gradients of its group's query heads.
#pragma omp for schedule(dynamic)
    for (long pair = 0; pair < sequences * kv_heads; ++pair) {
      const long sequence = pair / kv_heads, key_value_head = pair % kv_heads, first_row = sequence * length;
      detail::gather_head(keys, first_row, length, key_value_head * head_dim, head_dim, true, key_columns.data());
      detail::gather_head(values, first_row, length, key_value_head * value_dim, value_dim, false, value_rows.data());
      std::fill(key_grad.begin(), key_grad.end(), Real(0));
      std::fill(value_grad.begin(), value_grad.end(), Real(0));
      for (long head = key_value_head * group; head < (key_value_head + 1) * group; ++head) {
        const Real* p = probabilities.data() + (sequence * heads + head) * length * length;
        detail::gather_head(queries, first_row, length, head * head_dim, head_dim, true, query_columns.data());
        detail::gather_head(output, first_row, length, head * value_dim, value_dim, false, output_rows.data());
        detail::gather_head(output_grad, first_row, length, head * value_dim, value_dim, false, output_grad_rows.data());
        Host<Real>::gemm(false, length, length, value_dim, Real(1), output_grad_rows.data(), value_rows.data(),
                         score_grad.data(), true);  // dP = dO V^T
        for (long t = 0; t < length; ++t) {
          Real carried = 0;  // rowsum(dP * P) = dO . O of the row
          for (long d = 0; d < value_dim; ++d) carried += output_grad_rows[static_cast<std::size_t>(t * value_dim + d)] *
                                                          output_rows[static_cast<std::size_t>(t * value_dim + d)];
          Real* row = score_grad.data() + t * length;
          for (long j = 0; j < length; ++j) row[j] = j <= t ? p[t * length + j] * (row[j] - carried) : Real(0);
        }
        Host<Real>::gemm(false, length, head_dim, length, scale, score_grad.data(), key_columns.data(), query_grad.data(),
                         true);  // dQ = scale dS K
        detail::scatter_head(query_grad.data(), first_row, length, head * head_dim, head_dim, grads.queries);
        Host<Real>::gemm(true, length, head_dim, length, scale, score_grad.data(), query_columns.data(), key_part.data(),
                         true);  // scale dS^T Q
        for (std::size_t i = 0; i < key_grad.size(); ++i) key_grad[i] += key_part[i];
        Host<Real>::gemm(true, length, value_dim, length, Real(1), p, output_grad_rows.data(), value_part.data());  // P^T dO
        for (std::size_t i = 0; i < value_grad.size(); ++i) value_grad[i] += value_part[i];
      }
      detail::scatter_head(key_grad.data(), first_row, length, key_value_head * head_dim, head_dim, grads.keys);
      detail::scatter_head(value_grad.data(), first_row, length, key_value_head * value_dim, value_dim, grads.values);
    }
  }
  return grads;
}

}  // namespace gsq
