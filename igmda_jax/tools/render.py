"""``igmda render RUN --out episode.gif``: an animated GIF of greedy episodes of a SMAX run.

Episodes are played and recorded inside one jit (render_record.py); frames are drawn here
with matplotlib's Agg canvas, one figure whose artists are moved frame after frame (blitted
over a background drawn once per episode), and written as a GIF with Pillow. What a frame
shows (docs/render.md): allies blue, enemies red, each with its unit type's letter and a
health bar; a cross where a unit died; a line from each unit
that attacked in the step into the frame to its target; the agents' sight radius (dashed);
for -da/-bc runs an orange ring around each agent whose acting network's action differs from
the other network's greedy choice, labelled with both (L: learner, E: expert).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, Rectangle
from PIL import Image

from envs.smax import N_MOVE_ACTIONS
from envs.smax_maps import UNIT_TYPE_SHORTHANDS
from igmda_jax.tools.render_record import Recording, record_run

ALLY, ENEMY, DISAGREE, DEAD = "#1f5fbf", "#c8322d", "#ff8c00", "#7f7f7f"
MOVE_NAMES = ("↑", "→", "↓", "←", "stop")  # SMAX actions 0-4: north, east, south, west, stop
BAR_WIDTH, BAR_HEIGHT = 1.2, 0.18  # health bar, in map units
ASPECT = 1.2  # frame height / width: the map, a title above and the legend below


def action_name(action: int) -> str:
    """Short name of an agent's action: an arrow, "stop" or "atk j" (attack enemy j)."""
    action = int(action)
    return MOVE_NAMES[action] if action < N_MOVE_ACTIONS else f"atk {action - N_MOVE_ACTIONS}"


def episode_view(
    positions: np.ndarray, alive: np.ndarray, map_size: tuple[float, float], margin: float = 2.5
) -> tuple[float, float, float, float]:
    """Square view (x0, x1, y0, y1) around every position a living unit takes in an episode,
    with ``margin``, kept inside the map where it fits. positions: [T, U, 2]; alive: [T, U]."""
    seen = positions[alive] if alive.any() else positions.reshape(-1, 2)
    low, high = seen.min(axis=0) - margin, seen.max(axis=0) + margin
    side = float(max(high - low))
    centre = (low + high) / 2
    bounds = []
    for axis, size in enumerate(map_size):
        start = float(centre[axis]) - side / 2
        start = min(max(start, 0.0), size - side) if side <= size else start
        bounds += [start, start + side]
    return bounds[0], bounds[1], bounds[2], bounds[3]


def attack_segments(positions: np.ndarray, targets: np.ndarray, offset: float = 0.12) -> np.ndarray:
    """[k, 2, 2] line segments shooter -> target, shifted ``offset`` to the shooter's right so
    that two units shooting each other show two lines. positions: [U, 2]; targets: [U] (-1:
    none); k = number of shooters."""
    shooters = np.flatnonzero(targets >= 0)
    start, end = positions[shooters], positions[targets[shooters]]
    direction = end - start
    norm = np.maximum(np.linalg.norm(direction, axis=-1, keepdims=True), 1e-6)
    right = np.stack([direction[:, 1], -direction[:, 0]], axis=-1) / norm * offset
    return np.stack([start + right, end + right], axis=1)


def frame_index(length: np.ndarray) -> list[tuple[int, int]]:
    """(episode, step) of every frame: steps 0..length of each episode in turn."""
    return [(e, t) for e in range(len(length)) for t in range(int(length[e]) + 1)]


def result_text(recording: Recording, episode: int) -> str:
    """How the episode ended: won, lost (every agent dead) or time limit / draw."""
    if recording.won[episode]:
        return "won"
    final = recording.alive[episode, int(recording.length[episode])]
    return "lost" if not final[: recording.n_agents].any() else "time limit or draw"


