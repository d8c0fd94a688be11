"""Lightning glue for virtual-staining training: the denoiser (``locscope train stain``) and its noisy classifier
(``locscope train stain-classifier``).

Data: brightfield + the five Cell Painting channels with a perturbation class, either rendered by the simulator for
every step (``data=None``: batch ``s`` is a pure function of ``(seed, s)``, so a resumed run sees the same batches)
or drawn from a store's train split (channels ``brightfield``, ``dna``, ``rna``, ``er``, ``agp``, ``mito``; class =
``provenance["perturbation"]``). Every image is z-scored per channel and clipped at +-15, then rotated / flipped at
random (the paper's augmentation).

Losses (the paper's Algorithm 1): ``t ~ U{1..T-1}``, gamma uniform between gamma_{t-1} and gamma_t,
``y_t = sqrt(gamma) y_0 + sqrt(1 - gamma) eps``; the denoiser regresses eps (MSE) with the class replaced by the null
class on ``class_drop_probability`` of the rows (label-free use, classifier-free guidance); the classifier predicts the
class of ``y_t`` (cross-entropy) at the same noise levels.

Run directory::

    RUN_DIR/train_config.json
    RUN_DIR/checkpoints/last/     model.safetensors + config.json (EMA weights, loadable), online.safetensors,
                                  optimizer.safetensors / optimizer.json, state.json (step)
    RUN_DIR/metrics.jsonl         loss, learning rate, validation
    RUN_DIR/model/                the final EMA model
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from locscope.channels import BRIGHTFIELD, CELL_PAINTING
from locscope.data.transforms import standardize
from locscope.diffusion.stain_sampler import LinearSchedule, sample_stain
from locscope.errors import InputError
from locscope.models.stain import (
    StainClassifier, StainClassifierConfig, StainConfig, StainUNet, classifier_config_for, config_by_name,
)
from locscope.training.common import (
    append_metrics, augment, end_step, fit_steps, learning_rate_at, learning_rate_schedule, model_config_from,
    open_run, pearson, prepare_run, save_final_model, step_generator, update_ema, write_checkpoint,
)


@dataclass
class StainTrainConfig:
    """Training hyper-parameters (a YAML/JSON ``--config`` file holds any subset of these fields).

    ``model`` names the base config (``stain-tiny`` / ``stain-base``) and ``model_overrides`` changes its fields; the
    classes are the simulator's perturbations unless overridden. ``image_size`` is the simulator crop side.
    """

    model: str = "stain-tiny"
    model_overrides: dict = dataclasses.field(default_factory=dict)
    image_size: int = 32
    data: str | None = None
    batch_size: int = 16
    max_steps: int = 2000
    steps_per_epoch: int = 100
    learning_rate: float = 5e-4
    warmup_steps: int = 100
    final_lr_fraction: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    class_drop_probability: float = 0.1
    classifier_uses_condition: bool = False
    seed: int = 0
    log_every_steps: int = 20
    val_images: int = 16
    val_steps: int = 10
    accelerator: str = "auto"
    devices: int = 1
    strategy: str = "auto"
    torch_threads: int | None = None
    max_minutes: float | None = None

    def denoiser_config(self) -> StainConfig:
        from locscope.synth.config import PERTURBATIONS

        overrides = {"condition_planes": 1, "classes": PERTURBATIONS, "image_size": self.image_size,
                     **self.model_overrides}
        return model_config_from(functools.partial(config_by_name, self.model), overrides, "model / model_overrides")

    def classifier_config(self) -> StainClassifierConfig:
        return classifier_config_for(self.denoiser_config(), use_condition=self.classifier_uses_condition)


def simulated_batch(size: int, n: int, rng: np.random.Generator, classes: tuple[str, ...],
                    seed_parity: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` simulator cells: z-scored brightfield ``(n, 1, H, W)``, Cell Painting ``(n, 5, H, W)`` and class indices
    ``(n,)``. Cell seeds have parity ``seed_parity`` (0: training, 1: held-out wells), so the two never share a cell."""
    from locscope.synth import SimulatorConfig, render_cell

    sim = SimulatorConfig(size=size, brightfield=True, cell_painting=True, perturbation="random")
    condition, target, labels = [], [], []
    for seed in rng.integers(0, 2**30, n):
        cell = render_cell(sim, seed=int(2 * seed + seed_parity))
        condition.append(cell.images[BRIGHTFIELD][None])
        target.append(np.stack([cell.images[c] for c in CELL_PAINTING]))
        labels.append(classes.index(cell.perturbation))
    return (torch.from_numpy(standardize(np.stack(condition), clip=15.0)),
            torch.from_numpy(standardize(np.stack(target), clip=15.0)), torch.tensor(labels))


