"""``locscope embed`` / ``locscope classify``: SubCell embeddings and localization probabilities for single cells.

Inputs: SubCell's path-list CSV (``r_image,y_image,b_image,g_image,output_prefix``; ``#`` rows are comments; an empty
path = channel absent, passed as zeros), a locscope dataset store, or multi-channel image files. Each cell is min-max
normalised jointly over its channels, batched (cells of equal size share a batch; SubCell's own CLI runs one at a time),
and run under ``torch.inference_mode``. The default (``precision="auto"``, ``backend="auto"``) on the CPU runs the ViT
in OpenVINO, statically quantized to int8 and verified against fp32 on the run's own cells
(:mod:`locscope.pipelines.embed_runtime`), falling back to bf16 autocast where bf16 is native (GPUs, CPUs with
AVX512-BF16 / AMX) and to fp32 where it would be emulated; ``fp32`` / ``bf16`` /
``int8`` (dynamic int8 Linear layers) and ``backend="openvino"`` choose a mode explicitly.

Outputs (:func:`write_embedding_outputs`): ``embeddings.h5ad`` (AnnData: ``X`` = n x embedding_dim, ``obs`` indexed by
cell id, ``obsm["probabilities"]`` = n x 31, class names in ``uns``), ``result.csv`` (top classes + one probability
column per class), optionally ``{prefix}_embedding.npy`` / ``{prefix}_probabilities.npy`` per cell and
``{prefix}_attention_map.png`` pooling-attention images.
"""

from __future__ import annotations

import csv
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from locscope.channels import ER, MICROTUBULES, NUCLEUS, PROTEIN
from locscope.errors import ArgumentError, InputError
from locscope.io.images import read_image, read_single_channel
from locscope.models import hub
from locscope.models.subcell import (
    CHANNEL_VARIANTS, SubCellModel, compile_openvino, load_published, min_max_normalize, quantize_encoder_int8,
)
from locscope.pipelines import embed_runtime
from locscope.pipelines.embed_runtime import (
    InferenceMode, openvino_available, runtime_choice, verification_mask, verified_int8,
)
from locscope.utils.atomic import atomic_path, write_text
from locscope.utils.filenames import file_name_for_id
from locscope.utils.outputs import check_output_folder, output_folder
from locscope.utils.progress import note, track

# SubCell's CSV columns -> channel names (HPA colours: red microtubules, yellow ER, blue DNA, green protein).
CSV_COLUMNS: dict[str, str] = {"r_image": MICROTUBULES, "y_image": ER, "b_image": NUCLEUS, "g_image": PROTEIN}
DEFAULT_MODEL_DIR = hub.asset_path("models/subcell-tiny")
EMBED_FILES = ("embeddings.h5ad",)  # every embed output holds it

Precision = Literal["auto", "fp32", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "int8")
Backend = Literal["auto", "torch", "openvino"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "openvino")


@dataclass
class CellInput:
    """One single cell to embed: ``images`` ``(C, H, W)`` float32 raw intensities in the model's channel order."""

    id: str
    images: np.ndarray


@dataclass
class EmbeddingResult:
    """Embeddings of n cells.

    Attributes
    ----------
    ids : list of str
        Cell ids (CSV ``output_prefix``, store item id, or file stem + cell label).
    embeddings : numpy.ndarray
        ``(n, embedding_dim)`` float32.
    probabilities : numpy.ndarray or None
        ``(n, num_classes)`` float32 ensemble-mean probabilities (None for an encoder without classifiers).
    attention : list of numpy.ndarray
        Per cell ``(heads, H // patch, W // patch)`` pooling attention.
    class_names : tuple of str
    modes : list of InferenceMode
        How the cells of each size were run (backend, precision, int8 calibration and verification).
    """

    ids: list[str]
    embeddings: np.ndarray
    probabilities: np.ndarray | None
    attention: list[np.ndarray]
    class_names: tuple[str, ...]
    modes: list[InferenceMode] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------------------ models
def load_model(model: str | Path | None = None, device: str | torch.device = "cpu",
               channels: str | None = None) -> SubCellModel:
    """Load a SubCell model: the bundled tiny model (``None``), a bundled name, a locscope model directory, or a
    published YAML (resolved by :mod:`locscope.models.hub`).

    Raises
    ------
    InputError
        If the path does not exist or is neither a model directory nor a ``.yaml`` file.
    """
    return hub.load(model, default="subcell-tiny", families=("subcell",), device=device, channels=channels)


