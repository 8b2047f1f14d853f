#!/usr/bin/env python3
"""gsq's tokenizer against transformers on whole text files: for each TEXT, the ids of gsq's
`tokenize` driver must equal transformers' `tokenizer(text).input_ids`, where the transformers
tokenizer is AutoTokenizer of the checkpoint directory (or PreTrainedTokenizerFast of a bare
tokenizer.json). Prints tokens and seconds for both.

    python3 tests/interop/check_tokenizer.py --tokenize build/tokenize --tokenizer MODEL_DIR TEXT...
"""
import argparse
import os
import subprocess
import sys
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenize", required=True, help="gsq's tokenize driver")
    parser.add_argument("--tokenizer", required=True, help="a checkpoint directory or a tokenizer.json")
    parser.add_argument("texts", nargs="+")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    if os.path.isdir(args.tokenizer):
        reference = AutoTokenizer.from_pretrained(args.tokenizer)
    else:
        reference = PreTrainedTokenizerFast(tokenizer_file=args.tokenizer)
    failures = 0
    for path in args.texts:
        with open(path, encoding="utf-8", newline="") as stream:
            text = stream.read()
        start = time.perf_counter()
        want = reference(text).input_ids
        transformers_seconds = time.perf_counter() - start
        start = time.perf_counter()
        run = subprocess.run([args.tokenize, "--tokenizer", args.tokenizer, "--text", path, "--print"], capture_output=True, text=True)
        gsq_seconds = time.perf_counter() - start
        if run.returncode != 0:
            print(f"check_tokenizer: {path}: tokenize failed: {run.stderr.strip()}", file=sys.stderr)
            failures += 1
            continue
        got = [int(word) for word in run.stdout.split()]
        same = got == want
        if not same:
            first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            print(f"check_tokenizer: {path}: gsq's ids differ from transformers' at token {first} "
                  f"(gsq {got[first:first + 5]}, transformers {want[first:first + 5]}; {len(got)} vs {len(want)} tokens)", file=sys.stderr)
            failures += 1
        print(f"{path}: {len(text.encode('utf-8'))} bytes, {len(want)} tokens, {'equal' if same else 'DIFFERENT'}; "
              f"gsq {gsq_seconds:.3f} s (process), transformers {transformers_seconds:.3f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
