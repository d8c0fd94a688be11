"""Benchmark of the sequence localizer on held-out real proteins, beside two baselines (prints measured numbers).

Corpus: :func:`locscope.io.corpus.load_corpus` (SCL2205 from the installed p-scldata + OpenCell + DeepLoc 1.0,
6-mer homology clusters never split). Every predictor is trained on the same ``train`` split:

* ``frequency``: every protein gets the training class frequencies (:class:`MajorityBaseline`);
* ``kmer-lr``: one-vs-rest logistic regression on hashed 1-3-mer counts (:class:`KmerBaseline`);
* ``localizer``: the trained :class:`~locscope.models.localizer.SequenceLocalizer` (``--model``, default the bundled
  ``localizer-small``), each test set read in the label style the model learnt its source in (``source_styles``:
  OpenCell proteins in the ``image`` style of the bundled model, the others in its default style).

Test sets (all in the ``test`` split): the SCL2205 held-out proteins (labels from SCL2205), DeepLoc 1.0 validation
proteins (DeepLoc labels), held-out OpenCell proteins (human, image-based labels incl. nucleoli). Scores: level-3 and
level-2 macro / micro average precision, macro F1 and exact-match accuracy at threshold 0.5, over the classes with at
least one positive in the set (:func:`locscope.metrics.sequence.multilabel_scores`).

A literature panel of targeting signals fused to EGFP (:mod:`locscope.data.signals`) reports how many raise the
probability of their class. ``--throughput N`` also writes an N-protein FASTA (corpus sequences drawn with replacement) and times
``locscope localize --fasta`` on it in a subprocess (proteins/s, CPU seconds, peak resident memory).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_localizer.py --shared-data ../shared/data --out bench_localizer.json
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

from locscope.io.corpus import CLASSES, label_matrix, load_corpus
from locscope.metrics.sequence import multilabel_scores
from locscope.pipelines.baselines import KmerBaseline, MajorityBaseline
from locscope.utils.cpu import machine_description

LEVELS = ("level3", "level2")
TEST_SETS = {
    "SCL2205 held-out": dict(source="scl2205", source_split="heldout"),
    "DeepLoc 1.0 validation": dict(source="deeploc1"),
    "OpenCell held-out (human)": dict(source="opencell"),
}


def scores_on(truth: np.ndarray, known: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    truth, probabilities = truth[known] > 0, probabilities[known]
    present = truth.sum(0) > 0
    result = multilabel_scores(truth[:, present], probabilities[:, present])
    result.pop("n_classes_without_positives")
    return {**result, "n": int(known.sum()), "classes": int(present.sum())}


def localizer_probabilities(model_dir: str | None, sequences: list[str], source: str) -> dict[str, np.ndarray]:
    """Probabilities in the corpus' class order, from the label style the model learnt ``source``'s labels in."""
    from locscope.pipelines.localize import load_localizer

    model = load_localizer(model_dir)
    probabilities = model.predict_sequences(sequences, style=model.config.style_of(source))
    # the model's class order -> the corpus order
    return {level: probabilities[level][:, [model.config.classes(level).index(c) for c in CLASSES[level]]]
            for level in LEVELS}


def accuracy(args) -> dict:
    corpus = load_corpus(args.shared_data, seed=args.seed)
    train = corpus.subset("train")
    tests = {name: corpus.subset("test", **selection) for name, selection in TEST_SETS.items()}
    results: dict = {"train_proteins": len(train), "test_proteins": {k: len(v) for k, v in tests.items()}}
    predictors = {}
    for level in LEVELS:
        truth, known = label_matrix(train, level)
        sequences = [p.sequence for p, k in zip(train, known) if k]
        started = time.process_time()
        kmer = KmerBaseline(C=args.kmer_c, seed=args.seed).fit(sequences, truth[known] > 0)
        predictors[level] = {"frequency": MajorityBaseline().fit(truth[known] > 0), "kmer-lr": kmer}
        results[f"kmer_fit_cpu_seconds_{level}"] = time.process_time() - started
    for name, proteins in tests.items():
        sequences = [p.sequence for p in proteins]
        model_probabilities = localizer_probabilities(args.model, sequences, TEST_SETS[name]["source"])
        for level in LEVELS:
            truth, known = label_matrix(proteins, level)
            rows = {"localizer": model_probabilities[level]}
            rows.update({k: m.predict_proba(sequences) for k, m in predictors[level].items()})
            for predictor, probabilities in rows.items():
                results.setdefault(name, {}).setdefault(level, {})[predictor] = scores_on(truth, known, probabilities)
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
    from locscope.pipelines.localize import load_localizer

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
    for name in TEST_SETS:
        if name not in results:
            continue
        for level in LEVELS:
            print(f"\n{name}, {level} (n={next(iter(results[name][level].values()))['n']})")
            print(f"{'predictor':12s} {'macro-AP':>9s} {'micro-AP':>9s} {'macro-F1':>9s} {'exact':>7s}")
            for predictor, s in results[name][level].items():
                print(f"{predictor:12s} {s['macro_ap']:9.3f} {s['micro_ap']:9.3f} {s['macro_f1']:9.3f} "
                      f"{s['exact_match']:7.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared-data", default="../shared/data")
    parser.add_argument("--model", default=None, help="Localizer directory (default: the bundled localizer-small).")
    parser.add_argument("--kmer-c", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--throughput", type=int, default=0, help="Proteins in the throughput FASTA (0 = skip).")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the throughput run.")
    parser.add_argument("--out", default=None, help="JSON file for the results.")
    args = parser.parse_args()
    print(machine_description())
    results: dict = {"cpu": machine_description()}
    if not args.skip_accuracy:
        results.update(accuracy(args))
        print_table(results)
    results["signals"] = signal_panel(args.model)
    if args.throughput:
        results["throughput"] = throughput(args)
        print(json.dumps(results["throughput"], indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
