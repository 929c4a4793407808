"""The presets (the authors' PyMARL settings, pymarl2's fine-tuned ones, ours for SMAX), the
main job's settings, ``make_config`` that builds a validated ``Config`` from a preset and
overrides, and reading a saved run's config back (fields added since it was written get the
value it ran with)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from igmda_jax.core.config import PRESETS, Config, ConfigError

# The authors' PyMARL settings (REFERENCE.md section 2): one env, one update per episode.
AUTHORS = dict(
    n_envs=1,
    updates_per_iteration=1,
    buffer_size=5000,
    batch_size=32,
    optimizer="rmsprop",
    lr=5e-4,
    td_lambda=0.0,
    epsilon_finish=0.1,
    epsilon_anneal_steps=50_000,
    target_update_episodes=200,
    qplex_heads=10,
    qplex_adv_hypernet_layers=3,
    # sc2_sight0.yaml + PyMARL: last actions in the state, time-outs stored as terminal
    state_last_action=True,
    timeout_bootstrap=False,
)
# pymarl2's fine-tuned QMIX: Adam 1e-3, TD(lambda=0.6), batch 128, 8 parallel envs.
FINETUNED = dict(
    n_envs=8,
    updates_per_iteration=1,
    buffer_size=5000,
    batch_size=128,
    optimizer="adam",
    lr=1e-3,
    td_lambda=0.6,
    epsilon_finish=0.05,
    epsilon_anneal_steps=100_000,
    target_update_episodes=200,
    qplex_heads=4,
    qplex_adv_hypernet_layers=2,
)
# What learns fastest per wall-clock second on SMAX here (experiments/bench_learning.py):
# the fine-tuned preset with batch 32 (a quarter of the update cost) and a 20k-step epsilon
# anneal (SMAX battles are short; 100k steps of mostly random play delay learning).
SMAX = {**FINETUNED, "batch_size": 32, "epsilon_anneal_steps": 20_000}
PRESET_VALUES: dict[str, dict[str, Any]] = {
    "smax": SMAX,
    "finetuned": FINETUNED,
    "authors": AUTHORS,
}


# `igmda train` with no options: the paper's method on 3m with blind agents (sight range 0),
# sized to finish within 5 minutes on a 2-core CPU (README, "The main job").
MAIN_JOB: dict[str, Any] = {"alg": "qmix-da", "map": "3m", "sight_range": 0.0, "t_max": 400_000}


# Per-mixer defaults, applied over every preset (an explicit override still wins). DMIX's
# TD(lambda) would run the lambda recursion per quantile sample, with the quantile fractions
# drawn anew at every step: a convex combination of independent samples, which keeps the mean
# of the return distribution but narrows it. DMIX (DFAC) and the authors use 1-step targets.
MIXER_DEFAULTS: dict[str, dict[str, Any]] = {"dmix": {"td_lambda": 0.0}}


def make_config(preset: str = "smax", **overrides: Any) -> Config:
    """A validated Config: the preset's values, the mixer's (``MIXER_DEFAULTS``), then
    ``overrides`` (field names of Config)."""
    if preset not in PRESET_VALUES:
        raise ConfigError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown config field(s) {unknown}; valid fields: {sorted(fields)}")
    mixer = str(overrides.get("alg", Config.alg)).split("-")[0]
    values = {
        **PRESET_VALUES[preset],
        **MIXER_DEFAULTS.get(mixer, {}),
        "preset": preset,
        **overrides,
    }
    return Config(**values).validate()


# Fields whose default changed after they were added: a saved config without the field was
# written before it existed and ran with the value here, not with today's default.
# reward: added defaulting to "smax" (JaxMARL's); "smac" since SMAC's reward was found to
# learn 5m_vs_6m (README, "Benchmarks").
# own_features (added defaulting to "smac"): runs saved before it saw JaxMARL's own block;
# expert_obs_avail (added defaulting to False): earlier -da/-bc experts got the mask.
FORMER_DEFAULTS: dict[str, Any] = {
    "reward": "smax",
    "own_features": "smax",
    "expert_obs_avail": True,
}


def with_defaults(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A saved config dict (config.json, checkpoint metadata) completed with the value every
    field added since it was written ran with: the dataclass default, or the field's
    ``FORMER_DEFAULTS`` value if its default has changed since."""
    defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    return {**defaults, **FORMER_DEFAULTS, **saved}


def config_from_dict(saved: Mapping[str, Any]) -> Config:
    """The Config of a saved run (see ``with_defaults``); a field this version does not know
    raises ConfigError naming it."""
    fields = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(saved) - fields)
    if unknown:
        raise ConfigError(
            f"saved config has field(s) {unknown} unknown to this version of igmda-jax"
        )
    return Config(**with_defaults(saved))


def load_config(path: str | Path) -> Config:
    """The Config saved in a run folder's ``config.json`` (``path`` is the folder or the file).
    A file that is not a valid saved config (bad JSON, not an object, an unknown field, a value
    of the wrong type or range) raises ConfigError naming the file."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"{path} does not hold a config object")
    try:
        return config_from_dict(saved).validate()
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{path} holds a malformed config ({error})") from None
