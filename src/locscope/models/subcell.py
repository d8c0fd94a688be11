"""SubCell: a ViT that embeds single-cell fluorescence images and classifies protein localization.

Architecture (Gupta et al. 2024, "SubCell: Vision foundation models for microscopy capture single-cell biology"):

- a Vision Transformer (ViT-B/16 in the published models: hidden 768, 12 layers, 12 heads, MLP 3072) built from
  transformers' ``ViTConfig`` / ``ViTModel`` over 2-4 channels in the order microtubules, ER, DNA (nucleus), protein
  (variants ``rybg``, ``rbg``, ``ybg``, ``bg``); position embeddings are interpolated to any input size;
- gated attention pooling over all tokens (CLS included): ``a = softmax_t(W (tanh(V x_t) * GELU(U x_t)))`` with one
  attention distribution per head; the pooled vectors of the heads are concatenated -> ``heads * hidden`` (1536-d);
- an ensemble of MLP classifiers ``Linear(2*dim, 512)-ReLU-Linear(512, 256)-ReLU-Linear(256, 31)``; the probabilities
  are the mean over the ensemble of ``sigmoid(logits)`` (multi-label).

Inputs are min-max normalised per cell jointly over all channels (:func:`min_max_normalize`).

Checkpoints: :meth:`SubCellModel.from_pretrained` reads locscope's own layout (``model.safetensors`` + ``config.json``);
:func:`load_published` reads the published layout (a YAML config, an encoder ``.pth`` with transformers 4.x key names and
classifier ``.pth`` files whose Linear layers sit at indices 0/3/6), strictly and without unpickling code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import torch
from torch import nn

from locscope.channels import ER, MICROTUBULES, NUCLEUS, PROTEIN
from locscope.errors import InputError
from locscope.utils.checkpoint import PretrainedMixin, load_state_dict_strict, read_torch_weights

# SubCell's 31 localization classes, in the order of the classifier outputs.
SUBCELL_CLASS_NAMES: tuple[str, ...] = (
    "Actin filaments", "Aggresome", "Cell Junctions", "Centriolar satellite", "Centrosome", "Cytokinetic bridge",
    "Cytoplasmic bodies", "Cytosol", "Endoplasmic reticulum", "Endosomes", "Focal adhesion sites", "Golgi apparatus",
    "Intermediate filaments", "Lipid droplets", "Lysosomes", "Microtubules", "Midbody", "Mitochondria",
    "Mitotic chromosome", "Mitotic spindle", "Nuclear bodies", "Nuclear membrane", "Nuclear speckles", "Nucleoli",
    "Nucleoli fibrillar center", "Nucleoli rim", "Nucleoplasm", "Peroxisomes", "Plasma membrane", "Vesicles", "Negative",
)

# Channel variants: HPA colour letters (red = microtubules, yellow = ER, blue = DNA, green = protein) -> channel names.
CHANNEL_VARIANTS: dict[str, tuple[str, ...]] = {
    "rybg": (MICROTUBULES, ER, NUCLEUS, PROTEIN),
    "rbg": (MICROTUBULES, NUCLEUS, PROTEIN),
    "ybg": (ER, NUCLEUS, PROTEIN),
    "bg": (NUCLEUS, PROTEIN),
}

# transformers 4.x ViT module names (the published checkpoints) -> 5.x names, applied after the ``encoder.`` prefix.
_VIT4_TO_VIT5: tuple[tuple[str, str], ...] = (
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.query\.", r"layers.\1.attention.q_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.key\.", r"layers.\1.attention.k_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.value\.", r"layers.\1.attention.v_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.attention.o_proj."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"layers.\1.mlp.fc1."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"layers.\1.mlp.fc2."),
    (r"^encoder\.layer\.(\d+)\.layernorm_(before|after)\.", r"layers.\1.layernorm_\2."),
)


@dataclass
class SubCellConfig:
    """Hyper-parameters of a SubCell model (saved as ``config.json`` beside the weights).

    The defaults are the published ViT-B/16 (87.3 M parameters per the model card).

    Parameters
    ----------
    channels : {'rybg', 'rbg', 'ybg', 'bg'}
        Input channel variant; the input tensor's channels follow :data:`CHANNEL_VARIANTS`.
    hidden_size, num_hidden_layers, num_attention_heads, intermediate_size : int
        ViT width, depth, heads and MLP width.
    patch_size : int
        Patch side in pixels; inputs are cropped by the patch embedding to a multiple of it.
    image_size : int
        Side of the position-embedding grid the weights were trained at (interpolated for other sizes).
    layer_norm_eps : float
        ViT layer-norm epsilon.
    pool_inner_dim, pool_heads : int
        Gated attention pooling inner width and number of heads; the embedding has ``pool_heads * hidden_size`` values.
    classifier_hidden : tuple of int
        Hidden widths of each MLP classifier.
    num_classes : int
        Number of output classes (31 for SubCell's classes).
    num_classifiers : int
        Ensemble size (the probabilities are averaged over the ensemble); 0 builds an encoder without classifiers.
    class_names : tuple of str
        Names of the outputs; defaults to SubCell's 31 classes.
    """

    channels: str = "rybg"
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    patch_size: int = 16
    image_size: int = 448
    layer_norm_eps: float = 1e-12
    pool_inner_dim: int = 512
    pool_heads: int = 2
    classifier_hidden: tuple[int, ...] = (512, 256)
    num_classes: int = 31
    num_classifiers: int = 1
    class_names: tuple[str, ...] = SUBCELL_CLASS_NAMES

    def __post_init__(self) -> None:
        if self.channels not in CHANNEL_VARIANTS:
            raise ValueError(f"channels={self.channels!r}: accepted variants are {', '.join(CHANNEL_VARIANTS)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}"
            )
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} names but num_classes={self.num_classes}")

    @property
    def channel_names(self) -> tuple[str, ...]:
        """Canonical channel names of the input, in order."""
        return CHANNEL_VARIANTS[self.channels]

    @property
    def embedding_dim(self) -> int:
        """Size of the pooled embedding (``pool_heads * hidden_size``)."""
        return self.pool_heads * self.hidden_size


@dataclass
class SubCellOutput:
    """What a SubCell forward pass returns.

    Attributes
    ----------
    embedding : torch.Tensor
        ``(B, pool_heads * hidden)`` pooled embeddings.
    probabilities : torch.Tensor or None
        ``(B, num_classes)`` ensemble-mean sigmoid probabilities (None without classifiers).
    pool_attention : torch.Tensor
        ``(B, pool_heads, H // patch, W // patch)`` pooling weights over the patch tokens (CLS weight dropped, so a map
        sums to slightly less than 1).
    last_hidden_state : torch.Tensor
        ``(B, 1 + n_patches, hidden)`` final-layer-normed tokens, CLS first.
    """

    embedding: torch.Tensor
    probabilities: torch.Tensor | None
    pool_attention: torch.Tensor
    last_hidden_state: torch.Tensor


def min_max_normalize(images: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-cell min-max normalisation jointly over channels: ``(x - min) / (max - min + eps)``.

    Parameters
    ----------
    images : torch.Tensor
        ``(B, C, H, W)`` raw intensities (any real dtype).
    eps : float
        Added to the range so a constant cell maps to zeros instead of NaN.

    Returns
    -------
    torch.Tensor
        ``(B, C, H, W)`` float32 in ``[0, 1)``.
    """
    if images.ndim != 4:
        raise ValueError(f"images must have shape (B, C, H, W); got {tuple(images.shape)}")
    x = images.float()
    low = x.amin(dim=(1, 2, 3), keepdim=True)
    high = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x - low) / (high - low + eps)