def resolve_image_size(model: str | Path | None, subcell: SubCellModel, image_size: int | None) -> int | None:
    """The cell size to feed: ``image_size`` when given (0 = keep sizes); otherwise locscope models (the bundled one,
    model directories) see their training size and published YAML models get the cells as they are (SubCell's CLI
    does not resize: it expects 448 x 448 crops)."""
    if image_size is not None:
        if image_size < 0:
            raise ArgumentError("image_size", f"must be 0 (keep) or positive; got {image_size}")
        return image_size or None
    if model is not None and Path(model).suffix.lower() in {".yaml", ".yml"}:
        return None
    return subcell.config.image_size


# ------------------------------------------------------------------------------------------------------------ inputs
def read_path_list(csv_path: str | Path) -> list[tuple[str, dict[str, Path]]]:
    """Parse SubCell's path-list CSV into ``(output_prefix, {channel: path})`` rows.

    Paths are resolved relative to the CSV's folder; rows starting with ``#`` are skipped; an empty cell means the
    channel is absent.

    Raises
    ------
    InputError
        Missing file or header columns, a row without ``output_prefix`` or without any image, duplicate prefixes.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InputError(f"{csv_path}: path-list CSV not found")
    lines = [line for line in csv_path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.DictReader(lines)
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in ("output_prefix", *CSV_COLUMNS) if c not in header]
    if missing:
        raise InputError(f"{csv_path}: missing column(s) {', '.join(missing)} (header: {','.join(header)})")
    rows: list[tuple[str, dict[str, Path]]] = []
    seen: set[str] = set()
    for number, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        prefix = row["output_prefix"]
        if not prefix:
            raise InputError(f"{csv_path}: data row {number - 1}: empty output_prefix")
        if prefix in seen:
            raise InputError(f"{csv_path}: data row {number - 1}: duplicate output_prefix {prefix!r}")
        seen.add(prefix)
        paths = {CSV_COLUMNS[c]: (csv_path.parent / row[c]) for c in CSV_COLUMNS if row[c]}
        if not paths:
            raise InputError(f"{csv_path}: data row {number - 1} ({prefix}): no image path given")
        rows.append((prefix, paths))
    if not rows:
        raise InputError(f"{csv_path}: no data rows")
    return rows


def stack_cell(channel_images: dict[str, np.ndarray], channels: str, source: str) -> np.ndarray:
    """Stack named ``(H, W)`` planes in the variant's order -> ``(C, H, W)`` float32; absent channels are zeros."""
    names = CHANNEL_VARIANTS[channels]
    shapes = {np.shape(im) for im in channel_images.values()}
    if len(shapes) != 1:
        raise InputError(f"{source}: channel images have different shapes "
                         + ", ".join(f"{n} {np.shape(im)}" for n, im in channel_images.items()))
    if not any(n in channel_images for n in names):
        raise InputError(f"{source}: none of the model's channels ({', '.join(names)}) is given")
    shape = shapes.pop()
    return np.stack([np.asarray(channel_images[n], np.float32) if n in channel_images else np.zeros(shape, np.float32)
                     for n in names])


def _csv_cell(csv_path: str | Path, row: tuple[str, dict[str, Path]], channels: str) -> CellInput:
    prefix, paths = row
    planes = {name: read_single_channel(path) for name, path in paths.items()}
    return CellInput(prefix, stack_cell(planes, channels, f"{csv_path}: {prefix}"))


def cells_from_csv(csv_path: str | Path, channels: str) -> Iterator[CellInput]:
    """Yield the cells listed in a SubCell path-list CSV (images read lazily, one row at a time)."""
    for row in read_path_list(csv_path):
        yield _csv_cell(csv_path, row, channels)


def spread_indices(total: int, n: int) -> list[int]:
    """``min(n, total)`` distinct indices in ``range(total)``, evenly spread from the first to the last."""
    return sorted({int(i) for i in np.linspace(0, total - 1, min(n, total)).round()}) if total > 0 else []


def cells_from_store(store_path: str | Path, channels: str, split: str | None = None) -> Iterator[CellInput]:
    """Yield the items of a locscope dataset store (optionally one split)."""
    from locscope.data.store import Store

    store = Store.open(store_path)
    indices = range(len(store)) if split is None else store.split_indices(split)
    for i in indices:
        yield _store_cell(store_path, store[int(i)], channels)


def _store_cell(store_path: str | Path, item: dict, channels: str) -> CellInput:
    return CellInput(str(item["id"]), stack_cell(item["images"], channels, f"{store_path}: item {item['id']}"))


