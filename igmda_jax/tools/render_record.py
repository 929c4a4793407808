"""Record greedy episodes of a saved SMAX run for ``igmda render`` (drawing: render.py).

One jitted call plays ``E`` greedy episodes of one of the run's seeds with the training code's
own collection (``rollout.collect``; epsilon 0, as ``igmda eval`` plays) and returns what a
picture needs: unit positions, health, alive flags and attack targets per step, the executed
actions and, unrolling both networks over the played episodes, the greedy choice of the
learner and of the expert (-da/-bc runs) at every step.

Shapes: E episodes, T = episode limit, U units (allies first), n agents (the allies). Frame
``t`` of an episode is the state the agents saw before acting at step ``t``; frame ``length``
is the final state.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import SingleDeviceSharding

from envs.smax import N_MOVE_ACTIONS, SmaxEnv
from envs.smax_maps import MAPS as SMAX_MAPS
from igmda_jax.compiled import FINAL_EVALUATION_INDEX, evaluation_keys, make_env, seed_keys
from igmda_jax.core.acting import Networks, build_inputs
from igmda_jax.core.config import Config
from igmda_jax.core.losses import masked_greedy_actions
from igmda_jax.core.networks import initial_hidden, unroll
from igmda_jax.core.presets import load_config
from igmda_jax.fused.rollout import EpisodeBatch, collect
from igmda_jax.fused.train import make_train
from igmda_jax.persist.checkpoint import CheckpointStore

ACTORS = ("deployed", "learner", "expert")


@dataclasses.dataclass(frozen=True)
class Recording:
    """Greedy episodes of one seed of a run, as host arrays (shapes: module docstring).

    positions [E, T+1, U, 2]; health [E, T+1, U] (fraction of the unit's maximum); alive
    [E, T+1, U]; targets [E, T+1, U] (the unit each unit attacked in the step into frame t,
    -1 none); unit_types, radius [E, U]; sight [E, n] (the agents' sight radius); actions
    [E, T, n] (executed); greedy {"learner", "expert"} -> [E, T, n] (-da/-bc runs only,
    recomputed by unrolling each network over the episode); filled [E, T]; length, won [E].
    """

    map_name: str
    alg: str
    actor: str  # who acted: "agent" (plain runs), "learner" or "expert"
    seed: int
    t_env: int
    map_size: tuple[float, float]
    positions: np.ndarray
    health: np.ndarray
    alive: np.ndarray
    targets: np.ndarray
    unit_types: np.ndarray
    radius: np.ndarray
    sight: np.ndarray
    actions: np.ndarray
    greedy: dict[str, np.ndarray]
    filled: np.ndarray
    length: np.ndarray
    won: np.ndarray

    @property
    def n_agents(self) -> int:
        return self.actions.shape[-1]

    @property
    def other(self) -> str | None:
        """The network that did not act, whose choices are compared (None: plain run)."""
        return {"learner": "expert", "expert": "learner"}.get(self.actor) if self.greedy else None

    def disagreements(self) -> np.ndarray:
        """[E, T, n] bool: the acting network's executed action differs from the other one's
        greedy choice at a real step (all False for plain runs)."""
        if self.other is None:
            return np.zeros(self.actions.shape, bool)
        return (self.actions != self.greedy[self.other]) & self.filled[..., None]


@dataclasses.dataclass(frozen=True)
class LoadedRun:
    """A run's config, its SMAX environment and networks, one seed's parameters."""

    config: Config
    env: SmaxEnv
    nets: Networks
    params: dict[str, Any]
    seed_index: int
    t_env: int


def check_request(config: Config, run_dir: Path, actor: str, seed: int | None) -> int:
    """Validate a render request against the run's config; return the seed's index.
    Raises ValueError with a one-line message."""
    if config.map not in SMAX_MAPS:
        raise ValueError(f"{run_dir} plays {config.map!r}: render draws SMAX maps only")
    if config.backend == "smac":
        raise ValueError(f"{run_dir} was trained on StarCraft II (backend smac): render plays SMAX")
    if actor not in ACTORS:
        raise ValueError(f"--actor must be one of {', '.join(ACTORS)}, got {actor!r}")
    if actor == "expert" and not config.uses_expert:
        raise ValueError(f"{config.alg} has no expert; use --actor learner (its agent)")
    seeds = [config.seed + i for i in range(config.seeds)]
    if seed is None:
        return 0
    if seed not in seeds:
        raise ValueError(f"--seed {seed} is not one of the run's seeds {seeds}")
    return seeds.index(seed)


def load_run(run_dir: str | Path, actor: str = "deployed", seed: int | None = None) -> LoadedRun:
    """Restore the newest readable checkpoint of ``run_dir`` and keep seed ``seed``'s
    parameters (default: the run's first seed). Raises FileNotFoundError / ValueError."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.json)")
    config = load_config(run_dir)
    seed_index = check_request(config, run_dir, actor, seed)
    if not (run_dir / "checkpoints").is_dir():  # do not let CheckpointStore create it
        raise FileNotFoundError(f"{run_dir} has no checkpoint to render")
    env = make_env(config)
    # the checkpoint holds the TrainState of the run's backend (host backends: an
    # observation replay, hence a Trainer built on the workers' EnvInfo)
    trainer = make_train(config, env if config.backend == "fused" else env.info)
    keys = seed_keys(config)
    placement = SingleDeviceSharding(jax.local_devices()[0])
    like = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=placement),
        jax.eval_shape(jax.vmap(trainer.init), keys),
    )
    with CheckpointStore(run_dir / "checkpoints") as store:
        if store.latest_step() is None:
            raise FileNotFoundError(f"{run_dir} has no checkpoint to render")
        state, _, _ = store.restore_latest(like)
    params = jax.tree.map(lambda x: x[seed_index], state.params)
    t_env = int(jax.device_get(state.t_env)[seed_index])
    return LoadedRun(config, env, trainer.nets, params, seed_index, t_env)


def attack_targets(prev_attack: jax.Array, alive_before: jax.Array, n_allies: int) -> jax.Array:
    """The unit each unit attacked, from SMAX's ``prev_attack_actions``.

    prev_attack: [..., U] int (0: no attack; allies attack enemy ``a - 5``, enemies list the
    allies in reverse order); alive_before: [..., U] bool, the shooter was alive before the
    step -> [..., U] int32 unit index, -1 for none."""
    n_units = prev_attack.shape[-1]
    slot = prev_attack.astype(jnp.int32) - N_MOVE_ACTIONS
    is_ally = jnp.arange(n_units) < n_allies
    target = jnp.where(is_ally, n_allies + slot, n_allies - 1 - slot)
    valid = (slot >= 0) & alive_before & (target >= 0) & (target < n_units)
    return jnp.where(valid, target, -1).astype(jnp.int32)


def greedy_choices(
    config: Config, nets: Networks, env: SmaxEnv, params: dict, episodes: EpisodeBatch, key
) -> dict[str, jax.Array]:
    """Greedy actions of the expert and the learner of a -da/-bc run on played episodes,
    each network unrolled over the same inputs it saw while playing (observations derived
    from the records, the executed last actions) -> {"expert", "learner"}: [E, T, n]."""
    observations = jax.vmap(jax.vmap(env.observe))(episodes.records)  # [E, T+1, ...]
    actions = episodes.actions
    n_episodes, n_steps, n = actions.shape
    last = jnp.concatenate([jnp.full_like(actions[:, :1], -1), actions[:, :-1]], axis=1)
    avail = observations.avail[:, :n_steps]
    time_major = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
    choices = {}
    for name, module, obs, network in (
        ("expert", nets.agent, observations.expert_obs, "agent"),
        ("learner", nets.learner, observations.obs, "learner"),
    ):
        inputs = build_inputs(config, obs[:, :n_steps], last, avail, network=network)
        taus = None
        if nets.quantile:
            shape = (n_steps, n_episodes, config.n_act_quantiles)
            taus = jax.random.uniform(jax.random.fold_in(key, len(choices)), shape)
        q = unroll(
            module,
            params["agent" if name == "expert" else "learner"],
            initial_hidden((n_episodes,), n, config.hidden_dim),
            time_major(inputs),
            jnp.zeros((n_steps, n_episodes), bool),
            taus,
        )
        q = q.mean(axis=-2) if nets.quantile else q  # IQN: mean over quantiles
        choices[name] = time_major(masked_greedy_actions(q, time_major(avail)))
    return choices


def make_recorder(config: Config, env: SmaxEnv, nets: Networks, n_episodes: int, actor: str):
    """A jitted ``(params, key) -> dict of arrays`` playing ``n_episodes`` greedy episodes
    (``actor``: "expert" or the deployed network) and returning the Recording's arrays."""
    expert_acts = actor == "expert"

    def record(params: dict, key: jax.Array) -> dict[str, Any]:
        play_key, tau_key = jax.random.split(key)
        episodes, stats = collect(
            env,
            nets,
            config,
            params,
            play_key,
            n_episodes,
            jnp.float32(0.0),
            jnp.float32(1.0 if expert_acts or not config.uses_expert else 0.0),
            networks=("expert" if expert_acts else "learner") if config.uses_expert else "all",
        )
        records = episodes.records
        alive = records.health > 0
        inner = env.inner
        types = records.unit_types[:, 0].astype(jnp.int32)
        alive_before = jnp.concatenate([jnp.zeros_like(alive[:, :1]), alive[:, :-1]], axis=1)
        sight = (
            inner.unit_type_sight_ranges[types[:, : env.n_agents]]
            if env.sight_range is None
            else jnp.full((n_episodes, env.n_agents), env.sight_range, jnp.float32)
        )
        out = {
            "positions": records.positions,
            "health": records.health / inner.unit_type_health[types][:, None, :],
            "alive": alive,
            "targets": attack_targets(records.prev_attack, alive_before, env.n_agents),
            "unit_types": types,
            "radius": inner.unit_type_radiuses[types],
            "sight": sight,
            "actions": episodes.actions,
            "filled": episodes.filled,
            "length": stats["length"],
            "won": stats["won"],
        }
        if config.uses_expert:
            out["greedy"] = greedy_choices(config, nets, env, params, episodes, tau_key)
        return out

    return jax.jit(record)


def record_run(
    run_dir: str | Path, episodes: int = 1, actor: str = "deployed", seed: int | None = None
) -> Recording:
    """Play ``episodes`` greedy episodes of seed ``seed`` of ``run_dir`` (default: its first
    seed) with the evaluation key of ``igmda eval`` (the same episodes when ``episodes``
    equals the run's ``test_nepisode``) and record them."""
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"--episodes must be an integer >= 1, got {episodes!r}")
    run = load_run(run_dir, actor, seed)
    config = run.config
    key = evaluation_keys(config, FINAL_EVALUATION_INDEX)[run.seed_index]
    recorder = make_recorder(config, run.env, run.nets, episodes, actor)
    arrays = jax.device_get(recorder(run.params, key))
    acted = "expert" if actor == "expert" else "learner" if config.uses_expert else "agent"
    return Recording(
        map_name=config.map,
        alg=config.alg,
        actor=acted,
        seed=config.seed + run.seed_index,
        t_env=run.t_env,
        map_size=(float(run.env.inner.map_width), float(run.env.inner.map_height)),
        greedy={name: np.asarray(a) for name, a in arrays.pop("greedy", {}).items()},
        **{name: np.asarray(a) for name, a in arrays.items()},
    )
