"""The released CELL-Diff (v2, latent) sampling procedure, reproduced step for step, and a faster solver on its schedule.

The released code samples with guided-diffusion's respaced DDIM (Song et al. 2021; Nichol & Dhariwal 2021):

1. Schedule: T steps (200 in the release) of ``squaredcos_cap_v2``; ``timestep_respacing`` ``"ddimN"`` keeps
   ``range(0, T, s)`` for the integer stride ``s`` giving exactly ``N`` steps, so ``ddim100`` on T = 200 keeps
   0, 2, ..., 198 and sampling starts at t = 198 (``ddim10``: t = 180), not at T - 1.
2. The kept steps define a new process: beta'_i = 1 - alpha_bar(t_i) / alpha_bar(t_{i-1}), alpha_bar'_i its cumulative
   product, alpha_bar'_prev = [1, alpha_bar'_0, ...] (float64, cast to float32 where used).
3. The network sees the *original* timestep t_i; the update is indexed by i (eta = 0, no clipping, epsilon prediction):
   x0 = sqrt(1 / a_i) x - sqrt(1 / a_i - 1) eps; eps' = (sqrt(1 / a_i) x - x0) / sqrt(1 / a_i - 1);
   x_prev = sqrt(a_prev_i) x0 + sqrt(1 - a_prev_i) eps'. At i = 0, a_prev = 1, so the result is the final x0.

The released code also draws one ``randn_like`` per step and multiplies it by sigma = 0; those draws change nothing
and are not made here. :func:`dpm_solver_sample` runs diffusers' DPM-Solver++ (Lu et al. 2022) on the same T-step
schedule as a faster alternative.

Why not diffusers' ``DDIMScheduler``: with ``timestep_spacing="leading"`` it visits the same timesteps, but it builds
the schedule in float32 from betas and forms x_prev from eps instead of eps' (different rounding), so it would not be
the released arithmetic; the hand-written loop below is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from locscope.utils.progress import track

#: ``eps_fn(x_t, model_time, sqrt_one_minus_alphas_cumprod) -> eps``: x_t ``(B, C, H, W)``, model_time ``(B,)`` int64
#: original timesteps, sqrt(1 - alpha_bar) broadcast to x_t's shape (used only by models with ``output_rescale``).
EpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def published_alphas_cumprod(num_timesteps: int, schedule: str = "squaredcos_cap_v2") -> np.ndarray:
    """Cumulative products alpha_bar_t, t = 0..T-1, of the published (guided-diffusion style) schedules, float64.

    ``squaredcos_cap_v2`` (= ``cosine``, Nichol & Dhariwal 2021): beta_t = min(1 - f(t+1)/f(t), 0.999) with
    f(t) = cos^2(((t/T) + 0.008) / 1.008 * pi/2). ``linear``: betas from 1e-4 to 0.02 scaled by 1000 / T.

    Returns
    -------
    numpy.ndarray
        ``(num_timesteps,)`` float64.
    """
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps={num_timesteps}: must be >= 1")
    if schedule in ("squaredcos_cap_v2", "cosine"):
        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = np.array([
            min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), 0.999)
            for i in range(num_timesteps)
        ], dtype=np.float64)
    elif schedule == "linear":
        scale = 1000 / num_timesteps
        betas = np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)
    else:
        raise ValueError(f"schedule={schedule!r}: accepted 'squaredcos_cap_v2', 'cosine', 'linear'")
    return np.cumprod(1.0 - betas)


def space_timesteps(num_timesteps: int, respacing: str) -> list[int]:
    """The original timesteps a ``timestep_respacing`` string keeps, ascending (guided-diffusion's rule).

    Parameters
    ----------
    num_timesteps : int
        T of the trained process.
    respacing : str
        ``"ddimN"`` (stride s with ``len(range(0, T, s)) == N``), ``""`` (all T steps), or comma-separated step
        counts per equal section of [0, T) (``"10,5"``), each spread evenly with rounding.

    Raises
    ------
    ValueError
        If no stride gives exactly N steps, or a section asks for more steps than it holds.

    Examples
    --------
    >>> space_timesteps(200, "ddim10")[-3:]
    [140, 160, 180]
    """
    if respacing == "":
        return list(range(num_timesteps))
    if respacing.startswith("ddim"):
        try:
            wanted = int(respacing[4:])
        except ValueError:
            raise ValueError(f"respacing={respacing!r}: expected 'ddimN' with an integer N") from None
        for stride in range(1, num_timesteps):
            if len(range(0, num_timesteps, stride)) == wanted:
                return list(range(0, num_timesteps, stride))
        raise ValueError(f"respacing={respacing!r}: no integer stride gives exactly {wanted} of {num_timesteps} steps")
    try:
        counts = [int(part) for part in respacing.split(",")]
    except ValueError:
        raise ValueError(f"respacing={respacing!r}: accepted 'ddimN', '' or comma-separated step counts") from None
    size_per, extra = divmod(num_timesteps, len(counts))
    steps: list[int] = []
    start = 0
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if not 1 <= count <= size:
            raise ValueError(f"respacing={respacing!r}: section {i + 1} holds {size} steps, asked for {count}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        steps += [start + round(k * stride) for k in range(count)]
        start += size
    return sorted(set(steps))


@dataclass(frozen=True)
class SpacedSchedule:
    """The respaced process: kept original timesteps and the re-derived float64 alpha_bar arrays.

    Attributes
    ----------
    timestep_map : numpy.ndarray
        ``(N,)`` int64 original timesteps, ascending (what the network sees).
    alphas_cumprod, alphas_cumprod_prev : numpy.ndarray
        ``(N,)`` float64 alpha_bar'_i and alpha_bar'_{i-1} (``1`` for i = 0).
    betas : numpy.ndarray
        ``(N,)`` float64 beta'_i = 1 - alpha_bar(t_i) / alpha_bar(t_{i-1}).
    """

    timestep_map: np.ndarray
    alphas_cumprod: np.ndarray
    alphas_cumprod_prev: np.ndarray
    betas: np.ndarray

    @classmethod
    def from_published(cls, num_timesteps: int, schedule: str, respacing: str) -> "SpacedSchedule":
        """Respace the published ``schedule`` of ``num_timesteps`` steps as ``respacing`` says (see :func:`space_timesteps`)."""
        base = published_alphas_cumprod(num_timesteps, schedule)
        kept = space_timesteps(num_timesteps, respacing)
        previous = np.concatenate([[1.0], base[kept][:-1]])
        betas = 1.0 - base[kept] / previous
        alphas_cumprod = np.cumprod(1.0 - betas)  # guided-diffusion re-derives the process from the new betas
        return cls(np.asarray(kept, dtype=np.int64), alphas_cumprod,
                   np.concatenate([[1.0], alphas_cumprod[:-1]]), betas)

    def __len__(self) -> int:
        return len(self.timestep_map)


def _as_float32(value: float | np.ndarray) -> torch.Tensor:
    """A float64 coefficient cast to float32 (the published ``_extract_into_tensor`` does the same)."""
    return torch.tensor(value, dtype=torch.float64).float()


@torch.no_grad()
def published_ddim_sample(
    eps_fn: EpsFn,
    noise: torch.Tensor,
    schedule: SpacedSchedule,
    on_step: Callable[[dict], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Run the released DDIM (eta 0, no clipping) from ``noise`` and return the final x0.

    Parameters
    ----------
    eps_fn : callable
        ``(x_t, model_time, sqrt_one_minus_alphas_cumprod) -> eps``, see :data:`EpsFn`.
    noise : torch.Tensor
        ``(B, C, H, W)`` initial x_T (the released code draws it with ``torch.randn``).
    schedule : SpacedSchedule
        Respaced process (``SpacedSchedule.from_published(200, "squaredcos_cap_v2", "ddim100")`` for the release).
    on_step : callable, optional
        Called after every step with a dict of float32 tensors ``x_t``, ``eps``, ``pred_xstart``, ``sample`` and the
        ints ``index`` (spaced) and ``model_time`` (original).
    progress : bool
        Show a progress bar.

    Returns
    -------
    torch.Tensor
        ``(B, C, H, W)`` final sample (the last step's x0), dtype of ``noise``.
    """
    x = noise
    batch = x.shape[0]
    indices = range(len(schedule) - 1, -1, -1)
    for i in track(indices, description="denoising", total=len(schedule), enabled=progress):
        a, a_prev = schedule.alphas_cumprod[i], schedule.alphas_cumprod_prev[i]
        model_time = torch.full((batch,), int(schedule.timestep_map[i]), dtype=torch.long, device=x.device)
        sqrt_one_minus = _as_float32(np.sqrt(1.0 - a)).to(x.device).expand_as(x)
        eps = eps_fn(x, model_time, sqrt_one_minus).to(x.dtype)
        recip, recipm1 = _as_float32(np.sqrt(1.0 / a)).to(x.device), _as_float32(np.sqrt(1.0 / a - 1)).to(x.device)
        pred_xstart = recip * x - recipm1 * eps
        eps_again = (recip * x - pred_xstart) / recipm1
        a_prev32 = _as_float32(a_prev).to(x.device)
        sample = pred_xstart * torch.sqrt(a_prev32) + torch.sqrt(1 - a_prev32) * eps_again
        if on_step is not None:
            on_step({"x_t": x, "eps": eps, "pred_xstart": pred_xstart, "sample": sample, "index": i,
                     "model_time": int(schedule.timestep_map[i])})
        x = sample
    return x


@torch.no_grad()
def dpm_solver_sample(
    eps_fn: EpsFn,
    noise: torch.Tensor,
    num_timesteps: int,
    schedule: str,
    steps: int,
    start_timestep: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Sample with diffusers' second-order multistep DPM-Solver++ on the published T-step schedule.

    The solver evaluates the network at ``steps`` integer timesteps spread evenly from ``start_timestep`` down to
    (not including) 0, then steps to sigma = 0; the network sees the original integer timesteps, as in training.
    Starting where the released DDIM starts (t = 198 for ``ddim100``) makes both solve the same ODE from the same
    point, so the result approaches the released DDIM-100 output as ``steps`` grows.

    Parameters
    ----------
    eps_fn : callable
        See :data:`EpsFn`.
    noise : torch.Tensor
        ``(B, C, H, W)`` initial x_T.
    num_timesteps, schedule
        The trained process (200, ``"squaredcos_cap_v2"`` in the release).
    steps : int
        Solver steps (network evaluations), >= 1.
    start_timestep : int, optional
        First (noisiest) timestep; default T - 1.
    progress : bool
        Show a progress bar.

    Returns
    -------
    torch.Tensor
        ``(B, C, H, W)`` final sample.
    """
    from diffusers import DPMSolverMultistepScheduler

    if steps < 1:
        raise ValueError(f"steps={steps}: must be >= 1")
    alphas_cumprod = published_alphas_cumprod(num_timesteps, schedule)
    betas = 1.0 - alphas_cumprod / np.concatenate([[1.0], alphas_cumprod[:-1]])
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=num_timesteps, trained_betas=betas, prediction_type="epsilon",
        algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing", lower_order_final=True,
        final_sigmas_type="zero",
    )
    start = num_timesteps - 1 if start_timestep is None else int(start_timestep)
    if not 1 <= start < num_timesteps:
        raise ValueError(f"start_timestep={start_timestep}: must be in [1, {num_timesteps - 1}]")
    if steps > start:
        raise ValueError(f"steps={steps}: at most start_timestep={start} distinct timesteps")
    timesteps = np.round(np.linspace(start, 0, steps + 1)[:-1]).astype(np.int64)
    scheduler.set_timesteps(device=noise.device, timesteps=timesteps.tolist())
    x = noise
    for t in track(scheduler.timesteps, description="denoising", enabled=progress):
        model_time = torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)
        sqrt_one_minus = _as_float32(np.sqrt(1.0 - alphas_cumprod[int(t)])).to(x.device).expand_as(x)
        eps = eps_fn(x, model_time, sqrt_one_minus).to(x.dtype)
        x = scheduler.step(eps, t, x).prev_sample
    return x
