"""Virtual staining: class-guided image-to-image diffusion from brightfield to Cell Painting.

Two networks, read top to bottom:

1. :class:`StainUNet`, the conditional denoiser (Palette with the ADM U-Net of Dhariwal & Nichol 2021). Its input is the
   condition image (``condition_planes`` brightfield planes) concatenated on channels with the noisy target ``y_t``
   (default: the five Cell Painting channels dna, rna, er, agp, mito); it predicts the noise ``eps`` that was added.
   The noise level enters as the continuous ``gamma`` (= alpha-bar, in (0, 1], not a timestep) through a sinusoidal
   embedding and an MLP; the class label's embedding is ADDED to it and reaches every residual block through
   scale-shift GroupNorm (AdaGN, the paper's Eq. 4: ``GroupNorm(h) (1 + k_s) + k_b``). The "null" class (index
   ``len(classes)``) contributes a zero embedding, i.e. the block sees the noise level only: the same network then runs
   unconditioned, for label-free use and classifier-free guidance. The U-Net is diffusers' ``UNet2DModel`` with
   ADM's choices: residual blocks that also do the down/up-sampling (AvgPool 2 / nearest x2, no conv), scale-shift
   norm, GroupNorm(32) with eps 1e-5, attention (heads of ``head_channels``) in the middle block and at the levels in
   ``attention_levels``, dropout in the residual blocks.
2. :class:`StainClassifier`, the noisy-image classifier ``p(k | y_t)`` of classifier guidance: the same encoder half
   (input conv, down blocks, middle block) followed by attention pooling and a linear layer over the classes, trained
   on targets noised at the diffusion's noise levels.

Published layout: :func:`convert_published_state_dict` maps the released ``{epoch}_Network.pth`` (ADM module names
``input_blocks.N.M``, fused legacy-order ``qkv`` convs, six schedule buffers without prefix) onto :class:`StainUNet`
strictly; :func:`published_config` reads the released network arguments (``which_networks[0]``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from locscope.channels import CELL_PAINTING
from locscope.errors import CheckpointError
from locscope.utils.checkpoint import PretrainedMixin

#: The six schedule buffers the released ``Network`` saves beside the denoiser's weights (no prefix).
PUBLISHED_SCHEDULE_BUFFERS: tuple[str, ...] = (
    "gammas", "sqrt_recip_gammas", "sqrt_recipm1_gammas", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2",
)


class _NetworkFields:
    """What both configs share beyond their fields: normalising (JSON lists -> tuples) and checking them, and the
    class count."""

    def __post_init__(self) -> None:
        _check_network_fields(self)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _check_network_fields(config: Any) -> None:
    """Normalise (JSON lists -> tuples) and check the fields both configs share."""
    config.target_channels = tuple(config.target_channels)
    config.classes = tuple(config.classes)
    config.channel_multipliers = tuple(int(m) for m in config.channel_multipliers)
    config.attention_levels = tuple(int(level) for level in config.attention_levels)
    if config.condition_planes < 1:
        raise ValueError(f"condition_planes={config.condition_planes}: must be >= 1")
    if not config.target_channels:
        raise ValueError("target_channels is empty: at least one output channel is needed")
    if len(set(config.classes)) != len(config.classes):
        raise ValueError(f"classes={config.classes}: names must be unique")
    if config.base_channels % 32:
        raise ValueError(f"base_channels={config.base_channels}: must be a multiple of 32 (GroupNorm(32))")
    levels = len(config.channel_multipliers)
    if any(not 0 <= level < levels for level in config.attention_levels):
        raise ValueError(f"attention_levels={config.attention_levels}: levels are 0..{levels - 1}")


@dataclass
class StainConfig(_NetworkFields):
    """Hyper-parameters of :class:`StainUNet` (saved as ``config.json`` beside the weights).

    Parameters
    ----------
    condition_planes : int
        Number of condition (brightfield) planes concatenated before the noisy target (published: 3).
    target_channels : tuple of str
        Names of the predicted channels, in output order (published: the five Cell Painting channels).
    classes : tuple of str
        Class (perturbation or target) names; index ``len(classes)`` is the null class. Empty: an unlabelled model.
    base_channels : int
        Width of the first level (published 64); the noise-level embedding is ``4 * base_channels`` wide.
    channel_multipliers : tuple of int
        Width of each level relative to ``base_channels`` (published 1, 2, 4, 8); every level but the last ends in a
        down-sampling residual block.
    res_blocks : int
        Residual blocks per level (published 2; the up path has one more per level).
    attention_levels : tuple of int
        Levels (0 = full resolution) whose residual blocks are followed by self-attention, besides the middle block
        (published: none; see :func:`published_config` for the released ``attn_res`` quirk).
    head_channels : int
        Channels per attention head (published 32).
    dropout : float
        Dropout inside the residual blocks during training (published 0.2).
    image_size : int
        Training image side in pixels (published 512; informational: any size divisible by
        ``2 ** (len(channel_multipliers) - 1)`` runs).
    num_train_timesteps, beta_start, beta_end : int, float, float
        The linear beta schedule the model was trained with (published T = 2000, 1e-6 .. 0.01).
    pixel_cutoff : float
        Images are z-scored per channel and clipped to +-``pixel_cutoff``; predictions of the clean image are clamped
        to the same range during sampling (published 15).
    """

    condition_planes: int = 3
    target_channels: tuple[str, ...] = CELL_PAINTING
    classes: tuple[str, ...] = ()
    base_channels: int = 64
    channel_multipliers: tuple[int, ...] = (1, 2, 4, 8)
    res_blocks: int = 2
    attention_levels: tuple[int, ...] = ()
    head_channels: int = 32
    dropout: float = 0.2
    image_size: int = 512
    num_train_timesteps: int = 2000
    beta_start: float = 1e-6
    beta_end: float = 0.01
    pixel_cutoff: float = 15.0

    @property
    def null_class(self) -> int:
        """The class index meaning "no label" (zero label embedding)."""
        return len(self.classes)

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this (one halving per level but the last)."""
        return 2 ** (len(self.channel_multipliers) - 1)


