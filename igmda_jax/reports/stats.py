"""The statistics of ``igmda report``: interval estimates of final win rates (rliable) and the
learning-curve summaries of the paper's Fig. 4. Pure functions of arrays; nothing here reads
or writes files.

Interval estimates follow Agarwal et al. (2021), "Deep RL at the edge of the statistical
precipice", through their library ``rliable``: a score matrix [runs, tasks] (runs = seeds,
tasks = maps) is resampled by the *stratified* bootstrap (runs drawn with replacement within
each task, ``reps`` times), the statistic is recomputed on every resample, and the 95 %
interval is the 2.5 and 97.5 percentiles of those values (the percentile method).

    mean  = mean over tasks of the mean over runs                (rliable aggregate_mean)
    IQM   = mean of the middle 50 % of all runs x tasks scores   (rliable aggregate_iqm)
    P(X > Y) on a task = P(x > y) + P(x = y) / 2, x and y one run of each (Mann-Whitney U / nm);
    overall = its mean over tasks                                (rliable probability_of_improvement)

Learning curves (Fig. 4): per evaluation point the 25th, 50th and 75th percentiles over seeds,
each then smoothed by a trailing moving average of 5 evaluation points.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

BOOTSTRAP_SEED = 0  # NumPy's global generator is seeded with this for every bootstrap
MEAN_REPS = 50_000  # marl-eval / rliable defaults (REFERENCE.md section 7)
IMPROVEMENT_REPS = 2_000
SMOOTHING_WINDOW = 5  # the paper's Fig. 4
BAND = (25.0, 50.0, 75.0)


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A point estimate, its 95 % bootstrap interval [low, high], and the runs behind it."""

    value: float
    low: float
    high: float
    runs: int


@contextlib.contextmanager
def _seeded_global_numpy(seed: int) -> Iterator[None]:
    """rliable's stratified bootstrap draws its indices from ``np.random`` (the global
    generator), not from the random state it is given: seed it for the call, restore it after."""
    saved = np.random.get_state()  # noqa: NPY002  (the legacy global generator is the point)
    np.random.seed(seed)  # noqa: NPY002
    try:
        yield
    finally:
        np.random.set_state(saved)  # noqa: NPY002


