"""Images/s of the SubCell ViT-B/16 at 448x448 on this machine: SubCell's CLI default vs locscope's default.

SubCell's inference CLI (SubCellPortable ``run_model``) feeds one cell at a time, in fp32, without ``torch.no_grad``
(autograd records the graph), and asks the ViT for its attention maps (``output_attentions=True``, which needs the
eager attention kernel). locscope's default (``locscope embed`` / ``classify`` with ``--precision auto --backend
auto``) batches cells and, on the CPU, runs the ViT in OpenVINO statically quantized to int8, calibrated on the run's
first 64 cells (or read from the cache of an earlier run) and used only when 8 more cells give embeddings within
cosine 0.999 of fp32 (:mod:`locscope.pipelines.embed_runtime`); else PyTorch in bf16 autocast where the CPU computes
bf16 natively, fp32 where it would be emulated. The CPU's capability decides that (and the int8 weight bits: 7
without VNNI); the benchmark prints it first. The model is the full published
architecture with random weights (speed does not depend on the values). Reports images per wall second and CPU
seconds per image of this process (with one thread, the CPU time is the work done, stable on a shared machine where
wall time depends on the other jobs).

Rows: the baseline; the steady state of the default (the model ``embed_cells`` picks, timed like the other rows);
then the one-time costs of the default (calibration + verification on a cold cache, verification on a
warm one) and whole ``embed_cells`` runs of 72 + ``--images`` cells, cold and warm cache. Other modes, each measured
as a row: bf16 autocast (the GPU default), bf16 weights, ``torch.compile`` (inductor, ``freezing``), int8 dynamic
quantization (``--precision int8``), PT2E static int8 when ``torchao`` is installed, OpenVINO bf16. The first call
of a compiled mode (compilation) is reported separately; each row also gives the accuracy against the fp32 outputs
on the same cells (minimum cosine similarity of the embeddings, maximum absolute probability difference). Usage::

    .venv/bin/python benchmarks/bench_subcell.py [--batch-size 8] [--images 16] [--baseline-images 4] [--threads 2]
        [--skip-compile] [--skip-extra] [--rows fp32,bf16-autocast]

As on a CPU without AVX-512 (torch's and OpenVINO's kernels held to AVX2, so the runtime sees an AVX2 CPU)::

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 .venv/bin/python \
        benchmarks/bench_subcell.py --threads 1 --batch-size 4 --images 4 --baseline-images 2 --calibration-cells 16 \
        --no-warm-run --rows fp32,bf16-autocast
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F

from locscope.models.subcell import (
    SubCellConfig, SubCellModel, compile_openvino, min_max_normalize, quantize_encoder_int8,
)
from locscope.utils.cpu import machine_description


def subcell_cli_forward(model: SubCellModel, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The published CLI's computation: fp32, autograd on, ViT attentions requested (eager kernel).
    Returns (embedding, probabilities)."""
    outputs = model.encoder(pixel_values=images, interpolate_pos_encoding=True, output_attentions=True)
    embedding, _ = model.pool_model(outputs.last_hidden_state)
    return embedding, model.classify_embedding(embedding)


def time_images(run, images: torch.Tensor, n_images: int, batch_size: int) -> tuple[float, float, float, tuple]:
    """(images per wall second, images per CPU second of this process, wall seconds of the first call, outputs of the
    first call) of ``run`` over ``n_images`` cells in batches (one untimed warm-up batch first, which also compiles a
    compiled mode). On a shared machine the CPU-time rate is the stable one."""
    start = time.perf_counter()
    outputs = run(images[:batch_size])
    first_call = time.perf_counter() - start
    start, start_cpu = time.perf_counter(), time.process_time()
    done = 0
    while done < n_images:
        run(images[:batch_size])
        done += batch_size
    return done / (time.perf_counter() - start), done / (time.process_time() - start_cpu), first_call, outputs


def accuracy(outputs: tuple, reference: tuple) -> tuple[float, float]:
    """(minimum cosine similarity of the embeddings, maximum |probability difference|) of ``outputs`` vs the fp32
    ``reference`` (embedding, probabilities) on the same cells."""
    embedding, probabilities = (o.float() for o in outputs)
    n = embedding.shape[0]
    cosine = F.cosine_similarity(embedding, reference[0][:n], dim=1).min().item()
    return cosine, (probabilities - reference[1][:n]).abs().max().item()


def pt2e_int8(model: SubCellModel, example: torch.Tensor, calibration: torch.Tensor):
    """PT2E static int8 (torchao's ``X86InductorQuantizer``, calibrated on ``calibration``) run under bf16 autocast
    and compiled with inductor; None when torchao is not installed."""
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq
    except ImportError:
        return None

    class Outputs(torch.nn.Module):  # export needs tensors out, not a dataclass
        def __init__(self, subcell: SubCellModel) -> None:
            super().__init__()
            self.subcell = subcell

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.subcell(images)
            return out.embedding, out.probabilities

    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    with torch.no_grad():
        prepared = prepare_pt2e(torch.export.export(Outputs(model), (example,)).module(), quantizer)
        prepared(calibration)
        compiled = torch.compile(convert_pt2e(prepared), dynamic=False)

    def run(x):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), torch._inductor.config.patch(freezing=True):
            return compiled(x)

    return run


