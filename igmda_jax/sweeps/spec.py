"""``igmda sweep FILE.yaml``: a grid of ``igmda train`` runs, resumable across sessions.

In: a YAML file naming algorithms x maps x sight ranges x named Config override sets, the
seeds, the budget and the sweep's name. Out: one ``igmda train`` run folder per cell of the
grid (its seeds vmapped inside it), trained to ``t_max`` and evaluated once at the end
(``launchers.execute_task``); a line per finished run and a progress line every minute; exit
status 0 when every selected run is done, 1 when some failed (each with the tail of its log),
2 when the file or the options are wrong (one line on stderr; nothing written, nothing run).

Schema (every key but ``name``, ``algorithms``, ``maps``, ``seeds`` and ``t_max`` optional)::

    name: pilot               # folders runs/<name>/ and results/<name>/; [A-Za-z0-9_.-]+
    description: ...          # free text, kept in the copy of the file
    preset: smax              # smax | finetuned | authors (default smax)
    seeds: 3                  # seeds per run
    t_max: 300000             # env steps per seed (3e5 and 300_000 accepted)
    final_eval_episodes: 320  # greedy episodes per seed at the end (default 320)
    common: {test_interval: 10000}     # Config fields of every run
    algorithms: [qmix, qmix-da]
    maps: [3m, 5m_vs_6m]
    sight_ranges: [0]         # default [0]; null = each unit type's SMAX sight
    override_sets: {"": {}}   # named sets of Config fields, crossed with the rest
    grids:                    # optional sub-grids; each takes the keys above but name,
      - {}                    # description and grids, and overrides them (its `common`
      - {maps: [3m], override_sets: {smax_own: {own_features: smax}}}   # is merged)

Config fields (``igmda train --help``) go into ``common`` and ``override_sets``, except
alg, map, sight_range, preset, seeds and t_max, which have their own keys. Each run is
``igmda train --preset P --alg A --map M --sight-range R --seeds S --t-max T`` followed by the
``common`` and then the override set's fields as flags (``--field-name value``, ``--flag`` /
``--no-flag``, ``None``). A cell is named ``<alg>_<map>_sight<r>`` (+ ``_<set>`` for a named
override set; ``sightdefault`` for null) and labelled with its algorithm, plus ``sight <r>``
when the sweep's sight ranges vary and ``[<set>]`` for a named override set
(``qmix-da [smax_own]``): ``igmda report`` groups runs by label.

Written (never by ``--dry-run``)::

    runs/<name>/<cell>/       the igmda train --out folder (checkpoints; git-ignored) + cell.json,
                              final_eval.json, task.json, log.txt (see igmda_jax/sweeps/launchers.py)
    results/<name>/<cell>/    config.json metrics.jsonl provenance.json cell.json final_eval.json
                              (copied at every call and when the run ends: commit these)
    results/<name>/sweep.yaml the grid file as last run

Rerunning the same command skips finished runs (final_eval.json), evaluates trained ones,
resumes the others from their last checkpoint. Only budget, logging and layout fields (t_max,
test_interval, save_interval, keep_checkpoints, tensorboard, csv, wandb_project, unroll_windows,
update_microbatches, seed_vmap) may change between calls; any other change to a cell that has a
run folder is refused (move the folder away to start it over). A finished run stays finished even if t_max grows: delete its
final_eval.json to train it further. ``--dry-run`` prints the grid, each cell's state and its
estimated cost from measured speeds in ``<results-dir>/table1_cost.json``
(experiments/table1_cost.py: ``{"rows": [{"map", "alg", "seeds", "env_steps_per_s" (per seed,
with `seeds` seeds together), "compile_s", "eval_compile_s", "eval_s"}]}``).

This module is what a sweep *is*: the file read and checked into a ``Sweep`` of named,
labelled ``Cell``s. Where a sweep stands and what it still costs (cell states, the cost
estimate, the dry-run table, progress lines) is ``sweeps.plan``; the command, which runs the
cells through ``sweeps.launchers``, is ``sweeps.cli.main``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import os
import re
import subprocess
import sys
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from igmda_jax.core.config import ALGORITHMS, PRESETS, Config, ConfigError
from igmda_jax.core.presets import MAIN_JOB, make_config

GRID_KEYS = (
    "preset",
    "seeds",
    "t_max",
    "final_eval_episodes",
    "common",
    "algorithms",
    "maps",
    "sight_ranges",
    "override_sets",
)
TOP_KEYS = ("name", "description", *GRID_KEYS, "grids")
REQUIRED = ("algorithms", "maps", "seeds", "t_max")
DEFAULTS: dict[str, Any] = {
    "preset": "smax",
    "final_eval_episodes": 320,
    "common": {},
    "sight_ranges": [0.0],
    "override_sets": {"": {}},
}
# Config fields with a key of their own in the file.
OWN_KEYS = {
    "alg": "algorithms",
    "map": "maps",
    "sight_range": "sight_ranges",
    "preset": "preset",
    "seeds": "seeds",
    "t_max": "t_max",
}
NAME = re.compile(r"^[A-Za-z0-9_.-]*$")


class SweepError(ValueError):
    """The sweep file (or an option) is wrong; the message says where and what is valid."""


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of the grid: an ``igmda train`` folder."""

    name: str
    label: str
    alg: str
    map: str
    sight_range: float | None
    override_set: str
    preset: str
    seeds: int
    t_max: int
    final_eval_episodes: int
    fields: tuple[tuple[str, Any], ...]  # common, then the override set's Config fields

    def config_fields(self) -> dict[str, Any]:
        """Every Config field the cell sets (on top of the preset)."""
        own = {"alg": self.alg, "map": self.map, "sight_range": self.sight_range}
        return {**own, "seeds": self.seeds, "t_max": self.t_max, **dict(self.fields)}

    def config(self) -> Config:
        """The Config ``igmda train`` resolves for this cell (preset, main job, fields)."""
        return make_config(self.preset, **{**MAIN_JOB, **self.config_fields()})


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A parsed sweep file: its name, its cells in run order, and its text."""

    name: str
    cells: tuple[Cell, ...]
    source: str


# ---------------------------------------------------------------------------- the file
def sight_text(sight_range: float | None) -> str:
    """0.0 -> "0", 1.5 -> "1.5", None -> "default" (as igmda train names its folders)."""
    return "default" if sight_range is None else f"{sight_range:g}"


def cell_name(alg: str, map_name: str, sight_range: float | None, override_set: str) -> str:
    """``<alg>_<map>_sight<r>`` (+ ``_<override set>`` when the set is named)."""
    name = f"{alg}_{map_name}_sight{sight_text(sight_range)}"
    return f"{name}_{override_set}" if override_set else name


def field_types() -> dict[str, Any]:
    """Config field name -> its type (Literal, unions and None resolved)."""
    return typing.get_type_hints(Config)


def accepts(kind: Any, value: Any) -> bool:
    """Whether ``value`` (as YAML gives it) is a value of the type ``kind``."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) is typing.Literal:
        return value in args
    if args:  # a union such as float | None
        return any(accepts(arg, value) for arg in args)
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    return value is None if kind is type(None) else True


