#!/usr/bin/env bash
# Run every test: qlib's unit tests, papermill runs of each chapter with its smoke
# parameters, and nbval re-execution of each committed notebook against its stored outputs.
# Extra arguments go to pytest: options (`-k rd`) keep the default paths, while paths
# (`tests/test_rd.py notebooks/04_rd_bounds.ipynb`) replace them.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
paths=(tests notebooks)
for arg in "$@"; do
  case "$arg" in -*) ;; *) if [ -e "${arg%%::*}" ]; then paths=(); fi ;; esac
done
python -m pytest "${paths[@]}" --nbval --nbval-current-env \
  --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider "$@"
