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
  cmake -S "$source_dir" -B "$home/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_SERVER=OFF -DGGML_NATIVE=ON > "$home/configure.log" 2>&1 ||
    { cat "$home/configure.log"; rm -rf "$home/build"; exit 1; }
fi
cmake --build "$home/build" --target "${missing[@]}" -j"$(nproc)" > "$home/build.log" 2>&1 || { tail -30 "$home/build.log"; exit 1; }
