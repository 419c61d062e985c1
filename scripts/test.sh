#!/usr/bin/env bash
# Run every test: qlib's unit tests, papermill runs of each chapter with its smoke
# parameters, and nbval re-execution of each committed notebook against its stored outputs.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k rd`).
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
python -m pytest tests notebooks --nbval --nbval-current-env \
  --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider "$@"
