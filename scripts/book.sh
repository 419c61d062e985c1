#!/usr/bin/env bash
# Build the book into _build/html, offline. By default it renders the stored notebook
# outputs (the tests prove they reproduce); `bash scripts/book.sh --execute` re-runs every
# notebook first.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
python scripts/vendor_mathjax.py book/_static/mathjax
CONFIG=_config.yml
if [ "${1:-}" = "--execute" ]; then
  CONFIG="$(mktemp --suffix=.yml)"
  sed 's/execute_notebooks: *"off"/execute_notebooks: "force"/' _config.yml > "$CONFIG"
fi
jupyter-book build . --config "$CONFIG" --keep-going
test -f _build/html/index.html && echo "book: $ROOT/_build/html/index.html"
