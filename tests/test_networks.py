"""Agent networks: input layout, hand-computed forward passes, parameter sharing, unroll resets."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igmda_jax.core.networks import (
    IQNAgent,
    RNNAgent,
    agent_input_dim,
    agent_inputs,
    cosine_features,
    initial_hidden,
    unroll,
)

N_AGENTS, N_ACTIONS, OBS_DIM, HIDDEN = 3, 4, 5, 8
T, B, N_QUANTILES = 6, 2, 5
IN_DIM = agent_input_dim(OBS_DIM, N_AGENTS, N_ACTIONS)


# --------------------------------------------------------------------------------- numpy refs


def _dense(p, x):
    return x @ np.asarray(p["kernel"]) + (np.asarray(p["bias"]) if "bias" in p else 0.0)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _trunk_np(p, hidden, inputs):
    """fc -> ReLU -> GRU (flax's gate equations) in numpy."""
    x = np.maximum(_dense(p["fc_in"], inputs), 0.0)
    g = p["gru"]
    r = _sigmoid(_dense(g["ir"], x) + _dense(g["hr"], hidden))
    z = _sigmoid(_dense(g["iz"], x) + _dense(g["hz"], hidden))
    n = np.tanh(_dense(g["in"], x) + r * _dense(g["hn"], hidden))
    return (1.0 - z) * n + z * hidden


# ----------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def rnn():
    agent = RNNAgent(n_actions=N_ACTIONS, hidden_dim=HIDDEN)
    hidden0 = jnp.zeros((B, N_AGENTS, HIDDEN))
    params = jax.jit(agent.init)(jax.random.PRNGKey(0), hidden0, jnp.zeros((B, N_AGENTS, IN_DIM)))
    step = jax.jit(agent.apply)
    run = jax.jit(lambda p, h, x, r: unroll(agent, p, h, x, r))
    return agent, params, step, run


@pytest.fixture(scope="module")
def iqn():
    agent = IQNAgent(n_actions=N_ACTIONS, hidden_dim=HIDDEN)
    hidden0 = jnp.zeros((B, N_AGENTS, HIDDEN))
    params = jax.jit(agent.init)(
        jax.random.PRNGKey(1),
        hidden0,
        jnp.zeros((B, N_AGENTS, IN_DIM)),
        jnp.zeros((B, N_QUANTILES)),
    )
    step = jax.jit(agent.apply)
    run = jax.jit(lambda p, h, x, r, taus: unroll(agent, p, h, x, r, taus))
    return agent, params, step, run


def _normal(seed, shape):
    """float32 standard normal from numpy (no per-shape compilation)."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def _random_inputs(seed, shape):
    return _normal(seed, (*shape, N_AGENTS, IN_DIM))


# ------------------------------------------------------------------------------- agent_inputs


def test_agent_inputs_layout_by_hand():
    # one time step, 2 agents, obs_dim 2, 3 actions
    obs = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    last_action = jnp.array([2, -1])  # agent 1 has no previous action
    avail = jnp.array([[True, False, True], [False, True, True]])
    x = agent_inputs(obs, last_action, avail, n_agents=2)
    expected = np.array(
        [
            # obs    | last action | agent id | avail
            [1, 2, 0, 0, 1, 1, 0, 1, 0, 1],
            [3, 4, 0, 0, 0, 0, 1, 0, 1, 1],
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(np.asarray(x), expected)
    assert x.dtype == jnp.float32


def test_agent_inputs_flags_and_onehot_last_action():
    rng = np.random.default_rng(3)
    obs = rng.standard_normal((T, B, N_AGENTS, OBS_DIM), dtype=np.float32)
    last = rng.integers(0, N_ACTIONS, (T, B, N_AGENTS))
    avail = rng.random((T, B, N_AGENTS, N_ACTIONS)) < 0.5
    onehot = np.eye(N_ACTIONS, dtype=np.float32)[last]
    flag_names = ("use_last_action", "use_agent_id", "use_avail")
    build = jax.jit(agent_inputs, static_argnames=("n_agents", *flag_names))
    for flags in itertools.product([False, True], repeat=3):
        kw = dict(zip(flag_names, flags, strict=True))
        x = build(obs, last, avail, n_agents=N_AGENTS, **kw)
        assert x.shape == (T, B, N_AGENTS, agent_input_dim(OBS_DIM, N_AGENTS, N_ACTIONS, **kw))
        np.testing.assert_array_equal(x, build(obs, onehot, avail, n_agents=N_AGENTS, **kw))
        blocks = [np.asarray(obs)]
        if kw["use_last_action"]:
            blocks.append(np.asarray(onehot))
        if kw["use_agent_id"]:
            blocks.append(np.broadcast_to(np.eye(N_AGENTS), (T, B, N_AGENTS, N_AGENTS)))
        if kw["use_avail"]:
            blocks.append(np.asarray(avail, np.float32))
        np.testing.assert_array_equal(x, np.concatenate(blocks, axis=-1))


# ----------------------------------------------------------------------------------- RNNAgent


def test_rnn_agent_matches_numpy(rnn):
    _, params, step, _ = rnn
    hidden = _normal(41, (B, N_AGENTS, HIDDEN))
    x = _random_inputs(42, (B,))
    new_hidden, q = step(params, hidden, x)
    assert new_hidden.shape == (B, N_AGENTS, HIDDEN) and q.shape == (B, N_AGENTS, N_ACTIONS)
    p = params["params"]
    h_np = _trunk_np(p["trunk"], np.asarray(hidden), np.asarray(x))
    np.testing.assert_allclose(new_hidden, h_np, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(q, _dense(p["fc_out"], h_np), rtol=1e-5, atol=1e-5)


def test_rnn_agent_shares_parameters_over_agents(rnn):
    _, params, step, _ = rnn
    hidden = _normal(51, (B, N_AGENTS, HIDDEN))
    x = _random_inputs(52, (B,))
    perm = np.array([2, 0, 1])
    h_a, q_a = step(params, hidden, x)
    h_b, q_b = step(params, hidden[:, perm], x[:, perm])
    np.testing.assert_allclose(q_a[:, perm], q_b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_a[:, perm], h_b, rtol=1e-5, atol=1e-6)


def test_unroll_matches_step_loop(rnn):
    _, params, step, run = rnn
    hidden0 = _normal(61, (B, N_AGENTS, HIDDEN))
    x = _random_inputs(62, (T, B))
    q = run(params, hidden0, x, np.zeros((T, B), bool))
    assert q.shape == (T, B, N_AGENTS, N_ACTIONS)
    hidden = hidden0
    for t in range(T):
        hidden, q_t = step(params, hidden, x[t])
        np.testing.assert_allclose(q[t], q_t, rtol=1e-5, atol=1e-6)


def test_unroll_resets_hidden_state_where_told(rnn):
    _, params, _, run = rnn
    hidden0 = _normal(71, (B, N_AGENTS, HIDDEN))
    x = _random_inputs(72, (T, B))
    reset_at = 3
    resets = np.zeros((T, B), bool)
    resets[reset_at, 0] = True  # only batch element 0
    q = run(params, hidden0, x, resets)
    zeros = np.zeros((B, N_AGENTS, HIDDEN), np.float32)
    q_fresh = run(params, zeros, x[reset_at:], np.zeros((T - reset_at, B), bool))
    q_no_reset = run(params, hidden0, x, np.zeros((T, B), bool))
    # element 0: after the reset, as if a new episode started from a zero state
    np.testing.assert_allclose(q[reset_at:, 0], q_fresh[:, 0], rtol=1e-5, atol=1e-6)
    # ... and before the reset nothing changed
    np.testing.assert_allclose(q[:reset_at], q_no_reset[:reset_at], rtol=1e-5, atol=1e-6)
    # element 1 was not reset: it carries its history
    np.testing.assert_allclose(q[:, 1], q_no_reset[:, 1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(q[reset_at:, 1], q_fresh[:, 1], atol=1e-4)
    # a reset at t = 0 ignores hidden0
    resets0 = np.zeros((T, B), bool)
    resets0[0] = True
    np.testing.assert_allclose(
        run(params, hidden0, x, resets0), run(params, zeros, x, np.zeros((T, B), bool)), atol=1e-6
    )


# ----------------------------------------------------------------------------------- IQNAgent


def test_initial_hidden_is_zero():
    h = initial_hidden((T, B), N_AGENTS, HIDDEN)
    assert h.shape == (T, B, N_AGENTS, HIDDEN) and h.dtype == jnp.float32
    assert not np.any(np.asarray(h))


def test_cosine_features_use_i_from_1():
    feats = cosine_features(jnp.array([0.0, 0.5, 1.0 / 3.0]), n_cos=64)
    assert feats.shape == (3, 64)
    i = np.arange(1, 65)
    np.testing.assert_allclose(feats[2], np.cos(np.pi * i / 3.0), atol=1e-5)
    np.testing.assert_allclose(feats[0], np.ones(64), atol=1e-6)
    np.testing.assert_allclose(feats[1, :4], [0.0, -1.0, 0.0, 1.0], atol=1e-5)


def test_iqn_agent_matches_numpy(iqn):
    _, params, step, _ = iqn
    hidden = _normal(81, (B, N_AGENTS, HIDDEN))
    x = _random_inputs(82, (B,))
    taus = np.random.default_rng(83).random((B, N_QUANTILES), dtype=np.float32)
    new_hidden, z = step(params, hidden, x, taus)
    assert z.shape == (B, N_AGENTS, N_QUANTILES, N_ACTIONS)
    p = params["params"]
    h_np = _trunk_np(p["trunk"], np.asarray(hidden), np.asarray(x))
    np.testing.assert_allclose(new_hidden, h_np, rtol=1e-5, atol=1e-5)
    cos = np.cos(np.pi * np.arange(1, 65) * np.asarray(taus)[..., None])  # [B, N, 64]
    phi = np.maximum(_dense(p["tau_embed"], cos), 0.0)  # [B, N, H]
    z_np = _dense(p["fc_out"], h_np[:, :, None, :] * phi[:, None, :, :])
    np.testing.assert_allclose(z, z_np, rtol=1e-4, atol=1e-5)


def test_iqn_taus_shared_by_agents_and_matter(iqn):
    _, params, step, run = iqn
    x_one = _random_inputs(91, (B,))[:, :1]
    x = np.repeat(x_one, N_AGENTS, axis=1)  # identical inputs for every agent
    hidden = np.zeros((B, N_AGENTS, HIDDEN), np.float32)
    taus = np.random.default_rng(92).random((B, N_QUANTILES), dtype=np.float32)
    _, z = step(params, hidden, x, taus)
    for i in range(1, N_AGENTS):
        np.testing.assert_allclose(z[:, i], z[:, 0], rtol=1e-6, atol=1e-6)
    _, z_other = step(params, hidden, x, 1.0 - taus)
    assert not np.allclose(z, z_other, atol=1e-4)
    # unroll with taus gives [T, B, n, N, A]
    xs = np.broadcast_to(x, (T, *x.shape))
    taus_t = np.broadcast_to(taus, (T, *taus.shape))
    z_seq = run(params, hidden, xs, np.zeros((T, B), bool), taus_t)
    assert z_seq.shape == (T, B, N_AGENTS, N_QUANTILES, N_ACTIONS)
    np.testing.assert_allclose(z_seq[0], z, rtol=1e-5, atol=1e-6)


def test_iqn_unroll_matches_step_loop_with_resets(iqn):
    """unroll runs the input side and the head outside its scan; step by step (with a reset
    of batch element 0 at t = 2 and different fractions per step) it must agree."""
    _, params, step, run = iqn
    hidden0 = _normal(95, (B, N_AGENTS, HIDDEN))
    x = _random_inputs(96, (T, B))
    taus = np.random.default_rng(97).random((T, B, N_QUANTILES), dtype=np.float32)
    resets = np.zeros((T, B), bool)
    resets[2, 0] = True
    z = run(params, hidden0, x, resets, taus)
    hidden = np.asarray(hidden0)
    for t in range(T):
        hidden = np.where(resets[t][:, None, None], 0.0, hidden)
        hidden, z_t = step(params, hidden, x[t], taus[t])
        np.testing.assert_allclose(z[t], z_t, rtol=1e-5, atol=1e-6)


def test_live_inputs_keep_dense_parameters_and_outputs() -> None:
    """An agent told which inputs can be nonzero has nn.Dense's parameters (same init) and the
    same outputs on inputs that are zero elsewhere; the dead kernel rows get zero gradient."""
    inputs = _random_inputs(7, (B,))
    live = (1, 2, 3, *range(OBS_DIM, IN_DIM))  # a run of obs features, then the rest
    scattered = (0, 2, *range(OBS_DIM, IN_DIM))  # not one run: the gather path
    full_agent = RNNAgent(n_actions=N_ACTIONS, hidden_dim=HIDDEN)
    hidden = jnp.zeros((B, N_AGENTS, HIDDEN))
    full_params = full_agent.init(jax.random.PRNGKey(3), hidden, inputs)
    for columns in (live, scattered):
        zeroed = np.zeros_like(inputs)
        zeroed[..., columns] = inputs[..., columns]
        agent = RNNAgent(n_actions=N_ACTIONS, hidden_dim=HIDDEN, live_inputs=columns)
        params = agent.init(jax.random.PRNGKey(3), hidden, inputs)
        jax.tree.map(np.testing.assert_array_equal, params, full_params)
        np.testing.assert_allclose(
            agent.apply(params, hidden, zeroed)[1],
            full_agent.apply(full_params, hidden, zeroed)[1],
            rtol=1e-6,
            atol=1e-6,
        )
        grads = jax.grad(lambda p, a=agent, x=zeroed: a.apply(p, hidden, x)[1].sum())(params)
        kernel_grad = np.asarray(grads["params"]["trunk"]["fc_in"]["kernel"])
        dead = np.setdiff1d(np.arange(IN_DIM), columns)
        np.testing.assert_array_equal(kernel_grad[dead], 0.0)
        assert np.abs(kernel_grad[list(columns)]).max() > 0
