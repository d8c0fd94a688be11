"""CELL-E 2 vs CELL-Diff, side by side on the same held-out proteins and cells; decoding cost; residue infill.

    python benchmarks/bench_celle2.py --celle2 celle2-tiny [--celldiff celldiff-64] [--n 200] [--real all]
                                      [--samples 2] [--infill 64] [--out r.json]
    python benchmarks/bench_celle2.py --base          # celle2-base: parameters, one forward pass at 256 x 256
    python benchmarks/bench_celle2.py --celle2 DIR [DIR ...] --sequence-probe cells64 [--n 256]

Proteins: (1) rule-grammar proteins with HELD-OUT motif variants (never trained on) in fresh simulator cells at the
models' resolution (the proteins and cells of ``bench_faithful.py``: the same seeds); (2) with ``--real``, the
OpenCell proteins of the test split (never trained on) in label-faithful simulator cells. Each protein is generated
with its true sequence and, on the same cell, with another protein's (a derangement: the shuffled-sequence control).
Models: CELL-E 2 with 1 and 8 decoding passes (it sees the nucleus only) and CELL-Diff with its fast solver
(DPM-Solver++, 10 steps, guidance 2; nucleus, ER, microtubules). Two references are scored the same way: the
simulator's image and its median-thresholded binary image (CELL-E 2's training target: the best a model that draws
binary images can reach).

Metrics, averaged over proteins (definitions in ``locscope.metrics.celle2`` / ``locscope.metrics.truth``):
CELL-E 2's own (Nucleus % MAE: |nuclear share of the thresholded generated image - that of the median-thresholded
real image| with the cell's true nucleus mask, averaged over the images with protein pixels; pixel MAE of the binary
images; PDF MAE of the probability map against the min-max real image; SSIM of the [0, 1] images), the share of
CELL-E 2's binary images that are empty (no pixel above 0.5: left out of its Nucleus % MAE), Nucleus % MAE with
every model's first image binarised at its own median (CELL-Diff's images always are; CELL-E 2's decoded image here
too: one procedure for both families), the first two again with the real image (and CELL-Diff's images)
binarised as the CELL-E 2 model's own target (``Celle2Config.protein_threshold``; published: median), IoU of the image with the true protein mask, localization
fidelity (share of intensity in the true compartments) and the right level-3 compartment, read two ways: the
compartment read-out classifier (``compartment-readout``, given the cell's nucleus / ER / microtubule images; for
CELL-E 2 it reads the decoded sample and, separately, the probability map) and the largest intensity share under the
cell's compartment masks. The true class is the level-3 class with the largest summed true fraction (simulator
proteins) or any annotated class (real proteins). Cost: network evaluations per image and CPU / wall seconds per image
(one torch thread; the machine may be shared, so wall times are indicative; CPU seconds count only this process).

Sequence probe (``--sequence-probe STORE``, no generation): does a model's image-token prediction use the sequence?
On ``--n`` validation cells of a training store (evenly spread over the split), the cross-entropy of the cell's
protein-image tokens when all of them are masked (CELL-E 2's one-pass prediction), given the protein's own sequence,
another validation protein's with a different compartment set (a fixed random pairing), or a blank sequence (50 ``X``);
and the same for MaskGIT's cosine-scheduled masking (the training loss). A model that reads the sequence has a lower
cross-entropy with the true sequence than with the shuffled one.

Residue infill (``--infill K``): the EGFP reporter with ``<mask:10>`` at its C terminus (and, separately, its N
terminus after the start methionine) is infilled by CELL-E 2's residue head (``locscope design --model ...
--target nucleus``, K candidates, 4 passes) in each of the real nucleus images of ``../shared/data/celldiff_samples``;
the candidates' nucleus proportion (one-pass threshold images, 4 samples) is compared with the unmodified reporter's
and with a control (the masked positions filled with uniformly random residues). The simulator's motif grammar
(``locscope.synth.grammar.localize_sequence``) gives an independent call: the share of candidates / controls it
sends to the nucleus (nucleoplasm or nucleoli the largest compartment).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_celldiff_fidelity import OPENCELL  # noqa: E402
from bench_faithful import LANDMARKS, truth_level3  # noqa: E402

from locscope.data import ontology  # noqa: E402
from locscope.metrics.celle2 import binary_pixel_mae, nucleus_proportion_error, pdf_mae  # noqa: E402
from locscope.metrics.pixel import ssim  # noqa: E402
from locscope.metrics.threshold import threshold_mask  # noqa: E402
from locscope.metrics.truth import iou_vs_truth, localization_fidelity, true_protein_mask  # noqa: E402
from locscope.pipelines.generate import probability_map  # noqa: E402
from locscope.pipelines.readout import classify_level3, compartment_fractions, load_readout  # noqa: E402
from locscope.synth import SimulatorConfig, simulate_cell  # noqa: E402
from locscope.synth.grammar import grammar_targets, localize_sequence, random_protein  # noqa: E402
from locscope.training.common import derangement  # noqa: E402
from locscope.utils.cpu import machine_description  # noqa: E402
from locscope.utils.sequences import keep_termini  # noqa: E402

NUCLEAR = ("nucleus", "nucleoli")
SAMPLES_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "celldiff_samples"


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


def run_celle2(model, cells, sequences, samples: int, passes: int, seed: int, temperature: float = 1.0):
    """``(decoded images (N, K, H, W) in [0, 1], binary (N, K, H, W), probability (N, H, W), evaluations / image)``.

    Sequences beyond the model's residue limit keep both termini (as the training data)."""
    from locscope.diffusion.celle2_sampler import decode_image_tokens
    from locscope.models.celle2 import normalize_nucleus

    decoded, probability, nfe = [], [], 0
    for i, (cell, sequence) in enumerate(zip(cells, sequences)):
        sequence = keep_termini(sequence, model.config.text_seq_len)
        nucleus = torch.from_numpy(cell.cell.images["nucleus"].astype(np.float32))[None, None]
        with torch.no_grad():
            ids = model.encode_nucleus(normalize_nucleus(nucleus))
            text = model.tokenize([sequence], trim=True).expand(samples, -1)
            sample = decode_image_tokens(model, text, ids.expand(samples, -1), passes=passes,
                                         temperature=temperature, generator=torch.Generator().manual_seed(seed + i))
            decoded.append(model.decode_protein(sample.tokens)[:, 0].numpy())
            probability.append(model.probability_map(sample.probabilities)[:, 0].numpy().mean(0))
        nfe = sample.passes
    decoded = np.stack(decoded)
    return np.clip(decoded, 0, 1), decoded > 0.5, np.stack(probability), nfe


