"""Notebook regression, part 1: the table of contents and papermill runs.

Part 2 (stored outputs reproduce) is nbval, run by the same test command on ``notebooks/``.
"""

from __future__ import annotations

import pathlib

import nbformat
import pytest

from tests.helpers import NOTEBOOKS, ROOT, run_notebook, smoke_parameters, toc_files, toc_notebooks


def test_every_notebook_is_in_the_toc_and_every_toc_entry_exists():
    listed = set(toc_files())
    on_disk = {f"notebooks/{p.stem}" for p in NOTEBOOKS.glob("*.ipynb")}
    assert on_disk - listed == set(), "notebooks missing from _toc.yml"
    missing = [f for f in listed if not any((ROOT / (f + ext)).exists() for ext in (".ipynb", ".md"))]
    assert missing == [], f"_toc.yml lists files that do not exist: {missing}"


@pytest.mark.parametrize("path", toc_notebooks(), ids=lambda p: p.stem)
def test_notebook_is_committed_executed_with_a_parameters_cell(path: pathlib.Path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), "first code cell must be tagged 'parameters'"
    assert all(c.execution_count is not None for c in code if c.source.strip()), "commit it executed"
    assert not any(o.get("output_type") == "error" for c in code for o in c.outputs)
    assert "injected-parameters" not in {t for c in code for t in c.metadata.get("tags", [])}, (
        "commit the default run, not papermill's copy"
    )


@pytest.mark.parametrize("path", toc_notebooks(), ids=lambda p: p.stem)
def test_notebook_runs_under_papermill_with_smoke_parameters(path: pathlib.Path, tmp_path: pathlib.Path):
    params = smoke_parameters(path)
    nb, metrics = run_notebook(path, tmp_path, params)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells) or not params
    assert metrics, "the chapter's last cell should record its headline metrics with qlib.notebook.record"


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh    # run all tests" in readme
    assert [ln for ln in ci.splitlines() if ln.strip() and not ln.startswith("#")][-1] == "bash scripts/test.sh"
