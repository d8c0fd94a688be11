"""Image encoders: the default one is the bundled tiny SubCell model trained on simulator crops.

The metrics suite uses :func:`load_default_image_encoder` for FID / k-NN / classification features when no InceptionV3
weights file is given; ``locscope classify`` and ``locscope embed`` use the same model by default.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from locscope.errors import InputError
from locscope.models.subcell import SubCellModel, min_max_normalize

DEFAULT_IMAGE_ENCODER_DIR = Path(__file__).resolve().parents[1] / "assets" / "models" / "subcell-tiny"


class SubCellImageEncoder:
    """A SubCell model behind the image-encoder contract of ``docs/architecture.md``.

    Parameters
    ----------
    model : SubCellModel
        Encoder (+ classifiers); put in eval mode here.
    name : str
        Identifier reported in metric files.
    resize : bool
        Resize inputs to the model's training size (``config.image_size``) before encoding, so images of any size
        are seen at the scale the model learned (bilinear, anti-aliased).

    Attributes
    ----------
    name : str
    feature_dim : int
        ``pool_heads * hidden_size``.
    channels : tuple of str
        Input channels in order, e.g. ``("microtubules", "er", "nucleus", "protein")``; pass absent ones as zeros.
    """

    def __init__(self, model: SubCellModel, name: str = "subcell", resize: bool = True) -> None:
        self.model = model.eval()
        self.name = name
        self.resize = resize
        self.feature_dim = model.config.embedding_dim
        self.channels = tuple(model.config.channel_names)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != len(self.channels):
            shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
            raise ValueError(f"images must be a (B, {len(self.channels)}, H, W) tensor with channels "
                             f"{', '.join(self.channels)}; got {shape}")
        x = images.to(self.device, torch.float32)
        size = self.model.config.image_size
        if self.resize and tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return min_max_normalize(x)

    @torch.inference_mode()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` float images (any range; normalised per cell) -> ``(B, feature_dim)`` float32 features."""
        return self.model.encode(self._prepare(images))[0].float()

    @torch.inference_mode()
    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` float images -> ``(B, 31)`` probabilities over SubCell's classes
        (:data:`locscope.models.subcell.SUBCELL_CLASS_NAMES`)."""
        embedding = self.model.encode(self._prepare(images))[0]
        return self.model.classify_embedding(embedding).float()


def load_default_image_encoder(device: str | torch.device = "cpu") -> SubCellImageEncoder:
    """The bundled tiny SubCell encoder (trained on simulator crops; see ``docs/models/subcell-tiny.md``).

    Raises
    ------
    InputError
        If the bundled weights are absent (naming the path).

    Examples
    --------
    >>> encoder = load_default_image_encoder()
    >>> encoder.embed(torch.rand(2, len(encoder.channels), 64, 64)).shape == (2, encoder.feature_dim)
    True
    """
    if not (DEFAULT_IMAGE_ENCODER_DIR / "model.safetensors").is_file():
        raise InputError(f"{DEFAULT_IMAGE_ENCODER_DIR}: bundled SubCell image encoder weights not found "
                         f"(model.safetensors); reinstall locscope or train one with `locscope train subcell`")
    from locscope.utils.device import resolve_device

    target = resolve_device(device) if isinstance(device, str) else device
    return SubCellImageEncoder(SubCellModel.from_pretrained(DEFAULT_IMAGE_ENCODER_DIR, device=target),
                               name="subcell-tiny")


__all__ = ["DEFAULT_IMAGE_ENCODER_DIR", "SubCellImageEncoder", "load_default_image_encoder"]
