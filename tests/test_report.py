"""igmda report on synthetic run folders (no training): the intervals against a NumPy
stratified bootstrap with the same random state, hand-computed IQM, improvement
probabilities and moving averages, percentile bands against np.percentile, interval
properties, the table layout (bold best, the paper's numbers, flags), the marl-eval layout,
byte-identical reruns, the CLI's refusals, and that the report does not import JAX."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from igmda_jax.reports import plots
from igmda_jax.reports import stats as report_stats
from igmda_jax.reports.cells import comparison_bases, da_base
from igmda_jax.reports.exports import marl_eval_data
from igmda_jax.reports.report import OUTPUTS, ReportError, build_report, parse_relabel, write_report
from igmda_jax.reports.stats import (
    improvement_estimates,
    label_estimates,
    moving_average,
    seed_band,
)
from igmda_jax.reports.write import results_markdown

REPO = Path(__file__).resolve().parents[1]
FEW = {"reps": 300, "improvement_reps": 100}


# ---------------------------------------------------------------------------------- fixtures
def write_run(
    root: Path,
    name: str,
    alg: str,
    map_name: str,
    curves: dict[int, list[float]],
    *,
    t_max: int = 100,
    interval: int = 10,
    final: dict[int, float] | None = None,
    label: str | None = None,
    sight_range: float | None = 0.0,
    cut_last_line: bool = False,
) -> Path:
    """A run folder: config.json, metrics.jsonl (curves: seed -> win rate per evaluation),
    final_eval.json when ``final`` (seed -> final win rate), cell.json when ``label``."""
    folder = root / name
    folder.mkdir(parents=True)
    seeds = sorted(curves)
    config = {"alg": alg, "map": map_name, "sight_range": sight_range, "seeds": len(seeds)}
    config |= {"seed": seeds[0], "t_max": t_max, "test_nepisode": 32, "preset": "smax"}
    (folder / "config.json").write_text(json.dumps(config))
    lines = []
    for i in range(len(curves[seeds[0]])):
        for seed in seeds:
            row = {"eval": i, "seed": seed, "t_env": i * interval + seed % 3}
            row |= {"win_rate": curves[seed][i], "return": 10 * curves[seed][i]}
            lines.append(json.dumps(row | {"episode_length": 20.0, "wall_time": 1.0}))
    text = "".join(line + "\n" for line in lines)
    if cut_last_line:
        text += '{"eval": 99, "seed"'
    (folder / "metrics.jsonl").write_text(text)
    if final is not None:
        wins = [final[s] for s in seeds]
        final_eval = {"alg": alg, "map": map_name, "t_env": t_max, "episodes": 320}
        final_eval |= {"seeds": seeds, "win_rate_per_seed": wins}
        final_eval |= {"return_per_seed": [10 * w for w in wins], "win_rate_mean": np.mean(wins)}
        final_eval |= {"win_rate_median": float(np.median(wins))}
        (folder / "final_eval.json").write_text(json.dumps(final_eval))
    if label is not None:
        (folder / "cell.json").write_text(json.dumps({"sweep": "s", "cell": name, "label": label}))
    return folder


def rising(final: float, n: int = 11) -> list[float]:
    return list(np.linspace(0.0, final, n))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """qmix and qmix-da on 3s5z (a paper map) and 3m, 3 seeds; qmix-da on 3m unfinished."""
    root = tmp_path / "sweep"
    write_run(root, "qmix_3s5z", "qmix", "3s5z", {s: rising(0.5) for s in range(3)},
              final={0: 0.08, 1: 0.1, 2: 0.09})  # fmt: skip
    write_run(root, "qmix-da_3s5z", "qmix-da", "3s5z", {s: rising(0.8) for s in range(3)},
              final={0: 0.9, 1: 0.8, 2: 0.7})  # fmt: skip
    write_run(root, "qmix_3m", "qmix", "3m", {s: rising(0.9) for s in range(3)},
              final={0: 0.9, 1: 1.0, 2: 0.95})  # fmt: skip
    write_run(root, "nested/qmix-da_3m", "qmix-da", "3m", {s: rising(0.3, 6) for s in range(3)},
              t_max=100)  # fmt: skip
    return root


# ---------------------------------------------------------------------------------- statistics
def numpy_stratified_bootstrap(matrix: np.ndarray, statistic, reps: int, seed: int = 0):
    """Our own stratified bootstrap (runs resampled within each task from np.random's global
    generator, percentile interval), to compare with rliable's."""
    runs, tasks = matrix.shape
    np.random.seed(seed)  # noqa: NPY002
    values = []
    for _ in range(reps):
        rows = np.random.choice(runs, (runs, tasks), replace=True)  # noqa: NPY002
        values.append(statistic(matrix[rows, np.arange(tasks)]))
    return np.percentile(np.array(values), [2.5, 97.5], axis=0)


