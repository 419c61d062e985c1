#!/usr/bin/env bash
# Build the book into _build/html, offline. By default it renders the stored notebook
# outputs (the tests prove they reproduce); `bash scripts/book.sh --execute` re-runs every
# notebook first, through scripts/execute.sh, the very step that makes the committed outputs
# (it merges stream pieces and collapses tqdm's "\r" refreshes to the final line), on a copy
# of the sources so that the committed notebooks stay as they are.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
python scripts/vendor_mathjax.py book/_static/mathjax
# The intro's findings are generated from the chapters' recorded metrics (fails on a missing key).
SRC="$ROOT"
if [ "${1:-}" = "--execute" ]; then
  SRC="$(mktemp -d)"
  trap 'rm -rf "$SRC"' EXIT
  tar -C "$ROOT" --exclude=./.venv --exclude=./_build --exclude=./.git --exclude=./.qbook-cache -cf - . \
    | tar -C "$SRC" -xf -
  bash scripts/execute.sh "$SRC"/notebooks/*.ipynb
fi
python scripts/findings.py --root "$SRC"
jupyter-book build "$SRC" --path-output "$ROOT" --keep-going
test -f _build/html/index.html && echo "book: $ROOT/_build/html/index.html"
