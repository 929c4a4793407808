"""SMAC-like maps on JaxMARL's SMAX, with an ally-only sight range.

``envs.make("3m", sight_range=0.0)`` builds :class:`SmaxEnv`, a pure functional environment
(see envs/spec.py) whose battle dynamics and heuristic enemy are JaxMARL's SMAX.

Observations. The agents' ``obs`` is JaxMARL's ``unit_list`` observation (per other unit:
health, relative x/y scaled by the observer's SMAX sight range, last move x/y, last target,
weapon cooldown, type bits; then the agent's own features), but other units are
hidden (all-zero block) when farther than ``sight_range`` from the agent. ``sight_range=None``
keeps each unit type's SMAX sight (9 for marines) and reproduces JaxMARL's observation exactly;
``0`` hides every other unit. Feature scaling never changes with ``sight_range``. The heuristic
enemy keeps its normal sight: in JaxMARL one sight table serves both teams, so we compute the
two teams' observations separately from one dense table of unit-to-unit features.

Own features (``own_features``, the allies' ``obs`` and ``full_obs`` alike): ``"smax"`` (the
default, JaxMARL's) is health fraction, **absolute x, y** (divided by the map size), weapon
cooldown fraction, type bits; ``"smac"`` is SMAC's: health fraction, type bits and four
move-feasibility flags (north, east, south, west: the move keeps the unit strictly inside the
map for one env step at its speed; SMAX kills units that touch the map edge). With ``"smac"``
a blind agent (sight 0) does not know where it stands, except next to an edge, as in SMAC.
Dead units' own features are all zero. The enemies' observation (which drives the heuristic
enemy, who reads its own position from it) and the global state keep positions whatever this
option.

Expert view (``expert_view``): ``"full_obs"`` is the same observation with full sight
(``expert_sight_range``, default each type's SMAX sight: what the paper's code gave its
experts); ``"state"`` is the global state plus the agent's one-hot id.

Global state: per unit (allies, then enemies) health fraction, weapon cooldown fraction, x and
y relative to the map centre divided by the map size, type one-hot; all zero for dead units.
With ``state_last_action=True`` the allies' last actions (one-hot) are appended.

Actions (SMAX layout): 0-3 move, 4 stop, 5.. attack enemy j. As in SMAC, attack j is available
when j is alive and within the agent's *shoot* range, whatever the sight range (this leaks
presence of enemies in range); ``attack_requires_sight=True`` also requires j within sight, a
stricter setting. Dead agents have only ``stop`` available. Inside ``step`` (under jit) an
unavailable or out-of-range action becomes ``stop``; use :func:`check_actions` on the host for
an error instead.

Reward (``reward="smax"``, the default): damage dealt to enemies as a fraction of their maximum
health, summed and divided by the number of enemies (so it never rewards enemy healing), plus
``won_battle_bonus`` (1.0) on a win: an episode returns at most 2. ``reward="smac"`` is SMAC's
default shaping instead: health damage dealt + 10 per enemy killed + 200 on a win, scaled so
that the best possible episode returns 20 (SMAC's ``reward_scale_rate``); ``"smac_no_kill"``
is the same without the kill bonus (SMAC's ``reward_death_value=0``). Episodes end on a
win, a loss, a draw, or after ``episode_limit`` steps (SMAC's limit per map); only the last is
``truncated``. ``step`` does not auto-reset (see envs/spec.py).

Random keys are split exactly as in JaxMARL's ``HeuristicEnemySMAX.step``, so with default
options a trajectory equals JaxMARL's step for step. The observations, available actions and
global state are built by the pure functions of envs/smax_views.py.
"""

from __future__ import annotations

import inspect
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from jaxmarl.environments.smax.heuristic_enemy import (
    create_heuristic_policy,
    get_heuristic_policy_initial_state,
)
from jaxmarl.environments.smax.smax_env import SMAX
from jaxmarl.environments.smax.smax_env import State as SMAXState

