"""Targets and losses: greedy selection, 1-step and TD(lambda) targets, the masked TD loss, the
quantile Huber loss (DMIX) and the imitation losses of IGM-DA. All functions are pure; every
mask is an explicit argument.

Time alignment
--------------
An episode batch stores ``obs[0..T]`` (T + 1 entries; index T is the final observation) and
``actions``, ``rewards``, ``terminated``, ``filled`` at ``0..T-1``. Index t of those names the
*transition* obs[t] --actions[t]--> obs[t+1] with reward ``rewards[t]``:

- ``filled[t]`` = 1 for a real transition, 0 for padding after the episode ended;
- ``terminated[t]`` = 1 only on the last transition of an episode that really ended (win,
  loss, draw). A time-limit ending (truncation) has ``terminated = 0``;
- ``*_next[t]`` (e.g. ``target_q_tot_next``) is a value *at obs[t+1]*: compute network
  outputs over all of obs[0..T] and slice ``[1:]``.

Hence the one-step target ``y_t = r_t + gamma * (1 - terminated_t) * Q_next[t]``: a terminal
transition never bootstraps, and a truncated one bootstraps from the value of the final
observation obs[t+1]. Padded transitions get some finite target and are removed by the loss
mask (``filled``). TD(lambda) additionally stops the recursion at the episode's last real
transition so that padding never leaks into real targets (see :func:`td_lambda_targets`).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

# ---------------------------------------------------------------------------------------------
# Greedy selection over available actions


def masked_greedy_actions(q: jax.Array, avail: jax.Array) -> jax.Array:
    """Argmax over available actions only (unavailable ones count as -inf).

    q: [..., n_actions], avail: [..., n_actions] bool -> int32 [...]
    """
    chex.assert_equal_shape([q, avail])
    return jnp.argmax(jnp.where(avail.astype(bool), q, -jnp.inf), axis=-1).astype(jnp.int32)


def masked_max(q: jax.Array, avail: jax.Array) -> jax.Array:
    """Max over available actions only. q, avail: [..., n_actions] -> [...]

    A row with no available action (padding of a host-assembled batch; environments always
    offer one) gives 0, not -inf, so that nothing non-finite flows into a mixer, a loss or a
    gradient through it.
    """
    chex.assert_equal_shape([q, avail])
    avail = avail.astype(bool)
    best = jnp.max(jnp.where(avail, q, -jnp.inf), axis=-1)
    return jnp.where(jnp.any(avail, axis=-1), best, 0.0)


def select_action_values(q: jax.Array, actions: jax.Array) -> jax.Array:
    """Values of the given actions. q: [..., n_actions], actions: [...] int -> [...]"""
    chex.assert_shape(actions, q.shape[:-1])
    return jnp.take_along_axis(q, actions[..., None].astype(jnp.int32), axis=-1)[..., 0]


def double_q_next_values(
    target_q_next: jax.Array, selector_q_next: jax.Array, avail_next: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Double-Q: choose the next action with one network, value it with the target network.

    ``selector_q_next`` is the online agent's output for ordinary double Q, or the learner's
    output for IGM-DA (the learner acts, so its greedy action is the one the expert values).

    target_q_next:   [T, B, n_agents, n_actions] target network at obs[t+1]
    selector_q_next: [T, B, n_agents, n_actions]
    avail_next:      [T, B, n_agents, n_actions] bool
    returns: (values [T, B, n_agents], actions [T, B, n_agents] int32)
    """
    chex.assert_rank(target_q_next, 4)
    chex.assert_equal_shape([target_q_next, selector_q_next, avail_next])
    actions = masked_greedy_actions(selector_q_next, avail_next)
    return select_action_values(target_q_next, actions), actions


