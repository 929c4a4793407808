"""igmda bench: derived tables by hand, the docs block (test_docs checks the committed one), and one
real (small) run end to end.
No timing is asserted: benchmarks print numbers, tests check that they are computed right."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from igmda_jax.tools import bench
from igmda_jax.tools.bench import BEGIN, END, derive, markdown, replace_block

ROOT = Path(__file__).resolve().parents[1]


def rows() -> list[dict]:
    env = {"kind": "env", "n_envs": 8, "steps": 100}
    train = {"kind": "train", "chunks": 2, "compile_s": 20.0, "peak_rss_mib": 900.0}
    return [
        env | {"map": "3m", "ours_steps_per_s": 40_000.0, "raw_steps_per_s": 50_000.0},
        env | {"map": "MMM2", "ours_steps_per_s": 4_000.0, "raw_steps_per_s": None},
        train | {"map": "3m", "alg": "qmix", "seeds": 1, "steps_per_s_per_seed": 10_000.0},
        train | {"map": "3m", "alg": "qmix-da", "seeds": 1, "steps_per_s_per_seed": 4_000.0},
        train | {"map": "3m", "alg": "qmix", "seeds": 8, "steps_per_s_per_seed": 2_000.0},
        train | {"map": "MMM2", "alg": "qmix", "seeds": 1, "steps_per_s_per_seed": 1_000.0},
    ]


def test_derived_tables_by_hand() -> None:
    tables = derive(rows())
    env = {r["map"]: r for r in tables["env"]}
    assert env["3m"]["raw_over_ours"] == 1.25 and env["MMM2"]["raw_over_ours"] is None
    train = {(r["map"], r["alg"]): r for r in tables["train"]}
    assert train["3m", "qmix"]["train_over_env"] == 0.25  # 10,000 / 40,000
    assert train["MMM2", "qmix"]["train_over_env"] == 0.25
    assert ("3m", "qmix") in train and len(tables["train"]) == 3  # seeds > 1 are not here
    assert tables["da_cost"] == [{"map": "3m", "da_over_plain": 2.5}]  # 10,000 / 4,000
    seeds = {(r["map"], r["seeds"]): r["cost_vs_one_seed"] for r in tables["seeds"]}
    assert seeds == {("3m", 1): 1.0, ("3m", 8): 5.0, ("MMM2", 1): 1.0}


def test_markdown_block_replaces_only_between_markers() -> None:
    report = {
        "command": "igmda bench --quick",
        "machine": {"cpu": "cpu", "cores": 2, "platform": "cpu", "jax": "0"},
        "wall_s": 180.0,
        "rows": rows(),
        "tables": derive(rows()),
    }
    block = markdown(report)
    assert "| 3m | qmix | 10,000 | 0.25 | 20 | 900 |" in block
    assert "| 3m | 8 | 2,000 | 5.00 | 900 |" in block
    readme = f"intro\n{BEGIN}\nold\n{END}\noutro\n"
    assert replace_block(readme, block) == f"intro\n{BEGIN}\n{block}{END}\noutro\n"
    with pytest.raises(ValueError, match="no <!-- bench:begin -->"):
        replace_block("no markers", block)


def test_a_small_bench_runs_end_to_end(tmp_path: Path, monkeypatch, capsys) -> None:
    """Real cases in real subprocesses (a short env rollout, a 1-chunk 3m training), the JSON
    and the README block written, numbers positive."""
    small = [
        {"kind": "env", "map": "3m", "n_envs": 2, "steps": 200},
        {"kind": "train", "map": "3m", "alg": "qmix", "seeds": 1, "chunks": 1},
    ]
    monkeypatch.setattr(bench, "plan", lambda quick: small)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{BEGIN}\n{END}\n")
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--out", str(out), "--readme", str(readme)]) == 0
    report = json.loads(out.read_text())
    env_row, train_row = report["rows"]
    assert env_row["ours_steps_per_s"] > 0 and env_row["raw_steps_per_s"] > 0
    assert train_row["steps_per_s_per_seed"] > 0 and train_row["compile_s"] > 0
    assert train_row["peak_rss_mib"] > 100
    assert report["tables"]["train"][0]["train_over_env"] > 0
    assert markdown(report) in readme.read_text()
    assert "[2/2] train 3m qmix 1 seed(s)" in capsys.readouterr().out


def test_device_check_dry_run_writes_its_json(tmp_path: Path) -> None:
    """experiments/device_check.sh's CPU dry run: every step of the GPU check, tiny."""
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(tmp_path), "PYTHON": sys.executable}
    script = ROOT / "experiments" / "device_check.sh"
    result = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "device_check.json").read_text())
    rows = report["train"]
    assert [(r["map"], r["alg"], r["seeds"]) for r in rows] == [
        ("3m", "qmix", 1),
        ("3m", "qmix", 2),
    ]
    for row in rows:
        assert row["steps_per_s_total"] == pytest.approx(
            row["steps_per_s_per_seed"] * row["seeds"], rel=1e-3
        )
        assert row["compile_s"] > 0 and row["device_peak_mib"] is None  # CPU: no allocator stats
    assert report["machine"]["platform"] == "cpu" and report["wall_s"] > 0
