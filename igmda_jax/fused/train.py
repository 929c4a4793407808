"""The fused training step: collect -> replay -> update -> target sync, K times under one jit.

``make_train(config, env)`` returns a :class:`Trainer` of pure functions:

* ``init(key) -> TrainState``
* ``train_chunk(state) -> (state, metrics)``: ``config.iterations_per_call`` iterations of
  {collect ``n_envs`` episodes, add them to the replay, ``updates_per_iteration`` updates of
  ``batch_size`` episodes once the replay holds a batch, hard target sync every
  ``target_update_episodes`` episodes}, as one ``lax.scan``;
* ``evaluate(state, key, actor) -> stats``: greedy test episodes.

An iteration is ``begin_iteration`` (its collection key, epsilon and DAgger beta), the
collection, and ``learn`` (everything after it). The host loop (igmda_jax/host/loop.py) plays the
episodes in worker processes and calls the same ``learn``: pass ``make_train`` the workers'
:class:`~envs.spec.EnvInfo` instead of an environment; the replay then stores observations
(``rollout.observation_episode``), and ``train_chunk``/``evaluate`` are not available.

Wrap them in ``jax.vmap`` for a leading seed axis (named ``seed_axis``) and ``jax.jit`` once
(``run.py`` does):
``--seeds 8`` trains 8 independent seeds in one compiled program.

The environment state is not carried between iterations: every iteration starts fresh
episodes and runs them to the end (PyMARL's episode runner), so TrainState holds no env state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flashbax as fbx
import jax
import jax.numpy as jnp
import optax
from flax import struct

from envs.spec import EnvInfo, Environment, recorder
from igmda_jax.core.acting import Networks, beta_at, epsilon_at, make_networks, training_actors
from igmda_jax.core.config import Config
from igmda_jax.core.networks import initial_hidden
from igmda_jax.fused.learner import make_optimizer, update
from igmda_jax.fused.rollout import EpisodeBatch, collect, observation_episode


@struct.dataclass
class TrainState:
    """Everything a run needs to continue, as one pytree (add a leading seed axis to vmap)."""

    params: dict[str, Any]  # {"agent", "mixer"} (+ "learner" for -da/-bc)
    target_params: dict[str, Any]  # {"agent", "mixer"}
    opt_state: optax.OptState
    replay: Any  # flashbax item-buffer state of EpisodeBatch items
    key: jax.Array
    t_env: jax.Array  # int32 env steps collected
    episodes: jax.Array  # int32 episodes collected
    updates: jax.Array  # int32 gradient steps taken
    last_target_sync: jax.Array  # int32 episode count at the last target sync


@dataclasses.dataclass(frozen=True)
class Trainer:
    """Pure functions of one run configuration (see module docstring)."""

    config: Config
    env: Environment | EnvInfo
    nets: Networks
    init: Callable[[jax.Array], TrainState]
    train_chunk: Callable[[TrainState], tuple[TrainState, dict[str, jax.Array]]]
    evaluate: Callable[[TrainState, jax.Array, str], dict[str, jax.Array]]
    begin_iteration: Callable[[TrainState], tuple[jax.Array, jax.Array, jax.Array]]
    learn: Callable[..., tuple[TrainState, dict[str, jax.Array]]]
    summarize: Callable[[TrainState, dict[str, jax.Array]], dict[str, jax.Array]]


def _init_params(nets: Networks, config: Config, key: jax.Array) -> dict[str, Any]:
    """Initial parameters of every network: {"agent", "mixer"} (+ "learner")."""
    n, a = nets.n_agents, nets.n_actions
    agent_key, learner_key, mixer_key = jax.random.split(key, 3)
    hidden = initial_hidden((1,), n, config.hidden_dim)

    def init_agent(module, input_dim: int, k: jax.Array):
        inputs = jnp.zeros((1, n, input_dim))
        if nets.quantile:
            return module.init(k, hidden, inputs, jnp.zeros((1, config.n_quantiles)))
        return module.init(k, hidden, inputs)

    params = {"agent": init_agent(nets.agent, nets.agent_input_dim, agent_key)}
    if nets.learner is not None:
        params["learner"] = init_agent(nets.learner, nets.learner_input_dim, learner_key)
    states = jnp.zeros((1, nets.state_dim))
    if config.mixer == "qplex":
        qs = jnp.zeros((1, n))
        params["mixer"] = nets.mixer.init(mixer_key, qs, qs, jnp.zeros((1, n, a)), states)
    elif nets.quantile:
        params["mixer"] = nets.mixer.init(mixer_key, jnp.zeros((1, n, config.n_quantiles)), states)
    else:
        params["mixer"] = nets.mixer.init(mixer_key, jnp.zeros((1, n)), states)
    return params


def make_train(config: Config, env: Environment | EnvInfo, seed_axis: str | None = None) -> Trainer:
    """Build the pure init / train_chunk / evaluate functions for ``config`` on ``env``
    (an EnvInfo for the host loop: see the module docstring).

    ``seed_axis``: the axis name of the seed vmap that will wrap ``train_chunk``, if any; the
    seeds then agree on each update's unroll window (``learner.update``)."""
    config.validate()
    host_played = isinstance(env, EnvInfo)
    info = env if host_played else env.info
    nets = make_networks(config, info)
    optimizer = make_optimizer(config)
    _, observe = recorder(env)  # host-played: the stored Observation itself
    buffer = fbx.make_item_buffer(
        max_length=config.buffer_size,
        min_length=config.batch_size,
        sample_batch_size=config.batch_size,
        add_sequences=True,
        add_batches=False,
    )

    def collect_episodes(params, key, n_envs, epsilon, expert_prob, networks="all"):
        if host_played:
            raise TypeError("this Trainer was built for the host loop: it cannot collect")
        return collect(env, nets, config, params, key, n_envs, epsilon, expert_prob, networks)

    acting_networks = training_actors(config)

    def init(key: jax.Array) -> TrainState:
        params_key, example_key, key = jax.random.split(key, 3)
        params = _init_params(nets, config, params_key)
        if host_played:
            one_episode = observation_episode(info)
        else:
            example, _ = jax.eval_shape(
                lambda p, k: collect_episodes(p, k, 1, jnp.float32(1.0), jnp.float32(0.0)),
                params,
                example_key,
            )
            one_episode = jax.tree.map(lambda s: jnp.zeros(s.shape[1:], s.dtype), example)
        state = TrainState(
            params=params,
            target_params={"agent": params["agent"], "mixer": params["mixer"]},
            opt_state=optimizer.init(params),
            replay=buffer.init(one_episode),
            key=key,
            t_env=jnp.int32(0),
            episodes=jnp.int32(0),
            updates=jnp.int32(0),
            last_target_sync=jnp.int32(0),
        )
        # flashbax starts some counters weakly typed (current_index); train_chunk returns them
        # strongly typed, and a jitted function given both would compile twice (tested)
        return jax.tree.map(lambda x: jnp.asarray(x, dtype=x.dtype), state)

    def one_update(params, target_params, opt_state, replay, key: jax.Array):
        sample_key, loss_key = jax.random.split(key)
        batch: EpisodeBatch = buffer.sample(replay, sample_key).experience
        params, opt_state, metrics = update(
            params,
            target_params,
            opt_state,
            batch,
            loss_key,
            config,
            nets,
            observe,
            optimizer,
            seed_axis,
        )
        return params, opt_state, metrics

    def begin_iteration(state: TrainState) -> tuple[jax.Array, jax.Array, jax.Array]:
        """What an iteration's collection needs: (collect_key, epsilon, expert_prob)."""
        _, collect_key, _ = jax.random.split(state.key, 3)
        return collect_key, epsilon_at(config, state.t_env), beta_at(config, state.t_env)

    def learn(
        state: TrainState, episodes: EpisodeBatch, stats: dict[str, jax.Array]
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """The rest of an iteration, after its ``n_envs`` episodes were collected (by the fused
        ``collect`` or by the host loop): replay add, updates, target sync, metrics.

        episodes: EpisodeBatch with leaves [n_envs, T (+1), ...]; stats: return, won, length
        [n_envs]."""
        key, _, update_key = jax.random.split(state.key, 3)
        epsilon = epsilon_at(config, state.t_env)
        replay = buffer.add(state.replay, episodes)
        state = state.replace(
            replay=replay,
            key=key,
            t_env=state.t_env + stats["length"].sum().astype(jnp.int32),
            episodes=state.episodes + config.n_envs,
        )

        def do_updates(params, opt_state):
            def body(carry, k):
                params, opt_state = carry
                params, opt_state, metrics = one_update(
                    params, state.target_params, opt_state, replay, k
                )
                return (params, opt_state), metrics

            if config.updates_per_iteration == 1:  # no scan of length 1 (XLA optimises it worse)
                (params, opt_state), metrics = body((params, opt_state), update_key)
                return params, opt_state, metrics
            keys = jax.random.split(update_key, config.updates_per_iteration)
            (params, opt_state), metrics = jax.lax.scan(body, (params, opt_state), keys)
            return params, opt_state, jax.tree.map(lambda m: m.mean(), metrics)

        def skip_updates(params, opt_state):
            _, _, metrics = jax.eval_shape(do_updates, params, opt_state)
            return params, opt_state, jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype), metrics)

        # Only parameters and optimizer state pass through the cond: the replay is closed
        # over, so the (large) buffer is never copied into the cond's outputs.
        can_update = buffer.can_sample(replay)
        if seed_axis is not None:
            # The same for every seed (all fill at the same rate); made explicit so the cond
            # stays a branch under the seed vmap instead of a select running both sides, which
            # would also turn the update's window switch into a select over every window.
            can_update = jax.lax.pmin(can_update.astype(jnp.int32), seed_axis).astype(bool)
        params, opt_state, metrics = jax.lax.cond(
            can_update, do_updates, skip_updates, state.params, state.opt_state
        )
        state = state.replace(
            params=params,
            opt_state=opt_state,
            updates=state.updates + can_update * config.updates_per_iteration,
        )
        metrics["updated"] = can_update.astype(jnp.float32)
        sync = state.episodes - state.last_target_sync >= config.target_update_episodes
        target_params = jax.tree.map(
            lambda online, target: jnp.where(sync, online, target),
            {"agent": state.params["agent"], "mixer": state.params["mixer"]},
            state.target_params,
        )
        state = state.replace(
            target_params=target_params,
            last_target_sync=jnp.where(sync, state.episodes, state.last_target_sync),
        )
        metrics = {
            **metrics,
            "epsilon": epsilon,
            "return": stats["return"].mean(),
            "win_rate": stats["won"].mean(),
            "episode_length": stats["length"].mean(),
        }
        return state, metrics

    def iteration(state: TrainState, _: None):
        collect_key, epsilon, expert_prob = begin_iteration(state)
        episodes, stats = collect_episodes(
            state.params, collect_key, config.n_envs, epsilon, expert_prob, acting_networks
        )
        return learn(state, episodes, stats)

    def summarize(state: TrainState, metrics: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """A chunk's metrics: per-iteration metrics [K] -> scalars (update metrics averaged
        over the iterations that updated), with the state's counters."""
        metrics = dict(metrics)
        updated = metrics.pop("updated")
        n_updated = jnp.maximum(updated.sum(), 1.0)
        collection = ("epsilon", "return", "win_rate", "episode_length")
        summary = {
            name: values.mean() if name in collection else (values * updated).sum() / n_updated
            for name, values in metrics.items()
        }
        summary["finite"] = jnp.all(jnp.isfinite(metrics["loss"]))
        summary["t_env"] = state.t_env
        summary["episodes"] = state.episodes
        summary["updates"] = state.updates
        return summary

    def train_chunk(state: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
        state, metrics = jax.lax.scan(iteration, state, None, length=config.iterations_per_call)
        return state, summarize(state, metrics)

    def evaluate(
        state: TrainState, key: jax.Array, actor: str = "deployed"
    ) -> dict[str, jax.Array]:
        """Greedy test episodes: the deployed network (learner for -da/-bc), or 'expert'."""
        expert_prob = jnp.float32(1.0 if actor == "expert" or not config.uses_expert else 0.0)
        _, stats = collect_episodes(
            state.params, key, config.test_nepisode, jnp.float32(0.0), expert_prob
        )
        result = {
            "win_rate": stats["won"].mean(),
            "return": stats["return"].mean(),
            "episode_length": stats["length"].mean(),
        }
        if "agreement" in stats:
            result["agreement"] = stats["agreement"].mean()
        return result

    return Trainer(
        config, env, nets, init, train_chunk, evaluate, begin_iteration, learn, summarize
    )
