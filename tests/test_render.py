"""``igmda render``: recording greedy episodes of a saved run, drawing them, the GIF, errors.

The run folder is what ``igmda train`` writes (config.json, orbax checkpoints of the whole
TrainState) holding freshly initialised networks: no training, which the recording and the
picture do not need (an untrained -da run's learner and expert disagree, which is drawn).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image, ImageSequence

from igmda_jax import cli
from igmda_jax.compiled import make_env, seed_keys
from igmda_jax.core.config import Config
from igmda_jax.core.presets import make_config
from igmda_jax.fused.train import make_train
from igmda_jax.persist.checkpoint import CheckpointStore
from igmda_jax.tools.render import ALLY, DISAGREE, ENEMY, FrameDrawer, action_name, episode_view
from igmda_jax.tools.render_record import Recording, attack_targets, record_run

TINY = dict(
    map="3m",
    sight_range=4.0,
    episode_limit=3,
    seeds=2,
    hidden_dim=16,
    mixer_embed=8,
    hypernet_embed=16,
    buffer_size=8,
    batch_size=4,
)


def write_run(folder: Path, config: Config, checkpoint: bool = True) -> Path:
    """A run folder as ``igmda train`` leaves it, its checkpoint the initial TrainState."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
    if checkpoint:
        trainer = make_train(config, make_env(config))
        state = jax.jit(jax.vmap(trainer.init))(seed_keys(config))
        with CheckpointStore(folder / "checkpoints") as store:
            store.save(0, state, {"config": config.to_dict(), "seeds": config.seeds})
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """da/: a qmix-da run on 3m; and folders holding only a config.json: qmix/ (no expert),
    toy/ (not SMAX), smac/ (StarCraft II backend), da_no_ckpt/."""
    root = tmp_path_factory.mktemp("render")
    da = make_config(alg="qmix-da", **TINY)
    write_run(root / "da", da)
    write_run(root / "da_no_ckpt", da, checkpoint=False)
    write_run(root / "qmix", make_config(alg="qmix", **TINY), checkpoint=False)
    write_run(root / "toy", make_config(alg="qmix", map="hidden_cue"), checkpoint=False)
    write_run(root / "smac", make_config(alg="qmix", map="3m", backend="smac"), checkpoint=False)
    return root


@pytest.fixture(scope="module")
def recording(runs: Path) -> Recording:
    return record_run(runs / "da", episodes=1, actor="deployed", seed=1)


def gif_frames(path: Path) -> list[np.ndarray]:
    with Image.open(path) as gif:
        return [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(gif)]


def rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])


def near(pixel: np.ndarray, colour: str, tolerance: int = 40) -> bool:
    return int(np.abs(pixel.astype(int) - rgb(colour)).sum()) <= tolerance


# ------------------------------------------------------------------------- recording


def test_recording_replays_the_greedy_learner_and_holds_the_units(recording: Recording) -> None:
    rec = recording
    length = int(rec.length[0])
    assert rec.actor == "learner" and rec.other == "expert" and rec.seed == 1
    assert 1 <= length <= 3 and rec.positions.shape == (1, 4, 6, 2)
    assert rec.filled[0].sum() == length
    # the learner's greedy choices, recomputed by unrolling it over the episode, are the
    # actions it played (the expert's are computed the same way)
    real = rec.filled[..., None]
    np.testing.assert_array_equal(
        np.where(real, rec.greedy["learner"], -1), np.where(real, rec.actions, -1)
    )
    assert rec.alive[0, 0].all() and np.allclose(rec.health[0, 0], 1.0)
    assert (rec.targets[0, 0] == -1).all()  # nothing attacked before the first step
    # the heuristic enemies walk towards the allies
    assert not np.allclose(rec.positions[0, 0, 3:], rec.positions[0, length, 3:])
    np.testing.assert_allclose(rec.sight, 4.0)
    assert rec.unit_types.tolist() == [[0] * 6] and rec.map_size == (32.0, 32.0)


def test_attack_targets_decode_smax_attack_actions() -> None:
    # 2 allies (0, 1), 3 enemies (2, 3, 4); SMAX: ally action 5 + j attacks enemy j, enemy
    # action 5 + k attacks ally n_allies - 1 - k, 0 is no attack
    prev_attack = np.array([[5 + 2, 0, 5 + 0, 5 + 1, 5 + 0]])
    alive_before = np.array([[True, True, True, True, False]])
    targets = np.asarray(attack_targets(prev_attack, alive_before, n_allies=2))
    assert targets.tolist() == [[4, -1, 1, 0, -1]]


def test_episode_view_is_a_square_around_the_living_units_inside_the_map() -> None:
    positions = np.array([[[1.0, 10.0], [9.0, 12.0], [30.0, 30.0]]])
    alive = np.array([[True, True, False]])
    x0, x1, y0, y1 = episode_view(positions, alive, (32.0, 32.0), margin=2.0)
    assert x1 - x0 == pytest.approx(y1 - y0) == pytest.approx(12.0)
    assert x0 == 0.0 and x1 == 12.0  # pushed inside the map, the dead unit left out
    assert y0 <= 10.0 - 2.0 and y1 >= 12.0 + 2.0


