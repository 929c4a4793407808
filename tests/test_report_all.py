"""experiments/report_all.py: the report commands it reads from the sweep files' headers, the
generated blocks of README.md and results/RESULTS.md against the committed results, and a
regeneration of a small synthetic sweep that ``--check`` finds byte-identical (and not, once a
result changes)."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from igmda_jax.reports.report import main as report_main
from igmda_jax.sweeps.spec import parse_sweep

ROOT = Path(__file__).resolve().parents[1]


def _load_report_all():
    spec = importlib.util.spec_from_file_location(
        "report_all", ROOT / "experiments" / "report_all.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report_all = _load_report_all()


def test_every_sweep_names_its_report_command():
    every = {path.stem: report_all.report_commands(path) for path in report_all.sweep_files(ROOT)}
    assert list(every)[0] == "table1"  # the others read its cells
    assert every["fig3_lossy"][1:] == [
        f"igmda imitate --report results/fig3_lossy/imitate_{map_name}"
        for map_name in ("5m_vs_6m", "3s5z")
    ]
    commands = {name: found[0] for name, found in every.items()}
    assert all(command.startswith("igmda report ") for command in commands.values())
    # a continued line is joined and quotes survive for bash
    assert commands["fig5_sight"] == (
        "igmda report results/table1/qmix{,-da}_5m_vs_6m_sight0 results/fig5_sight --out "
        "results/fig5_sight --relabel 'qmix=qmix sight 0' --relabel 'qmix-da=qmix-da sight 0'"
    )
    for name, command in commands.items():
        if name != "fig3_lossy":  # the experts' report goes to a subfolder
            assert f"--out results/{name}" in command, (name, command)


def test_generated_blocks_are_the_committed_results():
    """README's Table 1, results/RESULTS.md's Table 1 and compute blocks and
    experiments/README.md's compute block are what report_all makes of the committed files
    (rerun it after a sweep adds results)."""
    compute = report_all.compute_table(ROOT)
    for path, name, block in [
        ("README.md", "readme", report_all.readme_table1(ROOT)),
        ("results/RESULTS.md", "table1", report_all.table1_sections(ROOT)),
        ("results/RESULTS.md", "compute", compute),
        ("experiments/README.md", "compute", compute),
    ]:
        text = (ROOT / path).read_text()
        assert report_all.replace_block(text, name, block) == text, (path, name)


def test_command_inputs_are_the_expanded_folders_a_command_reads(tmp_path: Path):
    command = (
        "igmda report results/table1/qmix{,-da}_5m_vs_6m_sight0 results/fig5_sight --out "
        "results/fig5_sight --relabel 'qmix=qmix sight 0' --reps 10 --title 'a b'"
    )
    assert report_all.command_inputs(command, tmp_path) == [
        "results/table1/qmix_5m_vs_6m_sight0",
        "results/table1/qmix-da_5m_vs_6m_sight0",
        "results/fig5_sight",
    ]
    command = "igmda imitate --report results/fig3_lossy/imitate_3s5z"
    assert report_all.command_inputs(command, tmp_path) == ["results/fig3_lossy/imitate_3s5z"]


def test_replace_block_refuses_missing_or_repeated_markers():
    begin, end = report_all.markers("x")
    assert report_all.replace_block(f"a\n{begin}\nold\n{end}\nb", "x", "new") == (
        f"a\n{begin}\nnew\n{end}\nb"
    )
    with pytest.raises(ValueError, match="expected one"):
        report_all.replace_block("no markers", "x", "new")
    with pytest.raises(ValueError, match="expected one"):
        report_all.replace_block(f"{begin}{end}{begin}{end}", "x", "new")


def _synthetic_repo(root: Path) -> None:
    """A repo with one sweep (table1: qmix and qmix-da on 3s5z, 2 seeds, finished) and the
    files report_all writes into."""
    (root / "experiments").mkdir(parents=True)
    (root / "experiments" / "table1.yaml").write_text(
        "# a small table1\n#   igmda report results/table1 --out results/table1 --reps 200 \\\n"
        "#     --poi-reps 50\n#   igmda imitate --report results/table1/imitate_none\nname: table1\npreset: smax\nseeds: 2\nt_max: 20\n"
        "algorithms: [qmix, qmix-da]\nsight_ranges: [0]\nmaps: [3s5z]\n"
    )
    runs = [("qmix", [0.25, 0.5]), ("qmix-da", [0.75, 0.5]), ("imitate/sight_0", [0.5, 0.5])]
    for alg, wins in runs:  # the last: a run folder that is no cell of the sweep
        folder = root / "results" / "table1" / f"{alg}_3s5z_sight0"
        folder.mkdir(parents=True)
        config = {
            "alg": alg.replace("imitate/sight_0", "qmix-bc"),
            "map": "3s5z",
            "sight_range": 0.0,
            "t_max": 20,
            "seeds": 2,
        }
        (folder / "config.json").write_text(json.dumps(config))
        rows = [
            {"eval": i, "seed": s, "t_env": 10 * i, "win_rate": w * i, "wall_time": 360.0 * i}
            for i in range(3)
            for s, w in enumerate(wins)
        ]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        final = {"t_env": 20, "episodes": 8, "seeds": [0, 1], "win_rate_per_seed": wins}
        (folder / "final_eval.json").write_text(json.dumps(final | {"win_rate_mean": 0.5}))
    begin, end = report_all.markers("readme")
    (root / "README.md").write_text(f"# r\n{begin}\n{end}\n")
    blocks = [report_all.markers(name) for name in ("table1", "compute")]
    (root / "results" / "RESULTS.md").write_text("".join(f"{b}\n{e}\n" for b, e in blocks))
    begin, end = report_all.markers("compute")
    (root / "experiments" / "README.md").write_text(f"# e\n{begin}\n{end}\n")


def test_compute_table_sums_steps_and_hours_by_hand(tmp_path: Path):
    """3 run folders of 2 seeds at t_env 20, each with a training clock of 720 s: 120 env steps
    x seeds, 0.6 training hours, half of it wall time; the imitation folder is no cell."""
    _synthetic_repo(tmp_path)
    lines = report_all.compute_table(tmp_path).splitlines()
    assert lines[2:] == ["| `table1` | 2 / 2 | 1 | 120 | 0.6 | 0.3 |", "| all | | | | 0.6 | 0.3 |"]


def test_regenerate_then_check_is_byte_identical(tmp_path: Path):
    _synthetic_repo(tmp_path)
    lines: list[str] = []
    assert report_all.regenerate(tmp_path, lines.append), lines
    assert (tmp_path / "results" / "table1" / "curves.png").is_file()
    left_out = "table1: left out until results/table1/imitate_none are complete: igmda imitate"
    assert left_out in "\n".join(lines)
    # an imitation folder with finished learners but no summary yet is not complete either
    imitation = tmp_path / "results" / "table1" / "imitate_none"
    (imitation / "sight_0").mkdir(parents=True)
    assert not report_all.ready(imitation)
    (imitation / "summary.json").write_text("{}")
    assert report_all.ready(imitation) and report_all.ready(tmp_path / "results" / "table1")
    shutil.rmtree(imitation)
    # a sweep whose own runs have not finished is not reported from table1's runs alone
    (tmp_path / "experiments" / "later.yaml").write_text(
        "#   igmda report results/table1/qmix_3s5z_sight0 results/later --out results/later\n"
        "name: later\npreset: smax\nseeds: 2\nt_max: 20\nalgorithms: [qmix-bc]\n"
        "sight_ranges: [0]\nmaps: [3s5z]\n"
    )
    (tmp_path / "results" / "later").mkdir()
    lines.clear()
    assert report_all.regenerate(tmp_path, lines.append), lines
    assert "later: left out until one of its own runs has finished" in lines
    assert list((tmp_path / "results" / "later").iterdir()) == []
    readme = (tmp_path / "README.md").read_text()
    assert "| qmix | 50.0 / 90.2 | *running* / 36.4 |" in readme  # final_eval's mean, as given
    results = (tmp_path / "results" / "RESULTS.md").read_text()
    assert "### Table 1: final win rate (%)" in results and "### Runs" not in results
    assert (
        "| `table1` | 2 / 2 | 1 | 120 | 0.6 |" in results
    )  # 3 runs x 2 seeds x t_env 20; 720 s x 3
    assert report_all.check(tmp_path, lines.append)
    final = tmp_path / "results" / "table1" / "qmix_3s5z_sight0" / "final_eval.json"
    data = json.loads(final.read_text())
    final.write_text(json.dumps(data | {"win_rate_per_seed": [0.25, 0.75]}))
    lines.clear()
    assert not report_all.check(tmp_path, lines.append)
    assert any(line.startswith("differs: results/table1/RESULTS.md") for line in lines), lines
    shutil.rmtree(tmp_path / "results" / "table1")
    with pytest.raises(FileNotFoundError):
        report_all.table1_sections(tmp_path)


def _made_up_results(root: Path) -> None:
    """Every planned cell of every sweep file under root/experiments gets a finished run folder
    with made-up win rates (the committed ones are kept)."""
    rng = np.random.default_rng(0)
    for sweep_file in report_all.sweep_files(root):
        text = sweep_file.read_text()
        sweep = parse_sweep(yaml.safe_load(text), text)
        for cell in sweep.cells:
            folder = root / "results" / sweep.name / cell.name
            if (folder / "final_eval.json").is_file():
                continue
            folder.mkdir(parents=True, exist_ok=True)
            config = {"alg": cell.alg, "map": cell.map, "sight_range": cell.sight_range}
            (folder / "config.json").write_text(json.dumps(config | {"t_max": cell.t_max}))
            cell_json = {"sweep": sweep.name, "cell": cell.name, "label": cell.label}
            (folder / "cell.json").write_text(json.dumps(cell_json))
            wins = rng.uniform(size=cell.seeds).tolist()
            rows = [
                {"eval": i, "seed": s, "t_env": i * cell.t_max // 2, "win_rate": w * i / 2}
                for i in range(3)
                for s, w in enumerate(wins)
            ]
            (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            final = {"t_env": cell.t_max, "episodes": 8, "seeds": list(range(cell.seeds))}
            (folder / "final_eval.json").write_text(json.dumps(final | {"win_rate_per_seed": wins}))


def test_every_sweeps_report_reads_its_cells_and_table1s_apart(tmp_path: Path, monkeypatch):
    """With every sweep finished (made-up numbers), each header's report finds its runs and
    table1's, and no two runs of one map share a label (else the report would tell them apart
    by folder name, and a sweep's setting would not be compared with table1's plain cells)."""
    shutil.copytree(ROOT / "experiments", tmp_path / "experiments")
    shutil.copytree(ROOT / "results", tmp_path / "results")
    _made_up_results(tmp_path)
    monkeypatch.chdir(tmp_path)
    for sweep_file in report_all.sweep_files(tmp_path):
        command = report_all.report_commands(sweep_file)[0]
        expanded = subprocess.run(
            ["bash", "-c", f"printf '%s\\n' {command.removeprefix('igmda report ')}"],
            capture_output=True, text=True, check=True,
        ).stdout.splitlines()  # fmt: skip
        assert report_main([*expanded, "--reps", "100", "--poi-reps", "20"]) == 0, command
        out = Path(expanded[expanded.index("--out") + 1])
        finals = list(csv.DictReader((out / "finals.csv").open()))
        labels = {row["label"] for row in finals}
        assert not [label for label in labels if "_sight" in label], (sweep_file.stem, labels)
        if sweep_file.stem in ("expert_view", "dagger_beta", "expert_target", "position_leak"):
            summary = list(csv.DictReader((out / "summary.csv").open()))
            compared = {(r["label"], r["versus"]) for r in summary if r["versus"]}
            own = {label for label in labels if "[" in label}
            assert own and all((label, label.split(" [")[0]) in compared for label in own)
