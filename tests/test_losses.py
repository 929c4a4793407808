"""Targets and losses against plain-numpy references with explicit loops, and hand values.

Time alignment (see igmda_jax.core.losses): index t names the transition obs[t] -> obs[t+1];
``*_next[t]`` is a value at obs[t+1]; ``filled[t]`` marks real transitions; ``terminated[t]``
marks a real ending (no bootstrap), a time-limit ending has terminated = 0 (bootstrap).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igmda_jax.core import losses

GAMMA = 0.9

# ------------------------------------------------------------------ hand-made episode batch
# T = 6 transitions, B = 4 episodes:
#   b0: terminal at t = 2, padding after
#   b1: time limit (truncated) at t = 3, padding after
#   b2: time limit at the last stored transition t = 5 (no padding)
#   b3: terminal at the last stored transition t = 5
T, B = 6, 4
EPISODE_LENGTH = [3, 4, 6, 6]
TERMINAL = [True, False, False, True]


def _episode_batch():
    rng = np.random.default_rng(0)
    filled = np.zeros((T, B), np.float32)
    terminated = np.zeros((T, B), np.float32)
    for b, (length, is_terminal) in enumerate(zip(EPISODE_LENGTH, TERMINAL, strict=True)):
        filled[:length, b] = 1.0
        terminated[length - 1, b] = float(is_terminal)
    rewards = rng.uniform(-1.0, 1.0, (T, B)).astype(np.float32)
    values_next = rng.uniform(-2.0, 2.0, (T, B)).astype(np.float32)
    # padding holds garbage, which must never reach a real target
    rewards[filled == 0] = 1e3
    values_next[filled == 0] = np.nan
    return rewards, terminated, filled, values_next


def _one_step_ref(rewards, terminated, values_next, gamma):
    out = np.zeros_like(rewards, dtype=np.float64)
    for t in range(rewards.shape[0]):
        for b in range(rewards.shape[1]):
            bootstrap = 0.0 if terminated[t, b] else gamma * values_next[t, b]
            out[t, b] = rewards[t, b] + bootstrap
    return out


def _td_lambda_ref(rewards, terminated, filled, values_next, gamma, lam):
    """Forward view: G^lam_t = (1 - lam) sum_{n < H} lam^(n-1) G^(n)_t + lam^(H-1) G^(H)_t,
    with H the number of real transitions left in the episode and G^(n) the n-step return."""
    n_t, n_b = rewards.shape
    out = np.full((n_t, n_b), np.nan)
    for b in range(n_b):
        for t in range(n_t):
            if not filled[t, b]:
                continue
            end = t
            while end + 1 < n_t and filled[end + 1, b]:
                end += 1
            horizon = end - t + 1

            def n_step(n, t=t, b=b):
                ret, discount = 0.0, 1.0
                for k in range(n):
                    ret += discount * rewards[t + k, b]
                    if terminated[t + k, b]:
                        return ret
                    discount *= gamma
                return ret + discount * values_next[t + n - 1, b]

            g = sum((1 - lam) * lam ** (n - 1) * n_step(n) for n in range(1, horizon))
            out[t, b] = g + lam ** (horizon - 1) * n_step(horizon)
    return out


@pytest.fixture(scope="module")
def td_lambda_fn():
    return jax.jit(losses.td_lambda_targets, static_argnames=("gamma", "lam"))


@pytest.fixture(scope="module")
def one_step_fn():
    return jax.jit(losses.one_step_targets, static_argnames=("gamma",))


# ------------------------------------------------------------------------------ greedy helpers


def test_masked_greedy_and_max_ignore_unavailable_actions():
    q = jnp.array([[5.0, 1.0, 2.0], [-1.0, -3.0, -2.0]])
    avail = jnp.array([[False, True, True], [False, True, True]])
    np.testing.assert_array_equal(losses.masked_greedy_actions(q, avail), [2, 2])
    np.testing.assert_allclose(losses.masked_max(q, avail), [2.0, -2.0])
    np.testing.assert_allclose(losses.select_action_values(q, jnp.array([0, 1])), [5.0, -3.0])


def test_double_q_next_values_by_hand():
    # [T=1, B=1, n=2, A=3]
    selector = jnp.array([[[[0.0, 9.0, 1.0], [3.0, 2.0, 1.0]]]])
    target = jnp.array([[[[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]]]])
    avail = jnp.array([[[[True, False, True], [True, True, True]]]])
    values, actions = losses.double_q_next_values(target, selector, avail)
    np.testing.assert_array_equal(actions, [[[2, 0]]])  # 9.0 is unavailable for agent 0
    np.testing.assert_allclose(values, [[[30.0, 40.0]]])


def test_double_q_next_quantiles_by_hand():
    # [T=1, B=1, n=1, N'=2, A=3]
    target = jnp.array([[[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]]]])
    selector = jnp.array([[[[0.0, 1.0, 7.0]]]])
    avail = jnp.array([[[[True, True, False]]]])
    z, actions = losses.double_q_next_quantiles(target, selector, avail)
    np.testing.assert_array_equal(actions, [[[1]]])
    np.testing.assert_allclose(z, [[[[2.0, 5.0]]]])


# ------------------------------------------------------------------------------------ targets


def test_one_step_targets_match_numpy(one_step_fn):
    rewards, terminated, filled, values_next = _episode_batch()
    targets = np.asarray(one_step_fn(rewards, terminated, values_next, gamma=GAMMA))
    expected = _one_step_ref(rewards, terminated, values_next, GAMMA)
    valid = filled == 1
    np.testing.assert_allclose(targets[valid], expected[valid], rtol=1e-6, atol=1e-6)


def test_one_step_targets_broadcast_over_quantiles(one_step_fn):
    rewards, terminated, filled, values_next = _episode_batch()
    values_next = np.nan_to_num(values_next)
    z_next = values_next[..., None] + np.array([-1.0, 0.0, 2.0], np.float32)
    targets = np.asarray(one_step_fn(rewards, terminated, z_next, gamma=GAMMA))
    for j, shift in enumerate((-1.0, 0.0, 2.0)):
        ref = _one_step_ref(rewards, terminated, values_next + shift, GAMMA)
        np.testing.assert_allclose(targets[..., j], ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lam", [0.0, 0.6, 1.0])
def test_td_lambda_targets_match_numpy(td_lambda_fn, lam):
    rewards, terminated, filled, values_next = _episode_batch()
    targets = np.asarray(
        td_lambda_fn(rewards, terminated, filled, values_next, gamma=GAMMA, lam=lam)
    )
    expected = _td_lambda_ref(rewards, terminated, filled, values_next, GAMMA, lam)
    valid = filled == 1
    assert np.all(np.isfinite(targets))
    np.testing.assert_allclose(targets[valid], expected[valid], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lam", [0.0, 0.6, 1.0])
def test_terminal_never_bootstraps_and_truncated_does(td_lambda_fn, one_step_fn, lam):
    rewards, terminated, filled, values_next = _episode_batch()
    td = np.asarray(td_lambda_fn(rewards, terminated, filled, values_next, gamma=GAMMA, lam=lam))
    one = np.asarray(one_step_fn(rewards, terminated, values_next, gamma=GAMMA))
    for b, (length, is_terminal) in enumerate(zip(EPISODE_LENGTH, TERMINAL, strict=True)):
        last = length - 1
        r, v = rewards[last, b], values_next[last, b]
        expected = r if is_terminal else r + GAMMA * v
        assert td[last, b] == pytest.approx(expected, rel=1e-6, abs=1e-6), (b, lam)
        assert one[last, b] == pytest.approx(expected, rel=1e-6, abs=1e-6), b
    # and the one before the terminal transition of b0 bootstraps through it (lam = 1):
    if lam == 1.0:
        assert td[1, 0] == pytest.approx(rewards[1, 0] + GAMMA * rewards[2, 0], rel=1e-6)


def test_td_lambda_zero_equals_one_step(td_lambda_fn, one_step_fn):
    rewards, terminated, filled, values_next = _episode_batch()
    td0 = np.asarray(td_lambda_fn(rewards, terminated, filled, values_next, gamma=GAMMA, lam=0.0))
    one = np.asarray(one_step_fn(rewards, terminated, values_next, gamma=GAMMA))
    valid = filled == 1
    np.testing.assert_allclose(td0[valid], one[valid], rtol=1e-6, atol=1e-6)


# lambda_returns: r = [1, 2, 3], d = [0.5, 0, 0.5], v = [10, 20, 30]. The last step bootstraps
# from v: G_2 = 3 + 0.5 * 30 = 18; d_1 = 0 cuts the recursion: G_1 = 2; and
# G_0 = 1 + 0.5 * ((1 - lam) * 10 + lam * 2): 6 for lam = 0, 4 for 0.5, 2 for 1.
@pytest.mark.parametrize(("lam", "g0"), [(0.0, 6.0), (0.5, 4.0), (1.0, 2.0)])
def test_lambda_returns_by_hand(lam, g0):
    rewards, discounts = jnp.array([1.0, 2.0, 3.0]), jnp.array([0.5, 0.0, 0.5])
    values = jnp.array([10.0, 20.0, 30.0])
    returns = losses.lambda_returns(rewards, discounts, values, lam)
    np.testing.assert_allclose(returns, [g0, 2.0, 18.0], rtol=1e-6)


def _random_trajectories(seed: int, n_t: int = 11, n_b: int = 5):
    """Rewards, discounts (0 at random terminal steps) and values [T, B], float32."""
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(n_t, n_b)).astype(np.float32)
    discounts = rng.uniform(0.8, 1.0, (n_t, n_b)).astype(np.float32)
    discounts[rng.random((n_t, n_b)) < 0.25] = 0.0
    discounts[-1, 0] = discounts[3, 1] = 0.0  # a terminal last step and one mid-sequence
    values = rng.normal(scale=3.0, size=(n_t, n_b)).astype(np.float32)
    return rewards, discounts, values


@pytest.mark.parametrize("lam", [0.0, 0.6, 1.0, "per-step"])
def test_lambda_returns_match_rlax(lam):
    import rlax  # a test dependency only (the `test` extra)

    rewards, discounts, values = _random_trajectories(seed=3)
    if lam == "per-step":
        lam = np.random.default_rng(4).uniform(0.0, 1.0, rewards.shape).astype(np.float32)
        in_axes = (1, 1, 1, 1)
    else:
        in_axes = (1, 1, 1, None)
    expected = jax.vmap(rlax.lambda_returns, in_axes=in_axes, out_axes=1)(
        rewards, discounts, values, lam
    )
    ours = losses.lambda_returns(rewards, discounts, values, lam)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
    column = losses.lambda_returns(rewards[:, 2], discounts[:, 2], values[:, 2], 0.6)
    column_ref = rlax.lambda_returns(rewards[:, 2], discounts[:, 2], values[:, 2], 0.6)
    np.testing.assert_allclose(column, column_ref, rtol=1e-5, atol=1e-5)


def test_targets_carry_no_gradient():
    rewards, terminated, filled, values_next = _episode_batch()
    values_next = np.nan_to_num(values_next)
    g_td = jax.grad(
        lambda v: losses.td_lambda_targets(rewards, terminated, filled, v, GAMMA, 0.6).sum()
    )
    g_one = jax.grad(lambda v: losses.one_step_targets(rewards, terminated, v, GAMMA).sum())
    assert not np.any(np.asarray(g_td(values_next)))
    assert not np.any(np.asarray(g_one(values_next)))


# ------------------------------------------------------------------------------------ TD loss


def test_masked_td_loss_by_hand():
    q = jnp.array([1.0, 2.0, 3.0])
    y = jnp.array([0.0, 0.0, 10.0])
    mask = jnp.array([1.0, 1.0, 0.0])
    assert float(losses.masked_td_loss(q, y, mask)) == pytest.approx(2.5)
    grad_y = jax.grad(lambda y: losses.masked_td_loss(q, y, mask))(y)
    assert not np.any(np.asarray(grad_y))
    grad_q = jax.grad(lambda q: losses.masked_td_loss(q, y, mask))(q)
    np.testing.assert_allclose(grad_q, [1.0, 2.0, 0.0])
    assert float(losses.masked_td_loss(q, y, jnp.zeros(3))) == 0.0


# ----------------------------------------------------------------------- quantile Huber loss


def _quantile_huber_ref(pred, taus, target, mask, kappa):
    lead = pred.shape[:-1]
    total, count = 0.0, 0.0
    for idx in np.ndindex(*lead):
        if not mask[idx]:
            continue
        sample = 0.0
        for i in range(pred.shape[-1]):
            acc = 0.0
            for j in range(target.shape[-1]):
                u = float(target[idx + (j,)]) - float(pred[idx + (i,)])
                huber = 0.5 * u * u if abs(u) <= kappa else kappa * (abs(u) - 0.5 * kappa)
                acc += abs(float(taus[idx + (i,)]) - (1.0 if u < 0 else 0.0)) * huber / kappa
            sample += acc / target.shape[-1]
        total += sample * mask[idx]
        count += mask[idx]
    return total / max(count, 1.0)


@pytest.mark.parametrize("kappa", [1.0, 0.5])
def test_quantile_huber_loss_matches_numpy(kappa):
    rng = np.random.default_rng(1)
    n_pred, n_target = 4, 3
    pred = 2.0 * rng.standard_normal((T, B, n_pred)).astype(np.float32)
    taus = rng.random((T, B, n_pred)).astype(np.float32)
    target = 2.0 * rng.standard_normal((T, B, n_target)).astype(np.float32)
    mask = (rng.random((T, B)) < 0.7).astype(np.float32)
    loss = losses.quantile_huber_loss(pred, taus, target, mask, kappa=kappa)
    assert float(loss) == pytest.approx(
        _quantile_huber_ref(pred, taus, target, mask, kappa), rel=1e-5
    )
    grad_target = jax.grad(lambda z: losses.quantile_huber_loss(pred, taus, z, mask, kappa))(target)
    assert not np.any(np.asarray(grad_target))


def test_quantile_huber_loss_by_hand():
    # one sample, one predicted quantile at tau = 0.25, targets 2 (u = 2 > kappa) and -0.5
    pred, taus = jnp.array([[0.0]]), jnp.array([[0.25]])
    target, mask = jnp.array([[2.0, -0.5]]), jnp.array([1.0])
    # u = 2: 0.25 * (2 - 0.5) = 0.375 ; u = -0.5: 0.75 * 0.125 = 0.09375 ; mean over targets
    expected = (0.375 + 0.09375) / 2
    assert float(losses.quantile_huber_loss(pred, taus, target, mask)) == pytest.approx(expected)


# ----------------------------------------------------------------------------- imitation loss
# [T = 1, B = 2, n = 2, A = 3]; the second transition is padding (garbage values).
LEARNER_Q = np.array(
    [[[[1.0, 0.0, 0.0], [0.5, 2.0, 0.5]], [[100.0, -100.0, 7.0], [9.0, 9.0, 9.0]]]], np.float32
)
EXPERT = np.array([[[0, 2], [1, 1]]])
MASK = np.array([[1.0, 0.0]], np.float32)
AVAIL = np.array([[[[True, True, False], [True, False, True]]] * 2])


def test_imitation_mse_loss_by_hand():
    # valid (t, agent, action) errors: agent 0: 0, 0, 0; agent 1: 0.25, 4, 0.25 -> 4.5 / 6
    assert float(losses.imitation_mse_loss(LEARNER_Q, EXPERT, MASK)) == pytest.approx(0.75)
    # only available actions: agent 0: 0, 0; agent 1: 0.25, 0.25 -> 0.5 / 4
    loss_avail = losses.imitation_mse_loss(LEARNER_Q, EXPERT, MASK, avail=AVAIL)
    assert float(loss_avail) == pytest.approx(0.125)
    onehot = np.eye(3, dtype=np.float32)[EXPERT]
    assert float(losses.imitation_mse_loss(LEARNER_Q, onehot, MASK)) == pytest.approx(0.75)


def test_imitation_mse_loss_on_quantiles():
    # every quantile is regressed to the same one-hot: [T, B, n, N = 2, A]
    shift = np.array([0.0, 1.0], np.float32)[:, None]
    learner_z = LEARNER_Q[:, :, :, None, :] + shift
    target = np.eye(3, dtype=np.float32)[EXPERT][:, :, :, None, :]
    err = (learner_z - target) ** 2
    expected = err[:, 0].mean()  # only the first (valid) transition counts
    assert float(losses.imitation_mse_loss(learner_z, EXPERT, MASK)) == pytest.approx(
        expected, rel=1e-6
    )


def test_imitation_mse_gradient_reaches_only_the_learner():
    grad = jax.grad(lambda q: losses.imitation_mse_loss(q, EXPERT, MASK))(jnp.asarray(LEARNER_Q))
    assert not np.any(np.asarray(grad)[:, 1])  # padded transition
    expected = 2.0 * (LEARNER_Q[:, 0] - np.eye(3)[EXPERT[:, 0]]) / 6.0
    np.testing.assert_allclose(grad[:, 0], expected, rtol=1e-6)


def test_imitation_ce_loss_by_hand():
    agent0 = -(1.0 - math.log(math.e + 2.0))
    agent1 = -(0.5 - math.log(2.0 * math.exp(0.5) + math.exp(2.0)))
    ce = losses.imitation_ce_loss(LEARNER_Q, EXPERT, MASK)
    assert float(ce) == pytest.approx((agent0 + agent1) / 2, rel=1e-6)
    # unavailable logits removed: agent 0 over {0, 1}, agent 1 over {0, 2}
    agent0_av = -(1.0 - math.log(math.e + 1.0))
    agent1_av = math.log(2.0)
    ce_avail = losses.imitation_ce_loss(LEARNER_Q, EXPERT, MASK, avail=AVAIL)
    assert float(ce_avail) == pytest.approx((agent0_av + agent1_av) / 2, rel=1e-6)
