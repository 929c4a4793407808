"""The host loop: compile once, call the fused chunk, evaluate, log, checkpoint, resume.

Run folder layout (``igmda train --out DIR``)::

    DIR/config.json      resolved Config (the run's identity; a resume must match it)
    DIR/metrics.jsonl    one row per evaluation per seed (t_env, win rate, return, loss, ...)
    DIR/checkpoints/     orbax checkpoints of the whole TrainState (last N kept)
    DIR/provenance.json  the code (git commit, versions) the run started and each resume ran
    DIR/tensorboard/ DIR/metrics.csv DIR/wandb/   optional loggers (igmda_jax.persist.loggers)

Everything random lives in the TrainState's keys and evaluation keys are derived from the
seed and the evaluation index, so a resumed run writes the same metrics as an uninterrupted
one (wall-clock columns aside). SIGTERM or Ctrl-C saves a checkpoint before the next chunk and
raises ``RunStopped`` (igmda_jax/persist/stop_signals.py).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

import envs
from igmda_jax.compiled import Compiled, compile_backend, evaluate_rows, seed_keys
from igmda_jax.core.config import RESUMABLE_FIELDS, Config
from igmda_jax.core.presets import with_defaults
from igmda_jax.fused.distributed import barrier, check_supported, fetch, is_primary
from igmda_jax.fused.seed_layout import (
    idle_devices_notice,
)
from igmda_jax.fused.train import TrainState
from igmda_jax.persist.checkpoint import CheckpointStore, check_compatible
from igmda_jax.persist.loggers import check_loggers, make_loggers
from igmda_jax.persist.provenance import record_provenance
from igmda_jax.persist.stop_signals import RunStopped, stop_on_signals


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def _checkpoint_steps(out: Path) -> list[int]:
    """Steps of the checkpoints kept in ``out/checkpoints`` (orbax's step folders)."""
    folder = out / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def _finished_summary(out: Path, config: Config) -> dict | None:
    """The summary of a run that already reached ``config.t_max`` (its final checkpoint is
    written after its final evaluation), else None."""
    steps = _checkpoint_steps(out)
    metrics_path = out / "metrics.jsonl"
    if not steps or steps[-1] < config.t_max or not metrics_path.exists():
        return None
    rows = [json.loads(line) for line in _read_rows(metrics_path, sys.maxsize)]
    final = rows[-config.seeds :]
    if len(final) < config.seeds:
        return None
    return {
        "win_rate_per_seed": [row["win_rate"] for row in final],
        "win_rate": float(np.mean([row["win_rate"] for row in final])),
        "t_env": steps[-1],
        "out_dir": str(out),
        "finished_before": True,
    }


def _read_rows(path: Path, keep_below_eval: int) -> list[str]:
    """The metrics lines of evaluations before ``keep_below_eval``; a line a kill cut short
    (not valid JSON) is dropped: the resumed run writes its evaluation again."""
    if not path.exists():
        return []
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row["eval"] < keep_below_eval:
            kept.append(line)
    return kept


def run(
    config: Config,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    env: envs.Environment | None = None,
    initial_state: Callable[[Compiled], TrainState] | None = None,
    desc: str | None = None,
    pool_options: dict | None = None,
) -> dict:
    """Train ``config`` into ``out_dir`` (or continue it with ``resume``). Returns a summary:
    final greedy win rate per seed, its mean, and the run folder.

    Hooks for runs built on another (igmda imitate): ``env`` replaces the config's environment,
    ``initial_state(compiled)`` replaces ``compiled.init(seed_keys(config))`` for a fresh start
    (a resume restores the checkpoint into the same structure), ``desc`` labels the progress bar.
    """
    config.validate()
    check_supported(config.backend, config.seeds)  # several processes: what they can run
    progress = progress and is_primary()  # several processes: process 0 reports
    out = Path(out_dir)
    config_path = out / "config.json"
    if resume:
        if not config_path.exists():
            raise FileNotFoundError(f"nothing to resume: {config_path} does not exist")
        saved = with_defaults(json.loads(config_path.read_text()))
        check_compatible(saved, config.to_dict(), RESUMABLE_FIELDS)
        finished = _finished_summary(out, config)
        if finished is not None:  # nothing to train: leave the folder as it is
            return finished
    elif config_path.exists():
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it")
    # The backend starts before anything is written: workers that cannot start (no StarCraft
    # II, a replay that does not fit) leave no run folder behind to block the corrected retry.
    barrier("igmda run: folder checked")  # several processes: all read it before one writes
    if is_primary():  # only process 0 writes the loggers
        check_loggers(config.to_dict())
    compiled = compile_backend(config, env, pool_options)
    try:
        if config.backend != "fused":
            from igmda_jax.host.loop import check_memory, describe_memory

            check_memory(compiled)
            if progress:
                print(describe_memory(compiled), file=sys.stderr, flush=True)
        out.mkdir(parents=True, exist_ok=True)
        if is_primary():  # several processes: process 0 writes the run folder's files
            config_path.write_text(json.dumps(config.to_dict(), indent=1))
            warning = record_provenance(out, resume)
            if warning is not None:
                print(warning, file=sys.stderr, flush=True)
        return _train(config, out, compiled, resume, progress, initial_state, desc)
    finally:
        compiled.close()


def _train(
    config: Config,
    out: Path,
    compiled: Any,
    resume: bool,
    progress: bool,
    initial_state: Callable[[Any], TrainState] | None,
    desc: str | None,
) -> dict:
    """The loop of :func:`run` on a started backend."""
    used = len(compiled.sharding.device_set)
    notice = idle_devices_notice(config.seeds, used, len(jax.devices()))
    if notice is not None and progress:
        print(notice, file=sys.stderr, flush=True)
    keys = seed_keys(config)
    store = CheckpointStore(out / "checkpoints", max_to_keep=config.keep_checkpoints)
    host = {"evals": 0, "next_test": 0, "next_save": config.save_interval, "wall": 0.0}
    if resume and store.latest_step() is not None:
        restored, metadata, skipped = store.restore_latest(
            compiled.state_like(keys), require=("config", "host"), set_aside=True
        )
        resumed_at = int(np.min(fetch(restored.t_env)))
        for bad in skipped:  # a damaged newest checkpoint: continue from the previous one
            print(
                f"checkpoint {bad.step} is damaged ({bad.reason}); set aside as "
                f"{bad.step}.unreadable; resuming from step {resumed_at}",
                file=sys.stderr,
                flush=True,
            )
        state = compiled.place(restored)
        check_compatible(with_defaults(metadata["config"]), config.to_dict(), RESUMABLE_FIELDS)
        host = metadata["host"]
    else:
        state = compiled.init(keys) if initial_state is None else initial_state(compiled)
    metrics_path = out / "metrics.jsonl"
    loggers = make_loggers(out, metrics_path, config.to_dict()) if is_primary() else []
    if is_primary() and resume and host["evals"] == 0 and _read_rows(metrics_path, 1):
        # killed before its first checkpoint: it starts again from t_env 0; its rows are kept
        aside = metrics_path.with_name("metrics.before-restart.jsonl")
        metrics_path.replace(aside)
        if progress:
            print(
                f"no checkpoint to resume from: starting again; rows kept in {aside}",
                file=sys.stderr,
            )
    if is_primary():
        kept = _read_rows(metrics_path, host["evals"])
        metrics_path.write_text("".join(line + "\n" for line in kept))

    def t_now() -> int:
        return int(np.min(fetch(compiled.unpad(state.t_env))))

    def save() -> None:
        if store.latest_step() == t_now():
            return
        # the last chunk's metrics go into the next evaluation rows: keep them for a resume
        host["last_metrics"] = {
            name: np.asarray(values).tolist() for name, values in last_metrics.items()
        }
        store.save(
            int(t_now()),
            compiled.unpad(state),
            {"config": config.to_dict(), "host": host, "seeds": config.seeds},
        )

    start_wall = time.perf_counter() - host["wall"]
    last_metrics: dict[str, Any] = {
        name: np.asarray(values) for name, values in host.get("last_metrics", {}).items()
    }
    last_win = float("nan")
    bar = tqdm(
        total=config.t_max,
        initial=min(t_now(), config.t_max),
        unit="step",
        disable=not progress,
        dynamic_ncols=True,
        mininterval=0.1 if sys.stderr.isatty() else 30.0,  # keep logs of redirected runs short
        desc=desc or f"{config.alg} {config.map}",
    )

    def close() -> None:
        store.close()
        bar.close()
        for logger in loggers:
            logger.close()

    # SIGTERM / Ctrl-C: save a checkpoint before the next chunk and stop (RunStopped). The host
    # backend's workers and multi-process runs end where they stand, as before.
    stop_enabled = config.backend == "fused" and jax.process_count() == 1
    with stop_on_signals(stop_enabled) as stop:
        while True:
            t = t_now()
            if stop.signal_name is not None and t < config.t_max:
                host["wall"] = time.perf_counter() - start_wall
                save()
                close()
                raise RunStopped(stop.signal_name, t, str(out / "checkpoints"))
            if t >= host["next_test"] or t >= config.t_max:
                rows = evaluate_rows(compiled, state, config, host["evals"], last_metrics)
                wall = time.perf_counter() - start_wall
                rows = [{**row, "wall_time": round(wall, 2)} for row in rows]
                if is_primary():
                    with metrics_path.open("a") as f:
                        for row in rows:
                            f.write(json.dumps(row) + "\n")
                for logger in loggers:
                    logger.write(rows)
                host["evals"] += 1
                host["next_test"] = (t // config.test_interval + 1) * config.test_interval
                last_win = float(np.mean([row["win_rate"] for row in rows]))
            if t >= config.t_max:
                break
            chunk_start = time.perf_counter()
            state, chunk_metrics = compiled.train_chunk(state)
            last_metrics = fetch(chunk_metrics)
            if not np.all(last_metrics["finite"]):
                bad = [config.seed + i for i, ok in enumerate(last_metrics["finite"]) if not ok]
                raise TrainingDiverged(
                    f"loss became NaN/inf near t_env={t} (seed(s) {bad}); stopped. The last good "
                    f"checkpoint (step {store.latest_step()}) is kept in {out / 'checkpoints'}"
                )
            new_t = t_now()
            host["wall"] = time.perf_counter() - start_wall
            rate = (new_t - t) / max(time.perf_counter() - chunk_start, 1e-9)
            bar.update(min(new_t, config.t_max) - bar.n)
            bar.set_postfix(
                episodes=int(np.min(last_metrics["episodes"])),
                test_win=f"{last_win:.2f}",
                steps_per_s=f"{rate:,.0f}",
                refresh=False,
            )
            if new_t >= host["next_save"]:
                host["next_save"] = (new_t // config.save_interval + 1) * config.save_interval
                save()
    host["wall"] = time.perf_counter() - start_wall
    save()
    close()
    barrier("igmda run: metrics written")  # several processes: process 0 wrote them
    final = [json.loads(line) for line in metrics_path.read_text().splitlines()][-config.seeds :]
    return {
        "win_rate_per_seed": [row["win_rate"] for row in final],
        "win_rate": float(np.mean([row["win_rate"] for row in final])),
        "t_env": t_now(),
        "out_dir": str(out),
    }
