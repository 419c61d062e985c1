r"""The PPO baseline of paper Sec. VI-C: a gymnasium environment for problem (P1), training, solving.

The paper's first baseline ("PPO-based design", after its ref. [12]) models the design as a
Markov decision process solved by deep reinforcement learning, with penalty-driven
constraint handling. This module makes that concrete, and gives the policy the same help the
random baseline gets (issue 13.4): for every bit-width it proposes, the frequencies are the
least-energy ones (:func:`qlib.design.optimal_frequencies`), exactly as
:func:`qlib.design.solve_random_feasible` checks its draws.

- **state** (7 numbers): the problem, described scale-free by the logarithms of the four
  coefficients of :meth:`qlib.design.Problem.coefficients` (agent and server delay and energy
  at the maximum clocks, relative to the budgets), ``B_max`` and the bit-widths each budget
  allows at the maximum clocks;
- **action** (1 number in [-1, 1]): the bit-width in :math:`\{1,\dots,B_{\max}\}`
  (:func:`decode_action`); the frequencies follow from the least-energy solve;
- **reward**: for a feasible bit-width, :math:`-\log_2(\lambda g(\hat b))` scaled to [0, 1] (a
  monotone transform of the (P1) objective that keeps the reward informative at high
  bit-widths, where :math:`g` is ~2^-b); otherwise ``-0.5`` minus a penalty proportional to the
  relative violation of the least-energy design (the penalty-driven constraint handling);
- **episode**: one decision on one problem drawn at reset from
  :func:`qlib.design.random_problems`' distribution (a contextual bandit, the simplest MDP),
  so one trained policy serves every budget and workload.

:func:`train_ppo` trains stable-baselines3's PPO with a fixed seed on one CPU thread and
records a learning curve; :func:`solve_ppo` is the method "ppo" of the chapter: the policy's
mean action and ``n_samples`` actions sampled from it are verified with the least-energy
frequencies and the best feasible one is kept (sample-and-verify). The committed policies
``qlib/data/ppo_design_seed{0,1,2}.zip`` (:data:`POLICY_SEEDS`) come from
:func:`make_committed_policies`; their learning curves are in ``ppo_design_seed{0,1,2}.json``.

Importing this module registers ``"ppo"`` with :func:`qlib.design.register_method`, so that
:func:`qlib.design.run_methods` can run it; :mod:`qlib.design` itself never imports this
module (imports go down: the RL baseline is an application of the solver module).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np

from qlib import design

__all__ = [
    "DATA_DIR",
    "POLICY_SEEDS",
    "DEFAULT_TIMESTEPS",
    "DEFAULT_N_SAMPLES",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_POLICY_PATH",
    "curve_path",
    "policy_path",
    "DesignEnv",
    "decode_action",
    "train_ppo",
    "solve_ppo",
    "solve_with_policy",
    "propose_bit_widths",
    "default_policy",
    "load_policies",
    "learning_curves",
    "make_committed_policies",
    "make_default_policy",
]

DATA_DIR = pathlib.Path(__file__).resolve().parent / "data"
#: Training seeds of the committed policies (issue 13.4: mean ± sd over >= 3 seeds).
POLICY_SEEDS = (0, 1, 2)
#: Training steps of each committed policy (about a minute of CPU on one thread, curve included).
DEFAULT_TIMESTEPS = 32_768
#: Actions sampled from the policy and verified per problem by :func:`solve_ppo`.
DEFAULT_N_SAMPLES = 32
#: Sampling temperature of :func:`solve_ppo` (factor on the policy's standard deviation), chosen
#: among 1, 2, 3, 4 on the 200 validation instances of the learning curves (mean over the three
#: committed seeds: 0.79, 0.94, 0.96, 0.96), never on the instances the chapter reports.
DEFAULT_TEMPERATURE = 3.0
_OBS_DIM = 7
_EVAL_EVERY = 4096  # environment steps between learning-curve points
_EVAL_N = 200  # validation problems per learning-curve point


def policy_path(seed: int) -> pathlib.Path:
    """Path of the committed policy trained with ``seed``: ``qlib/data/ppo_design_seed{seed}.zip``."""
    return DATA_DIR / f"ppo_design_seed{int(seed)}.zip"


def curve_path(seed: int) -> pathlib.Path:
    """Learning curve and training budget of the committed policy of ``seed`` (JSON beside its zip)."""
    return DATA_DIR / f"ppo_design_seed{int(seed)}.json"


#: The policy :func:`default_policy` loads (seed 0).
DEFAULT_POLICY_PATH = policy_path(0)


def decode_action(problem: design.Problem, action: Any) -> int:
    """Map an action in [-1, 1] to a bit-width in {1, ..., B_max} (linear, rounded)."""
    a = float(np.clip(np.asarray(action, dtype=float).reshape(-1)[0], -1.0, 1.0))
    u = (a + 1.0) / 2.0
    return int(np.clip(np.rint(1 + u * (problem.B_max - 1)), 1, problem.B_max))


def _bits_from_actions(actions: np.ndarray, b_max: np.ndarray) -> np.ndarray:
    u = (np.clip(actions, -1.0, 1.0) + 1.0) / 2.0
    return np.clip(np.rint(1 + u * (b_max - 1)), 1, b_max).astype(int)


def _problem_features(problem: design.Problem) -> np.ndarray:
    c = problem.coefficients()
    B = problem.B_max
    # Typical magnitudes: tau ~ 1e-3..1, eps ~ 1e-3..1e2; log10 / 3 keeps them near [-1.5, 1].
    # The last two are the bit-widths (over B_max) that each budget allows at the maximum
    # clocks alone: the budgets in the units of the decision.
    return np.array([math.log10(c["tau_a"] * B) / 3.0, math.log10(c["tau_s"]) / 3.0,
                     math.log10(c["eps_a"] * B) / 3.0, math.log10(c["eps_s"]) / 3.0, B / 32.0,
                     float(np.clip((1.0 - c["tau_s"]) / (c["tau_a"] * B), -1.0, 2.0)),
                     float(np.clip((1.0 - c["eps_s"]) / (c["eps_a"] * B), -1.0, 2.0))], dtype=np.float32)


def _score(problem: design.Problem, b: int) -> float:
    """Reward of a feasible bit-width: -log2(λ g(b)) scaled so that B_max scores 1, b = 1 scores 0."""
    if b <= 1:
        return 0.0
    top = -math.log2(float(design.gap_objective(problem.B_max, 1.0)))
    return -math.log2(float(design.gap_objective(b, 1.0))) / top


class DesignEnv(gym.Env):  # type: ignore[misc]
    """Gymnasium environment of (P1): see the module docstring for state, action and reward.

    Parameters
    ----------
    sampler : callable
        ``sampler(rng) -> Problem``, called at every reset (default: one draw of
        :func:`qlib.design.random_problems`).
    penalty : float
        Weight of the relative constraint violation in the infeasible reward (>= 0).
    """

    metadata = {"render_modes": []}

    def __init__(self, sampler: Callable[[np.random.Generator], design.Problem] | None = None,
                 penalty: float = 1.0) -> None:
        if not (isinstance(penalty, (int, float)) and math.isfinite(penalty) and penalty >= 0):
            raise ValueError(f"penalty must be a finite number >= 0, got {penalty!r}")
        self.sampler = sampler or (lambda rng: design.random_problems(1, rng=rng)[0])
        self.penalty = float(penalty)
        self.observation_space = gym.spaces.Box(-10.0, 10.0, shape=(_OBS_DIM,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.problem: design.Problem | None = None

    def set_problem(self, problem: design.Problem) -> np.ndarray:
        """Start an episode on a given problem (used at inference); returns the observation."""
        if not isinstance(problem, design.Problem):
            raise ValueError(f"problem must be a qlib.design.Problem, got {type(problem).__name__}")
        self.problem = problem
        return np.clip(_problem_features(problem), -10.0, 10.0).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        problem = (options or {}).get("problem") or self.sampler(self.np_random)
        return self.set_problem(problem), {}

    def evaluate(self, action: Any) -> tuple[float, dict[str, Any]]:
        """Reward and details of one proposal on the current problem (no state change)."""
        if self.problem is None:
            raise ValueError("call reset() before evaluate()/step()")
        p = self.problem
        b = decode_action(p, action)
        chk = design.optimal_frequencies(p, float(b))
        feasible = bool(chk["feasible"])
        if feasible:
            reward = _score(p, b)
        else:
            dv = float(chk["delay"]) / p.T0 - 1.0
            ev = float(chk["energy"]) / p.E0 - 1.0
            reward = -0.5 - self.penalty * (min(max(dv, 0.0), 10.0) + min(max(ev, 0.0), 10.0))
        return reward, {"bit_width": b, "f_agent": float(chk["f_agent"]), "f_server": float(chk["f_server"]),
                        "feasible": feasible}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward, info = self.evaluate(action)
        assert self.problem is not None
        # one decision per episode: the episode ends (terminated) after it
        return self.set_problem(self.problem), float(reward), True, False, info


# --------------------------------------------------------------------------------------------
# Proposals: the policy's mean and sampled actions, verified with least-energy frequencies.
# --------------------------------------------------------------------------------------------

def propose_bit_widths(policy: Any, problems: Sequence[design.Problem], n_samples: int = DEFAULT_N_SAMPLES,
                       seed: int = 0, temperature: float = 1.0) -> np.ndarray:
    """Bit-widths the policy proposes: column 0 its mean action, then ``n_samples`` sampled ones.

    One batched forward pass for all problems; sampling uses a torch generator seeded with
    ``seed``, so the proposals are reproducible; ``temperature`` scales the policy's standard
    deviation (1: its own distribution). Returns an int array (len(problems), 1 + n_samples).
    """
    if isinstance(temperature, bool) or not (isinstance(temperature, (int, float)) and
                                             math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    import torch

    if not (isinstance(n_samples, (int, np.integer)) and n_samples >= 0):
        raise ValueError(f"n_samples must be an integer >= 0, got {n_samples!r}")
    obs = np.stack([_problem_features(p) for p in problems])
    b_max = np.array([p.B_max for p in problems], dtype=float)[:, None]
    with torch.no_grad():
        dist = policy.policy.get_distribution(torch.as_tensor(obs))
        mean = dist.distribution.mean.numpy()[:, :1]
        cols = [mean]
        if n_samples:
            std = dist.distribution.stddev.numpy()[:, :1]
            gen = torch.Generator().manual_seed(int(seed))
            z = torch.randn((len(problems), int(n_samples)), generator=gen, dtype=torch.float32).numpy()
            cols.append(mean + float(temperature) * std * z)
    return _bits_from_actions(np.concatenate(cols, axis=1), b_max)


def solve_ppo(problems: design.Problem | Sequence[design.Problem], policy: Any = None,
              n_samples: int = DEFAULT_N_SAMPLES, seed: int = 0,
              temperature: float = DEFAULT_TEMPERATURE) -> design.Solution | list[design.Solution]:
    r"""Baseline 1 of Sec. VI-C: a PPO policy proposes bit-widths; the best verified one is kept.

    The policy observes the scale-free description of the problem and proposes a bit-width:
    its mean action and ``n_samples`` actions drawn from it (sample-and-verify). Each proposed
    bit-width gets the least-energy frequencies (:func:`qlib.design.optimal_frequencies`), the
    same check :func:`qlib.design.solve_random_feasible` applies to its draws, and the largest
    feasible one is returned with them. If none is feasible the result is ``feasible=False``
    with the reason (saying whether a feasible design existed that the policy missed).

    Parameters
    ----------
    problems : Problem or sequence of Problem
    policy : stable_baselines3.PPO or None
        From :func:`train_ppo`; ``None`` uses :func:`default_policy` (committed, seed 0).
    n_samples : int
        Sampled actions per problem besides the mean (>= 0); 0 is the deterministic policy.
    seed : int
        Seed of the action sampling.
    temperature : float
        Factor on the policy's standard deviation when sampling (> 0; 1: its own distribution;
        default :data:`DEFAULT_TEMPERATURE`).
        A trained policy's spread shrinks below a bit, so a larger one explores more candidates
        around its mean; the chapter reports both.

    Returns
    -------
    Solution or list of Solution
        ``method="ppo"``; ``samples`` holds the distinct feasible proposals.
    """
    single = isinstance(problems, design.Problem)
    items = [problems] if single else list(problems)  # type: ignore[list-item]
    if not items or not all(isinstance(p, design.Problem) for p in items):
        raise ValueError("problem must be a qlib.design.Problem or a non-empty sequence of them, got "
                         f"{type(problems).__name__}")
    if not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(n_samples, bool) or not (isinstance(n_samples, (int, np.integer)) and n_samples >= 0):
        raise ValueError(f"n_samples must be an integer >= 0, got {n_samples!r}")
    t0 = time.perf_counter()
    model = default_policy() if policy is None else policy
    bits = propose_bit_widths(model, items, n_samples=n_samples, seed=seed, temperature=temperature)
    out = []
    for p, row in zip(items, bits):
        cand = np.unique(row)
        chk = design.optimal_frequencies(p, cand.astype(float))
        feas = np.atleast_1d(chk["feasible"])
        if feas.any():
            i = int(np.flatnonzero(feas)[-1])  # cand is sorted: the largest feasible proposal
            out.append(design._design(p, "ppo", int(cand[i]), float(np.atleast_1d(chk["f_agent"])[i]),
                                      float(np.atleast_1d(chk["f_server"])[i]),
                                      samples=tuple(int(b) for b in cand[feas])))
        else:
            exists = design.solve_exact(p).feasible  # type: ignore[union-attr]
            kind = "delay" if "delay" in set(np.atleast_1d(chk["reason"]).tolist()) else "energy"
            why = (f"{kind}: none of the {len(cand)} distinct PPO proposals (b̂ = {cand.min()}…{cand.max()}) "
                   "meets the budgets with least-energy frequencies"
                   + ("; a feasible design exists, the policy missed it" if exists else
                      "; no design meets the budgets"))
            out.append(design.Solution(method="ppo", feasible=False, reason=why))
    elapsed = (time.perf_counter() - t0) / len(items)
    out = [dataclasses.replace(s, solve_time=elapsed) for s in out]
    return out[0] if single else out


def solve_with_policy(problem: design.Problem, policy: Any = None) -> design.Solution:
    """Deprecated name of :func:`solve_ppo` for one problem (kept for old notebooks)."""
    return solve_ppo(problem, policy)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Training, learning curve, committed policies.
# --------------------------------------------------------------------------------------------

def _validation_set(n: int = _EVAL_N) -> tuple[list[design.Problem], np.ndarray]:
    problems = design.random_problems(n, seed=12345)
    ref = np.array([s.bit_width if s.feasible else 0 for s in design.solve_exact(problems)])
    return problems, ref


def _attained(policy: Any, problems: list[design.Problem], ref: np.ndarray, n_samples: int) -> float:
    sols = solve_ppo(problems, policy, n_samples=n_samples, seed=0, temperature=1.0)
    got = np.array([s.bit_width if s.feasible else 0 for s in sols])  # type: ignore[union-attr]
    return float(np.mean(got == ref))


def train_ppo(total_timesteps: int = DEFAULT_TIMESTEPS, seed: int = 0, penalty: float = 1.0,
              verbose: int = 0, curve: bool = False) -> Any:
    """Train stable-baselines3 PPO on :class:`DesignEnv` with a fixed seed, on one CPU thread.

    Parameters
    ----------
    total_timesteps : int
        Environment steps (>= 256); :data:`DEFAULT_TIMESTEPS` for the committed policies.
    seed : int
        Seed of PPO, its network initialization and the problem sampler (>= 0).
    penalty : float
        See :class:`DesignEnv`.
    verbose : int
        stable-baselines3 verbosity.
    curve : bool
        Record a learning curve every 4096 steps on 300 fixed validation problems (fraction of
        optima attained by the mean action and by sample-and-verify); stored as
        ``model.qbook_curve`` = ``{"steps": [...], "mean": [...], "verified": [...]}``.

    Returns
    -------
    stable_baselines3.PPO
        The trained model (``model.save(path)`` writes a small zip).
    """
    if not (isinstance(total_timesteps, (int, np.integer)) and total_timesteps >= 256):
        raise ValueError(f"total_timesteps must be an integer >= 256, got {total_timesteps!r}")
    if not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)
    # Eight environments stepped together: one batched forward pass per step of all of them
    # (the networks are tiny, the Python overhead per step dominates).
    env = make_vec_env(lambda: DesignEnv(penalty=penalty), n_envs=8, seed=int(seed))
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=128, n_epochs=10, learning_rate=1e-3,
                gamma=0.9, gae_lambda=0.9, ent_coef=0.0, seed=int(seed), device="cpu", verbose=verbose,
                policy_kwargs={"net_arch": [64, 64], "log_std_init": -1.0})
    record: dict[str, list] = {"steps": [], "mean": [], "verified": []}

    class _Curve(BaseCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.val = _validation_set()
            self.next = 0

        def _point(self) -> None:
            record["steps"].append(int(self.num_timesteps))
            record["mean"].append(_attained(self.model, *self.val, n_samples=0))
            record["verified"].append(_attained(self.model, *self.val, n_samples=DEFAULT_N_SAMPLES))

        def _on_training_start(self) -> None:
            self._point()
            self.next = _EVAL_EVERY

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next:
                self._point()
                self.next += _EVAL_EVERY
            return True

    model.learn(total_timesteps=int(total_timesteps), callback=_Curve() if curve else None)
    if curve:
        model.qbook_curve = record
    return model


_LOADED: dict[int, Any] = {}


def _load(seed: int) -> Any:
    if seed not in _LOADED:
        path = policy_path(seed)
        if not path.exists():
            raise ValueError(
                f"the committed PPO policy qlib/data/{path.name} is missing: rebuild it with "
                "qlib.ppo_env.make_committed_policies(), or pass policy=qlib.ppo_env.train_ppo(...)")
        from stable_baselines3 import PPO

        _LOADED[seed] = PPO.load(str(path), device="cpu")
    return _LOADED[seed]


def default_policy() -> Any:
    """The committed PPO policy of seed 0 (``qlib/data/ppo_design_seed0.zip``), loaded once per process."""
    return _load(POLICY_SEEDS[0])


def load_policies(seeds: Sequence[int] = POLICY_SEEDS) -> dict[int, Any]:
    """The committed policies, ``{seed: model}``."""
    return {int(s): _load(int(s)) for s in seeds}


def learning_curves(seeds: Sequence[int] = POLICY_SEEDS) -> dict[str, Any]:
    """The committed policies' learning curves and training budgets, ``{"seeds": {seed: {...}}, ...}``.

    Each seed's entry holds ``steps``, ``mean`` and ``verified`` (fraction of 200 fixed validation
    problems whose optimum the mean action, and sample-and-verify, attain) and ``train_seconds``.
    """
    out: dict[str, Any] = {"seeds": {}}
    for s in seeds:
        path = curve_path(s)
        if not path.exists():
            raise ValueError(f"qlib/data/{path.name} is missing: rebuild with make_committed_policies()")
        data = json.loads(path.read_text())
        for k in ("total_timesteps", "n_samples", "eval_problems"):
            out[k] = data.pop(k)
        out["seeds"][str(int(s))] = data
    return out


def make_committed_policies(seeds: Sequence[int] = POLICY_SEEDS, total_timesteps: int = DEFAULT_TIMESTEPS,
                            directory: pathlib.Path | str = DATA_DIR) -> dict[int, Any]:
    """Retrain the committed policies (one per seed, one thread each) with learning curves, and save them.

    Writes ``ppo_design_seed{seed}.zip`` and ``ppo_design_seed{seed}.json`` (curve, steps,
    wall-clock seconds) into ``directory``. Seeds are independent: separate processes may each
    build one (``seeds=[s]``).
    """
    directory = pathlib.Path(directory)
    models = {}
    for s in seeds:
        t0 = time.perf_counter()
        m = train_ppo(total_timesteps, seed=int(s), curve=True)
        wall = time.perf_counter() - t0
        m.save(str(directory / f"ppo_design_seed{int(s)}.zip"))
        meta = {"total_timesteps": int(total_timesteps), "n_samples": DEFAULT_N_SAMPLES, "eval_problems": _EVAL_N,
                **m.qbook_curve, "train_seconds": round(wall, 1)}
        (directory / f"ppo_design_seed{int(s)}.json").write_text(json.dumps(meta, indent=1))
        models[int(s)] = m
    _LOADED.clear()
    return models


def make_default_policy(path: pathlib.Path | str = DEFAULT_POLICY_PATH) -> Any:
    """Retrain the seed-0 policy (``train_ppo(DEFAULT_TIMESTEPS, seed=0)``) and save it to ``path``."""
    model = train_ppo(DEFAULT_TIMESTEPS, seed=0)
    model.save(str(path))
    _LOADED.clear()
    return model


design.register_method("ppo", solve_ppo)
