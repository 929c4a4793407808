"""Tests of `igmda sweep --launcher slurm|ray`: the options, a fake SLURM (sbatch and sacct
scripts) for submission, records and resubmission, and real runs of one tiny hidden_cue cell
through submitit's local executor (a job preempted midway is requeued and resumes) and a local
Ray instance (a sweep stopped on the local launcher is finished there; a task whose worker is
killed midway is retried and resumes)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import signal
import socket
import sys
import threading
from pathlib import Path

import pytest
import yaml
from test_sweep import SMALL, lock_pid, metric_rows, wait_for

from igmda_jax.sweeps.cli import main, make_task, run_sweeps
from igmda_jax.sweeps.launchers import LaunchError, LocalLauncher
from igmda_jax.sweeps.launchers_ray import (
    RayLauncher,
    RayOptions,
    host_port,
    init_kwargs,
    remote_options,
    unreachable,
)
from igmda_jax.sweeps.launchers_slurm import (
    RECORD,
    SlurmLauncher,
    SlurmOptions,
    Tracked,
    executor_parameters,
    job_phase,
    parse_extra,
    parse_slurm_time,
    read_record,
)
from igmda_jax.sweeps.launchers_slurm_job import SlurmRun, job_devices_env
from igmda_jax.sweeps.run_folder import SMALL_OUTPUTS, checkpoint_steps, read_metrics
from igmda_jax.sweeps.spec import parse_sweep

T_MAX = 2000
# one cell; checkpoints every 300 steps leave seconds between the first one and the end
ONE = f"""
name: one
preset: finetuned
seeds: 2
t_max: {T_MAX}
final_eval_episodes: 8
common: {json.dumps(SMALL)}
algorithms: [qmix]
maps: [hidden_cue]
"""
CELL = "qmix_hidden_cue_sight0"
# what the local launcher leaves in a run folder (provenance.json where git is found)
RUN_FILES = {".lock", "cell.json", "checkpoints", "config.json", "final_eval.json", "log.txt"}
RUN_FILES |= {"metrics.jsonl", "task.json"}


def sweep_args(root: Path, *args: str) -> list[str]:
    folders = ["--runs-dir", str(root / "runs"), "--results-dir", str(root / "results")]
    return [str(root / "one.yaml"), *folders, *args]


def cli(root: Path, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """``igmda sweep`` in this process on ``root``'s one.yaml: (exit status, stdout, stderr)."""
    code = main(sweep_args(root, *args))
    out, err = capsys.readouterr()
    return code, out, err


