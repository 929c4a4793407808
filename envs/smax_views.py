"""What the units of a SMAX battle see, as pure functions of a JaxMARL SMAX state.

:func:`views` builds everything :class:`envs.smax.SmaxEnv` hands a learner at one step: the
agents' sight-limited observations, the expert's view, the mixer's global state, the available
actions, and the enemies' own observation (which drives JaxMARL's heuristic enemy). The layouts
are documented in envs/smax.py's module docstring; ``ViewSpec`` holds one environment's static
options. ``inner`` is always the JaxMARL ``SMAX`` instance that carries the unit tables.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxmarl.environments.smax.smax_env import SMAX
from jaxmarl.environments.smax.smax_env import State as SMAXState

from envs.spec import Observation

N_MOVE_ACTIONS = 5  # 4 moves + stop
STOP_ACTION = 4
OWN_FEATURES = ("smax", "smac")
# Unit vector of each move action 0-3 (north, east, south, west), as JaxMARL's
# SMAX._decode_discrete_actions moves units (a diagonal rotated by 45 degrees).
MOVE_DIRECTIONS = ((0.0, 1.0), (1.0, 0.0), (0.0, -1.0), (-1.0, 0.0))


@dataclasses.dataclass(frozen=True)
class ViewSpec:
    """The static options of one environment's views (see envs/smax.py for their meaning)."""

    n_agents: int
    n_actions: int
    sight_range: float | None  # the agents'; None = each unit type's SMAX sight
    expert_sight_range: float | None  # the "full_obs" expert's
    expert_view: str  # "full_obs" or "state"
    own_features: str  # "smax" or "smac"
    attack_requires_sight: bool
    state_last_action: bool
    step_distance: float  # one env step's displacement per unit of speed


def drop_diagonal(square: jax.Array) -> jax.Array:
    """Remove entry (i, i) from every row, keeping order: [n, n, ...] -> [n, n - 1, ...].

    Static reshapes only (no gather), which is what keeps observations cheap on CPU.
    """
    n = square.shape[0]
    trailing = square.shape[2:]
    flat = square.reshape((n * n, *trailing))[1:]
    return flat.reshape((n - 1, n + 1, *trailing))[:, :-1].reshape((n, n - 1, *trailing))


def sight_per_unit(inner: SMAX, unit_types: jax.Array, override: float | None) -> jax.Array:
    """Visibility radius of every unit as observer: unit_types [n_units] -> [n_units]."""
    if override is None:
        return inner.unit_type_sight_ranges[unit_types]
    return jnp.full(unit_types.shape, override, dtype=jnp.float32)


def move_flags(inner: SMAX, state: SMAXState, n_agents: int, step_distance: float) -> jax.Array:
    """SMAC's move-feasibility flags of the allies: [n_agents, 4] float32 (north, east,
    south, west): 1 where one env step of that move at the unit's speed keeps it strictly
    inside the map (a unit that touches the edge dies in SMAX)."""
    allies = slice(0, n_agents)
    speed = inner.unit_type_velocities[state.unit_types[allies]] * step_distance
    directions = jnp.asarray(MOVE_DIRECTIONS, jnp.float32)  # [4, 2]
    ahead = state.unit_positions[allies, None, :] + speed[:, None, None] * directions
    size = jnp.array([inner.map_width, inner.map_height], jnp.float32)
    inside = jnp.all((ahead > 0.0) & (ahead < size), axis=-1)  # [n_agents, 4]
    return inside.astype(jnp.float32)


