"""Data for CELL-Diff training: store items in memory, seeded epoch sampling with sequence re-pairing, batching.

Images are held as float32 in [-1, 1] (the seed's image range) at the model's resolution. Every random choice is a
function of ``(seed, epoch)`` (sampler) or ``(seed, global step, rank)`` (the training step), so a resumed run replays
exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from locscope.channels import PROTEIN
from locscope.encoders.protein import PAD_ID, crop_termini, encode_sequence
from locscope.errors import ArgumentError, InputError
from locscope.utils.atomic import atomic_path


def to_unit_float(array: np.ndarray) -> np.ndarray:
    """Integer images -> float32 in [0, 1] by their dtype range; float images are clipped to [0, 1]."""
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.float32) / np.iinfo(array.dtype).max
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def resize_stack(images: np.ndarray, size: int) -> np.ndarray:
    """``(N, C, H, W)`` -> ``(N, C, size, size)`` by area averaging (down) or bilinear (up) interpolation."""
    if images.shape[-2:] == (size, size):
        return images
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    mode = "area" if images.shape[-1] >= size else "bilinear"
    return F.interpolate(tensor, size=(size, size), mode=mode).numpy()


@dataclass
class CellDiffSplit:
    """One split of a store, in memory.

    Attributes
    ----------
    images : np.ndarray
        ``(N, 1 + n_landmarks, S, S)`` float32 in [-1, 1]: protein first, then the landmarks in model order.
    labels : np.ndarray
        ``(N, n_classes)`` float32 multi-hot compartment labels (level 3 by default).
    tokens : list of list of int
        Residue tokens per item (termini-preserving crop to the model's maximum length).
    sequences, ids, protein_ids : list of str
    store_indices : np.ndarray
        ``(N,)`` item indices in the store.
    fractions : np.ndarray
        ``(N, n_fraction_classes)`` float32 true compartment fractions (the simulator's ``provenance.compartments``;
        all zero when unknown; width 0 when the model has no compartment bottleneck).
    masks : np.ndarray or None
        ``(N, n_fraction_classes, S, S)`` uint8 compartment masks (:func:`split_masks`; layout-prior training).
    """

    images: np.ndarray
    labels: np.ndarray
    tokens: list[list[int]]
    sequences: list[str]
    ids: list[str]
    protein_ids: list[str]
    store_indices: np.ndarray
    fractions: np.ndarray | None = None
    masks: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.fractions is None:
            self.fractions = np.zeros((len(self.ids), 0), np.float32)

    def __len__(self) -> int:
        return len(self.ids)


def load_split(store, split: str, landmark_channels: Sequence[str], classes: Sequence[str], image_size: int,
               max_sequence_length: int, label_level: str = "level3", limit: int | None = None,
               fraction_classes: Sequence[str] = (), spread: bool = False) -> CellDiffSplit:
    """Read ``split`` of ``store`` (a :class:`locscope.data.store.Store`) into memory at ``image_size``.

    ``limit`` keeps the first items of the split, or, with ``spread``, items evenly spaced over it (the validation
    subset: consecutive items are often cells of one protein). ``fraction_classes`` fills ``fractions`` from each item's
    ``provenance.compartments``.

    Raises
    ------
    InputError
        If the store lacks the protein or a landmark channel, or an item has no sequence.
    """
    for channel in (PROTEIN, *landmark_channels):
        if channel not in store.channels:
            raise InputError(f"{store.path}: channel {channel!r} missing (store channels: {', '.join(store.channels)})")
    indices = store.split_indices(split)
    if limit is not None and spread and 0 < limit < len(indices):
        # evenly spaced over the split: a validation subset that spans its proteins and compartments
        indices = indices[np.linspace(0, len(indices) - 1, limit).round().astype(int)]
    elif limit is not None:
        indices = indices[:limit]
    if not len(indices):
        images = np.zeros((0, 1 + len(landmark_channels), image_size, image_size), np.float32)
    else:  # one channel at a time, selected before conversion and resized before stacking: bounded memory
        images = np.stack([resize_stack(to_unit_float(np.asarray(store.image_array(ch)[:])[indices])[:, None],
                                        image_size)[:, 0] for ch in (PROTEIN, *landmark_channels)], axis=1) * 2.0 - 1.0
    class_index = {name: i for i, name in enumerate(classes)}
    labels = np.zeros((len(indices), len(classes)), np.float32)
    fraction_index = {name: i for i, name in enumerate(fraction_classes)}
    fractions = np.zeros((len(indices), len(fraction_classes)), np.float32)
    tokens, sequences, ids, protein_ids = [], [], [], []
    for row, index in enumerate(indices):
        item = store[int(index)]
        if not item["sequence"]:
            raise InputError(f"{store.path}: item {item['id']!r} has no sequence (CELL-Diff trains on sequence-image pairs)")
        for name in item["labels"].get(label_level, []):
            if name in class_index:
                labels[row, class_index[name]] = 1.0
        if fraction_index:
            for name, value in ((item.get("provenance") or {}).get("compartments") or {}).items():
                if name in fraction_index:
                    fractions[row, fraction_index[name]] = float(value)
        tokens.append(crop_termini(encode_sequence(item["sequence"]), max_sequence_length))
        sequences.append(item["sequence"])
        ids.append(item["id"])
        protein_ids.append(item["protein_id"])
    return CellDiffSplit(images.astype(np.float32), labels, tokens, sequences, ids, protein_ids, indices, fractions)


def split_masks(store, split: CellDiffSplit, names: Sequence[str], image_size: int, progress: bool = True,
                cache: str | Path | None = None) -> np.ndarray:
    """The simulator's compartment masks of a split's cells, ``(N, len(names), S, S)`` uint8.

    Read from the store when it holds them; otherwise each cell is rendered again from the simulator configuration in
    the store's attributes and the item's recorded seed (``provenance.seed``; the landmarks come out identical, so the
    masks are those of the stored cell), at ``image_size`` (nearest-neighbour when the store's size differs).
    Rendering takes about a CPU-minute per 1,500 cells; with ``cache`` (a folder, e.g. the run's) the rendered masks
    are kept there as ``.npy`` under a key of the store, the split's items, ``names`` and ``image_size``, and a later
    call (``--resume``) reads them back.

    Raises
    ------
    InputError
        If the store has neither masks nor the simulator configuration and seeds to render them.
    """
    from locscope.synth import SimulatorConfig, render_cell
    from locscope.utils.progress import track

    stored = [n for n in names if n in store.mask_names]
    simulator = (store.attrs or {}).get("simulator")
    cache_file = None
    if cache is not None and len(stored) < len(names):
        key = json.dumps([store.info.get("created_utc"), len(store), [int(i) for i in split.store_indices],
                          list(names), image_size, simulator], sort_keys=True, default=str)
        cache_file = Path(cache) / f"masks_{hashlib.sha1(key.encode()).hexdigest()[:16]}.npy"
        if cache_file.is_file():
            cached = np.load(cache_file, allow_pickle=False)
            if cached.shape == (len(split), len(names), image_size, image_size) and cached.dtype == np.uint8:
                return cached
    out = np.zeros((len(split), len(names), image_size, image_size), np.uint8)
    if len(stored) < len(names) and not simulator:
        raise InputError(f"{store.path}: no compartment masks and no simulator configuration to render them; "
                         "rebuild the store with `locscope train celldiff-data`")
    config = SimulatorConfig.from_dict(simulator) if simulator else None
    for row, index in enumerate(track(split.store_indices, "compartment masks", enabled=progress)):
        item = store[int(index)]
        if len(stored) == len(names):
            masks = item["masks"]
        else:
            seed = (item.get("provenance") or {}).get("seed")
            if seed is None:
                raise InputError(f"{store.path}: item {item['id']!r} records no simulator seed (provenance.seed)")
            masks = render_cell(config, seed=int(seed)).masks
        stack = np.stack([np.asarray(masks[n], np.uint8) for n in names])
        if stack.shape[-1] != image_size:
            stack = F.interpolate(torch.from_numpy(stack)[None].float(), size=(image_size, image_size),
                                  mode="nearest")[0].numpy().astype(np.uint8)
        out[row] = stack
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache_file) as tmp, open(tmp, "wb") as handle:
            np.save(handle, out, allow_pickle=False)
    return out


class PairedDataset(Dataset):
    """Indexed by ``(image_index, sequence_index)`` pairs from :class:`EpochSampler`."""

    def __init__(self, split: CellDiffSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, pair: tuple[int, int]) -> dict:
        image_index, sequence_index = pair
        item = {
            "images": torch.from_numpy(self.split.images[image_index]),
            "labels": torch.from_numpy(self.split.labels[image_index]),
            "fractions": torch.from_numpy(self.split.fractions[image_index]),
            "tokens": self.split.tokens[sequence_index],
        }
        if self.split.masks is not None:
            item["masks"] = torch.from_numpy(self.split.masks[image_index])
        return item


def collate(items: list[dict]) -> dict[str, torch.Tensor]:
    """Stack images/labels; pad tokens with ``PAD_ID`` to the longest sequence -> ``tokens`` ``(B, L)``."""
    width = max(len(item["tokens"]) for item in items)
    tokens = torch.full((len(items), width), PAD_ID, dtype=torch.long)
    for i, item in enumerate(items):
        tokens[i, : len(item["tokens"])] = torch.tensor(item["tokens"], dtype=torch.long)
    stacked = {key: torch.stack([item[key] for item in items])
               for key in ("images", "labels", "fractions", "masks") if key in items[0]}
    return {**stacked, "tokens": tokens}


def class_balance_weights(labels: np.ndarray, strength: float) -> np.ndarray | None:
    """Sampling probabilities ``(N,)`` that even out the classes of multi-hot ``labels`` ``(N, C)``.

    An item's weight is the mean of ``count(c) ** -strength`` over its classes ``c`` (items without a class weigh as
    the mean item), normalised to sum to 1: ``strength`` 0 keeps every item equally likely (None is returned), 1 draws
    every class about equally often, values between temper the frequent classes.

    Examples
    --------
    >>> class_balance_weights(np.array([[1, 0], [1, 0], [1, 0], [0, 1]]), 1.0).round(3).tolist()
    [0.167, 0.167, 0.167, 0.5]
    """
    if strength == 0:
        return None
    labels = np.asarray(labels, bool)
    counts = labels.sum(0).astype(np.float64)
    per_class = np.where(counts > 0, np.maximum(counts, 1.0) ** -float(strength), 0.0)
    n_classes = labels.sum(1)
    weights = (labels * per_class).sum(1) / np.maximum(n_classes, 1)
    if (n_classes == 0).any():
        weights[n_classes == 0] = weights[n_classes > 0].mean() if (n_classes > 0).any() else 1.0
    return weights / weights.sum()


class EpochSampler(Sampler):
    """Yields ``steps_per_epoch * batch_size`` (image, sequence) pairs per epoch, seeded by ``(seed, epoch)``.

    Items are drawn without replacement in a fresh permutation per pass, or, with ``weights`` ``(N,)`` (e.g.
    :func:`class_balance_weights`), with replacement in proportion to them.

    With probability ``repair_probability`` an image is paired with the sequence of another training item with the same
    label set (with compartment fractions: the same set of compartments; the recipe's "fresh sequence of its class": the model must read the sequence's class, not memorise
    protein identities). Under DDP each rank takes every ``world_size``-th pair. Lightning calls :meth:`set_epoch`.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, steps_per_epoch: int, seed: int = 0,
                 repair_probability: float = 0.5, epoch_offset: int = 0, weights: np.ndarray | None = None) -> None:
        self.batch_size, self.steps_per_epoch = batch_size, steps_per_epoch
        self.weights = weights
        self.seed, self.repair_probability, self.epoch_offset = seed, repair_probability, epoch_offset
        self.epoch = 0
        keys = [labels[i].tobytes() for i in range(len(labels))]
        groups: dict[bytes, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(key, []).append(i)
        self.partners = [np.asarray(groups[key]) for key in keys]
        self.n = len(labels)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rank(self) -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def __len__(self) -> int:
        return self.steps_per_epoch * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rank, world = self._rank()
        rng = np.random.default_rng([self.seed, self.epoch + self.epoch_offset])
        total = len(self) * world
        if self.weights is None:
            order = np.concatenate([rng.permutation(self.n) for _ in range(-(-total // self.n))])[:total]
        else:
            order = rng.choice(self.n, size=total, p=self.weights)
        repair = rng.random(total) < self.repair_probability
        choice = rng.random(total)
        for k in range(rank, total, world):
            i = int(order[k])
            j = i
            if repair[k]:
                group = self.partners[i]
                j = int(group[int(choice[k] * len(group))])
            yield i, j


class CellDiffDataModule(L.LightningDataModule):
    """Train/val splits of a store for CELL-Diff.

    Parameters
    ----------
    store_path : str or Path
        A :mod:`locscope.data.store` directory with ``protein`` + the model's landmark channels and sequences.
    landmark_channels, classes : sequence of str
        Model landmark order and compartment classes.
    image_size, max_sequence_length : int
        From the model config.
    batch_size, steps_per_epoch : int
        Per-rank batch; an "epoch" is a fixed number of steps (checkpoints fall on epoch ends).
    seed : int
    repair_probability : float
        See :class:`EpochSampler`.
    epoch_offset : int
        Epochs already done (resume).
    val_limit : int, optional
        Keep only the first items of the validation split.
    masks : bool
        Also hold the training cells' compartment masks over ``fraction_classes`` (:func:`split_masks`).
    mask_cache : str or Path, optional
        Folder where rendered masks are kept for a later run (``split_masks(cache=...)``).
    class_balance : float
        Draw training items by :func:`class_balance_weights` of their labels at this strength (0: uniformly).
    """

    def __init__(self, store_path: str | Path, landmark_channels: Sequence[str], classes: Sequence[str], image_size: int,
                 max_sequence_length: int, batch_size: int = 32, steps_per_epoch: int = 100, seed: int = 0,
                 repair_probability: float = 0.5, epoch_offset: int = 0, val_limit: int | None = 64,
                 num_workers: int = 0, fraction_classes: Sequence[str] = (), masks: bool = False,
                 mask_cache: str | Path | None = None, class_balance: float = 0.0) -> None:
        super().__init__()
        self.store_path = Path(store_path)
        self.landmark_channels, self.classes = tuple(landmark_channels), tuple(classes)
        self.image_size, self.max_sequence_length = image_size, max_sequence_length
        self.batch_size, self.steps_per_epoch, self.seed = batch_size, steps_per_epoch, seed
        self.repair_probability, self.epoch_offset = repair_probability, epoch_offset
        self.val_limit, self.num_workers = val_limit, num_workers
        self.fraction_classes = tuple(fraction_classes)
        self.masks, self.mask_cache, self.class_balance = masks, mask_cache, class_balance
        self.train: CellDiffSplit | None = None
        self.val: CellDiffSplit | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train is not None:
            return
        from locscope.data.store import Store

        store = Store.open(self.store_path)
        args = (self.landmark_channels, self.classes, self.image_size, self.max_sequence_length)
        self.train = load_split(store, "train", *args, fraction_classes=self.fraction_classes)
        if len(self.train) == 0:
            raise InputError(f"{self.store_path}: the train split is empty")
        if self.masks:
            self.train.masks = split_masks(store, self.train, self.fraction_classes, self.image_size,
                                           cache=self.mask_cache)
        self.val = load_split(store, "val", *args, limit=self.val_limit, fraction_classes=self.fraction_classes,
                              spread=True)

    def train_dataloader(self) -> DataLoader:
        keys = self.train.fractions > 0 if self.train.fractions.shape[1] else self.train.labels
        sampler = EpochSampler(keys, self.batch_size, self.steps_per_epoch, self.seed,
                               self.repair_probability, self.epoch_offset,
                               weights=class_balance_weights(self.train.labels, self.class_balance))
        return DataLoader(PairedDataset(self.train), batch_size=self.batch_size, sampler=sampler, collate_fn=collate,
                          num_workers=self.num_workers, drop_last=True)


def build_training_store(path: str | Path, annotated_sequences: str | Path | None, *, image_size: int = 32,
                         cells_per_protein: int = 3, n_synthetic: int = 3000, seed: int = 0, workers: int = 1,
                         masks: bool = False, progress: bool = True, overwrite: bool = False,
                         corpus=None, corpus_limit: int | None = None):
    """Simulate CELL-Diff's training data: real annotated proteins in label-faithful cells + grammar proteins.

    Parameters
    ----------
    path : path
        Store directory to write (atomic, resumable).
    annotated_sequences : path or None
        A level table with sequences (``opencell_raw.csv``); every protein gets ``cells_per_protein`` different cells
        with the protein placed where its annotation says. Split by protein 80/10/10 (seeded): val/test proteins are
        never trained on.
    image_size : int
        Simulator crop side in pixels.
    n_synthetic : int
        Cells with rule-grammar proteins (val/test ones carry held-out motif variants).
    corpus : path or Corpus, optional
        The real-protein corpus (:func:`locscope.io.corpus.load_corpus` of this shared-data folder, or a loaded
        :class:`~locscope.io.corpus.Corpus`) instead of ``annotated_sequences``, rendered by
        :func:`locscope.synth.labelled.corpus_annotated_proteins`. Every protein keeps its corpus split
        (homology-aware), so proteins held out of the corpus' training split are never trained on. Given as a
        folder with the Human Protein Atlas table (``opencell_hpa_labels/``), human SCL2205 "Membrane" proteins take
        their HPA locations (:func:`locscope.io.corpus.hpa_for_membrane`) and are drawn too.
    corpus_limit : int, optional
        Render at most this many corpus proteins, drawn at random (``seed``) from every split alike.
    seed : int
    workers : int
        Simulation processes.
    masks : bool
        Also store the simulator's compartment masks (needed for IoU / fidelity evaluation; 6x slower to write).
    overwrite : bool
        Replace a complete store at ``path`` (:func:`locscope.data.store.write_store`).

    Returns
    -------
    locscope.data.store.Store
    """
    from locscope import __version__
    from locscope.data.splits import split_by_protein
    from locscope.data.store import write_store
    from locscope.synth import COMPARTMENTS, SimulatorConfig
    from locscope.synth.labelled import corpus_annotated_proteins, read_annotated_proteins
    from locscope.synth.store import simulate_items

    if annotated_sequences and corpus is not None:
        raise ArgumentError("corpus", "and annotated_sequences: give one source of real proteins")
    if corpus_limit is not None and corpus_limit < 1:
        raise ArgumentError("corpus_limit", f"must be at least 1; got {corpus_limit}")
    cfg = SimulatorConfig(size=image_size)
    if corpus is not None:
        from locscope.io.corpus import HPA_FILE, Corpus, hpa_for_membrane, load_corpus

        hpa = None if isinstance(corpus, Corpus) else Path(corpus) / HPA_FILE
        corpus = corpus if isinstance(corpus, Corpus) else load_corpus(corpus)
        chosen = corpus.proteins
        if hpa is not None and hpa.is_file():  # human SCL2205 "Membrane" proteins drawn where HPA images them
            chosen = hpa_for_membrane(chosen, hpa)
        if corpus_limit is not None and corpus_limit < len(chosen):
            keep = np.sort(np.random.default_rng(seed).choice(len(chosen), corpus_limit, replace=False))
            chosen = [chosen[i] for i in keep]
        proteins = corpus_annotated_proteins(chosen)
        split_of = {p.accession: p.split for p in chosen}
    else:
        proteins = read_annotated_proteins(annotated_sequences) if annotated_sequences else []
        split_of = dict(zip([p.id for p in proteins], split_by_protein([p.id for p in proteins], seed=seed)))
    n_real = len(proteins) * cells_per_protein

    def items():
        if n_real:
            for item in simulate_items(n_real, cfg, proteins, seed, cells_per_protein=cells_per_protein,
                                       workers=workers):
                yield _keep_masks({**item, "split": split_of[item["protein_id"]]}, masks)
        if n_synthetic:
            for item in simulate_items(n_synthetic, cfg, None, seed + 1, workers=workers):
                yield _keep_masks(item, masks)

    attrs = {"generator": "locscope.training.celldiff_data.build_training_store", "locscope_version": __version__,
             "simulator": cfg.to_dict(), "pixel_size_nm": cfg.resolved_pixel_size_nm, "seed": seed,
             "annotated_sequences": str(annotated_sequences) if annotated_sequences else None,
             "corpus": {"proteins": len(proteins), **corpus.provenance} if corpus is not None else None,
             "cells_per_protein": cells_per_protein, "n_real": n_real, "n_synthetic": n_synthetic}
    return write_store(path, items(), channels=("protein",) + cfg.channels, image_shape=(image_size, image_size),
                       image_dtype="uint16", mask_names=COMPARTMENTS if masks else (), attrs=attrs, n_items=n_real + n_synthetic,
                       seed=seed, progress=progress, overwrite=overwrite)


def _keep_masks(item: dict, masks: bool) -> dict:
    return item if masks else {**item, "masks": {}}
