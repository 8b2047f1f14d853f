"""Make the tiny dense fixture tests/data/tiny-qwen3 and its reference logits.

A maintainer's tool, run once; it needs torch, safetensors and Hugging Face transformers (made with
transformers 5.24.0, torch 2.15, on a CPU), e.g. from the repository root:

    OMP_NUM_THREADS=1 build/interop-venv/bin/python tests/data/make_dense_fixtures.py [--out tests/data]

It writes tiny-qwen3/ under --out: a `Qwen3ForCausalLM` shaped like Qwen/Qwen3-0.6B in miniature, with
grouped-query attention (4 heads, 2 key/value heads), an explicit head_dim 32 that is not hidden_size 64 /
4 heads, a per-head RMSNorm of q and of k before the rotary embedding (self_attn.q_norm, k_norm), no
attention biases, a dense SwiGLU MLP and tied embeddings (no lm_head.weight). config.json and
model.safetensors are as save_pretrained writes them (float32), but config.json is spelt as Qwen3's Hub
checkpoints spell it (hub_config: top-level integer `rope_theta` and `"rope_scaling": null`, no
`rope_parameters`; the model reloaded from it must give exactly the logits of the model that was saved),
and reference_logits.safetensors holds `input_ids` (int32, 2 x 40) and `logits` (float32, 2 x 40 x vocab)
computed by the model reloaded from that folder (eager attention, float32, positions from 0, no padding).
Deterministic: fixed seeds; a rerun writes the same bytes. The steps are make_moe_fixtures.py's
(make_fixture, with its perturb): weights are drawn with initializer_range 0.1 instead of 0.02 and
RMSNorm weights (q_norm and k_norm included) are 1 + noise, so that logits are not tiny and every norm
matters. The other dense fixtures, tiny-llama3 and tiny-qwen2, predate these scripts.
"""

import argparse
import json
import pathlib

import torch
from make_moe_fixtures import COMMON, make_fixture
from transformers import Qwen3Config, Qwen3ForCausalLM

ROPE_THETA = 1000000  # Qwen3's, an integer in its Hub configs

CONFIG = Qwen3Config(
    **COMMON,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    tie_word_embeddings=True,
    rope_parameters={"rope_type": "default", "rope_theta": float(ROPE_THETA)},
)


def hub_config(folder, config):
    """Rewrite config.json's `rope_parameters` as Qwen3's Hub checkpoints have it: `rope_theta` at the
    top level, `rope_scaling` null."""
    path = folder / "config.json"
    c = json.loads(path.read_text())
    rope = c.pop("rope_parameters")
    assert rope == config.rope_parameters, rope
    c["rope_theta"] = ROPE_THETA
    c["rope_scaling"] = None
    path.write_text(json.dumps(c, indent=2, sort_keys=True) + "\n")


def check_dense(config, model, shapes, input_ids):
    """The checkpoint holds the tied embedding only, per-head q/k norms and no biases; the reloaded
    model ties its head to the embedding."""
    assert "lm_head.weight" not in shapes and "model.embed_tokens.weight" in shapes
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert not any(k.endswith("bias") for k in shapes), "biases in the checkpoint"
    for i in range(config.num_hidden_layers):
        for n in ("q_norm", "k_norm"):
            assert shapes[f"model.layers.{i}.self_attn.{n}.weight"] == (config.head_dim,)
    assert config.head_dim != config.hidden_size // config.num_attention_heads


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).resolve().parent)
    args = ap.parse_args()
    torch.set_num_threads(1)
    make_fixture(args.out / "tiny-qwen3", Qwen3ForCausalLM, CONFIG, hub_config, check_dense)


if __name__ == "__main__":
    main()
