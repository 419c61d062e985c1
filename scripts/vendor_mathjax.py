"""Copy MathJax 3 (shipped by the PyPI package django-static-mathjax) into the book's
static folder, so equations render with no network: Sphinx's default loads MathJax from
a CDN, and offline every equation would show as raw TeX. `_config.yml` points
`mathjax_path` at the copy. Usage: python scripts/vendor_mathjax.py DEST"""

from __future__ import annotations

import importlib.util
import pathlib
import shutil
import sys


def main(dest: str) -> None:
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("MathJax is missing: pip install django-static-mathjax (requirements-ci.txt pins it).")
    src = pathlib.Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax" / "es5"
    if not (src / "tex-mml-chtml.js").exists():
        sys.exit(f"django-static-mathjax has no es5/tex-mml-chtml.js under {src}")
    target = pathlib.Path(dest)
    if (target / "tex-mml-chtml.js").exists():
        return
    # the whole es5 tree: the combined component plus the fonts, TeX extensions and menu it loads lazily
    shutil.copytree(src, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("sre", "node-main.js"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "book/_static/mathjax")
