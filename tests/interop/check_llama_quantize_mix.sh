#!/usr/bin/env bash
# llama-quantize's per-tensor types against gsq's map of them (gsq/format/llama_quantize_mix.hpp):
# every tiny fixture of tests/data (converted to F32 by llama.cpp's convert_hf_to_gguf.py, as
# convert_fixture.py converts them) and data/llama-bytes-3m (the same converter) quantized by
# llama-quantize itself to each preset gsq knows; gguf-py lists the type of every tensor of every
# file (PRESET.types), and the Catch2 case "[interop]" of build/tests/test_gguf_mix compares them,
# tensor by tensor, with gsq's map of the F32 source (and with gsq::GgufFile's reading), printing
# each mismatch by name. Then quantize_model writes the bundled model as llama-quantize's Q4_K_M
# (--format), its Q2_K file (--like), its Q4_1 and Q5_1: the same tensors, types and bytes, and
# llama.cpp runs them. About two minutes on 2 cores.
# Usage: tests/interop/check_llama_quantize_mix.sh BUILD_DIR   (exit 77: the interop readers or the
# test program are missing)
set -euo pipefail
build=$(cd "$1" && pwd)
cd "$(dirname "$0")/../.."
python="$build/interop-venv/bin/python"
[ -x "$python" ] || { echo "SKIP: the interop readers are not installed in $build/interop-venv: run scripts/install_interop.sh $build (scripts/test.sh does)"; exit 77; }
[ -x "$build/tests/test_gguf_mix" ] || { echo "SKIP: $build/tests/test_gguf_mix is not built (cmake --build $build --target test_gguf_mix)"; exit 77; }
scripts/build_llama_cpp.sh "$build" llama-quantize > /dev/null
quantize="$build/llama.cpp/build/bin/llama-quantize"
converter=$(echo "$build"/llama.cpp/llama_cpp_python-*/vendor/llama.cpp)
work="$build/interop-llama-quantize-mix"
rm -rf "$work" && mkdir -p "$work"
presets="Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_0"

# The F32 sources, in one Python process (torch loads once): the fixtures' twins as
# convert_fixture.py writes them, data/llama-bytes-3m as it is (no vocabulary written: the types
# do not depend on it).
"$python" - "$converter" "$work" tests/data/tiny-*/ data/llama-bytes-3m > "$work/convert.log" 2>&1 <<'EOF' ||
import pathlib, sys
sys.path.insert(0, "tests/interop")
from convert_fixture import converter, write_twin
convert = converter(sys.argv[1])
work = pathlib.Path(sys.argv[2])
for model in map(pathlib.Path, sys.argv[3:]):
    out = work / model.name
    out.mkdir(parents=True, exist_ok=True)
    source = model
    if model.name.startswith("tiny-"):
        source = out / "twin"
        write_twin(model, source)
    sys.argv = ["convert_hf_to_gguf.py", str(source), "--outtype", "f32", "--outfile", str(out / "model-f32.gguf")]
    convert.main()
EOF
  { tail -20 "$work/convert.log"; echo "FAIL: llama.cpp's converter"; exit 1; }

failures=0
for dir in "$work"/*/; do
  name=$(basename "$dir")
  for preset in $presets; do
    if ! "$quantize" "$dir/model-f32.gguf" "$dir/$preset.gguf" "$preset" 2 > "$dir/$preset.log" 2>&1; then
      tail -5 "$dir/$preset.log"; echo "FAIL: llama-quantize $name $preset"; failures=$((failures + 1))
    fi
  done
done
# gguf-py's reading of every file: one "name<TAB>ggml type number" line per tensor. The gguf-py on
# PyPI refuses a type it does not know (Q2_0, 42): those files' tensor tables are read by the
# plain walk of the GGUF header in scripts/gguf_tensors.py instead, gsq's reader left out of it.
"$python" - "$work" <<'EOF'
import pathlib, sys
import gguf
sys.path.insert(0, "scripts")
from gguf_tensors import tensors

for path in sorted(pathlib.Path(sys.argv[1]).glob("*/*.gguf")):
    if path.name == "model-f32.gguf":
        continue
    try:
        types = [(t.name, int(t.tensor_type)) for t in gguf.GGUFReader(path).tensors]
    except ValueError:  # a type this gguf-py does not know
        types = [(name, kind) for name, kind, _ in tensors(path)]
    path.with_suffix(".types").write_text("".join(f"{name}\t{kind}\n" for name, kind in types))
