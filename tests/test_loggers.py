"""The optional loggers: CSV equals metrics.jsonl, W&B offline records the scalars.

A whole run with every logger on is in test_train.py (the resume that switches them on)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from igmda_jax.persist.loggers import (
    CsvLog,
    WandbLog,
    make_loggers,
    per_seed_scalars,
    rows_to_csv,
    seed_mean_scalars,
    wandb_run_id,
)

EVAL_0 = [
    {"eval": 0, "seed": 0, "t_env": 0, "win_rate": 0.5, "return": 1.0},
    {"eval": 0, "seed": 1, "t_env": 0, "win_rate": 0.25, "return": 3.0},
]
EVAL_1 = [  # later rows carry training columns the first evaluation does not have
    {"eval": 1, "seed": 0, "t_env": 104, "win_rate": 0.75, "return": 2.0, "loss": 0.5},
    {"eval": 1, "seed": 1, "t_env": 100, "win_rate": 1.0, "return": 4.0, "loss": 1.5},
]


def assert_csv_equals_jsonl(run_dir: Path) -> None:
    """``run_dir/metrics.csv`` holds exactly the rows of ``run_dir/metrics.jsonl``."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    with (run_dir / "metrics.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows)
    for row, cells in zip(rows, table, strict=True):
        assert set(cells) >= set(row)
        for key, value in row.items():
            assert cells[key] == str(value), key
        assert all(cells[key] == "" for key in set(cells) - set(row))


def test_scalars_are_seed_means_and_per_seed_values() -> None:
    assert seed_mean_scalars(EVAL_0) == {"mean/win_rate": 0.375, "mean/return": 2.0}
    assert per_seed_scalars(EVAL_1)["seed1/loss"] == 1.5
    assert "seed0/eval" not in per_seed_scalars(EVAL_1)


def test_csv_has_the_union_of_columns_and_empty_cells_for_missing_ones() -> None:
    table = list(csv.DictReader(rows_to_csv(EVAL_0 + EVAL_1).splitlines()))
    assert list(table[0]) == ["eval", "seed", "t_env", "win_rate", "return", "loss"]
    assert [row["loss"] for row in table] == ["", "", "0.5", "1.5"]
    assert table[3]["t_env"] == "100"


def test_csv_log_follows_the_jsonl_also_when_rows_were_dropped(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(row) + "\n" for row in EVAL_0 + EVAL_1))
    log = CsvLog(metrics)
    log.write(EVAL_1)
    assert_csv_equals_jsonl(tmp_path)
    # a resume keeps only the rows up to its checkpoint: the table shrinks with the JSONL
    metrics.write_text("".join(json.dumps(row) + "\n" for row in EVAL_0))
    log.write(EVAL_0)
    assert_csv_equals_jsonl(tmp_path)
    assert "loss" not in (tmp_path / "metrics.csv").read_text()


def test_wandb_run_id_is_drawn_once_per_run_folder(tmp_path: Path) -> None:
    first = wandb_run_id(tmp_path)
    assert wandb_run_id(tmp_path) == first and first.startswith(tmp_path.name[:20])
    other = tmp_path / "other"
    other.mkdir()
    assert wandb_run_id(other) != first


def test_wandb_offline_records_scalars_and_resumes_the_same_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    log = WandbLog(tmp_path, "igmda-tests", {"alg": "qmix"})
    log.write(EVAL_0)
    log.write(EVAL_1)
    log.close()
    (first,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    data = first.read_bytes()
    # the history records hold the names and JSON values: seed means and per-seed values
    for expected in (b"mean/win_rate", b"0.375", b"0.875", b"seed1/loss", b"1.5"):
        assert expected in data, expected
    resumed = WandbLog(tmp_path, "igmda-tests", {"alg": "qmix"})
    resumed.close()
    run_id = (tmp_path / "wandb_id").read_text().strip()
    assert all(
        path.name == f"run-{run_id}.wandb"
        for path in (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    )


def test_missing_optional_package_is_one_line_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` fail
    with pytest.raises(ImportError, match=r"pip install 'igmda-jax\[wandb\]'"):
        make_loggers(tmp_path, tmp_path / "metrics.jsonl", {"wandb_project": "p"})
    assert make_loggers(tmp_path, tmp_path / "metrics.jsonl", {"csv": False}) == []
