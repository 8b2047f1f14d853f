#!/usr/bin/env python3
"""Makes tests/data/tokenizers/: six small BPE tokenizers trained with Hugging Face's `tokenizers`
on data/llama-bytes-3m/calib.txt, each set up as a real model family's tokenizer.json is (the
normalizer, pre-tokenizer, BPE options and post-processor of Llama-3, Qwen2, SmolLM2, GPT-2 with a
prefix space, Llama-2 and Mistral), and expected.json: for every text of texts() the ids that
transformers' `PreTrainedTokenizerFast(tokenizer_file=...)(text).input_ids` gives, checked equal
to `tokenizers`' own encode. tests/test_tokenizer.cpp requires gsq's tokenizer to give the same.

    build/interop-venv/bin/python tests/data/make_tokenizers.py [--out DIR] [--check]

--check writes nothing: it fails unless the installed transformers still gives expected.json's ids
for the committed tokenizer files (ctest interop_tokenizers runs it)."""
import argparse
import json
import pathlib
import random
import sys
import tempfile

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The pre-tokenizer patterns of the real tokenizer.json files (facts of those files).
LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
VOCAB = 700


def corpus():
    text = (ROOT / "data/llama-bytes-3m/calib.txt").read_text(encoding="utf-8", errors="replace")
    extra = ["naïve café résumé über straße", "Ελληνικά και русский язык", "日本語のテキストと中文", "1234567890 3.14159 2026-12-07"]
    return text.splitlines() + extra * 20


def byte_level(name, pre_tokenizer, normalizer=None, prefix=(), specials=("<|endoftext|>",), ignore_merges=False):
    tokenizer = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if normalizer:
        tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=list(specials), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(corpus(), trainer)
    post = [processors.ByteLevel(trim_offsets=False)]
    if prefix:
        bos = prefix[0]
        post.append(processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tokenizer.token_to_id(bos))]))
    tokenizer.post_processor = processors.Sequence(post)
    return name, tokenizer


def sentencepiece_style(name, metaspace):
    """Llama-2 (Prepend and Replace normalizers, no pre-tokenizer) or Mistral (a Metaspace
    pre-tokenizer): characters outside the vocabulary fall back to <0xNN> byte tokens."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    if metaspace:
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    else:
        tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=90, show_progress=False)
    tokenizer.train_from_iterator(corpus(), trainer)
    spec = json.loads(tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    for byte in range(256):  # as in Llama-2's vocabulary; Tokenizer.from_str checks them
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    spec["post_processor"] = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                                                       {"Sequence": {"id": "A", "type_id": 0}}],
                              "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                              "special_tokens": {"<s>": {"id": "<s>", "ids": [vocab["<s>"]], "tokens": ["<s>"]}}}
    return name, Tokenizer.from_str(json.dumps(spec))


def families():
    split = lambda pattern: pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False)
    no_regex = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return [
        byte_level("llama3", pre_tokenizers.Sequence([split(LLAMA3), no_regex]), prefix=("<|begin_of_text|>",),
                   specials=("<|begin_of_text|>", "<|end_of_text|>"), ignore_merges=True),
        byte_level("qwen2", pre_tokenizers.Sequence([split(QWEN2), no_regex]), normalizer=normalizers.NFC(),
                   specials=("<|endoftext|>", "<|im_start|>", "<|im_end|>")),
        byte_level("smollm2", pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                       pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])),
        byte_level("gpt2-prefix-space", pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)),
        sentencepiece_style("llama2", metaspace=False),
        sentencepiece_style("mistral", metaspace=True),
    ]


def texts():
    chosen = [
        "", "Hello world", " Hello  world ", "I'm sure you'll see: DON'T, we've, they'd, it's.", "x" * 300,
        "12345678 3.14159 2026-12-07 ٣٤٥ ５６", "naïve café — résumé über straße", "e\u0301 vs \u00e9 (NFC)", "Ω ﬁ ① ㎏",
        "日本語のテキスト 한국어 中文 Ελληνικά русский", "emoji 🙂👍🏽 family 👨‍👩‍👧", "tabs\tand\nnew\n\nlines\r\n  indented",
        "trailing spaces   ", "   leading", "\u00a0nbsp\u3000ideographic\u2003em\u0085nel", "<|endoftext|>special<|im_start|>x<|im_end|>",
        "<s>bos in text</s> and <unk>", "<|begin_of_text|>Hi<|end_of_text|>", "a<|endoftext|>", "<<|endoftext|>>",
        "code: for (int i = 0; i < n; ++i) { x[i] += 1; }", "URL https://example.com/a?b=c&d=e#f", "$$$ %%% ^^^ ~~~",
        "🙂", "\n", " ", "\u2581already\u2581metaspace", "mixed ÅÄÖ åäö ÆØ æø Ǆ ǅ ǆ",
    ]
    pool = ["a", "b", "Z", "the", " ", "  ", "\t", "\n", "\r\n", "'s", "'LL", "0", "42", "9999", ".", ",", "!?", "é", "ß", "Ж", "日", "本",
            "🙂", "\u0301", "\u00a0", "<|endoftext|>", "<s>", "\u2581", "—", "ﬁ", "١٢", "\u200d", "Ω", "x"]
    generator = random.Random(2026)
    for _ in range(120):
        chosen.append("".join(generator.choice(pool) for _ in range(generator.randint(1, 24))))
    return chosen


def expected_ids(directory, names, all_texts):
    from transformers import PreTrainedTokenizerFast
    result = {}
    for name in names:
        path = str(directory / f"{name}.json")
        fast = PreTrainedTokenizerFast(tokenizer_file=path)
        plain = Tokenizer.from_file(path)
        ids = []
        for text in all_texts:
            transformers_ids = fast(text).input_ids
            assert transformers_ids == plain.encode(text).ids, (name, text)
            ids.append(transformers_ids)
        result[name] = ids
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "tests/data/tokenizers"))
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    if args.check:
        committed = json.loads((out / "expected.json").read_text(encoding="utf-8"))
        names = list(committed["ids"])
        fresh = expected_ids(out, names, committed["texts"])
        bad = [(name, text) for name in names for text, a, b in zip(committed["texts"], committed["ids"][name], fresh[name]) if a != b]
        for name, text in bad[:10]:
            print(f"make_tokenizers --check: {name}: transformers now tokenizes {text!r} differently", file=sys.stderr)
        print(f"make_tokenizers --check: {len(names)} tokenizers x {len(committed['texts'])} texts, {len(bad)} differ")
        return 1 if bad else 0
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for name, tokenizer in families():
        tokenizer.save(str(out / f"{name}.json"))
        names.append(name)
    all_texts = texts()
    expected = {"texts": all_texts, "ids": expected_ids(out, names, all_texts)}
    (out / "expected.json").write_text(json.dumps(expected, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{len(names)} tokenizers, {len(all_texts)} texts -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
