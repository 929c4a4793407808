"""The README and docs/ stay true: the site builds with ``mkdocs build --strict``, the README is
short, starts with the two commands and shows Table 1 as committed, and every command in a
fenced ``bash`` block runs as written (quick blocks) or at least parses (the others).

Marking convention (docs/contributing.md): a ``bash`` block whose opening fence follows the
line ``<!-- docs-test: quick -->`` is quick: each of its commands is run as written, in a
scratch folder holding copies of ``experiments/`` and ``results/``, and must exit 0. In every
other block each ``igmda`` command must name a subcommand of ``igmda --help`` and use only
``--flags`` that its ``--help`` shows; ``python experiments/X.py`` commands must name a script
that has each flag. Other lines (``pip``, ``export``, ...) are not checked."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from igmda_jax.reports.paper import PAPER_TABLE1
from igmda_jax.tools import bench

ROOT = Path(__file__).resolve().parents[1]
QUICK = "<!-- docs-test: quick -->"
# .ci/run greps the line containing pip install '.[test]' and runs it verbatim.
README_COMMANDS = (
    "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/igmda train",
    "python3 -m venv .venv && .venv/bin/pip install '.[test]' && .venv/bin/python -m pytest -q -n auto",
)
README_MAX_LINES = 200


@dataclass(frozen=True)
class Command:
    """One command of a fenced bash block: where it is, its text, whether its block is quick."""

    where: str
    text: str
    quick: bool


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def bash_blocks(text: str) -> list[tuple[int, list[str], bool]]:
    """(line number of the opening fence, the block's lines, quick) of every bash block."""
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.fullmatch(r"\s*(`{3,})\s*(bash|sh|shell)\s*", lines[i])
        if not fence:
            i += 1
            continue
        quick = i > 0 and lines[i - 1].strip() == QUICK
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence.group(1)):
            end += 1
        blocks.append((i + 1, lines[i + 1 : end], quick))
        i = end + 1
    return blocks


def block_commands(lines: list[str]) -> list[str]:
    """The commands of a block: continuation lines joined, comments and blanks dropped, each
    ``a && b`` split in two."""
    joined, current = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        joined.append(current + line)
        current = ""
    commands = []
    for line in joined:
        body = line.strip()
        if body and not body.startswith("#"):
            commands += [part.strip() for part in body.split("&&")]
    return commands


def all_commands() -> list[Command]:
    found = []
    for path in doc_files():
        for line_no, lines, quick in bash_blocks(path.read_text()):
            where = f"{path.relative_to(ROOT)}:{line_no}"
            found += [Command(where, text, quick) for text in block_commands(lines)]
    return found


def argv_of(command: str) -> list[str]:
    """The words of a command without leading ``VAR=value`` assignments and ``nice -n N``."""
    words = shlex.split(command, comments=True)
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", words[0]):
        words = words[1:]
    if words[:1] == ["nice"]:
        words = words[3:] if words[1:2] == ["-n"] else words[1:]
    return words


def flags_of(words: list[str]) -> list[str]:
    return [word.split("=", 1)[0] for word in words if word.startswith("--")]


def has_flag(text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


def igmda_env() -> dict[str, str]:
    """This process's environment with the venv's ``igmda`` first on the PATH."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "COLUMNS": "200"}  # wide: no wrapped flags in --help


def run_help(subcommand: str | None) -> str:
    """``igmda [SUBCOMMAND] --help`` through the installed command; it must exit 0."""
    argv = ["igmda", "--help"] if subcommand is None else ["igmda", subcommand, "--help"]
    result = subprocess.run(argv, env=igmda_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(argv)}: {result.stderr[-2000:]}"
    return result.stdout


@functools.cache
def subcommands() -> tuple[str, ...]:
    """The subcommands ``igmda --help`` lists (its indented lines)."""
    lines = run_help(None).splitlines()
    return tuple(line.split()[0] for line in lines if line.startswith("  ") and line.strip())


@functools.cache
def help_texts() -> dict[str, str]:
    """``igmda SUBCOMMAND --help`` of every subcommand, two at a time."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(subcommands(), pool.map(run_help, subcommands()), strict=True))


def subcommands_help(sub: str | None) -> str:
    """What a command's flags are checked against: its subcommand's --help (``igmda imitate``
    takes Config fields too: also ``igmda train --help``)."""
    if sub is None:
        return run_help(None)
    texts = help_texts()
    return texts[sub] + (texts["train"] if sub == "imitate" else "")


COMMANDS = all_commands()
QUICK_COMMANDS = [c for c in COMMANDS if c.quick]
OTHER_COMMANDS = [c for c in COMMANDS if not c.quick]


# ------------------------------------------------------------------------------------- the site


def test_mkdocs_builds_strictly(tmp_path: Path) -> None:
    """Every page in the nav, no broken link, no warning."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "index.html").is_file()


# ----------------------------------------------------------------------------------- the README


def test_readme_is_short_and_starts_with_the_two_commands() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"
    assert lines[0].startswith("# ")
    opening = next(i for i, line in enumerate(lines) if line.strip())
    fence = next(i for i, line in enumerate(lines) if i > opening and line.strip())
    assert lines[fence] == "```bash"
    assert tuple(lines[fence + 1 : fence + 3]) == README_COMMANDS
    assert lines[fence + 3] == "```"
    # what .ci/run runs: the first line containing pip install '.[test]'
    ci_line = next(line for line in lines if "pip install '.[test]'" in line)
    assert ci_line == README_COMMANDS[1]


def test_readme_cli_lists_every_subcommand() -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## The CLI at a glance", 1)[1].split("\n## ", 1)[0]
    _, lines, _ = bash_blocks(section)[0]
    listed = [argv_of(line)[1] for line in block_commands(lines)]
    assert listed == list(subcommands())


def test_readme_links_resolve() -> None:
    text = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if not re.match(r"[a-z]+://", target):
            assert (ROOT / target).exists(), f"README.md links to missing {target}"


def test_readme_table1_is_the_committed_results() -> None:
    """Each of our cells is the mean final win rate of results/table1/<alg>_<map>_sight0
    (running: no final_eval.json yet); each paper cell is igmda report's copy of the paper."""
    text = (ROOT / "README.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| win rate %"))
    rows = [line for line in text.splitlines() if line.startswith("| ") and " / " in line]
    rows.remove(header)
    maps = [cell.strip() for cell in header.strip("|").split("|")[1:]]
    paper = PAPER_TABLE1
    assert {row.strip("|").split("|")[0].strip() for row in rows} == set(paper)
    for row in rows:
        alg, *cells = (cell.strip() for cell in row.strip("|").split("|"))
        assert len(cells) == len(maps), row
        for map_name, cell in zip(maps, cells, strict=True):
            ours, theirs = (part.strip() for part in cell.split(" / "))
            assert float(theirs) == paper[alg][map_name], (alg, map_name, cell)
            final = ROOT / "results" / "table1" / f"{alg}_{map_name}_sight0" / "final_eval.json"
            if ours == "*running*":
                assert not final.exists(), f"{alg} {map_name} finished: show it in the README"
            else:
                mean = json.loads(final.read_text())["win_rate_mean"]
                assert ours == f"{100 * mean:.1f}", (alg, map_name, ours, mean)


