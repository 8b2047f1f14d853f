"""Make the tiny Mixture-of-Experts fixtures in tests/data and their reference logits.

A maintainer's tool, run once; it needs torch, safetensors and Hugging Face transformers (made with
transformers 5.24.0, torch 2.15, on a CPU), e.g. from the repository root:

    build/interop-venv/bin/python tests/data/make_moe_fixtures.py [--out tests/data]

It writes tiny-mixtral/, tiny-qwen2-moe/, tiny-qwen3-moe/ and tiny-deepseek-v3/ under --out, each
like the dense fixtures: config.json and model.safetensors as save_pretrained writes them (float32,
the Hub's tensor names, one 2-D tensor per expert: transformers fuses experts into 3-D tensors in
memory and splits them back on saving, which is checked), but config.json spelt as the Hub's
checkpoints spell it where save_pretrained differs (hub_config: Qwen3-MoE's `num_experts` and
`rope_theta`, DeepSeek-V3's classic `rope_theta` and YaRN `rope_scaling`; the model reloaded from it
must give exactly the logits of the model that was saved), and reference_logits.safetensors with
`input_ids` (int32, 2 x 40) and `logits` (float32, 2 x 40 x vocab) computed by the model reloaded
from that folder (eager attention, eager experts, float32, positions from 0, no padding).
Deterministic: fixed seeds; a rerun writes the same bytes.

Weights are drawn with initializer_range 0.1 (router weights 0.3) instead of 0.02, RMSNorm weights
are 1 + noise and biases are noise, so that logits are not tiny, every norm and bias matters and
routing differs between tokens. In tiny-deepseek-v3 the routers' e_score_correction_bias is random,
and in layer 1 expert 5's is -100: it is never picked, nor is expert 4, the other expert of its
group of two, whose group score it drags down. tiny-deepseek-v3 has YaRN rope scaling, with some
rotary frequencies kept, some ramped and some interpolated. The script checks all of this (and that
no routing choice is a near tie) and fails if it does not hold.
"""

