// Writes a random Llama checkpoint of a given shape (bench/random_checkpoint.hpp: config.json +
// BF16 model.safetensors, N(0, 0.02^2) weights), for timing the whole-model pipeline on real model
// shapes without downloading the model; the defaults are SmolLM2-135M's shape with 2 of its 30
// decoder layers.
//
//   build/random_model --out /tmp/smollm2-shape [--layers 2] [--hidden 576] [--intermediate 1536]
//                      [--heads 9] [--kv-heads 3] [--vocab 49152] [--seed 1]
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "random_checkpoint.hpp"

int main(int argc, char** argv) {
  gsq::bench::RandomModelShape shape;
  std::string out;
  try {
    for (int i = 1; i + 1 < argc; i += 2) {
      const std::string flag = argv[i];
      char* end = nullptr;
      const long value = std::strtol(argv[i + 1], &end, 10);
      gsq::require(flag == "--out" || (*argv[i + 1] && !*end), flag + ": '" + argv[i + 1] + "' is not an integer");
      if (flag == "--out") out = argv[i + 1];
      else if (flag == "--layers") shape.layers = value;
      else if (flag == "--hidden") shape.hidden = value;
      else if (flag == "--intermediate") shape.intermediate = value;
      else if (flag == "--heads") shape.heads = value;
      else if (flag == "--kv-heads") shape.kv_heads = value;
      else if (flag == "--vocab") shape.vocab = value;
      else if (flag == "--seed") shape.seed = static_cast<std::uint64_t>(value);
      else out.clear(), i = argc;
    }
    if (out.empty()) {
      std::fprintf(stderr, "usage: random_model --out DIR [--layers 2] [--hidden 576] [--intermediate 1536] [--heads 9] "
                           "[--kv-heads 3] [--vocab 49152] [--seed 1]\n");
      return 2;
    }
    gsq::bench::write_random_model(shape, out);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "random_model: error: %s\n", error.what());
    return 1;
  }
  std::printf("wrote %s (%ld layers, hidden %ld, intermediate %ld)\n", out.c_str(), shape.layers, shape.hidden, shape.intermediate);
}
