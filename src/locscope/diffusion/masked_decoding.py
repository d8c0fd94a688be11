"""Decoding masked residues with a masked-diffusion sequence head: the one-residue-per-pass reference and a parallel
confidence-based decoder.

Both decoders fill every ``<mask>`` position of a token batch and never touch the other (template) positions.

* :func:`decode_one_per_pass` is CELL-Diff's published order-agnostic sampler: each forward pass reveals ONE random
  masked position per row, sampled from the model's distribution at that position. A length-``L`` design needs ``L``
  passes.
* :func:`decode_parallel` is MaskGIT's decoder (Chang et al. 2022), as CELL-E 2 uses for sequence infill: every pass
  samples all masked positions at once, keeps the most confident ones and re-masks the rest; the number still masked
  after pass ``i`` of ``T`` follows the cosine schedule ``floor(M * cos(pi/2 * i / T))`` (``M`` = the row's initial
  mask count), so any length is decoded in ``T`` passes (default 16). Confidence is the sampled token's probability,
  optionally perturbed with annealed Gumbel noise (MaskGIT's "choice temperature") so early passes explore.

``logits_fn`` abstracts the network: ``tokens (B, L) -> logits (B, L, V)``; :func:`cell_diff_logits_fn` builds it for a
CELL-Diff model conditioned on a protein image and landmarks (the sequence task: clean image, time step 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

LogitsFn = Callable[[torch.Tensor], torch.Tensor]
MAX_PARALLEL_PASSES = 16


@dataclass
class DecodeResult:
    """Output of a decoder.

    Attributes
    ----------
    tokens : torch.Tensor
        ``(B, L)`` long, every mask filled.
    passes : int
        Forward passes of the network used for the whole batch.
    """

    tokens: torch.Tensor
    passes: int


def _check_sampling(temperature: float, top_k: int | None) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature={temperature}: must be > 0")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k}: must be >= 1 (or None for no truncation)")


def sampling_probabilities(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None) -> torch.Tensor:
    """Softmax of ``logits / temperature`` over the last axis, keeping only the ``top_k`` largest entries.

    Parameters
    ----------
    logits : torch.Tensor
        ``(..., V)`` unnormalised scores (suppressed tokens carry very negative values).
    temperature : float
        > 0; lower is greedier.
    top_k : int, optional
        Keep the ``top_k`` most likely tokens (``None``: all).

    Returns
    -------
    torch.Tensor
        ``(..., V)`` float32 probabilities.
    """
    _check_sampling(temperature, top_k)
    scaled = logits.float() / temperature
    if top_k is not None and top_k < scaled.shape[-1]:
        kth = scaled.topk(top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    return scaled.softmax(dim=-1)


def _sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row of ``probs`` ``(N, V)`` -> ``(N,)`` long."""
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def decode_one_per_pass(
    logits_fn: LogitsFn, tokens: torch.Tensor, mask_token_id: int, *, temperature: float = 1.0,
    top_k: int | None = None, generator: torch.Generator | None = None,
) -> DecodeResult:
    """CELL-Diff's reference sampler: reveal one random masked position per row per forward pass.

    Parameters
    ----------
    logits_fn : callable
        ``tokens (B, L) -> logits (B, L, V)``.
    tokens : torch.Tensor
        ``(B, L)`` long template; ``mask_token_id`` marks the positions to fill.
    mask_token_id : int
    temperature : float
        Softmax temperature (> 0).
    top_k : int, optional
        Sample among the ``top_k`` most likely residues only.
    generator : torch.Generator, optional
        Seeds the order and the residues (on ``tokens.device``).

    Returns
    -------
    DecodeResult
        ``passes`` = the largest number of masks in a row.

    Examples
    --------
    >>> logits_fn = lambda t: torch.zeros(*t.shape, 5).index_fill_(-1, torch.tensor([0, 1]), -1e4)
    >>> out = decode_one_per_pass(logits_fn, torch.tensor([[1, 3, 1]]), mask_token_id=1)
    >>> out.passes, bool((out.tokens == 1).any())
    (2, False)
    """
    _check_sampling(temperature, top_k)
    tokens = tokens.clone()
    rows = torch.arange(tokens.shape[0], device=tokens.device)
    passes = 0
    while True:
        masked = tokens == mask_token_id
        if not bool(masked.any()):
            return DecodeResult(tokens, passes)
        logits = logits_fn(tokens)  # (B, L, V)
        passes += 1
        order = torch.rand(masked.shape, generator=generator, device=tokens.device).masked_fill(~masked, -1.0)
        position = order.argmax(dim=1)  # (B,) a uniformly random masked position of each row
        choice = _sample(sampling_probabilities(logits[rows, position], temperature, top_k), generator)
        active = masked.any(dim=1)
        tokens[rows[active], position[active]] = choice[active]


def cosine_schedule(n_masked: int, passes: int) -> list[int]:
    """Positions still masked after each pass: ``floor(n_masked * cos(pi/2 * i / passes))`` for ``i = 1..passes``.

    The list is non-increasing and ends at 0; every pass reveals at least one position while any remain, so the
    number of passes actually needed is ``min(passes, n_masked)``.

    >>> cosine_schedule(10, 4)
    [9, 7, 3, 0]
    """
    if passes < 1:
        raise ValueError(f"passes={passes}: must be >= 1")
    remaining, left = [], n_masked
    for i in range(1, passes + 1):
        target = int(math.floor(n_masked * math.cos(math.pi / 2 * i / passes) + 1e-9))
        left = max(0, min(target, left - 1))
        remaining.append(left)
    return remaining


