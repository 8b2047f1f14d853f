"""Gives tiny fixtures a tokenizer llama.cpp and gsq both run, so that llama-perplexity can score
gsq's GGUF of them: a byte-level BPE of as many single characters as the model has tokens (space,
newline, then "!" onwards) and no merges, so that any text of those characters is one token a
character whatever the pre-tokenizer; and a text of them (random, seeded).

usage: char_tokenizer.py TEXT_OUT LENGTH MODEL_DIR...   (writes MODEL_DIR/tokenizer.json)"""
import json
import pathlib
import random
import sys

CHARACTERS = ["Ġ", "Ċ"] + [chr(c) for c in range(33, 127)]  # byte-level spellings of " ", "\n", "!", ...


def main() -> None:
    text_path, length = pathlib.Path(sys.argv[1]), int(sys.argv[2])
    for directory in map(pathlib.Path, sys.argv[3:]):
        vocab_size = json.loads((directory / "config.json").read_text())["vocab_size"]
        byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
        tokenizer = {"version": "1.0", "added_tokens": [], "normalizer": None, "pre_tokenizer": byte_level,
                     "post_processor": byte_level, "decoder": byte_level,
                     "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                               "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                               "vocab": {c: i for i, c in enumerate(CHARACTERS[:vocab_size])}, "merges": []}}
        (directory / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
    # Space and "!" to "S": within every fixture's vocabulary (the smallest has 89 tokens).
    alphabet = [" "] + [chr(c) for c in range(33, 84)]
    text_path.write_text("".join(random.Random(0).choice(alphabet) for _ in range(length)))


if __name__ == "__main__":
    main()
