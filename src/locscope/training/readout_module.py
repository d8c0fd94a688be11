"""Training the compartment read-out classifier (:mod:`locscope.models.readout`) on a simulated-cell store.

Targets are each item's level-3 compartment with the largest share of the protein: the simulator's true level-1
fractions (``provenance.compartments``) summed per level-3 class. Items whose fractions are unknown are skipped.
Augmentation: random 90-degree rotations and flips, ER / microtubules dropped (zeros) with probability
``landmark_drop_probability`` each, and with probability ``low_resolution_probability`` the whole image is seen at half
its side (downsampled and scaled back), so 32 x 32 generators are read as fairly as 64 x 64 ones. A plain seeded loop:
the network is small and trains in minutes on one CPU core.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from locscope.data import ontology
from locscope.data.ontology import SIMULATOR_COMPARTMENTS
from locscope.errors import InputError
from locscope.models.readout import ReadoutClassifier, ReadoutConfig
from locscope.training.common import augment
from locscope.utils.progress import track


@dataclass
class ReadoutTrainConfig:
    """Hyper-parameters of :func:`train_readout` (a YAML/JSON ``--config`` file holds any subset)."""

    image_size: int = 64
    width: int = 16
    steps: int = 3000
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    landmark_drop_probability: float = 0.2
    low_resolution_probability: float = 0.3
    seed: int = 0
    torch_threads: int | None = None


def level3_targets(fractions: np.ndarray, fraction_classes=SIMULATOR_COMPARTMENTS,
                   classes=ReadoutConfig().classes) -> np.ndarray:
    """The level-3 class with the largest summed level-1 fraction per row, ``(N,)`` int64 (-1 where unknown).

    Parameters
    ----------
    fractions : np.ndarray
        ``(N, len(fraction_classes))`` level-1 fractions (rows of zeros = unknown).
    """
    shares = np.asarray(fractions, np.float32) @ ontology.level_membership(fraction_classes, classes)
    return np.where(shares.sum(1) > 0, shares.argmax(1), -1).astype(np.int64)


def _batch_augment(images: torch.Tensor, cfg: ReadoutTrainConfig, generator: torch.Generator) -> torch.Tensor:
    """Rotations / flips, landmark dropping and half-resolution views of ``(B, C, H, W)`` images."""
    images = augment(images, generator)
    batch, channels = images.shape[:2]
    drop = torch.rand(batch, channels, generator=generator) < cfg.landmark_drop_probability
    drop[:, :2] = False  # the protein and the nucleus are always given
    images = images.masked_fill(drop[:, :, None, None], 0.0)
    low = torch.rand(batch, generator=generator) < cfg.low_resolution_probability
    if low.any():
        side = images.shape[-1]
        small = F.interpolate(images[low], size=(side // 2, side // 2), mode="area")
        images[low] = F.interpolate(small, size=(side, side), mode="bilinear", align_corners=False)
    return images


def accuracy(model: ReadoutClassifier, images: torch.Tensor, targets: np.ndarray) -> float:
    """Share of ``images`` ``(N, C, H, W)`` whose top class is ``targets`` ``(N,)``."""
    if not len(targets):
        return float("nan")
    return float((model.predict(images).argmax(1).numpy() == targets).mean())


def train_readout(train_images: np.ndarray, train_fractions: np.ndarray, val_images: np.ndarray,
                  val_fractions: np.ndarray, config: ReadoutTrainConfig, out: str | Path,
                  landmark_channels=ReadoutConfig().landmark_channels) -> tuple[Path, dict]:
    """Train a :class:`ReadoutClassifier` and write it (with its validation accuracy) to ``out``.

    Parameters
    ----------
    train_images, val_images : np.ndarray
        ``(N, 1 + n_landmarks, H, W)`` float images, protein first (any range: each image is min-max scaled).
    train_fractions, val_fractions : np.ndarray
        ``(N, 21)`` true level-1 fractions over :data:`locscope.data.ontology.SIMULATOR_COMPARTMENTS`.
    config : ReadoutTrainConfig
    out : path
        Model directory to write (``model.safetensors`` + ``config.json``).

    Returns
    -------
    (Path, dict)
        The model directory and ``{"val_accuracy", "train_items", "val_items", "seconds"}``.

    Raises
    ------
    InputError
        If no training item has known fractions.
    """
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    torch.manual_seed(config.seed)
    targets = level3_targets(train_fractions)
    keep = targets >= 0
    if not keep.any():
        raise InputError("train_readout: no training item has known compartment fractions")
    x = torch.from_numpy(np.ascontiguousarray(train_images[keep], np.float32))
    y = torch.from_numpy(targets[keep])
    val_targets = level3_targets(val_fractions)
    val_keep = val_targets >= 0
    val_x = torch.from_numpy(np.ascontiguousarray(val_images[val_keep], np.float32))
    model = ReadoutClassifier(ReadoutConfig(image_size=config.image_size, width=config.width,
                                            landmark_channels=tuple(landmark_channels)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.learning_rate, total_steps=config.steps,
                                                   pct_start=0.05)
    generator = torch.Generator().manual_seed(config.seed)
    # class-balanced sampling: rare compartments (mitochondria, plasma membrane) count as much as common ones
    counts = np.bincount(targets[keep], minlength=len(model.config.classes)).astype(np.float64)
    weights = torch.from_numpy(1.0 / counts[targets[keep]])
    start = time.perf_counter()
    model.train()
    for _ in track(range(config.steps), "training read-out classifier"):
        index = torch.multinomial(weights, config.batch_size, replacement=True, generator=generator)
        logits = model(_batch_augment(x[index], config, generator))
        loss = F.cross_entropy(logits, y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    metrics = {"val_accuracy": accuracy(model, val_x, val_targets[val_keep]), "train_items": int(keep.sum()),
               "val_items": int(val_keep.sum()), "seconds": time.perf_counter() - start}
    directory = model.save_pretrained(out, extra={"training": asdict(config), "metrics": metrics})
    return Path(directory), metrics





def train_readout_from_store(store_path: str | Path, out: str | Path, config: ReadoutTrainConfig) -> tuple[Path, dict]:
    """:func:`train_readout` on the ``train`` split of a training store (``locscope train celldiff-data``), validated
    on its ``val`` split; images are read at ``config.image_size``."""
    from locscope.data.store import Store
    from locscope.training.celldiff_data import load_split

    store = Store.open(store_path)
    landmarks = ReadoutConfig().landmark_channels
    splits = [load_split(store, name, landmarks, ReadoutConfig().classes, config.image_size, 8,
                         fraction_classes=SIMULATOR_COMPARTMENTS) for name in ("train", "val")]
    return train_readout(splits[0].images, splits[0].fractions, splits[1].images, splits[1].fractions, config, out,
                         landmarks)
__all__ = ["ReadoutTrainConfig", "accuracy", "level3_targets", "train_readout", "train_readout_from_store"]
