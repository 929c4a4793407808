"""What ``igmda imitate`` reports, from its output folder alone: per-sight summaries
(summary.json/.csv), RESULTS.md, and the figures values.png (the paper's Fig. 3b) and curves.png
(Fig. 3a). Pure reporting: nothing here trains or reads a checkpoint, so ``igmda imitate --report
OUT`` redraws every table and figure of OUT from its JSON files (the value distributions are
computed by :mod:`igmda_jax.tools.imitation_values`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from igmda_jax.core.config import Config


class ImitationReportError(ValueError):
    """An imitation output folder cannot be reported (the message says why)."""


def sight_label(sight_range: float | None) -> str:
    """Folder label of a sight range: 0.0 -> '0', 1.5 -> '1.5', None -> 'none'."""
    return "none" if sight_range is None else f"{sight_range:g}"


def sight_folder(out_dir: Path, sight_range: float | None) -> Path:
    """The run folder of one sight range's learners in an imitation output folder."""
    return Path(out_dir) / f"sight_{sight_label(sight_range)}"


def read_metrics(folder: Path) -> list[dict[str, Any]]:
    """The rows of a run folder's metrics.jsonl."""
    path = folder / "metrics.jsonl"
    if not path.is_file():
        raise ImitationReportError(f"{path} is missing")
    return [json.loads(line) for line in path.open() if line.strip()]


