"""Exact masks and intensity patterns for every level-1 compartment visible in a 2-D image, for one cell.

Each compartment is a boolean mask (the ground truth a protein image is scored against) and a non-negative pattern
(how a protein that lives there looks: textured, brighter blob centres). Patterns are zero outside their mask.
Sizes are set in micrometres and converted with the pixel size, so a cell looks the same at 32 and 512 px.

Structures (typical human cell line values):
nucleoplasm (nucleus minus nucleoli), nucleoli (1-4 blobs, 0.8-1.6 um), nucleoli-fibrillar-center (dots inside
nucleoli), nuclear-speckles (irregular interchromatin blobs), nuclear-bodies (2-8 dots, 0.3-0.5 um), nuclear-membrane
(rim of the nucleus), cytosol (cytoplasm, thicker near the nucleus), endoplasmic-reticulum (reticular network denser near
the nucleus), golgi-apparatus (perinuclear ribbon of stacks next to the centrosome), vesicles / endosomes / lysosomes /
peroxisomes (puncta: uniform / peripheral / perinuclear / small and many), lipid-droplets (few large round droplets),
mitochondria (tubules, denser near the nucleus), plasma-membrane (rim of the cell), actin-filaments (stress fibres along
the long axis + cortex), microtubules (filaments radiating from the centrosome), intermediate-filaments (curved filaments
wrapping around the nucleus), centrosome (a pair of dots beside the nucleus). ``cytoskeleton`` (a level-1 class for
proteins annotated only as "cytoskeleton") is the union of the three filament systems.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from locscope.data.ontology import SIMULATOR_COMPARTMENTS
from locscope.synth.draw import clip_paths, discs, random_walks, rasterize, sample_points, smooth_noise

#: Compartments rendered for every cell, named by their level-1 ontology class.
COMPARTMENTS: tuple[str, ...] = SIMULATOR_COMPARTMENTS


@dataclass
class CellFrame:
    """One cell inside its bounding window (all arrays ``(h, w)`` of the window, positions in window pixels).

    Attributes
    ----------
    cell, nucleus, cytoplasm : ndarray of bool
        This cell's territory, its nucleus, and territory minus nucleus.
    radial : ndarray of float32
        0 at the nuclear border -> 1 at the plasma membrane (cytoplasm only; 0 elsewhere).
    nucleus_depth, cell_depth : ndarray of float32
        Distance in px to the nearest pixel outside the nucleus / the cell.
    centrosome, cell_centre : ndarray, shape (2,)
    cell_radius, nucleus_radius : float
        Mean radii in px.
    px_per_um : float
        Pixels per micrometre.
    long_axis : float
        Direction of the cell's long axis, radians.
    """

    cell: np.ndarray
    nucleus: np.ndarray
    cytoplasm: np.ndarray
    radial: np.ndarray
    nucleus_depth: np.ndarray
    cell_depth: np.ndarray
    centrosome: np.ndarray
    cell_centre: np.ndarray
    cell_radius: float
    nucleus_radius: float
    px_per_um: float
    long_axis: float

    @property
    def shape(self) -> tuple[int, int]:
        return self.cell.shape  # type: ignore[return-value]

    def um(self, value: float) -> float:
        """Micrometres -> pixels."""
        return value * self.px_per_um


def make_frame(cell: np.ndarray, nucleus: np.ndarray, centrosome: np.ndarray, cell_centre: np.ndarray,
               cell_radius: float, nucleus_radius: float, px_per_um: float, long_axis: float) -> CellFrame:
    """Derive the distance maps of a :class:`CellFrame` from the cell and nucleus masks of a window."""
    cytoplasm = cell & ~nucleus
    cell_depth = ndimage.distance_transform_edt(cell).astype(np.float32)
    nucleus_depth = ndimage.distance_transform_edt(nucleus).astype(np.float32)
    from_nucleus = ndimage.distance_transform_edt(~nucleus).astype(np.float32) if nucleus.any() else cell_depth
    radial = np.where(cytoplasm, from_nucleus / np.maximum(from_nucleus + cell_depth, 1e-6), 0.0).astype(np.float32)
    return CellFrame(cell, nucleus, cytoplasm, radial, nucleus_depth, cell_depth, np.asarray(centrosome, float),
                     np.asarray(cell_centre, float), float(cell_radius), float(nucleus_radius), float(px_per_um),
                     float(long_axis))


def _one_pixel(region: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """A mask with the single pixel of ``region`` where ``weight`` is largest (empty if ``region`` is empty).

    Keeps a compartment non-empty when it is smaller than a pixel at the chosen image size.
    """
    out = np.zeros(region.shape, dtype=bool)
    if region.any():
        out[np.unravel_index(np.argmax(np.where(region, weight, -np.inf)), region.shape)] = True
    return out


def _texture(rng: np.random.Generator, frame: CellFrame, sigma_um: float, amount: float) -> np.ndarray:
    """A multiplicative texture ``1 + amount * noise`` clipped to [0.2, 2]."""
    noise = smooth_noise(rng, frame.shape, max(frame.um(sigma_um), 0.6))
    return np.clip(1.0 + amount * noise, 0.2, 2.0).astype(np.float32)


def _puncta(rng: np.random.Generator, frame: CellFrame, weight: np.ndarray, count: int, radius_um: tuple[float, float],
            region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``count`` round puncta with radii drawn in ``radius_um`` at positions drawn from ``weight``, within ``region``."""
    pts = sample_points(rng, weight * region, count)
    radii = np.maximum(rng.uniform(*radius_um, size=len(pts)) * frame.px_per_um, 0.5)
    mask, profile = discs(frame.shape, pts, radii, within=region)
    return mask, 0.4 * mask + 0.6 * profile