EOF
GSQ_LLAMA_QUANTIZE_DIR="$work" "$build/tests/test_gguf_mix" "[interop]" || failures=$((failures + 1))

# gsq's own mixed files of data/llama-bytes-3m: quantize_model --format Q4_K_M (GPTQ), --like
# llama-quantize's Q2_K file (RTN), --format Q4_1 (GPTQ) and Q5_1 (RTN) must give every tensor the type and the bytes of llama-quantize's
# file (gguf-py reads both), and llama-perplexity must score gsq's file as transformers does (1e-3).
model=data/llama-bytes-3m
head -c 32768 "$model/eval.txt" > "$work/eval.txt"
for run in "gptq --format Q4_K_M:Q4_K_M" "rtn --like $work/llama-bytes-3m/Q2_K.gguf:Q2_K" "gptq --format Q4_1:Q4_1" \
           "rtn --format Q5_1:Q5_1"; do
  flags=${run%:*} preset=${run##*:} out="$work/gsq-${run##*:}"
  # shellcheck disable=SC2086  # the flags of the run
  "$build/quantize_model" --model "$model" --byte-tokens --calib "$model/calib.txt" --calib-tokens 4096 --method $flags \
      --export gguf --out "$out" --quiet > /dev/null 2> "$out.log" || { cat "$out.log"; echo "FAIL: quantize_model --method $flags"; failures=$((failures + 1)); continue; }
  if "$python" - "$out/model.gguf" "$work/llama-bytes-3m/$preset.gguf" <<'PY'
import sys
import gguf
ours, theirs = ({t.name: (t.tensor_type.name, int(t.n_bytes)) for t in gguf.GGUFReader(path).tensors} for path in sys.argv[1:])
differ = [f"{name}: gsq {ours.get(name)}, llama-quantize {kind}" for name, kind in theirs.items() if ours.get(name) != kind]
differ += [f"{name}: only in gsq's file" for name in ours.keys() - theirs.keys()]
print("\n".join(differ))
print(f"{len(ours)} tensors, {sum(b for _, b in ours.values())} bytes of tensor data; llama-quantize's {sum(b for _, b in theirs.values())}")
sys.exit(1 if differ else 0)
PY
  then echo "ok:   quantize_model --method $flags: every tensor in llama-quantize's $preset type and size"
  else echo "FAIL: quantize_model --method $flags: not llama-quantize's $preset layout"; failures=$((failures + 1)); fi
  report=$(scripts/llama_cpp_perplexity.sh "$out/model.gguf" "$work/eval.txt" "$build" 2>&1 || true)
  llama=$(echo "$report" | sed -n 's/^llama.cpp.*, \([0-9.]*\) bits per token.*/\1/p')
  transformers=$(echo "$report" | sed -n 's/^transformers.*: \([0-9.]*\) bits per token.*/\1/p')
  if python3 -c "import sys; a, b = float('$llama'), float('$transformers'); sys.exit(abs(a - b) / b > 1e-3)" 2> /dev/null; then
    echo "ok:   llama.cpp runs gsq's $preset mix: $llama bits per token, transformers $transformers"
  else
    echo "$report"; echo "FAIL: llama.cpp '$llama' and transformers '$transformers' on gsq's $preset mix"; failures=$((failures + 1))
  fi
done
# --like llama-quantize's own Q2_K file and --format Q2_K: the same file, byte for byte.
"$build/quantize_model" --model "$model" --byte-tokens --calib "$model/calib.txt" --calib-tokens 4096 --method rtn \
    --format Q2_K --export gguf --out "$work/gsq-format-Q2_K" --quiet > /dev/null 2> "$work/gsq-format-Q2_K.log" || cat "$work/gsq-format-Q2_K.log"
if cmp -s "$work/gsq-Q2_K/model.gguf" "$work/gsq-format-Q2_K/model.gguf"; then
  echo "ok:   --like llama-quantize's Q2_K file and --format Q2_K write the same bytes"
else echo "FAIL: --like llama-quantize's Q2_K file and --format Q2_K differ"; failures=$((failures + 1)); fi
[ "$failures" -eq 0 ]
