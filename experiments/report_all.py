"""Regenerate every committed report of the experiments from the committed results, with one
command:

    python experiments/report_all.py           # rewrite results/<sweep>/ and the generated blocks
    python experiments/report_all.py --check   # the same in a scratch copy; exit 1 if a byte differs

For each sweep file ``experiments/<sweep>.yaml``, the report commands its header names (comment
lines ``#   igmda report ...`` or ``#   igmda imitate --report ...``, continued by trailing
backslashes) are run in bash (their ``{a,b}`` braces expand there) with ``igmda`` meaning this
Python's ``igmda_jax.cli``. A sweep none of whose own runs has finished yet, and a command whose
input folders do not exist yet (or, for an imitation output folder, have no summary.json yet),
are listed and left out. Then the generated
blocks (between ``<!-- report_all:NAME:begin -->`` and ``<!-- report_all:NAME:end -->``) of
results/RESULTS.md, README.md and experiments/README.md are rewritten:

    table1    (results/RESULTS.md) the Table 1, P(X-da > X) and learner/expert sections of
              results/table1/RESULTS.md, one heading level down
    compute   (results/RESULTS.md, experiments/README.md) per sweep: runs finished of planned,
              env steps, training hours and wall hours (two runs at a time: half of them)
    readme    (README.md) Table 1 as "ours / the paper's" per cell, ours the mean over seeds of
              results/table1/<alg>_<map>_sight0/final_eval.json, *running* without one

Reads result folders only (no training, no checkpoints); the report's bootstrap makes a full
run take a few minutes.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from igmda_jax.reports.cells import PAPER_MAPS
from igmda_jax.reports.paper import PAPER_TABLE1
from igmda_jax.reports.runs import FINAL, find_run_folders, load_run
from igmda_jax.sweeps.spec import parse_sweep

ROOT = Path(__file__).resolve().parents[1]
REPORT_LINE = re.compile(r"^#\s+(igmda (?:report|imitate --report) .*)$")
TABLE1_ALGS = ("qmix", "qmix-da", "qplex", "qplex-da", "dmix", "dmix-da")
# sections of results/table1/RESULTS.md copied into results/RESULTS.md, from the first up to
# (not including) the second
TABLE1_SECTIONS = ("## Table 1: final win rate (%)", "## Learning curves")


# ---------------------------------------------------------------------------------- sweeps
def report_commands(sweep_file: Path) -> list[str]:
    """The report commands in the header comment of a sweep file (``igmda report ...`` and
    ``igmda imitate --report ...`` lines, a trailing backslash continuing one), in order."""
    lines = sweep_file.read_text().splitlines()
    commands = []
    for index, line in enumerate(lines):
        if not line.startswith("#"):
            break  # the header ended
        match = REPORT_LINE.match(line)
        if match:
            command = match.group(1)
            while command.endswith("\\"):
                index += 1
                command = command[:-1].rstrip() + " " + lines[index].lstrip("#").strip()
            commands.append(command)
    return commands


def command_inputs(command: str, cwd: Path) -> list[str]:
    """The folders a report command reads: its arguments after bash's expansion, less the
    subcommand, the options and ``--out``'s value."""
    script = f"igmda() {{ printf '%s\\0' \"$@\"; }}\n{command}\n"
    words = subprocess.run(
        ["bash", "-c", script], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.split("\0")[1:-1]
    inputs, skip = [], False
    for word in words:
        if skip or word.startswith("-"):
            skip = word in ("--out", "--relabel", "--reps", "--poi-reps", "--title")
            continue
        inputs.append(word)
    return inputs


def ready(path: Path) -> bool:
    """A report's input is there: it exists, and an imitation output folder (one with
    ``sight_*`` folders, kept as fig3_lossy.sh finishes each learner) has its summary.json."""
    if not path.exists():
        return False
    return not any(path.glob("sight_*")) or (path / "summary.json").is_file()


def sweep_files(root: Path) -> list[Path]:
    """Every sweep file under experiments/, in name order, table1 first (the others read it)."""
    files = sorted((root / "experiments").glob("*.yaml"))
    return sorted(files, key=lambda path: path.stem != "table1")


def run_report(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run one ``igmda report`` command line in bash in ``cwd``, igmda being this Python's."""
    igmda = f"{shlex.quote(sys.executable)} -m igmda_jax.cli"
    script = f'igmda() {{ {igmda} "$@"; }}\nset -e\n{command}\n'
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def sweep_results(root: Path, name: str) -> Path:
    return root / "results" / name


# ---------------------------------------------------------------------------------- blocks
def markers(name: str) -> tuple[str, str]:
    return f"<!-- report_all:{name}:begin -->", f"<!-- report_all:{name}:end -->"


def replace_block(text: str, name: str, block: str) -> str:
    """``text`` with the lines between the block's markers replaced by ``block``."""
    begin, end = markers(name)
    if text.count(begin) != 1 or text.count(end) != 1:
        raise ValueError(f"expected one {begin} ... {end} block")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{block.rstrip()}\n{end}{tail}"


def readme_table1(root: Path) -> str:
    """README's Table 1: per algorithm and map "ours / the paper's" win rate in %."""
    lines = [
        "| win rate %, ours / SC2 paper | " + " | ".join(PAPER_MAPS) + " |",
        "|---|" + "---|" * len(PAPER_MAPS),
    ]
    for alg in TABLE1_ALGS:
        cells = []
        for map_name in PAPER_MAPS:
            final = root / "results" / "table1" / f"{alg}_{map_name}_sight0" / "final_eval.json"
            ours = (
                f"{100 * json.loads(final.read_text())['win_rate_mean']:.1f}"
                if final.is_file()
                else "*running*"
            )
            cells.append(f"{ours} / {PAPER_TABLE1[alg][map_name]:.1f}")
        lines.append(f"| {alg} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table1_sections(root: Path) -> str:
    """Table 1 and what follows it up to the curves, from results/table1/RESULTS.md, each
    heading one level down (they sit under a heading of results/RESULTS.md)."""
    text = (root / "results" / "table1" / "RESULTS.md").read_text()
    first, last = TABLE1_SECTIONS
    if first not in text or last not in text:
        raise ValueError(f"results/table1/RESULTS.md lacks {first!r} or {last!r}")
    body = text.split(first, 1)[1].split(last, 1)[0]
    return re.sub(r"^## ", "### ", first + body, flags=re.MULTILINE).strip()


def compute_table(root: Path) -> str:
    """Per sweep: its cells with a final evaluation of those its file plans, the other run
    folders under its results (fig3_lossy's imitation learners), the env steps (x seeds) all of
    them reached, their training hours (each run's own clock, summed) and the wall hours of the
    queue that ran them two at a time (half the training hours: both slots stay busy)."""
    lines = [
        "| sweep | cells finished / planned | other runs | env steps x seeds | training hours "
        "| wall hours, 2 runs at a time |",
        "|---|---|---|---|---|---|",
    ]
    total_hours = 0.0
    for sweep_file in sweep_files(root):
        sweep = parse_sweep(yaml.safe_load(sweep_file.read_text()), sweep_file.read_text())
        folder = sweep_results(root, sweep.name)
        found = find_run_folders([str(folder)]) if folder.is_dir() else []
        runs = [load_run(path, display) for path, display in found]
        runs = [run for run in runs if run is not None]
        cell_folders = {str(folder / cell.name) for cell in sweep.cells}
        finished = sum(run.status == FINAL and run.folder in cell_folders for run in runs)
        others = sum(run.folder not in cell_folders for run in runs)
        steps = sum(run.t_env * len(run.seeds) for run in runs)
        hours = sum(run.train_hours or 0.0 for run in runs)
        total_hours += hours
        lines.append(
            f"| `{sweep.name}` | {finished} / {len(sweep.cells)} | {others} | {steps:,} "
            f"| {hours:.1f} | {hours / 2:.1f} |"
        )
    lines.append(f"| all | | | | {total_hours:.1f} | {total_hours / 2:.1f} |")
    return "\n".join(lines)


def write_blocks(root: Path) -> list[Path]:
    """Rewrite the generated blocks of results/RESULTS.md, README.md and experiments/README.md
    (its compute table); returns the files."""
    compute = compute_table(root)
    results_md = root / "results" / "RESULTS.md"
    text = results_md.read_text()
    text = replace_block(text, "table1", table1_sections(root))
    text = replace_block(text, "compute", compute)
    results_md.write_text(text)
    readme = root / "README.md"
    readme.write_text(replace_block(readme.read_text(), "readme", readme_table1(root)))
    experiments_md = root / "experiments" / "README.md"
    experiments_md.write_text(replace_block(experiments_md.read_text(), "compute", compute))
    return [results_md, readme, experiments_md]


# ---------------------------------------------------------------------------------- main
def regenerate(root: Path, write=print) -> bool:
    """Every sweep's report commands, then the blocks, in ``root``; False if a report failed.
    A command whose input folders are not there yet or not complete (a sweep still running)
    is left out."""
    ok = True
    for sweep_file in sweep_files(root):
        commands = report_commands(sweep_file)
        name = sweep_file.stem
        if not commands:
            write(f"{name}: no igmda report command in its header")
            continue
        if not any(sweep_results(root, name).glob("**/final_eval.json")):
            write(f"{name}: left out until one of its own runs has finished")
            continue
        for command in commands:
            missing = [path for path in command_inputs(command, root) if not ready(root / path)]
            if missing:
                write(f"{name}: left out until {', '.join(missing)} are complete: {command}")
                continue
            result = run_report(command, root)
            if result.returncode != 0:
                write(f"{name}: FAILED: {command}\n{result.stderr.strip()}")
                ok = False
            else:
                write(f"{name}: {result.stdout.strip()}")
    for path in write_blocks(root):
        write(f"rewrote the generated blocks of {path.relative_to(root)}")
    return ok


def differing_files(left: Path, right: Path) -> list[str]:
    """Files (relative paths) that differ between two trees or exist in one only."""
    out = []
    comparison = filecmp.dircmp(left, right)
    stack = [(comparison, Path())]
    while stack:
        node, prefix = stack.pop()
        out += [str(prefix / name) for name in node.left_only + node.right_only]
        _, mismatch, errors = filecmp.cmpfiles(
            node.left, node.right, node.common_files, shallow=False
        )
        out += [str(prefix / name) for name in mismatch + errors]
        stack += [(sub, prefix / name) for name, sub in node.subdirs.items()]
    return sorted(out)


def check(root: Path, write=print) -> bool:
    """Regenerate in a scratch copy of results/, README.md and experiments/; True when every
    file is byte-identical to the committed one."""
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch)
        shutil.copytree(root / "results", copy / "results")
        shutil.copytree(root / "experiments", copy / "experiments")
        shutil.copy(root / "README.md", copy / "README.md")
        ok = regenerate(copy, write)
        differ = [f"results/{name}" for name in differing_files(root / "results", copy / "results")]
        for name in ("README.md", "experiments/README.md"):
            if not filecmp.cmp(root / name, copy / name, shallow=False):
                differ.append(name)
    for name in differ:
        write(f"differs: {name}")
    write("byte-identical" if ok and not differ else "NOT identical")
    return ok and not differ


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="regenerate in a scratch copy and compare"
    )
    args = parser.parse_args(argv)
    ok = check(ROOT) if args.check else regenerate(ROOT)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
