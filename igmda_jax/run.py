"""The host loop: compile once, call the fused chunk, evaluate, log, checkpoint, resume.

Run folder layout (``igmda train --out DIR``)::

    DIR/config.json      resolved Config (the run's identity; a resume must match it)
    DIR/metrics.jsonl    one row per evaluation per seed (t_env, win rate, return, loss, ...)
    DIR/checkpoints/     orbax checkpoints of the whole TrainState (last N kept)
    DIR/provenance.json  the code (git commit, versions) the run started and each resume ran
    DIR/tensorboard/ DIR/metrics.csv DIR/wandb/   optional loggers (igmda_jax.persist.loggers)

Everything random lives in the TrainState's keys and evaluation keys are derived from the
seed and the evaluation index, so a resumed run writes the same metrics as an uninterrupted
one (wall-clock columns aside).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec, Sharding, SingleDeviceSharding
from tqdm import tqdm

import envs
from envs.smax_maps import MAPS as SMAX_MAPS
from igmda_jax.core.config import RESUMABLE_FIELDS, Config
from igmda_jax.core.presets import with_defaults
from igmda_jax.fused.distributed import barrier, check_supported, fetch, is_primary
from igmda_jax.fused.seed_layout import (
    DEVICE_AXIS,
    assemble_per_device,
    global_array,
    idle_devices_notice,
    map_seed_groups,
    pad_seeds,
    padded_seed_count,
    process_devices,
    seed_group_size,
    seed_sharding,
    unpad_seeds,
)
from igmda_jax.fused.train import Trainer, TrainState, make_train
from igmda_jax.persist.checkpoint import CheckpointStore, check_compatible
from igmda_jax.persist.loggers import check_loggers, make_loggers
from igmda_jax.persist.provenance import record_provenance

SEED_AXIS = "seed"  # name of the vmapped seed axis of train_chunk


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def env_options(config: Config) -> dict[str, Any]:
    """``envs.make`` options of the config's environment: sight, expert view, episode limit,
    and for SMAX maps the reward, own features and last actions in the state (other
    environments, the toy games, have their own)."""
    options: dict[str, Any] = {"sight_range": config.sight_range, "expert_view": config.expert_view}
    if config.episode_limit is not None:
        options["episode_limit"] = config.episode_limit
    if config.map in SMAX_MAPS:
        options["reward"] = config.reward
        options["own_features"] = config.own_features
        options["state_last_action"] = config.state_last_action
    return options


def worker_env_options(config: Config) -> dict[str, Any]:
    """Options of the host backends' worker environments: ``env_options`` for SMAX workers;
    for StarCraft II only what SMAC's worker understands (sight, expert view, episode limit)."""
    if config.backend != "smac":
        return env_options(config)
    options: dict[str, Any] = {"sight_range": config.sight_range, "expert_view": config.expert_view}
    if config.episode_limit is not None:
        options["episode_limit"] = config.episode_limit
    return options


def make_env(config: Config) -> envs.Environment:
    """The run's environment, built from the config."""
    return envs.make(config.map, **env_options(config))


