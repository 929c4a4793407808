"""Run configuration: one frozen dataclass, presets as data, algorithm names parsed once.

Algorithm names are ``vdn qmix qplex dmix``, each also with ``-da`` (IGM-DA: experts trained
by TD through the mixer, learners imitate them, the learner acts, DAgger) and ``-bc``
(behaviour cloning: the expert acts). A preset fixes hyperparameters; every field can be
overridden from the command line (``igmda train --lr 1e-3 ...``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

MIXERS = ("vdn", "qmix", "qplex", "dmix")
VARIANTS = ("", "-da", "-bc")
ALGORITHMS = tuple(m + v for m in MIXERS for v in VARIANTS)
PRESETS = ("smax", "finetuned", "authors")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the valid choices."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a run. Fields group as: problem, budget, data, optimisation,
    exploration, networks, IGM-DA, evaluation and logging."""

    # problem
    alg: str = "qmix"
    map: str = "3m"
    sight_range: float | None = None
    expert_view: Literal["full_obs", "state"] = "full_obs"
    episode_limit: int | None = None
    preset: str = "smax"
    # budget and seeds
    t_max: int = 2_000_000
    seeds: int = 1
    seed: int = 0
    # data: n_envs parallel episodes per iteration, each followed by updates_per_iteration
    n_envs: int = 8
    updates_per_iteration: int = 1
    buffer_size: int = 5000
    batch_size: int = 128
    # optimisation
    optimizer: Literal["rmsprop", "adam"] = "adam"
    lr: float = 1e-3
    rms_alpha: float = 0.99
    optim_eps: float = 1e-5
    grad_clip: float = 10.0
    gamma: float = 0.99
    td_lambda: float = 0.6  # 0 gives 1-step targets
    double_q: bool = True
    target_update_episodes: int = 200
    # exploration
    epsilon_start: float = 1.0
    epsilon_finish: float = 0.05
    epsilon_anneal_steps: int = 100_000
    # networks
    hidden_dim: int = 64
    mixer_embed: int = 32
    hypernet_embed: int = 64
    hypernet_layers: int = 2
    qplex_heads: int = 4
    qplex_adv_hypernet_layers: int = 2
    n_quantiles: int = 8
    n_target_quantiles: int = 8
    n_act_quantiles: int = 32
    obs_last_action: bool = True
    obs_agent_id: bool = True
    obs_avail: bool = True
    # IGM-DA / BC
    imitation_loss: Literal["mse", "ce"] = "mse"
    imitation_weight: float = 1.0
    # DMIX-DA: regress every sampled quantile of the IQN learner to the expert's one-hot (the
    # authors' code) or, with False, only the quantiles' mean
    imitate_quantiles: bool = True
    # weight of the TD loss in the total loss; 0 freezes agent/expert and mixer (igmda imitate)
    td_weight: float = 1.0
    expert_target_action: Literal["auto", "learner", "expert"] = "auto"
    beta_start: float = 0.0
    beta_anneal_steps: int = 0
    # evaluation, logging, checkpoints
    test_interval: int = 10_000
    test_nepisode: int = 32
    iterations_per_call: int = 16
    save_interval: int = 100_000
    keep_checkpoints: int = 2
    tensorboard: bool = False

    # ------------------------------------------------------------------ derived
    @property
    def mixer(self) -> str:
        """The mixer part of ``alg``: vdn, qmix, qplex or dmix."""
        return self.alg.split("-")[0]

    @property
    def variant(self) -> str:
        """'' (plain), 'da' or 'bc'."""
        return self.alg.split("-")[1] if "-" in self.alg else ""

    @property
    def uses_expert(self) -> bool:
        """Two networks per run (expert + learner) for -da and -bc."""
        return self.variant in ("da", "bc")

    @property
    def target_action_from(self) -> str:
        """Which network picks the double-Q next action: 'learner' for -da, else 'expert'."""
        if self.expert_target_action != "auto":
            return self.expert_target_action
        return "learner" if self.variant == "da" else "expert"

    def validate(self) -> Config:
        """Raise ConfigError naming the first bad field; return self."""
        if self.alg not in ALGORITHMS:
            raise ConfigError(f"unknown algorithm {self.alg!r}; valid: {', '.join(ALGORITHMS)}")
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; valid: {', '.join(PRESETS)}")
        positive = (
            "t_max seeds n_envs buffer_size batch_size target_update_episodes hidden_dim "
            "test_nepisode iterations_per_call n_quantiles n_target_quantiles n_act_quantiles "
            "keep_checkpoints test_interval save_interval"
        )
        for name in positive.split():
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size > self.buffer_size:
            raise ConfigError(
                f"batch_size ({self.batch_size}) must not exceed buffer_size ({self.buffer_size})"
            )
        if not 0.0 <= self.td_lambda <= 1.0:
            raise ConfigError(f"td_lambda must be in [0, 1], got {self.td_lambda}")
        if not 0.0 < self.gamma <= 1.0:
            raise ConfigError(f"gamma must be in (0, 1], got {self.gamma}")
        if self.optimizer not in ("rmsprop", "adam"):
            raise ConfigError(f"optimizer must be rmsprop or adam, got {self.optimizer!r}")
        if self.imitation_loss not in ("mse", "ce"):
            raise ConfigError(f"imitation_loss must be mse or ce, got {self.imitation_loss!r}")
        if self.expert_target_action not in ("auto", "learner", "expert"):
            raise ConfigError(
                f"expert_target_action must be auto, learner or expert, got {self.expert_target_action!r}"
            )
        if not self.td_weight >= 0.0:  # also rejects NaN
            raise ConfigError(f"td_weight must be >= 0, got {self.td_weight}")
        if self.td_weight == 0.0 and not self.uses_expert:
            raise ConfigError(f"td_weight 0 trains nothing for {self.alg} (no learner to imitate)")
        if not 0.0 <= self.beta_start <= 1.0:
            raise ConfigError(f"beta_start must be in [0, 1], got {self.beta_start}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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


def make_config(preset: str = "smax", **overrides: Any) -> Config:
    """A validated Config: the preset's values, then ``overrides`` (field names of Config)."""
    if preset not in PRESET_VALUES:
        raise ConfigError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown config field(s) {unknown}; valid fields: {sorted(fields)}")
    values = {**PRESET_VALUES[preset], "preset": preset, **overrides}
    return Config(**values).validate()


def with_defaults(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A saved config dict (config.json, checkpoint metadata) completed with the dataclass
    default of every field added since it was written, which is the behaviour it ran with."""
    defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    return {**defaults, **saved}


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
    """The Config saved in a run folder's ``config.json`` (``path`` is the folder or the file)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    return config_from_dict(json.loads(path.read_text()))