def cells_from_images(paths: Sequence[str | Path], channels: str, *, channel_order: Sequence[str] | None = None,
                      segment: bool = False, crop_size: int = 512, output_size: int | None = None) -> Iterator[CellInput]:
    """Yield cells from image files read by :func:`locscope.io.read_image` (the reader every command uses; channels
    named by its rules or ``channel_order``): each file is one cell, or (``segment=True``) a field of view cut into
    single-cell crops with :mod:`locscope.pipelines.segment` (ids ``{stem}_cell{label}``)."""
    from locscope.pipelines.segment import crop_cells, segment_field

    for path in paths:
        planes = read_image(path, channel_order=channel_order).channels
        stem = Path(path).stem
        if not segment:
            yield CellInput(stem, stack_cell(planes, channels, str(path)))
            continue
        for crop in crop_cells(planes, segment_field(planes), crop_size=crop_size, output_size=output_size):
            yield CellInput(f"{stem}_cell{crop.label}", stack_cell(crop.images, channels, f"{path}: cell {crop.label}"))


# --------------------------------------------------------------------------------------------------------- inference
def _batches(cells: Iterable[CellInput], batch_size: int) -> Iterator[list[CellInput]]:
    """Group consecutive cells of equal size into batches of at most ``batch_size``."""
    batch: list[CellInput] = []
    for cell in cells:
        if batch and (len(batch) == batch_size or batch[0].images.shape != cell.images.shape):
            yield batch
            batch = []
        batch.append(cell)
    if batch:
        yield batch


def _prepare(batch: Sequence[CellInput], device: torch.device, image_size: int | None) -> torch.Tensor:
    """Stack raw cells -> ``(B, C, H, W)`` on ``device``, resized to ``image_size`` (if given), min-max normalised."""
    images = torch.from_numpy(np.stack([c.images for c in batch])).to(device)
    if image_size and tuple(images.shape[-2:]) != (image_size, image_size):
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False,
                               antialias=True)
    return min_max_normalize(images)


