"""``locscope evaluate``: score generated images against their real counterparts and write a report.

Both sides are a folder of images or a locscope store. Items are paired by id (a CELL-Diff sample folder's path, an
HPA ``{id}``, a file's path without suffix, or a store's item id). For every pair the pipeline computes the image metrics
of ``docs/metrics.md`` on each shared channel (SSIM, PSNR, PCC, MSE, MAE) and, on the protein channel, IoU,
MSF, CELL-E 2's metrics and (for simulator stores) the metrics against the true compartment masks. Features of
CELL-Diff's FID images are streamed into running statistics for FID-O / FID-T and kept (one small vector per item) for
the nearest-neighbour and classification metrics. The report folder gets ``metrics.json``, ``items.csv``,
``report.html`` and its pictures.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from locscope.channels import NUCLEUS, PROTEIN
from locscope.data import transforms
from locscope.errors import InputError
from locscope.metrics.celle2 import nucleus_proportion, pdf_mae
from locscope.metrics.feature_networks import (
    EncoderFeatureNetwork, FeatureNetwork, HandcraftedFeatureNetwork, InceptionFeatureNetwork,
)
from locscope.metrics.features import (
    classification_agreement, cluster_score, cross_validated_accuracy, knn_accuracy, nn_match,
)
from locscope.metrics.fid import FeatureStats, fid_rgb, frechet_distance_from_stats
from locscope.metrics.pixel import pixel_metrics
from locscope.metrics.resolution import msf
from locscope.metrics.threshold import mask_iou, threshold_mask
from locscope.metrics.truth import iou_vs_truth, localization_fidelity
from locscope.pipelines.evaluate_report import EvaluationResult, SourceItem, describe
from locscope.utils.device import resolve_device
from locscope.utils.outputs import check_output_folder, output_folder
from locscope.utils.progress import track

log = logging.getLogger(__name__)

DATA_RANGE = 1.0  # every image is scaled to [0, 1] before scoring (see `to_unit_range`)
FEATURE_BATCH = 16
# Published values, for the report's comparison column (docs/metrics.md).
PUBLISHED = {
    "iou": "CELL-Diff HPA 0.6228",
    "msf_generated_nm": "CELL-Diff HPA 642.03 nm",
    "fid_o": "CELL-Diff 23.35 (InceptionV3)",
    "fid_t": "CELL-Diff 33.56 (InceptionV3)",
    "nucleus_proportion_abs_error": "CELL-E 2 OpenCell 0.0170",
    "binary_pixel_mae": "CELL-E 2 OpenCell 0.3449",
    "pdf_mae": "CELL-E 2 OpenCell 0.3487",
    "ssim_protein": "CELL-E 2 OpenCell 0.1881",
    "classification_accuracy": "proteoscope 0.747-0.782 (generated)",
    "classification_accuracy_real": "proteoscope 0.952 (real)",
    "compartment_accuracy_generated": "proteoscope 0.747-0.782 (generated)",
    "compartment_accuracy_real": "proteoscope 0.952 (real)",
}
READOUT_LANDMARKS = (NUCLEUS, "er", "microtubules")  # landmark channels the compartment read-out may use


# ------------------------------------------------------------------------------------------------ sources
def load_feature_network(features: str | Path | None = None, device: str = "auto") -> FeatureNetwork:
    """Pick the feature network.

    Parameters
    ----------
    features : {None, 'encoder', 'handcrafted'} or path
        ``None`` (auto): locscope's image encoder when it loads, else ``handcrafted-v1`` (with a logged warning).
        ``'encoder'``: the image encoder, an error when unavailable. ``'handcrafted'``: the weight-free descriptor.
        A path: a local pytorch-fid ``pt_inception-2015-12-05-*.pth`` file (or the same tensors as safetensors) for
        InceptionV3 pool3.
    device : {'auto', 'cpu', 'cuda'}

    Returns
    -------
    FeatureNetwork
        Its ``name`` says which network was used.

    Raises
    ------
    InputError
        If a weights file is missing or unreadable, or ``'encoder'`` is requested and unavailable.
    """
    keyword = str(features).lower() if features is not None and not Path(features).exists() else None
    if keyword in ("handcrafted", "handcrafted-v1"):
        return HandcraftedFeatureNetwork()
    if features is not None and keyword != "encoder":
        return InceptionFeatureNetwork(features, device)
    from locscope.models.image_encoder import load_default_image_encoder

    try:
        return EncoderFeatureNetwork(load_default_image_encoder(device=str(resolve_device(device))))
    except InputError as err:
        if keyword == "encoder":
            raise
        log.warning("default image encoder unavailable (%s); using the handcrafted-v1 feature network", err)
        return HandcraftedFeatureNetwork()



@dataclass
class ImageSource:
    """A folder of images or a store, indexed by item id; items are read one at a time (bounded memory)."""

    path: Path
    kind: str
    ids: list[str]
    pixel_size_nm: float | None
    read: Callable[[str], SourceItem] = field(repr=False)


def to_unit_range(image: np.ndarray, where: str) -> np.ndarray:
    """An image in [0, 1] for scoring (float64; :func:`locscope.data.transforms.to_unit_range` with
    ``out_of_range="raise"``: floats outside [0, 1] and [-1, 1] or non-finite values are an InputError naming
    ``where``)."""
    return transforms.to_unit_range(image, out_of_range="raise", where=where, dtype=np.float64)


GENERATED_SAMPLE = "sample_0"  # `locscope generate` writes {name}/sample_{k}, mean, probability, landmarks, overlay
SUFFIX_PREFERENCE = (".tif", ".tiff", ".npy", ".png", ".jpg", ".jpeg")  # same stem twice: keep the lossless one


def _index_folder(root: Path) -> dict[str, list[Path]]:
    """Item id -> files (or the sample folder) for every image under ``root``.

    A CELL-Diff sample folder (``nucleus.png``, ``protein.png`` ...) is one item named by its path; so is a
    ``locscope generate`` output folder (its first sample, ``sample_0``, is the generated image; the 16-bit TIFF is
    preferred over the upscaled PNG). HPA ``{id}_{colour}`` files group into one item ``{id}``; any other image is
    an item named by its path without suffix. When one stem exists with several suffixes, the lossless one is read.
    """
    from locscope.io.images import CELLDIFF_FILE_NAMES, IMAGE_SUFFIXES, hpa_id_colour

    items: dict[str, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        folder = Path(dirpath)
        rel = folder.relative_to(root).as_posix()
        folder_id = rel if rel != "." else root.name
        by_stem: dict[str, Path] = {}
        for name in sorted(filenames, key=lambda n: SUFFIX_PREFERENCE.index(Path(n).suffix.lower())
                           if Path(n).suffix.lower() in SUFFIX_PREFERENCE else len(SUFFIX_PREFERENCE)):
            if Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith("."):
                by_stem.setdefault(name.split(".")[0], folder / name)
        if GENERATED_SAMPLE in by_stem:
            items[folder_id] = [by_stem[GENERATED_SAMPLE]]
            continue
        files = sorted(by_stem.values())
        sample_files = [p for p in files if p.name.split(".")[0].lower() in CELLDIFF_FILE_NAMES and p.suffix != ".npy"]
        if sample_files:
            items[folder_id] = [folder]  # a CELL-Diff sample folder is one item
        for path in files:
            if path in sample_files:
                continue
            hpa = hpa_id_colour(path)
            stem = hpa[0] if hpa else path.name.split(".")[0]
            items.setdefault(stem if rel == "." else f"{rel}/{stem}", []).append(path)
    return items


def _folder_source(root: Path) -> ImageSource:
    from locscope.io import read_image, read_images

    index = _index_folder(root)
    if not index:
        raise InputError(f"{root}: no images found (PNG, JPEG, TIFF or .npy files, or CELL-Diff sample folders)")

    def read(item_id: str) -> SourceItem:
        paths = index[item_id]
        records = [read_image(paths[0])] if paths[0].is_dir() else read_images(paths)
        if len(records) != 1:
            raise InputError(f"{root}: item {item_id!r} holds {len(records)} images; expected one per id")
        channels = {c: to_unit_range(a, f"{records[0].path} channel {c!r}") for c, a in records[0].channels.items()}
        return SourceItem(item_id, channels)

    first = index[next(iter(index))][0]
    pixel_size = None if first.is_dir() else read_image(first).pixel_size_nm  # as the files state it, if they do
    return ImageSource(root, "folder", list(index), pixel_size, read)


def _store_source(root: Path) -> ImageSource:
    from locscope.data.store import Store

    store = Store.open(root)
    position = {item_id: i for i, item_id in enumerate(store.ids)}

    def read(item_id: str) -> SourceItem:
        item = store[position[item_id]]
        channels = {c: to_unit_range(a, f"{root} item {item_id!r} channel {c!r}") for c, a in item["images"].items()}
        labels = list(item.get("labels", {}).get("level1", []))
        return SourceItem(item_id, channels, labels, {k: np.asarray(v, bool) for k, v in item["masks"].items()})

    pixel_size = store.attrs.get("pixel_size_nm") if isinstance(store.attrs, dict) else None
    return ImageSource(root, "store", list(store.ids), pixel_size, read)


def open_source(path: str | Path) -> ImageSource:
    """Open a folder of images or a locscope store (a folder holding ``zarr.json``).

    Raises
    ------
    InputError
        If the path is missing, empty, or an unreadable store.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: not found")
    if path.is_dir() and (path / "zarr.json").exists():
        return _store_source(path)
    if path.is_dir():
        return _folder_source(path)
    raise InputError(f"{path}: expected a folder of images or a locscope store")


