"""Checks gsq's comparison of a model with its reference (evaluate_model --reference --json)
against an independent computation: transformers runs both checkpoints on the same text under
the same rule (the text's bytes in non-overlapping windows; with --second-half only the
predictions of each window's second half, as llama-perplexity scores), and torch computes each
prediction's KL(P_ref || P_model), top tokens and next-token probabilities in float64. The means
must agree to --tolerance (relative), the same-top rate to one prediction in a thousand.

usage: check_kl.py MODEL_DIR REFERENCE_DIR TEXT GSQ_JSON [--window 256] [--second-half] [--tolerance 1e-4]"""
import argparse
import json
import math
import pathlib
import sys

import torch
from transformers import AutoModelForCausalLM


def log_probs(model_dir: str, tokens: torch.Tensor, first: int) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        rows = [model(input_ids=tokens[start:start + 32, :-1]).logits.float()[:, first:] for start in range(0, len(tokens), 32)]
    return torch.log_softmax(torch.cat(rows).double(), dim=-1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("reference")
    parser.add_argument("text")
    parser.add_argument("gsq_json")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--second-half", action="store_true")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()

    data = pathlib.Path(args.text).read_bytes()
    windows = len(data) // args.window
    tokens = torch.tensor(list(data[: windows * args.window]), dtype=torch.long).reshape(windows, args.window)
    first = args.window // 2 if args.second_half else 0
    q = log_probs(args.model, tokens, first)
    p = log_probs(args.reference, tokens, first)
    nexts = tokens[:, first + 1:].unsqueeze(-1)
    kl = (p.exp() * (p - q)).sum(-1)
    nll, reference_nll = -q.gather(-1, nexts).squeeze(-1), -p.gather(-1, nexts).squeeze(-1)
    ours = {
        "predictions": kl.numel(),
        "kl": kl.mean().item(),
        "kl_p99": torch.quantile(kl.flatten(), 0.99).item(),
        "same_top": (q.argmax(-1) == p.argmax(-1)).double().mean().item(),
        "ppl_ratio": math.exp((nll - reference_nll).mean().item()),
        "delta_p_rms": ((-nll).exp() - (-reference_nll).exp()).pow(2).mean().sqrt().item(),
    }
    comparison = json.loads(pathlib.Path(args.gsq_json).read_text())["comparison"]
    theirs = {
        "predictions": comparison["predictions"],
        "kl": comparison["kl"]["mean"],
        "kl_p99": comparison["kl"]["p99"],
        "same_top": comparison["same_top"]["value"],
        "ppl_ratio": comparison["ppl_ratio"]["value"],
        "delta_p_rms": comparison["delta_p"]["rms"],
    }
    failures = []
    if ours["predictions"] != theirs["predictions"]:
        failures.append(f"predictions: transformers {ours['predictions']}, gsq {theirs['predictions']}")
    for key in ("kl", "kl_p99", "ppl_ratio", "delta_p_rms"):
        if abs(ours[key] - theirs[key]) > args.tolerance * abs(ours[key]):
            failures.append(f"{key}: transformers {ours[key]:.8g}, gsq {theirs[key]:.8g}")
    if abs(ours["same_top"] - theirs["same_top"]) > 1e-3:
        failures.append(f"same_top: transformers {ours['same_top']:.6f}, gsq {theirs['same_top']:.6f}")
    for failure in failures:
        print("differs:", failure)
    print(f"KL {theirs['kl']:.6f} nats (transformers {ours['kl']:.6f}), same top {100 * theirs['same_top']:.2f}% "
          f"({100 * ours['same_top']:.2f}%), PPL ratio {theirs['ppl_ratio']:.6f} ({ours['ppl_ratio']:.6f}) "
          f"over {theirs['predictions']} predictions")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
