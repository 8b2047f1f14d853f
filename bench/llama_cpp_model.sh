#!/usr/bin/env bash
# The bundled model quantized the way a llama.cpp user would, with an importance matrix: llama.cpp's
# own converter -> llama-imatrix on calib.txt -> llama-quantize to Q2_K, Q3_K_S, Q3_K_M, Q4_K_M (and
# Q2_K without the imatrix), each scored by scripts/llama_cpp_perplexity.sh on eval.txt. These are
# the reference points for gsq's K-quant GGUFs at the same file size. Prints the ggml type of every
# tensor of every file, llama-quantize's fallback warnings, and one markdown table at the end.
# Three more files take gsq's K-quant export layout (every block linear in one type, embedding and
# head BF16: llama-quantize --pure with BF16 for both), the same tensors and bytes as
# quantize_model --format q2_k|q3_k|q4_k --export gguf writes: the quantizers compared alone.
# 15-20 minutes on 2 cores once llama.cpp is built (scripts/build_llama_cpp.sh, kept in
# BUILD_DIR/llama.cpp), nearly all of it the nine scorings; everything it writes goes to
# BUILD_DIR/llama-cpp-model and is redone on every run, so a rerun never mixes files of two runs.
#
# Usage: bench/llama_cpp_model.sh [BUILD_DIR]   (default: build, with BUILD_DIR/interop-venv)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
model=data/llama-bytes-3m
ctx=256  # gsq calibrates and evaluates with windows of 256 tokens (bytes)
python="$build/interop-venv/bin/python"
[ -x "$python" ] || { echo "llama_cpp_model.sh: $python is missing (a venv with gguf, torch, transformers, numpy)" >&2; exit 2; }
work="$build/llama-cpp-model"
rm -rf "$work" && mkdir -p "$work"
threads=$(nproc)

scripts/build_llama_cpp.sh "$build" llama-imatrix llama-quantize llama-perplexity
bin="$build/llama.cpp/build/bin"
llama_cpp=$(echo "$build"/llama.cpp/llama_cpp_python-*/vendor/llama.cpp)
[ -f "$llama_cpp/convert_hf_to_gguf.py" ] || { echo "llama_cpp_model.sh: no convert_hf_to_gguf.py under $llama_cpp" >&2; exit 1; }

# 1. The unquantized GGUF, by the vendored converter itself (its gguf-py too, as it does when run
# directly). As-is it cannot convert this model, and all three problems are the tokenizer's, a
# byte-level BPE with 256 byte tokens and no merges; a shim run in the same Python fixes each where
# it arises and changes nothing else:
#  - LlamaModel.set_vocab tries SentencePiece first and imports `sentencepiece` before it looks for
#    tokenizer.model; the venv lacks the module, so it dies with ModuleNotFoundError instead of the
#    FileNotFoundError that sends it on to the tokenizer.json readers. The shim raises exactly that
#    FileNotFoundError when tokenizer.model is absent (what an installed sentencepiece leads to), so
#    nothing needs installing and the run works offline.
#  - The tokenizer hashes to no pre-tokenizer the converter knows (chkhsh 89a1c8ed...), and it
#    refuses unknown ones. The shim writes "default", as gsq's own GGUF export does: with no merges
#    every pre-tokenizer gives one token per byte, so the choice cannot change a tokenization.
#  - With no merges the converter writes no tokenizer.ggml.merges key (gguf-py cannot write an empty
#    array), and llama.cpp refuses to load a gpt2 vocabulary without that key ("cannot find tokenizer
#    merges in model file"). The shim writes the key as an empty string array, as gsq's export does.
# Everything else (tensor names, q/k permutation, hyper-parameters, types) is the converter's own.
# `--outtype auto` keeps the checkpoint's BF16 for the matrices (norms F32): lossless, and the
# highest precision llama-quantize could start from.
f16="$work/model-BF16.gguf"
"$python" - "$llama_cpp" "$model" --outtype auto --outfile "$f16" > "$work/convert.log" 2>&1 <<'EOF' ||
import runpy, sys
from pathlib import Path
llama_cpp = Path(sys.argv.pop(1)).resolve()
sys.path[1:1] = [str(llama_cpp), str(llama_cpp / "gguf-py")]
from conversion import base

