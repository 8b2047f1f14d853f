#!/usr/bin/env bash
# Builds cmake targets of llama.cpp (llama-perplexity, ggml, llama-quantize, ...) from the copy
# that the llama-cpp-python source package on PyPI vendors: CPU only, and no network once the
# package is downloaded. The sources and the build stay in BUILD_DIR/llama.cpp; later calls
# reuse them and build only the targets not built yet (several minutes on 2 cores for the first).
#
# Usage: scripts/build_llama_cpp.sh BUILD_DIR TARGET...
#   programs land in BUILD_DIR/llama.cpp/build/bin/TARGET, libraries in .../bin/libTARGET.so
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: scripts/build_llama_cpp.sh BUILD_DIR TARGET..." >&2; exit 2; }
version=0.3.36  # llama-cpp-python, pinned: it fixes the llama.cpp commit
home="$1/llama.cpp"
shift
# The instruction sets of this machine, as GGML_NATIVE would use them, but never AMX: with AMX,
# ggml-cpu multiplies Q4_0 (and Q4_1, Q8_0, Q4_K...) weights with tile instructions, and GCC 12's
# _tile_loadconfig tells the compiler that ldtilecfg reads 8 bytes of its 64-byte operand, so the
# stores of the tile shapes in ggml_tile_config_init (amx/mmq.cpp) are dropped as dead, a
# configuration with no tile shaped is loaded, and the first tile instruction (tilezero) dies of
# SIGILL. GGML_NATIVE=ON always enables AMX where the CPU has it, so on x86 the ISA options are
# set one by one from what `-march=native` means to the compiler (on other CPUs GGML_NATIVE=ON).
options=(-DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF)
native=$(${CC:-cc} -march=native -dM -E - < /dev/null 2> /dev/null || true)
has() { for macro in "$@"; do grep -q "^#define __${macro}__ 1$" <<< "$native" || { echo OFF; return; }; done; echo ON; }
if [ "$(has x86_64)" = ON ]; then
  options+=(-DGGML_NATIVE=OFF -DGGML_SSE42="$(has SSE4_2)" -DGGML_AVX="$(has AVX)" -DGGML_AVX2="$(has AVX2)"
            -DGGML_FMA="$(has FMA)" -DGGML_F16C="$(has F16C)" -DGGML_BMI2="$(has BMI2)" -DGGML_AVX_VNNI="$(has AVXVNNI)"
            -DGGML_AVX512="$(has AVX512F AVX512CD AVX512VL AVX512DQ AVX512BW)" -DGGML_AVX512_VBMI="$(has AVX512VBMI)"
            -DGGML_AVX512_VNNI="$(has AVX512VNNI)" -DGGML_AVX512_BF16="$(has AVX512BF16)"
            -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
else
  options+=(-DGGML_NATIVE=ON)
fi
# A build configured otherwise (an older version of this script: GGML_NATIVE with AMX, or another
# llama-cpp-python) is thrown away and built again.
key="llama-cpp-python $version ${options[*]}"
if [ -d "$home/build" ] && [ "$(cat "$home/build/gsq-configuration" 2> /dev/null)" != "$key" ]; then
  echo "$home was built with other settings: building it again"
  rm -rf "$home"
fi
missing=()
for target in "$@"; do
  [ -e "$home/build/bin/$target" ] || [ -e "$home/build/bin/lib$target.so" ] || missing+=("$target")
done
((${#missing[@]})) || exit 0
echo "building ${missing[*]} from llama-cpp-python $version's vendored llama.cpp into $home"
if [ ! -d "$home/build" ]; then
  rm -rf "$home" && mkdir -p "$home"
  python3 -m pip download --quiet --disable-pip-version-check --no-binary :all: --no-deps \
      "llama-cpp-python==$version" -d "$home"
  tar -xzf "$home"/llama_cpp_python-*.tar.gz -C "$home"
  source_dir=$(echo "$home"/llama_cpp_python-*/vendor/llama.cpp)
  # A failed configure leaves no build folder behind, so the next call configures again.
  cmake -S "$source_dir" -B "$home/build" "${options[@]}" > "$home/configure.log" 2>&1 ||
    { cat "$home/configure.log"; rm -rf "$home/build"; exit 1; }
  echo "$key" > "$home/build/gsq-configuration"
fi
cmake --build "$home/build" --target "${missing[@]}" -j"$(nproc)" > "$home/build.log" 2>&1 || { tail -30 "$home/build.log"; exit 1; }
