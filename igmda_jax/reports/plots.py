"""The figure of ``igmda report``: curves.png, the paper's Fig. 4 for our runs. One panel per
map; per label the greedy win rate (%) over env steps, median over seeds with the 25-75 %
band, each smoothed by a moving average of 5 evaluation points (``reports.stats.seed_band``).
A label and its -da variant share a colour; -da curves are thicker. Written with matplotlib's
Agg canvas and no date or software metadata, so the same report gives the same bytes.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from igmda_jax.reports.cells import Cell, Report, da_base
from igmda_jax.reports.stats import seed_band

DA_WIDTH, BASE_WIDTH = 2.6, 1.2
PANEL_WIDTH, PANEL_HEIGHT = 4.2, 3.2
LEGEND_ENTRY_WIDTH = 3.2  # inches per legend column (labels such as "qmix-da [smax own features]")


def aligned_curves(cell: Cell) -> tuple[np.ndarray, np.ndarray] | None:
    """The seeds' curves of a cell on common evaluation points: t [T] (the smallest t_env of
    the seeds at each point) and win rates [seeds, T], T = the fewest points any seed has.
    None when a seed has no curve."""
    length = min(len(s.curve_t) for s in cell.seeds)
    if length == 0:
        return None
    t = np.min([s.curve_t[:length] for s in cell.seeds], axis=0)
    win = np.array([s.curve_win_rate[:length] for s in cell.seeds], np.float64)
    return t, win


def plot_curves(report: Report, path: Path, title: str) -> None:
    """Write curves.png (see the module docstring)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    n_maps = len(report.maps)
    cols = min(3, n_maps)
    rows = math.ceil(n_maps / cols)
    figure = Figure(figsize=(PANEL_WIDTH * cols, PANEL_HEIGHT * rows + 0.8), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    bases = sorted({da_base(label) or label for label in report.labels})
    palette = [f"C{i % 10}" for i in range(len(bases))]
    colour = {label: palette[bases.index(da_base(label) or label)] for label in report.labels}
    handles = {}
    for ax, m in zip(axes, report.maps, strict=False):
        for label in report.labels:
            cell = report.cells.get((label, m))
            curves = None if cell is None else aligned_curves(cell)
            if curves is None:
                continue
            t, win = curves
            low, median, high = seed_band(100.0 * win)
            is_da = da_base(label) is not None
            (line,) = ax.plot(
                t,
                median,
                color=colour[label],
                linewidth=DA_WIDTH if is_da else BASE_WIDTH,
                label=label,
            )
            ax.fill_between(t, low, high, color=colour[label], alpha=0.15, linewidth=0)
            handles.setdefault(label, line)
        ax.set_title(m)
        ax.set_xlabel("env steps")
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.set_ylabel("win rate (%)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    for ax in axes[n_maps:]:
        ax.set_axis_off()
    if handles:
        figure.legend(
            list(handles.values()),
            [handle.get_label() for handle in handles.values()],
            loc="outside lower center",
            ncols=max(1, min(len(handles), round(PANEL_WIDTH * cols / LEGEND_ENTRY_WIDTH))),
            fontsize=8,
            title="median over seeds, 25-75 % band, moving average of 5 evaluations",
            title_fontsize=8,
        )
    figure.suptitle(title)
    figure.savefig(path, dpi=110, metadata={"Software": None})


# ---------------------------------------------------------------------------------- sight
SIGHT_IN_LABEL = re.compile(r" sight \S+")


def sight_families(report: Report) -> dict[tuple[str, str], list[tuple[float | None, str]]]:
    """(family, map) -> [(sight range, label)] sorted by sight (None, the unit's own sight,
    last) for every family seen at two or more sight ranges on a map. A family is a label
    without its ``sight <r>`` part (``qmix-da sight 2`` -> ``qmix-da``); a cell whose runs
    differ in sight range is left out."""
    families: dict[tuple[str, str], dict[float | None, str]] = {}
    for (label, m), cell in report.cells.items():
        sights = {run.sight_range for run in cell.runs}
        if len(sights) == 1:
            family = SIGHT_IN_LABEL.sub("", label)
            families.setdefault((family, m), {})[sights.pop()] = label
    return {
        key: sorted(by_sight.items(), key=lambda item: (item[0] is None, item[0] or 0.0))
        for key, by_sight in families.items()
        if len(by_sight) >= 2
    }


def plot_by_sight(report: Report, path: Path, title: str) -> bool:
    """sight.png (the paper's Fig. 5c): per map, each family's final win rate (%) against
    the sight range, mean over seeds with its 95 % interval; -da lines thicker. Returns False
    (and writes nothing) when no family has two sight ranges."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    families = sight_families(report)
    if not families:
        return False
    maps = [m for m in report.maps if any(key[1] == m for key in families)]
    width = max(PANEL_WIDTH * len(maps), 5.5)
    figure = Figure(figsize=(width, PANEL_HEIGHT + 1.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(maps), squeeze=False).ravel()
    names = sorted({family for family, _ in families})
    bases = sorted({da_base(name) or name for name in names})
    for ax, m in zip(axes, maps, strict=True):
        sights = sorted(
            {s for (_, mm), pairs in families.items() if mm == m for s, _ in pairs},
            key=lambda s: (s is None, s or 0.0),
        )
        for family in names:
            pairs = families.get((family, m))
            if pairs is None:
                continue
            x = [sights.index(s) for s, _ in pairs]
            estimates = [report.estimates[label].per_map[m] for _, label in pairs]
            y = np.array([100 * e.value for e in estimates])
            errors = np.array(
                [[100 * (e.value - e.low), 100 * (e.high - e.value)] for e in estimates]
            )
            ax.errorbar(
                x,
                y,
                yerr=errors.T,
                color=f"C{bases.index(da_base(family) or family) % 10}",
                linewidth=DA_WIDTH if da_base(family) is not None else BASE_WIDTH,
                marker="o",
                capsize=3,
                label=family,
            )
        ax.set_xticks(range(len(sights)), ["own" if s is None else f"{s:g}" for s in sights])
        ax.set_title(m)
        ax.set_xlabel("sight range (own: each unit's SMAX sight)")
        ax.set_ylabel("final win rate (%)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle(f"{title}\nfinal win rate against sight range (mean, 95 % CI)", fontsize=10)
    figure.savefig(path, dpi=110, metadata={"Software": None})
    return True