class FrameDrawer:
    """One matplotlib figure for a recording; :meth:`draw` updates its artists to a frame and
    returns the pixels. Creating artists once and moving them is what keeps it fast."""

    def __init__(self, recording: Recording, size_px: int = 560) -> None:
        self.rec = recording
        dpi = 80
        self.figure = Figure(figsize=(size_px / dpi, size_px * ASPECT / dpi), dpi=dpi)
        self.canvas = FigureCanvasAgg(self.figure)
        self.ax = self._map_axes()
        self._unit_artists()
        self.differs = recording.disagreements()  # [E, T, n]
        head = f"{recording.alg} on {recording.map_name} · seed {recording.seed}"
        head += f" · t_env {recording.t_env} · {recording.actor} acts"
        self.figure.text(0.5, 0.985, head, ha="center", va="top", fontsize=10)
        self.status = self.figure.text(0.5, 0.955, "", ha="center", va="top", fontsize=10)
        self._legend()
        # Blitting: the map, title and legend are drawn once per episode (set_view), these
        # artists on top of them at every frame
        self.moving = [
            *self.sight, self.attacks, *self.units, *self.letters.values(), *self.bars, *self.fills,
            self.dead, *self.rings, *self.labels, self.status,
        ]  # fmt: skip
        for artist in self.moving:
            artist.set_animated(True)
        self.background = None
        self.episode = -1  # the episode whose view the background shows

    def _map_axes(self) -> Axes:
        """The axes of the map, its edge (where SMAX kills units) drawn as a black frame."""
        ax = self.figure.add_axes((0.04, 0.13, 0.92, 0.92 / ASPECT))
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_facecolor("#f4f1e8")
        width, height = self.rec.map_size
        ax.add_patch(Rectangle((0, 0), width, height, fill=False, lw=2, ec="black"))
        return ax

    def _unit_artists(self) -> None:
        """One artist per unit and thing drawn about it, placed later by :meth:`update`."""
        ax, rec = self.ax, self.rec
        n_units, n = rec.positions.shape[2], rec.n_agents
        colours = [ALLY if u < n else ENEMY for u in range(n_units)]
        self.shooter_colours = np.array(colours)
        self.sight = [Circle((0, 0), 1, fill=False, ls="--", lw=0.8, ec=ALLY) for _ in range(n)]
        self.rings = [Circle((0, 0), 1, fill=False, lw=2.5, ec=DISAGREE) for _ in range(n)]
        self.units = [Circle((0, 0), 1, fc=c, ec="black", lw=0.5) for c in colours]
        self.bars = [Rectangle((0, 0), BAR_WIDTH, BAR_HEIGHT, fc="#d0d0d0") for _ in colours]
        self.fills = [Rectangle((0, 0), BAR_WIDTH, BAR_HEIGHT, fc="#2ca02c") for _ in colours]
        for patch in (*self.sight, *self.rings, *self.units, *self.bars, *self.fills):
            ax.add_patch(patch)
        # type letters as marker paths, one artist per type: much cheaper to draw than texts
        self.letters = {}
        for kind in np.unique(rec.unit_types).tolist():
            letter = rf"$\mathrm{{{UNIT_TYPE_SHORTHANDS[kind]}}}$"
            (self.letters[kind],) = ax.plot([], [], ls="", marker=letter, ms=6, color="white")
        box = {"fc": "white", "alpha": 0.75, "lw": 0, "pad": 1}
        self.labels = [
            ax.text(0, 0, "", color=DISAGREE, fontsize=8, weight="bold", bbox=box) for _ in range(n)
        ]
        self.attacks = LineCollection([], lw=1.2, alpha=0.8)
        ax.add_collection(self.attacks)
        (self.dead,) = ax.plot([], [], "x", color=DEAD, ms=6, mew=1.5)

    def _legend(self) -> None:
        """The static legend below the map."""
        handles = [
            Line2D([], [], marker="o", ls="", color=ALLY, label="ally (agent)"),
            Line2D([], [], marker="o", ls="", color=ENEMY, label="enemy"),
            Line2D([], [], marker="x", ls="", color=DEAD, label="dead"),
            Line2D([], [], color="black", label="attack"),
            Rectangle((0, 0), 1, 1, fc="#2ca02c", label="health"),
        ]
        if (self.rec.sight > 0).any():
            handles.append(Line2D([], [], ls="--", color=ALLY, label="agents' sight"))
        if self.rec.other is not None:
            handles.append(
                Line2D(
                    [], [], marker="o", ls="", mfc="none", mec=DISAGREE, mew=2,
                    label="learner ≠ expert",
                )
            )  # fmt: skip
        self.figure.legend(
            handles=handles,
            loc="lower center",
            ncol=4,
            fontsize=8,
            columnspacing=1.0,
            frameon=False,
        )

    def to_pixels(self, xy: np.ndarray) -> np.ndarray:
        """Map coordinates [k, 2] -> pixel (column, row) [k, 2] int in the frames drawn of the
        episode drawn last (its view)."""
        display = self.ax.transData.transform(np.asarray(xy, float).reshape(-1, 2))
        height = self.canvas.get_width_height()[1]
        return np.stack([display[:, 0], height - display[:, 1]], axis=1).astype(int)

    def set_view(self, episode: int) -> None:
        """Zoom onto the episode's units."""
        rec = self.rec
        x0, x1, y0, y1 = episode_view(rec.positions[episode], rec.alive[episode], rec.map_size)
        self.ax.set_xlim(x0, x1)
        self.ax.set_ylim(y0, y1)
        self.canvas.draw()  # everything but the moving artists
        self.background = self.canvas.copy_from_bbox(self.figure.bbox)
        self.episode = episode

    def update(self, episode: int, t: int) -> None:
        """Move every artist to frame ``t`` of ``episode``."""
        rec, n = self.rec, self.rec.n_agents
        positions, alive = rec.positions[episode, t], rec.alive[episode, t]
        health, radius = rec.health[episode, t], rec.radius[episode]
        for u, (unit, bar, fill) in enumerate(zip(self.units, self.bars, self.fills, strict=True)):
            x, y = positions[u]
            for artist in (unit, bar, fill):
                artist.set_visible(bool(alive[u]))
            unit.set_center((x, y))
            unit.set_radius(radius[u])
            corner = (x - BAR_WIDTH / 2, y + radius[u] + 0.15)
            bar.set_xy(corner)
            fill.set_xy(corner)
            fill.set_width(BAR_WIDTH * float(np.clip(health[u], 0.0, 1.0)))
        for kind, mark in self.letters.items():
            shown = alive & (rec.unit_types[episode] == kind)
            mark.set_data(positions[shown, 0], positions[shown, 1])
        step = t < rec.length[episode]
        differs = self.differs[episode, t] if step else np.zeros(n, bool)
        other = rec.other
        for i in range(n):
            centre = positions[i]
            self.sight[i].set_center(centre)
            self.sight[i].set_radius(max(float(rec.sight[episode, i]), 1e-3))
            self.sight[i].set_visible(bool(alive[i]) and rec.sight[episode, i] > 0)
            self.rings[i].set_center(centre)
            self.rings[i].set_radius(radius[i] + 0.3)
            self.rings[i].set_visible(bool(differs[i]))
            self.labels[i].set_visible(bool(differs[i]))
            if differs[i]:
                mine = action_name(rec.actions[episode, t, i])
                theirs = action_name(rec.greedy[other][episode, t, i])
                learner, expert = (mine, theirs) if other == "expert" else (theirs, mine)
                self.labels[i].set_text(f"L {learner}\nE {expert}")
                self.labels[i].set_position((centre[0] + radius[i] + 0.4, centre[1] - 0.6))
        segments = attack_segments(positions, rec.targets[episode, t])
        self.attacks.set_segments(segments)
        self.attacks.set_color(self.shooter_colours[rec.targets[episode, t] >= 0])
        dead = positions[~alive]
        self.dead.set_data(dead[:, 0], dead[:, 1])
        self.status.set_text(self._status(episode, t, int(differs.sum())))

    def _status(self, episode: int, t: int, n_differ: int) -> str:
        """The line under the title: episode, step, and how it ended or who disagrees."""
        rec = self.rec
        length = int(rec.length[episode])
        status = f"episode {episode + 1}/{len(rec.length)} · step {t}/{length}"
        if t == length:
            status += f" · {result_text(rec, episode)}"
        elif rec.other is not None:
            status += f" · learner ≠ expert: {n_differ}/{rec.n_agents} agents"
        return status

    def draw(self, episode: int, t: int) -> np.ndarray:
        """Frame ``t`` of ``episode`` as RGB pixels [H, W, 3] uint8."""
        if episode != self.episode:
            self.set_view(episode)
        self.update(episode, t)
        self.canvas.restore_region(self.background)
        for artist in self.moving:
            if artist.get_visible():
                self.figure.draw_artist(artist)
        return np.asarray(self.canvas.buffer_rgba())[..., :3].copy()


