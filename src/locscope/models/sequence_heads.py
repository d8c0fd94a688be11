"""Sequence-only compartment read-outs shared by the generative families that carry auxiliary sequence heads."""

from __future__ import annotations

import torch


class SequenceHeads:
    """``predict_compartments`` / ``predict_fractions`` for a model whose ``encode_sequence(tokens)`` returns an
    object with ``compartment_logits`` and ``fraction_logits`` and whose ``config`` lists ``fraction_classes``
    (CELL-Diff, the latent denoiser)."""

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
