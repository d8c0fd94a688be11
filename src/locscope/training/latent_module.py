"""Lightning glue for the latent diffusion family: the autoencoder and the denoiser train separately.

Stage 1, ``train_latent_autoencoder``: :class:`~locscope.models.latent.LatentAutoencoder` on the store's images with
L1 + KL + a perceptual term + a PatchGAN discriminator (hinge loss; it starts after ``discriminator_start`` steps).
The perceptual network is locscope's own bundled SubCell image encoder (``subcell-tiny``, frozen; no downloaded VGG /
LPIPS weights): the squared distance between channel-normalised ViT hidden states of every layer (LPIPS-style) of
the real and the reconstructed cell (real landmarks, reconstructed image channels). The discriminator is trained by
the same optimizer step: its loss sees the reconstruction detached, and the generator's adversarial term is computed
through a frozen copy of its parameters, so neither term pushes the other network. At the end the latent shift and
scaling factor are measured on training images (:func:`~locscope.models.latent.fit_latent_scaling`).

Stage 2, ``train_latent``: :class:`~locscope.models.latent.LatentDenoiser` on latents of the training images (posterior
means, encoded once for the 8 rotations / flips and cached in the run directory), v-prediction MSE, the sequence dropped
with p = 0.2 for guidance, ER / microtubules dropped with p = 0.2 each, sequences re-paired within the same compartment
set (:class:`~locscope.training.celldiff_data.EpochSampler`), the auxiliary compartment and fraction losses; with the
layout prior, its regression and mask losses at the latent grid (the simulator's masks re-rendered from the store's
seeds when the store holds none).

Both stages share the conventions of :mod:`locscope.training.celldiff_module`: AdamW with warm-up and linear decay, EMA
weights (what is released), every random draw of step ``s`` from a generator seeded by ``(seed, s)``, atomic
safetensors checkpoints at epoch ends and an exact ``--resume``. Run directory::

    RUN_DIR/train_config.json      the config used
    RUN_DIR/checkpoints/last/      model.safetensors + config.json (EMA), online.safetensors, optimizer.*, state.json
    RUN_DIR/model/                 the final model (stage 1: a LatentAutoencoder; stage 2: a LatentDiffusion directory)
    RUN_DIR/samples/step_XXXXXX.png, RUN_DIR/metrics.jsonl
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from locscope.channels import NUCLEUS
from locscope.errors import InputError
from locscope.models.latent import (
    CONFIGS, LatentAutoencoder, LatentDenoiser, LatentDiffusion, PatchDiscriminator, fit_latent_scaling, resize_to,
)
from locscope.models.sequence_heads import distribution_loss
from locscope.training.celldiff_data import EpochSampler, collate, load_split, split_masks
from locscope.report.images import write_sample_grid
from locscope.training.common import (
    append_metrics, derangement, initialise_from, interval_record, learning_rate_at, learning_rate_schedule,
    model_config_from, open_run, pearson, prepare_run, restore_step_and_epoch, save_final_model, step_generator,
    step_trainer, update_ema, use_bf16, write_checkpoint,
)
from locscope.utils.atomic import atomic_path


@dataclass
class LatentAutoencoderTrainConfig:
    """Stage 1 hyper-parameters (a YAML/JSON ``--config`` holds any subset). ``model`` names a configuration of
    :data:`locscope.models.latent.CONFIGS`; ``model_overrides`` change its autoencoder fields. ``bf16`` is ``true``,
    ``false`` or ``'auto'``: the networks run under bf16 autocast (:func:`locscope.training.common.use_bf16`), the
    losses in float32."""

    model: str = "latent-tiny"
    model_overrides: dict = field(default_factory=dict)
    batch_size: int = 16
    max_steps: int = 1200
    steps_per_epoch: int = 100
    learning_rate: float = 4e-4
    warmup_steps: int = 50
    final_lr_fraction: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.99
    kl_weight: float = 1e-6
    perceptual_weight: float = 0.5
    discriminator_weight: float = 0.05
    discriminator_start: int = 400
    discriminator_width: int = 32
    discriminator_layers: int = 2
    augment: bool = True
    seed: int = 0
    log_every_steps: int = 20
    val_items: int = 64
    scaling_items: int = 1024
    bf16: bool | str = False
    accelerator: str = "auto"
    torch_threads: int | None = None
    max_minutes: float | None = None


@dataclass
class LatentTrainConfig:
    """Stage 2 hyper-parameters. ``model`` / ``model_overrides`` give the denoiser's configuration (its image fields
    are taken from the autoencoder); the other fields follow :class:`~locscope.training.celldiff_module.
    CellDiffTrainConfig`. Layout-prior denoisers (``layout_prior: true``) add ``layout_loss_weight`` x the regression
    of the mixed maps on the protein image at the latent grid and ``layout_mask_loss_weight`` x the BCE of the
    membership logits against the simulator's compartment-mask coverage at that grid. ``init_from`` (a model or
    checkpoint directory of another denoiser) copies its weights before step 0; a U-Net input layer with fewer input
    channels (a run without the layout prior) fills the leading ones, the new ones start at zero."""

    model: str = "latent-tiny"
    model_overrides: dict = field(default_factory=dict)
    batch_size: int = 32
    max_steps: int = 3000
    steps_per_epoch: int = 200
    learning_rate: float = 4e-4
    warmup_steps: int = 150
    final_lr_fraction: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    sequence_dropout: float = 0.2
    landmark_drop_probability: float = 0.2
    repair_probability: float = 0.5
    compartment_loss_weight: float = 0.5
    fraction_loss_weight: float = 1.0
    fraction_teacher_probability: float = 0.5
    layout_loss_weight: float = 1.0
    layout_mask_loss_weight: float = 1.0
    init_from: str | None = None
    seed: int = 0
    log_every_steps: int = 20
    val_items: int = 32
    val_sampler: str = "dpmsolver"
    val_steps: int = 10
    val_guidance: float = 3.0
    accelerator: str = "auto"
    torch_threads: int | None = None
    max_minutes: float | None = None


def dihedral(images: torch.Tensor, index: int) -> torch.Tensor:
    """One of the 8 rotations / flips of ``(..., H, W)``: ``rot90`` by ``index % 4``, then a column flip if
    ``index >= 4``."""
    out = torch.rot90(images, index % 4, dims=(-2, -1))
    return out.flip(-1) if index >= 4 else out


def distance_maps(nuclei: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` nucleus images in [0, 1] -> ``(N, H, W)`` nuclear distance maps in [-1, 1] (nuclei segmented
    with :func:`locscope.data.transforms.segment_nuclei`)."""
    from locscope.data.transforms import nuclear_distance_map, segment_nuclei

    maps = [nuclear_distance_map(segment_nuclei(n)) for n in nuclei]
    return np.stack(maps).astype(np.float32) if maps else np.zeros(nuclei.shape, np.float32)


