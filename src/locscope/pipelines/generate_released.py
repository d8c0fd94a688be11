"""``locscope generate --model DIR`` for a released CELL-Diff checkpoint set (v2, latent: per-channel VAE + denoiser).

The loop, as the released inference does it, with the sequence embedding computed once:

1. Landmarks -> the published normalisation (the file's grey value: ITU-R 601 luma of an RGB display-colour PNG, as
   PIL ``convert("L")``, /255, then ``x * 2 - 1``) at the model's image size.
2. Each landmark -> VAE latent ``mean + std * eps`` (eps drawn nucleus, ER, microtubules, in that order); a landmark
   the config names but the input lacks becomes the model's learned placeholder (the released inference would stop;
   training used the placeholder for dropped ER / microtubule images), with a warning.
3. Per sequence: ESM2 + projection once (the released sampler recomputes it at every step), then ``samples`` initial
   noises (one ``randn`` each, after the landmark draws) denoised together by the released DDIM (``timestep_respacing``
   of the config, e.g. ``ddim100``) or DPM-Solver++; the final latent -> VAE decoder.
4. Per sample: the published PNG (``clamp((x + 1) / 2, 0, 1)`` in the green channel, ``x * 255 + 0.5`` truncated)
   and the raw decoder output (float32 TIFF); ``summary.json`` and ``report.html`` for the run.

With ``seed`` s, sampler ``ddim`` and one sample, the first sequence's draws are those of the released script after
``torch.manual_seed(s)``, so its output is the released output for the same inputs.
"""

from __future__ import annotations

import html
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from locscope.data.transforms import resize_to_model
from locscope.errors import ArgumentError, InputError
from locscope.report.html import html_page
from locscope.report.images import write_png, write_tiff
from locscope.utils.atomic import write_json, write_text
from locscope.utils.filenames import file_name_for_id
from locscope.utils.outputs import check_output_folder, output_folder

log = logging.getLogger(__name__)

