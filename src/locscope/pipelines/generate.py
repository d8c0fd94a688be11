"""``locscope generate``: protein localization images from sequences and cell landmarks with a CELL-Diff model.

The loop, per batch of sequences: tokenize -> :func:`locscope.diffusion.celldiff_sampler.sample_protein_images`
(``K`` samples each, DDIM or DPM-Solver++, classifier-free guidance) -> write, per sequence, the samples (PNG + 16-bit
TIFF), the landmark composite, the mean image, the per-pixel probability map (fraction of the K samples in which a
pixel is above its image's Otsu threshold: CELL-E 2's "PDF"), compartment fractions (when the landmarks come with the
simulator's compartment masks) and the sequence-only compartment probabilities of the model's auxiliary head; then
``summary.json``, ``summary.csv`` and ``report.html`` for the whole run.

Landmarks of any size are resized to the model's resolution (area averaging) and scaled to [0, 1] by their dtype
range (floats in [-1, 1], e.g. ProtiCelli stacks, are mapped to [0, 1]); a warning names a pixel size that differs
from the model's training data.
"""

from __future__ import annotations

import csv
import html
import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from locscope.channels import NUCLEUS, PROTEIN
from locscope.errors import ArgumentError, InputError, check_at_least
from locscope.io.sequences import model_crop_note
from locscope.models import hub
from locscope.pipelines.generate_outputs import (
    OUTPUT_FILES, PREVIEW_SCALE, SAMPLE_TABLE_STYLE, GenerateResult, folder_name, probability_map,
)
from locscope.pipelines.landmark_cells import latent_conditions, read_landmarks
from locscope.pipelines.readout import classify_level3, compartment_fractions, load_readout, top_shares
from locscope.report.html import html_page
from locscope.utils.atomic import write_json, write_text
from locscope.utils.outputs import check_output_folder, output_folder

if TYPE_CHECKING:
    from locscope.pipelines.generate_released import ReleasedGenerateResult

log = logging.getLogger(__name__)


def load_celldiff(model: str | Path | None = None, device: str | torch.device = "cpu"):
    """A CELL-Diff model from a bundled name (default: the bundled default generator) or a model directory, in eval
    mode (resolved by :mod:`locscope.models.hub`).

    Raises
    ------
    InputError
        If no CELL-Diff model is found there.
    """
    return hub.load(model, default=hub.DEFAULT_GENERATOR, families=("celldiff",), device=device)


GENERATOR_FAMILIES = ("celldiff", "latent")  # the diffusion families generate() runs itself (CELL-E 2: its own)


def load_generator(model: str | Path | None = None, device: str | torch.device = "cpu"):
    """A CELL-Diff or latent diffusion model (:data:`GENERATOR_FAMILIES`; default: the bundled default generator),
    in eval mode: what localize's image methods, design and explain run on.

    Raises
    ------
    InputError
        If no model of those families is found there.
    """
    return hub.load(model, default=hub.DEFAULT_GENERATOR, families=GENERATOR_FAMILIES, device=device)


def parse_compartment_target(text: str, classes: Sequence[str]) -> np.ndarray:
    """``'mitochondria'`` or ``'mitochondria:0.6,cytosol:0.4'`` -> a distribution ``(len(classes),)`` summing to 1.

    Raises
    ------
    InputError
        For an unknown compartment, a bad or negative weight, or weights summing to 0.
    """
    target = np.zeros(len(classes), np.float32)
    for part in (p.strip() for p in text.split(",")):
        name, _, weight = part.partition(":")
        name = name.strip().lower().replace(" ", "-").replace("_", "-")
        if name not in classes:
            raise ArgumentError("compartment", f"{text!r}: unknown compartment {name!r}; this model places "
                                               f"proteins in: {', '.join(classes)}")
        try:
            value = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise ArgumentError("compartment", f"{text!r}: weight {weight!r} of {name!r} is not a number") from None
        if not np.isfinite(value) or value < 0:
            raise ArgumentError("compartment", f"{text!r}: weight of {name!r} must be >= 0")
        target[list(classes).index(name)] += value
    if target.sum() <= 0:
        raise ArgumentError("compartment", f"{text!r}: the weights sum to 0")
    return target / target.sum()


