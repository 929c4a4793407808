"""Tests of `igmda sweep`: the grid a file expands to, its cost, running, skipping, resuming
after kill -9, stopping, and refusing bad files. Runs are tiny hidden_cue runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from igmda_jax.sweeps.cli import flag_args, main, make_task, run_sweeps, select_cells
from igmda_jax.sweeps.launchers import cpu_devices_env
from igmda_jax.sweeps.plan import (
    CellState,
    cell_dirs,
    cell_hours,
    cell_speed,
    cell_state,
    format_plan,
    load_speeds,
    wall_hours,
)
from igmda_jax.sweeps.run_folder import checkpoint_steps, next_step, repair_after_kill
from igmda_jax.sweeps.spec import SweepError, load_sweep, parse_sweep
from igmda_jax.train_command import parse_train_args

SMALL = {
    "n_envs": 4,
    "batch_size": 8,
    "buffer_size": 32,
    "hidden_dim": 16,
    "mixer_embed": 8,
    "hypernet_embed": 16,
    "iterations_per_call": 4,
    "test_nepisode": 4,
    "test_interval": 300,
    "save_interval": 300,
    "unroll_windows": 1,  # one unroll compiled (tests/test_train.py SMALL)
}
# 2 cells; t_max leaves a few seconds between the first checkpoint and the end to kill a run
TINY = f"""
name: tiny
preset: finetuned
seeds: 2
t_max: 3000
final_eval_episodes: 8
common: {json.dumps(SMALL)}
algorithms: [qmix, qmix-da]
maps: [hidden_cue]
"""
QMIX = "qmix_hidden_cue_sight0"
QMIX_DA = "qmix-da_hidden_cue_sight0"


def sweep_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "igmda_jax.cli", "sweep", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def start_sweep(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "igmda_jax.cli", "sweep", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, seconds: float = 300.0, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (containers may not reap orphans)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def lock_pid(run_dir: Path) -> int | None:
    text = (run_dir / ".lock").read_text().strip() if (run_dir / ".lock").is_file() else ""
    return int(text) if text.isdigit() else None


def metric_rows(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        row.pop("wall_time")
    return rows


def snapshot(*roots: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p): (p.stat().st_mtime_ns, p.read_bytes())
        for root in roots
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where the TINY sweep ran to the end (2 runs at once)."""
    root = tmp_path_factory.mktemp("finished")
    (root / "tiny.yaml").write_text(TINY)
    result = sweep_cli(root, "tiny.yaml", "--jobs", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    return root


# ------------------------------------------------------------------------ the file, no runs
GRID = """
name: pilot
seeds: 3
t_max: 3e5
common: {test_interval: 10000, double_q: false, episode_limit: null, lr: 5e-4}
algorithms: [qmix, qmix-da]
sight_ranges: [0]
grids:
  - maps: [3m, 5m_vs_6m]
  - maps: [3m]
    common: {lr: 0.002}
    override_sets: {big: {hidden_dim: 128}, "": {}}
"""


def test_grid_expands_to_named_cells_and_refuses_a_cell_defined_twice() -> None:
    sweep = parse_sweep(yaml.safe_load(GRID.replace(', "": {}', "")))
    # grid 1's cells, then grid 2's; maps, then sight ranges, sets, algorithms innermost
    assert [cell.name for cell in sweep.cells] == [
        "qmix_3m_sight0",
        "qmix-da_3m_sight0",
        "qmix_5m_vs_6m_sight0",
        "qmix-da_5m_vs_6m_sight0",
        "qmix_3m_sight0_big",
        "qmix-da_3m_sight0_big",
    ]
    # grid 2's unnamed set makes qmix_3m_sight0 again, with grid 2's lr
    with pytest.raises(SweepError, match="qmix_3m_sight0 comes out of grid 1 and grid 2"):
        parse_sweep(yaml.safe_load(GRID))
    # the same cell with the same settings twice is one cell
    same = GRID.replace("    common: {lr: 0.002}\n", "")
    assert len(parse_sweep(yaml.safe_load(same)).cells) == 6


def test_grid_cells_settings_and_train_flags() -> None:
    text = GRID.replace(', "": {}', "")
    sweep = parse_sweep(yaml.safe_load(text))
    cells = {cell.name: cell for cell in sweep.cells}
    assert [cell.label for cell in sweep.cells] == [
        "qmix",
        "qmix-da",
        "qmix",
        "qmix-da",
        "qmix [big]",
        "qmix-da [big]",
    ]
    big = cells["qmix-da_3m_sight0_big"].config()
    assert (big.alg, big.map, big.sight_range, big.seeds, big.t_max) == (
        "qmix-da",
        "3m",
        0.0,
        3,
        300_000,
    )
    assert (big.hidden_dim, big.lr, big.double_q, big.preset) == (128, 0.002, False, "smax")
    assert cells["qmix_5m_vs_6m_sight0"].config().lr == 5e-4
    # the flags a task passes are read back by `igmda train` as the same config
    task = make_task(sweep, cells["qmix-da_3m_sight0_big"], Path("runs"), Path("results"))
    request = parse_train_args(task.train_argv(resume=False))
    assert request.config == big and request.out_dir == task.run_dir
    assert (
        task.expert_eval
        and task.t_max == 300_000
        and task.run_dir.endswith("runs/pilot/qmix-da_3m_sight0_big")
    )
    assert flag_args("double_q", False) == ["--no-double-q"]
    assert flag_args("episode_limit", None) == ["--episode-limit", "None"]
    assert flag_args("lr", 5e-4) == ["--lr", "0.0005"]
    # labels name the sight range when it varies, and a named set always (a sweep of one set
    # is reported beside another sweep's plain cells: they must not share a label)
    one_set = parse_sweep(
        {"name": "s", "seeds": 1, "t_max": 10, "algorithms": ["qmix", "qmix-da"], "maps": ["3m"]}
        | {"override_sets": {"state_expert": {"expert_view": "state"}}}
    )
    assert [c.label for c in one_set.cells] == ["qmix [state_expert]", "qmix-da [state_expert]"]
    varied = parse_sweep(
        {"name": "s", "seeds": 1, "t_max": 10, "algorithms": ["vdn"], "maps": ["3m"]}
        | {"sight_ranges": [0, None, 2.5]}
    )
    assert [(c.name, c.label) for c in varied.cells] == [
        ("vdn_3m_sight0", "vdn sight 0"),
        ("vdn_3m_sightdefault", "vdn sight default"),
        ("vdn_3m_sight2.5", "vdn sight 2.5"),
    ]


def test_pilot_file_is_the_issue_grid() -> None:
    path = Path(__file__).parent.parent / "experiments" / "pilot.yaml"
    sweep = parse_sweep(yaml.safe_load(path.read_text()))
    got = {c.name: (c.label, c.seeds, c.t_max, c.config().own_features) for c in sweep.cells}
    assert got == {
        "qmix_3m_sight0": ("qmix", 3, 300_000, "smac"),
        "qmix-da_3m_sight0": ("qmix-da", 3, 300_000, "smac"),
        "qmix_5m_vs_6m_sight0": ("qmix", 3, 300_000, "smac"),
        "qmix-da_5m_vs_6m_sight0": ("qmix-da", 3, 300_000, "smac"),
        "qmix_3m_sight0_smax_own": ("qmix [smax_own]", 3, 300_000, "smax"),
        "qmix-da_3m_sight0_smax_own": ("qmix-da [smax_own]", 3, 300_000, "smax"),
    }
    assert {c.final_eval_episodes for c in sweep.cells} == {320}
    assert {c.config().sight_range for c in sweep.cells} == {0.0}


def test_table1_file_is_the_papers_grid_with_one_setting() -> None:
    """The experiments issue's table1: 6 algorithms x 6 maps, sight 0, SMAC's own features,
    one preset and one budget for every algorithm, at least 3 seeds and 500k steps."""
    path = Path(__file__).parent.parent / "experiments" / "table1.yaml"
    sweep = parse_sweep(yaml.safe_load(path.read_text()))
    algs = ["qmix", "qmix-da", "qplex", "qplex-da", "dmix", "dmix-da"]
    maps = ["3s5z", "5m_vs_6m", "MMM2", "8m", "3s_vs_5z", "8m_vs_9m"]
    assert sorted((c.alg, c.map) for c in sweep.cells) == sorted((a, m) for a in algs for m in maps)
    configs = [c.config() for c in sweep.cells]
    assert {(c.sight_range, c.own_features, c.preset, c.t_max) for c in configs} == {
        (0.0, "smac", "smax", sweep.cells[0].t_max)
    }
    assert sweep.cells[0].t_max >= 500_000 and min(c.seeds for c in sweep.cells) >= 3
    for m in maps:  # the same seed count for every cell of a map
        assert len({c.seeds for c in sweep.cells if c.map == m}) == 1


def test_next_step_reads_the_run_folder(tmp_path: Path) -> None:
    run, results = tmp_path / "run", tmp_path / "results"
    assert next_step(run, results, 1000) == "start"
    run.mkdir()
    (run / "config.json").write_text("{}")
    assert next_step(run, results, 1000) == "resume"  # no checkpoint yet: starts over
    (run / "checkpoints" / "500").mkdir(parents=True)
    (run / "checkpoints" / "1008.orbax-checkpoint-tmp-3").mkdir()  # an unfinished save
    assert checkpoint_steps(run) == [500]
    rows = [{"eval": e, "seed": s, "t_env": t} for e, t in ((0, 0), (1, 504)) for s in (0, 1)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert next_step(run, results, 1000) == "resume"
    # the periodic save reached t_max, the final rows are not written: resuming writes them
    (run / "checkpoints" / "1008").mkdir()
    assert next_step(run, results, 1000) == "resume"
    rows += [{"eval": 2, "seed": 0, "t_env": 1008}, {"eval": 2, "seed": 1, "t_env": 1014}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"ev')
    assert next_step(run, results, 1000) == "evaluate"  # never train a finished run again
    results.mkdir()
    (results / "final_eval.json").write_text("{}")
    assert next_step(run, results, 1000) == "done"


def test_repair_after_kill_mid_write(tmp_path: Path) -> None:
    run, results = tmp_path / "run", tmp_path / "results"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"eval": 0}\n{"eval": 1}\n{"ev')
    (run / "config.json").write_text('{"alg": "qm')
    repair_after_kill(run, results)  # no checkpoint, no copy: start over
    assert (run / "metrics.jsonl").read_text() == '{"eval": 0}\n{"eval": 1}\n'
    assert not (run / "config.json").exists() and next_step(run, results, 10) == "start"
    (run / "config.json").write_text('{"alg": "qm')
    results.mkdir()
    (results / "config.json").write_text('{"alg": "qmix"}')
    repair_after_kill(run, results)  # the results folder's copy
    assert json.loads((run / "config.json").read_text()) == {"alg": "qmix"}


def test_select_cells_by_glob() -> None:
    sweep = parse_sweep(yaml.safe_load(TINY))
    assert [c.name for c in select_cells(sweep.cells, ["qmix_*"])] == [QMIX]
    assert len(select_cells(sweep.cells, None)) == 2
    with pytest.raises(SweepError, match="--only vdn\\* matches no cell; cells: qmix_hidden"):
        select_cells(sweep.cells, ["vdn*"])


def test_cost_estimate_by_hand() -> None:
    sweep = parse_sweep(
        {"name": "c", "seeds": 3, "t_max": 100_000, "maps": ["3m", "8m"]}
        | {"algorithms": ["qmix", "qmix-da", "vdn-da"], "final_eval_episodes": 320}
    )
    cells = {cell.name: cell for cell in sweep.cells}
    rows = [
        {"map": "3m", "alg": "qmix", "seeds": 3, "env_steps_per_s": 1000.0, "compile_s": 40.0}
        | {"eval_compile_s": 20.0, "eval_s": 2.0},
        {"map": "3m", "alg": "qmix-da", "seeds": 1, "env_steps_per_s": 1500.0, "compile_s": 60.0}
        | {"eval_compile_s": 30.0, "eval_s": 4.0},
    ]
    new = CellState("start", 0, None)
    # 40 + 20 + 100000/1000 + 11 evaluations (0, 10k, ..., 100k) x 2 + (20 + 2 x 320/32)
    speed = cell_speed(cells["qmix_3m_sight0"], rows)
    assert speed.measured
    hours = cell_hours(cells["qmix_3m_sight0"], new, speed)
    assert hours == pytest.approx((40 + 20 + 100 + 22 + 40) / 3600)
    # measured with 1 seed: the run's 1500 steps/s shared by 3 seeds (an estimate)
    speed = cell_speed(cells["qmix-da_3m_sight0"], rows)
    assert not speed.measured and speed.steps_per_s == pytest.approx(500.0)
    half = cell_hours(cells["qmix-da_3m_sight0"], CellState("resume", 50_000, None), speed)
    assert half == pytest.approx((60 + 30 + 100 + 6 * 4 + 30 + 40) / 3600)
    # vdn-da on 3m: from the map's other -da rows; nothing on 8m
    assert cell_speed(cells["vdn-da_3m_sight0"], rows).steps_per_s == pytest.approx(500.0)
    assert cell_speed(cells["qmix_8m_sight0"], rows) is None
    assert cell_hours(cells["qmix_8m_sight0"], CellState("done", 100_000, {}), None) == 0.0


def test_cost_estimate_scales_evaluations_by_their_episodes(tmp_path: Path) -> None:
    """The table times 32-episode evaluations: a cell with test_nepisode 8 pays a quarter per
    periodic evaluation, and its final evaluation costs final_eval_episodes / 32 of one."""
    sweep = parse_sweep(
        {"name": "c", "seeds": 3, "t_max": 100_000, "maps": ["3m"], "algorithms": ["qmix"]}
        | {"final_eval_episodes": 320, "common": {"test_nepisode": 8}}
    )
    cell = sweep.cells[0]
    row = {"map": "3m", "alg": "qmix", "seeds": 3, "env_steps_per_s": 1000.0, "compile_s": 40.0}
    row |= {"eval_compile_s": 20.0, "eval_s": 2.0}
    hours = cell_hours(cell, CellState("start", 0, None), cell_speed(cell, [row]))
    # 40 + 20 + 100 + 11 evaluations x 2 x 8/32 + (20 + 2 x 320/32)
    assert hours == pytest.approx((40 + 20 + 100 + 5.5 + 40) / 3600)
    # malformed rows of a hand-edited table are skipped, not a traceback
    table = tmp_path / "table1_cost.json"
    bad = [row | {"env_steps_per_s": "fast"}, row | {"seeds": 0}, "row", row | {"eval_s": None}]
    table.write_text(json.dumps({"rows": [*bad, row]}))
    assert load_speeds(table) == [row]
    table.write_text(json.dumps({"rows": {"not": "a list"}}))
    assert load_speeds(table) == []


# ------------------------------------------------------------------------ runs
def test_sweep_trains_evaluates_and_copies(finished: Path) -> None:
    for cell in (QMIX, QMIX_DA):
        run, result = finished / "runs" / "tiny" / cell, finished / "results" / "tiny" / cell
        final = json.loads((run / "final_eval.json").read_text())
        assert final["episodes"] == 8 and final["seeds"] == [0, 1]
        assert final["t_env"] >= 3000 and len(final["win_rate_per_seed"]) == 2
        assert ("expert_win_rate_per_seed" in final) == (cell == QMIX_DA)
        assert json.loads((run / "cell.json").read_text()) == {
            "sweep": "tiny",
            "cell": cell,
            "label": cell.split("_")[0],
        }
        small = ["config.json", "metrics.jsonl", "cell.json", "final_eval.json"]
        small += ["provenance.json"] if (run / "provenance.json").exists() else []
        assert sorted(p.name for p in result.iterdir()) == sorted(small)
        for name in small:
            assert (result / name).read_bytes() == (run / name).read_bytes(), name
        assert metric_rows(run / "metrics.jsonl")[-1]["t_env"] >= 3000
        assert "final evaluation: 8 episodes per seed" in (run / "log.txt").read_text()
    assert (finished / "results" / "tiny" / "sweep.yaml").read_text() == TINY


def test_second_call_skips_finished_runs(finished: Path) -> None:
    before = snapshot(finished / "runs", finished / "results")
    result = sweep_cli(finished, "tiny.yaml")
    assert result.returncode == 0, result.stderr
    assert f"skip {QMIX}: done" in result.stdout and "2/2 runs done" in result.stdout
    assert snapshot(finished / "runs", finished / "results") == before
    # the dry run's table shows them done; another lr is refused
    sweep = load_sweep(finished / "tiny.yaml", maps=["hidden_cue"])
    states = [
        cell_state(c, *cell_dirs(c, "tiny", finished / "runs", finished / "results"))
        for c in sweep.cells
    ]
    plan = format_plan(sweep, sweep.cells, states, [], finished / "results" / "table1_cost.json")
    assert plan.count("done (win") == 2 and "0 env steps (x seeds) to go" in plan, plan
    (finished / "lr.yaml").write_text(TINY.replace('"n_envs"', '"lr": 0.01, "n_envs"'))
    refused = sweep_cli(finished, "lr.yaml", "--dry-run")
    assert refused.returncode == 2 and "lr: saved=0.001 sweep=0.01" in refused.stderr
    assert snapshot(finished / "runs", finished / "results") == before


class RecordingLauncher:
    """Runs nothing: records the tasks it was given, in order, and reports each as failed."""

    def __init__(self) -> None:
        self.given: list[tuple[str, str]] = []

    def run(self, tasks, jobs):
        self.given += [(task.sweep, task.cell) for task in tasks]
        for task in tasks:
            yield task, 1


def test_several_files_share_one_queue_in_file_order(finished: Path, tmp_path: Path) -> None:
    """tiny is done, so of ``other`` (first) and tiny only other's runs are queued, in its
    cells' order; messages name the sweep of each run."""
    shutil.copytree(finished / "runs", tmp_path / "runs")
    shutil.copytree(finished / "results", tmp_path / "results")
    other = parse_sweep(yaml.safe_load(TINY.replace("name: tiny", "name: other")), "other")
    tiny = parse_sweep(yaml.safe_load(TINY), TINY)
    launcher, lines = RecordingLauncher(), []
    runs, results = tmp_path / "runs", tmp_path / "results"
    groups = [(other, other.cells), (tiny, tiny.cells)]
    code = run_sweeps(groups, runs, results, jobs=2, launcher=launcher, write=lines.append)
    assert code == 1  # the recording launcher fails every run
    assert launcher.given == [("other", QMIX), ("other", QMIX_DA)]
    assert any(line.startswith(f"skip tiny/{QMIX}: done, win rate") for line in lines), lines
    assert "one queue of 2 run(s) over 2 sweeps, 2 at a time" in lines
    assert any(line.startswith(f"FAILED other/{QMIX_DA} (exit 1)") for line in lines), lines


def test_several_files_refuse_a_repeated_name_or_a_glob_matching_nothing(
    tmp_path: Path, capsys
) -> None:
    tiny, other = tmp_path / "tiny.yaml", tmp_path / "other.yaml"
    tiny.write_text(TINY)
    other.write_text(TINY.replace("name: tiny", "name: other"))
    assert main([str(tiny), str(tiny), "--dry-run"]) == 2
    assert "sweep name(s) tiny given twice" in capsys.readouterr().err
    folders = ["--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")]
    assert main([str(tiny), str(other), "--only", "nothing*", *folders, "--dry-run"]) == 2
    assert "--only nothing* matches no cell of any sweep" in capsys.readouterr().err
    assert main([str(tiny), str(other), "--only", "qmix-da*", *folders, "--dry-run"]) == 0
    plans = capsys.readouterr().out
    assert plans.count("qmix-da_hidden_cue_sight0") == 2 and QMIX + " " not in plans
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()


def test_killed_run_resumes_to_the_same_metrics(finished: Path, tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(TINY)
    run_dir = tmp_path / "runs" / "tiny" / QMIX
    sweep = start_sweep(tmp_path, "tiny.yaml", "--only", "qmix_*")
    wait_for(lambda: checkpoint_steps(run_dir) or sweep.poll() is not None, what="a checkpoint")
    pid = lock_pid(run_dir)
    assert sweep.poll() is None and pid is not None, "the run ended before it could be killed"
    os.kill(pid, signal.SIGKILL)
    out, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 1, out + err
    assert f"FAILED {QMIX} (exit -9)" in out and f"failed: {QMIX}" in err
    assert not (run_dir / "final_eval.json").exists()
    assert metric_rows(run_dir / "metrics.jsonl")[-1]["t_env"] < 3000

    again = sweep_cli(tmp_path, "tiny.yaml", "--only", "qmix_*")
    assert again.returncode == 0, again.stdout + again.stderr
    whole = finished / "runs" / "tiny" / QMIX
    assert metric_rows(run_dir / "metrics.jsonl") == metric_rows(whole / "metrics.jsonl")
    final = json.loads((run_dir / "final_eval.json").read_text())
    assert final == json.loads((whole / "final_eval.json").read_text())
    results = tmp_path / "results" / "tiny" / QMIX
    assert (results / "final_eval.json").exists()
    assert not (tmp_path / "results" / "tiny" / QMIX_DA).exists()  # not selected by --only


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_stopping_the_sweep_stops_its_runs(tmp_path: Path, sig: signal.Signals) -> None:
    (tmp_path / "tiny.yaml").write_text(TINY)
    run_dir = tmp_path / "runs" / "tiny" / QMIX
    sweep = start_sweep(tmp_path, "tiny.yaml", "--only", QMIX)
    wait_for(lambda: lock_pid(run_dir) is not None, what="the run to start")
    pid = lock_pid(run_dir)
    sweep.send_signal(sig)
    _, err = sweep.communicate(timeout=120)  # SIGTERM: the run ends its chunk and saves
    if sig == signal.SIGTERM:
        assert sweep.returncode == 130 and "interrupted" in err, err
    wait_for(lambda: not alive(pid), 30.0, what=f"run {pid} to end")


# ------------------------------------------------------------------------ refusals
def test_dry_run_prints_grid_and_cost_and_writes_nothing(tmp_path: Path) -> None:
    text = TINY.replace("maps: [hidden_cue]", "maps: [hidden_cue, matrix_qtran]")
    (tmp_path / "grid.yaml").write_text(text)
    table = tmp_path / "results" / "table1_cost.json"
    table.parent.mkdir()
    row = {"map": "hidden_cue", "alg": "qmix", "seeds": 2, "env_steps_per_s": 100.0}
    table.write_text(json.dumps({"rows": [row | {"compile_s": 36.0}]}))
    before = snapshot(tmp_path)
    result = sweep_cli(tmp_path, "grid.yaml", "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    qmix = next(line for line in lines if line.startswith(QMIX))
    # 36 s + 3000 steps at 100/s = 66 s = 0.018 h (evaluations not measured: 0); an estimate
    # (*): the table times igmda train's defaults, not this sweep's small networks
    assert qmix.split()[1:] == ["qmix", "2", "3000", "new", "0.02*"]
    assert next(line for line in lines if line.startswith(QMIX_DA)).endswith("0.02*")
    assert next(line for line in lines if line.startswith("qmix_matrix_qtran")).endswith("?")
    assert "no speed for map(s) matrix_qtran" in result.stdout
    assert snapshot(tmp_path) == before
    # two at a time: the two known runs side by side; the table's rates were taken one at a time
    both = sweep_cli(tmp_path, "grid.yaml", "--dry-run", "--jobs", "2").stdout
    assert "about 0.0 run-hours, 0.0 h with 2 at a time (rates measured 1 at a time)" in both


def test_wall_hours_of_runs_started_in_order() -> None:
    """List scheduling by hand: each run starts on the first free job slot, in order."""
    assert wall_hours([3.0, 1.0, 1.0, 1.0], 2) == 3.0  # slot A: 3; slot B: 1 + 1 + 1
    assert wall_hours([1.0, 2.0, 3.0], 2) == 4.0  # A: 1 then 3; B: 2
    assert wall_hours([1.0, 2.0, 3.0], 1) == 6.0
    assert wall_hours([], 2) == 0.0


def test_runs_side_by_side_split_the_cores_unless_told() -> None:
    cores = len(os.sched_getaffinity(0))
    half = str(max(1, cores // 2))
    assert cpu_devices_env(1, {}) == {}
    env = cpu_devices_env(2, {"XLA_FLAGS": "--a=1 --xla_force_host_platform_device_count=2"})
    assert env["IGMDA_CPU_DEVICES"] == half
    assert env["XLA_FLAGS"] == f"--a=1 --xla_force_host_platform_device_count={half}"
    assert cpu_devices_env(64, {})["IGMDA_CPU_DEVICES"] == "1"
    assert cpu_devices_env(2, {"IGMDA_CPU_DEVICES": "2"}) == {}  # the user's choice stays
    # a child started from this process (whose import of envs set XLA_FLAGS) really gets them
    # (conftest sets IGMDA_CPU_DEVICES for the tests: leave it out, as a user would)
    base = {k: v for k, v in os.environ.items() if k != "IGMDA_CPU_DEVICES"}
    assert "--xla_force_host_platform_device_count=2" in base["XLA_FLAGS"]
    probe = "import envs, jax; print(len(jax.local_devices()))"
    child = subprocess.run(
        [sys.executable, "-c", probe],
        env={**base, **cpu_devices_env(64, base)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.stdout.strip().splitlines()[-1] == "1", child.stderr


BAD = [
    (
        "name: x\nseeds: 1\nt_max: 10\nalgorithms: [qmix]\nmaps: [3m]\nalgs: []",
        "unknown key 'algs'",
    ),
    (
        TINY.replace("[qmix, qmix-da]", "[qmix-dx]"),
        "unknown algorithm 'qmix-dx' in the file; valid: vdn",
    ),
    (TINY.replace("[hidden_cue]", "[4m]"), "unknown map '4m' (cell qmix_4m_sight0); known maps"),
    (TINY.replace('"n_envs"', '"hiden_dim": 1, "n_envs"'), "did you mean 'hidden_dim'"),
    (TINY.replace('"n_envs": 4', '"n_envs": "four"'), "n_envs in common of the file must be int"),
    (TINY.replace('"n_envs"', '"alg": "vdn", "n_envs"'), "set it with the key 'algorithms'"),
    (TINY.replace('"batch_size": 8', '"batch_size": 64'), "must not exceed buffer_size"),
    (TINY.replace("maps: [", "maps: [[["), "is not valid YAML"),
    (TINY + "grids: [{maps: [3m]}, {map: [3m]}]", "unknown key 'map' in grid 2"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_file_is_one_line_and_exit_2(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    result = sweep_cli(tmp_path, "bad.yaml")
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_a_niced_sweep_keeps_its_runs_niced_under_autogroup() -> None:
    """A run leads a session of its own; under Linux's autogroup scheduling its niceness must
    be its autogroup's too, or a `nice -n 19 igmda sweep` competes with the user's work."""
    import subprocess
    import sys

    script = (
        "import os, subprocess, sys\n"
        "from igmda_jax.sweeps.launchers import keep_niceness\n"
        "niceness = os.nice(7)\n"
        "child = subprocess.Popen(['sleep', '5'], start_new_session=True)\n"
        "keep_niceness(child.pid)\n"
        "path = f'/proc/{child.pid}/autogroup'\n"
        "print(niceness, open(path).read().split()[-1] if os.path.exists(path) else 'none')\n"
        "child.kill()\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    niceness, autogroup_nice = out.stdout.split()
    assert int(niceness) >= 7  # 7, or more where the tests themselves run niced
    # a new session's autogroup starts at niceness 0: keep_niceness gave it the sweep's
    expected = niceness if Path("/proc/self/autogroup").exists() else "none"
    assert autogroup_nice == expected, out
