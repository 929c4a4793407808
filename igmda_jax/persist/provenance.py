"""Which code a run executes: ``DIR/provenance.json`` records the git commit (and whether the
checkout had uncommitted changes), the igmda-jax and JAX versions a run started with, and
those of every resume; a resume under other code gets a warning naming both commits, so a
curve that mixes two numeric paths does not do so silently."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import jax


def code_version() -> dict[str, Any]:
    """The code a run executes: the git commit of the igmda-jax checkout (None when installed
    without one), whether it had uncommitted changes, and the igmda-jax and JAX versions."""
    import igmda_jax  # the package's own location (imported here: it is our parent)

    source = Path(igmda_jax.__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(source), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "commit": commit,
        "dirty": bool(status),
        "igmda_jax": importlib.metadata.version("igmda-jax"),
        "jax": jax.__version__,
    }


def record_provenance(out: Path, resume: bool) -> str | None:
    """Write ``out/provenance.json`` (the code a run started with, and each resume's) and
    return a warning when a resume runs other code than the run started with."""
    path = out / "provenance.json"
    now = {**code_version(), "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if not resume or not path.exists():
        path.write_text(json.dumps({"started": now, "resumed": []}, indent=1))
        return None
    record = json.loads(path.read_text())
    record["resumed"].append(now)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)
    started = record["started"]
    if (started["commit"], started["dirty"]) == (now["commit"], now["dirty"]):
        return None

    def name(v: dict[str, Any]) -> str:
        return f"{v['commit'] or 'unknown'}{' (uncommitted changes)' if v['dirty'] else ''}"

    return (
        f"warning: {out} started under commit {name(started)} and resumes under "
        f"{name(now)}; if the numeric path changed, its curve mixes two versions"
    )