def double_q_next_quantiles(
    target_z_next: jax.Array, selector_q_next: jax.Array, avail_next: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Distributional double-Q: greedy action from ``selector_q_next`` (e.g. the mean over
    quantiles of the online agent), target quantiles taken at that action.

    target_z_next:   [T, B, n_agents, n_target_quantiles, n_actions]
    selector_q_next: [T, B, n_agents, n_actions]
    avail_next:      [T, B, n_agents, n_actions] bool
    returns: (quantiles [T, B, n_agents, n_target_quantiles], actions [T, B, n_agents])
    """
    chex.assert_rank(target_z_next, 5)
    chex.assert_equal_shape([selector_q_next, avail_next])
    chex.assert_equal_shape_prefix([target_z_next, selector_q_next], 3)
    chex.assert_axis_dimension(target_z_next, -1, selector_q_next.shape[-1])
    actions = masked_greedy_actions(selector_q_next, avail_next)
    index = jnp.broadcast_to(actions[..., None, None], (*target_z_next.shape[:-1], 1))
    return jnp.take_along_axis(target_z_next, index, axis=-1)[..., 0], actions


# ---------------------------------------------------------------------------------------------
# Targets


def one_step_targets(
    rewards: jax.Array, terminated: jax.Array, target_next: jax.Array, gamma: float
) -> jax.Array:
    """y_t = r_t + gamma * (1 - terminated_t) * target_next[t], gradients stopped.

    rewards, terminated: [T, B]
    target_next:         [T, B, *extra] value at obs[t+1] (extra = () for Q_tot,
                         (n_target_quantiles,) for DMIX's Z_tot)
    returns:             [T, B, *extra]
    """
    chex.assert_equal_shape([rewards, terminated])
    chex.assert_equal_shape_prefix([rewards, target_next], 2)
    extra = (1,) * (target_next.ndim - 2)
    r = rewards.astype(jnp.float32).reshape(*rewards.shape, *extra)
    not_terminal = 1.0 - terminated.astype(jnp.float32).reshape(*terminated.shape, *extra)
    return jax.lax.stop_gradient(r + gamma * not_terminal * target_next)


def lambda_returns(
    rewards: jax.Array,
    discounts: jax.Array,
    values: jax.Array,
    lambda_: jax.Array | float = 1.0,
) -> jax.Array:
    """Truncated lambda-returns along axis 0 (time), computed backwards from the last step:

        G_t = r_t + d_t [(1 - lambda_t) v_t + lambda_t G_{t+1}],    G_T := v_{T-1}

    where index t holds the reward ``r_t`` and discount ``d_t`` of step t and ``v_t``, the value
    of the state that step t leads to. The last step always bootstraps from its value, whatever
    its lambda; d_t = 0 ends the recursion (no bootstrap, nothing from later steps); lambda = 0
    gives one-step targets, lambda = 1 discounted returns bootstrapped at the end. These are the
    semantics of ``rlax.lambda_returns`` (tested against it), on any number of trailing batch
    axes. Gradients are not stopped.

    rewards, discounts, values: [T, *batch]
    lambda_:                    scalar or broadcastable to [T, *batch]
    returns:                    [T, *batch] (floating dtype of the inputs, at least float32)
    """
    chex.assert_equal_shape([rewards, discounts, values])
    dtype = jnp.promote_types(jnp.result_type(rewards, discounts, values), jnp.float32)
    lambdas = jnp.broadcast_to(jnp.asarray(lambda_, dtype), values.shape)
    steps = (rewards.astype(dtype), discounts.astype(dtype), values.astype(dtype), lambdas)

    def backward(g_next: jax.Array, step: tuple[jax.Array, ...]) -> tuple[jax.Array, jax.Array]:
        r, d, v, lam = step
        g = r + d * ((1.0 - lam) * v + lam * g_next)
        return g, g

    _, returns = jax.lax.scan(backward, steps[2][-1], steps, reverse=True)
    return returns


def td_lambda_targets(
    rewards: jax.Array,
    terminated: jax.Array,
    filled: jax.Array,
    target_q_tot_next: jax.Array,
    gamma: float,
    lam: float,
) -> jax.Array:
    """TD(lambda) targets per transition, gradients stopped.

        G_t = r_t + gamma (1 - terminated_t) [(1 - lambda_t) Q_next[t] + lambda_t G_{t+1}]
        lambda_t = lam * filled[t+1]     (filled[T] := 0)

    so the recursion ends at each episode's last real transition, where
    G_t = r_t + gamma (1 - terminated_t) Q_next[t]: no bootstrap if terminal, bootstrap from
    the final observation if truncated. lam = 0 gives :func:`one_step_targets`.
    Computed by :func:`lambda_returns` (discount_t = gamma (1 - terminated_t), a per-step
    lambda) over the time axis. Rewards and values of padded transitions are zeroed
    first so that non-finite padding cannot reach real targets; padded targets are meaningless
    and must be masked by ``filled`` in the loss.

    rewards, terminated, filled, target_q_tot_next: [T, B] -> targets [T, B]
    """
    chex.assert_rank(rewards, 2)
    chex.assert_equal_shape([rewards, terminated, filled, target_q_tot_next])
    valid = filled.astype(bool)
    r = jnp.where(valid, rewards, 0.0).astype(jnp.float32)
    v = jnp.where(valid, target_q_tot_next, 0.0).astype(jnp.float32)
    discounts = gamma * (1.0 - terminated.astype(jnp.float32))
    filled_next = jnp.concatenate([valid[1:], jnp.zeros_like(valid[:1])], axis=0)
    lambdas = lam * filled_next.astype(jnp.float32)
    return jax.lax.stop_gradient(lambda_returns(r, discounts, v, lambdas))


# ---------------------------------------------------------------------------------------------
# Losses


def _masked_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    """sum(w * x) / max(sum(w), 1) over all elements (weights broadcast to values).

    Elements of weight 0 are dropped with ``jnp.where``, not multiplied by 0, so a masked-out
    NaN or inf (padding) never turns the mean into NaN."""
    weights = jnp.broadcast_to(weights.astype(values.dtype), values.shape)
    kept = jnp.where(weights != 0, weights * values, 0.0)
    return jnp.sum(kept) / jnp.maximum(jnp.sum(weights), 1.0)


def masked_td_loss(q_tot_chosen: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean squared TD error over valid transitions; targets are gradient-stopped.

    q_tot_chosen, targets, mask: [T, B] (or any equal shapes) -> scalar
    """
    chex.assert_equal_shape([q_tot_chosen, targets, mask])
    td_error = q_tot_chosen - jax.lax.stop_gradient(targets)
    return _masked_mean(td_error**2, mask)


def quantile_huber_loss(
    pred_quantiles: jax.Array,
    pred_taus: jax.Array,
    target_quantiles: jax.Array,
    mask: jax.Array,
    kappa: float = 1.0,
) -> jax.Array:
    """Quantile Huber loss (IQN / DMIX), targets gradient-stopped.

    For u_ij = target_j - pred_i:
        rho_ij = |tau_i - 1{u_ij < 0}| * H_kappa(u_ij) / kappa,
        H_kappa(u) = u^2 / 2 if |u| <= kappa else kappa (|u| - kappa / 2)
    per sample: sum over predicted quantiles i of the mean over target quantiles j; then the
    masked mean over the leading (batch, time) axes.

    pred_quantiles:   [..., N]
    pred_taus:        [..., N] the fractions the predictions were made at
    target_quantiles: [..., N']
    mask:             [...]
    returns:          scalar
    """
    chex.assert_equal_shape([pred_quantiles, pred_taus])
    chex.assert_equal_shape_prefix([pred_quantiles, target_quantiles], pred_quantiles.ndim - 1)
    chex.assert_shape(mask, pred_quantiles.shape[:-1])
    u = jax.lax.stop_gradient(target_quantiles)[..., None, :] - pred_quantiles[..., :, None]
    abs_u = jnp.abs(u)
    huber = jnp.where(abs_u <= kappa, 0.5 * u**2, kappa * (abs_u - 0.5 * kappa))
    weight = jnp.abs(jax.lax.stop_gradient(pred_taus)[..., :, None] - (u < 0).astype(u.dtype))
    rho = weight * huber / kappa  # [..., N, N']
    per_sample = rho.mean(axis=-1).sum(axis=-1)
    return _masked_mean(per_sample, mask)


def _expert_onehot(expert_actions: jax.Array, mask_ndim: int, n_actions: int) -> jax.Array:
    """Int actions [*M, n] or one-hot [*M, n, A] -> float one-hot [*M, n, A]."""
    if expert_actions.ndim == mask_ndim + 1:
        return jax.nn.one_hot(expert_actions, n_actions, dtype=jnp.float32)
    chex.assert_rank(expert_actions, mask_ndim + 2)
    return expert_actions.astype(jnp.float32)


def _insert_extra_axes(x: jax.Array, target_ndim: int) -> jax.Array:
    """[*M, n, A] -> [*M, n, 1, ..., 1, A] with target_ndim axes in all."""
    return x.reshape(*x.shape[:-1], *(1,) * (target_ndim - x.ndim), x.shape[-1])


def _check_imitation_args(
    learner_q: jax.Array, expert_onehot: jax.Array, mask: jax.Array, avail: jax.Array | None
) -> None:
    k = mask.ndim
    chex.assert_equal_shape_prefix([learner_q, mask], k)
    chex.assert_shape(expert_onehot, (*learner_q.shape[: k + 1], learner_q.shape[-1]))
    if avail is not None:
        chex.assert_equal_shape([expert_onehot, avail])


def imitation_mse_loss(
    learner_q: jax.Array,
    expert_actions: jax.Array,
    mask: jax.Array,
    avail: jax.Array | None = None,
) -> jax.Array:
    """IGM-DA imitation loss: MSE between the learner's outputs for all actions and the one-hot
    of the expert's greedy action (Prop. 5), masked mean over valid (t, agent, action).

    ``avail=None`` (the authors' choice) regresses every action, unavailable ones to 0; passing
    ``avail`` counts only available actions. DMIX-DA: pass the learner's quantiles with the
    quantile axis before the action axis; every quantile is regressed to the same one-hot.

    learner_q:      [*M, n_agents, n_actions] or [*M, n_agents, n_quantiles, n_actions]
    expert_actions: [*M, n_agents] int (greedy over available actions, see
                    :func:`masked_greedy_actions`) or [*M, n_agents, n_actions] one-hot
    mask:           [*M] valid transitions (``filled``), e.g. M = (T, B)
    avail:          [*M, n_agents, n_actions] bool or None
    returns:        scalar
    """
    target = _expert_onehot(expert_actions, mask.ndim, learner_q.shape[-1])
    _check_imitation_args(learner_q, target, mask, avail)
    target = jax.lax.stop_gradient(_insert_extra_axes(target, learner_q.ndim))
    weights = mask.reshape(*mask.shape, *(1,) * (learner_q.ndim - mask.ndim)).astype(jnp.float32)
    if avail is not None:
        weights = weights * _insert_extra_axes(avail.astype(jnp.float32), learner_q.ndim)
    return _masked_mean((learner_q - target) ** 2, weights)


def imitation_ce_loss(
    learner_q: jax.Array,
    expert_actions: jax.Array,
    mask: jax.Array,
    avail: jax.Array | None = None,
) -> jax.Array:
    """Cross-entropy alternative: the learner's outputs are logits of a softmax policy, the
    label is the expert's greedy action; masked mean over valid (t, agent[, quantile]).

    With ``avail`` the unavailable logits are set to -1e9 before the softmax (the expert's
    label must then be available, which holds for an avail-masked greedy action); with
    ``avail=None`` the softmax runs over all actions.

    Shapes as in :func:`imitation_mse_loss`. returns: scalar
    """
    target = _expert_onehot(expert_actions, mask.ndim, learner_q.shape[-1])
    _check_imitation_args(learner_q, target, mask, avail)
    target = jax.lax.stop_gradient(_insert_extra_axes(target, learner_q.ndim))
    logits = learner_q
    if avail is not None:
        avail_b = _insert_extra_axes(avail.astype(bool), learner_q.ndim)
        logits = jnp.where(avail_b, logits, -1e9)
    cross_entropy = -jnp.sum(target * jax.nn.log_softmax(logits, axis=-1), axis=-1)
    weights = mask.reshape(*mask.shape, *(1,) * (cross_entropy.ndim - mask.ndim))
    return _masked_mean(cross_entropy, weights)