import argparse
import json
import math
import pathlib

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import (
    AutoModelForCausalLM,
    DeepseekV3Config,
    DeepseekV3ForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    Qwen2MoeConfig,
    Qwen2MoeForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

SEED = 2  # a seed under which no routing choice is a near tie (check_routing)
BATCH, SEQ = 2, 40
INIT_STD = 0.1
ROUTER_STD = 0.3
DEAD_LAYER, DEAD_EXPERT = 1, 5  # tiny-deepseek-v3 only

COMMON = dict(vocab_size=96, max_position_embeddings=256, initializer_range=INIT_STD, hidden_act="silu")

# tiny-deepseek-v3's rope scaling, shaped like DeepSeek-V3's and Kimi-K2's (factor 40 and 32 there,
# original length 4096). With qk_rope_head_dim 16 and theta 10000, the correction range for original
# length 64 is [max(floor(-0.99), 0), ceil(2.02)] = [0, 3]: of the 8 frequencies, 0 is kept, 1 and 2 are
# ramped (1/3, 2/3 of the way to interpolated) and 3-7 are interpolated (divided by the factor);
# check_yarn checks this. (Original length 16 would give [0, 1]: no frequency ramped.)
# max_position_embeddings (COMMON) is factor * original.
YARN = dict(
    rope_type="yarn",
    rope_theta=10000.0,
    factor=4.0,
    original_max_position_embeddings=64,
    beta_fast=32,
    beta_slow=1,
    mscale=1.0,
    mscale_all_dim=1.0,
)


def configs():
    """(folder, model class, config) for each fixture."""
    return [
        (
            "tiny-mixtral",
            MixtralForCausalLM,
            MixtralConfig(
                **COMMON,
                hidden_size=64,
                intermediate_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=16,
                num_local_experts=4,
                num_experts_per_tok=2,
            ),
        ),
        (
            "tiny-qwen2-moe",
            Qwen2MoeForCausalLM,
            Qwen2MoeConfig(
                **COMMON,
                hidden_size=64,
                intermediate_size=64,  # the dense layer's MLP
                num_hidden_layers=3,
                mlp_only_layers=[1],
                num_attention_heads=4,
                num_key_value_heads=1,
                num_experts=4,
                num_experts_per_tok=2,
                moe_intermediate_size=32,
                shared_expert_intermediate_size=32,
                norm_topk_prob=False,
                qkv_bias=True,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            ),
        ),
        (
            "tiny-qwen3-moe",
            Qwen3MoeForCausalLM,
            Qwen3MoeConfig(
                **COMMON,
                hidden_size=64,
                intermediate_size=64,  # unused: no mlp_only_layers
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=32,  # not hidden_size / num_attention_heads
                num_experts=4,
                num_experts_per_tok=2,
                moe_intermediate_size=32,
                norm_topk_prob=True,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            ),
        ),
        (
            "tiny-deepseek-v3",
            DeepseekV3ForCausalLM,
            DeepseekV3Config(
                **COMMON,
                hidden_size=32,
                intermediate_size=64,  # the dense layer's MLP
                moe_intermediate_size=32,
                num_hidden_layers=3,
                first_k_dense_replace=1,
                num_attention_heads=4,
                num_key_value_heads=4,
                q_lora_rank=32,
                kv_lora_rank=32,
                qk_nope_head_dim=32,
                qk_rope_head_dim=16,
                v_head_dim=16,
                n_routed_experts=8,
                n_group=4,
                topk_group=2,
                num_experts_per_tok=2,
                n_shared_experts=1,
                norm_topk_prob=True,
                routed_scaling_factor=2.5,
                num_nextn_predict_layers=0,  # no multi-token-prediction layer in the checkpoint
                rope_parameters=YARN,  # config.json gets the classic form, see hub_config
            ),
        ),
    ]


def perturb(model, gen):
    """Router weights N(0, ROUTER_STD^2), norm weights 1 + N(0, 0.2^2), biases N(0, INIT_STD^2),
    DeepSeek's correction biases N(0, 0.05^2)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("mlp.gate.weight") or name.endswith("block_sparse_moe.gate.weight"):
                p.copy_(ROUTER_STD * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(INIT_STD * torch.randn(p.shape, generator=gen))
            elif "norm" in name:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.05 * torch.randn(b.shape, generator=gen))
                if name == f"model.layers.{DEAD_LAYER}.mlp.gate.e_score_correction_bias":
                    b[DEAD_EXPERT] = -100.0


def n_experts(config):
    # the attribute is num_local_experts in Mixtral, DeepSeek-V3 (an alias of n_routed_experts) and
    # Qwen3-MoE (num_experts, the Hub's key, is the alias there), num_experts in Qwen2-MoE
    return getattr(config, "num_local_experts", None) or config.num_experts


def hub_config(folder, config):
    """Rewrite config.json as the Hub's checkpoints spell it, where save_pretrained spells it otherwise:
    Qwen3-MoE's `num_experts` (not the alias `num_local_experts`) and top-level `rope_theta` (no
    `rope_parameters`); DeepSeek-V3's classic `rope_theta` beside `rope_scaling` with `"type": "yarn"`
    (integers where DeepSeek-V3's config has them), without the derived `head_dim` (= qk_rope_head_dim)
    and `qk_head_dim` that its config lacks. The fixture is then reloaded from this file."""
    path = folder / "config.json"
    c = json.loads(path.read_text())
    if config.model_type == "qwen3_moe":
        c["num_experts"] = c.pop("num_local_experts")
        rope = c.pop("rope_parameters")
        assert rope["rope_type"] == "default", rope
        c["rope_theta"] = rope["rope_theta"]
    elif config.model_type == "deepseek_v3":
        rope = c.pop("rope_parameters")
        assert rope == YARN, rope
        assert c.pop("head_dim") == config.qk_rope_head_dim and c.pop("qk_head_dim") == config.qk_head_dim
        whole = lambda v: int(v) if float(v).is_integer() else v
        c["rope_theta"] = whole(rope["rope_theta"])
        c["rope_scaling"] = {
            "type": "yarn",
            "factor": whole(rope["factor"]),
            "original_max_position_embeddings": rope["original_max_position_embeddings"],
            "beta_fast": rope["beta_fast"],
            "beta_slow": rope["beta_slow"],
            "mscale": rope["mscale"],
            "mscale_all_dim": rope["mscale_all_dim"],
        }
        assert c["max_position_embeddings"] == rope["factor"] * rope["original_max_position_embeddings"]
    else:
        return
    path.write_text(json.dumps(c, indent=2, sort_keys=True) + "\n")


def check_yarn(model):
    """tiny-deepseek-v3's YaRN: the rotary embedding's frequencies, recomputed here from the formulas,
    are partly kept, partly ramped and partly interpolated, and the softmax scale has YaRN's mscale."""
    config, rope = model.config, model.config.rope_parameters
    dim, base, factor = config.qk_rope_head_dim, rope["rope_theta"], rope["factor"]

    def correction_dim(rotations):
        L = rope["original_max_position_embeddings"]
        return dim * math.log(L / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(correction_dim(rope["beta_fast"])), 0)
    high = min(math.ceil(correction_dim(rope["beta_slow"])), dim - 1)
    ramp = [min(max((i - low) / (high - low), 0.0), 1.0) for i in range(dim // 2)]  # 0 kept, 1 interpolated
    inv_freq = [base ** (-2 * i / dim) * (1 - r + r / factor) for i, r in enumerate(ramp)]
    assert 0 in ramp and 1 in ramp and any(0 < r < 1 for r in ramp), ramp
    rotary = model.model.rotary_emb
    expected = torch.tensor(inv_freq, dtype=torch.float64)
    assert torch.allclose(rotary.inv_freq.double(), expected, rtol=1e-6, atol=0), rotary.inv_freq
    assert rotary.attention_scaling == 1.0  # mscale == mscale_all_dim
    mscale = 0.1 * rope["mscale_all_dim"] * math.log(factor) + 1
    scale = model.model.layers[0].self_attn.scaling
    assert math.isclose(scale, config.qk_head_dim**-0.5 * mscale**2, rel_tol=1e-12), scale
    ramp = [round(r, 4) for r in ramp]
    print(f"  yarn: correction range [{low}, {high}], ramp {ramp}, softmax scale {scale:.6f}")


def check_hub_layout(shapes, config):
    """The checkpoint (its tensors' shapes by name) holds one 2-D tensor per expert under the Hub's
    names, no fused 3-D tensors."""
    assert all(len(s) <= 2 for s in shapes.values()), "fused 3-D tensors in the checkpoint"
    assert not any("gate_up_proj" in k for k in shapes), "fused gate_up_proj in the checkpoint"
    mt = config.model_type
    if mt == "mixtral":
        moe, names = "block_sparse_moe", ("w1", "w2", "w3")
    else:
        moe, names = "mlp", ("gate_proj", "up_proj", "down_proj")
    for i in range(config.num_hidden_layers):
        gate = f"model.layers.{i}.{moe}.gate.weight"
        if gate not in shapes:
            continue
        for e in range(n_experts(config)):
            for n in names:
                assert f"model.layers.{i}.{moe}.experts.{e}.{n}.weight" in shapes
        if mt == "deepseek_v3":
            assert f"model.layers.{i}.mlp.gate.e_score_correction_bias" in shapes


def routers(model, input_ids):
    """Per MoE layer: the router's input [tokens, hidden] and the experts it chose [tokens, top_k]."""
    seen, hooks = {}, []
    for i, layer in enumerate(model.model.layers):
        gate = getattr(layer.mlp, "gate", None)
        if gate is not None and hasattr(gate, "top_k"):
            hook = lambda m, args, out, i=i: seen.__setitem__(i, (args[0].reshape(-1, m.hidden_dim), out[2]))
            hooks.append(gate.register_forward_hook(hook))
    with torch.no_grad():
        model(input_ids=input_ids)
    for h in hooks:
        h.remove()
    return seen


@torch.no_grad()
def route(config, gate, x, bias=None, groups=True):
    """Recompute a router's choice from its weights: (sorted expert indices, smallest deciding gap)."""
    k = config.num_experts_per_tok
    logits = x @ gate.weight.T
    if config.model_type != "deepseek_v3":  # softmax, top-k
        top = logits.softmax(-1).sort(-1, descending=True)
        return top.indices[:, :k].sort(-1).values, (top.values[:, k - 1] - top.values[:, k]).min().item()
    # sigmoid scores; choice on scores + bias, within the best topk_group of n_group groups
    biased = torch.sigmoid(logits) + (gate.e_score_correction_bias if bias is None else bias)
    gap = float("inf")
    if groups:
        grouped = biased.view(-1, config.n_group, config.n_routed_experts // config.n_group)
        group_scores = grouped.topk(2, dim=-1).values.sum(-1).sort(-1, descending=True)
        gap = (group_scores.values[:, config.topk_group - 1] - group_scores.values[:, config.topk_group]).min()
        keep = torch.zeros_like(group_scores.values, dtype=torch.bool)
        keep.scatter_(1, group_scores.indices[:, : config.topk_group], True)
        biased = biased.masked_fill(~keep.repeat_interleave(grouped.shape[-1], dim=1), float("-inf"))
    top = biased.sort(-1, descending=True)
    gap = min(gap, (top.values[:, k - 1] - top.values[:, k]).min())
    return top.indices[:, :k].sort(-1).values, float(gap)


def check_routing(model, input_ids):
    """Routing recomputed from the gates matches the model's, is not decided by a near tie, differs
    between tokens and uses every expert but, in tiny-deepseek-v3's DEAD_LAYER, the dead one and its
    group partner. For DeepSeek-V3, count the tokens whose choice the biases and the groups change."""
    config = model.config
    for i, (x, chosen) in routers(model, input_ids).items():
        gate = model.model.layers[i].mlp.gate
        mine, gap = route(config, gate, x)
        assert torch.equal(mine, chosen.sort(-1).values), i
        assert gap > 1e-4, (i, gap)  # float32 round-off cannot flip a choice
        unused = set()
        if config.model_type == "deepseek_v3" and i == DEAD_LAYER:
            unused = {DEAD_EXPERT, DEAD_EXPERT ^ 1}  # groups of 2 experts: the partner's group is dead too
        used = set(chosen.flatten().tolist())
        assert used == set(range(n_experts(config))) - unused, (i, used)
        line = f"  layer {i}: experts used {sorted(used)}, {len(set(map(tuple, mine.tolist())))} distinct sets"
        line += f", smallest deciding gap {gap:.3g}"
        if config.model_type == "deepseek_v3":
            no_bias = route(config, gate, x, bias=torch.zeros_like(gate.e_score_correction_bias))[0]
            no_groups = route(config, gate, x, groups=False)[0]
            line += f", choice changed by the biases for {int((mine != no_bias).any(-1).sum())} tokens"
            line += f", by the groups for {int((mine != no_groups).any(-1).sum())} of {len(mine)}"
        print(line)


def check_moe(config, model, shapes, input_ids):
    """An MoE fixture's checks of the reloaded `model`: the Hub's layout, its experts, YaRN, routing."""
    check_hub_layout(shapes, config)
    assert n_experts(model.config) == n_experts(config)
    if config.model_type == "deepseek_v3":
        check_yarn(model)
    check_routing(model, input_ids)


def make_fixture(out, cls, config, hub_config, check):
    """Write the fixture of `config` to the folder `out`: a `cls` model drawn from SEED, perturbed,
    saved as save_pretrained writes it (without generation_config.json), config.json rewritten by
    hub_config(out, config); the model reloaded from `out` (float32, eager attention and experts) must
    give exactly the saved model's logits, passes check(config, reloaded, tensor shapes by name,
    input_ids), and its logits on input_ids become the reference. make_dense_fixtures.py uses it too."""
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    model = cls(config).eval()
    perturb(model, gen)
    model.save_pretrained(out)
    (out / "generation_config.json").unlink(missing_ok=True)
    hub_config(out, config)
    with safe_open(out / "model.safetensors", "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}

    input_ids = torch.randint(0, config.vocab_size, (BATCH, SEQ), generator=gen)
    reloaded = AutoModelForCausalLM.from_pretrained(
        out, dtype=torch.float32, attn_implementation="eager", experts_implementation="eager"
    ).eval()
    model.set_attn_implementation("eager")
    model.set_experts_implementation("eager")
    with torch.no_grad():
        logits = reloaded(input_ids=input_ids).logits
        before = model(input_ids=input_ids).logits
    diff = (logits - before).abs().max().item()
    assert diff == 0, (out.name, diff)  # the Hub-spelled config.json reloads to the same model
    assert all(reloaded.config.rope_parameters[k] == v for k, v in config.rope_parameters.items()), out.name
    check(config, reloaded, shapes, input_ids)

    save_file(
        {"input_ids": input_ids.to(torch.int32).contiguous(), "logits": logits.float().contiguous()},
        out / "reference_logits.safetensors",
    )
    print(
        f"{out.name}: {len(shapes)} tensors, max |logit| {logits.abs().max().item():.4f}, "
        f"logit std {logits.std().item():.4f}, reload diff {diff:.1e}"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).resolve().parent)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for folder, cls, config in configs():
        make_fixture(args.out / folder, cls, config, hub_config, check_moe)


if __name__ == "__main__":
    main()
