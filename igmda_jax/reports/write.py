"""RESULTS.md of ``igmda report``, built from a ``cells.Report`` as one string in a fixed order
(labels, then maps, then seeds) with fixed float formats, so the same report gives the same
bytes. The data files (CSV, marl-eval JSON) are in ``reports.exports``.
"""

from __future__ import annotations

from igmda_jax.reports.cells import PAPER_MAPS, Report
from igmda_jax.reports.paper import PAPER_NOTE, PAPER_TABLE1, paper_value
from igmda_jax.reports.runs import FINAL
from igmda_jax.reports.stats import Estimate


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
        mark = "‡" if aggregate_note(report, label) else ""
        for aggregate in (estimates.mean, estimates.iqm):
            row.append(f"{_pct(aggregate.value)} {_interval(aggregate)}{mark}")
        if paper_average:
            papers = [paper_value(report.cells.get((label, m))) for m in PAPER_MAPS]
            alg = report.cells[label, PAPER_MAPS[0]].runs[0].alg if None not in papers else None
            row.append("–" if alg is None else f"{PAPER_TABLE1[alg]['avg']:.1f}")
        rows.append(row)
    return _table(header, rows)


def aggregate_note(report: Report, label: str) -> str:
    """Why a label's aggregate does not use all its seeds ('' when it does)."""
    estimates = report.estimates[label]
    if not estimates.truncated:
        return ""
    counts = ", ".join(f"{m} {len(report.cells[label, m].seeds)}" for m in estimates.per_map)
    return f"the first {estimates.aggregate_runs} seed(s) of each map (seeds: {counts})"


def improvement_table(report: Report) -> list[str]:
    """P(A > B) per map and overall, with intervals."""
    header = ["P(A > B)", *report.maps, "overall"]
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
        "train h",
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
            "?" if run.train_hours is None else f"{run.train_hours:.2f}",
            f"`{run.folder}`",
        ]
        for run in report.runs
    ]
    return _table(header, rows)


def expert_table(report: Report) -> list[str]:
    """-da/-bc cells: the deployed learner's and the expert's final greedy win rates (mean and
    per seed), their difference, and how often their greedy actions agree."""
    header = ["label", "map", "learner %", "expert %", "learner - expert", "agreement %"]
    rows = []
    for cell in report.cells.values():
        experts = [s.expert_win_rate for s in cell.seeds]
        if None in experts:
            continue
        learner = [s.win_rate for s in cell.seeds]
        agreements = [s.agreement for s in cell.seeds]
        rows.append(
            [
                cell.label,
                cell.map,
                _per_seed(learner),
                _per_seed(experts),
                f"{100 * (sum(learner) - sum(experts)) / len(learner):+.1f}",
                "?" if None in agreements else _per_seed(agreements),
            ]
        )
    return _table(header, rows) if rows else []


def _per_seed(values: list[float]) -> str:
    """'53.8 (59.4 50.9 50.9)': the mean over seeds and each seed, in %."""
    mean = sum(values) / len(values)
    return f"{_pct(mean)} ({' '.join(_pct(v) for v in values)})"


def compute_line(report: Report) -> str:
    """Training time and env steps over the report's runs."""
    hours = [run.train_hours for run in report.runs if run.train_hours is not None]
    steps = sum(run.t_env * len(run.seeds) for run in report.runs)
    unknown = len(report.runs) - len(hours)
    return (
        f"Compute: {sum(hours):.1f} h of training over {len(hours)} run(s) (train h: each run's own "
        "clock from its metrics, all its seeds and evaluations, resumes added, time stopped not "
        "counted; runs that shared the machine count each), "
        f"{steps:,} env steps x seeds up to the final values"
        + (f"; {unknown} run(s) without a clock" if unknown else "")
        + "."
    )


def results_markdown(
    report: Report, title: str, command: str, figure: str, sight_figure: str | None = None
) -> str:
    """RESULTS.md: the tables, the figures, the runs, and what the intervals are."""
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
    notes = [(label, aggregate_note(report, label)) for label in report.labels]
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
            "P(A > B): the probability that a seed of A ends with a higher final win rate than a "
            "seed of B (ties count half), per map and averaged over the maps both have; A is an "
            "-da label and B the same without -da or with -bc, or A has a named setting ([set]) "
            "and B is the same label without it.",
        ]
        truncated = [
            f"{da} > {base}" for (da, base), i in report.improvements.items() if i.truncated
        ]
        if truncated:
            lines.append(
                "‡ Overall value from each side's first seeds on every map (the fewest any "
                f"map has): {', '.join(truncated)}."
            )
    experts = expert_table(report)
    if experts:
        lines += [
            "",
            "## Learner and expert",
            "",
            *experts,
            "",
            "-da and -bc runs deploy the learner (local observations); the expert (more "
            "observations) trains it. Final greedy win rates in %, mean over seeds (each seed); "
            "learner - expert in points; agreement: the share of the learner's greedy test steps "
            "where the expert's greedy action is the same, at the last periodic evaluation.",
        ]
    lines += [
        "",
        "## Learning curves",
        "",
        f"![learning curves]({figure})",
        "",
        "Greedy win rate over env steps: median over seeds with the 25-75 % band, each a moving "
        "average of 5 evaluation points (the paper's Fig. 4); -da curves thicker.",
    ]
    if sight_figure is not None:
        lines += [
            "",
            "## Final win rate against sight range",
            "",
            f"![final win rate against sight range]({sight_figure})",
            "",
            "Each label without its `sight <r>` part, at every sight range it was run with: mean "
            "final win rate over seeds with its 95 % interval (the values of Table 1); own: each "
            "unit's own SMAX sight (the paper's full sight). The paper's Fig. 5c.",
        ]
    lines += [
        "",
        "## Runs",
        "",
        *runs_table(report),
        "",
        "Status: final = the final evaluation (final_eval.json); no final eval = trained to t_max, "
        "value from its last periodic evaluation; unfinished = stopped before t_max, value from "
        "its last evaluation. Episodes: per seed in the evaluation the value comes from.",
    ]
    lines.append(compute_line(report))
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
