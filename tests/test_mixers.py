"""Mixers: shapes, values recomputed in numpy from the parameters, monotonicity (QMIX), IGM
(QPLEX, by enumerating joint actions), the mean-shape identity (DMIX), and make_mixer."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igmda_jax.core.mixers import (
    MIXER_NAMES,
    DMIXMixer,
    QMIXMixer,
    QPLEXMixer,
    VDNMixer,
    make_mixer,
)

N_AGENTS, N_ACTIONS, STATE_DIM, N_QUANTILES = 3, 4, 6, 5
LEAD = (4, 2)  # [T, B]

# ------------------------------------------------------------------------------- numpy refs


def _dense(p, x):
    return x @ np.asarray(p["kernel"]) + np.asarray(p["bias"])


def _mlp(p, x):
    n_hidden = sum(1 for k in p if k.startswith("hidden_"))
    for layer in range(n_hidden):
        x = np.maximum(_dense(p[f"hidden_{layer}"], x), 0.0)
    return _dense(p["out"], x)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _qmix_np(p, qs, states):
    """QMIX with explicit loops over agents and embedding units."""
    qs, states = np.asarray(qs, np.float64), np.asarray(states, np.float64)
    embed = p["hyper_b1"]["bias"].shape[0]
    w1 = np.abs(_mlp(p["hyper_w1"], states)).reshape(*qs.shape[:-1], N_AGENTS, embed)
    b1 = _dense(p["hyper_b1"], states)
    w2 = np.abs(_mlp(p["hyper_w2"], states))
    v = _mlp(p["hyper_v"], states)[..., 0]
    out = v.copy()
    for e in range(embed):
        pre = b1[..., e] + sum(qs[..., i] * w1[..., i, e] for i in range(N_AGENTS))
        elu = np.where(pre > 0, pre, np.expm1(np.minimum(pre, 0.0)))
        out += elu * w2[..., e]
    return out


def _qplex_np(p, chosen, max_qs, onehot, states, n_heads):
    chosen, max_qs, states = (np.asarray(a, np.float64) for a in (chosen, max_qs, states))
    w = np.abs(_mlp(p["transform_w"], states)) + 1e-10
    b = _mlp(p["transform_b"], states)
    q_prime = w * chosen + b
    v = w * max_qs + b
    adv = q_prime - v
    sa = np.concatenate([states, np.asarray(onehot).reshape(*states.shape[:-1], -1)], axis=-1)
    lam = np.zeros_like(chosen)
    for k in range(n_heads):
        head = {
            name: jax.tree.map(lambda x, k=k: x[k], p[name]["heads"])
            for name in ("key", "agents", "action")
        }
        key = np.abs(_mlp(head["key"], states)) + 1e-10
        lam += key * _sigmoid(_mlp(head["agents"], states)) * _sigmoid(_mlp(head["action"], sa))
    return q_prime.sum(-1) + ((lam - 1.0) * adv).sum(-1)


# ----------------------------------------------------------------------------------- inputs


def _inputs(seed, lead=LEAD):
    """Random float32 inputs (numpy, so no per-shape compilation)."""
    rng = np.random.default_rng(seed)
    q = 2.0 * rng.standard_normal((*lead, N_AGENTS, N_ACTIONS), dtype=np.float32)
    actions = rng.integers(0, N_ACTIONS, (*lead, N_AGENTS))
    states = rng.standard_normal((*lead, STATE_DIM), dtype=np.float32)
    quantiles = rng.standard_normal((*lead, N_AGENTS, N_QUANTILES), dtype=np.float32)
    chosen = np.take_along_axis(q, actions[..., None], axis=-1)[..., 0]
    return q, actions, chosen, states, quantiles


def _random_params(mixer, seed, *example_args):
    """Random parameters in the tree ``mixer.init`` would build (shapes via eval_shape, so
    nothing is compiled): kernels ~ N(0, 1 / fan_in), biases ~ N(0, 0.1^2)."""
    shapes = jax.eval_shape(mixer.init, jax.random.PRNGKey(0), *example_args)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path[-1:])
        scale = 1.0 / np.sqrt(leaf.shape[-2]) if "kernel" in name else 0.1
        return (scale * rng.standard_normal(leaf.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def _onehot(actions):
    return np.eye(N_ACTIONS, dtype=np.float32)[actions]


@pytest.fixture(scope="module")
def qmix():
    mixer = QMIXMixer(n_agents=N_AGENTS, state_dim=STATE_DIM)
    _, _, chosen, states, _ = _inputs(0)
    params = _random_params(mixer, 10, chosen, states)
    return mixer, params, jax.jit(mixer.apply)


QPLEX_CONFIGS = {
    "authors": dict(n_heads=10, adv_hypernet_layers=3),
    "pymarl2": dict(n_heads=4, adv_hypernet_layers=2),
}


@pytest.fixture(scope="module", params=sorted(QPLEX_CONFIGS))
def qplex(request):
    cfg = QPLEX_CONFIGS[request.param]
    mixer = QPLEXMixer(n_agents=N_AGENTS, n_actions=N_ACTIONS, state_dim=STATE_DIM, **cfg)
    q, actions, chosen, states, _ = _inputs(0)
    params = [
        _random_params(mixer, seed, chosen, q.max(-1), _onehot(actions), states)
        for seed in (20, 21, 22)
    ]
    return mixer, params, jax.jit(mixer.apply), cfg["n_heads"]


@pytest.fixture(scope="module")
def dmix():
    mixer = DMIXMixer(n_agents=N_AGENTS, state_dim=STATE_DIM)
    _, _, _, states, quantiles = _inputs(0)
    params = _random_params(mixer, 30, quantiles, states)
    return mixer, params, jax.jit(mixer.apply)


# ---------------------------------------------------------------------------------------- VDN


def test_vdn_sums():
    mixer = VDNMixer(n_agents=N_AGENTS, state_dim=STATE_DIM)
    qs = jnp.array([[1.0, -2.0, 0.5], [3.0, 3.0, 3.0]])
    states = jnp.zeros((2, STATE_DIM))
    params = mixer.init(jax.random.PRNGKey(0), qs, states)
    np.testing.assert_allclose(mixer.apply(params, qs, states), [-0.5, 9.0])


# --------------------------------------------------------------------------------------- QMIX


def test_qmix_shape_and_value(qmix):
    _, params, apply = qmix
    _, _, chosen, states, _ = _inputs(1)
    q_tot = apply(params, chosen, states)
    assert q_tot.shape == LEAD
    np.testing.assert_allclose(
        q_tot, _qmix_np(params["params"], chosen, states), rtol=1e-4, atol=1e-5
    )


def test_qmix_hypernet_sizes(qmix):
    _, params, _ = qmix
    p = params["params"]
    assert p["hyper_w1"]["hidden_0"]["kernel"].shape == (STATE_DIM, 64)
    assert p["hyper_w1"]["out"]["kernel"].shape == (64, N_AGENTS * 32)
    assert p["hyper_w2"]["out"]["kernel"].shape == (64, 32)
    assert p["hyper_b1"]["kernel"].shape == (STATE_DIM, 32)
    assert p["hyper_v"]["hidden_0"]["kernel"].shape == (STATE_DIM, 32)


def test_qmix_is_monotonic_in_every_agent_q(qmix):
    mixer, params, _ = qmix
    # larger parameters, so the hypernetworks produce many negative raw weights
    big = jax.tree.map(lambda x: 3.0 * x, params)
    _, _, chosen, states, _ = _inputs(2, lead=(64,))
    grad_fn = jax.jit(jax.vmap(jax.grad(mixer.apply, argnums=1), in_axes=(None, 0, 0)))
    for p in (params, big):
        grads = grad_fn(p, 5.0 * chosen, states)
        assert grads.shape == (64, N_AGENTS)
        assert np.all(np.asarray(grads) >= 0.0)
        assert np.mean(np.asarray(grads) > 0.0) > 0.5


# -------------------------------------------------------------------------------------- QPLEX


def test_qplex_parameter_tree():
    """K heads stacked on a leading axis; extractor depth and width as configured."""
    q, actions, chosen, states, _ = _inputs(0)
    args = (chosen, q.max(-1), _onehot(actions), states)
    for cfg, n_dense in ((QPLEX_CONFIGS["authors"], 3), (QPLEX_CONFIGS["pymarl2"], 2)):
        mixer = QPLEXMixer(N_AGENTS, N_ACTIONS, STATE_DIM, **cfg)
        p = jax.eval_shape(mixer.init, jax.random.PRNGKey(0), *args)["params"]
        k = cfg["n_heads"]
        assert len(p["key"]["heads"]) == n_dense
        assert p["key"]["heads"]["hidden_0"]["kernel"].shape == (k, STATE_DIM, 64)
        assert p["key"]["heads"]["out"]["kernel"].shape == (k, 64, 1)
        assert p["agents"]["heads"]["out"]["kernel"].shape == (k, 64, N_AGENTS)
        sa_dim = STATE_DIM + N_AGENTS * N_ACTIONS
        assert p["action"]["heads"]["hidden_0"]["kernel"].shape == (k, sa_dim, 64)
        assert p["transform_w"]["out"]["kernel"].shape == (64, N_AGENTS)
        assert p["transform_b"]["out"]["kernel"].shape == (64, N_AGENTS)


def test_qplex_shape_and_value(qplex):
    _, params_list, apply, n_heads = qplex
    q, actions, chosen, states, _ = _inputs(3)
    onehot = _onehot(actions)
    max_qs = q.max(-1)
    for params in params_list:
        q_tot = apply(params, chosen, max_qs, onehot, states)
        assert q_tot.shape == LEAD
        expected = _qplex_np(params["params"], chosen, max_qs, onehot, states, n_heads)
        np.testing.assert_allclose(q_tot, expected, rtol=1e-4, atol=1e-4)


def test_qplex_satisfies_igm(qplex):
    _, params_list, apply, _ = qplex
    joint = np.array(list(itertools.product(range(N_ACTIONS), repeat=N_AGENTS)))  # [A^n, n]
    n_joint, batch = joint.shape[0], 32
    q, _, _, states, _ = _inputs(4, lead=(batch,))
    # every joint action of every batch element: [batch, A^n, n]
    chosen = np.stack([q[:, i, joint[:, i]] for i in range(N_AGENTS)], axis=-1)
    max_qs = np.broadcast_to(q.max(-1)[:, None, :], chosen.shape)
    onehot = _onehot(np.broadcast_to(joint, chosen.shape))
    states_b = np.broadcast_to(states[:, None, :], (batch, n_joint, STATE_DIM))
    greedy = q.argmax(-1)  # [batch, n]
    for params in params_list:
        q_tot = np.asarray(apply(params, chosen, max_qs, onehot, states_b))
        np.testing.assert_array_equal(joint[q_tot.argmax(-1)], greedy)


def test_qplex_advantage_is_detached(qplex):
    """dQ_tot/dq_i(chosen) = w_i(s): the advantage term carries no gradient."""
    mixer, params_list, _, _ = qplex
    q, actions, chosen, states, _ = _inputs(5, lead=(8,))
    grad_fn = jax.jit(jax.grad(lambda p, c, m, u, s: mixer.apply(p, c, m, u, s).sum(), argnums=1))
    for params in params_list:
        grads = grad_fn(params, chosen, q.max(-1), _onehot(actions), states)
        w = np.abs(_mlp(params["params"]["transform_w"], states)) + 1e-10
        np.testing.assert_allclose(grads, w, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------------------- DMIX


def test_dmix_shape_and_value(dmix):
    _, params, apply = dmix
    _, _, _, states, quantiles = _inputs(6)
    z_tot = apply(params, quantiles, states)
    assert z_tot.shape == (*LEAD, N_QUANTILES)
    z = np.asarray(quantiles, np.float64)
    means = z.mean(-1)
    expected = (z - means[..., None]).sum(-2) + _qmix_np(params["params"]["qmix"], means, states)[
        ..., None
    ]
    np.testing.assert_allclose(z_tot, expected, rtol=1e-4, atol=1e-4)


def test_dmix_mean_is_qmix_of_means(dmix):
    _, params, apply = dmix
    _, _, _, states, quantiles = _inputs(7)
    z_tot = apply(params, quantiles, states)
    qmix = QMIXMixer(n_agents=N_AGENTS, state_dim=STATE_DIM)
    q_of_means = jax.jit(qmix.apply)(
        {"params": params["params"]["qmix"]}, quantiles.mean(-1), states
    )
    np.testing.assert_allclose(z_tot.mean(-1), q_of_means, rtol=1e-5, atol=1e-5)
    # the shape part: shifting one agent's quantiles by a constant moves only the QMIX part
    shifted = quantiles.copy()
    shifted[..., 0, :] += 1.0
    diff = apply(params, shifted, states) - z_tot
    np.testing.assert_allclose(diff, np.broadcast_to(diff[..., :1], diff.shape), atol=1e-5)


# --------------------------------------------------------------------------------- make_mixer


def test_make_mixer_builds_each_name():
    expected = {"vdn": VDNMixer, "qmix": QMIXMixer, "qplex": QPLEXMixer, "dmix": DMIXMixer}
    assert set(MIXER_NAMES) == set(expected)
    for name, cls in expected.items():
        mixer = make_mixer(name, N_AGENTS, STATE_DIM, N_ACTIONS, embed_dim=8, qplex_heads=2)
        assert isinstance(mixer, cls)
    assert make_mixer("qmix", N_AGENTS, STATE_DIM, N_ACTIONS, embed_dim=8).embed_dim == 8
    assert (
        make_mixer("dmix", N_AGENTS, STATE_DIM, N_ACTIONS, hypernet_layers=1).hypernet_layers == 1
    )
    assert make_mixer("qplex", N_AGENTS, STATE_DIM, N_ACTIONS, qplex_heads=4).n_heads == 4


def test_make_mixer_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="qmixx") as err:
        make_mixer("qmixx", N_AGENTS, STATE_DIM, N_ACTIONS)
    for name in MIXER_NAMES:
        assert name in str(err.value)