def iqm(scores: np.ndarray) -> float:
    flat = np.sort(scores.ravel())
    cut = int(0.25 * flat.size)
    return float(flat[cut : flat.size - cut].mean())


def test_label_intervals_match_a_numpy_stratified_bootstrap():
    matrix = np.random.default_rng(3).uniform(size=(5, 3))
    scores = {m: matrix[:, i] for i, m in enumerate("abc")}
    result = label_estimates(scores, reps=400)

    def statistic(x):
        return np.concatenate([x.mean(0), [x.mean(0).mean(), iqm(x)]])

    low, high = numpy_stratified_bootstrap(matrix, statistic, 400)
    got = [result.per_map[m] for m in "abc"] + [result.mean, result.iqm]
    np.testing.assert_allclose([e.low for e in got], low, rtol=1e-12)
    np.testing.assert_allclose([e.high for e in got], high, rtol=1e-12)
    np.testing.assert_allclose([e.value for e in got], statistic(matrix), rtol=1e-12)
    assert not result.truncated and result.aggregate_runs == 5


def test_iqm_and_mean_by_hand():
    # all 8 values sorted: 0 0 0 .2 .4 .9 1 1 -> middle half .0 .2 .4 .9 -> IQM .375
    result = label_estimates(
        {"a": np.array([0, 0, 0, 1.0]), "b": np.array([0.2, 0.4, 0.9, 1.0])}, 50
    )
    assert result.iqm.value == pytest.approx(0.375)
    assert result.mean.value == pytest.approx((0.25 + 0.625) / 2)


def test_interval_properties():
    pattern = np.array([0.2, 0.4, 0.6, 0.9])
    few = label_estimates({"m": pattern}, 2000)
    many = label_estimates({"m": np.tile(pattern, 4)}, 2000)
    for estimate in (few.per_map["m"], few.mean, many.per_map["m"], many.iqm):
        assert estimate.low <= estimate.value <= estimate.high
    assert many.mean.high - many.mean.low < 0.7 * (few.mean.high - few.mean.low)
    same = label_estimates({"m": np.full(5, 0.7), "n": np.full(5, 0.1)}, 200)
    for estimate in (*same.per_map.values(), same.mean, same.iqm):
        assert estimate.low == pytest.approx(estimate.value) == pytest.approx(estimate.high)


def test_unequal_seed_counts_truncate_the_aggregate_only():
    scores = {"a": np.array([0.1, 0.2, 0.9]), "b": np.array([0.5, 0.7])}
    result = label_estimates(scores, 200)
    assert result.truncated and result.aggregate_runs == 2
    assert result.per_map["a"].value == pytest.approx(0.4) and result.per_map["a"].runs == 3
    assert result.mean.value == pytest.approx((0.15 + 0.6) / 2)  # first 2 seeds of a


