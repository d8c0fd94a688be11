"""Latent diffusion vs pixel-space CELL-Diff and CELL-E 2 on the same held-out proteins, plus the autoencoder.

    python benchmarks/bench_latent.py --model DIR [--compare celldiff-64 celldiff-tiny celle2-tiny] [--synthetic 200]
        [--steps N] [--threads 1] [--out results.json]
    python benchmarks/bench_latent.py --autoencoder DIR [--synthetic 200]     # the autoencoder alone
    python benchmarks/bench_latent.py --model DIR --cost                      # CPU cost per training step / image

Cells: grammar proteins with HELD-OUT motif variants (never trained on) in fresh simulator cells, drawn with the same
seeds at each model's own resolution (64 x 64 for latent-tiny, celldiff-64 and celle2-tiny, 32 x 32 for
celldiff-tiny); the proteins, seeds and cells are those of ``bench_faithful.py`` and ``bench_celle2.py``. Each model
samples with its own defaults: the diffusion models with DPM-Solver++ at their default steps (``--steps`` sets one
count for all) and guidance (``--latent-guidance``, ``--celldiff-guidance``), CELL-E 2 models (``--compare`` accepts
them; they see the nucleus only) with ``bench_celle2.py``'s decoding at ``--celle2-passes`` (``locscope generate``'s
default 1) and their decoded sample scored. Each protein is generated with its true sequence and,
on the same cell and noise, with another protein's sequence (a derangement: the shuffled-sequence control). Scores
against the simulator's truth (``locscope.metrics.truth``): IoU of the thresholded image with the true protein mask,
localization fidelity (share of intensity inside the true compartments), the right level-3 compartment (largest true
share) by the compartment read-out classifier (``compartment-readout``, trained on simulated cells: proteoscope's
"classifier on generated images", next to the same classifier on the simulator's images) and by the largest share under
the cell's masks, MSF resolution (``locscope.metrics.resolution``, at the simulator's pixel size for that
resolution), FID-O against the simulator's images of the same cells (CELL-Diff's FID images through locscope's image
encoder, as ``locscope evaluate``; with a few hundred images it compares models on the same cells, it is not a
population FID); network evaluations and CPU seconds per image (``time.process_time``, one thread; the machine may be
shared, wall time also printed).

``--score-at 32``: also score every model whose images are larger at that size, on equal terms with the models
drawn there: its images block-averaged down (2 x 2 means from 64 to 32) and scored against the same cells rendered
at that size (same seeds: the same cell, nucleus and cytoplasm; thin structures are drawn at that size's pixel), with
the simulator's own larger images treated the same way as the reference. IoU, fidelity and the mask read-out
depend on the pixel grid (the simulator's own images score differently at 64 x 64 and at 32 x 32), so models drawn
at different sizes are compared on one grid here.

Autoencoder: PSNR / SSIM (``locscope.metrics.pixel``, images in [0, 1]) of reconstructions of the real simulated
protein images of those cells, and IoU / fidelity / MSF / classifier of the reconstructions next to the originals'
(the generator cannot be sharper than its autoencoder).

``--cost``: CPU seconds per training step (batch 32, forward + backward) and per network evaluation of each model's
own architecture (its loaded weights; cost does not depend on them), on 200-residue grammar proteins.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_faithful import heldout_grammar_sequences  # noqa: E402

from locscope.data import ontology  # noqa: E402
from locscope.diffusion.celldiff_sampler import sample_protein_images  # noqa: E402
from locscope.metrics.pixel import psnr, ssim  # noqa: E402
from locscope.metrics.resolution import msf_resolution_nm  # noqa: E402
from locscope.metrics.truth import iou_vs_truth, localization_fidelity, true_protein_mask  # noqa: E402
from locscope.models import hub  # noqa: E402
from locscope.pipelines.readout import classify_level3, compartment_fractions, load_readout  # noqa: E402
from locscope.synth import SimulatorConfig, simulate_cell  # noqa: E402
from locscope.synth.grammar import grammar_targets, random_protein  # noqa: E402
from locscope.training.common import derangement  # noqa: E402


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


def generate(model, family: str, cells, sequences, args, seed: int, conditioner=None, placement: str = "soft"
             ) -> tuple[np.ndarray, int, float, float]:
    """Images ``(N, H, W)`` in [0, 1], network evaluations per image, CPU and wall seconds per image; a
    ``conditioner`` (:func:`locscope.pipelines.condition.sequence_condition` with a localizer) gives diffusion models
    the condition ``locscope generate`` gives them (its time counts)."""
    from locscope.pipelines.localize import generator_landmarks

    out, nfe = [], 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if family == "celle2":  # bench_celle2.py's decoding (one cell at a time, seed + index), its first sample
        from bench_celle2 import run_celle2

        images, _, _, nfe = run_celle2(model, cells, sequences, samples=1, passes=args.celle2_passes, seed=seed)
        n = len(cells)
        return images[:, 0], nfe, (time.process_time() - cpu0) / n, (time.perf_counter() - wall0) / n
    for start in range(0, len(cells), args.batch):
        chunk, seqs = cells[start:start + args.batch], sequences[start:start + args.batch]
        g = torch.Generator().manual_seed(seed + start)
        landmarks = torch.from_numpy(np.stack([[c.cell.images[n] for n in generator_landmarks(model)]
                                               for c in chunk]).astype(np.float32) * 2 - 1)
        tokens = model.tokenize(seqs)[0]
        fractions = None if conditioner is None else torch.from_numpy(conditioner(seqs)[0])
        if family == "latent":
            images, nfe = model.sample_in_cells(landmarks, tokens, sampler=args.sampler, steps=args.steps,
                                                guidance=args.latent_guidance, generator=g, fractions=fractions,
                                                placement=placement)
        else:
            images, nfe = sample_protein_images(model, landmarks, tokens, sampler=args.sampler, steps=args.steps,
                                                guidance=args.celldiff_guidance, generator=g, fractions=fractions,
                                                placement=placement)
        out.append((images[:, 0].numpy() + 1) / 2)
    n = len(cells)
    return np.concatenate(out), nfe, (time.process_time() - cpu0) / n, (time.perf_counter() - wall0) / n


READOUT_LANDMARKS = ("nucleus", "er", "microtubules")


def truth_scores(images: np.ndarray, cells, pixel_size_nm: float, readout=None) -> dict:
    masks = np.stack([true_protein_mask(c.cell.masks, list(c.compartments)) for c in cells])
    tops = [ontology.to_level3(max(c.compartments, key=c.compartments.get)) for c in cells]
    right = [next(iter(compartment_fractions(im, c.cell.masks)), None) == t for im, c, t in zip(images, cells, tops)]
    out = {"iou": float(np.nanmean(iou_vs_truth(images, masks))),
           "fidelity": float(np.nanmean(localization_fidelity(images, masks))),
           "right_compartment": float(np.mean(right)),
           "msf_resolution_nm": float(np.nanmean(msf_resolution_nm(images, pixel_size_nm)))}
    if readout is not None:
        landmarks = np.stack([[c.cell.images[n] for n in READOUT_LANDMARKS] for c in cells])
        drawn = classify_level3(readout, images, landmarks, READOUT_LANDMARKS).argmax(1)
        out["right_compartment_classifier"] = float(np.mean([readout.config.classes[d] == t
                                                             for d, t in zip(drawn, tops)]))
    return out


def block_mean(images: np.ndarray, size: int) -> np.ndarray:
    """``(N, H, W)`` -> ``(N, size, size)`` by the mean of each ``H / size`` block (``H`` a multiple of ``size``)."""
    n, h, w = images.shape
    if h % size or w % size:
        raise ValueError(f"--score-at {size}: the images ({h} x {w}) are not a multiple of it")
    return images.reshape(n, size, h // size, size, w // size).mean(axis=(2, 4))


def fid_o(network, real: np.ndarray, generated: np.ndarray, cells) -> float:
    """FID-O (CELL-Diff's FID images: protein in green, nucleus in blue) of ``generated`` against ``real``."""
    from locscope.metrics.fid import FeatureStats, fid_rgb, frechet_distance_from_stats

    nuclei = np.stack([c.cell.images["nucleus"] for c in cells])
    stats = []
    for images in (real, generated):
        acc = FeatureStats()
        for start in range(0, len(images), 32):
            acc.update(network.features(fid_rgb(images[start:start + 32], nuclei[start:start + 32], "image")))
        stats.append(acc)
    return float(frechet_distance_from_stats(*stats))


def reconstruction_scores(ae, real: np.ndarray, cells, pixel_size_nm: float, readout=None) -> dict:
    """PSNR / SSIM of the autoencoder's reconstructions of ``real`` ``(N, H, W)`` in [0, 1] (protein channel) and the
    truth scores of the reconstructions."""
    x = torch.from_numpy(real.astype(np.float32) * 2 - 1)[:, None]
    with torch.no_grad():
        recon = ((ae.decode(ae.encode(x)).clamp(-1, 1)[:, 0].numpy()) + 1) / 2
    return {"psnr": float(np.mean(psnr(real, recon, data_range=1.0))),
            "ssim": float(np.mean(ssim(real, recon, data_range=1.0))),
            **{f"reconstruction_{k}": v for k, v in truth_scores(recon, cells, pixel_size_nm, readout).items()},
            **{f"original_{k}": v for k, v in truth_scores(real, cells, pixel_size_nm, readout).items()}}


def evaluate_pairs(out: Path, name: str, cells, images: np.ndarray, features: str) -> dict:
    """``locscope evaluate`` on the simulator's images of ``cells`` (a store with their masks and level-1 labels,
    largest share first) against ``images`` (the same ids): its set metrics (FID-O, proteoscope's compartment
    accuracy by the read-out classifier and by a classifier on the image features, real vs generated)."""
    from locscope.data.store import write_store
    from locscope.pipelines.evaluate import evaluate

    names = sorted({m for c in cells for m in c.cell.masks})
    size = images.shape[-1]

    def items(generated: bool):
        for i, c in enumerate(cells):
            protein = images[i] if generated else c.protein
            yield {"id": f"cell{i:04d}", "protein_id": f"P{i:04d}", "sequence": "",
                   "images": {"protein": (np.clip(protein, 0, 1) * 65535).astype(np.uint16),
                              **{k: (np.clip(c.cell.images[k], 0, 1) * 65535).astype(np.uint16)
                                 for k in READOUT_LANDMARKS}},
                   "masks": {m: np.asarray(c.cell.masks.get(m, np.zeros((size, size), bool)), bool) for m in names},
                   "labels": {"level1": sorted(c.compartments, key=c.compartments.get, reverse=True)},
                   "provenance": {}}

    kwargs = dict(channels=("protein", *READOUT_LANDMARKS), image_shape=(size, size), mask_names=names,
                  progress=False, overwrite=True)
    write_store(out / f"{name}_real", list(items(False)), **kwargs)
    write_store(out / f"{name}_generated", list(items(True)), **kwargs)
    result = evaluate(out / f"{name}_real", out / f"{name}_generated", out / f"{name}_report", features=features,
                      device="cpu", progress=False, overwrite=True, max_pictures=4)
    return result.set_metrics


def cost(models: dict, args, batch: int = 32, repeat: int = 3) -> dict:
    """CPU seconds (``time.process_time``) per training step (forward + backward at ``batch``) and per network
    evaluation per image of each model's architecture (``{name: (family, model)}``), plus the latent decoder per image,
    on 200-residue grammar proteins; and per generated image (the whole sampling call of :func:`generate` with the
    model's defaults, on ``batch`` held-out proteins in their cells)."""
    rng = np.random.default_rng(0)
    targets = grammar_targets()
    sequences = [random_protein(targets[i % len(targets)], rng, length=200)[0] for i in range(batch)]
    t = torch.randint(0, 1000, (batch,))

    def seconds(fn) -> float:
        fn()
        start = time.process_time()
        for _ in range(repeat):
            fn()
        return (time.process_time() - start) / repeat

    out = {}
    for name, (family, model) in models.items():
        model = model.train()
        cfg = model.config
        tokens = model.tokenize(sequences)[0]
        if family == "latent":
            net, size = model.denoiser, cfg.latent_size
            n = len(cfg.landmark_channels)
            cell = (torch.randn(batch, 1, size, size), torch.randn(batch, n, size, size) if n else None)
            with torch.no_grad():  # sampling computes the spatial conditions (and layout maps) once per cell
                spatial = net.spatial_conditions(*cell)

            def call(net=net, size=size, spatial=spatial, tokens=tokens, cell=cell):
                if torch.is_grad_enabled():  # a training step also runs (and trains) the layout prior
                    spatial = net.spatial_conditions(*cell)
                return net(torch.randn(batch, cfg.latent_channels, size, size), t, spatial, net.encode_sequence(tokens))
        else:
            size = cfg.image_size
            landmarks = torch.randn(batch, len(cfg.landmark_channels), size, size)

            def call(model=model, size=size, landmarks=landmarks, tokens=tokens):
                return model(torch.randn(batch, 1, size, size), t, landmarks, tokens).image
        row = {"parameters": sum(p.numel() for p in model.parameters()),
               "train_step_cpu_s": seconds(lambda: call().pow(2).mean().backward())}
        model.eval()
        with torch.no_grad():
            row["network_evaluation_cpu_s_per_image"] = seconds(call) / batch
            if family == "latent":
                z = torch.randn(batch, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
                row["decode_cpu_s_per_image"] = seconds(lambda: model.autoencoder.decode(z)) / batch
        row["training_examples_per_cpu_s"] = batch / row["train_step_cpu_s"]
        held_out = heldout_grammar_sequences(batch)
        cells = cells_at(cfg.image_size, held_out)[1]
        with torch.no_grad():
            generate(model, family, cells[:2], held_out[:2], args, seed=7)  # warm-up
            row["network_evaluations_per_image"], row["sampling_cpu_s_per_image"] = \
                generate(model, family, cells, held_out, args, seed=7)[1:3]
        out[name] = row
    return out


def generate_settings(name: str, family: str, model, condition: str, placement: str | None):
    """``(conditioner, placement)`` as ``locscope generate`` uses them for a bottleneck diffusion model: the
    conditioner of its folder's ``condition_prior.json`` when that defers to a localizer (None: the model's own
    fraction head), and ``placement`` if given, else the file's placement, else ``'soft'``."""
    if family == "celle2" or not model.config.fraction_classes:
        return None, placement or "soft"
    from locscope.pipelines.condition import sequence_condition

    conditioner = sequence_condition(model, hub.resolve(name, families=(family,)).directory, condition)
    if placement is None:
        placement = conditioner.prior.placement if conditioner.prior is not None else "soft"
    return (conditioner if conditioner.localizer is not None else None), placement


def markdown(report: dict, names: list[str]) -> str:
    """The side-by-side table: per image size the simulator's images, then each model's true / shuffled rows."""
    lines = ["| 200 held-out proteins | image | IoU vs true mask | localization fidelity | right (classifier) | "
             "right (masks) | MSF | FID-O | classifier, `locscope evaluate` | network evaluations | "
             "CPU s / image (wall) |", "|---" * 11 + "|"]

    def cells(scores: dict) -> str:
        return (f"{scores['iou']:.3f} | {scores['fidelity']:.3f} | {scores['right_compartment_classifier']:.1%} | "
                f"{scores['right_compartment']:.1%} | {scores['msf_resolution_nm']:,.0f} nm")

    for size in sorted({report[n]["image_size"] for n in names}, reverse=True):
        group = [n for n in names if report[n]["image_size"] == size]
        lines.append(f"| simulator images, {size} x {size} | | {cells(report[group[0]]['real_simulated_images'])} "
                     "| | | | |")
        for name in group:
            row = report[name]
            accuracy = row.get("evaluate", {}).get("compartment_accuracy_generated")
            accuracy = "" if accuracy is None else f"{accuracy:.1%}"
            lines.append(f"| {name}, true sequence | {size} x {size} | {cells(row['true'])} | "
                         f"{row['true']['fid_o']:.2f} | {accuracy} | {row['network_evaluations_per_image']} | "
                         f"{row['cpu_seconds_per_image']:.3f} ({row['wall_seconds_per_image']:.3f}) |")
            lines.append(f"| {name}, shuffled sequence | {size} x {size} | {cells(row['shuffled'])} | "
                         f"{row['shuffled']['fid_o']:.2f} | | | |")
    scored = [n for n in names if "scored_at" in report[n]]
    for name in scored:
        at = report[name]["scored_at"]
        small, big = at["image_size"], report[name]["image_size"]
        if name == scored[0]:
            lines.append(f"| simulator images, {big} x {big} scored at {small} x {small} (block means) | | "
                         f"{cells(at['real_simulated_images'])} | | | | |")
        for label in ("true", "shuffled"):
            lines.append(f"| {name}, {label} sequence, scored at {small} x {small} (block means) | {big} x {big} | "
                         f"{cells(at[label])} | | | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Latent diffusion model (bundled name or directory).")
    parser.add_argument("--autoencoder", default=None, help="Only evaluate this autoencoder directory "
                        "(RUN/model of `locscope train latent-autoencoder`).")
    parser.add_argument("--compare", nargs="*", default=["celldiff-64", "celldiff-tiny", "celle2-tiny"],
                        help="CELL-Diff and CELL-E 2 models to run on the same proteins and cells.")
    parser.add_argument("--synthetic", type=int, default=200)
    parser.add_argument("--sampler", default="dpmsolver")
    parser.add_argument("--steps", type=int, default=None, help="Solver steps of every diffusion model (default: "
                        "each model's own, as locscope generate).")
    parser.add_argument("--latent-guidance", type=float, default=3.0)
    parser.add_argument("--celldiff-guidance", type=float, default=2.0)
    parser.add_argument("--celle2-passes", type=int, default=1, help="CELL-E 2 decoding passes per image.")
    parser.add_argument("--condition", default="auto", choices=("auto", "head"),
                        help="auto: condition diffusion models as locscope generate does (the model folder's "
                             "condition_prior.json, if any); head: their fraction head alone.")
    parser.add_argument("--placement", default=None, choices=("soft", "sample", "top"),
                        help="Placement of every bottleneck model (default: each model's own, as locscope generate).")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--features", default="encoder", help="Feature network for FID-O (as locscope evaluate).")
    parser.add_argument("--cost", action="store_true", help="Measure CPU seconds per training step / network "
                        "evaluation of each model instead of generating.")
    parser.add_argument("--evaluate-dir", default=None, help="Also run locscope evaluate on each model's images "
                        "(true sequences) against the simulator's (stores and reports written here).")
    parser.add_argument("--score-at", type=int, default=None, help="Also score every model drawing larger images at "
                        "this size (block means, against the same cells rendered at this size).")
    parser.add_argument("--out", default=None, help="Also write the results as JSON here.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_name()}, torch {torch.__version__}, "
          f"capability {torch.backends.cpu.get_cpu_capability()}, {args.threads} thread(s)", flush=True)
    sequences = heldout_grammar_sequences(args.synthetic)
    shuffled = [sequences[j] for j in derangement(len(sequences), 1)]
    report = {"settings": vars(args), "cpu": cpu_name()}
    readout = load_readout()

    def finish() -> None:
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=1))

    if args.autoencoder:
        from locscope.models.latent import LatentAutoencoder

        ae = LatentAutoencoder.from_pretrained(args.autoencoder)
        cfg, cells = cells_at(ae.config.image_size, sequences)
        real = np.stack([c.protein for c in cells])
        report["autoencoder"] = {"image_size": ae.config.image_size,
                                 **reconstruction_scores(ae, real, cells, cfg.resolved_pixel_size_nm, readout)}
        print(json.dumps(report["autoencoder"], indent=1), flush=True)
    if not args.model:
        return finish()
    models = {args.model: ("latent", hub.load(args.model, families=("latent",)))}
    for name in args.compare:
        family = hub.resolve(name, families=("celldiff", "celle2"), argument="compare").family
        models[name] = (family, hub.load(name, families=(family,)))
    if args.cost:
        report["cost"] = cost({k: v for k, v in models.items() if v[0] != "celle2"}, args)
        print(json.dumps(report["cost"], indent=1), flush=True)
        return finish()
    from locscope.pipelines.evaluate import load_feature_network

    network = load_feature_network(args.features, "cpu")
    report["feature_network"] = network.name
    simulated: dict[int, tuple] = {}  # image size -> (config, cells): every model of a size sees the same cells

    def cells_of(size: int):
        if size not in simulated:
            simulated[size] = cells_at(size, sequences)
        return simulated[size]

    for name, (family, model) in models.items():
        conditioner, placement = generate_settings(name, family, model, args.condition, args.placement)
        cfg, cells = cells_of(model.config.image_size)
        pixel = cfg.resolved_pixel_size_nm
        real = np.stack([c.protein for c in cells])
        row = {"family": family, "image_size": model.config.image_size,
               "parameters": sum(p.numel() for p in model.parameters()),
               "real_simulated_images": truth_scores(real, cells, pixel, readout)}
        generate(model, family, cells[:2], sequences[:2], args, seed=7, conditioner=conditioner,
                 placement=placement)  # warm-up
        row["placement"] = placement
        if conditioner is not None:
            row["condition"] = conditioner.describe()
        small = args.score_at if args.score_at and model.config.image_size > args.score_at else None
        if small:
            small_cfg, small_cells = cells_of(small)
            row["scored_at"] = {"image_size": small, "real_simulated_images": truth_scores(
                block_mean(real, small), small_cells, small_cfg.resolved_pixel_size_nm, readout)}
        for label, seqs in (("true", sequences), ("shuffled", shuffled)):
            images, nfe, cpu, wall = generate(model, family, cells, seqs, args, seed=7, conditioner=conditioner,
                                              placement=placement)
            row[label] = {**truth_scores(images, cells, pixel, readout), "fid_o": fid_o(network, real, images, cells)}
            if small:
                row["scored_at"][label] = truth_scores(block_mean(images, small), small_cells,
                                                       small_cfg.resolved_pixel_size_nm, readout)
            if label == "true":
                row.update({"network_evaluations_per_image": nfe, "cpu_seconds_per_image": cpu,
                            "wall_seconds_per_image": wall})
                if args.evaluate_dir:
                    row["evaluate"] = evaluate_pairs(Path(args.evaluate_dir), name.replace("/", "_"), cells, images,
                                                     args.features)
        if family == "latent":
            row["autoencoder"] = reconstruction_scores(model.autoencoder, real, cells, pixel, readout)
        report[name] = row
        print(json.dumps({name: row}, indent=1), flush=True)
    print(markdown(report, [name for name in models]), flush=True)
    finish()


if __name__ == "__main__":
    main()
