"""CELL-Diff localization benchmarks: unseen simulator proteins (true vs shuffled sequence) and held-out real OpenCell
proteins (level-3 accuracy vs the majority class), plus sampler cost (DDIM-100 vs DPM-Solver++).

    python benchmarks/bench_celldiff_fidelity.py [--model DIR] [--synthetic 96] [--real all] [--sampler dpmsolver]
        [--steps 10] [--guidance 2] [--samplers-compare 16]

Synthetic: grammar proteins with HELD-OUT motif variants (random backgrounds, never trained on) in fresh simulator
cells; each protein's image is generated with its true sequence and, on the same cell and noise, with another
protein's sequence (a derangement). Scores against the simulator's exact truth: IoU of the median-thresholded image
with the true protein mask (``locscope.metrics.truth.iou_vs_truth``), localization fidelity (share of intensity inside
the true compartments) and the right level-3 compartment, read two ways: the class with the largest share under the
masks (each pixel to its smallest covering mask) and, more exactly, the class with the largest share after unmixing
the image into the cell's rendered compartment patterns (non-negative least squares, ``localize.unmix_compartments``).
Models with the compartment bottleneck are also run on the TRUE compartment fractions ("oracle": the image path alone).
Real: the OpenCell proteins of the test split (split by protein with the training store's seed, never trained on) in
label-faithful simulator cells; a prediction is correct when the top level-3 class of the generated image (or of the
auxiliary sequence head) is among the protein's annotated level-3 classes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from locscope.data import ontology
from locscope.diffusion.celldiff_sampler import sample_protein_images
from locscope.encoders.protein import tokenize
from locscope.metrics.truth import iou_vs_truth, localization_fidelity, true_protein_mask
from locscope.pipelines.generate import load_celldiff
from locscope.pipelines.readout import (
    LEVEL3_CLASSES, compartment_basis, compartment_fractions, level_probabilities, unmix_compartments,
)
from locscope.synth import SimulatorConfig, simulate_cell
from locscope.synth.grammar import grammar_targets, random_protein
from locscope.training.common import derangement

OPENCELL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "localization_sequences" / "opencell_raw.csv"


def generate(model, cells, sequences, args, seed, sampler=None, steps=None, fractions=None):
    """Generated images (N, H, W) in [0, 1] for cells[i] with sequences[i], in batches; same noise per index
    (CELL-Diff or latent diffusion models)."""
    from locscope.models.latent import LatentDiffusion
    from locscope.pipelines.localize import generator_landmarks

    out, nfe = [], 0
    for start in range(0, len(cells), args.batch):
        chunk = cells[start:start + args.batch]
        landmarks = torch.from_numpy(np.stack([[c.cell.images[n] for n in generator_landmarks(model)]
                                               for c in chunk]).astype(np.float32) * 2 - 1)
        tokens, _ = tokenize(sequences[start:start + args.batch], model.config.max_sequence_length)
        g = torch.Generator().manual_seed(seed + start)
        given = None if fractions is None else torch.from_numpy(fractions[start:start + args.batch]).float()
        if isinstance(model, LatentDiffusion):
            images, nfe = model.sample_in_cells(landmarks, tokens, sampler=sampler or args.sampler,
                                                steps=steps or args.steps, guidance=args.guidance, generator=g,
                                                fractions=given, placement=args.placement)
        else:
            images, nfe = sample_protein_images(model, landmarks, tokens, sampler=sampler or args.sampler,
                                                steps=steps or args.steps, guidance=args.guidance, generator=g,
                                                fractions=given, placement=args.placement)
        out.append((images[:, 0].numpy() + 1) / 2)
    return np.concatenate(out), nfe


def top_level3(image, masks):
    shares = compartment_fractions(image, masks)
    return next(iter(shares), None)


def top_level3_unmixed(image, basis):
    level3, _ = level_probabilities(unmix_compartments(image, basis))
    return LEVEL3_CLASSES[int(np.argmax(level3))]


def fraction_vectors(model, cells):
    """True compartment fractions of simulated cells as ``(N, n_fraction_classes)`` (bottleneck models)."""
    classes = model.config.fraction_classes
    out = np.zeros((len(cells), len(classes)), np.float32)
    for i, c in enumerate(cells):
        for name, value in c.compartments.items():
            if name in classes:
                out[i, classes.index(name)] = value
    return out


def scores(images, cells, bases, true_masks, true_level3):
    return {"iou": float(np.nanmean(iou_vs_truth(images, true_masks))),
            "fidelity": float(np.nanmean(localization_fidelity(images, true_masks))),
            "right_compartment": float(np.mean([top_level3(im, c.cell.masks) == t
                                                for im, c, t in zip(images, cells, true_level3)])),
            "right_compartment_unmixed": float(np.mean([top_level3_unmixed(im, b) == t
                                                        for im, b, t in zip(images, bases, true_level3)]))}


def synthetic(model, args):
    cfg = SimulatorConfig(size=model.config.image_size)
    rng = np.random.default_rng(12345)
    targets = grammar_targets()
    cells, sequences = [], []
    for i in range(args.synthetic):
        target = targets[int(rng.integers(len(targets)))]
        seq, _ = random_protein(target, rng, length=200, split="heldout")
        cells.append(simulate_cell(cfg, sequence=seq, seed=900_000 + i))
        sequences.append(seq)
    shuffled = [sequences[j] for j in derangement(len(sequences), 1)]
    true_masks = np.stack([true_protein_mask(c.cell.masks, list(c.compartments)) for c in cells])
    true_top = [max(c.compartments, key=c.compartments.get) for c in cells]
    true_level3 = [ontology.to_level3(t) for t in true_top]
    bases = [compartment_basis(c.cell, cfg) for c in cells]
    results = {}
    t0 = time.perf_counter()
    runs = [("true", sequences, None), ("shuffled", shuffled, None)]
    if model.config.fraction_classes:
        runs.append(("oracle_fractions", sequences, fraction_vectors(model, cells)))
    for name, seqs, fractions in runs:
        images, nfe = generate(model, cells, seqs, args, seed=7, fractions=fractions)
        results[name] = scores(images, cells, bases, true_masks, true_level3)
    real_images = np.stack([c.protein for c in cells])
    results["real_simulated_images"] = scores(real_images, cells, bases, true_masks, true_level3)
    results["real_simulated_images"]["iou"] = float(np.nanmean(iou_vs_truth(real_images, true_masks,
                                                                            method="lower_median")))
    head = model.predict_compartments(tokenize(sequences, model.config.max_sequence_length)[0]).numpy()
    classes = model.config.compartment_classes
    results["head_accuracy"] = float(np.mean([ontology.to_level3(t) == classes[int(np.argmax(h))]
                                              for t, h in zip(true_top, head)]))
    results["n"] = len(cells)
    results["seconds"] = time.perf_counter() - t0
    return results, cells, sequences, true_masks


def real(model, args):
    from locscope.data.splits import split_by_protein
    from locscope.synth.labelled import read_annotated_proteins

    proteins = read_annotated_proteins(OPENCELL)
    splits = split_by_protein([p.id for p in proteins], seed=0)  # the training store's split (build_training_store)
    train = [p for p, s in zip(proteins, splits) if s == "train"]
    test = [p for p, s in zip(proteins, splits) if s == "test"]
    if args.real != "all":
        test = test[: int(args.real)]
    label3 = lambda p: {ontology.to_level3(c) for c in p.level1}  # noqa: E731
    counts: dict[str, int] = {}
    for p in train:
        for c in label3(p):
            counts[c] = counts.get(c, 0) + 1
    majority = max(counts, key=counts.get)
    cfg = SimulatorConfig(size=model.config.image_size)
    cells = [simulate_cell(cfg, sequence=p.sequence, compartments=p.compartments, seed=800_000 + i)
             for i, p in enumerate(test)]
    images, _ = generate(model, cells, [p.sequence for p in test], args, seed=11)
    image_top = [top_level3(im, c.cell.masks) for im, c in zip(images, cells)]
    image_top_unmixed = [top_level3_unmixed(im, compartment_basis(c.cell, cfg)) for im, c in zip(images, cells)]
    head = model.predict_compartments(tokenize([p.sequence for p in test], model.config.max_sequence_length)[0]).numpy()
    head_top = [model.config.compartment_classes[int(np.argmax(h))] for h in head]
    truth = [label3(p) for p in test]
    return {"n_test_proteins": len(test), "n_train_proteins": len(train), "majority_class": majority,
            "majority_accuracy": float(np.mean([majority in t for t in truth])),
            "image_accuracy": float(np.mean([top in t for top, t in zip(image_top, truth)])),
            "image_accuracy_unmixed": float(np.mean([top in t for top, t in zip(image_top_unmixed, truth)])),
            "head_accuracy": float(np.mean([top in t for top, t in zip(head_top, truth)]))}


def samplers(model, cells, sequences, true_masks, args):
    rows = []
    n = min(args.samplers_compare, len(cells))
    for sampler, steps in (("ddim", 100), ("dpmsolver", 20), ("dpmsolver", 10), ("dpmsolver", 5)):
        t0 = time.perf_counter()
        images, nfe = generate(model, cells[:n], sequences[:n], args, seed=3, sampler=sampler, steps=steps)
        seconds = (time.perf_counter() - t0) / n
        rows.append({"sampler": sampler, "steps": steps, "nfe": nfe, "seconds_per_image": seconds,
                     "iou": float(np.nanmean(iou_vs_truth(images, true_masks[:n]))),
                     "fidelity": float(np.nanmean(localization_fidelity(images, true_masks[:n])))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="celldiff-tiny")
    parser.add_argument("--synthetic", type=int, default=96)
    parser.add_argument("--real", default="all")
    parser.add_argument("--sampler", default="dpmsolver")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=48)
    parser.add_argument("--placement", default="soft", help="soft | sample | top (bottleneck models)")
    parser.add_argument("--samplers-compare", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="Also write the results as JSON here.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_celldiff(args.model)
    report = {"settings": vars(args)}
    report["synthetic"], cells, sequences, masks = synthetic(model, args)
    print(json.dumps({"synthetic": report["synthetic"]}, indent=1), flush=True)
    if OPENCELL.is_file() and args.real != "0":
        report["real_opencell"] = real(model, args)
        print(json.dumps({"real_opencell": report["real_opencell"]}, indent=1), flush=True)
    if args.samplers_compare:
        report["samplers"] = samplers(model, cells, sequences, masks, args)
        print(json.dumps({"samplers": report["samplers"]}, indent=1), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
