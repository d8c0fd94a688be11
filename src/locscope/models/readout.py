"""A compartment read-out classifier: which level-3 compartment holds most of the protein in a cell image.

Generated protein images are scored by the level-3 compartment they show. Reading it off the cell's own compartment
patterns (unmixing, :mod:`locscope.pipelines.readout`) is exact for the simulator's images but asks a generator to
reproduce the very mitochondria, vesicles and speckles of that one cell, which its landmarks (nucleus, ER,
microtubules) do not determine: a perfect landmark-conditioned generator that redraws them elsewhere loses about half
of its images under unmixing (``benchmarks/bench_faithful.py``). A classifier trained on simulated images, as
proteoscope scores its generated images, sees *what kind* of pattern the protein forms where, not *which* pixels.

The network, read top to bottom: the protein image and the landmarks ``(B, 1 + n_landmarks, H, W)`` (each image
min-max scaled to [0, 1]; images of another size are resized to ``image_size``) -> four stages of two 3x3 convolutions
(GroupNorm, SiLU; widths ``w, 2w, 4w, 8w``, average pooling between stages) -> global average and max pooling -> a
linear layer over the level-3 classes. Trained by :mod:`locscope.training.readout_module`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from locscope.channels import ER, MICROTUBULES, NUCLEUS
from locscope.data import ontology
from locscope.utils.checkpoint import PretrainedMixin

LEVEL3_CLASSES: tuple[str, ...] = tuple(c for c in ontology.LEVEL3 if c != "plastid")


@dataclass
class ReadoutConfig:
    """Hyper-parameters of :class:`ReadoutClassifier` (saved as ``config.json`` beside the weights).

    Parameters
    ----------
    image_size : int
        Inputs are resized to this side (pixels) before the network.
    landmark_channels : tuple of str
        Landmarks after the protein channel, in input order (absent ones are passed as zeros).
    classes : tuple of str
        Output classes (default: the seven level-3 classes of a human cell).
    width : int
        Width of the first stage (then 2x, 4x, 8x).
    """

    image_size: int = 64
    landmark_channels: tuple[str, ...] = (NUCLEUS, ER, MICROTUBULES)
    classes: tuple[str, ...] = LEVEL3_CLASSES
    width: int = 16

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ValueError(f"image_size={self.image_size}: must be >= 16")


def scale_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Min-max scale every channel of every image to [0, 1] and resize to ``size`` (bilinear, anti-aliased).

    Parameters
    ----------
    images : torch.Tensor
        ``(B, C, H, W)`` float images in any intensity range.
    size : int
        Output side in pixels.
    """
    x = images.float()
    low = x.amin(dim=(2, 3), keepdim=True)
    high = x.amax(dim=(2, 3), keepdim=True)
    x = (x - low) / (high - low).clamp(min=1e-6)
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


class ReadoutClassifier(PretrainedMixin, nn.Module):
    """Protein image + landmarks -> level-3 compartment logits (see the module docstring).

    Examples
    --------
    >>> model = ReadoutClassifier(ReadoutConfig(image_size=32, width=8))
    >>> model(torch.rand(2, 4, 32, 32)).shape
    torch.Size([2, 7])
    """

    config_class = ReadoutConfig

    def __init__(self, config: ReadoutConfig) -> None:
        super().__init__()
        self.config = config
        cin = 1 + len(config.landmark_channels)
        stages = []
        for k in range(4):
            cout = config.width * 2 ** k
            stages.append(nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(min(8, cout // 4), cout), nn.SiLU(),
                nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(min(8, cout // 4), cout), nn.SiLU()))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(2 * cin, len(config.classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 1 + n_landmarks, H, W)`` images (protein first; any range and size) -> ``(B, n_classes)`` logits."""
        h = scale_images(images, self.config.image_size)
        for k, stage in enumerate(self.stages):
            h = stage(h if k == 0 else F.avg_pool2d(h, 2))
        return self.head(torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], 1))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Class probabilities ``(B, n_classes)`` (softmax), in batches."""
        device = next(self.parameters()).device
        parts = [self(images[i:i + batch_size].to(device)).float().softmax(-1).cpu()
                 for i in range(0, len(images), batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0, len(self.config.classes))


def readout_config(**overrides) -> ReadoutConfig:
    """The bundled read-out's configuration with field overrides."""
    return dataclasses.replace(ReadoutConfig(), **overrides)


__all__ = ["LEVEL3_CLASSES", "ReadoutClassifier", "ReadoutConfig", "readout_config", "scale_images"]
