"""Where a sweep stands and what it still costs, read from its folders.

In: ``sweep.Cell``s with their run and results folders (``runs/<name>/<cell>/`` and
``results/<name>/<cell>/``, laid out by ``launchers``), and the measured speeds of
``<results-dir>/table1_cost.json`` (experiments/table1_cost.py). Out: each cell's
``CellState`` (done, evaluate, resume, start; env steps reached) and the fields where its
saved config drifted from the file; its ``Speed`` and the hours it still needs; the text
``igmda sweep`` prints: the ``--dry-run`` table, a line per finished run and a progress line
(``ProgressThread``, every minute). Reads files only: nothing here writes one or starts a run.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from igmda_jax.core.config import RESUMABLE_FIELDS
from igmda_jax.core.presets import MAIN_JOB, make_config, with_defaults
from igmda_jax.sweeps.run_folder import latest_t_env, next_step, read_metrics
from igmda_jax.sweeps.spec import Cell, Sweep

# training hours of finished runs by (alg, map, seeds, t_max): ``finished_hours``
FinishedHours = dict[tuple[str, str, int, int], list[float]]
TABLE_TEST_EPISODES = 32  # test_nepisode of the runs experiments/table1_cost.py times
COST_TABLE = "table1_cost.json"


# ---------------------------------------------------------------------------- state
@dataclasses.dataclass(frozen=True)
class CellState:
    """Where a cell stands: ``run_folder.next_step`` (done, evaluate, resume, start) and the env
    steps per seed its metrics reached (capped at t_max; t_max when done)."""

    step: str
    t_env: int
    final: dict[str, Any] | None  # final_eval.json when done


def cell_dirs(cell: Cell, name: str, runs_dir: Path, results_dir: Path) -> tuple[Path, Path]:
    """The cell's run folder and results folder."""
    return runs_dir / name / cell.name, results_dir / name / cell.name


def cell_state(cell: Cell, run_dir: Path, results_dir: Path) -> CellState:
    """Read (only) the cell's folders."""
    step = next_step(run_dir, results_dir, cell.t_max)
    if step == "done":
        found = [d / "final_eval.json" for d in (run_dir, results_dir)]
        final = json.loads(next(p for p in found if p.is_file()).read_text())
        return CellState(step, cell.t_max, final)
    folder = run_dir if (run_dir / "metrics.jsonl").is_file() else results_dir
    t_env = min(latest_t_env(read_metrics(folder / "metrics.jsonl")), cell.t_max)
    return CellState(step, t_env, None)


def config_drift(cell: Cell, run_dir: Path, results_dir: Path) -> list[str]:
    """Fields (not budget or logging) where the cell's saved config.json differs from what the
    sweep file now asks, as ``field: saved=x sweep=y``; empty when none or nothing is saved."""
    paths = [d / "config.json" for d in (run_dir, results_dir) if (d / "config.json").is_file()]
    if not paths:
        return []
    saved = with_defaults(json.loads(paths[0].read_text()))
    wanted = json.loads(json.dumps(cell.config().to_dict()))
    drift = []
    for name in sorted((set(saved) | set(wanted)) - set(RESUMABLE_FIELDS)):
        a, b = saved.get(name), wanted.get(name)
        if a != b or isinstance(a, bool) != isinstance(b, bool):
            drift.append(f"{name}: saved={a!r} sweep={b!r}")
    return drift


# ---------------------------------------------------------------------------- cost
@dataclasses.dataclass(frozen=True)
class Speed:
    """A run's measured costs (table1_cost.json): per-seed env steps per wall second with all
    its seeds training, compile seconds of training and of the first evaluation, seconds of one
    evaluation (every actor); ``measured`` False when taken from other algorithms on the map or
    from another number of seeds."""

    steps_per_s: float
    compile_s: float
    eval_compile_s: float
    eval_s: float
    measured: bool


def wall_hours(run_hours: Sequence[float], jobs: int) -> float:
    """Wall time of runs started in this order, ``jobs`` at a time, each as soon as one ends
    (how ``LocalLauncher`` schedules them): the last finish time."""
    finish = [0.0] * max(1, jobs)
    for hours in run_hours:
        earliest = finish.index(min(finish))
        finish[earliest] += hours
    return max(finish)


