"""CELL-Diff training throughput and size: examples/s and achieved FLOP/s (fraction of the measured matmul peak),
fp32 vs bf16 autocast, for celldiff-tiny (32x32) and one forward + backward of celldiff-base (256x256).

    python benchmarks/bench_celldiff_speed.py [--tiny-steps 5] [--batch 32] [--base] [--threads 2]
        [--overrides '{"image_size": 64, "layout_prior": true}'] [--channels-last]

Peaks measured on this machine kind (docs/benchmarks.md): fp32 matmul ~226 GFLOP/s, bf16 ~697 GFLOP/s.
FLOPs are counted with torch.utils.flop_counter (matmuls + convolutions) for forward + backward.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from locscope.models.celldiff import count_parameters
from locscope.training.celldiff_module import CellDiffModule, CellDiffTrainConfig, step_generator

PEAK_GFLOPS = {"fp32": 226.0, "bf16": 697.0}


def batch_for(config, batch_size: int, length: int) -> dict:
    g = torch.Generator().manual_seed(0)
    size = config.image_size
    labels = torch.zeros(batch_size, len(config.compartment_classes))
    labels[:, 0] = 1
    return {"images": torch.rand(batch_size, 1 + len(config.landmark_channels), size, size, generator=g) * 2 - 1,
            "labels": labels, "tokens": torch.randint(2, 23, (batch_size, length), generator=g)}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny-steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--base", action="store_true", help="Also one forward + backward of celldiff-base at 256x256.")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--overrides", default="{}", help="JSON celldiff-tiny config overrides, e.g. the 64 px model.")
    parser.add_argument("--channels-last", action="store_true", help="Also measure channels-last memory format.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from locscope.utils.cpu import machine_description

    print(machine_description(), flush=True)
    overrides = json.loads(args.overrides)
    layouts = (False, True) if args.channels_last else (False,)
    rows = [measure("celldiff-tiny", overrides, args.batch, args.tiny_steps, bf16, 320, cl)
            for cl in layouts for bf16 in (False, True)]
    if args.base:
        rows += [measure("celldiff-base", {}, 1, 0, bf16, 512) for bf16 in (False, True)]
    for row in rows:
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
