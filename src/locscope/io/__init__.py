"""Readers for every input format: microscopy images, sequences and label tables.

>>> from locscope.io import read_image, read_images, read_sequences
"""

from __future__ import annotations

from locscope.io.images import ImageRecord, read_image, read_images
from locscope.io.sequences import SequenceRecord, read_sequences, validate_sequence

__all__ = ["ImageRecord", "SequenceRecord", "read_image", "read_images", "read_sequences", "validate_sequence"]
