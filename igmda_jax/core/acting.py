"""Networks of a run, and how they act: inputs, one recurrent step, epsilon-greedy.

A run has up to two agent networks with shared parameters across agents:
* ``agent``: the plain algorithm's agent, or the IGM-DA/BC **expert** (input: expert_obs);
* ``learner``: only for -da/-bc, the deployed agent imitating the expert (input: obs).
DMIX uses IQN agents; their action values are the mean over sampled quantile fractions.
"""

from __future__ import annotations

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from igmda_jax.core.config import Config
from igmda_jax.core.losses import masked_greedy_actions
from igmda_jax.core.mixers import make_mixer
from igmda_jax.core.networks import (
    IQNAgent,
    RNNAgent,
    agent_input_dim,
    agent_inputs,
    live_input_features,
)


@dataclasses.dataclass(frozen=True)
class Networks:
    """The flax modules of a run (static: hashable, no parameters)."""

    agent: nn.Module
    learner: nn.Module | None
    mixer: nn.Module
    quantile: bool
    n_agents: int
    n_actions: int
    agent_input_dim: int
    learner_input_dim: int
    state_dim: int


def make_networks(config: Config, info) -> Networks:
    """Build the modules for ``config`` on an environment with EnvInfo ``info``."""
    quantile = config.mixer == "dmix"
    module = IQNAgent if quantile else RNNAgent
    flags = dict(use_last_action=config.obs_last_action, use_agent_id=config.obs_agent_id)
    agent_obs_dim = info.expert_dim if config.uses_expert else info.obs_dim
    agent_dim = agent_input_dim(
        agent_obs_dim, info.n_agents, info.n_actions, use_avail=config.agent_obs_avail, **flags
    )
    learner_dim = agent_input_dim(
        info.obs_dim, info.n_agents, info.n_actions, use_avail=config.obs_avail, **flags
    )
    learner_live = live_input_features(info.obs_live_features, info.obs_dim, learner_dim)
    # the -da/-bc expert sees expert_obs (all live); the plain agent sees obs
    agent_live = None if config.uses_expert else learner_live
    agent = module(n_actions=info.n_actions, hidden_dim=config.hidden_dim, live_inputs=agent_live)
    learner = (
        module(n_actions=info.n_actions, hidden_dim=config.hidden_dim, live_inputs=learner_live)
        if config.uses_expert
        else None
    )
    mixer = make_mixer(
        config.mixer,
        info.n_agents,
        info.state_dim,
        info.n_actions,
        embed_dim=config.mixer_embed,
        hypernet_embed=config.hypernet_embed,
        hypernet_layers=config.hypernet_layers,
        qplex_heads=config.qplex_heads,
        qplex_adv_hypernet_layers=config.qplex_adv_hypernet_layers,
    )
    return Networks(
        agent=agent,
        learner=learner,
        mixer=mixer,
        quantile=quantile,
        n_agents=info.n_agents,
        n_actions=info.n_actions,
        agent_input_dim=agent_dim,
        learner_input_dim=learner_dim,
        state_dim=info.state_dim,
    )


def training_actors(config: Config) -> str:
    """Which networks training collection runs (``rollout.collect``'s ``networks``): only the
    one that can act, the expert for -bc and the learner for -da without DAgger mixing
    (the agreement statistic is measured on test episodes); "all" otherwise."""
    if config.variant == "bc":
        return "expert"
    if config.variant == "da" and config.beta_start == 0.0:
        return "learner"
    return "all"


def build_inputs(
    config: Config, obs: jax.Array, last_action: jax.Array, avail: jax.Array, *, network: str
) -> jax.Array:
    """Inputs of ``network`` ("agent": the plain agent or the -da/-bc expert; "learner") from
    the config's flags. obs: [..., n, d]; last_action: [..., n] int (-1 = none);
    avail: [..., n, A] -> [..., n, in]."""
    if network not in ("agent", "learner"):
        raise ValueError(f"network must be 'agent' or 'learner', got {network!r}")
    return agent_inputs(
        obs,
        last_action,
        avail,
        obs.shape[-2],
        use_last_action=config.obs_last_action,
        use_agent_id=config.obs_agent_id,
        use_avail=config.agent_obs_avail if network == "agent" else config.obs_avail,
    )


def q_step(
    module: nn.Module,
    params,
    hidden: jax.Array,
    inputs: jax.Array,
    key: jax.Array,
    n_quantiles: int,
) -> tuple[jax.Array, jax.Array]:
    """One recurrent step. hidden: [B, n, H]; inputs: [B, n, in] -> (hidden, q [B, n, A]).

    IQN agents sample ``n_quantiles`` fractions per batch row (shared by its agents) and
    return the mean over quantiles as the action value.
    """
    if isinstance(module, IQNAgent):
        taus = jax.random.uniform(key, (inputs.shape[0], n_quantiles))
        hidden, quantiles = module.apply(params, hidden, inputs, taus)
        return hidden, quantiles.mean(axis=-2)
    return module.apply(params, hidden, inputs)


def epsilon_greedy(key: jax.Array, q: jax.Array, avail: jax.Array, epsilon: jax.Array) -> jax.Array:
    """Greedy over available actions, or with probability epsilon a uniformly random
    available action. q, avail: [..., A] -> actions [...] int32."""
    chex.assert_equal_shape([q, avail])
    explore_key, action_key = jax.random.split(key)
    greedy = masked_greedy_actions(q, avail)
    random_actions = jax.random.categorical(action_key, jnp.where(avail, 0.0, -jnp.inf))
    explore = jax.random.uniform(explore_key, greedy.shape) < epsilon
    return jnp.where(explore, random_actions, greedy).astype(jnp.int32)


def linear_schedule(start: float, finish: float, steps: int, t: jax.Array) -> jax.Array:
    """Linear anneal from ``start`` to ``finish`` over ``steps`` (then constant)."""
    fraction = jnp.clip(t / max(steps, 1), 0.0, 1.0)
    return start + fraction * (finish - start)


def epsilon_at(config: Config, t_env: jax.Array) -> jax.Array:
    """Exploration rate at env step ``t_env``."""
    return linear_schedule(
        config.epsilon_start, config.epsilon_finish, config.epsilon_anneal_steps, t_env
    )


def beta_at(config: Config, t_env: jax.Array) -> jax.Array:
    """DAgger mixing: probability that the expert acts in an episode (-da), annealed to 0."""
    if config.variant == "bc":
        return jnp.float32(1.0)
    if config.variant != "da" or config.beta_start == 0.0:
        return jnp.float32(0.0)
    return linear_schedule(config.beta_start, 0.0, config.beta_anneal_steps, t_env)
