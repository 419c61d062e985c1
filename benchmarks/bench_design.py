"""Throughput of the (P1) solvers, measured in one run (paper Sec. V; chapter 05_joint_design; issue 14.4).

Prints problems per second of

- ``solve_exact_batch`` on a :class:`qlib.design.ProblemBatch` (arrays in, arrays out),
- ``solve_exact`` on a list of :class:`qlib.design.Problem` (one vectorized call, builds a
  :class:`qlib.design.Solution` per problem),
- ``solve_sca`` (the paper's Algorithm 1 with cvxpy + Clarabel, one problem at a time),

the ratio of the array path to SCA (target: >= 10^4), and checks that the array path and
``solve_exact`` agree on every problem (bit-width, feasibility, reason, frequencies, energy)
and that SCA attains the array path's optimum on its problems. Absolute numbers depend on the
machine and its load; the ratios are the result. Exits with status 1 if any check fails.

Usage::

    python benchmarks/bench_design.py [--n-batch 200000] [--n-exact 20000] [--n-sca 30] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import qlib
from qlib import design


def _rate(fn, n: int, repeat: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return n / best, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-batch", type=int, default=200_000, help="problems for the array path")
    ap.add_argument("--n-exact", type=int, default=20_000, help="problems for solve_exact (Solution objects)")
    ap.add_argument("--n-sca", type=int, default=30, help="problems for SCA (about 0.1-0.2 s each)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    qlib.setup(seed=args.seed, threads=1)

    batch = design.random_problem_batch(args.n_batch, seed=args.seed)
    rate_batch, sb = _rate(lambda: design.solve_exact_batch(batch), args.n_batch)

    problems = [batch.problem(i) for i in range(args.n_exact)]  # the first n_exact of the batch
    rate_exact, exact = _rate(lambda: design.solve_exact(problems), args.n_exact, repeat=1)

    design.solve_sca(problems[0])  # compile the cvxpy problem once, outside the timing
    sca_set = problems[: args.n_sca]
    t = time.perf_counter()
    sca = [design.solve_sca(p) for p in sca_set]
    rate_sca = len(sca_set) / (time.perf_counter() - t)
    iters = np.mean([len(s.history) - 1 for s in sca if s.history])

    # Agreement of the two exact paths on every problem, and of SCA with them.
    n = args.n_exact
    bits = np.array([s.bit_width or 0 for s in exact])
    codes = np.array([{"": 0, "delay": 1, "energy": 2}[s.reason.split(":")[0] if not s.feasible else ""]
                      for s in exact])
    f_a = np.array([s.f_agent if s.feasible else np.nan for s in exact])
    energy = np.array([s.energy if s.feasible else np.nan for s in exact])
    agree = (np.array_equal(bits, sb.bit_width[:n]) and np.array_equal(codes, sb.reason_code[:n])
             and np.allclose(f_a, sb.f_agent[:n], rtol=1e-12, equal_nan=True)
             and np.allclose(energy, sb.energy[:n], rtol=1e-12, equal_nan=True))
    sca_same = sum((s.bit_width or 0) == b for s, b in zip(sca, sb.bit_width))
    ratio = rate_batch / rate_sca

    print(f"solve_exact_batch, arrays ({args.n_batch} problems):         {rate_batch:12.0f} problems/s")
    print(f"solve_exact, Solution objects ({args.n_exact} problems):      {rate_exact:12.0f} problems/s")
    print(f"solve_sca (cvxpy/Clarabel, {len(sca_set)} problems, {iters:.1f} P4.k each): {rate_sca:8.2f} problems/s")
    print(f"ratio array path / SCA:     {ratio:10.3g}x  (target >= 1e4: {'met' if ratio >= 1e4 else 'NOT met'})")
    print(f"ratio solve_exact / SCA:    {rate_exact / rate_sca:10.3g}x")
    print(f"array path == solve_exact on all {n} problems (bit-width, reason, f, energy): {agree}")
    print(f"SCA attains the exact optimum on {sca_same}/{len(sca_set)} of its problems")
    return 0 if agree and sca_same == len(sca_set) else 1


if __name__ == "__main__":
    sys.exit(main())
