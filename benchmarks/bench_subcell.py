"""Images/s of the SubCell ViT-B/16 at 448x448 on this machine: SubCell's CLI default vs locscope's default.

SubCell's inference CLI (SubCellPortable ``run_model``) feeds one cell at a time, in fp32, without ``torch.no_grad``
(autograd records the graph), and asks the ViT for its attention maps (``output_attentions=True``, which needs the
eager attention kernel). locscope batches cells and runs under ``torch.inference_mode`` + bf16 autocast with the fused
(SDPA) attention kernel. The model is the full published architecture with random weights (speed does not depend on
the values). Reports images per wall second and CPU seconds per image of this process (with one thread, the CPU time
is the work done, stable on a shared machine where wall time depends on the other jobs). Usage::

    .venv/bin/python benchmarks/bench_subcell.py [--batch-size 8] [--images 16] [--baseline-images 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from locscope.models.subcell import SubCellConfig, SubCellModel, min_max_normalize


def subcell_cli_forward(model: SubCellModel, images: torch.Tensor) -> torch.Tensor:
    """The published CLI's computation: fp32, autograd on, ViT attentions requested (eager kernel)."""
    outputs = model.encoder(pixel_values=images, interpolate_pos_encoding=True, output_attentions=True)
    embedding, _ = model.pool_model(outputs.last_hidden_state)
    return model.classify_embedding(embedding)


def time_images(run, images: torch.Tensor, n_images: int, batch_size: int) -> tuple[float, float]:
    """(images per wall second, images per CPU second of this process) of ``run`` over ``n_images`` cells in batches
    (one untimed warm-up batch first). On a shared machine the CPU-time rate is the stable one."""
    run(images[:batch_size])
    start, start_cpu = time.perf_counter(), time.process_time()
    done = 0
    while done < n_images:
        run(images[:batch_size])
        done += batch_size
    return done / (time.perf_counter() - start), done / (time.process_time() - start_cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=448, help="Image side in pixels (SubCell: 448).")
    parser.add_argument("--batch-size", type=int, default=8, help="locscope batch size.")
    parser.add_argument("--images", type=int, default=16, help="Timed images for the batched modes.")
    parser.add_argument("--baseline-images", type=int, default=4, help="Timed images for the batch-1 modes.")
    parser.add_argument("--threads", type=int, default=2, help="torch threads.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SubCellModel(SubCellConfig(num_classifiers=1)).eval()
    images = min_max_normalize(torch.rand(max(args.batch_size, 1), 4, args.size, args.size))

    def baseline(x):
        model.encoder.set_attn_implementation("eager")
        try:
            return subcell_cli_forward(model, x).detach()
        finally:
            model.encoder.set_attn_implementation("sdpa")

    def inference_fp32(x):
        with torch.inference_mode():
            return model(x).probabilities

    def inference_bf16(x):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x).probabilities

    print(f"SubCell ViT-B/16, 4 x {args.size} x {args.size}, torch {torch.__version__}, {args.threads} threads")
    rows = [
        ("SubCell CLI default: batch 1, fp32, autograd on, eager attention", baseline, 1, args.baseline_images),
        ("batch 1, fp32, inference_mode, SDPA", inference_fp32, 1, args.baseline_images),
        (f"batch {args.batch_size}, fp32, inference_mode, SDPA", inference_fp32, args.batch_size, args.images),
        (f"locscope default: batch {args.batch_size}, bf16 autocast, inference_mode, SDPA", inference_bf16,
         args.batch_size, args.images),
    ]
    results = []
    print(f"{'mode':<80s} {'wall img/s':>10s} {'CPU s/img':>10s} {'speed-up (CPU time)':>20s}")
    for name, run, batch, n in rows:
        wall_rate, cpu_rate = time_images(run, images, n, batch)
        results.append(cpu_rate)
        print(f"{name:<80s} {wall_rate:10.3f} {1 / cpu_rate:10.3f} {cpu_rate / results[0]:19.2f}x")


if __name__ == "__main__":
    main()
