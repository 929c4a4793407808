"""One update: TD loss through the mixer (+ the imitation loss for -da/-bc), as pure functions.

The TD part trains ``agent`` (the plain agent, or the expert) and the mixer: Q_tot of the
executed joint action regresses to 1-step or TD(lambda) double-Q targets built from the
target networks. The next action is the greedy action over available actions of the online
agent (plain, -bc), or of the **learner** (-da, the authors' choice; see
``Config.expert_target_action``). For -da/-bc the learner regresses its outputs for all
actions to the one-hot of the expert's greedy action (MSE, Prop. 5) or uses them as logits
(cross-entropy). Expert outputs and targets are gradient-stopped, so the imitation loss never
moves the expert or the mixer and the TD loss never moves the learner. One optimizer updates
all parameters with the summed loss ``td_weight * TD + imitation_weight * imitation`` (as the
authors do, both weights 1); ``td_weight = 0`` freezes the expert and mixer (``igmda imitate``).

DMIX regresses N sampled quantiles of Z_tot to N' target quantile samples (quantile Huber).
With ``td_lambda > 0`` the lambda recursion runs per target sample j, mixing sample j of
Z_tot(t+1), Z_tot(t+2), ... whose fractions are drawn independently at every step: the targets'
mean is the lambda-return's, but a convex combination of independent samples is narrower than
the mixture of n-step return distributions that a distributional lambda-return is. So
``make_config`` gives DMIX 1-step targets (``td_lambda = 0``, as DFAC and the authors) unless
``td_lambda`` is set explicitly.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from igmda_jax.core import losses
from igmda_jax.core.acting import Networks, build_inputs
from igmda_jax.core.config import Config
from igmda_jax.core.networks import IQNAgent, initial_hidden, unroll
from igmda_jax.fused.rollout import EpisodeBatch

Params = dict[str, Any]


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """Global-norm clipping, then RMSprop (PyTorch semantics: eps outside the sqrt) or Adam."""
    if config.optimizer == "rmsprop":
        base = optax.rmsprop(
            config.lr, decay=config.rms_alpha, eps=config.optim_eps, eps_in_sqrt=False
        )
    else:
        base = optax.adam(config.lr)
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), base)


def _time_major(x: jax.Array) -> jax.Array:
    return jnp.swapaxes(x, 0, 1)


def _unroll_q(
    module,
    params,
    inputs: jax.Array,
    taus: jax.Array | None,
    hidden_dim: int,
    n_records: jax.Array | None = None,
) -> jax.Array:
    """Unroll from a zero hidden state. inputs: [T1, B, n, in] -> q [T1, B, n, A] or
    quantiles [T1, B, n, N, A] for IQN agents (taus [T1, B, N]); with ``n_records`` the
    recurrence runs on that many steps only (the rest is padding)."""
    t1, b, n = inputs.shape[:3]
    resets = jnp.zeros((t1, b), bool)
    hidden0 = initial_hidden((b,), n, hidden_dim)
    return unroll(module, params, hidden0, inputs, resets, taus, n_records)


def _mix(nets: Networks, mixer_params, chosen, max_qs, actions, states) -> jax.Array:
    """Q_tot (or Z_tot [..., N]) of chosen utilities [..., n] (quantiles [..., n, N])."""
    if nets.quantile:
        return nets.mixer.apply(mixer_params, chosen, states)
    if max_qs is None:
        return nets.mixer.apply(mixer_params, chosen, states)
    onehot = jax.nn.one_hot(actions, nets.n_actions)
    return nets.mixer.apply(mixer_params, chosen, max_qs, onehot, states)


class Fractions(NamedTuple):
    """DMIX's quantile fractions of one update, time-major: [T+1, B, N] each (N' for target)."""

    online: jax.Array
    target: jax.Array
    learner: jax.Array


def draw_fractions(key: jax.Array, config: Config, n_records: int, batch_size: int):
    """Fractions of every (record, episode) for DMIX, drawn from ``key``; None otherwise."""
    if config.mixer != "dmix":
        return None
    online_key, target_key, learner_key = jax.random.split(key, 3)

    def draw(k: jax.Array, n: int) -> jax.Array:
        return jax.random.uniform(k, (n_records, batch_size, n))

    return Fractions(
        draw(online_key, config.n_quantiles),
        draw(target_key, config.n_target_quantiles),
        draw(learner_key, config.n_quantiles),
    )


def loss_fn(
    params: Params,
    target_params: Params,
    batch: EpisodeBatch,
    key: jax.Array,
    config: Config,
    nets: Networks,
    observe,
    fractions: Fractions | None = None,
    n_records: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Total loss and metrics on a batch of B episodes (batch-major, see rollout.py).

    Every term and metric is a mean over the batch's valid transitions (``filled``), so the
    value on a batch is the ``filled``-weighted mean of its values on parts of the batch
    (:func:`update` relies on it). DMIX draws its quantile fractions from ``key``
    (:func:`draw_fractions`) unless ``fractions`` [T+1, B, N] are given. ``n_records`` (at
    least the longest episode's transitions + 1): the recurrences skip the records after it,
    which are padding of every episode.
    """
    records = jax.tree.map(_time_major, batch.records)  # [T+1, B, ...]
    actions = _time_major(batch.actions)  # [T, B, n]
    rewards = _time_major(batch.rewards)
    terminated = _time_major(batch.terminated)
    filled = _time_major(batch.filled).astype(jnp.float32)
    seen = jax.vmap(jax.vmap(observe))(records)
    avail = seen.avail  # [T+1, B, n, A]
    t1, b = avail.shape[:2]
    previous = jnp.concatenate([jnp.full_like(actions[:1], -1), actions], axis=0)  # [T+1, B, n]
    agent_obs = seen.expert_obs if nets.learner is not None else seen.obs
    agent_inputs = build_inputs(config, agent_obs, previous, avail, network="agent")
    quantile = isinstance(nets.agent, IQNAgent)
    if quantile and fractions is None:
        fractions = draw_fractions(key, config, t1, b)
    taus = fractions.online if quantile else None
    target_taus = fractions.target if quantile else None

    hidden_dim = config.hidden_dim
    online = _unroll_q(nets.agent, params["agent"], agent_inputs, taus, hidden_dim, n_records)
    target = _unroll_q(
        nets.agent, target_params["agent"], agent_inputs, target_taus, hidden_dim, n_records
    )
    online_mean = online.mean(axis=-2) if quantile else online  # [T+1, B, n, A]

    learner_out = None
    if nets.learner is not None:
        learner_inputs = build_inputs(config, seen.obs, previous, avail, network="learner")
        learner_taus = fractions.learner if quantile else None
        learner_out = _unroll_q(
            nets.learner, params["learner"], learner_inputs, learner_taus, hidden_dim, n_records
        )

    # next-action selector for double Q
    if config.uses_expert and config.target_action_from == "learner":
        selector = learner_out.mean(axis=-2) if quantile else learner_out
    elif config.double_q:
        selector = online_mean
    else:
        selector = target.mean(axis=-2) if quantile else target
    selector = jax.lax.stop_gradient(selector[1:])

    qplex = config.mixer == "qplex"
    if quantile:
        chosen = jnp.take_along_axis(online[:-1], actions[..., None, None], axis=-1)[..., 0]
        q_tot = _mix(nets, params["mixer"], chosen, None, None, seen.state[:-1])  # [T, B, N]
        next_z, _ = losses.double_q_next_quantiles(target[1:], selector, avail[1:])
        target_tot = _mix(nets, target_params["mixer"], next_z, None, None, seen.state[1:])
    else:
        chosen = losses.select_action_values(online[:-1], actions)  # [T, B, n]
        max_qs = (
            jax.lax.stop_gradient(losses.masked_max(online[:-1], avail[:-1])) if qplex else None
        )
        q_tot = _mix(nets, params["mixer"], chosen, max_qs, actions, seen.state[:-1])
        next_values, next_actions = losses.double_q_next_values(target[1:], selector, avail[1:])
        target_max = losses.masked_max(target[1:], avail[1:]) if qplex else None
        target_tot = _mix(
            nets, target_params["mixer"], next_values, target_max, next_actions, seen.state[1:]
        )

    if config.td_lambda > 0.0:
        lambda_fn = lambda next_tot: losses.td_lambda_targets(  # noqa: E731
            rewards, terminated, filled, next_tot, config.gamma, config.td_lambda
        )
        targets = (
            jax.vmap(lambda_fn, in_axes=-1, out_axes=-1)(target_tot)
            if quantile
            else lambda_fn(target_tot)
        )
    else:
        targets = losses.one_step_targets(rewards, terminated, target_tot, config.gamma)
    targets = jax.lax.stop_gradient(targets)

    if quantile:
        td_loss = losses.quantile_huber_loss(q_tot, taus[:-1], targets, filled)
        q_tot_mean = q_tot.mean(axis=-1)
    else:
        td_loss = losses.masked_td_loss(q_tot, targets, filled)
        q_tot_mean = q_tot
    valid = jnp.maximum(filled.sum(), 1.0)
    metrics = {
        "td_loss": td_loss,
        "q_tot": jnp.sum(q_tot_mean * filled) / valid,
        "target": jnp.sum((targets.mean(-1) if quantile else targets) * filled) / valid,
    }
    # td_weight = 0 (igmda imitate) leaves the TD term out of the graph entirely, so the
    # agent/expert and mixer get exactly zero gradients (0 * a non-finite gradient would be NaN)
    total = config.td_weight * td_loss if config.td_weight > 0.0 else jnp.zeros_like(td_loss)
    if learner_out is not None:
        expert_actions = losses.masked_greedy_actions(
            jax.lax.stop_gradient(online_mean[:-1]), avail[:-1]
        )
        imitation = (
            losses.imitation_ce_loss if config.imitation_loss == "ce" else losses.imitation_mse_loss
        )
        learner_mean = learner_out.mean(axis=-2) if quantile else learner_out
        # DMIX-DA: every sampled quantile [.., n, N, A] (authors) or their mean [.., n, A]
        imitated = learner_out if config.imitate_quantiles else learner_mean
        imitation_loss = imitation(imitated[:-1], expert_actions, filled)
        agree = losses.masked_greedy_actions(learner_mean[:-1], avail[:-1]) == expert_actions
        metrics["imitation_loss"] = imitation_loss
        metrics["imitation_accuracy"] = jnp.sum(agree.mean(-1) * filled) / valid
        total = total + config.imitation_weight * imitation_loss
    metrics["loss"] = total
    return total, metrics


