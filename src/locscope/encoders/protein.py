"""Protein sequence encoders behind one interface: the built-in encoder (trained jointly, offline default) and ESM2.

Both map residue tokens ``(B, L)`` (this module's :data:`VOCAB`) to per-residue embeddings ``(B, L, dim)`` plus a padding
mask, and both expose the same biology-informed global features of the sequence (:func:`sequence_features`).

The built-in encoder is built for what decides localization: sorting signals are short motifs near the termini
(N-terminal signal peptides and mitochondrial presequences, C-terminal CAAX / KDEL / PTS1, internal basic NLS stretches,
hydrophobic transmembrane helices). Its inputs therefore add fixed physico-chemical profiles (Kyte-Doolittle
hydropathy, charge, ...) to learned residue embeddings, and position embeddings measured from BOTH termini, before a
stack of dilated residual convolutions.

ESM2 is loaded with transformers' ``EsmModel`` from a local directory (nothing is downloaded), frozen (with a per-residue
embedding cache) or fine-tuned.
"""

from __future__ import annotations

import hashlib
import math
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from locscope.errors import InputError, one_line
from locscope.utils.sequences import keep_termini

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
PAD_ID, MASK_ID, UNKNOWN_ID = 0, 1, 2
VOCAB: tuple[str, ...] = ("<pad>", "<mask>", "X") + tuple(AMINO_ACIDS)
RESIDUE_IDS: tuple[int, ...] = tuple(range(UNKNOWN_ID, len(VOCAB)))  # tokens a sequence head may predict
_ID = {aa: i for i, aa in enumerate(VOCAB)}
_ID.update({aa: UNKNOWN_ID for aa in "BJOUZ*"})
_MASK_RE = re.compile(r"<mask(?::(\d+))?>")

# Kyte & Doolittle (1982) hydropathy; net charge at pH 7 (His half-protonated).
HYDROPATHY = dict(zip(AMINO_ACIDS, (1.8, 2.5, -3.5, -3.5, 2.8, -0.4, -3.2, 4.5, -3.9, 3.8, 1.9, -3.5, -1.6, -3.5, -4.5,
                                    -0.8, -0.7, 4.2, -0.9, -1.3)))
CHARGE = {"K": 1.0, "R": 1.0, "H": 0.5, "D": -1.0, "E": -1.0}
TERMINUS_WINDOW = 30


def encode_sequence(sequence: str) -> list[int]:
    """Token ids of one sequence; ``<mask>`` / ``<mask:N>`` insert 1 / N mask tokens, lower case is accepted.

    Raises
    ------
    InputError
        On a character that is not an amino-acid letter (naming its 1-based position).
    """
    ids: list[int] = []
    parts = _MASK_RE.split(sequence)
    # split() alternates text and the captured mask count (None for a bare <mask>)
    for index, part in enumerate(parts):
        if index % 2 == 1:
            ids.extend([MASK_ID] * int(part or 1))
            continue
        for char in part.upper():
            if char.isspace():
                continue
            if char not in _ID or char in "<>":
                raise InputError(f"sequence position {len(ids) + 1}: invalid residue {char!r} (expected amino-acid letters)")
            ids.append(_ID[char])
    return ids


def decode_tokens(tokens: torch.Tensor | list[int]) -> str:
    """Residue string of a token row (padding dropped, masks written ``<mask>``)."""
    values = tokens.tolist() if isinstance(tokens, torch.Tensor) else list(tokens)
    return "".join("<mask>" if t == MASK_ID else VOCAB[t] for t in values if t != PAD_ID)


def crop_termini(ids: list[int], max_length: int) -> list[int]:
    """Keep both termini of a sequence longer than ``max_length`` (sorting signals sit there): drop the middle
    (:func:`locscope.io.sequences.keep_termini`, the rule ``--truncate`` uses too)."""
    return keep_termini(ids, max_length)


