"""Agent networks: the recurrent Q agent and the IQN quantile agent for DMIX.

Both agents share their parameters over agents: the agent axis is just one more leading axis,
so a module applies to inputs ``[..., n_agents, input_dim]`` with a hidden carry
``[..., n_agents, hidden_dim]`` and nothing is vmapped explicitly. Which agent is which is
told to the network by the agent-id one-hot in its inputs (see :func:`agent_inputs`).

    RNNAgent:  x -> Dense(hidden) -> ReLU -> GRUCell(hidden) -> Dense(n_actions)
    IQNAgent:  the same trunk up to the GRU state h, then
               phi(tau) = ReLU(Dense(hidden)(cos(pi * i * tau), i = 1..n_cos))
               z(tau)   = Dense(n_actions)(h * phi(tau))

The cosine features use i = 1..n_cos (64 by default). The i = 0 feature of the IQN paper is the
constant cos(0) = 1, which only duplicates the bias of the Dense layer that follows.

Time is handled outside the modules: :func:`unroll` scans an agent over
``inputs[T, B, n_agents, input_dim]`` and zeroes the hidden state where an episode starts.
"""

from __future__ import annotations

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from igmda_jax.core.gru_scan import gru_scan, gru_weights

Params = Any


def agent_input_dim(
    obs_dim: int,
    n_agents: int,
    n_actions: int,
    *,
    use_last_action: bool = True,
    use_agent_id: bool = True,
    use_avail: bool = True,
) -> int:
    """Width of the vector that :func:`agent_inputs` builds with the same flags."""
    return (
        obs_dim
        + (n_actions if use_last_action else 0)
        + (n_agents if use_agent_id else 0)
        + (n_actions if use_avail else 0)
    )


def agent_inputs(
    obs: jax.Array,
    last_action: jax.Array,
    avail: jax.Array,
    n_agents: int,
    *,
    use_last_action: bool = True,
    use_agent_id: bool = True,
    use_avail: bool = True,
) -> jax.Array:
    """Build each agent's network input: ``[obs | last action one-hot | agent id | avail]``.

    obs:         [..., n_agents, obs_dim]
    last_action: [..., n_agents] int (index; -1 = no previous action, giving all zeros), or
                 [..., n_agents, n_actions] one-hot (already encoded)
    avail:       [..., n_agents, n_actions] bool or float; also fixes n_actions
    returns:     [..., n_agents, agent_input_dim(...)] float32, the blocks in the order above,
                 each present only if its flag is set
    """
    chex.assert_rank(avail, obs.ndim)
    chex.assert_axis_dimension(obs, -2, n_agents)
    chex.assert_equal_shape_prefix([obs, avail], obs.ndim - 1)
    n_actions = avail.shape[-1]
    blocks = [obs.astype(jnp.float32)]
    if use_last_action:
        if last_action.ndim == obs.ndim:
            chex.assert_equal_shape([last_action, avail])
            last_onehot = last_action.astype(jnp.float32)
        else:
            chex.assert_shape(last_action, obs.shape[:-1])
            last_onehot = jax.nn.one_hot(last_action, n_actions, dtype=jnp.float32)
        blocks.append(last_onehot)
    if use_agent_id:
        agent_id = jnp.broadcast_to(
            jnp.eye(n_agents, dtype=jnp.float32), (*obs.shape[:-1], n_agents)
        )
        blocks.append(agent_id)
    if use_avail:
        blocks.append(avail.astype(jnp.float32))
    return jnp.concatenate(blocks, axis=-1)


def live_input_features(
    obs_live: tuple[int, ...] | None, obs_dim: int, input_dim: int
) -> tuple[int, ...] | None:
    """Indices of an agent input (:func:`agent_inputs`) that can be nonzero, given those of
    its obs block (None: all): the live obs features, then every feature after the obs."""
    if obs_live is None:
        return None
    return (*obs_live, *range(obs_dim, input_dim))


def initial_hidden(batch_shape: tuple[int, ...], n_agents: int, hidden_dim: int) -> jax.Array:
    """Zero recurrent state. returns: [*batch_shape, n_agents, hidden_dim] float32."""
    return jnp.zeros((*batch_shape, n_agents, hidden_dim), jnp.float32)


