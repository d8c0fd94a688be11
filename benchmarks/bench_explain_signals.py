"""Does ``locscope explain`` point at the residues that carry a localization signal? (prints measured numbers)

Ground truth: the literature targeting signals of :data:`locscope.data.signals.PANEL` (nuclear and nucleolar
localisation signals, mitochondrial presequences and anchors, signal peptides, KDEL, CAAX, PTS1, an export signal)
fused to *real* proteins: held-out corpus proteins (``test`` split, never trained on) that the corpus labels as
cytosol only, 150-450 residues, the first ``--carriers`` by accession. The fused residues are the signal, every
other residue is not. For every fusion the glycine-window scan of :func:`locscope.pipelines.explain.mutagenesis_scan`
(``--window``, ``--stride``) explains the signal's level-3 class with the sequence localizer (``--model``, default
the bundled ``localizer-small``) in each of its label styles, and the per-residue attribution is scored against the
signal's residues:

* AUROC: probability that a signal residue gets a higher attribution than a carrier residue (0.5 = chance);
* hit: the strongest segment overlaps the signal.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_explain_signals.py --shared-data ../shared/data --out explain.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from locscope.data import ontology
from locscope.data.signals import PANEL
from locscope.io.corpus import load_corpus
from locscope.pipelines.explain import mutagenesis_scan
from locscope.pipelines.localize import load_localizer
from locscope.utils.cpu import machine_description


def level3_target(level: str, target: str) -> str:
    """The level-3 class a signal's class belongs to (ER and peroxisomes are endomembrane-system)."""
    if level == "level3":
        return target
    if level == "level1":
        return ontology.to_level3(target)
    return {ontology.LEVEL1_TO_LEVEL2[c]: ontology.to_level3(c) for c in ontology.LEVEL1}[target]


def carriers(shared_data: str, count: int, seed: int) -> list:
    corpus = load_corpus(shared_data, seed=seed)
    chosen = [p for p in corpus.subset("test") if p.level3 == ("cytosol",) and 150 <= len(p.sequence) <= 450
              and set(p.sequence) <= set("ACDEFGHIKLMNPQRSTVWY")]
    return sorted(chosen, key=lambda p: p.accession)[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared-data", default="../shared/data")
    parser.add_argument("--model", default=None, help="Localizer directory (default: the bundled localizer-small).")
    parser.add_argument("--carriers", type=int, default=8, help="Real carrier proteins per signal.")
    parser.add_argument("--window", type=int, default=7)
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON file for the results.")
    args = parser.parse_args()
    print(machine_description())
    model = load_localizer(args.model)
    proteins = carriers(args.shared_data, args.carriers, args.seed)
    print(f"{len(proteins)} carriers: {', '.join(p.accession for p in proteins)}")
    results = {"cpu": machine_description(), "carriers": [p.accession for p in proteins]}
    for style in model.config.label_styles:
        results[style] = scan_panel(model, style, proteins, args)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


def scan_panel(model, style: str, proteins: list, args) -> dict:
    """Scan every signal x carrier fusion in one label style; prints and returns the scores."""
    columns = [model.config.level3_classes.index(c) for c in ontology.LEVEL3]

    def score(sequences):
        return model.predict_sequences(list(sequences), style=style)["level3"][:, columns]

    rows, started, evaluations = [], time.process_time(), 0
    for signal in PANEL:
        target = level3_target(signal.level, signal.target)
        for protein in proteins:
            fusion = signal.fuse(protein.sequence)
            truth = np.zeros(len(fusion), bool)
            truth[:len(signal.n_terminal)] = True
            if signal.c_terminal:
                truth[len(fusion) - len(signal.c_terminal):] = True
            scan = mutagenesis_scan(score, fusion, window=args.window, stride=args.stride, classes=ontology.LEVEL3,
                                    target=target)
            evaluations += len(scan.mutants) + 1
            segments = scan.segments(1, min_effect=-np.inf)
            top = segments[0] if segments else None
            hit = bool(top and truth[top.start - 1:top.end].any())
            rows.append({"signal": signal.name, "carrier": protein.accession, "target": target,
                         "auroc": float(roc_auc_score(truth, scan.attribution)), "hit": hit,
                         "wild_type": float(scan.wild_type[scan.target])})
    cpu = time.process_time() - started
    print(f"\nlabel style {style}\n{'signal':40s} {'class':20s} {'AUROC':>6s} {'hits':>5s}")
    per_signal = {}
    for signal in PANEL:
        mine = [r for r in rows if r["signal"] == signal.name]
        per_signal[signal.name] = {"auroc": float(np.mean([r["auroc"] for r in mine])),
                                   "hits": sum(r["hit"] for r in mine), "n": len(mine), "target": mine[0]["target"]}
        s = per_signal[signal.name]
        print(f"{signal.name:40s} {s['target']:20s} {s['auroc']:6.3f} {s['hits']:>2d}/{s['n']}")
    aurocs = np.array([r["auroc"] for r in rows])
    summary = {"fusions": len(rows), "mean_auroc": float(aurocs.mean()), "median_auroc": float(np.median(aurocs)),
               "hit_rate": float(np.mean([r["hit"] for r in rows])), "network_evaluations": evaluations,
               "cpu_seconds": cpu, "window": args.window, "stride": args.stride}
    print(f"\n{len(rows)} fusions: mean AUROC {summary['mean_auroc']:.3f} (median {summary['median_auroc']:.3f}); "
          f"strongest segment on the signal in {summary['hit_rate']:.0%}; {evaluations} sequences scored in "
          f"{cpu:.1f} CPU s")
    return {"summary": summary, "per_signal": per_signal, "rows": rows}


if __name__ == "__main__":
    main()
