"""``python -m qlib.captioning evaluate``: bad input gives one clear line (issue 13, item 8)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT


def _run(args, tmp_path):
    env = {**os.environ, "QBOOK_CACHE": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "qlib.captioning", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def _one_line_error(out):
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in out.stderr
    return lines[0]


def test_cuda_without_a_gpu_is_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():  # pragma: no cover - CI has no GPU
        pytest.skip("a GPU is present")
    line = _one_line_error(_run(["evaluate", "--device", "cuda", "--n-samples", "2"], tmp_path))
    assert "cuda" in line and "device='cpu'" in line


@pytest.mark.parametrize("text", ['{"images": [', "[{\"videoID\": 1,"])
def test_malformed_data_json_names_the_file(tmp_path, text):
    bad = tmp_path / "my_annotations.json"
    bad.write_text(text)
    line = _one_line_error(_run(["evaluate", "--data", str(bad), "--n-samples", "2"], tmp_path))
    assert "my_annotations.json" in line and "JSON" in line


def test_unknown_metric_is_one_line(tmp_path):
    line = _one_line_error(_run(["evaluate", "--metrics", "CIDEr,SPICE", "--n-samples", "2"], tmp_path))
    assert "SPICE" in line