def embed_cells(model: SubCellModel, cells: Iterable[CellInput], *, batch_size: int = 16,
                precision: Precision = "auto", image_size: int | None = None, total: int | None = None,
                progress: bool = True, backend: Backend = "auto", calibration_cells: int = 64,
                verification_cells: int = 8, use_cache: bool = True,
                calibration_sample: Callable[[int], Sequence[CellInput]] | None = None) -> EmbeddingResult:
    """Embed and classify cells with ``model`` in batches.

    Parameters
    ----------
    model : SubCellModel
        In eval mode, on its device.
    cells : iterable of CellInput
        Raw ``(C, H, W)`` cells; normalised here (per-cell joint min-max).
    batch_size : int
        Cells per forward pass.
    precision : {'auto', 'fp32', 'bf16', 'int8'}
        ``auto`` (with ``backend="auto"``): on the CPU, the ViT in OpenVINO statically quantized to int8, calibrated
        on ``calibration_cells`` cells of the run (or read from the cache) and used only if the embeddings of
        ``verification_cells`` other cells stay within cosine 0.999 of fp32
        (:mod:`locscope.pipelines.embed_runtime`); otherwise, and for cell sizes with fewer head cells than both
        together, bf16 where the device computes it natively and fp32 elsewhere
        (:func:`~locscope.pipelines.embed_runtime.runtime_choice`). ``bf16`` runs under ``torch.autocast``
        (native on CPUs with AVX512-BF16 / AMX and on GPUs, emulated and slow elsewhere); ``int8`` (CPU only, torch)
        runs a copy of the model whose ViT Linear layers are dynamically quantized
        (:func:`~locscope.models.subcell.quantize_encoder_int8`); ``fp32`` is exact. Outputs are float32.
    image_size : int, optional
        Resize every cell to ``image_size x image_size`` (bilinear, anti-aliased) before normalising; None keeps sizes.
    total : int, optional
        Number of cells, for the progress bar.
    progress : bool
        Show a progress bar (stderr).
    backend : {'auto', 'torch', 'openvino'}
        ``auto``: OpenVINO for a verified int8 model (``precision="auto"``), PyTorch otherwise. ``openvino`` (CPU)
        runs the ViT with OpenVINO (:func:`~locscope.models.subcell.compile_openvino`), once compiled per cell size;
        with ``precision="int8"`` it is statically quantized, calibrated on the first ``calibration_cells`` cells of
        that size, without verification; ``bf16`` / ``auto`` there is OpenVINO's bf16 inference precision.
    calibration_cells, verification_cells : int
        Cells of the sample (or the head of the run) that calibrate / verify OpenVINO int8 (cells of a size first met
        later are calibrated on their first batch with ``backend="openvino"``, run in bf16 with ``auto``).
    use_cache : bool
        ``auto``: read and write calibrated int8 models in the cache
        (:func:`~locscope.pipelines.embed_runtime.cache_root`).
    calibration_sample : callable, optional
        ``calibration_sample(n)`` -> about ``n`` cells spread over the whole input (:func:`run_embed` passes one for
        CSV and store inputs): OpenVINO int8 is then calibrated and checked on them instead of the first cells, so a
        sorted input (one condition after another) calibrates on all of its conditions. Called only when int8
        OpenVINO needs calibration cells; ignored if it returns fewer than needed.

    Returns
    -------
    EmbeddingResult
        With ``modes``: how the cells of each size ran.
    """
    if batch_size < 1:
        raise ArgumentError("batch_size", f"must be at least 1; got {batch_size}")
    if precision not in PRECISIONS:
        raise ArgumentError("precision", f"{precision!r}: accepted values are {', '.join(PRECISIONS)}")
    if backend not in BACKENDS:
        raise ArgumentError("backend", f"{backend!r}: accepted values are {', '.join(BACKENDS)}")
    if calibration_cells < 1:
        raise ArgumentError("calibration_cells", f"must be at least 1; got {calibration_cells}")
    device = next(model.parameters()).device
    if device.type != "cpu" and (precision == "int8" or backend == "openvino"):
        what = "--backend openvino" if backend == "openvino" else "--precision int8"
        raise InputError(f"{what} runs on the CPU only (model on {device}); use bf16 on {device.type}")
    cpu = embed_runtime.cpu_capability() if device.type == "cpu" else None
    choice = runtime_choice(device.type, cpu)
    cpu_dict = cpu.to_dict() if cpu is not None else {}
    why_not_int8 = ("" if precision != "auto" else f"--backend {backend}" if backend != "auto"
                    else f"on {device.type}" if device.type != "cpu"
                    else "no verification cells" if verification_cells < 1
                    else "openvino / nncf not installed" if not openvino_available()
                    else "no VNNI on this CPU (int8 is not faster than fp32 there)" if not choice.int8 else "")
    auto_int8 = precision == "auto" and not why_not_int8
    if backend == "auto":
        backend = "openvino" if auto_int8 else "torch"
    if precision == "auto" and not auto_int8:
        precision = choice.fallback
    why_auto = f"auto: {why_not_int8}" + (f"; {choice.why}" if cpu is not None else "")
    head: list[CellInput] = []  # the cells OpenVINO is calibrated (and, auto, checked) on
    spread = False
    if backend == "openvino":
        needed = calibration_cells + (verification_cells if auto_int8 else 0)
        if calibration_sample is not None and precision in ("auto", "int8"):
            head = list(calibration_sample(needed))
            spread = len(head) >= needed
        if not spread:
            cells = iter(cells)
            head = list(itertools.islice(cells, needed))
            cells = itertools.chain(head, cells)
    torch_model = quantize_encoder_int8(model) if precision == "int8" and backend == "torch" else model
    runners: dict[tuple[int, ...], tuple[object, InferenceMode]] = {}  # cell size -> (callable, how)

    def runner_for(size: tuple[int, ...], first_batch: torch.Tensor) -> tuple[object, InferenceMode]:
        """Choose (and compile) how cells of ``size`` run; see the ``precision`` / ``backend`` parameters."""
        same_size = [c for c in head if image_size or tuple(c.images.shape[1:]) == size]
        if auto_int8 and len(same_size) < calibration_cells + verification_cells:
            return torch_model, InferenceMode(list(size), "torch", choice.fallback, f"auto: {len(same_size)} cells "
                                              f"of this size at the head, int8 needs {calibration_cells} + "
                                              f"{verification_cells}; {choice.why}", cpu=cpu_dict)
        # one cell at a time: with image_size, head cells of any raw size are resized to it
        normalised = torch.cat([_prepare([c], device, image_size) for c in same_size]) if same_size else first_batch
        if auto_int8:
            verify = verification_mask(len(same_size), verification_cells)
            int8, mode = verified_int8(model, normalised[~verify], normalised[verify], calibration_cells, use_cache,
                                       log=note if progress else None,
                                       sample_note=" spread over the input" if spread else "", choice=choice,
                                       cpu=cpu)
            return (int8 or torch_model), mode  # failed verification: the fallback precision (the mode says so)
        if backend == "openvino":
            try:
                compiled = compile_openvino(model, normalised, precision, seven_bit_weights=choice.seven_bit_weights,
                                            int8_float=choice.int8_float)
            except ImportError as err:
                raise ArgumentError("backend", f"openvino needs {err.name or 'openvino'} (pip install openvino nncf)"
                                 ) from None
            calibration = "" if precision != "int8" else (f"cells spread over the input ({len(normalised)})" if spread
                                                          else f"first cells ({len(normalised)})")
            return compiled, InferenceMode(list(size), "openvino", precision, why_auto if why_not_int8 else "asked",
                                           calibration, cpu=cpu_dict)
        return torch_model, InferenceMode(list(size), "torch", precision, why_auto if why_not_int8 else "asked",
                                          cpu=cpu_dict)

    ids: list[str] = []
    embeddings, probabilities, attention = [], [], []
    n_batches = None if total is None else -(-total // batch_size)
    with torch.inference_mode():
        for batch in track(_batches(cells, batch_size), "Embedding cells", total=n_batches, enabled=progress):
            images = _prepare(batch, device, image_size)
            size = tuple(images.shape[2:])
            if size not in runners:
                runners[size] = runner_for(size, images)
            run, mode = runners[size]
            autocast = mode.backend == "torch" and mode.precision == "bf16"
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                out = run(images)
            mode.cells += len(batch)
            ids += [c.id for c in batch]
            embeddings.append(out.embedding.float().cpu().numpy())
            if out.probabilities is not None:
                probabilities.append(out.probabilities.float().cpu().numpy())
            attention += list(out.pool_attention.float().cpu().numpy())
    if not ids:
        raise InputError("no cells to embed")
    return EmbeddingResult(
        ids=ids, embeddings=np.concatenate(embeddings), attention=attention,
        probabilities=np.concatenate(probabilities) if probabilities else None,
        class_names=tuple(model.config.class_names), modes=[mode for _, mode in runners.values()],
    )


def top_classes(probabilities: np.ndarray, class_names: Sequence[str], k: int = 3) -> list[list[tuple[str, float]]]:
    """Per cell, the ``k`` most probable classes as ``(name, probability)``, most probable first."""
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [[(class_names[j], float(p[j])) for j in row] for row, p in zip(order, probabilities)]


# ----------------------------------------------------------------------------------------------------------- outputs
def _attention_png(maps: np.ndarray) -> np.ndarray:
    """``(heads, h, w)`` pooling weights -> ``(h, heads * w + gaps)`` uint8, each head scaled to its maximum."""
    tiles = []
    for head in maps:
        scaled = head / head.max() if head.max() > 0 else head
        tiles += [np.round(255 * scaled).astype(np.uint8), np.zeros((head.shape[0], 1), np.uint8)]
    return np.concatenate(tiles[:-1], axis=1)


def write_embedding_outputs(result: EmbeddingResult, out_dir: str | Path, *, save_npy: bool = False,
                            save_attention: bool = False, overwrite: bool = False) -> list[Path]:
    """Write ``embeddings.h5ad`` + ``result.csv`` (+ per-cell ``.npy`` / attention PNGs) into folder ``out_dir``;
    return the paths. The folder is written beside ``out_dir`` and swapped in (output-folder policy,
    :mod:`locscope.utils.outputs`; ``overwrite`` replaces an earlier embed output). Per-cell file names come from
    :func:`locscope.utils.filenames.file_name_for_id`."""
    out_dir = Path(out_dir)
    with output_folder(out_dir, "embed", overwrite=overwrite, known_files=EMBED_FILES) as work:
        written = _write_embedding_files(result, work, save_npy=save_npy, save_attention=save_attention)
    return [out_dir / path.relative_to(work) for path in written]


def _write_embedding_files(result: EmbeddingResult, out_dir: Path, *, save_npy: bool,
                           save_attention: bool) -> list[Path]:
    import anndata
    import pandas as pd

    from locscope.report.images import write_png

    obs = pd.DataFrame({"cell_id": result.ids}, index=pd.Index(result.ids, name="id"))
    adata = anndata.AnnData(X=result.embeddings.astype(np.float32), obs=obs)
    if result.probabilities is not None:
        adata.obsm["probabilities"] = result.probabilities.astype(np.float32)
    adata.uns["class_names"] = list(result.class_names)
    adata.uns["inference"] = json.dumps([mode.to_dict() for mode in result.modes])
    written = [out_dir / "embeddings.h5ad"]
    with atomic_path(written[0], suffix=".h5ad") as tmp:
        adata.write_h5ad(tmp)

    if result.probabilities is not None:
        header = ["id", "top_class", "top_probability", "top_3_classes", *result.class_names]
        lines = [",".join(_csv_field(h) for h in header)]
        for cell_id, probs, top in zip(result.ids, result.probabilities, top_classes(result.probabilities,
                                                                                     result.class_names)):
            fields = [cell_id, top[0][0], f"{top[0][1]:.6f}", ";".join(name for name, _ in top),
                      *(f"{p:.6f}" for p in probs)]
            lines.append(",".join(_csv_field(f) for f in fields))
        write_text(out_dir / "result.csv", "\n".join(lines) + "\n")
        written.append(out_dir / "result.csv")

    stems: dict[str, str] = {}
    for i, cell_id in enumerate(result.ids):
        stem = file_name_for_id(cell_id)
        if stem in stems:
            raise InputError(f"cell id {cell_id!r}: same file name as cell {stems[stem]!r}; ids must be unique")
        stems[stem] = cell_id
        if save_npy:
            pairs = [("embedding", result.embeddings[i])]
            if result.probabilities is not None:
                pairs.append(("probabilities", result.probabilities[i]))
            for what, array in pairs:
                path = out_dir / f"{stem}_{what}.npy"
                with atomic_path(path, suffix=".npy") as tmp:
                    with open(tmp, "wb") as handle:
                        np.save(handle, array)
                written.append(path)
        if save_attention:
            path = out_dir / f"{stem}_attention_map.png"
            write_png(path, _attention_png(result.attention[i]))
            written.append(path)
    return written


def _csv_field(text: str) -> str:
    return f'"{text}"' if any(ch in text for ch in ',"\n') else text


def run_embed(out_dir: str | Path, *, csv_path: str | Path | None = None, store_path: str | Path | None = None,
              split: str | None = None, model: str | Path | None = None, channels: str | None = None,
              batch_size: int = 16, precision: Precision = "auto", image_size: int | None = None, device: str = "auto",
              backend: Backend = "auto", calibration_cells: int = 64, use_cache: bool = True,
              save_npy: bool = False, save_attention: bool = False, progress: bool = True,
              overwrite: bool = False) -> EmbeddingResult:
    """Embed every cell of a path-list CSV or a store and write the outputs to ``out_dir`` (see module docstring)."""
    from locscope.utils.device import resolve_device

    if (csv_path is None) == (store_path is None):
        raise ArgumentError("csv_path", "or store_path: give exactly one input (csv_path PATH_LIST or store_path "
                                        "STORE)", mentions=("csv_path", "store_path"))
    check_output_folder(out_dir, "embed", overwrite=overwrite, known_files=EMBED_FILES)
    subcell = load_model(model, device=resolve_device(device), channels=channels)
    variant = subcell.config.channels
    if csv_path is not None:
        rows = read_path_list(csv_path)
        total = len(rows)
        cells = cells_from_csv(csv_path, variant)

        def sample(n: int) -> list[CellInput]:
            return [_csv_cell(csv_path, rows[i], variant) for i in spread_indices(len(rows), n)]
    else:
        from locscope.data.store import Store

        store = Store.open(store_path)
        indices = np.arange(len(store)) if split is None else np.asarray(store.split_indices(split))
        total = len(indices)
        cells = (_store_cell(store_path, store[int(i)], variant) for i in indices)

        def sample(n: int) -> list[CellInput]:
            return [_store_cell(store_path, store[int(indices[i])], variant) for i in spread_indices(len(indices), n)]
    result = embed_cells(subcell, cells, batch_size=batch_size, precision=precision, total=total, progress=progress,
                         backend=backend, calibration_cells=calibration_cells, use_cache=use_cache,
                         calibration_sample=sample,
                         image_size=resolve_image_size(model, subcell, image_size))
    write_embedding_outputs(result, out_dir, save_npy=save_npy, save_attention=save_attention, overwrite=overwrite)
    return result


__all__ = [
    "BACKENDS", "CSV_COLUMNS", "CellInput", "DEFAULT_MODEL_DIR", "EmbeddingResult", "cells_from_csv", "cells_from_images",
    "cells_from_store", "embed_cells", "load_model", "read_path_list", "run_embed",
    "spread_indices",
    "stack_cell", "top_classes",
    "write_embedding_outputs",
]