def openvino_mode(model: SubCellModel, calibration: torch.Tensor, precision: str = "bf16"):
    """The ViT in OpenVINO at ``precision``: bf16 inference precision, or int8 calibrated on ``calibration`` (no
    check) quantized the way the runtime chooses for this CPU (7-bit weights without VNNI, bf16 ops only where
    native), i.e. ``--backend openvino --precision int8``."""
    from locscope.pipelines.embed_runtime import cpu_capability, runtime_choice

    choice = runtime_choice("cpu", cpu_capability())
    compiled = compile_openvino(model, calibration, precision, seven_bit_weights=choice.seven_bit_weights,
                                int8_float=choice.int8_float)

    def run(x):
        with torch.inference_mode():
            out = compiled(x)
            return out.embedding, out.probabilities
    return run


def default_mode(model: SubCellModel, size: int, batch: int, n_images: int, calibration_cells: int = 64,
                 warm_run: bool = True):
    """locscope's default on the CPU, through ``embed_cells``: whole runs of ``calibration_cells`` + 8 + ``n_images``
    random cells with a cold then (``warm_run``) a warm int8 cache (printed: CPU s / image including calibration +
    verification, and the mode chosen),
    and the model those runs use (the verified int8 model, else PyTorch in the fallback precision), for the
    steady-state row. Returns (that mode in words, a row's ``run``)."""
    import os
    import tempfile

    import numpy as np

    from locscope.pipelines import embed_runtime
    from locscope.pipelines.embed import CellInput, embed_cells

    rng = np.random.default_rng(1)
    cells = [CellInput(f"cell{i}", rng.uniform(0, 1000, (4, size, size)).astype(np.float32))
             for i in range(calibration_cells + 8 + n_images)]
    os.environ["LOCSCOPE_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-subcell-cache-")
    for cache in ("cold", "warm") if warm_run else ("cold",):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = embed_cells(model, cells, batch_size=batch, progress=False, calibration_cells=calibration_cells)
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        print(f"(default, {cache} cache: embed_cells on {len(cells)} cells {wall:.1f} s wall, {cpu / len(cells):.3f} "
              f"CPU s / image including setup; {result.modes[0].describe()})", flush=True)
    # the same model again (warm cache), timed in the table like the other modes
    head = calibration_cells + 8
    normalised = min_max_normalize(torch.stack([torch.from_numpy(c.images) for c in cells[:head]]))
    verify = embed_runtime.verification_mask(head, 8)  # the split embed_cells makes
    start_cpu = time.process_time()
    int8, mode = embed_runtime.verified_int8(model, normalised[~verify], normalised[verify], calibration_cells)
    print(f"(default, warm cache: read + compile + verification {time.process_time() - start_cpu:.1f} CPU s; "
          f"{mode.describe()})", flush=True)
    autocast = int8 is None and mode.precision == "bf16"

    def run(x):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = (int8 or model)(x)
            return out.embedding, out.probabilities
    what = "verified OpenVINO int8" if int8 is not None else f"torch {mode.precision} (int8 check failed)"
    return what, run


EXTRA_ROWS = ("fp32-b1", "fp32", "bf16-autocast", "bf16-weights", "int8-torch", "openvino-bf16", "openvino-int8",
              "compile-bf16", "pt2e")


