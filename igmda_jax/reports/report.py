"""``igmda report DIR... --out OUTDIR``: the paper's Table 1 and Fig. 4 from run folders, with
rliable interval estimates and a marl-eval JSON. Reads result folders only: no JAX, no
training, no checkpoints.

In: each DIR is a run folder (it holds ``config.json``) or a folder searched recursively for
run folders. From a run folder: per seed, the learning curve (``metrics.jsonl``, one row per
evaluation per seed) and the final win rate, from ``final_eval.json`` (the sweep's final
evaluation) when present, else from the last ``metrics.jsonl`` row; such runs are flagged
(status ``unfinished`` when training stopped before ``t_max``, ``no final eval`` when it
reached ``t_max``). ``cell.json``'s ``label`` names the run's row (default: the config's
``alg``); runs with the same label and map pool their seeds. Runs of one label and map whose
seeds overlap (the same seeds trained twice, e.g. two settings of qmix) are told apart by
their folder names: ``qmix [folder]``.

Out, in OUTDIR (byte-identical for the same inputs and options):

    RESULTS.md      Table 1 (final win rate % per label x map, 95 % CIs, best per map in bold,
                    the paper's SC2 numbers beside ours, mean and IQM over maps), P(A > B)
                    per map and overall (A an -da label or one with a named [setting], B
                    the same without), for -da/-bc the learner's and the expert's win
                    rates and their agreement, the figure, every run folder with its seeds,
                    final t_env, episodes, status and training hours (and their sum), and what
                    the intervals are
    curves.png      Fig. 4: win rate over env steps, median over seeds with the 25-75 % band,
                    moving average of 5 evaluations, one panel per map, -da curves thicker
    sight.png       Fig. 5c, when a label is seen at two or more sight ranges (``qmix sight
                    0``, ``qmix sight 2``, ...): final win rate against sight range, with CIs
    finals.csv      one row per label x map x seed: the final value and where it came from
    summary.csv     every estimate with its interval (per map, aggregates, improvements)
    marl_eval.json  instadeepai/marl-eval's raw-data format, for its tools

Cost: the bootstrap loops in Python (rliable): with the default 50,000 resamples (2,000 for
P(X-da > X)) about 5-15 s per label and per -da pair on one core, so a minute or two for 6
labels x 6 maps; ``--reps 2000 --poi-reps 500`` gives a quick look in seconds.

Run folders are read by ``reports.runs``, statistics are in ``reports.stats``, RESULTS.md is
written by ``reports.write`` (the paper's numbers: ``reports.paper``), the data files by
``reports.exports``, the figure by ``reports.plots``.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from igmda_jax.reports.cells import Cell, Report, comparison_bases, label_order, map_order
from igmda_jax.reports.runs import (
    FINAL,
    ReportError,
    Run,
    find_run_folders,
    load_run,
    separate_overlapping,
)
from igmda_jax.reports.stats import (
    IMPROVEMENT_REPS,
    MEAN_REPS,
    improvement_estimates,
    label_estimates,
)

__all__ = ["FINAL", "ReportError", "build_report", "main", "write_report"]


# ---------------------------------------------------------------------------------- report
def parse_relabel(items: Sequence[str]) -> dict[str, str]:
    """``["qmix=qmix sight 0", ...]`` -> ``{"qmix": "qmix sight 0"}``; ReportError if malformed."""
    relabel = {}
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise ReportError(f"--relabel {item!r}: write OLD=NEW, e.g. 'qmix=qmix sight 0'")
        relabel[old.strip()] = new.strip()
    return relabel


def apply_relabel(runs: Sequence[Run], relabel: Mapping[str, str]) -> list[Run]:
    """Runs with their labels renamed by ``relabel``; ReportError naming an OLD no run has (a
    typo would otherwise pass silently)."""
    unused = sorted(set(relabel) - {run.label for run in runs})
    if unused:
        known = ", ".join(sorted({run.label for run in runs}))
        raise ReportError(f"--relabel: no run is labelled {unused[0]!r}; labels: {known}")
    return [dataclasses.replace(run, label=relabel.get(run.label, run.label)) for run in runs]


def build_report(
    dirs: Sequence[str],
    reps: int = MEAN_REPS,
    improvement_reps: int = IMPROVEMENT_REPS,
    relabel: Mapping[str, str] | None = None,
) -> Report:
    """Read every run folder under ``dirs`` and compute the estimates; ``relabel`` renames
    labels before runs are grouped (e.g. table1's ``qmix`` as ``qmix sight 0`` beside a sight
    sweep's ``qmix sight 1``). Raises ReportError."""
    if reps < 1 or improvement_reps < 1:
        raise ReportError(f"--reps and --poi-reps must be >= 1, got {reps}, {improvement_reps}")
    folders = find_run_folders(dirs)
    if not folders:
        raise ReportError(
            f"no run folders (a folder with config.json) in {', '.join(dirs)}; pass folders "
            "made by `igmda train` or `igmda sweep`"
        )
    runs, skipped = [], []
    for path, display in folders:
        try:
            run = load_run(path, display)
        except ReportError:
            raise
        except (KeyError, TypeError, ValueError) as error:
            raise ReportError(
                f"{display}: cannot read its results ({type(error).__name__}: {error}); is it a "
                "run folder of this version?"
            ) from None
        if run is None:
            skipped.append(display)
        else:
            runs.append(run)
    if not runs:
        raise ReportError(
            f"no evaluations yet in the {len(folders)} run folder(s) found in {', '.join(dirs)} "
            "(no metrics.jsonl rows, no final_eval.json)"
        )
    runs = apply_relabel(runs, relabel or {})
    runs = sorted(
        separate_overlapping(runs), key=lambda r: (label_order(r.label), map_order(r.map), r.folder)
    )
    cells: dict[tuple[str, str], Cell] = {}
    for run in runs:
        key = (run.label, run.map)
        old = cells.get(key, Cell(run.label, run.map, (), ()))
        seeds = tuple(sorted((*old.seeds, *run.seeds), key=lambda s: s.seed))
        cells[key] = Cell(run.label, run.map, seeds, (*old.runs, run))
    labels = tuple(sorted({label for label, _ in cells}, key=label_order))
    maps = tuple(sorted({m for _, m in cells}, key=map_order))
    cells = {(label, m): cells[label, m] for label in labels for m in maps if (label, m) in cells}
    scores = {
        label: {m: cells[label, m].scores for m in maps if (label, m) in cells} for label in labels
    }
    estimates = {label: label_estimates(scores[label], reps) for label in labels}
    improvements = {}
    for label in labels:
        for base in comparison_bases(label):
            if base in scores and any(m in scores[base] for m in scores[label]):
                improvements[label, base] = improvement_estimates(
                    scores[label], scores[base], improvement_reps
                )
    return Report(
        runs=tuple(runs),
        skipped=tuple(skipped),
        labels=labels,
        maps=maps,
        cells=cells,
        estimates=estimates,
        improvements=improvements,
        reps=reps,
        improvement_reps=improvement_reps,
    )


def write_report(
    dirs: Sequence[str],
    out_dir: str | Path,
    *,
    reps: int = MEAN_REPS,
    improvement_reps: int = IMPROVEMENT_REPS,
    title: str = "Final win rates and learning curves",
    command: str | None = None,
    relabel: Mapping[str, str] | None = None,
) -> Report:
    """Build the report of ``dirs`` and write its files into ``out_dir`` (created if needed).
    ``command``: the command line quoted in RESULTS.md (default: the equivalent ``igmda
    report`` call)."""
    from igmda_jax.reports.exports import finals_csv, marl_eval_json, summary_csv
    from igmda_jax.reports.plots import plot_by_sight, plot_curves
    from igmda_jax.reports.write import results_markdown

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out_dir} exists and is not a folder")
    report = build_report(dirs, reps, improvement_reps, relabel)
    out.mkdir(parents=True, exist_ok=True)
    if command is None:
        command = shlex.join(
            ["igmda", "report", *dirs, "--out", str(out_dir), "--reps", str(reps)]
            + (
                ["--poi-reps", str(improvement_reps)]
                if improvement_reps != IMPROVEMENT_REPS
                else []
            )
            + ["--title", title]
            + [f"--relabel={old}={new}" for old, new in (relabel or {}).items()]
        )
    plot_curves(report, out / "curves.png", title)
    by_sight = plot_by_sight(report, out / SIGHT_FIGURE, title)
    if not by_sight:
        (out / SIGHT_FIGURE).unlink(missing_ok=True)  # a stale one from other inputs
    markdown = results_markdown(
        report, title, command, "curves.png", SIGHT_FIGURE if by_sight else None
    )
    (out / "RESULTS.md").write_text(markdown)
    (out / "finals.csv").write_text(finals_csv(report))
    (out / "summary.csv").write_text(summary_csv(report))
    (out / "marl_eval.json").write_text(marl_eval_json(report))
    return report


