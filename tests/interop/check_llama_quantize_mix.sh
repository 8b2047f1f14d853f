#!/usr/bin/env bash
# llama-quantize's per-tensor types against gsq's map of them (gsq/format/llama_quantize_mix.hpp):
# every tiny fixture of tests/data (converted to F32 by llama.cpp's convert_hf_to_gguf.py, as
# convert_fixture.py converts them) and data/llama-bytes-3m (the same converter) quantized by
# llama-quantize itself to each preset gsq knows; gguf-py lists the type of every tensor of every
# file (PRESET.types), and the Catch2 case "[interop]" of build/tests/test_gguf_mix compares them,
# tensor by tensor, with gsq's map of the F32 source (and with gsq::GgufFile's reading), printing
# each mismatch by name. About half a minute on 2 cores.
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
presets="Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K Q8_0 Q4_0 Q4_1 Q5_0 Q5_1"

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
# gguf-py's reading of every file: one "name<TAB>ggml type number" line per tensor
"$python" - "$work" <<'EOF'
import pathlib, sys
import gguf
for path in sorted(pathlib.Path(sys.argv[1]).glob("*/*.gguf")):
    if path.name == "model-f32.gguf":
        continue
    reader = gguf.GGUFReader(path)
    path.with_suffix(".types").write_text("".join(f"{t.name}\t{int(t.tensor_type)}\n" for t in reader.tensors))
EOF
GSQ_LLAMA_QUANTIZE_DIR="$work" "$build/tests/test_gguf_mix" "[interop]" || failures=$((failures + 1))
[ "$failures" -eq 0 ]
