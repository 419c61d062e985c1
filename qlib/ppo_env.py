r"""The PPO baseline of paper Sec. VI-C: a gymnasium environment for problem (P1) and its training.

The paper's first baseline ("PPO-based design", after its ref. [12]) models the design as a
Markov decision process solved by deep reinforcement learning, with penalty-driven
constraint handling. This module makes that concrete:

- **state** (12 numbers): the problem, described scale-free by the logarithms of the four
  coefficients of :meth:`qlib.design.Problem.coefficients` (agent and server delay and energy
  at the maximum clocks, relative to the budgets), ``B_max`` and the bit-widths each budget
  allows at the maximum clocks; then the agent's last proposal (bit-width over ``B_max``,
  :math:`f/f^{\max}`, :math:`\tilde f/\tilde f^{\max}`) and the logarithms of its delay and
  energy ratios :math:`T/T_0`, :math:`E/E_0` (zeros at reset);
- **action** (2 numbers in [-1, 1]): the bit-width in :math:`\{1,\dots,B_{\max}\}` and the
  share ρ of the delay budget given to the agent, which sets both frequencies
  (:func:`decode_action`); a frequency above its cap is clipped and then misses the budget;
- **reward**: for a design that meets both budgets, :math:`-\log_2(\lambda g(\hat b))` scaled to
  [0, 1] (a monotone transform of the (P1) objective that keeps the reward informative at
  high bit-widths, where :math:`g` is ~2^-b); otherwise ``-0.5`` minus a penalty proportional
  to the relative violations (the penalty-driven constraint handling);
- **episode**: ``horizon`` proposals on one problem drawn at reset from
  :func:`qlib.design.random_problems`' distribution, so the trained policy is reusable across
  budgets and workloads. The committed policy uses ``horizon = 1``: each episode is one
  decision (a contextual bandit, the simplest MDP), which trains in about a minute of CPU;
  longer horizons let a policy refine its proposal from the observed delay and energy ratios.

:func:`train_ppo` trains stable-baselines3's PPO with a fixed seed on CPU;
:func:`solve_with_policy` runs a policy deterministically on one problem and keeps the best
feasible proposal. :func:`default_policy` loads the committed policy
``qlib/data/ppo_design.zip``, reproducible by :func:`make_default_policy`.
"""

from __future__ import annotations

import math
import pathlib
import time
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from qlib import design

__all__ = [
    "DEFAULT_POLICY_PATH",
    "DEFAULT_TIMESTEPS",
    "DesignEnv",
    "decode_action",
    "train_ppo",
    "solve_with_policy",
    "default_policy",
    "make_default_policy",
]

DEFAULT_POLICY_PATH = pathlib.Path(__file__).resolve().parent / "data" / "ppo_design.zip"
#: Training steps of the committed policy (about a minute on one CPU core).
DEFAULT_TIMESTEPS = 40_000
_RHO_MIN = 0.02  # smallest share of the delay budget an action can give either side
_HORIZON = 1  # proposals per episode of the committed policy (see train_ppo)
_OBS_DIM = 12


