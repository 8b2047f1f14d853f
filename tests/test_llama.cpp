// Tests for gsq/model/llama.hpp: the forward pass against logits computed by Hugging Face
// transformers, both config forms, errors for bad checkpoints, weight replacement, the observer.
#include <catch2/catch.hpp>

#include "error_message.hpp"
#include <gsq/model/llama.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

using gsq::testing::error_of;

namespace {

const std::string models = GSQ_SOURCE_DIR "/tests/data/";
const std::string tiny_llama3 = models + "tiny-llama3";
const std::string tiny_qwen2 = models + "tiny-qwen2";
const std::string tiny_qwen3 = models + "tiny-qwen3";
const std::string tiny_mixtral = models + "tiny-mixtral";
const std::string tiny_qwen2_moe = models + "tiny-qwen2-moe";
const std::string tiny_qwen3_moe = models + "tiny-qwen3-moe";
const std::string tiny_deepseek_v3 = models + "tiny-deepseek-v3";

/// A fresh directory under the build tree, removed with everything in it at scope exit.
struct TemporaryDirectory {
  fs::path path;
  TemporaryDirectory() {
    std::string pattern = std::string(GSQ_BINARY_DIR) + "/test_llama-XXXXXX";
    REQUIRE(::mkdtemp(&pattern[0]) != nullptr);
    path = pattern;
  }
  ~TemporaryDirectory() { fs::remove_all(path); }
  std::string str() const { return path.string(); }
};

nlohmann::json read_json(const std::string& path) {
  std::ifstream stream(path);
  return nlohmann::json::parse(stream);
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream stream(path, std::ios::binary);
  stream << text;
}

/// A model directory in `directory`: `config` as config.json beside the tensors of `source`
/// (a model directory), each passed through `edit` (which may drop one by returning false).
template <class Edit>
void write_model(const TemporaryDirectory& directory, const nlohmann::json& config, const std::string& source,
                 Edit edit) {
  write_text(directory.str() + "/config.json", config.dump(2));
  const gsq::SafetensorsFile file = gsq::SafetensorsFile::open(source + "/model.safetensors");
  gsq::SafetensorsWriter writer;
  for (const gsq::TensorInfo& info : file.tensors()) {
    gsq::FloatTensor tensor = file.float_tensor(info.name);
    if (edit(info.name, tensor)) writer.add(info.name, tensor.shape, tensor.values);
  }
  writer.write(directory.str() + "/model.safetensors");
}

void write_model(const TemporaryDirectory& directory, const nlohmann::json& config, const std::string& source) {
  write_model(directory, config, source, [](const std::string&, gsq::FloatTensor&) { return true; });
}

struct Reference {
  std::vector<gsq::TokenId> tokens;
  long sequence_length = 0;
  std::vector<float> logits;
};

Reference reference_of(const std::string& model) {
  const gsq::SafetensorsFile file = gsq::SafetensorsFile::open(model + "/reference_logits.safetensors");
  Reference reference;
  for (const std::int64_t id : file.integer_values("input_ids")) reference.tokens.push_back(static_cast<gsq::TokenId>(id));
  reference.sequence_length = static_cast<long>(file.info("input_ids").shape.at(1));
  reference.logits = file.float_values("logits");
  return reference;
}

double max_abs_difference(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double largest = 0;
  for (std::size_t i = 0; i < a.size(); ++i) largest = std::max(largest, std::fabs(double(a[i]) - double(b[i])));
  return largest;
}

double max_abs(const std::vector<float>& a) {
  double largest = 0;
  for (const float v : a) largest = std::max(largest, std::fabs(double(v)));
  return largest;
}

}  // namespace

TEST_CASE("forward passes match the logits of Hugging Face transformers", "[llama]") {
  for (const std::string& directory :
       {tiny_llama3, tiny_qwen2, tiny_qwen3, tiny_mixtral, tiny_qwen2_moe, tiny_qwen3_moe, tiny_deepseek_v3}) {
    INFO(directory);
    const gsq::LlamaModel model = gsq::LlamaModel::load(directory);
    const Reference reference = reference_of(directory);
    const gsq::Matrix<float> logits = model.forward(reference.tokens, reference.sequence_length);
    REQUIRE(logits.rows == static_cast<long>(reference.tokens.size()));
    REQUIRE(logits.cols == model.config().vocab_size);
    const double error = max_abs_difference(logits.values, reference.logits);
    INFO("max |logit error| " << error << " (logits up to " << max_abs(reference.logits) << ")");
    CHECK(error < 2e-5);  // transformers' float32 and ours differ in summation order only
    CHECK(max_abs(reference.logits) > 0.01);  // the comparison is not vacuous
  }
}

