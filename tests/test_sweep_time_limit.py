"""`igmda sweep --time-limit`: durations, run-time estimates from finished runs (by hand), the
local launcher starting only what fits and stopping the rest at the limit (with `sleep`
processes standing in for runs), and the sweep's exit status 3 with what it left."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from igmda_jax.sweeps.cli import TIME_LIMITED, make_task, parse_duration, run_sweeps
from igmda_jax.sweeps.launchers import LaunchError, LocalLauncher, RunTask
from igmda_jax.sweeps.plan import CellState, estimated_hours, finished_hours, format_plan
from igmda_jax.sweeps.spec import parse_sweep

GRID = """
name: grid
seeds: 3
t_max: 1000
algorithms: [qmix, qmix-da, vdn, vdn-da]
maps: [3m]
"""


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2:30", 9000.0), ("1:00:30", 3630.0), ("150m", 9000.0), ("2.5h", 9000.0), ("900s", 900.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["90", "2x", "h", "1:2:3:4", "1:-5", "0m", "-1h", "infh"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def write_finished(results: Path, folder: str, config: dict, clocks: list[float]) -> None:
    cell = results / folder
    cell.mkdir(parents=True)
    (cell / "config.json").write_text(json.dumps(config))
    rows = [{"seed": 0, "t_env": 10 * i, "wall_time": clock} for i, clock in enumerate(clocks)]
    (cell / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (cell / "final_eval.json").write_text("{}")


def test_estimates_from_finished_runs_by_hand(tmp_path: Path) -> None:
    """Two finished qmix runs on 3m (3 seeds, 1000 steps) took 1 h and 2 h by their clocks: a
    qmix cell at t_env 250 of 1000 needs 1.5 h x 0.75; a run without final_eval.json, another
    budget and an unreadable config do not count."""
    qmix = {"alg": "qmix", "map": "3m", "seeds": 3, "t_max": 1000}
    write_finished(tmp_path, "a/qmix_3m", qmix, [0.0, 1800.0, 3600.0])
    write_finished(tmp_path, "b/qmix_3m_other", {**qmix, "sight_range": 2.0}, [7200.0])
    write_finished(tmp_path, "b/qmix_3m_long", {**qmix, "t_max": 2000}, [9e9])
    write_finished(tmp_path, "b/broken", {"alg": "qmix"}, [9e9])
    write_finished(tmp_path, "b/unfinished", qmix, [9e9])
    (tmp_path / "b" / "unfinished" / "final_eval.json").unlink()
    hours = finished_hours(tmp_path)
    assert hours == {("qmix", "3m", 3, 1000): [1.0, 2.0], ("qmix", "3m", 3, 2000): [9e9 / 3600]}
    cells = {cell.alg: cell for cell in parse_sweep(yaml.safe_load(GRID)).cells}
    resume = CellState("resume", 250, None)
    assert estimated_hours(cells["qmix"], resume, None, hours) == pytest.approx(1.125)
    assert estimated_hours(cells["qmix"], CellState("start", 0, None), None, hours) == 1.5
    assert estimated_hours(cells["vdn"], resume, None, hours) is None  # no twin, no speed
    # a -da cell takes its -bc sibling's clock when it has none of its own, a plain one does not
    write_finished(tmp_path, "c/vdn-bc_3m", {**qmix, "alg": "vdn-bc"}, [1800.0])
    hours = finished_hours(tmp_path)
    assert estimated_hours(cells["vdn-da"], resume, None, hours) == pytest.approx(0.375)
    assert estimated_hours(cells["vdn"], resume, None, hours) is None
    assert estimated_hours(cells["qmix"], CellState("done", 1000, {}), None, hours) == 0.0
    # the dry-run shows the same estimates, marked, and says where they come from
    sweep = parse_sweep(yaml.safe_load(GRID))
    states = [resume if cell.alg == "qmix" else CellState("start", 0, None) for cell in sweep.cells]
    plan = format_plan(sweep, sweep.cells, states, [], tmp_path / "none.json", 1, hours)
    (qmix_row,) = [line for line in plan.splitlines() if line.startswith("qmix_3m")]
    assert qmix_row.endswith("resume at 250         1.12+")
    assert "+ the training clocks of finished runs" in plan
    assert "plus 2 run(s) of unknown cost" in plan  # qmix-da and vdn; vdn-da has vdn-bc's


@dataclasses.dataclass(frozen=True)
class SleepLauncher(LocalLauncher):
    """LocalLauncher whose tasks are sleeping processes of the given lengths (by cell)."""

    sleeps: dict[str, float] = dataclasses.field(default_factory=dict)
    poll_s: float = 0.02
    grace_s: float = 5.0

    def start(self, task: RunTask, jobs: int = 1, env=None) -> subprocess.Popen:
        command = [sys.executable, "-c", f"import time; time.sleep({self.sleeps[task.cell]})"]
        return subprocess.Popen(command, start_new_session=True)


def grid_tasks(tmp_path: Path) -> dict[str, RunTask]:
    sweep = parse_sweep(yaml.safe_load(GRID))
    tasks = [
        make_task(sweep, cell, tmp_path / "runs", tmp_path / "results") for cell in sweep.cells
    ]
    return {task.cell.split("_")[0]: task for task in tasks}


def test_only_runs_that_fit_start_and_the_limit_stops_the_rest(tmp_path: Path) -> None:
    """One at a time, 3 s: qmix (estimated 10 s) never starts; qmix-da (0.2 s) and vdn (no
    estimate: started) run to the end; vdn-da (estimated 1 s, but runs 60 s) is stopped at the
    limit. Both left ones are reported in queue order, only the finished ones yielded."""
    tasks = grid_tasks(tmp_path)
    estimates = {"qmix": 10.0, "qmix-da": 0.2, "vdn": None, "vdn-da": 1.0}
    sleeps = {tasks[alg].cell: s for alg, s in zip(estimates, [0.1, 0.2, 0.2, 60.0], strict=True)}
    launcher = SleepLauncher(
        sleeps=sleeps,
        time_limit_s=3.0,
        estimate_s=lambda task: estimates[task.cell.split("_")[0]],
    )
    ended = [(task.cell.split("_")[0], code) for task, code in launcher.run(tasks.values(), 1)]
    assert ended == [("qmix-da", 0), ("vdn", 0)]
    assert [task.cell.split("_")[0] for task in launcher.left] == ["qmix", "vdn-da"]


def test_without_a_limit_everything_runs(tmp_path: Path) -> None:
    tasks = grid_tasks(tmp_path)
    launcher = SleepLauncher(sleeps={task.cell: 0.05 for task in tasks.values()})
    assert sorted(code for _, code in launcher.run(tasks.values(), 2)) == [0, 0, 0, 0]
    assert launcher.left == []


def test_a_sweep_left_by_the_limit_exits_3_naming_its_runs(tmp_path: Path) -> None:
    """Finished twins that took 100 h: with a 60 s limit no run starts; the sweep says which
    runs it left and returns 3. Another launcher is refused."""
    results = tmp_path / "results"
    for alg in ("qmix", "qmix-da", "vdn", "vdn-da"):
        config = {"alg": alg, "map": "3m", "seeds": 3, "t_max": 1000}
        write_finished(results, f"earlier/{alg}_3m", config, [360000.0])
    sweep = parse_sweep(yaml.safe_load(GRID))
    lines: list[str] = []
    launcher = SleepLauncher()  # no task may start: it would raise KeyError
    code = run_sweeps(
        [(sweep, sweep.cells)], tmp_path / "runs", results, launcher=launcher,
        write=lines.append, progress_every=3600.0, time_limit_s=60.0,
    )  # fmt: skip
    assert code == TIME_LIMITED == 3
    (limit,) = [line for line in lines if line.startswith("time limit 1m00s: a run starts")]
    assert limit.endswith("estimates: qmix_3m_sight0 100h00m, qmix-da_3m_sight0 100h00m, "
                          "vdn_3m_sight0 100h00m, vdn-da_3m_sight0 100h00m")  # fmt: skip
    (left,) = [line for line in lines if line.startswith("time limit:")]
    assert "4 run(s) left" in left and "qmix_3m_sight0, qmix-da_3m_sight0" in left

    class Elsewhere:
        def run(self, tasks, jobs):
            raise AssertionError("not started")

    with pytest.raises(LaunchError, match="local launcher"):
        run_sweeps(
            [(sweep, sweep.cells)], tmp_path / "runs", results, launcher=Elsewhere(),
            write=lines.append, time_limit_s=60.0,
        )  # fmt: skip