def decode_action(problem: design.Problem, action: Any) -> tuple[int, float, float]:
    """Map an action in [-1, 1]^2 to (bit-width, f_agent, f_server) of ``problem``.

    ``action[0]`` sets the bit-width in {1, ..., B_max}; ``action[1]`` the share ρ in
    [0.02, 0.98] of the delay budget given to the agent: f = t_agent(f=1)/(ρ T0) and
    f~ = t_server(f~=1)/((1-ρ) T0) in units of the caps, clipped to the caps (a clipped
    frequency then misses the delay budget and is penalized).
    """
    a = np.clip(np.asarray(action, dtype=float).reshape(2), -1.0, 1.0)
    u = (a + 1.0) / 2.0
    b = int(np.clip(np.rint(1 + u[0] * (problem.B_max - 1)), 1, problem.B_max))
    rho = _RHO_MIN + u[1] * (1.0 - 2 * _RHO_MIN)
    c = problem.coefficients()
    phi = min(1.0, c["tau_a"] * b / rho)
    phs = min(1.0, c["tau_s"] / (1.0 - rho))
    return b, float(phi * problem.f_agent_max), float(phs * problem.f_server_max)


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
    horizon : int
        Proposals per episode (>= 1).
    penalty : float
        Weight of the relative constraint violations in the infeasible reward (>= 0).
    """

    metadata = {"render_modes": []}

    def __init__(self, sampler: Callable[[np.random.Generator], design.Problem] | None = None,
                 horizon: int = _HORIZON, penalty: float = 1.0) -> None:
        if not (isinstance(horizon, (int, np.integer)) and horizon >= 1):
            raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
        if not (math.isfinite(penalty) and penalty >= 0):
            raise ValueError(f"penalty must be a finite number >= 0, got {penalty!r}")
        self.sampler = sampler or (lambda rng: design.random_problems(1, rng=rng)[0])
        self.horizon = int(horizon)
        self.penalty = float(penalty)
        self.observation_space = gym.spaces.Box(-10.0, 10.0, shape=(_OBS_DIM,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.problem: design.Problem | None = None
        self._t = 0
        self._last = np.zeros(5, dtype=np.float32)

    def set_problem(self, problem: design.Problem) -> np.ndarray:
        """Start an episode on a given problem (used at inference); returns the observation."""
        self.problem = problem
        self._t = 0
        self._features = _problem_features(problem)
        self._last = np.zeros(5, dtype=np.float32)
        return self._obs()

    def _obs(self) -> np.ndarray:
        return np.clip(np.concatenate([self._features, self._last]), -10.0, 10.0).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        problem = (options or {}).get("problem") or self.sampler(self.np_random)
        return self.set_problem(problem), {}

    def evaluate(self, action: Any) -> tuple[float, dict[str, Any]]:
        """Reward and details of one proposal on the current problem (no state change)."""
        assert self.problem is not None, "call reset() first"
        p = self.problem
        b, f, fs = decode_action(p, action)
        dv, ev = (float(x) for x in p.violation(b, f, fs))
        feasible = p.is_feasible(b, f, fs)
        if feasible:
            reward = _score(p, b)
        else:
            reward = -0.5 - self.penalty * (min(max(dv, 0.0), 10.0) + min(max(ev, 0.0), 10.0))
        return reward, {"bit_width": b, "f_agent": f, "f_server": fs, "feasible": feasible,
                        "delay_ratio": dv + 1.0, "energy_ratio": ev + 1.0}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward, info = self.evaluate(action)
        p = self.problem
        assert p is not None
        self._last = np.array([info["bit_width"] / p.B_max, info["f_agent"] / p.f_agent_max,
                               info["f_server"] / p.f_server_max,
                               math.log10(info["delay_ratio"]), math.log10(info["energy_ratio"])],
                              dtype=np.float32)
        self._t += 1
        return self._obs(), float(reward), False, self._t >= self.horizon, info


def train_ppo(total_timesteps: int = DEFAULT_TIMESTEPS, seed: int = 0, horizon: int = _HORIZON,
              penalty: float = 1.0, verbose: int = 0) -> Any:
    """Train stable-baselines3 PPO on :class:`DesignEnv` with a fixed seed, on CPU.

    Parameters
    ----------
    total_timesteps : int
        Environment steps (>= 256); :data:`DEFAULT_TIMESTEPS` takes about a minute on one core.
    seed : int
        Seed of PPO, its network initialization and the problem sampler (>= 0).
    horizon, penalty
        See :class:`DesignEnv`.
    verbose : int
        stable-baselines3 verbosity.

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

    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)
    # Eight environments stepped together: one batched forward pass per step of all of them,
    # which is what makes a minute of CPU enough (the networks are tiny).
    env = make_vec_env(lambda: DesignEnv(horizon=horizon, penalty=penalty), n_envs=8, seed=int(seed))
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=128, n_epochs=10, learning_rate=1e-3,
                gamma=0.9, gae_lambda=0.9, ent_coef=0.0, seed=int(seed), device="cpu", verbose=verbose,
                policy_kwargs={"net_arch": [64, 64], "log_std_init": -1.0})
    model.learn(total_timesteps=int(total_timesteps))
    model._qbook_horizon = int(horizon)
    return model


def solve_with_policy(problem: design.Problem, policy: Any = None) -> design.Solution:
    """Run ``policy`` deterministically for its horizon on ``problem``; keep the best feasible proposal.

    See :func:`qlib.design.solve_ppo` (the public entry point).
    """
    if not isinstance(problem, design.Problem):
        raise ValueError(f"problem must be a qlib.design.Problem, got {type(problem).__name__}")
    t0 = time.perf_counter()
    model = default_policy() if policy is None else policy
    horizon = getattr(model, "_qbook_horizon", _HORIZON)
    env = DesignEnv(horizon=horizon)
    obs = env.set_problem(problem)
    best: tuple[int, float, float] | None = None
    worst = {"delay": 0.0, "energy": 0.0}
    for _ in range(horizon):
        action, _ = model.predict(obs, deterministic=True)
        obs, _, _, _, info = env.step(action)
        if info["feasible"]:
            if best is None or info["bit_width"] > best[0]:
                best = (info["bit_width"], info["f_agent"], info["f_server"])
        else:
            worst["delay"] = max(worst["delay"], info["delay_ratio"] - 1.0)
            worst["energy"] = max(worst["energy"], info["energy_ratio"] - 1.0)
    elapsed = time.perf_counter() - t0
    if best is None:
        exists = design.solve_exact(problem).feasible  # type: ignore[union-attr]
        kind = "delay" if worst["delay"] >= worst["energy"] else "energy"
        why = (f"{kind}: every PPO proposal violated the budgets (worst: delay +{worst['delay']:.1%}, "
               f"energy +{worst['energy']:.1%})"
               + ("; a feasible design exists, the policy missed it" if exists else
                  "; no design meets the budgets"))
        return design.Solution(method="ppo", feasible=False, reason=why, solve_time=elapsed)
    return design._design(problem, "ppo", best[0], best[1], best[2], solve_time=elapsed)


_DEFAULT: list[Any] = []


def default_policy() -> Any:
    """The committed PPO policy (``qlib/data/ppo_design.zip``), loaded once per process."""
    if not _DEFAULT:
        if not DEFAULT_POLICY_PATH.exists():
            raise ValueError(
                "the committed PPO policy qlib/data/ppo_design.zip is missing: rebuild it with "
                "qlib.ppo_env.make_default_policy(), or pass policy=qlib.ppo_env.train_ppo(...)")
        from stable_baselines3 import PPO

        _DEFAULT.append(PPO.load(str(DEFAULT_POLICY_PATH), device="cpu"))
    return _DEFAULT[0]


def make_default_policy(path: pathlib.Path | str = DEFAULT_POLICY_PATH) -> Any:
    """Retrain the committed policy (``train_ppo(DEFAULT_TIMESTEPS, seed=0)``) and save it to ``path``."""
    model = train_ppo(DEFAULT_TIMESTEPS, seed=0)
    model.save(str(path))
    _DEFAULT.clear()
    return model
