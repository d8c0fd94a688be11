"""Cell and nucleus shapes, and how cells are laid out in a crop or a field.

A cell outline is a star-shaped curve ``r(theta) = R (1 + sum_k a_k cos(k theta + phi_k))`` (k = 2: elongation,
k = 3..5: lobes and irregularity); the nucleus is a smaller, rounder curve of the same kind inside it. In a field, every
pixel belongs to the cell whose outline it lies deepest inside (smallest ``|p - c| / r(theta)``), so overlapping cells
touch along a shared border, and cells whose centres lie near the edge are cut by the border.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from locscope.synth.config import SimulatorConfig

N_HARMONICS = 5  # k = 1..5 (k = 1 stays 0: it only shifts the centre)


@dataclass
class Outline:
    """A star-shaped closed curve: centre ``(row, col)`` px, mean radius px, harmonic amplitudes/phases ``(N_HARMONICS,)``."""

    centre: np.ndarray
    radius: float
    amplitudes: np.ndarray
    phases: np.ndarray

    def radius_at(self, theta: np.ndarray) -> np.ndarray:
        """Radius in px at angles ``theta`` (radians, same shape as returned)."""
        k = np.arange(1, N_HARMONICS + 1).reshape((-1,) + (1,) * np.ndim(theta))
        a = self.amplitudes.reshape(k.shape)
        p = self.phases.reshape(k.shape)
        return self.radius * (1.0 + np.sum(a * np.cos(k * theta + p), axis=0))

    def depth(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Normalised radius ``|p - c| / r(theta)``: < 1 inside the outline, 0 at the centre."""
        dr, dc = rows - self.centre[0], cols - self.centre[1]
        return np.hypot(dr, dc) / np.maximum(self.radius_at(np.arctan2(dc, dr)), 1e-6)

    def point_at(self, theta: float, scale: float = 1.0) -> np.ndarray:
        """The point at angle ``theta`` on the outline scaled by ``scale`` (row, col)."""
        r = float(self.radius_at(np.asarray(theta))) * scale
        return self.centre + r * np.array([np.cos(theta), np.sin(theta)])


@dataclass
class CellShape:
    """One cell: its outline, its nucleus outline, the centrosome position (row, col px) and phenotype factors."""

    cell: Outline
    nucleus: Outline
    centrosome: np.ndarray


def random_outline(rng: np.random.Generator, centre: np.ndarray, radius: float, irregularity: float,
                   elongation: float) -> Outline:
    """An outline with random elongation (k = 2) and lobes (k >= 3); amplitudes fall off as 1/k."""
    k = np.arange(1, N_HARMONICS + 1)
    amplitudes = np.abs(rng.normal(0.0, irregularity, size=N_HARMONICS)) / k
    amplitudes[0] = 0.0
    amplitudes[1] = abs(rng.normal(elongation, elongation * 0.5))
    # keep the curve star-shaped and positive: total modulation < 0.6
    total = amplitudes.sum()
    if total > 0.6:
        amplitudes *= 0.6 / total
    return Outline(np.asarray(centre, dtype=np.float64), float(radius), amplitudes, rng.uniform(0, 2 * np.pi, N_HARMONICS))


def random_cell(rng: np.random.Generator, centre: np.ndarray, radius: float, nucleus_ratio: float = 0.42) -> CellShape:
    """A cell outline with a nucleus inside it (shrunk until it fits) and a centrosome beside the nucleus."""
    cell = random_outline(rng, centre, radius, irregularity=0.16, elongation=0.12)
    ratio = nucleus_ratio * float(np.exp(rng.normal(0.0, 0.1)))
    # the nucleus sits off-centre, elongated along the cell's long axis
    offset = rng.normal(0.0, 0.08 * radius, size=2)
    nucleus = random_outline(rng, cell.centre + offset, ratio * radius, irregularity=0.05, elongation=0.08)
    nucleus.phases[1] = cell.phases[1]
    theta = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    for _ in range(20):
        pts = nucleus.centre[:, None] + nucleus.radius_at(theta) * np.stack([np.cos(theta), np.sin(theta)])
        if np.all(cell.depth(pts[0], pts[1]) < 0.8):
            break
        nucleus.radius *= 0.9
        nucleus.centre = cell.centre + 0.8 * (nucleus.centre - cell.centre)
    # the centrosome lies just outside the nuclear envelope, on the side facing the larger cytoplasm
    angle = float(np.arctan2(*(cell.centre - nucleus.centre))) if np.any(offset) else 0.0
    angle += rng.normal(0.0, 0.6)
    centrosome = nucleus.point_at(angle, scale=1.0) + 0.08 * radius * np.array([np.cos(angle), np.sin(angle)])
    return CellShape(cell, nucleus, centrosome)


