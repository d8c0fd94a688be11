"""Realism report of the simulator: simulated cells beside the real ones in ../shared/data.

Usage: ``python benchmarks/simulator_realism.py [--shared ../shared/data] [--out docs/figures/simulator] [--n 16]``

Compares, per landmark channel, real crops (CELL-Diff's HPA samples: nucleus / ER / microtubules; OpenCell Hoechst
nuclei; the ProtiCelli RELA A-431 cell) with simulated 256x256 crops:
- intensity histograms (each image scaled by its 99.5th percentile) and their 1-D Wasserstein distance;
- radially averaged power spectra (normalised to unit total power) and their log-log slope between 0.02 and 0.25
  cycles/pixel;
- nucleus sizes: Otsu-segmented nucleus area as a fraction of the crop, and the number of nuclei per crop;
- a picture grid.
Writes ``grid.png``, ``histograms.png``, ``spectra.png``, ``nuclei.png`` and ``realism.json`` to ``--out`` and prints
the numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage, stats
from skimage.filters import threshold_otsu
from skimage.transform import resize

from locscope.io import read_image, read_images
from locscope.synth import SimulatorConfig, simulate_cell

CHANNELS = ("nucleus", "er", "microtubules")
SIZE = 256


def scaled(image: np.ndarray) -> np.ndarray:
    """float image / its 99.5th percentile, clipped to [0, 1] (real and simulated on one scale)."""
    img = image.astype(np.float64)
    img = img - img.min()
    hi = np.percentile(img, 99.5)
    return np.clip(img / hi, 0, 1) if hi > 0 else img


def radial_spectrum(image: np.ndarray, n_bins: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Azimuthally averaged power spectrum of a square image (Hann-windowed), normalised to unit total power."""
    img = image - image.mean()
    window = np.outer(np.hanning(img.shape[0]), np.hanning(img.shape[1]))
    power = np.abs(np.fft.fftshift(np.fft.fft2(img * window))) ** 2
    fr = np.fft.fftshift(np.fft.fftfreq(img.shape[0]))
    fc = np.fft.fftshift(np.fft.fftfreq(img.shape[1]))
    radius = np.hypot(*np.meshgrid(fr, fc, indexing="ij"))
    edges = np.linspace(0, 0.5, n_bins + 1)
    idx = np.digitize(radius.ravel(), edges) - 1
    ok = (idx >= 0) & (idx < n_bins)
    sums = np.bincount(idx[ok], power.ravel()[ok], minlength=n_bins)
    counts = np.maximum(np.bincount(idx[ok], minlength=n_bins), 1)
    spectrum = sums / counts
    return 0.5 * (edges[1:] + edges[:-1]), spectrum / spectrum.sum()


def spectral_slope(freq: np.ndarray, spectrum: np.ndarray) -> float:
    band = (freq > 0.02) & (freq < 0.25) & (spectrum > 0)
    return float(np.polyfit(np.log(freq[band]), np.log(spectrum[band]), 1)[0])


def nucleus_stats(nucleus: np.ndarray) -> tuple[float, int]:
    """Otsu nucleus area fraction of the crop and the number of nuclei (components > 0.5 % of the crop)."""
    img = ndimage.gaussian_filter(scaled(nucleus), 1.0)
    mask = img > threshold_otsu(img)
    labels, n = ndimage.label(mask)
    sizes = np.bincount(labels.ravel())[1:]
    return float(mask.mean()), int((sizes > 0.005 * mask.size).sum())