def window_lengths(n_steps: int, n_windows: int) -> tuple[int, ...]:
    """Static unroll windows, in transitions, for batches padded to ``n_steps`` transitions:
    ceil(n_steps * k / n_windows) for k = 1..n_windows (the last is ``n_steps``)."""
    return tuple(sorted({math.ceil(n_steps * k / n_windows) for k in range(1, n_windows + 1)}))


def truncate(batch: EpisodeBatch, n_steps: int) -> EpisodeBatch:
    """The first ``n_steps`` transitions of every episode (and n_steps + 1 records)."""
    return EpisodeBatch(
        records=jax.tree.map(lambda x: x[:, : n_steps + 1], batch.records),
        actions=batch.actions[:, :n_steps],
        rewards=batch.rewards[:, :n_steps],
        terminated=batch.terminated[:, :n_steps],
        filled=batch.filled[:, :n_steps],
    )


def longest_episode(batch: EpisodeBatch, seed_axis: str | None = None) -> jax.Array:
    """Transitions of the batch's longest episode (the max over the ``seed_axis`` of an
    enclosing vmap too, so every seed takes the same branch): [] int32."""
    longest = jnp.max(jnp.sum(batch.filled.astype(jnp.int32), axis=1))
    return longest if seed_axis is None else jax.lax.pmax(longest, seed_axis)


