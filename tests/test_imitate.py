"""Tests of `igmda imitate`: a frozen expert, learners at several sight ranges, the outputs,
and the refusals (missing run/checkpoint, another map, shapes the expert fixes)."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

import envs
from igmda_jax.cli import main
from igmda_jax.compiled import compile_trainer
from igmda_jax.core.config import ConfigError
from igmda_jax.core.presets import make_config
from igmda_jax.fused.learner import make_optimizer, update
from igmda_jax.fused.rollout import collect
from igmda_jax.fused.train import make_train
from igmda_jax.run import run
from igmda_jax.tools import imitate as im
from igmda_jax.tools import imitation_report as report
from igmda_jax.tools import imitation_setup as setup
from igmda_jax.tools import imitation_values
from igmda_jax.tools.evaluate import evaluate_run

# unroll_windows=1: the update compiles one unroll, not four (compiles faster);
# tests/test_unroll_windows.py checks the windowed default against it.
TINY = dict(
    n_envs=4,
    batch_size=8,
    buffer_size=32,
    hidden_dim=16,
    mixer_embed=8,
    hypernet_embed=16,
    iterations_per_call=4,
    test_interval=1_000_000,
    test_nepisode=4,
    unroll_windows=1,
)
T_MAX = 150  # hidden_cue: 6 steps x 4 envs x 4 iterations = 96 steps per chunk -> 2 chunks
SIGHTS = [0.0, None]
FINAL_EPISODES = 6  # the final evaluation's episodes per seed (not the tests' 4)


def same_tree(a, b) -> bool:
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.fixture(scope="module")
def expert_dir(tmp_path_factory) -> Path:
    """A tiny plain QMIX run on hidden_cue at full sight, 2 seeds (made by run.run)."""
    out = tmp_path_factory.mktemp("expert") / "qmix"
    config = make_config("smax", alg="qmix", map="hidden_cue", t_max=T_MAX, seeds=2, **TINY)
    run(config, out, progress=False)
    return out


@pytest.fixture(scope="module")
def imitation(expert_dir: Path, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("imitate") / "out"
    summary = im.imitate(
        expert_dir,
        SIGHTS,
        out,
        t_max=T_MAX,
        overrides={"test_nepisode": 4},
        value_episodes=4,
        final_eval_episodes=FINAL_EPISODES,
        progress=False,
    )
    return out, summary


def test_td_weight_zero_leaves_expert_and_mixer_exactly_unchanged(expert_dir, imitation) -> None:
    """RMSprop updates from an imitation state (Adam: the end-to-end test, smax preset)."""
    out, _ = imitation
    config, state, _ = setup.restore_imitation(out / "sight_0")
    config = dataclasses.replace(config, optimizer="rmsprop")
    env = setup.imitation_env(config, setup.read_expert(expert_dir))
    trainer = make_train(config, env)
    params, target = jax.tree.map(lambda x: x[0], (state.params, state.target_params))
    batch, _ = collect(env, trainer.nets, config, params, jax.random.PRNGKey(1), 8, 1.0, 0.0)
    _, observe = envs.spec.recorder(env)
    opt = make_optimizer(config)

    @jax.jit
    def step(params, opt_state, key):
        params, opt_state, _ = update(
            params, target, opt_state, batch, key, config, trainer.nets, observe, opt
        )
        return params, opt_state

    new, opt_state = params, opt.init(params)
    for i in range(3):
        new, opt_state = step(new, opt_state, jax.random.PRNGKey(10 + i))
    assert same_tree(new["agent"], params["agent"])
    assert same_tree(new["mixer"], params["mixer"])
    assert not same_tree(new["learner"], params["learner"])


def test_td_weight_validation() -> None:
    with pytest.raises(ConfigError, match="td_weight must be >= 0"):
        make_config(alg="qmix-da", td_weight=-1.0)
    with pytest.raises(ConfigError, match="trains nothing"):
        make_config(alg="qmix", td_weight=0.0)


def test_value_distributions_state_types_average_expert_one_hots() -> None:
    # 4 decisions of one state type; the expert's greedy actions 0, 0, 1, 2 (Prop. 5 target)
    expert_q = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    learner_q = np.tile([0.5, 0.25, 0.25], (4, 1))
    avail = np.ones((4, 3), bool)
    values = imitation_values.value_distributions(expert_q, learner_q, avail, ["a", "b", "c"])
    kind = values["state_types"][0]
    assert kind["count"] == 4 and kind["fraction"] == 1.0
    np.testing.assert_allclose(kind["expert_greedy_freq"], [0.5, 0.25, 0.25])
    np.testing.assert_allclose(kind["learner_q_mean"], [0.5, 0.25, 0.25])
    assert values["agreement"] == 0.5
    assert values["per_action"][0]["expert_q"]["mean"] == 0.5
    assert sum(values["histograms"]["learner"]["counts"][1]) == 4


def test_imitation_keeps_expert_frozen_and_trains_learners(expert_dir, imitation) -> None:
    out, _ = imitation
    expert = setup.load_expert(expert_dir)
    for sight in SIGHTS:
        config, state, info = setup.restore_imitation(out / f"sight_{report.sight_label(sight)}")
        assert config.alg == "qmix-da" and config.td_weight == 0.0
        assert config.optimizer == "adam"  # zero gradients leave Adam's parameters unchanged
        assert config.sight_range == sight and config.expert_view == "full_obs"
        assert info["expert_sight_range"] is None  # the expert run's sight range
        for name in ("agent", "mixer"):
            assert same_tree(state.params[name], expert.params[name])
            assert same_tree(state.target_params[name], expert.params[name])
        assert (np.asarray(state.updates) > 0).all()
        compiled = compile_trainer(config, setup.imitation_env(config, expert))
        fresh = compiled.init(setup.imitation_keys(config))
        for seed in range(config.seeds):
            learned = jax.tree.map(lambda x, s=seed: x[s], state.params["learner"])
            initial = jax.tree.map(lambda x, s=seed: x[s], fresh.params["learner"])
            assert not same_tree(learned, initial)


def test_imitation_outputs(expert_dir, imitation) -> None:
    out, summary = imitation
    for name in (
        "summary.json",
        "summary.csv",
        "values.json",
        "values.png",
        "curves.png",
        "RESULTS.md",
    ):
        assert (out / name).exists(), name
    assert (out / "values.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    sights = summary["sight_ranges"]
    assert [s["sight_range"] for s in sights] == SIGHTS
    for s in sights:
        assert len(s["per_seed"]) == 2
        for seed in s["per_seed"]:
            assert 0.0 <= seed["imitation_accuracy"] <= 1.0
            assert 0.0 <= seed["learner_win_rate"] <= 1.0
            assert seed["t_env"] >= T_MAX
        rows = [json.loads(line) for line in (Path(s["run_dir"]) / "metrics.jsonl").open()]
        assert {"win_rate", "expert_win_rate", "imitation_accuracy", "agreement"} <= set(rows[-1])
    for s in sights:  # the summary's win rates are the final evaluation's
        final = json.loads((Path(s["run_dir"]) / "final_eval.json").read_text())
        assert final["episodes_per_seed"] == s["final_eval_episodes"] == FINAL_EPISODES
        assert [seed["learner_win_rate"] for seed in s["per_seed"]] == final["win_rate_per_seed"]
        assert [seed["expert_win_rate"] for seed in s["per_seed"]] == final[
            "expert_win_rate_per_seed"
        ]
    # the same frozen expert on the same evaluation episodes, whatever the learners' sight, and
    # as `igmda eval` of the expert's own run folder plays them
    assert sights[0]["expert_win_rate"] == sights[1]["expert_win_rate"]
    own = evaluate_run(expert_dir, episodes=FINAL_EPISODES)
    assert [seed["expert_win_rate"] for seed in sights[0]["per_seed"]] == own["win_rate_per_seed"]
    final = json.loads((Path(sights[0]["run_dir"]) / "final_eval.json").read_text())
    np.testing.assert_allclose(final["expert_return_per_seed"], own["return_per_seed"], rtol=1e-6)
    with (out / "summary.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 2 * 3 and [row["seed"] for row in table[:3]] == ["0", "1", "mean"]
    values = json.loads((out / "values.json").read_text())
    assert len(values) == 2 and values[0]["decisions"] > 0
    assert len(values[0]["per_action"]) == 3 and values[0]["state_types"]


REDRAWN = ("summary.csv", "RESULTS.md", "values.png", "curves.png")


def test_report_redraws_every_table_and_figure_from_the_json_files(imitation, tmp_path, capsys):
    """`igmda imitate --report` on a copy holding only the JSON files and the metrics (no
    checkpoint, as results/fig3_lossy/ holds) writes the same bytes as the imitation did."""
    out, summary = imitation
    copy = tmp_path / "copy"
    for path in out.rglob("*"):
        if (
            path.is_file()
            and path.suffix in (".json", ".jsonl")
            and "checkpoints" not in path.parts
        ):
            target = copy / path.relative_to(out)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    assert not any((copy / name).exists() for name in REDRAWN)
    main(["imitate", "--report", str(copy)])
    assert "sights 0, none" in capsys.readouterr().out
    for name in REDRAWN:
        assert (copy / name).read_bytes() == (out / name).read_bytes(), name
    # RESULTS.md's learner column against each sight's final_eval.json
    text = (copy / "RESULTS.md").read_text()
    assert f"final evaluation of {FINAL_EPISODES} episodes per seed" in text
    for sight in SIGHTS:
        folder = out / f"sight_{report.sight_label(sight)}"
        learner = json.loads((folder / "final_eval.json").read_text())["win_rate_per_seed"]
        seeds = " ".join(f"{100 * rate:.1f}" for rate in learner)
        assert f"| {report.sight_label(sight)} | {100 * np.mean(learner):.1f} ({seeds}) |" in text


def test_report_refuses_a_folder_that_is_no_imitation_output(tmp_path, capsys) -> None:
    for args in ([str(tmp_path)], [str(tmp_path / "missing")], []):
        with pytest.raises(SystemExit) as stopped:
            main(["imitate", "--report", *args])
        assert stopped.value.code == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("igmda imitate --report") and "\n" not in error


def test_cli_rerun_reuses_finished_sights(expert_dir, imitation, capsys) -> None:
    out, _ = imitation
    before = (out / "sight_0" / "metrics.jsonl").read_text()
    args = ["imitate", "--expert", str(expert_dir), "--sight-range", "0", "none"]
    args += ["--t-max", f"{T_MAX:e}", "--out", str(out), "--test-nepisode", "4"]
    main(
        [
            *args,
            "--value-episodes",
            "4",
            "--final-eval-episodes",
            f"{FINAL_EPISODES}",
            "--no-progress",
        ]
    )
    printed = capsys.readouterr().out
    assert "learner win" in printed and "sight_none" in printed
    assert (out / "sight_0" / "metrics.jsonl").read_text() == before  # not retrained
    with pytest.raises(SystemExit) as stopped:
        main([*args, "--lr", "0.01", "--no-progress"])
    assert stopped.value.code == 2  # a usage error: one line on stderr
    assert "already holds a different run" in capsys.readouterr().err


def test_refusals(expert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    kwargs = dict(t_max=100, progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        im.imitate(tmp_path / "nowhere", [0], tmp_path / "o", **kwargs)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((expert_dir / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        im.imitate(bare, [0], tmp_path / "o", **kwargs)
    assert not (bare / "checkpoints").exists()  # nothing created in the expert's folder
    with pytest.raises(im.ImitationError, match=r"'hidden_cue' \(2 agents.*'3m' \(3 agents"):
        im.imitate(expert_dir, [0], tmp_path / "o", overrides={"map": "3m"}, **kwargs)
    with pytest.raises(im.ImitationError, match="hidden_dim"):
        im.imitate(expert_dir, [0], tmp_path / "o", overrides={"hidden_dim": 32}, **kwargs)
    with pytest.raises(im.ImitationError, match="subset"):
        im.imitate(expert_dir, [0], tmp_path / "o", overrides={"seeds": 3}, **kwargs)
    with pytest.raises(im.ImitationError, match="qmix-da"):
        im.imitate(expert_dir, [0], tmp_path / "o", overrides={"alg": "vdn-da"}, **kwargs)
    with pytest.raises(im.ImitationError, match="td_weight"):
        im.imitate(expert_dir, [0], tmp_path / "o", overrides={"td_weight": 1.0}, **kwargs)
    with pytest.raises(im.ImitationError, match="sight range"):
        im.imitate(expert_dir, ["far"], tmp_path / "o", **kwargs)
    assert not (tmp_path / "o").exists()
    cli = ["imitate", "--expert", str(expert_dir), "--sight-range", "0", "--t-max", "100"]
    for argv, message in [
        ([*cli, "--map", "3m"], "'hidden_cue' .*'3m'"),
        (
            ["imitate", "--expert", str(bare), "--sight-range", "0", "--t-max", "100"],
            "no checkpoint",
        ),
    ]:
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == 2  # a usage error: one line on stderr
        assert re.search(message, capsys.readouterr().err)


def test_a_larger_budget_resumes_an_imitation(expert_dir, imitation, tmp_path) -> None:
    """Rerunning with a larger t_max continues the saved imitation (run.run's resume): the
    rows already written stay, new ones follow, and the expert is still frozen."""
    out, _ = imitation
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    before = (copy / "sight_0" / "metrics.jsonl").read_text().splitlines()
    im.imitate(
        expert_dir, [0.0], copy, t_max=3 * T_MAX, overrides={"test_nepisode": 4},
        value_episodes=4, final_eval_episodes=FINAL_EPISODES, progress=False,
    )  # fmt: skip
    after = (copy / "sight_0" / "metrics.jsonl").read_text().splitlines()
    assert after[: len(before)] == before and len(after) > len(before)
    assert json.loads(after[-1])["t_env"] >= 3 * T_MAX
    _, state, _ = setup.restore_imitation(copy / "sight_0")
    assert same_tree(state.params["mixer"], setup.load_expert(expert_dir).params["mixer"])


def _without_run_dirs(summary: dict) -> list[dict]:
    return [{k: v for k, v in sight.items() if k != "run_dir"} for sight in summary["sight_ranges"]]


def test_a_finished_sight_without_checkpoints_is_reused(expert_dir, imitation, tmp_path) -> None:
    """A finished sight folder reduced to its small outputs (what a results folder keeps) is
    reused without retraining or re-measuring, also with the expert's folder moved elsewhere:
    the summary and values come back the same. With another --value-episodes it cannot
    re-measure and says so."""
    out, summary = imitation
    copy, moved_expert = tmp_path / "out", tmp_path / "expert"
    shutil.copytree(out, copy)
    shutil.copytree(expert_dir, moved_expert)
    for sight in ("sight_0", "sight_none"):
        shutil.rmtree(copy / sight / "checkpoints")
    before = {path.name: path.read_text() for path in (copy / "sight_0").iterdir()}
    again = im.imitate(
        moved_expert, SIGHTS, copy, t_max=T_MAX, overrides={"test_nepisode": 4},
        value_episodes=4, final_eval_episodes=FINAL_EPISODES, progress=False,
    )  # fmt: skip
    after = {path.name: path.read_text() for path in (copy / "sight_0").iterdir()}
    assert after == before  # nothing retrained, no checkpoint recreated
    assert _without_run_dirs(again) == _without_run_dirs(summary)
    assert json.loads((copy / "values.json").read_text()) == json.loads(
        (out / "values.json").read_text()
    )
    for flag, episodes in (("--value-episodes", (5, FINAL_EPISODES)), ("--final-eval", (4, 7))):
        with pytest.raises(im.ImitationError, match=f"without checkpoints.*{flag}"):
            im.imitate(
                moved_expert, SIGHTS, copy, t_max=T_MAX, overrides={"test_nepisode": 4},
                value_episodes=episodes[0], final_eval_episodes=episodes[1], progress=False,
            )  # fmt: skip
