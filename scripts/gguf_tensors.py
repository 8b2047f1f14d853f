"""The tensor table of a GGUF file read from its header, as the GGUF v3 format documents it: the
name, ggml type number and shape of every tensor, and the bytes its data takes. Plain Python, so it
reads files of types the gguf-py on PyPI does not know (Q2_0, 42) too.

usage: python3 scripts/gguf_tensors.py FILE.gguf   (prints "name<TAB>type<TAB>bytes" per tensor)"""
import struct
import sys

# ggml type number -> (weights per block, bytes per block), as ggml defines them.
BLOCKS = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
          10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 30: (1, 2),
          34: (256, 54), 35: (256, 66), 42: (64, 18)}
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def tensors(path):
    """[(name, ggml type number, shape)] of every tensor, in the file's order."""
    data = open(path, "rb").read()
    at = 0

    def take(fmt):
        nonlocal at
        values = struct.unpack_from("<" + fmt, data, at)
        at += struct.calcsize("<" + fmt)
        return values[0] if len(values) == 1 else values

    def string():
        nonlocal at
        size = take("Q")
        at += size
        return data[at - size:at].decode()

    def skip(kind):
        if kind == 8:
            string()
        elif kind == 9:
            item, count = take("I"), take("Q")
            for _ in range(count):
                skip(item)
        else:
            take(SCALARS[kind])

    if data[:4] != b"GGUF" or take("4sI")[1] != 3:
        raise ValueError(f"{path}: not a GGUF v3 file")
    count, entries = take("QQ")
    for _ in range(entries):
        string()
        skip(take("I"))
    table = []
    for _ in range(count):
        name = string()
        dims = take("I")
        shape = [take("Q") for _ in range(dims)]
        kind = take("I")
        take("Q")  # the data offset
        table.append((name, kind, shape))
    return table


def tensor_bytes(kind, shape):
    """The bytes a tensor of ggml type `kind` and `shape` takes."""
    block, size = BLOCKS[kind]
    count = 1
    for dim in shape:
        count *= dim
    return count // block * size


if __name__ == "__main__":
    for name, kind, shape in tensors(sys.argv[1]):
        print(f"{name}\t{kind}\t{tensor_bytes(kind, shape)}")