def observations(
    inner: SMAX, spec: ViewSpec, state: SMAXState, distances: jax.Array
) -> dict[str, jax.Array]:
    """Observations of every unit under the three sights we need; distances: [n_units, n_units].

    Returns obs [n_agents, obs_dim] (agent sight), full_obs [n_agents, obs_dim] (expert
    sight), enemy_obs [n_enemies, SMAX obs size] (the enemies' own SMAX sight, SMAX own block).
    """
    types, alive = state.unit_types, state.unit_alive
    n_allies = spec.n_agents
    n = types.shape[0]
    type_sight = inner.unit_type_sight_ranges[types]
    health_fraction = state.unit_health / inner.unit_type_health[types]
    cooldown_fraction = jnp.clip(
        state.unit_weapon_cooldowns / inner.unit_type_weapon_cooldowns[types], 0.0, 1.0
    )
    type_bits = jax.nn.one_hot(types, inner.unit_type_bits)
    max_action = jnp.where(
        jnp.arange(n) < n_allies,
        float(inner.num_ally_actions - 1),
        float(inner.num_enemy_actions - 1),
    )
    last_target = state.prev_attack_actions.astype(jnp.float32) / max_action
    relative = (state.unit_positions[None, :, :] - state.unit_positions[:, None, :]) / (
        type_sight[:, None, None]
    )  # [observer, observed, 2]
    observed = jnp.concatenate(
        [
            health_fraction[:, None],
            state.prev_movement_actions,
            last_target[:, None],
            cooldown_fraction[:, None],
            type_bits,
        ],
        axis=-1,
    )  # [observed, F - 2]
    pair_features = jnp.concatenate(
        [
            jnp.broadcast_to(observed[None, :, :1], (n, n, 1)),
            relative,
            jnp.broadcast_to(observed[None, :, 1:], (n, n, observed.shape[-1] - 1)),
        ],
        axis=-1,
    )  # [observer, observed, F]
    smax_own = jnp.concatenate(
        [
            health_fraction[:, None],
            state.unit_positions / jnp.array([inner.map_width, inner.map_height]),
            cooldown_fraction[:, None],
            type_bits,
        ],
        axis=-1,
    ) * alive[:, None].astype(jnp.float32)  # [unit, 4 + n_types]
    if spec.own_features == "smac":
        flags = move_flags(inner, state, n_allies, spec.step_distance)
        ally_own = jnp.concatenate(
            [health_fraction[:n_allies, None], type_bits[:n_allies], flags], axis=-1
        ) * alive[:n_allies, None].astype(jnp.float32)  # [ally, 5 + n_types]
    else:
        ally_own = smax_own[:n_allies]
    both_alive = alive[:, None] & alive[None, :]

    def view(sight: jax.Array, team: str) -> jax.Array:
        visible = (distances < sight[:, None]) & both_alive  # [observer, observed]
        blocks = pair_features * visible[..., None].astype(jnp.float32)
        if team == "ally":  # allies list the other units ascending
            rows = drop_diagonal(blocks)[:n_allies]
            own_rows = ally_own
        else:  # enemies list them descending: flip both unit axes, then enemy rows
            rows = drop_diagonal(blocks[::-1, ::-1])[: n - n_allies][::-1]
            own_rows = smax_own[n_allies:]
        return jnp.concatenate([rows.reshape(rows.shape[0], -1), own_rows], axis=-1)

    if spec.sight_range == 0.0:  # static: nothing is ever closer than 0, every block is 0
        blind = jnp.zeros((n_allies, (n - 1) * pair_features.shape[-1]), jnp.float32)
        obs = jnp.concatenate([blind, ally_own], axis=-1)
    else:
        obs = view(sight_per_unit(inner, types, spec.sight_range), "ally")
    return {
        "obs": obs,
        "full_obs": view(sight_per_unit(inner, types, spec.expert_sight_range), "ally"),
        "enemy_obs": view(type_sight, "enemy"),
    }


def available_actions(
    inner: SMAX, spec: ViewSpec, state: SMAXState, distances: jax.Array
) -> jax.Array:
    """Available actions of the allies: [n_agents, n_actions] bool (moves, stop, attacks)."""
    n_agents = spec.n_agents
    allies = slice(0, n_agents)
    enemies = slice(n_agents, state.unit_types.shape[0])
    alive = state.unit_alive
    ally_types = state.unit_types[allies]
    in_range = distances[allies, enemies] < inner.unit_type_attack_ranges[ally_types][:, None]
    shootable = in_range & alive[enemies][None, :] & alive[allies][:, None]
    if spec.attack_requires_sight:
        sight = sight_per_unit(inner, state.unit_types, spec.sight_range)[allies]
        shootable = shootable & (distances[allies, enemies] < sight[:, None])
    moves = jnp.broadcast_to(alive[allies][:, None], (n_agents, N_MOVE_ACTIONS - 1))
    stop = jnp.ones((n_agents, 1), dtype=bool)
    return jnp.concatenate([moves, stop, shootable], axis=-1)


def global_state(
    inner: SMAX, spec: ViewSpec, state: SMAXState, last_actions: jax.Array
) -> jax.Array:
    """The mixer's state: [state_dim]; last_actions: [n_agents] int."""
    types, alive = state.unit_types, state.unit_alive
    size = jnp.array([inner.map_width, inner.map_height])
    per_unit = jnp.concatenate(
        [
            (state.unit_health / inner.unit_type_health[types])[:, None],
            jnp.clip(state.unit_weapon_cooldowns / inner.unit_type_weapon_cooldowns[types], 0, 1)[
                :, None
            ],
            (state.unit_positions - size / 2) / size,
            jax.nn.one_hot(types, inner.unit_type_bits),
        ],
        axis=-1,
    ) * alive[:, None].astype(jnp.float32)
    parts = [per_unit.reshape(-1)]
    if spec.state_last_action:
        parts.append(jax.nn.one_hot(last_actions, spec.n_actions).reshape(-1))
    return jnp.concatenate(parts)


def views(
    inner: SMAX, spec: ViewSpec, state: SMAXState, last_actions: jax.Array
) -> tuple[Observation, jax.Array]:
    """The learner-facing Observation of ``state`` and the enemies' observation
    [n_enemies, SMAX obs size]; last_actions: [n_agents] int."""
    distances = jnp.linalg.norm(
        state.unit_positions[:, None, :] - state.unit_positions[None, :, :], axis=-1
    )
    seen = observations(inner, spec, state, distances)
    mixer_state = global_state(inner, spec, state, last_actions)
    if spec.expert_view == "full_obs":
        expert_obs = seen["full_obs"]
    else:
        expert_obs = jnp.concatenate(
            [
                jnp.broadcast_to(mixer_state, (spec.n_agents, mixer_state.shape[0])),
                jnp.eye(spec.n_agents, dtype=jnp.float32),
            ],
            axis=-1,
        )
    observation = Observation(
        obs=seen["obs"],
        expert_obs=expert_obs,
        state=mixer_state,
        avail=available_actions(inner, spec, state, distances),
    )
    return observation, seen["enemy_obs"]
