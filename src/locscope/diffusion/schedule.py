"""The shifted-cosine noise schedule of CELL-Diff (simple diffusion, Hoogeboom et al. 2023) and v-prediction.

The continuous schedule is

    logSNR(t) = -2 log tan(t_min + t (t_max - t_min)) + 2 log(base / image_size),   t in [0, 1],

clipped to ``[-logsnr_clip, +logsnr_clip]``, with ``t_min = atan(exp(-logsnr_clip / 2))`` and
``t_max = atan(exp(+logsnr_clip / 2))`` so the unshifted cosine spans exactly the clip range; ``alpha_bar = sigmoid(logSNR)``.
The shift ``2 log(base / image_size)`` (base 64) adds noise at every step for images larger than 64 pixels, whose
redundant pixels otherwise make denoising too easy at a given SNR. Discrete step ``i`` (``0 <= i < T``) sits at
``t = (i + 1) / T``, the convention of diffusers' ``alphas_cumprod``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def shifted_cosine_logsnr(t: torch.Tensor, image_size: int, base: int = 64, logsnr_clip: float = 15.0) -> torch.Tensor:
    """logSNR of the shifted-cosine schedule at continuous times ``t`` in [0, 1] (same shape as ``t``).

    Examples
    --------
    >>> float(shifted_cosine_logsnr(torch.tensor(0.5), image_size=64))  # doctest: +ELLIPSIS
    0.0...
    """
    t_min = math.atan(math.exp(-0.5 * logsnr_clip))
    t_max = math.atan(math.exp(0.5 * logsnr_clip))
    logsnr = -2.0 * torch.log(torch.tan(t_min + t.double() * (t_max - t_min))) + 2.0 * math.log(base / image_size)
    return logsnr.clamp(-logsnr_clip, logsnr_clip).to(t.dtype if t.is_floating_point() else torch.float32)


@dataclass
class ShiftedCosineSchedule:
    """Discrete shifted-cosine schedule with ``num_steps`` steps for images of side ``image_size`` pixels.

    Attributes
    ----------
    alphas_cumprod : torch.Tensor
        ``(num_steps,)`` float64 ``alpha_bar`` per step, decreasing from ~1 to ~0.
    """

    image_size: int
    num_steps: int = 1000
    base: int = 64
    logsnr_clip: float = 15.0

    def __post_init__(self) -> None:
        if self.num_steps < 2:
            raise ValueError(f"num_steps={self.num_steps}: need at least 2 steps")
        t = torch.arange(1, self.num_steps + 1, dtype=torch.float64) / self.num_steps
        self.logsnr = shifted_cosine_logsnr(t, self.image_size, self.base, self.logsnr_clip)
        self.alphas_cumprod = torch.sigmoid(self.logsnr)

    def betas(self) -> torch.Tensor:
        """``(num_steps,)`` betas whose cumulative product of ``1 - beta`` reproduces ``alphas_cumprod`` (for diffusers)."""
        previous = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        return (1.0 - self.alphas_cumprod / previous).clamp(0.0, 0.999999)

    def _coefficients(self, timesteps: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        abar = self.alphas_cumprod.to(like.device)[timesteps.long()].to(like.dtype)
        shape = (-1,) + (1,) * (like.ndim - 1)
        return abar.sqrt().reshape(shape), (1.0 - abar).sqrt().reshape(shape)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``; ``x0``/``noise`` ``(B, ...)``, ``timesteps`` ``(B,)`` ints."""
        a, s = self._coefficients(timesteps, x0)
        return a * x0 + s * noise

    def v_target(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The v-prediction target ``v = sqrt(abar) noise - sqrt(1 - abar) x0`` (Salimans & Ho 2022)."""
        a, s = self._coefficients(timesteps, x0)
        return a * noise - s * x0

    def x0_from_v(self, x_t: torch.Tensor, v: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Recover the clean image from a v-prediction: ``x0 = sqrt(abar) x_t - sqrt(1 - abar) v``."""
        a, s = self._coefficients(timesteps, x_t)
        return a * x_t - s * v

    def snr(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio ``abar / (1 - abar)`` at ``timesteps`` ``(B,)``."""
        abar = self.alphas_cumprod.to(timesteps.device)[timesteps.long()]
        return (abar / (1.0 - abar)).float()
