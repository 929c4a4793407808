"""The paper's Table 1 (REFERENCE.md section 1), which ``igmda report`` prints beside our
numbers: StarCraft II SMAC, sight range 0, final win rate %."""

from __future__ import annotations

from igmda_jax.reports.cells import PAPER_MAPS, Cell, setting_base

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
    """The paper's number for a cell: its algorithm and map are in the paper's Table 1, all
    its runs are at sight range 0, and its label names no setting of ours (``qmix [smax_own]``
    is not the paper's qmix); else None."""
    if cell is None or setting_base(cell.label) is not None:
        return None
    algs = {run.alg for run in cell.runs}
    if len(algs) != 1 or any(run.sight_range != 0.0 for run in cell.runs):
        return None
    return PAPER_TABLE1.get(algs.pop(), {}).get(cell.map)
