"""Loads a gsq export with Hugging Face transformers (its own loader: compressed-tensors, GPTQ
through GPTQModel/optimum, or GGUF through gguf_file=) and scores a text with gsq's evaluation
rule: the text's bytes (or the tokenizer's ids, or a .u32 file's token ids) in non-overlapping windows, each window's first
`window - 1` tokens predicting the next ones, a fresh context per window. Compares the loss with
the one gsq computed (the manifest's evaluation) and exits 1 when they differ by more than the
tolerance (relative). Without a manifest it prints the figure; with --second-half it scores
only the second half of each window, as llama.cpp's llama-perplexity does.

usage: check_transformers.py EXPORT_PATH TEXT [MANIFEST] [--tolerance 1e-4] [--window N] [--second-half]
EXPORT_PATH: a directory (compressed-tensors, gptq) or a .gguf file."""
import argparse
import json
import math
import pathlib
import struct
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def load(path: pathlib.Path):
    if path.suffix == ".gguf":
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        tokenizer = None  # gguf's tokenizer conversion is not what is checked here
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path) if (path / "tokenizer.json").exists() else None
    return model.eval(), tokenizer


def bits_per_token(model, ids, window: int, second_half: bool) -> float:
    """gsq's rule: each window's first window - 1 tokens predict the next ones. llama.cpp's
    (second_half): the whole window is the input, and only the predictions of tokens
    window / 2 + 1 .. window - 1 are scored."""
    windows = len(ids) // window
    tokens = torch.tensor(ids[: windows * window], dtype=torch.long).reshape(windows, window)
    first = window // 2 if second_half else 0
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, windows, 32):
            batch = tokens[start:start + 32]
            inputs = batch if second_half else batch[:, :-1]
            logits = model(input_ids=inputs).logits.float()[:, first:window - 1]
            targets = batch[:, first + 1:]
            total += torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum").item()
            count += targets.numel()
    return total / count / math.log(2)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("export")
    parser.add_argument("text")
    parser.add_argument("manifest", nargs="?")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--window", type=int)
    parser.add_argument("--second-half", action="store_true")
    args = parser.parse_args()
    evaluation = json.loads(pathlib.Path(args.manifest).read_text())["evaluation"] if args.manifest else None
    window = args.window or (evaluation["window"] if evaluation else 256)
    model, tokenizer = load(pathlib.Path(args.export))
    data = pathlib.Path(args.text).read_bytes()
    ids = list(data)
    if args.text.endswith(".u32"):  # token ids, as gsq reads them
        ids = list(struct.unpack(f"<{len(data) // 4}I", data))
    elif tokenizer is not None:
        tokenized = tokenizer(data.decode("utf-8"))["input_ids"]
        if tokenized != ids:
            print("the export's tokenizer does not give the text's bytes as ids")
            return 1
    theirs = bits_per_token(model, ids, window, args.second_half)
    rule = "second halves of windows" if args.second_half else "windows"
    if evaluation is None:
        print(f"transformers on {args.export}: {theirs:.5f} bits per token, PPL {2 ** theirs:.4f} ({rule} of {window})")
        return 0
    ours = evaluation["bits_per_token"]
    difference = abs(theirs - ours) / ours
    print(f"{args.export}: transformers {theirs:.7f} bits per token, gsq {ours:.7f}, relative difference {difference:.2e}")
    return 0 if difference <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