set_vocab_sentencepiece = base.TextModel._set_vocab_sentencepiece
def _set_vocab_sentencepiece(self, *args, **kwargs):
    if not (self.dir_model / "tokenizer.model").is_file():
        raise FileNotFoundError(f"File not found: {self.dir_model / 'tokenizer.model'}")
    return set_vocab_sentencepiece(self, *args, **kwargs)
base.TextModel._set_vocab_sentencepiece = _set_vocab_sentencepiece

get_vocab_base_pre = base.TextModel.get_vocab_base_pre
def get_vocab_base_pre_or_default(self, tokenizer):
    try:
        return get_vocab_base_pre(self, tokenizer)
    except NotImplementedError:
        base.logger.warning("llama_cpp_model.sh: unrecognized pre-tokenizer written as 'default'")
        return "default"
base.TextModel.get_vocab_base_pre = get_vocab_base_pre_or_default

import gguf
assert Path(gguf.__file__).is_relative_to(llama_cpp), gguf.__file__  # the converter's own gguf-py
ARRAY, STRING = gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.STRING
pack_val = gguf.GGUFWriter._pack_val
def pack_val_or_empty(self, val, vtype, add_vtype, sub_type=None):
    if vtype == ARRAY and sub_type is not None and len(val) == 0:
        return (self._pack("I", vtype) if add_vtype else b"") + self._pack("I", sub_type) + self._pack("Q", 0)
    return pack_val(self, val, vtype, add_vtype, sub_type)
gguf.GGUFWriter._pack_val = pack_val_or_empty
add_to_gguf = gguf.SpecialVocab.add_to_gguf
def add_to_gguf_with_merges(self, gw, *args, **kwargs):
    add_to_gguf(self, gw, *args, **kwargs)
    if self.load_merges and not self.merges:
        base.logger.warning("llama_cpp_model.sh: no merges: tokenizer.ggml.merges written empty")
        gw.add_key_value(gguf.Keys.Tokenizer.MERGES, [], ARRAY, sub_type=STRING)
gguf.SpecialVocab.add_to_gguf = add_to_gguf_with_merges

sys.argv[0] = str(llama_cpp / "convert_hf_to_gguf.py")
runpy.run_path(sys.argv[0], run_name="__main__")
EOF
  { cat "$work/convert.log"; echo "llama_cpp_model.sh: convert_hf_to_gguf.py failed"; exit 1; }
echo "converted: $f16 ($(grep -c 'torch.bfloat16 --> BF16' "$work/convert.log") tensors BF16, $(grep -c 'torch.bfloat16 --> F32' "$work/convert.log") F32)"
grep -h 'WARNING' "$work/convert.log" | grep -v '\*\*\|^WARNING:hf-to-gguf:$' | sed 's/^/  converter: /' || true

# 2-3. The importance matrix from all of calib.txt (131072 bytes = 512 windows of 256), with
# llama-imatrix's defaults otherwise: output.weight gets none (--process-output off), as a user's
# run gives, and the embedding is a lookup, not a product, so it never has one.
imatrix="$work/imatrix.gguf"
"$bin/llama-imatrix" -m "$f16" -f "$model/calib.txt" -c "$ctx" -t "$threads" -o "$imatrix" \
    > "$work/imatrix.log" 2>&1 || { tail -c 3000 "$work/imatrix.log"; echo "llama-imatrix failed"; exit 1; }
