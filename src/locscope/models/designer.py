"""A compartment-conditioned masked protein language model: the sequence designer behind ``locscope design``.

CELL-Diff's masked-residue head (``celldiff.py``) learns residues jointly with images from a few thousand proteins and,
at tiny size, ends up predicting little beyond amino-acid composition, so designs steered by it land in the target
compartment only at chance. This model is trained for the inverse direction alone, on sequences the simulator's motif
grammar writes for every compartment (unlimited, free data), and conditioned on the compartment distribution the
protein should have: the same 21-way distribution CELL-Diff's compartment bottleneck predicts from a sequence and
renders into an image, so the two models compose (``design --target`` gives it directly; ``design --image`` reads it
off the image with CELL-Diff as a diffusion classifier).

Network, read top to bottom:

1. Residue tokens (``locscope.encoders.protein.VOCAB``; ``<mask>`` at positions to design) -> embeddings, plus a
   fixed sinusoidal table of absolute positions (so attention can find neighbours: internal motifs are contiguous
   runs) and two learned embeddings of the distance from the N-terminus and from the C-terminus, each clipped at
   ``terminus_buckets`` (sorting signals are defined relative to one end or the other); then a residual depthwise
   convolution over ``local_kernel`` neighbouring residues (motifs are short local patterns).
2. Condition: the compartment distribution ``(B, n_classes)`` -> MLP -> a vector added to every residue embedding and
   prepended as an extra token; a dropped condition (classifier-free guidance) uses a learned null vector instead.
3. ``layers`` pre-norm transformer encoder layers (bidirectional self-attention, GELU MLP).
4. LayerNorm + linear head to residue logits; padding and mask tokens are suppressed.

Training (``locscope.training.designer_module``) is the order-agnostic masked-diffusion objective of
``locscope.diffusion.masked``, so the same one-residue-per-pass and parallel (MaskGIT) decoders as CELL-Diff's head
fill templates (:func:`designer_logits_fn`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn

from locscope.data.ontology import SIMULATOR_COMPARTMENTS
from locscope.encoders.protein import PAD_ID, RESIDUE_IDS, UNKNOWN_ID, VOCAB
from locscope.utils.checkpoint import PretrainedMixin


def _compartments() -> tuple[str, ...]:
    return SIMULATOR_COMPARTMENTS


@dataclass
class DesignerConfig:
    """Hyper-parameters of :class:`SequenceDesigner` (saved as ``config.json`` beside the weights).

    Parameters
    ----------
    fraction_classes : tuple of str
        The compartments of the conditioning distribution, in order (default: the simulator's 21 level-1
        compartments, as CELL-Diff's bottleneck).
    width : int
        Embedding / transformer width.
    layers : int
        Transformer encoder layers.
    heads : int
        Attention heads.
    mlp_ratio : float
        MLP hidden width / ``width``.
    terminus_buckets : int
        Residues from each terminus with their own position embedding; farther residues share one.
    local_kernel : int
        Width (residues, odd) of the depthwise convolution mixing neighbouring residues before the transformer.
    max_length : int
        Longest sequence (residues) the designer accepts.
    """

    fraction_classes: tuple[str, ...] = dataclasses.field(default_factory=_compartments)
    width: int = 128
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    terminus_buckets: int = 48
    local_kernel: int = 7
    max_length: int = 2048

    def __post_init__(self) -> None:
        self.fraction_classes = tuple(self.fraction_classes)
        if not self.fraction_classes:
            raise ValueError("DesignerConfig.fraction_classes must name at least one compartment")
        if self.local_kernel < 1 or self.local_kernel % 2 == 0:
            raise ValueError(f"DesignerConfig: local_kernel {self.local_kernel} must be odd and >= 1")
        if self.width % self.heads:
            raise ValueError(f"DesignerConfig: width {self.width} is not divisible by heads {self.heads}")


def sincos_positions(rows: int, width: int) -> torch.Tensor:
    """The transformer's fixed sinusoidal position table ``(rows, width)`` (Vaswani et al. 2017), scaled by 0.1 so it
    does not swamp the residue embeddings at initialisation."""
    position = torch.arange(rows, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-torch.log(torch.tensor(10000.0)) / width))
    table = torch.zeros(rows, width)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: width // 2])
    return 0.1 * table


def designer_tiny_config(**overrides) -> DesignerConfig:
    """The CPU configuration of the bundled ``designer-tiny`` (~0.8 M parameters)."""
    return DesignerConfig(**overrides)


class SequenceDesigner(PretrainedMixin, nn.Module):
    """Masked-residue logits of a protein sequence given the compartment distribution it should have.

    Examples
    --------
    >>> model = SequenceDesigner(DesignerConfig(width=32, layers=1, heads=2))
    >>> tokens = torch.tensor([[3, 1, 1, 4]])                      # a residue, two masks, a residue
    >>> fractions = torch.eye(len(model.config.fraction_classes))[:1]
    >>> model(tokens, fractions).shape
    torch.Size([1, 4, 23])
    """

    config_class = DesignerConfig

    def __init__(self, config: DesignerConfig) -> None:
        super().__init__()
        self.config = config
        width, buckets = config.width, config.terminus_buckets
        self.residue_embed = nn.Embedding(len(VOCAB), width, padding_idx=PAD_ID)
        self.from_n_terminus = nn.Embedding(buckets + 1, width)
        self.from_c_terminus = nn.Embedding(buckets + 1, width)
        self.register_buffer("positions", sincos_positions(config.max_length, width), persistent=False)
        self.local_norm = nn.LayerNorm(width)
        self.local_mix = nn.Conv1d(width, width, config.local_kernel, padding=config.local_kernel // 2, groups=width)
        self.condition_mlp = nn.Sequential(nn.Linear(len(config.fraction_classes), width), nn.SiLU(),
                                           nn.Linear(width, width))
        self.null_condition = nn.Parameter(torch.zeros(width))
        layer = nn.TransformerEncoderLayer(width, config.heads, int(width * config.mlp_ratio), dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, len(VOCAB))
        not_residue = torch.ones(len(VOCAB), dtype=torch.bool)
        not_residue[list(RESIDUE_IDS)] = False
        not_residue[UNKNOWN_ID] = True  # never design an unknown residue
        self.register_buffer("not_residue", not_residue, persistent=False)

    def condition(self, fractions: torch.Tensor | None, batch: int, drop: torch.Tensor | None = None) -> torch.Tensor:
        """The condition vector ``(B, width)``: the MLP of ``fractions`` ``(B, n_classes)``, or the learned null
        vector where ``fractions`` is None or ``drop`` ``(B,)`` is True."""
        null = self.null_condition.expand(batch, -1)
        if fractions is None:
            return null
        embedded = self.condition_mlp(fractions.to(null.dtype))
        if drop is None:
            return embedded
        return torch.where(drop.to(embedded.device)[:, None], null, embedded)

    def forward(self, tokens: torch.Tensor, fractions: torch.Tensor | None = None,
                drop_condition: torch.Tensor | None = None) -> torch.Tensor:
        """Residue logits.

        Parameters
        ----------
        tokens : torch.Tensor
            ``(B, L)`` long, ``PAD_ID`` after each sequence's end, ``MASK_ID`` at positions to predict.
        fractions : torch.Tensor, optional
            ``(B, n_classes)`` compartment distribution each sequence should have (None: unconditional).
        drop_condition : torch.Tensor, optional
            ``(B,)`` bool rows to run unconditionally (classifier-free guidance training).

        Returns
        -------
        torch.Tensor
            ``(B, L, len(VOCAB))`` logits; non-residue tokens carry -1e4.
        """
        batch, length = tokens.shape
        if length > self.config.max_length:
            raise ValueError(f"{length} residues: longer than the designer's maximum of {self.config.max_length}")
        valid = tokens != PAD_ID
        lengths = valid.sum(1, keepdim=True)
        positions = torch.arange(length, device=tokens.device)[None]
        buckets = self.config.terminus_buckets
        from_n = positions.clamp(max=buckets).expand(batch, -1)
        from_c = (lengths - 1 - positions).clamp(min=0, max=buckets)
        condition = self.condition(fractions, batch, drop_condition)  # (B, width)
        h = (self.residue_embed(tokens) + self.positions[:length] + self.from_n_terminus(from_n)
             + self.from_c_terminus(from_c))
        h = h + self.local_mix(self.local_norm(h).masked_fill(~valid[..., None], 0.0).transpose(1, 2)).transpose(1, 2)
        h = torch.cat([condition[:, None], h + condition[:, None]], dim=1)  # (B, 1 + L, width)
        padding = torch.cat([torch.zeros_like(valid[:, :1]), ~valid], dim=1)
        h = self.encoder(h, src_key_padding_mask=padding)
        logits = self.head(self.final_norm(h[:, 1:]))
        return logits.masked_fill(self.not_residue, -1e4)


def designer_logits_fn(model: SequenceDesigner, fractions: torch.Tensor, guidance: float = 1.0):
    """The designer as a decoder's ``logits_fn`` (:mod:`locscope.diffusion.masked_decoding`).

    Parameters
    ----------
    fractions : torch.Tensor
        ``(B, n_classes)`` target compartment distribution per row.
    guidance : float
        Classifier-free guidance scale on the logits (1 = conditional only; > 1 runs the conditional and the
        unconditional rows in one doubled batch and extrapolates).
    """
    @torch.no_grad()
    def logits_fn(tokens: torch.Tensor) -> torch.Tensor:
        if guidance == 1.0:
            return model(tokens, fractions)
        drop = torch.cat([torch.zeros(len(tokens), dtype=torch.bool), torch.ones(len(tokens), dtype=torch.bool)])
        both = model(torch.cat([tokens, tokens]), torch.cat([fractions, fractions]), drop.to(tokens.device))
        conditional, unconditional = both.float().chunk(2)
        return unconditional + guidance * (conditional - unconditional)

    return logits_fn
