"""Updates unroll a short static window instead of the whole padded episode: same result."""

from __future__ import annotations

import dataclasses

import jax
import jax.extend
import numpy as np
import pytest

import envs
from igmda_jax.compiled import SEED_AXIS, compile_trainer, make_env, seed_keys
from igmda_jax.core.presets import make_config
from igmda_jax.fused.learner import longest_episode, make_optimizer, update, window_lengths
from igmda_jax.fused.rollout import collect
from igmda_jax.fused.train import make_train

TINY = dict(n_envs=4, batch_size=4, buffer_size=16, hidden_dim=8, mixer_embed=4, hypernet_embed=8)


def test_window_lengths() -> None:
    assert window_lengths(60, 4) == (15, 30, 45, 60)
    assert window_lengths(70, 4) == (18, 35, 53, 70)
    assert window_lengths(70, 1) == (70,)
    assert window_lengths(3, 8) == (1, 2, 3)  # duplicates collapse
    assert window_lengths(1, 4) == (1,)


def random_batch(alg: str, seed: int):
    """Four random-policy 3m episodes (about 20 of 60 steps each) and a trainer state."""
    config = make_config("smax", alg=alg, map="3m", sight_range=0.0, **TINY)
    env = make_env(config)
    trainer = make_train(config, env)
    state = jax.jit(trainer.init)(jax.random.PRNGKey(seed))
    batch, _ = collect(
        env, trainer.nets, config, state.params, jax.random.PRNGKey(seed + 1), 4, 1.0, 0.0
    )
    _, observe = envs.spec.recorder(env)
    return config, trainer, state, batch, observe


def run_update(config, trainer, state, batch, observe, seed_axis=None):
    return update(
        state.params,
        state.target_params,
        state.opt_state,
        batch,
        jax.random.PRNGKey(7),
        config,
        trainer.nets,
        observe,
        make_optimizer(config),
        seed_axis,
    )


def assert_trees_close(a, b) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("alg", ["vdn", "qmix-da", "dmix-da", "qplex"])
def test_windowed_update_equals_full_unroll(alg: str) -> None:
    """Windows alone, and windows with length-sorted microbatches (each on its own window,
    recurrences stopped at the part's longest episode), equal the plain full-batch update."""
    config, trainer, state, batch, observe = random_batch(alg, 0)
    n_steps = batch.actions.shape[1]
    windows = window_lengths(n_steps, config.unroll_windows)
    longest = int(longest_episode(batch))
    assert len(windows) == 4 and longest <= windows[-2], "the test needs a truncated window"
    lengths = np.asarray(batch.filled).sum(axis=1)
    assert len(set(lengths)) > 1, "the test needs episodes of different lengths"
    # TD(lambda) must not read past an episode's end: also check 1-step targets for one mixer
    configs = [config] + ([dataclasses.replace(config, td_lambda=0.0)] if alg == "vdn" else [])
    for cfg in configs:
        plain = dataclasses.replace(cfg, unroll_windows=1, update_microbatches=1)
        full = updated(plain, trainer, state, batch, observe)
        for parts in (1, 4):
            fast = dataclasses.replace(cfg, update_microbatches=parts)
            windowed = updated(fast, trainer, state, batch, observe)
            assert_trees_close(full[0], windowed[0])  # new parameters
            assert_trees_close(full[2], windowed[2])  # metrics: losses, Q_tot, targets, norm


def updated(config, trainer, state, batch, observe):
    """The jitted update of ``batch`` (outside any vmap)."""
    return jax.jit(lambda b: run_update(config, trainer, state, b, observe))(batch)


def test_seed_vmapped_windows_agree_with_each_seed() -> None:
    """Under a named seed vmap all seeds take the window of the longest episode of any seed;
    each seed's update still equals its own full unroll."""
    config, trainer, state, batch_a, observe = random_batch("qmix", 0)
    _, _, _, batch_b, _ = random_batch("qmix", 5)
    batches = jax.tree.map(lambda a, b: np.stack([a, b]), batch_a, batch_b)

    def vmapped(b):
        return jax.vmap(
            lambda one: run_update(config, trainer, state, one, observe, "seed"), axis_name="seed"
        )(b)

    new_params, _, metrics = jax.jit(vmapped)(batches)
    full_config = dataclasses.replace(config, unroll_windows=1, update_microbatches=1)
    for index, one in enumerate((batch_a, batch_b)):
        expected = updated(full_config, trainer, state, one, observe)
        seed_params, seed_metrics = jax.tree.map(lambda x, i=index: x[i], (new_params, metrics))
        assert_trees_close(seed_params, expected[0])
        assert_trees_close(seed_metrics, expected[2])


def conds(jaxpr) -> list:
    """Every cond equation in a (closed) jaxpr, nested ones included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "cond":
            found.append(eqn)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found.extend(conds(sub))
    return found


def test_window_switch_stays_a_branch_under_the_seed_vmap() -> None:
    """A batched cond index turns the switch into a select that computes every window (it
    once made windowed updates slower than full ones): the compiled trainer must keep one
    real 4-way branch per update."""
    config = make_config("smax", alg="qmix", map="3m", seeds=2, **TINY)
    compiled = compile_trainer(config)
    state = jax.eval_shape(compiled.init, seed_keys(config))
    vmapped_chunk = jax.vmap(compiled.trainer.train_chunk, axis_name=SEED_AXIS)
    jaxpr = jax.make_jaxpr(vmapped_chunk)(state).jaxpr
    branch_counts = sorted(len(eqn.params["branches"]) for eqn in conds(jaxpr))
    assert branch_counts.count(4) == 1, branch_counts
    # without the seed axis name the window index is per seed: the switch is gone
    unnamed = make_train(config, make_env(config))
    jaxpr = jax.make_jaxpr(jax.vmap(unnamed.train_chunk))(state).jaxpr
    assert 4 not in [len(eqn.params["branches"]) for eqn in conds(jaxpr)]
