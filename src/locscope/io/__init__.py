"""Readers for every input format: microscopy images, sequences and label tables.

>>> from locscope.io import read_image, read_images, read_sequences
"""

from __future__ import annotations

from locscope.io.images import ImageRecord, read_image, read_images, read_single_channel
from locscope.io.sequences import (
    SequenceRecord, read_sequence_text, read_sequences, validate_sequence, validate_template,
)

__all__ = ["ImageRecord", "SequenceRecord", "read_image", "read_images", "read_sequence_text", "read_sequences",
           "read_single_channel", "validate_sequence", "validate_template"]
