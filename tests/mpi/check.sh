#!/usr/bin/env bash
# quantize_model spread over MPI ranks writes the bytes one process writes: a tiny DeepSeek-V3
# (experts, one never routed to) and the bundled dense model, quantized with `mpirun -np 2` and
# `-np 3` and without mpirun; the DeepSeek-V3 split into shards, whose sharded output the ranks
# write together; and a 2-rank run stopped after a layer and resumed.
# Usage: tests/mpi/check.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")/../.." && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# Loopback only; as root (containers) Open MPI must be told it may run.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader OMPI_MCA_pml=ob1 \
       OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1
mpi() { mpirun -np "$1" --oversubscribe --bind-to none "${@:2}"; }

python3 -c "
import struct, sys
sys.stdout.buffer.write(b''.join(struct.pack('<I', (i * 37 + i // 7) % 96) for i in range(640)))" > "$scratch/tokens.bin"
deepseek=(--model "$here/tests/data/tiny-deepseek-v3" --calib "$scratch/tokens.bin" --calib-tokens 320 --calib-window 40
          --bits 2 --group per-channel --steps 20 --batches 2 --threads 1 --quiet)
bytes_model=(--model "$here/data/llama-bytes-3m" --byte-tokens --calib "$here/data/llama-bytes-3m/calib.txt"
             --calib-tokens 2048 --steps 30 --threads 1 --quiet)

same() {  # $1, $2: output directories that must hold the same weights
  cmp "$1/model.safetensors" "$2/model.safetensors"
  cmp "$1/quantized.safetensors" "$2/quantized.safetensors"
}

"$build/quantize_model" "${deepseek[@]}" --out "$scratch/deepseek-1" > /dev/null
for ranks in 2 3; do
  mpi "$ranks" "$build/quantize_model" "${deepseek[@]}" --out "$scratch/deepseek-$ranks" > /dev/null
  same "$scratch/deepseek-1" "$scratch/deepseek-$ranks"
  echo "DeepSeek-V3 on $ranks ranks: the bytes of one process"
done
"$build/quantize_model" "${bytes_model[@]}" --out "$scratch/dense-1" > /dev/null
mpi 2 "$build/quantize_model" "${bytes_model[@]}" --out "$scratch/dense-2" > /dev/null
same "$scratch/dense-1" "$scratch/dense-2"
echo "dense model on 2 ranks: the bytes of one process"

# The same model as a sharded checkpoint: shard k holds layer k - 2, the first the rest.
python3 - "$here/tests/data/tiny-deepseek-v3" "$scratch/sharded-model" <<'PYTHON'
import json, os, shutil, struct, sys
source, target = sys.argv[1], sys.argv[2]
os.makedirs(target)
shutil.copy(os.path.join(source, "config.json"), target)
with open(os.path.join(source, "model.safetensors"), "rb") as f:
    length = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(length))
    data = f.read()
header.pop("__metadata__", None)
def shard_of(name):
    parts = name.split(".")
    return int(parts[2]) + 1 if name.startswith("model.layers.") else 0
shards = sorted({shard_of(name) for name in header})
weight_map = {}
for k in shards:
    names = sorted(name for name in header if shard_of(name) == k)
    entries, blobs, offset = {}, [], 0
    for name in names:
        begin, end = header[name]["data_offsets"]
        entries[name] = {"dtype": header[name]["dtype"], "shape": header[name]["shape"], "data_offsets": [offset, offset + end - begin]}
        blobs.append(data[begin:end])
        offset += end - begin
    text = json.dumps(entries).encode()
    text += b" " * (-len(text) % 8)
    file = "model-%05d-of-%05d.safetensors" % (k + 1, len(shards))
    with open(os.path.join(target, file), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    weight_map.update({name: file for name in names})
with open(os.path.join(target, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {}, "weight_map": weight_map}, f)
PYTHON
sharded=("${deepseek[@]}")
sharded[1]="$scratch/sharded-model"
"$build/quantize_model" "${sharded[@]}" --out "$scratch/sharded-1" > /dev/null
mpi 3 "$build/quantize_model" "${sharded[@]}" --out "$scratch/sharded-3" > /dev/null
for file in "$scratch"/sharded-1/model-*.safetensors "$scratch/sharded-1/model.safetensors.index.json" \
            "$scratch/sharded-1/quantized.safetensors"; do
  cmp "$file" "$scratch/sharded-3/$(basename "$file")"
done
[ "$(ls "$scratch"/sharded-3/model-*.safetensors | wc -l)" -eq 4 ]
echo "a sharded DeepSeek-V3 on 3 ranks: the same 4 shards and index as one process"

status=0
mpi 2 "$build/quantize_model" "${deepseek[@]}" --out "$scratch/resumed" --stop-after 1 > /dev/null 2>&1 || status=$?
[ "$status" -ne 0 ] && [ -e "$scratch/resumed.partial/layer-0.safetensors" ] && [ ! -e "$scratch/resumed" ]
mpi 2 "$build/quantize_model" "${deepseek[@]}" --out "$scratch/resumed" --resume > /dev/null
same "$scratch/deepseek-1" "$scratch/resumed"
echo "a 2-rank run stopped after a layer and resumed: the bytes of one process"
