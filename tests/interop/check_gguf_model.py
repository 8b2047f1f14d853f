"""Reads a GGUF model that gsq exported with gguf-py (llama.cpp's own Python reader) and checks
it against the gsq output directory it came from: the llama metadata against config.json, the
tokenizer against tokenizer.json, and every tensor, dequantized by gguf-py, against the weights
in the output's model.safetensors (whose linears hold scale * code in F32), exactly. q_proj and
k_proj must come back with their rows in llama.cpp's rotary order (pairs interleaved within each
head), so a file written without that permutation fails here.

usage: check_gguf_model.py MODEL.gguf GSQ_OUTPUT_DIR"""
import json
import pathlib
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.torch import load_file

PARTS = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
         "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
         "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def gguf_name(name: str) -> str:
    fixed = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    if name in fixed:
        return fixed[name]
    _, _, layer, rest = name.split(".", 3)
    return f"blk.{layer}.{PARTS[rest.rsplit('.', 1)[0]]}.weight"


def interleave_rotary_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Hugging Face's rotary halves -> llama.cpp's adjacent pairs, within each head."""
    rows, cols = weight.shape
    return weight.reshape(heads, 2, rows // heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def main(gguf_path: str, output_dir: str) -> int:
    output = pathlib.Path(output_dir)
    config = json.loads((output / "config.json").read_text())
    reader = GGUFReader(gguf_path)
    failures = []
    expected_metadata = {
        "general.architecture": "llama", "llama.block_count": config["num_hidden_layers"],
        "llama.embedding_length": config["hidden_size"], "llama.feed_forward_length": config["intermediate_size"],
        "llama.attention.head_count": config["num_attention_heads"],
        "llama.attention.head_count_kv": config["num_key_value_heads"],
        "llama.context_length": config["max_position_embeddings"], "llama.vocab_size": config["vocab_size"],
        "tokenizer.ggml.model": "gpt2"}
    for key, want in expected_metadata.items():
        field = reader.fields.get(key)
        got = None if field is None else field.contents()
        if got != want:
            failures.append(f"metadata {key}: {got!r} != {want!r}")
    for key, want in {"llama.attention.layer_norm_rms_epsilon": config["rms_norm_eps"],
                      "llama.rope.freq_base": config["rope_theta"]}.items():
        got = reader.fields[key].contents()
        if not np.isclose(got, want, rtol=1e-6):
            failures.append(f"metadata {key}: {got!r} != {want!r}")
    vocab = json.loads((output / "tokenizer.json").read_text())["model"]["vocab"]
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    if [tokens[i] for i in sorted(vocab.values())] != sorted(vocab, key=vocab.get):
        failures.append("tokenizer.ggml.tokens differ from tokenizer.json's vocabulary")

    weights = load_file(str(output / "model.safetensors"))
    by_gguf_name = {gguf_name(name): name for name in weights}
    for tensor in reader.tensors:
        name = by_gguf_name.pop(tensor.name, None)
        if name is None:
            failures.append(f"tensor {tensor.name}: not in the checkpoint")
            continue
        want = weights[name].float().numpy()
        if ".q_proj." in name:
            want = interleave_rotary_rows(want, config["num_attention_heads"])
        if ".k_proj." in name:
            want = interleave_rotary_rows(want, config["num_key_value_heads"])
        got = dequantize(tensor.data, tensor.tensor_type).astype(np.float32).reshape(want.shape)
        if not np.array_equal(got, want):
            failures.append(f"tensor {tensor.name} ({tensor.tensor_type.name}): differs from {name} "
                            f"by up to {np.max(np.abs(got - want))}")
    failures += [f"tensor {name}: missing from the GGUF" for name in by_gguf_name.values()]
    for failure in failures:
        print(failure)
    print(f"{gguf_path}: {len(reader.tensors)} tensors and the metadata checked against {output_dir}, "
          f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
