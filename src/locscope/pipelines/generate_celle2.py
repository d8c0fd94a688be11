"""``locscope generate --model celle2-...``: protein localization images from sequences and a nucleus image with a
CELL-E 2 model.

The loop, per batch of sequences: tokenize the sequences (residue limit: the model's ``text_seq_len``) and, once, the
nucleus image -> :func:`locscope.diffusion.celle2_sampler.decode_image_tokens` (``K`` samples each, ``passes``
forward passes) -> write, per sequence, the decoded samples (``sample_k``, the tokenizer's raw output in [0, 1]),
their binary threshold images (``threshold_k``: > 0.5, CELL-E 2's output), the mean image and the probability map
(CELL-E 2's "PDF": the decoded expectation of the codebook under each token's distribution, averaged over the K
samples), the nucleus proportion (:func:`locscope.metrics.celle2.nucleus_proportion` of the threshold images inside
the nucleus image's Otsu mask, averaged over the samples with protein pixels: the score ``design`` ranks CELL-E 2
candidates by), compartment fractions under simulator masks when the landmarks come with them; then ``summary.json``,
``summary.csv`` and ``report.html``. CELL-E 2 sees the nucleus only: ER / microtubule images are ignored (with a
notice); a missing nucleus is an error.
"""

from __future__ import annotations

import csv
import html
import io
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from locscope.channels import ER, MICROTUBULES, NUCLEUS
from locscope.errors import ArgumentError, InputError
from locscope.metrics.celle2 import nucleus_mask, nucleus_proportion
from locscope.pipelines.generate_outputs import (
    OUTPUT_FILES, PREVIEW_SCALE, SAMPLE_TABLE_STYLE, GenerateResult, folder_name,
)
from locscope.pipelines.landmark_cells import read_landmarks
from locscope.report.html import html_page
from locscope.utils.atomic import write_json, write_text

log = logging.getLogger(__name__)


def nucleus_tokens(net, landmarks: Sequence[str | Path]) -> tuple[torch.Tensor, object]:
    """Read the landmark files, check that a nucleus image is among them and tokenize it.

    Returns
    -------
    (torch.Tensor, LandmarkCell)
        ``(1, S)`` nucleus codes and the cell read at the model's resolution (channels nucleus, ER, microtubules).

    Raises
    ------
    InputError
        If no nucleus image is found (CELL-E 2's only landmark).
    """
    from locscope.models.celle2 import normalize_nucleus

    channels = (NUCLEUS, ER, MICROTUBULES)
    cell = read_landmarks(landmarks, channels, net.config.image_size)
    if not cell.present[0]:
        raise ArgumentError("landmarks", f"{landmarks[0]}: CELL-E 2 needs a nucleus image; the files hold only "
                                         f"{', '.join(c for c, p in zip(channels, cell.present) if p)}")
    ignored = [c for c, p in zip(channels[1:], cell.present[1:]) if p]
    if ignored:
        log.warning("CELL-E 2 uses the nucleus only; ignoring %s", ", ".join(ignored))
    device = net.rotary.device
    nucleus = torch.from_numpy(cell.images[0])[None, None].to(device)
    with torch.no_grad():
        return net.encode_nucleus(normalize_nucleus(nucleus)), cell


