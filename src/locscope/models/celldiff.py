"""CELL-Diff: a unified diffusion model over protein sequences and microscopy images.

Architecture (the seed's pixel-space first release), read top to bottom:

1. Inputs: the noisy protein image ``x_t`` ``(B, 1, H, W)`` concatenated with the landmark images ``(B, n_landmarks, H, W)``
   (nucleus, ER, microtubules; any subset: a missing landmark is replaced by a learned placeholder image).
2. The protein sequence goes through a protein encoder (:mod:`locscope.encoders.protein`): per-residue embeddings, pooled
   into at most ``max_sequence_tokens`` segment tokens.
3. Three down groups (``layers_per_group`` residual blocks, each optionally followed by a cross-attention block whose
   keys/values are the image's own patch tokens concatenated with the sequence tokens), each ending in a stride-2 conv.
4. At the bottleneck a patchify (``patch_size``) turns the feature map into image tokens; an encoder-only transformer of
   adaLN-Zero blocks (DiT, Peebles & Xie 2023) processes image tokens + sequence tokens conditioned on the time step.
5. Three up groups mirror the down path (skip connections from each down group) back to full resolution.
6. Heads: the image head predicts ``v`` (v-parameterisation); the sequence head predicts masked residues from the
   per-residue embeddings plus the transformer's output for their segment token; the auxiliary compartment head
   classifies the pooled sequence embedding alone (a direct sequence -> localization predictor).

Additions of the CPU recipe (``shared/design/cpu-training.md``), which made the sequence actually steer the image: the
pooled sequence embedding (mean + max + global sequence features -> MLP) is ADDED to the time embedding (conditioning every
residual block and every adaLN block), and an auxiliary compartment-classification loss trains that pooled embedding. For
classifier-free guidance a dropped sequence is replaced by a learned null token and a learned null pooled vector.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.models.embeddings import get_timestep_embedding

from locscope.channels import ER, MICROTUBULES, NUCLEUS
from locscope.data.ontology import CELLDIFF_COMPARTMENT_CLASSES, SIMULATOR_COMPARTMENTS
from locscope.encoders.protein import MASK_ID, PAD_ID, RESIDUE_IDS, VOCAB, ProteinEncoding
from locscope.models.sequence_heads import EncodedSequence, SequenceHeads
from locscope.utils.checkpoint import PretrainedMixin


@dataclass
class CellDiffConfig:
    """Hyper-parameters of :class:`CellDiff` (saved as ``config.json`` beside the weights).

    Parameters
    ----------
    image_size : int
        Side of the square images in pixels.
    landmark_channels : tuple of str
        Landmark channel names, in input order.
    channels : tuple of int
        ``(stem, group1, group2, group3)`` widths: the stem works at ``channels[0]``; down group ``i`` maps
        ``channels[i] -> channels[i + 1]`` at resolution ``image_size / 2**i``; the bottleneck has ``channels[3]``.
    layers_per_group : int
        Residual (+ cross-attention) blocks per group (seed: 2).
    attention_groups : tuple of bool
        Per group (down ``i`` and its mirrored up group), whether cross-attention blocks follow the residual blocks.
    attention_grid : int
        Side of the patch grid used as the image's keys/values in cross-attention (``H_i / attention_grid`` patch).
    attention_heads : int
        Heads of the cross-attention blocks.
    patch_size : int
        Patchify at the bottleneck (seed: 8).
    transformer_width, transformer_layers, transformer_heads : int
        The adaLN-Zero transformer (seed: 24 layers, 8 heads).
    protein_encoder : {'builtin', 'esm2'}
        Sequence encoder; ``sequence_dim`` is its width (ESM2: the checkpoint's hidden size).
    sequence_dim, sequence_layers : int
        Built-in encoder width and conv blocks.
    esm_path : str or None
        Local ESM2 directory (``protein_encoder='esm2'``).
    esm_finetune : bool
        Fine-tune ESM2 instead of freezing it.
    max_sequence_length : int
        Longer sequences keep both termini (middle cropped) (seed: 2048).
    max_sequence_tokens : int
        Residue embeddings are mean-pooled into at most this many contiguous segments before they enter attention.
    compartment_classes : tuple of str
        Classes of the auxiliary compartment head (default: the 7 level-3 classes).
    fraction_classes : tuple of str
        Compartment-bottleneck conditioning (empty = off, the seed's design). When set (e.g. the simulator's 21 level-1
        compartments), a fraction head predicts the protein's distribution over these compartments from the pooled
        sequence embedding, and that distribution (the true one, teacher-forced, for part of the training samples) is
        projected into the time embedding. The image path then only has to learn a low-dimensional, always-informative
        condition; the sequence -> compartment mapping is learned by the head.
    resnet_time_norm : {'default', 'scale_shift'}
        How residual blocks take the time (+ condition) embedding: added (``'default'``) or as FiLM scale and shift.
    num_train_timesteps : int
        Diffusion steps T (seed: 1000).
    schedule_base : int
        Reference resolution of the shifted-cosine schedule: logSNR is shifted by ``2 log(schedule_base / image_size)``
        (seed: 64). A smaller base adds noise at every step, so more of training happens at the noise levels where the
        protein's compartment (the global layout) is decided.
    layout_prior : bool
        Compartment layout prior (needs ``fraction_classes``): a small U-Net (:class:`LayoutNet`) maps the landmarks to
        one non-negative map per compartment (where a protein living there is expected in this cell), the condition's
        fractions mix the maps into an expected image, and that image enters the denoiser as one more input channel.
        The maps learn where each compartment lies from the simulator's compartment masks (when the training data
        has them) and how bright it is by regression on the clean image (:meth:`CellDiff.expected_image`), so the
        layout is learned directly from the landmarks, and diffusion only adds the texture around it.
    layout_width : int
        Width of the layout U-Net's first level (then 2x, 4x, 4x).
    """

    image_size: int = 256
    landmark_channels: tuple[str, ...] = (NUCLEUS, ER, MICROTUBULES)
    channels: tuple[int, ...] = (64, 128, 256, 512)
    layers_per_group: int = 2
    attention_groups: tuple[bool, ...] = (True, True, True)
    attention_grid: int = 16
    attention_heads: int = 8
    patch_size: int = 8
    transformer_width: int = 1024
    transformer_layers: int = 24
    transformer_heads: int = 8
    protein_encoder: str = "builtin"
    sequence_dim: int = 640
    sequence_layers: int = 6
    esm_path: str | None = None
    esm_finetune: bool = False
    max_sequence_length: int = 2048
    max_sequence_tokens: int = 2048
    compartment_classes: tuple[str, ...] = CELLDIFF_COMPARTMENT_CLASSES
    fraction_classes: tuple[str, ...] = ()
    resnet_time_norm: str = "default"
    num_train_timesteps: int = 1000
    schedule_base: int = 64
    layout_prior: bool = False
    layout_width: int = 16

    def __post_init__(self) -> None:
        if self.layout_prior and not self.fraction_classes:
            raise ValueError("layout_prior=True needs fraction_classes (the maps are mixed by compartment fractions)")
        if len(self.channels) != 4:
            raise ValueError(f"channels={self.channels}: expected 4 widths (stem + three groups)")
        if len(self.attention_groups) != 3:
            raise ValueError(f"attention_groups={self.attention_groups}: expected 3 booleans")
        bottleneck = self.image_size // 8
        if self.image_size % 8 or bottleneck % self.patch_size:
            raise ValueError(f"image_size={self.image_size}, patch_size={self.patch_size}: image_size / 8 must be a "
                             "multiple of patch_size")
        if not self.landmark_channels:
            raise ValueError("landmark_channels is empty: at least one landmark channel is needed")
        if self.resnet_time_norm not in ("default", "scale_shift"):
            raise ValueError(f"resnet_time_norm={self.resnet_time_norm!r}: accepted values are default, scale_shift")


def celldiff_base_config(**overrides) -> CellDiffConfig:
    """The seed configuration: 256x256, channels 64 -> 512, patch 8 at the 32x32 bottleneck (16 tokens), 24 adaLN-Zero
    blocks with 8 heads, 640-d sequence embedding (ESM2-150M-sized), sequences up to 2,048 residues."""
    return dataclasses.replace(CellDiffConfig(), **overrides)


def celldiff_tiny_config(**overrides) -> CellDiffConfig:
    """The CPU default: 32x32 images, cross-attention only at the lowest U-Net resolution, a 3-layer transformer, the
    compartment bottleneck over the simulator's 21 level-1 compartments with FiLM residual blocks, and a noisier schedule
    (base 16: logSNR shifted by 2 log(16/32)), which trained the bundled model's image path faster than base 64."""
    tiny = CellDiffConfig(
        image_size=32, channels=(16, 32, 48, 64), layers_per_group=1, attention_groups=(False, False, True),
        attention_grid=4, attention_heads=4, patch_size=1, transformer_width=96, transformer_layers=3,
        transformer_heads=4, sequence_dim=64, sequence_layers=3, max_sequence_length=320, max_sequence_tokens=40,
        fraction_classes=SIMULATOR_COMPARTMENTS, resnet_time_norm="scale_shift", schedule_base=16,
    )
    return dataclasses.replace(tiny, **overrides)


