"""Canonical channel names, shared by every reader, store, model and report.

Fluorescence landmarks as HPA images them, the protein of interest, brightfield, and the five Cell Painting
channels. Readers translate file-specific names (HPA colours, OpenCell dyes, ProtiCelli orders) to these.
"""

from __future__ import annotations

PROTEIN = "protein"
NUCLEUS = "nucleus"
ER = "er"
MICROTUBULES = "microtubules"
BRIGHTFIELD = "brightfield"
# Cell Painting: DNA, RNA, ER, AGP (actin/Golgi/plasma membrane), mitochondria.
DNA, RNA, AGP, MITO = "dna", "rna", "agp", "mito"

LANDMARKS: tuple[str, ...] = (NUCLEUS, ER, MICROTUBULES)
FLUORESCENCE: tuple[str, ...] = (PROTEIN, NUCLEUS, ER, MICROTUBULES)
CELL_PAINTING: tuple[str, ...] = (DNA, RNA, ER, AGP, MITO)
ALL_CHANNELS: tuple[str, ...] = (PROTEIN, NUCLEUS, ER, MICROTUBULES, BRIGHTFIELD, DNA, RNA, AGP, MITO)

# Aliases seen in file names and metadata -> canonical name.
ALIASES: dict[str, str] = {
    "protein": PROTEIN, "green": PROTEIN, "gfp": PROTEIN, "mng": PROTEIN, "mneongreen": PROTEIN, "target": PROTEIN,
    "nucleus": NUCLEUS, "nucl": NUCLEUS, "nuclei": NUCLEUS, "blue": NUCLEUS, "dapi": NUCLEUS, "hoechst": NUCLEUS,
    "er": ER, "yellow": ER, "endoplasmic_reticulum": ER,
    "microtubules": MICROTUBULES, "microtubule": MICROTUBULES, "mt": MICROTUBULES, "red": MICROTUBULES,
    "tubulin": MICROTUBULES,
    "brightfield": BRIGHTFIELD, "bf": BRIGHTFIELD,
    "dna": DNA, "rna": RNA, "agp": AGP, "mito": MITO, "mitochondria": MITO,
}


def canonical_channel(name: str) -> str:
    """Return the canonical channel name for ``name`` (case-insensitive), or raise ``ValueError``.

    Examples
    --------
    >>> canonical_channel("Hoechst")
    'nucleus'
    """
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key not in ALIASES:
        raise ValueError(f"unknown channel name {name!r}; accepted: {', '.join(ALL_CHANNELS)}")
    return ALIASES[key]
