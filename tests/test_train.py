"""Tests of the fused training system: matrix games, determinism, runs, resume, bad input."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_loggers import assert_csv_equals_jsonl

import envs
from igmda_jax.compiled import compile_trainer, evaluation_keys, make_env, seed_keys
from igmda_jax.core.config import REWARDS, ConfigError
from igmda_jax.core.presets import MAIN_JOB, make_config
from igmda_jax.fused.train import make_train
from igmda_jax.persist.checkpoint import CheckpointMismatchError
from igmda_jax.run import TrainingDiverged, run
from igmda_jax.tools.evaluate import evaluate_run
from igmda_jax.train_command import parse_train_args

# A small 3m configuration that compiles and runs in seconds.
# unroll_windows=1: the update compiles one unroll, not four (compiles faster);
# tests/test_unroll_windows.py checks the windowed default against it.
SMALL = dict(
    map="3m",
    sight_range=0.0,
    n_envs=4,
    batch_size=8,
    buffer_size=32,
    hidden_dim=16,
    mixer_embed=8,
    hypernet_embed=16,
    iterations_per_call=4,
    test_nepisode=4,
    td_lambda=0.6,
    unroll_windows=1,
)


def train_matrix_game(alg: str, n_seeds: int = 4, chunks: int = 10) -> np.ndarray:
    """Greedy return per seed on matrix_qtran after uniform-exploration training."""
    config = make_config(
        "finetuned",
        alg=alg,
        map="matrix_qtran",
        n_envs=32,
        batch_size=32,
        buffer_size=500,
        iterations_per_call=100,
        epsilon_start=1.0,
        epsilon_finish=1.0,
        td_lambda=0.0,
        lr=5e-3,
        grad_clip=1.0,  # payoffs of -12..8: at clip 10 a QPLEX seed can diverge on rounding noise
        target_update_episodes=32,
        hidden_dim=32,
        seeds=n_seeds,
    )
    compiled = compile_trainer(config)
    state = compiled.init(seed_keys(config))
    for _ in range(chunks):
        state, _ = compiled.train_chunk(state)
    keys = jnp.stack([jax.random.PRNGKey(9)] * n_seeds)
    return np.asarray(compiled.evaluate(state, keys, "deployed")["return"])


def test_matrix_game_qplex_finds_optimum() -> None:
    # QPLEX's full IGM class represents the non-monotonic payoff (QPLEX paper, matrix game)
    returns = train_matrix_game("qplex", chunks=16)
    assert (returns == 8.0).all(), returns


@pytest.mark.parametrize("alg", ["vdn", "qmix"])
def test_matrix_game_vdn_qmix_miss_optimum(alg: str) -> None:
    # monotonic decompositions under uniform exploration settle on a suboptimal joint action
    returns = train_matrix_game(alg, chunks=6)
    assert (returns < 8.0).all(), returns


_COMPILED: dict = {}


def chunk_metrics(seed: int, seeds: int = 2, chunks: int = 2) -> list[dict]:
    config = make_config("finetuned", alg="qmix", seed=seed, seeds=seeds, **SMALL)
    if config not in _COMPILED:  # Config is frozen and hashable: one compile per config
        _COMPILED[config] = compile_trainer(config)
    compiled = _COMPILED[config]
    state = compiled.init(seed_keys(config))
    history = []
    for _ in range(chunks):
        state, metrics = compiled.train_chunk(state)
        history.append(jax.device_get(metrics))
    return history


def test_same_seed_identical_seeds_differ() -> None:
    first, second = chunk_metrics(seed=0), chunk_metrics(seed=0)
    for a, b in zip(first, second, strict=True):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    last = first[-1]
    assert last["updates"].min() > 0, "updates must have happened"
    assert last["loss"][0] != last["loss"][1] and last["return"][0] != last["return"][1]


def test_terminal_transitions_do_not_bootstrap_in_collected_episodes() -> None:
    # hidden_cue with a time limit ends by truncation; without, by a terminal last step
    for options, expect_terminal in (({}, True), ({"time_limit": 3}, False)):
        env = envs.make("hidden_cue", sight_range=0.0, **options)
        config = make_config("finetuned", alg="qmix", map="hidden_cue", n_envs=4, batch_size=4)
        trainer = make_train(config, env)
        state = jax.jit(trainer.init)(jax.random.PRNGKey(0))
        from igmda_jax.fused.rollout import collect

        episodes, stats = jax.jit(
            lambda p, k, e=env, t=trainer, c=config: collect(e, t.nets, c, p, k, 4, 0.5, 0.0)
        )(state.params, jax.random.PRNGKey(1))
        length = int(stats["length"][0])
        assert bool(episodes.terminated[0, length - 1]) == expect_terminal
        assert not bool(episodes.terminated[0, : length - 1].any())
        assert not bool(episodes.filled[0, length:].any())


def small_run_config(**overrides):
    values = {**SMALL, "alg": "qmix", "t_max": 400, "test_interval": 200, "save_interval": 200}
    values.update(overrides)
    return make_config("finetuned", seeds=2, **values)


def test_run_writes_metrics_and_refuses_mismatched_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    config = small_run_config()
    summary = run(config, tmp_path / "run", progress=False)
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert {row["seed"] for row in rows} == {0, 1}
    assert rows[-1]["t_env"] >= 400 and 0.0 <= summary["win_rate"] <= 1.0
    for field in ("t_env", "win_rate", "return", "loss", "epsilon", "wall_time"):
        assert field in rows[-1], field
    assert json.loads((tmp_path / "run" / "config.json").read_text())["alg"] == "qmix"
    with pytest.raises(CheckpointMismatchError, match="alg: saved='qmix' current='vdn'"):
        run(small_run_config(alg="vdn"), tmp_path / "run", resume=True, progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        run(config, tmp_path / "run", progress=False)
    # a longer budget may be resumed, here with every optional logger switched on
    loggers_on = {"tensorboard": True, "csv": True, "wandb_project": "igmda-tests"}
    longer = run(
        small_run_config(t_max=800, **loggers_on), tmp_path / "run", resume=True, progress=False
    )
    assert longer["t_env"] >= 800
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert_csv_equals_jsonl(tmp_path / "run")
    last_mean = np.mean(
        [row["win_rate"] for row in metric_rows(tmp_path / "run" / "metrics.jsonl")[-2:]]
    )
    (wandb_log,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    assert b"mean/win_rate" in wandb_log.read_bytes()
    assert json.dumps(float(last_mean)).encode() in wandb_log.read_bytes()
    # igmda eval: the saved run's greedy win rate per seed and aggregated
    evaluated = evaluate_run(tmp_path / "run", episodes=4)
    assert evaluated["seeds"] == [0, 1] and evaluated["t_env"] == longer["t_env"]
    assert len(evaluated["win_rate_per_seed"]) == 2
    assert evaluated["win_rate_mean"] == pytest.approx(np.mean(evaluated["win_rate_per_seed"]))


def test_nan_loss_stops_with_clear_message(tmp_path: Path) -> None:
    # a NaN learning rate is refused by Config.validate; an absurd finite one overflows
    config = small_run_config(lr=1e38, t_max=2000)
    with pytest.raises(TrainingDiverged, match="NaN/inf"):
        run(config, tmp_path / "nan", progress=False)


def test_bad_names_list_valid_ones() -> None:
    with pytest.raises(ConfigError, match="valid: .*qmix-da"):
        make_config(alg="qmix-dx")
    with pytest.raises(ConfigError, match="unknown config field"):
        make_config(learning_rate=1.0)
    with pytest.raises(ConfigError, match="reward must be one of smac, smax, smac_no_kill"):
        make_config(reward="sc2")
    assert set(REWARDS) == set(envs.smax.REWARDS)
    with pytest.raises(ConfigError, match="unroll_windows must be an integer >= 1"):
        make_config(unroll_windows=0)
    assert make_env(make_config(map="5m_vs_6m", reward="smac")).reward_mode == "smac"
    assert make_env(make_config(map="3m")).reward_mode == "smac"  # the default
    assert make_env(make_config(map="MMM2", reward="smax")).reward_mode == "smax"
    # toy games have their own reward: the field is not passed to them (they refuse options)
    assert make_env(make_config(map="matrix_qtran")).info.map_name == "matrix_qtran"
    with pytest.raises(ValueError, match="no options besides"):
        envs.make("matrix_qtran", reward="smac")
    result = subprocess.run(
        [sys.executable, "-m", "igmda_jax.cli", "train", "--map", "4m", "--t-max", "10"],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "known maps" in result.stderr and "3m" in result.stderr


def metric_rows(path: Path) -> list[dict]:
    """A run's metrics rows without the wall-clock column."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        row.pop("wall_time")
    return rows


