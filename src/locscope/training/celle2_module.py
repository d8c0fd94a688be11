"""Lightning glue for CELL-E 2 (:mod:`locscope.models.celle2`): tokenizers first, then the masked-token transformer.

One run has two phases on the same store (``locscope train celldiff-data`` writes one; protein + nucleus channels):

1. ``tokenizer_steps`` steps train both VQGAN tokenizers (the transformer untouched): the nucleus tokenizer on
   normalised nucleus images (L1 + MSE reconstruction), the protein tokenizer on thresholded protein images
   (L1 + MSE against the binary target, so its raw output is a probability-like image thresholded at 0.5), each plus
   the VQ codebook / commitment loss (diffusers ``VectorQuantizer``, beta 0.25). Codes unused for
   ``dead_code_steps`` steps are re-seeded from latents of the current batch (VQ training on small data otherwise
   collapses onto a few codes).
2. The remaining steps train the transformer (and the built-in sequence encoder) with the tokenizers frozen: images are
   tokenized on the fly, and :meth:`Celle2.masked_loss` masks a cosine-scheduled share of the protein-image tokens and
   residues (MaskGIT). With probability ``repair_probability`` an image is paired with the sequence of another training
   item with the same compartment set.

Every random choice of step ``s`` is a function of ``(seed, s)``, so a run resumed from ``checkpoints/last`` replays
exactly what an uninterrupted run does. Optimizer: AdamW with linear warm-up and decay per phase.

Run directory::

    RUN_DIR/train_config.json      the Celle2TrainConfig used
    RUN_DIR/checkpoints/last/      model.safetensors + config.json, optimizer.safetensors + optimizer.json, state.json
    RUN_DIR/model/                 the final model (Celle2.from_pretrained)
    RUN_DIR/metrics.jsonl          one JSON line per log interval and per validation
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from locscope.channels import NUCLEUS
from locscope.encoders.protein import PAD_ID
from locscope.errors import InputError
from locscope.models.celle2 import Celle2, Celle2Config, celle2_tiny_config, normalize_nucleus, threshold_protein
from locscope.training.common import (
    append_metrics, augment, end_step, fit_steps, initialise_from, model_config_from, open_run, prepare_run,
    save_final_model, step_generator, use_bf16, write_checkpoint,
)


@dataclass
class Celle2TrainConfig:
    """Training hyper-parameters (a YAML/JSON ``--config`` file holds any subset of these fields).

    ``model_overrides`` changes fields of :func:`celle2_tiny_config`. ``tokenizer_steps`` of ``max_steps`` train the
    tokenizers, the rest the transformer; ``max_steps`` and ``tokenizer_steps`` must be multiples of
    ``steps_per_epoch`` (checkpoints fall on epoch ends). ``tokenizer_batch_size`` (default ``batch_size``) is the
    batch of the tokenizer phase. ``bf16`` (``true``, ``false`` or ``'auto'``, :func:`~locscope.training.common.use_bf16`)
    runs the tokenizers' encoder / decoder and the transformer under bf16 autocast; codebook look-ups stay fp32.
    ``init_from`` (a model directory, e.g. a bundled ``celle2-tiny``) starts a new run from every tensor of that model
    (the model being trained may add tensors, e.g. a sequence summary, which keep their initialisation); with
    ``tokenizer_steps: 0`` its tokenizers are used as they are. ``full_mask_probability`` masks every protein-image
    token of that share of the training rows (one-pass generation's case, which the cosine schedule almost never
    draws; :meth:`~locscope.models.celle2.Celle2.masked_loss`).
    """

    model_overrides: dict = dataclasses.field(default_factory=dict)
    batch_size: int = 32
    tokenizer_batch_size: int | None = None
    max_steps: int = 2000
    tokenizer_steps: int = 600
    steps_per_epoch: int = 100
    tokenizer_learning_rate: float = 1e-3
    learning_rate: float = 5e-4
    warmup_steps: int = 100
    final_lr_fraction: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    commitment_weight: float = 1.0
    dead_code_steps: int = 50
    repair_probability: float = 0.5
    full_mask_probability: float = 0.0
    seed: int = 0
    log_every_steps: int = 25
    val_items: int = 64
    accelerator: str = "auto"
    devices: int = 1
    torch_threads: int | None = None
    max_minutes: float | None = None
    bf16: bool | str = False
    init_from: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.full_mask_probability <= 1.0:
            raise ValueError(f"full_mask_probability={self.full_mask_probability}: must be in [0, 1]")
        for name in ("batch_size", "tokenizer_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}={value}: must be >= 1")

    def model_config(self) -> Celle2Config:
        """The model's config; ``summary_fraction_classes`` must be level-1 classes (the store's fractions)."""
        from locscope.data.ontology import LEVEL1

        config = model_config_from(celle2_tiny_config, self.model_overrides)
        unknown = [name for name in config.summary_fraction_classes if name not in LEVEL1]
        if unknown:
            raise InputError(f"train config: model_overrides.summary_fraction_classes: unknown level-1 classes "
                             f"{', '.join(unknown)} (known: {', '.join(LEVEL1)})")
        return config


def learning_rate_at(step: int, config: Celle2TrainConfig) -> float:
    """Per phase: linear warm-up over ``warmup_steps``, then linear decay to ``final_lr_fraction`` of the peak."""
    if step < config.tokenizer_steps:
        start, end, peak = 0, config.tokenizer_steps, config.tokenizer_learning_rate
    else:
        start, end, peak = config.tokenizer_steps, config.max_steps, config.learning_rate
    local = step - start
    if local < config.warmup_steps:
        return peak * (local + 1) / config.warmup_steps
    progress = (local - config.warmup_steps) / max(1, end - start - config.warmup_steps)
    return peak * (1.0 - (1.0 - config.final_lr_fraction) * min(1.0, progress))


@dataclass
class Celle2Split:
    """One store split in memory: ``protein`` and ``nucleus`` ``(N, 1, S, S)`` in [0, 1], residue ``tokens``,
    ``groups`` (items with the same compartment set share a group id) and ``fractions`` ``(N, len(LEVEL1))`` (the
    simulator's compartment fractions of each item, level-1 classes in :data:`~locscope.data.ontology.LEVEL1`
    order; zeros when the store does not record them)."""

    protein: torch.Tensor
    nucleus: torch.Tensor
    tokens: list[list[int]]
    groups: np.ndarray
    ids: list[str]
    fractions: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.ids)


def load_celle2_split(store, split: str, config: Celle2Config, limit: int | None = None) -> Celle2Split:
    """Read ``split`` of a store (protein + nucleus channels) at the model's image size; sequences longer than the
    model's residue limit keep both termini."""
    from locscope.data.ontology import LEVEL1
    from locscope.training.celldiff_data import load_split

    data = load_split(store, split, (NUCLEUS,), (), config.image_size, config.text_seq_len, limit=limit,
                      spread=limit is not None, fraction_classes=tuple(LEVEL1))
    images = (torch.from_numpy(data.images) + 1) / 2  # [-1, 1] -> [0, 1]
    keys: dict[bytes, int] = {}
    groups = [keys.setdefault((row > 0).tobytes(), len(keys)) for row in data.fractions]  # same compartment set
    return Celle2Split(images[:, :1].contiguous(), images[:, 1:2].contiguous(), data.tokens, np.asarray(groups),
                       data.ids, torch.from_numpy(data.fractions))


