"""Random-policy rollouts: the episode report of the default job and the env benchmark."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp

from envs.spec import Environment, step_autoreset


def random_available_actions(key: jax.Array, avail: jax.Array) -> jax.Array:
    """Uniformly random available action per agent. avail: [..., n_actions] -> [...] int32."""
    logits = jnp.where(avail, 0.0, -jnp.inf)
    return jax.random.categorical(key, logits).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class RolloutReport:
    """Counts from a random-policy rollout over ``n_envs`` x ``n_steps`` environment steps."""

    env_steps: int
    episodes: int
    wins: int
    losses: int
    timeouts: int
    mean_return: float
    seconds: float

    @property
    def steps_per_second(self) -> float:
        return self.env_steps / self.seconds

    def rates(self) -> dict[str, float]:
        n = max(self.episodes, 1)
        return {"win": self.wins / n, "loss": self.losses / n, "timeout": self.timeouts / n}


def make_random_rollout(
    env: Environment, n_envs: int, n_steps: int
) -> Callable[[jax.Array], dict[str, jax.Array]]:
    """A jitted ``key -> totals`` that runs ``n_envs`` vmapped envs for ``n_steps`` steps each.

    Episodes restart automatically (envs.step_autoreset). Totals are scalars: episodes, wins,
    timeouts (truncated), return_sum (over finished episodes).
    """
    batch_step = jax.vmap(lambda k, s, a: step_autoreset(env, k, s, a))

    def rollout(key: jax.Array) -> dict[str, jax.Array]:
        reset_key, scan_key = jax.random.split(key)
        timestep, state = jax.vmap(env.reset)(jax.random.split(reset_key, n_envs))

        def body(carry, step_key):
            timestep, state, running_return, totals = carry
            action_key, env_key = jax.random.split(step_key)
            actions = random_available_actions(action_key, timestep.avail)
            transition, timestep, state = batch_step(
                jax.random.split(env_key, n_envs), state, actions
            )
            running_return = running_return + transition.reward
            done = transition.done
            totals = {
                "episodes": totals["episodes"] + done.sum(),
                "wins": totals["wins"] + (done & transition.won).sum(),
                "timeouts": totals["timeouts"] + (done & transition.truncated).sum(),
                "return_sum": totals["return_sum"] + jnp.where(done, running_return, 0.0).sum(),
            }
            running_return = jnp.where(done, 0.0, running_return)
            return (timestep, state, running_return, totals), None

        zeros = {
            "episodes": jnp.int32(0),
            "wins": jnp.int32(0),
            "timeouts": jnp.int32(0),
            "return_sum": jnp.float32(0.0),
        }
        carry = (timestep, state, jnp.zeros(n_envs), zeros)
        (_, _, _, totals), _ = jax.lax.scan(body, carry, jax.random.split(scan_key, n_steps))
        return totals

    return jax.jit(rollout)


def random_policy_report(
    env: Environment, n_envs: int, n_steps: int, seed: int = 0
) -> tuple[RolloutReport, float]:
    """Compile, then time one random rollout. Returns (report, compile_seconds)."""
    rollout = make_random_rollout(env, n_envs, n_steps)
    key = jax.random.PRNGKey(seed)
    start = time.perf_counter()
    jax.block_until_ready(rollout(key))
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    totals = jax.block_until_ready(rollout(jax.random.fold_in(key, 1)))
    seconds = time.perf_counter() - start
    episodes = int(totals["episodes"])
    wins, timeouts = int(totals["wins"]), int(totals["timeouts"])
    report = RolloutReport(
        env_steps=n_envs * n_steps,
        episodes=episodes,
        wins=wins,
        losses=episodes - wins - timeouts,
        timeouts=timeouts,
        mean_return=float(totals["return_sum"]) / max(episodes, 1),
        seconds=seconds,
    )
    return report, compile_seconds