TEST_CASE("sequences in a batch are independent, and results do not depend on the thread count", "[llama]") {
  const gsq::LlamaModel model = gsq::LlamaModel::load(tiny_llama3);
  const Reference reference = reference_of(tiny_llama3);
  const long length = reference.sequence_length;
  gsq::set_host_threads(1);
  const gsq::Matrix<float> one_thread = model.forward(reference.tokens, length);
  gsq::set_host_threads(2);
  const gsq::Matrix<float> two_threads = model.forward(reference.tokens, length);
  CHECK(one_thread.values == two_threads.values);

  const std::vector<gsq::TokenId> second(reference.tokens.begin() + length, reference.tokens.end());
  const gsq::Matrix<float> alone = model.forward(second, length);
  const std::vector<float> batched(two_threads.values.begin() + length * two_threads.cols, two_threads.values.end());
  CHECK(max_abs_difference(alone.values, batched) < 1e-5);
}

TEST_CASE("sharded checkpoints and Mistral's layout load", "[llama]") {
  const Reference reference = reference_of(tiny_llama3);
  const gsq::SafetensorsFile file = gsq::SafetensorsFile::open(tiny_llama3 + "/model.safetensors");
  TemporaryDirectory directory;
  write_text(directory.str() + "/config.json", read_json(tiny_llama3 + "/config.json").dump());
  gsq::SafetensorsWriter shards[2];
  nlohmann::json index = {{"metadata", nlohmann::json::object()}, {"weight_map", nlohmann::json::object()}};
  for (const gsq::TensorInfo& info : file.tensors()) {
    const bool second = info.name.find("layers.1.") != std::string::npos || info.name == "lm_head.weight";
    const gsq::FloatTensor tensor = file.float_tensor(info.name);
    shards[second].add(info.name, tensor.shape, tensor.values, gsq::Dtype::F32);
    index["weight_map"][info.name] = second ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors";
  }
  shards[0].write(directory.str() + "/model-00001-of-00002.safetensors");
  shards[1].write(directory.str() + "/model-00002-of-00002.safetensors");
  write_text(directory.str() + "/model.safetensors.index.json", index.dump());
  const gsq::Matrix<float> sharded = gsq::LlamaModel::load(directory.str()).forward(reference.tokens, reference.sequence_length);
  CHECK(max_abs_difference(sharded.values, reference.logits) < 2e-5);

  nlohmann::json mistral = read_json(tiny_llama3 + "/config.json");
  mistral["architectures"] = {"MistralForCausalLM"};
  mistral["sliding_window"] = 4096;
  write_text(directory.str() + "/config.json", mistral.dump());
  const gsq::LlamaModel model = gsq::LlamaModel::load(directory.str());
  CHECK(max_abs_difference(model.forward(reference.tokens, reference.sequence_length).values, reference.logits) < 2e-5);
  mistral["sliding_window"] = 16;  // shorter than the sequences: gsq refuses rather than ignore it
  write_text(directory.str() + "/config.json", mistral.dump());
  CHECK_THAT(error_of([&] { gsq::LlamaModel::load(directory.str()).forward(reference.tokens, reference.sequence_length); }),
             Contains("sliding attention window 16"));
}