def pt2e_row(model: SubCellModel, example: torch.Tensor, calibration: torch.Tensor, batch: int, n_images: int):
    """The PT2E row, or None (with a note) without torchao."""
    run = pt2e_int8(model, example, calibration)
    if run is None:
        print("(PT2E int8 row skipped: pip install torchao)")
        return None
    return f"batch {batch}, PT2E static int8 + bf16 autocast, torch.compile (torchao)", run, batch, n_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=448, help="Image side in pixels (SubCell: 448).")
    parser.add_argument("--batch-size", type=int, default=8, help="locscope batch size.")
    parser.add_argument("--images", type=int, default=16, help="Timed images for the batched modes.")
    parser.add_argument("--baseline-images", type=int, default=4, help="Timed images for the batch-1 modes.")
    parser.add_argument("--threads", type=int, default=2, help="torch threads.")
    parser.add_argument("--skip-compile", action="store_true", help="Leave out the torch.compile modes.")
    parser.add_argument("--skip-extra", action="store_true", help="Only the baseline and the default.")
    parser.add_argument("--calibration-cells", type=int, default=64, help="The default's int8 calibration cells "
                        "(embed's --calibration-cells; fewer = a shorter benchmark).")
    parser.add_argument("--no-warm-run", action="store_true", help="Skip the default's warm-cache whole run.")
    parser.add_argument("--skip-default", action="store_true", help="Leave out the default (its calibration).")
    parser.add_argument("--rows", default=None, help="Only these extra rows (comma list of: " + ", ".join(EXTRA_ROWS)
                        + "); default all.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SubCellModel(SubCellConfig(num_classifiers=1)).eval()
    images = min_max_normalize(torch.rand(max(args.batch_size, 1), 4, args.size, args.size))
    calibration = min_max_normalize(torch.rand(max(args.batch_size, 1), 4, args.size, args.size))  # export: fixed batch

    def baseline(x):
        model.encoder.set_attn_implementation("eager")
        try:
            return tuple(o.detach() for o in subcell_cli_forward(model, x))
        finally:
            model.encoder.set_attn_implementation("sdpa")

    def inference(subcell, dtype=None):
        def run(x):
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "autocast"):
                out = subcell(x.to(torch.bfloat16) if dtype == torch.bfloat16 else x)
                return out.embedding, out.probabilities
        return run

    def compiled(subcell, dtype=None):
        frozen = torch.compile(subcell, dynamic=False)

        def run(x):  # freezing (constant folding, weight prepacking) needs inference without autograd
            with torch._inductor.config.patch(freezing=True):
                return inference(frozen, dtype)(x)
        return run

    b = args.batch_size
    print(machine_description())
    print(f"SubCell ViT-B/16, 4 x {args.size} x {args.size}, torch {torch.__version__}, {args.threads} threads")
    rows = [("SubCell CLI default: batch 1, fp32, autograd on, eager attention", baseline, 1, args.baseline_images)]
    if not args.skip_default:
        chosen, default_run = default_mode(model, args.size, b, args.images, args.calibration_cells,
                                           not args.no_warm_run)
        rows.append((f"locscope default (CPU): batch {b}, {chosen}", default_run, b, args.images))
    wanted = set() if args.skip_extra else set(EXTRA_ROWS) if args.rows is None else set(args.rows.split(","))
    unknown = wanted - set(EXTRA_ROWS)
    if unknown:
        parser.error(f"--rows: unknown {', '.join(sorted(unknown))}; known: {', '.join(EXTRA_ROWS)}")
    if args.skip_compile:
        wanted -= {"compile-bf16", "pt2e"}
    extra = {
        "fp32-b1": lambda: ("batch 1, fp32, inference_mode, SDPA", inference(model), 1, args.baseline_images),
        "fp32": lambda: (f"batch {b}, fp32, inference_mode, SDPA", inference(model), b, args.images),
        "bf16-autocast": lambda: (f"--precision bf16 (GPU default): batch {b}, bf16 autocast, SDPA",
                                  inference(model, "autocast"), b, args.images),
        "bf16-weights": lambda: (f"batch {b}, bf16 weights, inference_mode, SDPA",
                                 inference(copy.deepcopy(model).to(torch.bfloat16), torch.bfloat16), b, args.images),
        "int8-torch": lambda: (f"--precision int8: batch {b}, int8 dynamic-quantized ViT Linear layers",
                               inference(quantize_encoder_int8(model)), b, args.images),
        "openvino-bf16": lambda: (f"--backend openvino --precision bf16: batch {b}", openvino_mode(model, calibration),
                                  b, args.images),
        "openvino-int8": lambda: (f"--backend openvino --precision int8: batch {b}, calibrated on {b} cells",
                                  openvino_mode(model, calibration, "int8"), b, args.images),
        "compile-bf16": lambda: (f"batch {b}, bf16 weights, torch.compile (inductor, freezing)",
                                 compiled(copy.deepcopy(model).to(torch.bfloat16), torch.bfloat16), b, args.images),
        "pt2e": lambda: pt2e_row(model, images[:b], calibration, b, args.images),
    }
    for name in EXTRA_ROWS:
        row = extra[name]() if name in wanted else None
        if row is not None:
            rows.append(row)
    reference = inference(model)(images)
    results = []
    print(f"{'mode':<76s} {'wall img/s':>10s} {'CPU s/img':>9s} {'speed-up':>8s} {'1st call s':>10s} "
          f"{'min cos':>8s} {'max |dp|':>8s}")
    for name, run, batch, n in rows:
        wall_rate, cpu_rate, first_call, outputs = time_images(run, images, n, batch)
        results.append(cpu_rate)
        cosine, dp = accuracy(outputs, reference)
        print(f"{name:<76s} {wall_rate:10.3f} {1 / cpu_rate:9.3f} {cpu_rate / results[0]:7.2f}x {first_call:10.1f} "
              f"{cosine:8.5f} {dp:8.5f}", flush=True)

if __name__ == "__main__":
    main()