def test_probability_of_improvement_by_hand():
    # map p: pairs (.5,.5) tie -> 1/2, (.5,0) 1, (1,.5) 1, (1,0) 1 -> 3.5 / 4
    # map q: x always above y -> 1; overall: the mean over maps
    x = {"p": np.array([0.5, 1.0]), "q": np.array([0.9, 0.8])}
    y = {"p": np.array([0.5, 0.0]), "q": np.array([0.1, 0.2]), "r": np.array([0.3, 0.3])}
    result = improvement_estimates(x, y, 200)
    assert set(result.per_map) == {"p", "q"}
    assert result.per_map["p"].value == pytest.approx(0.875)
    assert result.per_map["q"].value == pytest.approx(1.0)
    assert result.per_map["q"].low == pytest.approx(1.0)  # every resample: x above y
    assert result.overall.value == pytest.approx((0.875 + 1.0) / 2)
    from rliable import metrics

    matrix_x = np.stack([x["p"], x["q"]], 1)
    matrix_y = np.stack([y["p"], y["q"]], 1)
    assert result.overall.value == pytest.approx(
        metrics.probability_of_improvement(matrix_x, matrix_y)
    )
    with pytest.raises(ValueError, match="no map in common"):
        improvement_estimates({"p": x["p"]}, {"r": y["r"]}, 10)


def test_bootstrap_leaves_numpy_global_state_alone():
    np.random.seed(123)  # noqa: NPY002
    expected = np.random.random_sample()  # noqa: NPY002
    np.random.seed(123)  # noqa: NPY002
    report_stats.bootstrap(np.ones((3, 2)), lambda s: s.mean(0), 20)
    assert np.random.random_sample() == expected  # noqa: NPY002


