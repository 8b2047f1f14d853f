"""Writes a full-precision Llama checkpoint as an F32 GGUF file with gguf-py, for llama.cpp's
llama-perplexity --kl-divergence-base: the metadata (architecture, shapes, tokenizer) copied from
a GGUF that gsq exported from that checkpoint, every tensor the checkpoint's own, the query and
key rows in llama.cpp's rotary order (its converter's permutation, written here independently).

usage: f32_gguf.py EXPORTED.gguf CHECKPOINT_DIR OUT.gguf"""
import pathlib
import sys

import gguf
import numpy as np
from safetensors.torch import load_file

PARTS = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
         "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
         "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
WHOLE = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def hugging_face_name(name: str) -> str:
    base = name.removesuffix(".weight")
    if base in WHOLE:
        return WHOLE[base] + ".weight"
    _, layer, part = base.split(".", 2)
    return f"model.layers.{layer}.{PARTS[part]}.weight"


def rotary_order(weight: np.ndarray, heads: int) -> np.ndarray:
    """Hugging Face's rows of each head (first halves, then second halves) interleaved in pairs."""
    rows, cols = weight.shape
    return weight.reshape(heads, 2, rows // heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


class Writer(gguf.GGUFWriter):
    """gguf-py's writer, which refuses empty arrays; llama.cpp reads them (a byte-level tokenizer's
    merges are an empty list)."""

    def _pack_val(self, val, vtype, add_vtype, sub_type=None):
        if vtype == gguf.GGUFValueType.ARRAY and len(val) == 0:
            return (self._pack("I", vtype) if add_vtype else b"") + self._pack("I", sub_type) + self._pack("Q", 0)
        return super()._pack_val(val, vtype, add_vtype, sub_type=sub_type)


def main() -> None:
    exported, checkpoint, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
    reader = gguf.GGUFReader(exported)
    tensors = load_file(checkpoint / "model.safetensors")
    writer = Writer(out, arch=reader.get_field("general.architecture").contents())
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        value_type = field.types[0]
        # An array's element type is its fourth part (an empty one lists no element types).
        sub_type = gguf.GGUFValueType(int(field.parts[3][0])) if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), value_type, sub_type=sub_type)
    heads = int(reader.get_field("llama.attention.head_count").contents())
    key_value_heads = int(reader.get_field("llama.attention.head_count_kv").contents())
    for tensor in reader.tensors:
        weight = tensors[hugging_face_name(tensor.name)].float().numpy()
        if ".attn_q." in tensor.name or ".attn_k." in tensor.name:
            weight = rotary_order(weight, heads if ".attn_q." in tensor.name else key_value_heads)
        writer.add_tensor(tensor.name, weight)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    main()