def sequence_probe(model, store_path: str, n: int, seed: int = 0) -> dict:
    """Image-token cross-entropy (all masked / MaskGIT masking) on ``n`` validation cells of a store with the true,
    a shuffled (different compartment set) and a blank sequence (see the module docstring)."""
    import torch.nn.functional as F

    from locscope.data.store import Store
    from locscope.models.celle2 import normalize_nucleus, random_mask, threshold_protein
    from locscope.training.celle2_module import load_celle2_split, pad_tokens

    split = load_celle2_split(Store.open(store_path), "val", model.config, limit=n)
    with torch.no_grad():
        nucleus = model.encode_nucleus(normalize_nucleus(split.nucleus))
        protein = model.encode_protein(threshold_protein(split.protein, model.config.protein_threshold))
    rng = np.random.default_rng(seed)
    partner = []
    for i in range(len(split)):
        others = np.flatnonzero(split.groups != split.groups[i])
        partner.append(int(others[rng.integers(len(others))]) if len(others) else i)
    texts = {"true": pad_tokens(split.tokens), "shuffled": pad_tokens([split.tokens[j] for j in partner]),
             "blank": pad_tokens([encode_blank()] * len(split))}
    out = {"n": len(split)}
    for name, text in texts.items():
        for masking in ("all", "maskgit"):
            generator, total, count = torch.Generator().manual_seed(seed), 0.0, 0
            for start in range(0, len(split), 64):
                rows = slice(start, start + 64)
                ids = protein[rows]
                mask = (torch.ones_like(ids, dtype=torch.bool) if masking == "all" else
                        random_mask(torch.ones_like(ids, dtype=torch.bool), 1.0, generator))
                with torch.no_grad():
                    logits = model(text[rows], nucleus[rows], ids.masked_fill(mask, model.protein_mask_id)).image_logits
                total += float(F.cross_entropy(logits[mask].float(), ids[mask], reduction="sum"))
                count += int(mask.sum())
            out[f"{name}_{masking}"] = total / count
    out["gap_all"] = out["shuffled_all"] - out["true_all"]
    return out