def kill_after_first_checkpoint(process: subprocess.Popen, run_dir: Path, kill) -> None:
    """Wait (at most 300 s) until ``run_dir`` holds a checkpoint, then half a second more,
    and ``kill()`` the still running ``process``; assert it had not ended by itself."""
    deadline = time.time() + 300
    checkpoints = run_dir / "checkpoints"
    while time.time() < deadline:
        steps = (
            [p for p in checkpoints.glob("*") if p.name.isdigit()] if checkpoints.exists() else []
        )
        if steps and process.poll() is None:
            time.sleep(0.5)
            break
        time.sleep(0.2)
    assert process.poll() is None, "the run ended before it could be killed"
    kill()
    process.wait()


# A small run for the kill / stop / resume tests: 2 seeds, 3,000 env steps, 11 evaluations.
RESUME_ARGS = [
    "--map", "3m", "--sight-range", "0", "--seeds", "2", "--n-envs", "4", "--batch-size", "8",
    "--buffer-size", "32", "--hidden-dim", "16", "--mixer-embed", "8", "--hypernet-embed", "16",
    "--iterations-per-call", "2", "--unroll-windows", "1", "--test-nepisode", "4",
    "--t-max", "3000", "--test-interval", "300", "--no-progress",
]  # fmt: skip
TRAIN = [sys.executable, "-m", "igmda_jax.cli", "train"]


