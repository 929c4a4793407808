"""Imitation of a frozen expert at other sight ranges: ``igmda imitate`` (the paper's Fig. 3).

A trained run folder (``igmda train``) is the **expert**: its agent and mixer are loaded from the
latest checkpoint and frozen. For each requested sight range ``s`` a fresh IGM-DA run is
trained whose learners see the sight-``s`` observation and imitate the expert's greedy actions
(DAgger: the learner acts); the TD loss has weight 0 (``Config.td_weight``), so the expert and
the mixer receive exactly zero gradients and stay bit-for-bit as loaded. This measures the
*lossy decomposition*: how much of a policy learned with a wide view a narrower view can keep.

The expert's input at sight X is exactly the plain agent's observation at sight X, so a plain
run's ``agent`` parameters fit the DA expert slot when the DA environment shows the expert
``full_obs`` with ``expert_sight_range`` = the expert run's sight range. An IGM-DA/BC run can be
the expert too: its own expert (``agent``) and mixer are used with the view it was trained on
(its ``expert_view``, at each unit type's SMAX sight) and its learner is ignored.

Output folder::

    OUT/sight_<s>/       one run folder per sight range (config.json, imitation.json,
                         metrics.jsonl, checkpoints/, values.json)
    OUT/summary.json     final learner / expert greedy win rates, imitation accuracy, test-time
    OUT/summary.csv      agreement, per seed and mean, per sight range
    OUT/values.json      per-action value distributions of expert and learner (all sights)
    OUT/values.png       ... as in the paper's Fig. 3b
    OUT/curves.png       learner win rate over env steps per sight range, expert as reference

Learner seeds pair with expert seeds: learner seed k imitates the expert of seed k. ``seeds``
and ``seed`` overrides select a contiguous subset of the expert run's seeds.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import envs
from igmda_jax.acting import build_inputs, q_step
from igmda_jax.checkpoint import CheckpointStore, check_compatible
from igmda_jax.config import Config, ConfigError, config_from_dict, load_config
from igmda_jax.learner import make_optimizer
from igmda_jax.losses import masked_greedy_actions
from igmda_jax.networks import initial_hidden
from igmda_jax.run import (
    Compiled,
    TrainingDiverged,
    compile_trainer,
    evaluate_rows,
    seed_keys,
)
from igmda_jax.train import Trainer, TrainState, make_train


class ImitationError(ValueError):
    """The expert run or the requested imitation does not fit (the message says why)."""


# Fields fixed by the frozen expert's parameters or inputs: an override must equal the expert's.
EXPERT_FIXED_FIELDS = (
    "hidden_dim",
    "mixer_embed",
    "hypernet_embed",
    "hypernet_layers",
    "qplex_heads",
    "qplex_adv_hypernet_layers",
    "obs_last_action",
    "obs_agent_id",
    "obs_avail",
)
# Learner seeds' PRNG keys are the expert run's seed keys folded with this (independent streams).
IMITATION_SALT = 0x1A17A7E
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


# ---------------------------------------------------------------------------------- expert
@dataclasses.dataclass(frozen=True)
class Expert:
    """A frozen expert: its run's config and its parameters (leading seed axis)."""

    run_dir: Path
    config: Config
    params: dict[str, Any]  # {"agent", "mixer"}, each leaf [expert seeds, ...]; {} if not loaded
    t_env: list[int]  # per seed; [] if not loaded
    n_agents: int
    step: int  # the checkpoint step the parameters come from

    @property
    def expert_view(self) -> str:
        """The view the expert network was trained on, as a DA ``expert_view``."""
        return self.config.expert_view if self.config.uses_expert else "full_obs"

    @property
    def view_sight_range(self) -> float | None:
        """The sight range of that view (None: each unit type's SMAX sight)."""
        if self.config.uses_expert:  # run.make_env shows -da/-bc experts the default sight
            return getattr(self.config, "expert_sight_range", None)
        return self.config.sight_range


def _n_agents(map_name: str, **options: Any) -> int:
    return envs.make(map_name, **options).info.n_agents