def test_benchmark_tables_are_generated_from_results() -> None:
    """docs/benchmarks.md's tables are markdown(results/bench.json), not typed by hand
    (``igmda bench --readme docs/benchmarks.md`` rewrites them)."""
    report = json.loads((ROOT / "results" / "bench.json").read_text())
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    assert bench.replace_block(page, bench.markdown(report)) == page


# ---------------------------------------------------------------------------------- commands


def test_every_subcommand_help_runs() -> None:
    """``igmda --help`` and ``igmda SUBCOMMAND --help`` for each, as a user types them."""
    assert "render" in subcommands() and "train" in subcommands()
    for name, text in help_texts().items():
        assert "usage" in text.lower() and name in text, name


def test_the_docs_have_commands_of_both_kinds() -> None:
    assert QUICK_COMMANDS and OTHER_COMMANDS
    assert any(argv_of(c.text)[:2] == ["igmda", "--help"] for c in QUICK_COMMANDS)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder to run quick commands in: copies of experiments/ and results/."""
    folder = tmp_path_factory.mktemp("docs-commands")
    for name in ("experiments", "results"):
        shutil.copytree(ROOT / name, folder / name)
    return folder


@pytest.mark.parametrize(
    "command", QUICK_COMMANDS, ids=lambda c: f"{c.where} {c.text.split(' #')[0].strip()}"
)
def test_quick_command_runs_as_written(command: Command, scratch: Path) -> None:
    result = subprocess.run(
        ["bash", "-c", command.text],
        cwd=scratch,
        env=igmda_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"{command.where}: {command.text}\n{result.stderr[-3000:]}"


@pytest.mark.parametrize(
    "command", OTHER_COMMANDS, ids=lambda c: f"{c.where} {c.text.split(' #')[0].strip()}"
)
def test_command_parses(command: Command) -> None:
    """igmda: the subcommand exists and its --help shows every flag used; python
    experiments/X.py (or -m module): the script exists and mentions every flag used."""
    words = argv_of(command.text)
    program = words[0] if words else ""
    where = f"{command.where}: {command.text}"
    if program == "igmda" or program.endswith("/igmda"):
        sub = next((w for w in words[1:2] if not w.startswith("-")), None)
        if sub is not None:
            assert sub in subcommands(), f"{where}: no subcommand {sub!r}"
        helps = subcommands_help(sub)
        for flag in flags_of(words):
            assert has_flag(helps, flag), f"{where}: `igmda {sub} --help` has no {flag}"
    elif re.fullmatch(r"(\S*/)?python3?", program) and words[1:2] and words[1].endswith(".py"):
        script = ROOT / words[1]
        assert script.is_file(), f"{where}: no {words[1]}"
        for flag in flags_of(words[2:]):
            assert has_flag(script.read_text(), flag), f"{where}: {words[1]} has no {flag}"
    elif re.fullmatch(r"(\S*/)?python3?", program) and words[1:2] == ["-m"] and words[2:]:
        module = words[2]
        if module.split(".")[0] in ("igmda_jax", "envs"):
            spec = importlib.util.find_spec(module)
            assert spec is not None and spec.origin, f"{where}: no module {module}"
            for flag in flags_of(words[3:]):
                assert has_flag(Path(spec.origin).read_text(), flag), f"{where}: no {flag}"
