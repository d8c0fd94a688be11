"""CELL-Diff training throughput: examples/s, CPU seconds per example and achieved FLOP/s of one training step, with
A/B comparisons of the ways to make it faster at equal loss per step.

    python benchmarks/bench_celldiff_speed.py [--tiny-steps 5] [--batch 32] [--base] [--threads 2]
        [--overrides '{"image_size": 64, "layout_prior": true}'] [--channels-last]
    python benchmarks/bench_celldiff_speed.py --ab default,bf16-attention+ema-loop,fp32,channels-last,fused-adamw \
        [--celldiff-64] [--batch 32] [--steps 3] [--repeats 3] [--warmup 2] [--threads 1] [--sequence-task-probability 0.2]
    python benchmarks/bench_celldiff_speed.py --data-loading [--celldiff-64] [--batch 32]

Peaks measured on this machine kind (docs/benchmarks.md): fp32 matmul ~226 GFLOP/s, bf16 ~697 GFLOP/s (2 cores).
FLOPs are counted with torch.utils.flop_counter (matmuls + convolutions) for forward + backward.

``--ab``: each comma-separated variant is the training defaults (bf16 autocast where the CPU has native bf16,
attention in fp32, the EMA as one ``torch._foreach_lerp_``) changed by ``+``-joined modifiers:

- ``bf16-attention``: attention in the autocast dtype (before it was kept in fp32);
- ``ema-loop``: the EMA as one ``mul_`` + ``add_`` per tensor (before it became one ``_foreach_lerp_``);
- ``full-up-path``: the U-Net's up path for every row, the sequence-task rows too (before it ran only for the rows
  whose image loss counts);
- ``fp32`` / ``bf16``: autocast off / on whatever the CPU;
- ``channels-last``: model and images in channels-last memory format;
- ``compile``: ``torch.compile`` of the network and the layout prior as training's ``compile: true`` does
  (inductor's channels-last layout conversion off); ``compile-layout-opt``: with inductor's defaults;
- ``fused-adamw`` / ``loop-adamw``: AdamW's fused / per-tensor implementation instead of ``foreach``.

Every variant starts from the same seeded weights and runs the same seeded steps (the step's random draws come from
``step_generator``; four fixed batches in turn), one full training step each (loss, backward, gradient clipping at 1,
AdamW with the warm-up schedule, EMA), the variants interleaved ``--repeats`` times after ``--warmup`` steps each.
Printed per variant: the median process CPU seconds per step and per example (barely moved by other jobs on a shared
machine, unlike wall time, also printed), the load average during its steps, and the largest difference of its
per-step losses from the first variant's (equal loss per step).

``--data-loading``: the CPU cost per batch of CELL-Diff's training data path (the epoch sampler, item lookup, collate
and the masks of layout-prior training) on an in-memory split of random images, with 0 and 1 loader workers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import locscope.models.celldiff as celldiff_model
from locscope.models.celldiff import count_parameters
from locscope.training.celldiff_module import CellDiffModule, CellDiffTrainConfig, compile_network, step_generator
from locscope.training.common import update_ema

PEAK_GFLOPS = {"fp32": 226.0, "bf16": 697.0}
CELLDIFF_64 = {"image_size": 64, "layout_prior": True, "schedule_base": 32}
# the bundled celldiff-64's stage-3 training settings (src/locscope/assets/models/celldiff-64/train_config_stage3.yaml)
STAGE3 = {"warmup_steps": 50, "final_lr_fraction": 0.1, "weight_decay": 0.01, "grad_clip": 1.0, "ema_decay": 0.995,
          "sequence_task_probability": 0.2, "max_steps": 10000, "bf16": "auto"}
MODIFIERS = ("bf16-attention", "ema-loop", "full-up-path", "fp32", "bf16", "channels-last", "compile", "compile-layout-opt",
             "fused-adamw", "loop-adamw")


def batch_for(config, batch_size: int, length: int) -> dict:
    g = torch.Generator().manual_seed(0)
    size = config.image_size
    labels = torch.zeros(batch_size, len(config.compartment_classes))
    labels[:, 0] = 1
    return {"images": torch.rand(batch_size, 1 + len(config.landmark_channels), size, size, generator=g) * 2 - 1,
            "labels": labels, "tokens": torch.randint(2, 23, (batch_size, length), generator=g)}


def full_batch(config, batch_size: int, seed: int) -> dict:
    """A batch like the training data's: images, one-hot labels, sparse true fractions, compartment masks (layout
    prior) and residue tokens of random lengths (up to the model's maximum) padded with 0."""
    g = torch.Generator().manual_seed(seed)
    size, n_fractions, length = config.image_size, len(config.fraction_classes), config.max_sequence_length
    labels = torch.zeros(batch_size, len(config.compartment_classes))
    labels[torch.arange(batch_size), torch.randint(0, labels.shape[1], (batch_size,), generator=g)] = 1
    batch = {"images": torch.rand(batch_size, 1 + len(config.landmark_channels), size, size, generator=g) * 2 - 1,
             "labels": labels}
    if n_fractions:
        fractions = torch.rand(batch_size, n_fractions, generator=g) * (torch.rand(batch_size, n_fractions,
                                                                                   generator=g) < 0.15)
        fractions[:, 0] += 0.01
        batch["fractions"] = fractions / fractions.sum(1, keepdim=True)
    if config.layout_prior:
        batch["masks"] = (torch.rand(batch_size, n_fractions, size, size, generator=g) < 0.1).to(torch.uint8)
    tokens = torch.randint(2, 23, (batch_size, length), generator=g)
    lengths = torch.randint(length // 3, length + 1, (batch_size,), generator=g)
    lengths[0] = length
    batch["tokens"] = tokens.masked_fill(torch.arange(length)[None] >= lengths[:, None], 0)
    return batch


def measure(name: str, overrides: dict, batch_size: int, steps: int, bf16: bool, length: int,
            channels_last: bool = False) -> dict:
    torch.manual_seed(0)
    config = CellDiffTrainConfig(model=name, bf16=bf16, model_overrides=overrides)
    module = CellDiffModule(config.model_config(), config, "/tmp/unused")
    batch = batch_for(module.model_config, batch_size, length)
    if channels_last:
        module.model.to(memory_format=torch.channels_last)
        batch["images"] = batch["images"].contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(module.model.parameters(), lr=1e-4)
    counter = FlopCounterMode(display=False)
    with counter:
        module.compute_losses(batch, step_generator(0, 0, 0))["loss"].backward()
    optimizer.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    times = []
    for step in range(steps + 1):  # the first step warms up
        start = time.perf_counter()
        module.compute_losses(batch, step_generator(0, step, 0))["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    seconds = sum(times[1:]) / max(1, len(times) - 1) if steps else times[0]
    precision = "bf16" if bf16 else "fp32"
    achieved = flops / seconds / 1e9
    return {"model": name, "overrides": overrides, "channels_last": channels_last, "threads": torch.get_num_threads(),
            "precision": precision, "batch": batch_size, "parameters": count_parameters(module.model),
            "seconds_per_step": seconds, "examples_per_s": batch_size / seconds, "gflop_per_step": flops / 1e9,
            "achieved_gflops": achieved, "fraction_of_peak": achieved / PEAK_GFLOPS[precision]}


def _attention_as_is(attend, *inputs):
    return attend(*inputs)


def _ema_loop(ema: dict, model: torch.nn.Module, max_decay: float, step: int) -> None:
    """The EMA update before it became one ``_foreach_lerp_`` (the ``ema-loop`` modifier)."""
    decay = min(max_decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                ema[name].mul_(decay).add_(value.detach(), alpha=1 - decay)
            else:
                ema[name].copy_(value)


def _denoise_every_row(self, *args, **kwargs):
    """``CellDiff.denoise`` with the up path for every row, then only the wanted rows' v (the ``full-up-path``
    modifier)."""
    arguments = dict(zip(DENOISE_ARGUMENTS, args), **kwargs)
    rows = arguments.pop("image_rows", None)
    image, sequence_out = DENOISE(self, **arguments)
    return (image if rows is None else image[rows]), sequence_out


class Variant:
    """One training set-up of ``--ab``: the module, its optimizer + schedule and four fixed batches."""

    def __init__(self, name: str, overrides: dict, batch_size: int, sequence_task_probability: float) -> None:
        self.name, self.modifiers = name, set(name.split("+")) - {"default"}
        unknown = self.modifiers - set(MODIFIERS)
        if unknown:
            raise SystemExit(f"--ab: unknown modifier(s) {', '.join(sorted(unknown))} (accepted: default, "
                             f"{', '.join(MODIFIERS)})")
        bf16 = False if "fp32" in self.modifiers else True if "bf16" in self.modifiers else STAGE3["bf16"]
        config = CellDiffTrainConfig(model="celldiff-tiny", model_overrides=overrides, batch_size=batch_size,
                                     **{**STAGE3, "bf16": bf16,
                                        "sequence_task_probability": sequence_task_probability})
        torch.manual_seed(0)
        self.module = CellDiffModule(config.model_config(), config, "/tmp/unused")
        self.batches = [full_batch(self.module.model_config, batch_size, seed) for seed in range(4)]
        if "channels-last" in self.modifiers:
            self.module.model.to(memory_format=torch.channels_last)
            for batch in self.batches:
                batch["images"] = batch["images"].contiguous(memory_format=torch.channels_last)
        settings = self.module.configure_optimizers()
        self.optimizer, self.scheduler = settings["optimizer"], settings["lr_scheduler"]["scheduler"]
        if "fused-adamw" in self.modifiers or "loop-adamw" in self.modifiers:
            for group in self.optimizer.param_groups:
                group["fused"] = "fused-adamw" in self.modifiers
                group["foreach"] = False
        if "compile" in self.modifiers:
            compile_network(self.module.model)
        elif "compile-layout-opt" in self.modifiers:
            self.module.model.compile()
            self.module.model.layout.compile()
        self.step_index, self.losses, self.cpu, self.wall, self.loads = 0, [], [], [], []

    def step(self, record: bool = True) -> None:
        module = self.module
        celldiff_model.full_precision_attention = _attention_as_is if "bf16-attention" in self.modifiers \
            else FULL_PRECISION_ATTENTION
        celldiff_model.CellDiff.denoise = _denoise_every_row if "full-up-path" in self.modifiers else DENOISE
        step = self.step_index
        cpu, wall = time.process_time(), time.perf_counter()
        losses = module.compute_losses(self.batches[step % 4], step_generator(0, step, 0))
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(module.model.parameters(), module.train_config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        (_ema_loop if "ema-loop" in self.modifiers else update_ema)(module.ema, module.model,
                                                                    module.train_config.ema_decay, step + 1)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        self.step_index += 1
        self.losses.append(float(losses["loss"].detach()))
        if record:
            self.cpu.append(cpu)
            self.wall.append(wall)
            self.loads.append(os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"))


FULL_PRECISION_ATTENTION = celldiff_model.full_precision_attention
DENOISE = celldiff_model.CellDiff.denoise
DENOISE_ARGUMENTS = ("noisy_image", "timesteps", "landmarks", "context", "landmark_present", "layout_maps", "image_rows")


def compare(names: list[str], overrides: dict, batch_size: int, steps: int, repeats: int, warmup: int,
            sequence_task_probability: float = STAGE3["sequence_task_probability"]) -> list[dict]:
    """``--ab``: the variants' median CPU / wall seconds per step, interleaved (see the module docstring)."""
    variants = []
    for name in names:
        cpu, wall = time.process_time(), time.perf_counter()
        variant = Variant(name, overrides, batch_size, sequence_task_probability)
        for _ in range(warmup):
            variant.step(record=False)
        variant.warmup = (time.process_time() - cpu, time.perf_counter() - wall)
        variants.append(variant)
    for _ in range(repeats):
        for variant in variants:
            for _ in range(steps):
                variant.step()
    first = variants[0]
    rows = []
    for variant in variants:
        cpu, wall = statistics.median(variant.cpu), statistics.median(variant.wall)
        rows.append({"variant": variant.name, "batch": batch_size, "threads": torch.get_num_threads(),
                     "cpu_s_per_step": round(cpu, 4), "cpu_ms_per_example": round(1000 * cpu / batch_size, 2),
                     "examples_per_cpu_s": round(batch_size / cpu, 2), "wall_s_per_step": round(wall, 4),
                     "examples_per_wall_s": round(batch_size / wall, 2),
                     "speed_vs_first_cpu": round(statistics.median(first.cpu) / cpu, 3),
                     "warmup_cpu_s": round(variant.warmup[0], 1), "warmup_wall_s": round(variant.warmup[1], 1),
                     "load_average": round(statistics.mean(variant.loads), 2), "steps": len(variant.losses),
                     "max_loss_difference_vs_first": max(abs(a - b) for a, b in zip(variant.losses, first.losses)),
                     "losses": [round(loss, 5) for loss in variant.losses]})
    return rows


def data_loading(overrides: dict, batch_size: int, batches: int = 30, items: int = 2000) -> list[dict]:
    """``--data-loading``: CPU seconds per batch of the training data path (0 and 1 loader workers)."""
    import numpy as np

    from locscope.training.celldiff_data import CellDiffSplit, EpochSampler, PairedDataset, collate

    config = CellDiffTrainConfig(model="celldiff-tiny", model_overrides=overrides).model_config()
    rng = np.random.default_rng(0)
    size, n_fractions = config.image_size, len(config.fraction_classes)
    split = CellDiffSplit(
        images=rng.random((items, 1 + len(config.landmark_channels), size, size), dtype=np.float32) * 2 - 1,
        labels=np.eye(len(config.compartment_classes), dtype=np.float32)[rng.integers(0, 7, items)],
        tokens=[list(rng.integers(2, 23, rng.integers(100, config.max_sequence_length + 1))) for _ in range(items)],
        sequences=[""] * items, ids=[str(i) for i in range(items)], protein_ids=[str(i) for i in range(items)],
        store_indices=np.arange(items),
        fractions=np.eye(n_fractions, dtype=np.float32)[rng.integers(0, n_fractions, items)] if n_fractions else None,
        masks=(rng.random((items, n_fractions, size, size)) < 0.1).astype(np.uint8) if config.layout_prior else None)
    rows = []
    for workers in (0, 1):
        sampler = EpochSampler(split.fractions > 0 if n_fractions else split.labels, batch_size, batches, seed=0)
        loader = torch.utils.data.DataLoader(PairedDataset(split), batch_size=batch_size, sampler=sampler,
                                             collate_fn=collate, num_workers=workers, drop_last=True)
        cpu, wall = time.process_time(), time.perf_counter()
        count = sum(1 for _ in loader)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        rows.append({"data_loading_workers": workers, "batch": batch_size, "batches": count,
                     "main_process_cpu_ms_per_batch": round(1000 * cpu / count, 2),
                     "wall_ms_per_batch": round(1000 * wall / count, 2),
                     "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny-steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--base", action="store_true", help="Also one forward + backward of celldiff-base at 256x256.")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--overrides", default="{}", help="JSON celldiff-tiny config overrides, e.g. the 64 px model.")
    parser.add_argument("--celldiff-64", action="store_true", help=f"The bundled default's overrides {CELLDIFF_64}.")
    parser.add_argument("--channels-last", action="store_true", help="Also measure channels-last memory format.")
    parser.add_argument("--ab", default=None, help="Comma-separated variants to compare (see the docstring).")
    parser.add_argument("--steps", type=int, default=3, help="--ab: steps per variant per repeat.")
    parser.add_argument("--repeats", type=int, default=3, help="--ab: interleaved rounds.")
    parser.add_argument("--warmup", type=int, default=2, help="--ab: untimed steps per variant first.")
    parser.add_argument("--sequence-task-probability", type=float, default=STAGE3["sequence_task_probability"],
                        help="--ab: the share of masked-residue rows (stage 3: 0.2; the training default 0.5).")
    parser.add_argument("--data-loading", action="store_true", help="CPU cost of the training data path per batch.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from locscope.utils.cpu import machine_description

    print(machine_description(), flush=True)
    overrides = CELLDIFF_64 if args.celldiff_64 else json.loads(args.overrides)
    if args.ab or args.data_loading:
        rows = compare(args.ab.split(","), overrides, args.batch, args.steps, args.repeats, args.warmup,
                       args.sequence_task_probability) if args.ab else []
        rows += data_loading(overrides, args.batch) if args.data_loading else []
    else:
        layouts = (False, True) if args.channels_last else (False,)
        rows = [measure("celldiff-tiny", overrides, args.batch, args.tiny_steps, bf16, 320, cl)
                for cl in layouts for bf16 in (False, True)]
        if args.base:
            rows += [measure("celldiff-base", {}, 1, 0, bf16, 512) for bf16 in (False, True)]
    for row in rows:
        print(json.dumps(row), flush=True)
    if hasattr(os, "getloadavg"):
        print(f"load average at the end {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
