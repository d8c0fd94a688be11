"""Latent diffusion vs pixel-space CELL-Diff on the same held-out proteins, plus the autoencoder's reconstructions.

    python benchmarks/bench_latent.py --model DIR [--celldiff celldiff-tiny] [--synthetic 48] [--steps 10]
        [--threads 1] [--out results.json]
    python benchmarks/bench_latent.py --autoencoder DIR [--synthetic 48]      # the autoencoder alone
    python benchmarks/bench_latent.py --cost                                 # CPU cost of latent-tiny vs celldiff-tiny

Cells: grammar proteins with HELD-OUT motif variants (never trained on) in fresh simulator cells, drawn with the same
seeds at each model's own resolution (the latent model's 64 x 64, celldiff-tiny's 32 x 32), so both models see the
same proteins in the same cells. Each protein is generated with its true sequence and, on the same cell and noise,
with another protein's sequence (a derangement: the shuffled-sequence control). Scores against the simulator's
truth (``locscope.metrics.truth``): IoU of the thresholded image with the true protein mask, localization fidelity
(share of intensity inside the true compartments), the right level-3 compartment (largest share under the cell's
masks), MSF resolution (``locscope.metrics.resolution``, at the simulator's pixel size for that resolution);
network evaluations and CPU seconds per image (``time.process_time``; the machine may be shared, wall time also
printed).

Autoencoder: PSNR / SSIM (``locscope.metrics.pixel``, images in [0, 1]) of reconstructions of the real simulated
protein images of those cells, and IoU / fidelity / MSF of the reconstructions next to the originals' (the generator
cannot be sharper than its autoencoder).
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
from locscope.data.transforms import nuclear_distance_map, segment_nuclei
from locscope.diffusion.celldiff_sampler import sample_protein_images
from locscope.encoders.protein import tokenize
from locscope.metrics.pixel import psnr, ssim
from locscope.metrics.resolution import msf_resolution_nm
from locscope.metrics.truth import iou_vs_truth, localization_fidelity, true_protein_mask
from locscope.models import hub
from locscope.pipelines.readout import compartment_fractions
from locscope.synth import SimulatorConfig, simulate_cell
from locscope.synth.grammar import grammar_targets, random_protein
from locscope.training.celldiff_module import derangement


def held_out_proteins(n: int) -> list[str]:
    """``n`` held-out grammar sequences (seeded, as ``bench_celldiff_fidelity.py``)."""
    rng = np.random.default_rng(12345)
    targets = grammar_targets()
    sequences = []
    for _ in range(n):
        seq, _ = random_protein(targets[int(rng.integers(len(targets)))], rng, length=200, split="heldout")
        sequences.append(seq)
    return sequences


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cells_at(size: int, sequences: list[str]):
    cfg = SimulatorConfig(size=size)
    return cfg, [simulate_cell(cfg, sequence=s, seed=900_000 + i) for i, s in enumerate(sequences)]


def generate(model, family: str, cells, sequences, args, seed: int) -> tuple[np.ndarray, int, float, float]:
    """Images ``(N, H, W)`` in [0, 1], network evaluations per image, CPU and wall seconds per image."""
    out, nfe = [], 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for start in range(0, len(cells), args.batch):
        chunk, seqs = cells[start:start + args.batch], sequences[start:start + args.batch]
        g = torch.Generator().manual_seed(seed + start)
        if family == "latent":
            tokens = model.tokenize(seqs)[0]
            distance = torch.from_numpy(np.stack([nuclear_distance_map(segment_nuclei(c.cell.images["nucleus"]))
                                                  for c in chunk]))[:, None]
            landmarks = torch.from_numpy(np.stack([[c.cell.images[n] for n in model.config.landmark_channels]
                                                   for c in chunk]).astype(np.float32) * 2 - 1)
            images, nfe = model.sample(distance, tokens, landmarks, sampler=args.sampler, steps=args.steps,
                                       guidance=args.latent_guidance, generator=g)
        else:
            tokens, _ = tokenize(seqs, model.config.max_sequence_length)
            landmarks = torch.from_numpy(np.stack([[c.cell.images[n] for n in model.config.landmark_channels]
                                                   for c in chunk]).astype(np.float32) * 2 - 1)
            images, nfe = sample_protein_images(model, landmarks, tokens, sampler=args.sampler, steps=args.steps,
                                                guidance=args.celldiff_guidance, generator=g)
        out.append((images[:, 0].numpy() + 1) / 2)
    n = len(cells)
    return np.concatenate(out), nfe, (time.process_time() - cpu0) / n, (time.perf_counter() - wall0) / n


def truth_scores(images: np.ndarray, cells, pixel_size_nm: float) -> dict:
    masks = np.stack([true_protein_mask(c.cell.masks, list(c.compartments)) for c in cells])
    tops = [ontology.to_level3(max(c.compartments, key=c.compartments.get)) for c in cells]
    right = [next(iter(compartment_fractions(im, c.cell.masks)), None) == t for im, c, t in zip(images, cells, tops)]
    return {"iou": float(np.nanmean(iou_vs_truth(images, masks))),
            "fidelity": float(np.nanmean(localization_fidelity(images, masks))),
            "right_compartment": float(np.mean(right)),
            "msf_resolution_nm": float(np.nanmean(msf_resolution_nm(images, pixel_size_nm)))}


def reconstruction_scores(ae, real: np.ndarray, cells, pixel_size_nm: float) -> dict:
    """PSNR / SSIM of the autoencoder's reconstructions of ``real`` ``(N, H, W)`` in [0, 1] (protein channel) and the
    truth scores of the reconstructions."""
    x = torch.from_numpy(real.astype(np.float32) * 2 - 1)[:, None]
    with torch.no_grad():
        recon = ((ae.decode(ae.encode(x)).clamp(-1, 1)[:, 0].numpy()) + 1) / 2
    return {"psnr": float(np.mean(psnr(real, recon, data_range=1.0))),
            "ssim": float(np.mean(ssim(real, recon, data_range=1.0))),
            **{f"reconstruction_{k}": v for k, v in truth_scores(recon, cells, pixel_size_nm).items()},
            **{f"original_{k}": v for k, v in truth_scores(real, cells, pixel_size_nm).items()}}


def cost(batch: int = 32, repeat: int = 3) -> dict:
    """CPU seconds (``time.process_time``) of the ``latent_tiny_config`` networks (random weights: cost does not
    depend on them) and of celldiff-tiny's architecture, per training step at ``batch`` and per network evaluation and
    decode per image, on 200-residue grammar proteins."""
    from locscope.models.celldiff import CellDiff, celldiff_tiny_config
    from locscope.models.latent import LatentAutoencoder, LatentDenoiser, latent_tiny_config

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    targets = grammar_targets()
    sequences = [random_protein(targets[i % len(targets)], rng, length=200)[0] for i in range(batch)]
    ae_config, config = latent_tiny_config()
    latent, autoencoder = LatentDenoiser(config), LatentAutoencoder(ae_config)
    celldiff = CellDiff(celldiff_tiny_config())
    tokens = latent.tokenize(sequences)[0]
    t = torch.randint(0, 1000, (batch,))
    size = config.latent_size

    def latent_call():
        return latent(torch.randn(batch, 4, size, size), t, torch.randn(batch, 3, size, size),
                      latent.encode_sequence(tokens))

    def celldiff_call():
        return celldiff(torch.randn(batch, 1, 32, 32), t, torch.randn(batch, 3, 32, 32), tokens).image

    def seconds(fn) -> float:
        fn()
        start = time.process_time()
        for _ in range(repeat):
            fn()
        return (time.process_time() - start) / repeat

    out = {"parameters": {"latent_denoiser": sum(p.numel() for p in latent.parameters()),
                          "latent_autoencoder": sum(p.numel() for p in autoencoder.parameters()),
                          "celldiff_tiny": sum(p.numel() for p in celldiff.parameters())}}
    out["train_step_cpu_s"] = {"latent": seconds(lambda: latent_call().pow(2).mean().backward()),
                               "celldiff": seconds(lambda: celldiff_call().pow(2).mean().backward())}
    with torch.no_grad():
        out["network_evaluation_cpu_s_per_image"] = {"latent": seconds(latent_call) / batch,
                                                     "celldiff": seconds(celldiff_call) / batch}
        out["decode_cpu_s_per_image"] = seconds(lambda: autoencoder.decode(torch.randn(batch, 4, size, size))) / batch
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Latent diffusion model (bundled name or directory).")
    parser.add_argument("--autoencoder", default=None, help="Only evaluate this autoencoder directory "
                        "(RUN/model of `locscope train latent-autoencoder`).")
    parser.add_argument("--celldiff", default="celldiff-tiny")
    parser.add_argument("--synthetic", type=int, default=48)
    parser.add_argument("--sampler", default="dpmsolver")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--latent-guidance", type=float, default=3.0)
    parser.add_argument("--celldiff-guidance", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cost", action="store_true", help="Also measure CPU seconds per training step / network "
                        "evaluation of latent-tiny's and celldiff-tiny's architectures.")
    parser.add_argument("--out", default=None, help="Also write the results as JSON here.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_name()}, torch {torch.__version__}, "
          f"capability {torch.backends.cpu.get_cpu_capability()}, {args.threads} thread(s)", flush=True)
    sequences = held_out_proteins(args.synthetic)
    shuffled = [sequences[j] for j in derangement(len(sequences), 1)]
    report = {"settings": vars(args), "cpu": cpu_name()}
    if args.cost:
        report["cost"] = cost()
        print(json.dumps(report["cost"], indent=1), flush=True)
    if args.autoencoder:
        from locscope.models.latent import LatentAutoencoder

        ae = LatentAutoencoder.from_pretrained(args.autoencoder)
        cfg, cells = cells_at(ae.config.image_size, sequences)
        real = np.stack([c.protein for c in cells])
        report["autoencoder"] = {"image_size": ae.config.image_size, **reconstruction_scores(ae, real, cells,
                                                                                            cfg.resolved_pixel_size_nm)}
        print(json.dumps(report["autoencoder"], indent=1), flush=True)
    if not args.model:
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=1))
        return
    for family, name in (("latent", args.model), ("celldiff", args.celldiff)):
        model = hub.load(name, families=(family,))
        cfg, cells = cells_at(model.config.image_size, sequences)
        pixel = cfg.resolved_pixel_size_nm
        row = {"image_size": model.config.image_size, "parameters": sum(p.numel() for p in model.parameters())}
        for label, seqs in (("true", sequences), ("shuffled", shuffled)):
            images, nfe, cpu, wall = generate(model, family, cells, seqs, args, seed=7)
            row[label] = truth_scores(images, cells, pixel)
            if label == "true":
                row.update({"network_evaluations_per_image": nfe, "cpu_seconds_per_image": cpu,
                            "wall_seconds_per_image": wall})
        real = np.stack([c.protein for c in cells])
        row["real_simulated_images"] = truth_scores(real, cells, pixel)
        if family == "latent":
            row["autoencoder"] = reconstruction_scores(model.autoencoder, real, cells, pixel)
        report[family] = row
        print(json.dumps({family: row}, indent=1), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
