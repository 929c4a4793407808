"""How hard is a SMAX map? Win rate of scripted ally policies against the heuristic enemy.

Three policies play our side at full sight, ``--episodes`` episodes each, all in one jitted,
vmapped program per (map, policy):

* ``random``: a uniformly random available action per agent;
* ``heuristic``: JaxMARL's heuristic policy, the one the enemy plays (shoot the closest enemy
  in range and keep shooting it; otherwise advance);
* ``focus``: focus fire: every agent that can shoot shoots the enemy with the lowest health
  among those in its range; the others move as ``heuristic``.

A map on which even focus fire never wins needs micro (retreating damaged units, pulling
enemy fire) that value-decomposition agents find only with many samples; on such maps a
learned policy's return (damage dealt) says more than its win rate early in training.

    python experiments/scripted_baselines.py [--maps 3m 8m 5m_vs_6m] [--episodes 512]
        [--out results/scripted_baselines.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
from jaxmarl.environments.smax.heuristic_enemy import (
    create_heuristic_policy,
    get_heuristic_policy_initial_state,
)

import envs
from envs.smax import N_MOVE_ACTIONS, SmaxEnv

POLICIES = ("random", "heuristic", "focus")


def focus_fire(env: SmaxEnv, env_state, avail: jax.Array, fallback: jax.Array) -> jax.Array:
    """Attack the lowest-health enemy in range, else ``fallback``: [n_agents] actions."""
    enemy_health = env_state.smax.unit_health[env.n_agents :]
    can_attack = avail[:, N_MOVE_ACTIONS:]  # [n_agents, n_enemies]
    score = jnp.where(can_attack, enemy_health[None, :], jnp.inf)
    target = jnp.argmin(score, axis=1) + N_MOVE_ACTIONS
    return jnp.where(jnp.any(can_attack, axis=1), target, fallback)


def play(env: SmaxEnv, policy: str, n_episodes: int, key: jax.Array) -> dict[str, float]:
    """Win rate, mean return and mean length of ``n_episodes`` episodes of ``policy``."""
    heuristic = create_heuristic_policy(env.inner, 0, shoot=True)
    n_agents = env.n_agents

    def episode(episode_key: jax.Array):
        reset_key, steps_key = jax.random.split(episode_key)
        timestep, env_state = env.reset(reset_key)
        policy_state = jax.tree.map(
            lambda *x: jnp.stack(x), *([get_heuristic_policy_initial_state()] * n_agents)
        )

        def body(carry, step_key):
            timestep, env_state, policy_state, episode_return, length = carry
            act_key, env_key = jax.random.split(step_key)
            scripted, policy_state = jax.vmap(heuristic)(
                jax.random.split(act_key, n_agents), policy_state, timestep.obs
            )
            if policy == "random":
                logits = jnp.where(timestep.avail, 0.0, -jnp.inf)
                actions = jax.random.categorical(act_key, logits)
            elif policy == "focus":
                actions = focus_fire(env, env_state, timestep.avail, scripted)
            else:
                actions = scripted
            next_timestep, env_state = env.step(env_key, env_state, actions)
            length = length + (~timestep.done).astype(jnp.int32)
            carry = (next_timestep, env_state, policy_state, episode_return + next_timestep.reward)
            return (*carry, length), None

        initial = (timestep, env_state, policy_state, jnp.float32(0.0), jnp.int32(0))
        keys = jax.random.split(steps_key, env.episode_limit)
        (last, _, _, episode_return, length), _ = jax.lax.scan(body, initial, keys)
        return last.won, episode_return, length

    won, returns, lengths = jax.jit(jax.vmap(episode))(jax.random.split(key, n_episodes))
    return {
        "win_rate": float(won.mean()),
        "return": float(returns.mean()),
        "episode_length": float(lengths.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", nargs="+", default=["3m", "8m", "5m_vs_6m"])
    parser.add_argument("--episodes", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("results/scripted_baselines.json"))
    args = parser.parse_args()
    report: dict[str, dict[str, dict[str, float]]] = {}
    print(f"{'map':10s} {'policy':10s} {'win rate':>8s} {'return':>7s} {'length':>7s}")
    for map_name in args.maps:
        env = envs.make(map_name)
        report[map_name] = {}
        for policy in POLICIES:
            result = play(env, policy, args.episodes, jax.random.PRNGKey(0))
            report[map_name][policy] = result
            print(
                f"{map_name:10s} {policy:10s} {result['win_rate']:8.3f} {result['return']:7.3f} "
                f"{result['episode_length']:7.1f}",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"episodes": args.episodes, "maps": report}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
