"""Recording a chapter's headline metrics so the regression tests can read them back.

A chapter's last cell calls :func:`record`. The numbers are shown to the reader as a small
table and stored in the cell output under a private MIME type, which
``tests/helpers.py`` reads from a papermill run (the pattern of scrapbook, in a few lines,
since scrapbook is no longer maintained).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["METRICS_MIME", "record", "read_metrics"]

METRICS_MIME = "application/x-qbook-metrics+json"


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"a recorded metric must be finite, got {value!r}")
    return value


def record(**metrics: Any) -> dict[str, Any]:
    """Display and store headline metrics (numbers, strings or booleans).

    Returns the plain-Python dict that was stored.
    """
    from IPython.display import display

    clean = {key: _plain(val) for key, val in metrics.items()}
    width = max((len(k) for k in clean), default=0)
    text = "\n".join(
        f"{k:<{width}}  {v:.6g}" if isinstance(v, float) else f"{k:<{width}}  {v}" for k, v in clean.items()
    )
    display({METRICS_MIME: clean, "text/plain": text}, raw=True)
    return clean


def read_metrics(notebook: Any) -> dict[str, Any]:
    """Collect every :func:`record` output of an executed notebook (an ``nbformat`` node)."""
    found: dict[str, Any] = {}
    for cell in notebook.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if METRICS_MIME in data:
                found.update(data[METRICS_MIME])
    return found
