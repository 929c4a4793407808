"""The ``igmda`` command: one table of subcommands (``COMMANDS``), each with ``--help``; bad input is one line on stderr and exit 2 (``UsageError``)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import tyro

from igmda_jax.train_command import UsageError, integral_floats, train_command


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


IMITATE_HELP = """usage: igmda imitate --expert RUN_DIR --sight-range S [S ...] --t-max N [--out DIR]
                        [--value-episodes N] [--final-eval-episodes N] [--no-progress]
                        [Config overrides]
       igmda imitate --report OUT [OUT ...]

Freeze the agent and mixer of a trained run (RUN_DIR, made by `igmda train`) and train fresh
learners at each sight range S ('none' = each unit type's SMAX sight) by imitation only
(<mixer>-da, TD weight 0). Writes OUT/sight_<S>/ run folders, OUT/summary.json|csv,
OUT/values.json|png (per-action value distributions, the paper's Fig. 3b), OUT/curves.png and
OUT/RESULTS.md. `--report OUT ...` only redraws summary.csv, RESULTS.md and both figures of each
OUT from its JSON files and OUT/sight_<S>/metrics.jsonl: no training, no checkpoint needed.

  --expert RUN_DIR       the expert run folder (config.json + checkpoints/)
  --sight-range S ...    learner sight ranges, e.g. 0 3 none
  --t-max N              env steps per sight range and seed (2e5 accepted)
  --out DIR              default: RUN_DIR/imitate
  --value-episodes N     greedy episodes per seed for the value distributions (default 32)
  --final-eval-episodes N
                         greedy episodes per seed of the final evaluation of learners and
                         expert, the win rates of the summary (default 320, as a sweep's)
  --no-progress          no progress bar
Any other Config field overrides the expert's config for the learners, e.g. --seeds 2 (the
expert's first 2 seeds; learner seed k imitates expert seed k), --seed, --test-interval,
--test-nepisode, --lr, --epsilon-start, --epsilon-anneal-steps, --batch-size, --n-envs,
--imitation-loss ce, --alg <mixer>-bc (behaviour cloning). The map, the network sizes and input
flags are the expert's: changing them is refused."""


def imitate_command(argv: list[str]) -> None:
    """igmda imitate: imitation of a frozen expert at several sight ranges (see IMITATE_HELP)."""
    import argparse

    if "-h" in argv or "--help" in argv:
        print(IMITATE_HELP)
        raise SystemExit(0)
    if not argv:
        print(IMITATE_HELP, file=sys.stderr)
        raise SystemExit(2)
    if argv[0] == "--report":
        imitation_report_command(argv[1:])
        return
    from igmda_jax.core.config import Config, ConfigError
    from igmda_jax.core.presets import load_config

    head = argparse.ArgumentParser(prog="igmda imitate", add_help=False)
    head.add_argument("--expert", required=True)
    head.add_argument("--sight-range", nargs="+", required=True, dest="sight_ranges")
    head.add_argument("--t-max", required=True)
    head.add_argument("--out", default=None)
    head.add_argument("--value-episodes", type=int, default=32)
    head.add_argument("--final-eval-episodes", type=int, default=320)
    head.add_argument("--no-progress", action="store_true")
    known, rest = head.parse_known_args(argv)
    try:
        t_max = float(known.t_max)
    except ValueError:
        raise UsageError(f"igmda imitate: --t-max must be a number, got {known.t_max!r}") from None
    if not t_max.is_integer() or t_max < 1:
        raise UsageError(f"igmda imitate: --t-max must be a positive integer, got {known.t_max}")
    from igmda_jax.persist.stop_signals import RunStopped
    from igmda_jax.tools.imitate import ImitationError, imitate
    from igmda_jax.tools.imitation_report import format_table

    expert_config_path = Path(known.expert) / "config.json"
    if not Path(known.expert).is_dir():
        raise UsageError(f"igmda imitate: expert run folder {known.expert} does not exist")
    if not expert_config_path.exists():
        raise UsageError(
            f"igmda imitate: {known.expert} is not a run folder (no config.json); pass a folder "
            "made by `igmda train`"
        )
    try:
        default = load_config(expert_config_path)
    except ConfigError as error:
        raise UsageError(f"igmda imitate: cannot read {expert_config_path}: {error}") from None
    parsed = tyro.cli(
        Config,
        default=default,
        args=integral_floats(rest),
        prog="igmda imitate",
        description=IMITATE_HELP,
    )
    overrides = {
        field.name: getattr(parsed, field.name)
        for field in dataclasses.fields(Config)
        if getattr(parsed, field.name) != getattr(default, field.name)
    }
    out_dir = known.out if known.out is not None else str(Path(known.expert) / "imitate")
    try:
        summary = imitate(
            known.expert,
            known.sight_ranges,
            out_dir,
            t_max=int(t_max),
            overrides=overrides,
            value_episodes=known.value_episodes,
            final_eval_episodes=known.final_eval_episodes,
            progress=not known.no_progress,
        )
    except (ImitationError, ConfigError, FileNotFoundError, FileExistsError) as error:
        raise UsageError(f"igmda imitate: {error}") from None
    except RunStopped as stopped:
        print(f"igmda imitate: {stopped}; rerun the same command to continue", file=sys.stderr)
        raise SystemExit(stopped.exit_code) from None
    print(format_table(summary))
    print(f"summary: {Path(out_dir) / 'summary.json'} (csv beside it), values.png, curves.png")


def imitation_report_command(folders: list[str]) -> None:
    """igmda imitate --report OUT [OUT ...]: redraw imitation output folders from their files."""
    from igmda_jax.tools.imitation_report import ImitationReportError, report_folder, sight_label

    if not folders or any(folder.startswith("-") for folder in folders):
        raise UsageError(
            "igmda imitate --report takes imitation output folders only: OUT [OUT ...]"
        )
    for folder in folders:
        try:
            summary = report_folder(folder)
        except ImitationReportError as error:
            raise UsageError(f"igmda imitate --report: {error}") from None
        sights = ", ".join(sight_label(s["sight_range"]) for s in summary["sight_ranges"])
        print(f"{folder}: summary.csv, RESULTS.md, values.png, curves.png (sights {sights})")


def sweep_command(argv: list[str]) -> None:
    """igmda sweep FILE.yaml [--jobs N] [--dry-run] [--runs-dir D] [--results-dir D]
    [--only CELL_GLOB]: a resumable grid of runs (igmda_jax/sweeps/spec.py); a bad file exits 2."""
    from igmda_jax.sweeps.cli import main as sweep_main

    code = sweep_main(argv)
    if code:
        raise SystemExit(code)


def eval_command(
    run_dir: Annotated[tyro.conf.Positional[str], tyro.conf.arg(metavar="RUN_DIR")],
    episodes: int | None = None,
    actor: str = "deployed",
    backend: str | None = None,
    save_replay: str | None = None,
) -> None:
    """Greedy win rate of a saved run, per seed and aggregated (actor: deployed | expert).
    --backend: the run's own (the default; a check); --save-replay DIR: StarCraft II replays
    of the test episodes (runs trained with --backend smac)."""
    from envs.smac import SmacNotAvailableError
    from igmda_jax.core.config import ConfigError
    from igmda_jax.tools.evaluate import evaluate_run

    try:
        result = evaluate_run(
            run_dir, episodes=episodes, actor=actor, backend=backend, save_replay=save_replay
        )
    except (ValueError, FileNotFoundError, SmacNotAvailableError, ConfigError) as error:
        raise UsageError(f"igmda eval: {error}") from None
    for seed, win, ret in zip(
        result["seeds"], result["win_rate_per_seed"], result["return_per_seed"], strict=True
    ):
        print(f"seed {seed}: win rate {win:.3f}  return {ret:.3f}")
    print(
        f"{result['alg']} on {result['map']} at t_env {result['t_env']}: mean win rate "
        f"{result['win_rate_mean']:.3f}, median {result['win_rate_median']:.3f} "
        f"over {len(result['seeds'])} seed(s) x {result['episodes']} episodes"
    )


def render_command(
    run_dir: Annotated[tyro.conf.Positional[str], tyro.conf.arg(metavar="RUN_DIR")],
    out: str,
    seed: int | None = None,
    episodes: int = 1,
    actor: str = "deployed",
    fps: float = 8.0,
) -> None:
    """Animated GIF of greedy episodes of a saved SMAX run: units, health, attacks, the agents'
    sight and, for -da/-bc, where learner and expert choose differently (docs/render.md).
    --out FILE.gif; --seed: which of the run's seeds (default its first); --actor: deployed
    (= learner; a plain run's agent) | learner | expert (-da/-bc)."""
    from igmda_jax.core.config import ConfigError
    from igmda_jax.persist.checkpoint import CheckpointUnreadableError
    from igmda_jax.tools.render import render_run

    try:
        result = render_run(run_dir, out, episodes=episodes, actor=actor, seed=seed, fps=fps)
    except (ValueError, FileNotFoundError, ConfigError, CheckpointUnreadableError) as error:
        raise UsageError(f"igmda render: {error}") from None
    outcomes = ", ".join(
        f"{length} steps {'won' if won else 'not won'}"
        for length, won in zip(result["lengths"], result["won"], strict=True)
    )
    print(f"{result['out']}: {result['frames']} frames; episodes: {outcomes}")


def report_command(argv: list[str]) -> None:
    """igmda report DIR [DIR ...] --out OUTDIR [--reps N] [--title T]: Table 1 and Fig. 4 with
    bootstrap intervals from run folders (igmda_jax/reports/report.py); bad input exits 2."""
    from igmda_jax.reports.report import main as report_main

    code = report_main(argv)
    if code:
        raise SystemExit(code)


def bench_command(argv: list[str]) -> None:
    """igmda bench [--quick] [--out FILE] [--readme README.md]: env and training throughput,
    -da cost, seed scaling, compile times and peak memory (igmda_jax/tools/bench.py)."""
    from igmda_jax.tools.bench import main as bench_main

    code = bench_main(argv)
    if code:
        raise SystemExit(code)


def tyro_command(function: Callable[..., None]) -> Callable[[list[str]], None]:
    """A subcommand whose options tyro reads from ``function``'s signature."""

    def command(argv: list[str]) -> None:
        tyro.cli(function, args=argv, prog=f"igmda {function.__name__.removesuffix('_command')}")

    return command


# name -> (what runs it with the remaining arguments, the one line of `igmda --help`)
COMMANDS: dict[str, tuple[Callable[[list[str]], None], str]] = {
    "train": (train_command, "train one run: a preset, an algorithm, a map, seeds and a budget"),
    "imitate": (imitate_command, "imitation of a frozen expert at several sight ranges"),
    "eval": (tyro_command(eval_command), "greedy win rate of a saved run, per seed and mean"),
    "render": (tyro_command(render_command), "animated GIF of greedy episodes of a SMAX run"),
    "sweep": (sweep_command, "a resumable grid of train runs from a YAML file (--dry-run: cost)"),
    "report": (report_command, "Table 1 and curves with bootstrap intervals from run folders"),
    "bench": (bench_command, "how fast it runs here: env, training, -da cost, seeds"),
    "envs": (tyro_command(envs_command), "every map: agents, enemies, actions, obs sizes"),
    "random": (tyro_command(random_command), "a random policy's win rate, return and steps/s"),
}


def help_text() -> str:
    """``igmda --help``: every subcommand with its one line."""
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(
        [
            "usage: igmda COMMAND [OPTIONS]   (`igmda COMMAND --help` for a command's options)",
            "",
            "commands:",
            *lines,
        ]
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``igmda`` console script: bad input ends in one line on stderr and
    exit status 2 (:class:`UsageError`)."""
    try:
        _dispatch(sys.argv[1:] if argv is None else argv)
    except UsageError as error:
        print(error.message, file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except BrokenPipeError:  # `igmda envs | head`: the reader left; not an error of ours
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (flushed at exit, never written)
        raise SystemExit(141) from None


def _dispatch(args: list[str]) -> None:
    """Run the subcommand named by ``args[0]`` with the rest of ``args``."""
    if not args or args[0] in ("-h", "--help"):
        print(help_text())
        if not args:
            raise SystemExit(2)
        return
    if args[0] not in COMMANDS:
        raise UsageError(f"igmda: unknown command {args[0]!r}; commands: {', '.join(COMMANDS)}")
    handler, _ = COMMANDS[args[0]]
    handler(args[1:])


if __name__ == "__main__":
    main()
