"""The sequence path shared by the generative families that condition on a protein sequence with auxiliary heads
(CELL-Diff, the latent denoiser): the encoder, its projection, the pooled embedding's MLP, the compartment and
fraction heads, the null vectors of dropped sequences, the batch operations of the encoded sequence and the
sequence-only compartment read-outs, and the loss the compartment / fraction heads train with."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from locscope.encoders.protein import NUM_SEQUENCE_FEATURES, build_protein_encoder


def distribution_loss(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``logits`` ``(B, n)`` against ``weights`` ``(B, n)`` normalised to sum to 1 per row (label
    indicators or compartment fractions), averaged over the rows with any weight (rows of zeros: unknown, no loss)."""
    weights = weights.float()
    known = weights.sum(1) > 0
    targets = weights / weights.sum(1, keepdim=True).clamp(min=1e-8)
    per_row = F.cross_entropy(logits.float(), targets, reduction="none")
    return (per_row * known).sum() / known.sum().clamp(min=1)


class EncodedSequence:
    """Batch operations for a dataclass of ``(B, ...)`` tensors computed once per sequence and reused at every
    denoising step."""

    def repeat(self, times: int):
        """Repeat each row ``times`` times (K samples per sequence), batch order ``[s0, s0, ..., s1, ...]``."""
        return type(self)(*(t.repeat_interleave(times, dim=0) for t in dataclasses.astuple(self)))

    @classmethod
    def concat(cls, first, second):
        """Concatenate along the batch (one guided network call over [conditional, unconditional]); a per-residue or
        per-segment axis (dim 1) of different lengths is zero-padded to the longer."""
        parts = []
        for a, b in zip(dataclasses.astuple(first), dataclasses.astuple(second)):
            if a.ndim >= 2 and a.shape[1] != b.shape[1]:
                width = max(a.shape[1], b.shape[1])
                a = F.pad(a, (0, 0) * (a.ndim - 2) + (0, width - a.shape[1]))
                b = F.pad(b, (0, 0) * (b.ndim - 2) + (0, width - b.shape[1]))
            parts.append(torch.cat([a, b], 0))
        return cls(*parts)


class SequenceHeads:
    """The sequence path of an ``nn.Module`` whose ``config`` has ``protein_encoder``, ``sequence_dim``,
    ``sequence_layers``, ``esm_path``, ``esm_finetune``, ``compartment_classes`` and ``fraction_classes``, and whose
    ``encode_sequence(tokens)`` returns an object with ``compartment_logits`` and ``fraction_logits`` (CELL-Diff, the
    latent denoiser)."""

    def build_sequence_path(self, config, width: int, pooled_parts: int) -> None:
        """Create ``protein_encoder``, ``sequence_in`` (encoder dim -> ``width``), ``features_in`` (global sequence
        features -> ``width``), ``pool_mlp`` (``pooled_parts`` x ``width`` -> ``width``), ``compartment_head``,
        ``fraction_head`` (with fraction classes only), ``null_token`` ``(1, 1, width)`` and ``null_pooled``
        ``(1, width)``, in this order (the attribute names are the state-dict keys)."""
        self.protein_encoder = build_protein_encoder(config.protein_encoder, dim=config.sequence_dim,
                                                     num_layers=config.sequence_layers, esm_path=config.esm_path,
                                                     esm_finetune=config.esm_finetune)
        seq_dim = self.protein_encoder.dim
        self.sequence_in = nn.Sequential(nn.LayerNorm(seq_dim), nn.Linear(seq_dim, width))
        self.features_in = nn.Sequential(nn.Linear(NUM_SEQUENCE_FEATURES, width), nn.SiLU())
        self.pool_mlp = nn.Sequential(nn.Linear(pooled_parts * width, width), nn.SiLU(), nn.Linear(width, width))
        self.compartment_head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.SiLU(),
                                              nn.Linear(width, len(config.compartment_classes)))
        if config.fraction_classes:
            self.fraction_head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.SiLU(),
                                               nn.Linear(width, len(config.fraction_classes)))
        self.null_token = nn.Parameter(torch.zeros(1, 1, width))
        self.null_pooled = nn.Parameter(torch.zeros(1, width))

    def sequence_heads(self, pooled: torch.Tensor, fractions: torch.Tensor | None = None,
                       use_fractions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(compartment_logits, fraction_logits, condition)`` of the pooled embedding ``(B, width)``.

        ``condition`` ``(B, n_fraction_classes)`` is the fraction head's distribution (detached: the head learns from
        its own loss, the image loss must not reshape its probabilities), replaced by ``fractions`` on the rows of
        ``use_fractions`` (all rows when None) where ``fractions`` is given; without fraction classes both are
        ``(B, 0)``.
        """
        compartment_logits = self.compartment_head(pooled)
        if not self.config.fraction_classes:
            empty = pooled.new_zeros(pooled.shape[0], 0)
            return compartment_logits, empty, empty
        fraction_logits = self.fraction_head(pooled)
        condition = fraction_logits.detach().float().softmax(-1).to(pooled.dtype)
        if fractions is not None:
            use = torch.ones_like(condition[:, 0], dtype=torch.bool) if use_fractions is None else use_fractions
            condition = torch.where(use.to(condition.device)[:, None], fractions.to(condition), condition)
        return compartment_logits, fraction_logits, condition

    @torch.no_grad()
    def pooled_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """The pooled embedding ``(B, width)`` the compartment and fraction heads read, for ``tokens`` ``(B, L)``
        (what refitting the heads alone trains on, :mod:`locscope.training.fraction_head`)."""
        seen: list[torch.Tensor] = []
        hook = self.compartment_head.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
        try:
            self.encode_sequence(tokens)
        finally:
            hook.remove()
        return seen[0]

    @torch.no_grad()
    def predict_compartments(self, tokens: torch.Tensor) -> torch.Tensor:
        """Auxiliary head probabilities ``(B, n_compartment_classes)`` from the sequence alone (softmax; classes in
        ``config.compartment_classes``)."""
        return self.encode_sequence(tokens).compartment_logits.float().softmax(-1)

    @torch.no_grad()
    def predict_fractions(self, tokens: torch.Tensor) -> torch.Tensor:
        """Fraction-head distribution ``(B, n_fraction_classes)`` over ``config.fraction_classes`` (bottleneck
        models)."""
        if not self.config.fraction_classes:
            raise ValueError("this model has no fraction head (config.fraction_classes is empty)")
        return self.encode_sequence(tokens).fraction_logits.float().softmax(-1)