def encode_blank() -> list[int]:
    from locscope.encoders.protein import encode_sequence

    return encode_sequence("X" * 50)


def binarize(images: np.ndarray, method: str) -> np.ndarray:
    """``(N, H, W)`` -> bool, thresholded as the CELL-E 2 model's target (:func:`locscope.models.celle2.threshold_protein`)."""
    from locscope.models.celle2 import threshold_protein

    return threshold_protein(torch.from_numpy(np.asarray(images, np.float32))[:, None], method)[:, 0].numpy() > 0


def scores(real, images, binary, pdf, cells, truth, readout, is_binary, target: str) -> dict:
    """All metrics of one run; ``images`` ``(N, K, H, W)`` in [0, 1], ``binary`` their thresholded images, ``pdf``
    ``(N, H, W)``; ``truth``: per cell the set of right level-3 classes; ``target``: the CELL-E 2 model's threshold
    (``nucleus_pct_mae_target`` / ``pixel_mae_target`` binarise the real image, and non-binary images, that way)."""
    from locscope.metrics.celle2 import nucleus_proportion

    first = images[:, 0]
    gen = binary[:, 0] if is_binary else first
    unit_real = (real - real.min(axis=(1, 2), keepdims=True)) / np.ptp(real, axis=(1, 2), keepdims=True).clip(1e-9)
    nuclei = np.stack([nucleus_mask(c.cell.masks) for c in cells])
    true_masks = np.stack([true_protein_mask(c.cell.masks, list(c.compartments)) for c in cells])
    landmarks = np.stack([[c.cell.images[n] for n in LANDMARKS] for c in cells])
    classes = readout.config.classes

    def classifier(stack):
        drawn = classify_level3(readout, stack, landmarks, LANDMARKS).argmax(1)
        return float(np.mean([classes[d] in t for d, t in zip(drawn, truth)]))

    real_target = binarize(real, target)
    gen_target = gen.astype(bool) if is_binary else binarize(first, target)
    tops = [next(iter(compartment_fractions(im, c.cell.masks)), None) for im, c in zip(first, cells)]
    out = {
        "nucleus_pct_mae": float(np.nanmean(nucleus_proportion_error(real, gen, nuclei,
                                                                     generated_is_binary=is_binary))),
        "pixel_mae": float(np.mean(binary_pixel_mae(real, gen, generated_is_binary=is_binary))),
        "pdf_mae": float(np.mean(pdf_mae(real, pdf))),
        "nucleus_pct_mae_median": float(np.nanmean(nucleus_proportion_error(real, first, nuclei))),
        "nucleus_pct_mae_target": float(np.nanmean(np.abs(nucleus_proportion(gen_target, nuclei)
                                                          - nucleus_proportion(real_target, nuclei)))),
        "pixel_mae_target": float(np.mean(gen_target != real_target)),
        "ssim": float(np.mean(ssim(unit_real, first, data_range=1.0))),
        "iou": float(np.nanmean(iou_vs_truth(first, true_masks))),
        "fidelity": float(np.nanmean(localization_fidelity(first, true_masks))),
        "right_classifier": classifier(first),
        "right_masks": float(np.mean([t in r for t, r in zip(tops, truth)])),
    }
    if is_binary:
        out["right_classifier_pdf"] = classifier(pdf)
        out["empty_binary_share"] = float(np.mean(~gen.astype(bool).any(axis=(1, 2))))
    return out