OUTPUTS = ("RESULTS.md", "curves.png", "finals.csv", "summary.csv", "marl_eval.json")
SIGHT_FIGURE = "sight.png"  # only when a label is seen at two or more sight ranges


class _OneLineParser(argparse.ArgumentParser):
    """argparse that refuses bad input with one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(argv: Sequence[str]) -> int:
    """``igmda report DIR [DIR ...] --out OUTDIR [--reps N] [--poi-reps N] [--title T]``.
    Returns the exit code: 0, or 2 with one line on stderr when the input cannot be used."""
    parser = _OneLineParser(
        prog="igmda report",
        description="Table 1 (final win rates with 95 %% bootstrap CIs, P(X-da > X)) and Fig. 4 "
        "(learning curves) of run folders, plus CSV and marl-eval JSON. Reads result folders "
        "only.",
    )
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="run folders or folders of them")
    parser.add_argument("--out", required=True, metavar="OUTDIR", help="where to write")
    parser.add_argument(
        "--reps", type=int, default=MEAN_REPS, help="bootstrap resamples for means and IQM"
    )
    parser.add_argument(
        "--poi-reps",
        type=int,
        default=IMPROVEMENT_REPS,
        help="bootstrap resamples for the probability of improvement",
    )
    parser.add_argument("--title", default="Final win rates and learning curves")
    parser.add_argument(
        "--relabel",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="rename a label before grouping (repeatable), e.g. 'qmix=qmix sight 0'",
    )
    args = parser.parse_args(list(argv))
    try:
        report = write_report(
            args.dirs,
            args.out,
            reps=args.reps,
            improvement_reps=args.poi_reps,
            title=args.title,
            relabel=parse_relabel(args.relabel),
        )
    except (ReportError, OSError) as error:
        print(f"igmda report: {error}", file=sys.stderr)
        return 2
    flagged = sum(run.status != FINAL for run in report.runs)
    print(
        f"{len(report.runs)} run folder(s), {len(report.labels)} label(s) x {len(report.maps)} "
        f"map(s){f', {flagged} without a final evaluation' if flagged else ''}: wrote "
        + ", ".join(str(Path(args.out) / name) for name in OUTPUTS)
    )
    return 0