def stain_base_config(**overrides: Any) -> StainConfig:
    """The published network (Target2): 62.7M parameters with 118 classes at 512 x 512."""
    return replace(StainConfig(classes=tuple(f"class-{i}" for i in range(118))), **overrides)


def stain_tiny_config(**overrides: Any) -> StainConfig:
    """A CPU-sized denoiser for 64 x 64 simulator crops."""
    return replace(StainConfig(base_channels=32, channel_multipliers=(1, 2, 2), res_blocks=1, attention_levels=(2,),
                               dropout=0.1, image_size=64, num_train_timesteps=1000, beta_start=1e-6, beta_end=0.02),
                   **overrides)


def config_by_name(name: str, **overrides: Any) -> StainConfig:
    """``"stain-base"`` or ``"stain-tiny"`` (ValueError otherwise)."""
    if name == "stain-base":
        return stain_base_config(**overrides)
    if name == "stain-tiny":
        return stain_tiny_config(**overrides)
    raise ValueError(f"config name {name!r}: accepted values are stain-base, stain-tiny")


def _check_labels(class_labels: torch.Tensor | None, batch: int, num_classes: int) -> torch.Tensor | None:
    """Validate ``class_labels`` ``(B,)`` in ``[0, num_classes]`` (``num_classes`` = null); None means all null."""
    if class_labels is None:
        return None
    if class_labels.shape != (batch,):
        raise ValueError(f"class_labels has shape {tuple(class_labels.shape)}, expected ({batch},)")
    if class_labels.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"class_labels must be integer class indices, got {class_labels.dtype}")
    if len(class_labels) and (int(class_labels.min()) < 0 or int(class_labels.max()) > num_classes):
        raise ValueError(f"class_labels must lie in [0, {num_classes}] ({num_classes} = null class), got "
                         f"{class_labels.tolist()}")
    return class_labels


class ClassEmbedding(nn.Module):
    """Class index -> vector added to the noise-level embedding; the null class (``num_classes``) maps to zeros."""

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.label_emb = nn.Embedding(num_classes, dim)  # N(0, 1) init, as the published nn.Embedding

    def forward(self, class_labels: torch.Tensor) -> torch.Tensor:
        known = class_labels < self.num_classes
        vectors = self.label_emb(class_labels.clamp(max=self.num_classes - 1))  # (B, dim)
        return vectors * known[:, None].to(vectors.dtype)