class _InputLayer(nn.Module):
    """``nn.Dense(features)`` (same parameters, names and initialisation) that multiplies only
    the ``live_inputs`` columns, the input features that can be nonzero (None: all). The other
    columns are always zero, so the result is the full product's up to rounding and their
    kernel rows get exactly zero gradient either way; at sight 0 this skips most of the layer
    (on 3s5z 43 of 242 inputs are live)."""

    features: int
    live_inputs: tuple[int, ...] | None = None

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        """inputs: [..., in] -> [..., features]"""
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (inputs.shape[-1], self.features)
        )
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        if self.live_inputs is None:
            return inputs @ kernel + bias
        first, last = self.live_inputs[0], self.live_inputs[-1] + 1
        if self.live_inputs == tuple(range(first, last)):  # one run of columns: slices
            return inputs[..., first:last] @ kernel[first:last] + bias
        live = jnp.asarray(self.live_inputs)
        return jnp.take(inputs, live, axis=-1) @ kernel[live] + bias


class _RecurrentTrunk(nn.Module):
    """Dense(hidden) -> ReLU -> GRUCell(hidden). Shared by both agents. ``encode`` is the part
    that does not depend on the hidden state (time-parallel), ``recur`` the recurrent step."""

    hidden_dim: int
    live_inputs: tuple[int, ...] | None = None

    def setup(self) -> None:
        self.fc_in = _InputLayer(self.hidden_dim, self.live_inputs)
        self.gru = nn.GRUCell(features=self.hidden_dim)

    def encode(self, inputs: jax.Array) -> jax.Array:
        """inputs: [..., in] -> GRU inputs [..., H]."""
        return nn.relu(self.fc_in(inputs))

    def recur(self, hidden: jax.Array, encoded: jax.Array) -> jax.Array:
        """hidden: [..., H], encoded: [..., H] -> new hidden [..., H]."""
        return self.gru(hidden, encoded)[0]


class RNNAgent(nn.Module):
    """Recurrent per-agent Q network, parameters shared over agents.

    __call__(hidden [..., n_agents, H], inputs [..., n_agents, in])
        -> (new_hidden [..., n_agents, H], q [..., n_agents, n_actions])

    The same computation in three parts, for :func:`unroll`: ``encode(inputs)``,
    ``recur(hidden, encoded)`` and ``head(hidden)``.
    """

    n_actions: int
    hidden_dim: int = 64
    live_inputs: tuple[int, ...] | None = None
    """Input features that can be nonzero (None: all); see :func:`live_input_features`."""

    def setup(self) -> None:
        self.trunk = _RecurrentTrunk(self.hidden_dim, self.live_inputs)
        self.fc_out = nn.Dense(self.n_actions)

    def __call__(self, hidden: jax.Array, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        chex.assert_axis_dimension(hidden, -1, self.hidden_dim)
        chex.assert_equal_shape_prefix([hidden, inputs], inputs.ndim - 1)
        new_hidden = self.recur(hidden, self.encode(inputs))
        return new_hidden, self.head(new_hidden)

    def encode(self, inputs: jax.Array) -> jax.Array:
        """[..., n_agents, in] -> [..., n_agents, H]: everything before the recurrence."""
        return self.trunk.encode(inputs)

    def recur(self, hidden: jax.Array, encoded: jax.Array) -> jax.Array:
        """The recurrent step: hidden [..., n_agents, H] -> new hidden [..., n_agents, H]."""
        return self.trunk.recur(hidden, encoded)

    def head(self, hidden: jax.Array) -> jax.Array:
        """hidden [..., n_agents, H] -> q [..., n_agents, n_actions]."""
        return self.fc_out(hidden)


def cosine_features(taus: jax.Array, n_cos: int) -> jax.Array:
    """IQN tau embedding features cos(pi * i * tau) for i = 1..n_cos.

    taus: [..., n_quantiles] in [0, 1] -> [..., n_quantiles, n_cos]
    """
    i = jnp.arange(1, n_cos + 1, dtype=jnp.float32)
    return jnp.cos(jnp.pi * i * taus[..., None])


class _QuantileOutput(nn.Module):
    """z = Dense(n_actions)(h * phi) for every (agent, quantile) pair, as one einsum without
    materialising h * phi. Parameters as ``nn.Dense`` (kernel [H, A], lecun-normal; bias [A])
    so the agent's parameter tree is unchanged. The einsum matters: the gradient of the Dense
    form, vmapped over seeds, ran 20x slower on XLA CPU (148 vs 7 ms on 3m shapes)."""

    n_actions: int

    @nn.compact
    def __call__(self, hidden: jax.Array, phi: jax.Array) -> jax.Array:
        """hidden: [..., n_agents, H], phi: [..., N, H] -> z [..., n_agents, N, n_actions]."""
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (hidden.shape[-1], self.n_actions)
        )
        bias = self.param("bias", nn.initializers.zeros_init(), (self.n_actions,))
        return jnp.einsum("...ih,...qh,ha->...iqa", hidden, phi, kernel) + bias


