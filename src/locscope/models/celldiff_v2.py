"""CELL-Diff v2 as published (latent diffusion): the denoising network, its ESM2 encoder and a strict loader.

The released CELL-Diff HPA / OpenCell weights belong to the authors' *second* release, which moved from pixel space
to the latent space of one AutoencoderKL per channel (256 x 256 -> 64 x 64 x 4). This file rebuilds that network
so that its checkpoints (``torch.save`` of the model's state dict: ``cell_img_placeholder`` then ``net.*``) load
key for key and give the published outputs. locscope's own CELL-Diff lives in ``celldiff.py``; this file only
speaks the published layout.

Network (``CellDiffV2Net``), for a latent of ``sample_size`` x ``sample_size``:

1. ``img_conv_in``: the noisy protein latent and the landmark latents, stacked on channels, -> ``block_out_channels[0]``.
2. Time: sinusoidal ``Timesteps(block_out_channels[0])`` -> MLP to ``4 * block_out_channels[0]``; this vector also
   conditions the adaLN-Zero blocks, so it must equal ``hidden_size``.
3. Sequence: a frozen ESM2 (fair-esm layout, token dropout on) -> ``scale_layer`` -> ``seq_proj_in``, plus a fixed 1-D
   sin-cos position table of ``max_protein_sequence_len + 2`` rows and token-type embedding 1.
4. Down: diffusers ``CrossAttnDownBlock2D`` x 3 (cross-attention to the sequence tokens) and ``DownBlock2D``.
5. Bottleneck: ``PatchEmbed`` (patch ``dit_patch_size``, plus diffusers' fixed 2-D sin-cos table) + token type 0,
   concatenated with the sequence tokens, ``num_hidden_layers`` adaLN-Zero transformer blocks (DiT, Peebles & Xie
   2023) conditioned on the time embedding; the image tokens go through DiT's final layer and are unpatchified, the
   sequence tokens through ``seq_proj_out`` to logits over the 32-token alphabet.
6. Up: ``UpBlock2D`` + ``CrossAttnUpBlock2D`` x 3 with U-Net skips, GroupNorm, SiLU, ``img_conv_out``.

Published quirks kept on purpose (they change numbers): the cross-attention blocks get ``num_attention_heads`` as the
number of heads (the published code passes the same number as ``attention_head_dim`` too, which diffusers ignores
for these blocks, so a 32-channel block has 8 heads of dimension 4); the CELL-Diff alphabet calls index 31 ``<mask>``
while ESM2 calls it ``<null_1>`` (ESM2's ``<mask>`` is 32), so masked residues reach ESM2 as ``<null_1>`` and its
token dropout only rescales embeddings by 0.88.

Example
-------
>>> from locscope.models.celldiff_v2 import load_published_celldiff, CellDiffV2Tokenizer
>>> model = load_published_celldiff("cell_diff.bin", "config.json")          # doctest: +SKIP
>>> tokens = CellDiffV2Tokenizer().batch_encode(["MKTAYIAKQR"])              # doctest: +SKIP
>>> out = model.net(protein_latent, cell_latent, tokens, model_time)        # doctest: +SKIP
>>> out.image.shape, out.sequence_logits.shape                              # doctest: +SKIP
(torch.Size([1, 4, 64, 64]), torch.Size([1, 12, 32]))
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from locscope.diffusion.published_ddim import published_alphas_cumprod  # noqa: F401  (re-exported)
from locscope.encoders.esm_layout import (
    ROTARY_KEY,
    fair_esm_to_transformers,
    rotary_inv_freq,
    transformers_to_fair_esm,
)
from locscope.errors import CheckpointError, InputError
from locscope.utils.checkpoint import check_state_dict, read_torch_weights
from locscope.utils.device import resolve_device

# ----------------------------------------------------------------------------------------------------------------------
# Alphabet and tokenizer
# ----------------------------------------------------------------------------------------------------------------------

#: The published 32-token alphabet: fair-esm's ESM2 alphabet with index 31 renamed ``<mask>`` (ESM2: ``<null_1>``).
ALPHABET: tuple[str, ...] = ("<cls>", "<pad>", "<eos>", "<unk>", *"LAGVSERTIDPKQNFYMHWCXBUZO.-", "<mask>")
CLS_ID, PAD_ID, EOS_ID, UNK_ID, MASK_ID = 0, 1, 2, 3, 31
#: ESM2's own ``<mask>`` index (one past the CELL-Diff alphabet): the token its token dropout zeroes.
ESM2_MASK_ID = 32
#: The 20 standard residues occupy ids 4..23; the published sequence sampler draws only from these.
STANDARD_RESIDUE_IDS = range(4, 24)


class CellDiffV2Tokenizer:
    """Encode protein sequences with the published 32-token alphabet (``<cls>`` seq ``<eos>`` ``<pad>``...).

    Parameters
    ----------
    max_residues : int, optional
        Longest sequence accepted (the published ``max_protein_sequence_len``; the position table has this many
        rows + 2 for ``<cls>``/``<eos>``). ``None`` accepts any length.

    Examples
    --------
    >>> tok = CellDiffV2Tokenizer()
    >>> tok.encode("MK_")
    Traceback (most recent call last):
    ...
    locscope.errors.InputError: sequence position 3: invalid residue '_' (accepted: LAGVSERTIDPKQNFYMHWCXBUZO.- and '#' for <mask>)
    >>> tok.encode("MK#")
    [0, 20, 15, 31, 2]
    >>> tok.decode([0, 20, 15, 31, 2, 1])
    'MK#'
    """

    mask_char = "#"

    def __init__(self, max_residues: int | None = None):
        self.max_residues = max_residues
        self.token_to_id = {tok: i for i, tok in enumerate(ALPHABET)}

    def encode(self, sequence: str, record: str = "sequence") -> list[int]:
        """Token ids ``[<cls>, residues..., <eos>]``; ``#`` (or ``<mask>``) marks a residue to infill.

        Raises
        ------
        InputError
            Naming ``record`` and the 1-based position of an invalid residue, or the length when it is too long.
        """
        text = sequence.strip().upper().replace("<MASK>", self.mask_char)
        if self.max_residues is not None and len(text) > self.max_residues:
            raise InputError(f"{record}: {len(text)} residues, longer than the model's maximum of {self.max_residues}")
        ids = [CLS_ID]
        for position, char in enumerate(text, start=1):
            if char == self.mask_char:
                ids.append(MASK_ID)
            elif char in self.token_to_id and len(char) == 1:
                ids.append(self.token_to_id[char])
            else:
                raise InputError(
                    f"{record} position {position}: invalid residue {char!r} "
                    f"(accepted: {''.join(ALPHABET[4:31])} and '{self.mask_char}' for <mask>)"
                )
        ids.append(EOS_ID)
        return ids

    def batch_encode(self, sequences: Sequence[str], records: Sequence[str] | None = None) -> torch.Tensor:
        """Encode and right-pad with ``<pad>`` to the longest; returns a ``(batch, max_len + 2)`` int64 tensor."""
        names = records if records is not None else [f"sequence {i + 1}" for i in range(len(sequences))]
        encoded = [self.encode(seq, name) for seq, name in zip(sequences, names)]
        length = max(len(ids) for ids in encoded)
        return torch.tensor([ids + [PAD_ID] * (length - len(ids)) for ids in encoded], dtype=torch.long)

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Residues between ``<cls>`` and ``<eos>`` as a string (``<mask>`` -> ``#``, ``<unk>`` -> ``X``)."""
        out = []
        for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids):
            if i == EOS_ID:
                break
            if i in (CLS_ID, PAD_ID):
                continue
            out.append(self.mask_char if i == MASK_ID else "X" if i == UNK_ID else ALPHABET[i])
        return "".join(out)


