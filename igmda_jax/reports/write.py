"""The text files of ``igmda report``: RESULTS.md, finals.csv, summary.csv and marl_eval.json,
each returned as a string built from a ``report.Report`` in a fixed order (labels, then maps,
then seeds) with fixed float formats, so the same report gives the same bytes.

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

from igmda_jax.reports.cells import PAPER_MAPS, TOY_MAPS, Cell, Report
from igmda_jax.reports.runs import FINAL
from igmda_jax.reports.stats import Estimate

# The paper's Table 1 (REFERENCE.md section 1): StarCraft II SMAC, sight range 0, win rate %,
# on PAPER_MAPS in order, then the paper's average over them.
PAPER_ROWS: dict[str, tuple[float, ...]] = {
    "qmix": (90.2, 36.4, 26.2, 98.3, 1.9, 33.9, 47.8),
    "qmix-da": (93.3, 50.6, 55.4, 99.2, 43.9, 70.8, 68.9),
    "qplex": (87.0, 5.0, 0.0, 98.7, 18.9, 36.2, 41.0),
    "qplex-da": (88.3, 38.9, 55.4, 99.6, 31.6, 64.8, 63.1),
    "dmix": (76.2, 58.7, 0.0, 99.4, 3.3, 64.7, 50.4),
    "dmix-da": (91.7, 59.0, 46.2, 99.8, 40.6, 64.4, 67.0),
}
PAPER_TABLE1 = {
    alg: dict(zip((*PAPER_MAPS, "avg"), row, strict=True)) for alg, row in PAPER_ROWS.items()
}
PAPER_NOTE = (
    "the paper's Table 1, **theirs**: StarCraft II SMAC (another simulator than our SMAX), sight "
    "range 0; shown for their algorithms and maps, beside our runs at sight range 0"
)


def paper_value(cell: Cell | None) -> float | None:
    """The paper's number for a cell: its algorithm and map are in the paper's Table 1 and all
    its runs are at sight range 0; else None."""
    if cell is None:
        return None
    algs = {run.alg for run in cell.runs}
    if len(algs) != 1 or any(run.sight_range != 0.0 for run in cell.runs):
        return None
    return PAPER_TABLE1.get(algs.pop(), {}).get(cell.map)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _interval(estimate: Estimate, scale: float = 100.0, digits: int = 1) -> str:
    return f"[{scale * estimate.low:.{digits}f}, {scale * estimate.high:.{digits}f}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _status(status: str) -> str:
    return status if status == FINAL else f"**{status}**"


def _sight(value: float | None) -> str:
    return "unit's own" if value is None else f"{value:g}"


def table1(report: Report) -> list[str]:
    """Table 1 rows: per map ours (bold: best mean on the map) and the paper's, aggregates."""
    paper_maps = {
        m
        for m in report.maps
        if any(paper_value(c) is not None for c in report.cells.values() if c.map == m)
    }
    best = {  # at display precision: ties are all bold
        m: _pct(max(c.scores.mean() for c in report.cells.values() if c.map == m))
        for m in report.maps
    }
    header = ["label"]
    for m in report.maps:
        header += [m] + ([f"{m} SC2 paper†"] if m in paper_maps else [])
    header += ["mean over maps", "IQM"]
    paper_average = set(PAPER_MAPS) == set(report.maps)  # the paper averages over these six
    if paper_average:
        header.append("avg SC2 paper†")
    rows = []
    for label in report.labels:
        row = [label]
        for m in report.maps:
            cell = report.cells.get((label, m))
            if cell is None:
                row.append("–")
            else:
                estimate = report.estimates[label].per_map[m]
                value = _pct(estimate.value)
                value = f"**{value}**" if value == best[m] else value
                row.append(f"{value} {_interval(estimate)}{'*' if cell.flagged else ''}")
            if m in paper_maps:
                paper = paper_value(cell)
                row.append("–" if paper is None else f"{paper:.1f}")
        estimates = report.estimates[label]
        mark = "‡" if _aggregate_note(report, label) else ""
        for aggregate in (estimates.mean, estimates.iqm):
            row.append(f"{_pct(aggregate.value)} {_interval(aggregate)}{mark}")
        if paper_average:
            papers = [paper_value(report.cells.get((label, m))) for m in PAPER_MAPS]
            alg = report.cells[label, PAPER_MAPS[0]].runs[0].alg if None not in papers else None
            row.append("–" if alg is None else f"{PAPER_TABLE1[alg]['avg']:.1f}")
        rows.append(row)
    return _table(header, rows)


def _aggregate_note(report: Report, label: str) -> str:
    """Why a label's aggregate does not use all its seeds ('' when it does)."""
    estimates = report.estimates[label]
    if not estimates.truncated:
        return ""
    counts = ", ".join(f"{m} {len(report.cells[label, m].seeds)}" for m in estimates.per_map)
    return f"the first {estimates.aggregate_runs} seed(s) of each map (seeds: {counts})"


def improvement_table(report: Report) -> list[str]:
    """P(X-da > X) per map and overall, with intervals."""
    header = ["P(X-da > X)", *report.maps, "overall"]
    rows = []
    for (da, base), improvement in report.improvements.items():
        row = [f"{da} > {base}"]
        for m in report.maps:
            estimate = improvement.per_map.get(m)
            row.append(
                "–" if estimate is None else f"{estimate.value:.2f} {_interval(estimate, 1.0, 2)}"
            )
        overall = improvement.overall
        mark = "‡" if improvement.truncated else ""
        row.append(f"{overall.value:.2f} {_interval(overall, 1.0, 2)}{mark}")
        rows.append(row)
    return _table(header, rows)