class PerceptualDistance(torch.nn.Module):
    """LPIPS-style distance through the frozen bundled SubCell encoder: for every ViT layer, the hidden states are
    normalised over channels and their squared difference averaged; the layer means are averaged.

    ``real`` and ``fake`` are ``(B, 4, H, W)`` in [0, 1] in the encoder's channel order; both are min-max normalised
    with the REAL cell's range (so intensity errors count).
    """

    def __init__(self) -> None:
        super().__init__()
        from locscope.models.image_encoder import load_default_image_encoder

        encoder = load_default_image_encoder("cpu")
        self.encoder = encoder.model.encoder.requires_grad_(False).eval()
        self.channels = tuple(encoder.channels)

    def train(self, mode: bool = True) -> "PerceptualDistance":
        super().train(mode)
        self.encoder.eval()
        return self

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hidden = self.encoder(pixel_values=images, interpolate_pos_encoding=True, output_hidden_states=True)
        return tuple(F.normalize(h, dim=-1) for h in hidden.hidden_states[1:])

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        low = real.amin(dim=(1, 2, 3), keepdim=True)
        span = (real.amax(dim=(1, 2, 3), keepdim=True) - low).clamp(min=1e-6)
        distances = [(a - b).pow(2).sum(-1).mean() for a, b in zip(self.features((real - low) / span),
                                                                    self.features((fake - low) / span))]
        return torch.stack(distances).mean()