def compare(celle2, celldiff, readout, cells, sequences, truth, args, seed: int) -> dict:
    """Every run (references, CELL-Diff, CELL-E 2 1 / 8 passes; true and shuffled sequences) on ``cells``."""
    shuffled = [sequences[j] for j in derangement(len(sequences), 1)]
    real = np.stack([c.protein for c in cells]).astype(np.float64)
    rows = {}
    target = celle2.config.protein_threshold
    for name, images, is_binary in (
            ("simulator image (reference)", real, False),
            ("simulator image, median-thresholded (CELL-E 2's published target)",
             threshold_mask(real, "lower_median").astype(np.float64), True),
            (f"simulator image, {target}-thresholded (the model's target)", binarize(real, target).astype(np.float64),
             True)):
        rows[name] = scores(real, images[:, None], images[:, None] > 0.5, images, cells, truth, readout, is_binary,
                            target)
    for condition, seqs in (("true", sequences), ("shuffled", shuffled)):
        for name in ("celldiff_dpm10", "celle2_1pass", "celle2_8pass"):
            wall, cpu = time.perf_counter(), time.process_time()
            if name == "celldiff_dpm10":
                images, nfe = run_celldiff(celldiff, cells, seqs, args.samples, seed=seed)
                binary = images > 0.5  # not used: CELL-Diff images are thresholded at their median by the metrics
                pdf = np.stack([probability_map(stack) for stack in images])
                is_binary = False
            else:
                passes = 1 if name == "celle2_1pass" else 8
                images, binary, pdf, nfe = run_celle2(celle2, cells, seqs, args.samples, passes, seed=seed,
                                                      temperature=args.temperature)
                is_binary = True
            count = len(cells) * args.samples
            cost = {"network_evaluations_per_image": nfe,
                    "cpu_seconds_per_image": (time.process_time() - cpu) / count,
                    "wall_seconds_per_image": (time.perf_counter() - wall) / count}
            row = scores(real, images, binary, pdf, cells, truth, readout, is_binary, target)
            rows[f"{name}/{condition}"] = {**row, **cost}
            print(json.dumps({f"{name}/{condition}": {k: round(v, 4) for k, v in rows[f'{name}/{condition}'].items()}}),
                  flush=True)
    return rows


def synthetic_cells(n: int, size: int):
    """The held-out grammar proteins and cells of ``bench_faithful.py`` (same seeds)."""
    cfg = SimulatorConfig(size=size)
    rng = np.random.default_rng(12345)
    targets = grammar_targets()
    cells, sequences = [], []
    for i in range(n):
        target = targets[int(rng.integers(len(targets)))]
        sequence, _ = random_protein(target, rng, length=200, split="heldout")
        cells.append(simulate_cell(cfg, sequence=sequence, seed=900_000 + i))
        sequences.append(sequence)
    return cells, sequences, [{t} for t in truth_level3(cells)]


def real_cells(limit: str, size: int):
    """The OpenCell test-split proteins (the training store's split) in label-faithful simulator cells."""
    from locscope.data.splits import split_by_protein
    from locscope.synth.labelled import read_annotated_proteins

    proteins = read_annotated_proteins(OPENCELL)
    splits = split_by_protein([p.id for p in proteins], seed=0)
    test = [p for p, s in zip(proteins, splits) if s == "test"]
    if limit != "all":
        test = test[: int(limit)]
    cfg = SimulatorConfig(size=size)
    cells = [simulate_cell(cfg, sequence=p.sequence, compartments=p.compartments, seed=800_000 + i)
             for i, p in enumerate(test)]
    return cells, [p.sequence for p in test], [{ontology.to_level3(c) for c in p.level1} for p in test]


