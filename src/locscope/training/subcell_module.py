"""Training SubCell (Lightning glue): self-supervised ViT + pooling, then an MLP classifier ensemble on frozen embeddings.

Stage 1 (:class:`SubCellModule`), per batch of cells grouped by protein, two augmented views of every cell:

- protein-specific supervised contrastive loss (Khosla et al. 2020): all views of cells with the same ``protein_id``
  are positives (SubCell: same antibody);
- cell-specific NT-Xent (SimCLR) between the two views of each cell;
- optional masked reconstruction (``mae_weight > 0``): a fraction ``mask_ratio`` (SubCell: 0.25) of the first view's
  patches is blanked in pixel space and a linear decoder predicts their pixels from the encoder's patch tokens
  (SimMIM-style: locscope keeps the ViT's full token grid so the weights stay in the published ViTModel layout);
- an online linear probe on detached embeddings (multi-label BCE over SubCell's 31 classes) to watch progress.

Stage 2 (:func:`fit_classifier_ensemble`): embeddings of the training split are computed once (frozen encoder, no
augmentation) and ``num_classifiers`` MLPs ``embedding -> hidden -> 31`` are trained with BCE from different seeds;
the model's probabilities are their mean sigmoid output, as in SubCell.

:func:`evaluate_embeddings` scores held-out cells: macro average precision and top-1 accuracy of the classifiers, and
k-NN accuracy of the embeddings against the training split (the test split holds other proteins).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from locscope.errors import InputError
from locscope.models.subcell import (
    CHANNEL_VARIANTS, SUBCELL_CLASS_NAMES, SubCellConfig, SubCellModel, build_classifier, min_max_normalize,
)
from locscope.training.common import FiniteGuard
from locscope.utils.outputs import check_run_folder


# ------------------------------------------------------------------------------------------------------------ data
@dataclass
class CellArrays:
    """A split of a store in memory: ``images`` ``(N, C, H, W)`` float32 in [0, 1], ``labels`` ``(N, 31)`` multi-hot,
    ``protein`` ``(N,)`` int protein index, ``ids`` item ids."""

    images: torch.Tensor
    labels: torch.Tensor
    protein: torch.Tensor
    ids: list[str]


def load_store_arrays(store_path: str | Path, channels: str = "rybg") -> dict[str, CellArrays]:
    """Read a store's images (in the variant's channel order; absent channels zero) and SubCell labels per split."""
    from locscope.data.store import Store

    store = Store.open(store_path)
    names = CHANNEL_VARIANTS[channels]
    if "protein" not in store.channels:
        raise InputError(f"{store_path}: the store has no 'protein' channel (channels: {', '.join(store.channels)})")
    scale = float(store.attrs.get("intensity_max") or 1.0)
    planes = [np.asarray(store.image_array(n)[:], np.float32) / scale if n in store.channels
              else np.zeros((len(store), *store.image_shape), np.float32) for n in names]
    images = torch.from_numpy(np.stack(planes, axis=1))  # (N, C, H, W)
    class_index = {name: j for j, name in enumerate(SUBCELL_CLASS_NAMES)}
    labels = torch.zeros(len(store), len(SUBCELL_CLASS_NAMES))
    proteins, splits = [], []
    for i in range(len(store)):
        item = store[i]
        for name in item["labels"].get("subcell", []):
            if name not in class_index:
                raise InputError(f"{store_path}: item {item['id']!r}: unknown SubCell class {name!r}")
            labels[i, class_index[name]] = 1.0
        proteins.append(item["protein_id"])
        splits.append(item["split"])
    protein_index = {p: k for k, p in enumerate(dict.fromkeys(proteins))}
    protein = torch.tensor([protein_index[p] for p in proteins])
    ids = list(store.ids)
    result = {}
    for split in ("train", "val", "test"):
        rows = [i for i, s in enumerate(splits) if s == split]
        result[split] = CellArrays(images[rows], labels[rows], protein[rows], [ids[i] for i in rows])
    if len(result["train"].ids) == 0:
        raise InputError(f"{store_path}: the store has no training items")
    return result


class ProteinBatchSampler(torch.utils.data.Sampler):
    """Batches of whole proteins (all their cells together), so every batch holds protein positives; seeded."""

    def __init__(self, protein: torch.Tensor, batch_size: int, seed: int = 0) -> None:
        self.groups = [torch.nonzero(protein == p).flatten().tolist() for p in torch.unique(protein).tolist()]
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this each epoch, so a resumed run sees the same batches as an uninterrupted one."""
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        batch: list[int] = []
        for g in torch.randperm(len(self.groups), generator=generator).tolist():
            batch += self.groups[g]
            if len(batch) >= self.batch_size:
                yield batch
                batch = []
        if len(batch) > 1:
            yield batch

    def __len__(self) -> int:
        return max(1, sum(len(g) for g in self.groups) // self.batch_size)


class SubCellDataModule(L.LightningDataModule):
    """Serves a store's train / val splits as ``(images, labels, protein)`` batches grouped by protein."""

    def __init__(self, store_path: str, channels: str = "rybg", batch_size: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.store_path, self.channels, self.batch_size, self.seed = store_path, channels, batch_size, seed
        self.arrays: dict[str, CellArrays] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.arrays is None:
            self.arrays = load_store_arrays(self.store_path, self.channels)

    def _loader(self, split: str, sampler_seed: int | None) -> torch.utils.data.DataLoader:
        data = self.arrays[split]
        dataset = torch.utils.data.TensorDataset(data.images, data.labels, data.protein)
        if sampler_seed is None:
            return torch.utils.data.DataLoader(dataset, batch_size=self.batch_size)
        sampler = ProteinBatchSampler(data.protein, self.batch_size, seed=sampler_seed)
        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler)

    def train_dataloader(self):
        return self._loader("train", self.seed)

    def val_dataloader(self):
        split = "val" if len(self.arrays["val"].ids) else "train"
        return self._loader(split, None)


# -------------------------------------------------------------------------------------------------------- losses
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """SimCLR's NT-Xent: the other view of the same cell is the positive among ``2B - 1`` candidates.

    ``z1``, ``z2``: ``(B, D)`` projections of the two views.
    """
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2B, D)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    n = z1.shape[0]
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


