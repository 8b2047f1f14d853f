"""Compares a GGUF file gsq wrote with llama.cpp's converter's GGUF of the same weights (its F32
conversion of the same checkpoint): the same metadata keys with the same values, but for what
only describes the file (general.name, alignment, file_type, size_label) and, where the
converter wrote no vocabulary, the tokenizer; the same tensor names and shapes; and every tensor
equal: its bytes where both have one type, else gsq's dequantized by gguf-py equal to the
converter's F32 exactly (rope_freqs, which each computes in its own float steps: to 1e-6).

usage: compare_gguf.py GSQ.gguf CONVERTER.gguf"""
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

DESCRIPTIVE = {"general.name", "general.alignment", "general.file_type", "general.size_label"}


def metadata(reader: GGUFReader, skip_tokenizer: bool) -> dict:
    values = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in DESCRIPTIVE or (skip_tokenizer and key.startswith("tokenizer.")):
            continue
        values[key] = field.contents()
    return values


def main(ours_path: str, theirs_path: str) -> int:
    ours, theirs = GGUFReader(ours_path), GGUFReader(theirs_path)
    skip_tokenizer = theirs.fields["tokenizer.ggml.model"].contents() == "none"
    mine, reference = metadata(ours, skip_tokenizer), metadata(theirs, skip_tokenizer)
    failures = [f"metadata {key}: only in gsq's file" for key in sorted(set(mine) - set(reference))]
    failures += [f"metadata {key}: only in the converter's file" for key in sorted(set(reference) - set(mine))]
    for key in sorted(set(mine) & set(reference)):
        a, b = mine[key], reference[key]
        same = abs(a - b) <= 1e-6 * abs(b) if isinstance(a, float) and isinstance(b, float) else a == b
        if not same:
            failures.append(f"metadata {key}: gsq {a!r}, converter {b!r}")
    tensors, converted = {t.name: t for t in ours.tensors}, {t.name: t for t in theirs.tensors}
    failures += [f"tensor {name}: only in gsq's file" for name in sorted(set(tensors) - set(converted))]
    failures += [f"tensor {name}: only in the converter's file" for name in sorted(set(converted) - set(tensors))]
    for name in sorted(set(tensors) & set(converted)):
        a, b = tensors[name], converted[name]
        if list(a.shape) != list(b.shape):
            failures.append(f"tensor {name}: shape {list(a.shape)}, converter {list(b.shape)}")
            continue
        want = dequantize(b.data, b.tensor_type).astype(np.float32)
        got = dequantize(a.data, a.tensor_type).astype(np.float32).reshape(want.shape)  # gguf-py reads every tensor
        if a.tensor_type == b.tensor_type and not np.array_equal(np.asarray(a.data), np.asarray(b.data)) and name != "rope_freqs.weight":
            failures.append(f"tensor {name} ({a.tensor_type.name}): other bytes than the converter's")
        elif not (np.allclose(got, want, rtol=1e-6, atol=0) if name == "rope_freqs.weight" else np.array_equal(got, want)):
            failures.append(f"tensor {name} ({a.tensor_type.name}): differs from the converter's by up to {np.max(np.abs(got - want))}")
    for failure in failures:
        print(failure)
    print(f"{ours_path}: {len(tensors)} tensors and {len(mine)} metadata keys against the converter's, {len(failures)} differences")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
