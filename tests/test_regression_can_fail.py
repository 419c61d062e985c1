"""The notebook regression must be able to fail: a stored output that no longer matches
re-execution has to turn the nbval run red (a check that cannot fail checks nothing)."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import nbformat

from tests.helpers import NOTEBOOKS, ROOT


def test_nbval_fails_on_a_tampered_stored_output(tmp_path: pathlib.Path):
    nb = nbformat.read(NOTEBOOKS / "00_overview.ipynb", as_version=4)
    streams = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "stream"]
    assert streams, "the overview should print something to tamper with"
    # change one digit of the last printed number, whatever the chapter prints today
    text = streams[-1].text
    m = list(re.finditer(r"\d+", text))[-1]
    before_num = m.group(0)
    after_num = before_num[:-1] + str((int(before_num[-1]) + 1) % 10)
    streams[-1].text = text[:m.start()] + after_num + text[m.end():]
    tampered = tmp_path / "tampered.ipynb"
    nbformat.write(nb, tampered)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval", "--nbval-current-env", "-p", "no:cacheprovider",
         "-q", "--rootdir", str(tmp_path), str(tampered)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode != 0, run.stdout[-2000:]
    assert after_num in run.stdout and before_num in run.stdout