def bootstrap(
    scores: np.ndarray | Sequence[np.ndarray],
    statistic: Callable[..., np.ndarray],
    reps: int,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """Point estimates [k] and 95 % percentile intervals [2, k] (rows: low, high) of
    ``statistic`` (a [runs, tasks] matrix, or one per argument, -> [k]) by rliable's stratified
    bootstrap. ``scores``: one [runs, tasks] matrix, or a list of such (each resampled
    independently; their run counts may differ). Deterministic for a given ``seed``."""
    from rliable import library

    with _seeded_global_numpy(seed):
        points, intervals = library.get_interval_estimates(
            {"x": scores}, statistic, reps=reps, confidence_interval_size=0.95
        )
    return np.atleast_1d(np.asarray(points["x"], np.float64)), np.asarray(intervals["x"])


def _aggregates(scores: np.ndarray) -> np.ndarray:
    """[runs, tasks] -> [tasks + 2]: per-task means, then the aggregate mean and IQM."""
    from rliable import metrics

    return np.concatenate(
        [scores.mean(axis=0), [metrics.aggregate_mean(scores), metrics.aggregate_iqm(scores)]]
    )


def _task_means(scores: np.ndarray) -> np.ndarray:
    return scores.mean(axis=0)


@dataclasses.dataclass(frozen=True)
class LabelEstimates:
    """One label's final win rates: per map (mean over seeds), and over maps (mean, IQM).
    ``aggregate_runs`` seeds per map went into the aggregates (the fewest any map has)."""

    per_map: dict[str, Estimate]
    mean: Estimate
    iqm: Estimate
    aggregate_runs: int
    truncated: bool  # some maps had more seeds than aggregate_runs; only their first were used


def label_estimates(scores: Mapping[str, np.ndarray], reps: int) -> LabelEstimates:
    """Interval estimates of one label. ``scores``: map -> [runs] final scores, sorted by seed.

    rliable's matrix needs the same run count on every map: the aggregates use each map's
    first ``min(runs)`` seeds (``truncated`` says when that dropped any); a map with more
    seeds gets its own per-map interval from all of them."""
    maps = list(scores)
    counts = {m: len(scores[m]) for m in maps}
    if not maps or min(counts.values()) < 1:
        raise ValueError("label_estimates needs at least one map with at least one run")
    fewest = min(counts.values())
    matrix = np.stack([np.asarray(scores[m][:fewest], np.float64) for m in maps], axis=1)
    points, intervals = bootstrap(matrix, _aggregates, reps)
    per_map = {
        m: Estimate(float(points[i]), float(intervals[0, i]), float(intervals[1, i]), fewest)
        for i, m in enumerate(maps)
        if counts[m] == fewest
    }
    for count in sorted(set(counts.values()) - {fewest}):
        group = [m for m in maps if counts[m] == count]
        block = np.stack([np.asarray(scores[m], np.float64) for m in group], axis=1)
        group_points, group_intervals = bootstrap(block, _task_means, reps)
        for i, m in enumerate(group):
            per_map[m] = Estimate(
                float(group_points[i]),
                float(group_intervals[0, i]),
                float(group_intervals[1, i]),
                count,
            )
    k = len(maps)
    mean = Estimate(float(points[k]), float(intervals[0, k]), float(intervals[1, k]), fewest)
    iqm = Estimate(
        float(points[k + 1]), float(intervals[0, k + 1]), float(intervals[1, k + 1]), fewest
    )
    return LabelEstimates(
        {m: per_map[m] for m in maps}, mean, iqm, fewest, fewest != max(counts.values())
    )


def _improvements(scores_x: np.ndarray, scores_y: np.ndarray) -> np.ndarray:
    """[runs_x, tasks], [runs_y, tasks] -> [tasks + 1]: P(X > Y) per task, then the mean."""
    from rliable import metrics

    per_task = [
        metrics.probability_of_improvement(scores_x[:, [t]], scores_y[:, [t]])
        for t in range(scores_x.shape[1])
    ]
    return np.array([*per_task, np.mean(per_task)])


@dataclasses.dataclass(frozen=True)
class Improvement:
    """P(X > Y) per map and over maps. ``truncated``: some map had more seeds (of X or of Y)
    than the overall value used (each side's fewest over the common maps)."""

    per_map: dict[str, Estimate]
    overall: Estimate
    truncated: bool


def improvement_estimates(
    scores_x: Mapping[str, np.ndarray], scores_y: Mapping[str, np.ndarray], reps: int
) -> Improvement:
    """Probability that X beats Y, per map and over the maps both have, with intervals (runs
    of X and of Y resampled independently). ``scores_x``, ``scores_y``: map -> [runs] final
    scores, sorted by seed. The overall value uses each side's first ``min(runs)`` seeds on
    every common map; per-map values use all seeds (one joint bootstrap gives the maps whose
    counts are those minima, a map with more seeds has its own). Estimate.runs counts X's
    seeds. Raises ValueError when X and Y share no map."""
    maps = [m for m in scores_x if m in scores_y]
    if not maps:
        raise ValueError("no map in common")
    fewest_x = min(len(scores_x[m]) for m in maps)
    fewest_y = min(len(scores_y[m]) for m in maps)
    x = np.stack([np.asarray(scores_x[m][:fewest_x], np.float64) for m in maps], axis=1)
    y = np.stack([np.asarray(scores_y[m][:fewest_y], np.float64) for m in maps], axis=1)
    points, intervals = bootstrap([x, y], _improvements, reps)
    per_map = {}
    for i, m in enumerate(maps):
        map_x = np.asarray(scores_x[m], np.float64)[:, None]
        map_y = np.asarray(scores_y[m], np.float64)[:, None]
        if len(map_x) == fewest_x and len(map_y) == fewest_y:
            point, low, high = points[i], intervals[0, i], intervals[1, i]
        else:
            own_points, own_intervals = bootstrap([map_x, map_y], _improvements, reps)
            point, low, high = own_points[0], own_intervals[0, 0], own_intervals[1, 0]
        per_map[m] = Estimate(float(point), float(low), float(high), len(map_x))
    overall = Estimate(
        float(points[-1]), float(intervals[0, -1]), float(intervals[1, -1]), fewest_x
    )
    truncated = any(len(scores_x[m]) > fewest_x or len(scores_y[m]) > fewest_y for m in maps)
    return Improvement(per_map, overall, truncated)


# ---------------------------------------------------------------------------------- curves
def moving_average(values: np.ndarray, window: int = SMOOTHING_WINDOW) -> np.ndarray:
    """Trailing moving average along the last axis: out[i] = mean(values[max(0, i-w+1) : i+1]);
    the first w-1 points average what there is. [..., T] -> [..., T]."""
    values = np.asarray(values, np.float64)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    lead = np.full((*values.shape[:-1], window - 1), np.nan)
    windows = sliding_window_view(np.concatenate([lead, values], axis=-1), window, axis=-1)
    return np.nanmean(windows, axis=-1)


def seed_band(
    curves: np.ndarray, window: int = SMOOTHING_WINDOW
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """curves [seeds, T] (one row per seed, aligned evaluation points) -> the smoothed
    25th, 50th and 75th percentiles over seeds, each [T] (Fig. 4's band and line)."""
    curves = np.asarray(curves, np.float64)
    if curves.ndim != 2 or curves.shape[0] < 1:
        raise ValueError(f"curves must be [seeds >= 1, T], got shape {curves.shape}")
    low, median, high = np.percentile(curves, BAND, axis=0)
    return moving_average(low, window), moving_average(median, window), moving_average(high, window)