def store_batch(store, indices: np.ndarray, classes: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
    """The items ``indices`` of a store as :func:`simulated_batch` returns them."""
    condition, target, labels = [], [], []
    for i in indices:
        item = store[int(i)]
        condition.append(item["images"][BRIGHTFIELD][None].astype(np.float32))
        target.append(np.stack([item["images"][c] for c in CELL_PAINTING]).astype(np.float32))
        name = item["provenance"].get("perturbation", "control")
        if name not in classes:
            raise InputError(f"store item {item['id']}: perturbation {name!r} is not one of {', '.join(classes)}")
        labels.append(classes.index(name))
    return (torch.from_numpy(standardize(np.stack(condition), clip=15.0)),
            torch.from_numpy(standardize(np.stack(target), clip=15.0)), torch.tensor(labels))


class StepBatches(torch.utils.data.Dataset):
    """Item ``i`` is the whole batch of training step ``first_step + i``."""

    def __init__(self, config: StainTrainConfig, classes: tuple[str, ...], first_step: int, steps: int) -> None:
        self.config, self.classes, self.first_step, self.steps = config, classes, first_step, steps
        self._store = self._train = None

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int):
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, self.first_step + index])
        if cfg.data is None:
            return simulated_batch(cfg.image_size, cfg.batch_size, rng, self.classes)
        if self._store is None:
            from locscope.data.store import Store

            self._store = Store.open(cfg.data)
            self._train = self._store.split_indices("train")
        return store_batch(self._store, rng.choice(self._train, cfg.batch_size), self.classes)


def check_store(path: str | Path) -> None:
    """A store for stain training must hold brightfield + the Cell Painting channels and a train split."""
    from locscope.data.store import Store

    store = Store.open(path)
    missing = [c for c in (BRIGHTFIELD, *CELL_PAINTING) if c not in store.channels]
    if missing:
        raise InputError(f"{path}: store lacks channel(s) {', '.join(missing)} (simulate with --brightfield "
                         "--cell-painting --perturbation random)")
    if len(store.split_indices("train")) == 0:
        raise InputError(f"{path}: store has no train items")