def _block_types(config_levels: int, attention_levels: tuple[int, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    down = tuple("AttnDownBlock2D" if level in attention_levels else "ResnetDownsampleBlock2D"
                 for level in range(config_levels))
    up = tuple("AttnUpBlock2D" if level in attention_levels else "ResnetUpsampleBlock2D"
               for level in reversed(range(config_levels)))
    return down, up


class StainUNet(PretrainedMixin, nn.Module):
    """The conditional denoiser ``eps_theta(cat[x, y_t], gamma, k)``.

    Examples
    --------
    >>> model = StainUNet(stain_tiny_config(classes=("control", "drug")))
    >>> eps = model(torch.zeros(1, 3, 32, 32), torch.zeros(1, 5, 32, 32), torch.tensor([0.5]), torch.tensor([1]))
    >>> tuple(eps.shape)
    (1, 5, 32, 32)
    """

    config_class = StainConfig

    def __init__(self, config: StainConfig) -> None:
        super().__init__()
        from diffusers import UNet2DModel

        self.config = config
        widths = tuple(config.base_channels * m for m in config.channel_multipliers)
        down, up = _block_types(len(widths), config.attention_levels)
        self.unet = UNet2DModel(
            sample_size=config.image_size,
            in_channels=config.condition_planes + len(config.target_channels),
            out_channels=len(config.target_channels),
            down_block_types=down, up_block_types=up, block_out_channels=widths,
            layers_per_block=config.res_blocks,
            downsample_type="resnet", upsample_type="resnet",  # ADM resblock_updown
            dropout=config.dropout, attention_head_dim=config.head_channels,
            norm_num_groups=32, attn_norm_num_groups=32, norm_eps=1e-5,
            resnet_time_scale_shift="scale_shift",  # AdaGN
            flip_sin_to_cos=True, freq_shift=0,  # cat[cos, sin](gamma * 10000^(-k / half)), ADM's gamma_embedding
            class_embed_type="identity" if config.classes else None,
        )
        self.class_embedding = ClassEmbedding(config.num_classes, 4 * widths[0]) if config.classes else None

    def forward(self, condition: torch.Tensor, noisy_target: torch.Tensor, noise_level: torch.Tensor,
                class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the noise.

        Parameters
        ----------
        condition : torch.Tensor
            ``(B, condition_planes, H, W)`` z-scored brightfield planes.
        noisy_target : torch.Tensor
            ``(B, n_targets, H, W)`` noisy target ``y_t = sqrt(gamma) y_0 + sqrt(1 - gamma) eps``.
        noise_level : torch.Tensor
            ``(B,)`` or ``(B, 1)`` gamma (alpha-bar) in (0, 1].
        class_labels : torch.Tensor, optional
            ``(B,)`` class indices; ``config.null_class`` (or None for the whole batch) means unconditioned.

        Returns
        -------
        torch.Tensor
            ``(B, n_targets, H, W)`` predicted noise (not clamped).
        """
        batch = noisy_target.shape[0]
        class_labels = _check_labels(class_labels, batch, self.config.num_classes)
        gamma = noise_level.reshape(batch).to(noisy_target.dtype)
        class_vector = None
        if self.class_embedding is not None:
            if class_labels is None:
                class_labels = torch.full((batch,), self.config.null_class, dtype=torch.long, device=gamma.device)
            class_vector = self.class_embedding(class_labels)
        elif class_labels is not None and bool((class_labels != self.config.null_class).any()):
            raise ValueError("this model has no classes (config.classes is empty): class_labels must be the null class")
        x = torch.cat([condition, noisy_target], dim=1)  # (B, condition_planes + n_targets, H, W)
        return self.unet(x, gamma, class_labels=class_vector).sample

    def embedding(self, noise_level: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """The vector every residual block is modulated by: ``(B, 4 * base_channels)`` (noise level + class)."""
        gamma = noise_level.reshape(-1)
        emb = self.unet.time_embedding(self.unet.time_proj(gamma).to(gamma.dtype))
        if self.class_embedding is not None and class_labels is not None:
            emb = emb + self.class_embedding(_check_labels(class_labels, len(gamma), self.config.num_classes))
        return emb



# ---------------------------------------------------------------------------------------------------------------------
# The noisy classifier


@dataclass
class StainClassifierConfig(_NetworkFields):
    """Hyper-parameters of :class:`StainClassifier` (saved as ``config.json`` beside the weights).

    ``use_condition`` feeds the brightfield planes beside ``y_t`` (as the published classifier's 8 input channels); the
    guidance gradient is taken with respect to ``y_t`` only. Other fields as in :class:`StainConfig`.
    """

    condition_planes: int = 3
    target_channels: tuple[str, ...] = CELL_PAINTING
    classes: tuple[str, ...] = ("control",)
    base_channels: int = 64
    channel_multipliers: tuple[int, ...] = (1, 2, 4, 8)
    res_blocks: int = 2
    attention_levels: tuple[int, ...] = ()
    head_channels: int = 32
    dropout: float = 0.0
    use_condition: bool = True
    image_size: int = 512
    num_train_timesteps: int = 2000
    beta_start: float = 1e-6
    beta_end: float = 0.01
    pixel_cutoff: float = 15.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.classes) < 2:
            raise ValueError(f"classes={self.classes}: a classifier needs at least two classes")


def classifier_config_for(denoiser: StainConfig, **overrides: Any) -> StainClassifierConfig:
    """A classifier matching ``denoiser`` (channels, classes, widths, schedule)."""
    shared = {name: getattr(denoiser, name) for name in (
        "condition_planes", "target_channels", "classes", "base_channels", "channel_multipliers", "res_blocks",
        "attention_levels", "head_channels", "image_size", "num_train_timesteps", "beta_start", "beta_end",
        "pixel_cutoff")}
    return StainClassifierConfig(**{**shared, **overrides})


class AttentionPool(nn.Module):
    """Pool ``(B, C, H, W)`` features to ``(B, C)``: the mean token attends over all positions (ADM's attention
    pooling, without its fixed-size position table so that any image size works)."""

    def __init__(self, channels: int, head_channels: int) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(channels, max(1, channels // head_channels), batch_first=True)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        tokens = h.flatten(2).transpose(1, 2)  # (B, HW, C)
        query = tokens.mean(dim=1, keepdim=True)  # (B, 1, C)
        pooled, _ = self.attention(query, torch.cat([query, tokens], 1), torch.cat([query, tokens], 1),
                                   need_weights=False)
        return pooled[:, 0]


class StainClassifier(PretrainedMixin, nn.Module):
    """``p(k | y_t)``: the U-Net's encoder half + attention pooling, conditioned on the noise level gamma."""

    config_class = StainClassifierConfig

    def __init__(self, config: StainClassifierConfig) -> None:
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps
        from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, get_down_block

        self.config = config
        widths = tuple(config.base_channels * m for m in config.channel_multipliers)
        in_channels = len(config.target_channels) + (config.condition_planes if config.use_condition else 0)
        emb_dim = 4 * widths[0]
        self.conv_in = nn.Conv2d(in_channels, widths[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(widths[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(widths[0], emb_dim)
        down_types, _ = _block_types(len(widths), config.attention_levels)
        self.down_blocks = nn.ModuleList()
        previous = widths[0]
        for level, (kind, width) in enumerate(zip(down_types, widths)):
            self.down_blocks.append(get_down_block(
                kind, num_layers=config.res_blocks, in_channels=previous, out_channels=width, temb_channels=emb_dim,
                add_downsample=level != len(widths) - 1, resnet_eps=1e-5, resnet_act_fn="silu", resnet_groups=32,
                attention_head_dim=config.head_channels, downsample_padding=1, resnet_time_scale_shift="scale_shift",
                downsample_type="resnet", dropout=config.dropout))
            previous = width
        self.mid_block = UNetMidBlock2D(
            in_channels=widths[-1], temb_channels=emb_dim, dropout=config.dropout, resnet_eps=1e-5,
            resnet_act_fn="silu", resnet_time_scale_shift="scale_shift", attention_head_dim=config.head_channels,
            resnet_groups=32, attn_groups=32)
        self.norm_out = nn.GroupNorm(32, widths[-1], eps=1e-5)
        self.pool = AttentionPool(widths[-1], config.head_channels)
        self.head = nn.Linear(widths[-1], config.num_classes)

    def forward(self, condition: torch.Tensor | None, noisy_target: torch.Tensor,
                noise_level: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, n_classes)`` of ``noisy_target`` ``(B, n_targets, H, W)`` at gamma ``noise_level``
        ``(B,)``; ``condition`` ``(B, condition_planes, H, W)`` is required when ``config.use_condition``."""
        batch = noisy_target.shape[0]
        if self.config.use_condition:
            if condition is None:
                raise ValueError("this classifier reads the condition image (config.use_condition): pass condition")
            x = torch.cat([condition, noisy_target], dim=1)
        else:
            x = noisy_target
        gamma = noise_level.reshape(batch).to(noisy_target.dtype)
        emb = self.time_embedding(self.time_proj(gamma).to(x.dtype))
        h = self.conv_in(x)
        for block in self.down_blocks:
            h, _ = block(hidden_states=h, temb=emb)
        h = self.mid_block(h, emb)
        return self.head(self.pool(F.silu(self.norm_out(h))))

    def log_prob(self, condition: torch.Tensor | None, noisy_target: torch.Tensor, noise_level: torch.Tensor,
                 class_labels: torch.Tensor) -> torch.Tensor:
        """``log p(k | y_t)`` ``(B,)`` of the classes ``class_labels`` ``(B,)``."""
        logits = self(condition, noisy_target, noise_level)
        logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
        return logits.log_softmax(-1).gather(1, class_labels.reshape(-1, 1).long())[:, 0]

    def gradient(self, condition: torch.Tensor | None, noisy_target: torch.Tensor, noise_level: torch.Tensor,
                 class_labels: torch.Tensor) -> torch.Tensor:
        """``grad_{y_t} log p(k | y_t)``, shape of ``noisy_target``; rows are independent (batch sum)."""
        with torch.enable_grad():
            y = noisy_target.detach().requires_grad_(True)
            total = self.log_prob(condition, y, noise_level, class_labels).sum()
            (grad,) = torch.autograd.grad(total, y)
        return grad



# ---------------------------------------------------------------------------------------------------------------------
# The published layout


def published_config(network: Mapping[str, Any], target_channels: tuple[str, ...] = CELL_PAINTING,
                     classes: tuple[str, ...] | None = None, phase: str = "test") -> StainConfig:
    """A :class:`StainConfig` from the released network arguments.

    Parameters
    ----------
    network : mapping
        Either the whole released JSON config (``model.which_networks[0]`` is used) or that network entry itself
        (``{"name": [...], "args": {"unet": {...}, "beta_schedule": {...}}}``) or its ``args``.
    target_channels : tuple of str
        Names of the ``out_channel`` outputs (the released order C01..C05 is taken as dna, rna, er, agp, mito).
    classes : tuple of str, optional
        Class names (default ``class-0`` .. ``class-{num_classes - 1}``).
    phase : {'test', 'train'}
        Which ``beta_schedule`` to record (published sampling rebuilds the *test* schedule).

    Notes
    -----
    The released ``attn_res`` holds down-sampling factors, not pixel sizes: attention is added at the levels whose
    factor ``2 ** level`` is listed, so Target2's ``[16]`` with four levels (factors 1..8) gives attention only in the
    middle block.
    """
    if "model" in network:
        network = network["model"]["which_networks"][0]
    args = network.get("args", network)
    try:
        unet = args["unet"]
        schedule = args["beta_schedule"][phase]
    except KeyError as err:
        raise ValueError(f"network config lacks {err.args[0]!r} (expected the released which_networks[0] layout)") from None
    if phase not in ("test", "train"):
        raise ValueError(f"phase={phase!r}: accepted values are test, train")
    if schedule.get("schedule", "linear") != "linear":
        raise ValueError(f"beta_schedule {schedule.get('schedule')!r}: only the released 'linear' schedule is supported")
    mults = tuple(int(m) for m in unet["channel_mults"])
    num_classes = int(unet.get("num_classes") or 0)
    if classes is None:
        classes = tuple(f"class-{i}" for i in range(num_classes))
    if len(classes) != num_classes:
        raise ValueError(f"classes has {len(classes)} names but the network has num_classes={num_classes}")
    if int(unet["out_channel"]) != len(target_channels):
        raise ValueError(f"target_channels has {len(target_channels)} names but out_channel={unet['out_channel']}")
    attn_res = {int(r) for r in unet.get("attn_res", ())}
    return StainConfig(
        condition_planes=int(unet["in_channel"]) - int(unet["out_channel"]),
        target_channels=tuple(target_channels), classes=tuple(classes),
        base_channels=int(unet["inner_channel"]), channel_multipliers=mults, res_blocks=int(unet["res_blocks"]),
        attention_levels=tuple(level for level in range(len(mults)) if 2 ** level in attn_res),
        head_channels=int(unet.get("num_head_channels", 32)), dropout=float(unet.get("dropout", 0.0)),
        image_size=int(unet.get("image_size", 512)), num_train_timesteps=int(schedule["n_timestep"]),
        beta_start=float(schedule["linear_start"]), beta_end=float(schedule["linear_end"]),
    )


def _published_module_names(config: StainConfig) -> dict[str, tuple[str, str]]:
    """Released module prefix -> (locscope module prefix, kind) with kind in {resnet, attention, plain}."""
    names: dict[str, tuple[str, str]] = {
        "cond_embed.0": ("unet.time_embedding.linear_1", "plain"),
        "cond_embed.2": ("unet.time_embedding.linear_2", "plain"),
        "label_emb": ("class_embedding.label_emb", "plain"),
        "input_blocks.0.0": ("unet.conv_in", "plain"),
        "middle_block.0": ("unet.mid_block.resnets.0", "resnet"),
        "middle_block.1": ("unet.mid_block.attentions.0", "attention"),
        "middle_block.2": ("unet.mid_block.resnets.1", "resnet"),
        "out.0": ("unet.conv_norm_out", "plain"),
        "out.2": ("unet.conv_out", "plain"),
    }
    levels = len(config.channel_multipliers)
    index = 1
    for level in range(levels):  # input_blocks: res (+ attention) per block, then a down-sampling res block
        for i in range(config.res_blocks):
            names[f"input_blocks.{index}.0"] = (f"unet.down_blocks.{level}.resnets.{i}", "resnet")
            if level in config.attention_levels:
                names[f"input_blocks.{index}.1"] = (f"unet.down_blocks.{level}.attentions.{i}", "attention")
            index += 1
        if level != levels - 1:
            names[f"input_blocks.{index}.0"] = (f"unet.down_blocks.{level}.downsamplers.0", "resnet")
            index += 1
    index = 0
    for up, level in enumerate(reversed(range(levels))):  # output_blocks: res (+ attention) (+ up-sampling res block)
        for i in range(config.res_blocks + 1):
            names[f"output_blocks.{index}.0"] = (f"unet.up_blocks.{up}.resnets.{i}", "resnet")
            position = 1
            if level in config.attention_levels:
                names[f"output_blocks.{index}.1"] = (f"unet.up_blocks.{up}.attentions.{i}", "attention")
                position = 2
            if i == config.res_blocks and level != 0:
                names[f"output_blocks.{index}.{position}"] = (f"unet.up_blocks.{up}.upsamplers.0", "resnet")
            index += 1
    return names


_RESNET_PARTS = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
                 "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}


def convert_published_state_dict(state_dict: Mapping[str, torch.Tensor], config: StainConfig,
                                 source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Map a released ``{epoch}_Network.pth`` state dict onto :class:`StainUNet` names, strictly.

    Every key must be one of the six schedule buffers (which the released test-phase loader ignores too: the
    schedule is rebuilt from the config) or a ``denoise_fn.*`` weight this function knows where to put; anything else
    raises :class:`CheckpointError` naming the keys (the released loader silently skipped them with ``strict=False``).
    The legacy-order fused attention ``qkv`` (per head: q | k | v rows) is split into ``to_q`` / ``to_k`` / ``to_v``.
    Shapes are checked when the result is loaded with :func:`locscope.utils.checkpoint.load_state_dict_strict`.
    """
    modules = _published_module_names(config)
    converted: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        if key in PUBLISHED_SCHEDULE_BUFFERS:
            continue
        if not key.startswith("denoise_fn."):
            unknown.append(key)
            continue
        parts = key[len("denoise_fn."):].split(".")
        # the longest module prefix we know, then the block-internal layer name (e.g. "in_layers.0") and the parameter
        cut = next((n for n in range(len(parts) - 1, 0, -1) if ".".join(parts[:n]) in modules), None)
        if cut is None:
            unknown.append(key)
            continue
        module, part, param = ".".join(parts[:cut]), ".".join(parts[cut:-1]), parts[-1]
        target, kind = modules[module]
        if kind == "plain" and not part:
            converted[f"{target}.{param}"] = value
        elif kind == "resnet" and part in _RESNET_PARTS:
            converted[f"{target}.{_RESNET_PARTS[part]}.{param}"] = value
        elif kind == "attention" and part == "norm":
            converted[f"{target}.group_norm.{param}"] = value
        elif kind == "attention" and part == "proj_out":
            converted[f"{target}.to_out.0.{param}"] = value.reshape(value.shape[0], -1) if param == "weight" else value
        elif kind == "attention" and part == "qkv":
            channels = value.shape[0] // 3
            heads = channels // config.head_channels
            split = value.reshape(heads, 3, config.head_channels, -1)  # (heads, q|k|v, head_channels, C or 1)
            for i, proj in enumerate(("to_q", "to_k", "to_v")):
                tensor = split[:, i].reshape(channels, -1)
                converted[f"{target}.{proj}.{param}"] = tensor if param == "weight" else tensor.reshape(channels)
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{source}: keys not in the released network layout: {', '.join(sorted(unknown))}")
    return converted


def load_published(state_dict: Mapping[str, torch.Tensor], config: StainConfig,
                   source: str = "checkpoint") -> StainUNet:
    """Build :class:`StainUNet` from ``config`` and load a released state dict into it strictly (eval mode)."""
    from locscope.utils.checkpoint import load_state_dict_strict

    model = StainUNet(config)
    load_state_dict_strict(model, convert_published_state_dict(state_dict, config, source), source=source)
    return model.eval()


def load_stain(path: str | Path, device: str | torch.device = "cpu") -> StainUNet:
    """The hub's loader: a locscope model folder (``config.json`` + ``model.safetensors``) or a released
    ``{epoch}_Network.pth`` with its network config beside it (``network_config.json``, or the released ``config.json``
    holding ``model.which_networks``), or the folder holding both, loaded strictly."""
    import json

    from locscope.errors import InputError
    from locscope.utils.checkpoint import read_torch_weights

    path = Path(path)
    if path.is_dir():
        networks = sorted(path.glob("*_Network.pth"))
        if not networks and not (path / "network_config.json").is_file():
            return StainUNet.from_pretrained(path, device=device)
        if len(networks) != 1:
            found = ", ".join(p.name for p in networks)
            raise InputError(f"{path / '<epoch>_Network.pth'}: " + (
                f"{len(networks)} released network files ({found}); give the one to use as the model path"
                if networks else "file not found (the released network checkpoint, e.g. 1_Network.pth, beside "
                                 "network_config.json)"))
        path = networks[0]
    for name in ("network_config.json", "config.json"):
        config_path = path.parent / name
        if config_path.is_file():
            break
    else:
        raise InputError(f"{path}: a released network file needs its config beside it (network_config.json with the "
                         "which_networks[0] entry, or the released config.json)")
    try:
        config = published_config(json.loads(config_path.read_text()))
    except (json.JSONDecodeError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"{config_path}: not a released guided-I2I network config ({err})") from None
    return load_published(read_torch_weights(path), config, source=str(path)).to(device)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "StainConfig", "StainUNet", "StainClassifierConfig", "StainClassifier", "stain_base_config", "stain_tiny_config",
    "config_by_name", "classifier_config_for", "published_config", "convert_published_state_dict", "load_published",
    "PUBLISHED_SCHEDULE_BUFFERS", "count_parameters", "load_stain",
]
