"""The symbols of paper Sec. II with their units, default values and where each value comes from.

One table, so that every chapter (and the overview's notation table) uses the same names.
The ``name`` column is the Python spelling used throughout ``qlib``. The processor constants
are read from :class:`qlib.system.Hardware` (whose defaults are the paper's Sec. VI-C), so the
table cannot drift from the code; the ``source`` column says which values the paper gives and
which are this book's choices (the paper gives no full-precision width b and no B_max).
"""

from __future__ import annotations

from dataclasses import dataclass

from qlib.system import Hardware

__all__ = ["Symbol", "SYMBOLS", "symbol_table"]


@dataclass(frozen=True)
class Symbol:
    """One symbol of the system model."""

    tex: str
    name: str
    meaning: str
    unit: str
    default: str
    equation: str
    source: str = "-"


_HW = Hardware()


def _ghz(hz: float) -> str:
    return f"≤ {hz / 1e9:g} GHz"


#: ``source``: "Sec. VI-C" where the paper sets the value, "Figs. 5–8" for the budgets its
#: figure captions give, "this book" for our own choice, "-" where there is no single value.
SYMBOLS: tuple[Symbol, ...] = (
    Symbol(r"\mathbf{w}\in\mathbb{R}^q", "w", "on-agent parameter vector", "-", "-", "(1)"),
    Symbol(r"\mathbf{v}\in\mathbb{R}^s", "v", "on-server parameter vector", "-", "-", "(2)"),
    Symbol(r"\mathbf{x}", "x", "input data (image or video frames)", "-", "-", "(1)"),
    Symbol(r"\mathbf{o}", "o", "intermediate embedding sent to the server", "-", "-", "(1)"),
    Symbol(r"\tilde{\mathbf{o}}", "o_tilde", "final inference result", "-", "-", "(2)"),
    Symbol(r"b", "b_full", "full-precision bit-width", "bit", str(_HW.b_full), "(4)",
           "this book (fp32 storage; the paper gives no value)"),
    Symbol(r"\hat{b}", "bit_width", "on-agent quantization bit-width", "bit", r"1 … 16", "(4)", "this book"),
    Symbol(r"B_{\max}", "B_max", "largest allowed bit-width", "bit", "16", "(30)",
           "this book (the paper gives no value)"),
    Symbol(r"\theta=\lvert w\rvert", "theta", "weight magnitude, exponential with rate λ", "-", "-", "(3)"),
    Symbol(r"\lambda", "lam", "rate of the exponential magnitude model", "1/unit of w", "fitted", "(3)"),
    Symbol(r"N_{\mathrm{FLOP}}", "n_flop_agent", "full-precision on-agent workload", "FLOP", "model", "(4)"),
    Symbol(r"\tilde{N}_{\mathrm{FLOP}}", "n_flop_server", "on-server workload", "FLOP", "model", "(5)"),
    Symbol(r"f", "f_agent", "agent clock frequency", "cycle/s", _ghz(_HW.f_agent_max), "(4)", "Sec. VI-C"),
    Symbol(r"\tilde{f}", "f_server", "server clock frequency", "cycle/s", _ghz(_HW.f_server_max), "(5)", "Sec. VI-C"),
    Symbol(r"c", "c_agent", "agent FLOPs per cycle", "FLOP/cycle", f"{_HW.c_agent:g}", "(4)", "Sec. VI-C"),
    Symbol(r"\tilde{c}", "c_server", "server FLOPs per cycle", "FLOP/cycle", f"{_HW.c_server:g}", "(5)", "Sec. VI-C"),
    Symbol(r"\eta", "eta_agent", "agent power usage effectiveness (PUE)", "-", f"{_HW.eta_agent:.1f}", "(6)",
           "Sec. VI-C"),
    Symbol(r"\tilde{\eta}", "eta_server", "server PUE", "-", f"{_HW.eta_server:.1f}", "(7)", "Sec. VI-C"),
    Symbol(r"\psi", "psi_agent", "agent power coefficient", "W/(cycle/s)³", f"{_HW.psi_agent:g}", "(6)", "Sec. VI-C"),
    Symbol(r"\tilde{\psi}", "psi_server", "server power coefficient", "W/(cycle/s)³", f"{_HW.psi_server:g}", "(7)",
           "Sec. VI-C"),
    Symbol(r"t(\hat{b},f)", "agent_delay", "on-agent delay", "s", "-", "(4)"),
    Symbol(r"\tilde{t}(\tilde{f})", "server_delay", "on-server delay", "s", "-", "(5)"),
    Symbol(r"e(\hat{b},f)", "agent_energy", "on-agent energy", "J", "-", "(6)"),
    Symbol(r"\tilde{e}(\tilde{f})", "server_energy", "on-server energy", "J", "-", "(7)"),
    Symbol(r"T(\hat{b},f,\tilde{f})", "total_delay", "end-to-end delay", "s", "-", "(8)"),
    Symbol(r"E(\hat{b},f,\tilde{f})", "total_energy", "end-to-end energy", "J", "-", "(9)"),
    Symbol(r"T_0", "T0", "delay budget", "s", "3.50 (BLIP-2), 2.00 (GIT)", "(30)", "Figs. 5–8"),
    Symbol(r"E_0", "E0", "energy budget", "J", "2.00", "(30)", "Figs. 5–8"),
)


def _cell(text: str) -> str:
    """A Markdown table cell: a bare ``|`` would end the cell, even inside math."""
    if "|" in text:
        raise ValueError(f"a notation cell must not contain '|' (use \\lvert … \\rvert in math): {text!r}")
    return text


def symbol_table(markdown: bool = True) -> str:
    """Return the notation table as Markdown (``$…$`` math) or plain text.

    Examples
    --------
    >>> "f_agent" in symbol_table()
    True
    """
    if markdown:
        rows = ["| symbol | qlib name | meaning | unit | default | value from | eq. |", "|---|---|---|---|---|---|---|"]
        rows += [
            "| " + " | ".join(_cell(c) for c in (f"${s.tex}$", f"`{s.name}`", s.meaning, s.unit, s.default,
                                                  s.source, s.equation)) + " |"
            for s in SYMBOLS
        ]
        return "\n".join(rows)
    width = max(len(s.name) for s in SYMBOLS)
    return "\n".join(f"{s.name:<{width}}  {s.unit:<14} {s.default:<26} {s.meaning}" for s in SYMBOLS)
