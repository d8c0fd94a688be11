"""``locscope evaluate`` for virtual staining: predicted Cell Painting channels against the real ones.

The generated side is a ``locscope stain`` output (its ``summary.json`` names the images and channels; the 16-bit
TIFFs decode back to z-scores; with several samples the first, ``_sample0``, is scored). The real side is a dataset
store with the same channels (``locscope simulate --brightfield --cell-painting --perturbation random``; the class of an
item is its ``provenance["perturbation"]``) or a folder with one sub-folder per image holding ``{channel}.tif``
(or ``.png``). Items pair by image id. Real images are z-scored per image and channel and clipped at +-15, as the
model's training targets are.

Metrics (:mod:`locscope.metrics.staining`; the guided I2I paper's Tables 1-2): per channel PCC, SSIM (data range 30,
the +-15 clip), MSE, MAE; FID per channel on the feature network's images of that channel (G) with the real DNA
channel (B), averaged over channels as ``fid``; the feature-level metrics (NN match, NN top-5, MTdist on the classes;
CPcor) on handcrafted CellProfiler-like profiles and, when a feature network was asked for (``features=``), also on
its per-channel features concatenated.
"""

from __future__ import annotations

import dataclasses
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from locscope.data.transforms import standardize
from locscope.errors import InputError
from locscope.metrics.fid import frechet_distance
from locscope.metrics.pixel import pixel_metrics
from locscope.metrics.staining import (
    cellprofiler_features, feature_correlation, matching_class_distance, nn_class_match, standardize_features,
)
from locscope.report.html import html_page
from locscope.report.images import write_png
from locscope.utils.atomic import write_json, write_text
from locscope.utils.outputs import output_folder
from locscope.utils.progress import track

CUTOFF = 15.0
DATA_RANGE = 2 * CUTOFF
FID_RANGE = (-2.5, 7.5)  # z-scores mapped linearly to 0..255 for the feature network's 8-bit images
REPORT_FILES = ("metrics.json",)


