"""Tests for igmda_jax.checkpoint: bit-exact round trips, retention, metadata, config checks,
template mismatches, interrupted saves and empty directories."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import struct

from igmda_jax.checkpoint import (
    CheckpointMismatchError,
    CheckpointStore,
    abstract_like,
    check_compatible,
)
from igmda_jax.cli import parse_train_args
from igmda_jax.config import (
    ConfigError,
    config_from_dict,
    load_config,
    make_config,
    with_defaults,
)

REPO = Path(__file__).resolve().parents[1]
S = 3  # seeds


@struct.dataclass
class _State:
    params: dict
    opt_state: optax.OptState
    replay: dict
    key: jax.Array
    t_env: jax.Array
    n_agents: int = struct.field(pytree_node=False, default=5)


def _seeded_state(seed: int = 0) -> _State:
    """Random leaves of every dtype we care about, each with a leading seed axis of size S."""
    rng = np.random.default_rng(seed)
    params = {
        "agent": {"w": rng.normal(size=(S, 4, 6)), "b": rng.normal(size=(S, 6))},
        "mixer": {"w": rng.normal(size=(S, 6, 1))},
    }
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    params["mixer"]["w"] = params["mixer"]["w"].astype(jnp.bfloat16)
    tx = optax.adam(1e-3)
    grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), params)
    opt_state = jax.vmap(tx.init)(params)
    _, opt_state = jax.vmap(tx.update)(grads, opt_state, params)  # non-trivial moments
    replay = {
        "obs": jnp.asarray(rng.normal(size=(S, 8, 5, 7)), jnp.float16),
        "actions": jnp.asarray(rng.integers(0, 9, (S, 8, 5)), jnp.int32),
        "hash": jnp.asarray(rng.integers(0, 2**32, (S, 8), dtype=np.uint64), jnp.uint32),
        "filled": jnp.asarray(rng.random((S, 8, 5)) < 0.5),
        "f32": jnp.asarray(rng.normal(size=(S, 8, 5)), jnp.float32),
    }
    keys = jax.vmap(jax.random.PRNGKey)(jnp.arange(S) + seed)
    return _State(params, opt_state, replay, keys, jnp.arange(S, dtype=jnp.int32) * 100)


def _assert_bit_identical(a, b) -> None:
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


def test_round_trip_bit_identical(tmp_path: Path) -> None:
    state = _seeded_state()
    assert state.replay["obs"].shape == (S, 8, 5, 7)
    dtypes = {np.dtype(x.dtype) for x in jax.tree.leaves(state)}
    wanted = (jnp.float32, jnp.bfloat16, jnp.float16, jnp.int32, jnp.uint32, jnp.bool_)
    assert {np.dtype(d) for d in wanted} <= dtypes
    with CheckpointStore(tmp_path / "ck") as store:
        store.save(7, state, {"algo": "qmix"})
        # abstract template: no real allocation needed
        restored, meta = store.restore(None, like=jax.eval_shape(_seeded_state))
        _assert_bit_identical(state, restored)
        assert restored.n_agents == 5 and meta == {"algo": "qmix"}
        # concrete template (different values) works too and is not what comes back
        restored2, _ = store.restore(7, _seeded_state(seed=1))
        _assert_bit_identical(state, restored2)


def test_typed_keys_round_trip_and_mixing_is_a_clear_error(tmp_path: Path) -> None:
    typed = {"key": jax.vmap(jax.random.key)(jnp.arange(S)), "x": jnp.arange(S)}
    with CheckpointStore(tmp_path) as store:
        store.save(1, typed, {})
        restored, _ = store.restore(1, abstract_like(typed))
        _assert_bit_identical(typed, restored)
        raw_like = {"key": jax.ShapeDtypeStruct((S, 2), jnp.uint32), "x": typed["x"]}
        with pytest.raises(CheckpointMismatchError, match="key: saved as key<fry>"):
            store.restore(1, raw_like)


def test_keeps_last_n(tmp_path: Path) -> None:
    small = {"a": jnp.arange(4)}
    with CheckpointStore(tmp_path, max_to_keep=2) as store:
        for step in range(5):
            store.save(step, small, {"step": step})
        assert store.all_steps() == [3, 4]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["3", "4"]


def test_latest_step_and_reopen(tmp_path: Path) -> None:
    small = {"a": jnp.arange(4)}
    with CheckpointStore(tmp_path) as store:
        assert store.latest_step() is None
        store.save(10, small, {})
        store.save(25, small, {})
        assert store.latest_step() == 25
        with pytest.raises(ValueError, match="latest saved step 25"):
            store.save(25, small, {})
    with CheckpointStore(tmp_path) as store:
        assert store.latest_step() == 25 and store.all_steps() == [10, 25]


def test_metadata_round_trip(tmp_path: Path) -> None:
    meta = {
        "config": {"algo": "qmix-da", "map": "3m", "lr": 5e-4, "sight": {"learner": 2.0}},
        "n_seeds": S,
        "counters": {"t_env": 123456, "episodes": 789},
        "layers": (64, 64),
        "flag": True,
        "none": None,
    }
    with CheckpointStore(tmp_path) as store:
        store.save(3, {"a": jnp.zeros(2)}, meta)
        store.save(4, {"a": jnp.zeros(2)}, {**meta, "n_seeds": 1})
        expected = {**meta, "layers": [64, 64]}  # JSON turns tuples into lists
        assert store.restore(3, {"a": jnp.zeros(2)})[1] == expected
        assert store.metadata(3) == expected
        assert store.metadata()["n_seeds"] == 1
        with pytest.raises(TypeError, match="JSON"):
            store.save(5, {"a": jnp.zeros(2)}, {"bad": object()})
        assert store.latest_step() == 4


def test_check_compatible_names_every_differing_field() -> None:
    saved = {"algo": "qmix", "lr": 5e-4, "t_max": 100, "env": {"map": "3m", "sight": 9.0}, "x": 1}
    current = {"algo": "vdn", "lr": 5e-4, "t_max": 200, "env": {"map": "3m", "sight": 2.0}}
    current["y"] = [1, 2]
    with pytest.raises(CheckpointMismatchError) as info:
        check_compatible(saved, current, ignore=["t_max"])
    msg = str(info.value)
    assert "algo: saved='qmix' current='vdn'" in msg
    assert "env.sight: saved=9.0 current=2.0" in msg
    assert "x: saved=1 current=<missing>" in msg
    assert "y: saved=<missing> current=[1, 2]" in msg
    assert "t_max" not in msg and "lr" not in msg and "env.map" not in msg
    # ignoring a parent ignores its children; tuples equal the lists JSON gives back
    check_compatible({"env": {"a": 1}, "l": [1, 2]}, {"env": {"a": 2}, "l": (1, 2)}, ["env"])
    with pytest.raises(CheckpointMismatchError, match="t_max: saved=100 current=200"):
        check_compatible(saved, {**saved, "t_max": 200})
    with pytest.raises(CheckpointMismatchError, match="flag: saved=True current=1"):
        check_compatible({"flag": True}, {"flag": 1})


def test_saved_config_from_an_older_version_takes_new_fields_defaults(tmp_path: Path) -> None:
    """A run saved before a field existed ran with that field's default: it stays resumable
    (the comparison fills the default in), a changed value is still refused, and a field this
    version does not know is named."""
    config = make_config("authors", alg="qmix-da", map="3m", sight_range=0.0, td_weight=1.0)
    older = {k: v for k, v in config.to_dict().items() if k != "td_weight"}
    check_compatible(with_defaults(older), config.to_dict())
    with pytest.raises(CheckpointMismatchError, match="td_weight: saved=1.0 current=0.5"):
        check_compatible(with_defaults(older), {**config.to_dict(), "td_weight": 0.5})
    (tmp_path / "config.json").write_text(json.dumps(older))
    assert load_config(tmp_path) == config
    with pytest.raises(ConfigError, match=r"\['renamed_field'\] unknown"):
        config_from_dict({**older, "renamed_field": 3})


def test_saved_config_without_reward_ran_with_smax_reward(tmp_path: Path) -> None:
    """``reward`` was added defaulting to "smax" and now defaults to "smac": a run saved before
    the field existed is read as the SMAX-reward run it was, so resuming it with today's
    default is refused rather than silently switching its reward."""
    config = make_config("smax", map="3m")
    assert config.reward == "smac"
    older = {k: v for k, v in config.to_dict().items() if k != "reward"}
    (tmp_path / "config.json").write_text(json.dumps(older))
    assert load_config(tmp_path).reward == "smax"
    assert parse_train_args(["--resume", str(tmp_path)]).config.reward == "smax"
    with pytest.raises(CheckpointMismatchError, match="reward: saved=.smax. current=.smac."):
        check_compatible(with_defaults(older), config.to_dict())


def test_template_mismatch_names_the_leaf(tmp_path: Path) -> None:
    state = {"params": {"w": jnp.ones((S, 4)), "b": jnp.ones((S, 2))}, "t": jnp.zeros(S)}
    with CheckpointStore(tmp_path) as store:
        store.save(1, state, {})
        wrong_shape = {**state, "params": {"w": jnp.ones((S, 5)), "b": jnp.ones((S, 2))}}
        with pytest.raises(CheckpointMismatchError, match=r"params/w: saved shape=\(3, 4\)"):
            store.restore(1, wrong_shape)
        with pytest.raises(CheckpointMismatchError, match="u: missing from checkpoint"):
            store.restore(1, {**state, "u": jnp.zeros(S)})
        with pytest.raises(CheckpointMismatchError, match="params/b: in checkpoint only"):
            store.restore(1, {"params": {"w": state["params"]["w"]}, "t": state["t"]})
        wrong_dtype = {**state, "t": jnp.zeros(S, jnp.int32)}
        with pytest.raises(CheckpointMismatchError, match="t: saved dtype=float32 current=int32"):
            store.restore(1, wrong_dtype)
        with pytest.raises(FileNotFoundError, match=r"step 2 .* have \[1\]"):
            store.restore(2, state)


_CRASHING_SAVE = textwrap.dedent(
    """
    import os, sys
    import jax.numpy as jnp
    from orbax.checkpoint._src.path import atomicity
    from igmda_jax.checkpoint import CheckpointStore

    async def die(self):  # the process dies after writing, before the commit/rename
        os._exit(17)

    atomicity.AtomicRenameTemporaryPath.finalize = die
    store = CheckpointStore(sys.argv[1])
    store.save(5, {"a": jnp.full(4, 5.0)}, {"step": 5})
    """
)


def test_interrupted_save_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path) as store:
        store.save(4, {"a": jnp.full(4, 4.0)}, {"step": 4})
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-c", _CRASHING_SAVE, str(tmp_path)], env=env, capture_output=True
    )
    assert proc.returncode == 17, proc.stderr.decode()[-2000:]
    leftovers = [p.name for p in tmp_path.iterdir() if ".orbax-checkpoint-tmp" in p.name]
    assert leftovers and leftovers[0].startswith("5"), sorted(os.listdir(tmp_path))
    assert not (tmp_path / "5").exists()

    with CheckpointStore(tmp_path) as store:
        assert store.latest_step() == 4 and store.all_steps() == [4]
        state, meta = store.restore(None, {"a": jnp.zeros(4)})
        np.testing.assert_array_equal(state["a"], np.full(4, 4.0))
        assert meta == {"step": 4}
        # the stale temporary directory is removed by the reopened store (awaited before a save)
        store.save(6, {"a": jnp.full(4, 6.0)}, {"step": 6})
        assert not [p for p in tmp_path.iterdir() if ".orbax-checkpoint-tmp" in p.name]
        assert store.all_steps() == [4, 6]
        assert store.restore(None, {"a": jnp.zeros(4)})[1] == {"step": 6}


def test_empty_directory(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path / "new") as store:
        assert store.latest_step() is None and store.all_steps() == []
        with pytest.raises(FileNotFoundError, match="no checkpoint found"):
            store.restore(None, {"a": jnp.zeros(1)})
        with pytest.raises(FileNotFoundError, match="no checkpoint found"):
            store.metadata()
    with pytest.raises(ValueError, match="max_to_keep"):
        CheckpointStore(tmp_path, max_to_keep=0)


def test_orbax_info_logging_is_silenced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG), CheckpointStore(tmp_path) as store:
        store.save(1, {"a": jnp.zeros(2)}, {})
        store.restore(1, {"a": jnp.zeros(2)})
    assert not [r for r in caplog.records if "orbax" in r.pathname], caplog.records[:3]
