"""The symbols of paper Sec. II with their units and the defaults of Sec. VI-C.

One table, so that every chapter (and the overview's notation table) uses the same names.
The ``name`` column is the Python spelling used throughout ``qlib``.
"""

from __future__ import annotations

from dataclasses import dataclass

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


#: Defaults are those of Sec. VI-C; "-" where the paper sets none (workload-dependent).
SYMBOLS: tuple[Symbol, ...] = (
    Symbol(r"\mathbf{w}\in\mathbb{R}^q", "w", "on-agent parameter vector", "-", "-", "(1)"),
    Symbol(r"\mathbf{v}\in\mathbb{R}^s", "v", "on-server parameter vector", "-", "-", "(2)"),
    Symbol(r"\mathbf{x}", "x", "input data (image or video frames)", "-", "-", "(1)"),
    Symbol(r"\mathbf{o}", "o", "intermediate embedding sent to the server", "-", "-", "(1)"),
    Symbol(r"\tilde{\mathbf{o}}", "o_tilde", "final inference result", "-", "-", "(2)"),
    Symbol(r"b", "b_full", "full-precision bit-width", "bit", "32", "(4)"),
    Symbol(r"\hat{b}", "bit_width", "on-agent quantization bit-width", "bit", r"1 … 16", "(4)"),
    Symbol(r"B_{\max}", "B_max", "largest allowed bit-width", "bit", "16", "(30)"),
    Symbol(r"\theta=|w|", "theta", "weight magnitude, exponential with rate λ", "-", "-", "(3)"),
    Symbol(r"\lambda", "lam", "rate of the exponential magnitude model", "1/unit of w", "fitted", "(3)"),
    Symbol(r"N_{\mathrm{FLOP}}", "n_flop_agent", "full-precision on-agent workload", "FLOP", "model", "(4)"),
    Symbol(r"\tilde{N}_{\mathrm{FLOP}}", "n_flop_server", "on-server workload", "FLOP", "model", "(5)"),
    Symbol(r"f", "f_agent", "agent clock frequency", "cycle/s", r"≤ 2 GHz", "(4)"),
    Symbol(r"\tilde{f}", "f_server", "server clock frequency", "cycle/s", r"≤ 10 GHz", "(5)"),
    Symbol(r"c", "c_agent", "agent FLOPs per cycle", "FLOP/cycle", "32", "(4)"),
    Symbol(r"\tilde{c}", "c_server", "server FLOPs per cycle", "FLOP/cycle", "128", "(5)"),
    Symbol(r"\eta", "eta_agent", "agent power usage effectiveness (PUE)", "-", "1.0", "(6)"),
    Symbol(r"\tilde{\eta}", "eta_server", "server PUE", "-", "2.0", "(7)"),
    Symbol(r"\psi", "psi_agent", "agent power coefficient", "W/(cycle/s)³", "2e-29", "(6)"),
    Symbol(r"\tilde{\psi}", "psi_server", "server power coefficient", "W/(cycle/s)³", "1e-28", "(7)"),
    Symbol(r"t(\hat{b},f)", "agent_delay", "on-agent delay", "s", "-", "(4)"),
    Symbol(r"\tilde{t}(\tilde{f})", "server_delay", "on-server delay", "s", "-", "(5)"),
    Symbol(r"e(\hat{b},f)", "agent_energy", "on-agent energy", "J", "-", "(6)"),
    Symbol(r"\tilde{e}(\tilde{f})", "server_energy", "on-server energy", "J", "-", "(7)"),
    Symbol(r"T(\hat{b},f,\tilde{f})", "total_delay", "end-to-end delay", "s", "-", "(8)"),
    Symbol(r"E(\hat{b},f,\tilde{f})", "total_energy", "end-to-end energy", "J", "-", "(9)"),
    Symbol(r"T_0", "T0", "delay budget", "s", "3.50 (BLIP-2), 2.00 (GIT)", "(30)"),
    Symbol(r"E_0", "E0", "energy budget", "J", "2.00", "(30)"),
)


def symbol_table(markdown: bool = True) -> str:
    """Return the notation table as Markdown (``$…$`` math) or plain text.

    Examples
    --------
    >>> "f_agent" in symbol_table()
    True
    """
    if markdown:
        rows = ["| symbol | qlib name | meaning | unit | default (Sec. VI-C) | eq. |", "|---|---|---|---|---|---|"]
        rows += [
            f"| ${s.tex}$ | `{s.name}` | {s.meaning} | {s.unit} | {s.default} | {s.equation} |" for s in SYMBOLS
        ]
        return "\n".join(rows)
    width = max(len(s.name) for s in SYMBOLS)
    return "\n".join(f"{s.name:<{width}}  {s.unit:<14} {s.default:<26} {s.meaning}" for s in SYMBOLS)
