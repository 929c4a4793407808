"""Run configuration: one frozen dataclass, validated, with algorithm names parsed once (the
presets, ``make_config`` and reading saved configs: ``core.presets``).

Algorithm names are ``vdn qmix qplex dmix``, each also with ``-da`` (IGM-DA: experts trained
by TD through the mixer, learners imitate them, the learner acts, DAgger) and ``-bc``
(behaviour cloning: the expert acts). A preset fixes hyperparameters; every field can be
overridden from the command line (``igmda train --lr 1e-3 ...``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

MIXERS = ("vdn", "qmix", "qplex", "dmix")
VARIANTS = ("", "-da", "-bc")
ALGORITHMS = tuple(m + v for m in MIXERS for v in VARIANTS)
PRESETS = ("smax", "finetuned", "authors")
BACKENDS = ("fused", "smax-workers", "smac")
REWARDS = ("smac", "smax", "smac_no_kill")  # envs.smax.REWARDS, without importing JaxMARL here
OWN_FEATURES = ("smac", "smax")  # envs.smax_views.OWN_FEATURES


# Fields a user may change when resuming a run (they do not change what has been computed).
RESUMABLE_FIELDS = (
    "t_max",
    "test_interval",
    "save_interval",
    "keep_checkpoints",
    "tensorboard",
    "csv",
    "wandb_project",
    "unroll_windows",
    "update_microbatches",
    "seed_vmap",
    "workers_per_seed",
    "worker_timeout",
    "worker_start_timeout",
)


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the valid choices."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a run. Fields group as: problem, budget, data, optimisation,
    exploration, networks, IGM-DA, evaluation and logging."""

    # problem
    alg: str = "qmix"
    """vdn qmix qplex dmix, each also -da (IGM-DA: learner acts, imitates the expert) or -bc
    (behaviour cloning: the expert acts)."""
    map: str = "3m"
    """Registered map (`igmda envs` lists them): SMAX maps, 8m_vs_9m, MMM2, toy games."""
    sight_range: float | None = None
    """Sight range of the agents' (learners') observations; 0 = blind; None = each unit
    type's SMAX sight."""
    expert_view: Literal["full_obs", "state"] = "full_obs"
    """What the -da/-bc expert sees: full-sight observations, or the global state + agent id."""
    episode_limit: int | None = None
    """Override the map's episode limit (None: SMAC's limit for the map)."""
    reward: Literal["smac", "smax", "smac_no_kill"] = "smac"
    """SMAX maps' team reward: smac = SMAC's shaping (damage + 10 per kill + 200 on a win,
    scaled to at most 20 per episode; the paper's); smax = JaxMARL's (damage fraction + 1 on
    a win); smac_no_kill = SMAC's without the kill bonus (an ablation). Other environments
    (toy games) have their own reward and ignore this field."""
    own_features: Literal["smac", "smax"] = "smac"
    """SMAX maps' own-feature block of the agents' observations (obs and the expert's
    full_obs): smac = SMAC's (health, unit type, 4 move-feasibility flags: a blind agent does not
    know where it stands; the paper's setting); smax = JaxMARL's (health, absolute x/y, weapon
    cooldown, unit type). The global state keeps positions either way."""
    state_last_action: bool = False
    """Append the allies' last actions (one-hot) to the mixer's global state (SMAX maps; SMAC's
    and the authors' setting, on in the authors preset)."""
    timeout_bootstrap: bool = True
    """A time-limit ending bootstraps from the final observation (True), or counts as terminal
    as in PyMARL with SMAC's continuing_episode=False (False: the authors preset)."""
    backend: Literal["fused", "smax-workers", "smac"] = "fused"
    """Where episodes are played: fused = the JAX maps inside the compiled training step;
    smax-workers = the same maps in worker processes driven by the host loop (igmda_jax/host/loop.py);
    smac = real StarCraft II through SMAC in worker processes, the same host loop."""
    workers_per_seed: int = 8
    """Host backends: environment worker processes per seed (a speed knob: each seed's
    ``n_envs`` episodes per iteration are played in rounds of this many)."""
    worker_timeout: float = 300.0
    """Host backends: seconds a worker may take to answer one step or reset before it is
    declared hung, replaced, and its episode dropped."""
    worker_start_timeout: float = 600.0
    """Host backends: seconds a (re)started worker may take to become ready and play its first
    reset (StarCraft II's launch and map load)."""
    preset: str = "smax"
    """Hyperparameter preset the run started from (smax, finetuned, authors); set by --preset."""
    # budget and seeds
    t_max: int = 2_000_000
    """Env steps to train, per seed (2e6 accepted)."""
    seeds: int = 1
    """Independent seeds trained together, vmapped in one compiled program."""
    seed: int = 0
    """First seed; seeds are seed, seed+1, ..."""
    # data
    n_envs: int = 8
    """Parallel episodes collected per iteration."""
    updates_per_iteration: int = 1
    """Gradient updates after each iteration's collection."""
    buffer_size: int = 5000
    """Replay capacity in episodes (per seed)."""
    batch_size: int = 128
    """Episodes per update."""
    # optimisation
    optimizer: Literal["rmsprop", "adam"] = "adam"
    """Optimizer (optax); rmsprop uses PyTorch semantics (alpha, eps outside the sqrt)."""
    lr: float = 1e-3
    """Learning rate."""
    rms_alpha: float = 0.99
    """RMSprop smoothing constant."""
    optim_eps: float = 1e-5
    """Optimizer epsilon."""
    grad_clip: float = 10.0
    """Global gradient-norm clip."""
    gamma: float = 0.99
    """Discount."""
    td_lambda: float = 0.6
    """TD(lambda) targets; 0 gives 1-step targets. make_config (and so igmda train) gives DMIX
    0 unless asked (MIXER_DEFAULTS: per-quantile-sample lambda returns narrow the return
    distribution)."""
    double_q: bool = True
    """Double Q: the online network picks the next action, the target network values it."""
    target_update_episodes: int = 200
    """Hard target-network update every this many episodes."""
    # exploration
    epsilon_start: float = 1.0
    """Initial epsilon of epsilon-greedy acting (over available actions)."""
    epsilon_finish: float = 0.05
    """Final epsilon."""
    epsilon_anneal_steps: int = 100_000
    """Env steps of the linear epsilon anneal."""
    # networks
    hidden_dim: int = 64
    """GRU hidden size of the agent (and learner) networks."""
    mixer_embed: int = 32
    """QMIX/DMIX mixing embedding size."""
    hypernet_embed: int = 64
    """Hypernetwork hidden size."""
    hypernet_layers: int = 2
    """Hypernetwork depth (1 or 2)."""
    qplex_heads: int = 4
    """QPLEX attention heads (K) of the advantage weights."""
    qplex_adv_hypernet_layers: int = 2
    """QPLEX advantage hypernetwork depth."""
    n_quantiles: int = 8
    """DMIX: quantile fractions sampled for the online network."""
    n_target_quantiles: int = 8
    """DMIX: quantile fractions sampled for the targets."""
    n_act_quantiles: int = 32
    """DMIX: quantile fractions averaged to act."""
    obs_last_action: bool = True
    """Feed each agent its own last action (one-hot)."""
    obs_agent_id: bool = True
    """Feed each agent its id (one-hot)."""
    obs_avail: bool = True
    """Feed the agent (plain algorithms) and the -da/-bc learner its available-actions mask (as
    the authors' code does)."""
    expert_obs_avail: bool = False
    """Feed the -da/-bc expert the available-actions mask too (the authors' expert input is
    expert observation + last action + agent id, without it)."""
    # IGM-DA / BC
    imitation_loss: Literal["mse", "ce"] = "mse"
    """Learner loss: MSE to the expert's greedy one-hot (paper, Prop. 5) or cross-entropy."""
    imitation_weight: float = 1.0
    """Weight of the imitation loss in the total loss."""
    imitate_quantiles: bool = True
    """DMIX-DA: regress every sampled quantile of the IQN learner to the expert's one-hot (the
    authors' code) or, with --no-imitate-quantiles, only the quantiles' mean."""
    td_weight: float = 1.0
    """Weight of the TD loss; 0 freezes the agent/expert and mixer (igmda imitate)."""
    expert_target_action: Literal["auto", "learner", "expert"] = "auto"
    """Whose greedy action the expert's double-Q target uses: auto = learner for -da (the
    authors' choice), expert for -bc."""
    beta_start: float = 0.0
    """-da DAgger mixing: probability that the expert plays a whole episode, annealed linearly
    to 0 (0: off, the default)."""
    beta_anneal_steps: int = 0
    """Env steps of the linear beta anneal."""
    # evaluation, logging, checkpoints
    test_interval: int = 10_000
    """Env steps between greedy evaluations."""
    test_nepisode: int = 32
    """Greedy test episodes per seed per evaluation."""
    iterations_per_call: int = 16
    """Iterations fused in one jitted call (the host logs between calls)."""
    unroll_windows: int = 4
    """Updates unroll the shortest of this many static windows (episode_limit * k / n) that
    holds the batch's longest episode, not the whole padded length; 1 = always unroll all.
    Same result, less padding computed; each window compiles the update once more."""
    update_microbatches: int = 0
    """An update sorts its batch's episodes by length and computes the gradient on this many
    equal parts one after another, each unrolled on its own window: the short episodes skip
    the longest one's padding. Same result (to rounding). 0 = auto: 8 on CPU, 1 on GPU/TPU
    (where one large batch keeps the device busy); reduced to a divisor of batch_size."""
    seed_vmap: int = 0
    """Seeds vmapped together on one device; a device's seeds run in sequential groups of this
    size (a loop, ``seed_layout.map_seed_groups``) inside the same compiled program. 0 = auto:
    1 on CPU, where XLA runs a vmapped batch of seeds slower than the same seeds one after
    another (``seed_layout.seed_group_size``), all of a device's seeds on GPU/TPU. Same results
    either way (to rounding)."""
    save_interval: int = 100_000
    """Env steps between checkpoints (one is also written at the end)."""
    keep_checkpoints: int = 2
    """Checkpoints kept (oldest deleted)."""
    tensorboard: bool = False
    """Also write TensorBoard scalars (needs the tensorboard extra)."""
    csv: bool = False
    """Also write DIR/metrics.csv: metrics.jsonl as a table, rewritten after every evaluation."""
    wandb_project: str | None = None
    """Also log to this Weights & Biases project (needs the wandb extra; WANDB_MODE=offline
    keeps the files in DIR/wandb). The W&B run id is kept in DIR/wandb_id for resumes."""

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
    def agent_obs_avail(self) -> bool:
        """Whether the ``agent`` network (the plain agent, or the -da/-bc expert) gets the
        available-actions mask as input."""
        return self.expert_obs_avail if self.uses_expert else self.obs_avail

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
            "test_nepisode iterations_per_call unroll_windows n_quantiles n_target_quantiles "
            "n_act_quantiles keep_checkpoints test_interval save_interval updates_per_iteration "
            "mixer_embed hypernet_embed qplex_heads qplex_adv_hypernet_layers"
        )
        for name in positive.split():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("epsilon_anneal_steps", "beta_anneal_steps", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        _check_number(self, "lr", low=0.0, low_open=True)
        _check_number(self, "optim_eps", low=0.0, low_open=True)
        _check_number(self, "grad_clip", low=0.0, low_open=True)
        _check_number(self, "rms_alpha", low=0.0, high=1.0, high_open=True)
        _check_number(self, "epsilon_start", low=0.0, high=1.0)
        _check_number(self, "epsilon_finish", low=0.0, high=1.0)
        _check_number(self, "imitation_weight", low=0.0)
        if self.sight_range is not None:
            _check_number(self, "sight_range", low=0.0, hint=" (or None: each unit's own sight)")
        if self.episode_limit is not None and (
            isinstance(self.episode_limit, bool)
            or not isinstance(self.episode_limit, int)
            or self.episode_limit < 1
        ):
            raise ConfigError(
                f"episode_limit must be an integer >= 1 (or None: the map's), got "
                f"{self.episode_limit!r}"
            )
        if self.hypernet_layers not in (1, 2):
            raise ConfigError(f"hypernet_layers must be 1 or 2, got {self.hypernet_layers!r}")
        if self.expert_view not in ("full_obs", "state"):
            raise ConfigError(f"expert_view must be full_obs or state, got {self.expert_view!r}")
        if self.seed_vmap < 0:
            raise ConfigError(f"seed_vmap must be >= 0 (0 = auto), got {self.seed_vmap}")
        if self.update_microbatches < 0:
            raise ConfigError(
                f"update_microbatches must be >= 0 (0 = auto), got {self.update_microbatches}"
            )
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
        if self.reward not in REWARDS:
            raise ConfigError(f"reward must be one of {', '.join(REWARDS)}; got {self.reward!r}")
        if self.own_features not in OWN_FEATURES:
            raise ConfigError(
                f"own_features must be one of {', '.join(OWN_FEATURES)}; got {self.own_features!r}"
            )
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


def _check_number(
    config: Config,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    hint: str = "",
) -> None:
    """Raise ConfigError unless field ``name`` is a finite number in the given range."""
    value = getattr(config, name)
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise ConfigError(
            f"{name} must be a finite number in {left}{lo}, {hi}{right}{hint}, got {value!r}"
        )
