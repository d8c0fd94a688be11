"""Template infill by the sequence designer: a signal written into a masked terminus of real reporter proteins.

    python benchmarks/bench_designer_infill.py [--designer designer-tiny RUN/model ...] [--candidates 16]
        [--window 10] [--out r.json]

``locscope design --target T --template 'EGFP...<mask:10>'`` asks the designer (``models/designer.py``) to fill a
short window at one end of a long protein that carries no signal of its own. This benchmark measures that task on
three real reporters (EGFP, mCherry, human GAPDH, which the grammar calls cytosolic), for every grammar target whose
signal fits a terminal window: nucleoplasm (NLS), nucleoli (NoLS), mitochondria (N-terminal presequence, 25
residues), peroxisomes (PTS1), plasma membrane (CAAX), ER (KDEL; the signal peptide stays given at the N-terminus,
as an ER reporter carries it) and cytosol (the control: nothing to add). Each designed sequence is read back with
the simulator's motif grammar (``synth.grammar.localize_sequence``); "right" = its largest compartment is the target.
Candidates: the parallel decoder, ``--candidates`` per (reporter, target), guidance 1, the designer conditioned on the
one-hot target (as ``design --target`` does). Also printed: the share of candidates that already were right with
random residues in the window (the control).

Also the designer's first task, for comparison (the model card's table): whole 100-residue designs from an all-mask
template, 16 per target (nucleoplasm, mitochondria, plasma membrane, ER, cytosol, nucleoli), read back the same way.

Prints one JSON line per designer and Markdown tables, and the CPU it ran on.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from locscope.data.signals import EGFP
from locscope.utils.cpu import machine_description

MCHERRY = ("MVSKGEEDNMAIIKEFMRFKVHMEGSVNGHEFEIEGEGEGRPYEGTQTAKLKVTKGGPLPFAWDILSPQFMYGSKAYVKHPADIPDYLKLSFPEGFKWERVMNFEDGG"
           "VVTVTQDSSLQDGEFIYKVKLRGTNFPSDGPVMQKKTMGWEASSERMYPEDGALKGEIKQRLKLKDGGHYDAEVKTTYKAKKPVQLPGAYNVNIKLDITSHNEDYTIV"
           "EQYERAEGRHSTGGMDELYK")
GAPDH = ("MGKVKVGVNGFGRIGRLVTRAAFNSGKVDIVAINDPFIDLNYMVYMFQYDSTHGKFHGTVKAENGKLVINGNPITIFQERDPSKIKWGDAGAEYVVESTGVFTTMEK"
         "AGAHLQGGAKRVIISAPSADAPMFVMGVNHEKYDNSLKIISNASCTTNCLAPLAKVIHDNFGIVEGLMTTVHAITATQKTVDGPSGKLWRDGRGALQNIIPASTGAAKK"
         "VGKVIPELNGKLTGMAFRVPTANVSVVDLTCRLEKPAKYDDIKKVVKQASEGPLKGILGYTEDQVVSCDFNSDTHSSTFDAGAGIALNDHFVKLISWYDNEFGYSNRVV"
         "DLMAHMASKE")
WHOLE_TARGETS = ("nucleoplasm", "mitochondria", "plasma-membrane", "endoplasmic-reticulum", "cytosol", "nucleoli")
REPORTERS = {"EGFP": EGFP, "mCherry": MCHERRY, "GAPDH": GAPDH}
SIGNAL_PEPTIDE = "MKWVTFISLLFLFSSAYS"  # human serum albumin's, for the ER reporter
# target -> (the compartment the designer is conditioned on, where the window goes, its length or None for --window)
TARGETS = {
    "nucleoplasm": ("nucleoplasm", "C", None),
    "nucleoli": ("nucleoli", "C", None),
    "mitochondria": ("mitochondria", "N", 25),
    "peroxisomes": ("peroxisomes", "C", None),
    "plasma-membrane": ("plasma-membrane", "C", None),
    "endoplasmic-reticulum": ("endoplasmic-reticulum", "C", None),
    "cytosol": ("cytosol", "C", None),
}


def template_for(reporter: str, terminus: str, window: int, target: str) -> list[int]:
    from locscope.encoders.protein import MASK_ID, encode_sequence

    body = reporter
    if target == "endoplasmic-reticulum":
        body = SIGNAL_PEPTIDE + reporter[1:]
    ids = encode_sequence(body)
    if terminus == "N":
        return ids[:1] + [MASK_ID] * window + ids[1:]
    return ids + [MASK_ID] * window


def top_call(sequence: str) -> str:
    from locscope.synth.grammar import localize_sequence

    call = localize_sequence(sequence).compartments
    return max(call, key=call.get)


def run(designer: str, candidates: int, window: int, seed: int) -> dict:
    from locscope.diffusion.masked_decoding import decode_parallel
    from locscope.encoders.protein import MASK_ID, RESIDUE_IDS, decode_tokens
    from locscope.models import hub
    from locscope.models.designer import designer_logits_fn

    net = hub.load(designer, families=("designer",), device=torch.device("cpu"), argument="designer")
    classes = net.config.fraction_classes
    rows, cpu = {}, time.process_time()
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    residues = np.array(RESIDUE_IDS[1:])
    for target, (condition, terminus, length) in TARGETS.items():
        right = control = 0
        for reporter in REPORTERS.values():
            template = torch.tensor(template_for(reporter, terminus, length or window, target))
            masked = template == MASK_ID
            fractions = torch.zeros(candidates, len(classes))
            fractions[:, classes.index(condition)] = 1.0
            out = decode_parallel(designer_logits_fn(net, fractions), template[None].repeat(candidates, 1), MASK_ID,
                                  passes=min(10, int(masked.sum())), generator=generator)
            right += sum(top_call(decode_tokens(r)) == target for r in out.tokens)
            for _ in range(candidates):
                filled = template.clone()
                filled[masked] = torch.from_numpy(rng.choice(residues, int(masked.sum())))
                control += top_call(decode_tokens(filled)) == target
        n = candidates * len(REPORTERS)
        rows[target] = {"right": right / n, "random_residues_right": control / n, "n": n}
    whole = {}
    for target in WHOLE_TARGETS:
        fractions = torch.zeros(16, len(classes))
        fractions[:, classes.index(target)] = 1.0
        out = decode_parallel(designer_logits_fn(net, fractions), torch.full((16, 100), MASK_ID), MASK_ID,
                              generator=generator)
        whole[target] = float(np.mean([top_call(decode_tokens(r)) == target for r in out.tokens]))
    return {"designer": str(designer), "targets": rows, "whole_designs": whole,
            "whole_mean": float(np.mean(list(whole.values()))),
            "mean_right": float(np.mean([r["right"] for t, r in rows.items() if t != "cytosol"])),
            "cpu_seconds": time.process_time() - cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--designer", nargs="+", default=["designer-tiny"])
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU: {machine_description()}", flush=True)
    results = []
    for designer in args.designer:
        results.append(run(designer, args.candidates, args.window, args.seed))
        print(json.dumps(results[-1]), flush=True)
    targets = list(TARGETS)
    print("| designer | " + " | ".join(targets) + " | mean (signals) |")
    print("|---|" + "---|" * (len(targets) + 1))
    for r in results:
        cells = [f"{r['targets'][t]['right']:.2f} ({r['targets'][t]['random_residues_right']:.2f})" for t in targets]
        print(f"| {r['designer']} | " + " | ".join(cells) + f" | {r['mean_right']:.2f} |")
    print("\n| designer (whole 100-residue designs) | " + " | ".join(WHOLE_TARGETS) + " | mean |")
    print("|---|" + "---|" * (len(WHOLE_TARGETS) + 1))
    for r in results:
        print(f"| {r['designer']} | " + " | ".join(f"{r['whole_designs'][t]:.2f}" for t in WHOLE_TARGETS)
              + f" | {r['whole_mean']:.2f} |")
    if args.out:
        from locscope.utils.atomic import write_json

        write_json(args.out, {"cpu": machine_description(), "results": results})


if __name__ == "__main__":
    main()