def load_real(shared: Path) -> dict[str, list[np.ndarray]]:
    """Real grey images per channel at 256x256 (key ``nucleus-opencell`` for the OpenCell Hoechst nuclei)."""
    real: dict[str, list[np.ndarray]] = {c: [] for c in CHANNELS}
    real["nucleus-opencell"] = []
    hpa = sorted(p for p in (shared / "celldiff_samples" / "hpa").iterdir() if p.is_dir())
    for rec in read_images(hpa):
        for c in CHANNELS:
            if c in rec.channels:
                real[c].append(rec.channels[c].astype(np.float64))
    opencell = sorted(p for p in (shared / "celldiff_samples" / "opencell").iterdir() if p.is_dir())
    for rec in read_images(opencell):
        real["nucleus-opencell"].append(rec.channels["nucleus"].astype(np.float64))
    rela = read_image(shared / "proticelli_landmarks" / "RELA_A-431" / "cell_9.tiff")
    for c in CHANNELS:
        real[c].append(resize(rela.channels[c].astype(np.float64), (SIZE, SIZE), anti_aliasing=True))
    real["rela"] = [rela.channels[c] for c in ("microtubules", "er", "nucleus", "protein")]
    return real


def simulate(n: int) -> tuple[list, dict[str, list[np.ndarray]]]:
    cfg = SimulatorConfig(size=SIZE, neighbours=True)  # HPA crops show the neighbours of the centred cell
    sims = [simulate_cell(cfg, seed=s) for s in range(n)]
    images = {c: [s.images[c].astype(np.float64) for s in sims] for c in CHANNELS}
    return sims, images


