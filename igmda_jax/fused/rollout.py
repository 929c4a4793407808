"""Collect whole episodes from vmapped environments with one ``lax.while_loop`` over time.

Episode layout (batch-major, what the replay stores), for E episodes of at most T steps:

    records    [E, T + 1, ...]  compact per-step record; ``env observe(record)`` gives obs,
                                expert_obs, state, avail. Index t is what the agents saw
                                before acting at t; index T+1-1 = T is the final observation.
    actions    [E, T, n_agents] int32, the executed actions
    rewards    [E, T]           reward of transition t
    terminated [E, T]           transition t ended the episode for real (no bootstrap)
    filled     [E, T]           transition t is real (not padding after the episode ended)

A time-limit ending has ``terminated = False`` on its last transition, so targets bootstrap
from the final observation (``Config.timeout_bootstrap``; off, it is stored as terminal, as
PyMARL does with SMAC's ``continuing_episode=False``). Environments are absorbing after ``done`` (envs/spec.py), so the
loop stops when every episode has ended (at most T = episode_limit steps); padding
follows from ``done``.
"""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import struct

from envs.spec import EnvInfo, Environment, Observation, recorder
from igmda_jax.core.acting import Networks, build_inputs, epsilon_greedy, q_step
from igmda_jax.core.config import Config
from igmda_jax.core.losses import masked_greedy_actions
from igmda_jax.core.networks import initial_hidden


@struct.dataclass
class EpisodeBatch:
    """E padded episodes (see module docstring for shapes)."""

    records: Any
    actions: jax.Array
    rewards: jax.Array
    terminated: jax.Array
    filled: jax.Array


def observation_episode(info: EnvInfo) -> EpisodeBatch:
    """One zero episode as the host loop stores it: ``records`` is the Observation itself
    (obs, expert_obs, state float32, avail bool; [T + 1, ...]), T = info.episode_limit."""
    limit, n = info.episode_limit, info.n_agents
    records = Observation(
        obs=jnp.zeros((limit + 1, n, info.obs_dim), jnp.float32),
        expert_obs=jnp.zeros((limit + 1, n, info.expert_dim), jnp.float32),
        state=jnp.zeros((limit + 1, info.state_dim), jnp.float32),
        avail=jnp.zeros((limit + 1, n, info.n_actions), bool),
    )
    return EpisodeBatch(
        records=records,
        actions=jnp.zeros((limit, n), jnp.int32),
        rewards=jnp.zeros((limit,), jnp.float32),
        terminated=jnp.zeros((limit,), bool),
        filled=jnp.zeros((limit,), bool),
    )