def test_moving_average_by_hand():
    np.testing.assert_allclose(moving_average(np.arange(7.0)), [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(moving_average([1.0, 3.0, 5.0], 2), [1.0, 2.0, 4.0])
    np.testing.assert_allclose(moving_average([[1.0, 3.0], [2.0, 2.0]], 5), [[1, 2], [2, 2]])


def test_seed_band_is_smoothed_percentiles():
    curves = np.random.default_rng(0).uniform(size=(7, 12))
    unsmoothed = seed_band(curves, window=1)
    np.testing.assert_allclose(unsmoothed, np.percentile(curves, [25, 50, 75], axis=0))
    low, median, high = seed_band(curves)
    reference = np.percentile(curves, 50, axis=0)
    by_hand = [reference[max(0, i - 4) : i + 1].mean() for i in range(12)]
    np.testing.assert_allclose(median, by_hand)
    assert np.all(low <= median) and np.all(median <= high)


def test_da_pairs():
    assert da_base("qmix-da") == "qmix"
    assert da_base("qmix-da [smax own features]") == "qmix [smax own features]"
    assert da_base("qmix sight 2") is None and da_base("qmix-bc") is None
    assert comparison_bases("qmix-da [state_expert]") == [
        "qmix [state_expert]", "qmix-bc [state_expert]", "qmix-da"
    ]  # fmt: skip
    assert comparison_bases("qmix-da") == ["qmix", "qmix-bc"]
    assert comparison_bases("qmix [a b]") == ["qmix"] and comparison_bases("qmix") == []
    assert comparison_bases("qmix-da sight 2") == ["qmix sight 2", "qmix-bc sight 2"]


def test_a_named_setting_is_compared_with_the_label_without_it(tmp_path: Path):
    """table1's qmix-da beside expert_view's qmix-da [state_expert]: P(A > B) by hand, and the
    paper's number only beside the paper's setting."""
    root = tmp_path / "runs"
    write_run(root, "plain", "qmix-da", "5m_vs_6m", {0: [0.1], 1: [0.1]}, t_max=10,
              final={0: 0.2, 1: 0.6})  # fmt: skip
    write_run(root, "state", "qmix-da", "5m_vs_6m", {0: [0.1], 1: [0.1]}, t_max=10,
              final={0: 0.4, 1: 0.6}, label="qmix-da [state_expert]")  # fmt: skip
    report = build_report([str(root)], **FEW)
    assert list(report.improvements) == [("qmix-da [state_expert]", "qmix-da")]
    # pairs (A, B): (0.4, 0.2) win, (0.4, 0.6) loss, (0.6, 0.2) win, (0.6, 0.6) tie
    assert report.improvements["qmix-da [state_expert]", "qmix-da"].overall.value == 2.5 / 4
    markdown = results_markdown(report, "T", "igmda report x", "curves.png")
    row = _table_rows(markdown, "## Probability of improvement")["qmix-da [state_expert] > qmix-da"]
    assert row[1].startswith("0.62 [")
    table = _table_rows(markdown, "## Table 1")
    assert table["qmix-da"][2] == "50.6" and table["qmix-da [state_expert]"][2] == "–"


# ---------------------------------------------------------------------------------- the report
def _table_rows(markdown: str, heading: str) -> dict[str, list[str]]:
    section = markdown.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return {r.split(" | ")[0][2:]: [c.strip() for c in r.strip("| ").split(" | ")] for r in rows}


def test_table_layout(sweep: Path):
    report = build_report([str(sweep)], **FEW)
    assert report.labels == ("qmix", "qmix-da") and report.maps == ("3s5z", "3m")
    markdown = results_markdown(report, "T", "igmda report x", "curves.png")
    table = _table_rows(markdown, "## Table 1")
    header = table["label"]
    assert header[:5] == ["label", "3s5z", "3s5z SC2 paper†", "3m", "mean over maps"]
    qmix, qmix_da = table["qmix"], table["qmix-da"]
    assert qmix_da[1].startswith("**80.0** [") and qmix[1].startswith("9.0 [")  # 3s5z
    assert qmix[3].startswith("**95.0** [") and qmix_da[3].startswith("30.0 [")  # 3m
    assert qmix[2] == "90.2" and qmix_da[2] == "93.3"  # the paper's, beside ours
    assert qmix_da[3].endswith("*") and not qmix[3].endswith("*")  # unfinished flagged
    assert "StarCraft II" in markdown and "theirs" in markdown
    runs = markdown.split("## Runs", 1)[1].split("\n## ", 1)[0]
    unfinished = [line for line in runs.splitlines() if "**unfinished**" in line]
    assert len(unfinished) == 1 and unfinished[0].startswith("| qmix-da | 3m |")
    improvement = _table_rows(markdown, "## Probability of improvement")
    assert improvement["qmix-da > qmix"][1].startswith("1.00 [")  # 3s5z: every da seed higher
    assert improvement["qmix-da > qmix"][2].startswith("0.00 [")  # 3m: every qmix seed higher


def test_runs_are_read_as_the_issue_says(tmp_path: Path):
    root = tmp_path / "runs"
    write_run(root, "a", "qmix", "3m", {0: [0.1, 0.2], 1: [0.3, 0.4]}, t_max=10,
              final={0: 0.25, 1: 0.5})  # fmt: skip
    write_run(root, "b", "vdn", "3m", {3: [0.1, 0.6]}, t_max=10, cut_last_line=True)
    write_run(root, "c", "vdn", "3m", {4: [0.2, 0.8]}, t_max=100, label="vdn own")
    write_run(root, "d", "qmix", "3m", {0: [0.0, 0.0]}, t_max=10)  # seed 0 again: other run
    (root / "empty").mkdir()
    (root / "empty" / "config.json").write_text(json.dumps({"alg": "vdn", "map": "3m"}))
    report = build_report([str(root)], **FEW)
    runs = {Path(run.folder).name: run for run in report.runs}
    assert runs["a"].status == "final" and runs["a"].seeds[1].win_rate == 0.5
    assert runs["a"].label == "qmix [a]" and runs["d"].label == "qmix [d]"
    assert runs["b"].status == "no final eval" and runs["b"].seeds[0].win_rate == 0.6
    assert runs["c"].status == "unfinished" and runs["c"].label == "vdn own"
    assert runs["a"].episodes == 320 and runs["b"].episodes == 32
    assert report.skipped == (f"{root}/empty",)


def test_learner_and_expert_table_and_compute_by_hand(tmp_path: Path):
    """A -da run's final_eval.json has the expert's win rates and its metrics the agreement:
    the table shows both per seed with hand-computed means; train h is the largest wall_time."""
    root = tmp_path / "runs"
    folder = write_run(root, "qmix-da_3m", "qmix-da", "3m", {0: [0.1, 0.2], 1: [0.3, 0.4]},
                       t_max=10, final={0: 0.5, 1: 0.75})  # fmt: skip
    final = json.loads((folder / "final_eval.json").read_text())
    final["expert_win_rate_per_seed"] = [0.25, 1.0]
    (folder / "final_eval.json").write_text(json.dumps(final))
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    for row, agreement, wall in zip(
        rows, [0.5, 0.6, 0.7, 0.8], [3600, 3600, 5400, 7200], strict=True
    ):
        row |= {"agreement": agreement, "wall_time": wall}  # last eval: seed 0 0.7, seed 1 0.8
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    write_run(root, "qmix_3m", "qmix", "3m", {0: [0.1, 0.2]}, t_max=10, final={0: 0.5})
    report = build_report([str(root)], **FEW)
    markdown = results_markdown(report, "T", "igmda report x", "curves.png")
    table = _table_rows(markdown, "## Learner and expert")
    assert set(table) == {"label", "qmix-da"}  # plain runs have no expert
    assert table["qmix-da"] == [
        "qmix-da", "3m", "62.5 (50.0 75.0)", "62.5 (25.0 100.0)", "+0.0", "75.0 (70.0 80.0)"
    ]  # fmt: skip
    hours = {run.label: run.train_hours for run in report.runs}
    assert hours == {"qmix-da": 2.0, "qmix": 1.0 / 3600}
    assert "Compute: 2.0 h of training over 2 run(s)" in markdown
    assert f"{2 * 10 + 10:,} env steps x seeds" in markdown  # final t_env 10, seeds 2 and 1
    written = write_report([str(root)], tmp_path / "out", **FEW)
    csv_rows = (tmp_path / "out" / "finals.csv").read_text().splitlines()
    assert csv_rows[0].split(",")[:7] == [
        "label", "map", "seed", "win_rate", "return", "expert_win_rate", "agreement"
    ]  # fmt: skip
    assert csv_rows[-1].split(",")[:7] == [
        "qmix-da", "3m", "1", "0.750000", "7.500000", "1.000000", "0.800000"
    ]  # fmt: skip
    assert written.runs == report.runs


def test_sight_figure_for_labels_seen_at_several_sight_ranges(tmp_path: Path):
    """qmix at sight 0, 2 and the unit's own, qmix-da at 0 and 2, vdn at 0 only: sight.png
    has the two families (own last), RESULTS.md shows it; inputs without such a family get no
    sight.png, and a stale one is removed."""
    root = tmp_path / "runs"
    for name, alg, sight in [
        ("q0", "qmix", 0.0),
        ("q2", "qmix", 2.0),
        ("qn", "qmix", None),
        ("d0", "qmix-da", 0.0),
        ("d2", "qmix-da", 2.0),
        ("v0", "vdn", 0.0),
    ]:
        label = f"{alg} sight {'default' if sight is None else f'{sight:g}'}"
        write_run(root, name, alg, "3m", {0: [0.1, 0.2]}, t_max=10, final={0: 0.5},
                  label=label, sight_range=sight)  # fmt: skip
    report = build_report([str(root)], **FEW)
    families = plots.sight_families(report)
    assert families == {
        ("qmix", "3m"): [
            (0.0, "qmix sight 0"),
            (2.0, "qmix sight 2"),
            (None, "qmix sight default"),
        ],
        ("qmix-da", "3m"): [(0.0, "qmix-da sight 0"), (2.0, "qmix-da sight 2")],
    }
    out = tmp_path / "out"
    write_report([str(root)], out, **FEW)
    assert (out / "sight.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![final win rate against sight range](sight.png)" in (out / "RESULTS.md").read_text()
    write_report([str(root / "q0"), str(root / "d0")], out, **FEW)  # one sight each
    assert not (out / "sight.png").exists()
    assert "sight range](sight.png)" not in (out / "RESULTS.md").read_text()


def test_marl_eval_layout(sweep: Path):
    data = marl_eval_data(build_report([str(sweep)], **FEW))
    assert list(data) == ["smax"] and list(data["smax"]) == ["3s5z", "3m"]
    run = data["smax"]["3s5z"]["qmix-da"]["run_2"]
    assert list(run)[-1] == "absolute_metrics"  # marl-eval reads the last key as absolute
    assert list(run)[:-1] == [f"step_{i}" for i in range(11)]
    assert run["step_10"] == {"step_count": 102, "win_rate": [0.8], "return": [8.0]}
    assert run["absolute_metrics"] == {"win_rate": [0.7], "return": [7.0]}


def test_rerun_is_byte_identical(sweep: Path, tmp_path: Path):
    out = tmp_path / "report"
    write_report([str(sweep)], out, **FEW)
    first = {name: (out / name).read_bytes() for name in OUTPUTS}
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    for path in out.iterdir():
        path.unlink()
    write_report([str(sweep)], out, **FEW)
    assert {name: (out / name).read_bytes() for name in OUTPUTS} == first
    assert first["curves.png"].startswith(b"\x89PNG") and b"Software" not in first["curves.png"]
    finals = first["finals.csv"].decode().splitlines()
    assert finals[0].startswith("label,map,seed,win_rate") and len(finals) == 1 + 12


def test_cli_report_through_the_dispatch(sweep: Path, tmp_path: Path, capsys):
    from igmda_jax import cli

    cli.main(
        ["report", str(sweep), "--out", str(tmp_path / "o"), "--reps", "50", "--poi-reps", "20"]
    )
    assert "4 run folder(s), 2 label(s) x 2 map(s)" in capsys.readouterr().out
    assert "--reps 50" in (tmp_path / "o" / "RESULTS.md").read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["does/not/exist", "--out", "o"], "does/not/exist does not exist"),
        (["EMPTY", "--out", "o"], "no run folders"),
        (["EMPTY"], "the following arguments are required: --out"),
    ],
)
def test_cli_refuses_bad_input_in_one_line(tmp_path: Path, args: list[str], message: str):
    (tmp_path / "EMPTY").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "igmda_jax.cli", "report", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


