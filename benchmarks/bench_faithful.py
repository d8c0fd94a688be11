"""Does a generator draw the protein where it belongs? Right level-3 compartment per read-out and per compartment.

    python benchmarks/bench_faithful.py [--model celldiff-tiny] [--n 200] [--real all] [--real-corpus 300]
                                         [--out faithful.json]

``--model`` is a CELL-Diff or a latent diffusion model (``latent-tiny``: give ``--guidance 3``, its trained default).

On held-out simulator proteins (grammar proteins with HELD-OUT motif variants, fresh cells) the generator runs three
ways: conditioned on the cell's TRUE compartment fractions (the image path alone), on the true sequence, and on a
shuffled sequence (control). Two references are scored the same way: the simulator's own image of the cell, and an
"oracle" generator: the simulator re-run on the same cell with the same landmarks (nucleus, ER, microtubules and what
they show: nucleoli, nuclear envelope, centrosome, the cell's rim) but the compartments the landmarks do NOT determine
(mitochondria, vesicles and other puncta, speckles, nuclear bodies, actin, intermediate filaments, the Golgi ribbon,
lipid droplets) drawn anew. That is the best a landmark-conditioned generator can do.

Read-outs of "right compartment" (the true class: the level-3 class with the largest summed true fraction):

- ``classifier``: the compartment read-out classifier (``compartment-readout``, trained on simulated cells);
- ``unmixed``: non-negative least squares against THIS cell's compartment patterns (exact for the simulator's image,
  but it asks a generator for the very pixels of this cell's mitochondria);
- ``masks``: largest intensity share under the cell's compartment masks.

``--ablate-layout`` (models with the layout prior) adds a run on the true fractions whose layout input channel is
blanked (the background a dropped condition gives), so the fractions reach the image only through the time embedding.
Per compartment: classifier accuracy among cells whose largest true level-1 compartment is a thin or punctate one
(plasma membrane, microtubules, nucleoli, vesicles, mitochondria) or a broad one. Real proteins: the OpenCell proteins
of the store's test split in label-faithful simulator cells (never trained on by a model trained on an OpenCell
store; a corpus-trained model saw 89 of the 131 in its corpus training split), and human proteins of the corpus's
homology-aware test split (SCL2205 held-out, DeepLoc 1.0, OpenCell test clusters; never trained on by either), each
generated from the true sequence, a shuffled sequence (control) and the TRUE annotation fractions (the image path
alone), with the fraction head's own answer (no image) and the simulator's image as references, per level-3 class.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_celldiff_fidelity import OPENCELL, fraction_vectors, generate, top_level3, top_level3_unmixed  # noqa: E402

import locscope.synth.render as render  # noqa: E402
from locscope.data import ontology  # noqa: E402
from locscope.metrics.truth import iou_vs_truth, localization_fidelity, true_protein_mask  # noqa: E402
from locscope.pipelines.generate import load_generator  # noqa: E402
from locscope.pipelines.readout import classify_level3, compartment_basis, load_readout  # noqa: E402
from locscope.synth import SimulatorConfig, render_cell, simulate_cell  # noqa: E402
from locscope.synth.grammar import grammar_targets, random_protein  # noqa: E402
from locscope.synth.protein import place_protein  # noqa: E402
from locscope.training.common import derangement  # noqa: E402
from locscope.training.readout_module import level3_targets  # noqa: E402
from locscope.models.readout import LEVEL3_CLASSES  # noqa: E402
from locscope.utils.cpu import machine_description  # noqa: E402

#: Compartments a landmark image shows (nucleus stain: nucleus, nucleoli; ER stain: ER, nuclear envelope;
#: tubulin: microtubules, centrosome; the cell's extent: cytosol, plasma membrane). The oracle redraws the others.
DETERMINED = ("nucleoplasm", "nucleoli", "nuclear-membrane", "endoplasmic-reticulum", "microtubules", "centrosome",
              "cytosol", "plasma-membrane")
GROUPS = {"plasma-membrane": ("plasma-membrane",), "microtubules": ("microtubules",),
          "nucleoli": ("nucleoli", "nucleoli-fibrillar-center"),
          "vesicles": ("vesicles", "endosomes", "lysosomes", "peroxisomes", "lipid-droplets"),
          "mitochondria": ("mitochondria",), "nucleus": ("nucleoplasm", "nuclear-speckles", "nuclear-bodies",
                                                          "nuclear-membrane"),
          "cytosol": ("cytosol",), "er-golgi": ("endoplasmic-reticulum", "golgi-apparatus"),
          "other cytoskeleton": ("actin-filaments", "intermediate-filaments", "centrosome", "cytoskeleton")}
LANDMARKS = ("nucleus", "er", "microtubules")


def redrawn_cell(cfg: SimulatorConfig, seed: int, alternative_seed: int):
    """The cell of ``seed`` with identical landmarks but the undetermined compartments drawn from another generator."""
    original = render.build_compartments
    other_rng = np.random.default_rng(alternative_seed)

    def build(frame, rng, perturbation):
        comps = original(frame, rng, perturbation)  # consumes the cell's own draws: landmarks stay identical
        other = original(frame, other_rng, perturbation)
        return {k: (v if k in DETERMINED else other[k]) for k, v in comps.items()}

    with mock.patch.object(render, "build_compartments", build):
        return render_cell(cfg, seed=seed)


def truth_level3(cells) -> list[str]:
    """Largest summed true level-1 fraction per level-3 class, per simulated cell."""
    names = ontology.SIMULATOR_COMPARTMENTS
    fractions = np.array([[c.compartments.get(n, 0.0) for n in names] for c in cells], np.float32)
    return [LEVEL3_CLASSES[i] for i in level3_targets(fractions, names, LEVEL3_CLASSES)]


def group_of(cell) -> str:
    top = max(cell.compartments, key=cell.compartments.get)
    return next(g for g, members in GROUPS.items() if top in members)


def score(images, cells, bases, masks, truth, readout, groups) -> dict:
    landmarks = np.stack([[c.cell.images[n] for n in LANDMARKS] for c in cells])
    drawn = classify_level3(readout, images, landmarks, LANDMARKS).argmax(1)
    classes = readout.config.classes
    right = np.array([classes[d] == t for d, t in zip(drawn, truth)])
    out = {"right_classifier": float(right.mean()),
           "right_unmixed": float(np.mean([top_level3_unmixed(im, b) == t for im, b, t in zip(images, bases, truth)])),
           "right_masks": float(np.mean([top_level3(im, c.cell.masks) == t for im, c, t in zip(images, cells, truth)])),
           "iou": float(np.nanmean(iou_vs_truth(images, masks))),
           "fidelity": float(np.nanmean(localization_fidelity(images, masks)))}
    out["per_compartment_classifier"] = {g: [int(right[groups == g].sum()), int((groups == g).sum())]
                                         for g in GROUPS if (groups == g).any()}
    return out


def heldout_grammar_sequences(n: int) -> list[str]:
    """The ``n`` held-out grammar proteins of the simulator part (held-out motif variants, 200 residues, fixed draws;
    ``bench_fraction_head.py`` scores the heads on the same proteins)."""
    rng = np.random.default_rng(12345)
    targets = grammar_targets()
    return [random_protein(targets[int(rng.integers(len(targets)))], rng, length=200, split="heldout")[0]
            for _ in range(n)]


def synthetic(model, readout, args) -> dict:
    size = model.config.image_size
    cfg = SimulatorConfig(size=size)
    sequences = heldout_grammar_sequences(args.n)
    cells, oracle = [], []
    for i, seq in enumerate(sequences):
        sim = simulate_cell(cfg, sequence=seq, seed=900_000 + i)
        cells.append(sim)
        oracle.append(place_protein(redrawn_cell(cfg, 900_000 + i, 5_000_000 + i), sim.compartments, seed=i))
    truth = truth_level3(cells)
    groups = np.array([group_of(c) for c in cells])
    masks = np.stack([true_protein_mask(c.cell.masks, list(c.compartments)) for c in cells])
    bases = [compartment_basis(c.cell, cfg) for c in cells]
    shuffled = [sequences[j] for j in derangement(len(sequences), 1)]
    rows = {"simulator image (reference)": np.stack([c.protein for c in cells]),
            "oracle: same landmarks, undetermined compartments redrawn": np.stack(oracle)}
    timing = {}
    runs = [("generated, true sequence", sequences, sequence_fractions(sequences, args)),
            ("generated, shuffled sequence", shuffled, sequence_fractions(shuffled, args))]
    if model.config.fraction_classes:
        runs.insert(0, ("generated, TRUE fractions", sequences, fraction_vectors(model, cells)))
    if getattr(model.config, "layout_prior", False) and args.ablate_layout:
        runs.append(("generated, TRUE fractions, layout channel blanked", sequences, fraction_vectors(model, cells)))
    for name, seqs, fractions in runs:
        start = time.perf_counter()
        if name.endswith("layout channel blanked"):  # the expected image of a dropped condition: background only
            mixer = getattr(model, "denoiser", model)  # a latent diffusion model mixes the maps in its denoiser
            original = mixer.mix_layout
            with mock.patch.object(mixer, "mix_layout", lambda maps, fr: original(maps, torch.zeros_like(fr))):
                rows[name], nfe = generate(model, cells, seqs, args, seed=7, fractions=fractions)
        else:
            rows[name], nfe = generate(model, cells, seqs, args, seed=7, fractions=fractions)
        timing[name] = {"seconds_per_image": (time.perf_counter() - start) / len(cells), "nfe": nfe}
    results = {name: score(images, cells, bases, masks, truth, readout, groups) for name, images in rows.items()}
    for name, t in timing.items():
        results[name].update(t)
    return {"n": len(cells), "image_size": size, "truth_counts": {g: int((groups == g).sum()) for g in GROUPS},
            "rows": results}


def opencell_proteins(limit: str = "all", path: Path = OPENCELL) -> list:
    """The OpenCell proteins of the training store's test split (``split_by_protein(seed=0)``: never trained on by a
    model whose store was built from ``--sequences opencell_raw.csv``; a corpus-trained model saw some of them), the
    first ``limit`` of them (``'all'``)."""
    from locscope.data.splits import split_by_protein
    from locscope.synth.labelled import read_annotated_proteins

    proteins = read_annotated_proteins(path)
    splits = split_by_protein([p.id for p in proteins], seed=0)
    test = [p for p, s in zip(proteins, splits) if s == "test"]
    return test if limit == "all" else test[: int(limit)]


def corpus_proteins(args) -> list:
    """Human proteins of the corpus's homology-aware test split (SCL2205 held-out, DeepLoc 1.0, OpenCell test
    clusters; ``--real-split val`` for its validation split, to choose settings on), label-faithfully drawable;
    ``--real-corpus`` of them in a seeded random order (all with ``all``)."""
    from locscope.io.corpus import load_corpus
    from locscope.synth.labelled import corpus_annotated_proteins

    proteins = corpus_annotated_proteins(load_corpus(OPENCELL.parents[1]).subset(args.real_split, human=True))
    order = np.random.default_rng(2024).permutation(len(proteins))
    if args.real_corpus != "all":
        order = order[: int(args.real_corpus)]
    return [proteins[i] for i in order]


def real(model, readout, proteins, args, seed: int = 800_000) -> dict:
    """Right level-3 compartment of real proteins in label-faithful simulator cells: generated from the true sequence,
    a shuffled sequence (control) and the TRUE annotation fractions (the image path alone), the fraction head's own
    answer (sequence only, no image) and the simulator's image (reference); per annotated level-3 class."""
    cfg = SimulatorConfig(size=model.config.image_size)
    cells = [simulate_cell(cfg, sequence=p.sequence, compartments=p.compartments, seed=seed + i)
             for i, p in enumerate(proteins)]
    truth = [{ontology.to_level3(c) for c in p.level1} for p in proteins]
    landmarks = np.stack([[c.cell.images[n] for n in LANDMARKS] for c in cells])
    sequences = [p.sequence for p in proteins]
    shuffled = [sequences[j] for j in derangement(len(sequences), 2)]
    classes = readout.config.classes
    out = {"n": len(proteins)}
    condition = sequence_fractions(sequences, args)
    runs = [("true sequence", sequences, condition),
            ("shuffled sequence", shuffled, sequence_fractions(shuffled, args))]
    if model.config.fraction_classes:
        runs.append(("TRUE fractions", sequences, fraction_vectors(model, cells)))
    runs.append(("simulator image (reference)", None, None))
    per_class = {}
    for name, seqs, fractions in runs:
        if seqs is None:
            images = np.stack([c.protein for c in cells])
        else:
            images = generate(model, cells, seqs, args, seed=11, fractions=fractions)[0]
        drawn = classify_level3(readout, images, landmarks, LANDMARKS).argmax(1)
        right = np.array([classes[d] in t for d, t in zip(drawn, truth)])
        out[name] = float(right.mean())
        per_class[name] = {c: [int(right[[c in t for t in truth]].sum()), int(sum(c in t for t in truth))]
                           for c in classes if any(c in t for t in truth)}
    if model.config.fraction_classes:
        head = fraction_head_level3(model, sequences)
        out["fraction head alone (no image)"] = float(np.mean([h in t for h, t in zip(head, truth)]))
    if condition is not None:
        drawn = level3_of(condition, model.config.fraction_classes)
        out["condition alone (no image)"] = float(np.mean([h in t for h, t in zip(drawn, truth)]))
    out["per_class"] = per_class
    return out