from envs import register
from envs.smax_maps import (
    DEFAULT_HEAL_RANGE,
    DEFAULT_HEAL_RATE,
    MAPS,
    MEDIVAC,
    UNIT_TYPE_NAMES,
    UNIT_TYPE_SHORTHANDS,
    MapSpec,
    healable_types,
    medivac_heal,
    unit_table,
)
from envs.smax_views import N_MOVE_ACTIONS, OWN_FEATURES, STOP_ACTION, ViewSpec, views
from envs.spec import EnvInfo, Observation, TimeStep, validate_expert_view, validate_sight_range
from envs.spec import check_actions as check_actions  # re-exported: the host-side check

REWARDS = ("smax", "smac", "smac_no_kill")
# SMAC's defaults (smac.env.StarCraft2Env): reward_death_value, reward_win, reward_scale_rate
SMAC_KILL_VALUE, SMAC_WIN_VALUE, SMAC_SCALE = 10.0, 200.0, 20.0


@struct.dataclass
class SmaxEnvState:
    """Everything a SMAX episode needs between steps (one environment, no batch axis)."""

    smax: SMAXState
    enemy_policy: Any  # JaxMARL heuristic policy state, leading axis n_enemies
    enemy_obs: jax.Array  # [n_enemies, obs_dim] the enemies' view of the current state
    last_actions: jax.Array  # [n_agents] int32, the allies' last (sanitised) actions
    avail: jax.Array  # [n_agents, n_actions] bool, the allies' available actions now
    done: jax.Array  # [] bool
    won: jax.Array  # [] bool
    truncated: jax.Array  # [] bool


@struct.dataclass
class SmaxRecord:
    """What the replay stores per step: unit state, from which ``observe`` re-derives every
    observation (about 30 bytes per unit instead of a few hundred floats per agent)."""

    positions: jax.Array  # [n_units, 2] float32
    health: jax.Array  # [n_units] float32 (alive = health > 0)
    cooldowns: jax.Array  # [n_units] float32
    prev_movement: jax.Array  # [n_units, 2] float32
    prev_attack: jax.Array  # [n_units] int16
    unit_types: jax.Array  # [n_units] uint8
    last_actions: jax.Array  # [n_agents] int16


