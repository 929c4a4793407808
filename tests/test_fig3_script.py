"""experiments/fig3_lossy.sh's control flow, with a stand-in for python that records each igmda
command and writes the files a real one would (no training): the learners as separate jobs,
their small outputs kept in results/ as each finishes, reuse from results/ on a new checkout,
the retrain of a lost expert and its reproduction check, and a failing learner."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAPS = ("3s5z", "5m_vs_6m")

# python -c CODE ... runs the real interpreter; python -m igmda_jax.cli CMD ... is emulated
STAND_IN = f"""#!/usr/bin/env bash
if [[ $1 == -c ]]; then exec {sys.executable} "$@"; fi
shift 2; cmd=$1; shift
echo "$cmd $*" >> calls.log
arg() {{ local key=$1; shift; while (($#)); do [[ $1 == "$key" ]] && {{ echo "$2"; return; }}; shift; done; }}
case $cmd in
  train)
    out=$(arg --out "$@"); map=$(arg --map "$@"); mkdir -p "$out/checkpoints"
    echo "{{\\"map\\": \\"$map\\"}}" > "$out/config.json"
    printf '{{"t_env": 1, "wall_time": 7.5}}\\n' > "$out/metrics.jsonl"
    if [[ $map == "${{DIFFERENT_EXPERT:-}}" ]]; then echo '{{"t_env": 2}}' >> "$out/metrics.jsonl"; fi;;
  imitate)
    out=$(arg --out "$@"); expert=$(arg --expert "$@")
    [[ -d $expert/checkpoints ]] || {{ echo "no checkpoint" >&2; exit 2; }}
    sights=(); on=0
    for a in "$@"; do
      [[ $a == --sight-range ]] && {{ on=1; continue; }}; [[ $a == --* ]] && on=0
      if ((on)); then sights+=("$a"); fi
    done
    if ((${{#sights[@]}} == 1)); then
      s=${{sights[0]}}
      [[ $s == "${{FAILING_SIGHT:-}}" && $expert == *"${{FAILING_MAP:-}}"* ]] && exit 3
      mkdir -p "$out/sight_$s/checkpoints"; touch "$out/sight_$s/checkpoints/weights.bin"
      for f in config.json imitation.json values.json; do echo '{{}}' > "$out/sight_$s/$f"; done
      echo '{{}}' > "$out/sight_$s/metrics.jsonl"
    else
      for s in "${{sights[@]}}"; do [[ -f $out/sight_$s/values.json ]] || exit 4; done
      echo '{{}}' > "$out/summary.json"; echo png > "$out/values.png"
    fi;;
esac
exit 0
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout with the script and the committed experts (config and metrics)."""
    (tmp_path / "experiments").mkdir()
    shutil.copy(ROOT / "experiments" / "fig3_lossy.sh", tmp_path / "experiments")
    for map_name in MAPS:
        expert = tmp_path / "results" / "fig3_lossy" / f"qmix_{map_name}_sightdefault"
        expert.mkdir(parents=True)
        (expert / "config.json").write_text(json.dumps({"map": map_name}) + "\n")
        (expert / "metrics.jsonl").write_text('{"t_env": 1, "wall_time": 3.25}\n')
    python = tmp_path / "python"
    python.write_text(STAND_IN)
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    return tmp_path


def run_script(checkout: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    (checkout / "calls.log").unlink(missing_ok=True)
    done = subprocess.run(
        ["bash", "experiments/fig3_lossy.sh"],
        cwd=checkout,
        env={**os.environ, "PYTHON": str(checkout / "python"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done, (checkout / "calls.log").read_text().splitlines()


def committed(checkout: Path) -> list[str]:
    folder = checkout / "results" / "fig3_lossy"
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def sight_jobs(calls: list[str]) -> list[str]:
    """'MAP SIGHT' of each single-sight `igmda imitate` call."""
    jobs = []
    for call in calls:
        words = call.split()
        if words[0] == "imitate" and words[5] == "--out":
            expert = Path(words[2]).name.removeprefix("qmix_").removesuffix("_sightdefault")
            jobs.append(f"{expert} {words[4]}")
    return sorted(jobs)


def test_learners_run_as_jobs_and_a_new_checkout_reuses_finished_ones(checkout: Path) -> None:
    done, calls = run_script(checkout)
    assert done.returncode == 0, done.stderr
    # a new checkout: both experts are retrained and reproduce the committed ones exactly
    assert [c.split()[0] for c in calls[:3]] == ["sweep", "train", "train"]
    assert done.stdout.count("reproduces") == 2
    assert sight_jobs(calls) == sorted(f"{m} {s}" for m in MAPS for s in ("9", "2", "0"))
    assert sum(" 9 2 0 " in c for c in calls) == 2  # one summary per map, over every sight
    files = committed(checkout)
    for map_name in MAPS:
        assert f"imitate_{map_name}/summary.json" in files
        assert f"imitate_{map_name}/values.png" in files
        for sight in ("9", "2", "0"):
            assert f"imitate_{map_name}/sight_{sight}/values.json" in files
    assert not any("checkpoints" in f for f in files)

    # nothing left: only the (skipping) sweep runs
    _, calls = run_script(checkout)
    assert [c.split()[0] for c in calls] == ["sweep"]

    # a new checkout with one learner and a summary still to do: only that map's expert is
    # retrained, only that learner trains, the others come back from results/
    shutil.rmtree(checkout / "runs")
    shutil.rmtree(checkout / "results" / "fig3_lossy" / "imitate_3s5z" / "sight_2")
    (checkout / "results" / "fig3_lossy" / "imitate_3s5z" / "summary.json").unlink()
    done, calls = run_script(checkout)
    assert done.returncode == 0, done.stderr
    assert [c.split()[0] for c in calls] == ["sweep", "train", "imitate", "imitate"]
    assert "--map 3s5z" in calls[1]
    assert sight_jobs(calls) == ["3s5z 2"]
    assert (checkout / "runs" / "fig3_lossy" / "imitate_3s5z" / "sight_9" / "values.json").exists()


def test_a_retrained_expert_that_differs_stops_the_script(checkout: Path) -> None:
    done, calls = run_script(checkout, DIFFERENT_EXPERT="5m_vs_6m")
    assert done.returncode != 0
    assert "retrained 5m_vs_6m expert" in done.stderr and "differs" in done.stderr
    assert "rm -r results/fig3_lossy/qmix_5m_vs_6m_sightdefault" in done.stderr
    assert not any(c.startswith("imitate") for c in calls)


def test_a_failing_learner_fails_the_script_after_the_others(checkout: Path) -> None:
    done, calls = run_script(checkout, FAILING_SIGHT="2")
    assert done.returncode == 1
    assert "a learner failed" in done.stderr
    assert len(sight_jobs(calls)) == 6  # the other learners still ran and were kept
    assert "imitate_3s5z/sight_0/values.json" in committed(checkout)
    assert not (checkout / "results" / "fig3_lossy" / "imitate_3s5z" / "summary.json").exists()


def test_a_map_whose_learners_all_finished_is_summarised_when_another_fails(
    checkout: Path,
) -> None:
    done, calls = run_script(checkout, FAILING_SIGHT="2", FAILING_MAP="5m_vs_6m")
    assert done.returncode == 1 and "a learner failed" in done.stderr
    assert sum(" 9 2 0 " in c for c in calls) == 1 and "qmix_3s5z" in calls[-1]
    files = committed(checkout)
    assert "imitate_3s5z/summary.json" in files and "imitate_5m_vs_6m/summary.json" not in files
