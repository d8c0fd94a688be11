"""CELL-E 2: a bidirectional masked-token transformer from protein sequence + nucleus image to a
localization image, and back.

Read top to bottom:

1. Two VQGAN image tokenizers (Esser et al. 2021; diffusers ``VQModel``): one for the nucleus image, one for the
   **thresholded** protein image (1 above the image's median, else 0; CELL-E 2's target). Each maps an image to a
   ``fmap x fmap`` grid of codebook ids, row-major (published: 256 x 256 -> 16 x 16 = 256 tokens, 512 codes of dim 256).
2. One token sequence per example: ``[protein embeddings (text_len)] [SEP] [nucleus tokens] [protein-image tokens]``.
   The protein embeddings come from a sequence encoder (the built-in offline encoder of :mod:`locscope.encoders.protein`
   over locscope's residue alphabet, or, for released checkpoints, ESM2 in fair-esm layout over the ESM alphabet with
   ``<cls>`` / ``<eos>`` / padding, run through transformers' ``EsmForMaskedLM``). Image tokens are embedded per
   stream; each stream has one extra "mask" row.
3. A bidirectional encoder of ``depth`` pre-norm blocks, LayerScale (CaiT) on both branches: rotary attention
   (Su et al. 2021; ``dim_head // 3`` rotary pairs each for a 1-D position, an axial row and an axial column; rotary is
   applied to queries, keys **and values**, as published) and a GEGLU feed-forward (Shazeer 2020).
4. One linear head over all streams' vocabularies (``[text | SEP | nucleus codes | nucleus mask | image codes | image
   mask]``), with the entries of other streams filled with ``-finfo.max`` per position (``logits_mask``): the residue
   head and the image-token head are the same layer.

Training (MaskGIT, Chang et al. 2022): a cosine-scheduled number of protein-image tokens ``floor(cos(r pi/2) * S)``
and ``floor(0.15 cos(r' pi/2) * T)`` text positions are masked (:func:`masked_count`); the loss is
``(L_text + w L_image) / (1 + w)``, cross-entropy on the masked positions only (:meth:`Celle2.masked_loss`).

Published quirks kept so that released checkpoints give the published numbers: the rotary table has one row more
than there are text + SEP tokens, so the first nucleus token gets a text position and every later image token the
axial position of its predecessor (:func:`rotary_table`); image tokens share the 1-D position 8192; the two images
take the two halves of ``linspace(-1, 1, 2 fmap)`` on both axes.

Example
-------
>>> model = Celle2(Celle2Config(image_size=16, vq_channel_mult=(1, 2), vq_base_channels=32, dim=32, depth=1,
...                             heads=2, dim_head=18, text_seq_len=8, text_encoder_layers=1)).eval()
>>> text = model.tokenize(["MKKRKV"])
>>> nucleus = model.encode_nucleus(torch.rand(1, 1, 16, 16))
>>> masked = torch.full_like(nucleus, model.protein_mask_id)
>>> model(text, nucleus, masked).logits.shape   # (B, text_len + 1 + 2 * 64, total_tokens)
torch.Size([1, 137, 154])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from locscope.encoders.esm_layout import ROTARY_KEY, fair_esm_to_transformers
from locscope.encoders.protein import (
    ESM_ALPHABET, MASK_ID, NUM_SEQUENCE_FEATURES, PAD_ID, VOCAB, BuiltinProteinEncoder, ProteinEncoding, encode_sequence,
)
from locscope.errors import CheckpointError, InputError
from locscope.models.sequence_heads import distribution_loss
from locscope.utils.checkpoint import PretrainedMixin, check_state_dict, read_torch_weights

TextEncoderKind = Literal["builtin", "esm2-published"]
ProteinThreshold = Literal["median", "otsu"]

# ESM alphabet ids (fair-esm / transformers order) used by the published text stream.
ESM_CLS, ESM_PAD, ESM_EOS, ESM_MASK = 0, 1, 2, 32
_ESM_INDEX = {token: i for i, token in enumerate(ESM_ALPHABET)}

#: CELL-E 2's "HPA" nucleus normalisation (dataloader.py): ``(x - mean) / std`` on [0, 1] intensities, then divided by
#: the image's largest absolute value.
NUCLEUS_MEAN, NUCLEUS_STD = 0.0655, 0.1732
IMAGE_TOKEN_POSITION = 8192  # the 1-D rotary position shared by every image token ("far away from text")
TEXT_AXIAL_POSITION = -10.0  # the axial position of text tokens (images span [-1, 1])


@dataclass
class Celle2Config:
    """Hyper-parameters of :class:`Celle2` (saved as ``config.json`` beside the weights).

    Parameters
    ----------
    image_size : int
        Side of the square nucleus / protein images in pixels (published 256).
    vq_base_channels, vq_channel_mult, vq_num_res_blocks, vq_attn_resolutions, vq_latent_channels, vq_embed_dim :
        Both tokenizers' VQGAN architecture (taming's ``ch``, ``ch_mult``, ``num_res_blocks``, ``attn_resolutions``,
        ``z_channels``, ``embed_dim``); the token grid is ``image_size / 2**(len(vq_channel_mult) - 1)`` per side.
    nucleus_codebook_size, protein_codebook_size : int
        Codebook entries of the nucleus and the thresholded-protein tokenizer (published 512 each).
    text_encoder : {'builtin', 'esm2-published'}
        ``'builtin'``: :class:`~locscope.encoders.protein.BuiltinProteinEncoder` of width ``dim`` over locscope's
        residue alphabet (text stream = ``text_seq_len`` residues); ``'esm2-published'``: a frozen ESM2 of width
        ``esm_dim`` over the ESM alphabet (text stream = ``<cls>`` + ``text_seq_len`` + ``<eos>``), as released.
    text_seq_len : int
        Residue limit (published 1000).
    text_encoder_layers : int
        Convolution blocks of the built-in encoder.
    esm_dim, esm_layers, esm_heads : int
        Size of the published ESM2 (``esm_dim != dim`` adds the published ``scale_layer`` projection).
    dim, depth, heads, dim_head, ff_mult : int
        The transformer (published: dim = ESM width 480..2560, 16 heads x 64, depth 5-68).
    attn_dropout, ff_dropout : float
        Dropout after the attention output projection / inside the feed-forward (training only).
    loss_img_weight : float
        ``w`` in ``(L_text + w L_image) / (1 + w)``.
    text_mask_scale : float
        Fraction of residues masked at ``r = 0`` (``floor(scale cos(r pi/2) T)``; published 0.15).
    protein_threshold : {'median', 'otsu'}
        How the protein image is binarised into the protein tokenizer's target (:func:`threshold_protein`;
        published: median).
    sequence_summary : bool
        Built-in encoder only (not in the published model): add a summary of the whole sequence (mean and maximum of
        the encoder's residue embeddings and its global sequence features, through an MLP) to the SEP and to every
        protein-image token embedding, so that every image token sees the sequence from the first layer on instead
        of only through attention over the residues (:class:`SequenceSummary`).
    summary_fraction_classes : tuple of str
        With ``sequence_summary``: compartments whose fractions an auxiliary head predicts from the summary
        (``Celle2Output.fraction_logits``; trained against the training cells' compartment fractions, which gives
        the summary a localization signal from the first step). Empty: no head.
    summary_loss_weight : float
        Weight of the fraction head's cross-entropy in :meth:`Celle2.masked_loss`.
    """

    image_size: int = 64
    vq_base_channels: int = 32
    vq_channel_mult: tuple[int, ...] = (1, 2, 2)
    vq_num_res_blocks: int = 1
    vq_attn_resolutions: tuple[int, ...] = (16,)
    vq_latent_channels: int = 32
    vq_embed_dim: int = 32
    nucleus_codebook_size: int = 64
    protein_codebook_size: int = 64
    text_encoder: TextEncoderKind = "builtin"
    text_seq_len: int = 256
    text_encoder_layers: int = 4
    esm_dim: int = 64
    esm_layers: int = 2
    esm_heads: int = 4
    dim: int = 64
    depth: int = 2
    heads: int = 2
    dim_head: int = 64
    ff_mult: int = 4
    attn_dropout: float = 0.1
    ff_dropout: float = 0.1
    loss_img_weight: float = 1.0
    text_mask_scale: float = 0.15
    protein_threshold: ProteinThreshold = "median"
    sequence_summary: bool = False
    summary_fraction_classes: tuple[str, ...] = ()
    summary_loss_weight: float = 0.5

    def __post_init__(self) -> None:
        self.summary_fraction_classes = tuple(self.summary_fraction_classes)
        if self.sequence_summary and self.text_encoder != "builtin":
            raise ValueError("sequence_summary=True needs text_encoder='builtin' (its global sequence features)")
        if self.summary_fraction_classes and not self.sequence_summary:
            raise ValueError("summary_fraction_classes needs sequence_summary=True (the head reads the summary)")
        if self.text_encoder not in ("builtin", "esm2-published"):
            raise ValueError(f"text_encoder={self.text_encoder!r}: accepted values are 'builtin', 'esm2-published'")
        if self.protein_threshold not in ("median", "otsu"):
            raise ValueError(f"protein_threshold={self.protein_threshold!r}: accepted values are 'median', 'otsu'")
        downsample = 2 ** (len(self.vq_channel_mult) - 1)
        if self.image_size % downsample:
            raise ValueError(f"image_size={self.image_size} is not divisible by the tokenizers' downsampling "
                             f"{downsample}")
        if self.dim_head // 3 < 2:
            raise ValueError(f"dim_head={self.dim_head}: must be >= 6 (dim_head // 3 rotary dimensions per axis)")

    # --- derived sizes -------------------------------------------------------------------------------------------
    @property
    def fmap_size(self) -> int:
        """Side of each image's token grid."""
        return self.image_size // 2 ** (len(self.vq_channel_mult) - 1)

    @property
    def image_seq_len(self) -> int:
        """Tokens per image (``fmap_size ** 2``)."""
        return self.fmap_size ** 2

    @property
    def num_text_tokens(self) -> int:
        """Text vocabulary size (ESM alphabet: 33; locscope's: 23)."""
        return len(ESM_ALPHABET) if self.text_encoder == "esm2-published" else len(VOCAB)

    @property
    def text_mask_id(self) -> int:
        return ESM_MASK if self.text_encoder == "esm2-published" else MASK_ID

    @property
    def text_pad_id(self) -> int:
        return ESM_PAD if self.text_encoder == "esm2-published" else PAD_ID

    @property
    def text_len(self) -> int:
        """Positions of the text stream (ESM adds ``<cls>`` and ``<eos>``)."""
        return self.text_seq_len + 2 if self.text_encoder == "esm2-published" else self.text_seq_len

    @property
    def seq_len(self) -> int:
        """Transformer positions: text + SEP + nucleus + protein image."""
        return self.text_len + 1 + 2 * self.image_seq_len

    @property
    def total_tokens(self) -> int:
        """Logit columns: ``text | SEP | nucleus codes | nucleus mask | image codes | image mask``."""
        return self.num_text_tokens + 1 + self.nucleus_codebook_size + 1 + self.protein_codebook_size + 1

    @property
    def nucleus_offset(self) -> int:
        """Logit column of nucleus code 0."""
        return self.num_text_tokens + 1

    @property
    def protein_offset(self) -> int:
        """Logit column of protein-image code 0."""
        return self.nucleus_offset + self.nucleus_codebook_size + 1


def celle2_tiny_config(**overrides) -> Celle2Config:
    """A config that trains on 2 CPU cores: 32 x 32 images -> 8 x 8 tokens per image, width 96, 4 blocks."""
    base = dict(image_size=32, vq_base_channels=32, vq_channel_mult=(1, 2, 2), vq_num_res_blocks=1,
                vq_attn_resolutions=(8,), vq_latent_channels=16, vq_embed_dim=16, nucleus_codebook_size=64,
                protein_codebook_size=64, text_encoder="builtin", text_seq_len=320, text_encoder_layers=3, dim=96,
                depth=4, heads=4, dim_head=24, attn_dropout=0.0, ff_dropout=0.0)
    base.update(overrides)
    return Celle2Config(**base)


def celle2_base_config(**overrides) -> Celle2Config:
    """The published size (OpenCell/HPA ``celle_ESM2_480``): 256 x 256 images, 16 x 16 tokens, codebooks 512 x 256,
    ESM2-35M (12 layers, width 480, 20 heads) over 1000 residues, transformer width 480, 16 heads x 64, depth 68."""
    base = dict(image_size=256, vq_base_channels=128, vq_channel_mult=(1, 1, 2, 2, 4), vq_num_res_blocks=2,
                vq_attn_resolutions=(16,), vq_latent_channels=256, vq_embed_dim=256, nucleus_codebook_size=512,
                protein_codebook_size=512, text_encoder="esm2-published", text_seq_len=1000, esm_dim=480,
                esm_layers=12, esm_heads=20, dim=480, depth=68, heads=16, dim_head=64)
    base.update(overrides)
    return Celle2Config(**base)


# ----------------------------------------------------------------------------------------------------------------------
# Image preparation and tokenizers
# ----------------------------------------------------------------------------------------------------------------------


def normalize_nucleus(image: torch.Tensor) -> torch.Tensor:
    """CELL-E 2's nucleus normalisation of intensities in [0, 1]: ``(x - 0.0655) / 0.1732``, then divided by the
    largest absolute value of each image (so values lie in [-1, 1]).

    Parameters
    ----------
    image : torch.Tensor
        ``(B, 1, H, W)`` float in [0, 1] (uint8 images: divide by 255 first).
    """
    x = (image.float() - NUCLEUS_MEAN) / NUCLEUS_STD
    return x / x.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)


