"""Tests of the view functions (envs/smax_views.py) against numpy written from the docs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs.smax_views import drop_diagonal, global_state


@pytest.mark.parametrize("n, trailing", [(1, ()), (2, (3,)), (5, ()), (4, (2, 3))])
def test_drop_diagonal_equals_a_numpy_mask(n: int, trailing: tuple[int, ...]) -> None:
    square = np.arange(n * n * int(np.prod(trailing)), dtype=np.float32)
    square = square.reshape((n, n, *trailing))
    expected = np.stack([square[i][np.arange(n) != i] for i in range(n)])
    assert np.array_equal(np.asarray(drop_diagonal(jnp.asarray(square))), expected)


def test_global_state_per_unit_features_by_hand() -> None:
    """The documented layout: per unit health fraction, cooldown fraction, (x, y) from the map
    centre over the map size, type one-hot, all zero for dead units; then last actions."""
    env = envs.make("3s5z", state_last_action=True)
    _, env_state = env.reset(jax.random.PRNGKey(3))
    state = env_state.smax.replace(
        unit_health=env_state.smax.unit_health.at[1].set(0.0).at[4].multiply(0.25),
        unit_alive=env_state.smax.unit_alive.at[1].set(False),
        unit_weapon_cooldowns=env_state.smax.unit_weapon_cooldowns.at[0].set(10.0),
    )
    last_actions = jnp.arange(env.n_agents) % env.n_actions
    features = np.asarray(global_state(env.inner, env.view_spec, state, last_actions))

    inner = env.inner
    types = np.asarray(state.unit_types)
    size = np.array([inner.map_width, inner.map_height], np.float32)
    n_types = int(inner.unit_type_bits)
    rows = []
    for unit in range(env.n_units):
        kind = types[unit]
        row = np.concatenate(
            [
                [float(state.unit_health[unit]) / float(inner.unit_type_health[kind])],
                [
                    min(
                        1.0,
                        float(state.unit_weapon_cooldowns[unit])
                        / float(inner.unit_type_weapon_cooldowns[kind]),
                    )
                ],
                (np.asarray(state.unit_positions[unit]) - size / 2) / size,
                np.eye(n_types)[kind],
            ]
        )
        rows.append(row * float(state.unit_alive[unit]))
    one_hot_actions = np.eye(env.n_actions)[np.asarray(last_actions)].reshape(-1)
    expected = np.concatenate([np.concatenate(rows), one_hot_actions])
    assert features.shape == (env.state_dim,)
    np.testing.assert_allclose(features, expected, rtol=1e-6, atol=1e-7)
    assert not features[env.state_unit_dim : 2 * env.state_unit_dim].any()  # the dead unit
    assert features[env.state_unit_dim] == 0.0
    assert features[1] == 1.0  # cooldown fraction clipped at 1
