# Sourced by scripts/book.sh and scripts/test.sh: make (once) and activate the local
# virtualenv .venv with everything requirements-ci.txt pins, plus qlib in editable mode.
# A writable virtualenv matters: pycocoevalcap writes temporary files inside its own package.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if ! command -v java >/dev/null 2>&1; then
  echo "warning: no 'java' on PATH; pycocoevalcap's tokenizer (CIDEr) needs Java 17: install openjdk-17-jre-headless." >&2
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
STAMP=.venv/.qbook-installed
WANT="$(cat requirements-ci.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  .venv/bin/python -m pip install --quiet -r requirements-ci.txt
  .venv/bin/python -m pip install --quiet --no-deps -e .
  echo "$WANT" > "$STAMP"
fi
# shellcheck disable=SC1091
source .venv/bin/activate
export PYTHONHASHSEED=0 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}"