# ----------------------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class CellDiffV2Config:
    """The published config fields that shape the network (defaults: the released HPA model's documented values).

    Parameters
    ----------
    block_out_channels : tuple of int
        U-Net widths per resolution; three cross-attention down blocks and one plain one for 4 entries.
    layers_per_block : int
        ResNet (+ attention) layers per down block; up blocks have one more.
    sample_size : int
        Latent height = width (64 for 256 x 256 images through the published VAE).
    hidden_size : int
        Width of the sequence tokens and adaLN-Zero blocks; must equal ``4 * block_out_channels[0]`` (the
        time-embedding width, which conditions those blocks).
    num_hidden_layers : int
        adaLN-Zero transformer blocks at the bottleneck.
    mid_num_attention_heads : int
        Heads of those blocks.
    num_attention_heads : int
        Heads of every diffusers cross-attention block (head dim = channels / heads).
    cell_image : {'nucl', 'nucl,er', 'nucl,mt', 'nucl,er,mt'}
        Landmark latents stacked after the protein latent.
    latent_channels : int
        Channels of one image's latent.
    dit_patch_size : int
        Patch size of the bottleneck patchify.
    vocab_size : int
        Size of the sequence head's output (the 32-token alphabet).
    max_protein_sequence_len : int
        Longest sequence; the position table has this + 2 rows.
    mlp_ratio : float
        adaLN-Zero MLP width / hidden size.
    cross_attn : bool
        ``False`` builds plain (attention-free) U-Net blocks, as the published option does.
    output_rescale : bool
        Learned mix of the noisy input and the network output (``mlp_w``), the first release's trick.
    diffusion_pred_type : {'noise', 'xstart'}
        What the image output predicts (only used by ``output_rescale``).
    num_timesteps, ddpm_schedule
        The diffusion's T and schedule (``squaredcos_cap_v2`` or ``linear``); see :func:`published_alphas_cumprod`.
    esm_embed_dim, esm_num_layers, esm_num_heads
        The frozen ESM2 (the released weights use ESM2-650M: 1280, 33, 20). Not in the published config.json
        (the published code picks the ESM2 by name); :func:`load_published_celldiff` reads them off the checkpoint.
    """

    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    sample_size: int = 64
    hidden_size: int = 1280
    num_hidden_layers: int = 8
    mid_num_attention_heads: int = 16
    num_attention_heads: int = 8
    cell_image: str = "nucl,er,mt"
    latent_channels: int = 4
    dit_patch_size: int = 1
    vocab_size: int = 32
    max_protein_sequence_len: int = 2048
    mlp_ratio: float = 4.0
    cross_attn: bool = True
    output_rescale: bool = False
    diffusion_pred_type: str = "noise"
    num_timesteps: int = 200
    ddpm_schedule: str = "squaredcos_cap_v2"
    esm_embed_dim: int = 1280
    esm_num_layers: int = 33
    esm_num_heads: int = 20

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        if self.cell_image not in CELL_IMAGE_CHANNELS:
            raise ValueError(f"cell_image={self.cell_image!r}: accepted {sorted(CELL_IMAGE_CHANNELS)}")
        if self.hidden_size != 4 * self.block_out_channels[0]:
            raise ValueError(
                f"hidden_size={self.hidden_size}: must equal 4 * block_out_channels[0] = "
                f"{4 * self.block_out_channels[0]} (the time embedding conditions the adaLN-Zero blocks)"
            )
        if self.diffusion_pred_type not in ("noise", "xstart"):
            raise ValueError(f"diffusion_pred_type={self.diffusion_pred_type!r}: accepted 'noise', 'xstart'")
        bottleneck = self.sample_size // 2 ** (len(self.block_out_channels) - 1)
        if bottleneck < 1 or bottleneck % self.dit_patch_size:
            raise ValueError(
                f"dit_patch_size={self.dit_patch_size}: must divide the {bottleneck}x{bottleneck} bottleneck "
                f"(sample_size={self.sample_size}, {len(self.block_out_channels)} resolutions)"
            )

    @property
    def landmark_names(self) -> tuple[str, ...]:
        """Canonical channel names of the landmark latents, in stacking order."""
        return CELL_IMAGE_CHANNELS[self.cell_image]

    @classmethod
    def from_published(cls, published: Mapping | str | Path, **overrides) -> "CellDiffV2Config":
        """Build from a published ``config.json`` (path or dict); fields that do not shape the network are ignored.

        ``block_out_channels`` may be a list or the published comma-separated string. ``overrides`` (e.g. the ESM2
        size read off a checkpoint) win over the file.
        """
        if isinstance(published, (str, Path)):
            published = _read_json(Path(published))
        encoder = published.get("esm_embedding", "esm2")
        if encoder != "esm2":
            raise InputError(f"config esm_embedding={encoder!r}: only 'esm2' checkpoints are supported")
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in dict(published).items() if k in names}
        if isinstance(values.get("block_out_channels"), str):
            values["block_out_channels"] = [int(c) for c in values["block_out_channels"].split(",")]
        values.update(overrides)
        return cls(**values)