def draw_frames(recording: Recording, size_px: int = 560) -> Iterator[np.ndarray]:
    """Every frame of every episode of ``recording`` in turn: [H, W, 3] uint8 each."""
    drawer = FrameDrawer(recording, size_px)
    for episode, t in frame_index(recording.length):
        yield drawer.draw(episode, t)


def shared_palette(frames: list[np.ndarray]) -> Image.Image:
    """A 256-colour palette image for ``frames`` (a sample of the GIF's frames; every frame
    also shows the legend, so the key colours are always in it): median cut over them all."""
    montage = np.concatenate(frames, axis=0)
    return Image.fromarray(montage).quantize(colors=256, method=Image.Quantize.MEDIANCUT)


def write_gif(drawer: FrameDrawer, out: str | Path, fps: float, samples: int = 8) -> int:
    """Draw every frame of ``drawer``'s recording into an endlessly looping GIF at ``fps``
    frames per second (GIF delays are whole hundredths of a second); return the frame count.

    One palette for all frames (from ``samples`` frames spread over the GIF), applied without
    dithering: about 30 times faster than letting the GIF writer (Pillow's, also imageio's)
    quantize each frame on its own. Frames are drawn, quantized and written one by one, so
    memory does not grow with the GIF's length; ``out`` appears only once complete."""
    index = frame_index(drawer.rec.length)
    palette = shared_palette([drawer.draw(*at) for at in index[:: max(1, len(index) // samples)]])
    images = (
        Image.fromarray(drawer.draw(*at)).quantize(palette=palette, dither=Image.Dither.NONE)
        for at in index
    )
    first = next(images)
    out = Path(out)
    partial = out.with_name(f".{out.name}.partial")  # no half-written GIF if drawing fails
    try:
        first.save(
            partial, "GIF", save_all=True, append_images=images, duration=1000.0 / fps, loop=0
        )
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return len(index)


def render_run(
    run_dir: str | Path,
    out: str | Path,
    episodes: int = 1,
    actor: str = "deployed",
    seed: int | None = None,
    fps: float = 8.0,
) -> dict[str, object]:
    """Record ``episodes`` greedy episodes of ``run_dir`` and write them to the GIF ``out``.
    Returns a summary: frames, episodes' lengths and wins, frames with a disagreement."""
    out = Path(out)
    if out.suffix.lower() != ".gif":
        raise ValueError(f"--out must name a .gif file, got {str(out)!r}")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--out: folder {out.parent} does not exist")
    if not fps > 0:
        raise ValueError(f"--fps must be > 0, got {fps!r}")
    recording = record_run(run_dir, episodes, actor, seed)
    frames = write_gif(FrameDrawer(recording), out, fps)
    return {
        "out": str(out),
        "frames": frames,
        "lengths": recording.length.tolist(),
        "won": recording.won.tolist(),
        "steps_with_disagreement": int(recording.disagreements().any(axis=-1).sum()),
    }
