"""Greedy evaluation of a saved run: ``igmda eval RUN_DIR``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from igmda_jax.compiled import (
    FINAL_EVALUATION_INDEX,
    SEED_AXIS,
    compile_backend,
    evaluation_keys,
    seed_keys,
    worker_env_options,
)
from igmda_jax.core.presets import load_config
from igmda_jax.persist.checkpoint import CheckpointStore


def evaluate_run(
    run_dir: str | Path,
    episodes: int | None = None,
    actor: str = "deployed",
    backend: str | None = None,
    save_replay: str | Path | None = None,
) -> dict[str, Any]:
    """Restore the latest checkpoint of ``run_dir`` and play greedy test episodes per seed.

    actor: "deployed" (the learner for -da/-bc, else the agent) or "expert" (-da/-bc only).
    backend: where to play, default (and only choice) the run's own backend: the checkpoint's
    replay is the backend's. save_replay: a folder for StarCraft II replays of the test
    episodes (``--backend smac``; SMAC's ``save_replay``).
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.json)")
    config = load_config(config_path)
    if actor not in ("deployed", "expert"):  # checked before anything is built
        raise ValueError(f"actor must be 'deployed' or 'expert', got {actor!r}")
    if actor == "expert" and not config.uses_expert:
        raise ValueError(f"{config.alg} has no expert; use actor='deployed'")
    if backend is not None and backend != config.backend:
        raise ValueError(
            f"{run_dir} was trained on backend {config.backend!r} and evaluates there "
            f"(its checkpoint's replay is that backend's), not on {backend!r}"
        )
    if save_replay is not None and config.backend != "smac":
        raise ValueError("--save-replay writes StarCraft II replays: it needs backend 'smac'")
    if episodes is not None:
        if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
            raise ValueError(f"--episodes must be an integer >= 1, got {episodes!r}")
        config = dataclasses.replace(config, test_nepisode=episodes)
    if not (run_dir / "checkpoints").is_dir():  # do not let CheckpointStore create it
        raise FileNotFoundError(f"{run_dir} has no checkpoint to evaluate")
    with CheckpointStore(run_dir / "checkpoints") as store:
        if store.latest_step() is None:
            raise FileNotFoundError(f"{run_dir} has no checkpoint to evaluate")
        if save_replay is None:
            compiled = compile_backend(config)
        else:
            from igmda_jax.host.loop import HostCompiled

            replays = {
                "replay_dir": str(Path(save_replay).resolve()),
                "replay_prefix": run_dir.name,
            }
            compiled = HostCompiled(config, {**worker_env_options(config), **replays}, SEED_AXIS)
        try:
            restored, _ = store.restore(None, compiled.state_like(seed_keys(config)))
            state = compiled.place(restored)
            keys = evaluation_keys(config, FINAL_EVALUATION_INDEX)
            result = jax.device_get(compiled.evaluate(state, keys, actor))
            if save_replay is not None:
                Path(save_replay).mkdir(parents=True, exist_ok=True)
                compiled.save_replays()
        finally:
            compiled.close()
    win = np.asarray(result["win_rate"])
    return {
        "alg": config.alg,
        "map": config.map,
        "t_env": int(np.min(jax.device_get(restored.t_env))),
        "episodes": config.test_nepisode,
        "seeds": [config.seed + i for i in range(config.seeds)],
        "win_rate_per_seed": win.tolist(),
        "return_per_seed": np.asarray(result["return"]).tolist(),
        "win_rate_mean": float(win.mean()),
        "win_rate_median": float(np.median(win)),
    }