# ------------------------------------------------------------------------------------------------ per item
def item_metrics(real: SourceItem, generated: SourceItem, pixel_size_nm: float | None) -> dict[str, float]:
    """Every per-item metric for one pair (NaN where a metric does not apply).

    Pixel metrics on each channel both items have (``ssim_<channel>`` ...), on [0, 1] images (data range 1);
    IoU, MSF, CELL-E 2 and ground-truth metrics on the protein channel.
    """
    from locscope.data.transforms import segment_nuclei

    row: dict[str, float] = {}
    for channel in sorted(set(real.channels) & set(generated.channels)):
        a, b = real.channels[channel], generated.channels[channel]
        if a.shape != b.shape:
            raise InputError(f"item {real.id!r} channel {channel!r}: real {a.shape} and generated {b.shape} differ")
        if min(a.shape) >= 11:
            row.update({f"{name}_{channel}": float(v) for name, v in pixel_metrics(a, b, DATA_RANGE).items()})
    if PROTEIN not in real.channels or PROTEIN not in generated.channels:
        return row
    r, g = real.channels[PROTEIN], generated.channels[PROTEIN]
    real_mask, gen_mask = threshold_mask(r, "lower_median"), threshold_mask(g, "quantile")
    row["iou"] = float(mask_iou(real_mask, gen_mask))
    unit = "nm" if pixel_size_nm else "px"
    if r.shape[0] == r.shape[1]:
        row[f"msf_real_{unit}"] = msf(r, pixel_size_nm or 1.0).resolution_nm
        row[f"msf_generated_{unit}"] = msf(g, pixel_size_nm or 1.0).resolution_nm
    row["binary_pixel_mae"] = float(np.abs(gen_mask.astype(float) - real_mask).mean())
    row["pdf_mae"] = float(pdf_mae(r, g))
    if NUCLEUS in real.channels:
        nucleus = segment_nuclei(real.channels[NUCLEUS]) > 0
        if nucleus.any():
            p_real, p_gen = float(nucleus_proportion(real_mask, nucleus)), float(nucleus_proportion(gen_mask, nucleus))
            row.update(nucleus_proportion_real=p_real, nucleus_proportion_generated=p_gen,
                       nucleus_proportion_abs_error=abs(p_gen - p_real))
    truth = [real.masks[c] for c in real.labels if c in real.masks]
    if truth:
        true_mask = np.logical_or.reduce(truth)
        row["iou_vs_truth"] = float(mask_iou(gen_mask, true_mask))
        row["iou_vs_truth_otsu"] = float(iou_vs_truth(g, true_mask, method="otsu"))
        row["localization_fidelity"] = float(localization_fidelity(g, true_mask))
    return row


