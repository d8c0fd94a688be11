"""The simulator demo: example GFP fusions through the motif grammar into simulated cells, as PNG + HTML + JSON.

``locscope demo`` shows this until a trained model is bundled. Needs no data files and runs in seconds.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from locscope.synth.config import SimulatorConfig
from locscope.synth.simulate import SimulatedCell, simulate_cell
from locscope.utils.atomic import write_json, write_text
from locscope.utils.outputs import check_output_folder, output_folder

#: Enhanced GFP (Cormack et al. 1996), the reporter the example sorting signals are fused to.
EGFP = ("MVSKGEELFTGVVPILVELDGDVNGHKFSVSGEGEGDATYGKLTLKFICTTGKLPVPWPTLVTTLTYGVQCFSRYPDHMKQHDFFKSAMPEGYVQERTIFFKDD"
        "GNYKTRAEVKFEGDTLVNRIELKGIDFKEDGNILGHKLEYNYNSHNVYIMADKQKNGIKVNFKIRHNIEDGSVQLADHYQQNTPIGDGPVLLPDNHYLSTQSALSK"
        "DPNEKRDHMVLLEFVTAAGITLGMDELYK")

#: Example proteins: name -> (sequence, what it models).
EXAMPLES: dict[str, tuple[str, str]] = {
    "EGFP": (EGFP, "the reporter alone: no sorting signal, stays in the cytosol"),
    "NLS-EGFP": ("M" + "PKKKRKV" + EGFP[1:], "SV40 large-T nuclear localization signal"),
    "mito-EGFP": ("MSVLTPLLLRGLTGSARRLPVPRAKIHSL" + EGFP[1:], "COX8A mitochondrial presequence"),
    "ss-EGFP-KDEL": ("MKWVTFISLLFLFSSAYS" + EGFP[1:] + "KDEL", "albumin signal peptide + KDEL ER retention"),
    "EGFP-CAAX": (EGFP + "GCMSCKCVLS", "H-Ras C-terminal CAAX box (prenylation)"),
    "EGFP-SKL": (EGFP + "SKL", "peroxisomal targeting signal 1"),
    "NoLS-EGFP": ("M" + "RRKRRRRR" + EGFP[1:], "R-rich nucleolar localization signal"),
    "anchor-EGFP": ("MRLREPLLSGK" + "LLVAVCALLLAVILVFLLA" + "GRD" + EGFP[1:], "type II signal anchor (Golgi)"),
}


DEMO_FILES = ("results.json", "report.html")  # every simulator demo holds them

def _composite(sim: SimulatedCell) -> np.ndarray:
    """RGB: microtubules red, ER yellow-ish, nucleus blue, protein green; (H, W, 3) float in [0, 1]."""
    img = sim.images

    def stretch(a: np.ndarray) -> np.ndarray:
        hi = float(np.percentile(a, 99.5))
        return np.clip(a / hi, 0, 1) if hi > 0 else a

    mt, er, nuc, prot = (stretch(img[c]) for c in ("microtubules", "er", "nucleus", "protein"))
    return np.clip(np.stack([0.6 * mt + 0.3 * er, prot + 0.3 * er, nuc], axis=-1), 0, 1)


def write_simulator_demo(out: str | Path, seed: int = 0, size: int = 128, overwrite: bool = False) -> dict[str, Any]:
    """Simulate one cell per example protein and write ``demo.png``, ``report.html`` and ``results.json`` to ``out``.

    ``out`` follows the output-folder policy (:mod:`locscope.utils.outputs`; ``overwrite`` replaces an earlier demo).

    Returns
    -------
    dict
        The JSON written: per example the sequence, grammar rule, compartments, motif positions and the fraction of the
        protein signal (background-subtracted) inside its true compartment mask.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    check_output_folder(out, "demo", overwrite=overwrite, known_files=DEMO_FILES)
    cfg = SimulatorConfig(size=size)
    results: list[dict[str, Any]] = []
    fig, axes = plt.subplots(3, len(EXAMPLES), figsize=(2.2 * len(EXAMPLES), 7.0))
    for k, (name, (sequence, about)) in enumerate(EXAMPLES.items()):
        sim = simulate_cell(cfg, sequence=sequence, seed=seed + k)
        mask = sim.protein_mask()
        signal = np.clip(sim.protein - cfg.background, 0, None)
        inside = float(signal[mask].sum() / max(signal.sum(), 1e-9))
        results.append({"name": name, "about": about, "sequence": sequence, "rule": sim.provenance["rule"],
                        "compartments": sim.compartments, "labels": sim.labels,
                        "motifs": [list(m) for m in sim.motifs], "signal_fraction_in_mask": round(inside, 4)})
        axes[0, k].imshow(_composite(sim))
        axes[0, k].set_title(f"{name}\n{' + '.join(sim.compartments)}", fontsize=7)
        axes[1, k].imshow(sim.protein, cmap="gray")
        axes[1, k].set_title("protein", fontsize=7)
        axes[2, k].imshow(mask, cmap="magma")
        axes[2, k].set_title("true compartment mask", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(f"locscope simulator: example GFP fusions placed by the motif grammar ({size}x{size}, seed {seed})",
                 fontsize=9)
    fig.tight_layout()
    payload = {"kind": "simulator-demo", "seed": seed, "size": size, "pixel_size_nm": cfg.resolved_pixel_size_nm,
               "examples": results}
    with output_folder(out, "demo", overwrite=overwrite, known_files=DEMO_FILES) as work:
        fig.savefig(work / "demo.png", dpi=110, format="png")
        write_json(work / "results.json", payload)
        write_text(work / "report.html", _html(payload))
    plt.close(fig)
    return payload


def _highlight(sequence: str, motifs: list[list]) -> str:
    marked = np.zeros(len(sequence), dtype=bool)
    for _, start, end in motifs:
        marked[start:end] = True
    return "".join(f"<b style='color:#c00'>{html.escape(c)}</b>" if m else html.escape(c)
                   for c, m in zip(sequence, marked))


def _html(payload: dict[str, Any]) -> str:
    rows = "\n".join(
        f"<tr><td>{html.escape(r['name'])}</td><td>{html.escape(r['about'])}</td><td>{html.escape(r['rule'])}</td>"
        f"<td>{html.escape(', '.join(f'{c} {f:.2f}' for c, f in r['compartments'].items()))}</td>"
        f"<td>{r['signal_fraction_in_mask']:.3f}</td><td class='seq'>{_highlight(r['sequence'], r['motifs'])}</td></tr>"
        for r in payload["examples"])
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>locscope simulator demo</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{border:1px solid #ccc;padding:4px;vertical-align:top;font-size:13px}}
table{{border-collapse:collapse}} .seq{{font-family:monospace;word-break:break-all;max-width:40em}}</style></head><body>
<h1>locscope simulator demo</h1>
<p>Each example protein (a sorting signal fused to EGFP) is read by the motif grammar, which decides its compartments;
the simulator renders a cell ({payload['size']}x{payload['size']} px, {payload['pixel_size_nm']:.0f} nm/px) and places
the protein there. Red residues are the motifs the grammar found. <i>signal in mask</i> is the fraction of the
background-subtracted protein signal inside the exact compartment mask (the rest is optical blur and noise).</p>
<img src="demo.png" style="max-width:100%">
<table><tr><th>protein</th><th>models</th><th>rule</th><th>compartments</th><th>signal in mask</th><th>sequence</th></tr>
{rows}</table></body></html>
"""
