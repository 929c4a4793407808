"""Installs that cannot break: XLA flags only where the installed XLA knows them, nothing on
stdout at import (machine-readable output stays valid), declared requirements that hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import envs

REPO = Path(__file__).resolve().parents[1]
MADE_UP_FLAG = "--xla_igmda_made_up_flag_for_tests=true"


def _run_python(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code``: see :func:`_run`."""
    return _run(["-c", textwrap.dedent(code)], tmp_path, **env)


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python *args`` from the repository without the XLA_FLAGS of this process, with its
    own flag cache under ``tmp_path``; ``env`` adds variables."""
    environ = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    environ["PYTHONPATH"] = os.pathsep.join([str(REPO), environ.get("PYTHONPATH", "")])
    environ["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    environ.update(env)
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


# ------------------------------------------------------------------------------------ XLA flags


def test_xla_aborts_on_an_unknown_flag(tmp_path: Path) -> None:
    """Why flags are checked: with a flag it does not know, XLA kills the process."""
    proc = _run_python(
        "import jax; jax.devices()", tmp_path, XLA_FLAGS=MADE_UP_FLAG, IGMDA_XLA_DEFAULTS="1"
    )
    assert proc.returncode != 0
    assert "Unknown flag" in proc.stderr, proc.stderr[-2000:]


def test_unknown_flag_in_our_list_is_skipped(tmp_path: Path) -> None:
    """A made-up flag in envs' flag list: the import-time setup still works, leaves that flag
    out of XLA_FLAGS and keeps the known ones; the backend then starts."""
    code = f"""
        import os
        os.environ["IGMDA_XLA_DEFAULTS"] = "1"  # import envs without its setup...
        import envs
        envs._XLA_CPU_FLAGS = ({MADE_UP_FLAG!r}, *envs._XLA_CPU_FLAGS)
        del os.environ["IGMDA_XLA_DEFAULTS"]
        envs._configure_xla()  # ...then run it as the import does, on the patched list
        import jax
        assert jax.devices()  # XLA reads XLA_FLAGS here
        print(os.environ["XLA_FLAGS"])
    """
    proc = _run_python(code, tmp_path, IGMDA_CPU_DEVICES="2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    flags = proc.stdout.split()
    assert MADE_UP_FLAG not in flags
    assert "--xla_cpu_multi_thread_eigen=false" in flags
    assert "--xla_cpu_enable_concurrency_optimized_scheduler=false" in flags
    assert "--xla_force_host_platform_device_count=2" in flags
    assert (tmp_path / "cache" / "igmda-jax" / "xla_flags.json").is_file()


def test_known_flags_are_cached_per_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    names = ("xla_cpu_multi_thread_eigen", "xla_igmda_made_up_flag_for_tests")
    scan = envs._known_xla_flags.__wrapped__  # without the in-process cache
    assert scan(names) == {"xla_cpu_multi_thread_eigen"}
    cache = json.loads((tmp_path / "igmda-jax" / "xla_flags.json").read_text())
    assert any(entry["holds"]["xla_cpu_multi_thread_eigen"] for entry in cache.values())

    def no_scan(path: Path, names: object) -> dict[str, bool]:
        raise AssertionError(f"{path} scanned again")

    monkeypatch.setattr(envs, "_library_holds", no_scan)
    assert scan(names) == {"xla_cpu_multi_thread_eigen"}


def test_flags_set_by_the_user_win() -> None:
    user = "--xla_cpu_multi_thread_eigen=true --xla_dump_to=/tmp/x"
    assert envs._with_known_flags(user, ["--xla_cpu_multi_thread_eigen=false"]) == user
    assert envs._with_known_flags("", [MADE_UP_FLAG]) == ""


def test_bad_device_count_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IGMDA_CPU_DEVICES", "two")
    with pytest.raises(ValueError, match="IGMDA_CPU_DEVICES must be a positive integer"):
        envs._default_xla_flags()


# --------------------------------------------------------------------------- nothing on stdout


def test_stdout_silenced_at_the_descriptor_and_restored_on_error(tmp_path: Path) -> None:
    code = """
        import os, envs
        try:
            with envs._stdout_silenced():
                print("from python")
                os.write(1, b"from fd 1\\n")
                raise KeyError
        except KeyError:
            pass
        print("after", flush=True)
        os.write(1, b"fd 1 after\\n")
    """
    proc = _run_python(code, tmp_path, IGMDA_XLA_DEFAULTS="1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == "after\nfd 1 after\n"


def test_imports_print_nothing(tmp_path: Path) -> None:
    proc = _run_python("import envs, igmda_jax", tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == ""
    # jaxmarl (it prints on import) reached directly through envs.smax_maps, as run.py does
    code = """
        import envs.smax_maps, jaxmarl
        assert type(jaxmarl.__loader__).__name__ != "_QuietLoader", jaxmarl.__loader__
    """
    proc = _run_python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == ""


def test_envs_json_is_valid_json(tmp_path: Path) -> None:
    proc = _run(["-m", "igmda_jax.cli", "envs", "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout)
    assert {"3m", "8m_vs_9m", "MMM2"} <= {row["map"] for row in rows}


# ------------------------------------------------------------------------------- requirements


def _declared_requirements() -> list[Requirement]:
    """Core and ``test`` requirements of pyproject.toml."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    return [Requirement(text) for text in declared]


def test_installed_versions_satisfy_the_declared_requirements() -> None:
    unmet = [
        f"{req} (installed {metadata.version(req.name)})"
        for req in _declared_requirements()
        if not req.specifier.contains(metadata.version(req.name), prereleases=True)
    ]
    assert not unmet, unmet


def test_rlax_is_a_test_dependency_only() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not [r for r in project["dependencies"] if Requirement(r).name == "rlax"]
    assert "rlax" in {Requirement(r).name for r in project["optional-dependencies"]["test"]}
