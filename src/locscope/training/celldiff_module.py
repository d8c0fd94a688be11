"""Lightning glue for CELL-Diff training: the loss, AdamW with warm-up + linear decay, EMA, validation gate,
sample grids and exact resume from atomic safetensors checkpoints.

Run directory::

    RUN_DIR/train_config.json          the CellDiffTrainConfig used
    RUN_DIR/checkpoints/last/          model.safetensors + config.json (EMA weights: a loadable CellDiff),
                                       online.safetensors, optimizer.safetensors + optimizer.json, state.json
    RUN_DIR/model/                     the final EMA model (CellDiff.from_pretrained)
    RUN_DIR/samples/step_XXXXXX.png    landmarks | real protein | generated (true sequence) | generated (shuffled)
    RUN_DIR/metrics.jsonl              one JSON line per log interval and per validation

Exact resume: every random draw of step ``s`` on rank ``r`` comes from a generator seeded by ``(seed, s, r)`` and the
sampler's order from ``(seed, epoch)``; checkpoints fall on epoch ends; so a resumed run replays the same batches,
noise, learning rates and optimizer states as an uninterrupted one.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_snr

from locscope.diffusion.celldiff_sampler import sample_protein_images, schedule_for
from locscope.diffusion.masked import mask_random_residues, masked_residue_loss
from locscope.encoders.protein import MASK_ID, PAD_ID
from locscope.errors import InputError
from locscope.models.celldiff import CellDiff, CellDiffConfig, config_by_name
from locscope.models.sequence_heads import distribution_loss
from locscope.report.images import write_sample_grid
from locscope.training.common import (
    append_metrics, augment, derangement, initialise_from, interval_record, learning_rate_at, learning_rate_schedule,
    model_config_from, open_run, pearson, prepare_run, restore_step_and_epoch, save_final_model, step_generator,
    step_trainer, update_ema, use_bf16, write_checkpoint,
)


@dataclass
class CellDiffTrainConfig:
    """Training hyper-parameters (a YAML/JSON ``--config`` file holds any subset of these fields).

    ``model`` names a base configuration (``celldiff-tiny`` / ``celldiff-base``) and ``model_overrides`` changes its
    fields. ``sequence_loss_weight`` is the seed's lambda (seed 100 with its loss scaling; 1.0 here by default).
    ``image_loss`` is ``'v'`` (v-prediction MSE) or ``'v-min-snr'`` (min-SNR-gamma weighting, Hang et al. 2023).
    ``fraction_loss_weight`` and ``fraction_teacher_probability`` apply to models with the compartment bottleneck
    (``fraction_classes``): the weight of the fraction head's soft cross-entropy against the simulator's true compartment
    fractions, and the share of image-task samples conditioned on those true fractions instead of the head's prediction.
    ``bf16`` is ``true``, ``false`` or ``'auto'`` (bf16 autocast where the device computes bf16 natively,
    :func:`locscope.training.common.use_bf16`).
    ``strategy`` is any Lightning strategy name (``'ddp_find_unused_parameters_true'`` for DDP) or ``'fsdp'``: FSDP2
    through Lightning's ModelParallelStrategy (each adaLN-Zero block and the root sharded; checkpoints stay full).
    ``torch_threads`` sets ``torch.set_num_threads`` (1 is several times faster than 2 on a busy shared CPU, where
    OpenMP threads spin waiting for each other).
    ``class_balance`` (0-1) draws training cells so that rare level-3 classes of the compartment labels come up more
    often (:func:`locscope.training.celldiff_data.class_balance_weights`; 0, the default, draws uniformly, 1 every
    class about equally often), e.g. for a real-protein corpus dominated by nuclear and cytosolic proteins.
    ``compile`` runs the network and its layout prior through ``torch.compile`` (inductor, with its channels-last
    layout conversion off: channels-last slows this network's bf16 convolutions on the CPU). Off by default: on a
    2-core AVX-512 CPU it made a celldiff-64 step ~1.1x faster after up to ~5 minutes of compiling at every start or
    resume (docs/benchmarks.md), which pays only on long runs; on an Intel Xeon with AMX its backward gave NaN
    gradients under bf16 autocast (the run then stops at step 1, :func:`locscope.training.common.FiniteGuard`).
    """

    model: str = "celldiff-tiny"
    model_overrides: dict = field(default_factory=dict)
    batch_size: int = 32
    max_steps: int = 3000
    steps_per_epoch: int = 200
    learning_rate: float = 3e-4
    warmup_steps: int = 150
    final_lr_fraction: float = 0.0
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    sequence_task_probability: float = 0.5
    sequence_loss_weight: float = 1.0
    compartment_loss_weight: float = 0.5
    fraction_loss_weight: float = 1.0
    fraction_teacher_probability: float = 0.5
    layout_loss_weight: float = 1.0
    layout_mask_loss_weight: float = 1.0
    init_from: str | None = None
    sequence_dropout: float = 0.1
    landmark_drop_probability: float = 0.2
    repair_probability: float = 0.5
    class_balance: float = 0.0
    image_loss: str = "v"
    min_snr_gamma: float = 5.0
    augment: bool = True
    bf16: bool | str = False
    seed: int = 0
    log_every_steps: int = 20
    val_items: int = 32
    val_every_epochs: int = 1
    val_sampler: str = "dpmsolver"
    val_steps: int = 10
    val_guidance: float = 2.0
    accelerator: str = "auto"
    devices: int = 1
    strategy: str = "auto"
    num_workers: int = 0
    torch_threads: int | None = None
    max_minutes: float | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        if self.image_loss not in ("v", "v-min-snr"):
            raise ValueError(f"image_loss={self.image_loss!r}: accepted values are v, v-min-snr")
        if not 0.0 <= self.class_balance <= 1.0:
            raise ValueError(f"class_balance={self.class_balance}: must be within 0-1")
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile={self.compile!r}: accepted values are true, false")

    def model_config(self) -> CellDiffConfig:
        return model_config_from(functools.partial(config_by_name, self.model), self.model_overrides,
                                 "model / model_overrides")


@torch.no_grad()
def sequence_conditioning_gate(model: CellDiff, split, n_items: int, sampler: str = "dpmsolver", steps: int = 10,
                               guidance: float = 2.0, seed: int = 0, batch_size: int = 32) -> dict[str, Any]:
    """Generate images of held-out items with their TRUE and with SHUFFLED sequences; compare to the real images.

    The score is the Pearson correlation of each generated protein image with the item's real protein image (same
    cell, same landmarks). The gate passes when true sequences beat shuffled ones on average.

    Returns
    -------
    dict
        ``pcc_true``, ``pcc_shuffled``, ``gate_passed``, ``n``, plus the tensors ``generated_true``,
        ``generated_shuffled`` ``(n, 1, H, W)`` (for sample grids).
    """
    n = min(n_items, len(split))
    if n < 2:
        return {"n": n, "gate_passed": None}
    device = next(model.parameters()).device
    images = torch.from_numpy(split.images[:n]).to(device)
    shuffled = derangement(n, seed)
    results = {}
    for name, rows in (("true", np.arange(n)), ("shuffled", shuffled)):
        generated = []
        for start in range(0, n, batch_size):
            index = rows[start:start + batch_size]
            width = max(len(split.tokens[i]) for i in index)
            tokens = torch.full((len(index), width), PAD_ID, dtype=torch.long)
            for r, i in enumerate(index):
                tokens[r, : len(split.tokens[i])] = torch.tensor(split.tokens[i])
            g = torch.Generator(device=device).manual_seed(seed + start)
            out, _ = sample_protein_images(model, images[start:start + len(index), 1:], tokens.to(device),
                                           sampler=sampler, steps=steps, guidance=guidance, generator=g)
            generated.append(out)
        results[name] = torch.cat(generated)
    pcc_true = pearson(results["true"], images[:, :1]).mean().item()
    pcc_shuffled = pearson(results["shuffled"], images[:, :1]).mean().item()
    return {"n": n, "pcc_true": pcc_true, "pcc_shuffled": pcc_shuffled, "gate_passed": pcc_true > pcc_shuffled,
            "generated_true": results["true"], "generated_shuffled": results["shuffled"]}


class CellDiffModule(L.LightningModule):
    """The training system around a :class:`CellDiff` (the model stays a plain ``nn.Module``)."""

    def __init__(self, model_config: CellDiffConfig, train_config: CellDiffTrainConfig, run_dir: str | Path,
                 step_offset: int = 0, epoch_offset: int = 0) -> None:
        super().__init__()
        self.model_config, self.train_config = model_config, train_config
        self.model = CellDiff(model_config)
        self.schedule = schedule_for(self.model)
        self.run_dir = Path(run_dir)
        self.step_offset, self.epoch_offset = step_offset, epoch_offset
        self.ema = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self._optimizer_state: dict | None = None
        self._val_split = None
        self._last_log, self._last_log_cpu = time.time(), time.process_time()
        self._log_sums: dict[str, float] = {}

    # -- sharding (strategy "fsdp": FSDP2 through Lightning's ModelParallelStrategy) ---------------------------------
    @property
    def sharded(self) -> bool:
        return self.train_config.strategy == "fsdp"

    def configure_model(self) -> None:
        """FSDP2: shard every adaLN-Zero block (the bulk of celldiff-base) and the rest of the network over the data
        parallel ranks; the EMA weights become shards with the same layout."""
        if not self.sharded or getattr(self, "_is_sharded", False):
            return
        from torch.distributed.fsdp import fully_shard
        from torch.distributed.tensor import distribute_tensor

        mesh = self.device_mesh["data_parallel"]
        for block in self.model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(self.model, mesh=mesh)
        self.ema = {name: distribute_tensor(self.ema[name].to(value.device), value.device_mesh, value.placements)
                    if hasattr(value, "device_mesh") else self.ema[name]
                    for name, value in self.model.state_dict().items()}
        self._is_sharded = True

    def full_state(self) -> tuple[dict, dict, dict | None]:
        """``(online, ema, optimizer)`` as full CPU tensors; under FSDP a collective that every rank must call (the
        optimizer state is then keyed by parameter name, else by index as ``optimizer.state_dict()``)."""
        def gather(values: dict) -> dict:
            return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().cpu().contiguous()
                    for k, v in values.items()}

        optimizer = self.optimizers()
        optimizer = getattr(optimizer, "optimizer", optimizer)
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            state = get_optimizer_state_dict(self.model, optimizer,
                                             options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        else:
            state = optimizer.state_dict()
        return gather(self.model.state_dict()), gather(self.ema), state

    # -- optimisation ---------------------------------------------------------------------------------------------
    @property
    def step(self) -> int:
        """Optimizer steps done in the whole run (across resumes)."""
        return self.step_offset + self.global_step

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, parameter in self.model.named_parameters():
            if parameter.requires_grad:
                (no_decay if parameter.ndim < 2 or "embed" in name or "positions" in name else decay).append(parameter)
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": self.train_config.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}],
                                      lr=self.train_config.learning_rate, betas=(0.9, 0.999))
        if self._optimizer_state is not None:
            for group in optimizer.param_groups:  # the saved groups carry the scheduler's base rate
                group["initial_lr"] = self.train_config.learning_rate
            if self.sharded:
                from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

                set_optimizer_state_dict(self.model, optimizer, self._optimizer_state,
                                         options=StateDictOptions(full_state_dict=True))
            else:
                optimizer.load_state_dict(self._optimizer_state)
        return {"optimizer": optimizer, "lr_scheduler": learning_rate_schedule(optimizer, self.train_config, self.step)}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        cfg = self.train_config
        losses = self.compute_losses(batch, step_generator(cfg.seed, self.step, self.global_rank))
        for name, value in losses.items():
            self._log_sums[name] = self._log_sums.get(name, 0.0) + float(value.detach())
        return losses["loss"]

    def compute_losses(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The CELL-Diff objective on one batch; every random draw comes from ``generator`` (CPU).

        Per sample, with probability ``sequence_task_probability`` the sequence task (k random residues masked,
        clean image, CE / k) else the image task (noised image, v-MSE, the sequence dropped with probability
        ``sequence_dropout``); plus the auxiliary compartment loss on every sample.
        """
        cfg, model = self.train_config, self.model
        images = batch["images"]
        device = images.device
        masks = batch.get("masks")
        if cfg.augment:  # masks rotate and flip with their cell
            joint = images.cpu() if masks is None else torch.cat([images.cpu(), masks.cpu().to(images.dtype)], 1)
            joint = augment(joint, generator).to(device)
            images, masks = (joint, None) if masks is None else (joint[:, :images.shape[1]],
                                                                 joint[:, images.shape[1]:])
        batch_size = images.shape[0]
        x0, landmarks = images[:, :1], images[:, 1:]
        n_landmarks = landmarks.shape[1]
        present = torch.rand(batch_size, n_landmarks, generator=generator) >= cfg.landmark_drop_probability
        present[:, 0] = True  # the first landmark (nucleus) is always given
        sequence_task = torch.rand(batch_size, generator=generator) < cfg.sequence_task_probability
        timesteps = torch.randint(0, self.schedule.num_steps, (batch_size,), generator=generator)
        timesteps = timesteps.masked_fill(sequence_task, 0)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        drop = (torch.rand(batch_size, generator=generator) < cfg.sequence_dropout) & ~sequence_task
        teacher = torch.rand(batch_size, generator=generator) < cfg.fraction_teacher_probability
        fractions = batch.get("fractions")
        has_fractions = fractions is not None and fractions.shape[1] > 0 and bool(model.config.fraction_classes)
        tokens = batch["tokens"]
        lengths = (tokens != PAD_ID).sum(1)
        masked_tokens, masked, k = mask_random_residues(tokens.cpu(), lengths.cpu(), MASK_ID, generator)
        tokens_in = torch.where(sequence_task[:, None], masked_tokens, tokens.cpu()).to(device)
        sequence_task, timesteps = sequence_task.to(device), timesteps.to(device)
        x_t = self.schedule.add_noise(x0, noise, timesteps)
        x_t = torch.where(sequence_task[:, None, None, None], x0, x_t)

        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(cfg.bf16, device)):
            # one layout pass: the denoiser gets the maps detached, the layout losses below train them
            maps, membership = model.layout_maps(landmarks, present.to(device)) if model.config.layout_prior \
                else (None, None)
            # teacher forcing only where the true fractions are known (all-zero rows = unknown)
            use_true = (teacher.to(device) & (fractions.sum(1) > 0)) if has_fractions else None
            # v only where the image loss counts (sequence-task rows need the transformer, not the up path); all rows
            # when none counts, so every parameter still takes part (DDP, FSDP)
            image_rows = ~sequence_task if bool((~sequence_task).any()) else torch.ones_like(sequence_task)
            out = model(x_t, timesteps, landmarks, tokens_in, present.to(device), drop.to(device),
                        fractions if has_fractions else None, use_true, maps, image_rows)
        weights = (~sequence_task[image_rows]).float()
        target = self.schedule.v_target(x0[image_rows], noise[image_rows], timesteps[image_rows])
        per_sample = (out.image.float() - target).pow(2).mean(dim=(1, 2, 3))
        if cfg.image_loss == "v-min-snr":
            snr = compute_snr(self.schedule, timesteps[image_rows])
            per_sample = per_sample * snr.clamp(max=cfg.min_snr_gamma) / (snr + 1)
        image_loss = (per_sample * weights).sum() / weights.sum().clamp(min=1)
        sequence_rows = sequence_task.float()
        residue_loss = masked_residue_loss(out.residue_logits, tokens.to(device), masked.to(device) & sequence_task[:, None],
                                           k.to(device))
        sequence_loss = (residue_loss * sequence_rows).sum() / sequence_rows.sum().clamp(min=1)
        compartment_loss = distribution_loss(out.compartment_logits, batch["labels"])
        loss = image_loss + cfg.sequence_loss_weight * sequence_loss + cfg.compartment_loss_weight * compartment_loss
        losses = {"image_loss": image_loss, "sequence_loss": sequence_loss, "compartment_loss": compartment_loss}
        if has_fractions:
            known = fractions.sum(1) > 0
            targets = fractions.float() / fractions.float().sum(1, keepdim=True).clamp(min=1e-8)
            fraction_loss = distribution_loss(out.fraction_logits, fractions)
            loss = loss + cfg.fraction_loss_weight * fraction_loss
            losses["fraction_loss"] = fraction_loss
            if model.config.layout_prior:
                layout = (model.mix_layout(maps.float(), targets) - x0).pow(2).mean(dim=(1, 2, 3))
                layout_loss = (layout * known).sum() / known.sum().clamp(min=1)
                loss = loss + cfg.layout_loss_weight * layout_loss
                losses["layout_loss"] = layout_loss
                if masks is not None and cfg.layout_mask_loss_weight > 0:
                    mask_loss = F.binary_cross_entropy_with_logits(membership.float(), masks.float())
                    loss = loss + cfg.layout_mask_loss_weight * mask_loss
                    losses["layout_mask_loss"] = mask_loss
        return {"loss": loss, **losses}

    def on_train_start(self) -> None:
        self._last_log, self._last_log_cpu = time.time(), time.process_time()  # the first interval leaves out set-up

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        step = self.step  # already incremented by Lightning after the optimizer step
        update_ema(self.ema, self.model, self.train_config.ema_decay, step)
        if step % self.train_config.log_every_steps == 0 and self.global_rank == 0:
            self._append_metrics(interval_record(step, learning_rate_at(step - 1, self.train_config), self._log_sums,
                                                 self.train_config, self._last_log,
                                                 world_size=self.trainer.world_size, since_cpu=self._last_log_cpu))
            self._last_log, self._last_log_cpu = time.time(), time.process_time()
        if step % self.train_config.log_every_steps == 0:
            self._log_sums = {}

    def _append_metrics(self, record: dict) -> None:
        append_metrics(self.run_dir, record)

    # -- EMA model, validation, checkpoints -----------------------------------------------------------------------
    def ema_model(self, ema: dict | None = None) -> CellDiff:
        """A copy of the network holding the EMA weights (or the given full ``ema`` state), in eval mode."""
        if self.sharded:
            model = CellDiff(self.model_config)
            model.load_state_dict(ema if ema is not None else self.full_state()[1])
            return model.eval()
        # a new network, not a deep copy: a copy of a compiled module would run the original's compiled forward
        with torch.random.fork_rng(devices=[]):  # its initialisation leaves the run's random stream alone
            model = CellDiff(self.model_config).to(next(self.model.parameters()).device)
        model.load_state_dict(ema if ema is not None else self.ema)
        return model.eval()

    def on_train_epoch_end(self) -> None:
        epoch = self.epoch_offset + self.current_epoch + 1
        full = self.full_state() if self.sharded else None  # collective: every rank takes part
        if self.global_rank == 0:
            if self._val_split is not None and epoch % self.train_config.val_every_epochs == 0:
                self.validate_gate(None if full is None else full[1])
            self.save_checkpoint(self.run_dir / "checkpoints" / "last", epoch, full)

    def validate_gate(self, ema: dict | None = None) -> dict:
        cfg = self.train_config
        model = self.ema_model(ema)
        gate = sequence_conditioning_gate(model, self._val_split, cfg.val_items, cfg.val_sampler, cfg.val_steps,
                                          cfg.val_guidance, seed=cfg.seed)
        if gate.get("gate_passed") is None:
            return gate
        images = self._val_split.images[:8]
        write_sample_grid(self.run_dir / "samples" / f"step_{self.step:06d}.png", images,
                          [gate["generated_true"][:8].cpu().numpy(), gate["generated_shuffled"][:8].cpu().numpy()],
                          self.model_config.landmark_channels)
        self._append_metrics({"step": self.step, "val_pcc_true": gate["pcc_true"],
                              "val_pcc_shuffled": gate["pcc_shuffled"], "val_gate_passed": gate["gate_passed"],
                              "val_items": gate["n"]})
        return gate

    def save_checkpoint(self, directory: Path, epoch: int, full: tuple | None = None) -> None:
        """Atomically write the resumable state (see the module docstring); ``full`` = :meth:`full_state` (FSDP)."""
        online, ema, state = full if full is not None else self.full_state()
        write_checkpoint(directory, self.ema_model(ema), state, {"step": self.step, "epoch": epoch}, online=online)

    def load_checkpoint(self, directory: Path) -> dict:
        """Restore online + EMA weights and the optimizer state written by :meth:`save_checkpoint` (strictly)."""
        from safetensors.torch import load_file

        from locscope.utils.checkpoint import (
            check_state_dict, load_optimizer_state, load_state_dict_strict, read_torch_weights,
        )

        online = load_file(str(directory / "online.safetensors"))
        load_state_dict_strict(self.model, online, source=str(directory / "online.safetensors"))
        ema = read_torch_weights(directory / "model.safetensors")
        check_state_dict(self.model, ema, source=str(directory / "model.safetensors"))
        self.ema = {k: v.clone() for k, v in ema.items()}
        self._optimizer_state = load_optimizer_state(directory)
        return json.loads((directory / "state.json").read_text())