def read_expert(run_dir: str | Path) -> Expert:
    """The expert run's config and agent count, without its parameters (cheap): checks that
    ``run_dir`` is a run folder with at least one checkpoint."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"expert run folder {run_dir} does not exist")
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(
            f"{run_dir} is not a run folder (no config.json); pass a folder made by `igmda train`"
        )
    try:
        config = load_config(config_path).validate()
    except (TypeError, ConfigError) as error:
        raise ImitationError(f"cannot read the expert's config {config_path}: {error}") from None
    checkpoints = run_dir / "checkpoints"
    missing = f"expert run {run_dir} has no checkpoint"
    if not checkpoints.is_dir():  # do not let CheckpointStore create it in the expert's folder
        raise FileNotFoundError(f"{missing} (no {checkpoints}); let `igmda train` finish first")
    with CheckpointStore(checkpoints) as store:
        step = store.latest_step()
    if step is None:
        raise FileNotFoundError(f"{missing} ({checkpoints} is empty); let `igmda train` finish")
    options = {} if config.episode_limit is None else {"episode_limit": config.episode_limit}
    n_agents = _n_agents(config.map, **options)
    return Expert(run_dir, config, {}, [], n_agents, step)


def load_expert(run_dir: str | Path) -> Expert:
    """:func:`read_expert` plus the agent and mixer of the latest checkpoint (the whole
    TrainState is restored into the expert run's own template, then only the parameters kept)."""
    expert = read_expert(run_dir)
    config = expert.config
    compiled = compile_trainer(config)
    with CheckpointStore(expert.run_dir / "checkpoints") as store:
        state, _ = store.restore(expert.step, jax.eval_shape(compiled.init, seed_keys(config)))
    params = {"agent": state.params["agent"], "mixer": state.params["mixer"]}
    params = jax.tree.map(np.asarray, jax.device_get(params))  # the replay is dropped here
    t_env = [int(t) for t in np.asarray(jax.device_get(state.t_env))]
    return dataclasses.replace(expert, params=params, t_env=t_env)


# ---------------------------------------------------------------------------------- config
def sight_label(sight_range: float | None) -> str:
    """Folder label of a sight range: 0.0 -> '0', 1.5 -> '1.5', None -> 'none'."""
    return "none" if sight_range is None else f"{sight_range:g}"


def parse_sight_range(text: str | float | None) -> float | None:
    """'none' (or None) -> None, else a non-negative finite float."""
    if text is None or (isinstance(text, str) and text.strip().lower() in ("none", "default")):
        return None
    try:
        value = float(text)
    except ValueError:
        raise ImitationError(f"sight range must be a number or 'none', got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ImitationError(f"sight range must be finite and >= 0, got {text!r}")
    return value


def imitation_config(
    expert: Expert, sight_range: float | None, *, t_max: int, overrides: Mapping[str, Any] = ()
) -> Config:
    """The IGM-DA config of learners at ``sight_range`` imitating ``expert``.

    Starts from the expert run's config; sets alg = ``<mixer>-da``, the sight range, the
    expert's view and ``td_weight`` = 0; then applies ``overrides`` (Config fields). An
    override may not change the map (or anything else that changes the agents), the network
    shapes and input flags fixed by the expert's parameters, or the mixer.
    """
    overrides = dict(overrides)
    base = expert.config
    fields = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown config field(s) {unknown}; valid fields: {sorted(fields)}")
    new_map = overrides.get("map", base.map)
    new_limit = overrides.get("episode_limit", base.episode_limit)
    if (new_map, new_limit) != (base.map, base.episode_limit):
        try:
            agents = f"{_n_agents(new_map)} agents"
        except ValueError:
            agents = "unknown map"
        raise ImitationError(
            f"the expert run {expert.run_dir} was trained on map {base.map!r} "
            f"({expert.n_agents} agents, episode_limit {base.episode_limit}) but the imitation "
            f"asks for map {new_map!r} ({agents}, episode_limit {new_limit}); learners imitate "
            "the expert on its own map: drop --map/--episode-limit or pick another expert"
        )
    for name in EXPERT_FIXED_FIELDS:
        if name in overrides and overrides[name] != getattr(base, name):
            raise ImitationError(
                f"{name}={overrides[name]!r} differs from the expert run's {getattr(base, name)!r}; "
                "the frozen expert's parameters and inputs fix it"
            )
    if "sight_range" in overrides:
        raise ImitationError("sight_range is not an override: list the sight ranges to imitate at")
    if overrides.get("expert_view", expert.expert_view) != expert.expert_view:
        raise ImitationError(
            f"expert_view={overrides['expert_view']!r}: the frozen expert was trained on the "
            f"{expert.expert_view!r} view, which the imitation runs keep"
        )
    if overrides.get("td_weight", 0.0) != 0.0:
        raise ImitationError(
            f"td_weight={overrides['td_weight']!r}: imitation keeps the expert frozen (td_weight "
            "0); train expert and learner jointly with `igmda train --alg <mixer>-da` instead"
        )
    alg = overrides.pop("alg", f"{base.mixer}-da")
    if alg not in (f"{base.mixer}-da", f"{base.mixer}-bc"):
        raise ImitationError(
            f"alg={alg!r}: the expert is a {base.mixer} run ({base.alg}); the learners train as "
            f"{base.mixer}-da (DAgger, default) or {base.mixer}-bc (behaviour cloning)"
        )
    values = {
        **base.to_dict(),
        "alg": alg,
        "sight_range": sight_range,
        "expert_view": expert.expert_view,
        "td_weight": 0.0,
        "t_max": t_max,
        "tensorboard": False,
        **overrides,
    }
    config = Config(**values).validate()
    offset = config.seed - base.seed
    if offset < 0 or offset + config.seeds > base.seeds:
        raise ImitationError(
            f"the expert run has seeds {base.seed}..{base.seed + base.seeds - 1}; each learner "
            f"seed imitates the expert of the same seed, so seed/seeds must select a subset of "
            f"them (got {config.seed}..{config.seed + config.seeds - 1})"
        )
    return config


def imitation_env(config: Config, expert: Expert) -> envs.Environment:
    """The DA environment: learners at ``config.sight_range``, the expert's view for the expert."""
    options: dict[str, Any] = {"sight_range": config.sight_range, "expert_view": config.expert_view}
    if config.episode_limit is not None:
        options["episode_limit"] = config.episode_limit
    expert_sight = expert.view_sight_range
    if expert_sight is not None:
        options["expert_sight_range"] = expert_sight
    try:
        return envs.make(config.map, **options)
    except ValueError as error:
        if "expert_sight_range" in str(error):
            raise ImitationError(
                f"map {config.map!r} cannot show the expert the view it was trained on (sight "
                f"{expert_sight}): its expert view has no expert_sight_range option"
            ) from None
        raise


def _compile(config: Config, env: envs.Environment) -> Compiled:
    """run.compile_trainer for an environment built here (the DA env needs expert_sight_range)."""
    trainer = make_train(config, env)
    return Compiled(
        trainer=trainer,
        init=jax.jit(jax.vmap(trainer.init)),
        train_chunk=jax.jit(jax.vmap(trainer.train_chunk), donate_argnums=0),
        evaluate=jax.jit(jax.vmap(trainer.evaluate, in_axes=(0, 0, None)), static_argnums=2),
    )


def imitation_keys(config: Config) -> jax.Array:
    """Learner seeds' keys: [seeds, 2], independent of the expert run's training streams."""
    return jax.vmap(lambda k: jax.random.fold_in(k, IMITATION_SALT))(seed_keys(config))


def _tree_shapes(tree: Any) -> Any:
    return jax.tree.map(lambda x: tuple(np.shape(x)), tree)


def initial_state(compiled: Compiled, config: Config, expert: Expert) -> TrainState:
    """A fresh DA TrainState per learner seed holding the frozen expert's agent and mixer
    (online and target) and a fresh optimizer state."""
    state = compiled.init(imitation_keys(config))
    offset = config.seed - expert.config.seed
    frozen = jax.tree.map(lambda x: x[offset : offset + config.seeds], expert.params)
    for name in ("agent", "mixer"):
        want, got = _tree_shapes(state.params[name]), _tree_shapes(frozen[name])
        if want != got:
            raise ImitationError(
                f"the expert's {name} parameters do not fit the imitation run's {name}: expert "
                f"{got} vs imitation {want} (different observation or network sizes)"
            )
    # separate device buffers for online and target: the train step donates its input state
    params = {**state.params, **jax.tree.map(jnp.array, frozen)}
    target = jax.tree.map(jnp.array, frozen)
    optimizer = make_optimizer(config)
    return state.replace(
        params=params, target_params=target, opt_state=jax.vmap(optimizer.init)(params)
    )


# ---------------------------------------------------------------------------------- training
def _train(
    compiled: Compiled, state: TrainState, config: Config, out: Path, progress: bool, desc: str
) -> tuple[TrainState, dict[str, Any]]:
    """The host loop of run.run without resume: evaluate every ``test_interval`` steps (and at
    the end), train chunks until ``t_max``; rows go to ``out/metrics.jsonl``."""
    metrics_path = out / "metrics.jsonl"
    metrics_path.write_text("")
    host: dict[str, Any] = {"evals": 0, "next_test": 0, "wall": 0.0}
    last_metrics: dict[str, Any] = {}
    start = time.perf_counter()
    last_win = float("nan")

    def t_now() -> int:
        return int(np.min(jax.device_get(state.t_env)))

    bar = tqdm(total=config.t_max, unit="step", disable=not progress, dynamic_ncols=True, desc=desc)
    tensorboard = None
    if config.tensorboard:
        from igmda_jax.run import TensorBoardLog

        tensorboard = TensorBoardLog(out / "tensorboard")
    while True:
        t = t_now()
        if t >= host["next_test"] or t >= config.t_max:
            rows = evaluate_rows(compiled, state, config, host["evals"], last_metrics)
            wall = round(time.perf_counter() - start, 2)
            rows = [{**row, "wall_time": wall} for row in rows]
            with metrics_path.open("a") as f:
                for row in rows:
                    f.write(json.dumps(row) + "\n")
            if tensorboard is not None:
                tensorboard.write(rows)
            host["evals"] += 1
            host["next_test"] = (t // config.test_interval + 1) * config.test_interval
            last_win = float(np.mean([row["win_rate"] for row in rows]))
        if t >= config.t_max:
            break
        state, chunk_metrics = compiled.train_chunk(state)
        last_metrics = jax.device_get(chunk_metrics)
        if not np.all(last_metrics["finite"]):
            raise TrainingDiverged(f"imitation loss became NaN/inf near t_env={t} in {out}")
        bar.update(min(t_now(), config.t_max) - bar.n)
        bar.set_postfix(test_win=f"{last_win:.2f}", refresh=False)
    bar.close()
    if tensorboard is not None:
        tensorboard.close()
    host["wall"] = time.perf_counter() - start
    host["next_save"] = (t // config.save_interval + 1) * config.save_interval  # as run.run keeps
    host["last_metrics"] = {k: np.asarray(v).tolist() for k, v in last_metrics.items()}
    return state, host


def restore_imitation(run_dir: str | Path) -> tuple[Config, TrainState, dict[str, Any]]:
    """(config, final TrainState, imitation.json) of one ``OUT/sight_<s>`` folder."""
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    info = json.loads((run_dir / "imitation.json").read_text())
    expert = Expert(
        Path(info["expert_dir"]),
        config_from_dict(info["expert_config"]),
        {},
        [],
        info["n_agents"],
        info["expert_step"],
    )
    compiled = _compile(config, imitation_env(config, expert))
    with CheckpointStore(run_dir / "checkpoints") as store:
        state, _ = store.restore(None, jax.eval_shape(compiled.init, imitation_keys(config)))
    return config, state, info


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
            expert_in = build_inputs(config, timestep.expert_obs, last, timestep.avail)
            learner_in = build_inputs(config, timestep.obs, last, timestep.avail)
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


def _sight_summary(config: Config, rows: list[dict[str, Any]], folder: Path) -> dict[str, Any]:
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


def _write_csv(path: Path, sights: list[dict[str, Any]]) -> None:
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


# ---------------------------------------------------------------------------------- main
def _imitation_info(expert: Expert, config: Config) -> dict[str, Any]:
    return {
        "expert_dir": str(expert.run_dir.resolve()),
        "expert_alg": expert.config.alg,
        "expert_config": expert.config.to_dict(),
        "expert_view": expert.expert_view,
        "expert_sight_range": expert.view_sight_range,
        "expert_seed_offset": config.seed - expert.config.seed,
        "expert_step": expert.step,
        "n_agents": expert.n_agents,
    }


def _completed(folder: Path, config: Config, info: dict[str, Any]) -> bool:
    """True when ``folder`` already holds this exact imitation, finished (it is reused);
    False when it is new or holds this imitation unfinished (killed before its only, final
    checkpoint: it is trained again from scratch); FileExistsError when it holds another run."""
    config_path = folder / "config.json"
    if not config_path.exists():
        return False
    try:
        check_compatible(json.loads(config_path.read_text()), config.to_dict())
        check_compatible(json.loads((folder / "imitation.json").read_text()), info)
    except (ValueError, FileNotFoundError) as error:
        raise FileExistsError(
            f"{folder} already holds a different run ({error}); remove it or choose another "
            "output folder"
        ) from None
    with CheckpointStore(folder / "checkpoints") as store:
        return store.latest_step() is not None


def imitate(
    expert_dir: str | Path,
    sight_ranges: Sequence[float | None],
    out_dir: str | Path,
    *,
    t_max: int,
    overrides: Mapping[str, Any] | None = None,
    value_episodes: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """Train learners at each of ``sight_ranges`` by imitating the frozen expert of
    ``expert_dir``; write ``out_dir`` (see the module docstring) and return the summary.

    ``overrides``: Config fields for the learners' runs (``seeds``, ``seed``, ``lr``,
    ``test_interval``, ``epsilon_start``, ``alg`` = ``<mixer>-bc`` for behaviour cloning, ...).
    A sight folder that already holds this exact, finished imitation is reused, not retrained.
    """
    sight_ranges = [parse_sight_range(s) for s in sight_ranges]
    if not sight_ranges:
        raise ImitationError("give at least one sight range")
    if len({sight_label(s) for s in sight_ranges}) != len(sight_ranges):
        raise ImitationError(f"sight ranges repeat: {sight_ranges}")
    if value_episodes < 1:
        raise ImitationError(f"value_episodes must be >= 1, got {value_episodes}")
    # every check that needs no parameters first, then the (possibly large) expert checkpoint
    light = read_expert(expert_dir)
    out = Path(out_dir)
    plan = []
    for sight_range in sight_ranges:
        config = imitation_config(light, sight_range, t_max=t_max, overrides=overrides or {})
        imitation_env(config, light)  # refuses a map that cannot show the expert's view
        folder = out / f"sight_{sight_label(sight_range)}"
        info = _imitation_info(light, config)
        plan.append((config, folder, info, _completed(folder, config, info)))
    expert = load_expert(expert_dir) if not all(done for *_, done in plan) else light
    out.mkdir(parents=True, exist_ok=True)
    sights, values = [], []
    for config, folder, info, done in plan:
        compiled = _compile(config, imitation_env(config, expert))
        if done:
            _, state, _ = restore_imitation(folder)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
            (folder / "imitation.json").write_text(json.dumps(info, indent=1))
            state = initial_state(compiled, config, expert)
            desc = f"imitate {config.alg} {config.map} sight {sight_label(config.sight_range)}"
            state, host = _train(compiled, state, config, folder, progress, desc)
            with CheckpointStore(folder / "checkpoints", max_to_keep=1) as store:
                t_end = int(np.min(jax.device_get(state.t_env)))
                metadata = {"config": config.to_dict(), "host": host, "seeds": config.seeds}
                store.save(t_end, state, {**metadata, "imitation": info})
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").open() if line.strip()]
        sights.append(_sight_summary(config, rows, folder))
        sight_values = collect_values(compiled, state, config, value_episodes)
        (folder / "values.json").write_text(json.dumps(sight_values, indent=1))
        values.append(sight_values)
        del state
    summary = {
        "expert": {
            "run_dir": str(expert.run_dir),
            "alg": expert.config.alg,
            "map": expert.config.map,
            "n_agents": expert.n_agents,
            "sight_range": expert.config.sight_range,
            "view": expert.expert_view,
            "view_sight_range": expert.view_sight_range,
            "seeds": expert.config.seeds,
            "checkpoint_step": expert.step,
        },
        "learner_alg": plan[0][0].alg,
        "t_max": t_max,
        "sight_ranges": sights,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    _write_csv(out / "summary.csv", sights)
    (out / "values.json").write_text(json.dumps(values, indent=1))
    plot_values(values, out / "values.png")
    plot_curves(sights, out / "curves.png")
    return summary


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
