#!/usr/bin/env python3
"""Turns a text file into a token-id file for quantize_model / evaluate_model.

Uses the checkpoint's tokenizer.json through the `tokenizers` package (pip install tokenizers
numpy). This is a helper for users; the library never runs Python.

    python3 scripts/tokenize_text.py --tokenizer MODEL/tokenizer.json --text eval.txt --out eval.npy

Writes .npy (uint32) when --out ends in .npy, else raw uint32 little-endian ids.
"""
import argparse
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True, help="the checkpoint's tokenizer.json")
    parser.add_argument("--text", required=True, help="UTF-8 text to tokenize")
    parser.add_argument("--out", required=True, help="output: .npy, or raw uint32 little-endian")
    args = parser.parse_args()
    try:
        import numpy as np
        from tokenizers import Tokenizer
    except ImportError as error:
        print(f"tokenize_text: {error}: pip install tokenizers numpy", file=sys.stderr)
        return 2
    tokenizer = Tokenizer.from_file(args.tokenizer)
    with open(args.text, encoding="utf-8") as stream:
        ids = np.asarray(tokenizer.encode(stream.read()).ids, dtype="<u4")
    if args.out.endswith(".npy"):
        np.save(args.out, ids)
    else:
        ids.tofile(args.out)
    print(f"{len(ids)} tokens -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
