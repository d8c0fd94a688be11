"""Benchmark of the sequence localizer on held-out real proteins, beside two baselines (prints measured numbers).

Corpus: :func:`locscope.io.corpus.load_corpus` (SCL2205 from the installed p-scldata + OpenCell + DeepLoc 1.0,
6-mer homology clusters never split). Every predictor is trained on the same ``train`` split:

* ``frequency``: every protein gets the training class frequencies (:class:`MajorityBaseline`);
* ``kmer-lr``: one-vs-rest logistic regression on hashed 1-3-mer counts (:class:`KmerBaseline`);
* ``localizer``: the trained :class:`~locscope.models.localizer.SequenceLocalizer` (``--model``, default the bundled
  ``localizer-small``), each test set read in the label style the model learnt its source in (``source_styles``:
  OpenCell proteins in the ``image`` style of the bundled model, the others in its default style).

Test sets (all in the ``test`` split): the SCL2205 held-out proteins (labels from SCL2205), DeepLoc 1.0 validation
proteins (DeepLoc labels), held-out OpenCell proteins (human, image-based labels incl. nucleoli), the human
proteins of the first two (:func:`locscope.io.corpus.is_human`: neither source names the organism; the accessions of
the Homo sapiens annotation package org.Hs.eg.db) alone and pooled, and these human proteins with the Human Protein
Atlas' image-based labels instead (:func:`locscope.io.corpus.hpa_labelled`; read in the ``image`` style, the
convention of OpenCell). ``--split val`` scores the validation split the same way instead (SCL2205 eval proteins,
OpenCell validation proteins): the numbers to choose weights on. Scores:
level-3 and level-2 macro / micro average precision, macro F1 and exact-match accuracy at threshold 0.5, over the
classes with at least one positive in the set (:func:`locscope.metrics.sequence.multilabel_scores`), and the
localizer's average precision per level-3 class.

A literature panel of targeting signals fused to EGFP (:mod:`locscope.data.signals`) reports how many raise the
probability of their class. ``--throughput N`` also writes an N-protein FASTA (corpus sequences drawn with replacement) and times
``locscope localize --fasta`` on it in a subprocess (proteins/s, CPU seconds, peak resident memory).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_localizer.py --shared-data ../shared/data --out bench_localizer.json
    OMP_NUM_THREADS=1 python benchmarks/bench_localizer.py --split val --model RUN/model --skip-signals
    python benchmarks/bench_localizer.py --skip-accuracy --throughput 20000 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from locscope.io.corpus import CLASSES, HPA_FILE, hpa_labelled, label_matrix, load_corpus
from locscope.metrics.sequence import average_precision, multilabel_scores
from locscope.pipelines.baselines import KmerBaseline, MajorityBaseline
from locscope.utils.cpu import machine_description

LEVELS = ("level3", "level2")
# set name -> the corpus.subset selections it pools (every selection's proteins read in the style of its source)
EVALUATION_SETS = {
    "test": {
        "SCL2205 held-out": [dict(source="scl2205", source_split="heldout")],
        "SCL2205 held-out, human": [dict(source="scl2205", source_split="heldout", human=True)],
        "DeepLoc 1.0 validation": [dict(source="deeploc1")],
        "DeepLoc 1.0 validation, human": [dict(source="deeploc1", human=True)],
        "SCL2205 + DeepLoc, human": [dict(source="scl2205", source_split="heldout", human=True),
                                     dict(source="deeploc1", human=True)],
        "OpenCell held-out (human)": [dict(source="opencell")],
        "SCL2205 + DeepLoc, human, HPA labels": [dict(source="scl2205", source_split="heldout", human=True, hpa=True),
                                                 dict(source="deeploc1", human=True, hpa=True)],
    },
    "val": {
        "SCL2205 eval": [dict(source="scl2205", source_split="eval")],
        "SCL2205 eval, human": [dict(source="scl2205", source_split="eval", human=True)],
        "OpenCell validation (human)": [dict(source="opencell")],
        "SCL2205 eval, human, HPA labels": [dict(source="scl2205", source_split="eval", human=True, hpa=True)],
    },
}


def scores_on(truth: np.ndarray, known: np.ndarray, probabilities: np.ndarray,
              classes: tuple[str, ...] | None = None) -> dict:
    """Scores over the classes with a positive; with ``classes`` also the average precision of each of them."""
    truth, probabilities = truth[known] > 0, probabilities[known]
    present = truth.sum(0) > 0
    result = multilabel_scores(truth[:, present], probabilities[:, present])
    result.pop("n_classes_without_positives")
    result.update(n=int(known.sum()), classes=int(present.sum()))
    if classes is not None:
        result["per_class_ap"] = {c: {"ap": average_precision(truth[:, j], probabilities[:, j]),
                                      "positives": int(truth[:, j].sum())}
                                  for j, c in enumerate(classes) if present[j]}
    return result


def load_localizer(model_dir: str | None):
    from locscope.pipelines.localize import load_localizer as load

    return load(model_dir)


def localizer_probabilities(model, proteins: list) -> dict[str, np.ndarray]:
    """Probabilities in the corpus' class order, each protein read in the label style the model learnt its source's
    labels in."""
    from locscope.training.localizer_module import own_style_probabilities

    if proteins and proteins[0].source == "hpa" and "image" in model.config.label_styles:
        probabilities = model.predict_sequences([p.sequence for p in proteins], style="image")
    else:
        probabilities = own_style_probabilities(model, proteins)
    # the model's class order -> the corpus order
    return {level: probabilities[level][:, [model.config.classes(level).index(c) for c in CLASSES[level]]]
            for level in LEVELS}


def select(corpus, split: str, shared_data: str, hpa: bool = False, **selection) -> list:
    """``corpus.subset(split, **selection)``; with ``hpa`` the proteins relabelled from the Human Protein Atlas (those
    with an HPA annotation, :func:`locscope.io.corpus.hpa_labelled`), read in the ``image`` style."""
    proteins = corpus.subset(split, **selection)
    return hpa_labelled(proteins, Path(shared_data) / HPA_FILE) if hpa else proteins


def accuracy(args) -> dict:
    corpus = load_corpus(args.shared_data, seed=args.seed)
    train = corpus.subset("train")
    sets = EVALUATION_SETS[args.split]
    tests = {name: [p for selection in selections for p in select(corpus, args.split, args.shared_data, **selection)]
             for name, selections in sets.items()}
    results: dict = {"split": args.split, "train_proteins": len(train),
                     "test_proteins": {k: len(v) for k, v in tests.items()}}
    predictors: dict = {level: {} for level in LEVELS}
    for level in LEVELS if not args.skip_baselines else ():
        truth, known = label_matrix(train, level)
        sequences = [p.sequence for p, k in zip(train, known) if k]
        started = time.process_time()
        kmer = KmerBaseline(C=args.kmer_c, seed=args.seed).fit(sequences, truth[known] > 0)
        predictors[level] = {"frequency": MajorityBaseline().fit(truth[known] > 0), "kmer-lr": kmer}
        results[f"kmer_fit_cpu_seconds_{level}"] = time.process_time() - started
    model = load_localizer(args.model)
    for name, proteins in tests.items():
        sequences = [p.sequence for p in proteins]
        model_probabilities = localizer_probabilities(model, proteins)
        for level in LEVELS:
            truth, known = label_matrix(proteins, level)
            rows = {"localizer": model_probabilities[level]}
            rows.update({k: m.predict_proba(sequences) for k, m in predictors[level].items()})
            for predictor, probabilities in rows.items():
                results.setdefault(name, {}).setdefault(level, {})[predictor] = scores_on(
                    truth, known, probabilities, CLASSES[level] if predictor == "localizer" else None)
    return results


def throughput(args) -> dict:
    corpus = load_corpus(args.shared_data, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    picks = rng.integers(0, len(corpus), args.throughput)
    folder = Path(tempfile.mkdtemp(prefix="bench_localizer_"))
    fasta = folder / "proteome.fasta"
    with open(fasta, "w") as handle:
        for i, index in enumerate(picks):
            handle.write(f">p{i:06d}\n{corpus.proteins[index].sequence}\n")
    residues = int(sum(len(corpus.proteins[i].sequence) for i in picks))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    command = [sys.executable, "-m", "locscope", "localize", "--fasta", str(fasta), "--out", str(folder / "out.csv")]
    if args.model:
        command += ["--model", args.model]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = sum(1 for _ in open(folder / "out.csv")) - 1
    return {"proteins": args.throughput, "residues": residues, "rows_written": lines, "threads": args.threads,
            "wall_seconds": wall, "proteins_per_second": args.throughput / wall, "cpu_seconds": cpu,
            "peak_rss_mb": after.ru_maxrss / 1024.0, "command": " ".join(command[2:])}


def signal_panel(model_dir: str | None) -> dict:
    """Literature targeting signals on EGFP: does the fusion raise the predicted probability of its class? (every
    label style of the model)"""
    from locscope.data.signals import EGFP, PANEL

    model = load_localizer(model_dir)
    out = {}
    for style in model.config.label_styles:
        base = model.predict_sequences([EGFP], style=style)
        fused = model.predict_sequences([signal.fuse() for signal in PANEL], style=style)
        rows = []
        print(f"\nlabel style {style}")
        for i, signal in enumerate(PANEL):
            column = model.config.classes(signal.level).index(signal.target)
            before, after = float(base[signal.level][0, column]), float(fused[signal.level][i, column])
            rows.append({"signal": signal.name, "level": signal.level, "target": signal.target, "reporter": before,
                         "fusion": after, "right_way": after > before})
            print(f"{signal.name:40s} {signal.level}:{signal.target:22s} {before:.3f} -> {after:.3f}"
                  f" {'ok' if after > before else 'WRONG'}")
        print(f"{sum(r['right_way'] for r in rows)}/{len(rows)} signals move EGFP the right way ({style})")
        out[style] = {"rows": rows, "right_way": sum(r["right_way"] for r in rows), "panel": len(rows)}
    return out


def print_table(results: dict) -> None:
    for name in EVALUATION_SETS[results["split"]]:
        for level in LEVELS:
            first = next(iter(results[name][level].values()))
            print(f"\n{name}, {level} (n={first['n']}, classes={first['classes']})")
            print(f"{'predictor':12s} {'macro-AP':>9s} {'micro-AP':>9s} {'macro-F1':>9s} {'exact':>7s}")
            for predictor, s in results[name][level].items():
                print(f"{predictor:12s} {s['macro_ap']:9.3f} {s['micro_ap']:9.3f} {s['macro_f1']:9.3f} "
                      f"{s['exact_match']:7.3f}")
        per_class = results[name]["level3"]["localizer"]["per_class_ap"]
        print("localizer level-3 AP per class: " + ", ".join(
            f"{c} {v['ap']:.3f} ({v['positives']})" for c, v in per_class.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared-data", default="../shared/data")
    parser.add_argument("--model", default=None, help="Localizer directory (default: the bundled localizer-small).")
    parser.add_argument("--kmer-c", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=sorted(EVALUATION_SETS), default="test",
                        help="Score the held-out test sets (default) or the validation split (to choose weights on).")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-signals", action="store_true", help="Leave out the targeting-signal panel.")
    parser.add_argument("--skip-baselines", action="store_true", help="Score the localizer only.")
    parser.add_argument("--throughput", type=int, default=0, help="Proteins in the throughput FASTA (0 = skip).")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the throughput run.")
    parser.add_argument("--out", default=None, help="JSON file for the results.")
    args = parser.parse_args()
    print(machine_description())
    results: dict = {"cpu": machine_description()}
    if not args.skip_accuracy:
        results.update(accuracy(args))
        print_table(results)
    if not args.skip_signals:
        results["signals"] = signal_panel(args.model)
    if args.throughput:
        results["throughput"] = throughput(args)
        print(json.dumps(results["throughput"], indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
