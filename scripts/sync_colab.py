"""Keep the Colab install line of every chapter in step with ``repository.url`` in ``_config.yml``.

Each chapter's imports cell starts with a guard that, on Colab only, pip-installs ``qbook-qlib``
from the repository. The repository URL has one home, ``repository.url`` in ``_config.yml`` (the
book's launch buttons are built from it too); this script rewrites the guard's pip line of every
notebook listed in ``_toc.yml`` from it. It edits only that line of that cell's source: no
execution, outputs and every other cell untouched.

Usage (from the repository root)::

    .venv/bin/python scripts/sync_colab.py           # rewrite the notebooks that disagree
    .venv/bin/python scripts/sync_colab.py --check   # exit 1 and list them, change nothing
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys

import nbformat
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: The pip line of the Colab guard, whatever URL it holds now.
PIP_LINE = re.compile(
    r"""^(?P<indent>[ \t]*)get_ipython\(\)\.run_line_magic\("pip", "install -q 'qbook-qlib @ git\+(?P<url>[^']*)'"\)[ \t]*$""",
    re.MULTILINE,
)


def repository_url(config: pathlib.Path = ROOT / "_config.yml") -> str:
    """``repository.url`` of the book's configuration, without a trailing slash or ``.git``."""
    url = str((yaml.safe_load(config.read_text()) or {}).get("repository", {}).get("url") or "").strip()
    if not re.fullmatch(r"https://[^\s'\"]+", url):
        raise ValueError(f"repository.url in {config.name} must be an https URL, got {url!r}")
    return re.sub(r"(\.git)?/*$", "", url)


def install_line(url: str, indent: str = "    ") -> str:
    """The guard's pip line for ``url``."""
    return f"""{indent}get_ipython().run_line_magic("pip", "install -q 'qbook-qlib @ git+{url}'")"""


def chapters(root: pathlib.Path = ROOT) -> list[pathlib.Path]:
    """The notebooks of ``_toc.yml``, in order, plus any other notebook in ``notebooks/``."""
    toc = (root / "_toc.yml").read_text()
    listed = [root / (f + ".ipynb") for f in re.findall(r"file:\s*(notebooks/\S+)", toc)]
    extra = sorted(p for p in (root / "notebooks").glob("*.ipynb") if p not in listed)
    return [p for p in listed if p.exists()] + extra


def install_cell(nb: nbformat.NotebookNode) -> int:
    """Index of the one code cell that holds the Colab pip line; ValueError unless exactly one."""
    found = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and PIP_LINE.search(c.source)]
    if len(found) != 1:
        raise ValueError(f"expected exactly one code cell with the Colab install line, found {len(found)}")
    return found[0]


def sync(path: pathlib.Path, url: str, write: bool = True) -> bool:
    """Make ``path``'s install line install from ``url``; returns whether it disagreed."""
    nb = nbformat.read(path, as_version=4)
    try:
        cell = nb.cells[install_cell(nb)]
    except ValueError as exc:
        raise ValueError(f"{path.name}: {exc}") from None
    new = PIP_LINE.sub(lambda m: install_line(url, m.group("indent")), cell.source)
    if new == cell.source:
        return False
    if write:
        cell.source = new
        nbformat.write(nb, path)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report notebooks that disagree (exit 1)")
    ap.add_argument("notebooks", nargs="*", type=pathlib.Path, help="default: every chapter")
    args = ap.parse_args(argv)
    url = repository_url()
    stale = [p for p in (args.notebooks or chapters()) if sync(p, url, write=not args.check)]
    for p in stale:
        print(f"{'disagrees' if args.check else 'rewrote'}: {p.name} (repository.url = {url})")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
