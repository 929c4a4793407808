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
    OUT/RESULTS.md       the summary as a table, with both figures

``igmda imitate --report OUT`` redraws summary.csv, RESULTS.md and the figures from OUT's JSON
files and the sight folders' metrics.jsonl (no checkpoint; :mod:`.imitation_report`).

Learner seeds pair with expert seeds: learner seed k imitates the expert of seed k. ``seeds``
and ``seed`` overrides select a contiguous subset of the expert run's seeds.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import envs
from igmda_jax.compiled import Compiled, compile_trainer, env_options, seed_keys
from igmda_jax.core.config import RESUMABLE_FIELDS, Config, ConfigError
from igmda_jax.core.presets import config_from_dict, load_config, with_defaults
from igmda_jax.fused.learner import make_optimizer
from igmda_jax.fused.train import TrainState
from igmda_jax.persist.checkpoint import CheckpointStore, check_compatible
from igmda_jax.run import run
from igmda_jax.tools.imitation_report import (
    read_metrics,
    sight_folder,
    sight_label,
    sight_summary,
    write_report,
)
from igmda_jax.tools.imitation_values import collect_values


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


def _status(folder: Path, config: Config, info: dict[str, Any]) -> str:
    """'new' (no run in ``folder``), 'resume' (this imitation, unfinished: killed or a larger
    ``t_max``) or 'done' (this imitation, finished: reused). FileExistsError when ``folder``
    holds another run."""
    config_path = folder / "config.json"
    if not config_path.exists():
        return "new"
    try:
        saved = with_defaults(json.loads(config_path.read_text()))
        check_compatible(saved, config.to_dict(), RESUMABLE_FIELDS)
        check_compatible(json.loads((folder / "imitation.json").read_text()), info)
    except (ValueError, FileNotFoundError) as error:
        raise FileExistsError(
            f"{folder} already holds a different run ({error}); remove it or choose another "
            "output folder"
        ) from None
    with CheckpointStore(folder / "checkpoints") as store:
        step = store.latest_step()
    return "done" if step is not None and step >= config.t_max else "resume"


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
        folder = sight_folder(out, sight_range)
        info = _imitation_info(light, config)
        plan.append((config, folder, info, _status(folder, config, info)))
    expert = load_expert(expert_dir) if any(status != "done" for *_, status in plan) else light
    out.mkdir(parents=True, exist_ok=True)
    sights, values = [], []
    for config, folder, info, status in plan:
        env = imitation_env(config, expert)
        if status != "done":
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "imitation.json").write_text(json.dumps(info, indent=1))
            run(
                config,
                folder,
                resume=status == "resume",
                progress=progress,
                env=env,
                initial_state=functools.partial(initial_state, config=config, expert=expert),
                desc=f"imitate {config.alg} {config.map} sight {sight_label(config.sight_range)}",
            )
        _, state, _ = restore_imitation(folder)
        compiled = compile_trainer(config, env)
        rows = read_metrics(folder)
        sights.append(sight_summary(config, rows, folder))
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
    (out / "values.json").write_text(json.dumps(values, indent=1))
    write_report(out, summary, values)
    return summary
