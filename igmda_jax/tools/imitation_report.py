"""What ``igmda imitate`` reports: per-action value distributions of expert and learner (the
paper's Fig. 3b), per-sight summaries (summary.json/.csv), and the figures values.png and
curves.png (Fig. 3a). Pure reporting: nothing here trains.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
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


def sight_label(sight_range: float | None) -> str:
    """Folder label of a sight range: 0.0 -> '0', 1.5 -> '1.5', None -> 'none'."""
    return "none" if sight_range is None else f"{sight_range:g}"


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


# ---------------------------------------------------------------------------------- outputs
def _mean(values: Iterable[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def sight_summary(config: Config, rows: list[dict[str, Any]], folder: Path) -> dict[str, Any]:
    final = rows[-config.seeds :]
    per_seed = [
        {
            "seed": row["seed"],
            "t_env": row["t_env"],
            "learner_win_rate": row["win_rate"],
            "expert_win_rate": row.get("expert_win_rate"),
            "imitation_accuracy": row.get("imitation_accuracy"),
            "imitation_loss": row.get("imitation_loss"),
            "agreement": row.get("agreement"),
            "updates": row.get("train_updates"),
        }
        for row in final
    ]
    means = {
        key: _mean(seed[key] for seed in per_seed)
        for key in (
            "learner_win_rate",
            "expert_win_rate",
            "imitation_accuracy",
            "imitation_loss",
            "agreement",
        )
    }
    return {
        "sight_range": config.sight_range,
        "run_dir": str(folder),
        "alg": config.alg,
        "t_env": min(seed["t_env"] for seed in per_seed),
        **means,
        "per_seed": per_seed,
    }


CSV_COLUMNS = (
    "sight_range",
    "seed",
    "t_env",
    "learner_win_rate",
    "expert_win_rate",
    "imitation_accuracy",
    "imitation_loss",
    "agreement",
)


def write_summary_csv(path: Path, sights: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for sight in sights:
            label = sight_label(sight["sight_range"])
            for seed in sight["per_seed"]:
                writer.writerow({**seed, "sight_range": label})
            writer.writerow({**sight, "sight_range": label, "seed": "mean"})


def _figure(rows: int, cols: int, width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * cols, height * rows), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, cols, squeeze=False)


def plot_values(values: list[dict[str, Any]], path: Path) -> None:
    """Fig. 3b-like: per sight range, box plots of the expert's and the learner's action
    values per action, and the most common state type's expert greedy frequency (the
    imitation target) beside the learner's mean output."""
    figure, axes = _figure(len(values), 3, 4.6, 3.2)
    for row, entry in enumerate(values):
        label = f"sight {sight_label(entry['sight_range'])}"
        names = entry["action_names"]
        for col, network in enumerate(("expert", "learner")):
            ax = axes[row][col]
            stats = []
            for a, name in enumerate(names):
                per = entry["per_action"][a][f"{network}_q"]
                if per["n"] == 0:  # never available
                    continue
                q = per["quantiles"]
                stats.append(
                    {
                        "label": name,
                        "whislo": q["p5"],
                        "q1": q["p25"],
                        "med": q["p50"],
                        "q3": q["p75"],
                        "whishi": q["p95"],
                        "mean": per["mean"],
                        "fliers": [],
                    }
                )
            if stats:
                ax.bxp(stats, showmeans=True)
            ax.set_title(f"{label}: {network} action values")
            ax.tick_params(axis="x", labelrotation=60, labelsize=7)
        ax = axes[row][2]
        if entry["state_types"]:
            kind = entry["state_types"][0]
            x = np.arange(entry["n_actions"])
            learner_mean = [v if v is not None else 0.0 for v in kind["learner_q_mean"]]
            ax.bar(x - 0.2, kind["expert_greedy_freq"], 0.4, label="expert greedy freq")
            ax.bar(x + 0.2, learner_mean, 0.4, label="learner mean output")
            ax.set_xticks(x, names, rotation=60, fontsize=7)
            ax.set_title(f"{label}: most common state type ({kind['fraction']:.0%})")
            ax.legend(fontsize=7)
    figure.savefig(path, dpi=110)


def plot_curves(sights: list[dict[str, Any]], path: Path) -> None:
    """Fig. 3a-like: learner greedy win rate (seed mean) over env steps per sight range, and
    the frozen expert's greedy win rate as the reference."""
    figure, axes = _figure(1, 1, 6.0, 4.0)
    ax = axes[0][0]
    expert_rate = None
    for sight in sights:
        rows = [json.loads(line) for line in (Path(sight["run_dir"]) / "metrics.jsonl").open()]
        evals = sorted({row["eval"] for row in rows})
        t = [np.mean([r["t_env"] for r in rows if r["eval"] == e]) for e in evals]
        win = [np.mean([r["win_rate"] for r in rows if r["eval"] == e]) for e in evals]
        ax.plot(t, win, marker="o", ms=3, label=f"sight view {sight_label(sight['sight_range'])}")
        expert_rate = sight["expert_win_rate"] if expert_rate is None else expert_rate
    if expert_rate is not None:
        ax.axhline(expert_rate, color="k", linestyle="--", label="expert (target_mean)")
    ax.set_xlabel("env steps")
    ax.set_ylabel("greedy win rate")
    ax.set_ylim(-0.02, 1.02)
    ax.legend()
    figure.savefig(path, dpi=110)


def format_table(summary: Mapping[str, Any]) -> str:
    """The final table ``igmda imitate`` prints: one line per sight range (seed means)."""
    fmt = lambda v: "   -" if v is None else f"{v:.3f}"  # noqa: E731
    expert = summary["expert"]
    view = (
        f"sees full_obs at sight {sight_label(expert['view_sight_range'])}"
        if expert["view"] == "full_obs"
        else f"sees {expert['view']}"
    )
    lines = [
        f"expert {expert['alg']} on {expert['map']} ({view}, {expert['seeds']} seed(s)); "
        f"learners {summary['learner_alg']}, t_max {summary['t_max']}",
        f"{'sight':>6} {'seeds':>5} {'learner win':>11} {'expert win':>10} "
        f"{'imit. acc':>9} {'agreement':>9}  run folder",
    ]
    for s in summary["sight_ranges"]:
        lines.append(
            f"{sight_label(s['sight_range']):>6} {len(s['per_seed']):>5} "
            f"{fmt(s['learner_win_rate']):>11} {fmt(s['expert_win_rate']):>10} "
            f"{fmt(s['imitation_accuracy']):>9} {fmt(s['agreement']):>9}  {s['run_dir']}"
        )
    return "\n".join(lines)
