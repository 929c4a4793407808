"""Real StarCraft II behind the worker pool of envs/pool.py (``WorkerPool("smac", ...)``).

The worker env wraps ``smac.env.StarCraft2Env(map_name=...)`` from the SMAC repository (not the
PyPI package named ``smac``; see :func:`require_smac`). :mod:`envs.pool` imports this module
only when the "smac" backend is used; this module imports none of the pool's.

Sight. Agents see ``sight_range`` (``env_options["sight_range"]``; None keeps SMAC's 9): the
worker shadows ``unit_sight_range`` on its StarCraft2Env instance, which ``get_obs_agent``
consults for visibility (``distance < sight``) and for scaling the relative features. Sight 0
therefore hides every other unit (nothing is closer than 0, and nothing is divided by 0); it
equals the paper authors' 1e-10 except for units at exactly the same spot. For
``0 < sight < 9`` SMAC scales the visible units' relative features by the reduced sight (our SMAX
maps keep a fixed scale). ``expert_view="full_obs"`` recomputes the observation with SMAC's own
sight (the override switched off); ``"state"`` is ``get_state()`` plus the agent's one-hot id.
Attack availability is SMAC's (shoot range, whatever the sight), as in the authors' code.
``obs_instead_of_state=True`` is refused when ``sight_range`` is set: SMAC's ``get_state`` then
returns the agents' concatenated observations, which the sight limits too (at sight 0 the
"global" state would hide every other unit, and so would ``expert_view="state"``).

Options. ``env_options`` other than ours go to ``StarCraft2Env``, except ``seed`` and
``map_name``, which are refused on the host: the pool's ``seed`` argument seeds each worker
process's game (SMAC passes it to StarCraft II when it launches the game), and the map is the
pool's ``map_name`` argument. SMAC's ``replay_dir`` / ``replay_prefix`` do go through; each
worker appends ``_worker<i>`` to the prefix (default the map name), because pysc2 names a replay
``<prefix>_<UTC time to the second>`` and workers saving in the same second would overwrite
each other's. :meth:`WorkerPool.save_replay` makes every worker save one.

Time limits. SMAC ends an episode when the battle is decided, or when its step count reaches
``episode_limit``, and reports the latter as ``info["episode_limit"] = True`` only when the env
flag ``continuing_episode`` is set; the flag changes nothing else. The worker therefore always
creates the env with ``continuing_episode=True`` and sets ``truncated`` from that key (a battle
decided on the last step is a real ending, as SMAC checks the battle first).
``env_options["episode_limit"]`` may shorten SMAC's per-map limit. ``won`` is
``info["battle_won"]``.

Episodes. SMAC launches StarCraft II in ``reset`` while its episode counter
``_episode_count`` is 0 and otherwise restarts the battle in the running game; the counter grows
only when ``step`` ends an episode. Its reward normaliser ``max_reward`` gets the enemies' health
and shields added while the counter is 0 (``init_units``). A worker whose first episode was
abandoned or lost its connection would therefore launch a second game and count the enemies
twice (3m: max reward 365 -> 500, every later reward x0.73). The worker prevents it: once a
reset has succeeded, it sets the counter to 1 before any later reset while it is still 0, so
SMAC restarts instead of launching. Episode seeds (``reset(seed)``) are ignored: StarCraft II
seeds a game once, when it is launched.

Faults. An episode SMAC gives up on (it lost its connection to the game and restarted
StarCraft II, returning ``terminated`` with an empty ``info``) raises
:class:`~envs.pool.EpisodeFault` in the worker: the pool drops it without replacing the process.
A connection lost during ``reset`` is silent in SMAC (it restarts the game but keeps the old
unit lists, so the next step would find every unit dead: a draw); the worker notices it from
``force_restarts`` and raises EpisodeFault, and the pool resets that worker again. If that
happens in the worker's first reset, when SMAC may have counted the enemies into
``max_reward`` twice or not at all, the worker raises instead and the pool replaces the process.
StarCraft II runs in the worker's process group, which the pool kills with the worker.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from envs.pool_types import EpisodeFault, Row, WorkerSpec
from envs.spec import (
    EnvInfo,
    validate_expert_view,
    validate_sight_range,
)

__all__ = [
    "SMAC_INSTALL_HELP",
    "SmacNotAvailableError",
    "SmacWorkerEnv",
    "check_smac_backend",
    "require_smac",
]

logger = logging.getLogger(__name__)

SMAC_INSTALL_HELP = """\
To use backend="smac" (real StarCraft II):
  1. Install SMAC from its repository:  pip install git+https://github.com/oxwhirl/smac.git
     (NOT `pip install smac`: the PyPI package named `smac` is SMAC3, an unrelated
     hyper-parameter optimiser; remove it first with `pip uninstall smac`).
  2. Install StarCraft II (on Linux Blizzard's headless build, e.g. 4.10, unzipped into
     ~/StarCraftII) and SMAC's maps (SMAC_Maps.zip from the SMAC repository, unzipped into
     $SC2PATH/Maps/).
  3. export SC2PATH=/path/to/StarCraftII  if the game is not in ~/StarCraftII.
