"""Seeds spread over host devices (seed_layout.seed_sharding) compute what one device computes.

conftest.py makes two XLA CPU devices even on a one-core machine."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from igmda_jax.compiled import compile_trainer, evaluation_keys, seed_keys
from igmda_jax.core.presets import make_config
from igmda_jax.fused.seed_layout import (
    DEVICE_AXIS,
    idle_devices_notice,
    map_seed_groups,
    pad_seeds,
    padded_seed_count,
    seed_group_size,
    seed_sharding,
    unpad_seeds,
)
from igmda_jax.persist.checkpoint import CheckpointStore
from igmda_jax.run import run
from igmda_jax.tools.evaluate import evaluate_run

# unroll_windows=1: the update compiles one unroll, not four (compiles faster);
# tests/test_unroll_windows.py checks the windowed default against it.
TINY = dict(
    n_envs=4,
    batch_size=4,
    buffer_size=16,
    hidden_dim=8,
    mixer_embed=4,
    hypernet_embed=8,
    unroll_windows=1,
)


def test_seed_sharding_uses_the_most_devices_that_divide_the_seeds() -> None:
    devices = jax.local_devices()
    assert len(devices) >= 2  # conftest.py
    two = devices[:2]
    assert seed_sharding(1, two) is None
    assert seed_sharding(3, two) is None  # 3 seeds do not split evenly over 2 devices
    sharding = seed_sharding(4, two)
    assert sharding is not None
    assert sharding.mesh.axis_names == (DEVICE_AXIS,)
    assert set(sharding.device_set) == set(two)
    assert seed_sharding(8, devices[:1]) is None


def test_seed_group_size_auto_is_sequential_on_cpu_and_vmapped_elsewhere() -> None:
    assert seed_group_size(0, 4, "cpu") == 1
    assert seed_group_size(0, 4, "gpu") == 4
    assert seed_group_size(2, 4, "cpu") == 2
    assert seed_group_size(3, 4, "cpu") == 2  # the largest divisor of 4 not above 3
    assert seed_group_size(8, 4, "tpu") == 4


def test_map_seed_groups_vmaps_within_groups_and_loops_over_them() -> None:
    """Every seed's state is updated; collectives over the seed axis see only its group."""
    values = np.array([1.0, 5.0, 2.0, 3.0, 7.0, 0.0], np.float32)
    step = lambda x: (2 * x, {"max": jax.lax.pmax(x, "s")})  # noqa: E731
    for group, expected in [(1, values), (2, [5, 5, 3, 3, 7, 7]), (3, [5, 5, 5, 7, 7, 7])]:
        doubled, aux = jax.jit(map_seed_groups(step, group, "s"))(values)
        np.testing.assert_array_equal(doubled, 2 * values)
        np.testing.assert_array_equal(aux["max"], expected)


def _device_count(state) -> set[int]:
    return {len(leaf.sharding.device_set) for leaf in jax.tree.leaves(state)}


def test_sharded_seeds_train_like_one_device(tmp_path) -> None:
    """Two seeds, one per device, against both on one device, one after another (the CPU
    default, a fori_loop over seed groups) and vmapped together: same metrics, parameters and
    greedy evaluation after two chunks (to rounding: XLA compiles each layout separately), and
    a checkpoint of the sharded state restores on one device and back."""
    config = make_config("smax", alg="qmix-da", map="3m", sight_range=0.0, seeds=2, **TINY)
    keys = seed_keys(config)
    sharded = compile_trainer(config, devices=jax.local_devices()[:2])
    single = compile_trainer(config, devices=jax.local_devices()[:1])
    vmapped = compile_trainer(
        dataclasses.replace(config, seed_vmap=2), devices=jax.local_devices()[:1]
    )
    assert len(sharded.sharding.device_set) == 2 and len(single.sharding.device_set) == 1
    assert (sharded.seed_group, single.seed_group, vmapped.seed_group) == (1, 1, 2)
    eval_keys = evaluation_keys(config, 0)
    results = {}
    for name, compiled in [("sharded", sharded), ("single", single), ("vmapped", vmapped)]:
        state = compiled.init(keys)
        assert _device_count(state) == {len(compiled.sharding.device_set)}
        for _ in range(2):
            state, metrics = compiled.train_chunk(state)
        assert _device_count(state) == {len(compiled.sharding.device_set)}  # placement kept
        evaluation = jax.device_get(compiled.evaluate(state, eval_keys, "expert"))
        results[name] = (state, jax.device_get(metrics), evaluation)
    sharded_state, sharded_metrics, sharded_eval = results["sharded"]
    assert float(np.min(sharded_metrics["updates"])) > 0  # updates ran (the replay filled)
    for other in ("single", "vmapped"):
        other_state, other_metrics, other_eval = results[other]
        for name in ("loss", "return", "t_env", "updates"):
            np.testing.assert_allclose(sharded_metrics[name], other_metrics[name], rtol=1e-4)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
            jax.device_get(sharded_state.params),
            jax.device_get(other_state.params),
        )
        for name in ("return", "win_rate", "episode_length"):
            np.testing.assert_allclose(sharded_eval[name], other_eval[name], rtol=1e-4)

    with CheckpointStore(tmp_path / "checkpoints") as store:
        store.save(1, sharded_state, {"note": "sharded"})
    with CheckpointStore(tmp_path / "checkpoints") as store:
        on_one, _ = store.restore(None, single.state_like(keys))
        on_two, _ = store.restore(None, sharded.state_like(keys))
    assert _device_count(on_one) == {1}
    assert _device_count(on_two) == {2}
    jax.tree.map(
        np.testing.assert_array_equal,
        jax.device_get(on_one.params),
        jax.device_get(sharded_state.params),
    )
    jax.tree.map(
        np.testing.assert_array_equal, jax.device_get(on_two.replay), jax.device_get(on_one.replay)
    )


