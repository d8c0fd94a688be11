"""``locscope stain``: brightfield planes -> predicted Cell Painting channels (class-guided image-to-image diffusion).

The loop: read the brightfield planes (one stack per image, or one file per plane), z-score each plane and clip at
+-15 (the published preprocessing), pad to the network's size multiple, draw ``samples`` predictions per image with the
chosen sampler and guidance, and write per image: one 16-bit TIFF per predicted channel, a colour composite PNG, the
input PNG, plus ``summary.json`` and ``report.html`` for the run. Everything is written into a temporary folder that
replaces ``out_dir`` only when the run succeeded.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from locscope.data.transforms import standardize
from locscope.diffusion.stain_sampler import DEFAULT_STEPS, SAMPLERS, LinearSchedule, sample_stain
from locscope.errors import ArgumentError, InputError, check_at_least
from locscope.io.images import read_planes
from locscope.models import hub
from locscope.models.stain import StainClassifier, StainUNet
from locscope.report.html import html_page
from locscope.report.images import write_png, write_tiff
from locscope.utils.atomic import write_json, write_text
from locscope.utils.filenames import file_name_for_id
from locscope.utils.outputs import check_output_folder, output_folder
from locscope.utils.device import resolve_device
from locscope.utils.progress import note

DEFAULT_MODEL = "stain-tiny"
CUTOFF = 15.0
#: Display colours of the Cell Painting channels in the composite (RGB weights).
COLOURS = {"dna": (0.0, 0.35, 1.0), "rna": (0.0, 1.0, 1.0), "er": (0.0, 1.0, 0.0), "agp": (1.0, 0.0, 0.0),
           "mito": (1.0, 0.0, 1.0)}
IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg"}
STAIN_FILES = ("summary.json", "report.html")  # every stain output holds these

#: The default sampler: ancestral DDPM respaced to 25 steps. On held-out simulator cells it matches the full 1000-step
#: ancestral sampler's PCC (0.558 vs 0.560) at 1/40 of its network evaluations, while DDIM and DPM-Solver++ level off
#: 0.14 below it at any step count (docs/benchmarks.md, "Sampler speed at equal PCC").
DEFAULT_SAMPLER = "ddpm"
DEFAULT_DDPM_STEPS = 25


@dataclass
class StainModels:
    """A denoiser and, when the model folder has one (``classifier/``), its noisy classifier."""

    denoiser: StainUNet
    classifier: StainClassifier | None
    name: str


def load_stain_models(model: str | Path | None = None, device: str | torch.device = "cpu") -> StainModels:
    """Resolve ``model`` (bundled name, locscope model folder or released ``*_Network.pth``) through the hub."""
    ref = hub.resolve(model, default=DEFAULT_MODEL, families=("stain",))
    denoiser = ref.load(device)
    classifier_dir = ref.directory / "classifier"
    classifier = None
    if ref.path.is_dir() and (classifier_dir / "config.json").is_file():
        classifier = StainClassifier.from_pretrained(classifier_dir, device=device)
    return StainModels(denoiser, classifier, ref.name)


def read_brightfield(paths: Sequence[str | Path], planes: int) -> list[tuple[str, np.ndarray]]:
    """Group brightfield files into images of ``planes`` planes each.

    Parameters
    ----------
    paths : sequence of path
        Files, folders whose image files (sorted by name) are used, or dataset stores (every item's ``brightfield``
        channel, one plane per cell).
    planes : int
        Planes per image the model expects.

    Returns
    -------
    list of (name, ndarray)
        Image name (the file stem, or the first file's stem for one-file-per-plane input) and its ``(planes, H, W)``
        float32 planes. Either every file is a stack of ``planes`` planes (one image each), or every file holds one
        plane and consecutive groups of ``planes`` files form the images.

    Raises
    ------
    InputError
        No files, a plane count that does not fit, or planes of different sizes (naming the files).
    """
    files: list[Path] = []
    store_images: list[tuple[str, np.ndarray]] = []
    for path in map(Path, paths):
        if path.is_dir() and (path / "zarr.json").is_file():  # a dataset store: every cell's brightfield channel
            store_images.extend(_store_brightfield(path, planes))
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
            if not found:
                raise InputError(f"{path}: no image files (.tif, .tiff, .png, .jpg) in this folder")
            files.extend(found)
        else:
            files.append(path)
    if store_images:
        if files:
            raise InputError("give either dataset stores or brightfield image files, not both")
        sizes = {img.shape[1:] for _, img in store_images}
        if len(sizes) > 1:
            raise InputError(f"brightfield images differ in size ({', '.join(f'{h}x{w}' for h, w in sorted(sizes))}); "
                             "stain images of one size per run")
        return store_images
    if not files:
        raise InputError("no brightfield files given")
    stacks = [(f, read_planes(f)) for f in files]
    counts = {f: s.shape[0] for f, s in stacks}
    images: list[tuple[str, np.ndarray, list[Path]]] = []
    if all(n == planes for n in counts.values()):
        images = [(f.stem, s, [f]) for f, s in stacks]
    elif all(n == 1 for n in counts.values()) and len(files) % planes == 0:
        for i in range(0, len(files), planes):
            group = stacks[i:i + planes]
            shapes = {s.shape[1:] for _, s in group}
            if len(shapes) > 1:
                listing = ", ".join(f"{f.name} {s.shape[1]}x{s.shape[2]}" for f, s in group)
                raise InputError(f"brightfield planes of one image differ in size: {listing}")
            images.append((group[0][0].stem, np.concatenate([s for _, s in group]), [f for f, _ in group]))
    else:
        first_bad = next((f for f, n in counts.items() if n != planes), files[0])
        raise InputError(
            f"{first_bad}: {counts[first_bad]} brightfield plane(s); the model takes {planes} per image (give stacks "
            f"of {planes} planes, or one file per plane in groups of {planes}; {len(files)} file(s) given)")
    sizes = {img.shape[1:] for _, img, _ in images}
    if len(sizes) > 1:
        listing = ", ".join(f"{files_[0].name} {img.shape[1]}x{img.shape[2]}" for _, img, files_ in images)
        raise InputError(f"brightfield images differ in size ({listing}); stain images of one size per run")
    return [(name, img.astype(np.float32)) for name, img, _ in images]


def _store_brightfield(path: Path, planes: int) -> list[tuple[str, np.ndarray]]:
    """The ``brightfield`` channel of every item of a dataset store (one plane per cell), named by item id."""
    from locscope.data.store import Store

    store = Store.open(path)
    if "brightfield" not in store.channels:
        raise InputError(f"{path}: store has no brightfield channel (channels: {', '.join(store.channels)})")
    if planes != 1:
        raise InputError(f"{path}: a store holds 1 brightfield plane per cell; the model takes {planes} per image")
    return [(str(store[i]["id"]), store[i]["images"]["brightfield"][None].astype(np.float32))
            for i in range(len(store))]


def class_index(denoiser: StainUNet, class_name: str | None) -> int:
    """The index of ``class_name`` (None: the null class).

    Raises
    ------
    ArgumentError
        For a name that is not one of the model's classes (listing them).
    """
    classes = denoiser.config.classes
    if class_name is None:
        return denoiser.config.null_class
    if class_name not in classes:
        known = ", ".join(classes) if classes else "none (an unlabelled model)"
        raise ArgumentError("class_name", f"{class_name!r}: not a class of this model; known classes: {known}")
    return classes.index(class_name)


def check_options(*, sampler: str, samples: int, steps: int | None, classifier_scale: float, guidance: float | None,
                  class_name: str | None) -> None:
    """Validate the sampling options before anything is read or written (:class:`~locscope.errors.ArgumentError`)."""
    if sampler not in SAMPLERS:
        raise ArgumentError("sampler", f"{sampler}: accepted values are {', '.join(SAMPLERS)}")
    check_at_least("samples", samples)
    check_at_least("steps", steps)
    if classifier_scale < 0:
        raise ArgumentError("classifier_scale", f"{classifier_scale}: must be >= 0")
    if (classifier_scale or guidance is not None) and class_name is None:
        raise ArgumentError("classifier_scale", "/ guidance steer toward a class: give class_name",
                            mentions=("guidance", "class_name"))


def check_classifier(models: StainModels, classifier_scale: float) -> None:
    """Classifier guidance needs a classifier beside the denoiser."""
    if classifier_scale and models.classifier is None:
        raise ArgumentError("classifier_scale", f"{classifier_scale}: model {models.name} has no classifier (a "
                                                "classifier/ folder beside its weights)")


def predict_stains(models: StainModels, brightfield: torch.Tensor, class_label: int, *, sampler: str = "ddim",
                   steps: int | None = None, classifier_scale: float = 0.0, guidance: float | None = None,
                   samples: int = 1, generator: torch.Generator | None = None, progress: bool = False):
    """Virtual stains of standardized brightfield ``(N, P, H, W)``: returns ``(N, samples, C, H, W)`` z-scored
    predictions and the :class:`~locscope.diffusion.stain_sampler.StainSamples` of the run."""
    denoiser, classifier = models.denoiser, models.classifier
    cfg = denoiser.config
    n, _, height, width = brightfield.shape
    multiple = cfg.size_multiple
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    condition = F.pad(brightfield, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else brightfield
    condition = condition.repeat_interleave(samples, dim=0)  # rows [image0 x K, image1 x K, ...]
    batch = condition.shape[0]
    labels = torch.full((batch,), class_label, dtype=torch.long, device=condition.device)

    def denoise(y: torch.Tensor, gamma: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        cond = condition.repeat(y.shape[0] // batch, 1, 1, 1)
        return denoiser(cond, y, gamma, k)

    gradient = None
    if classifier_scale:
        def gradient(y: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
            return classifier.gradient(condition if classifier.config.use_condition else None, y, gamma, labels)

    schedule = LinearSchedule(cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end)
    out = sample_stain(denoise, (batch, len(cfg.target_channels), condition.shape[2], condition.shape[3]), schedule,
                       labels, cfg.null_class, sampler=sampler, steps=steps, classifier_gradient=gradient,
                       classifier_scale=classifier_scale, guidance=guidance, cutoff=cfg.pixel_cutoff,
                       generator=generator, progress=progress)
    images = out.images[:, :, :height, :width].reshape(n, samples, len(cfg.target_channels), height, width)
    return images, out


@dataclass
class StainResult:
    """What :func:`run_stain` wrote."""

    out_dir: Path
    report: Path
    images: list[str]
    network_evaluations: int
    classifier_evaluations: int
    seconds_per_image: float


def to_uint16(z: np.ndarray, cutoff: float = CUTOFF) -> np.ndarray:
    """z-scores in [-cutoff, cutoff] -> uint16 linearly (``z = v / 65535 * 2 cutoff - cutoff``)."""
    return np.round((np.clip(z, -cutoff, cutoff) + cutoff) / (2 * cutoff) * 65535).astype(np.uint16)


def _display(z: np.ndarray) -> np.ndarray:
    """A z-scored plane -> [0, 1] for display (0.5th..99.8th percentile)."""
    low, high = np.percentile(z, [0.5, 99.8])
    return np.clip((z - low) / max(high - low, 1e-6), 0, 1)


def composite(channels: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Additive colour composite ``(H, W, 3)`` in [0, 1] of z-scored ``(C, H, W)`` channels."""
    rgb = np.zeros(channels.shape[1:] + (3,), np.float32)
    for plane, name in zip(channels, names):
        rgb += _display(plane)[..., None] * np.asarray(COLOURS.get(name, (1.0, 1.0, 1.0)), np.float32)
    return np.clip(rgb, 0, 1)


def run_stain(brightfield: Sequence[str | Path], out_dir: str | Path, *, class_name: str | None = None,
              classifier_scale: float = 0.0, guidance: float | None = None, sampler: str = DEFAULT_SAMPLER,
              steps: int | None = None, samples: int = 1, model: str | Path | StainModels | None = None, seed: int = 0,
              device: str = "cpu", overwrite: bool = False, progress: bool = True) -> StainResult:
    """Stain brightfield images and write TIFFs, composites, ``summary.json`` and ``report.html`` to ``out_dir``.

    Parameters
    ----------
    brightfield : sequence of path
        Brightfield stacks or one-plane files (see :func:`read_brightfield`), or folders of them.
    out_dir : path
        Output folder: new or empty, or an earlier ``stain`` output with ``overwrite`` (the new output is written
        beside it and swapped in when complete; see :mod:`locscope.utils.outputs`).
    class_name : str, optional
        The perturbation / target class (None: unconditioned, the null class).
    classifier_scale : float
        Classifier-guidance scale ``s`` (needs ``class_name`` and a model with a classifier).
    guidance : float, optional
        Classifier-free guidance weight (needs ``class_name``).
    sampler : {'ddpm', 'ddim', 'dpmsolver'}
        ``ddpm`` is the published ancestral sampler, respaced to ``steps``.
    steps : int, optional
        Sampler steps (DDPM 25, DDIM 50, DPM-Solver++ 20; DDPM with the model's T steps is the published procedure).
    samples : int
        Predictions per image.
    model : str, path or StainModels, optional
        Bundled name, model folder or released ``*_Network.pth`` (default ``stain-tiny``), or loaded models.
    seed : int
    device : {'auto', 'cpu', 'cuda'}
    overwrite : bool
        Replace an earlier ``stain`` output in ``out_dir``.

    Returns
    -------
    StainResult
        The folders written (one per brightfield image: a 16-bit TIFF per channel, z-scores over [-15, 15]; a
        composite PNG) and the network evaluations per image.

    Raises
    ------
    ArgumentError
        Bad sampler / samples / steps / guidance options, an unknown ``class_name``, classifier guidance without a
        classifier (naming the argument).
    InputError
        Unreadable or mismatched brightfield files.
    """
    check_output_folder(out_dir, "stain", overwrite=overwrite, known_files=STAIN_FILES)
    check_options(sampler=sampler, samples=samples, steps=steps, classifier_scale=classifier_scale,
                  guidance=guidance, class_name=class_name)
    device_ = resolve_device(device)
    if isinstance(model, StainModels):
        models = StainModels(model.denoiser.to(device_).eval(), model.classifier and model.classifier.to(device_).eval(),
                             model.name)
    else:
        models = load_stain_models(model, device_)
    cfg = models.denoiser.config
    label = class_index(models.denoiser, class_name)
    check_classifier(models, classifier_scale)
    if steps is None and sampler == "ddpm":
        steps = min(DEFAULT_DDPM_STEPS, cfg.num_train_timesteps)
    if steps is not None and steps > cfg.num_train_timesteps:
        raise ArgumentError("steps", f"={steps}: the model has {cfg.num_train_timesteps} diffusion steps")
    images = read_brightfield(brightfield, cfg.condition_planes)
    if len(images[0][1].shape) != 3 or min(images[0][1].shape[1:]) < 2:
        raise InputError(f"{images[0][0]}: brightfield image too small {images[0][1].shape[1:]}")
    raw = np.stack([img for _, img in images])  # (N, P, H, W)
    condition = torch.from_numpy(standardize(raw, clip=cfg.pixel_cutoff)).to(device_)

    generator = torch.Generator(device=device_).manual_seed(seed)
    start = time.perf_counter()
    predictions, stats = predict_stains(models, condition, label, sampler=sampler, steps=steps,
                                        classifier_scale=classifier_scale, guidance=guidance, samples=samples,
                                        generator=generator, progress=progress)
    seconds = time.perf_counter() - start
    predictions = predictions.cpu().numpy()

    out = Path(out_dir)
    names = list(cfg.target_channels)
    used: set[str] = set()
    rows = []
    with output_folder(out, "stain", overwrite=overwrite, known_files=STAIN_FILES) as tmp:
        for (name, planes), prediction, cond in zip(images, predictions, condition.cpu().numpy()):
            folder = file_name_for_id(name)
            while folder in used:
                folder = file_name_for_id(folder + "~")
            used.add(folder)
            (tmp / folder).mkdir()
            write_png(tmp / folder / "brightfield.png", _display(cond.mean(0)))
            for k, sample in enumerate(prediction):
                suffix = f"_sample{k}" if samples > 1 else ""
                for channel, plane in zip(names, sample):
                    write_tiff(tmp / folder / f"{channel}{suffix}.tif", to_uint16(plane))
                write_png(tmp / folder / f"composite{suffix}.png", composite(sample, names))
            rows.append({"image": name, "folder": folder, "planes": int(planes.shape[0]),
                         "height": int(planes.shape[1]), "width": int(planes.shape[2])})
        summary = {
            "model": models.name, "class": class_name, "class_index": label, "sampler": sampler,
            "steps": stats.steps, "samples": samples, "classifier_scale": classifier_scale, "guidance": guidance,
            "seed": seed, "channels": names, "network_evaluations_per_image": stats.network_evaluations,
            "classifier_evaluations_per_image": stats.classifier_evaluations,
            "seconds_per_image": seconds / max(1, len(images) * samples), "images": rows,
            "tiff_encoding": f"uint16 v <-> z-score v / 65535 * {2 * CUTOFF:g} - {CUTOFF:g}",
        }
        write_json(tmp / "summary.json", summary)
        write_text(tmp / "report.html", _report(summary, samples))
    note(f"stained {len(images)} image(s) x {samples} sample(s): {stats.network_evaluations} network evaluations "
         f"per image ({sampler}, {stats.steps} steps) -> {out}", enabled=progress)
    return StainResult(out, out / "report.html", [r["folder"] for r in rows], stats.network_evaluations,
                       stats.classifier_evaluations, summary["seconds_per_image"])


def _report(summary: dict, samples: int) -> str:
    esc = html.escape
    settings = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(summary[k]))}</td></tr>" for k in (
        "model", "class", "sampler", "steps", "samples", "classifier_scale", "guidance", "seed",
        "network_evaluations_per_image", "classifier_evaluations_per_image", "seconds_per_image", "tiff_encoding"))
    legend = ", ".join(f"{c}: rgb{COLOURS.get(c, (1, 1, 1))}" for c in summary["channels"])
    blocks = []
    for row in summary["images"]:
        folder = esc(row["folder"])
        cells = [f'<figure><img src="{folder}/brightfield.png" width="256"><figcaption>brightfield (mean of '
                 f'{row["planes"]} planes)</figcaption></figure>']
        for k in range(samples):
            suffix = f"_sample{k}" if samples > 1 else ""
            cells.append(f'<figure><img src="{folder}/composite{suffix}.png" width="256"><figcaption>prediction'
                         f'{" " + str(k) if samples > 1 else ""}</figcaption></figure>')
        blocks.append(f"<h2>{esc(row['image'])} ({row['height']} x {row['width']})</h2><div>{''.join(cells)}</div>")
    return html_page("locscope stain", f"<h1>Virtual staining</h1><table>{settings}</table><p>Composite colours: "
                                       f"{esc(legend)}</p>{''.join(blocks)}")


__all__ = ["DEFAULT_DDPM_STEPS", "DEFAULT_MODEL", "DEFAULT_SAMPLER", "DEFAULT_STEPS", "StainModels", "StainResult",
           "check_classifier", "check_options", "class_index", "composite", "load_stain_models", "predict_stains", "read_brightfield", "run_stain", "to_uint16"]
