"""Throughput of the (P1) solvers, measured in one run (paper Sec. V; chapter 05_joint_design).

Prints problems per second of

- ``solve_exact`` vectorized (one call for the whole batch),
- ``solve_exact`` called once per problem,
- ``solve_sca`` (the paper's Algorithm 1 with cvxpy + Clarabel, one problem at a time),

and their ratios. Absolute numbers depend on the machine; the ratios are the result.

Usage::

    python benchmarks/bench_design.py [--n-exact 20000] [--n-sca 30] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import qlib
from qlib import design


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-exact", type=int, default=20000, help="problems for the vectorized exact solver")
    ap.add_argument("--n-loop", type=int, default=500, help="problems for the one-by-one exact solver")
    ap.add_argument("--n-sca", type=int, default=30, help="problems for SCA (about 0.1-0.2 s each)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    qlib.setup(seed=args.seed, threads=1)

    problems = design.random_problems(args.n_exact, seed=args.seed)
    design.solve_sca(problems[0])  # compile the cvxpy problem once, outside the timing

    t = time.perf_counter()
    exact = design.solve_exact(problems)
    rate_vec = len(problems) / (time.perf_counter() - t)

    loop = problems[: args.n_loop]
    t = time.perf_counter()
    for p in loop:
        design.solve_exact(p)
    rate_loop = len(loop) / (time.perf_counter() - t)

    sca_set = problems[: args.n_sca]
    t = time.perf_counter()
    sca = [design.solve_sca(p) for p in sca_set]
    rate_sca = len(sca_set) / (time.perf_counter() - t)
    iters = sum(len(s.history) - 1 for s in sca if s.history) / max(1, sum(1 for s in sca if s.history))
    same = sum(s.bit_width == e.bit_width for s, e in zip(sca, exact))

    print(f"solve_exact, vectorized ({len(problems)} problems in one call): {rate_vec:12.0f} problems/s")
    print(f"solve_exact, one call per problem ({len(loop)} problems):    {rate_loop:12.0f} problems/s")
    print(f"solve_sca (cvxpy/Clarabel, {len(sca_set)} problems, {iters:.1f} P4.k per problem): "
          f"{rate_sca:8.2f} problems/s")
    print(f"ratio exact (vectorized) / SCA:          {rate_vec / rate_sca:10.0f}x")
    print(f"ratio exact (one by one) / SCA:          {rate_loop / rate_sca:10.0f}x")
    print(f"SCA attains the exact optimum on {same}/{len(sca_set)} of these problems")


if __name__ == "__main__":
    main()
