"""``locscope embed``, ``locscope classify`` and ``locscope train subcell``: SubCell single-cell embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from locscope.cli.app import DeviceOption, OverwriteOption, SeedOption, app
from locscope.cli.train_cmd import train_app
from locscope.errors import InputError

ModelOption = typer.Option(None, "--model", help="Model directory (config.json + model.safetensors) or a published "
                                                 "SubCell model_config.yaml; default: the bundled subcell-tiny.")
ChannelsOption = typer.Option(None, "--channels", help="Channel variant of a 3-channel published model: rbg | ybg.")
BatchOption = typer.Option(16, "--batch-size", help="Cells per forward pass.")
PrecisionOption = typer.Option("auto", "--precision", help="auto (CPU: OpenVINO int8 calibrated on 64 cells spread "
                                                          "over the input and verified against fp32 on 8 more, else "
                                                          "bf16) | bf16 "
                                                          "(autocast) | fp32 (exact) | int8 (CPU: dynamic int8 "
                                                          "Linear layers).")
BackendOption = typer.Option("auto", "--backend", help="auto | torch | openvino (CPU; with --precision int8: static "
                                                    "int8 calibrated on 64 cells, not verified).")
CalibrationOption = typer.Option(64, "--calibration-cells", help="OpenVINO int8: cells that calibrate it (the default "
                                                                 "mode checks it on 8 more).")
CacheOption = typer.Option(True, "--cache/--no-cache", help="Default mode: read / write calibrated int8 models in "
                                                           "$LOCSCOPE_CACHE_DIR (see `locscope cache`).")
ImageSizeOption = typer.Option(None, "--image-size", help="Resize cells to this side; 0 = keep. Default: the training "
                                                         "size of locscope models, unchanged for published YAML models.")


@app.command("embed")
def embed(
    out: Path = typer.Option(..., "-o", "--out", help="Output folder (embeddings.h5ad, result.csv, ...)."),
    overwrite: bool = OverwriteOption,
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="SubCell path list: r_image,y_image,b_image,g_image,"
                                                                 "output_prefix ('#' rows are comments)."),
    store: Optional[Path] = typer.Option(None, "--store", help="A locscope dataset store instead of a CSV."),
    split: Optional[str] = typer.Option(None, "--split", help="Only this split of the store: train | val | test."),
    model: Optional[str] = ModelOption,
    channels: Optional[str] = ChannelsOption,
    batch_size: int = BatchOption,
    precision: str = PrecisionOption,
    backend: str = BackendOption,
    calibration_cells: int = CalibrationOption,
    cache: bool = CacheOption,
    image_size: Optional[int] = ImageSizeOption,
    save_npy: bool = typer.Option(False, "--save-npy", help="Also write {prefix}_embedding.npy / _probabilities.npy."),
    save_attention: bool = typer.Option(False, "--save-attention", help="Also write {prefix}_attention_map.png."),
    device: str = DeviceOption,
) -> None:
    """Embed single cells with SubCell: AnnData embeddings + per-class probabilities."""
    from locscope.pipelines.embed import run_embed

    result = run_embed(out, csv_path=csv_path, store_path=store, split=split, model=model, channels=channels,
                       batch_size=batch_size, precision=precision, image_size=image_size, device=device,
                       backend=backend, calibration_cells=calibration_cells, use_cache=cache,
                       save_npy=save_npy,
                       save_attention=save_attention, overwrite=overwrite)
    for mode in result.modes:
        typer.echo(f"inference: {mode.describe()}", err=True)
    if result.modes and result.modes[0].cpu:
        from locscope.utils.cpu import CpuCapability

        typer.echo(f"inference CPU: {CpuCapability.from_dict(result.modes[0].cpu).describe()}", err=True)
    typer.echo(f"embedded {len(result.ids)} cells ({result.embeddings.shape[1]}-d) -> {out}/embeddings.h5ad")


@app.command("classify")
def classify(
    images: List[Path] = typer.Argument(..., help="Multi-channel images (TIFF stacks, HPA RGB composites)."),
    channel_order: Optional[str] = typer.Option(None, "--channel-order", help="Comma-separated channel names of the "
                                                "files, e.g. microtubules,protein,nucleus,er (RGB default: "
                                                "microtubules,protein,nucleus)."),
    segment: bool = typer.Option(False, "--segment", help="Images are fields of view: segment and crop cells first."),
    crop_size: int = typer.Option(512, "--crop-size", help="With --segment: crop side in pixels."),
    output_size: Optional[int] = typer.Option(None, "--output-size", help="With --segment: resize crops to this side."),
    top: int = typer.Option(3, "--top", help="Number of classes to print per cell."),
    model: Optional[str] = ModelOption,
    channels: Optional[str] = ChannelsOption,
    batch_size: int = BatchOption,
    precision: str = PrecisionOption,
    backend: str = BackendOption,
    calibration_cells: int = CalibrationOption,
    cache: bool = CacheOption,
    image_size: Optional[int] = ImageSizeOption,
    device: str = DeviceOption,
) -> None:
    """Print the most probable localization classes of each cell (tab-separated: id, class (probability), ...)."""
    from locscope.channels import canonical_channel
    from locscope.pipelines.classify import classify_images

    order = None
    if channel_order:
        try:
            order = [canonical_channel(name) for name in channel_order.split(",")]
        except ValueError as err:
            raise InputError(f"--channel-order: {err}") from None
    ranked, _ = classify_images(images, model=model, channels=channels, channel_order=order, segment=segment,
                                crop_size=crop_size, output_size=output_size, top=top, batch_size=batch_size,
                                precision=precision, backend=backend, calibration_cells=calibration_cells,
                                use_cache=cache, image_size=image_size, device=device)
    for cell_id, classes in ranked:
        typer.echo("\t".join([cell_id, *(f"{name} ({p:.3f})" for name, p in classes)]))


@app.command("cache")
def cache(clear: bool = typer.Option(False, "--clear", help="Delete every cached model.")) -> None:
    """List (or --clear) the calibrated int8 SubCell models that `embed` / `classify` cached."""
    from locscope.pipelines.embed_runtime import cache_entries, cache_root, clear_cache

    if clear:
        typer.echo(f"removed {clear_cache() / 1e6:.1f} MB from {cache_root() / 'openvino'}")
        return
    entries = cache_entries()
    typer.echo(f"{len(entries)} cached int8 model(s) in {cache_root() / 'openvino'}")
    for entry in entries:
        if entry.get("damaged"):
            typer.echo(f"{entry['key']}\t{entry['bytes'] / 1e6:.1f} MB\tdamaged (recalibrated when needed)")
            continue
        size = "x".join(map(str, entry.get("image_size", [])))
        typer.echo(f"{entry['key']}\t{entry['bytes'] / 1e6:.1f} MB\t{size} {entry.get('channels', '')}\t"
                   f"ViT {entry.get('layers')} x {entry.get('hidden_size')}\tcalibrated on "
                   f"{entry.get('calibration_cells')} cells, checked at cosine {entry.get('min_cosine', 0):.5f}\t"
                   f"{entry.get('created', '')}")


@train_app.command("subcell")
def train_subcell_command(
    data: Path = typer.Option(..., "--data", help="Store with protein + landmark channels and SubCell labels."),
    out: Path = typer.Option(..., "--out", help="Run directory (checkpoints/, logs/, model/, metrics.json)."),
    epochs: int = typer.Option(30, "--epochs", help="Self-supervised epochs."),
    batch_size: int = typer.Option(64, "--batch-size", help="Cells per batch (whole proteins)."),
    learning_rate: float = typer.Option(1e-3, "--lr", help="AdamW learning rate."),
    mae_weight: float = typer.Option(1.0, "--mae-weight", help="Masked-reconstruction loss weight (0 = off)."),
    mask_ratio: float = typer.Option(0.25, "--mask-ratio", help="Fraction of masked patches."),
    num_classifiers: int = typer.Option(3, "--classifiers", help="MLP classifier ensemble size."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Wall-time cap of the SSL stage."),
    resume: bool = typer.Option(False, "--resume", help="Continue from checkpoints/last.ckpt."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (1 is fastest for tiny models)."),
    seed: int = SeedOption,
    device: str = DeviceOption,
) -> None:
    """Train a SubCell encoder (protein SupCon + cell NT-Xent + masked reconstruction), then its classifiers."""
    from locscope.training.subcell_module import train_subcell

    metrics = train_subcell(data, out, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                            mae_weight=mae_weight, mask_ratio=mask_ratio, num_classifiers=num_classifiers, seed=seed,
                            device=device, resume=resume, max_minutes=max_minutes, threads=threads)
    typer.echo(f"held-out: macro-AP {metrics['macro_ap']:.3f}, accuracy {metrics['accuracy']:.3f}, "
               f"k-NN accuracy {metrics['knn_accuracy']:.3f} -> {out}/model")