def _fid_images(item: SourceItem, nucleus: np.ndarray, is_real: bool) -> dict[str, np.ndarray]:
    method = "lower_median" if is_real else "quantile"  # CELL-Diff's convention per side
    protein = item.channels[PROTEIN]
    return {
        "fid_o": fid_rgb(protein, nucleus, "image")[0],
        "fid_t": fid_rgb(protein, nucleus, "mask128", threshold_method=method)[0],
        "fid_t_255": fid_rgb(protein, nucleus, "mask255", threshold_method=method)[0],
    }


class _FeatureCollector:
    """Batches FID images through the feature network into running statistics (+ the FID-O feature vectors)."""

    def __init__(self, network: FeatureNetwork) -> None:
        self.network = network
        self.stats = {(side, kind): FeatureStats() for side in ("real", "generated")
                      for kind in ("fid_o", "fid_t", "fid_t_255")}
        self.pending: dict[tuple[str, str], list[np.ndarray]] = {key: [] for key in self.stats}
        self.vectors: dict[str, list[np.ndarray]] = {"real": [], "generated": []}

    def add(self, side: str, images: dict[str, np.ndarray]) -> None:
        for kind, rgb in images.items():
            self.pending[(side, kind)].append(rgb)
            if len(self.pending[(side, kind)]) >= FEATURE_BATCH:
                self._flush((side, kind))

    def _flush(self, key: tuple[str, str]) -> None:
        if not self.pending[key]:
            return
        feats = self.network.features(np.stack(self.pending[key]))
        self.stats[key].update(feats)
        if key[1] == "fid_o":
            self.vectors[key[0]].extend(feats.astype(np.float32))
        self.pending[key] = []

    def finish(self) -> None:
        for key in self.stats:
            self._flush(key)


