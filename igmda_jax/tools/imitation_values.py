"""The per-action value distributions of ``igmda imitate`` (the paper's Fig. 3b): greedy episodes
in which the learner acts, the expert's and the learner's action values at each decision, and
their distributions per action and per state type. The rollout is jitted and vmapped over seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import envs
from igmda_jax.compiled import Compiled
from igmda_jax.core.acting import build_inputs, q_step
from igmda_jax.core.config import Config
from igmda_jax.core.losses import masked_greedy_actions
from igmda_jax.core.networks import initial_hidden
from igmda_jax.fused.train import Trainer, TrainState

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


# ---------------------------------------------------------------------------------- values
def _value_rollout(trainer: Trainer, n_episodes: int):
    """A function (params, key) -> per-step expert and learner action values of greedy
    episodes in which the learner acts: expert_q, learner_q [T, E, n, A], avail [T, E, n, A],
    valid [T, E] (the episode was still running)."""
    env, nets, config = trainer.env, trainer.nets, trainer.config
    n = env.info.n_agents

    def rollout(params, key):
        reset_key, scan_key = jax.random.split(key)
        timestep, env_state = jax.vmap(env.reset)(jax.random.split(reset_key, n_episodes))
        hidden = {
            "agent": initial_hidden((n_episodes,), n, config.hidden_dim),
            "learner": initial_hidden((n_episodes,), n, config.hidden_dim),
        }
        last = jnp.full((n_episodes, n), -1, jnp.int32)

        def step(carry, step_key):
            timestep, env_state, hidden, last = carry
            agent_key, learner_key, env_key = jax.random.split(step_key, 3)
            expert_in = build_inputs(
                config, timestep.expert_obs, last, timestep.avail, network="agent"
            )
            learner_in = build_inputs(config, timestep.obs, last, timestep.avail, network="learner")
            h_agent, expert_q = q_step(
                nets.agent,
                params["agent"],
                hidden["agent"],
                expert_in,
                agent_key,
                config.n_act_quantiles,
            )
            h_learner, learner_q = q_step(
                nets.learner,
                params["learner"],
                hidden["learner"],
                learner_in,
                learner_key,
                config.n_act_quantiles,
            )
            actions = masked_greedy_actions(learner_q, timestep.avail)
            next_timestep, env_state = jax.vmap(env.step)(
                jax.random.split(env_key, n_episodes), env_state, actions
            )
            out = {
                "expert_q": expert_q,
                "learner_q": learner_q,
                "avail": timestep.avail,
                "valid": ~timestep.done,
            }
            return (
                next_timestep,
                env_state,
                {"agent": h_agent, "learner": h_learner},
                actions,
            ), out

        keys = jax.random.split(scan_key, env.info.episode_limit)
        _, out = jax.lax.scan(step, (timestep, env_state, hidden, last), keys)
        return out

    return rollout


def _distribution(values: np.ndarray) -> dict[str, Any]:
    if values.size == 0:
        return {"n": 0}
    quantiles = np.quantile(values, QUANTILES)
    return {
        "n": int(values.size),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "quantiles": {
            f"p{round(q * 100)}": float(v) for q, v in zip(QUANTILES, quantiles, strict=True)
        },
    }


def action_names(env: envs.Environment) -> list[str]:
    """Human names of action indices (SMAX layout: 4 moves, stop, attack enemy j)."""
    n_actions = env.info.n_actions
    if hasattr(env, "spec"):  # a SMAX map
        moves = [f"move{i}" for i in range(4)]
        return [*moves, "stop", *[f"attack{j}" for j in range(n_actions - 5)]][:n_actions]
    return [f"a{i}" for i in range(n_actions)]


def value_distributions(
    expert_q: np.ndarray,
    learner_q: np.ndarray,
    avail: np.ndarray,
    names: Sequence[str] | None = None,
    top_types: int = 4,
    bins: int = 30,
) -> dict[str, Any]:
    """Per-action distributions of expert and learner action values over decisions.

    expert_q, learner_q: [M, A] float; avail: [M, A] bool, one row per decision (an alive
    agent-step with at least two available actions). Per action (over the rows where it is
    available): quantiles, mean, std, histograms on shared bins, and how often each network's
    greedy choice is that action. **State types** group decisions by their set of available
    actions (what a sight-0 agent can tell apart besides its own unit); for the most common
    ones, the expert's greedy-action frequency (Prop. 5: the MSE learner's optimal output for
    an observation is that average one-hot) next to the learner's mean outputs.
    """
    expert_q = np.asarray(expert_q, np.float64)
    learner_q = np.asarray(learner_q, np.float64)
    avail = np.asarray(avail, bool)
    m, n_actions = avail.shape
    names = list(names) if names is not None else [f"a{i}" for i in range(n_actions)]
    masked = lambda q: np.where(avail, q, -np.inf)  # noqa: E731
    expert_greedy = masked(expert_q).argmax(-1) if m else np.zeros(0, int)
    learner_greedy = masked(learner_q).argmax(-1) if m else np.zeros(0, int)
    result: dict[str, Any] = {
        "decisions": int(m),
        "n_actions": int(n_actions),
        "action_names": names,
        "agreement": float(np.mean(expert_greedy == learner_greedy)) if m else None,
        "per_action": [],
        "histograms": {},
        "state_types": [],
    }
    for a in range(n_actions):
        rows = avail[:, a]
        result["per_action"].append(
            {
                "action": a,
                "name": names[a],
                "available": int(rows.sum()),
                "expert_q": _distribution(expert_q[rows, a]),
                "learner_q": _distribution(learner_q[rows, a]),
                "expert_greedy_freq": float(np.mean(expert_greedy == a)) if m else 0.0,
                "learner_greedy_freq": float(np.mean(learner_greedy == a)) if m else 0.0,
            }
        )
    for label, q in (("expert", expert_q), ("learner", learner_q)):
        values = q[avail]
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
        counts = [np.histogram(q[avail[:, a], a], edges)[0].tolist() for a in range(n_actions)]
        result["histograms"][label] = {"edges": edges.tolist(), "counts": counts}
    if m:
        patterns, inverse, counts = np.unique(
            avail, axis=0, return_inverse=True, return_counts=True
        )
        inverse = inverse.reshape(-1)
        for index in np.argsort(-counts, kind="stable")[:top_types]:
            rows = inverse == index
            pattern = patterns[index]
            result["state_types"].append(
                {
                    "available": [names[a] for a in np.flatnonzero(pattern)],
                    "avail_mask": pattern.astype(int).tolist(),
                    "count": int(counts[index]),
                    "fraction": float(counts[index] / m),
                    "expert_greedy_freq": np.bincount(
                        expert_greedy[rows], minlength=n_actions
                    ).tolist(),
                    "learner_greedy_freq": np.bincount(
                        learner_greedy[rows], minlength=n_actions
                    ).tolist(),
                    "expert_q_mean": [
                        float(v) if pattern[a] else None
                        for a, v in enumerate(expert_q[rows].mean(0))
                    ],
                    "learner_q_mean": [
                        float(v) if pattern[a] else None
                        for a, v in enumerate(learner_q[rows].mean(0))
                    ],
                    "agreement": float(np.mean(expert_greedy[rows] == learner_greedy[rows])),
                }
            )
        for entry in result["state_types"]:  # counts -> frequencies
            total = max(entry["count"], 1)
            for key in ("expert_greedy_freq", "learner_greedy_freq"):
                entry[key] = [c / total for c in entry[key]]
    return result


def collect_values(
    compiled: Compiled, state: TrainState, config: Config, n_episodes: int
) -> dict[str, Any]:
    """Play ``n_episodes`` greedy episodes per seed with the learner acting; return the value
    distributions of all seeds' decisions pooled (see :func:`value_distributions`)."""
    rollout = jax.jit(jax.vmap(_value_rollout(compiled.trainer, n_episodes)))
    keys = jnp.stack(
        [jax.random.PRNGKey(20_000_003 + config.seed + i) for i in range(config.seeds)]
    )
    out = jax.device_get(rollout(state.params, keys))
    avail = np.asarray(out["avail"], bool)  # [S, T, E, n, A]
    valid = np.broadcast_to(np.asarray(out["valid"], bool)[..., None], avail.shape[:-1])
    decision = valid & (avail.sum(-1) >= 2)
    values = value_distributions(
        np.asarray(out["expert_q"])[decision],
        np.asarray(out["learner_q"])[decision],
        avail[decision],
        action_names(compiled.trainer.env),
    )
    return {"sight_range": config.sight_range, "episodes_per_seed": n_episodes, **values}
