"""The ``igmda`` command line: ``igmda envs | random | ...`` (see README)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import tyro


def envs_command(
    json_output: Annotated[bool, tyro.conf.arg(name="json")] = False,
) -> None:
    """List every map: agents, enemies, actions, obs/expert/state sizes and episode limits."""
    import envs

    rows = []
    for name in envs.list_maps():
        env = envs.make(name)
        info = env.info
        composition = env.spec.composition() if hasattr(env, "spec") else "toy"
        rows.append(
            {
                "map": name,
                "agents": info.n_agents,
                "enemies": info.n_enemies,
                "actions": info.n_actions,
                "obs": info.obs_dim,
                "expert_full_obs": info.expert_dim,
                "expert_state": envs.make(name, expert_view="state").info.expert_dim,
                "state": info.state_dim,
                "limit": info.episode_limit,
                "units": composition,
            }
        )
    if json_output:
        print(json.dumps(rows, indent=1))
        return
    header = f"{'map':<16}{'agents':>7}{'enemies':>8}{'actions':>8}{'obs':>6}{'expert(full/state)':>20}{'state':>7}{'limit':>7}  units"
    print(header)
    for row in rows:
        expert = f"{row['expert_full_obs']}/{row['expert_state']}"
        print(
            f"{row['map']:<16}{row['agents']:>7}{row['enemies']:>8}{row['actions']:>8}{row['obs']:>6}"
            f"{expert:>20}{row['state']:>7}{row['limit']:>7}  {row['units']}"
        )


def random_command(
    map_name: Annotated[str, tyro.conf.arg(name="map")] = "3m",
    sight_range: float | None = 0.0,
    n_envs: int = 64,
    n_steps: int = 2000,
    seed: int = 0,
) -> None:
    """Random-policy episode report: win/loss/timeout rates, mean return and env steps/s."""
    import envs
    from envs.rollout import random_policy_report

    env = envs.make(map_name, sight_range=sight_range)
    print(f"random policy on {map_name} (sight {sight_range}), {n_envs} envs x {n_steps} steps ...")
    report, compile_seconds = random_policy_report(env, n_envs, n_steps, seed)
    rates = report.rates()
    print(
        f"episodes {report.episodes}  win {rates['win']:.1%}  loss {rates['loss']:.1%}  "
        f"timeout {rates['timeout']:.1%}  mean return {report.mean_return:.3f}\n"
        f"{report.steps_per_second:,.0f} env steps/s (compile {compile_seconds:.1f} s)"
    )


COMMANDS = {
    "envs": envs_command,
    "random": random_command,
}


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``igmda`` console script."""
    tyro.extras.subcommand_cli_from_dict(COMMANDS, args=sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
