"""Speed of qlib.quantize against Tensor.clone() on one large tensor (issue 5).

Prints, for each scheme, the ratio (quantize time / clone time), both measured in this run on
the same tensor, device and thread count (best of ``--repeat``). Example::

    python benchmarks/bench_quantize.py                      # 100 M float32 on CPU, 1 thread
    python benchmarks/bench_quantize.py --device cuda --threads 16
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch

import qlib
from qlib.quantize import SCHEMES, quantize


def best_time(fn: Callable[[], object], repeat: int, device: str) -> float:
    """Best wall time of ``repeat`` calls (after one warm-up), synchronizing CUDA."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
        del out
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--numel", type=int, default=100_000_000, help="elements (default 100 M)")
    ap.add_argument("--bits", type=int, nargs="+", default=[4, 8], help="bit-widths to time")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if args.numel < 1:
        raise ValueError(f"--numel must be >= 1, got {args.numel}")

    info = qlib.setup(seed=0, threads=args.threads, device=args.device)
    dtype = getattr(torch, args.dtype)
    # Laplacian weights (exponential magnitudes with lambda = 50, eq. 3), the paper's model of
    # real weights; drawn on the CPU in float64 with a seeded generator, then moved.
    lap = torch.distributions.Laplace(torch.tensor(0.0, dtype=torch.float64), torch.tensor(0.02, dtype=torch.float64))
    w = lap.sample((args.numel,)).to(device=args.device, dtype=dtype)
    t_clone = best_time(lambda: w.clone(), args.repeat, args.device)
    print(f"{info}; tensor: {args.numel:,} x {args.dtype} on {args.device}")
    print(f"clone(): {t_clone * 1e3:.1f} ms (best of {args.repeat})")
    print(f"{'scheme':<8} {'bits':>4} {'quantize ms':>12} {'ratio vs clone':>15}")
    for scheme in SCHEMES:
        for b in args.bits:
            t = best_time(lambda: quantize(w, b, scheme), args.repeat, args.device)
            print(f"{scheme:<8} {b:>4} {t * 1e3:>12.1f} {t / t_clone:>15.2f}")


if __name__ == "__main__":
    main()