def train_celldiff(store: str | Path, run_dir: str | Path, config: CellDiffTrainConfig | None = None,
                   resume: bool = False, progress: bool = True, callbacks: list | None = None) -> Path:
    """Train CELL-Diff on a store; returns the directory of the final EMA model (``RUN_DIR/model``).

    Parameters
    ----------
    store : path
        A :mod:`locscope.data.store` with ``protein`` + landmark channels, sequences and level-3 labels.
    run_dir : path
        Output directory (see the module docstring for its layout).
    config : CellDiffTrainConfig, optional
        Hyper-parameters (defaults if omitted). With ``resume`` the run's saved config is used.
    resume : bool
        Continue from ``RUN_DIR/checkpoints/last`` with identical step count, optimizer and RNG state.
    callbacks : list of lightning.Callback, optional
        Extra Lightning callbacks.

    Raises
    ------
    InputError
        If ``resume`` is asked without a checkpoint, or the run dir holds another run and ``resume`` is off.
    """
    from locscope.training.celldiff_data import CellDiffDataModule

    run_dir, last, config = open_run(run_dir, resume, config, CellDiffTrainConfig)
    model_config = config.model_config()
    prepare_run(run_dir, config, resume)
    module = CellDiffModule(model_config, config, run_dir)
    if config.init_from and not resume:
        copied, kept = initialise_from(module.model, config.init_from)
        module.ema = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
        append_metrics(run_dir, {"step": 0, "init_from": str(config.init_from), "copied_tensors": len(copied),
                                 "initialised_tensors": kept})
    step, epoch = restore_step_and_epoch(module, last, run_dir, resume)
    if config.compile:
        compile_network(module.model)
    remaining = config.max_steps - step
    data = CellDiffDataModule(store, model_config.landmark_channels, model_config.compartment_classes,
                              model_config.image_size, model_config.max_sequence_length, config.batch_size,
                              config.steps_per_epoch, config.seed, config.repair_probability, epoch_offset=epoch,
                              val_limit=config.val_items, num_workers=config.num_workers,
                              fraction_classes=model_config.fraction_classes,
                              masks=model_config.layout_prior and config.layout_mask_loss_weight > 0,
                              mask_cache=run_dir / "cache", class_balance=config.class_balance)
    data.setup("fit")
    module._val_split = data.val if data.val is not None and len(data.val) >= 2 else None
    if remaining > 0:
        torch.manual_seed(config.seed + step)  # training draws use step_generator; this covers third-party layers
        trainer = step_trainer(config, remaining, progress, max_epochs=-1, strategy=_strategy(config),
                               callbacks=callbacks)
        trainer.fit(module, train_dataloaders=data.train_dataloader())
        ema = module.full_state()[1] if module.sharded else None  # collective under FSDP
        if trainer.global_rank != 0:
            return run_dir / "model"
        return save_final_model(module.ema_model(ema), run_dir, module.step, config)
    return save_final_model(module.ema_model(), run_dir, module.step, config)


def compile_network(model: CellDiff) -> None:
    """Compile ``model``'s forward and its layout prior in place (``torch.compile``, inductor; parameter names and
    ``state_dict`` unchanged), without inductor's channels-last layout conversion."""
    options = {"layout_optimization": False}
    model.compile(options=options)
    if model.config.layout_prior:
        model.layout.compile(options=options)


def _strategy(config: CellDiffTrainConfig):
    """Lightning strategy for ``config.strategy``; ``'fsdp'`` = FSDP2 (``fully_shard``) through ModelParallelStrategy,
    which also runs on CPU processes (gloo), unlike Lightning's FSDPStrategy."""
    if config.strategy != "fsdp":
        return config.strategy
    from lightning.pytorch.strategies import ModelParallelStrategy

    devices = config.devices if isinstance(config.devices, int) and config.devices > 0 else "auto"
    return ModelParallelStrategy(data_parallel_size=devices, tensor_parallel_size=1)
