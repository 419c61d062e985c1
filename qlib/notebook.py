"""Recording a chapter's headline metrics so the regression tests can read them back.

A chapter's last cell calls :func:`record`. The numbers are shown to the reader as a small
table and stored in the cell output under a private MIME type, which
``tests/helpers.py`` reads from a papermill run (the pattern of scrapbook, in a few lines,
since scrapbook is no longer maintained).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["METRICS_MIME", "RecordedMetrics", "record", "read_metrics"]

METRICS_MIME = "application/x-qbook-metrics+json"


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"a recorded metric must be finite, got {value!r}")
    return value


class RecordedMetrics(dict):  # type: ignore[type-arg]
    """The dict :func:`record` returns: shown once, by :func:`record` itself.

    A chapter's last cell is ``record(...)``; IPython would display its return value a second
    time (as a dict repr). ``_ipython_display_`` that shows nothing stops that, while the
    value stays an ordinary dict for the caller.
    """

    def _ipython_display_(self) -> None:
        return None


def record(**metrics: Any) -> dict[str, Any]:
    """Display and store headline metrics (numbers, strings or booleans).

    Returns the plain-Python dict that was stored (a :class:`RecordedMetrics`, which does
    not display again when it is the last expression of a cell).
    """
    from IPython.display import display

    clean = {key: _plain(val) for key, val in metrics.items()}
    width = max((len(k) for k in clean), default=0)
    text = "\n".join(
        f"{k:<{width}}  {v:.6g}" if isinstance(v, float) else f"{k:<{width}}  {v}" for k, v in clean.items()
    )
    display({METRICS_MIME: clean, "text/plain": text}, raw=True)
    return RecordedMetrics(clean)


def read_metrics(notebook: Any) -> dict[str, Any]:
    """Collect every :func:`record` output of an executed notebook (an ``nbformat`` node)."""
    found: dict[str, Any] = {}
    for cell in notebook.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if METRICS_MIME in data:
                found.update(data[METRICS_MIME])
    return found