def load_speeds(path: Path) -> list[dict[str, Any]]:
    """The usable rows of a table1_cost.json; [] when the file is missing or unreadable."""
    try:
        rows = json.loads(path.read_text())["rows"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    keys = ("map", "alg", "seeds", "env_steps_per_s")

    def usable(row: Any) -> bool:
        if not isinstance(row, dict) or not all(k in row for k in keys):
            return False
        numbers = [row["seeds"], row["env_steps_per_s"]]
        numbers += [row[k] for k in ("compile_s", "eval_compile_s", "eval_s") if k in row]
        return (
            all(isinstance(x, int | float) and x >= 0 for x in numbers)
            and min(row["seeds"], row["env_steps_per_s"]) > 0
        )

    return [row for row in rows if usable(row)] if isinstance(rows, list) else []


def table_jobs(path: Path) -> int:
    """How many runs at once a table1_cost.json's rates were measured with (1 if unsaid)."""
    try:
        return int(json.loads(path.read_text()).get("jobs", 1))
    except (OSError, ValueError, TypeError, AttributeError):
        return 1


def cell_speed(cell: Cell, rows: Sequence[dict[str, Any]]) -> Speed | None:
    """The measured speed of the cell's (map, alg); without one, the mean of the map's other
    algorithms of the same variant (-da, -bc, plain), else of all of the map's; None when the
    map has none. Rows of the cell's seed count are preferred; another count is scaled as
    ``measured seeds / seeds`` (a run's total env steps per second taken as fixed). The speed
    counts as measured only for the setup the table measures: ``igmda train --alg A --map M
    --sight-range 0 --seeds S`` (budget and evaluation fields aside)."""
    same = [row for row in rows if row["map"] == cell.map and row["alg"] == cell.alg]
    exact_alg = bool(same)
    if not same:
        on_map = [row for row in rows if row["map"] == cell.map]
        variant = cell.alg.partition("-")[2]
        same = [row for row in on_map if row["alg"].partition("-")[2] == variant] or on_map
    if not same:
        return None
    exact = [row for row in same if row["seeds"] == cell.seeds]
    used = exact or same

    def mean(key: str) -> float:
        return sum(float(row.get(key, 0.0)) for row in used) / len(used)

    rate = sum(row["env_steps_per_s"] * row["seeds"] / cell.seeds for row in used) / len(used)
    measured = exact_alg and bool(exact) and is_table_setup(cell)
    return Speed(rate, mean("compile_s"), mean("eval_compile_s"), mean("eval_s"), measured)


def is_table_setup(cell: Cell) -> bool:
    """Whether the cell runs what experiments/table1_cost.py times (see ``cell_speed``)."""
    own = {"alg": cell.alg, "map": cell.map, "sight_range": 0.0, "seeds": cell.seeds}
    table = make_config(**{**MAIN_JOB, **own, "t_max": cell.t_max}).to_dict()
    ignored = {*RESUMABLE_FIELDS, "test_nepisode"}  # cell_hours scales evaluations
    return all(v == table[k] for k, v in cell.config().to_dict().items() if k not in ignored)


def cell_hours(cell: Cell, state: CellState, speed: Speed | None) -> float | None:
    """Hours the cell still needs at ``speed``: compilations, remaining steps, evaluations
    every test_interval and the final evaluation; an evaluation costs ``eval_s`` per
    ``TABLE_TEST_EPISODES`` episodes (what the table timed), scaled to the cell's
    test_nepisode and final_eval_episodes. None when the speed is unknown."""
    if state.step == "done":
        return 0.0
    if speed is None:
        return None
    config = cell.config()
    per_episode = speed.eval_s / TABLE_TEST_EPISODES
    final = speed.eval_compile_s + per_episode * cell.final_eval_episodes
    if state.step == "evaluate":
        return final / 3600.0
    left = cell.t_max - state.t_env
    evaluations = left // config.test_interval + 1
    train = speed.compile_s + speed.eval_compile_s + left / speed.steps_per_s
    return (train + evaluations * per_episode * config.test_nepisode + final) / 3600.0


def finished_hours(results_dir: Path) -> FinishedHours:
    """Training hours (each run's own clock: its metrics' last ``wall_time``) of the finished
    runs under ``results_dir`` (``<sweep>/<cell>/`` with a final_eval.json), by (alg, map,
    seeds, t_max) of their config. Unreadable folders are skipped."""
    hours: FinishedHours = {}
    for final in sorted(results_dir.glob("*/*/final_eval.json")):
        try:
            config = json.loads((final.parent / "config.json").read_text())
            rows = read_metrics(final.parent / "metrics.jsonl")
            key = (config["alg"], config["map"], int(config["seeds"]), int(config["t_max"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        clock = max((float(row.get("wall_time", 0.0)) for row in rows), default=0.0)
        if clock > 0.0:
            hours.setdefault(key, []).append(clock / 3600.0)
    return hours


def finished_twins(cell: Cell, finished: FinishedHours) -> list[float]:
    """The training hours of finished runs like ``cell``: of its algorithm, else of its -da/-bc
    sibling (the same networks and update: ``qmix-bc`` for ``qmix-da`` and back), on its map
    with its seeds and budget; [] when there are none."""
    mixer, _, variant = cell.alg.partition("-")
    siblings = [f"{mixer}-{other}" for other in ("da", "bc") if variant and other != variant]
    for alg in (cell.alg, *siblings):
        hours = finished.get((alg, cell.map, cell.seeds, cell.t_max))
        if hours:
            return hours
    return []


def estimated_hours(
    cell: Cell,
    state: CellState,
    speed: Speed | None,
    finished: FinishedHours,
) -> float | None:
    """Hours the cell still needs: the mean training hours of ``finished_twins`` (measured
    under the load the queue runs at), scaled to the env steps left, when there are any and
    the cell still trains; else ``cell_hours`` at the measured ``speed``."""
    if from_finished(cell, state, finished):
        twins = finished_twins(cell, finished)
        return sum(twins) / len(twins) * (cell.t_max - state.t_env) / cell.t_max
    return cell_hours(cell, state, speed)


def from_finished(cell: Cell, state: CellState, finished: FinishedHours) -> bool:
    """Whether ``estimated_hours`` takes the cell's hours from finished runs."""
    return state.step in ("start", "resume") and bool(finished_twins(cell, finished))


def state_text(state: CellState) -> str:
    """done (win 0.81) | evaluate | resume at 120000 | restart | new."""
    if state.final is not None:
        return f"done (win {state.final.get('win_rate_mean', float('nan')):.2f})"
    if state.step == "resume":
        return f"resume at {state.t_env}" if state.t_env else "restart"
    return {"evaluate": "evaluate", "start": "new"}[state.step]


def format_plan(
    sweep: Sweep,
    cells: Sequence[Cell],
    states: Sequence[CellState],
    speeds: Sequence[dict[str, Any]],
    table: Path,
    jobs: int = 1,
    finished: FinishedHours | None = None,
) -> str:
    """The dry-run's table: each cell, its label, budget, state and estimated hours
    (``estimated_hours``: from ``finished`` runs of the same setup, else the speed table), a
    total (run-hours, and the wall time with ``jobs`` runs at a time)."""
    finished = finished or {}
    name_w = max(len("cell"), *(len(c.name) for c in cells))
    label_w = max(len("label"), *(len(c.label) for c in cells))
    presets = ", ".join(sorted({c.preset for c in cells}))
    episodes = ", ".join(str(n) for n in sorted({c.final_eval_episodes for c in cells}))
    lines = [
        f"sweep {sweep.name}: {len(cells)} run(s), preset {presets}, final evaluation "
        f"{episodes} greedy episodes per seed",
        f"{'cell':<{name_w}}  {'label':<{label_w}}  {'seeds':>5}  {'t_max':>10}  "
        f"{'state':<20}  est. h",
    ]
    total, unknown, flags, known_hours = 0.0, [], set(), []
    for cell, state in zip(cells, states, strict=True):
        speed = cell_speed(cell, speeds)
        hours = estimated_hours(cell, state, speed, finished)
        if hours is None:
            unknown.append(cell.name)
            cost = "?"
        else:
            total += hours
            known_hours.append(hours)
            if state.step == "done":
                flag = ""
            elif from_finished(cell, state, finished):
                flag = "+"
            else:
                flag = "" if speed is None or speed.measured else "*"
            flags.add(flag)
            cost = f"{hours:.2f}{flag}"
        lines.append(
            f"{cell.name:<{name_w}}  {cell.label:<{label_w}}  {cell.seeds:>5}  {cell.t_max:>10}  "
            f"{state_text(state):<20}  {cost}"
        )
    steps_left = sum((c.t_max - s.t_env) * c.seeds for c, s in zip(cells, states, strict=True))
    done = sum(s.step == "done" for s in states)
    if len(unknown) == len(cells):
        cost = "?"
    elif jobs == 1:
        cost = f"about {total:.1f} h of runs one at a time"
    else:
        measured_jobs = table_jobs(table)
        cost = (
            f"about {total:.1f} run-hours, {wall_hours(known_hours, jobs):.1f} h with {jobs} at "
            f"a time"
            + ("" if measured_jobs == jobs else f" (rates measured {measured_jobs} at a time)")
        )
    lines.append(
        f"total: {len(cells)} run(s), {done} done; {steps_left:,} env steps (x seeds) to go; "
        f"{cost}" + (f", plus {len(unknown)} run(s) of unknown cost" if unknown else "")
    )
    if "+" in flags:
        lines.append(
            "+ the training clocks of finished runs of the same algorithm (or its -da/-bc "
            "sibling), map, seeds and budget"
        )
    if "*" in flags:
        lines.append(f"* estimated from other algorithms, seed counts or settings in {table}")
    if unknown:
        maps = sorted({c.map for c in cells if c.name in unknown})
        source = f"no speed for map(s) {', '.join(maps)} in {table}"
        lines.append(f"? {source}" if table.is_file() else f"? no {table}: cost unknown")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- progress
def duration_text(seconds: float | None) -> str:
    """3725 -> "1h02m", 330 -> "5m30s", None -> "?"."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def progress_line(
    runs_done: int, runs_total: int, steps: int, steps_total: int, rate: float | None
) -> str:
    """Runs done, env steps done (x seeds) against the total, this call's rate and the ETA."""
    eta = (steps_total - steps) / rate if rate else None
    speed = f"{rate:,.0f} steps/s" if rate else "rate ?"
    return (
        f"progress: {runs_done}/{runs_total} runs done, {steps:,}/{steps_total:,} env steps "
        f"({steps / max(steps_total, 1):.0%}), {speed}, ETA {duration_text(eta)}"
    )


def result_line(cell: Cell, final: dict[str, Any], metrics: Sequence[dict[str, Any]]) -> str:
    """One finished run: its final greedy win rates (and the expert's) and training time."""
    per_seed = " ".join(f"{w:.2f}" for w in final["win_rate_per_seed"])
    text = f"{cell.name} ({cell.label}): win rate {final['win_rate_mean']:.3f} ({per_seed})"
    if "expert_win_rate_per_seed" in final:
        expert = final["expert_win_rate_per_seed"]
        text += f", expert {sum(expert) / len(expert):.3f}"
    wall = metrics[-1].get("wall_time") if metrics else None
    return text + f" at t_env {final['t_env']:,}, trained {duration_text(wall)}"


class ProgressThread(threading.Thread):
    """Prints ``progress_line`` every ``every`` seconds from the cells' metrics files."""

    def __init__(self, cells: Sequence[tuple[Cell, Path, Path]], every: float, write: Callable):
        super().__init__(daemon=True)
        self.cells, self.every, self.write = list(cells), every, write
        self.runs_done = 0
        self.stopped = threading.Event()
        self.started_at = time.monotonic()
        self.steps_at_start = self.steps()

    def steps(self) -> int:
        """Env steps done (x seeds) over the cells."""
        return sum(cell_state(c, r, d).t_env * c.seeds for c, r, d in self.cells)

    def line(self) -> str:
        steps = self.steps()
        elapsed = time.monotonic() - self.started_at
        rate = (steps - self.steps_at_start) / elapsed if steps > self.steps_at_start else None
        total = sum(cell.t_max * cell.seeds for cell, _, _ in self.cells)
        return progress_line(self.runs_done, len(self.cells), steps, total, rate)

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            self.write(self.line())
