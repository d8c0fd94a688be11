"""Benchmark of ``locscope design / localize / explain`` on a trained CELL-Diff model (prints measured numbers).

1. localize: level-3 macro-AP and F1 on the held-out real OpenCell proteins (the CELL-Diff training store's protein
   split of ``opencell_raw.csv``: ``split_by_protein`` with the store's seed; ``test`` proteins, threshold tuned on
   ``val``), for the image / head / combined methods, next to a majority-class and a composition-only baseline trained
   on the ``train`` proteins.
2. design: sequences designed from held-out simulator images (grammar proteins with held-out motif variants, rendered in
   fresh cells) land in the right level-3 compartment, measured (a) by generating their images in standard cells and
   (b) by the simulator's rule grammar applied to the designed sequence. Variants ``proposer/mode/decoder``: proposer
   ``designer`` (the compartment-conditioned sequence designer; in image mode conditioned on the compartment CELL-Diff
   reads off the image as a diffusion classifier, ``image_target_distribution``) or ``celldiff`` (CELL-Diff's
   masked-residue head conditioned on the image); mode ``image`` (``design --image``) or ``target`` (``design
   --target <the item's compartment>``); decoder one residue per pass (reference) or parallel: forward passes per
   designed sequence and seconds per candidate. ``--refine-rounds R`` adds head-guided evolution to every variant.
3. explain: AUROC of the per-residue attribution (glycine-window scan) vs the true motif positions of held-out simulator
   proteins; the grammar itself as the scorer gives the method's ceiling.

Usage::

    python benchmarks/bench_design_localize.py --model src/locscope/assets/models/celldiff-tiny --out bench.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from locscope.data import ontology
from locscope.data.splits import split_by_protein
from locscope.metrics.sequence import multilabel_scores, multilabel_targets
from locscope.pipelines.baselines import CompositionBaseline, MajorityBaseline
from locscope.pipelines.design import (
    decode_candidates, image_similarity_scores, image_target_distribution, refine_candidates, target_conditioning,
    target_fractions,
)
from locscope.pipelines.explain import mutagenesis_scan
from locscope.pipelines.generate import load_celldiff
from locscope.pipelines.localize import LocalizationPredictor
from locscope.pipelines.readout import LEVEL3_CLASSES, level_probabilities
from locscope.synth import COMPARTMENTS, SimulatorConfig, render_cell, place_protein
from locscope.synth.grammar import localize_sequence, random_protein
from locscope.synth.labelled import read_annotated_proteins

OPENCELL = Path(__file__).resolve().parents[2] / "shared" / "data" / "localization_sequences" / "opencell_raw.csv"
DESIGN_TARGETS = ("nucleoplasm", "mitochondria", "plasma-membrane", "endoplasmic-reticulum", "cytosol", "nucleoli")


def level3_of(level1: list[str]) -> list[str]:
    return sorted({ontology.to_level3(c) for c in level1 if c != "plastid"} - {"plastid"})


def opencell_splits(table: Path, seed: int) -> dict[str, list]:
    proteins = read_annotated_proteins(table)
    splits = split_by_protein([p.id for p in proteins], seed=seed)
    return {name: [p for p, s in zip(proteins, splits) if s == name] for name in ("train", "val", "test")}


def best_threshold(truth: np.ndarray, scores: np.ndarray) -> float:
    """The threshold in 0.05..0.95 maximising macro-F1 on (validation) data."""
    grid = np.arange(0.05, 0.96, 0.05)
    return float(grid[int(np.argmax([multilabel_scores(truth, scores, t)["macro_f1"] for t in grid]))])


def bench_localize(model, args) -> dict:
    splits = opencell_splits(args.opencell, args.split_seed)
    truth = {k: multilabel_targets([level3_of(p.level1) for p in v], LEVEL3_CLASSES) for k, v in splits.items()}
    seqs = {k: [p.sequence for p in v] for k, v in splits.items()}
    if args.max_proteins:
        for k in ("val", "test"):
            seqs[k], truth[k] = seqs[k][:args.max_proteins], truth[k][:args.max_proteins]
    results = {"n_train": len(seqs["train"]), "n_val": len(seqs["val"]), "n_test": len(seqs["test"]),
               "split_seed": args.split_seed}

    def report(name: str, val_scores: np.ndarray, test_scores: np.ndarray, seconds: float | None = None) -> None:
        threshold = best_threshold(truth["val"], val_scores)
        at_half = multilabel_scores(truth["test"], test_scores, 0.5)
        tuned = multilabel_scores(truth["test"], test_scores, threshold)
        top1 = float(np.mean(truth["test"][np.arange(len(test_scores)), test_scores.argmax(1)]))
        results[name] = {"macro_ap": at_half["macro_ap"], "micro_ap": at_half["micro_ap"],
                         "macro_f1@0.5": at_half["macro_f1"], "macro_f1@val_threshold": tuned["macro_f1"],
                         "val_threshold": threshold, "top1_in_labels": top1,
                         "seconds_per_protein": seconds}
        print(f"  {name:12s} macro-AP {at_half['macro_ap']:.3f}  macro-F1@0.5 {at_half['macro_f1']:.3f}  "
              f"macro-F1@{threshold:.2f} {tuned['macro_f1']:.3f}  top-1 in labels {top1:.3f}"
              + (f"  {seconds:.2f} s/protein" if seconds else ""), flush=True)

    majority = MajorityBaseline().fit(truth["train"])
    report("majority", majority.predict_proba(seqs["val"]), majority.predict_proba(seqs["test"]))
    composition = CompositionBaseline(C=0.1).fit(seqs["train"], truth["train"])
    report("composition", composition.predict_proba(seqs["val"]), composition.predict_proba(seqs["test"]))
    for method in args.methods:
        predictor = LocalizationPredictor(model, method, args.samples, steps=args.steps, batch_size=args.batch_size,
                                          seed=args.seed)
        start = time.perf_counter()
        test = predictor.predict(seqs["test"], progress=True)
        seconds = (time.perf_counter() - start) / len(seqs["test"])
        val = predictor.predict(seqs["val"], progress=True)
        report(method, val.level3, test.level3, seconds)
    return results


def heldout_images(model, n_per_target: int, seed: int, length: int) -> list[dict]:
    """Simulator proteins with held-out motif variants in fresh cells (seeds never used for training stores)."""
    cfg = SimulatorConfig(size=model.config.image_size)
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n_per_target):
        for t, target in enumerate(DESIGN_TARGETS):
            sequence, motifs = random_protein({target: 1.0}, rng, length=length, split="heldout")
            call = localize_sequence(sequence)
            cell = render_cell(cfg, seed=900_000 + 100 * t + i)
            protein = place_protein(cell, call.compartments, seed=900_000 + 100 * t + i)
            landmarks = np.stack([cell.images[c] for c in model.config.landmark_channels])
            items.append({"target": target, "level3": ontology.to_level3(target), "sequence": sequence,
                          "motifs": motifs, "protein": protein, "landmarks": landmarks})
    return items


def propose(model, designer, item: dict, proposer: str, mode: str, decoder: str, args, seed: int):
    """Candidates for one held-out item, as ``locscope design`` makes them; returns (sequences, passes, the
    compartment the image was read as (image mode with a designer or refinement) or None)."""
    from locscope.encoders.protein import MASK_ID

    template = [MASK_ID] * args.design_length
    shown = goal = None
    if mode == "target":
        protein, landmarks, _ = target_conditioning(model, item["target"], n_cells=4)
        goal = item["target"]
    else:
        protein, landmarks = item["protein"][None], item["landmarks"][None]
        if proposer == "designer" or args.refine_rounds:
            goal = image_target_distribution(model, item["protein"], item["landmarks"], seed=seed)
            shown = model.config.fraction_classes[int(np.argmax(goal))]
    proposal = {}
    if proposer == "designer":
        name = item["target"] if mode == "target" else shown
        proposal = dict(designer=designer, fractions=target_fractions(name, designer.config.fraction_classes)[None],
                        designer_guidance=args.designer_guidance)
    sequences, used = decode_candidates(model, template, protein, landmarks, None, args.candidates, decoder,
                                        args.passes, args.temperature, None, args.candidates, seed, **proposal)
    if args.refine_rounds:
        sequences, refine_passes, _ = refine_candidates(model, sequences, template, goal, protein, landmarks,
                                                        args.refine_rounds, args.refine_fraction, args.passes,
                                                        args.temperature, None, args.candidates, seed, **proposal)
        used += refine_passes
    return sequences, used, shown


def bench_design(model, items: list[dict], args) -> dict:
    from locscope.pipelines.design import load_designer

    designer = load_designer(args.designer) if "designer" in args.proposers else None
    scorer = LocalizationPredictor(model, "image", args.samples, steps=args.steps, batch_size=args.batch_size,
                                   seed=args.seed)
    results = {}
    variants = [(p, "image", d) for p in args.proposers for d in args.decoders]
    variants += [(p, "target", "parallel") for p in args.proposers]
    suffix = f"+refine{args.refine_rounds}" if args.refine_rounds else ""
    for proposer, mode, decoder in variants:
        name = f"{proposer}/{mode}/{decoder}{suffix}"
        by_image, by_grammar, passes, seconds, n = [], [], [], 0.0, 0
        best_image, best_grammar, inferred = [], [], []
        for k, item in enumerate(items):
            start = time.perf_counter()
            sequences, used, shown = propose(model, designer, item, proposer, mode, decoder, args, args.seed + k)
            seconds += time.perf_counter() - start
            if shown is not None:
                inferred.append(ontology.to_level3(shown) == item["level3"])
            n += len(sequences)
            passes.append(used)
            top = scorer.predict(sequences).top("level3")
            by_image += [t == item["level3"] for t in top]
            grammar = [level_probabilities(np.array([localize_sequence(s).compartments.get(c, 0.0)
                                                     for c in COMPARTMENTS]))[0] for s in sequences]
            by_grammar += [LEVEL3_CLASSES[int(np.argmax(g))] == item["level3"] for g in grammar]
            # the design pipeline's ranking: by image similarity (image mode) or the target's share (target mode)
            if mode == "image":
                ranking, _ = image_similarity_scores(model, sequences, item["protein"], item["landmarks"], 2,
                                                     args.seed, args.batch_size, steps=args.steps)
            else:
                ranking = scorer.predict(sequences).level3[:, LEVEL3_CLASSES.index(item["level3"])]
            best = int(np.argmax(ranking))
            best_image.append(top[best] == item["level3"])
            best_grammar.append(LEVEL3_CLASSES[int(np.argmax(grammar[best]))] == item["level3"])
        results[name] = {"right_compartment_by_generated_image": float(np.mean(by_image)),
                         "right_compartment_by_grammar": float(np.mean(by_grammar)),
                         "top_ranked_right_by_generated_image": float(np.mean(best_image)),
                         "top_ranked_right_by_grammar": float(np.mean(best_grammar)),
                         "passes_per_designed_sequence": float(np.mean(passes)),
                         "seconds_per_candidate": seconds / n, "n_designs": n}
        if inferred:  # how often the compartment read off the image is the right level-3 class
            results[name]["image_read_right_level3"] = float(np.mean(inferred))
        print(f"  {name:34s} image {np.mean(by_image):.3f}  grammar {np.mean(by_grammar):.3f}  "
              f"top-ranked: image {np.mean(best_image):.3f} grammar {np.mean(best_grammar):.3f}  "
              f"passes {np.mean(passes):.0f}  {seconds / n * 1000:.1f} ms/candidate"
              + (f"  image read right {np.mean(inferred):.3f}" if inferred else ""), flush=True)
    chance = {t: float(np.mean([it["level3"] == t for it in items])) for t in LEVEL3_CLASSES}
    results["chance_level"] = float(sum(v * v for v in chance.values()))
    return results


def bench_explain(model, items: list[dict], args) -> dict:
    from sklearn.metrics import roc_auc_score

    predictor = LocalizationPredictor(model, args.explain_method, args.samples, steps=args.steps,
                                      batch_size=args.batch_size, seed=args.seed)

    def model_scorer(sequences):
        return predictor.predict(list(sequences)).level3

    def grammar_scorer(sequences):
        shares = np.array([[localize_sequence(s).compartments.get(c, 0.0) for c in COMPARTMENTS] for s in sequences])
        return level_probabilities(shares)[0]

    results = {}
    for name, scorer in (("model", model_scorer), ("grammar-oracle", grammar_scorer)):
        aurocs = []
        start = time.perf_counter()
        for item in items[: args.explain_proteins]:
            truth = np.zeros(len(item["sequence"]), bool)
            for _, s, e in item["motifs"]:
                truth[s:e] = True
            scan = mutagenesis_scan(scorer, item["sequence"], window=args.window, stride=args.stride,
                                    target=item["level3"])
            if truth.all() or not truth.any():
                continue
            aurocs.append(roc_auc_score(truth, scan.attribution))
        results[name] = {"auroc_mean": float(np.mean(aurocs)), "auroc_median": float(np.median(aurocs)),
                         "n_proteins": len(aurocs),
                         "seconds_per_protein": (time.perf_counter() - start) / max(1, len(aurocs))}
        print(f"  {name:15s} attribution AUROC mean {np.mean(aurocs):.3f} median {np.median(aurocs):.3f} "
              f"(n={len(aurocs)})", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="CELL-Diff model dir or bundled name (default celldiff-tiny)")
    parser.add_argument("--opencell", type=Path, default=OPENCELL)
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the training store's protein split")
    parser.add_argument("--max-proteins", type=int, default=0, help="cap val/test proteins (0 = all)")
    parser.add_argument("--methods", nargs="+", default=["head", "image", "combined"])
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--designs-per-target", type=int, default=3)
    parser.add_argument("--design-length", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--decoders", nargs="+", default=["parallel", "one-per-pass"])
    parser.add_argument("--passes", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--proposers", nargs="+", default=["designer", "celldiff"])
    parser.add_argument("--designer", default=None, help="sequence designer dir or bundled name (designer-tiny)")
    parser.add_argument("--designer-guidance", type=float, default=1.0)
    parser.add_argument("--refine-rounds", type=int, default=0, help="head-guided refinement rounds for every variant")
    parser.add_argument("--refine-fraction", type=float, default=0.2)
    parser.add_argument("--explain-proteins", type=int, default=12)
    parser.add_argument("--explain-method", default="combined")
    parser.add_argument("--window", type=int, default=7)
    parser.add_argument("--stride", type=int, default=3)
    parser.add_argument("--parts", nargs="+", default=["localize", "design", "explain"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_celldiff(args.model, "cpu")
    results = {"model": str(args.model or "celldiff-tiny"), "args": {k: str(v) for k, v in vars(args).items()}}
    if "localize" in args.parts:
        print("localize (held-out OpenCell proteins, level 3):", flush=True)
        results["localize"] = bench_localize(model, args)
    items = heldout_images(model, args.designs_per_target, args.seed + 12345, max(150, args.design_length))
    if "design" in args.parts:
        print("design (held-out simulator images):", flush=True)
        results["design"] = bench_design(model, items, args)
    if "explain" in args.parts:
        print("explain (attribution vs true motif positions):", flush=True)
        results["explain"] = bench_explain(model, items, args)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
