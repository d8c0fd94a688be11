"""What every family's ``generate`` writes in common: the result record, output-folder names, preview scale and the
per-pixel probability map (CELL-E 2's "PDF" from K samples); and the demo's bundled inputs (:func:`demo_proteins`,
:data:`DEMO_LANDMARKS`), which ``locscope demo``, the web app and the benchmarks share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from locscope.errors import InputError
from locscope.utils.filenames import file_name_for_id

PREVIEW_SCALE = 4  # PNGs show each model pixel as 4 x 4 pixels
OUTPUT_FILES = ("summary.json", "report.html")  # every generate output holds them (earlier outputs are recognised)
# rows of small samples, the K samples of a protein side by side
SAMPLE_TABLE_STYLE = "td{border-bottom:1px solid #ddd} img{width:96px;margin:1px} td.samples{white-space:nowrap}"
DEMO_PROTEINS = "examples/human_proteins.fasta"  # bundled assets (locscope.models.hub.asset_path)
DEMO_LANDMARKS = "examples/landmarks/cell_64"


@dataclass(frozen=True)
class DemoProtein:
    """One example protein of the demo: its FASTA id, header description, annotated level-3 class and sequence."""

    id: str
    description: str
    expected_level3: str
    sequence: str


def demo_proteins() -> list[DemoProtein]:
    """The demo's example proteins (``assets/examples/human_proteins.fasta``); each header names its annotated
    level-3 class as ``expected_level3=CLASS``."""
    from locscope.io.sequences import read_sequences
    from locscope.models.hub import asset_path

    return [DemoProtein(r.id, r.description, r.description.rpartition("expected_level3=")[2].split()[0], r.sequence)
            for r in read_sequences(asset_path(DEMO_PROTEINS))]


def probability_map(images: np.ndarray) -> np.ndarray:
    """Per-pixel probability ``(H, W)`` that the protein is there: the fraction of ``images`` ``(K, H, W)`` in which
    the pixel is above that image's Otsu threshold."""
    from skimage.filters import threshold_otsu

    binary = [image > threshold_otsu(image) if image.max() > image.min() else np.zeros_like(image, bool)
              for image in images]
    return np.mean(binary, axis=0).astype(np.float32)


@dataclass
class GenerateResult:
    """What :func:`generate` wrote: per-sequence summaries and the report path."""

    out_dir: Path
    report: Path
    sequences: list[dict]
    network_evaluations: int
    seconds_per_image: float


def folder_name(name: str, used: dict[str, str]) -> str:
    """The sub-folder of sequence ``name`` (:func:`locscope.utils.filenames.file_name_for_id`); ids must be unique."""
    folder = file_name_for_id(name)
    if folder in used:
        raise InputError(f"sequence id {name!r}: same file name as sequence {used[folder]!r}; ids must be unique")
    used[folder] = name
    return folder