# ---------------------------------------------------------------------------------- outputs
def _mean(values: Iterable[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def sight_summary(
    config: Config,
    rows: list[dict[str, Any]],
    folder: Path,
    final_eval: Mapping[str, Any],
) -> dict[str, Any]:
    """One sight range's summary: learner and expert greedy win rates of ``final_eval`` (the
    sight's final_eval.json), imitation accuracy and agreement of the last test evaluation
    (``rows``' last row per seed), per seed and their means."""
    final = rows[-config.seeds :]
    if [row["seed"] for row in final] != final_eval["seeds"]:
        raise ImitationReportError(
            f"{folder}: final_eval.json's seeds {final_eval['seeds']} are not the last "
            f"evaluation's {[row['seed'] for row in final]}"
        )
    per_seed = [
        {
            "seed": row["seed"],
            "t_env": row["t_env"],
            "learner_win_rate": final_eval["win_rate_per_seed"][k],
            "expert_win_rate": final_eval["expert_win_rate_per_seed"][k],
            "imitation_accuracy": row.get("imitation_accuracy"),
            "imitation_loss": row.get("imitation_loss"),
            "agreement": row.get("agreement"),
            "updates": row.get("train_updates"),
        }
        for k, row in enumerate(final)
    ]
    means = {
        key: _mean(seed[key] for seed in per_seed)
        for key in (
            "learner_win_rate",
            "expert_win_rate",
            "imitation_accuracy",
            "imitation_loss",
            "agreement",
        )
    }
    return {
        "sight_range": config.sight_range,
        "run_dir": str(folder),
        "alg": config.alg,
        "t_env": min(seed["t_env"] for seed in per_seed),
        "final_eval_episodes": final_eval["episodes_per_seed"],
        **means,
        "per_seed": per_seed,
    }


CSV_COLUMNS = (
    "sight_range",
    "seed",
    "t_env",
    "learner_win_rate",
    "expert_win_rate",
    "final_eval_episodes",
    "imitation_accuracy",
    "imitation_loss",
    "agreement",
)


def write_summary_csv(path: Path, sights: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for sight in sights:
            label = sight_label(sight["sight_range"])
            episodes = sight.get("final_eval_episodes")
            for seed in sight["per_seed"]:
                writer.writerow({**seed, "sight_range": label, "final_eval_episodes": episodes})
            writer.writerow({**sight, "sight_range": label, "seed": "mean"})


def _figure(rows: int, cols: int, width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * cols, height * rows), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, cols, squeeze=False)


def plot_values(values: list[dict[str, Any]], path: Path) -> None:
    """Fig. 3b-like: per sight range, box plots of the expert's and the learner's action
    values per action, and the most common state type's expert greedy frequency (the
    imitation target) beside the learner's mean output."""
    figure, axes = _figure(len(values), 3, 4.6, 3.2)
    for row, entry in enumerate(values):
        label = f"sight {sight_label(entry['sight_range'])}"
        names = entry["action_names"]
        for col, network in enumerate(("expert", "learner")):
            ax = axes[row][col]
            stats = []
            for a, name in enumerate(names):
                per = entry["per_action"][a][f"{network}_q"]
                if per["n"] == 0:  # never available
                    continue
                q = per["quantiles"]
                stats.append(
                    {
                        "label": name,
                        "whislo": q["p5"],
                        "q1": q["p25"],
                        "med": q["p50"],
                        "q3": q["p75"],
                        "whishi": q["p95"],
                        "mean": per["mean"],
                        "fliers": [],
                    }
                )
            if stats:
                ax.bxp(stats, showmeans=True)
            ax.set_title(f"{label}: {network} action values")
            ax.tick_params(axis="x", labelrotation=60, labelsize=7)
        ax = axes[row][2]
        if entry["state_types"]:
            kind = entry["state_types"][0]
            x = np.arange(entry["n_actions"])
            learner_mean = [v if v is not None else 0.0 for v in kind["learner_q_mean"]]
            ax.bar(x - 0.2, kind["expert_greedy_freq"], 0.4, label="expert greedy freq")
            ax.bar(x + 0.2, learner_mean, 0.4, label="learner mean output")
            ax.set_xticks(x, names, rotation=60, fontsize=7)
            ax.set_title(f"{label}: most common state type ({kind['fraction']:.0%})")
            ax.legend(fontsize=7)
    figure.savefig(path, dpi=110)


def plot_curves(sights: list[dict[str, Any]], out_dir: Path) -> None:
    """Fig. 3a-like, to ``out_dir``/curves.png: learner greedy win rate (seed mean) over env
    steps per sight range, from ``out_dir``/sight_<s>/metrics.jsonl, and the frozen expert's
    greedy win rate as the reference."""
    figure, axes = _figure(1, 1, 6.0, 4.0)
    ax = axes[0][0]
    expert_rate = None
    for sight in sights:
        rows = read_metrics(sight_folder(out_dir, sight["sight_range"]))
        evals = sorted({row["eval"] for row in rows})
        t = [np.mean([r["t_env"] for r in rows if r["eval"] == e]) for e in evals]
        win = [np.mean([r["win_rate"] for r in rows if r["eval"] == e]) for e in evals]
        ax.plot(t, win, marker="o", ms=3, label=f"sight view {sight_label(sight['sight_range'])}")
        expert_rate = sight["expert_win_rate"] if expert_rate is None else expert_rate
    if expert_rate is not None:
        ax.axhline(expert_rate, color="k", linestyle="--", label="expert (target_mean)")
    ax.set_xlabel("env steps")
    ax.set_ylabel("greedy win rate")
    ax.set_ylim(-0.02, 1.02)
    ax.legend()
    figure.savefig(out_dir / "curves.png", dpi=110)


def format_table(summary: Mapping[str, Any]) -> str:
    """The final table ``igmda imitate`` prints: one line per sight range (seed means)."""
    fmt = lambda v: "   -" if v is None else f"{v:.3f}"  # noqa: E731
    expert = summary["expert"]
    view = (
        f"sees full_obs at sight {sight_label(expert['view_sight_range'])}"
        if expert["view"] == "full_obs"
        else f"sees {expert['view']}"
    )
    lines = [
        f"expert {expert['alg']} on {expert['map']} ({view}, {expert['seeds']} seed(s)); "
        f"learners {summary['learner_alg']}, t_max {summary['t_max']}; win rates "
        f"{_final_eval_words(summary)}",
        f"{'sight':>6} {'seeds':>5} {'learner win':>11} {'expert win':>10} "
        f"{'imit. acc':>9} {'agreement':>9}  run folder",
    ]
    for s in summary["sight_ranges"]:
        lines.append(
            f"{sight_label(s['sight_range']):>6} {len(s['per_seed']):>5} "
            f"{fmt(s['learner_win_rate']):>11} {fmt(s['expert_win_rate']):>10} "
            f"{fmt(s['imitation_accuracy']):>9} {fmt(s['agreement']):>9}  {s['run_dir']}"
        )
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _per_seed(sight: Mapping[str, Any], key: str) -> str:
    """Mean over seeds (each seed), in %."""
    seeds = " ".join(_percent(seed[key]) for seed in sight["per_seed"])
    return f"{_percent(sight[key])} ({seeds})"


def _final_eval_words(summary: Mapping[str, Any]) -> str:
    """How the win rates were measured, e.g. 'greedy, final evaluation of 320 episodes per
    seed' (a summary from before final evaluations: 'greedy, at the last test evaluation')."""
    episodes = sorted({s.get("final_eval_episodes") for s in summary["sight_ranges"]}, key=str)
    if episodes == [None]:
        return "greedy, at the last test evaluation"
    counts = " / ".join("-" if n is None else str(n) for n in episodes)
    return f"greedy, final evaluation of {counts} episodes per seed"


def results_markdown(summary: Mapping[str, Any]) -> str:
    """OUT/RESULTS.md: the expert, then per sight range the learners' and the expert's final
    greedy win rates, imitation accuracy and agreement (mean over seeds, each seed), and the
    figures."""
    expert = summary["expert"]
    view = (
        f"full_obs at sight {sight_label(expert['view_sight_range'])}"
        if expert["view"] == "full_obs"
        else expert["view"]
    )
    lines = [
        f"# Imitation of a frozen {expert['alg']} expert on {expert['map']}",
        "",
        f"Expert: `{expert['run_dir']}` ({expert['seeds']} seeds, checkpoint at "
        f"{expert['checkpoint_step']:,} env steps), seeing {view}. Learners: "
        f"`{summary['learner_alg']}` with TD weight 0 (imitation only, the expert and mixer "
        f"frozen), {summary['t_max']:,} env steps per seed; learner seed k imitates expert seed k.",
        "",
        "| learner sight | learner win % | expert win % | learner - expert | "
        "imitation accuracy % | agreement % |",
        "|---|---|---|---|---|---|",
    ]
    for sight in summary["sight_ranges"]:
        learner, expert_rate = sight["learner_win_rate"], sight["expert_win_rate"]
        gap = (
            "-"
            if learner is None or expert_rate is None
            else f"{100 * (learner - expert_rate):+.1f}"
        )
        lines.append(
            f"| {sight_label(sight['sight_range'])} | {_per_seed(sight, 'learner_win_rate')} "
            f"| {_per_seed(sight, 'expert_win_rate')} | {gap} "
            f"| {_per_seed(sight, 'imitation_accuracy')} | {_per_seed(sight, 'agreement')} |"
        )
    lines += [
        "",
        f"Win rates: {_final_eval_words(summary)}, mean over seeds (each seed). Imitation "
        "accuracy: the share of training decisions where the learner's greedy action is the "
        "expert's; agreement: the same at test time, with the learner acting (both at the last "
        "test evaluation). Sight `none`: each unit type's own SMAX sight.",
        "",
        "![learner win rate over env steps per sight range](curves.png)",
        "",
        "![per-action values of expert and learner per sight range](values.png)",
        "",
        "Per-action value distributions: values.json. Regenerate this folder's tables and "
        "figures from its files: `igmda imitate --report FOLDER`.",
    ]
    return "\n".join(lines) + "\n"


def write_report(out_dir: Path, summary: Mapping[str, Any], values: list[dict[str, Any]]) -> None:
    """Every table and figure of an imitation output folder from its summary and value
    distributions: summary.csv, RESULTS.md, values.png, curves.png."""
    out_dir = Path(out_dir)
    write_summary_csv(out_dir / "summary.csv", summary["sight_ranges"])
    (out_dir / "RESULTS.md").write_text(results_markdown(summary))
    plot_values(values, out_dir / "values.png")
    plot_curves(summary["sight_ranges"], out_dir)


def report_folder(out_dir: str | Path) -> dict[str, Any]:
    """Redraw an imitation output folder (``igmda imitate --out``, or a copy of its JSON files
    and the sight folders' metrics.jsonl) from its files alone; returns its summary."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ImitationReportError(f"{out_dir} is not a folder")
    files = {}
    for name in ("summary.json", "values.json"):
        path = out_dir / name
        if not path.is_file():
            raise ImitationReportError(f"{out_dir} holds no {name}: not an igmda imitate output")
        try:
            files[name] = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ImitationReportError(f"{path} is not JSON: {error}") from None
    summary, values = files["summary.json"], files["values.json"]
    if [v["sight_range"] for v in values] != [s["sight_range"] for s in summary["sight_ranges"]]:
        raise ImitationReportError(f"{out_dir}: values.json and summary.json list other sights")
    write_report(out_dir, summary, values)
    return summary