def supervised_contrastive(z: torch.Tensor, groups: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """SupCon loss (Khosla et al. 2020, L_out): ``(N, D)`` projections; ``groups`` ``(N,)``, equal = positive.

    Anchors without a positive are skipped (0 when none has one).
    """
    z = F.normalize(z, dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (groups[:, None] == groups[None, :]) & ~self_mask
    n_pos = positives.sum(dim=1)
    has = n_pos > 0
    if not has.any():
        return z.sum() * 0.0
    mean_log_prob = log_prob.masked_fill(~positives, 0.0).sum(dim=1)[has] / n_pos[has]
    return -mean_log_prob.mean()


def augment(images: torch.Tensor, generator: torch.Generator, noise: float = 0.02) -> torch.Tensor:
    """Random dihedral symmetry per cell, per-channel gain in [0.7, 1.3] and Gaussian noise; ``(B, C, H, W)``."""
    b = images.shape[0]
    out = images.clone()
    k = torch.randint(0, 4, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    for i in range(b):
        cell = torch.rot90(out[i], int(k[i]), dims=(1, 2))
        out[i] = cell.flip(-1) if flip[i] else cell
    gain = 0.7 + 0.6 * torch.rand(b, images.shape[1], 1, 1, generator=generator)
    out = out * gain.to(out) + noise * torch.randn(out.shape, generator=generator).to(out)
    return out


def random_patch_mask(batch: int, grid: tuple[int, int], ratio: float, generator: torch.Generator) -> torch.Tensor:
    """``(B, h, w)`` bool mask with ``round(ratio * h * w)`` patches set per cell."""
    n = grid[0] * grid[1]
    n_masked = max(1, round(ratio * n))
    order = torch.rand(batch, n, generator=generator).argsort(dim=1)
    mask = torch.zeros(batch, n, dtype=torch.bool)
    mask.scatter_(1, order[:, :n_masked], True)
    return mask.view(batch, *grid)


# --------------------------------------------------------------------------------------------------------- module
class SubCellModule(L.LightningModule):
    """Self-supervised training of a SubCell encoder (see module docstring); ``self.model`` is the ``nn.Module``."""

    def __init__(self, model_config: dict[str, Any], learning_rate: float = 1e-3, weight_decay: float = 0.05,
                 temperature: float = 0.2, protein_weight: float = 1.0, cell_weight: float = 1.0,
                 mae_weight: float = 1.0, mask_ratio: float = 0.25, projection_dim: int = 64,
                 warmup_steps: int = 50, total_steps: int = 1000, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        config = SubCellConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in model_config.items()}
                               | {"num_classifiers": 0})
        self.model = SubCellModel(config)
        dim = config.embedding_dim
        self.projection = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, projection_dim))
        patch = config.patch_size
        self.decoder = nn.Linear(config.hidden_size, patch * patch * len(config.channel_names))
        self.probe = nn.Linear(dim, config.num_classes)
        self.generator = torch.Generator().manual_seed(seed)

    def _patchify(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, h*w, C*p*p)`` patch pixels in the ViT's token order."""
        p = self.model.config.patch_size
        b, c, h, w = images.shape
        x = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)  # (B, h, w, C, p, p)
        return x.reshape(b, (h // p) * (w // p), c * p * p)

    def shared_step(self, batch, stage: str) -> torch.Tensor:
        images, labels, protein = batch
        hp = self.hparams
        p = self.model.config.patch_size
        images = images[:, :, : images.shape[2] // p * p, : images.shape[3] // p * p]
        view1 = min_max_normalize(augment(images, self.generator).to(self.device))
        view2 = min_max_normalize(augment(images, self.generator).to(self.device))
        grid = (images.shape[2] // p, images.shape[3] // p)
        mask = None
        if hp.mae_weight > 0:
            mask = random_patch_mask(images.shape[0], grid, hp.mask_ratio, self.generator).to(self.device)
            pixel_mask = mask.repeat_interleave(p, 1).repeat_interleave(p, 2)[:, None]  # (B, 1, H, W)
            target = view1
            view1 = view1.masked_fill(pixel_mask, 0.0)
        emb1, _, tokens1 = self.model.encode(view1)
        emb2, _, _ = self.model.encode(view2)
        z1, z2 = self.projection(emb1), self.projection(emb2)
        cell_loss = nt_xent(z1, z2, hp.temperature)
        protein_loss = supervised_contrastive(torch.cat([z1, z2]), torch.cat([protein, protein]).to(self.device),
                                              hp.temperature)
        loss = hp.cell_weight * cell_loss + hp.protein_weight * protein_loss
        if mask is not None:
            predicted = self.decoder(tokens1[:, 1:])  # (B, h*w, C*p*p)
            flat_mask = mask.flatten(1)
            mae_loss = F.mse_loss(predicted[flat_mask], self._patchify(target)[flat_mask])
            loss = loss + hp.mae_weight * mae_loss
            self.log(f"{stage}_mae_loss", mae_loss)
        probe_logits = self.probe(emb2.detach())
        probe_loss = F.binary_cross_entropy_with_logits(probe_logits, labels.to(self.device))
        hit = labels.to(self.device).gather(1, probe_logits.argmax(dim=1, keepdim=True)).mean()
        self.log_dict({f"{stage}_loss": loss, f"{stage}_cell_loss": cell_loss, f"{stage}_protein_loss": protein_loss,
                       f"{stage}_probe_loss": probe_loss, f"{stage}_probe_accuracy": hit},
                      prog_bar=stage == "train", batch_size=images.shape[0])
        return loss + probe_loss

    def training_step(self, batch, batch_idx):
        return self.shared_step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self.shared_step(batch, "val")

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay)

        def schedule(step: int) -> float:  # linear warm-up, cosine decay to 5%
            if step < hp.warmup_steps:
                return (step + 1) / hp.warmup_steps
            progress = min(1.0, (step - hp.warmup_steps) / max(1, hp.total_steps - hp.warmup_steps))
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["augment_generator_state"] = self.generator.get_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "augment_generator_state" in checkpoint:
            self.generator.set_state(checkpoint["augment_generator_state"])


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` torch CPU threads inside the block (``None``: unchanged), then restore the previous number."""
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ------------------------------------------------------------------------------------------- stage 2 and evaluation
@torch.inference_mode()
def compute_embeddings(model: SubCellModel, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``(N, C, H, W)`` raw cells -> ``(N, embedding_dim)`` float32 embeddings (eval mode, no augmentation)."""
    model.eval()
    device = next(model.parameters()).device
    parts = [model.encode(min_max_normalize(images[i:i + batch_size].to(device)))[0].float().cpu()
             for i in range(0, len(images), batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0, model.config.embedding_dim)


def fit_classifier_ensemble(embeddings: torch.Tensor, labels: torch.Tensor, hidden: Sequence[int],
                            num_classifiers: int = 2, steps: int = 400, learning_rate: float = 3e-3,
                            weight_decay: float = 1e-3, dropout: float = 0.2, seed: int = 0) -> list[nn.Sequential]:
    """Train ``num_classifiers`` MLPs (BCE, full batch, AdamW) on frozen ``(N, D)`` embeddings, each from its seed.

    Embeddings are standardised with the training mean / std folded into the first Linear layer afterwards, so the
    classifiers take raw embeddings like SubCell's. Dropout (on the hidden activations) is applied functionally during
    training only, so the saved MLPs keep their Linear layers at indices 0, 2, 4.
    """
    with torch_threads(1):  # tiny matrices: one thread avoids OpenMP synchronisation (17x faster on a busy CPU)
        return _fit_heads(embeddings, labels, hidden, num_classifiers, steps, learning_rate, weight_decay, dropout,
                          seed)


def _fit_heads(embeddings, labels, hidden, num_classifiers, steps, learning_rate, weight_decay, dropout, seed):
    mean, std = embeddings.mean(0), embeddings.std(0) + 1e-6
    x = (embeddings - mean) / std
    heads = []
    for k in range(num_classifiers):
        torch.manual_seed(seed + k)
        head = build_classifier(embeddings.shape[1], hidden, labels.shape[1])
        optimizer = torch.optim.AdamW(head.parameters(), lr=learning_rate, weight_decay=weight_decay)
        for _ in range(steps):
            h = x
            for layer in head:
                h = layer(h)
                if isinstance(layer, nn.ReLU):
                    h = F.dropout(h, dropout, training=True)
            loss = F.binary_cross_entropy_with_logits(h, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():  # fold the standardisation into the first layer: W (x - m) / s + b
            first = head[0]
            first.bias -= first.weight @ (mean / std)
            first.weight /= std
        heads.append(head.eval())
    return heads


def knn_accuracy(train_embeddings: torch.Tensor, train_labels: torch.Tensor, query_embeddings: torch.Tensor,
                 query_labels: torch.Tensor, k: int = 5) -> float:
    """Cosine k-NN: each query's predicted class is the top class of the summed label vectors of its ``k`` nearest
    training cells; correct when it is one of the query's labels (multi-label)."""
    if len(query_embeddings) == 0:
        return float("nan")
    sims = F.normalize(query_embeddings, dim=1) @ F.normalize(train_embeddings, dim=1).T
    neighbours = sims.topk(min(k, len(train_embeddings)), dim=1).indices  # (Q, k)
    votes = train_labels[neighbours].sum(dim=1)  # (Q, classes)
    predicted = votes.argmax(dim=1, keepdim=True)
    return float(query_labels.gather(1, predicted).mean())


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Macro average precision over classes present in ``labels`` and top-1 accuracy (top class among the labels)."""
    from sklearn.metrics import average_precision_score

    present = labels.sum(axis=0) > 0
    macro_ap = float(average_precision_score(labels[:, present], probabilities[:, present], average="macro"))
    top1 = float(labels[np.arange(len(labels)), probabilities.argmax(axis=1)].mean())
    return {"macro_ap": macro_ap, "accuracy": top1, "n_classes_present": int(present.sum())}


def config_to_dict(config: SubCellConfig) -> dict[str, Any]:
    """A JSON-able dict of a config (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


# ----------------------------------------------------------------------------------------------------- the whole run
TINY_CONFIG = dict(hidden_size=96, num_hidden_layers=4, num_attention_heads=4, intermediate_size=192, patch_size=8,
                   pool_inner_dim=64, pool_heads=2, classifier_hidden=(128, 64))


def train_subcell(store_path: str | Path, out_dir: str | Path, *, model_config: dict[str, Any] | None = None,
                  epochs: int = 30, batch_size: int = 64, learning_rate: float = 1e-3, mae_weight: float = 1.0,
                  mask_ratio: float = 0.25, num_classifiers: int = 3, classifier_steps: int = 400, seed: int = 0,
                  device: str = "auto", resume: bool = False, max_minutes: float | None = None,
                  threads: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Train a SubCell model on a store and write ``out_dir/model`` (safetensors + config) and ``metrics.json``.

    Parameters
    ----------
    store_path : path
        A locscope store with a ``protein`` channel, landmark channels and ``subcell`` labels (e.g. from
        ``locscope simulate``).
    out_dir : path
        Run directory: ``checkpoints/`` (Lightning, ``last.ckpt`` each epoch), ``logs/`` (CSV), ``model/``,
        ``metrics.json``.
    model_config : dict, optional
        :class:`SubCellConfig` fields; default :data:`TINY_CONFIG` at the store's image size.
    epochs, batch_size, learning_rate
        Self-supervised stage settings (batches hold whole proteins).
    mae_weight, mask_ratio
        Weight of the masked-reconstruction loss (0 disables it) and fraction of masked patches.
    num_classifiers, classifier_steps
        Size of the MLP ensemble and full-batch steps per classifier.
    seed : int
        Seeds initialisation, batches, augmentations and classifiers.
    device : {'auto', 'cpu', 'cuda'}
    resume : bool
        Continue from ``checkpoints/last.ckpt`` (InputError when there is none).
    max_minutes : float, optional
        Stop the self-supervised stage after this wall time (then train the classifiers as usual).
    threads : int, optional
        CPU threads for torch (default: torch's choice; 1 is fastest for tiny models on a busy machine).
    progress : bool
        Show progress bars.

    Returns
    -------
    dict
        The held-out metrics written to ``metrics.json``.
    """
    from locscope.utils.device import resolve_device

    out_dir = check_run_folder(out_dir, resume=resume, run_files=("checkpoints", "metrics.json", "model"))
    last = out_dir / "checkpoints" / "last.ckpt"
    if resume and not last.is_file():
        raise InputError(f"{last}: no checkpoint to resume from")
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from locscope.utils.atomic import write_json
    from locscope.utils.checkpoint import save_pretrained
    from locscope.utils.seeding import seed_everything

    target = resolve_device(device)
    with torch_threads(threads):
        seed_everything(seed)
        data = SubCellDataModule(str(store_path), batch_size=batch_size, seed=seed)
        data.setup()
        image_size = int(data.arrays["train"].images.shape[-1])
        config = {**TINY_CONFIG, "image_size": image_size, **(model_config or {})}
        steps_per_epoch = len(ProteinBatchSampler(data.arrays["train"].protein, batch_size))
        module = SubCellModule(config, learning_rate=learning_rate, mae_weight=mae_weight, mask_ratio=mask_ratio,
                               total_steps=epochs * steps_per_epoch, warmup_steps=min(50, steps_per_epoch * 2),
                               seed=seed)
        trainer = L.Trainer(
            max_epochs=epochs, accelerator="gpu" if target.type == "cuda" else "cpu", devices=1,
            default_root_dir=str(out_dir), logger=CSVLogger(str(out_dir), name="logs"),
            callbacks=[ModelCheckpoint(dirpath=str(out_dir / "checkpoints"), save_last=True, save_top_k=0),
                       FiniteGuard("; checkpoints/last.ckpt keeps the last saved state: try a lower learning rate, "
                                   "then --resume")],
            max_time={"minutes": max_minutes} if max_minutes else None, log_every_n_steps=5,
            enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
        )
        trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume else None)

        encoder = module.model.to(target).eval()
        train, test = data.arrays["train"], data.arrays["test"]
        if len(test.ids) == 0:
            test = data.arrays["val"]
        train_emb = compute_embeddings(encoder, train.images)
        test_emb = compute_embeddings(encoder, test.images)
        final_config = SubCellConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
                                     | {"num_classifiers": num_classifiers})
        final = SubCellModel(final_config)
        final.encoder.load_state_dict(encoder.encoder.state_dict())
        final.pool_model.load_state_dict(encoder.pool_model.state_dict())
        heads = fit_classifier_ensemble(train_emb, train.labels, final_config.classifier_hidden, num_classifiers,
                                        steps=classifier_steps, seed=seed)
        for slot, head in zip(final.classifiers, heads):
            slot.load_state_dict(head.state_dict())
        final = final.cpu().eval()
        with torch.inference_mode():
            probabilities = final.classify_embedding(test_emb).numpy()
        metrics = {
            **classification_metrics(probabilities, test.labels.numpy()),
            "knn_accuracy": knn_accuracy(train_emb, train.labels, test_emb, test.labels, k=5),
            "n_train": len(train.ids), "n_test": len(test.ids), "epochs_completed": int(trainer.current_epoch),
            "global_steps": int(trainer.global_step),
        }
        settings = {"store": str(store_path), "epochs": epochs, "batch_size": batch_size,
                    "learning_rate": learning_rate, "mae_weight": mae_weight, "mask_ratio": mask_ratio, "num_classifiers": num_classifiers,
                    "classifier_steps": classifier_steps, "seed": seed}
        save_pretrained(final, final_config, out_dir / "model", extra={"metrics": metrics, "training": settings})
        write_json(out_dir / "metrics.json", {"metrics": metrics, "training": settings})
        return metrics


__all__ = [
    "TINY_CONFIG", "train_subcell", "CellArrays", "ProteinBatchSampler", "SubCellDataModule", "SubCellModule", "augment", "classification_metrics",
    "compute_embeddings", "config_to_dict", "fit_classifier_ensemble", "knn_accuracy", "load_store_arrays", "nt_xent",
    "random_patch_mask", "supervised_contrastive",
]
