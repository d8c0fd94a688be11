"""``locscope classify``: the most probable localization classes of single cells with a SubCell model.

The loop: load the model (:mod:`locscope.models.hub`) -> read the images into cells (optionally segmenting fields of
view) -> :func:`locscope.pipelines.embed.embed_cells` -> the ``top`` classes of each cell.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from locscope.errors import ArgumentError
from locscope.pipelines.embed import (
    EmbeddingResult, cells_from_images, embed_cells, load_model, resolve_image_size, top_classes,
)
from locscope.utils.device import resolve_device


def classify_images(images: Sequence[str | Path], *, model: str | Path | None = None, channels: str | None = None,
                    channel_order: Sequence[str] | None = None, segment: bool = False, crop_size: int = 512,
                    output_size: int | None = None, top: int = 3, batch_size: int = 16, precision: str = "auto",
                    backend: str = "auto", calibration_cells: int = 64, use_cache: bool = True,
                    image_size: int | None = None, device: str = "auto",
                    ) -> tuple[list[tuple[str, list[tuple[str, float]]]], EmbeddingResult]:
    """Classify the cells of ``images``.

    Parameters
    ----------
    images : sequence of path
        Multi-channel images (TIFF stacks, HPA RGB composites), one cell each, or fields of view with ``segment``.
    model : str or path, optional
        Bundled name, model directory or published ``model_config.yaml`` (default ``subcell-tiny``).
    channels : {'rybg', 'rbg', 'ybg', 'bg'}, optional
        Channel variant of a published model.
    channel_order : sequence of str, optional
        Canonical channel names of the files' channels, in order.
    segment, crop_size, output_size
        Segment fields of view into ``crop_size`` crops (resized to ``output_size``) first.
    top : int
        Classes reported per cell.
    batch_size, precision, backend, calibration_cells, use_cache, image_size, device
        How SubCell runs (:func:`locscope.pipelines.embed.embed_cells`).

    Returns
    -------
    ranked : list of (str, list of (str, float))
        Per cell: its id and its ``top`` classes with their probabilities, most probable first.
    result : EmbeddingResult
        Embeddings, probabilities and how inference ran.

    Raises
    ------
    ArgumentError
        If the model has no classifiers.
    """
    subcell = load_model(model, device=resolve_device(device), channels=channels)
    cells = cells_from_images(images, subcell.config.channels, channel_order=channel_order, segment=segment,
                              crop_size=crop_size, output_size=output_size)
    result = embed_cells(subcell, cells, batch_size=batch_size, precision=precision, progress=False,
                         image_size=resolve_image_size(model, subcell, image_size), backend=backend,
                         calibration_cells=calibration_cells, use_cache=use_cache)
    if result.probabilities is None:
        raise ArgumentError("model", f"{model}: this model has no classifiers")
    return list(zip(result.ids, top_classes(result.probabilities, result.class_names, k=top))), result


__all__ = ["classify_images"]