# (Its log can lose its last lines, see step 5: what it covered is read from the file itself.)
grep -h 'Final estimate' "$work/imatrix.log" | sed 's/^.*Final/imatrix: llama-imatrix on calib.txt: final/' || true
"$python" - "$llama_cpp/gguf-py" "$imatrix" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
import gguf
r = gguf.GGUFReader(sys.argv[2])
counts = {t.name[: -len(".counts")]: int(t.data[0]) for t in r.tensors if t.name.endswith(".counts")}
print(f"imatrix: {len(counts)} tensors ({', '.join(sorted({n.split('.', 2)[2].removesuffix('.weight') for n in counts}))}),"
      f" {r.fields['imatrix.chunk_count'].contents()} chunks of {r.fields['imatrix.chunk_size'].contents()} tokens,"
      f" tokens per tensor {sorted(set(counts.values()))}")
EOF

# 4. The quantizations: llama-quantize's own mixtures as a user gets them ("mix"); Q2_K without the
# imatrix shows what the imatrix is worth; "gsq" is gsq's export layout (see the top), where --pure
# makes Q3_K_S all Q3_K and Q4_K_S all Q4_K.
runs=("Q2_K imatrix mix" "Q2_K none mix" "Q3_K_S imatrix mix" "Q3_K_M imatrix mix" "Q4_K_M imatrix mix"
      "Q2_K imatrix gsq" "Q3_K_S imatrix gsq" "Q4_K_S imatrix gsq")
for run in "${runs[@]}"; do
  read -r type matrix layout <<< "$run"
  name="$type-$matrix-$layout"
  flags=()
  [ "$matrix" = imatrix ] && flags+=(--imatrix "$imatrix")
  [ "$layout" = gsq ] && flags+=(--pure --token-embedding-type bf16 --output-tensor-type bf16)
  "$bin/llama-quantize" "${flags[@]}" "$f16" "$work/model-$name.gguf" "$type" "$threads" > "$work/quantize-$name.log" 2>&1 ||
    { tail -c 3000 "$work/quantize-$name.log"; echo "llama-quantize $type failed"; exit 1; }
done

# Every tensor's type, read back from the files (not from llama-quantize's log), and the bits per
# weight of the 28 block linears, which are what gsq quantizes (embedding and head are counted
# apart: gsq keeps them BF16).
"$python" - "$llama_cpp/gguf-py" "$work" "$f16" "${runs[@]}" <<'EOF'
import json, os, re, sys
sys.path.insert(0, sys.argv[1])
import gguf
work, f16, runs = sys.argv[2], sys.argv[3], [r.split() for r in sys.argv[4:]]
files = [("BF16", "none", "-", f16)] + [(t, m, l, os.path.join(work, f"model-{t}-{m}-{l}.gguf")) for t, m, l in runs]
result = []
for type_, matrix, layout, path in files:
    reader = gguf.GGUFReader(path)
    tensors = [{"name": t.name, "type": t.tensor_type.name, "shape": [int(s) for s in t.shape],
                "elements": int(t.n_elements), "bytes": int(t.n_bytes)} for t in reader.tensors]
    linears = [t for t in tensors if t["name"].startswith("blk.") and len(t["shape"]) == 2]
    bpw = 8 * sum(t["bytes"] for t in linears) / sum(t["elements"] for t in linears)
    result.append({"type": type_, "imatrix": matrix, "layout": layout, "file": path, "file_bytes": os.path.getsize(path),
                   "linear_bits_per_weight": bpw, "linear_bytes": sum(t["bytes"] for t in linears),
                   "tensors": tensors})
    log = os.path.join(work, f"quantize-{type_}-{matrix}-{layout}.log")
    warnings = []
    if os.path.exists(log):
        # Shape fallbacks ("not divisible ... falling back to"), and the tensors quantized without
        # importance data because the imatrix has none for them ("did not find weights for").
        warnings = [l.strip().lstrip("= ").replace("llama_model_quantize_impl: ", "") for l in open(log, errors="replace")
                    if re.search(r"did not find weights|fall(ing)? ?back|warning|must use|not divisible|missing", l, re.I)]
    result[-1]["quantize_warnings"] = warnings
    print(f"\n### {type_} ({'imatrix' if matrix == 'imatrix' else 'no imatrix'}{', gsq layout' if layout == 'gsq' else ''}): {path}, {result[-1]['file_bytes']} bytes,"
          f" block linears {bpw:.4f} bits per weight")
    # One row per tensor role, one column per layer: every tensor of the file, read at a glance.
    roles = {}
    for t in tensors:
        m = re.match(r"blk\.(\d+)\.(.*)\.weight$", t["name"])
        if m:
            roles.setdefault(m.group(2), {})[int(m.group(1))] = t
        else:
            print(f"  {t['name']:22s} {t['type']:5s} {t['shape']}")
    layers = sorted({l for r in roles.values() for l in r})
    print(f"  {'blk.N.*':22s} " + " ".join(f"{'blk.' + str(l):6s}" for l in layers) + "  shape")
    for role, by_layer in roles.items():
        print(f"  {role:22s} " + " ".join(f"{by_layer[l]['type']:6s}" for l in layers) + f"  {by_layer[layers[0]]['shape']}")
    print("  llama-quantize warnings: " + ("; ".join(warnings) if warnings else "none"))
