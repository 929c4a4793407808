"""Greedy evaluation of a saved run: ``igmda eval RUN_DIR``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from igmda_jax.checkpoint import CheckpointStore
from igmda_jax.config import load_config
from igmda_jax.run import compile_trainer, evaluation_keys, seed_keys


def evaluate_run(
    run_dir: str | Path, episodes: int | None = None, actor: str = "deployed"
) -> dict[str, Any]:
    """Restore the latest checkpoint of ``run_dir`` and play greedy test episodes per seed.

    actor: "deployed" (the learner for -da/-bc, else the agent) or "expert" (-da/-bc only).
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.json)")
    config = load_config(config_path)
    if actor not in ("deployed", "expert"):
        raise ValueError(f"actor must be 'deployed' or 'expert', got {actor!r}")
    if actor == "expert" and not config.uses_expert:
        raise ValueError(f"{config.alg} has no expert; use actor='deployed'")
    if episodes is not None:
        config = dataclasses.replace(config, test_nepisode=episodes)
    compiled = compile_trainer(config)
    with CheckpointStore(run_dir / "checkpoints") as store:
        if store.latest_step() is None:
            raise FileNotFoundError(f"{run_dir} has no checkpoint to evaluate")
        restored, _ = store.restore(None, compiled.state_like(seed_keys(config)))
    state = compiled.place(restored)
    keys = evaluation_keys(config, 1_000_000)
    result = jax.device_get(compiled.evaluate(state, keys, actor))
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