class GatedAttentionPooling(nn.Module):
    """Gated attention pooling (Ilse et al. 2018) with several heads.

    ``a_{h,t} = softmax_t( w_h . (tanh(V x_t) * GELU(U x_t)) )``; output ``concat_h sum_t a_{h,t} x_t``.
    Module names (``attention_v.0``, ``attention_u.0``, ``attention``) match the published checkpoints.
    """

    def __init__(self, dim: int, inner_dim: int = 512, num_heads: int = 2) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attention_v = nn.Sequential(nn.Linear(dim, inner_dim), nn.Tanh())
        self.attention_u = nn.Sequential(nn.Linear(dim, inner_dim), nn.GELU())
        self.attention = nn.Linear(inner_dim, num_heads)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool ``tokens`` ``(B, T, D)`` -> (``(B, heads * D)`` pooled, ``(B, heads, T)`` weights)."""
        gated = self.attention_v(tokens) * self.attention_u(tokens)  # (B, T, inner)
        weights = self.attention(gated).transpose(1, 2).softmax(dim=-1)  # (B, heads, T)
        pooled = torch.bmm(weights, tokens)  # (B, heads, D)
        return pooled.flatten(1), weights


def build_classifier(in_dim: int, hidden: Sequence[int], num_classes: int) -> nn.Sequential:
    """``Linear-ReLU-...-Linear`` MLP; Linear layers at indices 0, 2, 4, ... (no dropout layers at inference)."""
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def _vit_config(config: SubCellConfig):
    from transformers import ViTConfig

    return ViTConfig(
        hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads, intermediate_size=config.intermediate_size,
        hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        layer_norm_eps=config.layer_norm_eps, image_size=config.image_size, patch_size=config.patch_size,
        num_channels=len(config.channel_names), qkv_bias=True,
    )


class SubCellModel(PretrainedMixin, nn.Module):
    """ViT encoder + gated attention pooling + an ensemble of MLP classifiers.

    Parameters
    ----------
    config : SubCellConfig
        Architecture; ``SubCellConfig()`` is the published ViT-B/16.

    Examples
    --------
    >>> cfg = SubCellConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
    ...                     image_size=32, pool_inner_dim=16)
    >>> out = SubCellModel(cfg).eval()(torch.rand(2, 4, 48, 64))
    >>> tuple(out.embedding.shape), tuple(out.probabilities.shape), tuple(out.pool_attention.shape)
    ((2, 64), (2, 31), (2, 2, 3, 4))
    """

    config_class = SubCellConfig

    def __init__(self, config: SubCellConfig) -> None:
        super().__init__()
        from transformers import ViTModel

        self.config = config
        self.encoder = ViTModel(_vit_config(config), add_pooling_layer=False)
        self.pool_model = GatedAttentionPooling(config.hidden_size, config.pool_inner_dim, config.pool_heads)
        self.classifiers = nn.ModuleList(
            build_classifier(config.embedding_dim, config.classifier_hidden, config.num_classes)
            for _ in range(config.num_classifiers)
        )

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the ViT and the pooling: ``(B, C, H, W)`` normalised images -> (embedding, weights, tokens).

        Returns ``(B, heads*hidden)`` embeddings, ``(B, heads, 1 + n_patches)`` pooling weights (CLS first) and the
        ``(B, 1 + n_patches, hidden)`` last hidden state.
        """
        n_channels = len(self.config.channel_names)
        if images.ndim != 4 or images.shape[1] != n_channels:
            raise ValueError(
                f"images must have shape (B, {n_channels}, H, W) with channels {self.config.channel_names}; "
                f"got {tuple(images.shape)}"
            )
        patch = self.config.patch_size
        if images.shape[2] < patch or images.shape[3] < patch:
            raise ValueError(f"images must be at least {patch}x{patch} pixels; got {tuple(images.shape[2:])}")
        tokens = self.encoder(pixel_values=images, interpolate_pos_encoding=True).last_hidden_state  # (B, 1+N, D)
        embedding, weights = self.pool_model(tokens)
        return embedding, weights, tokens

    def classify_embedding(self, embedding: torch.Tensor) -> torch.Tensor:
        """``(B, heads*hidden)`` embeddings -> ``(B, num_classes)`` ensemble-mean sigmoid probabilities."""
        if not len(self.classifiers):
            raise ValueError("this SubCell model has no classifiers (num_classifiers=0)")
        return torch.stack([head(embedding).sigmoid() for head in self.classifiers]).mean(dim=0)

    def forward(self, images: torch.Tensor) -> SubCellOutput:
        """Embed and classify ``(B, C, H, W)`` min-max normalised cells (see :func:`min_max_normalize`)."""
        embedding, weights, tokens = self.encode(images)
        return self._outputs(images.shape[2:], embedding, weights, tokens)

    def pool_and_classify(self, tokens: torch.Tensor, image_size: tuple[int, int]) -> SubCellOutput:
        """Pool and classify the ViT's ``(B, 1 + n_patches, hidden)`` last hidden state of ``image_size`` (H, W) cells
        (what :meth:`forward` does after the encoder; used when another runtime ran the encoder)."""
        embedding, weights = self.pool_model(tokens)
        return self._outputs(image_size, embedding, weights, tokens)

    def _outputs(self, image_size, embedding, weights, tokens) -> SubCellOutput:
        grid = (image_size[0] // self.config.patch_size, image_size[1] // self.config.patch_size)
        pool_attention = weights[:, :, 1:].reshape(weights.shape[0], weights.shape[1], *grid)  # (B, heads, h, w)
        probabilities = self.classify_embedding(embedding) if len(self.classifiers) else None
        return SubCellOutput(embedding, probabilities, pool_attention, tokens)


def quantize_encoder_int8(model: SubCellModel) -> SubCellModel:
    """A copy of ``model`` whose ViT Linear layers run in int8 (CPU inference only; ``model`` is left unchanged).

    Dynamic quantization (torch's ``quantize_dynamic``): weights are stored as int8 with one scale per output
    channel, activations are quantized per batch on the fly, and the int8 GEMMs run on fbgemm (AVX512-VNNI / AVX2). The ViT's
    Linear layers carry ~98% of the FLOPs; the patch embedding, layer norms, attention softmax, pooling and classifier
    heads stay fp32. On a 2-core AVX512-BF16/VNNI CPU this is ~1.3x faster than bf16 autocast (see
    ``docs/benchmarks.md``) at a cosine similarity of the embeddings to fp32 above 0.99.

    Parameters
    ----------
    model : SubCellModel
        On the CPU.

    Returns
    -------
    SubCellModel
        In eval mode; its encoder's ``nn.Linear`` modules are ``DynamicQuantizedLinear``.

    Raises
    ------
    ValueError
        If ``model`` is not on the CPU (the quantized kernels are CPU-only).
    RuntimeError
        If the installed torch no longer ships ``torch.ao.quantization.quantize_dynamic``.
    """
    import copy
    import warnings

    device = next(model.parameters()).device
    if device.type != "cpu":
        raise ValueError(f"int8 quantization runs on the CPU only; the model is on {device}")
    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError:
        raise RuntimeError(f"int8: torch {torch.__version__} has no torch.ao.quantization.quantize_dynamic") from None
    quantized = copy.deepcopy(model).eval()
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao on every call
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        quantized.encoder = quantize_dynamic(quantized.encoder, {nn.Linear: per_channel_dynamic_qconfig},
                                             dtype=torch.qint8)
    return quantized


class _EncoderPooled(nn.Module):
    """The ViT + pooling, tensors in -> tensors out (what OpenVINO converts): (tokens, embedding, pooling weights).
    Pooling in the same graph saves ~3% of the time of int8 ViT-B/16 runs against pooling in PyTorch."""

    def __init__(self, model: SubCellModel) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.pool_model = model.pool_model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tokens = self.encoder(pixel_values=images, interpolate_pos_encoding=True).last_hidden_state
        embedding, weights = self.pool_model(tokens)
        return tokens, embedding, weights


class OpenVINOSubCell:
    """A SubCell model whose ViT and pooling run in OpenVINO (CPU); the classifiers stay in PyTorch fp32.

    Built by :func:`compile_openvino`. Calling it on ``(B, C, H, W)`` normalised cells of the size it was compiled for
    returns the same :class:`SubCellOutput` as :meth:`SubCellModel.forward`.
    """

    def __init__(self, model: SubCellModel, compiled: Any, image_size: tuple[int, int]) -> None:
        self.model = model
        self.config = model.config
        self.image_size = image_size
        self._request = compiled.create_infer_request()

    @classmethod
    def from_openvino_model(cls, model: SubCellModel, ov_model: Any, image_size: tuple[int, int],
                            precision: Literal["int8", "fp32", "bf16"] = "int8",
                            num_threads: int | None = None,
                            int8_float: Literal["bf16", "fp32"] = "bf16") -> "OpenVINOSubCell":
        """Compile an OpenVINO ViT + pooling (from :func:`convert_openvino`, or read back from disk) for the CPU and
        attach ``model``'s classifiers. ``precision`` sets OpenVINO's inference precision for the non-quantized
        ops: ``fp32`` -> f32, ``bf16`` -> bf16, ``int8`` -> ``int8_float`` (bf16 pays only where the CPU computes
        bf16 natively: :func:`~locscope.utils.cpu.detect_cpu_capability`)."""
        from locscope.utils.openvino_support import import_openvino

        ov = import_openvino()
        if precision == "int8":
            precision = int8_float
        config = {"INFERENCE_NUM_THREADS": int(num_threads or torch.get_num_threads()), "NUM_STREAMS": 1,
                  "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32" if precision == "fp32" else "bf16"}
        return cls(model, ov.Core().compile_model(ov_model, "CPU", config), tuple(image_size))

    def __call__(self, images: torch.Tensor) -> SubCellOutput:
        if tuple(images.shape[2:]) != self.image_size:
            raise ValueError(f"images must be {self.image_size[0]}x{self.image_size[1]} (the compiled size); "
                             f"got {tuple(images.shape[2:])}")
        result = self._request.infer({0: images.detach().float().cpu().numpy()})
        # copies: OpenVINO reuses its output buffers on the next call
        tokens, embedding, weights = (torch.from_numpy(result[i].copy()) for i in range(3))
        return self.model._outputs(self.image_size, embedding, weights, tokens)


def compile_openvino(model: SubCellModel, images: torch.Tensor, precision: Literal["int8", "fp32", "bf16"] = "int8",
                     num_threads: int | None = None, seven_bit_weights: bool = False,
                     int8_float: Literal["bf16", "fp32"] = "bf16") -> OpenVINOSubCell:
    """Run ``model``'s ViT and pooling with OpenVINO on the CPU; ``precision="int8"`` quantizes them statically.

    :func:`convert_openvino` then :meth:`OpenVINOSubCell.from_openvino_model`. ``int8``: OpenVINO fuses the
    quantization into its int8 (AVX512-VNNI / AVX2) kernels and runs attention, layer norms and GELU with fused
    kernels in ``int8_float`` precision. On a 2-core AVX512-BF16/VNNI CPU (ViT-B/16,
    448 px, one thread) this is ~4x SubCell's CLI default (fp32, batch 1) in CPU time per image, embeddings at
    cosine similarity > 0.999 to fp32 on cells like the calibration ones (``docs/benchmarks.md``: static ranges do
    not adapt to cells unlike them). The classifiers run in PyTorch fp32.

    Parameters
    ----------
    model : SubCellModel
        On the CPU (put in eval mode; its weights are not changed).
    images : torch.Tensor
        ``(N, C, H, W)`` min-max normalised cells: they fix the compiled cell size ``(H, W)`` (any batch size runs)
        and, for ``int8``, calibrate the activation ranges (use cells like those to embed; 16-64 are enough).
    precision : {'int8', 'fp32', 'bf16'}
        ``fp32`` / ``bf16``: OpenVINO's inference precision, no quantization (``int8`` keeps bf16 for the rest).
    num_threads : int, optional
        OpenVINO inference threads; default ``torch.get_num_threads()``.
    seven_bit_weights : bool
        ``int8``: see :func:`convert_openvino`.
    int8_float : {'bf16', 'fp32'}
        ``int8``: the precision of the non-quantized ops (bf16 only where the CPU has bf16 instructions).

    Returns
    -------
    OpenVINOSubCell
        Callable on ``(B, C, H, W)`` cells of size ``(H, W)`` -> :class:`SubCellOutput`.

    Raises
    ------
    ImportError
        If ``openvino`` (or, for int8, ``nncf``) is not installed.
    ValueError
        For a model not on the CPU, an unknown ``precision`` or badly shaped ``images``.
    """
    ov_model = convert_openvino(model, images, precision, seven_bit_weights=seven_bit_weights)
    return OpenVINOSubCell.from_openvino_model(model, ov_model, tuple(images.shape[2:]), precision, num_threads,
                                               int8_float)


def convert_openvino(model: SubCellModel, images: torch.Tensor,
                     precision: Literal["int8", "fp32", "bf16"] = "int8", seven_bit_weights: bool = False) -> Any:
    """``model``'s ViT + pooling as an OpenVINO model (``openvino.Model``, in memory: nothing downloaded or written;
    outputs: tokens, embedding, pooling weights), for ``(N, C, H, W)`` cells of ``images``' size;
    ``precision="int8"``: NNCF post-training quantization (``ModelType.TRANSFORMER``: SmoothQuant, int8 weights per
    output channel, int8 activations with per-tensor ranges calibrated on ``images``) of its Linear layers and
    attention. ``seven_bit_weights``: weights of every layer on 7 bits (NNCF ``overflow_fix="enable"``; by default
    only the first layer's), for CPUs without VNNI, whose int8 kernels add pairs of products in saturating 16-bit
    registers that full-range 8-bit weights overflow. Arguments and errors as :func:`compile_openvino`."""
    import contextlib
    import io
    import logging
    import warnings

    if precision not in ("int8", "fp32", "bf16"):
        raise ValueError(f"precision={precision!r}: accepted values are int8, fp32, bf16")
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise ValueError(f"OpenVINO runs on the CPU here; the model is on {device}")
    n_channels = len(model.config.channel_names)
    if images.ndim != 4 or images.shape[1] != n_channels or images.shape[0] < 1:
        raise ValueError(f"images must have shape (N, {n_channels}, H, W) with N >= 1; got {tuple(images.shape)}")
    from locscope.utils.openvino_support import import_nncf, import_openvino

    ov = import_openvino()
    if precision == "int8":
        nncf = import_nncf()
    from transformers.utils import logging as transformers_logging

    images = images.detach().float().cpu()
    model = model.eval()
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # tracing reads every property of the ViT (loss_function warns)
    try:
        with warnings.catch_warnings(), torch.no_grad():  # tracing warns about shape-dependent Python branches
            warnings.simplefilter("ignore")
            ov_model = ov.convert_model(_EncoderPooled(model), example_input=images[:1],
                                        input=[(-1, *images.shape[1:])])
    finally:
        transformers_logging.set_verbosity(verbosity)
    if precision == "int8":
        nncf.set_log_level(logging.ERROR)
        calibration = nncf.Dataset([cell[None].numpy() for cell in images])
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # NNCF's progress bars
            warnings.simplefilter("ignore")
            # the pooling stays unquantized: int8 pooling logits move the softmax over tokens (cosine 0.990 on
            # real cells with subcell-tiny against 0.9998 with the pooling left out)
            from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

            overflow_fix = OverflowFix.ENABLE if seven_bit_weights else OverflowFix.FIRST_LAYER
            ov_model = nncf.quantize(ov_model, calibration, model_type=nncf.ModelType.TRANSFORMER,
                                     subset_size=len(images),
                                     ignored_scope=nncf.IgnoredScope(patterns=[r".*pool_model.*"], validate=False),
                                     advanced_parameters=AdvancedQuantizationParameters(overflow_fix=overflow_fix))
    return ov_model


def count_parameters(model: nn.Module, include_classifiers: bool = False) -> int:
    """Number of parameters of the encoder + pooling (+ the classifiers when asked)."""
    return sum(p.numel() for name, p in model.named_parameters() if include_classifiers or not name.startswith("classifiers."))


# --------------------------------------------------------------------------------------------------- published layout
def map_published_encoder_keys(state_dict: Mapping[str, torch.Tensor], model: SubCellModel) -> dict[str, torch.Tensor]:
    """Rename a published encoder file's keys (``encoder.`` transformers 4.x ViT, ``pool_model.``) to ``model``'s.

    Keys the installed transformers already uses are kept; unknown keys are kept unchanged so that strict loading
    reports them.
    """
    current = set(model.state_dict())
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new_key = key
        if key.startswith("encoder.") and key not in current:
            inner = key[len("encoder."):]
            for pattern, replacement in _VIT4_TO_VIT5:
                inner = re.sub(pattern, replacement, inner)
            new_key = "encoder." + inner
        renamed[new_key] = value
    return renamed


def map_published_classifier_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Move a classifier MLP's Linear layers to indices 0, 2, 4, ... (published files use 0, 3, 6: dropout between)."""
    indices = sorted({int(k.split(".", 1)[0]) for k in state_dict if k.split(".", 1)[0].isdigit()})
    new_index = {old: 2 * i for i, old in enumerate(indices)}
    renamed = {}
    for key, value in state_dict.items():
        head, _, rest = key.partition(".")
        renamed[f"{new_index[int(head)]}.{rest}" if head.isdigit() else key] = value
    return renamed


def config_from_published(model_config: Mapping[str, Any], channels: str | None = None, num_classifiers: int = 1,
                          source: str = "model config") -> SubCellConfig:
    """Translate the published ``model_config`` mapping (``vit_model``, ``pool_model``, ``num_classes``)."""
    try:
        vit, pool = model_config["vit_model"], model_config["pool_model"]
        num_channels = int(vit.get("num_channels", 4))
        variants = [name for name, chans in CHANNEL_VARIANTS.items() if len(chans) == num_channels]
        if channels is None:
            if len(variants) != 1:
                raise InputError(
                    f"{source}: {num_channels} input channels fit the variants {', '.join(variants)}; pass channels=..."
                )
            channels = variants[0]
        elif channels not in variants:
            raise InputError(f"{source}: channels={channels!r} does not have {num_channels} channels ({variants})")
        if vit.get("hidden_act", "gelu") != "gelu" or not vit.get("qkv_bias", True):
            raise InputError(f"{source}: only hidden_act 'gelu' with qkv_bias true is supported")
        if pool.get("out_dim") is not None:
            raise InputError(f"{source}: pool_model.out_dim is not supported (published models have none)")
        if int(pool["dim"]) != int(vit["hidden_size"]):
            raise InputError(f"{source}: pool_model.dim {pool['dim']} != vit_model.hidden_size {vit['hidden_size']}")
        num_classes = int(model_config.get("num_classes", 31))
        return SubCellConfig(
            channels=channels, hidden_size=int(vit["hidden_size"]), num_hidden_layers=int(vit["num_hidden_layers"]),
            num_attention_heads=int(vit["num_attention_heads"]), intermediate_size=int(vit["intermediate_size"]),
            patch_size=int(vit["patch_size"]), image_size=int(vit["image_size"]),
            layer_norm_eps=float(vit.get("layer_norm_eps", 1e-12)), pool_inner_dim=int(pool.get("int_dim", 512)),
            pool_heads=int(pool.get("num_heads", 1)), num_classes=num_classes, num_classifiers=num_classifiers,
            class_names=SUBCELL_CLASS_NAMES if num_classes == 31 else tuple(f"class_{i}" for i in range(num_classes)),
        )
    except KeyError as err:
        raise InputError(f"{source}: missing field {err.args[0]!r}") from None
    except (TypeError, ValueError) as err:
        raise InputError(f"{source}: {err}") from None


def _guess_channels(text: str, num_channels: int) -> str | None:
    """Published file names say the variant: ``ER-DNA-Protein`` = ybg, ``MT-DNA-Protein`` = rbg."""
    if num_channels != 3:
        return None
    lowered = text.lower()
    if "er-dna-protein" in lowered:
        return "ybg"
    if "mt-dna-protein" in lowered:
        return "rbg"
    return None


def _resolve(path_text: str, yaml_path: Path, field: str) -> Path:
    path = Path(path_text)
    candidates = [path] if path.is_absolute() else [yaml_path.parent / path, *[p / path for p in yaml_path.parents[1:]]]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InputError(f"{yaml_path}: {field} {path_text!r} not found (looked beside the YAML file and in its parents)")


def load_published(config_path: str | Path, channels: str | None = None,
                   device: str | torch.device = "cpu") -> SubCellModel:
    """Load a published SubCell model (YAML config + encoder + classifier ``.pth`` files), strictly, in eval mode.

    Parameters
    ----------
    config_path : str or Path
        The published ``model_config.yaml`` (``model_config`` with ``vit_model``, ``pool_model``, ``num_classes``;
        ``encoder_path``; ``classifier_paths``). Relative paths are looked up beside the YAML file, then in its parent
        folders (the published files are relative to their repository root).
    channels : {'rybg', 'rbg', 'ybg', 'bg'}, optional
        Channel variant; inferred from the channel count (or the file names for 3 channels) when omitted.
    device : str or torch.device
        Where to put the model.

    Returns
    -------
    SubCellModel
        The encoder, pooling and classifier ensemble in eval mode.

    Raises
    ------
    InputError
        Missing or unreadable files / fields.
    CheckpointError
        A weights file does not match the architecture; the message lists missing, unexpected and misshaped keys.
    """
    import yaml

    config_path = Path(config_path)
    if not config_path.is_file():
        raise InputError(f"{config_path}: model config not found")
    try:
        spec = yaml.safe_load(config_path.read_text())
    except yaml.YAMLError as err:
        raise InputError(f"{config_path}: invalid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(spec, dict) or "model_config" not in spec or "encoder_path" not in spec:
        raise InputError(f"{config_path}: expected the fields model_config and encoder_path")
    classifier_paths = spec.get("classifier_paths") or []
    if isinstance(classifier_paths, str):
        classifier_paths = [classifier_paths]
    encoder_path = _resolve(str(spec["encoder_path"]), config_path, "encoder_path")
    classifier_files = [_resolve(str(p), config_path, "classifier_paths") for p in classifier_paths]
    num_channels = int((spec["model_config"].get("vit_model") or {}).get("num_channels", 4))
    channels = channels or _guess_channels(f"{config_path} {encoder_path}", num_channels)
    config = config_from_published(spec["model_config"], channels, len(classifier_files), source=str(config_path))

    model = SubCellModel(config)
    encoder_state = map_published_encoder_keys(read_torch_weights(encoder_path), model)
    backbone = nn.ModuleDict({"encoder": model.encoder, "pool_model": model.pool_model})
    load_state_dict_strict(backbone, encoder_state, source=str(encoder_path))
    for head, path in zip(model.classifiers, classifier_files):
        load_state_dict_strict(head, map_published_classifier_keys(read_torch_weights(path)), source=str(path))
    return model.to(device).eval()


def load_subcell(path: str | Path, device: str | torch.device = "cpu", channels: str | None = None) -> SubCellModel:
    """A SubCell model from a locscope model directory (:meth:`SubCellModel.from_pretrained`) or a published
    ``model_config.yaml`` (:func:`load_published`, with ``channels``), in eval mode."""
    if Path(path).suffix.lower() in {".yaml", ".yml"}:
        return load_published(path, channels=channels, device=device)
    return SubCellModel.from_pretrained(path, device=device)


__all__ = [
    "CHANNEL_VARIANTS", "SUBCELL_CLASS_NAMES", "GatedAttentionPooling", "OpenVINOSubCell", "SubCellConfig",
    "SubCellModel", "SubCellOutput", "build_classifier", "compile_openvino", "config_from_published", "convert_openvino",
    "count_parameters", "load_published", "load_subcell", "map_published_classifier_keys", "map_published_encoder_keys",
    "min_max_normalize", "quantize_encoder_int8",
]