def generate_celle2(sequences: Sequence[tuple[str, str]], landmarks: Sequence[str | Path], out_dir: str | Path, *,
                    model: str | Path, passes: int = 1, temperature: float = 1.0, samples: int = 4, seed: int = 0,
                    device: str = "auto", batch_size: int = 8, progress: bool = True, overwrite: bool = False,
                    output_command: str = "generate", expected: dict[str, str] | None = None):
    """Generate localization images with a CELL-E 2 model for ``(id, sequence)`` pairs in one nucleus image.

    Parameters
    ----------
    sequences : sequence of (str, str)
        ``(id, amino-acid sequence)`` pairs.
    landmarks : sequence of path
        Landmark files; the nucleus image is used, ER / microtubules are ignored.
    out_dir : path
        Output directory (one sub-folder per sequence, plus ``report.html``, ``summary.json``, ``summary.csv``).
    model : str or path
        Bundled CELL-E 2 name, locscope model directory, or released ``CELLE_trainer`` yaml / folder.
    passes : int
        Forward passes per image (1 = CELL-E 2's one-pass generation; N > 1: MaskGIT's cosine schedule).
    temperature : float
        > 0; sampling temperature of the image tokens.
    samples, seed, device, batch_size, progress, overwrite, output_command, expected :
        As :func:`locscope.pipelines.generate.generate` (the same output-folder policy; every sample is read by the
        compartment read-out classifier with the nucleus as its only landmark: ``drawn_level3`` and
        ``drawn_level3_per_sample``, with ``expected_level3`` and ``samples_right`` for ``expected`` ids).

    Returns
    -------
    locscope.pipelines.generate.GenerateResult

    Raises
    ------
    InputError
        On bad options, a missing nucleus, or a sequence beyond the model's residue limit.
    """
    from locscope.diffusion.celle2_sampler import decode_image_tokens
    from locscope.models import hub
    from locscope.pipelines.readout import classify_level3, compartment_fractions, load_readout
    from locscope.report.images import unit_to_uint16, write_png, write_tiff
    from locscope.utils.outputs import check_output_folder, output_folder
    from locscope.utils.device import resolve_device
    from locscope.utils.progress import track

    if passes < 1:
        raise ArgumentError("passes", f"{passes}: must be >= 1")
    if not temperature > 0:
        raise ArgumentError("temperature", f"{temperature}: must be > 0")
    if samples < 1:
        raise ArgumentError("samples", f"{samples}: must be >= 1")
    if not sequences:
        raise ArgumentError("sequences", ": nothing to generate (no sequence given)")
    check_output_folder(out_dir, output_command, overwrite=overwrite, known_files=OUTPUT_FILES)
    torch_device = resolve_device(device)
    net = hub.load(model, families=("celle2",), device=torch_device)
    cfg = net.config
    for name, sequence in sequences:
        try:
            net.tokenize([sequence])
        except ValueError:  # too long for the model
            limit = cfg.text_seq_len
            raise ArgumentError("sequences", f": {name!r} has {len(sequence)} residues; the model's residue limit is "
                                f"{limit} (max_length {limit} with truncate keeps both termini)",
                                mentions=("max_length", "truncate")) from None
        except InputError as err:
            raise InputError(f"sequence {name!r}: {err}") from None
    nucleus, cell = nucleus_tokens(net, landmarks)
    readout = load_readout()
    with output_folder(out_dir, output_command, overwrite=overwrite, known_files=OUTPUT_FILES) as out:
        nucleus_image = cell.images[0]
        nucleus_region = nucleus_mask(nucleus_image)  # as design ranks CELL-E 2 candidates
        write_png(out / "landmarks.png", nucleus_image, scale=PREVIEW_SCALE)
        trim = cfg.text_encoder == "builtin"  # the released ESM2 models always see the full text stream
        results, used_names, n_images, passes_used = [], {}, 0, 0
        started = time.perf_counter()
        batches = [sequences[i:i + batch_size] for i in range(0, len(sequences), batch_size)]
        for b, batch in enumerate(track(batches, "generating", enabled=progress)):
            text = net.tokenize([s for _, s in batch], trim=trim).repeat_interleave(samples, dim=0)
            generator = torch.Generator(device=torch_device).manual_seed(seed + b)
            with torch.no_grad():
                sample = decode_image_tokens(net, text, nucleus.expand(len(text), -1), passes=passes,
                                             temperature=temperature, generator=generator)
                decoded = net.decode_protein(sample.tokens)[:, 0].float().cpu().numpy()  # (B K, H, W)
                probability = net.probability_map(sample.probabilities)[:, 0].float().cpu().numpy()
            passes_used = sample.passes
            n_images += len(decoded)
            size = cfg.image_size
            decoded = decoded.reshape(len(batch), samples, size, size)
            probability = probability.reshape(len(batch), samples, size, size).mean(1)
            for (name, sequence), stack, pdf in zip(batch, decoded, probability):
                folder = out / folder_name(name, used_names)
                folder.mkdir(parents=True, exist_ok=True)
                images = np.clip(stack, 0, 1)
                for k, (image, raw) in enumerate(zip(images, stack)):
                    write_png(folder / f"sample_{k}.png", image, scale=PREVIEW_SCALE)
                    write_tiff(folder / f"sample_{k}.tif", unit_to_uint16(image))
                    binary = (raw > 0.5).astype(np.float32)
                    write_png(folder / f"threshold_{k}.png", binary, scale=PREVIEW_SCALE)
                    write_tiff(folder / f"threshold_{k}.tif", unit_to_uint16(binary))
                mean = images.mean(0)
                for stem, image in (("mean", mean), ("probability", pdf)):
                    write_png(folder / f"{stem}.png", image, scale=PREVIEW_SCALE)
                    write_tiff(folder / f"{stem}.tif", unit_to_uint16(image))
                write_png(folder / "landmarks.png", nucleus_image, scale=PREVIEW_SCALE)
                fractions = compartment_fractions(pdf, cell.masks) if cell.masks else {}
                shares = nucleus_proportion(stack > 0.5, np.broadcast_to(nucleus_region, stack.shape))
                nucleus_share = None if np.isnan(shares).all() else float(np.nanmean(shares))
                probabilities = classify_level3(readout, images, nucleus_image[None], (NUCLEUS,))
                drawn = [readout.config.classes[int(i)] for i in probabilities.argmax(1)]
                entry = {"id": name, "folder": folder.name, "length": len(sequence), "samples": samples,
                         "compartment_fractions": fractions, "top_compartment_image": next(iter(fractions), None),
                         "nucleus_proportion": nucleus_share, "drawn_level3": max(drawn, key=drawn.count),
                         "drawn_level3_per_sample": drawn}
                if expected and name in expected:
                    entry["expected_level3"] = expected[name]
                    entry["samples_right"] = sum(d == expected[name] for d in drawn)
                write_json(folder / "result.json", entry)
                results.append(entry)
        seconds = time.perf_counter() - started
        run = {"model": str(model), "family": "celle2", "passes": passes, "temperature": temperature,
               "samples": samples, "seed": seed, "landmarks": cell.source, "landmark_channels_present": [NUCLEUS],
               "network_evaluations_per_image": passes_used, "seconds_per_image": seconds / max(n_images, 1),
               "sequences": results}
        write_json(out / "summary.json", run)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["id", "length", "expected_level3", "drawn_level3", "samples_right", "top_compartment_image",
                         "nucleus_proportion"])
        for e in results:
            share = "" if e["nucleus_proportion"] is None else f"{e['nucleus_proportion']:.4f}"
            writer.writerow([e["id"], e["length"], e.get("expected_level3", ""), e["drawn_level3"],
                             e.get("samples_right", ""), e["top_compartment_image"] or "", share])
        write_text(out / "summary.csv", buffer.getvalue())
        report = out / "report.html"
        write_text(report, _report_html(run))
    out_dir = Path(out_dir)
    return GenerateResult(out_dir, out_dir / "report.html", results, passes_used, run["seconds_per_image"])