The JAX maps (backend="smax", or envs.make) need none of this."""


class SmacNotAvailableError(ImportError):
    """Real SMAC cannot be used here; the message says why and how to install it."""


def _sc2_path() -> str:
    """Where pysc2 looks for StarCraft II on Linux: $SC2PATH, else ~/StarCraftII."""
    return os.path.expanduser(os.environ.get("SC2PATH", "~/StarCraftII"))


def require_smac(map_name: str | None = None) -> None:
    """Raise SmacNotAvailableError (one message: reason + install steps) unless real SMAC and
    StarCraft II are usable. Detects a missing package, the unrelated PyPI ``smac`` (no
    ``smac.env``), a broken SMAC install, and a missing StarCraft II directory."""

    def fail(reason: str) -> SmacNotAvailableError:
        return SmacNotAvailableError(
            f"Real SMAC (StarCraft II) is not available: {reason}\n{SMAC_INSTALL_HELP}"
        )

    try:
        top = importlib.util.find_spec("smac")
    except (ImportError, ValueError):
        top = None
    if top is None:
        raise fail("the Python package `smac` is not installed.")
    try:
        env_spec = importlib.util.find_spec("smac.env")
    except Exception:  # importing the parent package failed or it is not a package
        env_spec = None
    if env_spec is None:
        where = top.origin or ", ".join(top.submodule_search_locations or [])
        raise fail(
            f"the installed `smac` ({where}) has no `smac.env`; it is probably the PyPI package "
            "`smac` (SMAC3, a hyper-parameter optimiser), not the StarCraft Multi-Agent Challenge."
        )
    try:
        module = importlib.import_module("smac.env")
        module.StarCraft2Env  # noqa: B018
    except Exception as err:  # a broken SMAC (e.g. pysc2 missing) fails in many ways
        raise fail(f"`import smac.env` failed ({type(err).__name__}: {err}).") from err
    sc2 = _sc2_path()
    if not os.path.isdir(sc2):
        raise fail(f"StarCraft II was not found at {sc2} (SC2PATH, default ~/StarCraftII).")
    if map_name is not None:
        map_file = os.path.join(sc2, "Maps", "SMAC_Maps", f"{map_name}.SC2Map")
        if not os.path.isfile(map_file):
            logger.warning("SMAC map file %s not found; StarCraft II may fail to load it", map_file)


class _SightOverride:
    """Stands in for ``StarCraft2Env.unit_sight_range`` on one instance: ``value`` if set,
    else SMAC's own answer."""

    def __init__(self, default: Callable[[int], float], value: float | None) -> None:
        self.default = default
        self.value = value

    def __call__(self, agent_id: int) -> float:
        return self.default(agent_id) if self.value is None else self.value


def check_smac_backend(map_name: str, env_options: Mapping[str, Any]) -> None:
    """Host-side checks before a "smac" pool starts: the options, then :func:`require_smac`."""
    _check_smac_options(dict(env_options))
    require_smac(map_name)


def _check_smac_options(options: dict[str, Any]) -> tuple[float | None, str, int | None]:
    """Pop and check our options from SMAC env_options (the rest goes to StarCraft2Env):
    returns (sight_range, expert_view, episode_limit); forces continuing_episode=True. Refuses
    ``seed``, ``map_name``, and ``obs_instead_of_state`` with a sight range (module doc)."""
    if "seed" in options:
        raise ValueError(
            "env_options['seed'] is not allowed: use WorkerPool's seed argument "
            "(each worker process gets its own game seed from it)"
        )
    if "map_name" in options:
        raise ValueError("env_options['map_name'] is not allowed: pass the map as map_name")
    sight = validate_sight_range(options.pop("sight_range", None))
    if sight is not None and options.get("obs_instead_of_state", False):
        raise ValueError(
            "obs_instead_of_state=True with sight_range makes SMAC's state the agents' "
            "concatenated sight-limited observations (at sight 0 it hides every other unit); "
            "leave it False"
        )
    expert_view = validate_expert_view(options.pop("expert_view", "full_obs"))
    limit = options.pop("episode_limit", None)
    if limit is not None and (isinstance(limit, bool) or int(limit) != limit or limit < 1):
        raise ValueError(f"episode_limit must be a positive integer, got {limit!r}")
    if options.get("continuing_episode", True) is not True:
        raise ValueError(
            "continuing_episode must stay True: it only makes SMAC report time-limit endings "
            "(info['episode_limit']), which the pool needs to set `truncated`"
        )
    options["continuing_episode"] = True
    return sight, expert_view, None if limit is None else int(limit)


