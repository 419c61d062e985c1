"""Seeds, threads and environment checks that every chapter calls first.

Why one helper: on a 2-core CI machine torch's default thread pool oversubscribes the
cores and small models run up to 30x slower than with one thread, and a notebook that
forgets a seed stops reproducing its stored outputs. ``setup()`` fixes both in one call.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np

__all__ = ["RuntimeInfo", "setup", "seed_everything", "check_java", "resolve_device"]


@dataclass(frozen=True)
class RuntimeInfo:
    """What :func:`setup` configured (printed by notebooks for the record)."""

    seed: int
    threads: int
    device: str
    torch_version: str

    def __str__(self) -> str:
        return f"seed={self.seed} threads={self.threads} device={self.device} torch={self.torch_version}"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and, if present, CUDA) with one integer."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency, kept soft here
        return
    torch.manual_seed(int(seed))
    if torch.cuda.is_available():  # pragma: no cover - no GPU in CI
        torch.cuda.manual_seed_all(int(seed))


def resolve_device(device: str) -> str:
    """Check a device string: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises
    ------
    ValueError
        If the name is not one of those, or CUDA is asked for on a machine without it.
    """
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was asked for but torch sees no CUDA GPU here; pass device='cpu'."
            )
        return device
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def setup(seed: int = 0, threads: int = 1, device: str = "cpu", deterministic: bool | None = None) -> RuntimeInfo:
    """Seed everything, pin torch's thread count and check the device.

    Parameters
    ----------
    seed : int
        Seed for Python, NumPy and torch.
    threads : int
        torch intra-op threads (>= 1). One is fastest for the book's small CI-scale models
        on 2 cores; raise it on a big machine.
    device : str
        ``"cpu"`` or ``"cuda"``; checked, not changed.
    deterministic : bool or None
        Ask torch for deterministic kernels where it has them (warn-only elsewhere). ``None``
        (default): only on a CUDA device, where kernels that use atomics (scatter/index adds,
        some convolutions) make repeated runs differ. On the CPU every kernel the book runs is
        already deterministic for a fixed thread count, and ``torch.use_deterministic_algorithms``
        costs about a second because it imports ``torch._inductor``: chapters that never need
        it do not pay for it (issue 14.4). ``True`` forces it anywhere, ``False`` never.

    Returns
    -------
    RuntimeInfo
    """
    if not isinstance(threads, (int, np.integer)) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    if deterministic not in (None, True, False):
        raise ValueError(f"deterministic must be True, False or None (only on CUDA), got {deterministic!r}")
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    device = resolve_device(device)
    import torch

    torch.set_num_threads(int(threads))
    try:
        torch.set_num_interop_threads(int(threads))
    except RuntimeError:
        # Allowed only once per process, before any parallel work; a second setup() keeps the first.
        pass
    if deterministic is None:
        deterministic = device.startswith("cuda")
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic (read when CUDA initializes).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    seed_everything(seed)
    return RuntimeInfo(seed=int(seed), threads=int(threads), device=device, torch_version=torch.__version__)


def check_java(min_major: int = 11) -> str:
    """Return the Java version string, or raise ``RuntimeError`` saying what to install.

    pycocoevalcap's PTB tokenizer (used for CIDEr) runs a Java program.
    """
    java = shutil.which("java")
    if java is None:
        raise RuntimeError(
            "pycocoevalcap needs Java (17 recommended) for its tokenizer: install it, e.g. "
            "`sudo apt-get install openjdk-17-jre-headless` or `conda install -c conda-forge openjdk=17`."
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    text = (out.stderr or out.stdout).strip().splitlines()
    first = text[0] if text else ""
    try:
        version = first.split('"')[1]
        major = int(version.split(".")[0] if not version.startswith("1.") else version.split(".")[1])
    except (IndexError, ValueError):
        return first
    if major < min_major:
        raise RuntimeError(
            f"pycocoevalcap needs Java >= {min_major} (17 recommended), found {version}: install openjdk-17."
        )
    return version