class _LatentStage(L.LightningModule):
    """What both stages share: the optimizer and its schedule, EMA of ``self.net``, logging and checkpoints."""

    net: torch.nn.Module

    def __init__(self, train_config, run_dir: str | Path, step_offset: int = 0, epoch_offset: int = 0) -> None:
        super().__init__()
        self.train_config = train_config
        self.run_dir = Path(run_dir)
        self.step_offset, self.epoch_offset = step_offset, epoch_offset
        self._optimizer_state: dict | None = None
        self._log_sums: dict[str, float] = {}
        self._last_log = time.time()

    def init_ema(self) -> None:
        self.ema = {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    @property
    def step(self) -> int:
        return self.step_offset + self.global_step

    def trainable_groups(self) -> list[dict]:
        return [{"params": [p for p in self.net.parameters() if p.requires_grad]}]

    def configure_optimizers(self):
        cfg = self.train_config
        optimizer = torch.optim.AdamW(self.trainable_groups(), lr=learning_rate_at(self.step, cfg),
                                      weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
        if self._optimizer_state is not None:
            optimizer.load_state_dict(self._optimizer_state)
        return {"optimizer": optimizer, "lr_scheduler": learning_rate_schedule(optimizer, self.train_config, self.step)}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self.compute_losses(batch, step_generator(self.train_config.seed, self.step, 0))
        for name, value in losses.items():
            self._log_sums[name] = self._log_sums.get(name, 0.0) + float(value.detach())
        return losses["loss"]

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        cfg, step = self.train_config, self.step
        update_ema(self.ema, self.net, cfg.ema_decay, step)
        if step % cfg.log_every_steps == 0:
            self.append_metrics(interval_record(step, learning_rate_at(step - 1, cfg), self._log_sums, cfg,
                                                self._last_log))
            self._log_sums, self._last_log = {}, time.time()

    def append_metrics(self, record: dict) -> None:
        append_metrics(self.run_dir, record)

    def ema_net(self) -> torch.nn.Module:
        net = copy.deepcopy(self.net)
        net.load_state_dict(self.ema)
        return net.eval()

    def on_train_epoch_end(self) -> None:
        epoch = self.epoch_offset + self.current_epoch + 1
        self.validate()
        self.save_checkpoint(self.run_dir / "checkpoints" / "last", epoch)

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Further tensors a checkpoint keeps beside the online weights (the discriminator)."""
        return {}

    def save_checkpoint(self, directory: Path, epoch: int) -> None:
        online = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        online.update({f"extra.{k}": v.detach().cpu().contiguous() for k, v in self.extra_state().items()})
        write_checkpoint(directory, self.ema_net(), self.optimizers().optimizer.state_dict(),
                         {"step": self.step, "epoch": epoch}, online=online)

    def load_checkpoint(self, directory: Path) -> dict:
        from safetensors.torch import load_file

        from locscope.utils.checkpoint import (
            check_state_dict, load_optimizer_state, load_state_dict_strict, read_torch_weights,
        )

        online = load_file(str(directory / "online.safetensors"))
        extra = {k[len("extra."):]: v for k, v in online.items() if k.startswith("extra.")}
        load_state_dict_strict(self.net, {k: v for k, v in online.items() if not k.startswith("extra.")},
                               source=str(directory / "online.safetensors"))
        self.load_extra_state(extra, str(directory / "online.safetensors"))
        ema = read_torch_weights(directory / "model.safetensors")
        check_state_dict(self.net, ema, source=str(directory / "model.safetensors"))
        self.ema = {k: v.clone() for k, v in ema.items()}
        self._optimizer_state = load_optimizer_state(directory)
        return json.loads((directory / "state.json").read_text())

    def load_extra_state(self, extra: dict[str, torch.Tensor], source: str) -> None:
        if extra:
            raise InputError(f"{source}: unexpected extra tensors {', '.join(sorted(extra))}")


# ------------------------------------------------------------------------------------------- stage 1: autoencoder
class LatentAutoencoderModule(_LatentStage):
    """The autoencoder, its discriminator and the frozen perceptual network."""

    def __init__(self, model_config, train_config: LatentAutoencoderTrainConfig, run_dir, landmark_channels,
                 **offsets) -> None:
        super().__init__(train_config, run_dir, **offsets)
        self.net = LatentAutoencoder(model_config)
        self.discriminator = PatchDiscriminator(len(model_config.image_channels), train_config.discriminator_width,
                                                train_config.discriminator_layers)
        self.perceptual = PerceptualDistance() if train_config.perceptual_weight > 0 else None
        self.landmark_channels = tuple(landmark_channels)  # the store channels after the image channels
        self.init_ema()
        self.val_images: torch.Tensor | None = None  # (N, C_image + n, S, S) in [-1, 1]

    def trainable_groups(self) -> list[dict]:
        return [{"params": list(self.net.parameters())}, {"params": list(self.discriminator.parameters())}]

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {f"discriminator.{k}": v for k, v in self.discriminator.state_dict().items()}

    def load_extra_state(self, extra: dict[str, torch.Tensor], source: str) -> None:
        from locscope.utils.checkpoint import load_state_dict_strict

        load_state_dict_strict(self.discriminator, {k[len("discriminator."):]: v for k, v in extra.items()},
                               source=source + " (discriminator)")

    def perceptual_input(self, images: torch.Tensor, stack: torch.Tensor) -> torch.Tensor:
        """``(B, 4, H, W)`` in [0, 1] in the SubCell channel order: ``images`` (image channels) + the stack's
        landmarks; channels the store lacks are zeros."""
        names = tuple(self.net.config.image_channels) + self.landmark_channels
        sources = torch.cat([images, stack[:, images.shape[1]:]], 1)
        out = images.new_zeros(images.shape[0], len(self.perceptual.channels), *images.shape[-2:])
        for i, name in enumerate(self.perceptual.channels):
            if name in names:
                out[:, i] = (sources[:, names.index(name)] + 1) / 2
        return out

    def compute_losses(self, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        cfg = self.train_config
        stack = batch["images"]
        if cfg.augment:
            transform = torch.randint(0, 8, (stack.shape[0],), generator=generator)
            stack = torch.stack([dihedral(s, int(d)) for s, d in zip(stack, transform)])
        images = stack[:, :len(self.net.config.image_channels)]
        autocast = torch.autocast(images.device.type, dtype=torch.bfloat16,
                                  enabled=use_bf16(cfg.bf16, images.device))
        with autocast:
            out = self.net(images, generator=generator)
        recon = out.reconstruction.float()
        l1 = (recon - images).abs().mean()
        kl = out.kl.float().mean() / images[0].numel()  # per pixel like the L1 term: as in LDM
        loss = l1 + cfg.kl_weight * kl
        losses = {"l1": l1, "kl": kl}
        if self.perceptual is not None:
            with autocast:
                perceptual = self.perceptual(self.perceptual_input(images, stack),
                                             self.perceptual_input(recon, stack)).float()
            loss = loss + cfg.perceptual_weight * perceptual
            losses["perceptual"] = perceptual
        if self.step >= cfg.discriminator_start and cfg.discriminator_weight > 0:
            # generator term through a frozen functional copy of D (its gradient reaches only the autoencoder)
            frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
            with autocast:
                fake_logits = torch.func.functional_call(self.discriminator, frozen, (recon,)).float()
                real_logits = self.discriminator(images).float()
                detached_logits = self.discriminator(recon.detach()).float()
            generator_loss = -fake_logits.mean()
            # discriminator hinge loss on detached reconstructions
            d_loss = 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + detached_logits).mean())
            loss = loss + cfg.discriminator_weight * generator_loss + d_loss
            losses.update({"generator": generator_loss, "discriminator": d_loss})
        return {"loss": loss, **losses}

    @torch.no_grad()
    def validate(self) -> dict:
        """PSNR / SSIM of the EMA autoencoder's reconstructions of held-out cells; a sample grid."""
        if self.val_images is None or not len(self.val_images):
            return {}
        from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

        net = self.ema_net()
        n_image = len(net.config.image_channels)
        images = self.val_images[:, :n_image]
        recon = torch.cat([net.decode(net.encode(images[i:i + 32])) for i in range(0, len(images), 32)])
        recon = recon.clamp(-1, 1)
        real01, fake01 = (images + 1) / 2, (recon + 1) / 2
        record = {"step": self.step, "val_psnr": float(peak_signal_noise_ratio(fake01, real01, data_range=1.0)),
                  "val_ssim": float(structural_similarity_index_measure(fake01, real01, data_range=1.0)),
                  "val_l1": float((recon - images).abs().mean())}
        self.append_metrics(record)
        grid = self.val_images[:8, [0] + list(range(n_image, self.val_images.shape[1]))].numpy()
        write_sample_grid(self.run_dir / "samples" / f"step_{self.step:06d}.png", grid, [recon[:8, :1].numpy()],
                          self.landmark_channels)
        return record


# ---------------------------------------------------------------------------------------------- stage 2: denoiser
class LatentDenoiserModule(_LatentStage):
    """The denoiser, trained on cached latents of a frozen autoencoder."""

    def __init__(self, autoencoder: LatentAutoencoder, model_config, train_config: LatentTrainConfig, run_dir,
                 **offsets) -> None:
        super().__init__(train_config, run_dir, **offsets)
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.net = LatentDenoiser(model_config)
        self.schedule = LatentDiffusion(self.autoencoder, self.net).schedule
        self.init_ema()
        self.latents: torch.Tensor | None = None     # (N, 8, latent_channels, h, w)
        self.spatial: torch.Tensor | None = None     # (N, 1 + n_landmarks, h, w): distance map + landmarks
        # layout prior: (N, 1 [+ n_fraction_classes], h, w) the protein image at the latent grid [+ mask coverage]
        self.layout_targets: torch.Tensor | None = None
        self.val = None                              # dict: images, distance, landmarks, tokens (validation gate)

    def trainable_groups(self) -> list[dict]:
        decay, no_decay = [], []
        for name, parameter in self.net.named_parameters():
            if parameter.requires_grad:
                (no_decay if parameter.ndim < 2 or "embed" in name or "null" in name else decay).append(parameter)
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]

    def compute_losses(self, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        cfg, net = self.train_config, self.net
        device = self.device
        index = batch["index"].cpu()
        batch_size = index.shape[0]
        transform = torch.randint(0, 8, (batch_size,), generator=generator)
        x0 = self.latents[index, transform].to(device)
        spatial = torch.stack([dihedral(self.spatial[i], int(d)) for i, d in zip(index, transform)]).to(device)
        n_landmarks = spatial.shape[1] - 1
        if n_landmarks:
            present = torch.rand(batch_size, n_landmarks, generator=generator) >= cfg.landmark_drop_probability
            placeholder = net.landmark_placeholder.expand(batch_size, -1, -1, -1)
            spatial = torch.cat([spatial[:, :1], torch.where(present.to(device)[:, :, None, None], spatial[:, 1:],
                                                             placeholder)], 1)
        maps = membership = None
        if net.config.layout_prior:  # one layout pass: the U-Net reads the maps detached, the layout losses train them
            maps, membership = net.layout_maps(spatial)
            spatial = torch.cat([spatial, maps.detach()], 1)
        timesteps = torch.randint(0, self.schedule.num_steps, (batch_size,), generator=generator).to(device)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        drop = (torch.rand(batch_size, generator=generator) < cfg.sequence_dropout).to(device)
        teacher = (torch.rand(batch_size, generator=generator) < cfg.fraction_teacher_probability).to(device)
        fractions = batch["fractions"]
        has_fractions = fractions.shape[1] > 0 and bool(net.config.fraction_classes)
        use_true = teacher & (fractions.sum(1) > 0) if has_fractions else None
        condition = net.encode_sequence(batch["tokens"], drop, fractions if has_fractions else None, use_true)
        v = net(self.schedule.add_noise(x0, noise, timesteps), timesteps, spatial, condition)
        image_loss = (v.float() - self.schedule.v_target(x0, noise, timesteps)).pow(2).mean()
        compartment_loss = distribution_loss(condition.compartment_logits, batch["labels"])
        loss = image_loss + cfg.compartment_loss_weight * compartment_loss
        losses = {"image_loss": image_loss, "compartment_loss": compartment_loss}
        if has_fractions:
            known = fractions.sum(1) > 0
            targets = fractions.float() / fractions.float().sum(1, keepdim=True).clamp(min=1e-8)
            losses["fraction_loss"] = distribution_loss(condition.fraction_logits, fractions)
            loss = loss + cfg.fraction_loss_weight * losses["fraction_loss"]
            if maps is not None:
                layout_targets = torch.stack([dihedral(self.layout_targets[i], int(d))
                                              for i, d in zip(index, transform)]).to(device).float()
                layout = (net.mix_layout(maps.float(), targets) - layout_targets[:, :1]).pow(2).mean(dim=(1, 2, 3))
                losses["layout_loss"] = (layout * known).sum() / known.sum().clamp(min=1)
                loss = loss + cfg.layout_loss_weight * losses["layout_loss"]
                if layout_targets.shape[1] > 1 and cfg.layout_mask_loss_weight > 0:
                    losses["layout_mask_loss"] = F.binary_cross_entropy_with_logits(membership.float(),
                                                                                    layout_targets[:, 1:])
                    loss = loss + cfg.layout_mask_loss_weight * losses["layout_mask_loss"]
        return {"loss": loss, **losses}

    def model(self) -> LatentDiffusion:
        """The EMA denoiser with the autoencoder, in eval mode."""
        return LatentDiffusion(self.autoencoder, self.ema_net()).eval()

    @torch.no_grad()
    def validate(self) -> dict:
        """The sequence-conditioning gate: held-out cells generated with their true and with shuffled sequences,
        each compared (Pearson) to the real protein image; a sample grid."""
        if self.val is None or len(self.val["tokens"]) < 2:
            return {}
        cfg, model, val = self.train_config, self.model(), self.val
        n = len(val["tokens"])
        results = {}
        for name, rows in (("true", np.arange(n)), ("shuffled", derangement(n, cfg.seed))):
            tokens = collate([{"tokens": val["tokens"][i]} for i in rows])["tokens"]
            model.to(self.device)
            landmarks = None if val["landmarks"] is None else val["landmarks"].to(self.device)
            images, _ = model.sample(val["distance"].to(self.device), tokens.to(self.device), landmarks,
                                     sampler=cfg.val_sampler, steps=cfg.val_steps, guidance=cfg.val_guidance,
                                     generator=torch.Generator(self.device).manual_seed(cfg.seed))
            results[name] = images[:, :1].cpu()
        real = val["images"][:, :1]
        record = {"step": self.step, "val_pcc_true": pearson(results["true"], real).mean().item(),
                  "val_pcc_shuffled": pearson(results["shuffled"], real).mean().item(), "val_items": n}
        record["val_gate_passed"] = record["val_pcc_true"] > record["val_pcc_shuffled"]
        self.append_metrics(record)
        grid = torch.cat([val["images"][:8, :1], val["stack_landmarks"][:8]], 1).numpy()
        write_sample_grid(self.run_dir / "samples" / f"step_{self.step:06d}.png", grid,
                          [results["true"][:8].numpy(), results["shuffled"][:8].numpy()], val["landmark_names"])
        return record


# ------------------------------------------------------------------------------------------------ the two runs
def _start_run(run_dir: Path, config, config_class, resume: bool):
    """``(config, last checkpoint dir)``; with ``resume`` the run's saved config is used."""
    run_dir, last, config = open_run(run_dir, resume, config, config_class)
    if config.model not in CONFIGS:
        raise InputError(f"train config: model {config.model!r}: accepted names are {', '.join(CONFIGS)}")
    prepare_run(run_dir, config, resume)
    return config, last


def _fit(module: _LatentStage, loader, config, last: Path, resume: bool, progress: bool, callbacks=None) -> None:
    """Restore ``last`` (resume), then train the remaining steps with Lightning."""
    step, epoch = restore_step_and_epoch(module, last, module.run_dir, resume)
    if resume:
        loader.sampler.epoch_offset = epoch
    remaining = config.max_steps - step
    if remaining <= 0:
        return
    torch.manual_seed(config.seed + step)
    step_trainer(config, remaining, progress, max_epochs=-1, callbacks=callbacks).fit(module, train_dataloaders=loader)


class _Pairs(torch.utils.data.Dataset):
    """Hands the sampler's (image, sequence) index pairs to the collate function."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, pair: tuple[int, int]) -> tuple[int, int]:
        return pair


def _pair_loader(n: int, sampler: EpochSampler, batch_size: int, make_batch):
    """A DataLoader whose batches are ``make_batch(list of (image, sequence) pairs)``."""
    from torch.utils.data import DataLoader

    return DataLoader(_Pairs(n), batch_size=batch_size, sampler=sampler, collate_fn=make_batch, drop_last=True)


def _sequence_batch(split, pairs: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
    """``{"index", "tokens", "labels", "fractions"}``: image rows ``i`` with the sequences of rows ``j``."""
    batch = collate([{"tokens": split.tokens[j], "labels": torch.from_numpy(split.labels[i]),
                      "fractions": torch.from_numpy(split.fractions[i])} for i, j in pairs])
    return {**batch, "index": torch.tensor([i for i, _ in pairs])}


def _store_channels(image_channels, landmark_channels) -> tuple[str, ...]:
    """Store channels to load after the protein: the other image channels, the nucleus, the landmarks (deduplicated)."""
    names = [c for c in image_channels if c != "protein"] + [NUCLEUS] + list(landmark_channels)
    return tuple(dict.fromkeys(names))


def train_latent_autoencoder(store: str | Path, run_dir: str | Path, config: LatentAutoencoderTrainConfig | None = None,
                             resume: bool = False, progress: bool = True, callbacks: list | None = None) -> Path:
    """Train the autoencoder (stage 1) on a store's train split; returns ``RUN_DIR/model`` (the EMA autoencoder with
    its measured latent scaling).

    Raises
    ------
    InputError
        Without a checkpoint to resume, when the run directory holds another run, or the store lacks a channel.
    """
    from locscope.data.store import Store

    run_dir = Path(run_dir)
    config, last = _start_run(run_dir, config, LatentAutoencoderTrainConfig, resume)
    autoencoder_config = model_config_from(functools.partial(dataclasses.replace, CONFIGS[config.model]()[0]),
                                           config.model_overrides)
    if autoencoder_config.image_channels[0] != "protein":
        raise InputError("train config: the autoencoder's image_channels must start with 'protein'")
    opened = Store.open(store)
    channels = _store_channels(autoencoder_config.image_channels, ("er", "microtubules"))
    channels = tuple(c for c in channels if c in opened.channels or c in autoencoder_config.image_channels)
    args = (channels, (), autoencoder_config.image_size, 1024)
    train = load_split(opened, "train", *args)
    val = load_split(opened, "val", *args, limit=config.val_items, spread=True)
    landmarks = tuple(c for c in channels if c not in autoencoder_config.image_channels)
    torch.manual_seed(config.seed)
    module = LatentAutoencoderModule(autoencoder_config, config, run_dir, landmarks)
    order = [0] + [1 + channels.index(c) for c in autoencoder_config.image_channels[1:]] + \
        [1 + channels.index(c) for c in landmarks]
    module.val_images = torch.from_numpy(val.images[:, order])
    images = torch.from_numpy(train.images[:, order])
    sampler = EpochSampler(np.zeros((len(train), 1), np.float32), config.batch_size, config.steps_per_epoch,
                           config.seed, repair_probability=0.0)
    loader = _pair_loader(len(train), sampler, config.batch_size,
                          lambda pairs: {"images": images[torch.tensor([i for i, _ in pairs])]})
    _fit(module, loader, config, last, resume, progress, callbacks)
    autoencoder = module.ema_net()
    n = min(config.scaling_items, len(images))
    subset = images[np.linspace(0, len(images) - 1, n).round().astype(int), :len(autoencoder_config.image_channels)]
    autoencoder.config = fit_latent_scaling(autoencoder, subset.split(64))
    return save_final_model(autoencoder, run_dir, module.step, config)


def train_latent(store: str | Path, autoencoder: str | Path, run_dir: str | Path,
                 config: LatentTrainConfig | None = None, resume: bool = False, progress: bool = True,
                 callbacks: list | None = None) -> Path:
    """Train the denoiser (stage 2) on latents of the trained ``autoencoder`` (a directory from stage 1); returns
    ``RUN_DIR/model``, a :class:`~locscope.models.latent.LatentDiffusion` directory (EMA denoiser + the autoencoder).

    Raises
    ------
    InputError
        As :func:`train_latent_autoencoder`, or when the autoencoder directory is not one.
    """
    from locscope.data.store import Store

    run_dir = Path(run_dir)
    config, last = _start_run(run_dir, config, LatentTrainConfig, resume)
    ae = LatentAutoencoder.from_pretrained(autoencoder)
    ae_config = ae.config
    denoiser_config = dataclasses.replace(
        CONFIGS[config.model]()[1], image_size=ae_config.image_size, image_channels=tuple(ae_config.image_channels),
        latent_channels=ae_config.latent_channels, latent_size=ae_config.latent_size)
    denoiser_config = model_config_from(functools.partial(dataclasses.replace, denoiser_config), config.model_overrides)
    opened = Store.open(store)
    channels = _store_channels(ae_config.image_channels, denoiser_config.landmark_channels)
    args = (channels, denoiser_config.compartment_classes, ae_config.image_size, denoiser_config.max_sequence_length)
    train = load_split(opened, "train", *args, fraction_classes=denoiser_config.fraction_classes)
    val = load_split(opened, "val", *args, limit=config.val_items, spread=True,
                     fraction_classes=denoiser_config.fraction_classes)
    torch.manual_seed(config.seed)
    module = LatentDenoiserModule(ae, denoiser_config, config, run_dir)
    if config.init_from and not resume:
        copied, kept = initialise_from(module.net, config.init_from, widen=("unet.conv_in.weight",))
        module.init_ema()
        append_metrics(run_dir, {"step": 0, "init_from": str(config.init_from), "copied_tensors": len(copied),
                                 "initialised_tensors": kept})
    image_rows = [0] + [1 + channels.index(c) for c in ae_config.image_channels[1:]]
    landmark_rows = [1 + channels.index(c) for c in denoiser_config.landmark_channels]
    nucleus_row = 1 + channels.index(NUCLEUS)

    def spatial_of(split) -> torch.Tensor:
        distance = torch.from_numpy(distance_maps((split.images[:, nucleus_row] + 1) / 2))[:, None]
        return torch.cat([distance, torch.from_numpy(split.images[:, landmark_rows])], 1)

    module.latents = _cached_latents(run_dir / "latents.safetensors", ae, torch.from_numpy(train.images[:, image_rows]),
                                     progress)
    module.spatial = resize_to(spatial_of(train), ae_config.latent_size)
    if denoiser_config.layout_prior:
        module.layout_targets = _layout_targets(opened, train, denoiser_config, config, progress)
    val_spatial = spatial_of(val)
    module.val = {"images": torch.from_numpy(val.images[:, image_rows]), "distance": val_spatial[:, :1],
                  "landmarks": val_spatial[:, 1:] if landmark_rows else None, "tokens": val.tokens,
                  "stack_landmarks": torch.from_numpy(val.images[:, [nucleus_row] + landmark_rows]),
                  "landmark_names": (NUCLEUS,) + tuple(denoiser_config.landmark_channels)}
    keys = train.fractions > 0 if train.fractions.shape[1] else train.labels
    sampler = EpochSampler(keys, config.batch_size, config.steps_per_epoch, config.seed, config.repair_probability)
    _fit(module, _pair_loader(len(train), sampler, config.batch_size, lambda pairs: _sequence_batch(train, pairs)),
         config, last, resume, progress, callbacks)
    return save_final_model(module.model(), run_dir, module.step, config)


def _layout_targets(store, split, denoiser_config, config: LatentTrainConfig, progress: bool,
                    chunk: int = 512) -> torch.Tensor:
    """What the layout prior learns from, at the latent grid, ``(N, 1 [+ n_fraction_classes], h, w)`` float16: the
    protein image (area-averaged, [-1, 1]) and, when ``layout_mask_loss_weight`` > 0, the share of each latent pixel
    covered by each compartment's mask (:func:`~locscope.training.celldiff_data.split_masks`, read in chunks so the
    full-resolution masks never sit in memory at once)."""
    from locscope.utils.progress import track

    size = denoiser_config.latent_size
    parts = [resize_to(torch.from_numpy(split.images[:, :1]), size).half()]
    if config.layout_mask_loss_weight > 0:
        coverage = []
        for start in track(range(0, len(split), chunk), "compartment masks", enabled=progress):
            rows = slice(start, start + chunk)
            part = dataclasses.replace(split, ids=split.ids[rows], store_indices=split.store_indices[rows],
                                       fractions=split.fractions[rows])
            masks = split_masks(store, part, denoiser_config.fraction_classes, denoiser_config.image_size,
                                progress=False)
            coverage.append(resize_to(torch.from_numpy(masks).float(), size).half())
        parts.append(torch.cat(coverage))
    return torch.cat(parts, 1)


@torch.no_grad()
def _cached_latents(path: Path, autoencoder: LatentAutoencoder, images: torch.Tensor, progress: bool) -> torch.Tensor:
    """Posterior-mean latents ``(N, 8, latent_channels, h, w)`` of ``images`` ``(N, C, S, S)`` under the 8 rotations /
    flips, cached at ``path`` (keyed by the autoencoder's weights and the images)."""
    import hashlib

    from safetensors.torch import load_file, save_file

    from locscope.utils.progress import track

    digest = hashlib.sha1(images.numpy().tobytes())
    for value in autoencoder.state_dict().values():
        digest.update(value.detach().cpu().numpy().tobytes())
    digest.update(json.dumps(dataclasses.asdict(autoencoder.config), sort_keys=True).encode())
    key = digest.hexdigest()
    if path.is_file():
        cached = load_file(str(path))
        if "latents" in cached and "key" in cached and bytes(cached["key"].tolist()).decode() == key:
            return cached["latents"]
    out = []
    for start in track(range(0, len(images), 64), "encoding latents", enabled=progress):
        chunk = images[start:start + 64]
        out.append(torch.stack([autoencoder.encode(dihedral(chunk, d)) for d in range(8)], 1))
    latents = torch.cat(out).contiguous()
    with atomic_path(path) as tmp:
        save_file({"latents": latents, "key": torch.tensor(list(key.encode()), dtype=torch.uint8)}, str(tmp))
    return latents