def sequence_head(model, tokens: torch.Tensor) -> tuple[tuple[str, ...], np.ndarray]:
    """Sequence-only compartment probabilities reported by ``generate``: ``(classes, (B, n) probabilities)``. Level-3
    models report :func:`locscope.pipelines.localize.sequence_head_probabilities` (which folds in the fraction head);
    models trained on other classes their raw compartment head."""
    from locscope.pipelines.readout import LEVEL3_CLASSES, sequence_head_probabilities

    if set(model.config.compartment_classes) == set(LEVEL3_CLASSES):
        return LEVEL3_CLASSES, sequence_head_probabilities(model, tokens)[0]
    return tuple(model.config.compartment_classes), model.predict_compartments(tokens).cpu().numpy()


def generate(sequences: Sequence[tuple[str, str]], landmarks: Sequence[str | Path], out_dir: str | Path, *,
             model: str | Path | None = None, sampler: str | None = None, steps: int | None = None,
             guidance: float | None = None, samples: int | None = None, seed: int = 0, device: str = "auto",
             batch_size: int = 8, progress: bool = True, compartment: str | None = None, placement: str | None = None,
             overwrite: bool = False, output_command: str = "generate", passes: int = 1,
             temperature: float = 1.0, esm: str | Path | None = None, precision: str = "fp32",
             expected: dict[str, str] | None = None, condition: str = "auto",
             ) -> GenerateResult | "ReleasedGenerateResult":
    """Generate localization images for ``(id, sequence)`` pairs in one landmark cell; write files + report.

    The model's family (:mod:`locscope.models.hub`) picks the loop: CELL-Diff and latent diffusion models run here;
    a CELL-E 2 model runs :func:`locscope.pipelines.generate_celle2.generate_celle2` (``passes``, ``temperature``,
    ``samples``, ``seed``; the diffusion options do not apply); a released CELL-Diff checkpoint folder runs
    :func:`locscope.pipelines.generate_released.generate_released` (``sampler``, ``steps``, ``samples``, ``seed``,
    ``esm``, ``precision``) and returns its :class:`~locscope.pipelines.generate_released.ReleasedGenerateResult`.

    Parameters
    ----------
    sequences : sequence of (str, str)
        ``(id, amino-acid sequence)`` pairs.
    landmarks : sequence of path
        Landmark image files (nucleus / ER / microtubules; any subset, any reader format).
    out_dir : path
        Output directory (one sub-folder per sequence, plus ``report.html``, ``summary.json``, ``summary.csv``).
    model : str or path, optional
        Bundled name (``'celldiff-tiny'``) or model directory.
    sampler : {'ddim', 'dpmsolver'}, optional
        Default DPM-Solver++ (released checkpoints: their DDIM).
    steps : int, optional
        Denoising steps (default 100 for DDIM, 50 for latent models; 10 for DPM-Solver++, 8 for latent models).
    guidance : float, optional
        Classifier-free guidance scale (1 = none; default 2 for CELL-Diff, 3 for latent diffusion models).
    samples : int, optional
        Images per sequence (K >= 1; default 4, released checkpoints 1).
    seed : int
        Seeds the initial noise; the same seed gives the same images.
    device : {'auto', 'cpu', 'cuda'}
    batch_size : int
        Sequences per sampler batch (each contributes K images).
    compartment : str, optional
        Models with the compartment bottleneck: place the protein in this level-1 compartment (or a weighted mix,
        ``'mitochondria:0.6,cytosol:0.4'``) instead of where the sequence's fraction head predicts; the sequence still
        conditions the image through cross-attention. Without it, ``result.json`` records the predicted distribution.
    passes, temperature :
        CELL-E 2 models only: forward passes per image and the image tokens' sampling temperature.
    placement : {'soft', 'sample', 'top'}, optional
        Bottleneck models without ``compartment``: condition on the predicted distribution, on one compartment drawn
        from it per sample, or on its most likely compartment
        (:func:`locscope.diffusion.samplers.place_condition`). Default: the ``placement`` of the model folder's
        ``condition_prior.json``, else ``'soft'``.
    condition : {'auto', 'head'}
        Bottleneck models without ``compartment``: where the predicted distribution comes from. ``'auto'``: the
        model's fraction head, deferring to the sequence localizer where the head is unsure when the model folder has
        a ``condition_prior.json`` (:mod:`locscope.pipelines.condition`); ``'head'``: the fraction head alone.
    overwrite : bool
        Replace an earlier ``generate`` output in ``out_dir`` (written beside it, then swapped in); other non-empty
        folders are always refused (:mod:`locscope.utils.outputs`).
    output_command : str
        The command the output folder is marked as written by (``demo`` runs this function too).
    esm : path, optional
        Released checkpoints only: a local transformers ESM2 directory replacing the checkpoint's ESM2.
    precision : {'fp32', 'bf16', 'int8'}
        Released checkpoints only: bf16 autocast, or dynamic int8 Linear layers.
    expected : dict of str to str, optional
        Sequence id -> its annotated level-3 class; recorded as ``expected_level3`` beside what was drawn, with the
        number of samples drawn there (``samples_right``).

    Every sample is also read by the compartment read-out classifier (``compartment-readout``, when installed): its
    level-3 class per sample (``drawn_level3_per_sample``) and the most frequent one (``drawn_level3``).

    Raises
    ------
    InputError
        On bad options, unreadable landmarks, or invalid sequences.
    """
    import time

    from locscope.diffusion.celldiff_sampler import sample_protein_images
    from locscope.diffusion.samplers import SAMPLERS
    from locscope.encoders.protein import tokenize
    from locscope.pipelines.localize import sampling_defaults
    from locscope.report.images import landmark_composite, unit_to_uint16, write_png, write_tiff
    from locscope.utils.device import resolve_device
    from locscope.utils.progress import track

    family = hub.family_of_model(model, default=hub.DEFAULT_GENERATOR)
    if family == "celldiff-released":
        from locscope.pipelines.generate_released import generate_released

        if guidance is not None:
            raise ArgumentError("guidance", ": released CELL-Diff checkpoints have no classifier-free guidance")
        if compartment is not None:
            raise ArgumentError("compartment", ": released CELL-Diff checkpoints have no compartment condition")
        return generate_released(sequences, landmarks, out_dir, model, esm_path=esm, sampler=sampler or "ddim",
                                 steps=steps, samples=1 if samples is None else samples, seed=seed,
                                 precision=precision, device=device, progress=progress, overwrite=overwrite)
    for name, value in (("esm", esm), ("precision", None if precision == "fp32" else precision)):
        if value is not None:
            raise ArgumentError(name, ": only for released CELL-Diff checkpoint folders")
    sampler = sampler or "dpmsolver"
    samples = 4 if samples is None else samples
    if family == "celle2":
        if compartment is not None:
            raise ArgumentError("compartment", ": CELL-E 2 models place the protein from its sequence only")
        from locscope.pipelines.generate_celle2 import generate_celle2

        return generate_celle2(sequences, landmarks, out_dir, model=model, passes=passes, temperature=temperature,
                               samples=samples, seed=seed, device=device, batch_size=batch_size, progress=progress,
                               overwrite=overwrite, output_command=output_command, expected=expected)
    if sampler not in SAMPLERS:
        raise ArgumentError("sampler", f"{sampler!r}: accepted values are {', '.join(SAMPLERS)}")
    check_at_least("samples", samples)
    check_at_least("steps", steps)
    if guidance is not None and guidance < 0:
        raise ArgumentError("guidance", f"{guidance}: must be >= 0")
    from locscope.diffusion.celldiff_sampler import PLACEMENTS
    from locscope.pipelines.condition import CONDITIONS, sequence_condition

    if condition not in CONDITIONS:
        raise ArgumentError("condition", f"{condition!r}: accepted values are {', '.join(CONDITIONS)}")
    if placement is not None and placement not in PLACEMENTS:
        raise ArgumentError("placement", f"{placement!r}: accepted values are {', '.join(PLACEMENTS)}")
    if not sequences:
        raise ArgumentError("sequences", ": nothing to generate (no sequence given)")
    check_output_folder(out_dir, output_command, overwrite=overwrite, known_files=OUTPUT_FILES)
    for name, seq in sequences:
        try:
            tokenize([seq])
        except InputError as err:
            raise InputError(f"sequence {name!r}: {err}") from None
    torch_device = resolve_device(device)
    ref = hub.resolve(model, default=hub.DEFAULT_GENERATOR, families=GENERATOR_FAMILIES)
    net = ref.load(torch_device)
    cfg = net.config
    readout = load_readout()
    latent = ref.family == "latent"
    steps, guidance = sampling_defaults(net, sampler, steps, guidance)
    target = None
    if compartment is not None:
        if not cfg.fraction_classes:
            raise ArgumentError("compartment", "needs a model with the compartment bottleneck "
                                               f"(config.fraction_classes); {model or 'this model'} has none")
        target = torch.from_numpy(parse_compartment_target(compartment, cfg.fraction_classes))
    conditioner = (sequence_condition(net, ref.directory, condition, torch_device)
                   if cfg.fraction_classes and target is None else None)
    if target is not None:  # --compartment: the given distribution itself
        placement = "soft"
    elif placement is None:  # the model folder's choice (condition_prior.json), else the training-time behaviour
        placement = conditioner.prior.placement if conditioner is not None and conditioner.prior else "soft"
    channels = (NUCLEUS, *cfg.landmark_channels) if latent else cfg.landmark_channels
    cell = read_landmarks(landmarks, channels, cfg.image_size)
    if latent:
        distance, latent_landmarks = latent_conditions(cell, landmarks)
    model_length = getattr(cfg, "max_sequence_length", None)
    for name, seq in sequences:
        if model_length and model_crop_note(len(seq), model_length):
            log.warning("sequence %r: %s", name, model_crop_note(len(seq), model_length))
    with output_folder(out_dir, output_command, overwrite=overwrite, known_files=OUTPUT_FILES) as out:
        composite = landmark_composite(cell.images, channels)
        write_png(out / "landmarks.png", composite, scale=PREVIEW_SCALE)
        lm = torch.from_numpy(cell.images * 2 - 1).to(torch_device)
        present = torch.from_numpy(cell.present).to(torch_device)
        results, used_names, nfe_total, n_images = [], {}, 0, 0
        started = time.perf_counter()
        batches = [sequences[i:i + batch_size] for i in range(0, len(sequences), batch_size)]
        for b, batch in enumerate(track(batches, "generating", enabled=progress)):
            tokens, _ = tokenize([s for _, s in batch], cfg.max_sequence_length)
            generator = torch.Generator(device=torch_device).manual_seed(seed + b)
            with torch.no_grad():
                deferred = np.zeros(len(batch), bool)
                if target is not None:
                    fractions = target[None].expand(len(batch), -1).to(torch_device)
                elif conditioner is not None and conditioner.localizer is not None:
                    prior_fractions, deferred = conditioner([s for _, s in batch])
                    fractions = torch.from_numpy(prior_fractions).to(torch_device)
                else:
                    fractions = None
                if latent:
                    rows = len(batch)
                    others = None if latent_landmarks is None else latent_landmarks.expand(rows, -1, -1, -1)
                    images, nfe = net.sample(
                        distance.to(torch_device).expand(rows, -1, -1, -1), tokens.to(torch_device),
                        None if others is None else others.to(torch_device), present[None, 1:].expand(rows, -1),
                        samples=samples, sampler=sampler, steps=steps, guidance=guidance, generator=generator,
                        fractions=fractions, placement=placement)
                    protein = cfg.image_channels.index(PROTEIN)
                    images = images[:, protein:protein + 1]
                else:
                    images, nfe = sample_protein_images(
                        net, lm[None].expand(len(batch), -1, -1, -1), tokens.to(torch_device),
                        present[None].expand(len(batch), -1), samples=samples, sampler=sampler, steps=steps,
                        guidance=guidance, generator=generator, fractions=fractions,
                        placement=placement)
                head_classes, head = sequence_head(net, tokens.to(torch_device))
                if cfg.fraction_classes:
                    conditions = (net.predict_fractions(tokens.to(torch_device)).cpu().numpy() if fractions is None
                                  else fractions.float().cpu().numpy())
                else:
                    conditions = [None] * len(batch)
            nfe_total = nfe
            n_images += images.shape[0]
            images = ((images[:, 0].float().cpu().numpy() + 1) / 2).reshape(len(batch), samples, cfg.image_size,
                                                                              cfg.image_size)
            for (name, seq), stack, head_probs, condition, row_deferred in zip(batch, images, head, conditions,
                                                                                deferred):
                folder = out / folder_name(name, used_names)
                folder.mkdir(parents=True, exist_ok=True)
                for k, image in enumerate(stack):
                    write_png(folder / f"sample_{k}.png", image, scale=PREVIEW_SCALE)
                    write_tiff(folder / f"sample_{k}.tif", unit_to_uint16(image))
                mean = stack.mean(0)
                write_png(folder / "mean.png", mean, scale=PREVIEW_SCALE)
                write_tiff(folder / "mean.tif", unit_to_uint16(mean))
                prob = probability_map(stack)
                write_png(folder / "probability.png", prob, scale=PREVIEW_SCALE)
                write_tiff(folder / "probability.tif", unit_to_uint16(prob))
                write_png(folder / "landmarks.png", composite, scale=PREVIEW_SCALE)
                overlay = composite * 0.6
                overlay[..., 1] = np.maximum(overlay[..., 1], mean / max(mean.max(), 1e-6))
                write_png(folder / "overlay.png", overlay, scale=PREVIEW_SCALE)
                fractions = {}
                if cell.masks:
                    per_sample = [compartment_fractions(image, cell.masks) for image in stack]
                    keys = sorted({k for f in per_sample for k in f})
                    fractions = {k: float(np.mean([f.get(k, 0.0) for f in per_sample])) for k in keys}
                    fractions = dict(sorted(fractions.items(), key=lambda kv: -kv[1]))
                drawn = []
                if readout is not None:
                    probabilities = classify_level3(readout, stack, cell.images, channels)
                    drawn = [readout.config.classes[int(i)] for i in probabilities.argmax(1)]
                entry = {"id": name, "folder": folder.name, "length": len(seq), "samples": samples,
                         "compartment_fractions": fractions,
                         "top_compartment_image": next(iter(fractions), None),
                         "drawn_level3": max(drawn, key=drawn.count) if drawn else None,
                         "drawn_level3_per_sample": drawn,
                         "head_probabilities": {c: float(p) for c, p in zip(head_classes, head_probs)},
                         "top_compartment_head": head_classes[int(np.argmax(head_probs))]}
                if expected and name in expected:
                    entry["expected_level3"] = expected[name]
                    entry["samples_right"] = sum(d == expected[name] for d in drawn) if drawn else None
                if model_crop_note(len(seq), cfg.max_sequence_length):
                    entry["model_input"] = model_crop_note(len(seq), cfg.max_sequence_length)
                if condition is not None:
                    source = ("--compartment" if target is not None else
                              f"fraction head + {conditioner.prior.localizer}" if row_deferred else "fraction head")
                    entry["conditioned_on"] = {"source": source,
                                               "level1": top_shares(condition, cfg.fraction_classes)}
                    if placement == "top":  # every sample was conditioned on this one
                        entry["conditioned_on"]["placed_in"] = cfg.fraction_classes[int(np.argmax(condition))]
                write_json(folder / "result.json", entry)
                results.append(entry)
        seconds = time.perf_counter() - started
        run = {"model": str(model or hub.DEFAULT_GENERATOR), "family": ref.family, "compartment": compartment,
               "placement": placement, "condition": None if conditioner is None else conditioner.describe(),
               "sampler": sampler, "steps": steps, "guidance": guidance,
               "samples": samples, "seed": seed, "landmarks": cell.source, "landmark_channels_present":
               [c for c, p in zip(channels, cell.present) if p], "network_evaluations_per_image": nfe_total,
               "seconds_per_image": seconds / max(n_images, 1), "sequences": results}
        write_json(out / "summary.json", run)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["id", "expected_level3", "drawn_level3", "samples_right", "top_compartment_image",
                         "top_compartment_head", *[f"image_{c}" for c in head_classes],
                         *[f"head_{c}" for c in head_classes]])
        for e in results:
            right = e.get("samples_right")
            writer.writerow([e["id"], e.get("expected_level3", ""), e["drawn_level3"] or "",
                             "" if right is None else f"{right}/{e['samples']}",
                             e["top_compartment_image"] or "", e["top_compartment_head"],
                             *[f"{e['compartment_fractions'].get(c, 0.0):.4f}" if e["compartment_fractions"] else ""
                               for c in head_classes],
                             *[f"{e['head_probabilities'][c]:.4f}" for c in head_classes]])
        write_text(out / "summary.csv", buffer.getvalue())
        write_text(out / "report.html", _report_html(run, samples))
    out = Path(out_dir)
    return GenerateResult(out, out / "report.html", results, nfe_total, run["seconds_per_image"])


