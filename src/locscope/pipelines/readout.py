"""Reading compartments off model outputs: the one place for compartment shares, unmixing and level-3 / level-2
probabilities, used by generate, localize, design and explain. Class lists come from :mod:`locscope.data.ontology`.

- :func:`compartment_fractions`: level-3 shares of an image under simulator compartment masks (generate);
- :func:`standard_cells`, :func:`compartment_basis`, :func:`unmix_compartments`: level-1 shares of an image generated
  in a standard simulator cell, by non-negative least squares against the cell's compartment patterns (localize,
  design);
- :func:`level_probabilities`, :func:`level2_from_level3`: level-1 shares -> level-3 / level-2 probabilities;
- :func:`sequence_head_probabilities`: a CELL-Diff model's sequence heads as level-3 / level-2 probabilities;
- :class:`Localization`: what ``localize`` predictors return (level-3 / level-2 / level-1 probabilities, images);
- :func:`resolve_compartment`, :func:`top_shares`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from locscope.data import ontology
from locscope.errors import InputError

LEVEL3_CLASSES: tuple[str, ...] = tuple(c for c in ontology.LEVEL3 if c != "plastid")
LEVEL2_CLASSES: tuple[str, ...] = tuple(c for c in ontology.LEVEL2 if c != "plastid")
ENDOMEMBRANE_LEVEL2: tuple[str, ...] = ("endoplasmic-reticulum", "golgi-apparatus", "vesicles")
STANDARD_CELL_SEED = 7000
COMPARTMENTS: tuple[str, ...] = ontology.SIMULATOR_COMPARTMENTS   # level-1 shares are over these


# ------------------------------------------------------------------------------------------------ results
@dataclass
class Localization:
    """Predictions for a batch of sequences.

    Attributes
    ----------
    level3 : np.ndarray
        ``(N, 7)`` probabilities over :data:`LEVEL3_CLASSES`.
    level2 : np.ndarray
        ``(N, 9)`` probabilities over :data:`LEVEL2_CLASSES` (NaN where the method cannot tell, see the module doc).
    level1 : np.ndarray or None
        ``(N, len(COMPARTMENTS))`` image-derived level-1 shares (``None`` for ``method='head'``), or with
        ``level1_classes`` the localizer's level-1 probabilities over those classes.
    images : np.ndarray or None
        ``(N, K, H, W)`` generated images in [0, 1] (``None`` for ``method='head'``).
    level1_classes : tuple of str or None
        Classes of ``level1`` when it is reported (the localizer), else None.
    """

    level3: np.ndarray
    level2: np.ndarray
    level1: np.ndarray | None = None
    images: np.ndarray | None = None
    level1_classes: tuple[str, ...] | None = None

    def top(self, level: str = "level3") -> list[str]:
        """The most probable class of each sequence."""
        if level == "level3":
            probs, classes = self.level3, LEVEL3_CLASSES
        elif level == "level2":
            probs, classes = self.level2, LEVEL2_CLASSES
        elif level == "level1" and self.level1_classes is not None:
            probs, classes = self.level1, self.level1_classes
        else:
            raise ValueError(f"level={level!r}: accepted values are level3, level2"
                             + (", level1" if self.level1_classes else ""))
        return [classes[i] for i in np.nan_to_num(probs, nan=-1.0).argmax(1)]


# ------------------------------------------------------------------------------------------------ standard cells
@dataclass
class StandardCell:
    """A simulator cell used to read compartments off generated images.

    Attributes
    ----------
    landmarks : np.ndarray
        ``(n_landmarks, H, W)`` float32 in [0, 1], in the model's landmark order.
    basis : np.ndarray
        ``(H * W, n_compartments + 1)`` float64: each compartment's pattern through blur and illumination, then a
        constant background column.
    cell : locscope.synth.RenderedCell
    """

    landmarks: np.ndarray
    basis: np.ndarray
    cell: object = field(repr=False)


def standard_cells(image_size: int, landmark_channels: Sequence[str], n: int,
                   first_seed: int = STANDARD_CELL_SEED) -> list[StandardCell]:
    """Render ``n`` standard simulator crops of ``image_size`` pixels (seeds ``first_seed + k``)."""
    from locscope.synth import SimulatorConfig, render_cell

    cfg = SimulatorConfig(size=image_size)
    cells = []
    for k in range(n):
        cell = render_cell(cfg, seed=first_seed + k)
        landmarks = np.stack([cell.images[ch] for ch in landmark_channels]).astype(np.float32)
        cells.append(StandardCell(landmarks, compartment_basis(cell, cfg), cell))
    return cells


def compartment_basis(cell, config) -> np.ndarray:
    """Each level-1 compartment's protein pattern in a rendered simulator cell, through the cell's expression, blur and
    illumination: ``(H * W, len(COMPARTMENTS) + 1)`` float64, the last column a constant background.

    Parameters
    ----------
    cell : locscope.synth.RenderedCell
    config : locscope.synth.SimulatorConfig
        The configuration the cell was rendered with (blur and pixel size).
    """
    from scipy import ndimage

    sigma_px = config.blur_nm / config.resolved_pixel_size_nm
    expression = np.concatenate([[0.0], cell.expression]).astype(np.float32)[cell.instances]
    columns = [cell.illumination * ndimage.gaussian_filter(cell.patterns[c] * expression, sigma_px, mode="nearest")
               for c in COMPARTMENTS]
    pixels = columns[0].size
    return np.concatenate([np.stack(columns).reshape(len(COMPARTMENTS), -1), np.ones((1, pixels))]).T.astype(np.float64)


def unmix_compartments(image: np.ndarray, cell: "StandardCell | np.ndarray") -> np.ndarray:
    """Level-1 compartment shares of a protein image in a standard cell, ``(len(COMPARTMENTS),)`` summing to 1.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W)`` protein image in [0, 1] rendered (or generated) in ``cell``.
    cell : StandardCell or np.ndarray
        The cell, or its :func:`compartment_basis` directly.

    Returns
    -------
    np.ndarray
        Non-negative least-squares coefficients of the compartment patterns, normalised (uniform when all are 0).
    """
    from scipy.optimize import nnls

    basis = cell.basis if isinstance(cell, StandardCell) else cell
    coefficients, _ = nnls(basis, np.asarray(image, np.float64).ravel())
    shares = coefficients[:-1]
    total = shares.sum()
    return shares / total if total > 0 else np.full(shares.shape, 1.0 / shares.size)


def level_probabilities(level1_shares: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum level-1 shares ``(..., len(COMPARTMENTS))`` into level-3 ``(..., 7)`` and level-2 ``(..., 9)`` classes."""
    to3 = ontology.level_membership(COMPARTMENTS, LEVEL3_CLASSES).astype(np.float64)
    to2 = ontology.level_membership(COMPARTMENTS, LEVEL2_CLASSES, level=2).astype(np.float64)
    return level1_shares @ to3, level1_shares @ to2


