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
                         metrics.jsonl, checkpoints/, values.json, final_eval.json)
    OUT/summary.json     learner / expert greedy win rates of the final evaluation (320
    OUT/summary.csv      episodes per seed by default, as a sweep's), imitation accuracy and
                         test-time agreement, per seed and mean, per sight range
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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from igmda_jax.compiled import FINAL_EVALUATION_INDEX, compile_trainer, evaluation_keys
from igmda_jax.core.config import RESUMABLE_FIELDS, Config
from igmda_jax.core.presets import with_defaults
from igmda_jax.fused.distributed import fetch
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
from igmda_jax.tools.imitation_setup import (
    Expert,
    ImitationError,
    imitation_config,
    imitation_env,
    initial_state,
    load_expert,
    parse_sight_range,
    read_expert,
    restore_imitation,
)
from igmda_jax.tools.imitation_values import collect_values

__all__ = ["ImitationError", "imitate"]


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


def _finished_without_checkpoints(folder: Path, config: Config) -> bool:
    """True when ``folder`` holds a finished sight whose checkpoints were removed (its small
    outputs kept, e.g. copied back from a results folder): values.json is written only after
    training ended, and every seed's last metrics row reached ``t_max``."""
    if (folder / "checkpoints").is_dir() or not (folder / "values.json").is_file():
        return False
    rows = read_metrics(folder) if (folder / "metrics.jsonl").is_file() else []
    last_t_env = {row["seed"]: row["t_env"] for row in rows}
    return len(last_t_env) == config.seeds and min(last_t_env.values()) >= config.t_max


def _saved_measurement(path: Path, episodes: int) -> dict[str, Any] | None:
    """A finished sight's values.json or final_eval.json when it was measured over ``episodes``
    episodes per seed (the learner is frozen once finished, so it would measure the same), else
    None."""
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    return saved if saved.get("episodes_per_seed") == episodes else None


def final_evaluation(config: Config, env: Any, state: TrainState, episodes: int) -> dict[str, Any]:
    """Greedy win rates of the finished learners (the deployed policy) and of the frozen expert,
    ``episodes`` episodes per seed on the keys of ``igmda eval``: the statistic of a sweep's
    final_eval.json, not the last test evaluation's few episodes. ``state``: [seeds, ...]."""
    eval_config = dataclasses.replace(config, test_nepisode=episodes)
    compiled = compile_trainer(eval_config, env)
    state = compiled.place(state)
    keys = evaluation_keys(eval_config, FINAL_EVALUATION_INDEX)
    learner = fetch(compiled.evaluate(state, keys, "deployed"))
    expert = fetch(compiled.evaluate(state, keys, "expert"))
    return {
        "episodes_per_seed": episodes,
        "seeds": [config.seed + i for i in range(config.seeds)],
        "t_env": int(np.min(fetch(state.t_env))),
        "win_rate_per_seed": np.asarray(learner["win_rate"]).tolist(),
        "expert_win_rate_per_seed": np.asarray(expert["win_rate"]).tolist(),
        "return_per_seed": np.asarray(learner["return"]).tolist(),
        "expert_return_per_seed": np.asarray(expert["return"]).tolist(),
    }


def _status(folder: Path, config: Config, info: dict[str, Any]) -> str:
    """'new' (no run in ``folder``), 'resume' (this imitation, unfinished: killed or a larger
    ``t_max``) or 'done' (this imitation, finished: reused, from its checkpoints or, when those
    were removed, from its metrics and values.json). FileExistsError when ``folder`` holds
    another run."""
    config_path = folder / "config.json"
    if not config_path.exists():
        return "new"
    try:
        saved = with_defaults(json.loads(config_path.read_text()))
        check_compatible(saved, config.to_dict(), RESUMABLE_FIELDS)
        # the expert is identified by its config and step, not by where its folder lies
        saved_info = json.loads((folder / "imitation.json").read_text())
        check_compatible(saved_info, info, ignore=("expert_dir",))
    except (ValueError, FileNotFoundError) as error:
        raise FileExistsError(
            f"{folder} already holds a different run ({error}); remove it or choose another "
            "output folder"
        ) from None
    if _finished_without_checkpoints(folder, config):
        return "done"
    with CheckpointStore(folder / "checkpoints") as store:
        step = store.latest_step()
    return "done" if step is not None and step >= config.t_max else "resume"


MEASUREMENT_FLAGS = {"values.json": "--value-episodes", "final_eval.json": "--final-eval-episodes"}


def _measurements(
    folder: Path,
    config: Config,
    env: Any,
    status: str,
    value_episodes: int,
    final_eval_episodes: int,
) -> dict[str, dict[str, Any]]:
    """A trained sight's values.json and final_eval.json: the saved ones when a finished sight
    was measured over the same episodes, else measured from its checkpoint and written."""
    episodes = {"values.json": value_episodes, "final_eval.json": final_eval_episodes}
    measured = {
        name: _saved_measurement(folder / name, n) if status == "done" else None
        for name, n in episodes.items()
    }
    missing = [name for name, saved in measured.items() if saved is None]
    if not missing:
        return measured
    if not (folder / "checkpoints").is_dir():
        name = missing[0]
        raise ImitationError(
            f"{folder} is a finished imitation without checkpoints and its {name} was not "
            f"measured over {episodes[name]} episodes per seed; rerun with its "
            f"{MEASUREMENT_FLAGS[name]}"
        )
    _, state, _ = restore_imitation(folder)
    if "values.json" in missing:
        compiled = compile_trainer(config, env)
        measured["values.json"] = collect_values(compiled, state, config, value_episodes)
    if "final_eval.json" in missing:
        measured["final_eval.json"] = final_evaluation(config, env, state, final_eval_episodes)
    for name in missing:
        (folder / name).write_text(json.dumps(measured[name], indent=1))
    return measured


def imitate(
    expert_dir: str | Path,
    sight_ranges: Sequence[float | None],
    out_dir: str | Path,
    *,
    t_max: int,
    overrides: Mapping[str, Any] | None = None,
    value_episodes: int = 32,
    final_eval_episodes: int = 320,
    progress: bool = True,
) -> dict[str, Any]:
    """Train learners at each of ``sight_ranges`` by imitating the frozen expert of
    ``expert_dir``; write ``out_dir`` (see the module docstring) and return the summary.

    ``overrides``: Config fields for the learners' runs (``seeds``, ``seed``, ``lr``,
    ``test_interval``, ``epsilon_start``, ``alg`` = ``<mixer>-bc`` for behaviour cloning, ...).
    A sight folder that already holds this exact, finished imitation is reused, not retrained.
    ``value_episodes`` / ``final_eval_episodes``: greedy episodes per seed for the value
    distributions and for the final evaluation of learners and expert.
    """
    sight_ranges = [parse_sight_range(s) for s in sight_ranges]
    if not sight_ranges:
        raise ImitationError("give at least one sight range")
    if len({sight_label(s) for s in sight_ranges}) != len(sight_ranges):
        raise ImitationError(f"sight ranges repeat: {sight_ranges}")
    for name, episodes in (("value", value_episodes), ("final_eval", final_eval_episodes)):
        if episodes < 1:
            raise ImitationError(f"{name}_episodes must be >= 1, got {episodes}")
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
        measured = _measurements(folder, config, env, status, value_episodes, final_eval_episodes)
        sights.append(
            sight_summary(config, read_metrics(folder), folder, measured["final_eval.json"])
        )
        values.append(measured["values.json"])
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
