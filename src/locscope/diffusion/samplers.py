"""Image samplers: DDIM (the seed's default, 100 steps) and DPM-Solver++ (diffusers), on the shifted-cosine schedule.

Both are diffusers schedulers built from :class:`~locscope.diffusion.schedule.ShiftedCosineSchedule` betas
(``trained_betas``) and ``prediction_type="v_prediction"``; the denoiser is any callable mapping ``(x_t, timesteps)`` to a
v-prediction, so classifier-free guidance is composed by the caller with :func:`classifier_free_guidance`.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch

from locscope.diffusion.schedule import ShiftedCosineSchedule
from locscope.utils.progress import track

SamplerName = Literal["ddim", "dpmsolver"]
SAMPLERS: tuple[str, ...] = ("ddim", "dpmsolver")
DEFAULT_STEPS = {"ddim": 100, "dpmsolver": 10}


def make_scheduler(schedule: ShiftedCosineSchedule, sampler: str, prediction_type: str = "v_prediction"):
    """A diffusers scheduler (``DDIMScheduler`` or ``DPMSolverMultistepScheduler``) on ``schedule``.

    Raises
    ------
    ValueError
        If ``sampler`` is not one of ``{'ddim', 'dpmsolver'}``.
    """
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    betas = schedule.betas().float().numpy()
    common = dict(num_train_timesteps=schedule.num_steps, trained_betas=betas, prediction_type=prediction_type)
    if sampler == "ddim":
        # set_alpha_to_one: the final step returns the clean-image estimate (alpha_bar_prev = 1).
        return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing")
    if sampler == "dpmsolver":
        # Second-order multistep DPM-Solver++ (Lu et al. 2022); "trailing" spacing starts at the noisiest step,
        # which a zero-terminal-SNR-like schedule (logSNR clipped at -15) needs; lower_order_final stabilises <15 steps.
        return DPMSolverMultistepScheduler(
            **common, algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing",
            lower_order_final=True, final_sigmas_type="zero",
        )
    raise ValueError(f"sampler={sampler!r}: accepted values are {', '.join(SAMPLERS)}")


#: How a compartment-conditioned sampler places each image (see :func:`place_condition`).
PLACEMENTS: tuple[str, ...] = ("soft", "sample", "top")


def place_condition(distribution: torch.Tensor, placement: str, generator: torch.Generator | None = None
                    ) -> torch.Tensor:
    """Compartment distributions ``(N, n)`` -> what each image is conditioned on: the distribution itself
    (``'soft'``), a one-hot row of its most likely compartment (``'top'``), or of one compartment drawn from it per row
    (``'sample'``; drawn on the CPU with ``generator`` when it is a CPU generator, else with the global RNG)."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement={placement!r}: accepted values are {', '.join(PLACEMENTS)}")
    if placement == "soft":
        return distribution
    if placement == "top":
        index = distribution.argmax(-1)
    else:
        probabilities = distribution.float().clamp(min=0)
        index = torch.multinomial(probabilities.cpu(), 1, generator=generator if generator is not None and
                                  generator.device.type == "cpu" else None)[:, 0].to(distribution.device)
    return torch.nn.functional.one_hot(index, distribution.shape[-1]).to(distribution.dtype)


def classifier_free_guidance(conditional: torch.Tensor, unconditional: torch.Tensor, scale: float) -> torch.Tensor:
    """``uncond + scale * (cond - uncond)`` (Ho & Salimans 2022); ``scale = 1`` returns the conditional prediction."""
    return unconditional + scale * (conditional - unconditional)


@torch.no_grad()
def sample_images(
    denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shape: tuple[int, ...],
    schedule: ShiftedCosineSchedule,
    sampler: str = "ddim",
    steps: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """Run the reverse process from Gaussian noise.

    Parameters
    ----------
    denoise : callable
        ``denoise(x_t (B, C, H, W), timesteps (B,) long) -> v (B, C, H, W)``; one call = one network evaluation
        (a guided denoiser that runs the network twice counts as one call here).
    shape : tuple of int
        ``(B, C, H, W)`` of the images to draw.
    sampler : {'ddim', 'dpmsolver'}
    steps : int, optional
        Number of denoising steps (default 100 for DDIM, 10 for DPM-Solver++).
    generator : torch.Generator, optional
        Seeds the initial noise (and DDIM's eta noise, unused at eta = 0).
    noise : torch.Tensor, optional
        ``shape`` initial noise to start from instead of drawing it (fixed noise across calls).

    Returns
    -------
    images : torch.Tensor
        ``(B, C, H, W)`` samples in the model's image range ([-1, 1] for CELL-Diff).
    nfe : int
        Number of ``denoise`` calls.
    """
    steps = steps or DEFAULT_STEPS.get(sampler, 100)
    if steps < 1:
        raise ValueError(f"steps={steps}: must be >= 1")
    scheduler = make_scheduler(schedule, sampler)
    scheduler.set_timesteps(steps, device=device)
    if noise is not None and tuple(noise.shape) != tuple(shape):
        raise ValueError(f"noise must have shape {tuple(shape)}; got {tuple(noise.shape)}")
    x = noise.to(device).float() if noise is not None else torch.randn(shape, generator=generator, device=device)
    nfe = 0
    for t in track(scheduler.timesteps, f"sampling ({sampler}, {steps} steps)", enabled=progress):
        timesteps = torch.full((shape[0],), int(t), dtype=torch.long, device=device)
        v = denoise(x, timesteps).float()
        nfe += 1
        x = scheduler.step(v, t, x).prev_sample
    return x, nfe


@torch.no_grad()
def class_denoising_losses(denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], clean: torch.Tensor,
                           schedule: ShiftedCosineSchedule, timesteps, generator: torch.Generator | None = None
                           ) -> torch.Tensor:
    """The denoiser as a diffusion classifier (Li et al. 2023): ``clean`` ``(n, C, H, W)`` holds one (identical) row per
    class; at each of ``timesteps`` one noise draw ``(1, C, H, W)`` (from ``generator``, CPU) noises every row,
    ``denoise(x_t, t)`` (conditioned on one class per row) predicts v; returns the summed per-row v-prediction MSE
    ``(n,)`` (lowest = the class that explains the image best)."""
    n, device = clean.shape[0], clean.device
    losses = torch.zeros(n)
    for step in timesteps:
        noise = torch.randn(1, *clean.shape[1:], generator=generator).expand(n, -1, -1, -1).to(device)
        t = torch.full((n,), int(step), device=device)
        v = denoise(schedule.add_noise(clean, noise, t), t).float()
        losses += ((v - schedule.v_target(clean, noise, t)) ** 2).mean((1, 2, 3)).cpu()
    return losses
