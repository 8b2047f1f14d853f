#!/usr/bin/env bash
# gsq's tokenizer against transformers (ctest interop_tokenizers; the venv comes from
# scripts/install_interop.sh):
#   - the ids recorded in tests/data/tokenizers/expected.json (which tests/test_tokenizer.cpp
#     requires gsq to give) still equal the installed transformers' for all six fixture tokenizers;
#   - on whole files (the bundled model's eval.txt, and a multilingual text made here), the
#     tokenize driver's ids equal transformers' tokenizer(text).input_ids for each fixture.
# Usage: tests/interop/check_tokenizers.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
cd "$(dirname "$0")/../.."
python="$build/interop-venv/bin/python"
[ -x "$python" ] || { echo "SKIP: the interop readers are not installed in $build/interop-venv: run scripts/install_interop.sh $build"; exit 77; }
work="$build/interop-tokenizers"
rm -rf "$work" && mkdir -p "$work"
"$python" - "$work/multilingual.txt" <<'PY'
import sys
lines = ["Größere Straßen führen über die Brücke, naïve café — résumé.", "Ελληνικά και русский язык: тест 12345.",
         "日本語のテキストと中文，한국어도 있습니다。", "Emoji 🙂👍🏽 and e\u0301 (NFD) vs \u00e9, ﬁ ligature, ① ㎏.",
         "Code: for (int i = 0; i < n; ++i) { x[i] += 3.14159; }  // it's fine, isn't it? WE'LL SEE", "\t\tindented\r\n\n   spaced   "]
open(sys.argv[1], "w", encoding="utf-8", newline="").write("\n".join(lines * 40))
PY
"$python" tests/data/make_tokenizers.py --check
for tokenizer in tests/data/tokenizers/*.json; do
  [ "$(basename "$tokenizer")" = expected.json ] && continue
  echo "$(basename "$tokenizer" .json):"
  "$python" tests/interop/check_tokenizer.py --tokenize "$build/tokenize" --tokenizer "$tokenizer" data/llama-bytes-3m/eval.txt "$work/multilingual.txt"
done
