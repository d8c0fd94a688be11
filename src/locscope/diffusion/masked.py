"""Order-agnostic masked (absorbing-state) diffusion over protein sequences, as in CELL-Diff.

Training: per sample draw ``k ~ U{1..L}`` (``L`` = that sample's length), replace ``k`` random residues by the mask
token and score the model's cross-entropy on the masked positions weighted ``1 / k`` (the order-agnostic ELBO of
Hoogeboom et al. 2022 / Austin et al. 2021). Sampling: start from an all-mask stretch and reveal residues; the
reference sampler of the published code reveals ONE random position per forward pass.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def mask_random_residues(
    tokens: torch.Tensor, lengths: torch.Tensor, mask_token_id: int, generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask ``k ~ U{1..L_b}`` random residues of every sequence.

    Parameters
    ----------
    tokens : torch.Tensor
        ``(B, L)`` long residue tokens, padded after ``lengths``.
    lengths : torch.Tensor
        ``(B,)`` number of real residues per row (>= 1).
    mask_token_id : int
        Token written at masked positions.
    generator : torch.Generator, optional
        Source of randomness (on ``tokens.device``).

    Returns
    -------
    masked_tokens : torch.Tensor
        ``(B, L)`` tokens with the chosen positions replaced by ``mask_token_id``.
    masked : torch.Tensor
        ``(B, L)`` bool, the masked positions.
    k : torch.Tensor
        ``(B,)`` float, number of masked residues per row.
    """
    batch, width = tokens.shape
    device = tokens.device
    positions = torch.arange(width, device=device).expand(batch, width)
    valid = positions < lengths[:, None]
    k = (torch.rand(batch, generator=generator, device=device) * lengths.float()).floor().long() + 1  # U{1..L}
    scores = torch.rand(batch, width, generator=generator, device=device).masked_fill(~valid, 2.0)
    ranks = scores.argsort(dim=1).argsort(dim=1)  # rank of each position among the row's random scores
    masked = (ranks < k[:, None]) & valid
    return tokens.masked_fill(masked, mask_token_id), masked, k.float()


def masked_residue_loss(logits: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Per-sample order-agnostic loss: sum of CE over masked positions divided by ``k``; shape ``(B,)``.

    ``logits`` ``(B, L, V)``, ``targets`` ``(B, L)`` long, ``masked`` ``(B, L)`` bool, ``k`` ``(B,)`` float.
    """
    ce = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")  # (B, L)
    return (ce * masked).sum(dim=1) / k.clamp(min=1.0)


@torch.no_grad()
def sample_one_per_pass(
    logits_fn: Callable[[torch.Tensor], torch.Tensor], tokens: torch.Tensor, mask_token_id: int,
    temperature: float = 1.0, generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, int]:
    """The reference order-agnostic sampler: reveal one random masked position per forward pass.

    Parameters
    ----------
    logits_fn : callable
        Maps ``(B, L)`` tokens to ``(B, L, V)`` logits (mask/pad logits should already be suppressed).
    tokens : torch.Tensor
        ``(B, L)`` template; positions equal to ``mask_token_id`` are filled.
    temperature : float
        Softmax temperature (> 0).

    Returns
    -------
    tokens : torch.Tensor
        ``(B, L)`` with every masked position filled.
    passes : int
        Number of forward passes used (the largest number of masks in a row).
    """
    if temperature <= 0:
        raise ValueError(f"temperature={temperature}: must be > 0")
    tokens = tokens.clone()
    passes = 0
    while bool((tokens == mask_token_id).any()):
        logits = logits_fn(tokens).float() / temperature  # (B, L, V)
        still = tokens == mask_token_id
        pick_scores = torch.rand(still.shape, generator=generator, device=tokens.device).masked_fill(~still, -1.0)
        position = pick_scores.argmax(dim=1)  # (B,) one random masked position per row
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        probs = logits[rows, position].softmax(dim=-1)  # (B, V)
        choice = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        has_mask = still.any(dim=1)
        tokens[rows[has_mask], position[has_mask]] = choice[has_mask]
        passes += 1
    return tokens, passes