def test_padded_seed_count_spreads_seeds_that_do_not_divide_the_devices() -> None:
    for seeds, devices, padded in [
        (1, 2, 1), (2, 2, 2), (3, 2, 4), (5, 2, 6), (3, 1, 3), (6, 4, 6), (5, 4, 8), (7, 8, 7),
    ]:  # fmt: skip
        assert padded_seed_count(seeds, devices) == padded, (seeds, devices)
    tree = {"a": np.arange(3), "b": np.arange(6).reshape(3, 2)}
    padded = pad_seeds(tree, 4)
    np.testing.assert_array_equal(padded["a"], [0, 1, 2, 0])
    np.testing.assert_array_equal(padded["b"][3], tree["b"][0])
    jax.tree.map(np.testing.assert_array_equal, unpad_seeds(padded, 3), tree)
    assert pad_seeds(tree, 3)["a"] is tree["a"]
    with pytest.raises(ValueError, match="cannot pad a seed axis of 3 to 2"):
        pad_seeds(tree, 2)


def test_three_seeds_padded_over_two_devices_train_like_one_device(tmp_path) -> None:
    """3 seeds on 2 devices compute 4 (the 4th repeats seed 0) and match 3 seeds on one
    device in metrics, parameters and evaluation; checkpoints hold the 3 real seeds and
    restore into either layout, and training continues alike from them."""
    config = make_config("smax", alg="qmix", map="3m", sight_range=0.0, seeds=3, **TINY)
    keys = seed_keys(config)
    padded = compile_trainer(config, devices=jax.local_devices()[:2])
    single = compile_trainer(config, devices=jax.local_devices()[:1])
    assert (padded.padded_seeds, single.padded_seeds) == (4, 3)
    assert len(padded.sharding.device_set) == 2
    eval_keys = evaluation_keys(config, 0)
    results = {}
    for name, compiled in [("padded", padded), ("single", single)]:
        state = compiled.init(keys)
        for _ in range(2):
            state, metrics = compiled.train_chunk(state)
        evaluation = jax.device_get(compiled.evaluate(state, eval_keys))
        assert np.shape(metrics["loss"]) == (3,) and np.shape(evaluation["return"]) == (3,)
        results[name] = (state, jax.device_get(metrics), evaluation)
    padded_state, padded_metrics, padded_eval = results["padded"]
    single_state, single_metrics, single_eval = results["single"]
    assert float(np.min(padded_metrics["updates"])) > 0
    for name in ("loss", "return", "t_env", "updates"):
        np.testing.assert_allclose(padded_metrics[name], single_metrics[name], rtol=1e-4)
    for name in ("return", "win_rate", "episode_length"):
        np.testing.assert_allclose(padded_eval[name], single_eval[name], rtol=1e-4)
    real_params = jax.device_get(padded.unpad(padded_state).params)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        real_params,
        jax.device_get(single_state.params),
    )
    jax.tree.map(  # the padding seed is seed 0 again
        lambda x: np.testing.assert_array_equal(x[3], x[0]), jax.device_get(padded_state.params)
    )

    with CheckpointStore(tmp_path / "checkpoints") as store:
        store.save(1, padded.unpad(padded_state), {"note": "padded"})
    with CheckpointStore(tmp_path / "checkpoints") as store:
        on_one = single.place(store.restore(None, single.state_like(keys))[0])
        on_two = padded.place(store.restore(None, padded.state_like(keys))[0])
    assert _device_count(on_one) == {1} and _device_count(on_two) == {2}
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(on_one.params), real_params)
    _, next_one = single.train_chunk(on_one)
    _, next_two = padded.train_chunk(on_two)
    for name in ("loss", "t_env"):
        np.testing.assert_allclose(next_one[name], next_two[name], rtol=1e-4)


def test_padded_run_resumes_exactly_and_evaluates(tmp_path) -> None:
    """run() with 3 seeds on 2 devices (padded to 4): stopping at 400 steps and resuming to
    800 writes the metrics of a run straight to 800; `igmda eval` reads its checkpoint."""
    config = make_config(
        "smax", alg="qmix", map="hidden_cue", seeds=3, t_max=800, test_interval=200, **TINY
    )
    run(config, tmp_path / "whole", progress=False)
    run(dataclasses.replace(config, t_max=400), tmp_path / "parts", progress=False)
    run(config, tmp_path / "parts", resume=True, progress=False)

    def rows(name: str) -> list[dict]:
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k != "wall_time"} for x in lines]

    assert rows("parts") == rows("whole")
    assert {row["seed"] for row in rows("whole")} == {0, 1, 2}
    evaluated = evaluate_run(tmp_path / "whole", episodes=8)
    assert len(evaluated["win_rate_per_seed"]) == 3


def test_idle_devices_notice_only_when_seeds_leave_devices_idle() -> None:
    """(seeds, devices used by seed_sharding, local devices): 3 seeds on 2 cores use one."""
    assert idle_devices_notice(3, 1, 2) == (
        "note: 3 seeds run on 1 of 2 devices (seeds are split evenly over devices); "
        "--seeds 4 would use all 2"
    )
    assert "--seeds 8 would use all 4" in idle_devices_notice(6, 3, 4)
    for seeds, used, available in [(1, 1, 2), (2, 2, 2), (4, 2, 2), (3, 1, 1), (5, 5, 8)]:
        assert idle_devices_notice(seeds, used, available) is None