def _read_json(path: Path) -> dict:
    """A JSON object from ``path``; InputError naming the file (and line) when missing or invalid."""
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a JSON object")
    return obj


CELL_IMAGE_CHANNELS: dict[str, tuple[str, ...]] = {
    "nucl": ("nucleus",),
    "nucl,er": ("nucleus", "er"),
    "nucl,mt": ("nucleus", "microtubules"),
    "nucl,er,mt": ("nucleus", "er", "microtubules"),
}


# ----------------------------------------------------------------------------------------------------------------------
# ESM2 (transformers' EsmModel) under fair-esm parameter names (frozen sequence encoder)
# ----------------------------------------------------------------------------------------------------------------------

class FairEsm2(nn.Module):
    """ESM2 (Lin et al. 2023) computed by transformers' ``EsmForMaskedLM``, with the fair-esm state-dict layout.

    The released checkpoints store the frozen ESM2 with fair-esm names (``embed_tokens``, ``layers.N.self_attn.q_proj``,
    one rotary ``inv_freq`` per layer, ``lm_head``); ``state_dict()`` speaks those names and ``load_state_dict`` accepts
    them (:mod:`locscope.encoders.esm_layout` maps them), so strict loading and its messages stay in the published
    layout. Token dropout is on, as in every released ESM2: embeddings of ESM2's ``<mask>`` (id 32) are zeroed and all
    embeddings rescaled by ``(1 - 0.15 * 0.8) / (1 - observed mask ratio)``.
    """

    def __init__(self, embed_dim: int, num_layers: int, num_heads: int, vocab: int = 33):
        from transformers import EsmConfig, EsmForMaskedLM

        super().__init__()
        self.num_layers = num_layers
        config = EsmConfig(
            vocab_size=vocab, hidden_size=embed_dim, num_hidden_layers=num_layers, num_attention_heads=num_heads,
            intermediate_size=4 * embed_dim, position_embedding_type="rotary", token_dropout=True,
            mask_token_id=ESM2_MASK_ID, pad_token_id=PAD_ID, emb_layer_norm_before=False, layer_norm_eps=1e-5,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        )
        self.lm = EsmForMaskedLM(config)  # the masked-LM and contact heads are unused but part of the checkpoint
        self._register_state_dict_hook(_esm_state_dict_to_fair)
        self._register_load_state_dict_pre_hook(_esm_state_dict_from_fair)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(batch, length)`` int64 ids -> ``(batch, length, embed_dim)`` final layer-normed representations."""
        return self.lm.esm(input_ids=tokens, attention_mask=tokens.ne(PAD_ID).long()).last_hidden_state


def _esm_state_dict_to_fair(module: FairEsm2, state_dict: dict, prefix: str, local_metadata) -> None:
    """``state_dict`` hook: transformers keys -> fair-esm keys (the one rotary table copied to every layer)."""
    inner = prefix + "lm."
    for key in [k for k in state_dict if k.startswith(inner)]:
        value = state_dict.pop(key)
        name = key[len(inner):]
        if name == ROTARY_KEY:
            state_dict.update({f"{prefix}layers.{i}.self_attn.rot_emb.inv_freq": value
                               for i in range(module.num_layers)})
        elif transformers_to_fair_esm(name) is not None:
            state_dict[prefix + transformers_to_fair_esm(name)] = value


def _esm_state_dict_from_fair(state_dict: dict, prefix: str, *args) -> None:
    """``load_state_dict`` pre-hook: fair-esm keys -> transformers keys (the first layer's rotary table becomes the
    model's; unknown keys are left for strict loading to report)."""
    rotary = None
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(prefix + "lm.")]:
        try:
            name = fair_esm_to_transformers(key[len(prefix):])
        except KeyError:
            continue
        value = state_dict.pop(key)
        if name is None:
            rotary = value if rotary is None else rotary
        else:
            state_dict[prefix + "lm." + name] = value
    if rotary is not None:
        state_dict[prefix + "lm." + ROTARY_KEY] = rotary