def runs_table(report: Report) -> list[str]:
    header = [
        "label",
        "map",
        "alg",
        "sight",
        "seeds",
        "final t_env",
        "episodes",
        "status",
        "folder",
    ]
    rows = [
        [
            run.label,
            run.map,
            run.alg,
            _sight(run.sight_range),
            " ".join(str(s.seed) for s in run.seeds),
            f"{run.t_env} / {run.t_max}",
            "?" if run.episodes is None else str(run.episodes),
            _status(run.status),
            f"`{run.folder}`",
        ]
        for run in report.runs
    ]
    return _table(header, rows)


def results_markdown(report: Report, title: str, command: str, figure: str) -> str:
    """RESULTS.md: the tables, the figure, the runs, and what the intervals are."""
    flagged = [run for run in report.runs if run.status != FINAL]
    lines = [
        f"# {title}",
        "",
        "Made by (rerun to redraw every file; the same inputs give the same bytes):",
        "",
        "```",
        command,
        "```",
        "",
        f"{len(report.runs)} run folder(s): {len(report.labels)} label(s) x "
        f"{len(report.maps)} map(s). Final greedy win rate in %: mean over seeds of each "
        "seed's final evaluation, with its 95 % confidence interval [low, high] (below).",
        "",
        "## Table 1: final win rate (%)",
        "",
        *table1(report),
        "",
        "Bold: the best mean on the map. † " + PAPER_NOTE + ".",
    ]
    if any(c.flagged for c in report.cells.values()):
        lines.append(
            "\\* Includes runs without a final evaluation: their last periodic evaluation "
            "stands in (see Runs)."
        )
    if len(report.cells) < len(report.labels) * len(report.maps):
        lines.append(
            "Mean over maps and IQM cover the maps a row has (– = no run): rows with different "
            "maps do not compare."
        )
    notes = [(label, _aggregate_note(report, label)) for label in report.labels]
    if any(note for _, note in notes):
        lines.append(
            "‡ Seed counts differ across maps; the aggregate uses "
            + "; ".join(f"{label}: {n}" for label, n in notes if n)
            + "."
        )
    if report.improvements:
        lines += [
            "",
            "## Probability of improvement",
            "",
            *improvement_table(report),
            "",
            "P(X-da > X): the probability that a seed of X-da ends with a higher final win rate "
            "than a seed of X (ties count half), per map and averaged over the maps both have.",
        ]
        truncated = [
            f"{da} > {base}" for (da, base), i in report.improvements.items() if i.truncated
        ]
        if truncated:
            lines.append(
                "‡ Overall value from each side's first seeds on every map (the fewest any "
                f"map has): {', '.join(truncated)}."
            )
    lines += [
        "",
        "## Learning curves",
        "",
        f"![learning curves]({figure})",
        "",
        "Greedy win rate over env steps: median over seeds with the 25-75 % band, each a moving "
        "average of 5 evaluation points (the paper's Fig. 4); -da curves thicker.",
        "",
        "## Runs",
        "",
        *runs_table(report),
        "",
        "Status: final = the final evaluation (final_eval.json); no final eval = trained to t_max, "
        "value from its last periodic evaluation; unfinished = stopped before t_max, value from "
        "its last evaluation. Episodes: per seed in the evaluation the value comes from.",
    ]
    if flagged:
        lines.append(f"**{len(flagged)} of {len(report.runs)} run(s) without a final evaluation.**")
    if report.skipped:
        lines.append(
            "No evaluation yet (left out): " + ", ".join(f"`{s}`" for s in report.skipped) + "."
        )
    lines += [
        "",
        "## What the intervals are",
        "",
        "95 % stratified bootstrap confidence intervals, percentile method (Agarwal et al. "
        "2021, the `rliable` library; marl-eval's protocol): seeds are resampled with "
        "replacement within each map, the statistic recomputed, and the 2.5 and 97.5 "
        f"percentiles taken; {report.reps} resamples for means and IQM, "
        f"{report.improvement_reps} for the probability of improvement; fixed random state. "
        "They measure the uncertainty from the finite number of seeds (and evaluation "
        "episodes) only, for these maps and settings. Mean over maps: mean of the per-map means; "
        "IQM: mean of the middle 50 % of all seed x map final values. With few seeds an "
        "interval is narrow but unreliable (one seed: a point).",
        "",
        "## Files",
        "",
        "- `finals.csv`: one row per label x map x seed (final value, its source and status).",
        "- `summary.csv`: every estimate above with its interval (win rates as fractions).",
        "- `marl_eval.json`: instadeepai/marl-eval's raw-data format (env `smax`, task = map, "
        "algorithm = label, `run_k` = the k-th seed in seed order, `step_i` = the i-th "
        "evaluation, `absolute_metrics` = the final value). marl-eval needs the same runs and "
        "evaluation steps everywhere; check with its DiagnoseData when they differ.",
        "",
    ]
    return "\n".join(lines)


FINALS_COLUMNS = (
    "label",
    "map",
    "seed",
    "win_rate",
    "return",
    "expert_win_rate",
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
                values = (s.win_rate, s.return_, s.expert_win_rate)
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
        flag = bool(_aggregate_note(report, label))
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
