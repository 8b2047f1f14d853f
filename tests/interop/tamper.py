"""Makes the broken copies of gsq's exports that the interop checks must reject, to show the
comparisons catch the classic mistakes:

  tamper.py gptq-v2 GPTQ_DIR OUT_DIR       the same checkpoint declared checkpoint_format gptq_v2:
                                            a reader then takes the stored zero (2^(b-1) - 1) as
                                            the zero itself and shifts every weight by one step
  tamper.py gguf-unpermuted MODEL.gguf OUT  q and k rows put back in Hugging Face's order, as a
                                            converter that forgot llama.cpp's rotary layout writes
  tamper.py experts-swapped DIR OUT_DIR     a compressed-tensors checkpoint with experts 0 and 1
                                            of every layer trading names, as an exporter that
                                            numbered experts wrongly writes"""
import json
import pathlib
import shutil
import sys

import numpy as np
from gguf import GGUFReader


def gptq_v2(source: str, out: str) -> None:
    shutil.copytree(source, out)
    for name in ("config.json", "quantize_config.json"):
        path = pathlib.Path(out) / name
        config = json.loads(path.read_text())
        target = config.get("quantization_config", config)
        target["checkpoint_format"] = "gptq_v2"
        path.write_text(json.dumps(config, indent=2))


def gguf_unpermuted(source: str, out: str) -> None:
    shutil.copyfile(source, out)
    reader = GGUFReader(source)
    heads = {"attn_q": reader.fields["llama.attention.head_count"].contents(),
             "attn_k": reader.fields["llama.attention.head_count_kv"].contents()}
    data = bytearray(pathlib.Path(source).read_bytes())
    for tensor in reader.tensors:
        part = tensor.name.split(".")[-2]
        if part not in heads:
            continue
        rows = np.frombuffer(bytes(tensor.data), dtype=np.uint8).reshape(int(tensor.shape[-1]), -1)
        count, width = rows.shape
        # llama.cpp order (pairs) back to the halves: the inverse of the converter's permutation.
        halves = rows.reshape(heads[part], count // heads[part] // 2, 2, width).swapaxes(1, 2).reshape(count, width)
        start = tensor.data_offset
        data[start:start + halves.size] = halves.tobytes()
    pathlib.Path(out).write_bytes(bytes(data))


def experts_swapped(source: str, out: str) -> None:
    from safetensors.torch import load_file, save_file
    shutil.copytree(source, out)
    path = pathlib.Path(out) / "model.safetensors"
    swap = {".experts.0.": ".experts.1.", ".experts.1.": ".experts.0."}
    renamed = {}
    for name, tensor in load_file(path).items():
        for old, new in swap.items():
            if old in name:
                name = name.replace(old, new)
                break
        renamed[name] = tensor
    save_file(renamed, path, metadata={"format": "pt"})


if __name__ == "__main__":
    {"gptq-v2": gptq_v2, "gguf-unpermuted": gguf_unpermuted,
     "experts-swapped": experts_swapped}[sys.argv[1]](sys.argv[2], sys.argv[3])