CONFIGS = {"celldiff-base": celldiff_base_config, "celldiff-tiny": celldiff_tiny_config}


def config_by_name(name: str, **overrides) -> CellDiffConfig:
    """``'celldiff-base'`` or ``'celldiff-tiny'`` (with field overrides); ValueError names the accepted values."""
    if name not in CONFIGS:
        raise ValueError(f"config {name!r}: accepted names are {', '.join(CONFIGS)}")
    return CONFIGS[name](**overrides)


@dataclass
class SequenceContext(EncodedSequence):
    """The encoded sequence, computed once per sequence and reused at every denoising step (``repeat`` / ``concat``
    pad S).

    Attributes
    ----------
    tokens : torch.Tensor
        ``(B, S, transformer_width)`` segment tokens (after projection).
    token_mask : torch.Tensor
        ``(B, S)`` bool, real segments.
    pooled : torch.Tensor
        ``(B, transformer_width)`` pooled embedding added to the time embedding (the null vector where dropped).
    compartment_logits : torch.Tensor
        ``(B, n_classes)`` auxiliary head on the (never dropped) pooled sequence embedding.
    residues : torch.Tensor
        ``(B, L, sequence_dim)`` per-residue encoder output.
    segment : torch.Tensor
        ``(B, L)`` long, the segment token of each residue.
    fraction_logits : torch.Tensor
        ``(B, n_fraction_classes)`` the fraction head (width 0 when ``fraction_classes`` is empty).
    condition : torch.Tensor
        ``(B, n_fraction_classes)`` the compartment distribution the image path is conditioned on (zeros where dropped).
    """

    tokens: torch.Tensor
    token_mask: torch.Tensor
    pooled: torch.Tensor
    compartment_logits: torch.Tensor
    residues: torch.Tensor
    segment: torch.Tensor
    fraction_logits: torch.Tensor
    condition: torch.Tensor