json.dump(result, open(os.path.join(work, "tensors.json"), "w"), indent=1)
EOF

# 5. The scores, by the script gsq's own GGUFs are scored with (llama-perplexity on windows of 256,
# second halves scored; and transformers on the same file under the same rule).
echo
files=("$f16")
for run in "${runs[@]}"; do files+=("$work/model-${run// /-}.gguf"); done
for file in "${files[@]}"; do
  name=$(basename "$file" .gguf)
  status=0
  scripts/llama_cpp_perplexity.sh "$file" "$model/eval.txt" "$build" "$ctx" > "$work/$name.perplexity.txt" 2>&1 || status=$?
  [ "$status" -eq 0 ] || { cat "$work/$name.perplexity.txt"; echo "llama_cpp_perplexity.sh failed on $file"; exit 1; }
  # llama_cpp_perplexity.sh keeps its log in BUILD_DIR/llama.cpp/perplexity.log: copied out per file.
  cp "$build/llama.cpp/perplexity.log" "$work/$name.perplexity.log"
  sed "s/^/$name: /" "$work/$name.perplexity.txt"
done

echo
"$python" - "$work" <<'EOF'
import json, os, re, sys
work = sys.argv[1]
result = json.load(open(os.path.join(work, "tensors.json")))
print("| llama.cpp type | imatrix | file bytes | bits per weight of the linear layers | llama-perplexity PPL | bits per token |")
print("|---|---|---|---|---|---|")
for r in result:
    name = os.path.basename(r["file"])[: -len(".gguf")]
    text = open(os.path.join(work, name + ".perplexity.txt")).read()
    ppl, bpt = re.search(r"PPL ([0-9.]+), ([0-9.]+) bits per token", text).groups()
    r.update(ppl=float(ppl), bits_per_token=float(bpt))
    if m := re.search(r"^transformers.*?([0-9.]+) bits per token", text, re.M):
        r["transformers_bits_per_token"] = float(m.group(1))
    type_ = r["type"] + {"-": " (unquantized)", "mix": "", "gsq": " --pure, token_embd/output BF16"}[r["layout"]]
    print(f"| {type_} | {'yes' if r['imatrix'] == 'imatrix' else 'no'} | {r['file_bytes']:,} | {r['linear_bits_per_weight']:.4f} | {ppl} | {bpt} |")
json.dump(result, open(os.path.join(work, "tensors.json"), "w"), indent=1)
EOF
echo "(bits per weight: the 28 linears of the 4 blocks, all bytes of their blocks included. --pure rows: gsq's"
echo " K-quant export layout, so they compare with quantize_model --format q2_k|q3_k|q4_k --export gguf at equal"
echo " tensor bytes. Files, logs, and tensors.json with every tensor's type and every figure: $work; $SECONDS s)"
