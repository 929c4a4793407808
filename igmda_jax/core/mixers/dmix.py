"""DMIX mixer (DFAC mean-shape decomposition of the joint return distribution).

Each agent's quantile function Z_i(tau) is split into its mean and its shape; the means are
mixed by QMIX, the shapes are added (all agents share the same quantile fractions tau):

    Z_tot(s, tau) = sum_i (Z_i(tau) - E_tau[Z_i]) + QMIX(E_tau[Z_1], ..., E_tau[Z_n]; s)

E_tau is the mean over the given quantile samples, so mean_tau Z_tot = QMIX(means; s) exactly,
and the greedy actions of mean_tau Z_i maximise E[Z_tot] (monotonic in every agent's mean).
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax

from igmda_jax.core.mixers.qmix import QMIXMixer


class DMIXMixer(nn.Module):
    """__call__(agent_quantiles [..., n_agents, n_quantiles], states [..., state_dim])
    -> z_tot [..., n_quantiles]

    The QMIX mixer of the means lives under the submodule name ``qmix``.
    """

    n_agents: int
    state_dim: int
    embed_dim: int = 32
    hypernet_embed: int = 64
    hypernet_layers: int = 2

    @nn.compact
    def __call__(self, agent_quantiles: jax.Array, states: jax.Array) -> jax.Array:
        chex.assert_axis_dimension(agent_quantiles, -2, self.n_agents)
        chex.assert_shape(states, (*agent_quantiles.shape[:-2], self.state_dim))
        means = agent_quantiles.mean(axis=-1)  # [..., n_agents]
        shapes = agent_quantiles - means[..., None]  # [..., n_agents, N]
        qmix = QMIXMixer(
            n_agents=self.n_agents,
            state_dim=self.state_dim,
            embed_dim=self.embed_dim,
            hypernet_embed=self.hypernet_embed,
            hypernet_layers=self.hypernet_layers,
            name="qmix",
        )
        return shapes.sum(axis=-2) + qmix(means, states)[..., None]
