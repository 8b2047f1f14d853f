// Tests for gsq/model/llama.hpp: the forward pass against logits computed by Hugging Face
// transformers, both config forms, errors for bad checkpoints, weight replacement, the observer.
#include <catch2/catch.hpp>
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

namespace {

const std::string models = GSQ_SOURCE_DIR "/tests/data/";
const std::string tiny_llama3 = models + "tiny-llama3";
const std::string tiny_qwen2 = models + "tiny-qwen2";

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

/// The message of the gsq::Error `action` throws, or "(no error)".
template <class Action>
std::string error_of(Action action) {
  try {
    action();
  } catch (const gsq::Error& error) {
    return error.what();
  }
  return "(no error)";
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
  for (const std::string& directory : {tiny_llama3, tiny_qwen2}) {
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
  config["rope_scaling"]["rope_type"] = "yarn";
  CHECK_THAT(load_with(config), Contains("\"yarn\"") && Contains("not supported"));

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
    for (const std::string& linear : gsq::LlamaModel::linear_names()) {
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
  const std::vector<std::string> order(gsq::LlamaModel::linear_names().begin(), gsq::LlamaModel::linear_names().end());
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