def microbatches(config: Config) -> int:
    """Parts of the batch an update computes one after another (``Config.update_microbatches``;
    0 = auto: 8 on CPU, 1 elsewhere), reduced to a divisor of ``batch_size``."""
    wanted = config.update_microbatches
    if wanted == 0:
        wanted = 8 if jax.default_backend() == "cpu" else 1
    return max(g for g in range(1, wanted + 1) if config.batch_size % g == 0)


def update(
    params: Params,
    target_params: Params,
    opt_state: optax.OptState,
    batch: EpisodeBatch,
    key: jax.Array,
    config: Config,
    nets: Networks,
    observe,
    optimizer: optax.GradientTransformation,
    seed_axis: str | None = None,
) -> tuple[Params, optax.OptState, dict[str, jax.Array]]:
    """One gradient step on ``batch``; returns new params, optimizer state and metrics.

    Padding is not unrolled: with ``config.unroll_windows`` > 1 the loss and its gradient run
    on the shortest of a few static windows (:func:`window_lengths`) that holds the longest
    episode, chosen by ``lax.switch``. Steps past every episode's end carry zero weight in
    every loss term and cannot reach a real target (TD(lambda) stops at each episode's last
    transition), so the result equals the full unroll's (tested). Under a seed vmap pass its
    ``seed_axis`` so all seeds share one window and the switch stays a branch; without it the
    switch becomes a select that computes every window.

    With :func:`microbatches` G > 1 the episodes are sorted by length and split into G equal
    parts, computed one after another, each on its own window: the short episodes no longer
    pay for the longest one's padding. Every loss term is a mean over valid transitions, so
    the batch's gradient and metrics are the parts' weighted by their share of the valid
    transitions: the same update up to floating-point rounding (tested).
    """
    grad_fn = jax.grad(loss_fn, has_aux=True)
    n_steps = batch.actions.shape[1]
    windows = window_lengths(n_steps, config.unroll_windows)
    # DMIX: fractions for the whole padded batch, so each part and window sees the same ones
    fractions = draw_fractions(key, config, n_steps + 1, batch.actions.shape[0])

    def grads_on(part: EpisodeBatch, part_fractions: Fractions | None):
        """Gradient and metrics on ``part`` (fractions time-major), on its window."""

        longest = longest_episode(part, seed_axis)

        def on_window(window: int):
            def compute(params: Params) -> tuple[Params, dict[str, jax.Array]]:
                window_fractions = (
                    None
                    if part_fractions is None
                    else jax.tree.map(lambda x: x[: window + 1], part_fractions)
                )
                return grad_fn(
                    params,
                    target_params,
                    truncate(part, window),
                    key,
                    config,
                    nets,
                    observe,
                    window_fractions,
                    longest + 1,
                )

            return compute

        if len(windows) == 1:
            return on_window(n_steps)(params)
        index = jnp.minimum(jnp.searchsorted(jnp.asarray(windows), longest), len(windows) - 1)
        return jax.lax.switch(index, [on_window(w) for w in windows], params)

    n_parts = microbatches(config)
    if n_parts == 1:
        grads, metrics = grads_on(batch, fractions)
    else:
        grads, metrics = _grads_by_parts(grads_on, batch, fractions, n_parts)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics["grad_norm"] = optax.tree.norm(grads)
    return params, opt_state, metrics


