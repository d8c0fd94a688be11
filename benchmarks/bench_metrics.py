"""Metric values on the real CELL-Diff sample images, and the cost of ``locscope evaluate``.

Usage: ``.venv/bin/python benchmarks/bench_metrics.py [--shared ../shared]``. Prints the IoU / MSF conventions on the
real protein images (the numbers in docs/metrics.md), then evaluates a folder of the real samples against a
"generated" copy (HPA protein flipped left-right, OpenCell NLS/NES proteins swapped) with the image-encoder and the
handcrafted features, and times it.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from locscope.metrics import iou, msf, pixel_metrics
from locscope.pipelines.evaluate import evaluate


def grey(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    args = parser.parse_args()
    samples = args.shared / "data" / "celldiff_samples"

    image = grey(samples / "hpa" / "nls" / "protein.png")
    variants = {"itself": image, "horizontal flip": image[:, ::-1], "vertical flip": image[::-1],
                "rot90": np.rot90(image), "gaussian blur sigma 2": gaussian_filter(image, 2.0)}
    print("hpa/nls/protein.png (real: > lower median) vs (generated: > interpolated median)")
    for name, other in variants.items():
        px = pixel_metrics(image, other, data_range=1.0)
        print(f"  {name:22s} IoU {iou(image, other):.4f}  SSIM {px['ssim']:.4f}  PCC {px['pcc']:.4f}  "
              f"MSF {msf(other, 320).resolution_nm:.1f} nm (cut-off bin {msf(other, 320).cutoff_bin})")
    nls, nes = grey(samples / "opencell" / "nls" / "protein.png"), grey(samples / "opencell" / "nes" / "protein.png")
    print(f"opencell nls vs nes protein: IoU {iou(nls, nes):.4f}  SSIM {pixel_metrics(nls, nes, 1.0)['ssim']:.4f}")
    for rel, size in (("opencell/nls/protein.png", 206), ("opencell/nes/protein.png", 206)):
        blurred = gaussian_filter(grey(samples / rel), 2.0)
        print(f"MSF {rel}: PNG {msf(grey(samples / rel), size).resolution_nm:.1f} nm, "
              f"blurred sigma 2 {msf(blurred, size).resolution_nm:.1f} nm")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for side in ("real", "generated"):
            for name in ("hpa/nls", "opencell/nls", "opencell/nes"):
                shutil.copytree(samples / name, tmp / side / name)
        flipped = np.asarray(Image.open(samples / "hpa" / "nls" / "protein.png"))[:, ::-1]
        Image.fromarray(np.ascontiguousarray(flipped)).save(tmp / "generated" / "hpa" / "nls" / "protein.png")
        shutil.copy(samples / "opencell" / "nes" / "protein.png", tmp / "generated" / "opencell" / "nls" / "protein.png")
        shutil.copy(samples / "opencell" / "nls" / "protein.png", tmp / "generated" / "opencell" / "nes" / "protein.png")
        for features in ("encoder", "handcrafted"):
            start = time.perf_counter()
            result = evaluate(tmp / "real", tmp / "generated", tmp / f"report_{features}", features=features,
                              progress=False)
            seconds = time.perf_counter() - start
            print(f"locscope evaluate, 3 pairs ({result.summary['feature_network']}): {seconds:.1f} s")
            for name in ("iou", "ssim_protein", "pcc_protein", "psnr_protein", "nucleus_proportion_abs_error",
                         "binary_pixel_mae", "pdf_mae"):
                d = result.per_metric[name]
                print(f"  {name:30s} mean {d['mean']:.4f}  std {d['std']:.4f}")
            for name, value in result.set_metrics.items():
                print(f"  {name:30s} {value:.4f}")

if __name__ == "__main__":
    main()