def threshold_protein(image: torch.Tensor, method: ProteinThreshold = "median") -> torch.Tensor:
    """The binary protein target, ``(B, 1, H, W)`` float in {0, 1}.

    ``'median'`` (CELL-E 2's): 1 where the protein image is above its median. ``'otsu'``: above the image's Otsu
    threshold (scikit-image), i.e. where the protein is rather than the brighter half of the image; on crops where the
    protein covers less than half of the pixels the median puts half of the background noise into the target.
    """
    if method == "median":
        median = image.flatten(1).median(dim=1).values
        return (image > median[:, None, None, None]).float()
    if method != "otsu":
        raise ValueError(f"method={method!r}: accepted values are 'median', 'otsu'")
    from skimage.filters import threshold_otsu

    flat = image.detach().float().cpu().numpy().reshape(image.shape[0], -1)
    levels = [threshold_otsu(row) if row.max() > row.min() else float("inf") for row in flat]
    return (image > torch.tensor(levels, dtype=image.dtype, device=image.device)[:, None, None, None]).float()


def build_vq_tokenizer(config: Celle2Config, codebook_size: int):
    """A diffusers ``VQModel`` with taming's VQGAN layout (one-channel images, attention at the levels whose
    resolution is in ``vq_attn_resolutions``, GroupNorm(32) with eps 1e-6, asymmetric-padding stride-2 downsampling)."""
    from diffusers import VQModel

    levels = len(config.vq_channel_mult)
    attn = [config.image_size // 2**i in config.vq_attn_resolutions for i in range(levels)]
    down = tuple("AttnDownEncoderBlock2D" if a else "DownEncoderBlock2D" for a in attn)
    up = tuple("AttnUpDecoderBlock2D" if a else "UpDecoderBlock2D" for a in reversed(attn))
    return VQModel(
        in_channels=1, out_channels=1, down_block_types=down, up_block_types=up,
        block_out_channels=tuple(config.vq_base_channels * m for m in config.vq_channel_mult),
        layers_per_block=config.vq_num_res_blocks, act_fn="silu", latent_channels=config.vq_latent_channels,
        norm_num_groups=32, vq_embed_dim=config.vq_embed_dim, num_vq_embeddings=codebook_size,
        sample_size=config.image_size, scaling_factor=1.0,
    )


def quantize(tokenizer, latents: torch.Tensor) -> torch.Tensor:
    """Nearest codebook entry of every latent vector, as taming computes it (``|z|^2 + |e|^2 - 2 z.e``).

    Parameters
    ----------
    latents : torch.Tensor
        ``(B, C, h, w)`` after ``quant_conv``.

    Returns
    -------
    torch.Tensor
        ``(B, h * w)`` long ids, row-major.
    """
    codebook = tokenizer.quantize.embedding.weight  # (n, C)
    flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])  # (B h w, C)
    distance = flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1) - 2 * flat @ codebook.t()
    return distance.argmin(dim=1).view(latents.shape[0], -1)


