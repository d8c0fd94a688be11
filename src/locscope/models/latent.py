"""Latent diffusion for protein localization images (proteoscope), built from diffusers parts.

Two networks, trained one after the other and stored together:

1. :class:`LatentAutoencoder`: a diffusers ``AutoencoderKL`` over the image channels (published: protein + nucleus,
   widths 128/256/512, 4 latent channels, 100 x 100 -> 25 x 25). Latents are standardised with a shift and a scaling
   factor measured on training data (:func:`fit_latent_scaling`) and stored in its config, so the denoiser always sees
   latents of unit variance.
2. :class:`LatentDenoiser`: a diffusers ``UNet2DConditionModel`` in latent space. Its input is the noisy latent
   concatenated with the nuclear distance map resized to the latent grid (:func:`locscope.data.transforms.
   nuclear_distance_map`) and, optionally, ER / microtubule landmarks (a generalisation: proteoscope has the nucleus
   only; an absent landmark is replaced by a learned placeholder). It cross-attends to per-residue protein embeddings
   (locscope's built-in encoder or a local ESM2, :mod:`locscope.encoders.protein`); the mean-pooled embedding, with the
   encoder's global sequence features, enters as the added ("projection" class) embedding of every residual block.

Additions of the CPU recipe (as in ``models/celldiff.py``): an auxiliary compartment head on the pooled embedding
and, when ``fraction_classes`` is set, the compartment bottleneck of :mod:`locscope.models.celldiff` (a fraction head
whose distribution is added to the pooled condition) and optionally CELL-Diff's layout prior at the latent grid (a
:class:`~locscope.models.celldiff.LayoutNet` maps the distance map and landmarks to one map per compartment; the
condition's fractions mix them into an expected protein image, one more input channel of the U-Net). Classifier-free guidance replaces the sequence by a learned null
token and null pooled vector (training drops it with p = 0.2; guidance ~3 at sampling). The denoiser predicts ``v`` on a
cosine schedule (:class:`locscope.diffusion.schedule.ShiftedCosineSchedule` at the latent size); sampling is DDIM
(proteoscope: 50 steps) or DPM-Solver++ through :func:`locscope.diffusion.samplers.sample_images`.

A model directory::

    DIR/config.json, DIR/model.safetensors                          the denoiser (LatentDiffusionConfig)
    DIR/autoencoder/config.json, DIR/autoencoder/model.safetensors  the autoencoder (LatentAutoencoderConfig)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from locscope.channels import NUCLEUS, PROTEIN
from locscope.diffusion.samplers import (
    PLACEMENTS, class_denoising_losses, classifier_free_guidance, place_condition, sample_images,
)
from locscope.diffusion.schedule import ShiftedCosineSchedule
from locscope.encoders.protein import RESIDUE_IDS
from locscope.errors import CheckpointError
from locscope.models.celldiff import LayoutNet
from locscope.models.sequence_heads import EncodedSequence, SequenceHeads
from locscope.utils.checkpoint import PretrainedMixin, load_weights_into, read_config

LEVEL3_CLASSES: tuple[str, ...] = (
    "nucleus", "cytosol", "endomembrane-system", "plasma-membrane", "mitochondria", "nucleoli", "cytoskeleton",
)
AUTOENCODER_DIR = "autoencoder"
#: Default solver steps of latent models: DDIM 50 (proteoscope); DPM-Solver++ 8, where ``latent-tiny`` places proteins
#: as often as at 10 steps on held-out proteins (``docs/benchmarks.md``) at 4/5 of the network evaluations.
LATENT_DEFAULT_STEPS = {"ddim": 50, "dpmsolver": 8}
LATENT_DEFAULT_GUIDANCE = 3.0  # classifier-free guidance scale of generate / localize / design / explain


# ---------------------------------------------------------------------------------------------------- autoencoder
@dataclass
class LatentAutoencoderConfig:
    """Hyper-parameters of :class:`LatentAutoencoder` (saved as ``config.json`` beside the weights).

    Parameters
    ----------
    image_channels : tuple of str
        Channels the autoencoder compresses, in order; must include ``'protein'`` (published: protein, nucleus).
    image_size : int
        Side of the square images in pixels; a multiple of the downsampling factor.
    block_channels : tuple of int
        Encoder widths; ``len(block_channels) - 1`` stride-2 stages, so the factor is ``2 ** (len - 1)``.
    layers_per_block : int
        Residual blocks per stage.
    latent_channels : int
        Channels of the latent (published: 4).
    norm_groups : int
        GroupNorm groups (must divide every width).
    mid_attention : bool
        Self-attention in the middle block (diffusers' default; costly at large latents on a CPU).
    scaling_factor, shift_factor : float
        Latent standardisation ``z = (mode_or_sample - shift) * scale``, measured on training data
        (:func:`fit_latent_scaling`).
    """

    image_channels: tuple[str, ...] = (PROTEIN, NUCLEUS)
    image_size: int = 100
    block_channels: tuple[int, ...] = (128, 256, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_groups: int = 32
    mid_attention: bool = True
    scaling_factor: float = 1.0
    shift_factor: float = 0.0

    def __post_init__(self) -> None:
        if PROTEIN not in self.image_channels:
            raise ValueError(f"image_channels={self.image_channels}: must include {PROTEIN!r}")
        if len(self.block_channels) < 1:
            raise ValueError("block_channels is empty: at least one width is needed")
        if self.image_size % self.downsample_factor:
            raise ValueError(f"image_size={self.image_size}: must be a multiple of the downsampling factor "
                             f"{self.downsample_factor} (2 ** (len(block_channels) - 1))")
        bad = [c for c in self.block_channels if c % self.norm_groups]
        if bad:
            raise ValueError(f"block_channels={self.block_channels}: widths {bad} are not multiples of "
                             f"norm_groups={self.norm_groups}")
        if not self.scaling_factor > 0:
            raise ValueError(f"scaling_factor={self.scaling_factor}: must be > 0")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.downsample_factor


@dataclass
class AutoencoderOutput:
    """Output of :meth:`LatentAutoencoder.forward`: ``reconstruction`` ``(B, C, H, W)``, the posterior's ``mean`` and
    ``logvar`` ``(B, latent_channels, h, w)`` (unscaled) and its ``kl`` ``(B,)`` to the standard normal."""

    reconstruction: torch.Tensor
    mean: torch.Tensor
    logvar: torch.Tensor
    kl: torch.Tensor


class LatentAutoencoder(PretrainedMixin, nn.Module):
    """diffusers ``AutoencoderKL`` with locscope's config, scaling and strict loading.

    Images are ``(B, len(image_channels), H, W)`` in [-1, 1].

    Examples
    --------
    >>> ae = LatentAutoencoder(LatentAutoencoderConfig(image_size=16, block_channels=(8, 8, 8), layers_per_block=1,
    ...                                                norm_groups=4, mid_attention=False))
    >>> z = ae.encode(torch.zeros(2, 2, 16, 16))
    >>> tuple(z.shape), tuple(ae.decode(z).shape)
    ((2, 4, 4, 4), (2, 2, 16, 16))
    """

    config_class = LatentAutoencoderConfig

    def __init__(self, config: LatentAutoencoderConfig) -> None:
        super().__init__()
        from diffusers import AutoencoderKL

        self.config = config
        n = len(config.block_channels)
        self.vae = AutoencoderKL(
            in_channels=len(config.image_channels), out_channels=len(config.image_channels),
            down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=tuple(config.block_channels), layers_per_block=config.layers_per_block,
            latent_channels=config.latent_channels, norm_num_groups=config.norm_groups, sample_size=config.image_size,
            mid_block_add_attention=config.mid_attention,
        )

    def _check(self, images: torch.Tensor) -> None:
        c, s = len(self.config.image_channels), self.config.image_size
        if images.ndim != 4 or images.shape[1] != c or images.shape[-1] % self.config.downsample_factor:
            raise ValueError(f"images must be (B, {c}, H, W) with channels {', '.join(self.config.image_channels)} "
                             f"and H, W multiples of {self.config.downsample_factor} (trained at {s}); "
                             f"got {tuple(images.shape)}")

    def posterior(self, images: torch.Tensor):
        """The encoder's diagonal Gaussian (diffusers ``DiagonalGaussianDistribution``) over unscaled latents."""
        self._check(images)
        return self.vae.encode(images).latent_dist

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None, sample: bool = False
               ) -> torch.Tensor:
        """``(B, C, H, W)`` images -> standardised latents ``(B, latent_channels, H/f, W/f)`` (the posterior mean,
        or a draw from it with ``sample``)."""
        posterior = self.posterior(images)
        z = posterior.sample(generator) if sample else posterior.mode()
        return (z - self.config.shift_factor) * self.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Standardised latents ``(B, latent_channels, h, w)`` -> images ``(B, C, h*f, w*f)`` (not clamped).

        The decoder runs in channels-last memory order (oneDNN's faster convolutions on a CPU; the same numbers to
        float rounding); the images come back contiguous."""
        latents = latents / self.config.scaling_factor + self.config.shift_factor
        return self.vae.decode(latents.contiguous(memory_format=torch.channels_last)).sample.contiguous()

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> AutoencoderOutput:
        """Training pass: encode, draw ``z`` from the posterior (reparameterised), decode."""
        posterior = self.posterior(images)
        z = posterior.sample(generator)
        return AutoencoderOutput(self.vae.decode(z).sample, posterior.mean, posterior.logvar, posterior.kl())


@torch.no_grad()
def fit_latent_scaling(autoencoder: LatentAutoencoder, batches: Iterable[torch.Tensor]) -> LatentAutoencoderConfig:
    """Measure the latent standardisation on data: the config with ``shift_factor`` = mean and ``scaling_factor`` =
    1 / standard deviation of the posterior means over all ``batches`` of ``(B, C, H, W)`` images (Rombach et al.
    2022 rescale by the latents' std; the shift also removes a non-zero mean). Apply it with
    ``autoencoder.config = fit_latent_scaling(...)``.

    Raises
    ------
    ValueError
        If ``batches`` is empty or the latents are constant.
    """
    total = total_sq = count = 0.0
    for images in batches:
        z = autoencoder.posterior(images).mode().double()
        total, total_sq, count = total + z.sum().item(), total_sq + z.pow(2).sum().item(), count + z.numel()
    if not count:
        raise ValueError("batches is empty: need images to measure the latent scaling")
    mean = total / count
    std = max(total_sq / count - mean * mean, 0.0) ** 0.5
    if std < 1e-8:
        raise ValueError("the latents are constant (std 0): cannot standardise them")
    return dataclasses.replace(autoencoder.config, scaling_factor=1.0 / std, shift_factor=mean)


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (Isola et al. 2017; as in latent diffusion's autoencoder loss): a stack of 4 x 4 stride-2
    convolutions, GroupNorm and LeakyReLU, ending in one real/fake logit per overlapping patch.

    ``(B, in_channels, H, W)`` -> ``(B, 1, H / 2**layers - 2, W / 2**layers - 2)`` logits.
    """

    def __init__(self, in_channels: int, width: int = 32, layers: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        channels = width
        for i in range(1, layers):
            out = width * min(2 ** i, 8)
            blocks += [nn.Conv2d(channels, out, 4, stride=2, padding=1), nn.GroupNorm(min(32, out // 4), out),
                       nn.LeakyReLU(0.2)]
            channels = out
        blocks += [nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(min(32, channels // 4), channels),
                   nn.LeakyReLU(0.2), nn.Conv2d(channels, 1, 3, padding=0)]
        self.net = nn.Sequential(*blocks)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


# ------------------------------------------------------------------------------------------------------ denoiser
@dataclass
class LatentDiffusionConfig:
    """Hyper-parameters of :class:`LatentDenoiser` (saved as ``config.json``); the image fields must match the
    autoencoder it works with (:func:`check_fit`).

    Parameters
    ----------
    image_size, image_channels, latent_channels, latent_size
        Copied from the autoencoder's config.
    landmark_channels : tuple of str
        Optional extra conditioning channels besides the nucleus (e.g. ``('er', 'microtubules')``; proteoscope: none).
        The nucleus always enters as its distance map.
    block_channels : tuple of int
        U-Net widths per level (each level but the last halves the latent grid).
    attention_levels : tuple of bool
        Per level, cross-attention to the sequence (``CrossAttnDownBlock2D`` / ``CrossAttnUpBlock2D``) or not; the
        middle block always cross-attends.
    layers_per_block, attention_head_dim, norm_groups : int
        diffusers ``UNet2DConditionModel`` arguments.
    cross_attention_dim : int
        Width of the sequence tokens the U-Net attends to (the residue embeddings are projected to it).
    protein_encoder : {'builtin', 'esm2'}
        Sequence encoder; ``sequence_dim`` / ``sequence_layers`` size the built-in one, ``esm_path`` is a local ESM2
        directory (its hidden size is used), ``esm_finetune`` trains it.
    max_sequence_length : int
        Longer sequences keep both termini (middle cropped); proteoscope: 1,024.
    compartment_classes : tuple of str
        Classes of the auxiliary compartment head on the pooled embedding.
    fraction_classes : tuple of str
        Compartment bottleneck (empty = off, proteoscope's design): a fraction head's distribution over these classes
        (or the true one, teacher-forced in training) is concatenated to the pooled condition.
    num_train_timesteps : int
        Diffusion steps T.
    schedule_base : int
        Reference size of the cosine schedule: logSNR shifted by ``2 log(schedule_base / latent_size)`` (equal to
        ``latent_size``: the plain cosine schedule; smaller: noisier).
    layout_prior : bool
        CELL-Diff's compartment layout prior at the latent grid (needs ``fraction_classes``): a small U-Net
        (:class:`~locscope.models.celldiff.LayoutNet`) maps the distance map and landmarks at the latent grid to one
        non-negative map per compartment (trained against the simulator's compartment masks and by regression on
        the protein image at that grid); the condition's fractions mix them into an expected protein image, which
        the U-Net reads as one more input channel.
    layout_width : int
        Width of the layout U-Net's first level (then 2x, 4x, 4x).
    """

    image_size: int = 100
    image_channels: tuple[str, ...] = (PROTEIN, NUCLEUS)
    latent_channels: int = 4
    latent_size: int = 25
    landmark_channels: tuple[str, ...] = ()
    block_channels: tuple[int, ...] = (128, 256, 512)
    attention_levels: tuple[bool, ...] = (False, True, True)
    layers_per_block: int = 2
    attention_head_dim: int = 8
    norm_groups: int = 32
    cross_attention_dim: int = 256
    protein_encoder: str = "builtin"
    sequence_dim: int = 640
    sequence_layers: int = 6
    esm_path: str | None = None
    esm_finetune: bool = False
    max_sequence_length: int = 1024
    compartment_classes: tuple[str, ...] = LEVEL3_CLASSES
    fraction_classes: tuple[str, ...] = ()
    num_train_timesteps: int = 1000
    schedule_base: int = 25
    layout_prior: bool = False
    layout_width: int = 16

    def __post_init__(self) -> None:
        if self.layout_prior and not self.fraction_classes:
            raise ValueError("layout_prior=True needs fraction_classes (the maps are mixed by compartment fractions)")
        if self.layout_prior and self.latent_size % 8:
            raise ValueError(f"layout_prior=True needs a latent_size divisible by 8 (the layout U-Net's 4 levels); "
                             f"got {self.latent_size}")
        if len(self.attention_levels) != len(self.block_channels):
            raise ValueError(f"attention_levels={self.attention_levels}: expected one boolean per block_channels "
                             f"level ({len(self.block_channels)})")
        if NUCLEUS in self.landmark_channels:
            raise ValueError(f"landmark_channels={self.landmark_channels}: the nucleus enters as its distance map; "
                             "list only extra landmarks (er, microtubules)")
        bad = [c for c in self.block_channels if c % self.norm_groups]
        if bad:
            raise ValueError(f"block_channels={self.block_channels}: widths {bad} are not multiples of "
                             f"norm_groups={self.norm_groups}")
        if self.protein_encoder not in ("builtin", "esm2"):
            raise ValueError(f"protein_encoder={self.protein_encoder!r}: accepted values are builtin, esm2")


def latent_tiny_config(**overrides) -> tuple[LatentAutoencoderConfig, LatentDiffusionConfig]:
    """The CPU default: 64 x 64 protein images (the nucleus enters only as the distance map), an autoencoder of widths
    16/32/64 compressing 4x per side to a 16 x 16 x 4 latent, a 3-level U-Net (32/64/96) cross-attending at 8 x 8
    and 4 x 4, ER and microtubule landmarks,
    the 21-compartment bottleneck of celldiff-tiny and a noisier schedule (base 8). ``overrides`` change denoiser
    fields; ``image_size`` changes both."""
    from locscope.synth.compartments import COMPARTMENTS

    size = overrides.pop("image_size", 64)
    autoencoder = LatentAutoencoderConfig(image_channels=(PROTEIN,), image_size=size, block_channels=(16, 32, 64),
                                          layers_per_block=1, latent_channels=4, norm_groups=8, mid_attention=False)
    denoiser = LatentDiffusionConfig(
        image_size=size, image_channels=(PROTEIN,), latent_channels=4, latent_size=autoencoder.latent_size,
        landmark_channels=("er", "microtubules"), block_channels=(32, 64, 96), attention_levels=(False, True, True),
        layers_per_block=1, attention_head_dim=16, norm_groups=16, cross_attention_dim=64, sequence_dim=64,
        sequence_layers=3, max_sequence_length=1024, fraction_classes=tuple(COMPARTMENTS),
        schedule_base=autoencoder.latent_size // 2,
    )
    return autoencoder, dataclasses.replace(denoiser, **overrides)


def latent_proteoscope_config(**overrides) -> tuple[LatentAutoencoderConfig, LatentDiffusionConfig]:
    """The published sizes: 100 x 100 protein + nucleus, autoencoder 128/256/512 with 4 latent channels (25 x 25),
    a 3-level U-Net with cross-attention, nucleus-only conditioning. ``overrides`` change denoiser fields."""
    autoencoder = LatentAutoencoderConfig()
    return autoencoder, dataclasses.replace(LatentDiffusionConfig(), **overrides)


CONFIGS = {"latent-tiny": latent_tiny_config, "latent-proteoscope": latent_proteoscope_config}


def check_fit(autoencoder: LatentAutoencoderConfig, denoiser: LatentDiffusionConfig, source: str = "model") -> None:
    """Raise :class:`CheckpointError` naming every field where the denoiser does not fit the autoencoder."""
    pairs = {"image_size": (autoencoder.image_size, denoiser.image_size),
             "image_channels": (tuple(autoencoder.image_channels), tuple(denoiser.image_channels)),
             "latent_channels": (autoencoder.latent_channels, denoiser.latent_channels),
             "latent_size": (autoencoder.latent_size, denoiser.latent_size)}
    bad = [f"{name}: autoencoder {a} vs denoiser {d}" for name, (a, d) in pairs.items() if a != d]
    if bad:
        raise CheckpointError(f"{source}: the autoencoder and the denoiser do not fit each other ({'; '.join(bad)})")


@dataclass
class SequenceCondition(EncodedSequence):
    """The encoded sequence, computed once and reused at every denoising step (``repeat`` / ``concat`` pad L).

    Attributes
    ----------
    tokens : torch.Tensor
        ``(B, L, cross_attention_dim)`` per-residue keys/values for cross-attention.
    mask : torch.Tensor
        ``(B, L)`` bool, real residues (the null token for dropped rows).
    pooled : torch.Tensor
        ``(B, cross_attention_dim + n_fraction_classes)`` the added condition (null vector and zeros where dropped).
    compartment_logits : torch.Tensor
        ``(B, n_compartment_classes)`` auxiliary head (never dropped).
    fraction_logits : torch.Tensor
        ``(B, n_fraction_classes)`` (width 0 without the bottleneck).
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor
    compartment_logits: torch.Tensor
    fraction_logits: torch.Tensor


class LatentDenoiser(SequenceHeads, PretrainedMixin, nn.Module):
    """Sequence encoder + diffusers ``UNet2DConditionModel`` predicting ``v`` for standardised latents.

    Examples
    --------
    >>> cfg = LatentDiffusionConfig(image_size=16, latent_size=4, block_channels=(8, 16),
    ...                             attention_levels=(False, True), layers_per_block=1, norm_groups=4,
    ...                             cross_attention_dim=16, sequence_dim=8, sequence_layers=1, schedule_base=4)
    >>> net = LatentDenoiser(cfg)
    >>> cond = net.encode_sequence(net.tokenize(["MPKKKRKV", "MLSRAVCG"])[0])
    >>> net(torch.randn(2, 4, 4, 4), torch.tensor([10, 500]), torch.zeros(2, 1, 4, 4), cond).shape
    torch.Size([2, 4, 4, 4])
    """

    config_class = LatentDiffusionConfig

    def __init__(self, config: LatentDiffusionConfig) -> None:
        super().__init__()
        from diffusers import UNet2DConditionModel

        self.config = config
        width = config.cross_attention_dim
        n_fractions = len(config.fraction_classes)
        n_landmarks = len(config.landmark_channels)

        # --- sequence path: per-residue tokens for cross-attention, the pooled condition, auxiliary heads -------
        self.build_sequence_path(config, width, pooled_parts=2)  # pooled = MLP(mean, global features)
        if n_landmarks:
            self.landmark_placeholder = nn.Parameter(torch.zeros(1, n_landmarks, config.latent_size,
                                                                 config.latent_size))
        if config.layout_prior:
            self.layout = LayoutNet(1 + n_landmarks, n_fractions, config.layout_width)

        # --- the U-Net: input = noisy latent + distance map + landmarks (+ the layout prior's expected image) -----
        down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in config.attention_levels)
        up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.attention_levels))
        self.unet = UNet2DConditionModel(
            sample_size=config.latent_size,
            in_channels=config.latent_channels + 1 + n_landmarks + int(config.layout_prior),
            out_channels=config.latent_channels, down_block_types=down, up_block_types=up,
            block_out_channels=tuple(config.block_channels), layers_per_block=config.layers_per_block,
            norm_num_groups=config.norm_groups, cross_attention_dim=width,
            attention_head_dim=config.attention_head_dim, class_embed_type="projection",
            projection_class_embeddings_input_dim=width + n_fractions,
        )

    def tokenize(self, sequences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequences -> ``(tokens (B, L), lengths (B,))`` with this model's maximum length (termini kept)."""
        from locscope.encoders.protein import tokenize

        return tokenize(sequences, self.config.max_sequence_length)

    def encode_sequence(self, tokens: torch.Tensor, drop_sequence: torch.Tensor | None = None,
                        fractions: torch.Tensor | None = None, use_fractions: torch.Tensor | None = None,
                        ) -> SequenceCondition:
        """Encode ``tokens`` ``(B, L)`` once; rows with ``drop_sequence`` ``(B,)`` True get the null condition.

        Bottleneck models condition on the fraction head's distribution, or on ``fractions`` ``(B, n_fraction)``
        in the rows where ``use_fractions`` ``(B,)`` is True (all rows if None).
        """
        encoding = self.protein_encoder(tokens)
        residues = self.sequence_in(encoding.residues)  # (B, L, width)
        mask = encoding.mask
        m = mask[..., None].to(residues.dtype)
        mean = (residues * m).sum(1) / m.sum(1).clamp(min=1)  # the mean-pooled embedding
        pooled = self.pool_mlp(torch.cat([mean, self.features_in(encoding.features.to(residues.dtype))], 1))
        compartment_logits, fraction_logits, condition = self.sequence_heads(pooled, fractions, use_fractions)
        if drop_sequence is not None:  # through torch.where: every parameter stays in the graph (DDP)
            drop = drop_sequence.to(residues.device)
            null = torch.cat([self.null_token.expand(residues.shape[0], 1, -1), torch.zeros_like(residues[:, 1:])], 1)
            residues = torch.where(drop[:, None, None], null, residues)
            first_only = torch.zeros_like(mask)
            first_only[:, 0] = True
            mask = torch.where(drop[:, None], first_only, mask)
            pooled = torch.where(drop[:, None], self.null_pooled.expand_as(pooled), pooled)
            condition = condition.masked_fill(drop[:, None], 0.0)
        return SequenceCondition(residues, mask, torch.cat([pooled, condition], 1), compartment_logits,
                                 fraction_logits)

    def null_condition(self, batch: int, device: torch.device | str = "cpu") -> SequenceCondition:
        """The unconditional (sequence dropped) condition for classifier-free guidance."""
        tokens = torch.full((batch, 1), RESIDUE_IDS[1], dtype=torch.long, device=device)
        return self.encode_sequence(tokens, drop_sequence=torch.ones(batch, dtype=torch.bool, device=device))

    def spatial_conditions(self, distance_map: torch.Tensor, landmarks: torch.Tensor | None = None,
                           landmark_present: torch.Tensor | None = None) -> torch.Tensor:
        """The U-Net's spatial conditions at the latent grid: ``(B, 1 + n_landmarks, h, w)``, followed, with the layout
        prior, by its ``n_fraction_classes`` maps (:meth:`layout_maps`; computed once per cell, mixed by the sequence
        condition in :meth:`forward`).

        Parameters
        ----------
        distance_map : torch.Tensor
            ``(B, 1, H, W)`` nuclear distance map in [-1, 1] (positive inside nuclei), any resolution: resized to
            the latent grid by area averaging.
        landmarks : torch.Tensor, optional
            ``(B, n_landmarks, H, W)`` in [-1, 1], ordered as ``config.landmark_channels`` (resized likewise);
            None = all absent.
        landmark_present : torch.Tensor, optional
            ``(B, n_landmarks)`` bool; absent channels use the learned placeholder.
        """
        size = self.config.latent_size
        n = len(self.config.landmark_channels)
        if distance_map.ndim != 4 or distance_map.shape[1] != 1:
            raise ValueError(f"distance_map must be (B, 1, H, W); got {tuple(distance_map.shape)}")
        parts = [resize_to(distance_map, size)]
        if n:
            batch = distance_map.shape[0]
            placeholder = self.landmark_placeholder.to(distance_map.dtype).expand(batch, -1, -1, -1)
            if landmarks is None:
                parts.append(placeholder)
            else:
                if landmarks.ndim != 4 or landmarks.shape[1] != n:
                    raise ValueError(f"landmarks must be (B, {n}, H, W) with channels "
                                     f"{', '.join(self.config.landmark_channels)}; got {tuple(landmarks.shape)}")
                landmarks = resize_to(landmarks, size)
                if landmark_present is not None:
                    present = landmark_present.to(landmarks.device)[:, :, None, None]
                    landmarks = torch.where(present, landmarks, placeholder)
                parts.append(landmarks)
        conditions = torch.cat(parts, 1)
        if self.config.layout_prior:
            conditions = torch.cat([conditions, self.layout_maps(conditions)[0].to(conditions.dtype)], 1)
        return conditions

    def layout_maps(self, conditions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The layout prior's ``(maps, membership_logits)``, both ``(B, n_fraction_classes, h, w)``, from the distance
        map + landmarks ``(B, 1 + n_landmarks, h, w)`` at the latent grid (the first channels of
        :meth:`spatial_conditions`).

        Raises
        ------
        ValueError
            If the model has no layout prior, or ``conditions`` has another shape.
        """
        if not self.config.layout_prior:
            raise ValueError("this model has no layout prior (config.layout_prior is False)")
        n, size = 1 + len(self.config.landmark_channels), self.config.latent_size
        if conditions.ndim != 4 or tuple(conditions.shape[1:]) != (n, size, size):
            raise ValueError(f"conditions must be (B, {n}, {size}, {size}) (distance map + landmarks at the latent "
                             f"grid); got {tuple(conditions.shape)}")
        return self.layout(conditions)

    def mix_layout(self, maps: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
        """The expected protein image ``(B, 1, h, w)`` in [-1, 1] of the layout ``maps`` mixed by ``fractions``
        ``(B, n_fraction_classes)`` (zeros, the dropped condition: the background alone)."""
        return self.layout.mix(maps, fractions)

    def forward(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, conditions: torch.Tensor,
                sequence: SequenceCondition) -> torch.Tensor:
        """One network evaluation: ``v`` ``(B, latent_channels, h, w)``.

        Parameters
        ----------
        noisy_latents : torch.Tensor
            ``(B, latent_channels, h, w)`` standardised noisy latents.
        timesteps : torch.Tensor
            ``(B,)`` steps in ``[0, num_train_timesteps)``.
        conditions : torch.Tensor
            ``(B, 1 + n_landmarks (+ n_fraction_classes with the layout prior), h, w)`` from
            :meth:`spatial_conditions`; the layout maps are mixed by the sequence condition's fractions.
        sequence : SequenceCondition
            From :meth:`encode_sequence` (or :meth:`null_condition`).
        """
        conditions = conditions.to(noisy_latents.dtype)
        if self.config.layout_prior:
            n, k = 1 + len(self.config.landmark_channels), len(self.config.fraction_classes)
            expected = self.mix_layout(conditions[:, n:], sequence.pooled[:, -k:])
            conditions = torch.cat([conditions[:, :n], expected.to(noisy_latents.dtype)], 1)
        return self.unet(torch.cat([noisy_latents, conditions], 1), timesteps,
                         encoder_hidden_states=sequence.tokens, class_labels=sequence.pooled,
                         encoder_attention_mask=sequence.mask.to(noisy_latents.dtype)).sample


def resize_to(images: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C, size, size)``: area averaging down, bilinear up, unchanged at that size."""
    if images.shape[-2:] == (size, size):
        return images
    mode = "area" if images.shape[-1] >= size else "bilinear"
    return F.interpolate(images.float(), size=(size, size), mode=mode).to(images.dtype)


# --------------------------------------------------------------------------------------------- the whole model
class LatentDiffusion(nn.Module):
    """An autoencoder and a denoiser that fit each other (:func:`check_fit`), loaded and saved together.

    Attributes
    ----------
    config : LatentDiffusionConfig
        The denoiser's config (``model.config.image_size``, ``landmark_channels``, ... as other families).
    """

    def __init__(self, autoencoder: LatentAutoencoder, denoiser: LatentDenoiser) -> None:
        super().__init__()
        check_fit(autoencoder.config, denoiser.config)
        self.autoencoder, self.denoiser = autoencoder, denoiser
        self.config = denoiser.config

    @property
    def schedule(self) -> ShiftedCosineSchedule:
        """The v-prediction schedule of the denoiser (cosine at the latent size, shifted by ``schedule_base``)."""
        cfg = self.config
        return ShiftedCosineSchedule(cfg.latent_size, cfg.num_train_timesteps, base=cfg.schedule_base)

    def tokenize(self, sequences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.denoiser.tokenize(sequences)

    # the sequence-only readout shared with the other families (localize, generate's head probabilities)
    def encode_sequence(self, tokens: torch.Tensor, **options) -> SequenceCondition:
        return self.denoiser.encode_sequence(tokens, **options)

    def predict_compartments(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.denoiser.predict_compartments(tokens)

    def predict_fractions(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.denoiser.predict_fractions(tokens)

    @torch.no_grad()
    def sample(self, distance_map: torch.Tensor, tokens: torch.Tensor, landmarks: torch.Tensor | None = None,
               landmark_present: torch.Tensor | None = None, samples: int = 1, sampler: str = "ddim",
               steps: int | None = None, guidance: float = LATENT_DEFAULT_GUIDANCE, generator: torch.Generator | None = None,
               fractions: torch.Tensor | None = None, latents: torch.Tensor | None = None, progress: bool = False,
               placement: str = "soft") -> tuple[torch.Tensor, int]:
        """Generate ``samples`` images per (cell, sequence) row.

        Parameters
        ----------
        distance_map : torch.Tensor
            ``(B, 1, H, W)`` nuclear distance maps in [-1, 1] (any resolution).
        tokens : torch.Tensor
            ``(B, L)`` residue tokens (:meth:`tokenize`).
        landmarks, landmark_present : torch.Tensor, optional
            ``(B, n_landmarks, H, W)`` in [-1, 1] and ``(B, n_landmarks)`` bool (see
            :meth:`LatentDenoiser.spatial_conditions`).
        samples : int
            Images per row (K); output rows are ``[row0 x K, row1 x K, ...]``.
        sampler : {'ddim', 'dpmsolver'}
        steps : int, optional
            Denoising steps (default :data:`LATENT_DEFAULT_STEPS`: DDIM 50, DPM-Solver++ 8).
        guidance : float
            Classifier-free guidance scale (1 = the conditional prediction only, one network pass per step).
        generator : torch.Generator, optional
            Seeds the initial noise.
        fractions : torch.Tensor, optional
            ``(B, n_fraction_classes)`` compartment distributions to condition on (bottleneck models).
        latents : torch.Tensor, optional
            ``(B * samples, latent_channels, h, w)`` initial noise to use instead of drawing it.
        placement : {'soft', 'sample', 'top'}
            Bottleneck models: condition each image on the whole distribution (``fractions``, else the fraction
            head's; ``'soft'``, the training-time behaviour), on one compartment drawn from it per image
            (``'sample'``) or on its most likely compartment (``'top'``); see
            :func:`locscope.diffusion.samplers.place_condition`.

        Returns
        -------
        images : torch.Tensor
            ``(B * samples, len(image_channels), H, W)`` float32 in [-1, 1].
        network_evaluations : int
            Steps x (2 if guidance != 1 else 1).
        """
        if samples < 1:
            raise ValueError(f"samples={samples}: must be >= 1")
        if fractions is not None and not self.config.fraction_classes:
            raise ValueError("fractions given, but this model has no compartment bottleneck (config.fraction_classes)")
        if placement not in PLACEMENTS:
            raise ValueError(f"placement={placement!r}: accepted values are {', '.join(PLACEMENTS)}")
        device = tokens.device
        batch = tokens.shape[0]
        condition = self.denoiser.encode_sequence(tokens, fractions=fractions).repeat(samples)
        k = len(self.config.fraction_classes)
        if placement != "soft" and k:  # one placed compartment per image: the condition is pooled's last k columns
            placed = place_condition(condition.pooled[:, -k:], placement, generator)
            condition = dataclasses.replace(condition, pooled=torch.cat([condition.pooled[:, :-k], placed], 1))
        spatial = self.denoiser.spatial_conditions(distance_map.to(device), landmarks, landmark_present)
        spatial = spatial.repeat_interleave(samples, dim=0)
        guided = guidance != 1.0
        # The unconditional pass runs on its own: its null condition is one token, where batching it with the
        # conditional rows would pad it to the sequence length (the same prediction, ~25% more CPU per step).
        null = self.denoiser.null_condition(batch * samples, device) if guided else None

        def denoise(x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
            conditional = self.denoiser(x, timesteps, spatial, condition)
            if not guided:
                return conditional
            return classifier_free_guidance(conditional, self.denoiser(x, timesteps, spatial, null), guidance)

        cfg = self.config
        shape = (batch * samples, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
        z, nfe = sample_images(denoise, shape, self.schedule, sampler, steps or LATENT_DEFAULT_STEPS.get(sampler),
                               generator=generator, device=device, progress=progress, noise=latents)
        return self.autoencoder.decode(z).float().clamp(-1.0, 1.0), nfe * (2 if guided else 1)

    # --- the interface of the shared localize / design / explain pipelines (landmark stacks, as CELL-Diff's) -------
    @property
    def landmark_inputs(self) -> tuple[str, ...]:
        """The landmark images the model reads, in order: the nucleus (its distance map is the condition), then
        ``config.landmark_channels``."""
        return (NUCLEUS, *self.config.landmark_channels)

    @property
    def noise_shape(self) -> tuple[int, int, int]:
        """Shape of one image's initial noise: ``(latent_channels, latent_size, latent_size)``."""
        cfg = self.config
        return cfg.latent_channels, cfg.latent_size, cfg.latent_size

    def cell_conditions(self, landmarks: torch.Tensor, landmark_present: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Split landmark stacks ``(B, 1 + n_landmarks, H, W)`` in [-1, 1] ordered as :attr:`landmark_inputs` into
        the nuclear distance maps ``(B, 1, H, W)`` (nuclei segmented in each nucleus image), the other landmarks
        ``(B, n, H, W)`` (None without any) and their presence ``(B, n)`` (from ``landmark_present``
        ``(B, 1 + n)``, None = all present).

        Raises
        ------
        ValueError
            If the stack does not have :attr:`landmark_inputs` channels, or a row lacks its nucleus image.
        """
        from locscope.data.transforms import nuclear_distance_map, segment_nuclei

        n = len(self.landmark_inputs)
        if landmarks.ndim != 4 or landmarks.shape[1] != n:
            raise ValueError(f"landmarks must be (B, {n}, H, W) with channels {', '.join(self.landmark_inputs)}; "
                             f"got {tuple(landmarks.shape)}")
        if landmark_present is not None and not bool(torch.as_tensor(landmark_present)[:, 0].all()):
            raise ValueError("landmark_present: the nucleus image is missing; a latent diffusion model is "
                             "conditioned on its distance map")
        nuclei = ((landmarks[:, 0].float().cpu().numpy() + 1.0) / 2.0).clip(0.0, 1.0)
        distance = torch.stack([torch.from_numpy(nuclear_distance_map(segment_nuclei(image)).astype("float32"))
                                for image in nuclei])[:, None].to(landmarks.device)
        others = landmarks[:, 1:] if n > 1 else None
        present = None if landmark_present is None or n == 1 else torch.as_tensor(landmark_present)[:, 1:]
        return distance, others, present

    @torch.no_grad()
    def sample_in_cells(self, landmarks: torch.Tensor, tokens: torch.Tensor,
                        landmark_present: torch.Tensor | None = None, samples: int = 1, sampler: str = "dpmsolver",
                        steps: int | None = None, guidance: float = LATENT_DEFAULT_GUIDANCE, generator: torch.Generator | None = None,
                        fractions: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                        placement: str = "soft") -> tuple[torch.Tensor, int]:
        """:meth:`sample` from landmark stacks ``(B, 1 + n_landmarks, H, W)`` in [-1, 1] (:attr:`landmark_inputs`
        order, as CELL-Diff's ``sample_protein_images`` takes them); ``noise`` ``(B * samples, *noise_shape)``."""
        distance, others, present = self.cell_conditions(landmarks, landmark_present)
        return self.sample(distance, tokens, others, present, samples=samples, sampler=sampler, steps=steps,
                           guidance=guidance, generator=generator, fractions=fractions, latents=noise,
                           placement=placement)

    @torch.no_grad()
    def fraction_losses(self, image: torch.Tensor, landmarks: torch.Tensor, timesteps: Iterable[int],
                        landmark_present: torch.Tensor | None = None, generator: torch.Generator | None = None
                        ) -> torch.Tensor:
        """The model as a diffusion classifier over its compartment bottleneck: ``image`` ``(1, C, H, W)`` in [-1, 1]
        encoded, noised at each of ``timesteps`` (one noise draw each, shared by all classes) and denoised once
        under each one-hot fraction condition; returns the summed v-prediction errors ``(n_fraction_classes,)``
        (lowest = the compartment the image shows best). ``landmarks`` ``(1, 1 + n, H, W)`` as
        :meth:`sample_in_cells`.

        Raises
        ------
        ValueError
            If the model has no compartment bottleneck.
        """
        classes = self.config.fraction_classes
        if not classes:
            raise ValueError("this model has no compartment bottleneck (config.fraction_classes)")
        n = len(classes)
        device = image.device
        clean = self.autoencoder.encode(image).expand(n, -1, -1, -1)
        distance, others, present = self.cell_conditions(landmarks, landmark_present)
        spatial = self.denoiser.spatial_conditions(distance, others, present).expand(n, -1, -1, -1)
        tokens = self.tokenize(["G" * 30] * n)[0].to(device)
        context = self.denoiser.encode_sequence(tokens, fractions=torch.eye(n, device=device))
        return class_denoising_losses(lambda x, t: self.denoiser(x, t, spatial, context), clean, self.schedule,
                                      timesteps, generator)

    def save_pretrained(self, directory: str | Path, extra: dict | None = None) -> Path:
        """Write the denoiser to ``directory`` and the autoencoder to ``directory/autoencoder`` (atomic files)."""
        self.autoencoder.save_pretrained(Path(directory) / AUTOENCODER_DIR)
        return self.denoiser.save_pretrained(directory, extra=extra)

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> "LatentDiffusion":
        """Load both networks strictly; CheckpointError when a key does not match or the two do not fit."""
        directory = Path(directory)
        autoencoder_config = read_config(directory / AUTOENCODER_DIR, LatentAutoencoderConfig)
        denoiser_config = read_config(directory, LatentDiffusionConfig)
        check_fit(autoencoder_config, denoiser_config, source=str(directory))
        autoencoder = LatentAutoencoder(autoencoder_config)
        load_weights_into(autoencoder, directory / AUTOENCODER_DIR)
        denoiser = LatentDenoiser(denoiser_config)
        load_weights_into(denoiser, directory)
        return cls(autoencoder, denoiser).to(map_location).eval()


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())
