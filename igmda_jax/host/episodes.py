"""The host loop's pure pieces: act on stacked worker rows, and turn played episodes into the
learner's replay episodes.

* :func:`make_act`: one jitted epsilon-greedy step for ``W`` worker rows, with the recurrent
  state carried on the device (:class:`ActCarry`), reset where a row starts an episode;
* :func:`replay_episodes`: the pool's padded episodes (``envs.pool_types.EpisodeBatch``) as the
  learner's :class:`~igmda_jax.fused.rollout.EpisodeBatch` (observations stored) and their
  statistics, exactly the fused collection's layout;
* :func:`make_agreement`: how often learner and expert greedy actions agree on played
  episodes (-da/-bc evaluation), recomputed by unrolling both networks over them;
* :func:`replay_bytes`: the replay's memory, per stored step and per seed.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs.pool_types import EpisodeBatch as PlayedEpisodes
from envs.spec import EnvInfo, Observation
from igmda_jax.core.acting import Networks, build_inputs, epsilon_greedy, q_step
from igmda_jax.core.config import Config
from igmda_jax.core.losses import masked_greedy_actions
from igmda_jax.core.networks import initial_hidden
from igmda_jax.fused.rollout import EpisodeBatch

Actors = Literal["all", "expert", "learner"]


@struct.dataclass
class ActCarry:
    """Per-row acting state between steps (on the device).

    hidden: {"agent"|"learner": [W, n_agents, H]} of the networks that run; last_actions:
    [W, n_agents] int32 (-1 before the first step); expert_acts: [W] bool, who plays the row's
    episode (-da DAgger coin, drawn when the episode starts)."""

    hidden: dict[str, jax.Array]
    last_actions: jax.Array
    expert_acts: jax.Array


def runs(nets: Networks, actors: Actors) -> tuple[bool, bool]:
    """(run the agent/expert, run the learner) for ``actors`` (``rollout.collect``'s rule)."""
    run_agent = nets.learner is None or actors in ("all", "expert")
    run_learner = nets.learner is not None and actors in ("all", "learner")
    return run_agent, run_learner


def initial_carry(config: Config, nets: Networks, n_rows: int, actors: Actors) -> ActCarry:
    """Zero hidden states for ``n_rows`` worker rows."""
    run_agent, run_learner = runs(nets, actors)
    names = ["agent"] * run_agent + ["learner"] * run_learner
    return ActCarry(
        hidden={
            name: initial_hidden((n_rows,), nets.n_agents, config.hidden_dim) for name in names
        },
        last_actions=jnp.full((n_rows, nets.n_agents), -1, jnp.int32),
        expert_acts=jnp.zeros((n_rows,), bool),
    )


def make_act(config: Config, nets: Networks, actors: Actors):
    """``act(params, carry, obs, expert_obs, avail, first, key, epsilon, expert_prob) ->
    (carry, actions)`` for one step of ``W`` worker rows (one seed's params):

    obs [W, n, obs_dim], expert_obs [W, n, expert_dim], avail [W, n, A] bool, first [W] bool
    (the row starts an episode: its hidden state, last action and DAgger coin are reset);
    actions [W, n] int32, epsilon-greedy over available actions. Who acts follows
    ``rollout.collect``: the plain agent; for -da/-bc the expert with probability
    ``expert_prob`` per episode, else the learner (``actors`` says which networks run)."""
    run_agent, run_learner = runs(nets, actors)

    def act(params, carry: ActCarry, obs, expert_obs, avail, first, key, epsilon, expert_prob):
        agent_key, learner_key, action_key, coin_key = jax.random.split(key, 4)
        fresh = lambda h: jnp.where(first[:, None, None], jnp.zeros_like(h), h)  # noqa: E731
        hidden = {name: fresh(h) for name, h in carry.hidden.items()}
        last_actions = jnp.where(first[:, None], -1, carry.last_actions)
        if nets.learner is None or actors == "expert":
            expert_acts = jnp.ones(first.shape, bool)
        elif actors == "learner":
            expert_acts = jnp.zeros(first.shape, bool)
        else:
            coin = jax.random.uniform(coin_key, first.shape) < expert_prob
            expert_acts = jnp.where(first, coin, carry.expert_acts)
        new_hidden = {}
        if run_agent:
            agent_obs = expert_obs if nets.learner is not None else obs
            inputs = build_inputs(config, agent_obs, last_actions, avail, network="agent")
            new_hidden["agent"], agent_q = q_step(
                nets.agent, params["agent"], hidden["agent"], inputs, agent_key,
                config.n_act_quantiles,
            )  # fmt: skip
        if run_learner:
            inputs = build_inputs(config, obs, last_actions, avail, network="learner")
            new_hidden["learner"], learner_q = q_step(
                nets.learner, params["learner"], hidden["learner"], inputs, learner_key,
                config.n_act_quantiles,
            )  # fmt: skip
        if run_agent and run_learner:
            acting_q = jnp.where(expert_acts[:, None, None], agent_q, learner_q)
        else:
            acting_q = agent_q if run_agent else learner_q
        actions = epsilon_greedy(action_key, acting_q, avail, epsilon)
        return ActCarry(new_hidden, actions, expert_acts), actions

    return act


def replay_episodes(
    played: PlayedEpisodes, timeout_bootstrap: bool
) -> tuple[EpisodeBatch, dict[str, np.ndarray]]:
    """Played episodes (TimeStep leaves [B, T + 1, ...], actions [B, T, n]) -> the learner's
    EpisodeBatch (numpy) and statistics return, won, length [B].

    records[t] are the observations before action t (index T: the final one); rewards[t] and
    terminated[t] belong to the transition after action t; filled[t] says it is real. A
    time-limit ending bootstraps unless ``timeout_bootstrap`` is off, as in the fused path."""
    ts = played.timestep
    done = np.asarray(ts.done)
    ended = done[:, 1:] if not timeout_bootstrap else done[:, 1:] & ~np.asarray(ts.truncated)[:, 1:]
    filled = ~done[:, :-1]
    rewards = np.asarray(ts.reward, np.float32)[:, 1:]
    episodes = EpisodeBatch(
        records=Observation(
            obs=np.asarray(ts.obs, np.float32),
            expert_obs=np.asarray(ts.expert_obs, np.float32),
            state=np.asarray(ts.state, np.float32),
            avail=np.asarray(ts.avail, bool),
        ),
        actions=np.asarray(played.actions, np.int32),
        rewards=rewards,
        terminated=ended,
        filled=filled,
    )
    stats = {
        "return": (rewards * filled).sum(axis=1, dtype=np.float32),
        "won": np.asarray(played.won, bool),
        "length": np.asarray(played.length, np.int32),
    }
    return episodes, stats


def make_agreement(config: Config, nets: Networks):
    """``agreement(params, episodes, key) -> [B]``: per episode, the fraction of real
    agent-steps where the learner's and the expert's greedy actions (over available actions)
    agree, unrolling both over the played inputs (the fused path's test statistic)."""

    def agreement(params, episodes: EpisodeBatch, key: jax.Array) -> jax.Array:
        records = episodes.records
        n_steps = episodes.actions.shape[1]
        first_action = jnp.full_like(episodes.actions[:, :1], -1)
        last_actions = jnp.concatenate([first_action, episodes.actions[:, :-1]], axis=1)
        batch = episodes.actions.shape[0]
        hidden = {
            name: initial_hidden((batch,), nets.n_agents, config.hidden_dim)
            for name in ("agent", "learner")
        }

        def step(hidden, t):
            at = lambda x: jax.lax.dynamic_index_in_dim(x, t, 1, keepdims=False)  # noqa: E731
            avail, last = at(records.avail), at(last_actions)
            expert_in = build_inputs(config, at(records.expert_obs), last, avail, network="agent")
            learner_in = build_inputs(config, at(records.obs), last, avail, network="learner")
            expert_key, learner_key = jax.random.split(jax.random.fold_in(key, t))
            h_expert, expert_q = q_step(
                nets.agent, params["agent"], hidden["agent"], expert_in, expert_key,
                config.n_act_quantiles,
            )  # fmt: skip
            h_learner, learner_q = q_step(
                nets.learner, params["learner"], hidden["learner"], learner_in, learner_key,
                config.n_act_quantiles,
            )  # fmt: skip
            same = masked_greedy_actions(expert_q, avail) == masked_greedy_actions(learner_q, avail)
            agree = jnp.sum(same & at(episodes.filled)[:, None], axis=-1)
            return {"agent": h_expert, "learner": h_learner}, agree

        _, agree = jax.lax.scan(step, hidden, jnp.arange(n_steps))
        length = episodes.filled.sum(axis=1)
        return agree.sum(axis=0) / jnp.maximum(length * nets.n_agents, 1)

    return agreement


def replay_bytes(info: EnvInfo, config: Config) -> tuple[int, int]:
    """(bytes per stored step, bytes of one seed's full replay): observations, expert
    observations and state in float32, the available-action mask in bool, action, reward and
    flags; ``buffer_size`` episodes of ``episode_limit + 1`` steps."""
    n = info.n_agents
    per_step = (
        4 * n * (info.obs_dim + info.expert_dim)
        + 4 * info.state_dim
        + n * info.n_actions
        + 4 * n  # action
        + 4  # reward
        + 2  # terminated, filled
    )
    return per_step, per_step * (info.episode_limit + 1) * config.buffer_size
