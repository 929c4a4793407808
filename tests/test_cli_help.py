"""`igmda --help` lists every subcommand; `igmda COMMAND --help` works for each of them."""

from __future__ import annotations

import pytest

from igmda_jax import cli


def test_top_level_help_lists_every_command_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli.main(["--help"])
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line[:2] == "  "]
    assert listed == list(cli.COMMANDS)
    for name in ("train", "imitate", "eval", "sweep", "report", "bench"):
        assert name in listed


def test_no_command_prints_the_list_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main([])
    assert stop.value.code == 2 and "train" in capsys.readouterr().out


def test_unknown_command_is_one_line_naming_the_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(["trian"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert "'trian'" in err and "train" in err


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_command_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main([name, "--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0
    assert "usage" in out.lower() and name in out
