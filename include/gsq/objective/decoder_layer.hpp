// gsq/objective/decoder_layer.hpp -- the decoder-layer objective: a dense decoder layer's seven
// linears (q, k, v, o, gate, up, down) trained jointly on the layer's output.
//
//   n = rms_norm(x);  Q, K, V = n Wq^T + bq, n Wk^T + bk, n Wv^T + bv;  Qwen3: per-head rms_norm of Q, K
//   A = causal_attention(rope(Q), rope(K), V);  h = x + A Wo^T;  m = rms_norm(h)
//   G = m Wg^T,  U = m Wu^T,  M = silu(G) * U;  y = h + M Wd^T
//   L = |y - y_target|^2 / |y_target - x|^2   on one mini-batch of whole calibration sequences
//
// The target is the full-precision layer's output, on the same inputs or on the full-precision
// model's inputs (then the layer also learns to undo the earlier layers' error). The backward pass
// runs the chain in reverse (gsq/model/rms_norm.hpp, rotary.hpp, attention.hpp):
//   dy = 2 (y - y_target) / |y_target - x|^2;  dWd = dy^T M;  dM = dy Wd;  dG, dU (SwiGLU)
//   dWg = dG^T m;  dWu = dU^T m;  dh = dy + rms_norm'(dG Wg + dU Wu);  dWo = dh^T A;  dA = dh Wo
//   dQ, dK, dV (attention), rotated back (and through the q/k norms);  dWq = dQ^T n, ...
// The norms, biases and rotary tables stay in full precision. Host only: attention runs per
// (sequence, head) on the host.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <vector>

#include "gsq/backend/host.hpp"
#include "gsq/common/error.hpp"
#include "gsq/common/matrix.hpp"
#include "gsq/model/attention.hpp"
#include "gsq/model/llama.hpp"
#include "gsq/model/rms_norm.hpp"
#include "gsq/model/rotary.hpp"
#include "gsq/objective/swiglu_block.hpp"

namespace gsq {

template <class Real_ = float>
class DecoderLayerObjective {
 public:
  using Real = Real_;
  static constexpr std::size_t linear_count = 7;
  enum Weight { query = 0, key, value, out, gate, up, down };
  using Weights = std::array<const Real*, linear_count>;
  using Gradients = std::array<Real*, linear_count>;