def _report_html(run: dict, samples: int) -> str:
    esc = html.escape
    rows = []
    for e in run["sequences"]:
        imgs = "".join(f'<img src="{esc(e["folder"])}/sample_{k}.png" title="sample {k}">' for k in range(samples))
        fractions = ", ".join(f"{esc(k)} {v:.0%}" for k, v in list(e["compartment_fractions"].items())[:3]) or "n/a"
        head = ", ".join(f"{esc(k)} {v:.0%}" for k, v in sorted(e["head_probabilities"].items(),
                                                                 key=lambda kv: -kv[1])[:3])
        if "conditioned_on" in e:
            placed = ", ".join(f"{esc(k)} {v:.0%}" for k, v in list(e["conditioned_on"]["level1"].items())[:3])
            if e["conditioned_on"].get("placed_in"):
                placed = f"<b>{esc(e['conditioned_on']['placed_in'])}</b>, the most likely of {placed}"
            head += f"<br><small>placed in ({esc(e['conditioned_on']['source'])}): {placed}</small>"
        drawn = ", ".join(esc(d) for d in e.get("drawn_level3_per_sample") or []) or "n/a"
        if e.get("expected_level3"):
            right = e.get("samples_right")
            verdict = "" if right is None else (f" <b style='color:{'#080' if right == e['samples'] else '#c00'}'>"
                                                f"{right}/{e['samples']} right</b>")
            drawn = f"expected <b>{esc(e['expected_level3'])}</b>{verdict}<br><small>{drawn}</small>"
        rows.append(
            f"<tr><td><b>{esc(e['id'])}</b><br>{e['length']} aa</td>"
            f'<td><img src="{esc(e["folder"])}/landmarks.png"></td><td class="samples">{imgs}</td>'
            f'<td><img src="{esc(e["folder"])}/mean.png"></td><td><img src="{esc(e["folder"])}/probability.png"></td>'
            f'<td><img src="{esc(e["folder"])}/overlay.png"></td><td>{drawn}</td><td>{fractions}</td><td>{head}</td></tr>')
    forced = f"protein placed in {esc(run['compartment'])} (--compartment), " if run.get("compartment") else ""
    if run.get("condition") and not run.get("compartment"):
        placement = {"soft": "the whole distribution", "sample": "one compartment drawn from it per sample",
                     "top": "its most likely compartment"}.get(run.get("placement"), run.get("placement"))
        forced = f"condition: {esc(run['condition'])}, each sample placed in {esc(placement)}; "
    settings = (f"{forced}model {esc(run['model'])}, sampler {esc(run['sampler'])} ({run['steps']} steps, "
                f"{run['network_evaluations_per_image']} network evaluations per image), guidance {run['guidance']}, "
                f"{samples} samples, seed {run['seed']}, {run['seconds_per_image']:.3f} s/image; landmarks "
                f"{esc(run['landmarks'])} (present: {esc(', '.join(run['landmark_channels_present']))})")
    return html_page("locscope generate", f"""<h1>Generated localization images</h1>
<p>{settings}</p>
<p>Landmarks: microtubules red, ER green, nucleus blue. Probability map: fraction of samples in which a pixel is
above its image's Otsu threshold. Overlay: mean protein image (green) over the landmarks. Image fractions: share of
the protein's intensity per level-3 class under the simulator's compartment masks (only for simulator landmarks).
Drawn: the level-3 compartment each sample shows, read by the compartment read-out classifier (a network trained on
simulated cells that sees the protein image with the landmarks; it judges what kind of pattern the protein forms where,
not which pixels), beside the protein's annotated class when known.
Head: the model's sequence-only compartment probabilities; "placed in": the level-1 compartment distribution the image
was conditioned on (models with the compartment bottleneck).</p>
<table><tr><th>sequence</th><th>landmarks</th><th>samples</th><th>mean</th><th>probability</th><th>overlay</th>
<th>drawn (read-out)</th><th>image fractions</th><th>head</th></tr>{''.join(rows)}</table>""", style=SAMPLE_TABLE_STYLE)
