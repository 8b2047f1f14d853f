"""Converts tiny fixtures of tests/data to F32 GGUF files with llama.cpp's own converter,
convert_hf_to_gguf.py (its metadata, names, splits and permutations, unchanged), each beside the
checkpoint it was converted from and the fixture's tokens, in WORK/<fixture name>/:

  twin/        the checkpoint converted: the fixture's own, but where llama.cpp reads a setting
               otherwise than transformers (below)
  model.gguf   llama.cpp's conversion of twin/
  tokens.u32   the fixture's input_ids (reference_logits.safetensors), 40 per sequence

The fixtures have no tokenizer, so the file's vocabulary is left out (tokenizer.ggml.model
"none"): neither the weights nor their evaluation depend on it. Two fixtures are not what
llama.cpp converts or reads as transformers does, so their twins differ from them:
  - tiny-qwen2-moe: llama.cpp's qwen2moe has a mixture in every layer (no mlp_only_layers), so
    the twin drops the dense layer 1 (layer 2 becomes 1);
  - tiny-deepseek-v3: its config.json leaves scoring_func to transformers' default (sigmoid), and
    llama.cpp reads a deepseek2 file without expert_gating_func as softmax-routed (DeepSeek-V2),
    so the twin says "scoring_func": "sigmoid", as DeepSeek-V3's and Kimi-K2's configs do.

With --vocabulary the model's own tokenizer is converted too (a model with a tokenizer.json;
without the sentencepiece package, which the converter tries first, as a model without
tokenizer.model), and a fixture without reference logits gets no tokens.u32.

usage: convert_fixture.py [--vocabulary] LLAMA_CPP_SOURCE_DIR WORK_DIR FIXTURE_DIR...  (one process: torch loads once)"""
import json
import logging
import pathlib
import sys

from safetensors.numpy import load_file, save_file


def write_twin(fixture: pathlib.Path, twin: pathlib.Path) -> None:
    config = json.loads((fixture / "config.json").read_text())
    tensors = load_file(fixture / "model.safetensors")
    if fixture.name == "tiny-qwen2-moe":
        dense = config["mlp_only_layers"]
        kept = [layer for layer in range(config["num_hidden_layers"]) if layer not in dense]
        renamed = {}
        for name, tensor in tensors.items():
            parts = name.split(".")
            if parts[:2] == ["model", "layers"]:
                if int(parts[2]) not in kept:
                    continue
                parts[2] = str(kept.index(int(parts[2])))
            renamed[".".join(parts)] = tensor
        tensors = renamed
        config.update(num_hidden_layers=len(kept), mlp_only_layers=[])
        config.pop("layer_types", None)
    if fixture.name == "tiny-deepseek-v3":
        config.setdefault("scoring_func", "sigmoid")
    twin.mkdir(parents=True, exist_ok=True)
    (twin / "config.json").write_text(json.dumps(config, indent=2))
    save_file(tensors, twin / "model.safetensors")


def converter(source: str, vocabulary: bool = False):
    """llama.cpp's converter, writing no vocabulary unless `vocabulary`."""
    sys.path.insert(0, source)
    import convert_hf_to_gguf
    if vocabulary:
        from conversion.base import TextModel
        sentencepiece = TextModel._set_vocab_sentencepiece

        def without_tokenizer_model(model, *args, **kwargs):
            if not (model.dir_model / "tokenizer.model").is_file():
                raise FileNotFoundError("no tokenizer.model")
            return sentencepiece(model, *args, **kwargs)

        TextModel._set_vocab_sentencepiece = without_tokenizer_model
        logging.disable(logging.WARNING)
        return convert_hf_to_gguf

    def no_vocabulary(model) -> None:
        model.gguf_writer.add_tokenizer_model("none")

    original = convert_hf_to_gguf.get_model_class

    def model_class(*args, **kwargs):
        found = original(*args, **kwargs)
        found.set_vocab = no_vocabulary
        return found

    convert_hf_to_gguf.get_model_class = model_class
    logging.disable(logging.WARNING)
    return convert_hf_to_gguf


def main() -> None:
    vocabulary = sys.argv[1] == "--vocabulary"
    arguments = sys.argv[1 + vocabulary:]
    convert = converter(arguments[0], vocabulary)
    work = pathlib.Path(arguments[1])
    for fixture in map(pathlib.Path, arguments[2:]):
        out = work / fixture.name
        write_twin(fixture, out / "twin")
        if vocabulary:
            for companion in fixture.glob("*"):
                if companion.suffix in (".json", ".jinja") and companion.name != "config.json":
                    (out / "twin" / companion.name).write_bytes(companion.read_bytes())
        if (fixture / "reference_logits.safetensors").exists():
            load_file(fixture / "reference_logits.safetensors")["input_ids"].astype("<u4").tofile(out / "tokens.u32")
        sys.argv = ["convert_hf_to_gguf.py", str(out / "twin"), "--outtype", "f32", "--outfile", str(out / "model.gguf")]
        convert.main()


if __name__ == "__main__":
    main()
