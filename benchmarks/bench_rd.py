"""Time to trace one full D(R) curve of the exponential source (issue 6).

Traces D(R) for R in [R_min, R_max] with ``qlib.rd.exponential_curve`` (the O(N)-per-iteration
Blahut–Arimoto on a per-slope grid) and reports the wall time (best of ``--repeat``), the work
done (slopes, iterations, grid points), the time per slope, and the accuracy reached against
the exact closed form ``rd.distortion_rate_exact``. For scale, it also times the generic
dense ``rd.blahut_arimoto`` on one slope of the same source with ``--dense-points`` grid
points and prints the ratio of the two per-iteration costs, both measured in this run.
Example::

    python benchmarks/bench_rd.py                        # defaults of distortion_rate
    python benchmarks/bench_rd.py --per-bit 8 --kappa 0.05   # paper-scale accuracy
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import qlib
from qlib import rd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--R-min", type=float, default=0.25, help="bits (default 0.25)")
    ap.add_argument("--R-max", type=float, default=6.0, help="bits (default 6)")
    ap.add_argument("--per-bit", type=int, default=2, help="slopes per bit (default 2)")
    ap.add_argument("--kappa", type=float, default=0.1, help="grid step x slope (default 0.1)")
    ap.add_argument("--tol", type=float, default=1e-3, help="certified gap in bits (default 1e-3)")
    ap.add_argument("--dense-points", type=int, default=600, help="grid of the dense comparison")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if args.repeat < 1:
        raise ValueError(f"--repeat must be >= 1, got {args.repeat}")

    info = qlib.setup(seed=0, threads=1)
    print(f"{info}; numpy {np.__version__}")
    best, curve = float("inf"), None
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        curve = rd.exponential_curve(args.lam, args.R_min, args.R_max, per_bit=args.per_bit,
                                     kappa=args.kappa, tol=args.tol)
        best = min(best, time.perf_counter() - t0)
    err = np.abs(curve.distortion / rd.distortion_rate_exact(curve.rate, args.lam) - 1)
    iters = int(curve.iterations.sum())
    work = float(np.sum(curve.iterations * curve.grid_points))
    print(f"D(R) curve, R in [{args.R_min}, {args.R_max}] bits, lam = {args.lam}: {curve.slope.size} slopes, "
          f"{iters} iterations, grids {curve.grid_points.min()}..{curve.grid_points.max()} points")
    print(f"time to trace the curve: {best:.2f} s (best of {args.repeat}), {best / curve.slope.size * 1e3:.0f} ms per slope")
    print(f"accuracy vs the exact D(R): max relative error {err.max():.3%}, all converged: {bool(curve.converged.all())}")
    print(f"O(N) recursion: {best / work * 1e9:.1f} ns per grid point and iteration")

    # The generic dense algorithm on one slope of the same source, for scale.
    n = args.dense_points
    h = 12.0 / (args.lam * n)
    edges = np.arange(n + 1) * h
    p = -np.diff(np.exp(-args.lam * edges))
    p /= p.sum()
    mid = edges[:-1] + h / 2
    dist = np.abs(mid[:, None] - mid[None, :])
    t0 = time.perf_counter()
    res = rd.blahut_arimoto(p, dist, [4.0 * args.lam], tol=args.tol, max_iter=2000)
    t_dense = time.perf_counter() - t0
    per_dense = t_dense / (res.iterations[0] * n)
    print(f"dense blahut_arimoto, {n} points, one slope: {t_dense:.2f} s, {res.iterations[0]} iterations, "
          f"{per_dense * 1e9:.1f} ns per grid point and iteration "
          f"(ratio dense / O(N): {per_dense / (best / work):.1f}; grows as N)")


if __name__ == "__main__":
    main()