# ------------------------------------------------------------------------- drawing


def synthetic() -> Recording:
    """Two steps of 2 allies (0, 1) and 2 enemies (2, 3): ally 1's learner goes north where
    the expert stops; then ally 0 moves and attacks enemy 2, enemy 3 is dead."""
    positions = np.array(
        [
            [[10.0, 16.0], [10.0, 20.0], [20.0, 16.0], [20.0, 20.0]],
            [[12.0, 16.0], [10.0, 20.0], [20.0, 16.0], [20.0, 20.0]],
        ]
    )
    actions = np.array([[[5, 0]]])
    return Recording(
        map_name="3m",
        alg="qmix-da",
        actor="learner",
        seed=0,
        t_env=0,
        map_size=(32.0, 32.0),
        positions=positions[None],
        health=np.array([[[1.0] * 4, [1.0, 1.0, 0.5, 0.0]]]),
        alive=np.array([[[True] * 4, [True, True, True, False]]]),
        targets=np.array([[[-1] * 4, [2, -1, -1, -1]]]),
        unit_types=np.zeros((1, 4), int),
        radius=np.full((1, 4), 0.5),
        sight=np.full((1, 2), 3.0),
        actions=actions,
        greedy={"learner": actions, "expert": np.array([[[5, 4]]])},
        filled=np.array([[True]]),
        length=np.array([1]),
        won=np.array([False]),
    )


def test_frames_draw_units_attacks_deaths_and_disagreements_where_recorded() -> None:
    rec = synthetic()
    assert rec.disagreements().tolist() == [[[False, True]]]
    drawer = FrameDrawer(rec)
    first, second = drawer.draw(0, 0), drawer.draw(0, 1)
    below = np.array([0.0, -0.3])  # inside a unit, clear of its type letter

    def pixel(frame: np.ndarray, xy) -> np.ndarray:
        column, row = drawer.to_pixels(np.asarray(xy))[0]
        return frame[row, column]

    for u, colour in enumerate([ALLY, ALLY, ENEMY, ENEMY]):
        assert near(pixel(first, rec.positions[0, 0, u] + below), colour), u
    # the disagreeing agent has the orange ring (radius 0.5 + 0.3), the other one none
    assert near(pixel(first, rec.positions[0, 0, 1] + [0.0, 0.8]), DISAGREE, 80)
    assert not near(pixel(first, rec.positions[0, 0, 0] + [0.0, 0.8]), DISAGREE, 80)
    # next frame: ally 0 moved, enemy 3 is gone, ally 0's attack line reaches enemy 2
    assert near(pixel(second, [12.0, 16.0] + below), ALLY)
    assert not near(pixel(second, [10.0, 16.0] + below), ALLY, 80)
    assert not near(pixel(second, [20.0, 20.0] + below), ENEMY, 80)
    column, row = drawer.to_pixels(np.array([16.0, 15.88]))[0]
    strip = second[row - 2 : row + 3, column].astype(int)
    assert (strip[:, 2] - strip[:, 0] > 60).any(), strip  # a blue line between them
    assert action_name(5) == "atk 0" and action_name(0) == "↑"


# ------------------------------------------------------------------------- the command


def test_render_writes_a_gif_of_every_step(
    runs: Path, recording: Recording, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "episode.gif"
    cli.main(["render", str(runs / "da"), "--out", str(out), "--seed", "1", "--fps", "4"])
    frames = gif_frames(out)
    # the same episode as record_run's (same run, seed and evaluation key): one frame per step
    # and the final state
    assert len(frames) == int(recording.length[0]) + 1
    assert frames[0].shape == (672, 560, 3)
    assert all(np.any(a != b) for a, b in zip(frames, frames[1:], strict=False))
    assert f"{len(frames)} frames" in capsys.readouterr().out
    with Image.open(out) as gif:
        assert gif.info["duration"] == 250 and gif.info["loop"] == 0


BAD_INPUT = [
    (["nowhere", "--out", "x.gif"], "is not a run folder"),
    (["da", "--out", "x.png"], "must name a .gif file"),
    (["da", "--out", "missing/x.gif"], "does not exist"),
    (["da_no_ckpt", "--out", "x.gif"], "has no checkpoint"),
    (["qmix", "--out", "x.gif", "--actor", "expert"], "qmix has no expert"),
    (["da", "--out", "x.gif", "--actor", "teacher"], "--actor must be one of"),
    (["da", "--out", "x.gif", "--seed", "5"], "is not one of the run's seeds [0, 1]"),
    (["da", "--out", "x.gif", "--episodes", "0"], "--episodes must be an integer >= 1"),
    (["da", "--out", "x.gif", "--fps", "0"], "--fps must be > 0"),
    (["toy", "--out", "x.gif"], "render draws SMAX maps only"),
    (["smac", "--out", "x.gif"], "StarCraft II"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_2(
    runs: Path,
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(runs)
    with pytest.raises(SystemExit) as stop:
        cli.main(["render", *args])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert stop.value.code == 2
    assert len(lines) == 1 and lines[0].startswith("igmda render: ") and message in lines[0]
    assert not list(runs.rglob("*.gif")) and not list(runs.rglob("*.png"))
