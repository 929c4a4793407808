"""What a report is made of: a ``Cell`` (one label's seeds on one map), the ``Report`` the
outputs are written from, and the order of labels and maps in every table and figure."""

from __future__ import annotations

import dataclasses

import numpy as np

from igmda_jax.reports.runs import FINAL, Run, SeedResult
from igmda_jax.reports.stats import Improvement, LabelEstimates


@dataclasses.dataclass(frozen=True)
class Cell:
    """All seeds of one label on one map, sorted by seed, and the runs they came from."""

    label: str
    map: str
    seeds: tuple[SeedResult, ...]
    runs: tuple[Run, ...]

    @property
    def scores(self) -> np.ndarray:
        """Final win rates [seeds], in [0, 1], sorted by seed."""
        return np.array([s.win_rate for s in self.seeds], np.float64)

    @property
    def flagged(self) -> bool:
        return any(run.status != FINAL for run in self.runs)


@dataclasses.dataclass(frozen=True)
class Report:
    """Everything the outputs are written from."""

    runs: tuple[Run, ...]
    skipped: tuple[str, ...]  # run folders with no evaluation yet
    labels: tuple[str, ...]
    maps: tuple[str, ...]
    cells: dict[tuple[str, str], Cell]
    estimates: dict[str, LabelEstimates]
    improvements: dict[tuple[str, str], Improvement]  # (A, B) -> P(A > B), see comparison_bases
    reps: int
    improvement_reps: int


# ---------------------------------------------------------------------------------- ordering
PAPER_MAPS = ("3s5z", "5m_vs_6m", "MMM2", "8m", "3s_vs_5z", "8m_vs_9m")
TOY_MAPS = ("matrix_qtran", "matrix_qplex", "hidden_cue", "hidden_cue_long")


def da_base(label: str) -> str | None:
    """The label an -da label is compared with: 'qmix-da [x]' -> 'qmix [x]'; None if not -da."""
    head, _, tail = label.partition(" ")
    if not head.endswith("-da"):
        return None
    return f"{head[: -len('-da')]} {tail}".rstrip() if tail else head[: -len("-da")]


def setting_base(label: str) -> str | None:
    """The label a label with a named setting is compared with: 'qmix-da [state_expert]' ->
    'qmix-da'; None without one."""
    head, bracket, tail = label.rpartition(" [")
    return head if bracket and head and tail.endswith("]") else None


def comparison_bases(label: str) -> list[str]:
    """What a label is compared with in P(A > B): an -da label with its base and with its -bc
    sibling ('qmix-da' with 'qmix' and 'qmix-bc', the paper's Fig. 5a/b), a label with a named
    setting with the same label without it."""
    base = da_base(label)
    bases = [base, bc_sibling(label), setting_base(label)]
    return [b for b in bases if b is not None]


def bc_sibling(label: str) -> str | None:
    """'qmix-da [x]' -> 'qmix-bc [x]'; None if not -da."""
    head, space, tail = label.partition(" ")
    if not head.endswith("-da"):
        return None
    return head[: -len("-da")] + "-bc" + space + tail


MIXER_ORDER = ("vdn", "qmix", "qplex", "dmix")


def label_order(label: str) -> tuple[int, str, int, str]:
    """Sort key: mixers in the paper's order (others after, by name), each -da label right
    after the label it is compared with."""
    base = da_base(label)
    first = (base if base is not None else label).split(" ")[0].split("-")[0]
    rank = MIXER_ORDER.index(first) if first in MIXER_ORDER else len(MIXER_ORDER)
    return (rank, base, 1, label) if base is not None else (rank, label, 0, label)


def map_order(name: str) -> tuple[int, str]:
    """Sort key: the paper's maps in its Table 1 order, then the others by name."""
    return (PAPER_MAPS.index(name), "") if name in PAPER_MAPS else (len(PAPER_MAPS), name)
