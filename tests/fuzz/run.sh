#!/usr/bin/env bash
# Fuzzes the safetensors reader (include/gsq/io/safetensors.hpp) with libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer, starting from the seeds in tests/fuzz/corpus/.
#
#   tests/fuzz/run.sh [seconds]     (default 60; run from anywhere)
#
# Needs clang++ with libFuzzer and nlohmann-json (Debian: clang libclang-rt-14-dev
# nlohmann-json3-dev). Works in build-fuzz/ (or $GSQ_FUZZ_DIR). Exits non-zero when the fuzzer
# finds a crash, undefined behaviour, a leak, an exception other than gsq::Error, an input slower
# than 10 s or an allocation over 2 GB; the input that did it is saved in that directory.
set -euo pipefail

seconds="${1:-60}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
work="${GSQ_FUZZ_DIR:-$root/build-fuzz}"
compiler="${GSQ_FUZZ_CXX:-$(command -v clang++ || command -v clang++-14 || echo clang++)}"
mkdir -p "$work"

echo "building $work/fuzz_safetensors with $compiler"
"$compiler" -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  -I "$root/include" "$root/tests/fuzz/fuzz_safetensors.cpp" -o "$work/fuzz_safetensors"

# libFuzzer adds the inputs it finds to its first corpus directory: give it a scratch copy so the
# seeds in the repository stay as they are.
rm -rf "$work/corpus"
cp -r "$root/tests/fuzz/corpus" "$work/corpus"

# Tokens of the header format, which random mutation would rarely spell out.
cat > "$work/safetensors.dict" <<'TOKENS'
"\"dtype\""
"\"shape\""
"\"data_offsets\""
"\"__metadata__\""
"\"F32\""
"\"F16\""
"\"BF16\""
"\"F64\""
"\"U8\""
"\"I8\""
"\"I16\""
"\"U16\""
"\"I32\""
"\"U32\""
"\"I64\""
"\"U64\""
"\"BOOL\""
"\"F8_E4M3\""
"\"F8_E5M2\""
"\"\\u0000\""
"18446744073709551615"
"9223372036854775808"
"4294967296"
"-1"
"1.5"
"1e400"
"null"
"true"
"[0, 0]"
"[]"
"{}"
TOKENS

"$work/fuzz_safetensors" -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
  -dict="$work/safetensors.dict" -artifact_prefix="$work/" -print_final_stats=1 "$work/corpus"
echo "fuzzing found nothing in ${seconds} s"