def decode_embeddings(tokenizer, embeddings: torch.Tensor) -> torch.Tensor:
    """Decode ``(B, S, C)`` codebook-space vectors (S = h * w, row-major) -> ``(B, 1, H, W)`` raw decoder output."""
    side = math.isqrt(embeddings.shape[1])
    z = embeddings.transpose(1, 2).reshape(embeddings.shape[0], -1, side, side)  # (B, C, h, w)
    return tokenizer.decode(z, force_not_quantize=True).sample


def decode_tokens(tokenizer, ids: torch.Tensor) -> torch.Tensor:
    """``(B, S)`` codebook ids -> ``(B, 1, H, W)`` raw decoder output (one-hot @ codebook, as published)."""
    codebook = tokenizer.quantize.embedding.weight
    return decode_embeddings(tokenizer, F.one_hot(ids, codebook.shape[0]).to(codebook.dtype) @ codebook)


# ----------------------------------------------------------------------------------------------------------------------
# Rotary positions
# ----------------------------------------------------------------------------------------------------------------------


def language_frequencies(rot_dim: int) -> torch.Tensor:
    """``rot_dim // 2`` frequencies ``10000^(-2i / rot_dim)`` (rotary-embedding-torch ``freqs_for='lang'``)."""
    return 1.0 / (10000 ** (torch.arange(0, rot_dim, 2)[: rot_dim // 2].float() / rot_dim))


def pixel_frequencies(rot_dim: int, max_freq: float = 10.0) -> torch.Tensor:
    """``rot_dim // 2`` frequencies ``linspace(1, max_freq / 2) * pi`` for positions in [-1, 1] (``'pixel'``)."""
    return torch.linspace(1.0, max_freq / 2, rot_dim // 2) * math.pi


def rotary_angles(positions: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """``(N,)`` positions x ``(F,)`` frequencies -> ``(N, 2F)`` angles, each repeated for its (even, odd) pair."""
    return (positions.float()[:, None] * frequencies[None, :]).repeat_interleave(2, dim=-1)


def rotary_table(text_tokens: int, fmap_size: int, rot_dim: int) -> torch.Tensor:
    """The published rotary angle table, ``(1, text_tokens + 1 + 2 fmap^2, 6 (rot_dim // 2))``.

    Columns: 1-D position (text 0, 1, ...; image tokens 8192) | axial row | axial column (text -10; the nucleus
    grid takes the first half of ``linspace(-1, 1, 2 fmap)``, the protein grid the second). ``text_tokens`` counts
    text + SEP; like the published table this one has ``text_tokens + 1`` text rows, so row ``i`` of the table is used
    by token ``i`` and the last row is never used (see the module docstring).
    """
    language, pixel = language_frequencies(rot_dim), pixel_frequencies(rot_dim)
    text_rows, image_rows = text_tokens + 1, 2 * fmap_size**2
    one_d = torch.cat([rotary_angles(torch.arange(text_rows), language),
                       rotary_angles(torch.full((image_rows,), IMAGE_TOKEN_POSITION), language)])
    axial = rotary_angles(torch.linspace(-1, 1, 2 * fmap_size), pixel)  # (2 fmap, R)
    grids = []
    for half in axial.split(fmap_size):  # nucleus, then protein image
        rows = half[:, None, :].expand(fmap_size, fmap_size, -1)
        cols = half[None, :, :].expand(fmap_size, fmap_size, -1)
        grids.append(torch.cat([rows, cols], dim=-1).reshape(fmap_size**2, -1))  # (fmap^2, 2R) row-major
    text_axial = rotary_angles(torch.full((text_rows,), TEXT_AXIAL_POSITION), pixel)
    two_d = torch.cat([torch.cat([text_axial, text_axial], dim=-1), *grids])
    return torch.cat([one_d, two_d], dim=-1)[None]


def apply_rotary(angles: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``angles.shape[-1]`` features of ``x`` ``(B, heads, N, d)`` pairwise (interleaved pairs)."""
    width = angles.shape[-1]
    rotated, rest = x[..., :width], x[..., width:]
    even, odd = rotated.unflatten(-1, (-1, 2)).unbind(-1)
    turned = torch.stack((-odd, even), dim=-1).flatten(-2)
    return torch.cat([rotated * angles.cos() + turned * angles.sin(), rest], dim=-1)


# ----------------------------------------------------------------------------------------------------------------------
# Transformer
# ----------------------------------------------------------------------------------------------------------------------


def layer_scale_init(depth_index: int) -> float:
    """CaiT's LayerScale initial value of the ``depth_index``-th block (1-based): 0.1 to 18, 1e-5 to 24, then 1e-6."""
    return 0.1 if depth_index <= 18 else 1e-5 if depth_index <= 24 else 1e-6


class RotaryAttention(nn.Module):
    """Full (bidirectional) multi-head self-attention; rotary angles rotate queries, keys and values."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        q, k, v = (t.view(batch, length, self.heads, self.dim_head).transpose(1, 2)  # (B, heads, N, dim_head)
                   for t in self.to_qkv(x).chunk(3, dim=-1))
        q, k, v = (apply_rotary(angles, t) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, scale=self.dim_head**-0.5)  # (B, heads, N, dim_head)
        return self.dropout(self.to_out(out.transpose(1, 2).reshape(batch, length, -1)))


class GegluFeedForward(nn.Module):
    """``Linear(dim, 2 mult dim)`` -> GEGLU (``x * gelu(gate)``) -> dropout -> ``Linear(mult dim, dim)``."""

    def __init__(self, dim: int, mult: int, dropout: float) -> None:
        super().__init__()
        self.proj_in = nn.Linear(dim, 2 * mult * dim)
        self.dropout = nn.Dropout(dropout)
        self.proj_out = nn.Linear(mult * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(self.dropout(value * F.gelu(gate)))


class Celle2Block(nn.Module):
    """``x + attn(norm(x)) * s1``, then ``x + ff(norm(x)) * s2`` (pre-norm, LayerScale)."""

    def __init__(self, config: Celle2Config, depth_index: int) -> None:
        super().__init__()
        init = layer_scale_init(depth_index)
        self.attn_norm = nn.LayerNorm(config.dim)
        self.attn = RotaryAttention(config.dim, config.heads, config.dim_head, config.attn_dropout)
        self.attn_scale = nn.Parameter(torch.full((1, 1, config.dim), init))
        self.ff_norm = nn.LayerNorm(config.dim)
        self.ff = GegluFeedForward(config.dim, config.ff_mult, config.ff_dropout)
        self.ff_scale = nn.Parameter(torch.full((1, 1, config.dim), init))

    def forward(self, x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), angles) * self.attn_scale
        return x + self.ff(self.ff_norm(x)) * self.ff_scale


class PublishedEsm2(nn.Module):
    """The released text encoder: a frozen ESM2 (transformers ``EsmForMaskedLM``, fair-esm weights mapped by
    :func:`map_published_state_dict`) whose last layer-normed hidden state, optionally projected by ``scale_layer``
    to the transformer width, embeds every text position (``<cls>``, residues, ``<eos>``, padding). Token dropout is
    on: ``<mask>`` embeddings are zeroed and the rest rescaled by ``0.88 / (1 - observed mask ratio)``."""

    def __init__(self, config: Celle2Config) -> None:
        super().__init__()
        from transformers import EsmConfig, EsmForMaskedLM

        esm_config = EsmConfig(
            vocab_size=len(ESM_ALPHABET), hidden_size=config.esm_dim, num_hidden_layers=config.esm_layers,
            num_attention_heads=config.esm_heads, intermediate_size=4 * config.esm_dim,
            position_embedding_type="rotary", token_dropout=True, mask_token_id=ESM_MASK, pad_token_id=ESM_PAD,
            emb_layer_norm_before=False, layer_norm_eps=1e-5, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0, max_position_embeddings=config.text_len + 2,
        )
        self.model = EsmForMaskedLM(esm_config)
        self.model.requires_grad_(False)
        self.scale_layer = nn.Identity() if config.esm_dim == config.dim else nn.Linear(config.esm_dim, config.dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` ESM ids -> ``(B, T, dim)``."""
        self.model.eval()  # frozen: never in training mode
        with torch.no_grad():
            hidden = self.model.esm(input_ids=tokens, attention_mask=(tokens != ESM_PAD).long()).last_hidden_state
        return self.scale_layer(hidden)


class BuiltinTextEncoder(nn.Module):
    """The offline encoder of :mod:`locscope.encoders.protein` over locscope's alphabet, width ``dim``."""

    def __init__(self, config: Celle2Config) -> None:
        super().__init__()
        self.encoder = BuiltinProteinEncoder(dim=config.dim, num_layers=config.text_encoder_layers)

    def encode(self, tokens: torch.Tensor) -> ProteinEncoding:
        """Residue embeddings, padding mask and global sequence features."""
        return self.encoder(tokens)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.encoder(tokens).residues


class SequenceSummary(nn.Module):
    """One vector per sequence, added to SEP and every protein-image token embedding.

    ``hidden = SiLU(Linear([mean of residues, max of residues, SiLU(Linear(global features))]))`` over the
    non-padding positions of a :class:`~locscope.encoders.protein.ProteinEncoding` (padding-invariant: a batch padded
    to its longest sequence and one unpadded sequence get the same summary); the added vector is
    ``Linear(hidden)``, initialised to zero (a model without the summary is reproduced exactly at initialisation,
    e.g. when continuing from its weights); an optional linear head reads compartment fractions off ``hidden``.
    """

    def __init__(self, dim: int, num_fractions: int) -> None:
        super().__init__()
        self.features_in = nn.Sequential(nn.Linear(NUM_SEQUENCE_FEATURES, dim), nn.SiLU())
        self.hidden = nn.Sequential(nn.Linear(3 * dim, dim), nn.SiLU())
        self.to_tokens = nn.Linear(dim, dim)
        nn.init.zeros_(self.to_tokens.weight)
        nn.init.zeros_(self.to_tokens.bias)
        self.fraction_head = nn.Linear(dim, num_fractions) if num_fractions else None

    def hidden_state(self, encoding: ProteinEncoding) -> torch.Tensor:
        """``hidden`` ``(B, dim)``: what ``to_tokens`` and the fraction head read."""
        residues, mask = encoding.residues, encoding.mask[..., None]
        mean = (residues * mask).sum(1) / mask.sum(1).clamp(min=1)
        maximum = residues.masked_fill(~mask, -1e4).amax(1)
        features = self.features_in(encoding.features.to(residues.dtype))
        return self.hidden(torch.cat([mean, maximum, features], dim=-1))

    def forward(self, encoding: ProteinEncoding) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(summary (B, dim), fraction logits (B, n) or None)``."""
        hidden = self.hidden_state(encoding)
        return self.to_tokens(hidden), (self.fraction_head(hidden) if self.fraction_head is not None else None)


@dataclass
class Celle2Output:
    """Logits of one forward pass, split by stream.

    Attributes
    ----------
    logits : torch.Tensor
        ``(B, seq_len, total_tokens)`` with other streams' entries at ``-finfo.max``.
    text_logits : torch.Tensor
        ``(B, text_len, num_text_tokens)``.
    image_logits : torch.Tensor
        ``(B, image_seq_len, protein_codebook_size)``: the protein-image token distribution's logits.
    fraction_logits : torch.Tensor or None
        ``(B, len(summary_fraction_classes))`` logits of the summary's compartment-fraction head (None without one).
    """

    logits: torch.Tensor
    text_logits: torch.Tensor
    image_logits: torch.Tensor
    fraction_logits: torch.Tensor | None = None


class Celle2(PretrainedMixin, nn.Module):
    """CELL-E 2: tokenizers + sequence encoder + bidirectional transformer (see the module docstring).

    Inputs use per-stream ids: text ids (locscope's alphabet, or ESM's for ``'esm2-published'``; the stream's mask id
    marks residues to predict), nucleus codes ``0..n-1`` (``n`` = mask), protein-image codes ``0..m-1`` (``m`` = mask).
    """

    config_class = Celle2Config

    def __init__(self, config: Celle2Config) -> None:
        super().__init__()
        self.config = config
        c = config
        if c.text_encoder == "esm2-published":
            self.text_encoder: nn.Module = PublishedEsm2(c)
        else:
            self.text_encoder = BuiltinTextEncoder(c)
        if c.sequence_summary:
            self.summary = SequenceSummary(c.dim, len(c.summary_fraction_classes))
        self.sep_embedding = nn.Embedding(1, c.dim)
        self.nucleus_embedding = nn.Embedding(c.nucleus_codebook_size + 1, c.dim)  # + the mask row
        self.protein_embedding = nn.Embedding(c.protein_codebook_size + 1, c.dim)
        self.nucleus_tokenizer = build_vq_tokenizer(c, c.nucleus_codebook_size)
        self.protein_tokenizer = build_vq_tokenizer(c, c.protein_codebook_size)
        self.blocks = nn.ModuleList(Celle2Block(c, i + 1) for i in range(c.depth))
        self.logits_norm = nn.LayerNorm(c.dim)
        self.to_logits = nn.Linear(c.dim, c.total_tokens)
        self.register_buffer("rotary", rotary_table(c.text_len + 1, c.fmap_size, c.dim_head // 3), persistent=False)
        self.register_buffer("logits_mask", self._logits_mask(), persistent=False)

    # --- ids ----------------------------------------------------------------------------------------------------
    @property
    def nucleus_mask_id(self) -> int:
        return self.config.nucleus_codebook_size

    @property
    def protein_mask_id(self) -> int:
        return self.config.protein_codebook_size

    @property
    def text_mask_id(self) -> int:
        return self.config.text_mask_id

    def _logits_mask(self) -> torch.Tensor:
        """``(seq_len, total_tokens)`` bool, True where a position may NOT predict a column."""
        c = self.config
        position = torch.arange(c.seq_len)[:, None]
        column = torch.arange(c.total_tokens)[None, :]
        nucleus_start = c.text_len + 1
        image_start = nucleus_start + c.image_seq_len
        allowed = (
            ((position < c.text_len) & (column < c.num_text_tokens) & (column != c.text_mask_id))
            | ((position == c.text_len) & (column == c.num_text_tokens))
            | ((position >= nucleus_start) & (position < image_start)
               & (column >= c.nucleus_offset) & (column < c.nucleus_offset + c.nucleus_codebook_size))
            | ((position >= image_start)
               & (column >= c.protein_offset) & (column < c.protein_offset + c.protein_codebook_size))
        )
        return ~allowed

    def tokenize(self, sequences: list[str], trim: bool = False) -> torch.Tensor:
        """Sequences (``<mask>`` / ``<mask:N>`` allowed) -> ``(B, text_len)`` text ids of this model's stream
        (``trim``: padded only to the longest sequence).

        Raises
        ------
        ValueError
            If a sequence is longer than ``text_seq_len`` (the model's residue limit).
        """
        c = self.config
        rows = []
        for index, sequence in enumerate(sequences):
            ids = encode_sequence(sequence)
            if len(ids) > c.text_seq_len:
                raise ValueError(f"sequences[{index}] has {len(ids)} residues; this model's limit is "
                                 f"{c.text_seq_len} (text_seq_len)")
            if c.text_encoder == "esm2-published":
                residues = [ESM_MASK if t == MASK_ID else _ESM_INDEX.get(VOCAB[t], _ESM_INDEX["X"]) for t in ids]
                ids = [ESM_CLS, *residues, ESM_EOS]
            rows.append(ids)
        width = max(len(r) for r in rows) if trim else c.text_len
        rows = [r + [c.text_pad_id] * (width - len(r)) for r in rows]
        return torch.tensor(rows, dtype=torch.long, device=self.rotary.device)

    @torch.no_grad()
    def summary_hidden(self, text: torch.Tensor) -> torch.Tensor:
        """The sequence summary's hidden vector ``(B, dim)`` for text ids ``(B, T)`` (:meth:`tokenize`), what its
        fraction head reads (models with ``sequence_summary``)."""
        if not self.config.sequence_summary:
            raise ValueError("this model has no sequence summary (config.sequence_summary is False)")
        return self.summary.hidden_state(self.text_encoder.encode(text))

    # --- tokenizers ---------------------------------------------------------------------------------------------
    def encode_nucleus(self, image: torch.Tensor) -> torch.Tensor:
        """Normalised nucleus images ``(B, 1, H, W)`` (:func:`normalize_nucleus`) -> ``(B, image_seq_len)`` ids."""
        return quantize(self.nucleus_tokenizer, self.nucleus_tokenizer.encode(image).latents)

    def encode_protein(self, binary: torch.Tensor) -> torch.Tensor:
        """Thresholded protein images ``(B, 1, H, W)`` in {0, 1} (:func:`threshold_protein`) -> ``(B, S)`` ids."""
        return quantize(self.protein_tokenizer, self.protein_tokenizer.encode(binary).latents)

    def decode_protein(self, ids: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` protein-image codes -> ``(B, 1, H, W)`` raw decoder output (threshold at 0.5 for the binary)."""
        return decode_tokens(self.protein_tokenizer, ids)

    def decode_nucleus(self, ids: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` nucleus codes -> ``(B, 1, H, W)`` raw decoder output."""
        return decode_tokens(self.nucleus_tokenizer, ids)

    def probability_map(self, probabilities: torch.Tensor) -> torch.Tensor:
        """The "PDF" image: the decoded expectation of the codebook under per-token distributions, in [0, 1].

        Parameters
        ----------
        probabilities : torch.Tensor
            ``(B, S, protein_codebook_size)``, each row summing to 1.

        Returns
        -------
        torch.Tensor
            ``(B, 1, H, W)`` = ``clip(decode(p @ codebook), 0, 1)``: where the protein is above threshold.
        """
        codebook = self.protein_tokenizer.quantize.embedding.weight
        return decode_embeddings(self.protein_tokenizer, probabilities.to(codebook.dtype) @ codebook).clamp(0, 1)

    def published_heatmap(self, image_logits: torch.Tensor) -> torch.Tensor:
        """CELL-E 2's released heatmap: raw image logits divided by their largest absolute value per position (not a
        softmax) @ codebook -> decoder; shifted up so the maximum reaches 1 (if below) and down so the minimum
        reaches 0 (if above; both shifts from the pre-shift extremes), clipped to [0, 1]. ``(B, S, m)`` ->
        ``(B, 1, H, W)``."""
        codebook = self.protein_tokenizer.quantize.embedding.weight
        weights = image_logits / image_logits.abs().amax(dim=-1, keepdim=True)
        image = decode_embeddings(self.protein_tokenizer, weights @ codebook)
        flat = image.flatten(1)
        high, low = flat.max(dim=1).values, flat.min(dim=1).values
        image = image + (1 - high).clamp(min=0)[:, None, None, None] + (-low).clamp(max=0)[:, None, None, None]
        return image.clamp(0, 1)

    # --- transformer --------------------------------------------------------------------------------------------
    def forward(self, text: torch.Tensor, nucleus: torch.Tensor, protein: torch.Tensor) -> Celle2Output:
        """One pass of the transformer.

        Parameters
        ----------
        text : torch.Tensor
            ``(B, T)`` text ids (:meth:`tokenize`; mask id at residues to predict), ``T <= text_len`` (a shorter
            stream, e.g. padded to the batch's longest sequence, saves time; image tokens keep their positions).
        nucleus : torch.Tensor
            ``(B, image_seq_len)`` nucleus codes.
        protein : torch.Tensor
            ``(B, image_seq_len)`` protein-image codes, ``protein_mask_id`` where unknown.

        Returns
        -------
        Celle2Output
        """
        c = self.config
        batch, text_tokens = text.shape
        if text_tokens > c.text_len:
            raise ValueError(f"text has {text_tokens} positions; this model's text stream has {c.text_len}")
        sep = self.sep_embedding.weight.expand(batch, 1, -1)
        image = self.protein_embedding(protein)
        fraction_logits = None
        if c.sequence_summary:
            encoding = self.text_encoder.encode(text)
            residues = encoding.residues
            summary, fraction_logits = self.summary(encoding)
            sep = sep + summary[:, None].to(sep.dtype)
            image = image + summary[:, None].to(image.dtype)
        else:
            residues = self.text_encoder(text)
        tokens = torch.cat([residues, sep, self.nucleus_embedding(nucleus), image], dim=1)  # (B, T + 1 + 2 S, dim)
        # A shorter text stream (T < text_len) keeps the image tokens' rows of the full-length layout.
        device = tokens.device
        image_rows = torch.arange(c.text_len + 1, c.seq_len, device=device)
        angles = self.rotary[:, torch.cat([torch.arange(text_tokens + 1, device=device), image_rows])]
        rows = torch.cat([torch.arange(text_tokens, device=device), torch.tensor([c.text_len], device=device),
                          image_rows])
        for block in self.blocks:
            tokens = block(tokens, angles.to(tokens.dtype))
        logits = self.to_logits(self.logits_norm(tokens))
        logits = logits.masked_fill(self.logits_mask[rows], -torch.finfo(logits.dtype).max)
        image_start = text_tokens + 1 + c.image_seq_len
        return Celle2Output(
            logits=logits,
            text_logits=logits[:, :text_tokens, : c.num_text_tokens],
            image_logits=logits[:, image_start:, c.protein_offset: c.protein_offset + c.protein_codebook_size],
            fraction_logits=fraction_logits,
        )

    def masked_loss(self, text: torch.Tensor, nucleus: torch.Tensor, protein: torch.Tensor,
                    generator: torch.Generator | None = None, fractions: torch.Tensor | None = None,
                    full_mask_probability: float = 0.0) -> dict[str, torch.Tensor]:
        """MaskGIT training loss on clean inputs (see :func:`random_mask`): ``(L_text + w L_image) / (1 + w)``.

        ``full_mask_probability``: the share of rows whose protein-image tokens are all masked, on top of the cosine
        schedule (which masks all of them almost never): one-pass generation starts from that case.

        With a summary fraction head (``summary_fraction_classes``) and ``fractions`` ``(B, n)`` (each sequence's
        compartment fractions in that order; rows are normalised to sum to 1, rows of zeros carry no loss),
        ``summary_loss_weight`` times the head's cross-entropy against them is added (``loss_fractions``).

        Returns a dict with ``loss``, ``loss_text`` (0 when no residue is masked) and ``loss_image``.
        """
        c = self.config
        residues = text != c.text_pad_id
        if c.text_encoder == "esm2-published":
            residues &= (text != ESM_CLS) & (text != ESM_EOS)
        text_mask = random_mask(residues, c.text_mask_scale, generator)
        image_mask = random_mask(torch.ones_like(protein, dtype=torch.bool), 1.0, generator)
        if full_mask_probability > 0:  # no extra draw otherwise: the schedule's random stream stays as it was
            full = torch.rand(protein.shape[0], generator=generator, device=protein.device) < full_mask_probability
            image_mask = image_mask | full[:, None]
        out = self(text.masked_fill(text_mask, c.text_mask_id), nucleus,
                   protein.masked_fill(image_mask, self.protein_mask_id))
        loss_image = F.cross_entropy(out.image_logits[image_mask].float(), protein[image_mask])
        if bool(text_mask.any()):
            loss_text = F.cross_entropy(out.text_logits[text_mask].float(), text[text_mask])
        else:
            loss_text = loss_image.new_zeros(())
        w = c.loss_img_weight
        losses = {"loss": (loss_text + w * loss_image) / (1 + w), "loss_text": loss_text, "loss_image": loss_image}
        if out.fraction_logits is not None and fractions is not None:
            losses["loss_fractions"] = distribution_loss(out.fraction_logits, fractions)
            losses["loss"] = losses["loss"] + c.summary_loss_weight * losses["loss_fractions"]
        return losses


def masked_count(r: torch.Tensor | float, length: int, scale: float = 1.0) -> int:
    """MaskGIT's cosine masking schedule: ``floor(scale * cos(r pi / 2) * length)`` positions for ``r`` in [0, 1).

    >>> masked_count(0.0, 256), masked_count(0.5, 256), masked_count(0.5, 100, scale=0.15)
    (256, 181, 10)
    """
    return int(math.floor(scale * math.cos(float(r) * math.pi / 2) * length))


def random_mask(allowed: torch.Tensor, scale: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mask ``masked_count(r, n_i, scale)`` uniformly chosen allowed positions of each row, one ``r ~ U(0, 1)`` per row.

    Parameters
    ----------
    allowed : torch.Tensor
        ``(B, L)`` bool, positions that may be masked (``n_i`` = their count in row ``i``).

    Returns
    -------
    torch.Tensor
        ``(B, L)`` bool.
    """
    device = allowed.device
    r = torch.rand(allowed.shape[0], generator=generator, device=device)
    scores = torch.rand(allowed.shape, generator=generator, device=device).masked_fill(~allowed, 2.0)
    rank = scores.argsort(dim=1).argsort(dim=1)  # 0 = lowest score
    counts = torch.tensor([masked_count(ri, int(n), scale) for ri, n in zip(r.tolist(), allowed.sum(1).tolist())],
                          device=device)
    return (rank < counts[:, None]) & allowed


# ----------------------------------------------------------------------------------------------------------------------
# Released checkpoints (taming VQGAN + CELLE_trainer Lightning files)
# ----------------------------------------------------------------------------------------------------------------------


def _taming_to_diffusers(key: str, levels: int) -> str:
    """One taming VQModel key -> the diffusers ``VQModel`` key (raises KeyError when it has no counterpart)."""
    parts = key.split(".")
    names = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "nin_shortcut": "conv_shortcut"}
    attn = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
    top = parts[0]
    if top in ("quantize", "quant_conv", "post_quant_conv"):
        return key
    if top not in ("encoder", "decoder"):
        raise KeyError(key)
    rest = parts[1:]
    if rest[0] in ("conv_in", "conv_out"):
        return key
    if rest[0] == "norm_out":
        return ".".join([top, "conv_norm_out", *rest[1:]])
    if rest[0] == "mid":
        block = {"block_1": "resnets.0", "attn_1": "attentions.0", "block_2": "resnets.1"}[rest[1]]
        leaf = (attn if rest[1] == "attn_1" else names)[rest[2]]
        return ".".join([top, "mid_block", block, leaf, *rest[3:]])
    if rest[0] in ("down", "up"):
        level = int(rest[1]) if rest[0] == "down" else levels - 1 - int(rest[1])
        group = "down_blocks" if rest[0] == "down" else "up_blocks"
        kind = rest[2]
        if kind == "block":
            return ".".join([top, group, str(level), "resnets", rest[3], names[rest[4]], *rest[5:]])
        if kind == "attn":
            return ".".join([top, group, str(level), "attentions", rest[3], attn[rest[4]], *rest[5:]])
        if kind in ("downsample", "upsample"):
            sampler = "downsamplers" if kind == "downsample" else "upsamplers"
            return ".".join([top, group, str(level), sampler, "0", *rest[3:]])
    raise KeyError(key)


def map_taming_state_dict(state_dict: Mapping[str, torch.Tensor], levels: int, source: str) -> dict[str, torch.Tensor]:
    """Rename a taming VQGAN state dict to diffusers ``VQModel`` names; attention 1x1 convs become linear weights.

    Raises
    ------
    CheckpointError
        Naming every key without a counterpart (e.g. the ``loss.*`` discriminator / LPIPS weights of a training
        checkpoint, which inference does not use: locscope refuses rather than dropping them silently).
    """
    mapped, unknown = {}, []
    for key, value in state_dict.items():
        try:
            new = _taming_to_diffusers(key, levels)
        except (KeyError, IndexError, ValueError):
            unknown.append(key)
            continue
        if ".attentions." in new and value.dim() == 4 and new.endswith("weight"):
            value = value[:, :, 0, 0]
        mapped[new] = value
    if unknown:
        raise CheckpointError(f"{source}: keys without a VQGAN counterpart: {', '.join(sorted(unknown))}")
    return mapped


def map_published_state_dict(state_dict: Mapping[str, torch.Tensor], config: Celle2Config,
                             source: str) -> dict[str, torch.Tensor]:
    """Rename a released ``CELLE_trainer`` state dict (``celle.*``) to :class:`Celle2` names.

    Derived tensors the published model saves are checked instead of loaded: the rotary tables
    (``transformer.pos_emb``, ``*.freqs``) must equal :func:`rotary_table`'s, every ESM2 layer's ``rot_emb.inv_freq``
    must agree, and ``lm_head.weight`` must be the (tied) token embedding.

    Raises
    ------
    CheckpointError
        Naming unknown keys or derived tensors that disagree.
    """
    levels = len(config.vq_channel_mult)
    mapped: dict[str, torch.Tensor] = {}
    unknown, disagree = [], []
    rot_dim = config.dim_head // 3
    derived = {
        "celle.transformer.pos_emb": rotary_table(config.text_len + 1, config.fmap_size, rot_dim),
        "celle.transformer.text_pos_emb.freqs": language_frequencies(rot_dim),
        "celle.transformer.img_axial_pos_emb.freqs": pixel_frequencies(rot_dim),
    }
    esm_inv_freq = []
    for key, value in state_dict.items():
        if key in derived:
            expected = derived[key]
            if value.shape != expected.shape or not torch.allclose(value.float(), expected, rtol=1e-5, atol=1e-4):
                disagree.append(f"{key} {tuple(value.shape)} (expected {tuple(expected.shape)} from the config)")
            continue
        if not key.startswith("celle."):
            unknown.append(key)
            continue
        name = key[len("celle."):]
        try:
            if name.startswith("vae.model."):
                vq = map_taming_state_dict({name[len("vae.model."):]: value}, levels, source)
                mapped.update({"protein_tokenizer." + k: v for k, v in vq.items()})
            elif name.startswith("condition_vae.model."):
                vq = map_taming_state_dict({name[len("condition_vae.model."):]: value}, levels, source)
                mapped.update({"nucleus_tokenizer." + k: v for k, v in vq.items()})
            elif name.startswith("text_emb.model."):
                esm_name = fair_esm_to_transformers(name[len("text_emb.model."):])
                if esm_name is None:  # a per-layer rotary table (transformers keeps one)
                    esm_inv_freq.append(value)
                else:
                    mapped["text_encoder.model." + esm_name] = value
            elif name.startswith("text_emb.scale_layer."):
                mapped["text_encoder." + name[len("text_emb."):]] = value
            elif name == "sep_emb.weight":
                mapped["sep_embedding.weight"] = value
            elif name == "condition_emb.image_embedding.weight":
                mapped["nucleus_embedding.weight"] = value
            elif name == "image_emb.image_embedding.weight":
                mapped["protein_embedding.weight"] = value
            elif name.startswith("to_logits."):
                index, leaf = name[len("to_logits."):].split(".", 1)
                mapped[{"0": "logits_norm.", "1": "to_logits."}[index] + leaf] = value
            elif name.startswith("transformer.layers.layers."):
                layer, branch, rest = name[len("transformer.layers.layers."):].split(".", 2)
                prefix = f"blocks.{layer}." + ("attn" if branch == "0" else "ff")
                inner = {"to_qkv": "to_qkv", "to_out.0": "to_out", "net.0": "proj_in", "net.3": "proj_out"}
                if rest == "scale":
                    mapped[prefix + "_scale"] = value
                elif rest.startswith("fn.norm."):
                    mapped[prefix + "_norm." + rest[len("fn.norm."):]] = value
                elif rest.startswith("fn.fn."):
                    module, leaf = rest[len("fn.fn."):].rsplit(".", 1)
                    mapped[f"{prefix}.{inner[module]}.{leaf}"] = value
                else:
                    raise KeyError(key)
            else:
                raise KeyError(key)
        except CheckpointError:
            unknown.append(key)
        except (KeyError, IndexError, ValueError):
            unknown.append(key)
    if esm_inv_freq:
        first = esm_inv_freq[0]
        if any(t.shape != first.shape or not torch.equal(t, first) for t in esm_inv_freq):
            disagree.append("celle.text_emb.model.layers.*.self_attn.rot_emb.inv_freq differ between layers")
        mapped["text_encoder.model." + ROTARY_KEY] = first
    tied = mapped.get("text_encoder.model.lm_head.decoder.weight")
    embed = mapped.get("text_encoder.model.esm.embeddings.word_embeddings.weight")
    if tied is not None and embed is not None and not torch.equal(tied, embed):
        disagree.append("celle.text_emb.model.lm_head.weight is not the token embedding it is tied to")
    problems = []
    if unknown:
        problems.append(f"unexpected keys: {', '.join(sorted(unknown))}")
    if disagree:
        problems.append("; ".join(disagree))
    if problems:
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(problems))
    return mapped


def _read_yaml(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise InputError(f"{path}: invalid YAML ({err})".replace("\n", " ")) from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise InputError(f"{path}: expected a published config with a 'model' section")
    return data["model"]


def vqgan_settings(path: str | Path) -> dict:
    """The tokenizer fields of :class:`Celle2Config` from a published taming VQGAN yaml (``model.params``).

    Raises
    ------
    InputError
        If the file is unreadable, not a single-channel VQGAN config, or its token grid (published:
        ``resolution / attn_resolutions[0]``) disagrees with the architecture's downsampling.
    """
    path = Path(path)
    params = _read_yaml(path).get("params") or {}
    dd = params.get("ddconfig") or {}
    try:
        settings = dict(image_size=int(dd["resolution"]), vq_base_channels=int(dd["ch"]),
                        vq_channel_mult=tuple(int(m) for m in dd["ch_mult"]),
                        vq_num_res_blocks=int(dd["num_res_blocks"]),
                        vq_attn_resolutions=tuple(int(r) for r in dd["attn_resolutions"]),
                        vq_latent_channels=int(dd["z_channels"]), vq_embed_dim=int(params["embed_dim"]),
                        codebook_size=int(params["n_embed"]))
        channels = (int(dd["in_channels"]), int(dd["out_ch"]))
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"{path}: VQGAN config field missing or invalid: {err}") from None
    if channels != (1, 1) or dd.get("double_z"):
        raise InputError(f"{path}: expected a single-channel VQGAN (in_channels 1, out_ch 1, double_z false)")
    grid = settings["image_size"] // settings["vq_attn_resolutions"][0]
    downsampling = 2 ** (len(settings["vq_channel_mult"]) - 1)
    if grid != downsampling:
        raise InputError(f"{path}: token grid resolution / attn_resolutions[0] = {grid} disagrees with ch_mult "
                         f"{list(settings['vq_channel_mult'])} (downsampling {downsampling})")
    return settings


def load_published_vqgan(config_path: str | Path, checkpoint_path: str | Path):
    """Load a released taming VQGAN (``{"state_dict": ...}`` ``.ckpt``, read with ``weights_only=True``) strictly into
    a diffusers ``VQModel`` in eval mode."""
    settings = vqgan_settings(config_path)
    codebook = settings.pop("codebook_size")
    tokenizer = build_vq_tokenizer(Celle2Config(**settings), codebook)
    state = map_taming_state_dict(read_torch_weights(checkpoint_path), len(settings["vq_channel_mult"]),
                                  str(checkpoint_path))
    check_state_dict(tokenizer, state, str(checkpoint_path))
    tokenizer.load_state_dict(state, strict=True)
    return tokenizer.eval()


def load_published_celle2(config_path: str | Path, device: str | torch.device = "cpu") -> Celle2:
    """Load a released CELL-E 2 (``CELLE_trainer`` yaml + its ``ckpt_path``, with the two tokenizer yamls it names)
    strictly, in eval mode.

    Paths in the yaml are read relative to the yaml's folder. Checkpoints are read with
    ``torch.load(weights_only=True)``:
    a file that needs to unpickle Python objects (e.g. a Lightning checkpoint whose hyper-parameters are OmegaConf
    objects) is refused with the object named, never executed. When the yaml also names separate tokenizer
    checkpoints (``vqgan_model_path`` / ``condition_model_path``), they replace the copies inside the model checkpoint,
    after checking that their codebooks match the transformer's embeddings.

    Raises
    ------
    InputError
        Unreadable / unsupported config or checkpoint.
    CheckpointError
        Missing, unexpected or misshaped keys; tokenizers whose codebooks do not match the transformer.
    """
    config_path = Path(config_path)
    model_cfg = _read_yaml(config_path)
    params = model_cfg.get("params") or {}
    folder = config_path.parent

    def path_of(field: str, required: bool) -> Path | None:
        value = params.get(field)
        if not value:
            if required:
                raise InputError(f"{config_path}: model.params.{field} is empty (nothing to load)")
            return None
        return Path(value) if Path(value).is_absolute() else folder / value

    unsupported = {"text_embedding": ("esm2",), "num_images": (2,), "rotary_emb": (True,), "stable": (False, None),
                   "causal": (False, None)}
    for field, accepted in unsupported.items():
        if params.get(field) not in accepted:
            raise InputError(f"{config_path}: model.params.{field}={params.get(field)!r} is not supported "
                             f"(accepted: {', '.join(map(str, accepted))})")
    if int(params.get("num_text_tokens", 33)) != len(ESM_ALPHABET):
        raise InputError(f"{config_path}: model.params.num_text_tokens={params.get('num_text_tokens')} (ESM2 needs 33)")
    nucleus = vqgan_settings(path_of("condition_config_path", True))
    protein = vqgan_settings(path_of("vqgan_config_path", True))
    nucleus_codebook, protein_codebook = nucleus.pop("codebook_size"), protein.pop("codebook_size")
    if nucleus != protein:
        raise InputError(f"{config_path}: the nucleus and protein tokenizers have different architectures; "
                         "locscope supports one architecture for both")
    checkpoint = path_of("ckpt_path", True)
    state = read_torch_weights(checkpoint)
    esm = _esm_shape(state, str(checkpoint))
    try:
        config = Celle2Config(**nucleus, nucleus_codebook_size=nucleus_codebook, protein_codebook_size=protein_codebook,
                              text_encoder="esm2-published", text_seq_len=int(params["text_seq_len"]), **esm,
                              dim=int(params["dim"]), depth=int(params["depth"]), heads=int(params["heads"]),
                              dim_head=int(params["dim_head"]), attn_dropout=float(params.get("attn_dropout", 0.0)),
                              ff_dropout=float(params.get("ff_dropout", 0.0)),
                              loss_img_weight=float(params.get("loss_img_weight", 1.0)))
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"{config_path}: model.params field missing or invalid: {err}") from None
    mapped = map_published_state_dict(state, config, str(checkpoint))
    for field, prefix, codebook in (("condition_model_path", "nucleus_tokenizer.", nucleus_codebook),
                                    ("vqgan_model_path", "protein_tokenizer.", protein_codebook)):
        separate = path_of(field, False)
        if separate is None:
            continue
        tokenizer_state = map_taming_state_dict(read_torch_weights(separate), len(config.vq_channel_mult),
                                                str(separate))
        rows = tokenizer_state.get("quantize.embedding.weight")
        if rows is None or rows.shape != (codebook, config.vq_embed_dim):
            raise CheckpointError(f"{separate}: tokenizer codebook {tuple(rows.shape) if rows is not None else None} "
                                  f"does not match the transformer's ({codebook}, {config.vq_embed_dim})")
        mapped = {k: v for k, v in mapped.items() if not k.startswith(prefix)}
        mapped.update({prefix + k: v for k, v in tokenizer_state.items()})
    check_codebooks(config, mapped, str(checkpoint))
    model = Celle2(config)
    check_state_dict(model, mapped, str(checkpoint))
    model.load_state_dict(mapped, strict=True)
    # the published table, loaded bit for bit (it agrees with rotary_table() within float rounding)
    model.rotary.copy_(state["celle.transformer.pos_emb"])
    return model.to(device).eval()


def load_celle2(path: str | Path, device: str | torch.device = "cpu") -> Celle2:
    """The hub's loader: a locscope model directory (``config.json`` + ``model.safetensors``), a released
    ``CELLE_trainer`` yaml, or a folder holding one (with its checkpoints), in eval mode on ``device``."""
    path = Path(path)
    if (path / "config.json").is_file():
        return Celle2.from_pretrained(path).to(device)
    if path.is_dir():
        found = [p for p in sorted(path.glob("*.y*ml")) if "CELLE_trainer" in p.read_text(errors="ignore")]
        if len(found) != 1:
            raise InputError(f"{path}: expected one CELL-E 2 config (model.target celle_main.CELLE_trainer), "
                             f"found {len(found)}")
        path = found[0]
    return load_published_celle2(path, device)


def check_codebooks(config: Celle2Config, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse a tokenizer / transformer pair whose codebooks disagree (``CheckpointError``): each tokenizer's codebook
    must have ``codebook_size`` rows and the transformer's embedding one more (the mask row)."""
    for stream, tokenizer, embedding, size in (
        ("nucleus", "nucleus_tokenizer.", "nucleus_embedding.weight", config.nucleus_codebook_size),
        ("protein", "protein_tokenizer.", "protein_embedding.weight", config.protein_codebook_size),
    ):
        codebook = state.get(tokenizer + "quantize.embedding.weight")
        rows = state.get(embedding)
        if codebook is None or rows is None:
            continue  # reported as missing keys by the strict check
        if codebook.shape[0] != size or rows.shape[0] != codebook.shape[0] + 1:
            raise CheckpointError(
                f"{source}: the {stream} tokenizer has {codebook.shape[0]} codes but the transformer embeds "
                f"{rows.shape[0] - 1} (+1 mask row); tokenizer and transformer were not trained together")


def _esm_shape(state: Mapping[str, torch.Tensor], source: str) -> dict[str, int]:
    """``esm_dim``, ``esm_layers``, ``esm_heads`` read off the fair-esm keys (heads from the rotary table size)."""
    prefix = "celle.text_emb.model."
    embed = state.get(prefix + "embed_tokens.weight")
    inv_freq = state.get(prefix + "layers.0.self_attn.rot_emb.inv_freq")
    if embed is None or inv_freq is None:
        raise CheckpointError(f"{source} does not match the model: missing keys: {prefix}embed_tokens.weight or "
                              f"{prefix}layers.0.self_attn.rot_emb.inv_freq (an ESM2 text encoder)")
    layers = {int(k[len(prefix) + 7:].split(".")[0]) for k in state if k.startswith(prefix + "layers.")}
    dim = int(embed.shape[1])
    return {"esm_dim": dim, "esm_layers": max(layers) + 1, "esm_heads": dim // (2 * inv_freq.numel())}


__all__ = [
    "Celle2", "Celle2Config", "Celle2Output", "load_celle2", "celle2_base_config", "celle2_tiny_config",
    "normalize_nucleus",
    "threshold_protein", "masked_count", "random_mask", "rotary_table", "load_published_celle2", "load_published_vqgan",
    "check_codebooks",
]
