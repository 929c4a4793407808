"""Map compositions, unit stats and the medivac healing rule for the SMAX-based maps.

Every JaxMARL SMAX scenario is available under its SMAX name, plus two of the paper's SMAC
maps that SMAX lacks:

* ``8m_vs_9m``: 8 marines against 9 marines.
* ``MMM2``: 1 medivac, 2 marauders, 7 marines against 1 medivac, 3 marauders, 8 marines.

SMAX has no healer, so we add a seventh unit type, the **medivac**, only on maps that contain
one (other maps keep SMAX's six types, so their observations equal JaxMARL's exactly). Our
medivac differs from StarCraft II's in these documented ways:

* it never attacks (attack range 0, so no attack action is ever available to it) and heals
  automatically: every world step each living medivac restores ``heal_rate * dt`` health to
  the living, healable ally of its team within ``heal_range`` whose health fraction is lowest
  (ties: lowest unit index), never above that unit's maximum; several medivacs add up;
* it has no energy (SC2 medivacs spend 1 energy per 3 health healed), it does not fly (it
  collides with other units and dies at the map edge like every SMAX unit), and every SMAX
  unit type can shoot it (in SC2 marauders cannot hit air units);
* medivacs and stalkers (mechanical in SC2) cannot be healed; all other types can.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jaxmarl.environments.smax.smax_env import MAP_NAME_TO_SCENARIO

# Unit-type tables: SMAX's six types in SMAX's order, then our medivac.
UNIT_TYPE_NAMES: tuple[str, ...] = (
    "marine",
    "marauder",
    "stalker",
    "zealot",
    "zergling",
    "hydralisk",
    "medivac",
)
UNIT_TYPE_SHORTHANDS: tuple[str, ...] = ("m", "M", "s", "Z", "z", "h", "V")
MEDIVAC = 6
STALKER = 2
# Per type: velocity, attack, attack range, sight range, radius, health, weapon cooldown.
# The first six columns are JaxMARL SMAX's defaults; the medivac column uses SC2's numbers
# for speed (3.5), sight (11), radius (0.75) and health (150); it has no attack.
UNIT_STATS: dict[str, tuple[float, ...]] = {
    "velocities": (3.15, 2.25, 4.13, 3.15, 4.13, 3.15, 3.5),
    "attacks": (9.0, 10.0, 13.0, 8.0, 5.0, 12.0, 0.0),
    "attack_ranges": (5.0, 6.0, 6.0, 2.0, 2.0, 5.0, 0.0),
    "sight_ranges": (9.0, 10.0, 10.0, 9.0, 8.0, 9.0, 11.0),
    "radiuses": (0.375, 0.5625, 0.625, 0.5, 0.375, 0.625, 0.75),
    "health": (45.0, 125.0, 160.0, 150.0, 35.0, 80.0, 150.0),
    "weapon_cooldowns": (0.61, 1.07, 1.87, 0.86, 0.5, 0.59, 1.0),
}
# SC2 medivac: 12.6 health per game second within range 4.
DEFAULT_HEAL_RATE = 12.6
DEFAULT_HEAL_RANGE = 4.0

# Episode limits as in SMAC (SMACv2-style maps use 200).
EPISODE_LIMITS: dict[str, int] = {
    "3m": 60,
    "8m": 120,
    "25m": 150,
    "2s3z": 120,
    "3s5z": 150,
    "5m_vs_6m": 70,
    "8m_vs_9m": 120,
    "10m_vs_11m": 150,
    "27m_vs_30m": 180,
    "3s5z_vs_3s6z": 170,
    "3s_vs_5z": 250,
    "6h_vs_8z": 150,
    "MMM2": 180,
    "smacv2_5_units": 200,
    "smacv2_10_units": 200,
    "smacv2_20_units": 200,
}
DEFAULT_EPISODE_LIMIT = 100  # SMAX's max_steps, for any scenario not in the table


@dataclasses.dataclass(frozen=True)
class MapSpec:
    """A map's composition. ``unit_types``: ally types then enemy types (type indices)."""

    name: str
    unit_types: tuple[int, ...]
    n_allies: int
    n_enemies: int
    episode_limit: int
    smacv2_positions: bool = False
    smacv2_unit_types: bool = False

    @property
    def has_medivac(self) -> bool:
        return MEDIVAC in self.unit_types

    @property
    def n_unit_types(self) -> int:
        """7 when the map has a medivac, else SMAX's 6 (keeps JaxMARL's observation layout)."""
        return 7 if self.has_medivac else 6

    def composition(self) -> str:
        """E.g. '1V 2M 7m vs 1V 3M 8m' (random types on SMACv2-style maps)."""
        if self.smacv2_unit_types:
            return f"{self.n_allies} random vs {self.n_enemies} random"

        def team(types: tuple[int, ...]) -> str:
            counts = {t: types.count(t) for t in sorted(set(types), key=types.index)}
            return " ".join(f"{c}{UNIT_TYPE_SHORTHANDS[t]}" for t, c in counts.items())

        return (
            f"{team(self.unit_types[: self.n_allies])} vs {team(self.unit_types[self.n_allies :])}"
        )


