"""The pieces of ``igmda imitate`` before training: the frozen expert (read from its run folder,
cheaply or with its parameters), the learners' config at a sight range (and the overrides the
expert forbids), their environment, keys and initial TrainState holding the frozen expert, and
the restore of a finished imitation run. :mod:`igmda_jax.tools.imitate` runs them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import envs
from igmda_jax.compiled import Compiled, compile_trainer, env_options, seed_keys
from igmda_jax.core.config import Config, ConfigError
from igmda_jax.core.presets import config_from_dict, load_config
from igmda_jax.fused.learner import make_optimizer
from igmda_jax.fused.train import TrainState
from igmda_jax.persist.checkpoint import CheckpointStore


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
    "own_features",
    "state_last_action",
)
# Learner seeds' PRNG keys are the expert run's seed keys folded with this (independent streams).
IMITATION_SALT = 0x1A17A7E


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
        if self.config.uses_expert:  # compiled.make_env shows -da/-bc experts the default sight
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
    if config.backend != "fused":
        raise ImitationError(
            f"the expert {run_dir} was trained on backend {config.backend!r}; igmda imitate "
            "trains learners on the fused SMAX path and needs an expert trained there"
        )
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
        state, _ = store.restore(expert.step, compiled.state_like(seed_keys(config)))
    params = {"agent": state.params["agent"], "mixer": state.params["mixer"]}
    params = jax.tree.map(np.asarray, jax.device_get(params))  # the replay is dropped here
    t_env = [int(t) for t in np.asarray(jax.device_get(state.t_env))]
    return dataclasses.replace(expert, params=params, t_env=t_env)


# ---------------------------------------------------------------------------------- config
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
    if overrides.get("expert_obs_avail", base.agent_obs_avail) != base.agent_obs_avail:
        raise ImitationError(
            f"expert_obs_avail={overrides['expert_obs_avail']!r}: the frozen expert network was "
            f"trained {'with' if base.agent_obs_avail else 'without'} the available-actions mask"
        )
    values = {
        **base.to_dict(),
        "expert_obs_avail": base.agent_obs_avail,  # the expert network's own input
        "alg": alg,
        "sight_range": sight_range,
        "expert_view": expert.expert_view,
        "td_weight": 0.0,
        "t_max": t_max,
        "tensorboard": False,  # the learner run's loggers are its own flags, not the expert's
        "csv": False,
        "wandb_project": None,
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
    options = env_options(config)
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


def imitation_keys(config: Config) -> jax.Array:
    """Learner seeds' keys: [seeds, 2], independent of the expert run's training streams."""
    return jax.vmap(lambda k: jax.random.fold_in(k, IMITATION_SALT))(seed_keys(config))


def _tree_shapes(tree: Any) -> Any:
    return jax.tree.map(lambda x: tuple(np.shape(x)), tree)


def initial_state(compiled: Compiled, config: Config, expert: Expert) -> TrainState:
    """A fresh DA TrainState per learner seed holding the frozen expert's agent and mixer
    (online and target) and a fresh optimizer state."""
    state = compiled.unpad(compiled.init(imitation_keys(config)))
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
    state = state.replace(
        params=params, target_params=target, opt_state=jax.vmap(optimizer.init)(params)
    )
    return compiled.place(state)


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
    compiled = compile_trainer(config, imitation_env(config, expert))
    with CheckpointStore(run_dir / "checkpoints") as store:
        state, _ = store.restore(None, compiled.state_like(imitation_keys(config)))
    return config, state, info
