"""Sampling for class-guided image-to-image diffusion (virtual staining).

The schedule is the published linear one (``betas = linspace(beta_start, beta_end, T)`` in float64, gamma =
cumprod(1 - beta), every buffer derived in float64 and cast to float32); the network sees the noise level gamma itself.

Samplers, all over ``denoise(y_t, gamma, class_labels) -> eps``:

- ``"ddpm"``: the published ancestral sampler (Palette ``p_sample``): ``y0_hat = sqrt(1/gamma) y_t - sqrt(1/gamma - 1)
  eps`` clamped to +-cutoff, posterior mean ``coef1 y0_hat + coef2 y_t``, ``y = mean + exp(0.5 log var) z``; with
  fewer steps than T the process is respaced (gammas kept at evenly spaced steps, betas re-derived from their ratios).
- ``"ddim"`` / ``"dpmsolver"``: diffusers' ``DDIMScheduler`` (eta 0) and second-order multistep DPM-Solver++ on the
  same betas; the clean-image estimate is clamped to +-cutoff by handing the scheduler the noise consistent with the
  clamped estimate.

Guidance (Dhariwal & Nichol 2021; the paper's Algorithm 2), with ``g = grad_{y_t} log p(k | y_t)`` from a noisy
classifier:

- ancestral: the mean is shifted by ``s * Sigma_t * g`` (``Sigma_t`` = the posterior variance of the step);
- DDIM / DPM-Solver++: the predicted noise is shifted, ``eps - s * sqrt(1 - gamma_t) * g`` (the score of the class
  added to the model's score);
- classifier-free guidance: ``eps_null + w (eps_k - eps_null)`` with the null class, composable with the above.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from locscope.utils.progress import track

SAMPLERS: tuple[str, ...] = ("ddpm", "ddim", "dpmsolver")
DEFAULT_STEPS = {"ddim": 50, "dpmsolver": 20}

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
ClassifierGradient = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class LinearSchedule:
    """The published linear-beta noise schedule and the ancestral sampler's buffers.

    Parameters
    ----------
    num_steps : int
        T (published 2000).
    beta_start, beta_end : float
        Linear betas (published 1e-6, 0.01).

    Attributes (float32 tensors ``(T,)``, index ``t`` = step ``t``; float64 arrays ``betas64``, ``gammas64``)
    ----------
    gammas, sqrt_recip_gammas, sqrt_recipm1_gammas, posterior_log_variance_clipped, posterior_mean_coef1,
    posterior_mean_coef2
    """

    def __init__(self, num_steps: int, beta_start: float, beta_end: float, betas: np.ndarray | None = None) -> None:
        if num_steps < 1:
            raise ValueError(f"num_steps={num_steps}: must be >= 1")
        self.num_steps = num_steps
        self.beta_start, self.beta_end = beta_start, beta_end
        betas64 = np.linspace(beta_start, beta_end, num_steps, dtype=np.float64) if betas is None else betas
        self._set_betas(np.asarray(betas64, dtype=np.float64))

    def _set_betas(self, betas64: np.ndarray) -> None:
        gammas64 = np.cumprod(1.0 - betas64)
        gammas_prev = np.append(1.0, gammas64[:-1])
        posterior_variance = betas64 * (1.0 - gammas_prev) / (1.0 - gammas64)
        self.betas64, self.gammas64 = betas64, gammas64

        def f32(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.asarray(array, dtype=np.float64)).float()

        self.gammas = f32(gammas64)
        self.sqrt_recip_gammas = f32(np.sqrt(1.0 / gammas64))
        self.sqrt_recipm1_gammas = f32(np.sqrt(1.0 / gammas64 - 1.0))
        self.posterior_log_variance_clipped = f32(np.log(np.maximum(posterior_variance, 1e-20)))
        self.posterior_mean_coef1 = f32(betas64 * np.sqrt(gammas_prev) / (1.0 - gammas64))
        self.posterior_mean_coef2 = f32((1.0 - gammas_prev) * np.sqrt(1.0 - betas64) / (1.0 - gammas64))

    def respaced(self, steps: int) -> "LinearSchedule":
        """The ``steps``-step process through evenly spaced original steps (ends at T - 1 and 0), betas re-derived
        as ``1 - gamma_i / gamma_{i-1}`` so the marginals at kept steps are unchanged."""
        if not 1 <= steps <= self.num_steps:
            raise ValueError(f"steps={steps}: must be between 1 and {self.num_steps}")
        if steps == self.num_steps:
            return self
        kept = np.unique(np.round(np.linspace(0, self.num_steps - 1, steps)).astype(np.int64))
        gammas = self.gammas64[kept]
        betas = 1.0 - gammas / np.append(1.0, gammas[:-1])
        spaced = LinearSchedule(len(kept), self.beta_start, self.beta_end, betas=betas)
        spaced.timestep_map = kept
        return spaced

    def q_sample(self, y0: torch.Tensor, gamma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``sqrt(gamma) y0 + sqrt(1 - gamma) noise`` with ``gamma`` ``(B,)`` or ``(B, 1)``."""
        g = gamma.reshape(-1, *([1] * (y0.dim() - 1))).to(y0.dtype)
        return g.sqrt() * y0 + (1 - g).sqrt() * noise

    def training_gammas(self, t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Continuous training noise levels (Palette): ``gamma_{t-1} + u (gamma_t - gamma_{t-1})`` for ``t`` ``(B,)``
        in ``[1, T)`` and ``u`` ``(B, 1)`` uniform in [0, 1); returns ``(B, 1)``."""
        gammas = self.gammas.to(u.device)
        low, high = gammas[t - 1].reshape(-1, 1), gammas[t].reshape(-1, 1)
        return (high - low) * u + low


@dataclass
class StainSamples:
    """Output of :func:`sample_stain`."""

    images: torch.Tensor  # (B, C, H, W) z-scored predictions, clipped to +-cutoff
    network_evaluations: int  # denoiser evaluations per image (classifier-free guidance counts 2 per step)
    classifier_evaluations: int  # classifier forward + backward passes per image
    steps: int


def _guided_eps(denoise: Denoiser, y: torch.Tensor, gamma: torch.Tensor, labels: torch.Tensor, null_label: int,
                guidance: float | None) -> tuple[torch.Tensor, int]:
    """The (classifier-free guided) noise prediction and how many network evaluations per image it took."""
    if guidance is None or guidance == 1.0:
        return denoise(y, gamma, labels).float(), 1
    null = torch.full_like(labels, null_label)
    both = denoise(torch.cat([y, y]), torch.cat([gamma, gamma]), torch.cat([labels, null])).float()
    conditional, unconditional = both.chunk(2)
    return unconditional + guidance * (conditional - unconditional), 2


@torch.no_grad()
def sample_stain(
    denoise: Denoiser,
    shape: tuple[int, int, int, int],
    schedule: LinearSchedule,
    class_labels: torch.Tensor,
    null_label: int,
    sampler: str = "ddpm",
    steps: int | None = None,
    classifier_gradient: ClassifierGradient | None = None,
    classifier_scale: float = 0.0,
    guidance: float | None = None,
    cutoff: float = 15.0,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
    progress: bool = False,
) -> StainSamples:
    """Draw virtual stains by running the reverse process from Gaussian noise.

    Parameters
    ----------
    denoise : callable
        ``denoise(y_t (N, C, H, W), gamma (N,), class_labels (N,)) -> eps (N, C, H, W)``; the condition image is bound
        by the caller (``N`` may be twice the batch with classifier-free guidance: rows ``[conditional | null]``).
    shape : tuple of int
        ``(B, C, H, W)`` of the targets.
    schedule : LinearSchedule
        The training schedule (T steps).
    class_labels : torch.Tensor
        ``(B,)`` class index per row (``null_label`` = unconditioned).
    sampler : {'ddpm', 'ddim', 'dpmsolver'}
    steps : int, optional
        Denoising steps (default: T for DDPM, 50 for DDIM, 20 for DPM-Solver++).
    classifier_gradient : callable, optional
        ``classifier_gradient(y_t, gamma (B,)) -> grad_{y_t} log p(k | y_t)`` for the rows' classes.
    classifier_scale : float
        Guidance scale ``s`` (0 = no classifier guidance).
    guidance : float, optional
        Classifier-free guidance weight ``w`` (None or 1 = the plain conditional model).
    cutoff : float
        Clamp of the clean-image estimate (the z-score clip, 15).
    generator : torch.Generator, optional
        Source of every draw (initial noise, then one per ancestral step). None uses the global RNG, as published.
    noise : torch.Tensor, optional
        ``(B, C, H, W)`` initial noise to use instead of a draw.
    callback : callable, optional
        ``callback(t, y)`` after each step with the original-schedule step index ``t`` and the new ``y``.

    Returns
    -------
    StainSamples
    """
    if classifier_scale and classifier_gradient is None:
        raise ValueError(f"classifier_scale={classifier_scale} needs a classifier_gradient")
    if classifier_scale < 0:
        raise ValueError(f"classifier_scale={classifier_scale}: must be >= 0")
    device = class_labels.device
    y = torch.randn(shape, generator=generator, device=device) if noise is None else noise.to(device).float()
    batch = shape[0]
    use_classifier = bool(classifier_scale) and classifier_gradient is not None
    nfe = cfe = 0

    if sampler == "ddpm":
        spaced = schedule.respaced(steps or schedule.num_steps)
        original = getattr(spaced, "timestep_map", np.arange(spaced.num_steps))
        for i in track(range(spaced.num_steps - 1, -1, -1), f"sampling (ddpm, {spaced.num_steps} steps)",
                       enabled=progress):
            gamma = spaced.gammas[i].to(device).expand(batch)
            eps, calls = _guided_eps(denoise, y, gamma, class_labels, null_label, guidance)
            nfe += calls
            y0_hat = (spaced.sqrt_recip_gammas[i] * y - spaced.sqrt_recipm1_gammas[i] * eps).clamp(-cutoff, cutoff)
            mean = spaced.posterior_mean_coef1[i] * y0_hat + spaced.posterior_mean_coef2[i] * y
            log_variance = spaced.posterior_log_variance_clipped[i]
            if use_classifier:  # Algorithm 2: mu + s Sigma grad log p(k | y_t)
                mean = mean + classifier_scale * log_variance.exp() * classifier_gradient(y, gamma).float()
                cfe += 1
            if i > 0:
                z = torch.randn(y.shape, generator=generator, device=device)
                y = mean + z * (0.5 * log_variance).exp()
            else:
                y = mean
            if callback is not None:
                callback(int(original[i]), y)
        return StainSamples(y.clamp(-cutoff, cutoff), nfe, cfe, spaced.num_steps)

    scheduler = make_scheduler(schedule, sampler)
    steps = steps or DEFAULT_STEPS[sampler]
    if not 1 <= steps <= schedule.num_steps:
        raise ValueError(f"steps={steps}: must be between 1 and {schedule.num_steps}")
    scheduler.set_timesteps(steps, device=device)
    gammas = scheduler.alphas_cumprod.to(device)
    for t in track(scheduler.timesteps, f"sampling ({sampler}, {steps} steps)", enabled=progress):
        gamma = gammas[int(t)].expand(batch)
        eps, calls = _guided_eps(denoise, y, gamma, class_labels, null_label, guidance)
        nfe += calls
        sqrt_gamma, sqrt_one_minus = gamma[0].sqrt(), (1 - gamma[0]).sqrt()
        if use_classifier:  # eps - s sqrt(1 - gamma) grad log p(k | y_t)  (Dhariwal & Nichol, Algorithm 2)
            eps = eps - classifier_scale * sqrt_one_minus * classifier_gradient(y, gamma).float()
            cfe += 1
        # clamp the clean-image estimate and hand the scheduler the matching noise
        y0_hat = ((y - sqrt_one_minus * eps) / sqrt_gamma).clamp(-cutoff, cutoff)
        eps = (y - sqrt_gamma * y0_hat) / sqrt_one_minus
        y = scheduler.step(eps, t, y, generator=generator).prev_sample if sampler == "ddim" else \
            scheduler.step(eps, t, y).prev_sample
        if callback is not None:
            callback(int(t), y)
    return StainSamples(y.clamp(-cutoff, cutoff), nfe, cfe, steps)


def make_scheduler(schedule: LinearSchedule, sampler: str):
    """A diffusers ``DDIMScheduler`` (eta 0) or ``DPMSolverMultistepScheduler`` (DPM-Solver++ 2M) on ``schedule``.

    Raises
    ------
    ValueError
        If ``sampler`` is not ``'ddim'`` or ``'dpmsolver'``.
    """
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    common = dict(num_train_timesteps=schedule.num_steps, trained_betas=schedule.betas64.astype(np.float32),
                  prediction_type="epsilon")
    if sampler == "ddim":
        # "trailing" spacing starts at the noisiest step T - 1; set_alpha_to_one: the last step returns y0_hat.
        return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing")
    if sampler == "dpmsolver":
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2,
                                           timestep_spacing="trailing", lower_order_final=True,
                                           final_sigmas_type="zero")
    raise ValueError(f"sampler={sampler!r}: accepted values are {', '.join(SAMPLERS)}")