class SmacWorkerEnv:
    """A real ``smac.env.StarCraft2Env`` behind the worker protocol (runs inside a worker)."""

    def __init__(self, spec: WorkerSpec) -> None:
        options = dict(spec.env_options)
        sight, expert_view, limit = _check_smac_options(options)
        options["seed"] = spec.seed

        from smac.env import StarCraft2Env

        _parse_absl_flags()
        self.env = env = StarCraft2Env(map_name=spec.map_name, **options)
        if limit is not None:
            env.episode_limit = limit
        # pysc2 names replays <prefix>_<UTC second>: one prefix per worker (module doc)
        env.replay_prefix = f"{options.get('replay_prefix') or spec.map_name}_worker{spec.index}"
        self._launched = False  # a reset has succeeded: SMAC has launched the game
        self.sight = _SightOverride(type(env).unit_sight_range.__get__(env), sight)
        if sight is not None:
            env.unit_sight_range = self.sight  # instance attribute shadows the method
        self.expert_view = expert_view
        env_info = env.get_env_info()
        n_agents = int(env_info["n_agents"])
        state_dim = int(env_info["state_shape"])
        obs_dim = int(env_info["obs_shape"])
        self.info = EnvInfo(
            map_name=spec.map_name,
            n_agents=n_agents,
            n_enemies=int(getattr(env, "n_enemies", 0)),
            n_actions=int(env_info["n_actions"]),
            obs_dim=obs_dim,
            expert_dim=obs_dim if expert_view == "full_obs" else state_dim + n_agents,
            state_dim=state_dim,
            episode_limit=int(env_info["episode_limit"]),
            sight_range=sight,
            expert_view=expert_view,
        )
        self._ids = np.eye(n_agents, dtype=np.float32)

    def _row(self, reward: float, done: bool, won: bool, truncated: bool) -> Row:
        env = self.env
        obs = np.asarray(env.get_obs(), np.float32).reshape(self.info.n_agents, -1)
        state = np.asarray(env.get_state(), np.float32).reshape(-1)
        if self.expert_view == "state":
            tiled = np.broadcast_to(state, (self.info.n_agents, state.shape[0]))
            expert = np.concatenate([tiled, self._ids], axis=1)
        elif self.sight.value is None:
            expert = obs
        else:
            saved, self.sight.value = self.sight.value, None
            try:
                expert = np.asarray(env.get_obs(), np.float32).reshape(self.info.n_agents, -1)
            finally:
                self.sight.value = saved
        avail = np.asarray(env.get_avail_actions(), dtype=bool).reshape(self.info.n_agents, -1)
        flags = (np.float32(reward), np.bool_(done), np.bool_(won), np.bool_(truncated))
        return (obs, expert, state, avail, *(np.asarray(f) for f in flags))

    def reset(self, seed: int | None = None) -> Row:
        """Start an episode (``seed`` is ignored: StarCraft II episodes cannot be reseeded).
        Raises EpisodeFault when SMAC lost its connection to the game during the reset (or
        RuntimeError, to replace the process, if that was the first reset; module doc)."""
        del seed
        env = self.env
        if self._launched and env._episode_count == 0:
            env._episode_count = 1  # restart the battle; do not launch a second game
        restarts = env.force_restarts
        env.reset()
        if env.force_restarts != restarts:
            if not self._launched:
                raise RuntimeError(
                    "SMAC lost its connection to StarCraft II during its first reset "
                    "(its reward scale may be wrong): replace the worker"
                )
            raise EpisodeFault(
                "SMAC lost its connection to StarCraft II during reset and restarted the game "
                "(its unit lists are stale)"
            )
        self._launched = True
        return self._row(0.0, False, False, False)

    def step(self, actions: np.ndarray) -> Row:
        reward, terminated, info = self.env.step([int(a) for a in actions])
        if terminated and "battle_won" not in info:
            raise EpisodeFault(
                "SMAC lost its connection to StarCraft II and restarted the game "
                "(step returned terminated with an empty info)"
            )
        won = bool(info.get("battle_won", False))
        truncated = bool(terminated and info.get("episode_limit", False))
        return self._row(float(reward), bool(terminated), won, truncated)

    def save_replay(self) -> None:
        """SMAC's save_replay: a replay of this worker's game so far (module doc, "Options")."""
        if not self._launched:
            raise RuntimeError("no StarCraft II game to save yet: reset first")
        self.env.save_replay()

    def close(self) -> None:
        self.env.close()


def _parse_absl_flags() -> None:
    """pysc2 reads absl flags; parse them once with no arguments (the worker's argv is not
    ours), otherwise pysc2 raises UnparsedFlagAccessError when it starts the game."""
    try:
        from absl import flags

        if not flags.FLAGS.is_parsed():
            flags.FLAGS(["igmda-smac-worker"], known_only=True)
    except Exception:  # absl missing or already handled: pysc2 will say what is wrong
        pass
