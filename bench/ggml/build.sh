#!/usr/bin/env bash
# Builds ggml (scripts/build_llama_cpp.sh) and bench/ggml/llama_cpp_k_quants.cpp against it, into
# BUILD_DIR/k-quants-bench (it links ggml, which gsq does not depend on, so CMake leaves it out).
# Prints the program's path. Recompiles when the source or gsq's headers are newer.
#
# Usage: bench/ggml/build.sh BUILD_DIR   (a configured gsq build: its Thrust path is read there)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=$1
scripts/build_llama_cpp.sh "$build" ggml-base >&2
libs=$(realpath "$build/llama.cpp/build/bin")
ggml_include=$(echo "$build"/llama.cpp/llama_cpp_python-*/vendor/llama.cpp/ggml/include)
thrust_include=$(sed -n 's/^GSQ_THRUST_INCLUDE_DIR:PATH=//p' "$build/CMakeCache.txt")  # the Thrust gsq's build uses
bench="$build/k-quants-bench/llama_cpp_k_quants"
mkdir -p "$(dirname "$bench")"
if [ ! -x "$bench" ] || [ -n "$(find include bench/ggml -newer "$bench" -print -quit)" ]; then
  echo "compiling $bench" >&2
  # The flags of gsq's own programs: with others (no FMA, say) fit_k_quant rounds a few weights
  # differently, and the bench's "gsq fit" would not be the one quantize_layer reports.
  g++ -std=c++17 -O3 -DNDEBUG -march=native -fno-math-errno -fopenmp -Wall -Wextra -Wno-maybe-uninitialized \
      -DEIGEN_DONT_PARALLELIZE -Iinclude \
      -isystem /usr/include/eigen3 -isystem "$thrust_include" -isystem "$ggml_include" \
      bench/ggml/llama_cpp_k_quants.cpp -o "$bench" -L"$libs" -Wl,-rpath,"$libs" -lggml-base -lboost_program_options >&2
fi
echo "$bench"