class SmaxEnv:
    """One SMAC-like map. Build with ``envs.make(map_name, ...)``; see the module docstring."""

    def __init__(
        self,
        map_name: str,
        *,
        sight_range: float | None = None,
        expert_view: str = "full_obs",
        expert_sight_range: float | None = None,
        episode_limit: int | None = None,
        attack_requires_sight: bool = False,
        won_battle_bonus: float = 1.0,
        reward: str = "smax",
        state_last_action: bool = False,
        own_features: str = "smax",
        heal_rate: float = DEFAULT_HEAL_RATE,
        heal_range: float = DEFAULT_HEAL_RANGE,
    ) -> None:
        if map_name not in MAPS:
            raise ValueError(f"unknown SMAX map {map_name!r}; known maps: {', '.join(MAPS)}")
        validate_expert_view(expert_view)
        if reward not in REWARDS:
            raise ValueError(f"unknown reward {reward!r}; valid: {', '.join(REWARDS)}")
        self.reward_mode = reward
        if own_features not in OWN_FEATURES:
            raise ValueError(
                f"unknown own_features {own_features!r}; valid: {', '.join(OWN_FEATURES)}"
            )
        self.own_features = own_features
        self.spec: MapSpec = MAPS[map_name]
        self.sight_range = validate_sight_range(sight_range)
        self.expert_sight_range = validate_sight_range(expert_sight_range, "expert_sight_range")
        self.expert_view = expert_view
        limit = self.spec.episode_limit if episode_limit is None else episode_limit
        if isinstance(limit, bool) or int(limit) != limit or limit < 1:
            raise ValueError(f"episode_limit must be a positive integer, got {episode_limit!r}")
        self.episode_limit = int(limit)
        self.attack_requires_sight = bool(attack_requires_sight)
        self.state_last_action = bool(state_last_action)
        if heal_rate < 0 or heal_range < 0:
            raise ValueError("heal_rate and heal_range must be >= 0")
        self.heal_range = float(heal_range)

        n_types = self.spec.n_unit_types
        self.inner = SMAX(
            num_allies=self.spec.n_allies,
            num_enemies=self.spec.n_enemies,
            scenario=None,
            unit_type_names=list(UNIT_TYPE_NAMES[:n_types]),
            unit_type_shorthands=list(UNIT_TYPE_SHORTHANDS[:n_types]),
            unit_type_velocities=unit_table("velocities", n_types),
            unit_type_attacks=unit_table("attacks", n_types),
            unit_type_attack_ranges=unit_table("attack_ranges", n_types),
            unit_type_sight_ranges=unit_table("sight_ranges", n_types),
            unit_type_radiuses=unit_table("radiuses", n_types),
            unit_type_health=unit_table("health", n_types),
            unit_type_weapon_cooldowns=unit_table("weapon_cooldowns", n_types),
            won_battle_bonus=won_battle_bonus,
            max_steps=self.episode_limit,
            smacv2_position_generation=self.spec.smacv2_positions,
            smacv2_unit_type_generation=self.spec.smacv2_unit_types,
        )
        self.inner.scenario = jnp.asarray(self.spec.unit_types, dtype=jnp.uint8)
        self.heal_amount = float(heal_rate) * self.inner.time_per_step
        self.healable = healable_types(n_types)
        self.enemy_policy_fn = create_heuristic_policy(self.inner, 1, shoot=True)

        n_allies, n_enemies = self.spec.n_allies, self.spec.n_enemies
        n_units = n_allies + n_enemies
        self.n_agents, self.n_enemies, self.n_units = n_allies, n_enemies, n_units
        self.n_actions = N_MOVE_ACTIONS + n_enemies
        self.n_unit_features = len(self.inner.unit_features)
        # SMAX's own block is 4 + n_types wide (health, x, y, cooldown, types); SMAC's is
        # 1 + n_types + 4 (health, types, move flags)
        own_width = {"smax": 4 + n_types, "smac": 5 + n_types}[own_features]
        self.own_width = own_width
        self.obs_dim = self.inner.obs_size - (4 + n_types) + own_width
        # an env step's displacement per unit of speed: world steps x time per world step
        self.step_distance = self.inner.world_steps_per_env_step * self.inner.time_per_step
        self.state_unit_dim = 4 + n_types
        self.state_dim = n_units * self.state_unit_dim + (
            n_allies * self.n_actions if self.state_last_action else 0
        )
        self.expert_dim = self.obs_dim if expert_view == "full_obs" else self.state_dim + n_allies
        self.view_spec = ViewSpec(
            n_agents=n_allies,
            n_actions=self.n_actions,
            sight_range=self.sight_range,
            expert_sight_range=self.expert_sight_range,
            expert_view=expert_view,
            own_features=own_features,
            attack_requires_sight=self.attack_requires_sight,
            state_last_action=self.state_last_action,
            step_distance=float(self.step_distance),
        )
        self.info = EnvInfo(
            map_name=map_name,
            n_agents=n_allies,
            n_enemies=n_enemies,
            n_actions=self.n_actions,
            obs_dim=self.obs_dim,
            expert_dim=self.expert_dim,
            state_dim=self.state_dim,
            episode_limit=self.episode_limit,
            sight_range=self.sight_range,
            expert_view=expert_view,
            obs_live_features=self._obs_live_features(),
        )

    def _obs_live_features(self) -> tuple[int, ...] | None:
        """Sight 0: only the own block (the last features) is ever nonzero; else all."""
        if self.sight_range != 0.0:
            return None
        return tuple(range(self.obs_dim - self.own_width, self.obs_dim))

    def _timestep(
        self,
        state: SMAXState,
        last_actions: jax.Array,
        reward: jax.Array,
        done: jax.Array,
        won: jax.Array,
        truncated: jax.Array,
    ) -> tuple[TimeStep, jax.Array]:
        """Build the TimeStep of ``state``; also return the enemies' observation."""
        observation, enemy_obs = views(self.inner, self.view_spec, state, last_actions)
        timestep = TimeStep(
            obs=observation.obs,
            expert_obs=observation.expert_obs,
            state=observation.state,
            avail=observation.avail,
            reward=jnp.asarray(reward, jnp.float32),
            done=jnp.asarray(done, bool),
            won=jnp.asarray(won, bool),
            truncated=jnp.asarray(truncated, bool),
        )
        return timestep, enemy_obs

    # ------------------------------------------------------------------ replay records
    def record(self, timestep: TimeStep, env_state: SmaxEnvState) -> SmaxRecord:
        """The compact per-step replay record (unit state, not observations)."""
        smax = env_state.smax
        return SmaxRecord(
            positions=smax.unit_positions,
            health=smax.unit_health,
            cooldowns=smax.unit_weapon_cooldowns,
            prev_movement=smax.prev_movement_actions,
            prev_attack=smax.prev_attack_actions.astype(jnp.int16),
            unit_types=smax.unit_types.astype(jnp.uint8),
            last_actions=env_state.last_actions.astype(jnp.int16),
        )

    def observe(self, record: SmaxRecord) -> Observation:
        """Re-derive obs, expert_obs, state and avail from a record, exactly as at run time."""
        state = SMAXState(
            unit_positions=record.positions,
            unit_alive=record.health > 0,
            unit_teams=self.inner.teams.astype(jnp.float32),
            unit_health=record.health,
            unit_types=record.unit_types,
            unit_weapon_cooldowns=record.cooldowns,
            prev_movement_actions=record.prev_movement,
            prev_attack_actions=record.prev_attack.astype(jnp.int32),
            step=jnp.int32(0),
            done=jnp.bool_(False),
        )
        last_actions = record.last_actions.astype(jnp.int32)
        observation, _ = views(self.inner, self.view_spec, state, last_actions)
        return observation

    # ------------------------------------------------------------------ protocol
    def reset(self, key: jax.Array) -> tuple[TimeStep, SmaxEnvState]:
        """Start an episode. Returns the first TimeStep and the environment state."""
        _, reset_key = jax.random.split(key)
        _, smax_state = self.inner.reset(reset_key)
        enemy_policy = jax.tree.map(
            lambda *xs: jnp.stack(xs), *([get_heuristic_policy_initial_state()] * self.n_enemies)
        )
        last_actions = jnp.full((self.n_agents,), STOP_ACTION, dtype=jnp.int32)
        false = jnp.array(False)
        timestep, enemy_obs = self._timestep(
            smax_state, last_actions, jnp.array(0.0), false, false, false
        )
        env_state = SmaxEnvState(
            smax=smax_state,
            enemy_policy=enemy_policy,
            enemy_obs=enemy_obs,
            last_actions=last_actions,
            avail=timestep.avail,
            done=false,
            won=false,
            truncated=false,
        )
        return timestep, env_state

    def sanitise_actions(self, actions: jax.Array, avail: jax.Array) -> jax.Array:
        """Unavailable or out-of-range actions become stop. actions: [n_agents] -> int32."""
        actions = jnp.asarray(actions, jnp.int32)
        in_range = (actions >= 0) & (actions < self.n_actions)
        clipped = jnp.clip(actions, 0, self.n_actions - 1)
        is_avail = jnp.take_along_axis(avail, clipped[:, None], axis=1)[:, 0]
        return jnp.where(in_range & is_avail, clipped, STOP_ACTION)

    def _world_steps(
        self, key: jax.Array, state: SMAXState, movement: jax.Array, attack: jax.Array
    ) -> SMAXState:
        """Advance the battle by one environment step (SMAX's world steps + healing)."""
        inner = self.inner
        has_medivac = self.spec.has_medivac

        def world_step(carry: tuple[SMAXState, jax.Array], _: None):
            state, step_key = carry
            step_key, world_step_key = jax.random.split(step_key)
            state = inner._world_step(world_step_key, state, (movement, attack))
            state = inner._kill_agents_touching_walls(state)
            state = inner._update_dead_agents(state)
            if has_medivac:
                state = state.replace(
                    unit_health=medivac_heal(
                        state.unit_health,
                        inner.unit_type_health[state.unit_types],
                        state.unit_alive,
                        state.unit_positions,
                        state.unit_teams,
                        state.unit_types == MEDIVAC,
                        self.healable[state.unit_types],
                        self.heal_range,
                        self.heal_amount,
                    )
                )
            state = inner._push_units_away(state)
            state = state.replace(prev_movement_actions=movement, prev_attack_actions=attack)
            return (state, step_key), None

        (state, _), _ = jax.lax.scan(
            world_step, (state, key), None, length=inner.world_steps_per_env_step
        )
        return state

    def step(
        self, key: jax.Array, env_state: SmaxEnvState, actions: jax.Array
    ) -> tuple[TimeStep, SmaxEnvState]:
        """One environment step. actions: [n_agents] int. Absorbing once done."""
        inner = self.inner
        prev = env_state.smax
        key, _ = jax.random.split(key)  # JaxMARL's auto-reset key, unused here
        key, enemy_key = jax.random.split(key)
        enemy_keys = jax.random.split(enemy_key, self.n_enemies)
        enemy_actions, enemy_policy = jax.vmap(self.enemy_policy_fn)(
            enemy_keys, env_state.enemy_policy, env_state.enemy_obs
        )
        ally_actions = self.sanitise_actions(actions, env_state.avail)
        all_actions = jnp.concatenate([ally_actions, jnp.asarray(enemy_actions, jnp.int32)])
        movement, attack = inner._decode_discrete_actions(all_actions)
        stepped = self._world_steps(key, prev, movement, attack)
        stepped = stepped.replace(step=prev.step + 1)

        types = prev.unit_types
        enemies = slice(self.n_agents, self.n_units)
        damage = jnp.maximum(prev.unit_health - stepped.unit_health, 0.0)
        damage_fraction = damage / inner.unit_type_health[types]
        allies_dead = ~jnp.any(stepped.unit_alive[: self.n_agents])
        enemies_dead = ~jnp.any(stepped.unit_alive[enemies])
        won = enemies_dead & ~allies_dead
        if self.reward_mode in ("smac", "smac_no_kill"):
            kill_value = SMAC_KILL_VALUE if self.reward_mode == "smac" else 0.0
            enemy_health = inner.unit_type_health[types][enemies]
            killed = prev.unit_alive[enemies] & ~stepped.unit_alive[enemies]
            best_episode = jnp.sum(enemy_health) + kill_value * self.n_enemies
            reward = (
                jnp.sum(damage[enemies])
                + kill_value * jnp.sum(killed)
                + jnp.where(won, SMAC_WIN_VALUE, 0.0)
            ) * (SMAC_SCALE / (best_episode + SMAC_WIN_VALUE))
        else:
            reward = jnp.sum(damage_fraction[enemies]) / self.n_enemies + jnp.where(
                won, inner.won_battle_bonus, 0.0
            )
        out_of_time = stepped.step >= self.episode_limit
        battle_over = allies_dead | enemies_dead
        done = battle_over | out_of_time
        stepped = stepped.replace(done=done)

        # Absorbing: an episode that was already done keeps its state, flags and observation.
        was_done = env_state.done
        keep = lambda old, new: jax.lax.select(  # noqa: E731
            jnp.broadcast_to(was_done, jnp.shape(new)), old, new
        )
        next_smax = jax.tree.map(keep, prev, stepped)
        next_policy = jax.tree.map(keep, env_state.enemy_policy, enemy_policy)
        last_actions = keep(env_state.last_actions, ally_actions)
        won = keep(env_state.won, won)
        truncated = keep(env_state.truncated, out_of_time & ~battle_over)
        done = was_done | done
        reward = jnp.where(was_done, 0.0, reward)

        timestep, enemy_obs = self._timestep(next_smax, last_actions, reward, done, won, truncated)
        next_state = SmaxEnvState(
            smax=next_smax,
            enemy_policy=next_policy,
            enemy_obs=enemy_obs,
            last_actions=last_actions,
            avail=timestep.avail,
            done=done,
            won=won,
            truncated=truncated,
        )
        return timestep, next_state


_OPTIONS = tuple(inspect.signature(SmaxEnv.__init__).parameters)[2:]


def _factory(map_name: str):
    def make_map(**options: Any) -> SmaxEnv:
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown} for {map_name}; valid: {list(_OPTIONS)}")
        return SmaxEnv(map_name, **options)

    make_map.__name__ = f"make_{map_name}"
    return make_map


for _name in MAPS:
    register(_name, _factory(_name))