def is_stain_output(path: str | Path) -> bool:
    """Whether ``path`` is a ``locscope stain`` output folder."""
    summary = Path(path) / "summary.json"
    if not summary.is_file():
        return False
    try:
        meta = json.loads(summary.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "tiff_encoding" in meta and "channels" in meta and "images" in meta


def read_stain_output(path: str | Path) -> tuple[list[str], np.ndarray, list[str], dict[str, Any]]:
    """A ``locscope stain`` output: image ids, z-scored ``(N, C, H, W)`` predictions, channel names, summary."""
    import tifffile

    root = Path(path)
    meta = json.loads((root / "summary.json").read_text())
    channels, suffix = list(meta["channels"]), "_sample0" if int(meta.get("samples", 1)) > 1 else ""
    ids, images = [], []
    for row in meta["images"]:
        planes = []
        for channel in channels:
            file = root / row["folder"] / f"{channel}{suffix}.tif"
            if not file.is_file():
                raise InputError(f"{file}: missing (a stain output lists image {row['image']!r} with channel "
                                 f"{channel!r})")
            try:
                plane = tifffile.imread(file)
            except Exception:
                raise InputError(f"{file}: truncated or corrupt TIFF file") from None
            if plane.dtype != np.uint16 or plane.ndim != 2:
                raise InputError(f"{file}: expected the one-plane 16-bit TIFF locscope stain writes, got "
                                 f"{plane.dtype} {plane.shape}")
            planes.append(plane.astype(np.float64) / 65535.0 * DATA_RANGE - CUTOFF)
        ids.append(str(row["image"]))
        images.append(np.stack(planes))
    if len({img.shape for img in images}) > 1:
        raise InputError(f"{root}: stained images differ in size")
    return ids, np.stack(images).astype(np.float32), channels, meta


def read_real_stains(path: str | Path, ids: list[str], channels: list[str]
                     ) -> tuple[list[str], np.ndarray, list[str | None]]:
    """The real images of ``ids`` that ``path`` (a store or a folder of per-image folders) holds: the ids found,
    z-scored ``(N, C, H, W)`` images and their classes (None when unknown)."""
    from locscope.data.store import Store
    from locscope.io.images import read_planes
    from locscope.utils.filenames import file_name_for_id

    root = Path(path)
    if not root.is_dir():
        raise InputError(f"{root}: expected a dataset store or a folder of per-image folders")
    found, images, labels = [], [], []
    if (root / "zarr.json").is_file():
        store = Store.open(root)
        missing = [c for c in channels if c not in store.channels]
        if missing:
            raise InputError(f"{root}: store lacks channel(s) {', '.join(missing)} of the stained images "
                             f"(store channels: {', '.join(store.channels)})")
        position = {str(item_id): i for i, item_id in enumerate(store.ids)}
        for item_id in ids:
            if item_id in position:
                item = store[position[item_id]]
                found.append(item_id)
                images.append(np.stack([np.asarray(item["images"][c], np.float64) for c in channels]))
                labels.append(item.get("provenance", {}).get("perturbation"))
    else:
        for item_id in ids:
            folder = root / file_name_for_id(item_id)
            if not folder.is_dir():
                continue
            planes = []
            for channel in channels:
                files = sorted(p for p in folder.glob(f"{channel}.*") if p.suffix.lower() in (".tif", ".tiff", ".png"))
                if not files:
                    raise InputError(f"{folder}: no {channel}.tif / {channel}.png")
                planes.append(read_planes(files[0])[0].astype(np.float64))
            found.append(item_id)
            images.append(np.stack(planes))
            labels.append(None)
    if not found:
        raise InputError(f"no image ids in common between {root} and the stained images (e.g. {ids[:3]})")
    shapes = {img.shape for img in images}
    if len(shapes) > 1:
        raise InputError(f"{root}: real images differ in size")
    return found, standardize(np.stack(images), clip=CUTOFF), labels


def _fid_rgb(channel: np.ndarray, dna: np.ndarray) -> np.ndarray:
    """uint8 ``(N, 3, H, W)`` feature-network images: R 0, G the channel, B the DNA channel (z-scores over
    ``FID_RANGE``)."""
    low, high = FID_RANGE

    def to8(z: np.ndarray) -> np.ndarray:
        return np.round(np.clip((z - low) / (high - low), 0, 1) * 255).astype(np.uint8)

    return np.stack([np.zeros_like(to8(channel)), to8(channel), to8(dna)], axis=1)


def _class_metrics(profiles: np.ndarray, labels: list[str | None], prefix: str) -> dict[str, float | None]:
    names = ("nn_match", "nn_top5", "mt_dist")
    if any(label is None for label in labels) or len(set(labels)) < 2 or len(labels) < 3:
        return {f"{prefix}{n}": None for n in names}
    k5 = min(5, len(labels) - 1)
    return {f"{prefix}nn_match": nn_class_match(profiles, labels, 1),
            f"{prefix}nn_top5": nn_class_match(profiles, labels, k5),
            f"{prefix}mt_dist": matching_class_distance(profiles, labels)}


def evaluate_stain(real: str | Path, generated: str | Path, out_dir: Path, *, network=None, seed: int = 0,
                   max_pictures: int = 12, progress: bool = True, overwrite: bool = False):
    """Score a ``locscope stain`` output against real Cell Painting images; write the report folder.

    Parameters
    ----------
    real : path
        Dataset store or folder of per-image folders with the stained channels.
    generated : path
        A ``locscope stain`` output folder.
    out_dir : path
        Report folder: ``metrics.json``, ``items.csv``, ``channels.png``, ``pictures/``, ``report.html``.
    network : FeatureNetwork, optional
        Feature network for FID (and extra feature-level metrics); None: the handcrafted profiles only, no FID.

    Returns
    -------
    EvaluationResult
    """
    from locscope.pipelines.evaluate_report import EVALUATION_STYLE, EvaluationResult, _write_csv, describe
    from locscope.pipelines.stain import composite

    gen_ids, predicted, channels, meta = read_stain_output(generated)
    ids, real_images, labels = read_real_stains(real, gen_ids, channels)
    predicted = predicted[[gen_ids.index(i) for i in ids]]
    if real_images.shape != predicted.shape:
        raise InputError(f"real images {real_images.shape[1:]} and stained images {predicted.shape[1:]} differ in "
                         "shape (channels, height, width)")
    pixel = {name: np.asarray(values) for name, values in pixel_metrics(real_images, predicted, DATA_RANGE).items()
             if name != "psnr"}
    rows = [{"id": item_id, "class": labels[n] or "",
             **{f"{name}_{c}": float(values[n, i]) for name, values in pixel.items() for i, c in enumerate(channels)}}
            for n, item_id in enumerate(ids)]
    set_metrics: dict[str, float | None] = {name: float(values.mean()) for name, values in pixel.items()}
    for name, values in pixel.items():
        set_metrics.update({f"{name}_{c}": float(values[:, i].mean()) for i, c in enumerate(channels)})

    profiles = [cellprofiler_features(batch) for batch in track((real_images, predicted), "Profiles",
                                                                  enabled=progress)]
    real_f, pred_f = standardize_features(*profiles)
    set_metrics.update(_class_metrics(pred_f, labels, ""))
    set_metrics.update(_class_metrics(real_f, labels, "real_"))
    set_metrics["cp_cor"] = feature_correlation(real_f, pred_f) if len(ids) > 2 else None

    network_name = None
    if network is not None:
        network_name = network.name
        dna = real_images[:, channels.index("dna")] if "dna" in channels else np.zeros_like(real_images[:, 0])
        fids, real_parts, pred_parts = [], [], []
        for i, channel in enumerate(channels):
            real_feats = network.features(_fid_rgb(real_images[:, i], dna))
            pred_feats = network.features(_fid_rgb(predicted[:, i], dna))
            real_parts.append(real_feats)
            pred_parts.append(pred_feats)
            fid = frechet_distance(real_feats.mean(0), np.cov(real_feats, rowvar=False),
                                   pred_feats.mean(0), np.cov(pred_feats, rowvar=False)) if len(ids) >= 2 else None
            set_metrics[f"fid_{channel}"] = fid
            fids.append(fid)
        set_metrics["fid"] = float(np.mean(fids)) if None not in fids else None
        real_n, pred_n = standardize_features(np.hstack(real_parts), np.hstack(pred_parts))
        set_metrics.update(_class_metrics(pred_n, labels, "network_"))
        set_metrics["network_cp_cor"] = feature_correlation(real_n, pred_n) if len(ids) > 2 else None

    per_metric = {name: describe([row[name] for row in rows]) for name in rows[0] if name not in ("id", "class")}
    summary = {
        "real": str(real), "generated": str(generated), "task": "virtual staining", "n_pairs": len(ids),
        "n_generated_only": len(gen_ids) - len(ids), "channels": channels, "model": meta.get("model"),
        "class": meta.get("class"), "sampler": meta.get("sampler"), "steps": meta.get("steps"),
        "feature_network": network_name or "none (handcrafted profiles only)",
        "feature_dim": getattr(network, "feature_dim", None), "data_range": DATA_RANGE, "seed": seed,
        "labelled_pairs": sum(label is not None for label in labels),
        "conventions": {
            "scaling": "real images z-scored per image and channel, clipped at +-15; predictions decoded from the "
                       "uint16 TIFFs (v / 65535 * 30 - 15)",
            "ssim": "data range 30 (the +-15 clip)",
            "fid": f"per channel: G = channel, B = real DNA, z-scores {FID_RANGE[0]}..{FID_RANGE[1]} -> 0..255; "
                   "fid = mean over channels",
            "nn_match": "share of predictions whose nearest other prediction (cosine, profiles) has the same class; "
                        "real_* = the same on the real images (the ceiling)",
            "profiles": "handcrafted CellProfiler-like features per channel (intensity, Haralick texture, "
                        "granularity), z-scored with the real images' statistics",
        },
    }
    result = EvaluationResult(summary, set_metrics, per_metric, rows, None, out_dir)
    with output_folder(out_dir, "evaluate", overwrite=overwrite, known_files=REPORT_FILES) as tmp:
        (tmp / "pictures").mkdir()
        pictures = []
        for n in range(min(max_pictures, len(ids))):
            stem = f"{n:03d}"
            write_png(tmp / "pictures" / f"{stem}_real.png", composite(real_images[n], channels), scale=4)
            write_png(tmp / "pictures" / f"{stem}_stained.png", composite(predicted[n], channels), scale=4)
            pictures.append((ids[n], labels[n], stem))
        write_json(tmp / "metrics.json", {"summary": summary, "set_metrics": set_metrics,
                                          "per_item_metrics": per_metric})
        _write_csv(dataclasses.replace(result, per_metric={"class": None, **per_metric}), tmp / "items.csv")
        _channel_figure(pixel, channels, tmp / "channels.png")
        write_text(tmp / "report.html", html_page("locscope evaluation (virtual staining)",
                                                  _html(summary, set_metrics, pictures), style=EVALUATION_STYLE))
    return result


def _channel_figure(pixel: dict[str, np.ndarray], channels: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(pixel), figsize=(3.2 * len(pixel), 2.6), squeeze=False)
    for ax, (name, values) in zip(axes[0], pixel.items()):
        ax.boxplot([values[:, i] for i in range(len(channels))], tick_labels=channels)
        ax.set_title(name.upper(), fontsize=9)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _html(summary: dict, set_metrics: dict, pictures: list[tuple[str, str | None, str]]) -> str:
    from locscope.pipelines.evaluate_report import _fmt

    e = html.escape
    parts = ["<h1>Virtual staining: predicted vs real Cell Painting</h1><table>"]
    for key in ("real", "generated", "model", "class", "sampler", "steps", "n_pairs", "labelled_pairs",
                "feature_network"):
        parts.append(f"<tr><th>{e(key)}</th><td>{_fmt(summary.get(key))}</td></tr>")
    parts.append("</table><h2>Per channel (means over images)</h2><table><tr><th>metric</th>")
    parts += [f"<th>{e(c)}</th>" for c in summary["channels"]] + ["<th>all</th></tr>"]
    for name in ("pcc", "ssim", "mse", "mae", "fid"):
        if name in set_metrics:
            cells = "".join(f"<td class='num'>{_fmt(set_metrics.get(f'{name}_{c}'))}</td>" for c in summary["channels"])
            parts.append(f"<tr><td>{name.upper()}</td>{cells}<td class='num'>{_fmt(set_metrics[name])}</td></tr>")
    parts.append("</table><img src='channels.png' alt='per-image metrics by channel'><h2>Feature level</h2><table>"
                 "<tr><th>metric</th><th>value</th></tr>")
    for name, value in set_metrics.items():
        if name.split("_")[0] in ("nn", "mt", "cp", "real", "network"):
            parts.append(f"<tr><td>{e(name)}</td><td class='num'>{_fmt(value)}</td></tr>")
    parts.append("</table><h2>Conventions</h2><ul class='note'>")
    parts += [f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in summary["conventions"].items()]
    parts.append("</ul>")
    if pictures:
        parts.append("<h2>Pictures</h2><table class='pics'><tr><th>id</th><th>real</th><th>stained</th></tr>")
        for item_id, label, stem in pictures:
            caption = e(item_id) + (f"<br><span class='note'>{e(label)}</span>" if label else "")
            parts.append(f"<tr><td>{caption}</td><td><img src='pictures/{stem}_real.png' alt='real'></td>"
                         f"<td><img src='pictures/{stem}_stained.png' alt='stained'></td></tr>")
        parts.append("</table>")
    parts.append("<p class='note'>Per-image values: <a href='items.csv'>items.csv</a>; all numbers: "
                 "<a href='metrics.json'>metrics.json</a>.</p>")
    return "\n".join(parts)


__all__ = ["evaluate_stain", "is_stain_output", "read_real_stains", "read_stain_output"]
