#!/usr/bin/env bash
# Execute chapters in place, the way they are committed: run every cell, then merge each cell's
# stream pieces (a tqdm bar arrives as dozens of "\r" refreshes; merged, the stored output and
# the rendered book show its final line). Usage: bash scripts/execute.sh notebooks/NN_topic.ipynb ...
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
set -e
[ "$#" -gt 0 ] || { echo "usage: bash scripts/execute.sh notebooks/NN_topic.ipynb ..." >&2; exit 2; }
for nb in "$@"; do
  jupyter nbconvert --to notebook --execute --inplace "$nb"
  jupyter nbconvert --to notebook --inplace --coalesce-streams "$nb"
done
