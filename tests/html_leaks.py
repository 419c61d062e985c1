"""Find markup that leaked into the visible text of the built book (Jupyter Book's ``_build/html``).

What a reader must never see, outside math, code and ``pre`` blocks: TeX (``$``, ``$$``,
``\\command``), unrendered MyST roles (``{cite:p}``, ``{numref}``, ``{doc}``, …), a Markdown table
that did not parse (``|---|`` as text) or parsed with rows of different cell counts (a bare ``|``
inside math splits a cell), a book figure number that reads like the paper's ("Fig. 5 Fig. 3"),
and a progress bar whose every refresh became its own output line.

Usage: ``.venv/bin/python tests/html_leaks.py _build/html`` prints one line per leaking page and
exits 1 if any leaks. ``tests/test_book_html.py`` builds the book and runs :func:`scan` on it.
"""

from __future__ import annotations

import pathlib
import re
import sys
from html.parser import HTMLParser

__all__ = ["LEAKS", "page_leaks", "scan"]

#: name -> pattern over the visible text of a page
LEAKS: dict[str, re.Pattern[str]] = {
    "$$": re.compile(r"\$\$"),
    "$": re.compile(r"(?<!\$)\$(?!\$)"),
    "TeX command": re.compile(r"\\[A-Za-z]+"),
    "MyST role": re.compile(r"\{(?:cite|numref|doc|ref|eq|glue|term|download|math|sub-ref)(?::[\w-]+)*\}"),
    "Markdown table as text": re.compile(r"\|\s*:?-{3,}:?\s*\|"),
    "figure number like the paper's": re.compile(r"\bFigs?\.[ \t]*\d+[:.]?[ \t]+Figs?\.[ \t]*\d"),
}

#: a tqdm line: "label: 42%|████ | 21/50 [...]"
_BAR = re.compile(r"^(?P<label>[^\n|]*?)\s*(?P<pct>\d{1,3})%\|", re.MULTILINE)

_VOID = {"br", "img", "meta", "link", "input", "hr", "source", "wbr", "area", "base", "col", "embed", "param",
         "track"}
#: block-level tags: text on either side of their boundaries never runs together
_BLOCKS = {"p", "div", "td", "th", "tr", "li", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "figcaption",
           "blockquote", "section", "table", "ul", "ol", "nav", "header", "footer", "caption"}
_SKIP_TAGS = {"script", "style", "pre", "code", "kbd", "samp", "svg", "math", "mjx-container"}


class _Visible(HTMLParser):
    """Collects the visible text (minus math, code, pre), table row widths and output blocks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool, bool, bool]] = []  # (tag, skips text, output class, output pre)
        self.skip = 0
        self.pre = 0
        self.text: list[str] = []
        self.tables: list[list[int]] = []
        self.outputs: list[list[str]] = []
        self.captions: list[str] = []
        self._caption_depth = 0  # stack depth of the open caption-text element, 0 outside
        self._output_class = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            return
        if tag in _BLOCKS:
            self.text.append("\n")
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        if "caption-text" in cls:
            self.captions.append("")
            self._caption_depth = len(self.stack) + 1
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append(0)
        elif tag in ("td", "th") and self.tables and self.tables[-1]:
            span = a.get("colspan") or "1"
            self.tables[-1][-1] += int(span) if span.isdigit() else 1
        in_output = any(c in ("output", "cell_output") or c.startswith("output_") for c in cls)
        self._output_class += in_output
        is_pre = tag == "pre" and self._output_class > 0
        if is_pre:
            self.outputs.append([])
        skips = (tag in _SKIP_TAGS or "math" in cls or any(c.startswith(("highlight", "MathJax")) for c in cls))
        self.stack.append((tag, skips, in_output, is_pre))
        self.skip += skips
        self.pre += is_pre

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID or not self.stack:
            return
        # tolerate unclosed inner tags: pop to the matching one
        if tag in _BLOCKS:
            self.text.append("\n")
        while self.stack:
            t, skips, in_output, is_pre = self.stack.pop()
            self.skip -= skips
            self._output_class -= in_output
            self.pre -= is_pre
            if len(self.stack) < self._caption_depth:
                self._caption_depth = 0
            if t == tag:
                break

    def handle_data(self, data: str) -> None:
        if self.pre and self.outputs:
            self.outputs[-1].append(data)
        if not self.skip:
            self.text.append(data)
        if self._caption_depth and len(self.stack) >= self._caption_depth:
            self.captions[-1] += data


def _refreshes(block: str) -> list[str]:
    """Progress-bar labels that appear at a lower and then a higher percentage in one output block."""
    seen: dict[str, int] = {}
    bad = []
    # a browser shows a raw "\r" inside <pre> as a line break (HTML turns CR into LF)
    for m in _BAR.finditer(block.replace("\r\n", "\n").replace("\r", "\n")):
        label, pct = m.group("label").strip(), int(m.group("pct"))
        if label in seen and pct > seen[label] and label not in bad:
            bad.append(label)
        seen[label] = pct
    return bad


def page_leaks(html: str) -> list[str]:
    """Every leak on one page, as short human-readable strings."""
    v = _Visible()
    v.feed(html)
    v.close()
    # one line per block, spaces collapsed within it: a pattern never spans two cells or paragraphs
    text = "\n".join(filter(None, (re.sub(r"\s+", " ", ln).strip() for ln in "".join(v.text).split("\n"))))
    hits = []
    for name, pat in LEAKS.items():
        for m in pat.finditer(text):
            lo, hi = max(0, m.start() - 30), min(len(text), m.end() + 30)
            hits.append(f"{name}: …{text[lo:hi]}…")
    for caption in v.captions:
        if re.match(r"\s*Figs?\.?\s*\d", caption):  # "Book fig. 5: Fig. 3 reproduced"
            hits.append(f"caption opens with a bare figure number (say \"the paper's Fig. N\"): {caption[:60]!r}")
    for rows in v.tables:
        if len(set(rows)) > 1:
            hits.append(f"table rows with different cell counts {sorted(set(rows))}")
    for block in v.outputs:
        for label in _refreshes("".join(block)):
            hits.append(f"progress bar refreshes shown line by line: {label!r}")
    return hits


def scan(html_root: str | pathlib.Path) -> dict[str, list[str]]:
    """Leaks per page (relative path) of a built book; pages without leaks are left out."""
    root = pathlib.Path(html_root)
    out = {}
    for p in sorted(root.rglob("*.html")):
        rel = p.relative_to(root).as_posix()
        if rel.startswith(("_static/", "_sources/", "_images/")) or rel in ("search.html", "genindex.html"):
            continue
        hits = page_leaks(p.read_text(encoding="utf-8", errors="replace"))
        if hits:
            out[rel] = hits
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python tests/html_leaks.py BUILD_HTML_DIR", file=sys.stderr)
        return 2
    leaks = scan(argv[0])
    for page, hits in leaks.items():
        print(f"{page}: {len(hits)} leak(s), e.g. {hits[:3]}")
    n = len(list(pathlib.Path(argv[0]).rglob("*.html")))
    print(f"html_leaks: {len(leaks)} of {n} pages leak markup")
    return 1 if leaks else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
