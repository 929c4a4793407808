"""QPLEX mixer (duplex dueling, the "DMAQ" mixer with the multi-head lambda weights).

Per-agent transformation, with state-conditioned weight and bias (both MLPs of the state):

    w_i(s) = |MLP_w(s)|_i + 1e-10,        b_i(s) = MLP_b(s)_i
    Q_i'   = w_i(s) q_i(u_i) + b_i(s)                 (chosen action)
    V_i    = w_i(s) max_u q_i(u) + b_i(s) = max_u Q_i' (w_i > 0, so the transform keeps the max)
    A_i    = stop_gradient(Q_i' - V_i) <= 0

Joint advantage weights from K heads, each head k with three extractors:

    lambda_i(s, u) = sum_k (|key_k(s)| + 1e-10) * sigmoid(agents_k(s))_i
                                                * sigmoid(action_k([s, onehot(u_1..u_n)]))_i

    Q_tot(s, u) = sum_i Q_i' + sum_i (lambda_i(s, u) - 1) A_i

Since lambda_i > 0 and A_i <= 0 with A_i = 0 exactly at each agent's greedy action,
Q_tot = sum_i V_i + sum_i lambda_i A_i is maximised by the per-agent argmaxes (IGM).

``max_qs`` must be the max over *available* actions (mask before taking it). For a double-Q
target, ``chosen_qs`` are the target network's values at the selected actions and ``max_qs``
the target network's own max, so A_i need not be zero there.

Defaults follow the authors' config: K = 10 heads, extractors of 3 Dense layers of width 64
(pymarl2 uses K = 4 and 1-2 layers); the transformation MLPs have 2 layers of width 64.
The K heads of each extractor kind are one vmapped module: parameters ``key``, ``agents`` and
``action`` hold every leaf with a leading head axis of size K.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from igmda_jax.core.mixers.qmix import MLP


class _Heads(nn.Module):
    """K independent extractors (parameters stacked on a leading head axis of every leaf).

    x: [..., in] -> [..., n_heads, out_dim]
    """

    n_heads: int
    out_dim: int
    hidden_dim: int
    n_layers: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        stacked = nn.vmap(
            MLP,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=-2,
            axis_size=self.n_heads,
        )
        return stacked(self.out_dim, self.hidden_dim, self.n_layers, name="heads")(x)


class QPLEXMixer(nn.Module):
    """__call__(chosen_qs [..., n_agents], max_qs [..., n_agents],
    actions_onehot [..., n_agents, n_actions], states [..., state_dim]) -> q_tot [...]
    """

    n_agents: int
    n_actions: int
    state_dim: int
    hypernet_embed: int = 64
    hypernet_layers: int = 2
    n_heads: int = 10
    adv_hypernet_embed: int = 64
    adv_hypernet_layers: int = 3

    @nn.compact
    def __call__(
        self,
        chosen_qs: jax.Array,
        max_qs: jax.Array,
        actions_onehot: jax.Array,
        states: jax.Array,
    ) -> jax.Array:
        n, a = self.n_agents, self.n_actions
        chex.assert_axis_dimension(chosen_qs, -1, n)
        chex.assert_equal_shape([chosen_qs, max_qs])
        chex.assert_shape(actions_onehot, (*chosen_qs.shape, a))
        chex.assert_shape(states, (*chosen_qs.shape[:-1], self.state_dim))

        w = (
            jnp.abs(MLP(n, self.hypernet_embed, self.hypernet_layers, name="transform_w")(states))
            + 1e-10
        )
        b = MLP(n, self.hypernet_embed, self.hypernet_layers, name="transform_b")(states)
        q_prime = w * chosen_qs + b
        v = w * max_qs + b
        advantage = jax.lax.stop_gradient(q_prime - v)

        joint_actions = actions_onehot.reshape(*chosen_qs.shape[:-1], n * a).astype(states.dtype)
        state_actions = jnp.concatenate([states, joint_actions], axis=-1)
        emb, layers = self.adv_hypernet_embed, self.adv_hypernet_layers
        keys = jnp.abs(_Heads(self.n_heads, 1, emb, layers, name="key")(states)) + 1e-10
        agents = nn.sigmoid(_Heads(self.n_heads, n, emb, layers, name="agents")(states))
        action = nn.sigmoid(_Heads(self.n_heads, n, emb, layers, name="action")(state_actions))
        lambdas = jnp.sum(keys * agents * action, axis=-2)  # [..., K, n] -> [..., n]

        return jnp.sum(q_prime, axis=-1) + jnp.sum((lambdas - 1.0) * advantage, axis=-1)