def resolve_compartment(name: str) -> tuple[str, str]:
    """A target compartment name -> ``(level, canonical name)`` with level ``'level3'``, ``'level2'`` or ``'level1'``.

    Raises
    ------
    InputError
        For a name that is not a level-3, level-2 or simulated level-1 class.
    """
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    for level, classes in (("level3", LEVEL3_CLASSES), ("level2", LEVEL2_CLASSES), ("level1", COMPARTMENTS)):
        if key in classes:
            return level, key
    raise InputError(f"unknown compartment {name!r}; accepted: {', '.join(LEVEL3_CLASSES)} (level 3), "
                     f"{', '.join(c for c in LEVEL2_CLASSES if c not in LEVEL3_CLASSES)} (level 2), or a level-1 "
                     f"class such as nucleoplasm")


def sequence_head_probabilities(model, tokens: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
    """The sequence heads' level-3 ``(B, 7)`` (over :data:`LEVEL3_CLASSES`) and, for models with a fraction head,
    level-2 ``(B, 9)`` probabilities (else None), from ``tokens`` ``(B, L)`` alone.

    With a fraction head (a distribution over level-1 compartments) the level-3 probabilities are the mean of the
    level-3 head and the fraction head summed into level-3 classes; level 2 comes from the fraction head alone.

    Raises
    ------
    InputError
        If the model's compartment head does not predict the level-3 classes.
    """
    heads = tuple(model.config.compartment_classes)
    if set(heads) != set(LEVEL3_CLASSES):
        raise InputError(f"the model's compartment head predicts {heads}, not the level-3 classes")
    with torch.no_grad():
        context = model.encode_sequence(tokens)  # one encoder pass for both heads
    head3 = context.compartment_logits.float().softmax(-1).cpu().numpy()[:, [heads.index(c) for c in LEVEL3_CLASSES]]
    classes = model.config.fraction_classes
    if not classes:
        return head3, None
    fractions = context.fraction_logits.float().softmax(-1).cpu().numpy()
    level1 = np.zeros((len(fractions), len(COMPARTMENTS)))
    for j, name in enumerate(classes):
        if name in COMPARTMENTS:
            level1[:, COMPARTMENTS.index(name)] += fractions[:, j]
    from3, from2 = level_probabilities(level1 / np.clip(level1.sum(1, keepdims=True), 1e-12, None))
    return 0.5 * (head3 + from3), from2


def level2_from_level3(level3: np.ndarray, image_level2: np.ndarray | None) -> np.ndarray:
    """Level-2 probabilities consistent with ``level3``: classes that equal a level-3 class copy it; the endomembrane
    classes (ER, Golgi, vesicles) split the endomembrane probability as the image does (NaN without images)."""
    out = np.full((level3.shape[0], len(LEVEL2_CLASSES)), np.nan)
    endomembrane = [j for j, c in enumerate(LEVEL2_CLASSES) if c in ENDOMEMBRANE_LEVEL2]
    for j, name in enumerate(LEVEL2_CLASSES):
        if name in LEVEL3_CLASSES:
            out[:, j] = level3[:, LEVEL3_CLASSES.index(name)]
    if image_level2 is not None:
        parts = image_level2[:, endomembrane]
        split = parts / np.clip(parts.sum(1, keepdims=True), 1e-12, None)
        split[parts.sum(1) <= 0] = 1.0 / len(endomembrane)
        out[:, endomembrane] = split * level3[:, [LEVEL3_CLASSES.index("endomembrane-system")]]
    return out


def compartment_fractions(image: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, float]:
    """Share of a protein image's intensity in each level-3 class under simulator masks.

    Each pixel is assigned to the most specific level-1 compartment covering it (the smallest mask), the intensity
    above the image's 5th percentile (background) is summed per compartment and the level-1 sums are pooled into
    level-3 classes; shares sum to 1 over the cell (pixels outside every mask are ignored).

    Parameters
    ----------
    image : np.ndarray
        ``(H, W)`` non-negative intensities.
    masks : dict of str to np.ndarray
        Level-1 compartment name -> ``(H, W)`` bool.

    Returns
    -------
    dict of str to float
        Level-3 class -> share in [0, 1].
    """
    names = [n for n in masks if masks[n].any()]
    if not names:
        return {}
    areas = np.array([masks[n].sum() for n in names], dtype=np.float64)
    stack = np.stack([masks[n] for n in names])  # (M, H, W)
    cost = np.where(stack, areas[:, None, None], np.inf)
    owner = cost.argmin(0)
    inside = stack.any(0)
    signal = np.clip(image.astype(np.float64) - np.percentile(image, 5), 0, None) * inside
    sums = np.bincount(owner.ravel(), weights=signal.ravel(), minlength=len(names))
    total = sums.sum()
    shares: dict[str, float] = {}
    for name, value in zip(names, sums):
        level3 = ontology.to_level3(name)
        shares[level3] = shares.get(level3, 0.0) + (float(value / total) if total > 0 else 0.0)
    return dict(sorted(shares.items(), key=lambda kv: -kv[1]))


READOUT_MODEL = "compartment-readout"


def load_readout(model: str | None = READOUT_MODEL, device: str | torch.device = "cpu"):
    """The compartment read-out classifier (:class:`locscope.models.readout.ReadoutClassifier`) named ``model`` (the
    bundled one by default), or None when it is not installed."""
    from locscope.models import hub

    try:
        return hub.load(model, families=("readout",), device=device, argument="readout")
    except InputError:
        return None


def classify_level3(classifier, protein: np.ndarray, landmarks: np.ndarray,
                    landmark_channels: Sequence[str]) -> np.ndarray:
    """Level-3 probabilities of protein images by the read-out classifier, ``(N, len(classifier.config.classes))``.

    Parameters
    ----------
    classifier : locscope.models.readout.ReadoutClassifier
    protein : np.ndarray
        ``(N, H, W)`` protein images (any intensity range).
    landmarks : np.ndarray
        ``(n_landmarks, H, W)`` one cell's landmarks (shared by all images) or ``(N, n_landmarks, H, W)``, ordered as
        ``landmark_channels``; channels the classifier wants but ``landmark_channels`` lacks are zeros.
    landmark_channels : sequence of str
    """
    protein = np.asarray(protein, np.float32)
    landmarks = np.asarray(landmarks, np.float32)
    if landmarks.ndim == 3:
        landmarks = np.broadcast_to(landmarks, (len(protein), *landmarks.shape))
    wanted = classifier.config.landmark_channels
    stacked = np.zeros((len(protein), 1 + len(wanted), *protein.shape[-2:]), np.float32)
    stacked[:, 0] = protein
    for j, name in enumerate(wanted):
        if name in landmark_channels:
            stacked[:, 1 + j] = landmarks[:, list(landmark_channels).index(name)]
    return classifier.predict(torch.from_numpy(stacked)).numpy()


def top_shares(distribution: np.ndarray, classes: Sequence[str], n: int = 5,
               min_share: float = 0.005) -> dict[str, float]:
    """The ``n`` largest entries of a distribution ``(len(classes),)`` above ``min_share`` as ``{class: share}``."""
    order = np.argsort(-distribution)[:n]
    return {classes[i]: round(float(distribution[i]), 4) for i in order if distribution[i] > min_share}


__all__ = [
    "COMPARTMENTS", "ENDOMEMBRANE_LEVEL2", "LEVEL2_CLASSES", "LEVEL3_CLASSES", "READOUT_MODEL", "STANDARD_CELL_SEED",
    "StandardCell", "classify_level3", "compartment_basis", "load_readout",
    "compartment_fractions", "level2_from_level3", "level_probabilities", "resolve_compartment",
    "sequence_head_probabilities", "standard_cells", "top_shares", "unmix_compartments",
]