def layout_cells(cfg: SimulatorConfig, rng: np.random.Generator, radius_scale: float = 1.0,
                 nucleus_ratio: float = 0.42) -> list[CellShape]:
    """Cell shapes for one image: one centred cell (crop) or several cells, touching and border-cut (field)."""
    size = cfg.size
    radius = 0.5 * cfg.cell_diameter_um * 1000.0 / cfg.resolved_pixel_size_nm * radius_scale
    if cfg.mode == "crop":
        centre = np.array([size / 2 - 0.5, size / 2 - 0.5]) + rng.normal(0.0, 0.03 * size, size=2)
        r = radius * float(np.exp(rng.normal(0.0, 0.08)))
        shapes = [random_cell(rng, centre, r, nucleus_ratio)]
        if cfg.neighbours:
            n_neighbours = int(rng.integers(2, 5))
            angles = rng.uniform(0, 2 * np.pi) + np.arange(n_neighbours) * 2 * np.pi / n_neighbours \
                + rng.normal(0.0, 0.3, n_neighbours)
            for angle in angles:
                distance = r * rng.uniform(1.7, 2.1)
                c = centre + distance * np.array([np.cos(angle), np.sin(angle)])
                shapes.append(random_cell(rng, c, radius * float(np.exp(rng.normal(0.0, 0.12))), nucleus_ratio))
        return shapes
    n = int(rng.integers(cfg.cells_per_field[0], cfg.cells_per_field[1] + 1))
    centres: list[np.ndarray] = []
    for _ in range(n * 30):
        if len(centres) == n:
            break
        c = rng.uniform(-0.1 * size, 1.1 * size, size=2)  # some centres near or beyond the edge: border-cut cells
        if all(np.hypot(*(c - o)) > 1.3 * radius for o in centres):  # < 2 radii apart: the cells touch
            centres.append(c)
    return [random_cell(rng, c, radius * float(np.exp(rng.normal(0.0, 0.12))), nucleus_ratio) for c in centres]


def instance_map(shapes: list[CellShape], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Label images of cells and nuclei.

    Returns
    -------
    cells : ndarray of int32, shape (H, W)
        0 = background, ``i + 1`` = ``shapes[i]``; overlapping outlines are split where the normalised depths are equal.
    nuclei : ndarray of int32, shape (H, W)
        The nucleus of each cell, clipped to its cell.
    """
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    cells = np.zeros(shape, dtype=np.int32)
    nuclei = np.zeros(shape, dtype=np.int32)
    best = np.full(shape, 1.0, dtype=np.float32)
    for i, s in enumerate(shapes):
        d = s.cell.depth(rows, cols)
        take = d < best
        cells[take] = i + 1
        best = np.where(take, d, best)
    for i, s in enumerate(shapes):
        nuc = (s.nucleus.depth(rows, cols) < 1.0) & (cells == i + 1)
        nuclei[nuc] = i + 1
    return cells, nuclei


def bounding_window(mask: np.ndarray, margin: int = 1) -> tuple[slice, slice] | None:
    """The smallest ``(row slice, col slice)`` holding ``mask`` plus ``margin`` pixels (``None`` if empty)."""
    found = ndimage.find_objects(mask.astype(np.int32))
    if not found or found[0] is None:
        return None
    rs, cs = found[0]
    h, w = mask.shape
    return (slice(max(rs.start - margin, 0), min(rs.stop + margin, h)),
            slice(max(cs.start - margin, 0), min(cs.stop + margin, w)))