class EsmSequenceEmbedding(nn.Module):
    """The published ``ESMEmbed``: frozen ESM2 representations -> ``scale_layer`` to the network width."""

    def __init__(self, config: CellDiffV2Config):
        super().__init__()
        self.model = FairEsm2(config.esm_embed_dim, config.esm_num_layers, config.esm_num_heads)
        self.model.requires_grad_(False)
        # The published code replaces the projection by an identity when the widths agree (e.g. 650M + 1280).
        same = config.esm_embed_dim == config.hidden_size
        self.scale_layer = nn.Identity() if same else nn.Linear(config.esm_embed_dim, config.hidden_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(batch, length)`` ids -> ``(batch, length, hidden_size)``; ESM2 runs without gradients (frozen)."""
        with torch.no_grad():
            representation = self.model(tokens)
        return self.scale_layer(representation)


# ----------------------------------------------------------------------------------------------------------------------
# Bottleneck transformer (DiT adaLN-Zero)
# ----------------------------------------------------------------------------------------------------------------------


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class DitAttention(nn.Module):
    """Self-attention with a fused ``qkv`` projection (timm ``Attention`` layout)."""

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.num_heads, width // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, T, head_dim)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, length, width))


class DitMlp(nn.Module):
    """``fc1`` -> tanh-approximated GELU -> ``fc2`` (timm ``Mlp`` layout)."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class AdaLNZeroBlock(nn.Module):
    """DiT block: x += gate * f(LN(x) * (1 + scale) + shift) for attention and MLP; shift/scale/gate from c."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = DitAttention(width, num_heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = DitMlp(width, int(width * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``x`` (B, T, width) tokens, ``c`` (B, width) condition -> (B, T, width)."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(_modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp.unsqueeze(1) * self.mlp(_modulate(self.norm2(x), shift_mlp, scale_mlp))


class DitFinalLayer(nn.Module):
    """DiT's final layer: adaLN (shift, scale) then a linear map to ``patch * patch * channels`` per token."""

    def __init__(self, width: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(width, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(_modulate(self.norm_final(x), shift, scale))


def unpatchify(tokens: torch.Tensor, channels: int, patch_size: int, height: int, width: int) -> torch.Tensor:
    """``(B, h * w, p * p * C)`` tokens (row-major patches) -> ``(B, C, h * p, w * p)`` feature map."""
    batch = tokens.shape[0]
    rows, cols = height // patch_size, width // patch_size
    x = tokens.reshape(batch, rows, cols, patch_size, patch_size, channels)
    x = torch.einsum("nhwpqc->nchpwq", x)  # (B, C, h, p, w, p)
    return x.reshape(batch, channels, rows * patch_size, cols * patch_size)


def sincos_1d_table(width: int, rows: int) -> np.ndarray:
    """Fixed 1-D sin-cos position table (MAE / DiT convention): ``(rows, width)``, sines in the first half."""
    omega = 1.0 / 10000 ** (np.arange(width // 2, dtype=np.float64) / (width / 2.0))
    angles = np.outer(np.arange(rows, dtype=np.float64), omega)  # (rows, width / 2)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


# ----------------------------------------------------------------------------------------------------------------------
# The denoising network
# ----------------------------------------------------------------------------------------------------------------------


class CellDiffV2Output(NamedTuple):
    """Outputs of :class:`CellDiffV2Net` (a tuple, so ``image, logits = net(...)`` works as in the published code)."""

    image: torch.Tensor  #: (batch, latent_channels, H, W): epsilon (or x0) prediction for the protein latent
    sequence_logits: torch.Tensor  #: (batch, length, vocab_size): logits over the 32-token alphabet per position


class CellDiffV2Net(nn.Module):
    """The published CELL-Diff v2 denoiser (state-dict prefix ``net.`` in the released checkpoints).

    Parameters
    ----------
    config : CellDiffV2Config
        Network shape.
    """

    def __init__(self, config: CellDiffV2Config):
        from diffusers.models.embeddings import PatchEmbed, TimestepEmbedding, Timesteps
        from diffusers.models.unets.unet_2d_blocks import (
            CrossAttnDownBlock2D,
            CrossAttnUpBlock2D,
            DownBlock2D,
            UpBlock2D,
        )

        super().__init__()
        self.config = config
        channels = config.block_out_channels
        width = config.hidden_size
        n_levels = len(channels)

        table = sincos_1d_table(width, config.max_protein_sequence_len + 2)
        # A saved, frozen parameter in the published layout (so it is part of the checkpoint).
        self.protein_sequence_pos_embed = nn.Parameter(torch.from_numpy(table).float()[None], requires_grad=False)
        self.seq_proj_in = nn.Linear(width, width)
        n_inputs = 1 + len(config.landmark_names)
        self.img_conv_in = nn.Conv2d(config.latent_channels * n_inputs, channels[0], 3, padding=1)

        self.time_proj = Timesteps(channels[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(channels[0], 4 * channels[0], act_fn="silu")
        temb = 4 * channels[0]

        # Shared keyword arguments of the diffusers blocks, as the published code sets them.
        resnet = dict(temb_channels=temb, resnet_eps=1e-5, resnet_act_fn="silu", resnet_groups=32, dropout=0.0)
        attention = dict(
            num_attention_heads=config.num_attention_heads,
            cross_attention_dim=width,
            transformer_layers_per_block=1,
            use_linear_projection=False,
        )

        self.down_blocks = nn.ModuleList()
        out_ch = channels[0]
        for level in range(n_levels):
            in_ch, out_ch = out_ch, channels[level]
            common = dict(
                num_layers=config.layers_per_block,
                in_channels=in_ch,
                out_channels=out_ch,
                add_downsample=level < n_levels - 1,
                downsample_padding=1,
                **resnet,
            )
            if config.cross_attn and level < n_levels - 1:
                self.down_blocks.append(CrossAttnDownBlock2D(**common, **attention))
            else:
                self.down_blocks.append(DownBlock2D(**common))

        bottleneck = config.sample_size // 2 ** (n_levels - 1)
        self.img_embedding = PatchEmbed(
            height=bottleneck,
            width=bottleneck,
            patch_size=config.dit_patch_size,
            in_channels=channels[-1],
            embed_dim=width,
        )
        self.token_type_embeddings = nn.Embedding(2, width)  # 0: image patch token, 1: sequence token
        self.unified_encoder = nn.ModuleList(
            AdaLNZeroBlock(width, config.mid_num_attention_heads, config.mlp_ratio)
            for _ in range(config.num_hidden_layers)
        )
        self.img_proj_out = DitFinalLayer(width, config.dit_patch_size, channels[-1])

        self.up_blocks = nn.ModuleList()
        reversed_channels = list(reversed(channels))
        out_ch = reversed_channels[0]
        for level in range(n_levels):
            prev_ch, out_ch = out_ch, reversed_channels[level]
            common = dict(
                num_layers=config.layers_per_block + 1,
                in_channels=reversed_channels[min(level + 1, n_levels - 1)],
                out_channels=out_ch,
                prev_output_channel=prev_ch,
                add_upsample=level < n_levels - 1,
                resolution_idx=level,
                **resnet,
            )
            if config.cross_attn and level > 0:
                self.up_blocks.append(CrossAttnUpBlock2D(**common, **attention))
            else:
                self.up_blocks.append(UpBlock2D(**common))

        self.conv_norm_out = nn.GroupNorm(num_groups=32, num_channels=channels[0], eps=1e-5)
        self.img_conv_out = nn.Conv2d(channels[0], config.latent_channels, 3, padding=1)
        self.seq_proj_out = nn.Linear(width, config.vocab_size)
        if config.output_rescale:
            self.mlp_w = nn.Sequential(nn.Linear(width, width, bias=False), nn.SiLU(), nn.Linear(width, 1, bias=False))
        self.protein_sequence_embedding = EsmSequenceEmbedding(config)

    def embed_sequence(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` token ids -> ``(B, T, hidden_size)`` sequence tokens (ESM2, projection, positions, type 1)."""
        if tokens.shape[1] > self.protein_sequence_pos_embed.shape[1]:
            raise InputError(
                f"tokens: length {tokens.shape[1]} exceeds the position table "
                f"({self.protein_sequence_pos_embed.shape[1]} = max_protein_sequence_len + 2)"
            )
        seq = self.seq_proj_in(self.protein_sequence_embedding(tokens))
        seq = seq + self.protein_sequence_pos_embed[:, : tokens.shape[1]]
        return seq + self.token_type_embeddings.weight[1]

    def forward(
        self,
        protein_latent: torch.Tensor,
        cell_latent: torch.Tensor,
        tokens: torch.Tensor,
        model_time: torch.Tensor,
        sqrt_one_minus_alphas_cumprod: torch.Tensor | None = None,
        sequence_embeds: torch.Tensor | None = None,
    ) -> CellDiffV2Output:
        """Predict the noise (or x0) of the protein latent and the residue logits.

        Parameters
        ----------
        protein_latent : torch.Tensor
            ``(B, latent_channels, H, W)`` noisy protein latent.
        cell_latent : torch.Tensor
            ``(B, latent_channels * n_landmarks, H, W)`` landmark latents (nucleus, then ER / microtubules).
        tokens : torch.Tensor
            ``(B, T)`` int64 ids in the 32-token alphabet (``<cls>`` ... ``<eos>`` ``<pad>``...); a trailing unit
            dimension ``(B, T, 1)`` is accepted as in the published code.
        model_time : torch.Tensor
            ``(B,)`` diffusion step indices (0..T-1).
        sqrt_one_minus_alphas_cumprod : torch.Tensor, optional
            sqrt(1 - alpha_bar_t) broadcastable to the latent; only used when ``config.output_rescale``.
        sequence_embeds : torch.Tensor, optional
            ``(B, T, hidden_size)`` = :meth:`embed_sequence` of ``tokens``, computed once and reused at every
            denoising step (it does not depend on the step); the published code recomputes it (ESM2) at each call.

        Returns
        -------
        CellDiffV2Output
            ``image`` ``(B, latent_channels, H, W)`` and ``sequence_logits`` ``(B, T, vocab_size)``.
        """
        if tokens.dim() == 3:
            tokens = tokens.squeeze(-1)
        time = model_time if torch.is_tensor(model_time) else torch.tensor([model_time], device=protein_latent.device)
        time = time.reshape(-1).expand(protein_latent.shape[0])
        time_embeds = self.time_embedding(self.time_proj(time).to(protein_latent.dtype))  # (B, hidden)

        seq_embeds = self.embed_sequence(tokens) if sequence_embeds is None else sequence_embeds  # (B, T, hidden)

        sample = self.img_conv_in(torch.cat([protein_latent, cell_latent], dim=1))
        skips: tuple[torch.Tensor, ...] = (sample,)
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                sample, res = block(hidden_states=sample, temb=time_embeds, encoder_hidden_states=seq_embeds)
            else:
                sample, res = block(hidden_states=sample, temb=time_embeds)
            skips += res

        height, width = sample.shape[-2:]
        img_tokens = self.img_embedding(sample) + self.token_type_embeddings.weight[0]  # (B, h*w, hidden)
        x = torch.cat([img_tokens, seq_embeds], dim=1)
        for block in self.unified_encoder:
            x = block(x, time_embeds)
        n_img = img_tokens.shape[1]
        img_out = self.img_proj_out(x[:, :n_img], time_embeds)  # (B, h*w, p*p*C)
        sequence_logits = self.seq_proj_out(x[:, n_img:])  # (B, T, vocab)
        sample = unpatchify(img_out, self.config.block_out_channels[-1], self.config.dit_patch_size, height, width)

        # The published code forwards explicit upsample sizes when the bottleneck is not a multiple of 2**n_up.
        n_up = sum(1 for b in self.up_blocks if getattr(b, "upsamplers", None) is not None)
        forward_sizes = any(d % 2**n_up for d in sample.shape[-2:])
        for i, block in enumerate(self.up_blocks):
            n = len(block.resnets)
            res, skips = skips[-n:], skips[:-n]
            size = skips[-1].shape[2:] if forward_sizes and i < len(self.up_blocks) - 1 else None
            kwargs = dict(hidden_states=sample, temb=time_embeds, res_hidden_states_tuple=res, upsample_size=size)
            if getattr(block, "has_cross_attention", False):
                kwargs["encoder_hidden_states"] = seq_embeds
            sample = block(**kwargs)

        image = self.img_conv_out(F.silu(self.conv_norm_out(sample)))
        if self.config.output_rescale:
            if sqrt_one_minus_alphas_cumprod is None:
                raise ValueError("sqrt_one_minus_alphas_cumprod is required when config.output_rescale is True")
            # s = sigmoid(mlp(t) + logit(sqrt(1 - alpha_bar))): how much of the noisy input to pass through.
            s = torch.sigmoid(self.mlp_w(time_embeds)[..., None, None] + torch.logit(sqrt_one_minus_alphas_cumprod))
            if self.config.diffusion_pred_type == "noise":
                image = s * protein_latent + (1 - s) * image
            else:
                image = s * image + (1 - s) * protein_latent
        return CellDiffV2Output(image, sequence_logits)


class PublishedCellDiff(nn.Module):
    """The released checkpoint's top level: ``cell_img_placeholder`` (missing landmark) + ``net``.

    Parameters
    ----------
    config : CellDiffV2Config
        Network shape.
    """

    def __init__(self, config: CellDiffV2Config):
        super().__init__()
        self.config = config
        self.cell_img_placeholder = nn.Parameter(torch.zeros(config.sample_size, config.sample_size))
        self.net = CellDiffV2Net(config)

    def cell_latent(self, latents: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Stack landmark latents in the model's order; a missing ER / microtubule latent becomes the placeholder.

        Parameters
        ----------
        latents : mapping of str to torch.Tensor
            Canonical channel name (``nucleus``, ``er``, ``microtubules``) -> ``(B, latent_channels, H, W)``.
            ``nucleus`` is required.

        Returns
        -------
        torch.Tensor
            ``(B, latent_channels * n_landmarks, H, W)``.
        """
        unknown = sorted(set(latents) - {"nucleus", "er", "microtubules"})
        if unknown:
            raise InputError(f"latents: unknown landmark channel(s) {unknown}; accepted nucleus, er, microtubules")
        if "nucleus" not in latents:
            raise InputError("latents: the nucleus latent is required")
        nucleus = latents["nucleus"]
        parts = []
        for name in self.config.landmark_names:
            if name in latents:
                parts.append(latents[name])
            else:  # the published model's learned stand-in, repeated over batch and latent channels
                parts.append(self.cell_img_placeholder.expand(nucleus.shape[0], nucleus.shape[1], -1, -1))
        return torch.cat(parts, dim=1)

    def forward(self, *args, **kwargs) -> CellDiffV2Output:
        """Same as :meth:`CellDiffV2Net.forward`."""
        return self.net(*args, **kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# The per-channel VAE
# ----------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class CellDiffV2VAEConfig:
    """The published ``VAEConfig``: one grey channel in and out, ``latent_channels`` per image.

    Parameters
    ----------
    in_channels, out_channels : int
        Image channels (1: every channel, protein or landmark, is encoded on its own by the same VAE).
    num_down_blocks : int
        Encoder / decoder blocks; the image is downsampled by ``2 ** (num_down_blocks - 1)``.
    latent_channels : int
        Channels of a latent.
    vae_block_out_channels : tuple of int
        Width per block (``num_down_blocks`` entries; the release: 128, 256, 512).
    """

    in_channels: int = 1
    out_channels: int = 1
    num_down_blocks: int = 3
    latent_channels: int = 4
    vae_block_out_channels: tuple[int, ...] = (128, 256, 512)

    def __post_init__(self) -> None:
        if isinstance(self.vae_block_out_channels, str):
            self.vae_block_out_channels = tuple(int(c) for c in self.vae_block_out_channels.split(","))
        self.vae_block_out_channels = tuple(int(c) for c in self.vae_block_out_channels)
        if len(self.vae_block_out_channels) != self.num_down_blocks:
            raise ValueError(f"vae_block_out_channels={list(self.vae_block_out_channels)}: needs num_down_blocks="
                             f"{self.num_down_blocks} entries")

    @property
    def downsampling(self) -> int:
        """Image side / latent side."""
        return 2 ** (self.num_down_blocks - 1)

    @classmethod
    def from_published(cls, published: Mapping) -> "CellDiffV2VAEConfig":
        """The VAE fields of a published ``config.json`` (a dict); other fields are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in dict(published).items() if k in names})


class PublishedCellVAE(nn.Module):
    """The published ``VAEModel``: a diffusers ``AutoencoderKL`` under the attribute ``vae`` (state-dict prefix ``vae.``).

    There is no latent scaling factor: the denoiser works on ``sample_latent`` directly and the decoder output is the
    image in [-1, 1] (unclipped). ``AutoencoderKL.config.scaling_factor`` is never applied.

    Parameters
    ----------
    config : CellDiffV2VAEConfig
        Shape of the autoencoder.
    """

    def __init__(self, config: CellDiffV2VAEConfig):
        from diffusers import AutoencoderKL

        super().__init__()
        self.config = config
        n = config.num_down_blocks
        self.vae = AutoencoderKL(
            in_channels=config.in_channels, out_channels=config.out_channels,
            down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=config.vae_block_out_channels, layers_per_block=1,
            latent_channels=config.latent_channels, norm_num_groups=32,
        )

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 1, H, W)`` images in [-1, 1] -> the latent distribution's ``(mean, std)``, each ``(B, 4, h, w)``
        (std = exp(0.5 logvar), logvar clamped to [-30, 20] as diffusers does)."""
        distribution = self.vae.encode(images).latent_dist
        return distribution.mean, distribution.std

    def sample_latent(self, images: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The published landmark latent: ``mean + std * noise`` (``latent_dist.sample()`` with a given draw)."""
        mean, std = self.encode(images)
        return mean + std * noise

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, 4, h, w)`` latents -> ``(B, 1, H, W)`` images (raw decoder output, about [-1, 1], not clipped)."""
        return self.vae.decode(latents).sample


# ----------------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------------

_ESM_PREFIX = "net.protein_sequence_embedding.model."


def esm_shape_from_state_dict(state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> dict[str, int]:
    """Read the ESM2 size (``esm_embed_dim``, ``esm_num_layers``, ``esm_num_heads``) off a published state dict.

    The published config.json does not record it: the code picks an ESM2 by name. Heads come from the rotary table
    (``inv_freq`` has head_dim / 2 entries).
    """
    key = _ESM_PREFIX + "embed_tokens.weight"
    if key not in state_dict:
        raise CheckpointError(f"{source} does not match the model: missing keys: {key}")
    embed_dim = int(state_dict[key].shape[1])
    layers = {int(k[len(_ESM_PREFIX) + 7:].split(".")[0]) for k in state_dict if k.startswith(_ESM_PREFIX + "layers.")}
    rot = state_dict.get(_ESM_PREFIX + "layers.0.self_attn.rot_emb.inv_freq")
    if not layers or rot is None:
        raise CheckpointError(f"{source} does not match the model: missing keys: {_ESM_PREFIX}layers.0.*")
    return {"esm_embed_dim": embed_dim, "esm_num_layers": max(layers) + 1, "esm_num_heads": embed_dim // (2 * rot.numel())}


def read_published_state_dict(checkpoint_path: str | Path) -> dict[str, torch.Tensor]:
    """Read a released state dict: one ``.bin``/``.pth``/``.safetensors`` file or a sharded directory.

    A directory must hold ``pytorch_model.bin.index.json`` or ``model.safetensors.index.json`` (Hugging Face
    Trainer shards; its ``weight_map`` names the shard of every key). Pickles are read with ``weights_only=True``.
    """
    path = Path(checkpoint_path)
    if not path.is_dir():
        return read_torch_weights(path)
    for index_name in ("pytorch_model.bin.index.json", "model.safetensors.index.json"):
        index_path = path / index_name
        if index_path.is_file():
            break
    else:
        raise InputError(f"{path}: directory without pytorch_model.bin.index.json or model.safetensors.index.json")
    weight_map = _read_json(index_path).get("weight_map")
    if not isinstance(weight_map, dict):
        raise InputError(f"{index_path}: not a shard index (no 'weight_map' object)")
    shards = {name: read_torch_weights(path / name) for name in sorted(set(weight_map.values()))}
    missing = sorted(k for k, shard in weight_map.items() if k not in shards[shard])
    if missing:
        raise CheckpointError(f"{index_path}: keys listed in the index but absent from their shard: {', '.join(missing)}")
    return {k: shards[shard][k] for k, shard in weight_map.items()}


def load_published_celldiff(
    checkpoint_path: str | Path,
    config_json_path: str | Path,
    device: str = "cpu",
) -> PublishedCellDiff:
    """Load a released CELL-Diff (v2, latent) checkpoint strictly and return it in eval mode.

    Parameters
    ----------
    checkpoint_path : str or Path
        ``torch.save`` of the model state dict (``.bin`` / ``.pth``; read with ``weights_only=True``, never
        unpickled), a ``.safetensors`` file, or a directory of shards (see :func:`read_published_state_dict`).
    config_json_path : str or Path
        The published ``config.json`` saved with it.
    device : {'cpu', 'cuda', 'auto'}
        Where to put the model.

    Returns
    -------
    PublishedCellDiff
        In eval mode, ESM2 frozen; ``model.net(...)`` is the published ``net``.

    Raises
    ------
    InputError
        If a file is missing or unreadable.
    CheckpointError
        Listing every missing, unexpected and misshaped key (the published loader used ``strict=False`` and silently
        kept random layers; locscope refuses).

    Examples
    --------
    >>> model = load_published_celldiff("hpa_pretrained.bin", "config.json")  # doctest: +SKIP
    """
    state_dict = read_published_state_dict(checkpoint_path)
    return build_published_celldiff(state_dict, config_json_path, str(checkpoint_path), device)


def build_published_celldiff(
    state_dict: Mapping[str, torch.Tensor],
    published_config: str | Path | Mapping,
    source: str = "checkpoint",
    device: str = "cpu",
) -> PublishedCellDiff:
    """Build the denoiser for a released ``state_dict`` and its ``config.json`` (path or dict), strictly, in eval
    mode; errors name ``source``. See :func:`load_published_celldiff`."""
    config = CellDiffV2Config.from_published(published_config, **esm_shape_from_state_dict(state_dict, source))
    with torch.device("meta"):  # build without allocating; the checkpoint supplies every saved tensor
        model = PublishedCellDiff(config)
    check_state_dict(model, state_dict, source)
    model.load_state_dict(state_dict, strict=True, assign=True)
    _rebuild_non_persistent_buffers(model)
    model.net.protein_sequence_pos_embed.requires_grad_(False)
    model.net.protein_sequence_embedding.model.requires_grad_(False)
    return model.to(resolve_device(device)).eval()


def load_published_vae(
    checkpoint_path: str | Path,
    config: CellDiffV2VAEConfig | Mapping,
    device: str = "cpu",
) -> PublishedCellVAE:
    """Load the released per-channel VAE strictly and return it in eval mode.

    Parameters
    ----------
    checkpoint_path : str or Path
        ``torch.save`` of the ``VAEModel`` state dict (keys ``vae.encoder.*``, ``vae.decoder.*``, ``vae.quant_conv.*``,
        ``vae.post_quant_conv.*``; a plain dict, ``{"model": ...}`` or ``{"module": ...}``, read with
        ``weights_only=True``) or a ``.safetensors`` file.
    config : CellDiffV2VAEConfig or mapping
        The VAE shape, or the published ``config.json`` as a dict.
    device : {'cpu', 'cuda', 'auto'}
        Where to put the model.

    Raises
    ------
    InputError
        If the file is missing or unreadable.
    CheckpointError
        Listing every missing, unexpected and misshaped key (the published loader drops them silently and keeps a
        randomly initialised VAE).
    """
    vae_config = config if isinstance(config, CellDiffV2VAEConfig) else CellDiffV2VAEConfig.from_published(config)
    state_dict = read_published_state_dict(checkpoint_path)
    model = PublishedCellVAE(vae_config)
    check_state_dict(model, state_dict, str(checkpoint_path))
    model.load_state_dict(state_dict, strict=True)
    model.requires_grad_(False)
    return model.to(resolve_device(device)).eval()


def read_esm2_directory(directory: str | Path) -> dict[str, torch.Tensor]:
    """ESM2 weights from a local transformers directory, renamed to the released checkpoint's fair-esm keys.

    The directory is what ``EsmForMaskedLM.save_pretrained`` writes (the layout of the ``facebook/esm2_*`` models):
    ``config.json`` + ``model.safetensors`` or ``pytorch_model.bin`` (or a shard index), keys ``esm.*`` and
    ``lm_head.*``. Returned keys carry the ``net.protein_sequence_embedding.model.`` prefix.

    Raises
    ------
    InputError
        If the directory, its config or its weights are missing.
    """
    path = Path(directory)
    esm_config = _read_json(path / "config.json")
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            weights = read_published_state_dict(path / name)
            break
    else:
        weights = read_published_state_dict(path)  # a shard index, or an error naming the directory
    fair_weights = {}
    for key, value in weights.items():
        name = transformers_to_fair_esm(key)
        if name is not None:
            fair_weights[name] = value
    if "embed_tokens.weight" in fair_weights:
        fair_weights.setdefault("lm_head.weight", fair_weights["embed_tokens.weight"])  # tied
    # Rotary tables are recomputed from the head width (transformers does not always save them).
    layers = int(esm_config.get("num_hidden_layers", 0))
    heads = int(esm_config.get("num_attention_heads", 0))
    width = int(esm_config.get("hidden_size", 0))
    if heads < 1 or width % heads:
        raise InputError(f"{path / 'config.json'}: needs hidden_size divisible by num_attention_heads")
    fair_weights.update({f"layers.{i}.self_attn.rot_emb.inv_freq": rotary_inv_freq(width // heads)
                         for i in range(layers)})
    return {_ESM_PREFIX + k: v for k, v in fair_weights.items()}


@dataclasses.dataclass
class ReleasedCellDiff:
    """A released CELL-Diff checkpoint set, loaded: denoiser (with its ESM2), per-channel VAE and sampling settings.

    Attributes
    ----------
    model : PublishedCellDiff
        The denoiser (eval mode).
    vae : PublishedCellVAE
        The per-channel autoencoder (eval mode).
    published_config : dict
        The released ``config.json`` as read.
    respacing : str
        Its ``timestep_respacing`` (the release: ``"ddim100"``).
    files : dict of str to Path
        ``config``, ``denoiser``, ``vae`` (and ``esm`` when given) as used.
    """

    model: PublishedCellDiff
    vae: PublishedCellVAE
    published_config: dict
    respacing: str
    files: dict[str, Path]

    @property
    def image_size(self) -> int:
        """Side of the images the pair works on (latent side x the VAE's downsampling)."""
        return self.model.config.sample_size * self.vae.config.downsampling


_CHECKPOINT_SUFFIXES = (".bin", ".pth", ".pt", ".safetensors")


def load_released_checkpoint_set(
    directory: str | Path,
    device: str = "cpu",
    esm_path: str | Path | None = None,
) -> ReleasedCellDiff:
    """Load a released CELL-Diff checkpoint set from one folder.

    The folder holds the released ``config.json``, the VAE checkpoint it names in ``vae_loadcheck_path`` (looked up
    by file name beside the config) and the denoiser checkpoint (the file named by ``loadcheck_path`` when present,
    else the one other ``.bin`` / ``.pth`` / ``.safetensors`` file). ESM2 comes from the denoiser checkpoint (the
    released files carry it) unless ``esm_path`` names a local transformers ESM2 directory.

    Parameters
    ----------
    directory : str or Path
        The checkpoint set.
    device : {'cpu', 'cuda', 'auto'}
        Where to put the models.
    esm_path : str or Path, optional
        Local ESM2 directory (see :func:`read_esm2_directory`); replaces the checkpoint's ESM2 weights.

    Returns
    -------
    ReleasedCellDiff

    Raises
    ------
    InputError
        One line naming the missing or unreadable file (or the config field) and what was expected.
    CheckpointError
        Naming the file whose keys or shapes do not match the config, with the keys.
    """
    folder = Path(directory)
    config_path = folder / "config.json"
    if not folder.is_dir():
        raise InputError(f"{folder}: not a directory (expected a released checkpoint set: config.json + .bin files)")
    published = _read_json(config_path)
    if "vae_loadcheck_path" not in published:
        raise InputError(f"{config_path}: no 'vae_loadcheck_path' (not a released CELL-Diff latent config)")
    vae_path = folder / Path(str(published["vae_loadcheck_path"])).name
    if not vae_path.is_file():
        raise InputError(f"{vae_path}: file not found (the VAE checkpoint named by vae_loadcheck_path in {config_path})")
    named = Path(str(published.get("loadcheck_path") or "")).name
    if named and (folder / named).is_file():
        denoiser_path = folder / named
    else:
        candidates = sorted(p for p in folder.iterdir()
                            if p.suffix in _CHECKPOINT_SUFFIXES and p.is_file() and p != vae_path)
        if len(candidates) != 1:
            found = ", ".join(p.name for p in candidates) or "none"
            raise InputError(f"{folder / (named or 'cell_diff.bin')}: denoiser checkpoint not found (expected the "
                             f"file named by loadcheck_path, or exactly one other checkpoint file; found: {found})")
        denoiser_path = candidates[0]
    state_dict = read_published_state_dict(denoiser_path)
    files = {"config": config_path, "denoiser": denoiser_path, "vae": vae_path}
    if esm_path is not None:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(_ESM_PREFIX)}
        state_dict.update(read_esm2_directory(esm_path))
        files["esm"] = Path(esm_path)
    elif not any(k.startswith(_ESM_PREFIX) for k in state_dict):
        raise InputError(f"{denoiser_path}: no ESM2 weights ({_ESM_PREFIX}*); give a local ESM2 directory")
    model = build_published_celldiff(state_dict, published, str(denoiser_path), device)
    try:
        vae_config = CellDiffV2VAEConfig.from_published(published)
    except (TypeError, ValueError) as err:
        raise InputError(f"{config_path}: invalid VAE fields ({err})") from None
    vae = load_published_vae(vae_path, vae_config, device)
    if vae_config.latent_channels != model.config.latent_channels:
        raise InputError(f"{config_path}: VAE latent_channels {vae_config.latent_channels} != denoiser's "
                         f"{model.config.latent_channels}")
    respacing = str(published.get("timestep_respacing") or "ddim100")
    return ReleasedCellDiff(model, vae, dict(published), respacing, files)


def _rebuild_non_persistent_buffers(model: PublishedCellDiff) -> None:
    """Recompute buffers that are not saved (they were created on the meta device)."""
    from diffusers.models.embeddings import get_2d_sincos_pos_embed

    embed = model.net.img_embedding
    if getattr(embed, "pos_embed", None) is not None:
        grid = embed.height
        table = get_2d_sincos_pos_embed(embed.pos_embed.shape[-1], grid, base_size=embed.base_size,
                                        interpolation_scale=embed.interpolation_scale, output_type="pt")
        embed.pos_embed = table.float().unsqueeze(0)
    embeddings = model.net.protein_sequence_embedding.model.lm.esm.embeddings
    if getattr(embeddings, "position_ids", None) is not None and embeddings.position_ids.is_meta:
        embeddings.register_buffer("position_ids", torch.arange(embeddings.position_ids.shape[-1])[None], persistent=False)
    leftovers = [name for name, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftovers:
        raise CheckpointError(f"model tensors left uninitialised after loading: {', '.join(leftovers)}")
