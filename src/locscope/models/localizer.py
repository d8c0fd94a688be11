"""A sequence -> localization classifier (level 1, 2 and 3, multi-label) built for protein sorting signals.

Sorting signals are short, position-bound and chemically characteristic: N-terminal signal peptides (a hydrophobic
core 7-15 residues after a charged start) and mitochondrial / plastid presequences (amphipathic, Arg-rich, acidic-
poor, 15-70 residues), C-terminal retention and targeting tripeptides (KDEL / HDEL, PTS1 SKL, CAAX), internal basic
nuclear localisation signals, leucine-rich export signals and ~20-residue hydrophobic transmembrane helices. The
network reads them with four views of one residue encoding, read top to bottom:

1. Residues -> ``width`` features: learned embeddings plus a projection of fixed physico-chemical properties
   (Kyte-Doolittle hydropathy, charge, aromatic, hydroxyl, small, Pro/Gly; :mod:`locscope.encoders.protein`).
   With ``protein_encoder='esm2'`` ESM2's per-residue embeddings (a local directory) are projected instead.
2. Whole protein (cropped to ``max_length`` keeping both termini): ``layers`` residual dilated depthwise convolution
   blocks (0 in the bundled model, for CPU training) summarised by a masked max and mean, and sliding-window residue
   profiles (:data:`PROFILES`: basic NLS-like, leucine-rich NES-like, hydrophobic transmembrane / signal-peptide
   stretches) summarised by their maximum and the share of windows above a threshold.
3. The first ``n_window`` and last ``c_window`` residues get their own learned position embeddings and convolution,
   max-pooled over ``window_segments`` consecutive segments each, so the model knows *where* near a terminus a pattern
   sits (a hydrophobic stretch at residues 5-20 is a signal peptide, at 200 a transmembrane helix).
4. Global features: amino-acid composition and terminal hydropathy / charge summaries
   (:func:`locscope.encoders.protein.sequence_features`), dipeptide composition (400), the profiles of 2., and the last
   ``c_terminal_residues`` residues one-hot (C-terminal tripeptide signals are exact).

The concatenation goes through a two-layer MLP to three sigmoid heads: level-1, level-2 and level-3 classes
(``locscope.data.ontology``), trained jointly (:mod:`locscope.training.localizer_module`).

Label styles: sources annotate the same protein differently (Swiss-Prot calls any membrane protein "Membrane" and
gathers nucleoli into the nucleus; imaging of tagged human proteins sees the ER, Golgi and vesicles of such a protein as
endomembrane and resolves nucleoli). With several ``label_styles`` the first style's heads read the shared features
and every further style is a *translation* of it: its three heads read the first style's logits (all levels, scaled
by :data:`TRANSLATION_LOGIT_SCALE`) together with L2-normalised hashed counts of the protein's 1-3-mers
(``kmer_buckets``), few enough inputs to be fitted on a small source without overfitting the network
(:func:`locscope.training.localizer_module.fit_translation_heads`). ``source_styles`` says which label source was
trained through which style, and a prediction names the style it wants (default: the first).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from locscope.data import ontology
from locscope.encoders.protein import (AMINO_ACIDS, NUM_SEQUENCE_FEATURES, PAD_ID, UNKNOWN_ID, VOCAB, _ConvBlock,
                                       _residue_table, sequence_features, tokenize)
from locscope.utils.checkpoint import PretrainedMixin

NUM_DIPEPTIDES = len(AMINO_ACIDS) ** 2
# (residues, window): sliding-window profiles over the whole protein; their maximum and the share of windows above
# ``threshold`` are features. Basic stretches (NLS: PKKKRKV), acidic stretches, leucine-rich stretches (NES:
# LxxxLxxLxL) and hydrophobic stretches (19-residue transmembrane helices, 11-residue signal-peptide cores).
PROFILES: tuple[tuple[str, int, float], ...] = (
    ("KR", 7, 4 / 7), ("KR", 4, 0.99), ("DE", 7, 4 / 7), ("LIVMF", 10, 0.5), ("LIVMFAWC", 11, 0.8),
    ("LIVMFAWC", 19, 0.7), ("ST", 10, 0.5), ("PG", 10, 0.5), ("Q", 10, 0.5), ("H", 5, 0.6),
)
NUM_PROFILE_FEATURES = 2 * len(PROFILES)
TRANSLATION_LOGIT_SCALE = 0.1  # first-style logits (~ -10..5) brought near the scale of the unit-norm k-mer counts


@dataclass
class LocalizerConfig:
    """Hyper-parameters of :class:`SequenceLocalizer` (saved as ``config.json`` beside the weights).

    Parameters
    ----------
    level1_classes, level2_classes, level3_classes : tuple of str
        Output classes of each head (default: the full ontology, plastid included).
    width : int
        Residue feature width.
    layers : int
        Whole-protein convolution blocks (dilations 1, 2, 4, 8, ...).
    kernel_size : int
        Convolution width (odd).
    n_window, c_window : int
        Residues of the N- and C-terminal windows.
    window_segments : int
        Max-pooled segments per terminal window.
    c_terminal_residues : int
        Last residues given one-hot.
    hidden : int
        MLP width.
    dropout : float
    max_length : int
        Longer proteins keep their first and last ``max_length / 2`` residues.
    protein_encoder : {'builtin', 'esm2'}
    esm_path : str or None
        ESM2 directory for ``protein_encoder='esm2'`` (frozen; never downloaded).
    label_styles : tuple of str
        Annotation styles with their own heads (see the module docstring); the first is the default.
    kmer_buckets : int
        Hashed 1-3-mer buckets read by the heads of the styles after the first (0: logits only).
    source_styles : dict
        Label source (``locscope.io.corpus.SOURCE_PRIORITY``) -> its style; sources not named use the first style.
    """

    level1_classes: tuple[str, ...] = ontology.LEVEL1
    level2_classes: tuple[str, ...] = ontology.LEVEL2
    level3_classes: tuple[str, ...] = ontology.LEVEL3
    width: int = 64
    layers: int = 3
    kernel_size: int = 9
    n_window: int = 96
    c_window: int = 48
    window_segments: int = 4
    c_terminal_residues: int = 5
    hidden: int = 256
    dropout: float = 0.2
    max_length: int = 1000
    protein_encoder: str = "builtin"
    esm_path: str | None = None
    label_styles: tuple[str, ...] = ("reference",)
    source_styles: dict = dataclasses.field(default_factory=dict)
    kmer_buckets: int = 0

    def __post_init__(self) -> None:
        self.label_styles = tuple(self.label_styles)
        if not self.label_styles or len(set(self.label_styles)) != len(self.label_styles) or not all(
                style.isidentifier() for style in self.label_styles):
            raise ValueError(f"label_styles={self.label_styles!r}: need distinct identifier names, at least one")
        unknown = sorted(set(self.source_styles.values()) - set(self.label_styles))
        if unknown:
            raise ValueError(f"source_styles names styles {unknown} that are not in label_styles={self.label_styles}")
        if self.protein_encoder not in ("builtin", "esm2"):
            raise ValueError(f"protein_encoder={self.protein_encoder!r}: accepted values are builtin, esm2")
        if self.protein_encoder == "esm2" and not self.esm_path:
            raise ValueError("protein_encoder='esm2' needs esm_path (a local directory with ESM2 weights)")
        for name in ("n_window", "c_window"):
            if getattr(self, name) % self.window_segments:
                raise ValueError(f"{name}={getattr(self, name)} must be a multiple of window_segments="
                                 f"{self.window_segments}")
        if self.max_length < self.n_window + self.c_window:
            raise ValueError(f"max_length={self.max_length} must be >= n_window + c_window")

    def classes(self, level: str) -> tuple[str, ...]:
        """Output classes of ``level`` (``'level1'``, ``'level2'``, ``'level3'``)."""
        if level == "level1":
            return self.level1_classes
        if level == "level2":
            return self.level2_classes
        if level == "level3":
            return self.level3_classes
        raise ValueError(f"level={level!r}: accepted values are level1, level2, level3")

    def style_of(self, source: str) -> str:
        """The label style a protein annotated by ``source`` was trained through."""
        return self.source_styles.get(source, self.label_styles[0])

    def check_style(self, style: str | None) -> str:
        """``style`` (None = the default, the first) checked against :attr:`label_styles`."""
        if style is None:
            return self.label_styles[0]
        if style not in self.label_styles:
            raise ValueError(f"style={style!r}: this model's label styles are {', '.join(self.label_styles)}")
        return style


def head_name(style_index: int, style: str, level: str) -> str:
    """Key of a head in :attr:`SequenceLocalizer.heads`: the level for the first style (so single-style weights keep
    their names), ``'<style>_<level>'`` for the others."""
    return level if style_index == 0 else f"{style}_{level}"


def dipeptide_composition(tokens: torch.Tensor) -> torch.Tensor:
    """Fraction of each of the 400 standard dipeptides, ``(B, 400)`` float (pairs with other tokens ignored)."""
    residue = tokens - (UNKNOWN_ID + 1)  # 0..19 for standard residues
    valid = (residue[:, :-1] >= 0) & (residue[:, 1:] >= 0)
    pair = (residue[:, :-1].clamp(min=0) * len(AMINO_ACIDS) + residue[:, 1:].clamp(min=0)) * valid
    counts = torch.zeros(tokens.shape[0], NUM_DIPEPTIDES, device=tokens.device)
    counts.scatter_add_(1, pair, valid.float())
    return counts / valid.sum(1, keepdim=True).clamp(min=1)


def kmer_counts(tokens: torch.Tensor, buckets: int) -> torch.Tensor:
    """L2-normalised counts of the protein's 1-, 2- and 3-mers of standard residues hashed into ``buckets``,
    ``(B, buckets)`` float (a fixed multiplicative hash of the k-mer's residue codes; padding never counts)."""
    residue = tokens - UNKNOWN_ID  # 1..20 standard residues, 0 for X, negative for padding / mask
    counts = torch.zeros(tokens.shape[0], buckets, device=tokens.device)
    for k in (1, 2, 3):
        if tokens.shape[1] < k:
            continue
        windows = residue.unfold(1, k, 1)  # (B, L - k + 1, k)
        valid = (windows > 0).all(2)
        code = torch.zeros_like(windows[..., 0])
        for j in range(k):
            code = code * 21 + windows[..., j].clamp(min=0)
        code = code + k * 21 ** 3  # 1-, 2- and 3-mers never share a code
        bucket = (code * 2654435761) % buckets
        counts.scatter_add_(1, bucket * valid, valid.float())
    return counts / counts.norm(dim=1, keepdim=True).clamp(min=1e-6)


def profile_features(tokens: torch.Tensor) -> torch.Tensor:
    """Maximum and share-above-threshold of each sliding-window residue profile in :data:`PROFILES`,
    ``(B, 2 * len(PROFILES))`` float; windows lie inside the protein (a protein shorter than a window gives 0)."""
    valid = (tokens != PAD_ID).float()
    out = []
    for residues, window, threshold in PROFILES:
        ids = torch.tensor([VOCAB.index(a) for a in residues], device=tokens.device)
        indicator = torch.isin(tokens, ids).float()
        if tokens.shape[1] < window:
            out += [torch.zeros(tokens.shape[0], device=tokens.device)] * 2
            continue
        density = F.avg_pool1d(indicator[:, None], window, stride=1).squeeze(1)  # (B, L - window + 1)
        inside = F.avg_pool1d(valid[:, None], window, stride=1).squeeze(1) > 0.999
        density = density * inside
        out.append(density.amax(1))
        out.append(((density >= threshold) & inside).float().sum(1) / inside.float().sum(1).clamp(min=1))
    return torch.stack(out, 1)


# sequence_features' column of the best 19-residue hydropathy window: a protein shorter than the window gets its mean
# hydropathy when its batch is narrower than the window, -1 otherwise; here always its mean hydropathy, so a
# prediction never depends on the other proteins of the batch.
_MAX_WINDOW_COLUMN = len(AMINO_ACIDS) + 1 + 2 * 5
_HYDROPATHY_WINDOW = 19


def _batch_independent(features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    valid = (tokens != PAD_ID).float()
    lengths = valid.sum(1)
    short = lengths < _HYDROPATHY_WINDOW
    if not short.any():
        return features
    hydropathy = _residue_table().to(tokens.device)[tokens][..., 0]
    mean = (hydropathy * valid).sum(1) / lengths.clamp(min=1)
    features = features.clone()
    features[:, _MAX_WINDOW_COLUMN] = torch.where(short, mean, features[:, _MAX_WINDOW_COLUMN])
    return features


def terminal_windows(x: torch.Tensor, lengths: torch.Tensor, n_window: int, c_window: int) -> tuple[torch.Tensor, ...]:
    """The first ``n_window`` and last ``c_window`` positions of ``x`` ``(B, L, D)``, zero-padded for short proteins.

    Returns ``(n_part (B, n_window, D), n_mask (B, n_window), c_part (B, c_window, D), c_mask (B, c_window))``; in
    ``c_part`` the last residue sits at index ``c_window - 1``.
    """
    batch, width, dim = x.shape
    padded = F.pad(x, (0, 0, c_window, max(0, n_window - width)))  # (B, c_window + L', D)
    n_index = torch.arange(n_window, device=x.device)
    n_part = padded[:, c_window + n_index]
    n_mask = n_index[None, :] < lengths[:, None]
    # position lengths - c_window + j in x is c_window + lengths - c_window + j = lengths + j in padded
    c_index = lengths[:, None] + torch.arange(c_window, device=x.device)[None, :]  # (B, c_window)
    c_part = padded.gather(1, c_index[..., None].expand(-1, -1, dim))
    c_mask = torch.arange(c_window, device=x.device)[None, :] >= (c_window - lengths)[:, None]
    return n_part, n_mask, c_part, c_mask


class _TerminalWindow(nn.Module):
    """Learned positions + one convolution block over a terminal window, max-pooled per segment -> ``(B, segs * D)``."""

    def __init__(self, width: int, window: int, segments: int, kernel_size: int) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.zeros(window, width))
        nn.init.normal_(self.position, std=0.02)
        self.block = _ConvBlock(width, kernel_size, 1)
        self.segments = segments

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.block((x + self.position) * mask[..., None], mask.float())  # (B, window, D)
        h = h.masked_fill(~mask[..., None], -1e4)
        batch, window, dim = h.shape
        pooled = h.reshape(batch, self.segments, window // self.segments, dim).amax(2)  # (B, segs, D)
        return pooled.masked_fill(pooled < -1e3, 0.0).reshape(batch, -1)  # segments beyond a short protein -> 0


class SequenceLocalizer(PretrainedMixin, nn.Module):
    """Sequence -> level-1 / level-2 / level-3 localization logits (see the module docstring).

    Examples
    --------
    >>> model = SequenceLocalizer(LocalizerConfig(width=8, layers=1, hidden=16))
    >>> tokens = model.tokenize(["MKKRKVLLSSKL", "MLSRAVCGTSRQ"])
    >>> {k: v.shape[1] for k, v in model(tokens).items()}
    {'level1': 22, 'level2': 10, 'level3': 8}
    """

    config_class = LocalizerConfig

    def __init__(self, config: LocalizerConfig) -> None:
        super().__init__()
        self.config = config
        width = config.width
        if config.protein_encoder == "esm2":
            from locscope.encoders.protein import Esm2ProteinEncoder

            self.esm = Esm2ProteinEncoder(config.esm_path)
            self.embed = None
            self.esm_projection = nn.Linear(self.esm.dim, width)
        else:
            self.esm = None
            self.embed = nn.Embedding(len(VOCAB), width, padding_idx=PAD_ID)
            self.register_buffer("residue_table", _residue_table(), persistent=False)
            self.properties = nn.Linear(self.residue_table.shape[1], width)
        self.blocks = nn.ModuleList(_ConvBlock(width, config.kernel_size, 2 ** (i % 4)) for i in range(config.layers))
        self.n_terminus = _TerminalWindow(width, config.n_window, config.window_segments, config.kernel_size)
        self.c_terminus = _TerminalWindow(width, config.c_window, config.window_segments, config.kernel_size)
        global_features = (NUM_SEQUENCE_FEATURES + NUM_DIPEPTIDES + NUM_PROFILE_FEATURES
                           + config.c_terminal_residues * len(VOCAB))
        self.global_projection = nn.Sequential(nn.Linear(global_features, width * 2), nn.GELU())
        features = 2 * width + 2 * config.window_segments * width + 2 * width
        self.mlp = nn.Sequential(nn.LayerNorm(features), nn.Dropout(config.dropout), nn.Linear(features, config.hidden),
                                 nn.GELU(), nn.Dropout(config.dropout))
        logits = sum(len(config.classes(level)) for level in ("level1", "level2", "level3"))
        self.heads = nn.ModuleDict({
            head_name(i, style, level): nn.Linear(config.hidden if i == 0 else logits + config.kmer_buckets,
                                                  len(config.classes(level)))
            for i, style in enumerate(config.label_styles) for level in ("level1", "level2", "level3")})

    def tokenize(self, sequences: list[str]) -> torch.Tensor:
        """``(B, L)`` tokens, long proteins cropped to ``max_length`` keeping both termini."""
        return tokenize(list(sequences), self.config.max_length)[0]

    def residue_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, L, width)`` residue features before the convolutions."""
        if self.esm is not None:
            return self.esm_projection(self.esm(tokens).residues)
        return self.embed(tokens) + self.properties(self.residue_table[tokens])

    def global_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, n)`` fixed features: :func:`sequence_features`, dipeptides, :func:`profile_features`, C-terminal
        residues one-hot."""
        lengths = (tokens != PAD_ID).sum(1)
        last = self.config.c_terminal_residues
        index = (lengths[:, None] - last + torch.arange(last, device=tokens.device)[None, :])
        tail = torch.where(index >= 0, tokens.gather(1, index.clamp(min=0)), torch.full_like(index, PAD_ID))
        tail_onehot = F.one_hot(tail, len(VOCAB)).float().reshape(tokens.shape[0], -1)
        return torch.cat([_batch_independent(sequence_features(tokens), tokens), dipeptide_composition(tokens),
                          profile_features(tokens), tail_onehot], 1)

    def forward(self, tokens: torch.Tensor, style: str | None = None) -> dict[str, torch.Tensor]:
        """``tokens`` ``(B, L)`` -> ``{'level1': (B, n1), 'level2': (B, n2), 'level3': (B, n3)}`` logits of the
        label ``style`` (default: the first of ``config.label_styles``)."""
        style = self.config.check_style(style)
        logits = self.style_logits(self.features(tokens))
        if style == self.config.label_styles[0]:
            return logits
        return self.style_logits(self.translation_inputs(tokens, logits), style)

    def translation_inputs(self, tokens: torch.Tensor, logits: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(B, n_logits + kmer_buckets)`` input of the heads of the styles after the first: the first style's
        logits (scaled) and the hashed k-mer counts."""
        parts = [TRANSLATION_LOGIT_SCALE * torch.cat([logits[level] for level in ("level1", "level2", "level3")], 1)]
        if self.config.kmer_buckets:
            parts.append(kmer_counts(tokens, self.config.kmer_buckets))
        return torch.cat(parts, 1)

    def style_logits(self, inputs: torch.Tensor, style: str | None = None) -> dict[str, torch.Tensor]:
        """Logits of one label style from its heads' inputs: :meth:`features` for the first style,
        :meth:`translation_inputs` for the others."""
        style = self.config.check_style(style)
        index = self.config.label_styles.index(style)
        return {level: self.heads[head_name(index, style, level)](inputs) for level in ("level1", "level2", "level3")}

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, hidden)`` shared features of ``tokens`` (the input of every head)."""
        mask = tokens != PAD_ID
        lengths = mask.sum(1)
        x = self.residue_features(tokens) * mask[..., None]  # (B, L, width)
        n_part, n_mask, c_part, c_mask = terminal_windows(x, lengths, self.config.n_window, self.config.c_window)
        h = x
        for block in self.blocks:
            h = block(h, mask.float())
        body_max = h.masked_fill(~mask[..., None], -1e4).amax(1)
        body_mean = h.sum(1) / lengths[:, None].clamp(min=1)
        pooled = torch.cat([body_max, body_mean, self.n_terminus(n_part, n_mask), self.c_terminus(c_part, c_mask),
                            self.global_projection(self.global_features(tokens))], 1)
        return self.mlp(pooled)

    @torch.no_grad()
    def predict_probabilities(self, tokens: torch.Tensor, style: str | None = None) -> dict[str, torch.Tensor]:
        """Sigmoid probabilities of every class (multi-label), same keys and shapes as :meth:`forward`."""
        return {level: logits.float().sigmoid() for level, logits in self(tokens, style).items()}

    @torch.no_grad()
    def predict_sequences(self, sequences: list[str], batch_size: int = 64,
                          style: str | None = None) -> dict[str, np.ndarray]:
        """Probabilities ``{'level1': (N, n1), ...}`` float32 of ``sequences`` in label ``style``, in input order.

        Batches group sequences of similar length (less padding); each sequence's result does not depend on the
        others (no batch statistics).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.config.check_style(style)
        was_training = self.training
        self.eval()
        order = np.argsort([len(s) for s in sequences], kind="stable")
        out = {level: np.zeros((len(sequences), len(self.config.classes(level))), np.float32)
               for level in ("level1", "level2", "level3")}
        device = next(self.parameters()).device
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            probabilities = self.predict_probabilities(self.tokenize([sequences[i] for i in chunk]).to(device), style)
            for level in out:
                out[level][chunk] = probabilities[level].cpu().numpy()
        self.train(was_training)
        return out


def localizer_config(**overrides) -> LocalizerConfig:
    """The default configuration with ``overrides`` applied (unknown names are a TypeError naming them)."""
    return dataclasses.replace(LocalizerConfig(), **overrides)
