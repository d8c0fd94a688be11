"""Seeding: every random choice in locscope flows from an explicit seed."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng(seed: int | None) -> np.random.Generator:
    """A NumPy generator from ``seed`` (``None`` -> fresh entropy)."""
    return np.random.default_rng(seed)
