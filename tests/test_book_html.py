"""The built book shows no raw markup: one build (stored outputs, execution off) into a temporary folder.

This is the slowest unit test (one Sphinx build of every page, about 1–2 minutes on 2 cores).
To check another build, e.g. the one `bash scripts/book.sh --execute` made, run
``.venv/bin/python tests/html_leaks.py _build/html``.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from tests.html_leaks import page_leaks, scan


def test_scanner_catches_each_kind_of_leak():
    clean = ('<p>A <span class="math notranslate nohighlight">\\(\\hat b\\)</span> and <code>$HOME</code>.</p>'
             '<pre>\\int x</pre><table><tr><th>a</th><th>b</th></tr><tr><td colspan="2">c</td></tr></table>'
             '<div class="cell_output"><pre>run: 100%|##########| 5/5 [00:01]\nfit: 100%|##| 2/2</pre></div>'
             '<figcaption><span class="caption-number">Book fig. 2: </span>'
             "<span>The paper's Fig. 3 reproduced</span></figcaption>")
    assert page_leaks(clean) == []
    dirty = {
        "<p>the rate $R$ is</p>": "$",
        "<p>a $$x$$ inside</p>": "$$",
        "<p>and \\mathrm{d} here</p>": "TeX command",
        "<p>see {cite:p}<code>lyu2026</code></p>": "MyST role",
        "<p>{numref}<code>fig-x</code></p>": "MyST role",
        "<p>| a | b | |---|---| | 1 | 2 |</p>": "Markdown table as text",
        "<table><tr><td>a</td><td>b</td></tr><tr><td>a</td><td>b</td><td>c</td></tr></table>": "table rows",
        '<figcaption><span class="caption-number">Fig. 5 </span><span>Fig. 3 reproduced</span></figcaption>':
            "figure number",
        '<div class="cell_output"><pre>run:  40%|####  | 2/5\nrun:  80%|######## | 4/5\n'
        "run: 100%|##########| 5/5</pre></div>": "progress bar",
        '<div class="output stream"><pre>\rfit:  10%|#   | 1/10\rfit: 100%|##########| 10/10\n</pre></div>':
            "progress bar",
    }
    for html, kind in dirty.items():
        hits = page_leaks(html)
        assert hits and any(h.startswith(kind) for h in hits), (html, hits)


@pytest.fixture(scope="module")
def built_book(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The book as `bash scripts/book.sh` builds it (stored outputs), written into a temporary folder."""
    out = tmp_path_factory.mktemp("book")
    exe = shutil.which("jupyter-book", path=str(pathlib.Path(sys.executable).parent)) or "jupyter-book"
    run = subprocess.run([exe, "build", str(ROOT), "--path-output", str(out), "--keep-going"],
                         cwd=ROOT, capture_output=True, text=True, timeout=1200)
    html = out / "_build" / "html"
    assert run.returncode == 0 and (html / "index.html").exists(), run.stdout[-3000:] + run.stderr[-3000:]
    return html


def test_built_book_shows_no_raw_markup(built_book: pathlib.Path):
    leaks = scan(built_book)
    report = "\n".join(f"{page}: {hits[:3]}" for page, hits in leaks.items())
    assert leaks == {}, f"markup leaks into the visible text of {len(leaks)} page(s):\n{report}"


def test_every_chapter_page_was_built(built_book: pathlib.Path):
    from tests.helpers import toc_files

    missing = [f for f in toc_files() if not (built_book / (f + ".html")).exists()]
    assert missing == []