class _CompartmentReadout:
    """proteoscope's headline metric with locscope's compartment read-out classifier (trained on simulated cells,
    ``docs/models/compartment-readout.md``): is the level-3 class it reads off an image one of the item's labels
    (level-1 labels mapped to level 3)? The same classifier reads the real image and the generated one, both with
    the real item's landmarks (nucleus, ER, microtubules, those it has)."""

    def __init__(self, model: str | None, device: str) -> None:
        from locscope.pipelines.readout import load_readout

        self.classifier = load_readout(model, device=resolve_device(device)) if model else None
        self.right: dict[str, list[float]] = {"real": [], "generated": []}

    def add(self, real: SourceItem, generated: SourceItem) -> None:
        from locscope.data import ontology
        from locscope.pipelines.readout import classify_level3

        if self.classifier is None or PROTEIN not in real.channels or PROTEIN not in generated.channels:
            return
        try:
            truth = {ontology.to_level3(label) for label in real.labels}
        except (KeyError, ValueError):
            return  # labels outside the ontology: nothing to compare with
        if not truth or real.channels[PROTEIN].shape != generated.channels[PROTEIN].shape:
            return
        names = [c for c in READOUT_LANDMARKS if c in real.channels]
        landmarks = np.stack([real.channels[c] for c in names]) if names else \
            np.zeros((0, *real.channels[PROTEIN].shape), np.float32)
        images = np.stack([real.channels[PROTEIN], generated.channels[PROTEIN]])
        drawn = classify_level3(self.classifier, images, landmarks, names).argmax(1)
        for side, index in zip(("real", "generated"), drawn):
            self.right[side].append(float(self.classifier.config.classes[index] in truth))

    def metrics(self) -> dict[str, float | None]:
        if self.classifier is None or not self.right["real"]:
            return {}
        return {f"compartment_accuracy_{side}": float(np.mean(v)) for side, v in self.right.items()}


