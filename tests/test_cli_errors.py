"""Bad input through the real CLI: one line on stderr, exit status 2, nothing written.

Each case runs ``python -m igmda_jax.cli ...`` in a subprocess inside a scratch folder holding
one small finished run; the folder's files (names, sizes, modification times) must be the
same afterwards. The README's reliability table lists these cases.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_train import SMALL as TRAIN_SMALL

from igmda_jax.core.presets import make_config
from igmda_jax.run import run

# test_train's small 3m configuration (without its td_lambda), shorter and evaluated less
SMALL = {k: v for k, v in TRAIN_SMALL.items() if k != "td_lambda"} | dict(
    iterations_per_call=2, test_nepisode=2, t_max=200, test_interval=100
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with: run/ (a finished run), run_bad_json/ and run_bad_type/ (its config.json
    corrupted or hand-edited), no_ckpt/ (a config.json and no checkpoint)."""
    root = tmp_path_factory.mktemp("scratch")
    run(make_config(alg="qmix", **SMALL), root / "run", progress=False)
    for name in ("run_bad_json", "run_bad_type", "no_ckpt"):
        shutil.copytree(root / "run", root / name)
    (root / "run_bad_json" / "config.json").write_text('{"alg": "qmix", "map": ')
    saved = json.loads((root / "run" / "config.json").read_text())
    (root / "run_bad_type" / "config.json").write_text(json.dumps({**saved, "seeds": "two"}))
    shutil.rmtree(root / "no_ckpt" / "checkpoints")
    return root


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
    }


def igmda(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "igmda_jax.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


# (command line, text the one stderr line must contain)
BAD_INPUT = [
    (["train", "--out", "run", "--no-progress"], "already holds a run"),
    (["train", "--resume", "run", "--lr", "0.5"], "lr"),
    (["train", "--resume", "run_bad_json"], "is not valid JSON"),
    (["train", "--resume", "run_bad_type"], "seeds"),
    (["train", "--resume", "nowhere"], "nothing to resume"),
    (["train", "--out", "new", "--sight-range", "-1"], "sight_range must be a finite number"),
    (["train", "--out", "new", "--sight-range", "nan"], "sight_range must be a finite number"),
    (["train", "--out", "new", "--sight-range", "inf"], "sight_range must be a finite number"),
    (["train", "--out", "new", "--episode-limit", "0"], "episode_limit must be an integer >= 1"),
    (["train", "--out", "new", "--lr", "-0.001"], "lr must be a finite number in (0, inf]"),
    (["train", "--out", "new", "--lr", "nan"], "lr must be a finite number"),
    (["train", "--out", "new", "--epsilon-start", "1.5"], "epsilon_start must be a finite"),
    (["train", "--out", "new", "--hidden-dim", "0"], "hidden_dim must be an integer >= 1"),
    (["train", "--out", "new", "--hypernet-layers", "3"], "hypernet_layers must be 1 or 2"),
    (["train", "--out", "new", "--imitation-weight", "-1"], "imitation_weight must be a finite"),
    (["train", "--out", "new", "--map", "4m_vs_nothing"], "unknown map"),
    (["train", "--out", "new", "--alg", "qmax"], "unknown algorithm"),
    (["eval", "nowhere"], "is not a run folder"),
    (["eval", "no_ckpt"], "has no checkpoint"),
    (["eval", "run", "--episodes", "0"], "--episodes must be an integer >= 1"),
    (["imitate", "--expert", "nowhere", "--sight-range", "0", "--t-max", "100"], "does not exist"),
    (["imitate", "--expert", "no_ckpt", "--sight-range", "0", "--t-max", "100"], "no checkpoint"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    scratch: Path, args: list[str], message: str
) -> None:
    before = snapshot(scratch)
    result = igmda(args, scratch)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and message in lines[0], lines
    assert lines[0].startswith("igmda "), lines
    assert snapshot(scratch) == before


def test_resuming_a_finished_run_changes_nothing(scratch: Path) -> None:
    before = snapshot(scratch)
    result = igmda(["train", "--resume", "run", "--no-progress"], scratch)
    assert result.returncode == 0, result.stderr
    assert "is finished at t_env" in result.stderr and "Traceback" not in result.stderr
    assert snapshot(scratch) == before


def test_resume_without_a_checkpoint_keeps_the_old_rows(scratch: Path, tmp_path: Path) -> None:
    folder = tmp_path / "no_ckpt"
    shutil.copytree(scratch / "no_ckpt", folder)
    old_rows = (folder / "metrics.jsonl").read_text()
    result = igmda(["train", "--resume", str(folder)], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (folder / "metrics.before-restart.jsonl").read_text() == old_rows

    def rows(text: str) -> list[dict]:
        return [
            {k: v for k, v in json.loads(line).items() if k != "wall_time"}
            for line in text.splitlines()
        ]

    # deterministic: the restart wrote the same rows again
    assert rows((folder / "metrics.jsonl").read_text()) == rows(old_rows)


def test_a_metrics_line_cut_short_by_a_kill_is_dropped(tmp_path: Path) -> None:
    from igmda_jax.run import _read_rows

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"eval": 0, "t_env": 0}\n{"eval": 1, "t_env": 100}\n{"eval": 2, "t_')
    assert _read_rows(path, 10) == ['{"eval": 0, "t_env": 0}', '{"eval": 1, "t_env": 100}']
    assert _read_rows(path, 1) == ['{"eval": 0, "t_env": 0}']