def tokenize(sequences: list[str], max_length: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch of sequences -> ``(tokens (B, L) long padded with PAD_ID, lengths (B,) long)``.

    Sequences longer than ``max_length`` keep their first and last ``max_length / 2`` residues (:func:`crop_termini`).
    """
    rows = [crop_termini(encode_sequence(s), max_length) for s in sequences]
    for row, seq in zip(rows, sequences):
        if not row:
            raise InputError(f"sequence {seq[:20]!r}: empty sequence")
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return tokens, torch.tensor([len(r) for r in rows], dtype=torch.long)


def _residue_table() -> torch.Tensor:
    """``(V, 6)`` fixed per-token properties: hydropathy/4.5, charge, aromatic, hydroxyl, small, proline/glycine."""
    table = torch.zeros(len(VOCAB), 6)
    for aa in AMINO_ACIDS:
        i = _ID[aa]
        table[i] = torch.tensor([HYDROPATHY[aa] / 4.5, CHARGE.get(aa, 0.0), float(aa in "FWY"), float(aa in "ST"),
                                 float(aa in "AGS"), float(aa in "PG")])
    return table


NUM_SEQUENCE_FEATURES = len(AMINO_ACIDS) + 1 + 2 * 5 + 3


def sequence_features(tokens: torch.Tensor) -> torch.Tensor:
    """Biology-informed global features of each sequence, ``(B, NUM_SEQUENCE_FEATURES)`` float.

    Amino-acid composition (20) and the fraction of masked/unknown residues; for the N- and C-terminal 30 residues the
    mean hydropathy, net charge, fraction of Arg/Lys, of Asp/Glu and of Ser/Thr (presequences are amphipathic and basic,
    signal peptides hydrophobic); the maximum mean hydropathy over 19-residue windows (a transmembrane-helix
    indicator), the number of such windows above 1.6 (Kyte-Doolittle's TM threshold) / 10, and log length / 8.
    """
    batch, width = tokens.shape
    valid = (tokens != PAD_ID).float()
    lengths = valid.sum(1).clamp(min=1)
    onehot = F.one_hot(tokens, len(VOCAB)).float() * valid[..., None]
    composition = onehot[..., UNKNOWN_ID + 1:].sum(1) / lengths[:, None]  # (B, 20)
    other = (onehot[..., MASK_ID] + onehot[..., UNKNOWN_ID]).sum(1, keepdim=True) / lengths[:, None]
    props = _residue_table().to(tokens.device)[tokens]  # (B, L, 6)
    hyd, charge = props[..., 0], props[..., 1]
    basic = ((tokens == _ID["K"]) | (tokens == _ID["R"])).float()
    acidic = ((tokens == _ID["D"]) | (tokens == _ID["E"])).float()
    hydroxyl = props[..., 3]
    positions = torch.arange(width, device=tokens.device)[None, :]
    n_term = (positions < TERMINUS_WINDOW).float() * valid
    c_term = (positions >= lengths[:, None] - TERMINUS_WINDOW).float() * valid
    blocks = []
    for region in (n_term, c_term):
        count = region.sum(1).clamp(min=1)
        blocks.append(torch.stack([(q * region).sum(1) / count for q in (hyd, charge, basic, acidic, hydroxyl)], 1))
    window = 19
    if width >= window:
        windows = F.avg_pool1d((hyd * valid)[:, None], window, stride=1).squeeze(1)  # (B, L - 18)
        full = F.avg_pool1d(valid[:, None], window, stride=1).squeeze(1) > 0.999
        windows = windows.masked_fill(~full, -1.0)
        max_window = windows.max(1).values
        tm_windows = (windows > 1.6 / 4.5).float().sum(1) / 10.0
    else:
        max_window = (hyd * valid).sum(1) / lengths
        tm_windows = torch.zeros(batch, device=tokens.device)
    extra = torch.stack([max_window, tm_windows, lengths.log() / 8.0], 1)
    return torch.cat([composition, other, *blocks, extra], 1)


@dataclass
class ProteinEncoding:
    """Output of a protein encoder.

    Attributes
    ----------
    residues : torch.Tensor
        ``(B, L, dim)`` per-residue embeddings.
    mask : torch.Tensor
        ``(B, L)`` bool, True at real (non-padding) positions.
    features : torch.Tensor
        ``(B, NUM_SEQUENCE_FEATURES)`` global sequence features (:func:`sequence_features`).
    """

    residues: torch.Tensor
    mask: torch.Tensor
    features: torch.Tensor


def _terminus_buckets(lengths: torch.Tensor, width: int, num_buckets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-spaced distance buckets from the N and the C terminus, ``(B, L)`` each: exact up to 16, coarser beyond."""
    positions = torch.arange(width, device=lengths.device)[None, :].expand(lengths.shape[0], width)
    from_c = (lengths[:, None] - 1 - positions).clamp(min=0)

    def bucket(distance: torch.Tensor) -> torch.Tensor:
        exact = 16
        log_part = exact + (torch.log((distance.float() + 1) / exact) / math.log(2048 / exact) * (num_buckets - exact)).long()
        return torch.where(distance < exact, distance, log_part.clamp(max=num_buckets - 1))

    return bucket(positions), bucket(from_c)


class _ConvBlock(nn.Module):
    """Pre-norm residual block: LayerNorm -> depthwise dilated conv -> pointwise MLP (ConvNeXt-style, 1-D)."""

    def __init__(self, dim: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv1d(dim, dim, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation, groups=dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm(x) * mask[..., None]
        h = self.conv(h.transpose(1, 2)).transpose(1, 2)  # (B, L, dim)
        return (x + self.mlp(h)) * mask[..., None]


class BuiltinProteinEncoder(nn.Module):
    """The offline default: residue embeddings + physico-chemical profiles + two-terminus positions + dilated convs.

    Parameters
    ----------
    dim : int
        Embedding width.
    num_layers : int
        Residual convolution blocks (dilations cycle 1, 2, 4, 8: receptive field grows to ~100 residues).
    kernel_size : int
        Convolution width (odd).
    num_position_buckets : int
        Buckets of the distance to each terminus.

    Examples
    --------
    >>> encoder = BuiltinProteinEncoder(dim=16, num_layers=1)
    >>> tokens, _ = tokenize(["MKKRKV", "MLSRAV"])
    >>> encoder(tokens).residues.shape
    torch.Size([2, 6, 16])
    """

    def __init__(self, dim: int = 128, num_layers: int = 4, kernel_size: int = 9, num_position_buckets: int = 48) -> None:
        super().__init__()
        self.dim = dim
        self.num_position_buckets = num_position_buckets
        self.embed = nn.Embedding(len(VOCAB), dim, padding_idx=PAD_ID)
        self.register_buffer("residue_table", _residue_table(), persistent=False)
        self.properties = nn.Linear(self.residue_table.shape[1], dim)
        self.from_n = nn.Embedding(num_position_buckets, dim)
        self.from_c = nn.Embedding(num_position_buckets, dim)
        self.blocks = nn.ModuleList(_ConvBlock(dim, kernel_size, 2 ** (i % 4)) for i in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> ProteinEncoding:
        """``tokens`` ``(B, L)`` long -> :class:`ProteinEncoding` with ``residues`` ``(B, L, dim)``."""
        mask = tokens != PAD_ID
        lengths = mask.sum(1)
        n_bucket, c_bucket = _terminus_buckets(lengths, tokens.shape[1], self.num_position_buckets)
        x = self.embed(tokens) + self.properties(self.residue_table[tokens]) + self.from_n(n_bucket) + self.from_c(c_bucket)
        x = x * mask[..., None]
        for block in self.blocks:
            x = block(x, mask.float())
        return ProteinEncoding(self.norm(x) * mask[..., None], mask, sequence_features(tokens))


# The ESM-2 alphabet (fair-esm / transformers EsmTokenizer vocab.txt order), used when the directory has no vocab.txt.
ESM_ALPHABET = ("<cls>", "<pad>", "<eos>", "<unk>", "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q", "N",
                "F", "Y", "M", "H", "W", "C", "X", "B", "U", "Z", "O", ".", "-", "<null_1>", "<mask>")


class Esm2ProteinEncoder(nn.Module):
    """ESM2 (transformers ``EsmModel``) from a local directory, frozen (cached) or fine-tuned.

    Parameters
    ----------
    path : str or Path
        Directory holding ``config.json`` + weights as written by ``EsmModel.save_pretrained`` (optionally a
        ``vocab.txt``; otherwise the standard ESM-2 alphabet is assumed).
    finetune : bool
        Train the ESM2 weights (default: frozen, run without gradients).
    cache_dir : str or Path, optional
        Frozen mode: also keep per-residue embeddings on disk as ``<sha1>.safetensors`` (always cached in memory).

    Raises
    ------
    InputError
        If ``path`` is not a readable ESM directory.
    """

    def __init__(self, path: str | Path, finetune: bool = False, cache_dir: str | Path | None = None) -> None:
        super().__init__()
        from transformers import EsmConfig, EsmModel

        path = Path(path)
        if not (path / "config.json").is_file():
            raise InputError(f"{path}: not an ESM2 model directory (config.json missing); ESM2 weights are never downloaded")
        from locscope.utils.checkpoint import check_finite_weights, unsafe_pickle_error

        try:
            config = EsmConfig.from_pretrained(str(path), local_files_only=True)
            self.esm = EsmModel.from_pretrained(str(path), config=config, local_files_only=True, add_pooling_layer=False)
        except pickle.UnpicklingError as err:  # a pytorch_model.bin holding more than tensors
            raise unsafe_pickle_error(path, err) from None
        except (OSError, ValueError) as err:
            raise InputError(f"{path}: cannot load ESM2 weights ({one_line(str(err))})") from None
        check_finite_weights(self.esm.state_dict(), str(path))
        self.dim = config.hidden_size
        self.finetune = finetune
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._cache: dict[str, torch.Tensor] = {}
        vocab_file = path / "vocab.txt"
        alphabet = vocab_file.read_text().split() if vocab_file.is_file() else list(ESM_ALPHABET)
        index = {tok: i for i, tok in enumerate(alphabet)}
        lookup = [index["<pad>"], index["<mask>"], index.get("X", index["<unk>"])] + [index[aa] for aa in AMINO_ACIDS]
        self.register_buffer("to_esm", torch.tensor(lookup, dtype=torch.long), persistent=False)
        self.cls_id, self.eos_id, self.pad_id = index["<cls>"], index["<eos>"], index["<pad>"]
        if not finetune:
            self.esm.requires_grad_(False)
            self.esm.eval()

    def train(self, mode: bool = True) -> "Esm2ProteinEncoder":
        super().train(mode)
        if not self.finetune:
            self.esm.eval()  # a frozen ESM2 keeps dropout off
        return self

    def _run(self, tokens: torch.Tensor) -> torch.Tensor:
        """ESM2 last hidden state for our tokens, ``(B, L, dim)`` (the <cls>/<eos> positions removed)."""
        mask = tokens != PAD_ID
        lengths = mask.sum(1)
        esm_ids = self.to_esm[tokens]
        batch = tokens.shape[0]
        ids = torch.full((batch, tokens.shape[1] + 2), self.pad_id, dtype=torch.long, device=tokens.device)
        ids[:, 0] = self.cls_id
        ids[:, 1:-1] = esm_ids
        ids[torch.arange(batch, device=tokens.device), lengths + 1] = self.eos_id
        attention = ids != self.pad_id
        hidden = self.esm(input_ids=ids, attention_mask=attention.long()).last_hidden_state
        return hidden[:, 1:-1] * mask[..., None]

    def _cached(self, tokens: torch.Tensor) -> torch.Tensor:
        rows = []
        for row in tokens:
            key = hashlib.sha1(row[row != PAD_ID].cpu().numpy().tobytes()).hexdigest()
            if key not in self._cache:
                disk = self.cache_dir / f"{key}.safetensors" if self.cache_dir else None
                if disk is not None and disk.is_file():
                    from safetensors.torch import load_file

                    self._cache[key] = load_file(str(disk))["residues"]
                else:
                    with torch.no_grad():
                        value = self._run(row[row != PAD_ID][None])[0].detach().cpu()
                    self._cache[key] = value
                    if disk is not None:
                        from safetensors.torch import save_file

                        from locscope.utils.atomic import atomic_path

                        with atomic_path(disk) as tmp:
                            save_file({"residues": value.contiguous()}, str(tmp))
            rows.append(self._cache[key])
        out = torch.zeros(tokens.shape[0], tokens.shape[1], self.dim)
        for i, value in enumerate(rows):
            out[i, : value.shape[0]] = value
        return out.to(tokens.device)

    def forward(self, tokens: torch.Tensor) -> ProteinEncoding:
        """``tokens`` ``(B, L)`` long -> :class:`ProteinEncoding` with ``residues`` ``(B, L, hidden_size)``."""
        residues = self._run(tokens) if self.finetune else self._cached(tokens)
        return ProteinEncoding(residues, tokens != PAD_ID, sequence_features(tokens))


def build_protein_encoder(kind: str, dim: int = 128, num_layers: int = 4, esm_path: str | None = None,
                          esm_finetune: bool = False, cache_dir: str | None = None) -> nn.Module:
    """Build the encoder named ``kind`` (``'builtin'`` or ``'esm2'``); both return :class:`ProteinEncoding`.

    Raises
    ------
    ValueError
        For an unknown ``kind`` or ``'esm2'`` without ``esm_path``.
    """
    if kind == "builtin":
        return BuiltinProteinEncoder(dim=dim, num_layers=num_layers)
    if kind == "esm2":
        if not esm_path:
            raise ValueError("protein_encoder='esm2' needs esm_path (a local directory with ESM2 weights)")
        return Esm2ProteinEncoder(esm_path, finetune=esm_finetune, cache_dir=cache_dir)
    raise ValueError(f"protein_encoder={kind!r}: accepted values are builtin, esm2")
