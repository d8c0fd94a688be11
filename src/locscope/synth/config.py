"""Settings of the virtual-cell simulator: one flat dataclass, saved into every store it writes."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from locscope.channels import ER, LANDMARKS, MICROTUBULES, NUCLEUS
from locscope.errors import InputError

Mode = Literal["crop", "field"]

#: Cell Painting perturbation classes: each changes the phenotype in a known way.
PERTURBATIONS: tuple[str, ...] = (
    "control", "fragmented-mitochondria", "condensed-nuclei", "enlarged-cells", "disrupted-microtubules",
)


@dataclass(frozen=True)
class SimulatorConfig:
    """Settings of :func:`locscope.synth.render_cell` and friends.

    Parameters
    ----------
    size : int
        Images are ``(size, size)`` pixels (8 to 1024; 32-64 for CPU training, 128-512 for figures).
    mode : {'crop', 'field'}
        ``'crop'``: one cell centred in the image. ``'field'``: several cells, touching each other and cut by the border.
    pixel_size_nm : float or None
        Physical pixel size. ``None`` picks one so that a cell of ``cell_diameter_um`` spans ``cell_fill`` of a crop, or
        so that about ``cells_per_field`` cells fill a field.
    cell_diameter_um : float
        Mean cell diameter in micrometres (HeLa/U2OS-like adherent cells: 20-40).
    cell_fill : float
        Fraction of a crop's side the mean cell spans (crop mode with ``pixel_size_nm=None``).
    cells_per_field : tuple of int
        Inclusive range of cell numbers in a field (field mode).
    neighbours : bool
        Crop mode: also draw 2-4 neighbouring cells around the centred one, touching it and cut by the border, as in
        HPA single-cell crops (their compartments are in the masks too; the protein is expressed in all cells).
    landmarks : tuple of str
        Landmark channels to render, a subset of ``('nucleus', 'er', 'microtubules')``.
    brightfield : bool
        Also render a ``brightfield`` channel.
    cell_painting : bool
        Also render the five Cell Painting channels ``dna, rna, er, agp, mito``.
    perturbation : str or None
        Cell Painting perturbation class (one of :data:`PERTURBATIONS`), ``'random'`` to draw one per image, or ``None``
        (control).
    blur_nm : float
        Standard deviation of the Gaussian point-spread function in nm (0 disables blur).
    background : float
        Additive background level (fraction of the full intensity range).
    illumination : float
        Amplitude of the smooth multiplicative illumination field (0 = flat).
    photons : float
        Photon count at full intensity for Poisson noise (0 disables shot noise).
    read_noise : float
        Standard deviation of additive Gaussian camera noise (fraction of the full range).
    intensity_variation : float
        Log-normal sigma of per-cell brightness / expression variation.
    optics : bool
        Apply blur, illumination, background and noise (``False`` gives the clean ground-truth rendering).
    """

    size: int = 64
    mode: Mode = "crop"
    pixel_size_nm: float | None = None
    cell_diameter_um: float = 28.0
    cell_fill: float = 0.8
    cells_per_field: tuple[int, int] = (3, 6)
    neighbours: bool = False
    landmarks: tuple[str, ...] = LANDMARKS
    brightfield: bool = False
    cell_painting: bool = False
    perturbation: str | None = None
    blur_nm: float = 160.0
    background: float = 0.03
    illumination: float = 0.15
    photons: float = 300.0
    read_noise: float = 0.006
    intensity_variation: float = 0.25
    optics: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or not 8 <= self.size <= 1024:
            raise InputError(f"SimulatorConfig.size={self.size!r}: expected an integer from 8 to 1024")
        if self.mode not in ("crop", "field"):
            raise InputError(f"SimulatorConfig.mode={self.mode!r}: accepted values are 'crop', 'field'")
        if self.pixel_size_nm is not None and not self.pixel_size_nm > 0:
            raise InputError(f"SimulatorConfig.pixel_size_nm={self.pixel_size_nm!r}: expected a positive number or None")
        unknown = [c for c in self.landmarks if c not in (NUCLEUS, ER, MICROTUBULES)]
        if unknown:
            raise InputError(f"SimulatorConfig.landmarks: unknown channel(s) {unknown}; accepted: nucleus, er, microtubules")
        lo, hi = self.cells_per_field
        if not 1 <= lo <= hi:
            raise InputError(f"SimulatorConfig.cells_per_field={self.cells_per_field!r}: expected 1 <= min <= max")
        if self.perturbation is not None and self.perturbation != "random" and self.perturbation not in PERTURBATIONS:
            raise InputError(
                f"SimulatorConfig.perturbation={self.perturbation!r}: accepted values are None, 'random', "
                + ", ".join(PERTURBATIONS)
            )
        for name in ("blur_nm", "background", "illumination", "photons", "read_noise", "intensity_variation"):
            if getattr(self, name) < 0:
                raise InputError(f"SimulatorConfig.{name}={getattr(self, name)!r}: expected a value >= 0")

    @property
    def resolved_pixel_size_nm(self) -> float:
        """The pixel size in nm actually used (see ``pixel_size_nm``)."""
        if self.pixel_size_nm is not None:
            return float(self.pixel_size_nm)
        if self.mode == "crop":
            return self.cell_diameter_um * 1000.0 / (self.cell_fill * self.size)
        mean_cells = 0.5 * (self.cells_per_field[0] + self.cells_per_field[1])
        return self.cell_diameter_um * 1000.0 * 0.85 * math.sqrt(mean_cells) / self.size

    @property
    def channels(self) -> tuple[str, ...]:
        """Image channels a simulated cell carries besides ``protein`` (landmarks, brightfield, Cell Painting)."""
        out = list(self.landmarks)
        if self.brightfield:
            out.append("brightfield")
        if self.cell_painting:
            out.extend(c for c in ("dna", "rna", "er", "agp", "mito") if c not in out)
        return tuple(out)

    def to_dict(self) -> dict:
        """Plain-JSON settings (stored in ``store.attrs['generator']``)."""
        return {**dataclasses.asdict(self), "resolved_pixel_size_nm": self.resolved_pixel_size_nm}

    @classmethod
    def from_dict(cls, data: dict) -> "SimulatorConfig":
        """Inverse of :meth:`to_dict` (derived keys are ignored; unknown keys are an error)."""
        data = {k: v for k, v in data.items() if k != "resolved_pixel_size_nm"}
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise InputError(f"SimulatorConfig: unknown field(s) {', '.join(unknown)}")
        for key in ("cells_per_field", "landmarks"):
            if key in data and isinstance(data[key], list):
                data[key] = tuple(data[key])
        return cls(**data)