@dataclasses.dataclass
class Compiled:
    """The trainer's functions, vmapped over seeds and jitted once.

    ``sharding`` places every TrainState leaf: its seed axis spread over local devices
    (``seed_sharding``) or all on one device. ``init`` returns a *working* state, whose seed
    axis may be padded to ``padded_seeds`` so that it spreads over the devices
    (``seed_layout.padded_seed_count``; the padding repeats the first seeds); ``train_chunk``
    takes and returns working states; its metrics and ``evaluate``'s results cover the
    config's ``seeds`` only. ``unpad`` gives the config's seeds (what checkpoints hold), and
    ``place`` turns such a state (e.g. a restore into ``state_like``) into a working one."""

    trainer: Trainer
    init: Any
    train_chunk: Any
    evaluate: Any
    sharding: Sharding
    seed_group: int = 1  # seeds vmapped together per device (seed_group_size)
    seeds: int = 1
    padded_seeds: int = 1
    restore_sharding: Sharding | None = None  # for unpadded states, when padded_seeds > seeds

    def close(self) -> None:
        """Nothing to release (the host backends' ``HostCompiled`` stops its workers here)."""

    def place(self, state: Any) -> Any:
        """A state of ``seeds`` or ``padded_seeds`` seeds (any placement) as a working state."""
        return jax.device_put(pad_seeds(state, self.padded_seeds), self.sharding)

    def unpad(self, state: Any) -> Any:
        """The config's seeds of a working state."""
        return unpad_seeds(state, self.seeds)

    def state_like(self, keys: jax.Array) -> Any:
        """Abstract TrainState (shapes, dtypes, placement) of ``unpad(init(keys))``: a restore
        target (without a placement, orbax would restore to the devices the checkpoint was
        saved from). Pass the restored state through ``place``."""
        shapes = jax.eval_shape(lambda k: self.unpad(self.init(k)), keys)
        placed = self.restore_sharding or self.sharding
        return jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=placed), shapes
        )