def fraction_head_level3(model, sequences) -> list[str]:
    """The level-3 class with the largest summed fraction-head probability, per sequence (no image)."""
    from locscope.pipelines.condition import head_fractions

    return level3_of(head_fractions(model, sequences), model.config.fraction_classes)


def level3_of(fractions: np.ndarray, classes) -> list[str]:
    """The level-3 class with the largest summed level-1 fraction, per row."""
    return [LEVEL3_CLASSES[i] for i in level3_targets(fractions, classes, LEVEL3_CLASSES)]


def sequence_fractions(sequences, args):
    """The condition ``generate`` gives the model for these sequences when it defers to the localizer
    (``--condition auto`` and a ``condition_prior.json`` in the model folder), else None (the model's own head)."""
    conditioner = getattr(args, "conditioner", None)
    if conditioner is None or conditioner.localizer is None:
        return None
    return conditioner(sequences)[0]


def synthetic_table(synthetic: dict) -> list[str]:
    """The synthetic rows as markdown table lines (right compartment per read-out, IoU, fidelity, per compartment)."""
    groups = [g for g in GROUPS if synthetic["truth_counts"].get(g)]
    lines = ["| | classifier | unmixed | masks | IoU | fidelity | " + " | ".join(groups) + " |",
             "|" + "---|" * (6 + len(groups))]
    for name, row in synthetic["rows"].items():
        per = row["per_compartment_classifier"]
        lines.append(f"| {name} | {row['right_classifier']:.1%} | {row['right_unmixed']:.1%} | {row['right_masks']:.1%}"
                     f" | {row['iou']:.3f} | {row['fidelity']:.3f} | "
                     + " | ".join(f"{per[g][0]}/{per[g][1]}" for g in groups) + " |")
    return lines


