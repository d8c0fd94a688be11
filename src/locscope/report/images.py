"""Pictures for people: PNG encoding, landmark composites, protein views and sample grids (written atomically).

Pipelines and the training gate write pictures through this package; models never do.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from locscope.utils.atomic import atomic_path


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A [0, 1] float image as uint8 (rounded, clipped); uint8 images are returned as they are."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def png_bytes(image: np.ndarray, scale: int = 1) -> bytes:
    """PNG bytes of a grey ``(H, W)`` or RGB ``(H, W, 3)`` image (uint8, or floats in [0, 1]), each pixel repeated
    ``scale`` x ``scale`` times (nearest-neighbour upscaling for viewing small images)."""
    from PIL import Image

    array = to_uint8(image)
    if scale > 1:
        array = np.kron(array, np.ones((scale, scale) + (1,) * (array.ndim - 2), np.uint8))
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(path: str | Path, image: np.ndarray, scale: int = 1) -> Path:
    """Write :func:`png_bytes` of ``image`` to ``path`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(png_bytes(image, scale))
    return path


def unit_to_uint16(image: np.ndarray) -> np.ndarray:
    """A [0, 1] float image as uint16 over the full range (``round(clip(x, 0, 1) * 65535)``)."""
    return (np.clip(image, 0, 1) * 65535).round().astype(np.uint16)


def write_tiff(path: str | Path, image: np.ndarray) -> Path:
    """Write ``image`` (``(H, W)`` or ``(C, H, W)``, its dtype kept) as a greyscale TIFF to ``path`` atomically."""
    import tifffile

    path = Path(path)
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, np.asarray(image), photometric="minisblack")
    return path


def protein_png(array: np.ndarray, nucleus: np.ndarray | None = None) -> bytes:
    """A protein image (green) over a nucleus landmark (blue) as PNG bytes, upscaled for viewing."""
    rgb = np.zeros((*array.shape, 3), np.float32)
    rgb[..., 1] = array / max(float(array.max()), 1e-6)
    if nucleus is not None:
        rgb[..., 2] = 0.6 * nucleus / max(float(nucleus.max()), 1e-6)
    return png_bytes((np.clip(rgb, 0, 1) * 255).astype(np.uint8), scale=max(1, 160 // array.shape[0]))


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
    rows = []
    for i in range(images.shape[0]):
        unit = (images[i] + 1) / 2
        tiles = [landmark_composite(unit[1:], channels), np.repeat(unit[0][..., None], 3, -1)]
        tiles += [np.repeat(((g[i, 0] + 1) / 2)[..., None], 3, -1) for g in generated]
        rows.append(np.concatenate([np.pad(t, ((1, 1), (1, 1), (0, 0)), constant_values=1.0) for t in tiles], 1))
    write_png(path, (np.clip(np.concatenate(rows, 0), 0, 1) * 255).astype(np.uint8), scale)


__all__ = ["landmark_composite", "png_bytes", "protein_png", "to_uint8", "write_png", "write_sample_grid"]
