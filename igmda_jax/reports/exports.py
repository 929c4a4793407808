"""The data files of ``igmda report``: finals.csv, summary.csv and marl_eval.json, each
returned as a string built from a ``cells.Report`` in a fixed order (labels, then maps, then
seeds) with fixed float formats, so the same report gives the same bytes.

marl_eval.json follows instadeepai/marl-eval's raw-data layout (its README, "Data Structure
for Raw Experiment data"):

    {env: {task: {algorithm: {"run_k": {"step_i": {"step_count": int, "win_rate": [x],
                                                  "return": [x]}, ...,
                                       "absolute_metrics": {"win_rate": [x], "return": [x]}}}}}}

env is "smax" (or "toy" for the toy games), task the map, algorithm the label, run_k the k-th
seed in seed order, step_i the i-th evaluation. Each metric list holds one value, the
evaluation's mean over episodes (the README allows one element for a win rate). Key order
matters there: marl-eval reads a run's last key as its absolute metrics, so
"absolute_metrics" comes last and steps are in evaluation order (the file is not key-sorted).
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from igmda_jax.reports.cells import TOY_MAPS, Report
from igmda_jax.reports.paper import paper_value
from igmda_jax.reports.stats import Estimate

FINALS_COLUMNS = (
    "label",
    "map",
    "seed",
    "win_rate",
    "return",
    "expert_win_rate",
    "agreement",
    "t_env",
    "episodes",
    "status",
    "folder",
)
SUMMARY_COLUMNS = (
    "kind",
    "label",
    "versus",
    "map",
    "runs",
    "estimate",
    "ci_low",
    "ci_high",
    "paper_sc2",
    "flagged",
)


def _number(value: float | None, digits: int = 6) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def finals_csv(report: Report) -> str:
    """finals.csv: label, map, seed, final values, where they come from."""
    header = list(FINALS_COLUMNS)
    rows = []
    for cell in report.cells.values():
        for run in cell.runs:
            for s in run.seeds:
                values = (s.win_rate, s.return_, s.expert_win_rate, s.agreement)
                rows.append(
                    [cell.label, cell.map, s.seed, *map(_number, values), run.t_env]
                    + ["" if run.episodes is None else run.episodes, run.status, run.folder]
                )
    rows.sort(key=lambda row: (report.labels.index(row[0]), report.maps.index(row[1]), row[2]))
    return _csv(header, rows)


def summary_csv(report: Report) -> str:
    """summary.csv: kind, label, versus, map, runs, estimate, ci_low, ci_high, paper_sc2."""
    header = list(SUMMARY_COLUMNS)
    rows = []

    def add(kind: str, label: str, versus: str, m: str, e: Estimate, paper: Any, flag: bool):
        paper_text = "" if paper is None else f"{paper / 100:.3f}"
        values = [_number(e.value), _number(e.low), _number(e.high)]
        rows.append([kind, label, versus, m, e.runs, *values, paper_text, int(flag)])

    for label in report.labels:
        estimates = report.estimates[label]
        for m, estimate in estimates.per_map.items():
            cell = report.cells[label, m]
            add("win_rate", label, "", m, estimate, paper_value(cell), cell.flagged)
        maps = " ".join(estimates.per_map)
        flag = estimates.truncated
        add("aggregate_mean", label, "", maps, estimates.mean, None, flag)
        add("aggregate_iqm", label, "", maps, estimates.iqm, None, flag)
    for (da, base), improvement in report.improvements.items():
        for m, estimate in improvement.per_map.items():
            add("probability_of_improvement", da, base, m, estimate, None, False)
        maps = "overall: " + " ".join(improvement.per_map)
        overall, truncated = improvement.overall, improvement.truncated
        add("probability_of_improvement", da, base, maps, overall, None, truncated)
    return _csv(header, rows)


def _environment(map_name: str) -> str:
    return "toy" if map_name in TOY_MAPS else "smax"


def marl_eval_data(report: Report) -> dict[str, Any]:
    """The marl-eval raw-data dict (see the module docstring), in a fixed key order."""
    data: dict[str, Any] = {}
    order = {key: i for i, key in enumerate(report.cells)}  # by label, then map
    cells = sorted(
        report.cells.items(),
        key=lambda item: (_environment(item[0][1]), report.maps.index(item[0][1]), order[item[0]]),
    )
    for (label, m), cell in cells:
        with_return = all(s.return_ is not None and None not in s.curve_return for s in cell.seeds)
        runs = {}
        for k, s in enumerate(cell.seeds):
            run: dict[str, Any] = {}
            for i, t in enumerate(s.curve_t):
                step: dict[str, Any] = {"step_count": t, "win_rate": [s.curve_win_rate[i]]}
                if with_return:
                    step["return"] = [s.curve_return[i]]
                run[f"step_{i}"] = step
            run["absolute_metrics"] = {"win_rate": [s.win_rate]}
            if with_return:
                run["absolute_metrics"]["return"] = [s.return_]
            runs[f"run_{k}"] = run
        data.setdefault(_environment(m), {}).setdefault(m, {})[label] = runs
    return data


def marl_eval_json(report: Report) -> str:
    return json.dumps(marl_eval_data(report), indent=1) + "\n"
