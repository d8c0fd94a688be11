"""CELL-E 2 vs CELL-Diff, side by side on the same held-out simulator proteins and cells, plus decoding cost.

    python benchmarks/bench_celle2.py --celle2 DIR [--celldiff celldiff-tiny] [--n 48] [--samples 2] [--out r.json]
    python benchmarks/bench_celle2.py --base          # celle2-base: parameters, one forward pass at 256 x 256

Proteins: rule-grammar proteins with HELD-OUT motif variants (never trained on) in fresh simulator cells at the
models' resolution. Each protein is generated with its true sequence and, on the same cell, with another protein's
(a derangement: the shuffled-sequence control). Models: CELL-E 2 with 1 and 8 decoding passes (nucleus only) and
CELL-Diff with its fast solver (DPM-Solver++, 10 steps, guidance 2; nucleus, ER, microtubules).

Metrics, averaged over proteins (definitions in ``locscope.metrics.celle2`` / ``locscope.metrics.truth``):
CELL-E 2's own (Nucleus % MAE: |nuclear share of the thresholded generated image - that of the median-thresholded
real image|, pixel MAE of the binary images, PDF MAE of the probability map against the min-max real image, SSIM of
the [0, 1] images), IoU of the thresholded image with the true protein mask, localization fidelity (share of
intensity in the true compartments) and the right level-3 compartment (largest share under the cell's masks). Cost:
network evaluations per image and CPU / wall seconds per image (one torch thread; the machine may be shared, so
wall times are indicative; CPU seconds count only this process).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from locscope.data import ontology
from locscope.metrics.celle2 import binary_pixel_mae, nucleus_proportion_error, pdf_mae
from locscope.metrics.pixel import ssim
from locscope.metrics.truth import iou_vs_truth, localization_fidelity, true_protein_mask
from locscope.pipelines.generate import probability_map
from locscope.pipelines.readout import compartment_fractions
from locscope.synth import SimulatorConfig, simulate_cell
from locscope.synth.grammar import grammar_targets, random_protein
from locscope.training.celldiff_module import derangement

NUCLEAR = ("nucleus", "nucleoli")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def nucleus_mask(masks: dict) -> np.ndarray:
    """Union of the level-1 masks whose level-3 class is nucleus or nucleoli."""
    parts = [m for name, m in masks.items() if ontology.to_level3(name) in NUCLEAR]
    return np.any(parts, axis=0) if parts else np.zeros(next(iter(masks.values())).shape, bool)


def run_celldiff(model, cells, sequences, samples: int, seed: int):
    """``(images (N, K, H, W) in [0, 1], network evaluations per image)``."""
    from locscope.diffusion.celldiff_sampler import sample_protein_images
    from locscope.encoders.protein import tokenize

    out, nfe = [], 0
    for i, (cell, sequence) in enumerate(zip(cells, sequences)):
        landmarks = torch.from_numpy(np.stack([cell.cell.images[n] for n in model.config.landmark_channels])
                                     .astype(np.float32) * 2 - 1)[None]
        tokens, _ = tokenize([sequence], model.config.max_sequence_length)
        images, nfe = sample_protein_images(model, landmarks, tokens, samples=samples, sampler="dpmsolver", steps=10,
                                            guidance=2.0, generator=torch.Generator().manual_seed(seed + i))
        out.append((images[:, 0].numpy() + 1) / 2)
    return np.stack(out), nfe


def run_celle2(model, cells, sequences, samples: int, passes: int, seed: int):
    """``(decoded images (N, K, H, W), binary (N, K, H, W), probability (N, H, W), evaluations per image)``."""
    from locscope.diffusion.celle2_sampler import decode_image_tokens
    from locscope.models.celle2 import normalize_nucleus

    decoded, probability, nfe = [], [], 0
    for i, (cell, sequence) in enumerate(zip(cells, sequences)):
        nucleus = torch.from_numpy(cell.cell.images["nucleus"].astype(np.float32))[None, None]
        with torch.no_grad():
            ids = model.encode_nucleus(normalize_nucleus(nucleus))
            text = model.tokenize([sequence], trim=True).expand(samples, -1)
            sample = decode_image_tokens(model, text, ids.expand(samples, -1), passes=passes,
                                         generator=torch.Generator().manual_seed(seed + i))
            decoded.append(model.decode_protein(sample.tokens)[:, 0].numpy())
            probability.append(model.probability_map(sample.probabilities)[:, 0].numpy().mean(0))
        nfe = sample.passes
    decoded = np.stack(decoded)
    return np.clip(decoded, 0, 1), decoded > 0.5, np.stack(probability), nfe


def scores(real, images, binary, pdf, cells, true_masks, true_level3, is_binary):
    """All metrics for one model run; ``images`` ``(N, K, H, W)`` in [0, 1], ``binary`` its thresholded images."""
    first = images[:, 0]
    unit_real = (real - real.min(axis=(1, 2), keepdims=True)) / np.ptp(real, axis=(1, 2), keepdims=True).clip(1e-9)
    nuclei = np.stack([nucleus_mask(c.cell.masks) for c in cells])
    tops = [next(iter(compartment_fractions(im, c.cell.masks)), None) for im, c in zip(first, cells)]
    return {
        "nucleus_pct_mae": float(np.nanmean(nucleus_proportion_error(real, binary[:, 0] if is_binary else first, nuclei,
                                                                     generated_is_binary=is_binary))),
        "pixel_mae": float(np.mean(binary_pixel_mae(real, binary[:, 0] if is_binary else first,
                                                    generated_is_binary=is_binary))),
        "pdf_mae": float(np.mean(pdf_mae(real, pdf))),
        "ssim": float(np.mean(ssim(unit_real, first, data_range=1.0))),
        "iou": float(np.nanmean(iou_vs_truth(first, true_masks))),
        "fidelity": float(np.nanmean(localization_fidelity(first, true_masks))),
        "right_compartment": float(np.mean([t == r for t, r in zip(tops, true_level3)])),
    }


def base_forward(threads: int) -> dict:
    """Parameter count of ``celle2_base_config()`` and the CPU time of one forward pass at 256 x 256 (random weights,
    one nucleus image tokenized, 1000-residue text stream, every protein-image token masked)."""
    from locscope.models.celle2 import Celle2, celle2_base_config, normalize_nucleus

    torch.manual_seed(0)
    cpu = time.process_time()
    model = Celle2(celle2_base_config()).eval()
    build = time.process_time() - cpu
    counts = {"total": sum(p.numel() for p in model.parameters())}
    for name in ("text_encoder", "nucleus_tokenizer", "protein_tokenizer"):
        counts[name] = sum(p.numel() for p in getattr(model, name).parameters())
    counts["transformer"] = counts["total"] - counts["text_encoder"] - counts["nucleus_tokenizer"] - \
        counts["protein_tokenizer"]
    text = model.tokenize(["M" + "A" * 999])
    nucleus_image = normalize_nucleus(torch.rand(1, 1, 256, 256))
    with torch.no_grad():
        cpu, wall = time.process_time(), time.perf_counter()
        nucleus = model.encode_nucleus(nucleus_image)
        tokenize_cpu = time.process_time() - cpu
        cpu = time.process_time()
        logits = model(text, nucleus, torch.full_like(nucleus, model.protein_mask_id)).logits
        forward_cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"parameters": counts, "tokens": int(logits.shape[1]), "build_cpu_s": build,
            "nucleus_tokenize_cpu_s": tokenize_cpu, "forward_cpu_s": forward_cpu, "tokenize_and_forward_wall_s": wall,
            "threads": threads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", action="store_true", help="only: celle2-base parameters and one forward pass")
    parser.add_argument("--celle2", help="CELL-E 2 model (bundled name or directory)")
    parser.add_argument("--celldiff", default="celldiff-tiny")
    parser.add_argument("--n", type=int, default=48, help="held-out grammar proteins")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.base:
        print(json.dumps({"cpu": cpu_name(), "celle2_base": base_forward(args.threads)}, indent=1))
        return
    if not args.celle2:
        parser.error("--celle2 is required (or --base)")
    from locscope.models import hub
    from locscope.pipelines.generate import load_celldiff

    celldiff = load_celldiff(args.celldiff)
    celle2 = hub.load(args.celle2, families=("celle2",))
    size = celle2.config.image_size
    if celldiff.config.image_size != size:
        raise SystemExit(f"image sizes differ: CELL-Diff {celldiff.config.image_size}, CELL-E 2 {size}")
    cfg = SimulatorConfig(size=size)
    rng = np.random.default_rng(12345)
    targets = grammar_targets()
    cells, sequences = [], []
    for i in range(args.n):
        target = targets[int(rng.integers(len(targets)))]
        sequence, _ = random_protein(target, rng, length=200, split="heldout")
        cells.append(simulate_cell(cfg, sequence=sequence, seed=900_000 + i))
        sequences.append(sequence)
    shuffled = [sequences[j] for j in derangement(len(sequences), 1)]
    real = np.stack([c.protein for c in cells]).astype(np.float64)
    true_masks = np.stack([true_protein_mask(c.cell.masks, list(c.compartments)) for c in cells])
    true_level3 = [ontology.to_level3(max(c.compartments, key=c.compartments.get)) for c in cells]
    report = {"cpu": cpu_name(), "torch_threads": args.threads, "n": args.n, "samples": args.samples,
              "celle2": str(args.celle2), "celldiff": str(args.celldiff), "runs": {}}
    for condition, seqs in (("true", sequences), ("shuffled", shuffled)):
        for name in ("celldiff_dpm10", "celle2_1pass", "celle2_8pass"):
            wall, cpu = time.perf_counter(), time.process_time()
            if name == "celldiff_dpm10":
                images, nfe = run_celldiff(celldiff, cells, seqs, args.samples, seed=7)
                binary = images > 0.5  # not used: CELL-Diff images are thresholded at their median by the metrics
                pdf = np.stack([probability_map(stack) for stack in images])
                is_binary = False
            else:
                passes = 1 if name == "celle2_1pass" else 8
                images, binary, pdf, nfe = run_celle2(celle2, cells, seqs, args.samples, passes, seed=7)
                is_binary = True
            count = len(cells) * args.samples
            row = scores(real, images, binary, pdf, cells, true_masks, true_level3, is_binary)
            row.update({"network_evaluations_per_image": nfe,
                        "cpu_seconds_per_image": (time.process_time() - cpu) / count,
                        "wall_seconds_per_image": (time.perf_counter() - wall) / count})
            report["runs"][f"{name}/{condition}"] = row
            print(json.dumps({f"{name}/{condition}": {k: round(v, 4) for k, v in row.items()}}), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps({"cpu": report["cpu"], "torch_threads": args.threads}))


if __name__ == "__main__":
    main()