@pytest.fixture(scope="module")
def uninterrupted_rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """The metrics rows of RESUME_ARGS run without interruption (the checkpoint interval does
    not change them)."""
    whole = tmp_path_factory.mktemp("whole") / "run"
    command = [*TRAIN, *RESUME_ARGS, "--save-interval", "300", "--out", str(whole)]
    subprocess.run(command, check=True, capture_output=True)
    return metric_rows(whole / "metrics.jsonl")


def test_killed_run_resumes_to_identical_metrics(
    tmp_path: Path, uninterrupted_rows: list[dict]
) -> None:
    command = [*TRAIN, *RESUME_ARGS, "--save-interval", "300"]
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [*command, "--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    kill_after_first_checkpoint(process, killed, lambda: os.kill(process.pid, signal.SIGKILL))
    assert metric_rows(killed / "metrics.jsonl")[-1]["t_env"] < 3000

    subprocess.run([*command, "--resume", str(killed)], check=True, capture_output=True)
    resumed = metric_rows(killed / "metrics.jsonl")
    for a, b in zip(resumed, uninterrupted_rows, strict=False):
        assert a == b, (a, b)
    assert resumed == uninterrupted_rows


def test_sigterm_saves_a_checkpoint_and_resumes_to_identical_metrics(
    tmp_path: Path, uninterrupted_rows: list[dict]
) -> None:
    """No periodic checkpoint (interval 1M): SIGTERM after the second evaluation leaves the
    run's only checkpoint, at the step it names in its one-line message (exit 143), and
    --resume from there ends with the uninterrupted run's metrics."""
    command = [*TRAIN, *RESUME_ARGS, "--save-interval", "1000000"]
    stopped = tmp_path / "stopped"
    process = subprocess.Popen(
        [*command, "--out", str(stopped)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 300
    metrics = stopped / "metrics.jsonl"
    while time.time() < deadline and process.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 4:  # 2 evals x 2 seeds
            break
        time.sleep(0.1)
    assert process.poll() is None, "the run ended before it could be stopped"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    last_line = stderr.decode().strip().splitlines()[-1]
    assert process.returncode == 143, stderr.decode()[-2000:]
    assert last_line.startswith("igmda train: stopped by SIGTERM at t_env "), last_line
    assert f"--resume {stopped}" in last_line
    step = int(last_line.split("at t_env ")[1].split(";")[0])
    assert 0 < step < 3000
    saved = [int(p.name) for p in (stopped / "checkpoints").iterdir() if p.name.isdigit()]
    assert saved == [step]
    assert metric_rows(metrics)[-1]["t_env"] <= step

    subprocess.run([*command, "--resume", str(stopped)], check=True, capture_output=True)
    assert metric_rows(metrics) == uninterrupted_rows


def test_qmix_learns_3m_at_full_sight(tmp_path: Path) -> None:
    """Learning smoke test. A random policy and an untrained QMIX win 0 % of 3m; with the
    smax preset (SMAC's reward) QMIX won 50 %, 44 % and 50 % of 32 greedy test episodes at
    22k, 41k and 61k env steps in our reference run (seed 0), and seeds 0-2 of
    bench_learning.py won 53, 44 and 56 % at 52k. >= 30 % at some evaluation by 60k is a
    margin we can support while still failing for a learner that does not learn."""
    config = make_config(
        "smax", alg="qmix", map="3m", t_max=60_000, test_interval=20_000, save_interval=10**9
    )
    run(config, tmp_path / "learn", progress=False)
    rows = [
        json.loads(line) for line in (tmp_path / "learn" / "metrics.jsonl").read_text().splitlines()
    ]
    assert rows[0]["win_rate"] == 0.0
    assert max(row["win_rate"] for row in rows) >= 0.3, [(r["t_env"], r["win_rate"]) for r in rows]


def test_train_defaults_are_the_main_job() -> None:
    """`igmda train` with no options: qmix-da on 3m at sight 0 within the 5-minute budget,
    into a fresh timestamped run folder; options still override the defaults."""
    request = parse_train_args([])
    config = request.config
    assert (config.alg, config.map, config.sight_range) == ("qmix-da", "3m", 0.0)
    assert config.t_max == MAIN_JOB["t_max"] and config.preset == "smax"
    assert request.out_dir.startswith("runs/qmix-da_3m_sight0_") and not request.resume
    other = parse_train_args(["--alg", "vdn", "--sight-range", "3", "--out", "x", "--t-max", "2e6"])
    assert (other.config.alg, other.config.sight_range, other.config.t_max) == ("vdn", 3.0, 2e6)
    assert other.out_dir == "x"


def test_no_recompilation_after_the_first_chunk(caplog) -> None:
    """Training and evaluation compile once per run: the state init returns and the state a
    chunk returns have the same types (a weakly typed replay counter once compiled evaluation
    twice, costing a second compile of every actor's evaluation)."""
    config = make_config(alg="vdn", seeds=3, **SMALL)  # padded to 4 over 2 devices
    compiled = compile_trainer(config)
    state = compiled.init(seed_keys(config))
    compiled.evaluate(state, evaluation_keys(config, 0))
    state, _ = compiled.train_chunk(state)
    caplog.clear()
    with jax.log_compiles(True), caplog.at_level(logging.DEBUG):
        for index in (1, 2):
            compiled.evaluate(state, evaluation_keys(config, index))
            state, _ = compiled.train_chunk(state)
    compiles = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert compiles == []
