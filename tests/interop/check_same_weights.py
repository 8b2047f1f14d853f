"""Loads a gsq compressed-tensors export and gsq's dequantized checkpoint of the same run with transformers and
compares every parameter: the export's loader must rebuild exactly the weights gsq quantized to
(a Mixture-of-Experts model's per-expert tensors included, which transformers fuses into one
tensor per projection). Exits 1 naming the first parameter that differs, or one missing.

usage: check_same_weights.py COMPRESSED_TENSORS_DIR DEQUANTIZED_DIR"""
import sys

import torch
from transformers import AutoModelForCausalLM, CompressedTensorsConfig


def main() -> int:
    # Decompressed on loading (run_compressed=False): every weight a plain tensor, as the engine computes with it.
    export = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32,
                                                  quantization_config=CompressedTensorsConfig(run_compressed=False)).state_dict()
    dequantized = AutoModelForCausalLM.from_pretrained(sys.argv[2], dtype=torch.float32).state_dict()
    if export.keys() != dequantized.keys():
        print(f"parameters differ: {sorted(export.keys() ^ dequantized.keys())}")
        return 1
    for name, tensor in dequantized.items():
        # compressed-tensors multiplies scale and code in the scales' fp16: the product gsq
        # computes exactly, rounded once to fp16.
        if not (torch.equal(export[name], tensor) or torch.equal(export[name], tensor.half().float())):
            difference = (export[name] - tensor).abs().max().item()
            print(f"{name}: the export's weights differ from gsq's by up to {difference:.3g}")
            return 1
    experts = sum(1 for name in export if "experts" in name)
    print(f"all {len(export)} parameters equal gsq's dequantized weights ({experts} of them fused experts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