def _from_smax(name: str) -> MapSpec:
    scenario = MAP_NAME_TO_SCENARIO[name]
    return MapSpec(
        name=name,
        unit_types=tuple(int(t) for t in np.asarray(scenario.unit_types)),
        n_allies=scenario.num_allies,
        n_enemies=scenario.num_enemies,
        episode_limit=EPISODE_LIMITS.get(name, DEFAULT_EPISODE_LIMIT),
        smacv2_positions=bool(scenario.smacv2_position_generation),
        smacv2_unit_types=bool(scenario.smacv2_unit_type_generation),
    )


def _our_maps() -> dict[str, MapSpec]:
    marine, marauder = 0, 1
    mmm2_allies = (MEDIVAC,) + (marauder,) * 2 + (marine,) * 7
    mmm2_enemies = (MEDIVAC,) + (marauder,) * 3 + (marine,) * 8
    return {
        "8m_vs_9m": MapSpec("8m_vs_9m", (marine,) * 17, 8, 9, EPISODE_LIMITS["8m_vs_9m"]),
        "MMM2": MapSpec("MMM2", mmm2_allies + mmm2_enemies, 10, 12, EPISODE_LIMITS["MMM2"]),
    }


# Built from JaxMARL's table at import, so every SMAX scenario (including ones a user
# registered with jaxmarl before importing us) is available.
MAPS: dict[str, MapSpec] = {name: _from_smax(name) for name in MAP_NAME_TO_SCENARIO}
MAPS.update(_our_maps())


def unit_table(name: str, n_unit_types: int) -> jax.Array:
    """One per-type stat column of UNIT_STATS, cut to the map's number of types: [n_unit_types]."""
    return jnp.asarray(UNIT_STATS[name][:n_unit_types], dtype=jnp.float32)


def healable_types(n_unit_types: int) -> jax.Array:
    """Which unit types a medivac may heal: [n_unit_types] bool (not medivacs or stalkers)."""
    table = np.ones(n_unit_types, dtype=bool)
    table[STALKER] = False
    if n_unit_types > MEDIVAC:
        table[MEDIVAC] = False
    return jnp.asarray(table)


def medivac_heal(
    health: jax.Array,
    max_health: jax.Array,
    alive: jax.Array,
    positions: jax.Array,
    teams: jax.Array,
    is_healer: jax.Array,
    healable: jax.Array,
    heal_range: float,
    heal_amount: float,
) -> jax.Array:
    """One world step of healing. Returns the new health: [n_units].

    health, max_health: [n_units] float; alive, is_healer, healable: [n_units] bool;
    positions: [n_units, 2]; teams: [n_units]. Each living healer picks the living, healable,
    injured unit of its own team (not itself) within ``heal_range`` with the lowest health
    fraction (ties: lowest index) and restores ``heal_amount`` to it, capped at its maximum.
    """
    n_units = health.shape[0]
    distances = jnp.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=-1)
    health_fraction = health / max_health
    candidate = (
        (is_healer & alive)[:, None]
        & (alive & healable & (health_fraction < 1.0))[None, :]
        & (teams[:, None] == teams[None, :])
        & (distances < heal_range)
        & ~jnp.eye(n_units, dtype=bool)
    )
    score = jnp.where(candidate, health_fraction[None, :], jnp.inf)
    target = jnp.argmin(score, axis=1)
    amount = jnp.where(jnp.any(candidate, axis=1), heal_amount, 0.0)
    healed = health.at[target].add(amount)
    return jnp.minimum(healed, max_health)