def grammar_nuclear(sequence: str) -> bool:
    """The motif grammar sends the protein mainly to the nucleus (nucleoplasm / nucleoli largest)."""
    call = localize_sequence(sequence).compartments
    return ontology.to_level3(max(call, key=call.get)) in NUCLEAR


def infill(model: str, candidates: int, seed: int) -> dict:
    """EGFP with a masked C / N terminus, infilled in every real nucleus image of ``celldiff_samples``."""
    from locscope.data.signals import EGFP
    from locscope.pipelines.design import design

    egfp = "".join(EGFP) if isinstance(EGFP, tuple) else EGFP
    templates = {"C terminus": egfp + "<mask:10>", "N terminus": "M<mask:10>" + egfp[1:]}
    cells = [d for d in sorted(SAMPLES_DIR.glob("*/*")) if d.is_dir() and any(d.glob("*ucle*"))]
    out = {"candidates_per_image": candidates, "images": [str(d.relative_to(SAMPLES_DIR)) for d in cells],
           "templates": {}}
    for label, template in templates.items():
        rows = []
        for k, cell in enumerate(cells):
            with tempfile.TemporaryDirectory() as tmp:
                design(Path(tmp) / "d", model=model, target="nucleus", template=template, landmarks=[cell],
                       candidates=candidates, passes=4, score_samples=4, seed=seed + k, progress=False)
                summary = json.loads((Path(tmp) / "d" / "summary.json").read_text())
                sequences = [line for line in (Path(tmp) / "d" / "candidates.fasta").read_text().splitlines()
                             if not line.startswith(">")]
            rows.append({"image": str(cell.relative_to(SAMPLES_DIR)), "reporter": summary["reporter_score"],
                         "candidates_mean": summary["candidates_mean_score"],
                         "random_mean": summary["random_residues_mean_score"],
                         "candidates_above_reporter": summary["share_of_candidates_above_reporter"],
                         "random_above_reporter": summary["share_of_random_above_reporter"],
                         "grammar_nuclear_candidates": float(np.mean([grammar_nuclear(s) for s in sequences])),
                         "top": summary["top"][0]["sequence"]})
            print(json.dumps({label: rows[-1]}), flush=True)
        keys = [k for k in rows[0] if k not in ("image", "top")]
        out["templates"][label] = {"per_image": rows, "mean": {k: float(np.mean([r[k] for r in rows])) for k in keys},
                                   "grammar_nuclear_reporter": grammar_nuclear(egfp)}
    return out


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


COLUMNS = (("nucleus_pct_mae", "Nucleus % MAE", ".4f"), ("empty_binary_share", "empty binary images", ".1%"),
           ("nucleus_pct_mae_median", "Nucleus % MAE (image at its median)", ".4f"), ("pixel_mae", "pixel MAE", ".4f"),
           ("nucleus_pct_mae_target", "Nucleus % MAE (model's threshold)", ".4f"),
           ("pixel_mae_target", "pixel MAE (model's threshold)", ".4f"), ("pdf_mae", "PDF MAE", ".4f"),
           ("ssim", "SSIM", ".4f"), ("iou", "IoU", ".3f"), ("fidelity", "fidelity", ".3f"),
           ("right_classifier", "right (classifier)", ".1%"), ("right_classifier_pdf", "right (classifier, PDF)", ".1%"),
           ("right_masks", "right (masks)", ".1%"), ("network_evaluations_per_image", "NFE / image", "d"),
           ("cpu_seconds_per_image", "CPU s / image", ".3f"))


