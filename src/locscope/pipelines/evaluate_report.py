"""The files of an evaluation report: ``metrics.json``, ``items.csv``, pictures, histograms and ``report.html``.

Pictures are small PNGs per pair (real | generated | |difference| | real mask | generated mask | mask overlap) written
with Pillow; histograms and the confusion matrix are matplotlib figures (Agg backend, no display needed).
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from locscope.channels import PROTEIN
from locscope.metrics.threshold import threshold_mask
from locscope.report.html import html_page
from locscope.report.images import write_png
from locscope.utils.atomic import write_json

@dataclass
class SourceItem:
    """One item of a source: channel images scaled to [0, 1], plus labels and masks when a store has them."""

    id: str
    channels: dict[str, np.ndarray]
    labels: list[str] = field(default_factory=list)
    masks: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class EvaluationResult:
    """What ``evaluate`` measured (also written to ``metrics.json`` / ``items.csv``)."""

    summary: dict[str, Any]
    set_metrics: dict[str, float | None]
    per_metric: dict[str, dict[str, float | int | None]]
    rows: list[dict[str, Any]]
    confusion: dict[str, Any] | None
    out_dir: Path


def describe(values: list[float]) -> dict[str, float | int | None]:
    """Mean, std, median, min, max and counts of the finite ``values``."""
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    stat = (lambda f: float(f(finite)) if finite.size else None)
    return {"mean": stat(np.mean), "std": stat(np.std), "median": stat(np.median), "min": stat(np.min),
            "max": stat(np.max), "n": int(finite.size), "n_not_finite": int(arr.size - finite.size)}


HISTOGRAM_METRICS = (
    "iou", "ssim_protein", "pcc_protein", "psnr_protein", "mae_protein", "msf_generated_nm", "msf_generated_px",
    "nucleus_proportion_abs_error", "binary_pixel_mae", "pdf_mae", "iou_vs_truth", "iou_vs_truth_otsu",
    "localization_fidelity",
)
PICTURE_COLUMNS = (
    ("real", "real protein"),
    ("generated", "generated protein"),
    ("difference", "|generated - real|"),
    ("real_mask", "real > lower median"),
    ("generated_mask", "generated > quantile 0.5"),
    ("overlap", "masks: both / real only / generated only"),
)


def item_pictures(real: SourceItem, generated: SourceItem, folder: Path, index: int) -> dict[str, str]:
    """Write the picture row of one pair into ``folder``; return ``{column: file name}`` plus the item id.

    Both protein images are shown on the same scale (their joint maximum), so brightness is comparable.
    """
    from matplotlib import colormaps

    r, g = real.channels[PROTEIN], generated.channels[PROTEIN]
    scale = max(float(r.max()), float(g.max()), 1e-12)
    diff = np.abs(g - r) / scale
    real_mask, gen_mask = threshold_mask(r, "lower_median"), threshold_mask(g, "quantile")
    overlap = np.zeros((*r.shape, 3), np.uint8)
    overlap[real_mask & gen_mask] = (255, 255, 255)
    overlap[real_mask & ~gen_mask] = (230, 50, 200)   # magenta: real only
    overlap[~real_mask & gen_mask] = (60, 220, 90)    # green: generated only
    planes = {
        "real": np.clip(r / scale * 255, 0, 255).astype(np.uint8),
        "generated": np.clip(g / scale * 255, 0, 255).astype(np.uint8),
        "difference": (colormaps["magma"](diff)[..., :3] * 255).astype(np.uint8),
        "real_mask": real_mask.astype(np.uint8) * 255,
        "generated_mask": gen_mask.astype(np.uint8) * 255,
        "overlap": overlap,
    }
    files = {"id": real.id}
    for column, plane in planes.items():
        name = f"{index:04d}_{column}.png"
        write_png(folder / name, plane)
        files[column] = f"pictures/{name}"
    return files


def _histograms(result: EvaluationResult, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in HISTOGRAM_METRICS if n in result.per_metric and result.per_metric[n]["n"]]
    names += [n for n in result.per_metric if n.startswith("ssim_") and n not in names and result.per_metric[n]["n"]]
    names = names[:12]  # a figure per metric would be slow to draw and hard to read; the CSV has every value
    if not names:
        return False
    cols = 4
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        values = np.asarray([row.get(name, np.nan) for row in result.rows], dtype=float)
        values = values[np.isfinite(values)]
        # values equal up to rounding (a Pearson of 1 - 2e-16 beside 1.0) have no range to split into bins
        spread = np.ptp(values) if len(values) else 0.0
        flat = spread <= 1e-9 * max(1.0, float(np.abs(values).max(initial=0.0)))
        ax.hist(values, bins=1 if flat else min(20, max(5, len(values))), color="#4477aa")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.08, top=0.92, wspace=0.3, hspace=0.6)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _confusion_png(confusion: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(confusion["matrix"])
    classes = confusion["classes"]
    size = 1.5 + 0.5 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true compartment")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=8, color="black" if v < matrix.max() / 2 else "white")
    ax.set_title("classifier trained on real features", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if not np.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    return html.escape(str(value))


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _write_csv(result: EvaluationResult, path: Path) -> None:
    names = ["id"] + list(result.per_metric)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=names, extrasaction="ignore")
    writer.writeheader()
    for row in result.rows:
        writer.writerow({k: (f"{v:.10g}" if isinstance(v, float) else v) for k, v in row.items()})
    path.write_text(buffer.getvalue())


def write_report(result: EvaluationResult, folder: Path, pictures: list[dict[str, str]],
                 published: dict[str, str]) -> None:
    """Write ``metrics.json``, ``items.csv``, ``histograms.png``, ``confusion.png`` and ``report.html`` into
    ``folder`` (the caller renames the folder into place atomically)."""
    write_json(folder / "metrics.json", {
        "summary": result.summary,
        "set_metrics": {k: _finite_or_none(v) for k, v in result.set_metrics.items()},
        "per_item_metrics": result.per_metric,
        "confusion": result.confusion,
    })
    _write_csv(result, folder / "items.csv")
    has_hist = _histograms(result, folder / "histograms.png")
    if result.confusion:
        _confusion_png(result.confusion, folder / "confusion.png")
    (folder / "report.html").write_text(_html(result, pictures, published, has_hist))


#: The evaluation page's own rules (bordered number tables, a picture grid), after the shared report style.
EVALUATION_STYLE = ("body{max-width:1400px} table{margin:8px 0 20px} td,th{border:1px solid #ccc;padding:3px 8px;"
                    "font-size:13px} th{background:#f0f0f0} td.num{text-align:right;font-variant-numeric:tabular-nums}"
                    " .pics img{width:150px;height:150px;display:block} .pics td{padding:2px}"
                    " .note{color:#555;font-size:13px} code{background:#f4f4f4;padding:0 3px;font-size:inherit}")


def _html(result: EvaluationResult, pictures: list[dict[str, str]], published: dict[str, str], has_hist: bool) -> str:
    s = result.summary
    e = html.escape
    parts = [
        "<h1>locscope evaluation report</h1>",
        "<table>",
    ]
    for key in ("real", "generated", "n_pairs", "n_real_only", "n_generated_only", "feature_network", "feature_dim",
                "pixel_size_nm", "data_range", "seed"):
        parts.append(f"<tr><th>{e(key)}</th><td>{_fmt(s.get(key))}</td></tr>")
    parts.append("</table><h2>Conventions</h2><ul class='note'>")
    parts += [f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in s["conventions"].items()]
    parts.append("</ul><h2>Set metrics</h2>")
    parts.append(f"<p class='note'>Features: <code>{e(s['feature_network'])}</code>. FIDs from different feature "
                 "networks are not comparable with each other or with published InceptionV3 values.</p>")
    parts.append("<table><tr><th>metric</th><th>value</th><th>published</th></tr>")
    for name, value in result.set_metrics.items():
        parts.append(f"<tr><td>{e(name)}</td><td class='num'>{_fmt(value)}</td><td>{e(published.get(name, ''))}</td></tr>")
    parts.append("</table><h2>Per-item metrics</h2><table><tr><th>metric</th><th>mean</th><th>std</th><th>median</th>"
                 "<th>min</th><th>max</th><th>n</th><th>not finite</th><th>published</th></tr>")
    for name, d in result.per_metric.items():
        cells = "".join(f"<td class='num'>{_fmt(d[k])}</td>" for k in ("mean", "std", "median", "min", "max", "n",
                                                                        "n_not_finite"))
        parts.append(f"<tr><td>{e(name)}</td>{cells}<td>{e(published.get(name, ''))}</td></tr>")
    parts.append("</table>")
    if has_hist:
        parts.append("<h2>Distributions</h2><img src='histograms.png' alt='histograms of the per-item metrics'>")
    if result.confusion:
        parts.append("<h2>Compartment classification of generated images</h2>"
                     "<img src='confusion.png' alt='confusion matrix'>")
    if pictures:
        parts.append(f"<h2>Pictures (first {len(pictures)} pairs)</h2><table class='pics'><tr><th>id</th>")
        parts += [f"<th>{e(title)}</th>" for _, title in PICTURE_COLUMNS]
        parts.append("</tr>")
        by_id = {row["id"]: row for row in result.rows}
        for pic in pictures:
            row = by_id.get(pic["id"], {})
            caption = f"{e(pic['id'])}<br><span class='note'>IoU {_fmt(row.get('iou'))}<br>" \
                      f"SSIM {_fmt(row.get('ssim_protein'))}<br>PCC {_fmt(row.get('pcc_protein'))}</span>"
            cells = "".join(f"<td><img src='{e(pic[c])}' alt='{e(c)}'></td>" for c, _ in PICTURE_COLUMNS)
            parts.append(f"<tr><td>{caption}</td>{cells}</tr>")
        parts.append("</table>")
    parts.append("<p class='note'>Per-item values: <a href='items.csv'>items.csv</a>; all numbers: "
                 "<a href='metrics.json'>metrics.json</a>.</p>")
    return html_page("locscope evaluation", "\n".join(parts), style=EVALUATION_STYLE)
