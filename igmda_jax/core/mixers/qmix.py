"""QMIX mixer: a monotonic mixing network whose weights are generated from the state.

    W1 = |hyper_w1(s)|   [n_agents, embed]      b1 = hyper_b1(s)   [embed]
    W2 = |hyper_w2(s)|   [embed]                V  = hyper_v(s)    [] (Dense(embed)-ReLU-Dense(1))
    h  = ELU(q @ W1 + b1)
    Q_tot(s, q) = h @ W2 + V(s)

hyper_w1 and hyper_w2 are MLPs of ``hypernet_layers`` Dense layers (ReLU between, hidden width
``hypernet_embed``); hyper_b1 is a single Dense layer. Because W1, W2 >= 0 and ELU is increasing,
dQ_tot / dq_i >= 0 for every agent i (monotonicity), so the per-agent argmaxes maximise Q_tot.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
    """``n_layers`` Dense layers with ReLU between: [..., in] -> [..., out_dim]."""

    out_dim: int
    hidden_dim: int
    n_layers: int = 2

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {self.n_layers}")
        for layer in range(self.n_layers - 1):
            x = nn.relu(nn.Dense(self.hidden_dim, name=f"hidden_{layer}")(x))
        return nn.Dense(self.out_dim, name="out")(x)


class QMIXMixer(nn.Module):
    """__call__(agent_qs [..., n_agents], states [..., state_dim]) -> q_tot [...]"""

    n_agents: int
    state_dim: int
    embed_dim: int = 32
    hypernet_embed: int = 64
    hypernet_layers: int = 2

    @nn.compact
    def __call__(self, agent_qs: jax.Array, states: jax.Array) -> jax.Array:
        chex.assert_axis_dimension(agent_qs, -1, self.n_agents)
        chex.assert_axis_dimension(states, -1, self.state_dim)
        chex.assert_equal_shape_prefix([agent_qs, states], agent_qs.ndim - 1)
        lead = agent_qs.shape[:-1]

        w1 = MLP(
            self.n_agents * self.embed_dim,
            self.hypernet_embed,
            self.hypernet_layers,
            name="hyper_w1",
        )(states)
        w1 = jnp.abs(w1).reshape(*lead, self.n_agents, self.embed_dim)
        b1 = nn.Dense(self.embed_dim, name="hyper_b1")(states)
        w2 = jnp.abs(
            MLP(self.embed_dim, self.hypernet_embed, self.hypernet_layers, name="hyper_w2")(states)
        )
        v = MLP(1, self.embed_dim, 2, name="hyper_v")(states)[..., 0]

        hidden = nn.elu(jnp.einsum("...n,...ne->...e", agent_qs, w1) + b1)
        return jnp.sum(hidden * w2, axis=-1) + v
