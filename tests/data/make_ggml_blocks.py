"""Known-answer vectors for gsq's dequantization of ggml's tensor types, from an independent
implementation: gguf-py's (llama.cpp's Python package, gguf==0.19.0 as pinned in
tests/interop/requirements.txt). For each type, 8 blocks of random bytes whose float fields (the
block scales and mins) are set to ordinary fp16 values, and gguf-py's dequantization of them.

usage: build/interop-venv/bin/python tests/data/make_ggml_blocks.py tests/data/ggml_blocks.safetensors"""
import sys

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T
from gguf.quants import dequantize
from safetensors.numpy import save_file

# Byte offsets of each block's fp16 fields (ggml's block layouts).
HALF_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
    T.TQ1_0: [52], T.TQ2_0: [64],
}
BLOCKS = 8


def main() -> None:
    rng = np.random.default_rng(20261206)
    tensors = {}
    for kind in [T.F16, T.BF16, *HALF_FIELDS]:
        block, size = GGML_QUANT_SIZES[kind]
        if kind in (T.F16, T.BF16):
            values = rng.normal(0, 1, BLOCKS * 32).astype(np.float32)
            raw = (values.astype(np.float16).view(np.uint8) if kind == T.F16
                   else (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8))
        else:
            raw = rng.integers(0, 256, (BLOCKS, size), dtype=np.uint8)
            for offset in HALF_FIELDS[kind]:
                halves = rng.normal(0, 0.05, BLOCKS).astype(np.float16)
                raw[:, offset:offset + 2] = halves.view(np.uint8).reshape(BLOCKS, 2)
            raw = raw.reshape(-1)
        tensors[f"{kind.name}.bytes"] = np.ascontiguousarray(raw)
        tensors[f"{kind.name}.values"] = dequantize(raw, kind).astype(np.float32).reshape(-1)
    save_file(tensors, sys.argv[1], metadata={"made_by": "tests/data/make_ggml_blocks.py with gguf==0.19.0"})


if __name__ == "__main__":
    main()
