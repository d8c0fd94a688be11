"""Generation in real cells: the demo's five human proteins in every real landmark image of ``../shared/data``.

    python benchmarks/bench_real_landmarks.py [--model celldiff-tiny] [--samples 2] [--out real_landmarks]

For each landmark set (HPA and OpenCell crops of ``celldiff_samples``, ProtiCelli's reference cells and its RELA
A-431 cell) it runs ``locscope generate`` (one folder with ``report.html`` per set, plus ``index.html``) and measures
whether the protein sits in THAT cell: the share of the generated protein's intensity (above its 5th percentile)
inside the given nucleus (Otsu threshold of the nucleus channel at the model's size). A histone should be almost all
inside, the cytosolic / membrane / ER / mitochondrial proteins mostly outside, for every cell.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from skimage.filters import threshold_otsu

from locscope.channels import NUCLEUS
from locscope.pipelines.generate import generate, read_landmarks
from locscope.pipelines.generate_outputs import demo_proteins
from locscope.utils.cpu import machine_description

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def landmark_sets() -> dict[str, list[Path]]:
    """Name -> landmark paths of every real landmark image in ``../shared/data`` (no protein channel needed)."""
    sets: dict[str, list[Path]] = {}
    samples = SHARED / "celldiff_samples"
    for source in ("hpa", "opencell"):
        for folder in sorted((samples / source).iterdir()) if (samples / source).is_dir() else []:
            files = [f for f in sorted(folder.glob("*.png")) if f.stem != "protein"]
            if files:
                sets[f"{source}_{folder.name}"] = files
    for tiff in sorted((SHARED / "proticelli_landmarks").rglob("*.tiff")):
        sets[f"proticelli_{tiff.parent.name}_{tiff.stem}"] = [tiff]
    return sets


def nucleus_share(image: np.ndarray, nucleus: np.ndarray) -> float:
    """Share of ``image``'s intensity above its 5th percentile inside the Otsu mask of ``nucleus`` (both (H, W))."""
    mask = nucleus > threshold_otsu(nucleus)
    signal = np.clip(image - np.percentile(image, 5), 0, None)
    return float(signal[mask].sum() / max(signal.sum(), 1e-9))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="Generator (default: the bundled default).")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="real_landmarks")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_description(), flush=True)
    examples = demo_proteins()
    proteins = [(example.id, example.sequence) for example in examples]
    expected = {example.id: example.expected_level3 for example in examples}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = {}
    for name, paths in landmark_sets().items():
        start = time.perf_counter()
        result = generate(proteins, paths, out / name, model=args.model, samples=args.samples, seed=0,
                          progress=False, overwrite=True, expected=expected)
        size = int(tifffile.imread(result.out_dir / result.sequences[0]["folder"] / "sample_0.tif").shape[-1])
        nucleus = read_landmarks(paths, (NUCLEUS,), size).images[0]
        row = {}
        for entry in result.sequences:
            images = [tifffile.imread(result.out_dir / entry["folder"] / f"sample_{k}.tif") for k in range(args.samples)]
            row[entry["id"]] = {"nucleus_share": float(np.mean([nucleus_share(im, nucleus) for im in images])),
                                "drawn_level3": entry["drawn_level3_per_sample"],
                                "expected_level3": entry["expected_level3"]}
        row["_nucleus_area_share"] = float((nucleus > threshold_otsu(nucleus)).mean())
        row["_seconds"] = time.perf_counter() - start
        table[name] = row
        print(name, json.dumps({k: (round(v["nucleus_share"], 3) if isinstance(v, dict) else round(v, 3))
                                for k, v in row.items()}), flush=True)
    (out / "real_landmarks.json").write_text(json.dumps({"cpu": machine_description(), "sets": table}, indent=1))
    ids = [p for p, _ in proteins]
    head = "".join(f"<th>{html.escape(i)}<br><small>{html.escape(expected[i])}</small></th>" for i in ids)
    body = "".join(
        f"<tr><td><a href='{html.escape(n)}/report.html'>{html.escape(n)}</a></td><td>{r['_nucleus_area_share']:.0%}</td>"
        + "".join(f"<td>{r[i]['nucleus_share']:.0%}<br><small>{html.escape(', '.join(r[i]['drawn_level3']))}</small>"
                  f"</td>" for i in ids) + "</tr>" for n, r in table.items())
    (out / "index.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>Generation in real cells</title><style>"
        "body{font-family:sans-serif;margin:1.5em}td,th{border:1px solid #ccc;padding:4px;font-size:13px}"
        "table{border-collapse:collapse}</style></head><body><h1>Generation in real landmark images</h1>"
        "<p>Share of each generated protein's intensity inside the given nucleus (Otsu mask of the nucleus channel), "
        "and the level-3 compartment the read-out classifier sees in each sample. Each set links to its report.</p>"
        f"<table><tr><th>landmarks</th><th>nucleus area</th>{head}</tr>{body}</table></body></html>")
    print(f"wrote {out / 'index.html'}")


if __name__ == "__main__":
    sys.exit(main())
