"""One run over several processes (igmda_jax/fused/distributed.py): the launch flags and cluster
detection, where seeds go, checksums of arrays spread over processes, and two `igmda train`
processes on 127.0.0.1 (one CPU device each) writing what one process with two devices
writes, also after both are killed and resumed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from test_train import kill_after_first_checkpoint, metric_rows

from igmda_jax.compiled import compile_trainer, seed_keys
from igmda_jax.fused.distributed import (
    DistributedError,
    Launch,
    detected_cluster,
    parse_launch,
    should_initialize,
    unsupported_reason,
)
from igmda_jax.fused.seed_layout import process_devices
from igmda_jax.persist.checkpoint import CheckpointStore
from igmda_jax.persist.digests import crc32_combine
from igmda_jax.train_command import parse_train_args

# QMIX on the one-step matrix game with one unroll window: the toy configuration that compiles
# fastest (process 1 compiles everything afresh each start: only process 0 writes JAX's
# persistent compilation cache). 16 env steps per chunk, an evaluation every 2 chunks and a
# checkpoint every 4: a run goes on for a few seconds after its first checkpoint.
T_MAX = 256
ARGS = [
    "--alg", "qmix", "--map", "matrix_qtran", "--seeds", "4", "--n-envs", "4",
    "--batch-size", "4", "--buffer-size", "16", "--hidden-dim", "8", "--mixer-embed", "4",
    "--hypernet-embed", "8", "--iterations-per-call", "4", "--unroll-windows", "1",
    "--test-nepisode", "4", "--t-max", str(T_MAX), "--test-interval", "32",
    "--save-interval", "64", "--no-progress",
]  # fmt: skip
TRAIN = [sys.executable, "-m", "igmda_jax.cli", "train"]


def test_parse_launch_takes_the_launch_flags_and_leaves_the_rest() -> None:
    launch, rest = parse_launch(
        ["--seeds", "4", "--coordinator", "10.0.0.1:1234", "--num-processes", "2"]
        + ["--process-id", "1", "--out", "x"]
    )
    assert launch == Launch("auto", "10.0.0.1:1234", 2, 1) and launch.explicit
    assert rest == ["--seeds", "4", "--out", "x"]
    assert parse_launch(["--distributed", "off"]) == (Launch("off"), [])
    assert parse_launch(["--seeds", "2"]) == (Launch(), ["--seeds", "2"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--coordinator", "h:1", "--num-processes", "2"], "go together"),
        (["--coordinator", "h", "--num-processes", "2", "--process-id", "0"], "HOST:PORT"),
        (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"], "not below"),
        (["--coordinator", "h:1", "--num-processes", "0", "--process-id", "0"], ">= 1"),
        (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "x"], ">= 0"),
        (["--distributed", "yes"], "one of auto, on, off"),
        (
            ["--distributed", "off", "--coordinator", "h:1", "--num-processes", "2"]
            + ["--process-id", "0"],
            "contradicts",
        ),  # fmt: skip
    ],
)
def test_parse_launch_refuses_bad_flags(argv: list[str], message: str) -> None:
    with pytest.raises(DistributedError, match=message):
        parse_launch(argv)


def test_igmda_train_refuses_bad_launch_flags_in_one_line() -> None:
    result = subprocess.run(
        [*TRAIN, "--coordinator", "127.0.0.1:1", "--num-processes", "2"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "igmda train: --coordinator HOST:PORT, --num-processes N and --process-id I go "
        "together (each process gets the same coordinator and count, and its own id 0..N-1)"
    ]


def test_only_launches_of_several_processes_start_jax_distributed() -> None:
    slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_PROCID": "0"}
    assert detected_cluster({**slurm, "SLURM_NTASKS": "4"}) == "SLURM (4 tasks)"
    assert detected_cluster({**slurm, "SLURM_NTASKS": "1"}) is None  # a one-task job
    assert detected_cluster({"SLURM_NTASKS": "4"}) is None  # not inside a job step
    mpi = {"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:3"}
    assert detected_cluster({**mpi, "OMPI_COMM_WORLD_SIZE": "2"}) == "Open MPI (2 ranks)"
    assert detected_cluster({"TPU_WORKER_HOSTNAMES": "a,b,c,d"}) == "TPU slice (4 hosts)"
    assert detected_cluster({"TPU_WORKER_HOSTNAMES": "a"}) is None
    assert detected_cluster({}) is None
    many = {**slurm, "SLURM_NTASKS": "4"}
    assert should_initialize(Launch(), many) and not should_initialize(Launch(), {})
    assert not should_initialize(Launch("off"), many)
    assert should_initialize(Launch("on"), {})
    assert should_initialize(Launch("auto", "h:1", 2, 0), {})


def test_unsupported_launches_are_refused_with_the_reason() -> None:
    assert unsupported_reason("smac", 1, [8]) is None  # one process: anything goes
    assert unsupported_reason("fused", 4, [1, 1]) is None
    assert "runs on one process only" in unsupported_reason("smax-workers", 4, [1, 1])
    assert "pass a multiple of 2" in unsupported_reason("fused", 3, [2, 2])
    assert "different numbers of devices ([2, 1])" in unsupported_reason("fused", 4, [2, 1])


def test_process_devices_take_the_same_number_from_every_process() -> None:
    """Fake devices of 2 processes with 4 each: the most per process that split the seeds."""
    devices = [SimpleNamespace(id=10 * p + i, process_index=p) for p in (1, 0) for i in range(4)]
    ids = lambda seeds: [d.id for d in process_devices(seeds, devices)]  # noqa: E731
    assert ids(8) == [0, 1, 2, 3, 10, 11, 12, 13]
    assert ids(4) == [0, 1, 10, 11]
    assert ids(6) == [0, 1, 2, 10, 11, 12]
    assert ids(2) == [0, 10]
    assert ids(16) == [0, 1, 2, 3, 10, 11, 12, 13]  # 2 seeds per device
    with pytest.raises(ValueError, match="3 seeds do not split over 2 processes"):
        process_devices(3, devices)


def test_crc32_combine_matches_zlib_on_the_joined_bytes() -> None:
    rng = np.random.default_rng(0)
    for size_a, size_b in [(0, 0), (0, 5), (7, 0), (1, 1), (100, 3), (5, 4096), (333, 10_001)]:
        a, b = rng.bytes(size_a), rng.bytes(size_b)
        assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict[str, str]:
    """The children's environment: ``devices`` CPU devices (XLA_FLAGS is rebuilt by envs)."""
    env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
    return {**env, "IGMDA_CPU_DEVICES": str(devices)}


