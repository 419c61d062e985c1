"""Drawings shared by chapters.

``draw_system`` renders the co-inference system of paper Fig. 1 (the paper's own figure is
a picture of a robot and a server; ours is a block diagram with the same flow and the
symbols of Sec. II on each arrow).
"""

from __future__ import annotations

from typing import Any

__all__ = ["draw_system"]


def _box(ax: Any, x: float, y: float, w: float, h: float, title: str, lines: list[str], color: str) -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02", fc=color, ec="0.25", lw=1.2))
    ax.text(x + w / 2, y + h - 0.07, title, ha="center", va="top", fontsize=11, weight="bold")
    for i, line in enumerate(lines):
        ax.text(x + w / 2, y + h - 0.2 - 0.095 * i, line, ha="center", va="top", fontsize=9)


def _arrow(ax: Any, x0: float, y0: float, x1: float, y1: float, label: str, above: bool = True) -> None:
    ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=dict(arrowstyle="-|>", lw=1.6, color="0.2"))
    ax.text((x0 + x1) / 2, (y0 + y1) / 2 + (0.04 if above else -0.04), label, ha="center",
            va="bottom" if above else "top", fontsize=9)


def draw_system(ax: Any = None, agent_label: str = "vision encoder", server_label: str = "Q-Former + LLM") -> Any:
    """Draw the agent → embedding → server → result loop of Fig. 1 and return the Axes.

    Parameters
    ----------
    ax : matplotlib Axes, optional
        Where to draw; a new 10×3.4 inch figure if omitted.
    agent_label, server_label : str
        What runs on each side (BLIP-2's split by default; GIT's is "vision encoder" /
        "text decoder").
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(10, 3.4))
    ax.set_xlim(0, 3.3)
    ax.set_ylim(0, 1.05)
    ax.axis("off")
    _box(ax, 0.02, 0.3, 0.5, 0.5, "input", [r"image / video $\mathbf{x}$", "(camera of the robot)"], "#f2f2f2")
    _box(ax, 0.78, 0.15, 0.95, 0.8, "agent (robot)", [
        f"{agent_label}, $\\hat b$-bit weights $\\hat{{\\mathbf{{w}}}}$",
        r"$\mathbf{o}=f(\mathbf{x},\hat{\mathbf{w}})$  (eq. 1)",
        r"delay $t(\hat b,f)$  (eq. 4)",
        r"energy $e(\hat b,f)$  (eq. 6)",
        r"$f\leq f^{\max}$, $c$ FLOP/cycle",
    ], "#dbe9f6")
    _box(ax, 2.25, 0.15, 0.95, 0.8, "edge server", [
        f"{server_label}, full precision $\\mathbf{{v}}$",
        r"$\tilde{\mathbf{o}}=\tilde f(\mathbf{o},\mathbf{v})$  (eq. 2)",
        r"delay $\tilde t(\tilde f)$  (eq. 5)",
        r"energy $\tilde e(\tilde f)$  (eq. 7)",
        r"$\tilde f\leq\tilde f^{\max}$, $\tilde c$ FLOP/cycle",
    ], "#fde7d0")
    _arrow(ax, 0.54, 0.55, 0.76, 0.55, r"$\mathbf{x}$")
    _arrow(ax, 1.75, 0.7, 2.23, 0.7, r"embedding $\mathbf{o}$")
    _arrow(ax, 2.23, 0.4, 1.75, 0.4, r"result $\tilde{\mathbf{o}}$ (caption)", above=False)
    ax.text(1.65, 0.02, r"budgets: $T=t+\tilde t\leq T_0$ (eq. 8),  $E=e+\tilde e\leq E_0$ (eq. 9)",
            ha="center", fontsize=10)
    return ax