class IQNAgent(nn.Module):
    """Recurrent implicit-quantile agent (DMIX), parameters shared over agents.

    All agents at one step use the same quantile fractions, so ``taus`` has no agent axis.

    __call__(hidden [..., n_agents, H], inputs [..., n_agents, in], taus [..., n_quantiles])
        -> (new_hidden [..., n_agents, H], z [..., n_agents, n_quantiles, n_actions])

    In parts, for :func:`unroll`: ``encode(inputs)``, ``recur(hidden, encoded)``,
    ``head(hidden, taus)``.
    """

    n_actions: int
    hidden_dim: int = 64
    n_cos: int = 64
    live_inputs: tuple[int, ...] | None = None
    """Input features that can be nonzero (None: all); see :func:`live_input_features`."""

    def setup(self) -> None:
        self.trunk = _RecurrentTrunk(self.hidden_dim, self.live_inputs)
        self.tau_embed = nn.Dense(self.hidden_dim)
        self.fc_out = _QuantileOutput(self.n_actions)

    def __call__(
        self, hidden: jax.Array, inputs: jax.Array, taus: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        chex.assert_axis_dimension(hidden, -1, self.hidden_dim)
        chex.assert_equal_shape_prefix([hidden, inputs], inputs.ndim - 1)
        chex.assert_rank(taus, hidden.ndim - 1)
        chex.assert_equal_shape_prefix([hidden, taus], taus.ndim - 1)
        new_hidden = self.recur(hidden, self.encode(inputs))
        return new_hidden, self.head(new_hidden, taus)

    def encode(self, inputs: jax.Array) -> jax.Array:
        """[..., n_agents, in] -> [..., n_agents, H]: everything before the recurrence."""
        return self.trunk.encode(inputs)

    def recur(self, hidden: jax.Array, encoded: jax.Array) -> jax.Array:
        """The recurrent step: hidden [..., n_agents, H] -> new hidden [..., n_agents, H]."""
        return self.trunk.recur(hidden, encoded)

    def head(self, hidden: jax.Array, taus: jax.Array) -> jax.Array:
        """hidden [..., n_agents, H], taus [..., N] -> z [..., n_agents, N, n_actions]."""
        phi = nn.relu(self.tau_embed(cosine_features(taus, self.n_cos)))  # [..., N, H]
        return self.fc_out(hidden, phi)  # Dense(n_actions)(h[.., i, None, :] * phi[.., None, q, :])


def unroll(
    agent: nn.Module,
    params: Params,
    hidden0: jax.Array,
    inputs: jax.Array,
    resets: jax.Array,
    taus: jax.Array | None = None,
    n_steps: jax.Array | None = None,
) -> jax.Array:
    """Run an agent over time, zeroing the hidden state where told.

    At step t, where ``resets[t, b]`` is true the carry is replaced by zeros *before*
    ``inputs[t, b]`` is consumed (an episode starts at t). ``hidden0`` is the carry before t = 0.

    agent:   an RNNAgent or IQNAgent (taus required for IQNAgent)
    hidden0: [B, n_agents, H]
    inputs:  [T, B, n_agents, in]
    resets:  [T, B] bool
    taus:    [T, B, n_quantiles] (IQNAgent only)
    n_steps: [] int <= T: run the recurrence on the first n_steps steps only (later hidden
             states are zeros; their outputs are padding). None: all T.
    returns: q [T, B, n_agents, n_actions], or z [T, B, n_agents, n_quantiles, n_actions]
    """
    chex.assert_rank([hidden0, inputs, resets], [3, 4, 2])
    chex.assert_equal_shape_prefix([inputs, resets], 2)
    chex.assert_shape(hidden0, (inputs.shape[1], inputs.shape[2], None))
    if taus is not None:
        chex.assert_rank(taus, 3)
        chex.assert_equal_shape_prefix([inputs, taus], 2)

    # Only the recurrence runs inside the scan: the input layer runs on all T steps at once
    # before it, the output head after it (one large matmul each instead of T small ones).
    # The recurrence is gru_scan: GRUCell's arithmetic with a hand-written reverse pass.
    encoded = agent.apply(params, inputs, method="encode")  # [T, B, n, H]
    t, b, n, h = encoded.shape
    hiddens = gru_scan(
        gru_weights(params["params"]["trunk"]["gru"]),
        encoded.reshape(t, b * n, h),
        jnp.repeat(resets.astype(bool), n, axis=1),
        hidden0.reshape(b * n, h),
        jnp.asarray(t if n_steps is None else n_steps, jnp.int32),
    ).reshape(t, b, n, h)
    if taus is None:
        return agent.apply(params, hiddens, method="head")
    return agent.apply(params, hiddens, taus, method="head")