def _start_two(args: list[str]) -> list[subprocess.Popen]:
    """Two `igmda train` processes, one CPU device each, joined through a free local port."""
    cluster = ["--coordinator", f"127.0.0.1:{_free_port()}", "--num-processes", "2"]
    return [
        subprocess.Popen(
            [*TRAIN, *args, *cluster, "--process-id", str(index)],
            env=_env(1),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for index in (0, 1)
    ]


def _finish(processes: list[subprocess.Popen], timeout: float = 240) -> list[str]:
    """Wait for the processes; their outputs. Kill the rest when one fails or hangs."""
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=timeout)[0])
            assert process.returncode == 0, outputs[-1][-3000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return outputs


def _final_state(run_dir: Path, like: object) -> tuple[dict, dict]:
    """The arrays of the run's last checkpoint (restored into ``like``), by leaf path, and its
    checksums as saved."""
    store = CheckpointStore(run_dir / "checkpoints")
    step = store.latest_step()
    assert step == T_MAX
    state, _ = store.restore(step, like)
    store.close()
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(state))[0]
    arrays = {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}
    meta = json.loads((run_dir / "checkpoints" / str(step) / "meta" / "metadata").read_text())
    return arrays, meta["_igmda_crc32"]


def test_two_processes_refuse_seeds_that_do_not_split_and_leave_no_folder(tmp_path: Path) -> None:
    processes = _start_two(["--map", "matrix_qtran", "--seeds", "3", "--out", str(tmp_path / "r")])
    try:
        outputs = [process.communicate(timeout=240)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 2, output[-3000:]
        assert output.strip().splitlines()[-1] == (
            "igmda train: --seeds 3 does not split over 2 processes: every process trains the "
            "same number of seeds; pass a multiple of 2"
        )
    assert not (tmp_path / "r").exists()


def test_two_processes_train_and_resume_like_one_process_with_two_devices(tmp_path: Path) -> None:
    """4 seeds: one process with 2 CPU devices (2 seeds each) against 2 processes with one
    device each (2 seeds each; each device runs the same program on the same seeds). The
    metrics rows (wall-clock column aside), config.json and final checkpoint arrays are equal
    bit for bit, and so are the checkpoint's checksums: the 2 processes hash their own halves
    and combine the CRCs. Then both processes are killed after their first checkpoint and
    resumed by two processes: the same rows again."""
    one, two, killed = tmp_path / "one", tmp_path / "two", tmp_path / "killed"
    reference = subprocess.run(
        [*TRAIN, *ARGS, "--out", str(one)], env=_env(2), capture_output=True, text=True
    )
    assert reference.returncode == 0, reference.stderr[-3000:]
    outputs = _finish(_start_two([*ARGS, "--out", str(two)]))
    assert "run folder" in outputs[0] and "run folder" in outputs[1]
    assert metric_rows(two / "metrics.jsonl") == metric_rows(one / "metrics.jsonl")
    assert metric_rows(one / "metrics.jsonl")[-1]["train_updates"] > 0
    assert (two / "config.json").read_text() == (one / "config.json").read_text()
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    config = parse_train_args([*ARGS, "--out", str(one)]).config
    like = compile_trainer(config).state_like(seed_keys(config))
    (arrays_one, crc_one), (arrays_two, crc_two) = _final_state(one, like), _final_state(two, like)
    assert arrays_one.keys() == arrays_two.keys()
    for name, array in arrays_one.items():
        np.testing.assert_array_equal(arrays_two[name], array, err_msg=name)
    assert len(crc_one) == len(arrays_one) and crc_two == crc_one

    processes = _start_two([*ARGS, "--out", str(killed)])

    def kill_both() -> None:
        for process in processes:
            os.kill(process.pid, signal.SIGKILL)

    try:
        kill_after_first_checkpoint(processes[0], killed, kill_both)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.communicate()
    assert metric_rows(killed / "metrics.jsonl")[-1]["t_env"] < T_MAX
    _finish(_start_two([*ARGS, "--resume", str(killed)]))
    assert metric_rows(killed / "metrics.jsonl") == metric_rows(one / "metrics.jsonl")