def composite(mt: np.ndarray, er: np.ndarray, nucleus: np.ndarray, protein: np.ndarray | None = None) -> np.ndarray:
    """HPA-style RGB: microtubules red, ER yellow (or the protein green), nucleus blue."""
    mt, er, nucleus = scaled(mt), scaled(er), scaled(nucleus)
    green = scaled(protein) if protein is not None else 0.5 * er
    return np.clip(np.stack([mt + 0.5 * er * (protein is None), green, nucleus], -1), 0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--shared", type=Path, default=root.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=root / "docs" / "figures" / "simulator")
    parser.add_argument("--n", type=int, default=16)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args.out.mkdir(parents=True, exist_ok=True)
    real = load_real(args.shared)
    sims, sim = simulate(args.n)
    results: dict[str, dict] = {}

    # --- intensity histograms
    bins = np.linspace(0, 1, 41)
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    pairs = [(c, real[c], sim[c]) for c in CHANNELS] + [("nucleus (OpenCell)", real["nucleus-opencell"], sim["nucleus"])]
    for ax, (name, r_imgs, s_imgs) in zip(axes, pairs):
        r = np.concatenate([scaled(i).ravel() for i in r_imgs])
        s = np.concatenate([scaled(i).ravel() for i in s_imgs])
        ax.hist(r, bins, density=True, alpha=0.5, label=f"real (n={len(r_imgs)})", log=True)
        ax.hist(s, bins, density=True, alpha=0.5, label=f"simulated (n={len(s_imgs)})", log=True)
        w = float(stats.wasserstein_distance(r, s))
        ax.set_title(f"{name}: W1 = {w:.3f}", fontsize=9)
        ax.set_xlabel("intensity / 99.5th percentile")
        ax.legend(fontsize=7)
        results.setdefault(name, {})["wasserstein"] = round(w, 4)
        results[name]["real_mean"] = round(float(r.mean()), 4)
        results[name]["sim_mean"] = round(float(s.mean()), 4)
        results[name]["real_fraction_above_0.1"] = round(float((r > 0.1).mean()), 4)
        results[name]["sim_fraction_above_0.1"] = round(float((s > 0.1).mean()), 4)
    fig.tight_layout()
    fig.savefig(args.out / "histograms.png", dpi=90)
    plt.close(fig)

    # --- radial power spectra
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    for ax, (name, r_imgs, s_imgs) in zip(axes, pairs):
        for label, imgs in (("real", r_imgs), ("simulated", s_imgs)):
            spectra = [radial_spectrum(scaled(i)) for i in imgs]
            freq = spectra[0][0]
            mean = np.mean([s for _, s in spectra], axis=0)
            ax.loglog(freq[1:], mean[1:], label=label)
            slopes = [spectral_slope(f, s) for f, s in spectra]
            results[name][f"{label}_spectral_slope"] = round(float(np.mean(slopes)), 3)
            results[name][f"{label}_high_freq_power"] = round(float(mean[freq > 0.25].sum()), 5)
        ax.set_title(f"{name}: slope real {results[name]['real_spectral_slope']:.2f} / "
                     f"sim {results[name]['simulated_spectral_slope']:.2f}", fontsize=9)
        ax.set_xlabel("cycles / pixel")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out / "spectra.png", dpi=90)
    plt.close(fig)

    # --- nucleus sizes
    nuc = {"HPA": [nucleus_stats(i) for i in real["nucleus"][:-1]],
           "OpenCell": [nucleus_stats(i) for i in real["nucleus-opencell"]],
           "RELA A-431": [nucleus_stats(real["nucleus"][-1])],
           "simulated (Otsu)": [nucleus_stats(i) for i in sim["nucleus"]]}
    true_fraction = [float((s.cell.nuclei > 0).mean()) for s in sims]
    true_count = [len(np.unique(s.cell.nuclei)) - 1 for s in sims]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for k, (name, vals) in enumerate(nuc.items()):
        fr = [v[0] for v in vals]
        ax.scatter(np.full(len(fr), k) + np.random.default_rng(k).uniform(-0.1, 0.1, len(fr)), fr, label=name)
        results.setdefault("nucleus_area_fraction", {})[name] = round(float(np.mean(fr)), 4)
        results.setdefault("nuclei_per_crop", {})[name] = round(float(np.mean([v[1] for v in vals])), 2)
    ax.scatter(np.full(len(true_fraction), len(nuc)), true_fraction, label="simulated (true mask)")
    results["nucleus_area_fraction"]["simulated (true mask)"] = round(float(np.mean(true_fraction)), 4)
    results["nuclei_per_crop"]["simulated (true mask)"] = round(float(np.mean(true_count)), 2)
    ax.set_xticks(range(len(nuc) + 1), list(nuc) + ["sim (mask)"], fontsize=7)
    ax.set_ylabel("nucleus area / crop area")
    fig.tight_layout()
    fig.savefig(args.out / "nuclei.png", dpi=90)
    plt.close(fig)

    # --- picture grid
    n_real = len(real["nucleus"]) - 1
    fig, axes = plt.subplots(3, n_real + 1, figsize=(2.4 * (n_real + 1), 7.6))
    for k in range(n_real):
        axes[0, k].imshow(composite(real["microtubules"][k], real["er"][k], real["nucleus"][k]))
        axes[0, k].set_title(f"real HPA {k + 1}", fontsize=8)
        s = sims[k]
        axes[1, k].imshow(composite(s.images["microtubules"], s.images["er"], s.images["nucleus"]))
        axes[1, k].set_title(f"simulated seed {k}", fontsize=8)
        axes[2, k].imshow(scaled(real["nucleus-opencell"][k]), cmap="gray")
        axes[2, k].set_title(f"real OpenCell nuclei {k + 1}", fontsize=8)
    mt, er, nucleus, protein = real["rela"]
    axes[0, n_real].imshow(composite(mt, er, nucleus, protein))
    axes[0, n_real].set_title("real RELA A-431 (protein green)", fontsize=8)
    rela_like = simulate_cell(SimulatorConfig(size=SIZE, neighbours=True), compartments={"cytosol": 0.8, "nucleoplasm": 0.2}, seed=99)
    axes[1, n_real].imshow(composite(rela_like.images["microtubules"], rela_like.images["er"],
                                     rela_like.images["nucleus"], rela_like.protein))
    axes[1, n_real].set_title("simulated cytosol 0.8 + nucleoplasm 0.2", fontsize=8)
    field = simulate_cell(SimulatorConfig(size=SIZE, mode="field"), compartments={"nucleoplasm": 1.0}, seed=5)
    axes[2, n_real].imshow(scaled(field.images["nucleus"]), cmap="gray")
    axes[2, n_real].set_title("simulated field, nuclei", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.out / "grid.png", dpi=55)
    plt.close(fig)

    (args.out / "realism.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