class StainModule(L.LightningModule):
    """The training system around a :class:`StainUNet` (``kind='denoiser'``) or :class:`StainClassifier`."""

    def __init__(self, kind: str, train_config: StainTrainConfig, run_dir: str | Path, step_offset: int = 0) -> None:
        super().__init__()
        if kind not in ("denoiser", "classifier"):
            raise ValueError(f"kind={kind!r}: accepted values are denoiser, classifier")
        self.kind, self.train_config, self.run_dir = kind, train_config, Path(run_dir)
        denoiser_config = train_config.denoiser_config()
        self.model = StainUNet(denoiser_config) if kind == "denoiser" else \
            StainClassifier(train_config.classifier_config())
        self.classes = denoiser_config.classes
        self.schedule = LinearSchedule(denoiser_config.num_train_timesteps, denoiser_config.beta_start,
                                       denoiser_config.beta_end)
        self.ema = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.step_offset = step_offset
        self._optimizer_state: dict | None = None
        self._loss_sum, self._last_log = 0.0, time.time()
        val_rng = np.random.default_rng([train_config.seed, 2**31 - 1])  # fixed held-out cells (odd seeds)
        self._val = simulated_batch(train_config.image_size, train_config.val_images, val_rng, self.classes, 1)

    @property
    def step(self) -> int:
        return self.step_offset + self.global_step

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=learning_rate_at(self.step, self.train_config),
                                      weight_decay=self.train_config.weight_decay)
        if self._optimizer_state is not None:
            optimizer.load_state_dict(self._optimizer_state)
        return {"optimizer": optimizer, "lr_scheduler": learning_rate_schedule(optimizer, self.train_config, self.step)}

    def on_train_batch_start(self, batch, batch_idx) -> None:
        # dropout draws from the global generator: seed it per step so that a resumed run repeats them
        torch.manual_seed(int(step_generator(self.train_config.seed, self.step, self.global_rank).initial_seed()) + 1)

    def loss(self, condition: torch.Tensor, target: torch.Tensor, labels: torch.Tensor,
             generator: torch.Generator, drop_probability: float) -> torch.Tensor:
        """One batch's loss; every random draw comes from ``generator`` (CPU)."""
        batch = target.shape[0]
        t = torch.randint(1, self.schedule.num_steps, (batch,), generator=generator)
        gamma = self.schedule.training_gammas(t, torch.rand(batch, 1, generator=generator))
        noise = torch.randn(target.shape, generator=generator)
        noisy = self.schedule.q_sample(target, gamma, noise).to(self.device)
        gamma = gamma.to(self.device)
        if self.kind == "classifier":
            cond = condition.to(self.device) if self.model.config.use_condition else None
            return F.cross_entropy(self.model(cond, noisy, gamma), labels.to(self.device))
        drop = torch.rand(batch, generator=generator) < drop_probability
        labels = labels.masked_fill(drop, len(self.classes))
        eps = self.model(condition.to(self.device), noisy, gamma, labels.to(self.device))
        return F.mse_loss(eps, noise.to(self.device))

    def training_step(self, batch, batch_idx):
        condition, target, labels = (x[0] for x in batch)  # the DataLoader adds a batch axis of 1
        generator = step_generator(self.train_config.seed, self.step, self.global_rank)
        images = augment(torch.cat([condition, target], dim=1), generator)
        loss = self.loss(images[:, :1], images[:, 1:], labels, generator, self.train_config.class_drop_probability)
        self._loss_sum += float(loss.detach())
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        cfg, step = self.train_config, self.step
        update_ema(self.ema, self.model, cfg.ema_decay, step)
        if end_step(self, learning_rate_at(step - 1, cfg), {"loss": self._loss_sum}, "images_per_s",
                    validate=self.global_rank == 0):
            self._loss_sum = 0.0

    def ema_model(self):
        """A copy of the network holding the EMA weights, in eval mode."""
        model = type(self.model)(self.model.config)
        model.load_state_dict(self.ema)
        return model.eval()

    @torch.no_grad()
    def validate(self) -> dict:
        """Held-out loss of the EMA weights; the denoiser also samples the held-out cells (DDIM, ``val_steps``) and
        reports the mean per-channel Pearson correlation with the truth; the classifier its accuracy at gamma 0.5."""
        cfg = self.train_config
        model = self.ema_model()
        online, self.model = self.model, model
        try:
            condition, target, labels = self._val
            record: dict[str, Any] = {"step": self.step, "val_loss": float(self.loss(
                condition, target, labels, torch.Generator().manual_seed(cfg.seed), 0.0))}
            if self.kind == "denoiser":
                out = sample_stain(lambda y, g, k: model(condition, y, g, k), tuple(target.shape), self.schedule,
                                   labels, len(self.classes), sampler="ddim", steps=cfg.val_steps,
                                   generator=torch.Generator().manual_seed(cfg.seed))
                record["val_pcc"] = float(pearson(out.images.flatten(0, 1), target.flatten(0, 1)).mean())
            else:
                gamma = torch.full((len(labels),), 0.5)
                noisy = self.schedule.q_sample(target, gamma, torch.randn(target.shape,
                                                                          generator=torch.Generator().manual_seed(1)))
                logits = model(condition if model.config.use_condition else None, noisy, gamma)
                record["val_accuracy_gamma_0.5"] = float((logits.argmax(-1) == labels).float().mean())
        finally:
            self.model = online
        self._append_metrics(record)
        return record

    def _append_metrics(self, record: dict) -> None:
        if self.global_rank != 0:
            return
        append_metrics(self.run_dir, record)

    def save_checkpoint(self, directory: Path) -> None:
        """Atomically write EMA weights (loadable model), online weights, optimizer state and the step."""
        write_checkpoint(directory, self.ema_model(), self.optimizers().optimizer.state_dict(), {"step": self.step},
                         online={k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()})

    def load_checkpoint(self, directory: Path) -> int:
        """Restore online + EMA weights (strictly) and the optimizer state; returns the step."""
        from locscope.utils.checkpoint import load_optimizer_state, load_state_dict_strict, read_torch_weights

        load_state_dict_strict(self.model, read_torch_weights(directory / "online.safetensors"),
                               source=str(directory / "online.safetensors"))
        ema = read_torch_weights(directory / "model.safetensors")
        probe = type(self.model)(self.model.config)
        load_state_dict_strict(probe, ema, source=str(directory / "model.safetensors"))
        self.ema = {k: v.clone() for k, v in ema.items()}
        self._optimizer_state = load_optimizer_state(directory)
        return int(json.loads((directory / "state.json").read_text())["step"])


def train_stain(run_dir: str | Path, config: StainTrainConfig | None = None, kind: str = "denoiser",
                resume: bool = False, progress: bool = True, callbacks: list | None = None) -> Path:
    """Train the stain denoiser (``kind='denoiser'``) or its noisy classifier; returns ``RUN_DIR/model``.

    Parameters
    ----------
    run_dir : path
        Output directory (layout in the module docstring).
    config : StainTrainConfig, optional
        Hyper-parameters (defaults if omitted). With ``resume`` the run's saved config is used.
    kind : {'denoiser', 'classifier'}
    resume : bool
        Continue from ``RUN_DIR/checkpoints/last`` (same batches, learning rates, EMA and optimizer state as an
        uninterrupted run).
    callbacks : list of lightning.Callback, optional
        Extra Lightning callbacks.

    Raises
    ------
    InputError
        ``resume`` without a checkpoint; a run directory that already holds a run without ``resume``; ``max_steps``
        not a multiple of ``steps_per_epoch``; a store without the needed channels.
    """
    run_dir, last, config = open_run(run_dir, resume, config, StainTrainConfig)
    if config.data is not None:
        check_store(config.data)
    classes = config.denoiser_config().classes
    prepare_run(run_dir, config, resume)
    module = StainModule(kind, config, run_dir)
    trainer = fit_steps(module, config, last, run_dir, resume, progress,
                        lambda step, remaining: StepBatches(config, classes, step, remaining),
                        strategy=config.strategy, callbacks=callbacks)
    if trainer is not None and trainer.global_rank != 0:
        return run_dir / "model"
    return save_final_model(module.ema_model(), run_dir, module.step, config, kind=kind)