SAMPLERS: tuple[str, ...] = ("ddim", "dpmsolver")
OUTPUT_FILES = ("summary.json", "report.html")  # as every generate output (an earlier one is recognised)
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")
#: Fraction of each RGB plane in ITU-R 601 luma, as PIL's ``convert("L")`` computes it in 16-bit fixed point.
_LUMA_WEIGHTS = (19595, 38470, 7471)
#: Which RGB planes an HPA display colour lights (the reader returns the lit plane's values).
_DISPLAY_PLANES = {"red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1), "yellow": (1, 1, 0), "grey": (1, 1, 1)}


@dataclass
class ReleasedGenerateResult:
    """What :func:`generate_released` wrote: the output folder, one entry per sequence, the report and summary."""

    out: Path
    sequences: list[dict]
    report: Path
    summary: Path


def published_grey(image: np.ndarray, display_colour: str | None = None) -> np.ndarray:
    """An image's grey value in [-1, 1] as the released ``prepare_data`` computes it from a file.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W)`` one channel as locscope's reader returns it (for a display-colour RGB file: its lit plane).
    display_colour : {'red', 'green', 'blue', 'yellow', 'grey'}, optional
        The file's HPA display colour; the released code converts the RGB file to luma, so a blue nucleus keeps
        only 7471 / 65536 of its values (and spans [-1, -0.77]); ``None`` for single-channel files.

    Returns
    -------
    np.ndarray
        ``(H, W)`` float32 in [-1, 1].
    """
    if display_colour is not None:
        if display_colour not in _DISPLAY_PLANES or image.dtype != np.uint8:
            raise ValueError(f"display_colour={display_colour!r} with dtype {image.dtype}: expected an 8-bit plane "
                             f"of one of {', '.join(_DISPLAY_PLANES)}")
        weight = sum(w for w, lit in zip(_LUMA_WEIGHTS, _DISPLAY_PLANES[display_colour]) if lit)
        unit = ((image.astype(np.int64) * weight + 0x8000) >> 16).astype(np.float32) / 255.0
    elif np.issubdtype(image.dtype, np.integer):
        unit = image.astype(np.float32) / np.iinfo(image.dtype).max
    else:
        unit = image.astype(np.float32)
        unit = np.clip((unit + 1) / 2 if unit.min() < 0 else unit, 0.0, 1.0)
    return unit * 2.0 - 1.0


def _display_colours(record) -> dict[str, str]:
    """Channel -> HPA display colour of the file it came from (also inside a grouped sample folder)."""
    meta = record.metadata
    if "display_colour" in meta:
        return {name: meta["display_colour"] for name in record.channels}
    colour_of_file = {part.get("path"): part.get("display_colour") for part in meta.get("parts", [])}
    return {name: colour_of_file[path] for name, path in meta.get("files", {}).items()
            if colour_of_file.get(path) is not None}


def read_released_landmarks(paths: Sequence[str | Path], channels: Sequence[str], size: int) -> dict[str, np.ndarray]:
    """Landmark images for a released model: canonical channel name -> ``(size, size)`` float32 in [-1, 1].

    Images of another size are resized (area averaging; bilinear when enlarging) after normalisation.

    Raises
    ------
    InputError
        If no file holds the nucleus, or landmark images differ in shape.
    """
    from locscope.io import read_images

    if not paths:
        raise InputError("landmarks: give at least the nucleus image")
    found: dict[str, np.ndarray] = {}
    for record in read_images([Path(p) for p in paths]):
        colours = _display_colours(record)
        for name, image in record.channels.items():
            if name in channels and name not in found:
                found[name] = published_grey(image, colours.get(name) if image.dtype == np.uint8 else None)
    if "nucleus" not in found:
        raise InputError(f"landmarks {paths[0]}: no nucleus image found (the released models need it)")
    shapes = {image.shape for image in found.values()}
    if len(shapes) > 1:
        raise InputError(f"landmarks: images differ in shape {sorted(shapes)}")
    if next(iter(shapes)) != (size, size):
        log.warning("landmarks: %s resized to the model's %d x %d", next(iter(shapes)), size, size)
        found = {name: resize_to_model(image, size) for name, image in found.items()}
    return found


def published_png(image: np.ndarray) -> np.ndarray:
    """The released PNG of a decoded protein image ``(H, W)`` in about [-1, 1]: ``(H, W, 3)`` uint8, green only."""
    rgb = np.zeros((*image.shape, 3), np.uint8)
    rgb[..., 1] = (np.clip((image + 1) / 2, 0, 1) * 255 + 0.5).astype(np.uint8)
    return rgb


def quantize_int8_(released) -> None:
    """Make the denoiser's Linear layers dynamic int8 in place (``torch.ao`` dynamic quantization: int8 weights,
    activations quantized per call; fast where the CPU has int8 dot products, e.g. AVX512-VNNI / AMX).

    The frozen ESM2 stays float32: it runs once per sequence, not once per step. Convolutions (most of the U-Net's
    FLOPs) stay float32 too. Idempotent.
    """
    from torch import nn
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    net = released.model.net
    linears = {name: default_dynamic_qconfig for name, module in net.named_modules()
               if type(module) is nn.Linear and not name.startswith("protein_sequence_embedding.")}
    if linears:
        with warnings.catch_warnings():  # torch marks its quantized tensor types for removal in a later release
            warnings.simplefilter("ignore", UserWarning)
            quantize_dynamic(net, linears, inplace=True)


def released_eps_fn(released, cell_latent: torch.Tensor, tokens: torch.Tensor, sequence_embeds: torch.Tensor | None,
                    precision: str = "fp32"):
    """The denoiser as ``eps_fn(x_t, model_time, sqrt_one_minus_alphas_cumprod)`` for a batch of ``B`` samples.

    Parameters
    ----------
    released : ReleasedCellDiff
        The loaded checkpoint set.
    cell_latent : torch.Tensor
        ``(1 or B, latent_channels * n_landmarks, h, w)``.
    tokens : torch.Tensor
        ``(1 or B, T)`` token ids.
    sequence_embeds : torch.Tensor or None
        ``(1 or B, T, hidden)`` precomputed :meth:`CellDiffV2Net.embed_sequence` (``None``: recompute ESM2 at every
        call, as the released sampler does).
    precision : {'fp32', 'bf16', 'int8'}
        ``bf16`` runs the denoiser under bfloat16 autocast (fast on CPUs with native bf16, e.g. AMX / AVX512-BF16);
        ``int8`` quantizes its Linear layers in place first (:func:`quantize_int8_`; the model stays quantized).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: accepted {', '.join(PRECISIONS)}")
    if precision == "int8":
        quantize_int8_(released)
    net = released.model.net

    def eps_fn(x: torch.Tensor, model_time: torch.Tensor, sqrt_one_minus: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        embeds = None if sequence_embeds is None else sequence_embeds.expand(batch, -1, -1)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = net(x, cell_latent.expand(batch, -1, -1, -1), tokens.expand(batch, -1), model_time, sqrt_one_minus,
                      sequence_embeds=embeds)
        return out.image.float()

    return eps_fn


@torch.no_grad()
def sample_released(released, cell_latent: torch.Tensor, tokens: torch.Tensor, noise: torch.Tensor, *,
                    sampler: str = "ddim", steps: int | None = None, precision: str = "fp32",
                    embed_once: bool = True, progress: bool = False) -> torch.Tensor:
    """Denoise ``noise`` ``(B, latent_channels, h, w)`` for one sequence and decode it: ``(B, 1, H, W)`` images.

    Parameters
    ----------
    released : ReleasedCellDiff
    cell_latent : torch.Tensor
        ``(1 or B, latent_channels * n_landmarks, h, w)`` landmark latents.
    tokens : torch.Tensor
        ``(1, T)`` token ids.
    noise : torch.Tensor
        ``(B, latent_channels, h, w)`` initial latents (x_T).
    sampler : {'ddim', 'dpmsolver'}
        ``ddim``: the released DDIM with ``steps`` -> ``"ddim{steps}"`` (``None``: the config's
        ``timestep_respacing``). ``dpmsolver``: DPM-Solver++ with ``steps`` network calls (default 20).
    precision : {'fp32', 'bf16', 'int8'}
        See :func:`released_eps_fn` (``int8`` quantizes the denoiser in place).
    embed_once : bool
        Compute ESM2 once (``False`` recomputes it at every step, as the released code does; same numbers).
    progress : bool
        Show a progress bar over the steps.
    """
    from locscope.diffusion.published_ddim import SpacedSchedule, dpm_solver_sample, published_ddim_sample

    config = released.model.config
    embeds = released.model.net.embed_sequence(tokens) if embed_once else None
    eps_fn = released_eps_fn(released, cell_latent, tokens, embeds, precision)
    if sampler == "ddim":
        respacing = released.respacing if steps is None else f"ddim{steps}"
        schedule = SpacedSchedule.from_published(config.num_timesteps, config.ddpm_schedule, respacing)
        latent = published_ddim_sample(eps_fn, noise, schedule, progress=progress)
    elif sampler == "dpmsolver":
        # Start where the released DDIM (the config's respacing) starts, so both solve the same problem.
        released_steps = SpacedSchedule.from_published(config.num_timesteps, config.ddpm_schedule, released.respacing)
        latent = dpm_solver_sample(eps_fn, noise, config.num_timesteps, config.ddpm_schedule, steps or 20,
                                   start_timestep=int(released_steps.timestep_map[-1]), progress=progress)
    else:
        raise ValueError(f"sampler={sampler!r}: accepted {', '.join(SAMPLERS)}")
    return released.vae.decode(latent)


@torch.no_grad()
def generate_released(
    sequences: Sequence[tuple[str, str]],
    landmarks: Sequence[str | Path],
    out_dir: str | Path,
    model_dir: str | Path,
    *,
    esm_path: str | Path | None = None,
    sampler: str = "ddim",
    steps: int | None = None,
    samples: int = 1,
    seed: int = 0,
    precision: str = "fp32",
    device: str = "cpu",
    progress: bool = True,
    overwrite: bool = False,
) -> ReleasedGenerateResult:
    """Generate protein images with a released CELL-Diff checkpoint set (see the module docstring for the loop).

    Parameters
    ----------
    sequences : sequence of (str, str)
        ``(id, amino-acid sequence)`` pairs.
    landmarks : sequence of path
        Landmark image files or a sample folder (``nucleus.png``, ``ER.png``, ``microtubule.png``).
    out_dir : path
        Output folder: new or empty, or an earlier ``generate`` output with ``overwrite`` (written beside it and
        swapped in when complete; see :mod:`locscope.utils.outputs`).
    model_dir : path
        The checkpoint set, resolved by the model hub (family ``celldiff-released``, see
        :func:`locscope.models.celldiff_v2.load_released_checkpoint_set`).
    esm_path : path, optional
        Local transformers ESM2 directory replacing the checkpoint's ESM2.
    sampler : {'ddim', 'dpmsolver'}
        The released DDIM (default) or DPM-Solver++.
    steps : int, optional
        DDIM: ``"ddim{steps}"`` instead of the config's ``timestep_respacing``; DPM-Solver++: network calls (20).
    samples : int
        Images per sequence (>= 1), denoised as one batch.
    seed : int
        Seeds the draws (the released script's ``torch.manual_seed``).
    precision : {'fp32', 'bf16', 'int8'}
        bf16 autocast for the denoiser, or dynamic int8 Linear layers (:func:`quantize_int8_`).
    device : {'cpu', 'cuda', 'auto'}
    progress : bool
        Progress bars.
    overwrite : bool
        Replace an earlier ``generate`` output in ``out_dir``.

    Returns
    -------
    ReleasedGenerateResult

    Raises
    ------
    InputError
        Bad checkpoint set, landmarks or sequence (one line naming the file / record).
    ArgumentError
        If ``sampler``, ``steps``, ``samples`` or ``precision`` is out of range (naming the argument).
    """
    from locscope.models import hub
    from locscope.models.celldiff_v2 import CellDiffV2Tokenizer
    from locscope.utils.device import resolve_device

    if sampler not in SAMPLERS:
        raise ArgumentError("sampler", f"{sampler}: accepted {', '.join(SAMPLERS)}")
    if precision not in PRECISIONS:
        raise ArgumentError("precision", f"{precision}: accepted {', '.join(PRECISIONS)}")
    for name, value in (("steps", steps), ("samples", samples)):
        if value is not None and value < 1:
            raise ArgumentError(name, f"must be at least 1; got {value}")
    if not sequences:
        raise ArgumentError("sequences", ": nothing to generate (no sequence given)")
    folders: dict[str, str] = {}
    for name, _ in sequences:
        folder = file_name_for_id(name)
        if folder in folders:
            raise InputError(f"sequence id {name!r}: same file name as sequence {folders[folder]!r}; ids must be unique")
        folders[folder] = name
    check_output_folder(out_dir, "generate", overwrite=overwrite, known_files=OUTPUT_FILES)
    target = resolve_device(device)
    released = hub.load(model_dir, families=("celldiff-released",), device=str(target), argument="model",
                        esm_path=esm_path)
    config = released.model.config
    tokenizer = CellDiffV2Tokenizer(max_residues=config.max_protein_sequence_len)
    encoded = [(name, tokenizer.encode(seq, record=name)) for name, seq in sequences]  # validate all first
    images = read_released_landmarks(landmarks, config.landmark_names, released.image_size)

    generator = torch.Generator().manual_seed(seed)
    latent_shape = (1, config.latent_channels, config.sample_size, config.sample_size)
    latents = {}
    for name in config.landmark_names:  # the released draw order: nucleus, ER, microtubules
        if name in images:
            eps = torch.randn(latent_shape, generator=generator).to(target)
            latents[name] = released.vae.sample_latent(torch.from_numpy(images[name])[None, None].to(target), eps)
        else:
            log.warning("landmarks: no %s image; using the model's learned placeholder for it", name)
    cell_latent = released.model.cell_latent(latents)

    entries = []
    with output_folder(out_dir, "generate", overwrite=overwrite, known_files=OUTPUT_FILES) as work:
        for name, ids in encoded:
            tokens = torch.tensor([ids], dtype=torch.long, device=target)
            noise = torch.cat([torch.randn(latent_shape, generator=generator) for _ in range(samples)]).to(target)
            started = time.perf_counter()
            decoded = sample_released(released, cell_latent, tokens, noise, sampler=sampler, steps=steps,
                                      precision=precision, progress=progress)[:, 0].float().cpu().numpy()
            seconds = time.perf_counter() - started
            folder = file_name_for_id(name)
            (work / folder).mkdir()
            files = []
            for k, image in enumerate(decoded):
                write_png(work / folder / f"sample_{k}.png", published_png(image))
                write_tiff(work / folder / f"sample_{k}_raw.tif", image.astype(np.float32))
                files.append(f"{folder}/sample_{k}.png")
            entries.append({"id": name, "folder": folder, "length": len(ids) - 2, "samples": files,
                            "seconds": round(seconds, 3), "value_range": [float(decoded.min()), float(decoded.max())]})
        respacing = (released.respacing if steps is None else f"ddim{steps}") if sampler == "ddim" else None
        run = {
            "model": str(model_dir), "family": "celldiff-released",
            "files": {k: str(v) for k, v in released.files.items()},
            "sampler": sampler, "timestep_respacing": respacing,
            "steps": steps if sampler == "dpmsolver" else None, "precision": precision, "seed": seed,
            "samples_per_sequence": samples, "landmarks": sorted(images),
            "placeholder_landmarks": [n for n in config.landmark_names if n not in images],
            "image_size": released.image_size, "sequences": entries,
        }
        write_json(work / "summary.json", run)
        write_text(work / "report.html", _report_html(run))
    out = Path(out_dir)
    return ReleasedGenerateResult(out, entries, out / "report.html", out / "summary.json")


def _report_html(run: dict) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(e['id'])}</td><td>{e['length']}</td><td>"
        + "".join(f'<img src="{esc(f)}" width="192">' for f in e["samples"]) + "</td></tr>"
        for e in run["sequences"]
    )
    sampler = run["timestep_respacing"] or f"DPM-Solver++ {run['steps'] or 20} steps"
    return html_page("locscope generate", (
        f"<h1>Generated protein images</h1><p>Released CELL-Diff checkpoint set {esc(run['model'])}; sampler "
        f"{esc(str(sampler))}; {esc(run['precision'])}; seed {run['seed']}; landmarks {esc(', '.join(run['landmarks']))}"
        f"{'; placeholder for ' + esc(', '.join(run['placeholder_landmarks'])) if run['placeholder_landmarks'] else ''}"
        f".</p><table><tr><th>id</th><th>residues</th><th>samples</th></tr>{rows}</table>"))