def markdown(rows: dict) -> str:
    """One table: a row per run, the columns above (blank where a run has no value)."""
    lines = ["| | " + " | ".join(title for _, title, _ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, row in rows.items():
        cells = [format(row[key], fmt) if key in row else "" for key, _, fmt in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", action="store_true", help="only: celle2-base parameters and one forward pass")
    parser.add_argument("--celle2", nargs="+", help="CELL-E 2 model (bundled name or directory); several with "
                                                    "--sequence-probe")
    parser.add_argument("--sequence-probe", metavar="STORE", help="only: the sequence probe on STORE's validation "
                                                                  "cells (--n of them, default 256)")
    parser.add_argument("--celldiff", default="celldiff-64")
    parser.add_argument("--readout", default="compartment-readout")
    parser.add_argument("--n", type=int, default=None, help="held-out grammar proteins (default 200; "
                                                            "--sequence-probe: validation cells, default 256)")
    parser.add_argument("--real", default="0", help="held-out OpenCell proteins: a count or 'all' (0: none)")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--infill", type=int, default=0, help="residue-infill candidates per nucleus image (0: none)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--temperature", type=float, default=1.0, help="CELL-E 2's sampling temperature of the image "
                        "tokens (locscope generate --temperature)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.base:
        print(json.dumps({"cpu": machine_description(), "celle2_base": base_forward(args.threads)}, indent=1))
        return
    if not args.celle2:
        parser.error("--celle2 is required (or --base)")
    from locscope.models import hub

    if args.sequence_probe:
        probes = {name: sequence_probe(hub.load(name, families=("celle2",)), args.sequence_probe,
                                       256 if args.n is None else args.n) for name in args.celle2}
        print("| model | cells | all masked: true | shuffled | blank | gap (shuffled - true) | MaskGIT: true | "
              "shuffled | blank |\n|---|---|---|---|---|---|---|---|---|")
        for name, p in probes.items():
            print(f"| {name} | {p['n']} | {p['true_all']:.4f} | {p['shuffled_all']:.4f} | {p['blank_all']:.4f} | "
                  f"{p['gap_all']:.4f} | {p['true_maskgit']:.4f} | {p['shuffled_maskgit']:.4f} | "
                  f"{p['blank_maskgit']:.4f} |")
        print(json.dumps({"machine": machine_description(), "probes": probes}))
        return
    if len(args.celle2) != 1:
        parser.error("--celle2 takes one model (several only with --sequence-probe)")
    args.celle2 = args.celle2[0]
    args.n = 200 if args.n is None else args.n
    from locscope.pipelines.generate import load_celldiff

    celldiff = load_celldiff(args.celldiff)
    celle2 = hub.load(args.celle2, families=("celle2",))
    readout = load_readout(args.readout)
    if readout is None:
        raise SystemExit(f"read-out classifier {args.readout} not installed")
    size = celle2.config.image_size
    if celldiff.config.image_size != size:
        raise SystemExit(f"image sizes differ: CELL-Diff {celldiff.config.image_size}, CELL-E 2 {size}")
    report = {"machine": machine_description(), "torch_threads": args.threads, "n": args.n, "samples": args.samples,
              "celle2": str(args.celle2), "celldiff": str(args.celldiff), "readout": args.readout}
    started = time.process_time()
    if args.n:
        cells, sequences, truth = synthetic_cells(args.n, size)
        report["synthetic"] = compare(celle2, celldiff, readout, cells, sequences, truth, args, seed=7)
        print(markdown(report["synthetic"]), flush=True)
    if args.real != "0" and OPENCELL.is_file():
        cells, sequences, truth = real_cells(args.real, size)
        report["real_opencell"] = {"n": len(cells),
                                   "rows": compare(celle2, celldiff, readout, cells, sequences, truth, args, seed=11)}
        print(markdown(report["real_opencell"]["rows"]), flush=True)
    if args.infill:
        report["infill"] = infill(args.celle2, args.infill, seed=0)
        print(json.dumps({k: v["mean"] for k, v in report["infill"]["templates"].items()}, indent=1), flush=True)
    report["cpu_seconds_total"] = time.process_time() - started
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps({"machine": report["machine"], "torch_threads": args.threads,
                      "cpu_seconds_total": round(report["cpu_seconds_total"], 1)}))


if __name__ == "__main__":
    main()
