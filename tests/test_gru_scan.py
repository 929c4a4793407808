"""gru_scan (the GRU over time with a hand-written reverse pass) against JAX's autodiff of
flax's GRUCell scanned over time, and the update built on it against the same update built on
the flax scan."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import igmda_jax.fused.learner
from igmda_jax.core.gru_scan import gru_scan, gru_weights
from tests.test_unroll_windows import assert_trees_close, random_batch, run_update

T, ROWS, IN, HIDDEN = 9, 5, 7, 6


def flax_scan(cell_params, inputs, resets, hidden0):
    """The reference: GRUCell stepped by lax.scan, differentiated by JAX."""
    cell = nn.GRUCell(features=HIDDEN)

    def step(hidden, xs):
        x, reset = xs
        hidden = jnp.where(reset[:, None], 0.0, hidden)
        hidden, _ = cell.apply({"params": cell_params}, hidden, x)
        return hidden, hidden

    return jax.lax.scan(step, hidden0, (inputs, resets))[1]


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    cell = nn.GRUCell(features=HIDDEN)
    cell_params = cell.init(jax.random.PRNGKey(0), jnp.zeros((ROWS, HIDDEN)), jnp.zeros((ROWS, IN)))
    inputs = jnp.asarray(rng.standard_normal((T, ROWS, IN), dtype=np.float32))
    hidden0 = jnp.asarray(rng.standard_normal((ROWS, HIDDEN), dtype=np.float32))
    resets = np.zeros((T, ROWS), bool)
    resets[0, 1] = resets[4, 0] = resets[4, 2] = resets[7, 3] = True  # episodes start mid-way
    # a different weight for every output element, so every step's gradient matters
    weights = jnp.asarray(rng.standard_normal((T, ROWS, HIDDEN), dtype=np.float32))
    return cell_params["params"], inputs, jnp.asarray(resets), hidden0, weights


def test_forward_equals_flax_gru_cell(problem) -> None:
    cell_params, inputs, resets, hidden0, _ = problem
    expected = flax_scan(cell_params, inputs, resets, hidden0)
    got = gru_scan(gru_weights(cell_params), inputs, resets, hidden0, jnp.int32(T))
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-6, atol=1e-6)


def test_gradients_equal_autodiff_of_the_flax_scan(problem) -> None:
    """Gradients w.r.t. every GRU parameter, the inputs and the initial hidden state."""
    cell_params, inputs, resets, hidden0, weights = problem

    def reference_loss(p, x, h0):
        return jnp.sum(weights * jnp.tanh(flax_scan(p, x, resets, h0)))

    def loss(p, x, h0):
        return jnp.sum(weights * jnp.tanh(gru_scan(gru_weights(p), x, resets, h0, jnp.int32(T))))

    expected = jax.grad(reference_loss, argnums=(0, 1, 2))(cell_params, inputs, hidden0)
    got = jax.grad(loss, argnums=(0, 1, 2))(cell_params, inputs, hidden0)
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for want, have in zip(jax.tree.leaves(expected), jax.tree.leaves(got), strict=True):
        assert np.abs(np.asarray(want)).max() > 0  # every gradient is exercised
        np.testing.assert_allclose(np.asarray(have), np.asarray(want), rtol=1e-5, atol=1e-6)
    # a reset cuts the gradient: rows reset at t = 0 get none on their initial state
    np.testing.assert_array_equal(np.asarray(got[2][1]), 0.0)


def test_gradient_matches_finite_differences(problem) -> None:
    """An independent check of the reverse pass: a central difference of the loss along one
    random direction of the candidate's hidden kernel W_hn."""
    cell_params, inputs, resets, hidden0, weights = problem
    direction = np.random.default_rng(1).standard_normal((HIDDEN, HIDDEN)).astype(np.float32)

    def loss_at(step: float) -> jax.Array:
        p = jax.tree.map(lambda x: x, cell_params)
        p["hn"] = {**p["hn"], "kernel": p["hn"]["kernel"] + step * direction}
        return jnp.sum(weights * gru_scan(gru_weights(p), inputs, resets, hidden0, jnp.int32(T)))

    analytic = jnp.sum(jax.grad(loss_at)(0.0))
    eps = 1e-2
    numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    np.testing.assert_allclose(float(analytic), float(numeric), rtol=2e-3)


def test_fewer_steps_equal_the_first_steps_of_the_full_run(problem) -> None:
    """n_steps < T: the first n_steps hiddens and the gradient of a loss on them equal the
    full run's; later hiddens are zeros and their gradients are ignored."""
    cell_params, inputs, resets, hidden0, weights = problem
    n = 5
    on_first = weights.at[n:].set(0.0)

    def loss(p, x, h0, n_steps, output_weights):
        hiddens = gru_scan(gru_weights(p), x, resets, h0, jnp.int32(n_steps))
        return jnp.sum(output_weights * jnp.tanh(hiddens)), hiddens

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True), static_argnums=3)
    (full_grads, full), (short_grads, short) = (
        grad(cell_params, inputs, hidden0, T, on_first),
        grad(cell_params, inputs, hidden0, n, weights),  # weights past n must not count
    )
    np.testing.assert_allclose(np.asarray(short[:n]), np.asarray(full[:n]), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(short[n:]), 0.0)
    for want, have in zip(jax.tree.leaves(full_grads), jax.tree.leaves(short_grads), strict=True):
        np.testing.assert_allclose(np.asarray(have), np.asarray(want), rtol=1e-5, atol=1e-6)


def reference_unroll(agent, params, hidden0, inputs, resets, taus=None, n_steps=None):
    """networks.unroll as it was before gru_scan: GRUCell stepped by lax.scan."""

    encoded = agent.apply(params, inputs, method="encode")

    def step(hidden, xs):
        encoded_t, reset_t = xs
        hidden = jnp.where(reset_t[:, None, None], jnp.zeros_like(hidden), hidden)
        hidden = agent.apply(params, hidden, encoded_t, method="recur")
        return hidden, hidden

    _, hiddens = jax.lax.scan(step, hidden0, (encoded, resets.astype(bool)))
    if taus is None:
        return agent.apply(params, hiddens, method="head")
    return agent.apply(params, hiddens, taus, method="head")


@pytest.mark.parametrize("alg", ["qmix-da", "dmix"])
def test_update_equals_the_update_on_flax_scan(alg: str, monkeypatch) -> None:
    """One whole update (TD through the mixer, imitation, optimizer step) with gru_scan equals
    the same update with the agents unrolled by flax's GRUCell under lax.scan."""
    config, trainer, state, batch, observe = random_batch(alg, 3)
    got = jax.jit(lambda b: run_update(config, trainer, state, b, observe))(batch)
    monkeypatch.setattr(igmda_jax.fused.learner, "unroll", reference_unroll)
    expected = jax.jit(lambda b: run_update(config, trainer, state, b, observe))(batch)
    assert_trees_close(got[0], expected[0])  # new parameters
    assert_trees_close(got[2], expected[2])  # metrics