@dataclass
class CellDiffOutput:
    """Output of :meth:`CellDiff.forward`.

    Attributes
    ----------
    image : torch.Tensor
        ``(B, 1, H, W)`` v-prediction for the protein image.
    residue_logits : torch.Tensor
        ``(B, L, len(VOCAB))`` masked-residue logits (padding and mask tokens suppressed to -inf-like values).
    compartment_logits : torch.Tensor
        ``(B, n_classes)`` auxiliary compartment logits from the sequence alone.
    fraction_logits : torch.Tensor
        ``(B, n_fraction_classes)`` fraction-head logits (width 0 when the bottleneck is off).
    """

    image: torch.Tensor
    residue_logits: torch.Tensor
    compartment_logits: torch.Tensor
    fraction_logits: torch.Tensor


def full_precision_attention(attend: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> torch.Tensor:
    """``attend(*inputs)``, in fp32 when the inputs are on the CPU under autocast (elsewhere as it is): torch's CPU
    flash-attention forward + backward is about 3.5x slower in bf16 than in fp32 at this model's head widths (12-24),
    while everything around it gains from bf16."""
    if inputs[0].device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
        return attend(*inputs)
    with torch.autocast("cpu", enabled=False):
        return attend(*(tensor.float() for tensor in inputs))


class CrossAttentionBlock(nn.Module):
    """Pixel queries attend to keys/values = the feature map's own patch tokens + the sequence tokens.

    ``x`` ``(B, C, H, W)``; the image keys are ``adaptive_avg_pool2d(x, grid)`` (``grid**2`` tokens) so the cost stays
    ``H * W * (grid**2 + S)`` at any resolution.
    """

    def __init__(self, channels: int, context_dim: int, heads: int, grid: int) -> None:
        super().__init__()
        from diffusers.models.attention_processor import Attention

        self.grid = grid
        self.norm = nn.GroupNorm(min(32, channels // 4), channels, eps=1e-6)
        self.sequence_proj = nn.Linear(context_dim, channels)
        self.attention = Attention(query_dim=channels, heads=heads, dim_head=max(channels // heads, 8), out_bias=True)
        nn.init.zeros_(self.attention.to_out[0].weight)  # start as identity (zero residual)
        nn.init.zeros_(self.attention.to_out[0].bias)

    def forward(self, x: torch.Tensor, sequence: torch.Tensor, sequence_mask: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        h = self.norm(x)
        queries = h.flatten(2).transpose(1, 2)  # (B, H*W, C)
        patches = F.adaptive_avg_pool2d(h, min(self.grid, height)).flatten(2).transpose(1, 2)  # (B, g*g, C)
        context = torch.cat([patches, self.sequence_proj(sequence)], dim=1)  # (B, g*g + S, C)
        keep = torch.cat([torch.ones(batch, patches.shape[1], dtype=torch.bool, device=x.device), sequence_mask], 1)
        bias = torch.zeros(keep.shape, dtype=queries.dtype, device=x.device).masked_fill(~keep, float("-inf"))
        # diffusers' Attention takes an additive mask (B, 1, keys) broadcast over queries and heads
        out = full_precision_attention(lambda q, c, b: self.attention(q, encoder_hidden_states=c, attention_mask=b),
                                       queries, context, bias[:, None, :])
        return x + out.transpose(1, 2).reshape(batch, channels, height, width).to(x.dtype)


class AdaLNZeroBlock(nn.Module):
    """DiT block: LayerNorm modulated by the conditioning (shift, scale, gate; gates start at zero) -> MHSA, -> MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.modulation[1].weight)  # adaLN-Zero: every block starts as the identity
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, x: torch.Tensor, condition: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, N, width)``, ``condition`` ``(B, width)``, ``padding`` ``(B, N)`` bool (True = ignore)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(condition)[:, None].chunk(6, dim=-1)
        h = self.norm1(x) * (1 + scale1) + shift1
        h = full_precision_attention(lambda q: self.attention(q, q, q, key_padding_mask=padding, need_weights=False)[0], h)
        x = x + gate1 * h
        h = self.norm2(x) * (1 + scale2) + shift2
        return x + gate2 * self.mlp(h)


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 convolutions with GroupNorm + SiLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(min(8, cout // 4), cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(min(8, cout // 4), cout), nn.SiLU())


class LayoutNet(nn.Module):
    """Landmarks ``(B, n_landmarks, H, W)`` in [-1, 1] -> one non-negative map per compartment ``(B, n_maps, H, W)``.

    A four-level U-Net (widths ``w, 2w, 4w, 4w``; receptive field about 60 px, enough to see the distance to the
    nucleus and to the cell's rim) with two heads: compartment-membership logits (trained against the simulator's
    exact compartment masks when the training data has them) and a softplus intensity; map ``k`` =
    ``sigmoid(membership_k) * intensity_k`` is the image, in [0, 1] intensity units, of a protein that lives only in
    compartment ``k`` of this cell (see :meth:`CellDiff.expected_image`).
    """

    def __init__(self, in_channels: int, n_maps: int, width: int = 16) -> None:
        super().__init__()
        widths = (width, 2 * width, 4 * width, 4 * width)
        self.down = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.down.append(_conv_block(cin, w))
            cin = w
        self.up = nn.ModuleList(_conv_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(3)))
        self.head = nn.Conv2d(widths[0], n_maps, 1)
        nn.init.constant_(self.head.bias, -3.0)  # maps start near 0.05: a dark cell, like most of an image
        self.membership = nn.Conv2d(widths[0], n_maps, 1)
        nn.init.constant_(self.membership.bias, -2.5)  # a compartment covers a few percent of a crop
        self.background = nn.Parameter(torch.zeros(1))

    def forward(self, landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(maps, membership_logits)``, both ``(B, n_maps, H, W)``."""
        skips, h = [], landmarks
        for i, block in enumerate(self.down):
            h = block(h if i == 0 else F.avg_pool2d(h, 2))
            skips.append(h)
        skips.pop()
        for block in self.up:
            skip = skips.pop()
            h = block(torch.cat([F.interpolate(h, size=skip.shape[-2:], mode="nearest"), skip], 1))
        logits = self.membership(h)
        return F.softplus(self.head(h)) * torch.sigmoid(logits), logits

    def mix(self, maps: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
        """``2 (background + sum_k fractions[:, k] maps_k) - 1``: the expected protein image ``(B, 1, H, W)`` in the
        [-1, 1] image scale; ``fractions`` ``(B, n_maps)`` (rows of zeros, a dropped condition, give the background
        alone)."""
        mixed = torch.einsum("bk,bkhw->bhw", fractions.to(maps.dtype), maps)[:, None]
        return 2.0 * (mixed + self.background.to(maps.dtype)) - 1.0


class CellDiff(SequenceHeads, PretrainedMixin, nn.Module):
    """The CELL-Diff network (see the module docstring); build from a :class:`CellDiffConfig`.

    Examples
    --------
    >>> model = CellDiff(celldiff_tiny_config(image_size=16, channels=(8, 8, 16, 16), transformer_width=32,
    ...                                       transformer_layers=1, sequence_dim=16, sequence_layers=1))
    >>> tokens = model.tokenize(["MPKKKRKV", "MLSRAVCG"])[0]
    >>> out = model(torch.randn(2, 1, 16, 16), torch.tensor([10, 500]), torch.randn(2, 3, 16, 16), tokens)
    >>> out.image.shape, out.residue_logits.shape, out.compartment_logits.shape
    (torch.Size([2, 1, 16, 16]), torch.Size([2, 8, 23]), torch.Size([2, 7]))
    """

    config_class = CellDiffConfig

    mask_token_id = MASK_ID
    pad_token_id = PAD_ID
    vocab = VOCAB

    def __init__(self, config: CellDiffConfig) -> None:
        super().__init__()
        from diffusers.models.resnet import ResnetBlock2D

        self.config = config
        c = config.channels
        n_landmarks = len(config.landmark_channels)
        width = config.transformer_width
        time_dim = 4 * c[0]

        # --- sequence path -------------------------------------------------------------------------------------
        # pooled = MLP(mean, max, global features) -> the recipe's sequence summary added to the time embedding
        self.build_sequence_path(config, width, pooled_parts=3)
        seq_dim = self.protein_encoder.dim
        n_fractions = len(config.fraction_classes)
        self.sequence_type = nn.Parameter(torch.zeros(1, 1, width))
        self.image_type = nn.Parameter(torch.zeros(1, 1, width))

        # --- time + landmarks ----------------------------------------------------------------------------------
        self.time_mlp = nn.Sequential(nn.Linear(c[0], time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.pooled_to_time = nn.Linear(width, time_dim)
        if n_fractions:
            self.fractions_to_time = nn.Sequential(nn.Linear(n_fractions, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.landmark_placeholder = nn.Parameter(torch.zeros(1, n_landmarks, config.image_size, config.image_size))
        if config.layout_prior:
            self.layout = LayoutNet(n_landmarks, n_fractions, config.layout_width)
        self.stem = nn.Conv2d(1 + n_landmarks + int(config.layout_prior), c[0], 3, padding=1)

        def res(cin: int, cout: int) -> nn.Module:
            return ResnetBlock2D(in_channels=cin, out_channels=cout, temb_channels=time_dim,
                                 groups=min(32, cin // 4), groups_out=min(32, cout // 4),
                                 time_embedding_norm=config.resnet_time_norm)

        def attn(ch: int) -> nn.Module:
            return CrossAttentionBlock(ch, width, config.attention_heads, config.attention_grid)

        # --- down path: group i at resolution image_size / 2**i, channels c[i] -> c[i+1] ------------------------
        self.down_res = nn.ModuleList()
        self.down_attn = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for i in range(3):
            self.down_res.append(nn.ModuleList(res(c[i] if j == 0 else c[i + 1], c[i + 1])
                                               for j in range(config.layers_per_group)))
            self.down_attn.append(nn.ModuleList(attn(c[i + 1]) if config.attention_groups[i] else nn.Identity()
                                                for _ in range(config.layers_per_group)))
            self.downsample.append(nn.Conv2d(c[i + 1], c[i + 1], 3, stride=2, padding=1))

        # --- bottleneck transformer over patch tokens + sequence tokens ----------------------------------------
        p = config.patch_size
        grid = config.image_size // 8 // p
        self.patchify = nn.Conv2d(c[3], width, p, stride=p)
        self.image_positions = nn.Parameter(torch.zeros(1, grid * grid, width))
        nn.init.normal_(self.image_positions, std=0.02)
        self.condition_in = nn.Linear(time_dim, width)
        self.blocks = nn.ModuleList(AdaLNZeroBlock(width, config.transformer_heads) for _ in range(config.transformer_layers))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.unpatchify = nn.ConvTranspose2d(width, c[3], p, stride=p)

        # --- up path: mirror, concatenating the down group's output -------------------------------------------
        self.upsample = nn.ModuleList()
        self.up_res = nn.ModuleList()
        self.up_attn = nn.ModuleList()
        for i in reversed(range(3)):
            self.upsample.append(nn.ConvTranspose2d(c[i + 1], c[i + 1], 4, stride=2, padding=1))
            self.up_res.append(nn.ModuleList(res(2 * c[i + 1] if j == 0 else c[i], c[i])
                                             for j in range(config.layers_per_group)))
            self.up_attn.append(nn.ModuleList(attn(c[i]) if config.attention_groups[i] else nn.Identity()
                                              for _ in range(config.layers_per_group)))
        self.out_norm = nn.GroupNorm(min(32, c[0] // 4), c[0], eps=1e-6)
        self.out_conv = nn.Conv2d(c[0], 1, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

        # --- masked-residue head -------------------------------------------------------------------------------
        self.residue_from_segment = nn.Linear(width, seq_dim)
        self.sequence_head = nn.Sequential(nn.LayerNorm(seq_dim), nn.Linear(seq_dim, seq_dim), nn.GELU(),
                                           nn.Linear(seq_dim, len(VOCAB)))
        not_residue = torch.ones(len(VOCAB), dtype=torch.bool)
        not_residue[list(RESIDUE_IDS)] = False
        self.register_buffer("not_residue", not_residue, persistent=False)

    # ------------------------------------------------------------------------------------------------------------
    def tokenize(self, sequences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequences -> ``(tokens (B, L), lengths (B,))`` with this model's maximum length (termini kept)."""
        from locscope.encoders.protein import tokenize

        return tokenize(sequences, self.config.max_sequence_length)

    def _segments(self, encoding: ProteinEncoding) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean-pool residues into <= ``max_sequence_tokens`` contiguous segments: ``(B, S, D)``, ``(B, S)``, ``(B, L)``."""
        residues, mask = encoding.residues, encoding.mask
        batch, length, dim = residues.shape
        lengths = mask.sum(1).clamp(min=1)
        segments = min(self.config.max_sequence_tokens, length)
        positions = torch.arange(length, device=residues.device)[None].expand(batch, length)
        scaled = torch.div(positions * segments, lengths[:, None], rounding_mode="floor")
        segment = torch.where(lengths[:, None] <= segments, positions, scaled).clamp(max=segments - 1)
        segment = segment.masked_fill(~mask, 0)
        weights = mask.to(residues.dtype)
        sums = residues.new_zeros(batch, segments, dim).scatter_add_(1, segment[..., None].expand(-1, -1, dim),
                                                                     residues * weights[..., None])
        counts = residues.new_zeros(batch, segments).scatter_add_(1, segment, weights)
        return sums / counts.clamp(min=1)[..., None], counts > 0, segment

    def encode_sequence(self, tokens: torch.Tensor, drop_sequence: torch.Tensor | None = None,
                        fractions: torch.Tensor | None = None, use_fractions: torch.Tensor | None = None,
                        ) -> SequenceContext:
        """Encode ``tokens`` ``(B, L)`` once; rows with ``drop_sequence`` ``(B,)`` True get the null condition.

        With the compartment bottleneck on, the image path is conditioned on the fraction head's distribution, or on
        ``fractions`` ``(B, n_fraction_classes)`` (rows where ``use_fractions`` ``(B,)`` is True, all rows if it is
        None): teacher forcing in training, or a user-chosen target compartment at generation.
        """
        encoding = self.protein_encoder(tokens)
        segment_tokens, segment_mask, segment = self._segments(encoding)
        tokens_w = self.sequence_in(segment_tokens)  # (B, S, width)
        m = segment_mask[..., None].to(tokens_w.dtype)
        mean = (tokens_w * m).sum(1) / m.sum(1).clamp(min=1)
        maximum = tokens_w.masked_fill(~segment_mask[..., None], -1e4).max(1).values
        pooled = self.pool_mlp(torch.cat([mean, maximum, self.features_in(encoding.features.to(tokens_w.dtype))], 1))
        compartment_logits, fraction_logits, condition = self.sequence_heads(pooled, fractions, use_fractions)
        tokens_w = tokens_w + self.sequence_type
        if drop_sequence is not None:  # always through torch.where: every parameter joins the graph (FSDP, DDP)
            drop = drop_sequence.to(tokens_w.device)
            null = self.null_token.expand(tokens_w.shape[0], 1, -1)
            tokens_w = torch.where(drop[:, None, None], torch.cat([null, torch.zeros_like(tokens_w[:, 1:])], 1), tokens_w)
            first_only = torch.zeros_like(segment_mask)
            first_only[:, 0] = True
            segment_mask = torch.where(drop[:, None], first_only, segment_mask)
            pooled = torch.where(drop[:, None], self.null_pooled.expand_as(pooled), pooled)
            condition = condition.masked_fill(drop[:, None], 0.0)
        return SequenceContext(tokens_w, segment_mask, pooled, compartment_logits, encoding.residues, segment,
                               fraction_logits, condition)

    def null_context(self, batch: int, device: torch.device | str = "cpu") -> SequenceContext:
        """The unconditional (sequence dropped) context for classifier-free guidance."""
        tokens = torch.full((batch, 1), RESIDUE_IDS[1], dtype=torch.long, device=device)
        return self.encode_sequence(tokens, drop_sequence=torch.ones(batch, dtype=torch.bool, device=device))

    def prepare_landmarks(self, landmarks: torch.Tensor, landmark_present: torch.Tensor | None) -> torch.Tensor:
        """Replace absent landmark channels (``landmark_present`` ``(B, n)`` False) by the learned placeholder."""
        if landmark_present is None:
            return landmarks
        placeholder = self.landmark_placeholder.to(landmarks.dtype).expand_as(landmarks)
        return torch.where(landmark_present[:, :, None, None].to(landmarks.device), landmarks, placeholder)

    def layout_maps(self, landmarks: torch.Tensor,
                    landmark_present: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The layout prior's ``(maps, membership_logits)``, both ``(B, n_fraction_classes, H, W)``, for the cells of
        ``landmarks`` ``(B, n_landmarks, H, W)``. They depend on the landmarks only: compute them once per cell and
        pass ``maps`` to :meth:`denoise` at every step."""
        if not self.config.layout_prior:
            raise ValueError("this model has no layout prior (config.layout_prior is False)")
        return self.layout(self.prepare_landmarks(landmarks, landmark_present))

    def mix_layout(self, maps: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
        """The expected protein image ``(B, 1, H, W)`` of ``maps`` mixed by ``fractions`` (:meth:`LayoutNet.mix`)."""
        return self.layout.mix(maps, fractions)

    def expected_image(self, landmarks: torch.Tensor, fractions: torch.Tensor,
                       landmark_present: torch.Tensor | None = None) -> torch.Tensor:
        """The layout prior's expected protein image ``(B, 1, H, W)`` for ``landmarks`` and ``fractions``
        (:meth:`layout_maps` mixed by :meth:`mix_layout`)."""
        return self.mix_layout(self.layout_maps(landmarks, landmark_present)[0], fractions)

    def compartment_membership(self, landmarks: torch.Tensor,
                               landmark_present: torch.Tensor | None = None) -> torch.Tensor:
        """The layout prior's membership logits ``(B, n_fraction_classes, H, W)``: where each compartment lies in the
        cells of ``landmarks`` ``(B, n_landmarks, H, W)`` (trained against the simulator's masks)."""
        return self.layout_maps(landmarks, landmark_present)[1]

    def denoise(self, noisy_image: torch.Tensor, timesteps: torch.Tensor, landmarks: torch.Tensor,
                context: SequenceContext, landmark_present: torch.Tensor | None = None,
                layout_maps: torch.Tensor | None = None, image_rows: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The U-Net + transformer: ``(v (B, 1, H, W), sequence-token outputs (B, S, width))``.

        Layout-prior models mix ``layout_maps`` (:meth:`layout_maps`, computed here when not given) by the context's
        condition into the denoiser's expected-image channel. ``image_rows`` ``(B,)`` bool: only these rows' ``v`` is
        wanted (training rows whose image loss counts); the up path runs on them alone and ``v`` has only their rows
        (every row is independent of the others, so the values are those of the full batch).
        """
        cfg = self.config
        temb = self.time_mlp(get_timestep_embedding(timesteps, cfg.channels[0], flip_sin_to_cos=True,
                                                   downscale_freq_shift=0)) + self.pooled_to_time(context.pooled)
        if cfg.fraction_classes:
            temb = temb + self.fractions_to_time(context.condition.to(temb.dtype))
        inputs = [noisy_image, self.prepare_landmarks(landmarks, landmark_present)]
        if cfg.layout_prior:  # detached: the maps learn from their own losses only
            if layout_maps is None:
                with torch.no_grad():
                    layout_maps = self.layout_maps(landmarks, landmark_present)[0]
            inputs.append(self.mix_layout(layout_maps.detach(), context.condition).to(noisy_image.dtype))
        h = self.stem(torch.cat(inputs, dim=1))
        seq, seq_mask = context.tokens, context.token_mask
        skips = []
        for res_blocks, attn_blocks, down in zip(self.down_res, self.down_attn, self.downsample):
            for res_block, attn_block in zip(res_blocks, attn_blocks):
                h = res_block(h, temb)
                h = attn_block(h, seq, seq_mask) if isinstance(attn_block, CrossAttentionBlock) else h
            skips.append(h)
            h = down(h)

        # bottleneck: (B, C, h, w) -> (B, N, width) image tokens, joined with the S sequence tokens
        image_tokens = self.patchify(h)
        grid = image_tokens.shape[-1]
        image_tokens = image_tokens.flatten(2).transpose(1, 2) + self.image_positions + self.image_type  # (B, N, width)
        tokens = torch.cat([image_tokens, seq], dim=1)  # (B, N + S, width)
        padding = torch.cat([torch.zeros_like(image_tokens[..., 0], dtype=torch.bool), ~seq_mask], dim=1)
        condition = self.condition_in(temb)
        for block in self.blocks:
            tokens = block(tokens, condition, padding)
        shift, scale = self.final_modulation(condition)[:, None].chunk(2, dim=-1)
        tokens = self.final_norm(tokens) * (1 + scale) + shift
        n = image_tokens.shape[1]
        sequence_out, image_out = tokens[:, n:], tokens[:, :n]
        if image_rows is not None:  # the up path only where v is wanted
            h, temb, seq, seq_mask, image_out = (h[image_rows], temb[image_rows], seq[image_rows],
                                                 seq_mask[image_rows], image_out[image_rows])
            skips = [skip[image_rows] for skip in skips]
        h = h + self.unpatchify(image_out.transpose(1, 2).reshape(h.shape[0], -1, grid, grid))

        for up, res_blocks, attn_blocks in zip(self.upsample, self.up_res, self.up_attn):
            h = torch.cat([up(h), skips.pop()], dim=1)
            for res_block, attn_block in zip(res_blocks, attn_blocks):
                h = res_block(h, temb)
                h = attn_block(h, seq, seq_mask) if isinstance(attn_block, CrossAttentionBlock) else h
        return self.out_conv(F.silu(self.out_norm(h))), sequence_out

    def residue_logits(self, context: SequenceContext, sequence_out: torch.Tensor) -> torch.Tensor:
        """Masked-residue logits ``(B, L, V)`` from the residue embeddings + their segment's transformer output."""
        dim = sequence_out.shape[-1]
        per_residue = sequence_out.gather(1, context.segment[..., None].expand(-1, -1, dim))  # (B, L, width)
        logits = self.sequence_head(context.residues + self.residue_from_segment(per_residue))
        return logits.masked_fill(self.not_residue, -1e4)

    def forward(self, noisy_image: torch.Tensor, timesteps: torch.Tensor, landmarks: torch.Tensor, tokens: torch.Tensor,
                landmark_present: torch.Tensor | None = None, drop_sequence: torch.Tensor | None = None,
                fractions: torch.Tensor | None = None, use_fractions: torch.Tensor | None = None,
                layout_maps: torch.Tensor | None = None, image_rows: torch.Tensor | None = None) -> CellDiffOutput:
        """One network evaluation.

        Parameters
        ----------
        noisy_image : torch.Tensor
            ``(B, 1, H, W)`` noisy protein image ``x_t`` in the [-1, 1] image scale (the clean image for the sequence task).
        timesteps : torch.Tensor
            ``(B,)`` diffusion steps in ``[0, num_train_timesteps)``.
        landmarks : torch.Tensor
            ``(B, n_landmarks, H, W)`` in [-1, 1], ordered as ``config.landmark_channels``.
        tokens : torch.Tensor
            ``(B, L)`` residue tokens (``PAD_ID`` padding, ``MASK_ID`` at masked residues).
        landmark_present : torch.Tensor, optional
            ``(B, n_landmarks)`` bool; absent channels use the learned placeholder.
        drop_sequence : torch.Tensor, optional
            ``(B,)`` bool; dropped rows are conditioned on the null sequence (classifier-free guidance).
        fractions, use_fractions : torch.Tensor, optional
            ``(B, n_fraction_classes)`` compartment distribution and ``(B,)`` bool rows that use it instead of the
            fraction head's prediction (see :meth:`encode_sequence`).
        layout_maps : torch.Tensor, optional
            ``(B, n_fraction_classes, H, W)`` layout-prior maps already computed (see :meth:`denoise`).
        image_rows : torch.Tensor, optional
            ``(B,)`` bool: ``image`` only for these rows (:meth:`denoise`); the other outputs keep every row.
        """
        context = self.encode_sequence(tokens, drop_sequence, fractions, use_fractions)
        image, sequence_out = self.denoise(noisy_image, timesteps, landmarks, context, landmark_present, layout_maps,
                                           image_rows)
        return CellDiffOutput(image, self.residue_logits(context, sequence_out), context.compartment_logits,
                              context.fraction_logits)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())