def _grads_by_parts(grads_on, batch: EpisodeBatch, fractions: Fractions | None, n_parts: int):
    """Sum over ``n_parts`` length-sorted parts of the batch of ``grads_on(part, fractions)``,
    each weighted by its share of the batch's valid transitions (a ``lax.scan``)."""
    lengths = jnp.sum(batch.filled.astype(jnp.int32), axis=1)  # [B]
    order = jnp.argsort(lengths)
    batch_size = lengths.shape[0]

    def split(x: jax.Array, axis: int) -> jax.Array:  # [.., B, ..] -> [G, .., B / G, ..]
        x = jnp.take(x, order, axis=axis)
        x = x.reshape(*x.shape[:axis], n_parts, batch_size // n_parts, *x.shape[axis + 1 :])
        return jnp.moveaxis(x, axis, 0)

    parts = jax.tree.map(lambda x: split(x, 0), batch)
    part_fractions = None if fractions is None else jax.tree.map(lambda x: split(x, 1), fractions)
    total = jnp.maximum(jnp.sum(batch.filled.astype(jnp.float32)), 1.0)

    def body(acc, xs):
        part, fractions_part = xs
        grads_metrics = grads_on(part, fractions_part)
        share = jnp.sum(part.filled.astype(jnp.float32)) / total
        return jax.tree.map(lambda a, g: a + share * g, acc, grads_metrics), None

    first_part = jax.tree.map(lambda x: x[0], (parts, part_fractions))
    shapes = jax.eval_shape(lambda xs: grads_on(*xs), first_part)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    (grads, metrics), _ = jax.lax.scan(body, zeros, (parts, part_fractions))
    return grads, metrics