def attempts(run_dir: Path) -> list[str]:
    """The `igmda train` command line of each start of the run (log.txt)."""
    lines = (run_dir / "log.txt").read_text().splitlines()
    return [line for line in lines if line.startswith("igmda train ")]


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def ignored_signals(pid: int) -> int:
    """The mask of signals process ``pid`` ignores (bit n-1 for signal n)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(
        next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16
    )


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def assert_same_folders_as_local(root: Path, extra: set[str] = frozenset()) -> None:
    """The run and results folders hold what the local launcher writes (and ``extra``)."""
    run, result = root / "runs" / "one" / CELL, root / "results" / "one" / CELL
    names = {p.name for p in run.iterdir()} - {"provenance.json"}
    assert names == RUN_FILES | extra, names
    assert {p.name for p in result.iterdir()} == {n for n in SMALL_OUTPUTS if (run / n).exists()}
    for name in SMALL_OUTPUTS:
        if (run / name).exists():
            assert (result / name).read_bytes() == (run / name).read_bytes(), name
    sweep = parse_sweep(yaml.safe_load(ONE))
    task = make_task(sweep, sweep.cells[0], root / "runs", root / "results")
    assert json.loads((run / "task.json").read_text()) == json.loads(task.to_json())
    assert (root / "results" / "one" / "sweep.yaml").read_text() == ONE
    final = json.loads((run / "final_eval.json").read_text())
    assert final["episodes"] == 8 and final["t_env"] >= T_MAX
    assert "final evaluation: 8 episodes per seed" in (run / "log.txt").read_text()


# ------------------------------------------------------------------------ options, no runs
def test_slurm_times_and_extra_parameters() -> None:
    assert parse_slurm_time("90") == 90
    assert parse_slurm_time("90:30") == 91  # MM:SS, rounded up
    assert parse_slurm_time("4:00:00") == 240
    assert parse_slurm_time("1-12") == 36 * 60
    assert parse_slurm_time("2-00:30") == 48 * 60 + 30
    assert parse_slurm_time("0-0:0:1") == 1
    for bad in ("4h", "1:2:3:4", "", "0", "-5"):
        with pytest.raises(ValueError, match="--slurm-time"):
            parse_slurm_time(bad)
    assert parse_extra(["account=abc", "mem = 16G", "comment=a=b"]) == (
        ("account", "abc"),
        ("mem", "16G"),
        ("comment", "a=b"),
    )
    for bad in ("account", "=abc", "--qos=x"):
        with pytest.raises(ValueError, match="is not KEY=VALUE"):
            parse_extra([bad])


def test_job_states_that_keep_a_cell_from_a_second_job() -> None:
    for state in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING", "PREEMPTED", "UNKNOWN", ""):
        assert job_phase(state) == "active", state
    for state in ("COMPLETED", "FAILED", "TIMEOUT", "CANCELLED by 1000", "OUT_OF_MEMORY"):
        assert job_phase(state) == "ended", state
    # the local executor's
    assert job_phase("FINISHED") == job_phase("INTERRUPTED") == "ended"


def test_a_job_runs_on_its_cpus_and_pickles_without_its_child() -> None:
    login = {"XLA_FLAGS": "--a=1 --xla_force_host_platform_device_count=64"}  # sbatch passes it
    assert job_devices_env({**login, "SLURM_CPUS_PER_TASK": "4"}) == {
        "IGMDA_CPU_DEVICES": "4",
        "XLA_FLAGS": "--a=1 --xla_force_host_platform_device_count=4",
    }
    assert job_devices_env(login)["IGMDA_CPU_DEVICES"] == str(len(os.sched_getaffinity(0)))
    assert job_devices_env({**login, "IGMDA_CPU_DEVICES": "2"}) == {}  # the user's choice
    run = SlurmRun(signal_grace_s=5.0)
    run._process = threading.Lock()  # stands for the Popen, which does not pickle either
    again = pickle.loads(pickle.dumps(run))  # what submitit requeues
    assert again._process is None and again.signal_grace_s == 5.0 and callable(again.checkpoint)


@pytest.mark.parametrize(
    "child, raises",
    [
        ("import sys; sys.exit(143)", True),  # SIGTERM: saved a checkpoint and stopped
        ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", True),  # killed by it
        ("import sys; sys.exit(1)", False),  # failed: the sweep reports it
    ],
)
def test_a_run_stopped_by_a_signal_the_job_did_not_send_raises(
    monkeypatch: pytest.MonkeyPatch, child: str, raises: bool
) -> None:
    """SLURM's own SIGTERM (preemption, time limit) ends the run either way; the job then
    raises after its grace (in which submitit's requeue signal still requeues it); a run that
    failed by itself returns its exit status."""
    import subprocess
    import types

    def start(self, task, jobs=1, env=None) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", child])

    monkeypatch.setattr(LocalLauncher, "start", start)
    job = SlurmRun(signal_grace_s=0.0, poll_s=0.05)
    task = types.SimpleNamespace(cell="qmix_3m_sight0")
    if raises:
        with pytest.raises(RuntimeError, match="qmix_3m_sight0: its run was stopped by SIGTERM"):
            job(task)
    else:
        assert job(task) == 1


def test_ray_task_options() -> None:
    sweep = parse_sweep(yaml.safe_load(ONE))
    task = make_task(sweep, sweep.cells[0], Path("runs"), Path("results"))
    options = remote_options(RayOptions(cpus=2, gpus=0.5, max_retries=4), task)
    assert options == {
        "num_cpus": 2,
        "num_gpus": 0.5,
        "max_retries": 4,
        "retry_exceptions": False,
        "name": f"igmda one/{CELL}",
    }
    assert init_kwargs(None)["address"] == "local" and not init_kwargs(None)["include_dashboard"]
    assert "include_dashboard" not in init_kwargs("auto")  # Ray refuses it for a cluster
    assert host_port("10.0.0.1:6379") == ("10.0.0.1", 6379)
    assert host_port("ray://head:10001") == ("head", 10001)
    assert host_port("auto") is None and host_port("ray://head") is None
    # nothing listening: refused at once, where ray.init would retry for minutes
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    assert "refused" in unreachable(f"127.0.0.1:{free}").lower()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert unreachable(f"127.0.0.1:{server.getsockname()[1]}") is None


BAD_OPTIONS = [
    (["--launcher", "slurm", "--jobs", "2"], "--jobs is not an option of --launcher slurm"),
    (["--slurm-partition", "gpu"], "--slurm-partition is an option of --launcher slurm"),
    (["--launcher", "slurm", "--ray-cpus", "2"], "--ray-cpus is an option of --launcher ray"),
    (["--launcher", "ray", "--no-wait"], "--no-wait is an option of --launcher slurm"),
    (["--launcher", "slurm", "--slurm-time", "2h"], "--slurm-time '2h' is not a SLURM time"),
    (["--launcher", "slurm", "--slurm-cpus", "0"], "--slurm-cpus must be >= 1, got 0"),
    (["--launcher", "slurm", "--slurm-extra", "qos"], "--slurm-extra 'qos' is not KEY=VALUE"),
    (["--launcher", "ray", "--ray-gpus", "-1"], "--ray-gpus must be >= 0, got -1"),
    (["--launcher", "ray", "--jobs", "0"], "--jobs must be >= 1, got 0"),
]


@pytest.mark.parametrize(("args", "message"), BAD_OPTIONS, ids=[m for _, m in BAD_OPTIONS])
def test_bad_launcher_option_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    (tmp_path / "one.yaml").write_text(ONE)
    code, out, err = cli(tmp_path, capsys, *args)
    assert code == 2 and out == "" and err.startswith("igmda sweep: ")
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.yaml"]


@pytest.mark.parametrize(("launcher", "module"), [("slurm", "submitit"), ("ray", "ray")])
def test_missing_extra_is_one_line_naming_the_pip_extra(
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    launcher: str,
    module: str,
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import submitit` now fails
    (tmp_path / "one.yaml").write_text(ONE)
    code, out, err = cli(tmp_path, capsys, "--launcher", launcher)
    assert code == 2 and out == ""
    assert err == (
        f"igmda sweep: --launcher {launcher} needs the {module} package: "
        f"pip install 'igmda-jax[{launcher}]'\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.yaml"]


# ------------------------------------------------------------------------ a fake SLURM
FAKE_SBATCH = """#!/bin/sh
n=$(cat "$FAKE_SLURM/next_id"); echo $((n + 1)) > "$FAKE_SLURM/next_id"
cp "$1" "$FAKE_SLURM/sbatch_$n.sh"; echo "Submitted batch job $n"
"""
FAKE_SACCT = '#!/bin/sh\necho "JobID|State|NodeList"; cat "$FAKE_SLURM/sacct.txt"\n'


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """srun, sbatch (saves each script, answers job ids 100, 101, ...) and sacct (prints
    sacct.txt) on PATH."""
    folder = tmp_path / "fake_slurm"
    folder.mkdir()
    for name, text in (("srun", "#!/bin/sh\n"), ("sbatch", FAKE_SBATCH), ("sacct", FAKE_SACCT)):
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    (folder / "next_id").write_text("100\n")
    (folder / "sacct.txt").write_text("")
    monkeypatch.setenv("FAKE_SLURM", str(folder))
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


def two_tasks(root: Path) -> list:
    sweep = parse_sweep(yaml.safe_load(ONE.replace("[qmix]", "[qmix, vdn]")))
    return [make_task(sweep, cell, root / "runs", root / "results") for cell in sweep.cells]


def test_fake_slurm_array_records_and_resubmission(fake_slurm: Path, tmp_path: Path) -> None:
    options = SlurmOptions(
        partition="gpu", time_min=90, cpus=4, gpus=1, array_parallelism=1, extra=(("qos", "hi"),)
    )
    assert executor_parameters(options, "igmda-one") == {
        "name": "igmda-one",
        "timeout_min": 90,
        "slurm_array_parallelism": 1,
        "slurm_partition": "gpu",
        "cpus_per_task": 4,
        "gpus_per_node": 1,
        "slurm_additional_parameters": {"qos": "hi"},
    }
    tasks = two_tasks(tmp_path)
    lines: list[str] = []
    launcher = SlurmLauncher(dataclasses.replace(options, wait=False), write=lines.append)
    assert list(launcher.run(tasks, 1)) == []  # --no-wait: submitted, nothing waited for
    script = (fake_slurm / "sbatch_100.sh").read_text().splitlines()
    for line in ("--array=0-1%1", "--partition=gpu", "--time=90", "--cpus-per-task=4"):
        assert f"#SBATCH {line}" in script, script
    for line in ("--gpus-per-node=1", "--qos=hi", "--job-name=igmda-one", "--signal=USR2@90"):
        assert f"#SBATCH {line}" in script, script
    assert [read_record(Path(t.run_dir)).job_id for t in tasks] == ["100_0", "100_1"]
    assert read_record(Path(tasks[0].run_dir)).folder == str(tmp_path / "runs" / "one" / ".slurm")
    assert lines[:2] == [
        f"{CELL}: submitted job 100_0",
        "vdn_hidden_cue_sight0: submitted job 100_1",
    ]

    # a rerun: the running job is followed, the failed one submitted again (alone)
    (fake_slurm / "sacct.txt").write_text("100_0|RUNNING|n1\n100_1|FAILED|n2\n")
    lines.clear()
    assert list(launcher.run(tasks, 1)) == []
    assert not (fake_slurm / "sbatch_102.sh").exists()
    assert "--array" not in (fake_slurm / "sbatch_101.sh").read_text()
    assert [read_record(Path(t.run_dir)).job_id for t in tasks] == ["100_0", "101"]
    assert lines[:3] == [
        f"{CELL}: job 100_0 is RUNNING",
        "vdn_hidden_cue_sight0: job 100_1 ended FAILED before the run was done; "
        "submitting it again",
        "vdn_hidden_cue_sight0: submitted job 101",
    ]

    # waiting: each task comes back with its job's exit status (its result) as the job ends
    (fake_slurm / "sacct.txt").write_text("100_0|COMPLETED|n1\n101|TIMEOUT|n2\n")
    folder = tmp_path / "runs" / "one" / ".slurm"
    (folder / "100_0_0_result.pkl").write_bytes(pickle.dumps(("success", 0)))
    lines.clear()
    waiting = SlurmLauncher(options, write=lines.append, poll_s=0.01)
    tracked = [Tracked(task, read_record(Path(task.run_dir))) for task in tasks]
    assert [(task.cell, code) for task, code in waiting.follow(tracked)] == [
        (CELL, 0),
        ("vdn_hidden_cue_sight0", 1),
    ]
    assert lines[-1].startswith("vdn_hidden_cue_sight0: job 101 ended TIMEOUT without a result")
    assert not (fake_slurm / "sbatch_102.sh").exists()  # nothing submitted while jobs live


def test_no_srun_is_a_launch_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun here
    launcher = SlurmLauncher(SlurmOptions(), write=lambda line: None)
    with pytest.raises(LaunchError, match='Could not detect "srun".*--slurm-local'):
        list(launcher.run(two_tasks(tmp_path), 1))
    assert not (tmp_path / "runs" / "one" / CELL / RECORD).exists()


# ------------------------------------------------------------------------ real runs
@dataclasses.dataclass(frozen=True)
class Preempted:
    """ONE's run through submitit's local executor, preempted after its first checkpoint."""

    root: Path
    controller: int  # the job's id: its controller's pid
    run_ignores_usr2: bool  # whether the run's process ignored that signal
    killed_at: tuple[int, list[dict]]  # the checkpoint step then, the metrics rows then
    outputs: tuple[str, str]  # of the two igmda sweep calls


@pytest.fixture(scope="module")
def preempted(tmp_path_factory: pytest.TempPathFactory) -> Preempted:
    """``igmda sweep --launcher slurm --slurm-local --no-wait`` submits ONE's job; after its
    first checkpoint the job process gets SIGUSR2 (what SLURM sends before a time limit or on
    preemption); then the same command without --no-wait follows the job to the end."""
    root = tmp_path_factory.mktemp("preempted")
    (root / "one.yaml").write_text(ONE)
    run_dir = root / "runs" / "one" / CELL
    local = ("--launcher", "slurm", "--slurm-local", "--slurm-time", "10")
    with pytest.MonkeyPatch.context() as patch:
        out = io.StringIO()
        patch.setattr(sys, "stdout", out)
        assert main(sweep_args(root, *local, "--no-wait")) == 0
        submitted = out.getvalue()
        controller = int(read_record(run_dir).job_id)
        wait_for(lambda: checkpoint_steps(run_dir), what="a checkpoint")
        (job,) = children(controller)
        run = lock_pid(run_dir)
        assert run is not None and parent(run) == job
        ignores = bool(ignored_signals(run) & (1 << (signal.SIGUSR2 - 1)))
        killed_at = (checkpoint_steps(run_dir)[-1], rows_now(run_dir))
        os.kill(job, signal.SIGUSR2)
        wait_for(lambda: children(controller) not in ([], [job]), 60.0, "the requeued job")
        out.seek(0)
        out.truncate()
        assert main(sweep_args(root, *local)) == 0, out.getvalue()
        followed = out.getvalue()
    return Preempted(root, controller, ignores, killed_at, (submitted, followed))


def rows_now(run_dir: Path) -> list[dict]:
    """The metrics rows of a live run (a line being written is skipped), no wall time."""
    rows = read_metrics(run_dir / "metrics.jsonl")
    return [{k: v for k, v in row.items() if k != "wall_time"} for row in rows]


def assert_resumed_from_a_checkpoint(run_dir: Path, killed_at: tuple[int, list[dict]]) -> None:
    """Two starts, the second a resume from the checkpoint there was at the kill (``killed_at``:
    its step and the rows then): those rows kept, the run finished."""
    step, rows_then = killed_at
    first, second = attempts(run_dir)
    assert "--out" in first and "--resume" in second
    assert 0 < step < T_MAX and rows_then[-1]["t_env"] < T_MAX
    assert not (run_dir / "metrics.before-restart.jsonl").exists()  # it did not start over
    kept = [row for row in rows_then if row["t_env"] <= step]
    rows = metric_rows(run_dir / "metrics.jsonl")
    assert len(kept) >= 2 and rows[: len(kept)] == kept
    assert rows[-1]["t_env"] >= T_MAX


def test_preempted_submitit_job_is_requeued_and_resumes(preempted: Preempted) -> None:
    root, run_dir = preempted.root, preempted.root / "runs" / "one" / CELL
    submitted, followed = preempted.outputs
    assert f"{CELL}: submitted job {preempted.controller}" in submitted
    assert "1 job(s) queued or running, not waited for (--no-wait)" in submitted
    assert preempted.run_ignores_usr2  # the requeue signal is for submitit's handler only
    # the second call followed the same job (no second submission) to the end
    assert f"{CELL}: job {preempted.controller} is RUNNING" in followed
    assert "submitted" not in followed and "1/1 runs done" in followed
    assert read_record(run_dir).job_id == str(preempted.controller)
    assert len(list((root / "runs" / "one" / ".slurm").glob("*_submitted.pkl"))) == 1
    logs = root / "runs" / "one" / ".slurm"
    log = "".join(p.read_text() for p in logs.glob(f"{preempted.controller}_0_log.*"))
    assert "Calling checkpoint method" in log and "(9 remaining timeouts)" in log  # 10 - 1
    assert_same_folders_as_local(root, {RECORD})
    assert_resumed_from_a_checkpoint(run_dir, preempted.killed_at)


def test_rerun_of_a_finished_sweep_only_reports(
    preempted: Preempted, capsys: pytest.CaptureFixture
) -> None:
    root = preempted.root
    before = {p: p.read_bytes() for p in (root / "runs").rglob("*") if p.is_file()}
    code, out, _ = cli(root, capsys, "--launcher", "slurm", "--slurm-local", "--no-wait")
    assert code == 0 and f"skip {CELL}: done" in out and "1/1 runs done" in out
    assert "submitted" not in out and f"{CELL}: job" not in out
    assert {p: p.read_bytes() for p in (root / "runs").rglob("*") if p.is_file()} == before


@pytest.fixture(scope="module")
def local_ray():
    """A Ray instance of 2 CPUs for this module, in this process."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield ray
    ray.shutdown()


def test_a_local_sweep_is_finished_on_ray_whose_worker_dies(
    preempted: Preempted, tmp_path: Path, local_ray
) -> None:
    """The local launcher is stopped after the run's first checkpoint; Ray then resumes the
    same folders, its worker is killed after a later checkpoint, Ray retries the task and it
    resumes again: three starts, each from the folders the last one left, and the metrics and
    final evaluation of the run preempted on SLURM."""
    import subprocess

    (tmp_path / "one.yaml").write_text(ONE)
    run_dir = tmp_path / "runs" / "one" / CELL
    local = subprocess.Popen(
        [sys.executable, "-m", "igmda_jax.cli", "sweep", *sweep_args(tmp_path, "--jobs", "1")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: checkpoint_steps(run_dir), what="a checkpoint")
    finally:
        local.send_signal(signal.SIGTERM)  # stops its runs, as Ctrl-C would
        assert local.wait(timeout=120) != 0
    stopped_at = checkpoint_steps(run_dir)[-1]  # the run saved one more as it stopped
    assert not (run_dir / "final_eval.json").exists()
    sweep = parse_sweep(yaml.safe_load(ONE), ONE)
    lines: list[str] = []
    launcher = RayLauncher(RayOptions(cpus=1, max_retries=2), write=lines.append, poll_s=0.2)
    folders = (tmp_path / "runs", tmp_path / "results")
    codes: list[int] = []
    thread = threading.Thread(
        target=lambda: codes.append(
            run_sweeps(
                [(sweep, sweep.cells)], *folders, jobs=0, launcher=launcher, write=lines.append
            )
        )
    )
    thread.start()
    try:
        wait_for(lambda: checkpoint_steps(run_dir)[-1] > stopped_at, what="a later checkpoint")
        killed_at = checkpoint_steps(run_dir)[-1]
        os.kill(parent(lock_pid(run_dir)), signal.SIGKILL)  # the Ray worker, and so its run
    finally:
        thread.join(timeout=300)
    assert codes == [0], lines
    assert_same_folders_as_local(tmp_path)
    starts = attempts(run_dir)
    assert len(starts) == 3 and "--out" in starts[0]
    assert all("--resume" in start for start in starts[1:])
    assert 0 < stopped_at < killed_at < T_MAX
    assert not (run_dir / "metrics.before-restart.jsonl").exists()  # never started over
    other = preempted.root / "runs" / "one" / CELL
    assert metric_rows(run_dir / "metrics.jsonl") == metric_rows(other / "metrics.jsonl")
    final = json.loads((run_dir / "final_eval.json").read_text())
    assert final == json.loads((other / "final_eval.json").read_text())
