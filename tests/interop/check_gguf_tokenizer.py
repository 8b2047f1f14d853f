"""tokenizer.ggml.pre as llama.cpp's converter finds it (convert_hf_to_gguf.py, get_vocab_base_pre):
  - gsq's table of check-text hashes and names (gsq/text/llama_cpp_pre_tokenizer.hpp) is the
    converter's, every hash with the name the converter leaves it (the later of two);
  - gsq's check text is the converter's, and on it gsq's tokenizer (the tokenize driver) gives
    each fixture tokenizer's ids as transformers gives them to the converter, so the same hash and
    the same name (all six are unknown to llama.cpp: 700-token vocabularies).

usage: check_gguf_tokenizer.py LLAMA_CPP_SOURCE_DIR TOKENIZE_PROGRAM TOKENIZER.json..."""
import ast
import hashlib
import pathlib
import re
import subprocess
import sys
import tempfile

from transformers import PreTrainedTokenizerFast

HEADER = pathlib.Path(__file__).resolve().parents[2] / "include/gsq/text/llama_cpp_pre_tokenizer.hpp"


def converter_table(source: pathlib.Path) -> tuple[str, dict]:
    body = (source / "conversion/base.py").read_text()
    body = body[body.index("def get_vocab_base_pre(self, tokenizer)"):]
    body = body[:body.index("if res is None:")]
    check_text = ast.literal_eval(re.search(r"\n\s*chktxt = (.*)\n", body).group(1))
    names = {}
    for digest, name in re.findall(r'if chkhsh == "([0-9a-f]{64})":\n\s*#[^\n]*\n\s*res = "([^"]+)"', body):
        names[digest] = name  # a later assignment wins, as in the converter
    return check_text, names


def gsq_table() -> tuple[bytes, dict]:
    header = HEADER.read_text()
    literal = header[header.index("static const std::string text =") + 31:header.index(";\n  return text;")]
    check_text = b"".join(ast.literal_eval("b" + part) for part in re.findall(r'"(?:[^"\\]|\\.)*"', literal))
    names = {}
    for digest, name in re.findall(r'\{"([0-9a-f]{64})", "([^"]+)"\}', header):
        if digest in names:
            raise SystemExit(f"gsq's table holds {digest} twice")
        names[digest] = name
    return check_text, names


def main() -> int:
    source, tokenize = pathlib.Path(sys.argv[1]), sys.argv[2]
    failures = []
    check_text, names = converter_table(source)
    our_text, our_names = gsq_table()
    if our_text != check_text.encode("utf-8"):
        failures.append("gsq's check text is not the converter's")
    if our_names != names:
        failures.append(f"the hash tables differ: {sorted(set(our_names.items()) ^ set(names.items()))}")
    print(f"{len(names)} hashes in the converter's table, {len(our_names)} in gsq's")
    with tempfile.TemporaryDirectory() as work:
        text = pathlib.Path(work) / "check.txt"
        text.write_bytes(check_text.encode("utf-8"))
        for path in sys.argv[3:]:
            want = PreTrainedTokenizerFast(tokenizer_file=path).encode(check_text)
            got = [int(i) for i in subprocess.run([tokenize, "--tokenizer", path, "--text", str(text), "--print"],
                                                  check=True, capture_output=True, text=True).stdout.split()]
            digest = hashlib.sha256(str(want).encode()).hexdigest()
            status = "ok:  " if got == want else "FAIL:"
            if got != want:
                failures.append(f"{path}: gsq's ids on the check text differ from transformers'")
            print(f"{status} {pathlib.Path(path).name}: {len(want)} ids, hash {digest[:16]}..., "
                  f"llama.cpp's name {names.get(digest, '(unknown: the converter refuses it, gsq writes default)')}")
    for failure in failures:
        print("FAIL:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
