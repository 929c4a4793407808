"""Run folders as ``igmda report`` reads them: find them under the user's folders, read one
into a ``Run`` (per seed: the final values and the learning curve), and tell apart runs that
would otherwise pool the same seeds. Reads files only; see ``report`` for the layout.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

UNFINISHED = "unfinished"
NO_FINAL_EVAL = "no final eval"
FINAL = "final"


class ReportError(ValueError):
    """The inputs cannot make a report; the message names the folder or file and the fix."""


@dataclasses.dataclass(frozen=True)
class SeedResult:
    """One seed of a run: its final values and its learning curve (evaluation points)."""

    seed: int
    win_rate: float
    return_: float | None
    expert_win_rate: float | None
    agreement: float | None  # learner and expert greedy actions equal, last evaluation (-da/-bc)
    curve_t: tuple[int, ...]
    curve_win_rate: tuple[float, ...]
    curve_return: tuple[float | None, ...]


@dataclasses.dataclass(frozen=True)
class Run:
    """A run folder as the report sees it. ``folder`` is the path as the user's DIR spells it."""

    folder: str
    label: str
    alg: str
    map: str
    sight_range: float | None
    t_max: int
    t_env: int  # of the final value (final_eval.json's, else the last evaluation's, min over seeds)
    episodes: int | None  # per seed in the final value's evaluation
    status: str  # FINAL, UNFINISHED or NO_FINAL_EVAL
    seeds: tuple[SeedResult, ...]
    train_hours: (
        float | None
    )  # the run's own training clock (metrics' last wall_time), resumes added


# ---------------------------------------------------------------------------------- inputs
def find_run_folders(dirs: Sequence[str]) -> list[tuple[Path, str]]:
    """(path, display path) of every run folder in or under ``dirs``, in sorted order, each
    once. A run folder holds a config.json with "alg" and "map"; its subfolders, hidden
    folders and links are not searched. Raises ReportError for a DIR that does not exist."""
    found: dict[Path, str] = {}

    def visit(path: Path, display: str) -> None:
        config = path / "config.json"
        if config.is_file() and _is_run_config(config):
            found.setdefault(path.resolve(), display)
            return
        children = (p for p in path.iterdir() if p.is_dir() and not p.is_symlink())
        for child in sorted(p for p in children if not p.name.startswith(".")):
            visit(child, f"{display.rstrip('/')}/{child.name}")

    for directory in dirs:
        path = Path(directory)
        if not path.is_dir():
            what = "is not a folder" if path.exists() else "does not exist"
            raise ReportError(f"{directory} {what}; pass run folders or folders holding them")
        visit(path, directory)
    return [(path, display) for path, display in found.items()]


def _is_run_config(path: Path) -> bool:
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(config, dict) and "alg" in config and "map" in config


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ReportError(f"{path} is not valid JSON ({error})") from None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl; a cut-off last line (a killed run) is dropped."""
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ReportError(f"{path}:{number} is not a JSON row") from None
    return rows


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


def load_run(folder: Path, display: str) -> Run | None:
    """The run in ``folder``, or None when it has no evaluation yet."""
    config = _read_json(folder / "config.json")
    cell = _read_json(folder / "cell.json") if (folder / "cell.json").exists() else {}
    rows = read_metrics(folder / "metrics.jsonl")
    by_seed: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_seed.setdefault(int(row["seed"]), []).append(row)
    for seed_rows in by_seed.values():
        seed_rows.sort(key=lambda row: row["eval"])
    final_path = folder / "final_eval.json"
    if final_path.exists():
        final = _read_json(final_path)
        status = FINAL
        seeds = [int(s) for s in final["seeds"]]
        returns = final.get("return_per_seed") or [None] * len(seeds)
        expert = final.get("expert_win_rate_per_seed") or [None] * len(seeds)
        wins = final["win_rate_per_seed"]
        finals = {
            seed: (float(win), _optional(ret), _optional(exp))
            for seed, win, ret, exp in zip(seeds, wins, returns, expert, strict=True)
        }
        t_env, episodes = int(final["t_env"]), final.get("episodes")
    elif by_seed:
        seeds = sorted(by_seed)
        last = {seed: by_seed[seed][-1] for seed in seeds}
        finals = {
            seed: (
                float(row["win_rate"]),
                _optional(row.get("return")),
                _optional(row.get("expert_win_rate")),
            )
            for seed, row in last.items()
        }
        t_env = min(int(row["t_env"]) for row in last.values())
        episodes = config.get("test_nepisode")
        status = UNFINISHED if t_env < int(config.get("t_max", 0)) else NO_FINAL_EVAL
    else:
        return None
    results = tuple(
        SeedResult(
            seed=seed,
            win_rate=finals[seed][0],
            return_=finals[seed][1],
            expert_win_rate=finals[seed][2],
            agreement=_optional(by_seed[seed][-1].get("agreement")) if seed in by_seed else None,
            curve_t=tuple(int(r["t_env"]) for r in by_seed.get(seed, [])),
            curve_win_rate=tuple(float(r["win_rate"]) for r in by_seed.get(seed, [])),
            curve_return=tuple(_optional(r.get("return")) for r in by_seed.get(seed, [])),
        )
        for seed in sorted(seeds)
    )
    return Run(
        folder=display,
        label=str(cell.get("label") or config["alg"]),
        alg=str(config["alg"]),
        map=str(config["map"]),
        sight_range=_optional(config.get("sight_range")),
        t_max=int(config.get("t_max", 0)),
        t_env=t_env,
        episodes=None if episodes is None else int(episodes),
        status=status,
        seeds=results,
        train_hours=_train_hours(rows),
    )


def _train_hours(rows: Sequence[dict[str, Any]]) -> float | None:
    """Hours on the run's training clock: the largest ``wall_time`` of its metrics rows (it
    counts from the first start and carries over resumes), None when no row has one."""
    walls = [float(row["wall_time"]) for row in rows if row.get("wall_time") is not None]
    return max(walls) / 3600 if walls else None


def separate_overlapping(runs: Sequence[Run]) -> list[Run]:
    """Runs of one label and map whose seeds overlap are different experiments: every run of
    such a group gets its folder name (its whole path if names repeat) after its label."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.label, run.map), []).append(run)
    out = []
    for group in groups.values():
        seeds = [s.seed for run in group for s in run.seeds]
        if len(seeds) == len(set(seeds)):
            out.extend(group)
            continue
        names = [Path(run.folder).name for run in group]
        unique = len(set(names)) == len(names)
        for run, name in zip(group, names, strict=True):
            suffix = name if unique else run.folder
            out.append(dataclasses.replace(run, label=f"{run.label} [{suffix}]"))
    return out