@torch.no_grad()
def decode_parallel(
    logits_fn: LogitsFn, tokens: torch.Tensor, mask_token_id: int, *, passes: int = MAX_PARALLEL_PASSES,
    temperature: float = 1.0, top_k: int | None = None, choice_temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> DecodeResult:
    """MaskGIT-style parallel decoding: several residues per pass, the most confident kept, cosine schedule.

    ``logits_fn``, ``tokens``, ``mask_token_id``, ``temperature``, ``top_k`` and ``generator`` as in
    :func:`decode_one_per_pass` (the generator also draws the Gumbel noise).

    Parameters
    ----------
    passes : int
        Forward passes ``T`` (default 16); rows with fewer masks than ``T`` finish after one pass per mask.
    choice_temperature : float
        Scale of the Gumbel noise added to the log-confidences, annealed linearly to 0 over the passes
        (0 = purely confidence-ordered).

    Returns
    -------
    DecodeResult
        ``passes`` = forward passes used (``<= passes``).
    """
    _check_sampling(temperature, top_k)
    if passes < 1:
        raise ValueError(f"passes={passes}: must be >= 1")
    if choice_temperature < 0:
        raise ValueError(f"choice_temperature={choice_temperature}: must be >= 0")
    tokens = tokens.clone()
    initial = (tokens == mask_token_id).sum(dim=1).tolist()  # per-row mask count M
    schedules = [cosine_schedule(m, passes) for m in initial]
    used = 0
    for step in range(passes):
        masked = tokens == mask_token_id  # (B, L)
        if not bool(masked.any()):
            break
        logits = logits_fn(tokens)  # (B, L, V)
        used += 1
        probs = sampling_probabilities(logits, temperature, top_k)  # (B, L, V)
        batch, length, vocab = probs.shape
        drawn = _sample(probs.reshape(-1, vocab), generator).reshape(batch, length)  # (B, L)
        confidence = probs.gather(-1, drawn[..., None]).squeeze(-1).clamp_min(1e-20).log()  # (B, L) log p
        anneal = choice_temperature * (1.0 - (step + 1) / passes)
        if anneal > 0:
            uniform = torch.rand(confidence.shape, generator=generator, device=tokens.device).clamp(1e-20, 1 - 1e-7)
            confidence = confidence + anneal * -torch.log(-torch.log(uniform))  # Gumbel(0, anneal)
        reveal = most_confident(masked, confidence, schedules, step)
        tokens[reveal] = drawn[reveal]
    return DecodeResult(tokens, used)


def most_confident(masked: torch.Tensor, confidence: torch.Tensor, schedules: list[list[int]],
                   step: int) -> torch.Tensor:
    """The masked positions to reveal at pass ``step``: the most confident ones, as many as leave each row with
    ``schedules[row][step]`` masks (:func:`cosine_schedule`; its last entry 0 reveals the rest).

    Parameters
    ----------
    masked : torch.Tensor
        ``(B, L)`` bool, positions still masked.
    confidence : torch.Tensor
        ``(B, L)`` float, higher = decided first.

    Returns
    -------
    torch.Tensor
        ``(B, L)`` bool.
    """
    order = confidence.masked_fill(~masked, float("-inf")).argsort(dim=1, descending=True)
    reveal = torch.zeros_like(masked)
    for row in range(masked.shape[0]):
        count = int(masked[row].sum()) - schedules[row][step]
        if count > 0:
            reveal[row, order[row, :count]] = True
    return reveal


def cell_diff_logits_fn(model, protein_image: torch.Tensor, landmarks: torch.Tensor,
                        landmark_present: torch.Tensor | None = None, allowed: torch.Tensor | None = None) -> LogitsFn:
    """The residue head of a CELL-Diff model as a ``logits_fn``, conditioned on an image (the sequence task).

    Parameters
    ----------
    model : locscope.models.celldiff.CellDiff
        In eval mode.
    protein_image : torch.Tensor
        ``(B, 1, H, W)`` clean protein image in [-1, 1] at the model's resolution (given at time step 0, as in
        training's sequence task).
    landmarks : torch.Tensor
        ``(B, n_landmarks, H, W)`` in [-1, 1], model channel order.
    landmark_present : torch.Tensor, optional
        ``(B, n_landmarks)`` bool.
    allowed : torch.Tensor, optional
        ``(V,)`` bool, tokens the decoder may write (default: the 20 amino acids; ``X``, pad and mask suppressed).

    Returns
    -------
    callable
        ``tokens (B, L) -> logits (B, L, V)`` float32; rows of ``tokens`` must match the image batch.
    """
    from locscope.encoders.protein import AMINO_ACIDS, VOCAB

    if allowed is None:
        allowed = torch.tensor([token in AMINO_ACIDS for token in VOCAB])
    blocked = ~allowed.to(protein_image.device)
    timesteps = torch.zeros(protein_image.shape[0], dtype=torch.long, device=protein_image.device)

    def logits_fn(tokens: torch.Tensor) -> torch.Tensor:
        out = model(protein_image, timesteps, landmarks, tokens, landmark_present)
        return out.residue_logits.float().masked_fill(blocked, -1e4)

    return logits_fn