def as_number(value: Any, integral: bool) -> Any:
    """YAML numbers written loosely (``3e5`` is a string to YAML 1.1, 3.0e5 a float) as an int
    (``integral``, when whole) or a float; anything else unchanged."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return value
    try:
        number = float(value)
    except ValueError:
        return value
    if integral:
        return int(number) if number.is_integer() else value
    return number


def check_field(name: str, where: str) -> None:
    """SweepError unless ``name`` is a Config field set in ``common`` or an override set."""
    kinds = field_types()
    if name not in kinds:
        close = difflib.get_close_matches(name, list(kinds), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "; see `igmda train --help`"
        raise SweepError(f"unknown Config field {name!r} in {where}{hint}")
    if name in OWN_KEYS:
        raise SweepError(f"{name!r} in {where}: set it with the key {OWN_KEYS[name]!r}")


def config_value(name: str, value: Any, where: str) -> Any:
    """``value`` of Config field ``name`` checked against the field's type, numbers coerced
    as ``as_number`` does; SweepError names the field, ``where`` and the type."""
    kind = field_types()[name]
    if not accepts(kind, value) and accepts(kind, 0):
        value = as_number(value, integral=not accepts(kind, 0.5))
    if not accepts(kind, value):
        wanted = Config.__annotations__[name]  # the annotation's text
        raise SweepError(f"{name} in {where} must be {wanted}, got {value!r}")
    return value


def _positive_int(value: Any, key: str, where: str) -> int:
    number = as_number(value, integral=True)
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise SweepError(f"{key} in {where} must be a positive integer, got {value!r}")
    return number


def _names(value: Any, key: str, where: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise SweepError(f"{key} in {where} must be a non-empty list of names, got {value!r}")
    return list(dict.fromkeys(value))


def _fields(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SweepError(f"{where} must be a mapping of Config fields, got {value!r}")
    for name in value:
        check_field(str(name), where)
    return {str(k): config_value(str(k), v, where) for k, v in value.items()}


def _check_keys(data: Any, valid: Sequence[str], where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise SweepError(f"{where} must be a mapping with keys {', '.join(valid)}")
    for key in data:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SweepError(f"unknown key {key!r} in {where}{hint}; valid: {', '.join(valid)}")
    return data


def grid_cells(settings: Mapping[str, Any], where: str) -> list[Cell]:
    """The cells of one grid (top-level keys merged with a sub-grid's), labels left empty.
    Order: maps, then sight ranges, override sets, algorithms (innermost)."""
    for key in REQUIRED:
        if key not in settings:
            raise SweepError(f"missing key {key!r} in {where}")
    preset = settings["preset"]
    if preset not in PRESETS:
        raise SweepError(f"unknown preset {preset!r} in {where}; valid: {', '.join(PRESETS)}")
    algorithms = _names(settings["algorithms"], "algorithms", where)
    for alg in algorithms:
        if alg not in ALGORITHMS:
            raise SweepError(
                f"unknown algorithm {alg!r} in {where}; valid: {', '.join(ALGORITHMS)}"
            )
    map_names = _names(settings["maps"], "maps", where)
    sights = settings["sight_ranges"]
    if not isinstance(sights, list) or not sights:
        raise SweepError(f"sight_ranges in {where} must be a non-empty list, got {sights!r}")
    sights = [None if s is None else config_value("sight_range", s, where) for s in sights]
    sets = settings["override_sets"]
    if not isinstance(sets, dict) or not sets:
        raise SweepError(f"override_sets in {where} must be a non-empty mapping name -> fields")
    for set_name in sets:
        if not isinstance(set_name, str) or not NAME.match(set_name):
            raise SweepError(f"override set name {set_name!r} in {where}: use [A-Za-z0-9_.-]")
    common = _fields(settings["common"], f"common of {where}")
    overrides = {s: _fields(v, f"override set {s!r} of {where}") for s, v in sets.items()}
    seeds = _positive_int(settings["seeds"], "seeds", where)
    t_max = _positive_int(settings["t_max"], "t_max", where)
    episodes = _positive_int(settings["final_eval_episodes"], "final_eval_episodes", where)
    cells = []
    for map_name in map_names:
        for sight in dict.fromkeys(None if s is None else float(s) for s in sights):
            for set_name, fields in overrides.items():
                for alg in algorithms:
                    name = cell_name(alg, map_name, sight, set_name)
                    cell = Cell(
                        name=name,
                        label="",
                        alg=alg,
                        map=map_name,
                        sight_range=sight,
                        override_set=set_name,
                        preset=preset,
                        seeds=seeds,
                        t_max=t_max,
                        final_eval_episodes=episodes,
                        fields=tuple({**common, **fields}.items()),
                    )
                    try:
                        cell.config()
                    except ConfigError as error:
                        raise SweepError(f"cell {name} ({where}): {error}") from None
                    cells.append(cell)
    return cells


def label_cells(cells: Sequence[Cell]) -> list[Cell]:
    """Each cell's label: its algorithm, + ``sight <r>`` when the cells' sight ranges vary,
    + ``[<set>]`` for a named override set (always: a sweep of one setting is compared with
    another sweep's cells of the same algorithm, e.g. ``qmix-da [state_expert]`` beside
    table1's ``qmix-da``)."""
    sights_vary = len({cell.sight_range for cell in cells}) > 1
    labelled = []
    for cell in cells:
        label = cell.alg
        if sights_vary:
            label += f" sight {sight_text(cell.sight_range)}"
        if cell.override_set:
            label += f" [{cell.override_set}]"
        labelled.append(dataclasses.replace(cell, label=label))
    return labelled


def parse_sweep(data: Any, source: str = "") -> Sweep:
    """A Sweep from the loaded YAML ``data``, every cell's Config validated (maps are checked
    by ``check_maps``). Raises SweepError on the first problem."""
    data = _check_keys(data, TOP_KEYS, "the file")
    name = data.get("name")
    if not isinstance(name, str) or not name or not NAME.match(name):
        raise SweepError(f"name must be a folder name of [A-Za-z0-9_.-], got {name!r}")
    base = {**DEFAULTS, **{k: v for k, v in data.items() if k in GRID_KEYS}}
    subgrids = data.get("grids")
    if subgrids is None:
        grids = [("the file", base)]
    elif not isinstance(subgrids, list) or not subgrids:
        raise SweepError("grids must be a non-empty list of mappings")
    else:
        grids = []
        for i, sub in enumerate(subgrids, start=1):
            where = f"grid {i}"
            sub = _check_keys({} if sub is None else sub, GRID_KEYS, where)
            common = {**_as_dict(base["common"]), **_as_dict(sub.get("common", {}))}
            grids.append((where, {**base, **sub, "common": common}))
    cells: dict[str, tuple[Cell, str]] = {}
    for where, settings in grids:
        for cell in grid_cells(settings, where):
            if cell.name in cells and cells[cell.name][0] != cell:
                raise SweepError(
                    f"cell {cell.name} comes out of {cells[cell.name][1]} and {where} with "
                    "different settings; name the override sets apart"
                )
            cells.setdefault(cell.name, (cell, where))
    return Sweep(name, tuple(label_cells([cell for cell, _ in cells.values()])), source)


def _as_dict(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SweepError(f"common must be a mapping of Config fields, got {value!r}")
    return value


@functools.cache
def registered_maps() -> tuple[str, ...]:
    """``envs.list_maps()``, asked of a subprocess on the CPU: importing the environments
    starts JAX's backends (on a GPU, a share of its memory), which the sweep keeps for its runs.
    Asked once per process (a few seconds each): every sweep file of a call shares the answer."""
    code = "import json, envs; print(json.dumps(envs.list_maps()))"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise SweepError(f"cannot list the maps (python -c 'import envs' failed: {last})")
    return tuple(json.loads(result.stdout.strip().splitlines()[-1]))


def check_maps(sweep: Sweep, maps: Sequence[str]) -> None:
    """SweepError naming the first cell whose map is not one of ``maps``."""
    for cell in sweep.cells:
        if cell.map not in maps:
            raise SweepError(
                f"unknown map {cell.map!r} (cell {cell.name}); known maps: {', '.join(maps)}"
            )


def load_sweep(path: str | Path, maps: Sequence[str] | None = None) -> Sweep:
    """Read and validate a sweep file (``maps``: the registered maps, asked of
    ``registered_maps`` when None, once the rest of the file is valid)."""
    path = Path(path)
    try:
        source = path.read_text()
    except OSError as error:
        raise SweepError(f"cannot read {path}: {error.strerror}") from None
    try:
        data = yaml.safe_load(source)
    except yaml.YAMLError as error:
        raise SweepError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from None
    sweep = parse_sweep(data, source)
    check_maps(sweep, registered_maps() if maps is None else maps)
    return sweep