def _filaments(paths: np.ndarray, keep: np.ndarray, frame: CellFrame, region: np.ndarray,
               brightness: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise kept path points into (mask, pattern) restricted to ``region``."""
    weights = np.ones(paths.shape[:2]) if brightness is None else np.broadcast_to(brightness[:, None], paths.shape[:2])
    raster = rasterize(paths[keep], weights[keep], frame.shape)
    mask = (raster > 0) & region
    pattern = np.where(mask, np.minimum(raster, 3.0) / 3.0 * 0.5 + 0.5, 0.0).astype(np.float32)
    return mask, pattern


def build_compartments(frame: CellFrame, rng: np.random.Generator,
                       perturbation: str | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Masks and patterns of every compartment in :data:`COMPARTMENTS` for one cell.

    Parameters
    ----------
    frame : CellFrame
        The cell's window.
    rng : numpy.random.Generator
        Source of all randomness (drawn in a fixed order: deterministic for a seed).
    perturbation : str, optional
        ``'fragmented-mitochondria'`` changes the mitochondria; ``'disrupted-microtubules'`` the microtubules and,
        as without microtubules in cells, the Golgi (scattered mini-stacks) and the ER (retracted towards the
        nucleus); other classes act on the geometry (see :mod:`locscope.synth.cellpainting`).

    Returns
    -------
    dict
        ``name -> (mask, pattern)``: bool and float32 arrays of the window's shape.
    """
    shape = frame.shape
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    nuc, cyto = frame.nucleus, frame.cytoplasm
    rim_px = max(1.0, frame.um(0.45))

    # --- nucleus: membrane rim, nucleoli with fibrillar centres, speckles, bodies, nucleoplasm ---
    membrane = nuc & (frame.nucleus_depth <= rim_px)
    if not membrane.any():
        membrane = nuc.copy()
    interior = nuc & ~membrane
    if not interior.any():
        interior = nuc.copy()
    n_nucleoli = int(rng.integers(1, 5))
    r_nucleolus = np.clip(frame.nucleus_radius * rng.uniform(0.14, 0.22, size=n_nucleoli), 0.6, None)
    safe = interior & (frame.nucleus_depth > rim_px + 0.8 * float(r_nucleolus.mean()))
    pts = sample_points(rng, (safe if safe.any() else interior).astype(np.float32), n_nucleoli)
    nucleoli, nucleoli_profile = discs(shape, pts, r_nucleolus, within=interior)
    if not nucleoli.any():  # tiny images: one pixel at the deepest point
        nucleoli = _one_pixel(interior, weight=frame.nucleus_depth)
        nucleoli_profile = nucleoli.astype(np.float32)
    out["nucleoli"] = (nucleoli, (0.5 * nucleoli + 0.5 * nucleoli_profile) * _texture(rng, frame, 0.3, 0.2))
    # fibrillar centres: 2-4 small dots per nucleolus, at random points of the nucleoli
    n_fc = int(rng.integers(2, 5)) * n_nucleoli
    fc_pts = sample_points(rng, nucleoli.astype(np.float32) * (0.3 + nucleoli_profile), n_fc)
    fc, fc_profile = discs(shape, fc_pts, np.full(len(fc_pts), max(frame.um(0.18), 0.5)), within=nucleoli)
    out["nucleoli-fibrillar-center"] = (fc, 0.5 * fc + 0.5 * fc_profile)
    nucleoplasm = nuc & ~nucleoli
    if not nucleoplasm.any():
        nucleoplasm = nuc & ~fc
    speckle_noise = smooth_noise(rng, shape, max(frame.um(0.35), 0.7))
    speckles = nucleoplasm & ~membrane & (speckle_noise > 1.2)
    if not speckles.any():
        speckles = _one_pixel(nucleoplasm, weight=speckle_noise)
    out["nuclear-speckles"] = (speckles, np.where(speckles, 0.5 + 0.25 * np.clip(speckle_noise - 1.2, 0, 2), 0.0))
    n_bodies = int(rng.integers(2, 9))
    body_region = nucleoplasm & ~speckles & ~membrane
    if not body_region.any():
        body_region = nucleoplasm
    bodies, bodies_profile = _puncta(rng, frame, np.ones(shape, np.float32), n_bodies, (0.25, 0.45), body_region)
    if not bodies.any():
        bodies = _one_pixel(body_region, weight=-frame.nucleus_depth)
        bodies_profile = bodies.astype(np.float32)
    out["nuclear-bodies"] = (bodies, bodies_profile)
    out["nuclear-membrane"] = (membrane, membrane * (0.8 + 0.2 * _texture(rng, frame, 0.4, 0.5)))
    out["nucleoplasm"] = (nucleoplasm, nucleoplasm * _texture(rng, frame, 0.5, 0.15))

    # --- cytoplasm ---
    thickness = (1.25 - 0.6 * frame.radial) * cyto  # thicker, so brighter, near the nucleus
    out["cytosol"] = (cyto.copy(), thickness * _texture(rng, frame, 0.6, 0.1))
    perinuclear = np.exp(-frame.radial / 0.35) * cyto

    # the zero set of band-limited noise is a mesh of closed loops: the reticular network of ER tubules. Below ~1.5 px
    # per mesh scale it is drawn at up to 4x finer sampling and averaged down (an unresolved mesh is a fine texture)
    sigma_px = frame.um(0.2)
    factor = int(np.clip(np.ceil(1.5 / max(sigma_px, 1e-6)), 1, 4))
    fine_shape = (shape[0] * factor, shape[1] * factor)
    ridge = np.exp(-(smooth_noise(rng, fine_shape, max(sigma_px * factor, 0.75)) / 0.35) ** 2)
    if factor > 1:
        ridge = ridge.reshape(shape[0], factor, shape[1], factor).mean(axis=(1, 3))
    # without microtubules (nocodazole-like) the ER network retracts towards the nucleus
    disrupted = perturbation == "disrupted-microtubules"
    er_density = ridge * (0.3 + 0.7 * np.exp(-frame.radial / (0.25 if disrupted else 0.5)))
    # the network thins towards the periphery: the ridge threshold rises from the nucleus to the plasma membrane
    base = 0.4 if factor == 1 or not cyto.any() else float(np.quantile(ridge[cyto], 0.5))
    top = float(ridge[cyto].max()) if cyto.any() else 1.0
    er = cyto & (ridge > base + (top - base) * (0.9 if disrupted else 0.35) * frame.radial)
    if not er.any():
        er = _one_pixel(cyto, weight=er_density)
    out["endoplasmic-reticulum"] = (er, np.where(er, er_density, 0.0))

    # Golgi: a ribbon of stacks hugging the nucleus on the centrosome side
    near_centrosome = np.exp(-np.hypot(*(np.mgrid[0:shape[0], 0:shape[1]] - frame.centrosome[:, None, None]))
                             / max(frame.um(2.5), 1.0))
    golgi_weight = near_centrosome * np.exp(-frame.radial / 0.2) * cyto
    n_golgi = int(rng.integers(5, 12))
    if disrupted:  # without microtubules the ribbon breaks into mini-stacks scattered through the cytoplasm
        golgi_weight, n_golgi = (0.3 + frame.radial) * cyto, 3 * n_golgi
    golgi, golgi_profile = _puncta(rng, frame, golgi_weight, n_golgi, (0.35, 0.7), cyto)
    out["golgi-apparatus"] = (golgi, golgi_profile)

    out["vesicles"] = _puncta(rng, frame, cyto.astype(np.float32), int(rng.integers(20, 50)), (0.15, 0.3), cyto)
    out["endosomes"] = _puncta(rng, frame, (0.3 + frame.radial) * cyto, int(rng.integers(15, 35)), (0.2, 0.4), cyto)
    out["lysosomes"] = _puncta(rng, frame, perinuclear, int(rng.integers(10, 25)), (0.25, 0.5), cyto)
    out["peroxisomes"] = _puncta(rng, frame, cyto.astype(np.float32), int(rng.integers(30, 70)), (0.1, 0.2), cyto)
    droplets, droplet_profile = _puncta(rng, frame, perinuclear + 0.2 * cyto, int(rng.integers(3, 10)), (0.5, 1.0), cyto)
    # coated droplets: brighter rim than core
    out["lipid-droplets"] = (droplets, np.where(droplets, 1.0 - 0.5 * droplet_profile, 0.0))

    # mitochondria: tubules (or fragments), denser near the nucleus
    fragmented = perturbation == "fragmented-mitochondria"
    n_mito = int(rng.integers(40, 90)) if fragmented else int(rng.integers(25, 55))
    starts = sample_points(rng, (0.2 + perinuclear) * cyto, n_mito)
    step = 0.6
    length_um = 0.4 if fragmented else float(rng.uniform(1.5, 3.0))
    n_steps = max(2, int(frame.um(length_um) / step))
    paths = random_walks(rng, starts, rng.uniform(0, 2 * np.pi, len(starts)), n_steps, step, turn_sd=0.25)
    out["mitochondria"] = _filaments(paths, clip_paths(paths, cyto), frame, cyto)

    pm = frame.cell & (frame.cell_depth <= rim_px)
    out["plasma-membrane"] = (pm, pm * (0.8 + 0.2 * _texture(rng, frame, 0.8, 0.5)))

    # actin: stress fibres roughly along the long axis, across the cell, plus the cortex under the membrane
    n_fibres = int(rng.integers(6, 14))
    axis = frame.long_axis + rng.normal(0.0, 0.15, n_fibres)
    perp = np.stack([-np.sin(axis), np.cos(axis)], axis=-1)
    along = np.stack([np.cos(axis), np.sin(axis)], axis=-1)
    offsets = rng.uniform(-0.85, 0.85, n_fibres)[:, None] * frame.cell_radius
    fibre_starts = frame.cell_centre + offsets * perp - 1.5 * frame.cell_radius * along
    n_fibre_steps = int(3.0 * frame.cell_radius / 0.6) + 1
    fibres = random_walks(rng, fibre_starts, axis, n_fibre_steps, 0.6, turn_sd=0.01)
    rows = np.clip(np.rint(fibres[..., 0]).astype(int), 0, shape[0] - 1)
    cols = np.clip(np.rint(fibres[..., 1]).astype(int), 0, shape[1] - 1)
    in_cell = frame.cell[rows, cols] & (frame.cell_depth[rows, cols] > rim_px)
    actin, actin_pattern = _filaments(fibres, in_cell, frame, frame.cell, rng.uniform(0.5, 1.0, n_fibres))
    cortex = frame.cell & (frame.cell_depth <= rim_px)
    out["actin-filaments"] = (actin | cortex, np.maximum(actin_pattern, 0.6 * cortex))

    # microtubules: from the centrosome outwards, gently curved, until they reach the cell edge
    microtubules, mt_pattern = microtubule_network(frame, rng, disrupted=perturbation == "disrupted-microtubules")
    out["microtubules"] = (microtubules, mt_pattern)

    # intermediate filaments (vimentin-like): long curved filaments wrapping around the nucleus
    n_if = int(rng.integers(12, 24))
    if_starts = sample_points(rng, perinuclear * (frame.radial < 0.4), n_if)
    radial_dir = np.arctan2(if_starts[:, 1] - frame.cell_centre[1], if_starts[:, 0] - frame.cell_centre[0]) \
        if len(if_starts) else np.zeros(0)
    heading = radial_dir + np.pi / 2 * rng.choice([-1.0, 1.0], size=len(if_starts)) + rng.normal(0, 0.3, len(if_starts))
    if_steps = max(4, int(frame.cell_radius * 1.5 / 0.6))
    bend = rng.normal(0.0, 0.6 / max(frame.cell_radius, 4.0), len(if_starts))
    if_paths = random_walks(rng, if_starts, heading, if_steps, 0.6, turn_sd=0.08, drift=bend)
    out["intermediate-filaments"] = _filaments(if_paths, clip_paths(if_paths, cyto), frame, cyto)

    # centrosome: a pair of centrioles
    pair = frame.centrosome + np.array([[0.0, 0.0], rng.normal(0.0, frame.um(0.4), 2)])
    centrosome, centrosome_profile = discs(shape, pair, np.full(2, max(frame.um(0.3), 0.5)), within=frame.cell)
    if not centrosome.any():
        centrosome = _one_pixel(cyto, weight=-frame.radial)
        centrosome_profile = centrosome.astype(np.float32)
    out["centrosome"] = (centrosome, 0.4 * centrosome + 0.6 * centrosome_profile)

    skeleton = out["actin-filaments"][0] | out["microtubules"][0] | out["intermediate-filaments"][0]
    out["cytoskeleton"] = (skeleton, np.maximum.reduce([out[k][1] for k in
                                                         ("actin-filaments", "microtubules", "intermediate-filaments")]))
    return {name: (mask.astype(bool), np.where(mask, pattern, 0.0).astype(np.float32))
            for name, (mask, pattern) in out.items()}


def microtubule_network(frame: CellFrame, rng: np.random.Generator, disrupted: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Microtubules radiating from the centrosome (or short scattered fragments when ``disrupted``)."""
    shape = frame.shape
    # about one microtubule per pixel of cell radius: a dense aster at 256 px, distinguishable filaments at 32 px
    n = int(np.clip(frame.cell_radius * rng.uniform(0.9, 1.3), 16, 160))
    if disrupted:  # nocodazole-like: short fragments scattered through the cytoplasm, no aster
        starts = sample_points(rng, frame.cytoplasm.astype(np.float32), n)
        steps = max(2, int(frame.um(1.0) / 0.6))
        headings = rng.uniform(0, 2 * np.pi, len(starts))
    else:
        starts = np.repeat(frame.centrosome[None, :], n, axis=0) + rng.normal(0.0, 0.5, (n, 2))
        steps = int(2.2 * frame.cell_radius / 0.6) + 1
        headings = rng.uniform(0, 2 * np.pi, n)
    bend = rng.normal(0.0, 0.4 / max(frame.cell_radius, 4.0), len(starts))
    paths = random_walks(rng, starts, headings, steps, 0.6, turn_sd=0.07, drift=bend)
    keep = clip_paths(paths, frame.cell)
    mask, pattern = _filaments(paths, keep, frame, frame.cell, rng.uniform(0.4, 1.0, len(paths)))
    # in a 2-D projection microtubules run over and under the nucleus, out of focus: faint there
    return mask, np.where(frame.nucleus, 0.3 * pattern, pattern).astype(np.float32)