def _report_html(run: dict) -> str:
    esc = html.escape
    rows = []
    for e in run["sequences"]:
        samples = "".join(f'<img src="{esc(e["folder"])}/sample_{k}.png">' for k in range(run["samples"]))
        thresholds = "".join(f'<img src="{esc(e["folder"])}/threshold_{k}.png">' for k in range(run["samples"]))
        fractions = ", ".join(f"{esc(k)} {v:.0%}" for k, v in list(e["compartment_fractions"].items())[:3]) or "n/a"
        drawn = ", ".join(esc(d) for d in e["drawn_level3_per_sample"])
        if e.get("expected_level3"):
            drawn = (f"expected <b>{esc(e['expected_level3'])}</b>, right in {e['samples_right']} of "
                     f"{len(e['drawn_level3_per_sample'])}<br><small>{drawn}</small>")
        rows.append(f"<tr><td><b>{esc(e['id'])}</b><br>{e['length']} aa</td>"
                    f'<td><img src="{esc(e["folder"])}/landmarks.png"></td><td>{samples}</td><td>{thresholds}</td>'
                    f'<td><img src="{esc(e["folder"])}/probability.png"></td><td>{drawn}</td><td>{fractions}</td></tr>')
    settings = (f"model {esc(run['model'])} (CELL-E 2), {run['passes']} pass(es) = "
                f"{run['network_evaluations_per_image']} network evaluations per image, temperature {run['temperature']}, {run['samples']} samples, seed "
                f"{run['seed']}, {run['seconds_per_image']:.3f} s/image; nucleus from {esc(run['landmarks'])}")
    return html_page("locscope generate (CELL-E 2)", f"""<h1>Generated localization images (CELL-E 2)</h1>
<p>{settings}</p>
<p>Samples: the protein tokenizer's decoded images; threshold: where they exceed 0.5 (CELL-E 2's binary output).
Probability: per pixel, the decoded expectation of the image tokens' distributions (CELL-E 2's "PDF").
Drawn: the level-3 compartment the read-out classifier sees in each sample, with the nucleus as its only landmark.
Image fractions: share of the probability map per level-3 class under the simulator's compartment masks (simulator
landmarks only).</p>
<table><tr><th>sequence</th><th>nucleus</th><th>samples</th><th>threshold</th><th>probability</th>
<th>drawn (read-out)</th><th>image fractions</th></tr>{''.join(rows)}</table>""", style=SAMPLE_TABLE_STYLE)
