"""Helpers the chapter tests share: the notebooks of the table of contents, running one
with papermill, and reading back the metrics it recorded with ``qlib.notebook.record``."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import nbformat
import yaml

from qlib.notebook import read_metrics

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"

__all__ = ["ROOT", "NOTEBOOKS", "toc_files", "toc_notebooks", "smoke_parameters", "run_notebook", "read_metrics",
           "same_sweep"]


def toc_files(toc_path: pathlib.Path = ROOT / "_toc.yml") -> list[str]:
    """Every ``file:`` entry of the Jupyter Book table of contents (root included), in order."""
    toc = yaml.safe_load(toc_path.read_text())
    found = [toc["root"]]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "file" in node:
                found.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in toc.items() if k != "root"})
    return found


def toc_notebooks() -> list[pathlib.Path]:
    """The notebooks listed in ``_toc.yml`` (``notebooks/NAME`` entries), as paths."""
    return [ROOT / (f + ".ipynb") for f in toc_files() if f.startswith("notebooks/")]


def smoke_parameters(path: pathlib.Path) -> dict[str, Any]:
    """The small parameter set a notebook declares in ``metadata.qbook.smoke_parameters``."""
    nb = nbformat.read(path, as_version=4)
    return dict(nb.metadata.get("qbook", {}).get("smoke_parameters", {}))


def run_notebook(path: pathlib.Path, out_dir: pathlib.Path, parameters: dict[str, Any] | None = None,
                 timeout: int = 900) -> tuple[Any, dict[str, Any]]:
    """Execute ``path`` with papermill into ``out_dir`` (never over the committed notebook).

    Returns the executed notebook and the metrics it recorded.
    """
    import papermill as pm

    out = out_dir / path.name
    # No MPLBACKEND here: the kernel must keep matplotlib's inline backend, or figures vanish.
    pm.execute_notebook(
        str(path), str(out), parameters=parameters or {}, cwd=str(path.parent),
        kernel_name="python3", progress_bar=False, execution_timeout=timeout,
    )
    nb = nbformat.read(out, as_version=4)
    return nb, read_metrics(nb)


def load_script(name: str):
    """Import ``scripts/<name>.py`` as module ``name`` (the scripts are not a package)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def same_sweep(a: dict, b: dict) -> bool:
    """Two sweep results are equal: the same settings in the same order, and per setting the same
    captions, summary and per-sample scores (compared as JSON, so ``None == None`` and the float
    arrays compare by value, bit for bit)."""
    from qlib.captioning.sweep import _samples_to_json

    def plain(r: dict) -> str:
        return json.dumps({**r, "samples": _samples_to_json(r["samples"])}, sort_keys=True)

    return list(a) == list(b) and all(plain(a[k]) == plain(b[k]) for k in a)