def test_build_report_refusals(tmp_path: Path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text(json.dumps({"alg": "qmix", "map": "3m"}))
    with pytest.raises(ReportError, match="no evaluations yet"):
        build_report([str(tmp_path)])
    (tmp_path / "r" / "final_eval.json").write_text(json.dumps({"t_env": 5, "seeds": [0]}))
    with pytest.raises(ReportError, match=r"r: cannot read its results \(KeyError"):
        build_report([str(tmp_path)])
    (tmp_path / "r" / "final_eval.json").write_text("{")
    with pytest.raises(ReportError, match="final_eval.json is not valid JSON"):
        build_report([str(tmp_path)])
    with pytest.raises(ReportError, match="must be >= 1"):
        build_report([str(tmp_path)], reps=0)


def test_report_modules_do_not_import_jax():
    code = (
        "import sys, types\n"
        "package = types.ModuleType('igmda_jax')\n"  # skip igmda_jax/__init__ (imports envs)
        f"package.__path__ = [{str(REPO / 'igmda_jax')!r}]\n"
        "sys.modules['igmda_jax'] = package\n"
        "import igmda_jax.reports.report, igmda_jax.reports.write, igmda_jax.reports.plots\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'envs')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"


def test_relabel_renames_before_grouping_and_refuses_unknown_labels(sweep: Path):
    # a sight sweep's "qmix sight 1" beside table1's "qmix", shown as "qmix sight 0"
    write_run(sweep, "sight/qmix_3m_sight1", "qmix", "3m", {s: rising(0.4) for s in range(3)},
              final={0: 0.4, 1: 0.5, 2: 0.6}, label="qmix sight 1")  # fmt: skip
    relabel = parse_relabel(["qmix=qmix sight 0", "qmix-da = qmix-da sight 0"])
    assert relabel == {"qmix": "qmix sight 0", "qmix-da": "qmix-da sight 0"}
    report = build_report([str(sweep)], **FEW, relabel=relabel)
    assert set(report.labels) == {"qmix sight 0", "qmix sight 1", "qmix-da sight 0"}
    np.testing.assert_allclose(report.cells["qmix sight 0", "3m"].scores, [0.9, 1.0, 0.95])
    np.testing.assert_allclose(report.cells["qmix sight 1", "3m"].scores, [0.4, 0.5, 0.6])
    with pytest.raises(ReportError, match="no run is labelled 'qmx'"):
        build_report([str(sweep)], **FEW, relabel={"qmx": "x"})
    with pytest.raises(ReportError, match="write OLD=NEW"):
        parse_relabel(["qmix"])
