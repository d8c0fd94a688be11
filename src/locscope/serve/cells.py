"""The web app's image pages: classify single cells (SubCell) and stain brightfield images (virtual Cell Painting).

:func:`register` adds to an app made by :func:`locscope.serve.app.create_app`:

- ``POST /api/classify``: 1-16 uploaded ``images`` (multi-channel TIFF stacks, HPA RGB composites; one cell each,
  or fields of view with ``segment``), optional ``channel_order`` (comma-separated channel names of the files), ``top``;
  or, without files, ``example``: a simulated cell with its protein in that level-1 compartment -> the most probable
  classes of every cell, :func:`locscope.pipelines.classify.classify_images`, with a preview of each input;
- ``POST /api/stain``: 1-3 uploaded ``brightfield`` files (one stack, or one file per plane) or, without files,
  ``example``: a simulated cell of that perturbation class (its true Cell Painting shown beside the prediction);
  ``class_name``, ``classifier_scale``, ``sampler``, ``steps``, ``samples``, ``seed`` -> the predicted Cell Painting
  channels, :func:`locscope.pipelines.stain.run_stain` into the job folder.

Examples are rendered by the simulator (:mod:`locscope.synth`) at the bundled models' sizes and say so.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, File, Form, UploadFile

from locscope.serve.common import BadRequest, Jobs, save_uploads

MAX_CLASSIFY_FILES = 16
MAX_BRIGHTFIELD_FILES = 3
MAX_STAIN_SAMPLES = 4
MAX_STAIN_STEPS = 100
TOP_CLASSES = 5
#: Level-1 compartments offered as simulated example cells (``example`` of ``/api/classify``).
CLASSIFY_EXAMPLES = ("nucleoplasm", "nucleoli", "nuclear-speckles", "cytosol", "mitochondria",
                     "endoplasmic-reticulum", "golgi-apparatus", "vesicles", "plasma-membrane", "microtubules",
                     "actin-filaments", "centrosome")
EXAMPLE_ORDER = ("microtubules", "protein", "nucleus", "er")  # channels of a simulated example cell's TIFF


def example_cell(compartment: str, folder: Path, seed: int = 0) -> Path:
    """A simulated 64 x 64 cell with its protein in ``compartment`` as a 4-channel float TIFF
    (:data:`EXAMPLE_ORDER`, intensities in [0, 1]) in ``folder``."""
    from locscope.report.images import write_tiff
    from locscope.synth import SimulatorConfig, place_protein, render_cell

    if compartment not in CLASSIFY_EXAMPLES:
        raise BadRequest(f"example {compartment!r}: choose one of {', '.join(CLASSIFY_EXAMPLES)}")
    cell = render_cell(SimulatorConfig(size=64), seed=seed)
    planes = {**cell.images, "protein": place_protein(cell, {compartment: 1.0}, seed=seed)}
    return write_tiff(folder / f"simulated_{compartment}.tif",
                      np.stack([planes[name] for name in EXAMPLE_ORDER]).astype(np.float32))


def example_brightfield(perturbation: str, classes: tuple[str, ...], folder: Path, size: int,
                        seed: int = 0) -> tuple[Path, np.ndarray]:
    """A simulated cell of ``perturbation``: its brightfield plane as a float TIFF in ``folder`` and its true Cell
    Painting channels ``(5, size, size)`` (dna, rna, er, agp, mito) in [0, 1]."""
    from locscope.report.images import write_tiff
    from locscope.synth import SimulatorConfig, render_cell

    if perturbation not in classes:
        raise BadRequest(f"example {perturbation!r}: choose one of {', '.join(classes)}")
    cell = render_cell(SimulatorConfig(size=size, brightfield=True, cell_painting=True, perturbation=perturbation),
                       seed=seed)
    truth = np.stack([cell.images[name] for name in ("dna", "rna", "er", "agp", "mito")])
    return write_tiff(folder / f"simulated_{perturbation}.tif", cell.images["brightfield"].astype(np.float32)), truth


def preview(path: Path, channel_order: list[str] | None, out: Path) -> dict[str, str]:
    """PNG previews of one input file: ``landmarks`` (microtubules red, ER green, nucleus blue) and ``protein``
    (green over the nucleus), each where the file has those channels, named after the whole file name (``a.tif``
    and ``a.png`` do not share previews); kind -> file name in ``out``."""
    from locscope.io.images import read_image
    from locscope.report.images import landmark_composite, protein_png, to_uint8, write_png

    planes = read_image(path, channel_order=channel_order).channels
    unit = {k: (v - v.min()) / max(float(np.ptp(v)), 1e-9) for k, v in planes.items()}
    written = {}
    names = tuple(k for k in ("microtubules", "er", "nucleus") if k in unit)
    if names:
        rgb = landmark_composite(np.stack([unit[k] for k in names]), names)
        scale = max(1, 160 // max(rgb.shape[:2]))
        written["landmarks"] = write_png(out / f"{path.name}.landmarks.png", to_uint8(rgb), scale).name
    if "protein" in unit:
        (out / f"{path.name}.protein.png").write_bytes(protein_png(unit["protein"], unit.get("nucleus")))
        written["protein"] = f"{path.name}.protein.png"
    return written


def register(app: FastAPI, *, jobs: Jobs, model_lock: threading.Lock, device: str) -> dict[str, Any]:
    """Add ``/api/classify`` and ``/api/stain`` to ``app``; returns what ``/api/info`` reports about them."""
    from locscope.pipelines.embed import DEFAULT_MODEL_DIR
    from locscope.pipelines.stain import DEFAULT_MODEL as DEFAULT_STAINER, SAMPLERS, load_stain_models

    default_classifier = DEFAULT_MODEL_DIR.name
    stain_config = load_stain_models(DEFAULT_STAINER).denoiser.config
    stain_classes = tuple(stain_config.classes)

    @app.post("/api/classify")
    def classify_endpoint(images: list[UploadFile] = File(default=[]), channel_order: str = Form(""),
                          segment: bool = Form(False), top: int = Form(TOP_CLASSES),
                          example: str | None = Form(None), seed: int = Form(0)) -> dict[str, Any]:
        from locscope.channels import canonical_channel
        from locscope.pipelines.classify import classify_images

        uploads = [u for u in images if u.filename]
        if not uploads and not example:
            raise BadRequest("images: upload a cell image (multi-channel TIFF or HPA RGB composite) or choose an "
                             "example")
        if not 1 <= top <= 31:
            raise BadRequest(f"top {top}: must be between 1 and 31")
        order = None
        if channel_order.strip():
            try:
                order = [canonical_channel(name.strip()) for name in channel_order.split(",")]
            except ValueError as err:
                raise BadRequest(f"channel_order: {err}") from None
        job, folder = jobs.new()
        inputs = folder / "inputs"
        if uploads:
            paths = save_uploads(uploads, inputs, "images", MAX_CLASSIFY_FILES, "one cell or field of view each")
            cell = "uploaded"
        else:
            inputs.mkdir()
            paths, order, segment = [example_cell(example, inputs, seed)], list(EXAMPLE_ORDER), False
            cell = f"simulated cell, protein in the {example}"
        previews = {p.name: preview(p, order, folder) for p in paths}
        with model_lock:
            ranked, result = classify_images(paths, channel_order=order, segment=segment, top=top, device=device)
        return {"job": job, "cell": cell, "model": default_classifier,
                "cells": [{"id": cell_id, "classes": [{"name": name, "probability": round(float(p), 4)}
                                                      for name, p in classes]} for cell_id, classes in ranked],
                "previews": {name: {kind: f"/jobs/{job}/{file}" for kind, file in files.items()}
                             for name, files in previews.items()},
                "embedding_size": int(result.embeddings.shape[1])}

    @app.post("/api/stain")
    def stain_endpoint(brightfield: list[UploadFile] = File(default=[]), example: str | None = Form(None),
                       class_name: str | None = Form(None), classifier_scale: float = Form(0.0),
                       sampler: str = Form("ddpm"), steps: int | None = Form(None), samples: int = Form(1),
                       seed: int = Form(0)) -> dict[str, Any]:
        from locscope.pipelines.stain import composite, run_stain
        from locscope.data.transforms import standardize
        from locscope.report.images import to_uint8, write_png

        uploads = [u for u in brightfield if u.filename]
        if not uploads and not example:
            raise BadRequest("brightfield: upload a brightfield image (a stack, or one file per plane) or choose an "
                             "example")
        if not 1 <= samples <= MAX_STAIN_SAMPLES:
            raise BadRequest(f"samples {samples}: must be between 1 and {MAX_STAIN_SAMPLES}")
        if steps is not None and not 1 <= steps <= MAX_STAIN_STEPS:
            raise BadRequest(f"steps {steps}: must be between 1 and {MAX_STAIN_STEPS} here (more with `locscope "
                             "stain`)")
        if sampler not in SAMPLERS:
            raise BadRequest(f"sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
        job, folder = jobs.new()
        inputs = folder / "inputs"
        truth = None
        if uploads:
            paths = save_uploads(uploads, inputs, "brightfield", MAX_BRIGHTFIELD_FILES, "one stack or one per plane")
            cell = "uploaded"
        else:
            inputs.mkdir()
            path, planes = example_brightfield(example, stain_classes, inputs, stain_config.image_size, seed)
            paths, cell = [path], f"simulated cell, {example}"
            names = ("dna", "rna", "er", "agp", "mito")
            truth = write_png(folder / "truth.png", to_uint8(composite(standardize(planes), names)),
                              max(1, 160 // stain_config.image_size)).name
        with model_lock:
            result = run_stain(paths, folder / "result", class_name=class_name or None,
                               classifier_scale=classifier_scale, sampler=sampler, steps=steps, samples=samples,
                               seed=seed, device=device, progress=False)
        base = f"/jobs/{job}/result"
        images = []
        for sub in result.images:
            suffixes = [f"_sample{k}" for k in range(samples)] if samples > 1 else [""]
            images.append({"folder": sub, "brightfield": f"{base}/{sub}/brightfield.png",
                           "composites": [f"{base}/{sub}/composite{s}.png" for s in suffixes]})
        return {"job": job, "cell": cell, "model": DEFAULT_STAINER, "class_name": class_name or None,
                "images": images, "truth": f"/jobs/{job}/{truth}" if truth else None,
                "network_evaluations": result.network_evaluations,
                "seconds_per_image": round(result.seconds_per_image, 3),
                "report": f"{base}/report.html", "summary": f"{base}/summary.json"}

    return {"classifier": default_classifier, "classify_examples": list(CLASSIFY_EXAMPLES),
            "max_classify_files": MAX_CLASSIFY_FILES, "stainer": DEFAULT_STAINER, "stain_classes": list(stain_classes),
            "stain_samplers": list(SAMPLERS), "max_stain_samples": MAX_STAIN_SAMPLES}


__all__ = ["CLASSIFY_EXAMPLES", "example_brightfield", "example_cell", "preview", "register"]
