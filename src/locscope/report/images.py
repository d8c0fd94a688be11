"""Pictures for people: landmark composites and sample grids (PNG, written atomically).

Pipelines and the training gate write pictures through this package; models never do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from locscope.utils.atomic import atomic_path


def landmark_composite(landmarks: np.ndarray, channels: tuple[str, ...]) -> np.ndarray:
    """``(n, H, W)`` landmarks in [0, 1] -> ``(H, W, 3)`` RGB: microtubules red, ER green, nucleus blue."""
    rgb = np.zeros(landmarks.shape[1:] + (3,), np.float32)
    colour = {"microtubules": 0, "er": 1, "nucleus": 2}
    for image, name in zip(landmarks, channels):
        if name in colour:
            rgb[..., colour[name]] = np.maximum(rgb[..., colour[name]], image)
    return rgb


def write_sample_grid(path: Path, images: np.ndarray, generated: list[np.ndarray], channels: tuple[str, ...],
                      scale: int = 4) -> None:
    """PNG grid, one row per item: landmark composite | real protein | each generated image; inputs in [-1, 1]."""
    from PIL import Image

    rows = []
    for i in range(images.shape[0]):
        unit = (images[i] + 1) / 2
        tiles = [landmark_composite(unit[1:], channels), np.repeat(unit[0][..., None], 3, -1)]
        tiles += [np.repeat(((g[i, 0] + 1) / 2)[..., None], 3, -1) for g in generated]
        rows.append(np.concatenate([np.pad(t, ((1, 1), (1, 1), (0, 0)), constant_values=1.0) for t in tiles], 1))
    grid = (np.clip(np.concatenate(rows, 0), 0, 1) * 255).astype(np.uint8)
    grid = np.kron(grid, np.ones((scale, scale, 1), np.uint8))
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")


__all__ = ["landmark_composite", "write_sample_grid"]
