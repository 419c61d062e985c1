"""The Colab install line of every chapter installs from ``repository.url`` of ``_config.yml``."""

from __future__ import annotations

import pathlib
import shutil

import nbformat
import pytest

from tests.helpers import ROOT, load_script


sync_colab = load_script("sync_colab")


@pytest.mark.parametrize("path", sync_colab.chapters(), ids=lambda p: p.stem)
def test_install_cell_agrees_with_the_config(path: pathlib.Path):
    url = sync_colab.repository_url()
    nb = nbformat.read(path, as_version=4)
    source = nb.cells[sync_colab.install_cell(nb)].source
    assert sync_colab.install_line(url).strip() in source, (
        f"{path.name} installs from another URL than repository.url ({url}): "
        "run `.venv/bin/python scripts/sync_colab.py`"
    )


def test_sync_rewrites_only_the_pip_line(tmp_path: pathlib.Path):
    src = ROOT / "notebooks" / "00_overview.ipynb"
    nb_path = shutil.copy(src, tmp_path / src.name)
    before = nbformat.read(nb_path, as_version=4)
    url = "https://example.org/someone/fork"
    assert sync_colab.sync(pathlib.Path(nb_path), url) is True
    after = nbformat.read(nb_path, as_version=4)
    i = sync_colab.install_cell(after)
    assert f"git+{url}'" in after.cells[i].source
    changed = [k for k, (a, b) in enumerate(zip(before.cells, after.cells)) if a != b]
    assert changed == [i]
    diff = set(before.cells[i].source.splitlines()) ^ set(after.cells[i].source.splitlines())
    assert len(diff) == 2 and all("run_line_magic" in line for line in diff)
    assert after.cells[i].outputs == before.cells[i].outputs
    assert sync_colab.sync(pathlib.Path(nb_path), url) is False  # idempotent


def test_bad_config_url_is_refused(tmp_path: pathlib.Path):
    cfg = tmp_path / "_config.yml"
    cfg.write_text("repository:\n  url: not a url\n")
    with pytest.raises(ValueError, match="repository.url"):
        sync_colab.repository_url(cfg)
    cfg.write_text("repository:\n  url: https://github.com/a/b.git/\n")
    assert sync_colab.repository_url(cfg) == "https://github.com/a/b"
