"""Feature networks for FID and the feature-space metrics, chosen by
:func:`locscope.pipelines.evaluate.load_feature_network`.

Every network maps CELL-Diff's 8-bit FID images ``(B, 3, H, W)`` (R = 0, G = protein, B = nucleus; see
:func:`locscope.metrics.fid.fid_rgb`) to ``(B, D)`` features and has a ``name`` that reports must print:

1. ``inception-v3-pool3``: the published FID network, from a local pytorch-fid weights file (``--features PATH``);
2. ``locscope-image-encoder:<name>``: locscope's own image encoder (``locscope.models.image_encoder``), used when no
   Inception file is given;
3. ``handcrafted-v1``: a fixed, weight-free descriptor (intensity histograms, moments, an 8 x 8 intensity layout and
   the radial power spectrum of each channel, plus protein/nucleus overlap), used when neither is available. It is
   deterministic and sensitive to localization, but FIDs computed with it are on their own scale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from locscope.metrics.arrays import to_numpy
from locscope.utils.device import resolve_device


class FeatureNetwork(Protocol):
    """What the metrics need from a feature network."""

    name: str
    feature_dim: int

    def features(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 ``(B, 3, H, W)`` FID images -> float64 ``(B, feature_dim)``."""


class InceptionFeatureNetwork:
    """InceptionV3 pool3 (2048-d) from a local ``pt_inception-2015-12-05-*.pth`` file."""

    feature_dim = 2048

    def __init__(self, weights_path: str | Path, device: str = "auto") -> None:
        from locscope.metrics.inception import load_fid_inception

        self.device = resolve_device(device)
        self.model = load_fid_inception(weights_path, self.device)
        self.name = f"inception-v3-pool3 ({Path(weights_path).name})"

    @torch.no_grad()
    def features(self, rgb: np.ndarray) -> np.ndarray:
        images = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device, torch.float32) / 255.0
        return self.model(images).double().cpu().numpy()


class EncoderFeatureNetwork:
    """locscope's image encoder on the FID images: G -> ``protein``, B -> ``nucleus``, other channels zero."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder
        self.name = f"locscope-image-encoder:{encoder.name}"
        self.feature_dim = int(encoder.feature_dim)

    @torch.no_grad()
    def features(self, rgb: np.ndarray) -> np.ndarray:
        planes = torch.from_numpy(np.ascontiguousarray(rgb)).float() / 255.0  # (B, 3, H, W)
        by_channel = {"protein": planes[:, 1], "nucleus": planes[:, 2]}
        zeros = torch.zeros_like(planes[:, 0])
        stack = torch.stack([by_channel.get(name, zeros) for name in self.encoder.channels], dim=1)
        return to_numpy(self.encoder.embed(stack))


class HandcraftedFeatureNetwork:
    """Weight-free descriptor of the G (protein) and B (nucleus) planes; see the module docstring."""

    name = "handcrafted-v1"
    n_hist = 16
    grid = 8
    n_radial = 16
    feature_dim = 2 * (n_hist + 2 + grid * grid + n_radial) + 1

    def features(self, rgb: np.ndarray) -> np.ndarray:
        planes = to_numpy(rgb)[:, 1:3] / 255.0  # (B, 2, H, W): protein, nucleus in [0, 1]
        parts = []
        for c in range(2):
            plane = planes[:, c]
            hist = np.stack([np.histogram(p, bins=self.n_hist, range=(0.0, 1.0))[0] / p.size for p in plane])
            moments = np.stack([plane.mean(axis=(1, 2)), plane.std(axis=(1, 2))], axis=1)
            layout = F.adaptive_avg_pool2d(torch.from_numpy(plane)[:, None], self.grid).reshape(len(plane), -1).numpy()
            parts += [hist, moments, layout, self._radial_profile(plane)]
        protein, nucleus = planes[:, 0], planes[:, 1]
        in_nucleus = nucleus > nucleus.reshape(len(nucleus), -1).mean(axis=1)[:, None, None]
        overlap = (protein * in_nucleus).sum(axis=(1, 2)) / np.maximum(protein.sum(axis=(1, 2)), 1e-12)
        return np.concatenate(parts + [overlap[:, None]], axis=1)

    def _radial_profile(self, plane: np.ndarray) -> np.ndarray:
        # log power in n_radial rings of relative frequency (0, 0.5]; scale-free (images normalised to unit sum)
        b, h, w = plane.shape
        total = np.maximum(plane.sum(axis=(1, 2), keepdims=True), 1e-12)
        power = np.abs(np.fft.fft2(plane / total)) ** 2  # (B, H, W)
        freq = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij"))
        ring = np.minimum((freq / 0.5 * self.n_radial).astype(int), self.n_radial)  # ring n_radial = corners
        profile = np.stack([power[:, ring == r].mean(axis=1) for r in range(self.n_radial)], axis=1)
        return np.log10(profile + 1e-12)
