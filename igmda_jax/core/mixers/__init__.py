"""Mixing networks: VDN, QMIX, QPLEX, DMIX (one file each) and :func:`make_mixer`.

Call signatures (flax.linen modules; ``mixer.init(key, *example_args)`` / ``mixer.apply``):

    VDNMixer  (agent_qs [..., n], states [..., S])                        -> q_tot [...]
    QMIXMixer (agent_qs [..., n], states [..., S])                        -> q_tot [...]
    QPLEXMixer(chosen_qs [..., n], max_qs [..., n],
               actions_onehot [..., n, A], states [..., S])               -> q_tot [...]
    DMIXMixer (agent_quantiles [..., n, N], states [..., S])              -> z_tot [..., N]
"""

from __future__ import annotations

import flax.linen as nn

from igmda_jax.core.mixers.dmix import DMIXMixer
from igmda_jax.core.mixers.qmix import QMIXMixer
from igmda_jax.core.mixers.qplex import QPLEXMixer
from igmda_jax.core.mixers.vdn import VDNMixer

MIXER_NAMES = ("vdn", "qmix", "qplex", "dmix")


def make_mixer(
    name: str,
    n_agents: int,
    state_dim: int,
    n_actions: int,
    *,
    embed_dim: int = 32,
    hypernet_embed: int = 64,
    hypernet_layers: int = 2,
    qplex_heads: int = 10,
    qplex_adv_hypernet_embed: int = 64,
    qplex_adv_hypernet_layers: int = 3,
) -> nn.Module:
    """Build the mixer called ``name`` (one of MIXER_NAMES).

    Keyword options apply to the mixers that have them and are ignored by the others:
    embed_dim (QMIX, DMIX), hypernet_embed / hypernet_layers (QMIX and DMIX hypernetworks,
    QPLEX transformation MLPs), qplex_* (QPLEX lambda heads and their extractors).
    """
    if name == "vdn":
        return VDNMixer(n_agents=n_agents, state_dim=state_dim)
    if name == "qmix":
        return QMIXMixer(
            n_agents=n_agents,
            state_dim=state_dim,
            embed_dim=embed_dim,
            hypernet_embed=hypernet_embed,
            hypernet_layers=hypernet_layers,
        )
    if name == "qplex":
        return QPLEXMixer(
            n_agents=n_agents,
            n_actions=n_actions,
            state_dim=state_dim,
            hypernet_embed=hypernet_embed,
            hypernet_layers=hypernet_layers,
            n_heads=qplex_heads,
            adv_hypernet_embed=qplex_adv_hypernet_embed,
            adv_hypernet_layers=qplex_adv_hypernet_layers,
        )
    if name == "dmix":
        return DMIXMixer(
            n_agents=n_agents,
            state_dim=state_dim,
            embed_dim=embed_dim,
            hypernet_embed=hypernet_embed,
            hypernet_layers=hypernet_layers,
        )
    raise ValueError(
        f"unknown mixer {name!r}; valid names: {', '.join(MIXER_NAMES)} "
        "(algorithm suffixes such as '-da'/'-bc' are not part of the mixer name)"
    )


__all__ = ["MIXER_NAMES", "DMIXMixer", "QMIXMixer", "QPLEXMixer", "VDNMixer", "make_mixer"]
