"""Image generation with a CELL-E 2 model: confidence-ordered parallel decoding of the protein-image tokens.

Every pass runs the transformer once on ``[text] [SEP] [nucleus tokens] [protein-image tokens]`` with the undecided
image tokens masked, draws a code at every masked position by the Gumbel-max trick on the top-k filtered logits
(``argmax(filtered / T + g)``, ``g = -log(-log(u))``, as CELL-E 2's ``sample``), and keeps the most confident draws
(confidence = the winning perturbed score, as published). With ``passes=1`` every token is decided by one forward
pass (CELL-E 2's one-pass mode; identical to the released sampler for the same uniforms); with ``passes=N`` the number
still masked after pass ``i`` follows MaskGIT's cosine schedule ``floor(S cos(pi/2 i/N))``.

The result carries, for every token, the distribution it was drawn from (``softmax(filtered / T)`` over the codes),
from which the model decodes the per-pixel probability map (the "PDF"), and the raw logits (the released heatmap).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from locscope.diffusion.masked_decoding import cosine_schedule, most_confident


@dataclass
class ImageTokenSample:
    """Output of :func:`decode_image_tokens`.

    Attributes
    ----------
    tokens : torch.Tensor
        ``(B, S)`` long protein-image codes.
    probabilities : torch.Tensor
        ``(B, S, m)`` the distribution each token was drawn from (``softmax(filtered logits / T)``).
    logits : torch.Tensor
        ``(B, S, m)`` the raw (unfiltered) logits each token was decided with.
    passes : int
        Forward passes of the transformer for the whole batch (the network evaluations).
    """

    tokens: torch.Tensor
    probabilities: torch.Tensor
    logits: torch.Tensor
    passes: int


def top_k_keep(num_columns: int, filter_thres: float) -> int:
    """How many logits CELL-E 2's ``top_k`` keeps: ``max(int((1 - filter_thres) * num_columns), 1)``.

    ``num_columns`` is the model's whole logit width (published: 164 -> 16, 1060 -> 105).
    """
    return max(int((1 - filter_thres) * num_columns), 1)


def gumbel(uniform: torch.Tensor) -> torch.Tensor:
    """Gumbel noise from uniforms in [0, 1), as CELL-E 2 computes it: ``-log(-log(u + 1e-20) + 1e-20)``."""
    return -torch.log(-torch.log(uniform + 1e-20) + 1e-20)


@torch.no_grad()
def decode_image_tokens(
    model, text: torch.Tensor, nucleus: torch.Tensor, *, passes: int = 1, temperature: float = 1.0,
    filter_thres: float = 0.9, generator: torch.Generator | None = None, uniforms: list[torch.Tensor] | None = None,
    protein: torch.Tensor | None = None,
) -> ImageTokenSample:
    """Decode the masked protein-image tokens of each row in ``passes`` forward passes.

    Parameters
    ----------
    model : locscope.models.celle2.Celle2
        In eval mode.
    text : torch.Tensor
        ``(B, text_len)`` text ids (``model.tokenize``).
    nucleus : torch.Tensor
        ``(B, S)`` nucleus codes (``model.encode_nucleus``).
    passes : int
        Forward passes (>= 1); 1 = CELL-E 2's one-pass generation.
    temperature : float
        > 0; divides the filtered logits before the Gumbel draw.
    filter_thres : float
        In [0, 1): keep the ``top_k_keep(total_tokens, filter_thres)`` largest logits per position (published 0.9).
    generator : torch.Generator, optional
        Draws the uniforms (on ``text.device``).
    uniforms : list of torch.Tensor, optional
        Uniforms ``(B, S, m)`` to use instead of drawing, one per pass (to replay a published run).
    protein : torch.Tensor, optional
        ``(B, S)`` a partly known protein-image token grid; only its ``model.protein_mask_id`` positions are decoded
        (default: all masked).

    Returns
    -------
    ImageTokenSample
    """
    if passes < 1:
        raise ValueError(f"passes={passes}: must be >= 1")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature}: must be > 0")
    if not 0 <= filter_thres < 1:
        raise ValueError(f"filter_thres={filter_thres}: must be in [0, 1)")
    mask_id = model.protein_mask_id
    tokens = torch.full_like(nucleus, mask_id) if protein is None else protein.clone()
    batch, length = tokens.shape
    codes = model.config.protein_codebook_size
    keep = top_k_keep(model.config.total_tokens, filter_thres)
    probabilities = torch.zeros(batch, length, codes, device=tokens.device)
    logits_kept = torch.zeros(batch, length, codes, device=tokens.device)
    schedules = [cosine_schedule(int(n), passes) for n in (tokens == mask_id).sum(1).tolist()]
    used = 0
    for step in range(passes):
        masked = tokens == mask_id  # (B, S)
        if not bool(masked.any()):
            break
        logits = model(text, nucleus, tokens).image_logits.float()  # (B, S, m)
        used += 1
        if keep < codes:
            kth = logits.topk(keep, dim=-1).values[..., -1:]
            filtered = logits.masked_fill(logits < kth, float("-inf"))
        else:
            filtered = logits
        if uniforms is not None and step < len(uniforms):
            uniform = uniforms[step].to(logits)
        else:
            uniform = torch.rand(logits.shape, generator=generator, device=logits.device)
        scores = filtered / temperature + gumbel(uniform)
        confidence, drawn = scores.max(dim=-1)  # (B, S)
        reveal = most_confident(masked, confidence, schedules, step)
        tokens[reveal] = drawn[reveal]
        probabilities[reveal] = (filtered / temperature).softmax(dim=-1)[reveal]
        logits_kept[reveal] = logits[reveal]
    return ImageTokenSample(tokens, probabilities, logits_kept, used)
