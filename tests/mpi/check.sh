#!/usr/bin/env bash
# quantize_model spread over MPI ranks writes the bytes one process writes: a tiny DeepSeek-V3
# (experts, one never routed to) and the bundled dense model, quantized with `mpirun -np 2` and
# `-np 3` and without mpirun; then a 2-rank run stopped after a layer and resumed.
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

status=0
mpi 2 "$build/quantize_model" "${deepseek[@]}" --out "$scratch/resumed" --stop-after 1 > /dev/null 2>&1 || status=$?
[ "$status" -ne 0 ] && [ -e "$scratch/resumed.partial/layer-0.safetensors" ] && [ ! -e "$scratch/resumed" ]
mpi 2 "$build/quantize_model" "${deepseek[@]}" --out "$scratch/resumed" --resume > /dev/null
same "$scratch/deepseek-1" "$scratch/resumed"
echo "a 2-rank run stopped after a layer and resumed: the bytes of one process"