def step_batch(split: Celle2Split, config: Celle2TrainConfig, step: int, rank: int = 0) -> tuple[list[int], list[int]]:
    """Image indices and sequence indices of step ``step`` on process ``rank`` (a pure function of them and the
    seed; under DDP every rank draws its own batch)."""
    rng = np.random.default_rng([config.seed, step, rank])
    size = config.batch_size
    if step < config.tokenizer_steps and config.tokenizer_batch_size:
        size = config.tokenizer_batch_size
    images = rng.integers(0, len(split), size)
    sequences = images.copy()
    for row in np.flatnonzero(rng.random(size) < config.repair_probability):
        partners = np.flatnonzero(split.groups == split.groups[images[row]])
        sequences[row] = partners[rng.integers(len(partners))]
    return images.tolist(), sequences.tolist()


def pad_tokens(rows: list[list[int]]) -> torch.Tensor:
    """Residue token rows -> ``(B, longest)`` padded with ``PAD_ID``."""
    out = torch.full((len(rows), max(len(r) for r in rows)), PAD_ID, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


class Celle2Module(L.LightningModule):
    """The training system around a :class:`Celle2` (two phases, see the module docstring)."""

    def __init__(self, model_config: Celle2Config, train_config: Celle2TrainConfig, train: Celle2Split,
                 val: Celle2Split, run_dir: str | Path, step_offset: int = 0) -> None:
        super().__init__()
        self.model_config, self.train_config = model_config, train_config
        self.model = Celle2(model_config)
        self.train_split, self.val_split = train, val
        self.run_dir = Path(run_dir)
        self.step_offset = step_offset
        self._optimizer_state: dict | None = None
        self._sums: dict[str, float] = {}
        self._last_log = time.time()
        from locscope.data.ontology import LEVEL1

        self.fraction_columns = [LEVEL1.index(name) for name in model_config.summary_fraction_classes]
        self.last_used = {name: torch.zeros(size, dtype=torch.long) for name, size in
                          (("nucleus", model_config.nucleus_codebook_size),
                           ("protein", model_config.protein_codebook_size))}

    @property
    def step(self) -> int:
        return self.step_offset + self.global_step

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=learning_rate_at(self.step, self.train_config),
                                      weight_decay=self.train_config.weight_decay, betas=(0.9, 0.95))
        if self._optimizer_state is not None:
            optimizer.load_state_dict(self._optimizer_state)
        return optimizer

    def on_train_batch_start(self, batch, batch_idx) -> None:
        for group in self.optimizers().optimizer.param_groups:
            group["lr"] = learning_rate_at(self.step, self.train_config)

    def images(self, indices: list[int], generator: torch.Generator, split: Celle2Split | None = None):
        """Augmented ``(normalised nucleus, thresholded protein)`` batches ``(B, 1, S, S)`` each."""
        split = split or self.train_split
        stack = torch.cat([split.nucleus[indices], split.protein[indices]], dim=1)
        stack = augment(stack, generator)
        protein = threshold_protein(stack[:, 1:], self.model_config.protein_threshold)
        return normalize_nucleus(stack[:, :1]).to(self.device), protein.to(self.device)

    def tokenizer_loss(self, nucleus: torch.Tensor, protein: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstruction (L1 + MSE) + VQ loss of both tokenizers; also records which codes were used."""
        out = {}
        for name, tokenizer, image in (("nucleus", self.model.nucleus_tokenizer, nucleus),
                                       ("protein", self.model.protein_tokenizer, protein)):
            with self.autocast():
                latents = tokenizer.encode(image).latents.float()
            quantized, vq_loss, (_, _, ids) = tokenizer.quantize(latents)
            with self.autocast():
                decoded = tokenizer.decode(quantized, force_not_quantize=True).sample.float()
            reconstruction = F.l1_loss(decoded, image) + F.mse_loss(decoded, image)
            out[f"rec_{name}"] = reconstruction
            out[f"vq_{name}"] = vq_loss
            used = torch.unique(ids.flatten().cpu())
            self.last_used[name][used] = self.step
            out[f"codes_{name}"] = torch.tensor(float(len(used)))
            out[f"_latents_{name}"] = latents.detach()
        weight = self.train_config.commitment_weight
        out["loss"] = (out["rec_nucleus"] + out["rec_protein"] + weight * (out["vq_nucleus"] + out["vq_protein"]))
        return out

    def reseed_dead_codes(self, latents: dict[str, torch.Tensor], generator: torch.Generator) -> None:
        """Codes unused for ``dead_code_steps`` steps take the value of random latents of this batch."""
        for name, tokenizer in (("nucleus", self.model.nucleus_tokenizer), ("protein", self.model.protein_tokenizer)):
            dead = torch.nonzero(self.step - self.last_used[name] > self.train_config.dead_code_steps).flatten()
            if not len(dead):
                continue
            flat = latents[name].permute(0, 2, 3, 1).reshape(-1, latents[name].shape[1])
            pick = torch.randint(0, flat.shape[0], (len(dead),), generator=generator)
            with torch.no_grad():
                tokenizer.quantize.embedding.weight[dead.to(self.device)] = flat[pick.to(self.device)]
            self.last_used[name][dead] = self.step

    def transformer_loss(self, images: list[int], sequences: list[int], generator: torch.Generator,
                         split: Celle2Split | None = None) -> dict[str, torch.Tensor]:
        split = split or self.train_split
        nucleus, protein = self.images(images, generator, split)
        with torch.no_grad():
            nucleus_ids, protein_ids = self.model.encode_nucleus(nucleus), self.model.encode_protein(protein)
        text = pad_tokens([split.tokens[i] for i in sequences]).to(self.device)
        fractions = None
        if self.model_config.summary_fraction_classes:  # the fractions of each sequence's own protein
            fractions = split.fractions[sequences][:, self.fraction_columns].to(self.device)
        with self.autocast():
            return self.model.masked_loss(text, nucleus_ids, protein_ids, generator, fractions=fractions,
                                          full_mask_probability=self.train_config.full_mask_probability)

    def autocast(self):
        """bf16 autocast when the config asks for it (and, for ``'auto'``, the device computes bf16 natively)."""
        enabled = use_bf16(self.train_config.bf16, self.device)
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def set_phase(self) -> None:
        """Tokenizers train in phase 1 only; the transformer and sequence encoder in phase 2 only."""
        tokenizer_phase = self.step < self.train_config.tokenizer_steps
        for name, parameter in self.model.named_parameters():
            if name.startswith("text_encoder.model."):
                continue  # a published ESM2 stays frozen
            is_tokenizer = name.startswith(("nucleus_tokenizer.", "protein_tokenizer."))
            parameter.requires_grad_(is_tokenizer == tokenizer_phase)
        self.model.nucleus_tokenizer.train(tokenizer_phase)
        self.model.protein_tokenizer.train(tokenizer_phase)

    def training_step(self, batch, batch_idx):
        cfg = self.train_config
        self.set_phase()
        generator = step_generator(cfg.seed, self.step, self.global_rank)
        images, sequences = step_batch(self.train_split, cfg, self.step, self.global_rank)
        if self.step < cfg.tokenizer_steps:
            out = self.tokenizer_loss(*self.images(images, generator))
            self.reseed_dead_codes({k[len("_latents_"):]: v for k, v in out.items() if k.startswith("_latents_")},
                                   generator)
        else:
            out = self.transformer_loss(images, sequences, generator)
        for key, value in out.items():
            if not key.startswith("_"):
                self._sums[key] = self._sums.get(key, 0.0) + float(value.detach())
        return out["loss"]

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if end_step(self, learning_rate_at(self.step - 1, self.train_config), self._sums):
            self._sums = {}

    @torch.no_grad()
    def validate(self) -> dict:
        """Held-out reconstruction (phase 1) or masked-token loss and image-token accuracy (phase 2)."""
        cfg = self.train_config
        self.model.eval()
        generator = torch.Generator().manual_seed(cfg.seed)
        indices = list(range(len(self.val_split)))
        if self.step <= cfg.tokenizer_steps:
            nucleus, protein = self.images(indices, generator, self.val_split)
            record = {k: float(v) for k, v in self.tokenizer_loss(nucleus, protein).items() if not k.startswith("_")}
            with torch.no_grad():
                decoded = self.model.decode_protein(self.model.encode_protein(protein))
            record["protein_pixel_agreement"] = float(((decoded > 0.5).float() == protein).float().mean())
        else:
            losses = self.transformer_loss(indices, indices, generator, self.val_split)
            record = {k: float(v) for k, v in losses.items()}
        self.model.train()
        self.set_phase()
        record = {"step": self.step, **{f"val_{k}": v for k, v in record.items()}}
        self._append_metrics(record)
        return record

    def _append_metrics(self, record: dict) -> None:
        append_metrics(self.run_dir, record)

    def save_checkpoint(self, directory: Path) -> None:
        """Atomically write weights, optimizer state, the step and the code-usage record."""
        write_checkpoint(directory, self.model, self.optimizers().optimizer.state_dict(),
                         {"step": self.step, "last_used": {k: v.tolist() for k, v in self.last_used.items()}})

    def load_checkpoint(self, directory: Path) -> int:
        """Restore weights (strictly), optimizer state and code usage; returns the step."""
        from locscope.utils.checkpoint import load_optimizer_state, load_weights_into

        load_weights_into(self.model, directory)
        self._optimizer_state = load_optimizer_state(directory)
        state = json.loads((directory / "state.json").read_text())
        self.last_used = {k: torch.tensor(v, dtype=torch.long) for k, v in state["last_used"].items()}
        return int(state["step"])


def train_celle2(store: str | Path, run_dir: str | Path, config: Celle2TrainConfig | None = None,
                 resume: bool = False, progress: bool = True, callbacks: list | None = None) -> Path:
    """Train CELL-E 2 (tokenizers, then transformer) on a store; returns ``RUN_DIR/model``.

    Parameters
    ----------
    store : path
        A dataset store with ``protein`` and ``nucleus`` channels and sequences (``locscope train celldiff-data``).
    run_dir : path
        Output directory (layout in the module docstring).
    config : Celle2TrainConfig, optional
        Hyper-parameters; with ``resume`` the run's saved config is used.
    resume : bool
        Continue from ``RUN_DIR/checkpoints/last`` exactly.
    callbacks : list of lightning.Callback, optional
        Extra Lightning callbacks.

    Raises
    ------
    InputError
        ``resume`` without a checkpoint; a run directory that already holds a run without ``resume``; step counts that
        are not multiples of ``steps_per_epoch``; a store without the needed channels.
    """
    from locscope.data.store import Store

    run_dir, last, config = open_run(run_dir, resume, config, Celle2TrainConfig,
                                     step_fields=("max_steps", "tokenizer_steps"), refuse_existing=False)
    model_config = config.model_config()
    opened = Store.open(store)
    train = load_celle2_split(opened, "train", model_config)
    val = load_celle2_split(opened, "val", model_config, limit=config.val_items)
    if not len(train) or not len(val):
        raise InputError(f"{store}: the train and val splits must both hold items")
    prepare_run(run_dir, config, resume)
    module = Celle2Module(model_config, config, train, val, run_dir)
    if config.init_from and not resume:
        copied, kept = initialise_from(module.model, config.init_from)
        append_metrics(run_dir, {"step": 0, "init_from": str(config.init_from), "copied_tensors": len(copied),
                                 "initialised_tensors": kept})
    fit_steps(module, config, last, run_dir, resume, progress, lambda step, remaining: range(remaining),
              callbacks=callbacks or [])  # the step drives the data
    return save_final_model(module.model, run_dir, module.step, config)