def collect(
    env: Environment,
    nets: Networks,
    config: Config,
    params: dict,
    key: jax.Array,
    n_envs: int,
    epsilon: jax.Array,
    expert_prob: jax.Array,
    networks: Literal["all", "expert", "learner"] = "all",
) -> tuple[EpisodeBatch, dict[str, jax.Array]]:
    """Run ``n_envs`` episodes to the end; return them and per-episode statistics.

    Who acts: the plain agent for plain algorithms; for -da/-bc, per episode the expert with
    probability ``expert_prob`` (1 for -bc, DAgger's beta for -da), otherwise the learner.
    ``networks`` (static, -da/-bc only) says which of the two to run: "all" (both; needed
    when both may act and for the agreement statistic), or only "expert" / "learner" when the
    caller knows that only that one acts (``expert_prob`` is then ignored): training saves the
    other network's forward pass.
    Statistics (each [n_envs]): return, won, length, expert_acted; for -da/-bc with
    ``networks="all"`` also agreement (fraction of valid agent-steps where learner and expert
    greedy actions agree).
    """
    record_fn, _ = recorder(env)
    info = env.info
    n = info.n_agents
    reset_key, coin_key, scan_key = jax.random.split(key, 3)
    timestep, env_state = jax.vmap(env.reset)(jax.random.split(reset_key, n_envs))
    if nets.learner is None or networks == "expert":
        expert_acts = jnp.ones((n_envs,), bool)
    elif networks == "learner":
        expert_acts = jnp.zeros((n_envs,), bool)
    else:
        expert_acts = jax.random.uniform(coin_key, (n_envs,)) < expert_prob
    run_agent = nets.learner is None or networks in ("all", "expert")
    run_learner = nets.learner is not None and networks in ("all", "learner")
    hidden = {}
    if run_agent:
        hidden["agent"] = initial_hidden((n_envs,), n, config.hidden_dim)
    if run_learner:
        hidden["learner"] = initial_hidden((n_envs,), n, config.hidden_dim)
    last_actions = jnp.full((n_envs, n), -1, jnp.int32)

    def step(carry, step_key):
        timestep, env_state, hidden, last_actions = carry
        agent_key, learner_key, action_key, env_key = jax.random.split(step_key, 4)
        new_hidden, extras = {}, {}
        if run_agent:
            agent_obs = timestep.expert_obs if nets.learner is not None else timestep.obs
            agent_inputs = build_inputs(
                config, agent_obs, last_actions, timestep.avail, network="agent"
            )
            new_hidden["agent"], agent_q = q_step(
                nets.agent,
                params["agent"],
                hidden["agent"],
                agent_inputs,
                agent_key,
                config.n_act_quantiles,
            )
        if run_learner:
            learner_inputs = build_inputs(
                config, timestep.obs, last_actions, timestep.avail, network="learner"
            )
            new_hidden["learner"], learner_q = q_step(
                nets.learner,
                params["learner"],
                hidden["learner"],
                learner_inputs,
                learner_key,
                config.n_act_quantiles,
            )
        if run_agent and run_learner:
            acting_q = jnp.where(expert_acts[:, None, None], agent_q, learner_q)
            same = masked_greedy_actions(agent_q, timestep.avail) == masked_greedy_actions(
                learner_q, timestep.avail
            )
            extras["agree"] = jnp.sum(same & ~timestep.done[:, None], axis=-1)
        else:
            acting_q = agent_q if run_agent else learner_q
        actions = epsilon_greedy(action_key, acting_q, timestep.avail, epsilon)
        record = jax.vmap(record_fn)(timestep, env_state)
        next_timestep, env_state = jax.vmap(env.step)(
            jax.random.split(env_key, n_envs), env_state, actions
        )
        out = {
            "record": record,
            "action": actions,
            "reward": next_timestep.reward,
            # a time-limit ending bootstraps unless config.timeout_bootstrap is off (PyMARL)
            "terminated": next_timestep.terminated
            if config.timeout_bootstrap
            else next_timestep.done,
            "filled": ~timestep.done,
            **extras,
        }
        return (next_timestep, env_state, new_hidden, actions), out

    # Run until every episode has ended (at most T steps), writing each step into
    # preallocated [T(+1), E, ...] buffers; rows after the last step stay zero (padding).
    limit = info.episode_limit
    carry = (timestep, env_state, hidden, last_actions)
    example = jax.eval_shape(lambda c, k: step(c, k)[1], carry, scan_key)
    buffers = jax.tree.map(lambda s: jnp.zeros((limit, *s.shape), s.dtype), example)
    buffers["record"] = jax.tree.map(
        lambda s: jnp.zeros((limit + 1, *s.shape), s.dtype), example["record"]
    )

    def not_finished(loop):
        t, carry, _ = loop
        return (t < limit) & ~jnp.all(carry[0].done)

    def body(loop):
        t, carry, buffers = loop
        carry, out = step(carry, jax.random.fold_in(scan_key, t))
        buffers = jax.tree.map(
            lambda buffer, value: jax.lax.dynamic_update_index_in_dim(buffer, value, t, 0),
            buffers,
            out,
        )
        return t + 1, carry, buffers

    t_end, (final_timestep, final_state, _, _), out = jax.lax.while_loop(
        not_finished, body, (jnp.int32(0), carry, buffers)
    )
    final_record = jax.vmap(record_fn)(final_timestep, final_state)
    out["record"] = jax.tree.map(
        lambda buffer, value: jax.lax.dynamic_update_index_in_dim(buffer, value, t_end, 0),
        out["record"],
        final_record,
    )
    batch_major = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
    episodes = EpisodeBatch(
        records=jax.tree.map(batch_major, out["record"]),
        actions=batch_major(out["action"]),
        rewards=batch_major(out["reward"]),
        terminated=batch_major(out["terminated"]),
        filled=batch_major(out["filled"]),
    )
    length = episodes.filled.sum(axis=1)
    stats = {
        "return": jnp.sum(episodes.rewards * episodes.filled, axis=1),
        "won": final_timestep.won,
        "length": length,
        "expert_acted": expert_acts,
    }
    if "agree" in out:
        stats["agreement"] = out["agree"].sum(axis=0) / jnp.maximum(length * n, 1)
    return episodes, stats