TEST_CASE("config.json in the classic and the newer form", "[llama][config]") {
  const gsq::LlamaConfig llama = gsq::LlamaConfig::load(tiny_llama3 + "/config.json");
  CHECK(llama.architecture == "LlamaForCausalLM");
  CHECK(llama.vocab_size == 97);
  CHECK(llama.hidden_size == 64);
  CHECK(llama.head_dim == 24);
  CHECK(llama.attention_heads == 4);
  CHECK(llama.key_value_heads == 1);
  CHECK(llama.layers == 2);
  CHECK_FALSE(llama.tie_word_embeddings);
  CHECK_FALSE(llama.qkv_bias);
  CHECK(llama.rotary.type == "llama3");
  CHECK(llama.rotary.theta == 500000.0);
  CHECK(llama.rotary.factor == 8.0);
  CHECK(llama.rotary.low_freq_factor == 1.0);
  CHECK(llama.rotary.high_freq_factor == 4.0);
  CHECK(llama.rotary.original_max_position_embeddings == 16.0);

  const gsq::LlamaConfig qwen = gsq::LlamaConfig::load(tiny_qwen2 + "/config.json");
  CHECK(qwen.architecture == "Qwen2ForCausalLM");
  CHECK(qwen.head_dim == 12);  // hidden / heads when head_dim is absent
  CHECK(qwen.tie_word_embeddings);
  CHECK(qwen.qkv_bias);
  CHECK_FALSE(qwen.output_bias);
  CHECK(qwen.rms_norm_eps == 1e-6);
  CHECK(qwen.rotary.type == "default");
  CHECK(qwen.rotary.theta == 1000000.0);

  // The older spelling "type", and llama3 settings in the newer form.
  nlohmann::json json = read_json(tiny_llama3 + "/config.json");
  json["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  const gsq::LlamaConfig linear = gsq::LlamaConfig::from_json(json);
  CHECK(linear.rotary.type == "linear");
  CHECK(linear.rotary.factor == 2.0);
  json.erase("rope_scaling");
  json.erase("rope_theta");
  json["rope_parameters"] = {{"rope_type", "llama3"}, {"rope_theta", 250000.0}, {"factor", 32.0},
                             {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                             {"original_max_position_embeddings", 8192}};
  const gsq::LlamaConfig newer = gsq::LlamaConfig::from_json(json);
  CHECK(newer.rotary.type == "llama3");
  CHECK(newer.rotary.theta == 250000.0);
  CHECK(newer.rotary.factor == 32.0);
  CHECK(newer.rotary.original_max_position_embeddings == 8192.0);
  json.erase("rope_parameters");
  CHECK(gsq::LlamaConfig::from_json(json).rotary.theta == 10000.0);  // Hugging Face's default
  CHECK(gsq::LlamaConfig::from_json(json).rotary.type == "default");
}

TEST_CASE("a dense Qwen3 config: per-head q/k norms and a head_dim of its own; no biases", "[llama][config]") {
  nlohmann::json json = read_json(tiny_qwen3 + "/config.json");
  const gsq::LlamaConfig qwen3 = gsq::LlamaConfig::from_json(json);
  CHECK(qwen3.architecture == "Qwen3ForCausalLM");
  CHECK(qwen3.qk_norm);
  CHECK(qwen3.head_dim == 32);  // from the config, not hidden 64 / 4 heads
  CHECK(qwen3.attention_heads == 4);
  CHECK(qwen3.key_value_heads == 2);
  CHECK(qwen3.tie_word_embeddings);
  CHECK_FALSE(qwen3.qkv_bias);
  CHECK_FALSE(qwen3.output_bias);
  CHECK(qwen3.mixture.experts == 0);
  CHECK(qwen3.rotary.type == "default");  // "rope_scaling": null
  CHECK(qwen3.rotary.theta == 1000000.0);  // an integer on the Hub
  CHECK(qwen3.linear_names(1) == std::vector<std::string>{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                          "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
                                                          "mlp.down_proj"});
  json["attention_bias"] = true;
  const gsq::LlamaConfig biased = gsq::LlamaConfig::from_json(json);
  CHECK(biased.qkv_bias);
  CHECK(biased.output_bias);
}

TEST_CASE("the rotary scaling changes the forward pass as configured", "[llama][config]") {
  // tiny-llama3's reference needs its llama3 scaling: without it the logits differ.
  const Reference reference = reference_of(tiny_llama3);
  nlohmann::json config = read_json(tiny_llama3 + "/config.json");
  config.erase("rope_scaling");
  TemporaryDirectory directory;
  write_model(directory, config, tiny_llama3);
  const gsq::Matrix<float> unscaled = gsq::LlamaModel::load(directory.str()).forward(reference.tokens, reference.sequence_length);
  CHECK(max_abs_difference(unscaled.values, reference.logits) > 1e-3);
}

TEST_CASE("bad configs and checkpoints fail with a message naming the problem", "[llama][errors]") {
  const nlohmann::json good = read_json(tiny_llama3 + "/config.json");
  auto load_with = [&](const nlohmann::json& config) {
    TemporaryDirectory directory;
    write_model(directory, config, tiny_llama3);
    return error_of([&] { gsq::LlamaModel::load(directory.str()); });
  };

  nlohmann::json config = good;
  config["architectures"] = {"GPT2LMHeadModel"};
  CHECK_THAT(load_with(config), Contains("GPT2LMHeadModel") && Contains("not supported"));

  config = good;
  config["rope_scaling"]["rope_type"] = "longrope";
  CHECK_THAT(load_with(config), Contains("\"longrope\"") && Contains("not supported"));

  config = good;
  config.erase("rope_scaling");
  config["rope_parameters"] = {{"rope_type", "dynamic"}, {"rope_theta", 10000.0}, {"factor", 2.0}};
  CHECK_THAT(load_with(config), Contains("\"dynamic\""));

  config = good;
  config["rope_scaling"].erase("low_freq_factor");
  CHECK_THAT(load_with(config), Contains("low_freq_factor") && Contains("missing"));

  config = good;
  config.erase("hidden_size");
  CHECK_THAT(load_with(config), Contains("hidden_size") && Contains("missing"));

  config = good;
  config["num_key_value_heads"] = 3;
  CHECK_THAT(load_with(config), Contains("num_key_value_heads"));

  config = good;
  config["hidden_act"] = "gelu";
  CHECK_THAT(load_with(config), Contains("gelu"));

  config = good;
  config["intermediate_size"] = "160";
  CHECK_THAT(load_with(config), Contains("intermediate_size") && Contains("not a positive integer"));

  {  // not JSON at all
    TemporaryDirectory directory;
    write_model(directory, good, tiny_llama3);
    write_text(directory.str() + "/config.json", "{\"architectures\": [\"LlamaForCausalLM\"],");
    CHECK_THAT(error_of([&] { gsq::LlamaModel::load(directory.str()); }),
               Contains("config.json") && Contains("not valid JSON"));
  }

  const std::string dropped = "model.layers.1.mlp.up_proj.weight";
  {
    TemporaryDirectory directory;
    write_model(directory, good, tiny_llama3, [&](const std::string& name, gsq::FloatTensor&) { return name != dropped; });
    CHECK_THAT(error_of([&] { gsq::LlamaModel::load(directory.str()); }), Contains(dropped) && Contains("no tensor"));
  }
  {  // q_proj stored transposed
    TemporaryDirectory directory;
    const std::string name = "model.layers.0.self_attn.q_proj.weight";
    write_model(directory, good, tiny_llama3, [&](const std::string& tensor_name, gsq::FloatTensor& tensor) {
      if (tensor_name == name) std::swap(tensor.shape[0], tensor.shape[1]);
      return true;
    });
    CHECK_THAT(error_of([&] { gsq::LlamaModel::load(directory.str()); }),
               Contains(name) && Contains("[64, 96]") && Contains("[96, 64]"));
  }
  {  // a tied config needs no lm_head; an untied one does
    TemporaryDirectory directory;
    write_model(directory, good, tiny_llama3, [](const std::string& name, gsq::FloatTensor&) { return name != "lm_head.weight"; });
    CHECK_THAT(error_of([&] { gsq::LlamaModel::load(directory.str()); }), Contains("lm_head.weight"));
  }
  {  // a NaN weight
    TemporaryDirectory directory;
    write_model(directory, good, tiny_llama3, [](const std::string& name, gsq::FloatTensor& tensor) {
      if (name == "model.norm.weight") tensor.values[3] = std::nanf("");
      return true;
    });
    CHECK_THAT(error_of([&] { gsq::LlamaModel::load(directory.str()); }), Contains("model.norm.weight") && Contains("non-finite"));
  }
  {  // Qwen2 needs its q/k/v biases
    TemporaryDirectory directory;
    write_model(directory, read_json(tiny_qwen2 + "/config.json"), tiny_qwen2,
                [](const std::string& name, gsq::FloatTensor&) { return name != "model.layers.0.self_attn.k_proj.bias"; });
    CHECK_THAT(error_of([&] { gsq::LlamaModel::load(directory.str()); }), Contains("model.layers.0.self_attn.k_proj.bias"));
  }
}

TEST_CASE("token ids and hidden states are checked", "[llama][errors]") {
  const gsq::LlamaModel model = gsq::LlamaModel::load(tiny_qwen2);
  CHECK_THAT(error_of([&] { model.embed({1, 2, 89, 4}, 4); }), Contains("token id 89 at position 2") && Contains("89"));
  CHECK_THAT(error_of([&] { model.embed({1, 2, 3}, 2); }), Contains("whole sequences"));
  const gsq::HiddenStates hidden = model.embed({1, 2, 3, 4}, 2);
  CHECK_THAT(error_of([&] { model.decoder_layer(2, hidden); }), Contains("decoder layer 2"));
}

TEST_CASE("linear weights can be read and replaced by name", "[llama]") {
  gsq::LlamaModel model = gsq::LlamaModel::load(tiny_llama3);
  const Reference reference = reference_of(tiny_llama3);
  const gsq::Matrix<float> before = model.forward(reference.tokens, reference.sequence_length);
  const gsq::SafetensorsFile file = gsq::SafetensorsFile::open(tiny_llama3 + "/model.safetensors");

  for (long layer = 0; layer < model.config().layers; ++layer)
    for (const std::string& linear : model.config().linear_names(layer)) {
      const gsq::Matrix<float> weight = model.linear_weight(layer, linear);
      const gsq::Matrix<float> stored = file.matrix(gsq::LlamaModel::tensor_name(layer, linear));
      CHECK(weight.rows == stored.rows);
      CHECK(weight.values == stored.values);
      model.set_linear_weight(layer, linear, weight);  // replacing a weight by itself changes nothing
    }
  CHECK(model.forward(reference.tokens, reference.sequence_length).values == before.values);

  gsq::Matrix<float> changed = model.linear_weight(1, "mlp.down_proj");
  for (float& value : changed.values) value = std::round(value * 64) / 64;  // a coarse "quantization"
  model.set_linear_weight(1, "mlp.down_proj", changed);
  CHECK(model.linear_weight(1, "mlp.down_proj").values == changed.values);
  const double change = max_abs_difference(model.forward(reference.tokens, reference.sequence_length).values, before.values);
  CHECK(change > 1e-4);

  CHECK_THAT(error_of([&] { model.set_linear_weight(0, "mlp.down_proj", gsq::Matrix<float>(160, 64)); }),
             Contains("160 x 64") && Contains("64 x 160"));
  CHECK_THAT(error_of([&] { model.set_linear_weight(0, "mlp.fc1", changed); }),
             Contains("mlp.fc1") && Contains("self_attn.q_proj"));
  CHECK_THAT(error_of([&] { model.linear_weight(5, "mlp.up_proj"); }), Contains("decoder layer 5"));
  gsq::Matrix<float> broken = model.linear_weight(0, "self_attn.v_proj");
  broken(2, 3) = INFINITY;
  CHECK_THAT(error_of([&] { model.set_linear_weight(0, "self_attn.v_proj", broken); }), Contains("non-finite"));
}

TEST_CASE("the observer sees the input of every linear layer", "[llama]") {
  const gsq::LlamaModel model = gsq::LlamaModel::load(tiny_llama3);
  const gsq::LlamaConfig& config = model.config();
  const Reference reference = reference_of(tiny_llama3);
  const long tokens = static_cast<long>(reference.tokens.size());
  const gsq::HiddenStates embedded = model.embed(reference.tokens, reference.sequence_length);

  std::vector<std::string> seen;
  std::map<std::string, gsq::Matrix<float>> inputs;
  const gsq::HiddenStates observed =
      model.decoder_layer(0, embedded, [&](long layer, const std::string& linear, const gsq::Matrix<float>& rows) {
        CHECK(layer == 0);
        seen.push_back(linear);
        inputs[linear] = rows;
      });
  const std::vector<std::string> order = model.config().linear_names(0);
  CHECK(seen == order);
  CHECK(observed.values.values == model.decoder_layer(0, embedded).values.values);

  for (const std::string& linear : order) {
    INFO(linear);
    CHECK(inputs[linear].rows == tokens);
    CHECK(inputs[linear].cols == model.linear_weight(0, linear).cols);
  }
  CHECK(inputs["self_attn.k_proj"].values == inputs["self_attn.q_proj"].values);
  CHECK(inputs["mlp.up_proj"].values == inputs["mlp.gate_proj"].values);

  // q/k/v see the RMS-normed embeddings.
  const std::vector<float> norm =
      gsq::SafetensorsFile::open(tiny_llama3 + "/model.safetensors").float_values("model.layers.0.input_layernorm.weight");
  double error = 0;
  for (long row = 0; row < tokens; ++row) {
    double squares = 0;
    for (long i = 0; i < config.hidden_size; ++i) squares += double(embedded.values(row, i)) * embedded.values(row, i);
    const double inverse_rms = 1 / std::sqrt(squares / double(config.hidden_size) + config.rms_norm_eps);
    for (long i = 0; i < config.hidden_size; ++i)
      error = std::max(error, std::fabs(embedded.values(row, i) * inverse_rms * norm[std::size_t(i)] -
                                        inputs["self_attn.q_proj"](row, i)));
  }
  CHECK(error < 1e-5);

  // The MLP input is the post-attention norm of the residual stream the MLP adds to: applying
  // gate/up/down to the observed inputs reproduces the layer's output.
  const gsq::Matrix<float>& activations = inputs["mlp.down_proj"];
  const gsq::Matrix<float> down = model.linear_weight(0, "mlp.down_proj");
  const gsq::Matrix<float> gate = model.linear_weight(0, "mlp.gate_proj");
  const gsq::Matrix<float> up = model.linear_weight(0, "mlp.up_proj");
  const gsq::Matrix<float>& mlp_input = inputs["mlp.gate_proj"];
  double activation_error = 0;
  for (long row = 0; row < 3; ++row)
    for (long j = 0; j < config.intermediate_size; ++j) {
      double g = 0, u = 0;
      for (long i = 0; i < config.hidden_size; ++i) {
        g += double(gate(j, i)) * mlp_input(row, i);
        u += double(up(j, i)) * mlp_input(row, i);
      }
      activation_error = std::max(activation_error, std::fabs(g / (1 + std::exp(-g)) * u - activations(row, j)));
    }
  CHECK(activation_error < 1e-5);
  CHECK(down.cols == activations.cols);
}

TEST_CASE("Mixture-of-Experts configs: each family's experts, routers, dense layers and attention", "[llama][moe]") {
  const gsq::LlamaConfig mixtral = gsq::LlamaConfig::load(tiny_mixtral + "/config.json");
  CHECK(mixtral.mixture.experts == 4);
  CHECK(mixtral.mixture.normalize_top_k);
  CHECK(mixtral.mixture.layers == std::vector<bool>{true, true});
  const std::vector<std::string> mixtral_names = mixtral.linear_names(0);
  CHECK(mixtral_names.size() == 4 + 4 * 3);
  CHECK(mixtral_names[4] == "block_sparse_moe.experts.0.w1");  // gate, up, down: w1, w3, w2
  CHECK(mixtral_names[5] == "block_sparse_moe.experts.0.w3");
  CHECK(mixtral_names[15] == "block_sparse_moe.experts.3.w2");

  const gsq::LlamaConfig qwen2 = gsq::LlamaConfig::load(tiny_qwen2_moe + "/config.json");
  CHECK(qwen2.mixture.layers == std::vector<bool>{true, false, true});  // mlp_only_layers [1]
  CHECK_FALSE(qwen2.mixture.normalize_top_k);
  CHECK(qwen2.mixture.gated_shared_expert);
  CHECK(qwen2.qkv_bias);
  CHECK(qwen2.linear_names(1).back() == "mlp.down_proj");
  CHECK(qwen2.linear_names(0).back() == "mlp.shared_expert.down_proj");

  const gsq::LlamaConfig qwen3 = gsq::LlamaConfig::load(tiny_qwen3_moe + "/config.json");
  CHECK(qwen3.qk_norm);
  CHECK(qwen3.mixture.experts == 4);  // spelt num_experts, as on the Hub
  CHECK(qwen3.mixture.normalize_top_k);

  const gsq::LlamaConfig deepseek = gsq::LlamaConfig::load(tiny_deepseek_v3 + "/config.json");
  CHECK(deepseek.latent_attention());
  CHECK(deepseek.mixture.router == gsq::MixtureConfig::Router::grouped_sigmoid);
  CHECK(deepseek.mixture.layers == std::vector<bool>{false, true, true});  // first_k_dense_replace 1
  CHECK(deepseek.mixture.shared_intermediate_size == 32);
  CHECK(deepseek.rotary.type == "yarn");
  CHECK(deepseek.rotary_dim == 16);
  // (nope + rope)^-1/2 times YaRN's mscale(4, mscale_all_dim 1)^2.
  CHECK(deepseek.latent.softmax_scale == Approx(std::pow(0.1 * std::log(4.0) + 1, 2) / std::sqrt(48.0)).epsilon(1e-12));
  CHECK(deepseek.linear_names(0) ==
        std::vector<std::string>{"self_attn.q_a_proj", "self_attn.q_b_proj", "self_attn.kv_a_proj_with_mqa",
                                 "self_attn.kv_b_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"});
}

TEST_CASE("newer transformers' spelling of a Qwen3-MoE config gives the same model", "[llama][moe]") {
  nlohmann::json config = read_json(tiny_qwen3_moe + "/config.json");
  config["num_local_experts"] = config["num_experts"];
  config.erase("num_experts");
  config["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", config["rope_theta"]}};
  config.erase("rope_theta");
  TemporaryDirectory directory;
  write_model(directory, config, tiny_qwen3_moe);
  const Reference reference = reference_of(tiny_qwen3_moe);
  const gsq::Matrix<float> newer = gsq::LlamaModel::load(directory.str()).forward(reference.tokens, reference.sequence_length);
  CHECK(newer.values == gsq::LlamaModel::load(tiny_qwen3_moe).forward(reference.tokens, reference.sequence_length).values);
}

TEST_CASE("an expert sees only the tokens routed to it; a never-chosen one sees none", "[llama][moe]") {
  const gsq::LlamaModel model = gsq::LlamaModel::load(tiny_deepseek_v3);
  const gsq::MixtureConfig& mixture = model.config().mixture;
  const Reference reference = reference_of(tiny_deepseek_v3);
  const long tokens = static_cast<long>(reference.tokens.size());
  gsq::HiddenStates hidden = model.decoder_layer(0, model.embed(reference.tokens, reference.sequence_length));

  std::vector<std::string> seen;
  std::map<std::string, long> rows;
  const gsq::HiddenStates observed =
      model.decoder_layer(1, hidden, [&](long, const std::string& linear, const gsq::Matrix<float>& inputs) {
        seen.push_back(linear);
        rows[linear] = inputs.rows;
      });
  CHECK(observed.values.values == model.decoder_layer(1, hidden).values.values);
  // The router sees the MLP's input before the experts; it is not one of the quantized linears.
  std::vector<std::string> expected = model.config().linear_names(1);
  expected.insert(expected.begin() + 5, "mlp.gate");
  CHECK(seen == expected);
  CHECK(rows["mlp.gate"] == tokens);
  long routed = 0;
  for (const gsq::SwiGluBlock& block : model.config().swiglu_blocks(1)) {
    if (block.expert < 0) continue;
    INFO(block.name);
    const long count = rows[block.linears[0]];
    CHECK(rows[block.linears[1]] == count);
    CHECK(rows[block.linears[2]] == count);
    // The fixture's bias of -100 on expert 5 sinks its group {4, 5}; every other expert is chosen.
    CHECK((count == 0) == (block.expert == 4 || block.expert == 5));
    routed += count;
  }
  CHECK(routed == tokens * mixture.experts_per_token);
  CHECK(rows["mlp.shared_experts.gate_proj"] == tokens);
  CHECK(rows["self_attn.kv_b_proj"] == tokens);
}

TEST_CASE("Mixture-of-Experts forward passes do not depend on the thread count", "[llama][moe]") {
  for (const std::string& directory : {tiny_qwen2_moe, tiny_deepseek_v3}) {
    INFO(directory);
    const gsq::LlamaModel model = gsq::LlamaModel::load(directory);
    const Reference reference = reference_of(directory);
    gsq::set_host_threads(1);
    const gsq::Matrix<float> one_thread = model.forward(reference.tokens, reference.sequence_length);
    gsq::set_host_threads(2);
    CHECK(one_thread.values == model.forward(reference.tokens, reference.sequence_length).values);
  }
}

TEST_CASE("bad Mixture-of-Experts configs and checkpoints fail with a message naming the problem", "[llama][moe][errors]") {
  const nlohmann::json deepseek = read_json(tiny_deepseek_v3 + "/config.json");
  auto load_with = [&](const nlohmann::json& config, const std::string& source, const std::string& drop = "") {
    TemporaryDirectory directory;
    write_model(directory, config, source, [&](const std::string& name, gsq::FloatTensor&) { return name != drop; });
    return error_of([&] { gsq::LlamaModel::load(directory.str()); });
  };
  nlohmann::json config = deepseek;
  config["scoring_func"] = "softmax";
  CHECK_THAT(load_with(config, tiny_deepseek_v3), Contains("sigmoid") && Contains("softmax"));
  config = deepseek;
  config["n_group"] = 3;
  CHECK_THAT(load_with(config, tiny_deepseek_v3), Contains("n_group"));
  config = deepseek;
  config["num_experts_per_tok"] = 9;
  CHECK_THAT(load_with(config, tiny_deepseek_v3), Contains("num_experts_per_tok"));
  config = deepseek;
  config["rope_scaling"].erase("factor");
  CHECK_THAT(load_with(config, tiny_deepseek_v3), Contains("factor") && Contains("missing"));
  CHECK_THAT(load_with(deepseek, tiny_deepseek_v3, "model.layers.1.mlp.experts.3.down_proj.weight"),
             Contains("model.layers.1.mlp.experts.3.down_proj.weight"));
  CHECK_THAT(load_with(deepseek, tiny_deepseek_v3, "model.layers.2.mlp.gate.e_score_correction_bias"),
             Contains("e_score_correction_bias"));
  const nlohmann::json mixtral = read_json(tiny_mixtral + "/config.json");
  config = mixtral;
  config.erase("num_local_experts");
  CHECK_THAT(load_with(config, tiny_mixtral), Contains("num_local_experts") && Contains("missing"));
  CHECK_THAT(load_with(mixtral, tiny_mixtral, "model.layers.0.block_sparse_moe.gate.weight"),
             Contains("block_sparse_moe.gate.weight"));

  gsq::LlamaModel model = gsq::LlamaModel::load(tiny_mixtral);
  CHECK_THAT(error_of([&] { model.linear_weight(0, "block_sparse_moe.gate"); }),
             Contains("block_sparse_moe.gate") && Contains("more"));  // routers stay in full precision
}

TEST_CASE("a model opened for streaming computes what a loaded one does, one layer in memory at a time", "[llama][streaming]") {
  for (const std::string& directory : {tiny_llama3, tiny_deepseek_v3}) {
    INFO(directory);
    const Reference reference = reference_of(directory);
    const gsq::LlamaModel loaded = gsq::LlamaModel::load(directory);
    gsq::LlamaModel streamed = gsq::LlamaModel::open(directory);
    const gsq::Matrix<float> logits = loaded.forward(reference.tokens, reference.sequence_length);
    CHECK(streamed.forward(reference.tokens, reference.sequence_length).values == logits.values);
    CHECK(streamed.linear_weight(1, "self_attn.o_proj").values == loaded.linear_weight(1, "self_attn.o_proj").values);

    // A released layer reads its linears from the source it is given.
    std::vector<std::string> asked;
    streamed.release_layer(1, [&](const std::string& name, long rows, long cols) {
      asked.push_back(name);
      gsq::Matrix<float> zero(rows, cols);
      return zero;
    });
    CHECK(streamed.linear_weight(1, "self_attn.o_proj").values == std::vector<float>(streamed.linear_weight(1, "self_attn.o_proj").size()));
    asked.clear();
    const gsq::Matrix<float> changed = streamed.forward(reference.tokens, reference.sequence_length);
    CHECK(asked.size() == streamed.config().linear_names(1).size());  // every linear of layer 1, nothing else
    CHECK(changed.values != logits.values);
  }
}

TEST_CASE("opening a model checks every tensor's presence and shape before any layer runs", "[llama][streaming][errors]") {
  const nlohmann::json config = read_json(tiny_mixtral + "/config.json");
  TemporaryDirectory missing;
  write_model(missing, config, tiny_mixtral,
              [](const std::string& name, gsq::FloatTensor&) { return name != "model.layers.1.block_sparse_moe.experts.2.w3.weight"; });
  CHECK_THAT(error_of([&] { gsq::LlamaModel::open(missing.str()); }), Contains("model.layers.1.block_sparse_moe.experts.2.w3.weight"));
  TemporaryDirectory reshaped;
  write_model(reshaped, config, tiny_mixtral, [](const std::string& name, gsq::FloatTensor& tensor) {
    if (name == "model.layers.1.self_attn.k_proj.weight") tensor.shape = {64, 32};
    return true;
  });
  CHECK_THAT(error_of([&] { gsq::LlamaModel::open(reshaped.str()); }), Contains("k_proj") && Contains("[64, 32]"));
}
