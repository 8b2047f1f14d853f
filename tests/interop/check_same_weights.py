"""Loads a gsq compressed-tensors export and gsq's dequantized checkpoint of the same run with transformers and
compares every parameter: the export's loader must rebuild exactly the weights gsq quantized to
(a Mixture-of-Experts model's per-expert tensors included, which transformers fuses into one
tensor per projection; a mix's modules each in its config group's scheme). Exits 1 naming the
first parameter that differs, or one missing.

usage: check_same_weights.py COMPRESSED_TENSORS_DIR DEQUANTIZED_DIR"""
import sys

import torch
from transformers import AutoModelForCausalLM


def main() -> int:
    # Loaded as transformers runs it (each module in its config group's scheme), then decompressed
    # by compressed-tensors itself on the first forward pass: every weight a plain tensor.
    loaded = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32)
    with torch.no_grad():
        loaded(input_ids=torch.zeros((1, 1), dtype=torch.long))
    export = loaded.state_dict()
    dequantized = AutoModelForCausalLM.from_pretrained(sys.argv[2], dtype=torch.float32).state_dict()
    extra = {name for name in export.keys() - dequantized.keys() if not name.endswith((".weight_scale", ".weight_shape"))}
    if dequantized.keys() - export.keys() or extra:  # the scales stay beside the decompressed weights
        print(f"parameters differ: {sorted((dequantized.keys() - export.keys()) | extra)}")
        return 1
    for name, tensor in dequantized.items():
        # compressed-tensors multiplies scale and code in the scales' fp16: the product gsq
        # computes exactly, rounded once to fp16.
        if not (torch.equal(export[name], tensor) or torch.equal(export[name], tensor.half().float())):
            difference = (export[name] - tensor).abs().max().item()
            print(f"{name}: the export's weights differ from gsq's by up to {difference:.3g}")
            return 1
    experts = sum(1 for name in dequantized if "experts" in name)
    print(f"all {len(dequantized)} parameters equal gsq's dequantized weights ({experts} of them fused experts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
