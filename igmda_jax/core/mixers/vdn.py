"""VDN mixer: the joint value is the sum of the agents' utilities.

    Q_tot(s, u) = sum_i q_i(tau_i, u_i)

No parameters; ``states`` is accepted (and shape-checked) only so that every mixer has the same
call signature.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax


class VDNMixer(nn.Module):
    """__call__(agent_qs [..., n_agents], states [..., state_dim]) -> q_tot [...]"""

    n_agents: int
    state_dim: int

    def __call__(self, agent_qs: jax.Array, states: jax.Array) -> jax.Array:
        chex.assert_axis_dimension(agent_qs, -1, self.n_agents)
        chex.assert_axis_dimension(states, -1, self.state_dim)
        chex.assert_equal_shape_prefix([agent_qs, states], agent_qs.ndim - 1)
        return agent_qs.sum(axis=-1)