def markdown(report: dict) -> str:
    """The synthetic table and one line per real-protein set."""
    lines = synthetic_table(report["synthetic"]) if "synthetic" in report else []
    for key, title in (("real_opencell", "Held-out real OpenCell proteins"),
                       ("real_corpus", "Held-out real human corpus proteins")):
        real = report.get(key)
        if real:
            rows = ", ".join(f"{name} {value:.1%}" for name, value in real.items() if isinstance(value, float))
            lines.append(f"\n{title} (n = {real['n']}): {rows}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="celldiff-tiny")
    parser.add_argument("--readout", default="compartment-readout")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--real", default="all", help="OpenCell test-split proteins: how many (all, or 0 for none).")
    parser.add_argument("--real-corpus", default="300",
                        help="Human corpus test-split proteins: how many (all, or 0 for none).")
    parser.add_argument("--real-split", default="test", choices=("test", "val"),
                        help="The corpus split of --real-corpus (val: for choosing settings).")
    parser.add_argument("--sampler", default="dpmsolver")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--placement", default=None, choices=("soft", "sample", "top"),
                        help="Default: as generate (the model folder's condition_prior.json, else soft).")
    parser.add_argument("--condition", default="auto", choices=("auto", "head"),
                        help="auto: condition as generate does (the model folder's condition_prior.json, if any); "
                             "head: the fraction head alone.")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ablate-layout", action="store_true",
                        help="Layout-prior models: also run on the true fractions with the layout channel blanked.")
    parser.add_argument("--out", default=None, help="Also write the results as JSON here.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_generator(args.model)
    args.conditioner = None
    if model.config.fraction_classes:
        from locscope.models import hub
        from locscope.pipelines.condition import sequence_condition

        directory = hub.resolve(args.model, families=("celldiff", "latent")).directory
        args.conditioner = sequence_condition(model, directory, args.condition)
        if args.placement is None and args.conditioner.prior is not None:
            args.placement = args.conditioner.prior.placement
        print("condition:", args.conditioner.describe(), flush=True)
    args.placement = args.placement or "soft"
    print("placement:", args.placement, flush=True)
    readout = load_readout(args.readout)
    if readout is None:
        raise SystemExit(f"read-out classifier {args.readout!r} not found")
    report = {"settings": {k: v for k, v in vars(args).items() if k != "conditioner"}, "cpu": machine_description(),
              "condition": None if args.conditioner is None else args.conditioner.describe()}
    print(report["cpu"], flush=True)
    if args.n > 0:
        report["synthetic"] = synthetic(model, readout, args)
        print(json.dumps(report["synthetic"], indent=1), flush=True)
    if OPENCELL.is_file() and args.real != "0":
        report["real_opencell"] = real(model, readout, opencell_proteins(args.real), args)
        print(json.dumps(report["real_opencell"], indent=1), flush=True)
    if OPENCELL.is_file() and args.real_corpus != "0":
        report["real_corpus"] = real(model, readout, corpus_proteins(args), args, seed=850_000)
        print(json.dumps(report["real_corpus"], indent=1), flush=True)
    print(markdown(report), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