# ------------------------------------------------------------------------------------------------ the verb
def _set_metrics(collector: _FeatureCollector, ids: list[str], labels: list[str | None], seed: int
                 ) -> tuple[dict[str, float | None], dict[str, Any] | None]:
    out: dict[str, float | None] = {}
    for kind in ("fid_o", "fid_t", "fid_t_255"):
        real, gen = collector.stats[("real", kind)], collector.stats[("generated", kind)]
        out[kind] = frechet_distance_from_stats(real, gen) if real.count >= 2 and gen.count >= 2 else None
    real_f, gen_f = np.asarray(collector.vectors["real"]), np.asarray(collector.vectors["generated"])
    if len(ids) < 2:
        return out, None
    # guided-I2I: is a generated image's nearest real image (cosine) its own counterpart (label = item id)?
    out["nn_match_top1"] = float(nn_match(gen_f, real_f, ids, ids, k=1).mean())
    out["nn_match_top5"] = float(nn_match(gen_f, real_f, ids, ids, k=min(5, len(ids))).mean())
    confusion = None
    known = [i for i, label in enumerate(labels) if label is not None]
    classes = sorted({labels[i] for i in known})
    if len(classes) >= 2 and len(known) >= 4:
        lab = [labels[i] for i in known]
        out["knn_accuracy"] = knn_accuracy(gen_f[known], real_f[known], lab, lab, k=min(5, len(known)))
        agreement = classification_agreement(real_f[known], lab, gen_f[known], lab, seed=seed)
        out["classification_accuracy"] = agreement.accuracy
        out["classification_accuracy_real"] = cross_validated_accuracy(real_f[known], lab, seed=seed)
        from sklearn.decomposition import PCA

        both = PCA(n_components=2, random_state=seed).fit(real_f[known])
        out["cluster_score_real"] = cluster_score(both.transform(real_f[known]), lab)
        out["cluster_score_generated"] = cluster_score(both.transform(gen_f[known]), lab)
        confusion = {"classes": agreement.classes, "matrix": agreement.confusion.tolist()}
    return out, confusion