def compile_trainer(
    config: Config, env: envs.Environment | None = None, devices: list | None = None
) -> Compiled:
    """jit(vmap(...)) of the trainer's functions for ``config`` on ``env`` (default: the
    config's own environment, ``make_env``), seeds spread over ``devices`` (default: every
    local device, or with several processes those of ``seed_layout.process_devices``;
    ``seed_sharding``). Seeds spread over several processes are initialised, evaluated and
    trained by the process that holds them."""
    trainer = make_train(config, make_env(config) if env is None else env, SEED_AXIS)
    if devices is None:
        several = jax.process_count() > 1
        devices = process_devices(config.seeds, jax.devices()) if several else jax.local_devices()
    spans_processes = len({d.process_index for d in devices}) > 1
    padded = padded_seed_count(config.seeds, len(devices))
    sharding = seed_sharding(padded, devices) or SingleDeviceSharding(devices[0])
    init_on_one_device = jax.jit(jax.vmap(trainer.init))

    def init(keys: jax.Array) -> TrainState:
        """keys: [seeds, 2] -> a working state ([padded, ...] leaves, spread)."""
        # Initialised on one device, then spread: XLA's CPU runtime hangs (jax 0.10.2) running
        # the GRU parameter initialisation partitioned over host devices.
        if spans_processes and not isinstance(keys, jax.core.Tracer):  # (state_like traces)
            # each process its own seeds (process_devices: no padding)
            return assemble_per_device(init_on_one_device, np.asarray(keys), sharding)
        keys = pad_seeds(jax.device_put(keys, devices[0]), padded)
        return jax.device_put(init_on_one_device(keys), sharding)

    n_devices = sharding.mesh.size if isinstance(sharding, NamedSharding) else 1
    group = seed_group_size(config.seed_vmap, padded // n_devices, devices[0].platform)
    train_chunk = map_seed_groups(trainer.train_chunk, group, SEED_AXIS)
    evaluate = {
        actor: jax.vmap(functools.partial(trainer.evaluate, actor=actor))
        for actor in ("deployed", "expert")
    }
    if isinstance(sharding, NamedSharding):  # each device runs its own seeds, unsynchronised
        spec = PartitionSpec(DEVICE_AXIS)
        spread = functools.partial(
            jax.shard_map, mesh=sharding.mesh, out_specs=spec, check_vma=False
        )
        train_chunk = spread(train_chunk, in_specs=spec)
        evaluate = {actor: spread(fn, in_specs=(spec, spec)) for actor, fn in evaluate.items()}

    def chunk(state: TrainState) -> tuple[TrainState, dict]:
        """A working state -> the next one and the metrics of the config's seeds."""
        state, metrics = train_chunk(state)
        return state, unpad_seeds(metrics, config.seeds)

    def real_seeds(fn: Callable) -> Callable:
        """keys: [seeds, 2] -> stats of the config's seeds (padding inside the jit)."""
        return lambda state, keys: unpad_seeds(fn(state, pad_seeds(keys, padded)), config.seeds)

    jitted_evaluate = {actor: jax.jit(real_seeds(fn)) for actor, fn in evaluate.items()}
    place_keys = (
        (lambda keys: global_array(np.asarray(keys), sharding))
        if spans_processes
        else (lambda keys: keys)
    )

    return Compiled(
        trainer=trainer,
        init=init,
        train_chunk=jax.jit(chunk, donate_argnums=0),
        evaluate=lambda state, keys, actor="deployed": jitted_evaluate[actor](
            state, place_keys(keys)
        ),
        sharding=sharding,
        seed_group=group,
        seeds=config.seeds,
        padded_seeds=padded,
        restore_sharding=None if padded == config.seeds else SingleDeviceSharding(devices[0]),
    )


def compile_backend(
    config: Config, env: envs.Environment | None = None, pool_options: dict | None = None
) -> Any:
    """The config's backend: ``compile_trainer`` for ``fused``, else the host loop's
    :class:`~igmda_jax.host.loop.HostCompiled` (its worker processes started; close it when done).
    ``pool_options`` go to the host backends' WorkerPools (tests inject faults with them)."""
    if config.backend == "fused":
        return compile_trainer(config, env)
    if env is not None:
        raise ValueError(f"backend {config.backend!r} builds its environments in its workers")
    from igmda_jax.host.loop import HostCompiled  # the fused path does not need the worker pool

    return HostCompiled(config, worker_env_options(config), SEED_AXIS, pool_options=pool_options)


def seed_keys(config: Config) -> jax.Array:
    """One PRNG key per seed: [seeds, 2]."""
    return jnp.stack([jax.random.PRNGKey(config.seed + i) for i in range(config.seeds)])


def evaluation_keys(config: Config, index: int) -> jax.Array:
    """Keys of evaluation ``index``, independent of training: [seeds, 2]."""
    return jnp.stack(
        [
            jax.random.fold_in(jax.random.PRNGKey(10_000_019 + config.seed + i), index)
            for i in range(config.seeds)
        ]
    )


def evaluate_rows(
    compiled: Compiled, state: TrainState, config: Config, index: int, chunk_metrics: dict
) -> list[dict[str, Any]]:
    """Greedy evaluation of every seed; one metrics row per seed."""
    keys = evaluation_keys(config, index)
    result = fetch(compiled.evaluate(state, keys, "deployed"))
    if config.uses_expert:
        expert = fetch(compiled.evaluate(state, keys, "expert"))
        result["expert_win_rate"] = expert["win_rate"]
    t_env = np.asarray(fetch(state.t_env))
    rows = []
    for seed in range(config.seeds):
        row: dict[str, Any] = {
            "eval": index,
            "seed": config.seed + seed,
            "t_env": int(t_env[seed]),
            **{name: float(values[seed]) for name, values in result.items()},
        }
        for name, values in chunk_metrics.items():
            if name not in ("t_env", "finite", "win_rate", "return", "episode_length"):
                row[f"train_{name}" if name in ("episodes", "updates") else name] = float(
                    np.asarray(values)[seed]
                )
        rows.append(row)
    return rows


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
    while True:
        t = t_now()
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
    store.close()
    bar.close()
    for logger in loggers:
        logger.close()
    barrier("igmda run: metrics written")  # several processes: process 0 wrote them
    final = [json.loads(line) for line in metrics_path.read_text().splitlines()][-config.seeds :]
    return {
        "win_rate_per_seed": [row["win_rate"] for row in final],
        "win_rate": float(np.mean([row["win_rate"] for row in final])),
        "t_env": t_now(),
        "out_dir": str(out),
    }