  /// The names of the linears it trains, in Weight order (those of LlamaConfig::linears).
  static std::array<std::string, linear_count> linear_names() {
    return {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
            "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
  }

  /// Whether every decoder layer of `config` is one this objective trains.
  static bool supports(const LlamaConfig& config) {
    for (long layer = 0; layer < config.layers; ++layer)
      if (config.latent_attention() || config.mixture.in_layer(layer)) return false;
    return true;
  }

  /// Throws gsq::Error unless decoder layer `layer` of `config` is one this objective trains: a
  /// dense MLP after grouped-query attention.
  static void require_supported(const LlamaConfig& config, long layer) {
    require(!config.latent_attention(), "the decoder-layer objective trains grouped-query attention; this model (" +
                                            config.architecture + ") has latent attention");
    require(!config.mixture.in_layer(layer), "the decoder-layer objective trains dense decoder layers; layer " +
                                                 std::to_string(layer) + " of this model (" + config.architecture +
                                                 ") is a mixture of experts");
  }

  /// Decoder layer `layer` of `model` (its norms, biases and rotary embedding; the weights come
  /// with each call) on calibration `inputs`, matching `targets` (one row per input row), in
  /// mini-batches of `batch_sequences` whole sequences (a tail that does not fill one is left out).
  DecoderLayerObjective(const LlamaModel& model, long layer, const HiddenStates& inputs, const Matrix<float>& targets,
                        long batch_sequences)
      : config_(model.config()), shape_(attention_shape(config_)), length_(inputs.sequence_length),
        rotary_(config_, inputs.sequence_length) {
    require_supported(config_, layer);
    require(targets.rows == inputs.values.rows && targets.cols == inputs.values.cols,
            "the layer's targets are " + std::to_string(targets.rows) + " x " + std::to_string(targets.cols) +
                " but its inputs " + std::to_string(inputs.values.rows) + " x " + std::to_string(inputs.values.cols));
    require_finite_nonempty(inputs.values, "the layer's calibration inputs");
    require_finite_nonempty(targets, "the layer's targets");
    require(batch_sequences > 0 && batch_sequences <= inputs.sequences(),
            "the mini-batch must be between 1 and the " + std::to_string(inputs.sequences()) +
                " calibration sequences, got " + std::to_string(batch_sequences));
    const std::array<std::string, linear_count> names = linear_names();
    for (std::size_t i = 0; i < linear_count; ++i) {
      const LinearShape shape = config_.linears(layer)[i];
      require(shape.name == names[i], "decoder layer " + std::to_string(layer) + "'s linear " + std::to_string(i) +
                                          " is " + shape.name + ", not " + names[i]);
      rows_[i] = shape.rows;
      cols_[i] = shape.cols;
      biases_[i] = model.linear_bias(layer, shape.name);
    }
    input_norm_ = model.norm_weight(layer, "input_layernorm");
    post_attention_norm_ = model.norm_weight(layer, "post_attention_layernorm");
    if (config_.qk_norm) {
      query_norm_ = model.norm_weight(layer, "self_attn.q_norm");
      key_norm_ = model.norm_weight(layer, "self_attn.k_norm");
    }
    const long batch_rows = batch_sequences * length_, hidden = config_.hidden_size;
    for (long first = 0; first + batch_rows <= inputs.values.rows; first += batch_rows) {
      Batch batch{rows_of(inputs.values, first, batch_rows), {}, rows_of(targets, first, batch_rows), 0};
      batch.normed = rms_norm(batch.inputs, input_norm_, config_.rms_norm_eps);
      for (long i = 0; i < batch_rows * hidden; ++i) {
        const double change = static_cast<double>(batch.targets.values[static_cast<std::size_t>(i)]) -
                              static_cast<double>(batch.inputs.values[static_cast<std::size_t>(i)]);
        batch.energy += change * change;
      }
      require(batch.energy > 0, "the layer's targets equal its inputs on calibration batch " + std::to_string(batches_.size()));
      batches_.push_back(std::move(batch));
    }
  }

  long batch_count() const { return static_cast<long>(batches_.size()); }

  /// The rows x cols of linear `index` (Weight order).
  long rows(std::size_t index) const { return rows_[index]; }
  long cols(std::size_t index) const { return cols_[index]; }

  /// L on the mini-batch of `step`, and dL/dW of the seven linears (out x in, Weight order).
  double value_and_gradient(long step, const Weights& weights, const Gradients& gradients) {
    const Batch& batch = batches_[static_cast<std::size_t>(step % batch_count())];
    Pass pass = forward(batch, weights);
    Matrix<Real>& output_grad = pass.output;  // becomes dy
    double error = 0;
    for (std::size_t i = 0; i < output_grad.size(); ++i) {
      output_grad.values[i] -= batch.targets.values[i];
      error += static_cast<double>(output_grad.values[i]) * output_grad.values[i];
    }
    const auto factor = static_cast<Real>(2 / batch.energy);
    for (Real& value : output_grad.values) value *= factor;
    backward(batch, weights, pass, output_grad, gradients);
    return error / batch.energy;
  }

  /// L over every calibration batch for host weights (Weight order): the layer's relative output error.
  double relative_error(const std::array<Matrix<float>, linear_count>& weights) {
    std::array<Matrix<Real>, linear_count> cast;
    Weights pointers;
    for (std::size_t i = 0; i < linear_count; ++i) {
      require(weights[i].rows == rows_[i] && weights[i].cols == cols_[i],
              "weight " + std::to_string(i) + " of the decoder-layer objective has the wrong shape");
      cast[i] = weights[i].template cast<Real>();
      pointers[i] = cast[i].data();
    }
    double error = 0, energy = 0;
    for (const Batch& batch : batches_) {
      const Pass pass = forward(batch, pointers);
      for (std::size_t i = 0; i < pass.output.size(); ++i) {
        const double difference = static_cast<double>(pass.output.values[i]) - batch.targets.values[i];
        error += difference * difference;
      }
      energy += batch.energy;
    }
    return error / energy;
  }

 private:
  struct Batch {
    Matrix<Real> inputs, normed, targets;  // x, n = rms_norm(x), y_target
    double energy;                          // |y_target - x|^2
  };

  /// One batch's forward pass, kept for the backward pass.
  struct Pass {
    Matrix<Real> raw_queries, raw_keys;  // before Qwen3's q/k norms
    Matrix<Real> queries, keys, values;  // as attention reads them
    std::vector<Real> probabilities;
    Matrix<Real> attended, residual, mlp_input;  // A, h, m
    Matrix<Real> gate_act, up_act, activation;   // G, U, M
    Matrix<Real> output;                         // y
  };

  static Matrix<Real> rows_of(const Matrix<float>& matrix, long first, long count) {
    Matrix<Real> result(count, matrix.cols);
    std::copy_n(matrix.data() + first * matrix.cols, count * matrix.cols, result.data());
    return result;
  }

  /// inputs W^T + bias of linear `index`.
  Matrix<Real> apply(std::size_t index, const Real* weight, const Matrix<Real>& inputs) const {
    Matrix<Real> result(inputs.rows, rows_[index]);
    Host<Real>::gemm(false, inputs.rows, rows_[index], cols_[index], Real(1), inputs.data(), weight, result.data(), true);
    const std::vector<float>& bias = biases_[index];
    if (!bias.empty())
      for (long r = 0; r < result.rows; ++r)
        for (long c = 0; c < result.cols; ++c) result(r, c) += static_cast<Real>(bias[static_cast<std::size_t>(c)]);
    return result;
  }

  /// dW = dY^T X of linear `index` into `gradient`.
  void weight_gradient(std::size_t index, const Matrix<Real>& output_grad, const Matrix<Real>& inputs, Real* gradient) const {
    Host<Real>::gemm(true, rows_[index], cols_[index], inputs.rows, Real(1), output_grad.data(), inputs.data(), gradient);
  }

  /// dX = dY W of linear `index`.
  Matrix<Real> input_gradient(std::size_t index, const Matrix<Real>& output_grad, const Real* weight) const {
    Matrix<Real> result(output_grad.rows, cols_[index]);
    Host<Real>::gemm(false, output_grad.rows, cols_[index], rows_[index], Real(1), output_grad.data(), weight, result.data());
    return result;
  }

  static void add_to(Matrix<Real>& target, const Matrix<Real>& addend) {
    for (std::size_t i = 0; i < target.size(); ++i) target.values[i] += addend.values[i];
  }

  Pass forward(const Batch& batch, const Weights& weights) const {
    Pass pass;
    pass.raw_queries = apply(query, weights[query], batch.normed);
    pass.raw_keys = apply(key, weights[key], batch.normed);
    pass.values = apply(value, weights[value], batch.normed);
    pass.queries = config_.qk_norm ? rms_norm(pass.raw_queries, query_norm_, config_.rms_norm_eps) : pass.raw_queries;
    pass.keys = config_.qk_norm ? rms_norm(pass.raw_keys, key_norm_, config_.rms_norm_eps) : pass.raw_keys;
    rotary_.rotate(pass.queries, config_.head_dim, 0);
    rotary_.rotate(pass.keys, config_.head_dim, 0);
    pass.attended = causal_attention(pass.queries, pass.keys, pass.values, shape_, length_, &pass.probabilities);
    pass.residual = apply(out, weights[out], pass.attended);
    add_to(pass.residual, batch.inputs);
    pass.mlp_input = rms_norm(pass.residual, post_attention_norm_, config_.rms_norm_eps);
    pass.gate_act = apply(gate, weights[gate], pass.mlp_input);
    pass.up_act = apply(up, weights[up], pass.mlp_input);
    pass.activation = Matrix<Real>(pass.gate_act.rows, pass.gate_act.cols);
    Host<Real>::for_each_index(pass.activation.size(), detail::SwiGlu<Real>{pass.gate_act.data(), pass.up_act.data(),
                                                                            pass.activation.data()});
    pass.output = apply(down, weights[down], pass.activation);
    add_to(pass.output, pass.residual);
    return pass;
  }

  void backward(const Batch& batch, const Weights& weights, Pass& pass, const Matrix<Real>& output_grad,
                const Gradients& gradients) const {
    // The MLP: down, then the SwiGLU activation in place (G becomes dG, U becomes dU), then gate/up.
    weight_gradient(down, output_grad, pass.activation, gradients[down]);
    const Matrix<Real> activation_grad = input_gradient(down, output_grad, weights[down]);
    Host<Real>::for_each_index(activation_grad.size(), detail::SwiGluBackward<Real>{activation_grad.data(), pass.gate_act.data(),
                                                                                    pass.up_act.data()});
    weight_gradient(gate, pass.gate_act, pass.mlp_input, gradients[gate]);
    weight_gradient(up, pass.up_act, pass.mlp_input, gradients[up]);
    Matrix<Real> mlp_input_grad = input_gradient(gate, pass.gate_act, weights[gate]);
    add_to(mlp_input_grad, input_gradient(up, pass.up_act, weights[up]));
    // The residual stream h feeds both the output and the MLP's norm.
    Matrix<Real> residual_grad = rms_norm_backward(pass.residual, post_attention_norm_, config_.rms_norm_eps, mlp_input_grad);
    add_to(residual_grad, output_grad);
    weight_gradient(out, residual_grad, pass.attended, gradients[out]);
    const Matrix<Real> attended_grad = input_gradient(out, residual_grad, weights[out]);
    AttentionGradients<Real> grads = causal_attention_backward(pass.queries, pass.keys, pass.values, pass.attended,
                                                               pass.probabilities, attended_grad, shape_, length_);
    rotary_.rotate_back(grads.queries, config_.head_dim, 0);
    rotary_.rotate_back(grads.keys, config_.head_dim, 0);
    if (config_.qk_norm) {
      grads.queries = rms_norm_backward(pass.raw_queries, query_norm_, config_.rms_norm_eps, grads.queries);
      grads.keys = rms_norm_backward(pass.raw_keys, key_norm_, config_.rms_norm_eps, grads.keys);
    }
    weight_gradient(query, grads.queries, batch.normed, gradients[query]);
    weight_gradient(key, grads.keys, batch.normed, gradients[key]);
    weight_gradient(value, grads.values, batch.normed, gradients[value]);
  }

  LlamaConfig config_;
  AttentionShape shape_;
  long length_;
  RotaryEmbedding<Real> rotary_;
  std::array<long, linear_count> rows_{}, cols_{};
  std::array<std::vector<float>, linear_count> biases_;
  std::vector<float> input_norm_, post_attention_norm_, query_norm_, key_norm_;
  std::vector<Batch> batches_;
};

}  // namespace gsq
