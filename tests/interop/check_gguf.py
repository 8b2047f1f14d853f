"""Reads a GGUF file that gsq wrote with gguf-py (llama.cpp's own Python reader) and checks every
tensor against the weights gsq meant, stored beside it as float32 .npy files (one per tensor,
named after it), and the metadata against expected.json. Exit status 0: all agree."""
import json
import pathlib
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def main(gguf_path: str, expected_dir: str) -> int:
    reader = GGUFReader(gguf_path)
    expected = pathlib.Path(expected_dir)
    failures = []
    metadata = json.loads((expected / "expected.json").read_text())
    for key, value in metadata.items():
        field = reader.fields.get(key)
        if field is None:
            failures.append(f"metadata {key}: missing")
            continue
        got = field.contents()
        if got != value:
            failures.append(f"metadata {key}: {got!r} != {value!r}")
    names = set()
    for tensor in reader.tensors:
        names.add(tensor.name)
        want = np.load(expected / f"{tensor.name}.npy")
        got = dequantize(tensor.data, tensor.tensor_type).reshape(want.shape)
        if not np.array_equal(got.astype(np.float32), want):
            worst = np.max(np.abs(got - want))
            failures.append(f"tensor {tensor.name} ({tensor.tensor_type.name}): differs by up to {worst}")
    for path in expected.glob("*.npy"):
        if path.stem not in names:
            failures.append(f"tensor {path.stem}: missing")
    for failure in failures:
        print(failure)
    print(f"{len(reader.tensors)} tensors, {len(metadata)} metadata keys checked, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
