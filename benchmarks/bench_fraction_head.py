"""Do a generative model's sequence heads read real biology? Level-3 top-1 of each head on held-out real proteins.

    python benchmarks/bench_fraction_head.py --model latent-tiny --model RUN [--corpus ../shared/data]
        [--write-exclusions bench_opencell_test.fasta] [--out heads.json]

For every ``--model`` (bundled name or directory; CELL-Diff, latent diffusion or CELL-E 2) and each of its heads
(:func:`locscope.training.fraction_head.model_heads`: the fraction head whose distribution conditions the image path,
the compartment head; CELL-E 2's summary fraction head), the head's distribution summed into level-3 classes is
scored by its top class (right when it is one of the protein's level-3 classes), and by level-3 macro average
precision, on:

- ``corpus human test``: the drawable human proteins of the corpus' held-out ``test`` split
  (:func:`locscope.io.corpus.load_corpus`, :func:`locscope.synth.labelled.corpus_annotated_proteins`);
- ``simulator grammar``: ``bench_faithful.py``'s 200 held-out grammar proteins (held-out motif variants, the same
  random draws), each with one true level-3 class: the largest summed fraction the simulator's grammar gives it
  (the heads must not forget the simulator grammar the image path was trained on);
- ``opencell bench``: the real-protein set of ``bench_faithful.py`` (OpenCell proteins whose
  ``split_by_protein(seed=0)`` is ``test``, the split the bundled generators' training stores hold out), and its part
  outside the corpus ``train`` split.

``--write-exclusions`` writes that OpenCell set as FASTA, to pass to ``locscope train fraction-head --exclude`` so
refitted heads never see it (89 of its proteins sit in the corpus train split).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from locscope.data import ontology
from locscope.io.corpus import load_corpus
from locscope.metrics.sequence import multilabel_scores
from locscope.models import hub
from locscope.synth.labelled import corpus_annotated_proteins
from locscope.training.fraction_head import FAMILIES, embed, head_probabilities, level3_matrix, level3_top1, \
    model_heads
from locscope.utils.atomic import write_json, write_text
from locscope.utils.cpu import machine_description

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_faithful import heldout_grammar_sequences, opencell_proteins  # noqa: E402  (the same held-out sets)


def grammar_proteins(n: int = 200) -> tuple[list[str], list[set[str]]]:
    """``bench_faithful.py``'s held-out grammar proteins and the level-3 class of their largest summed fraction."""
    from locscope.synth.grammar import localize_sequence

    sequences, truth = [], []
    for sequence in heldout_grammar_sequences(n):
        level3: dict[str, float] = {}
        for name, value in localize_sequence(sequence).compartments.items():
            level3[ontology.to_level3(name)] = level3.get(ontology.to_level3(name), 0.0) + value
        sequences.append(sequence)
        truth.append({max(level3, key=level3.get)})
    return sequences, truth


def scores(probabilities: np.ndarray, classes, level: str, truth: list[set[str]]) -> dict:
    """Level-3 top-1 and macro AP of a head's distribution (classes without a positive left out of the AP)."""
    matrix, names = level3_matrix(classes, level)
    level3 = probabilities @ matrix
    targets = np.array([[name in t for name in names] for t in truth])
    present = targets.sum(0) > 0
    ap = multilabel_scores(targets[:, present], level3[:, present])["macro_ap"]
    return {"n": len(truth), "level3_top1": level3_top1(probabilities, classes, level, truth), "level3_macro_ap": ap}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="Bundled name or model directory; repeat.")
    parser.add_argument("--corpus", default="../shared/data", type=Path)
    parser.add_argument("--write-exclusions", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_description(), flush=True)
    corpus = load_corpus(args.corpus)
    split_of = {p.sequence: p.split for p in corpus.proteins}
    bench = opencell_proteins(path=args.corpus / "localization_sequences" / "opencell_raw.csv")
    if args.write_exclusions:
        write_text(args.write_exclusions, "".join(f">{p.id}\n{p.sequence}\n" for p in bench))
        print(f"wrote {len(bench)} proteins to {args.write_exclusions}", flush=True)
    outside = [p for p in bench if split_of.get(p.sequence) != "train"]
    sets = {"corpus human test": corpus_annotated_proteins(corpus.subset("test", human=True)),
            "opencell bench": bench, "opencell bench outside corpus train": outside}
    grammar_sequences, grammar_truth = grammar_proteins()
    inputs_of = {name: ([p.sequence for p in proteins], [{ontology.to_level3(c) for c in p.level1} for p in proteins])
                 for name, proteins in sets.items()}  # level-3 truth as bench_faithful.py's real part
    inputs_of["simulator grammar"] = grammar_sequences, grammar_truth
    report = {"machine": machine_description(), "sets": {k: len(v[0]) for k, v in inputs_of.items()}, "models": {}}
    for name in args.model:
        ref = hub.resolve(name, families=FAMILIES)
        model = ref.load("cpu")
        heads, inputs = model_heads(model, ref.family)
        started = time.process_time()
        results = {}
        for set_name, (sequences, truth) in inputs_of.items():
            features = embed(inputs, sequences, 32, progress=False)
            for head in heads:
                results.setdefault(head.name, {})[set_name] = scores(head_probabilities(head.module, features),
                                                                     head.classes, head.level, truth)
        report["models"][name] = {"family": ref.family, "heads": results,
                                  "cpu_seconds": time.process_time() - started}
        for head_name, per_set in results.items():
            for set_name, r in per_set.items():
                print(f"{name:40s} {head_name:26s} {set_name:38s} n={r['n']:5d} top-1 {r['level3_top1']:.3f} "
                      f"macro-AP {r['level3_macro_ap']:.3f}", flush=True)
    if args.out:
        write_json(args.out, report)


if __name__ == "__main__":
    main()