def evaluate(
    real: str | Path,
    generated: str | Path,
    out_dir: str | Path,
    *,
    pixel_size_nm: float | None = None,
    features: str | Path | None = None,
    device: str = "auto",
    seed: int = 0,
    max_pictures: int = 12,
    readout: str | None = "compartment-readout",
    progress: bool = True,
    overwrite: bool = False,
) -> EvaluationResult:
    """Score ``generated`` against ``real`` (folders or stores), pairing items by id; write a report folder.

    Parameters
    ----------
    real, generated : path
        Folder of images (CELL-Diff sample folders, HPA channel files, PNG/TIFF/npy images) or a locscope store.
        A ``locscope stain`` output as ``generated`` is scored as virtual staining
        (:func:`locscope.pipelines.evaluate_stain.evaluate_stain`: per-channel PCC / SSIM / MSE / MAE, FID and the
        feature-level metrics against a store or folder of real Cell Painting images).
    out_dir : path
        Report folder (written atomically): ``metrics.json``, ``items.csv``, ``report.html``, ``pictures/``.
    pixel_size_nm : float, optional
        Pixel size for MSF (HPA 320, OpenCell 206); default: the store's or the files' own, else MSF is in pixels.
    features : {None, 'encoder', 'handcrafted'} or path
        Feature network (:func:`load_feature_network`): a local pytorch-fid
        InceptionV3 file, locscope's image encoder or the handcrafted descriptor; default: the encoder when it loads,
        else handcrafted (the report names the network).
    device : {'auto', 'cpu', 'cuda'}
    seed : int
        Seed of the classifier used for classification agreement.
    max_pictures : int
        Number of pairs shown as pictures in the report.
    readout : str or None
        Compartment read-out classifier (a bundled name or a directory) for proteoscope's headline metric on labelled
        real stores: ``compartment_accuracy_real`` / ``compartment_accuracy_generated``, the share of items whose real
        / generated protein image it reads as one of the item's level-3 classes; None (or not installed): skipped.
    progress : bool
        Show a progress bar.
    overwrite : bool
        Replace an earlier evaluation report in ``out_dir`` (output-folder policy, :mod:`locscope.utils.outputs`).

    Returns
    -------
    EvaluationResult

    Raises
    ------
    InputError
        Missing sources, no common ids, mismatched shapes, an existing non-report ``out_dir``.
    """
    from locscope.pipelines.evaluate_report import item_pictures, write_report

    from locscope.pipelines.evaluate_stain import evaluate_stain, is_stain_output

    out_dir = check_output_folder(out_dir, "evaluate", overwrite=overwrite, known_files=("metrics.json",))
    if is_stain_output(generated):  # predicted Cell Painting channels: the virtual-staining metrics
        return evaluate_stain(real, generated, out_dir, network=load_feature_network(features, device), seed=seed,
                              max_pictures=max_pictures, progress=progress, overwrite=overwrite)
    real_src, gen_src = open_source(real), open_source(generated)
    gen_ids = set(gen_src.ids)
    ids = [i for i in real_src.ids if i in gen_ids]
    if not ids:
        raise InputError(f"no item ids in common between {real_src.path} (e.g. {real_src.ids[:3]}) and "
                         f"{gen_src.path} (e.g. {gen_src.ids[:3]})")
    pixel_size_nm = pixel_size_nm or real_src.pixel_size_nm or gen_src.pixel_size_nm
    network = load_feature_network(features, device)
    collector = _FeatureCollector(network)
    compartments = _CompartmentReadout(readout, device)
    rows, labels, pictures = [], [], []
    with output_folder(out_dir, "evaluate", overwrite=overwrite, known_files=("metrics.json",)) as tmp:
        (tmp / "pictures").mkdir()
        for n, item_id in enumerate(track(ids, "Evaluating", enabled=progress)):
            r, g = real_src.read(item_id), gen_src.read(item_id)
            rows.append({"id": item_id, **item_metrics(r, g, pixel_size_nm)})
            labels.append(r.labels[0] if r.labels else None)
            if r.labels:
                compartments.add(r, g)
            if PROTEIN in r.channels and PROTEIN in g.channels:
                nucleus = r.channels.get(NUCLEUS, np.zeros_like(r.channels[PROTEIN]))
                collector.add("real", _fid_images(r, nucleus, True))
                collector.add("generated", _fid_images(g, g.channels.get(NUCLEUS, nucleus), False))
                if n < max_pictures:
                    pictures.append(item_pictures(r, g, tmp / "pictures", n))
        collector.finish()
        measured = [row["id"] for row in rows if "iou" in row]
        set_metrics, confusion = _set_metrics(collector, measured, [lab for lab, row in zip(labels, rows) if "iou" in row], seed)
        set_metrics.update(compartments.metrics())
        names = sorted({k for row in rows for k in row if k != "id"})
        per_metric = {name: describe([row[name] for row in rows if name in row]) for name in names}
        summary = {
            "real": str(real_src.path), "generated": str(gen_src.path), "real_kind": real_src.kind,
            "generated_kind": gen_src.kind, "n_pairs": len(ids), "n_real_only": len(real_src.ids) - len(ids),
            "n_generated_only": len(gen_ids - set(ids)), "feature_network": network.name,
            "feature_dim": network.feature_dim, "pixel_size_nm": pixel_size_nm, "data_range": DATA_RANGE,
            "seed": seed,
            "conventions": {
                "scaling": "integer images / dtype max, [-1, 1] floats -> (x + 1) / 2; metrics on [0, 1], data range 1",
                "iou": "real > torch.median (lower middle), generated > torch.quantile(0.5) (interpolated)",
                "msf": "total intensity 1000, |fftshift(FFT2)|^2 / N^2, floor-distance radial sum, first bin < 1e-3",
                "fid_t": "published: G = median-threshold mask stored as 0/128; fid_t_255 stores it as 0/255",
                "nucleus_mask": "Otsu + watershed segmentation of the real nucleus channel",
                "nn_match": "label = item id: is the nearest real image (cosine) the generated image's own pair",
            },
        }
        result = EvaluationResult(summary, set_metrics, per_metric, rows, confusion, out_dir)
        write_report(result, tmp, pictures, PUBLISHED)
    return dataclasses.replace(result, out_dir=out_dir)
