"""``locscope design --model DIR`` for a released CELL-Diff checkpoint set: residues infilled from a protein image.

The released model's image -> sequence direction (the authors' ``image_to_sequece`` / ``oaardm_sample``, as their
signal-peptide generation script runs it) is order-agnostic masked decoding with its sequence head:

1. The protein image and the landmarks -> the published normalisation (:func:`published_grey`) at the model's image
   size -> VAE latents ``mean + std * eps`` (draws: protein first, then nucleus, ER, microtubules); a landmark the
   config names but the input lacks becomes the model's learned placeholder, with a warning.
2. The template's masked residues (``<mask>`` = the released alphabet's index 31) are filled with the clean protein
   latent at diffusion time 0: each forward pass reveals ONE masked position (a uniformly random one: the published
   ``order='random'``), drawn from ``softmax(logits[20 standard residues] / temperature)``
   (:func:`locscope.diffusion.masked_decoding.decode_one_per_pass`); ``decoder='parallel'`` instead reveals the most
   confident residues of each pass, MaskGIT's cosine schedule (at most ``passes`` passes, a locscope option).
   Every candidate starts from the template (the published script reuses the previous sample's residues as the
   starting point of the next one; locscope does not).
3. Each candidate's score: the mean log-probability of its designed residues under the sequence head, given the image,
   with all designed positions masked (one forward pass per batch). Candidates are ranked by it.
4. ``candidates.fasta``, ``candidates.csv``, ``summary.json`` and ``report.html`` (the conditioning images, the ranked
   candidates).
"""

from __future__ import annotations

import csv
import html
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from locscope.errors import ArgumentError, InputError
from locscope.pipelines import design_templates
from locscope.pipelines.design_templates import DESIGN_FILES, Candidate, DesignResult, build_template

log = logging.getLogger(__name__)

RELEASED_DECODERS: tuple[str, ...] = ("one-per-pass", "parallel")


def released_logits_fn(released, protein_latent: torch.Tensor, cell_latent: torch.Tensor):
    """The released sequence head as ``tokens (B, L) -> logits (B, L, 32)`` given one image (time 0, clean latent).

    Every token but the 20 standard residues (ids 4..23, what the published sampler draws from) gets ``-inf``.
    """
    from locscope.diffusion.published_ddim import published_alphas_cumprod
    from locscope.models.celldiff_v2 import STANDARD_RESIDUE_IDS

    config = released.model.config
    net = released.model.net
    vocab = config.vocab_size
    blocked = torch.ones(vocab, dtype=torch.bool, device=protein_latent.device)
    blocked[list(STANDARD_RESIDUE_IDS)] = False
    alpha_bar_0 = float(published_alphas_cumprod(config.num_timesteps, config.ddpm_schedule)[0])
    sqrt_one_minus = torch.full_like(protein_latent, (1.0 - alpha_bar_0) ** 0.5)

    def logits_fn(tokens: torch.Tensor) -> torch.Tensor:
        batch = tokens.shape[0]
        time0 = torch.zeros(batch, dtype=torch.long, device=tokens.device)
        out = net(protein_latent.expand(batch, -1, -1, -1), cell_latent.expand(batch, -1, -1, -1), tokens, time0,
                  sqrt_one_minus.expand(batch, -1, -1, -1))
        return out.sequence_logits.float().masked_fill(blocked, float("-inf"))

    return logits_fn


def designed_log_likelihood(logits_fn, rows: torch.Tensor, template: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Mean log-probability of each row's designed residues (the template's masks) with all of those positions
    masked: ``(B, L)`` rows -> ``(B,)``. One forward pass of the template (the same for every row)."""
    masked = template == mask_id
    logp = logits_fn(template[None]).log_softmax(-1)[0, masked]  # (n_masked, V)
    picked = logp.gather(-1, rows[:, masked].T).T  # (B, n_masked)
    return picked.mean(dim=1)


@dataclass
class ReleasedConditioning:
    """The image a design is conditioned on: latents for the network, images for the report."""

    protein_latent: torch.Tensor
    cell_latent: torch.Tensor
    images: dict[str, np.ndarray]


def released_conditioning(released, image: str | Path, landmarks: Sequence[str | Path],
                          generator: torch.Generator, device: torch.device) -> ReleasedConditioning:
    """Read the protein image and landmarks and encode them with the released VAE (draws: protein, then nucleus, ER,
    microtubules, from ``generator``)."""
    from locscope.pipelines.generate_released import read_released_landmarks

    config = released.model.config
    images = read_released_landmarks([image, *landmarks], ("protein", *config.landmark_names), released.image_size)
    if "protein" not in images:
        raise InputError(f"image {image}: no protein image found")
    shape = (1, config.latent_channels, config.sample_size, config.sample_size)

    def latent(picture: np.ndarray) -> torch.Tensor:
        eps = torch.randn(shape, generator=generator).to(device)
        return released.vae.sample_latent(torch.from_numpy(picture)[None, None].to(device), eps)

    protein_latent = latent(images["protein"])
    latents = {}
    for name in config.landmark_names:
        if name in images:
            latents[name] = latent(images[name])
        else:
            log.warning("landmarks: no %s image; using the model's learned placeholder for it", name)
    return ReleasedConditioning(protein_latent, released.model.cell_latent(latents), images)


@torch.no_grad()
def design_released(out: str | Path, *, model: str | Path, image: str | Path | None,
                    landmarks: Sequence[str | Path], target: str | None, template: str | None, length: int | None,
                    terminus: str | None, terminus_length: int, candidates: int, decoder: str | None, passes: int,
                    temperature: float, top_k: int | None, top: int, batch_size: int, seed: int, device: str,
                    refine_rounds: int = 0, progress: bool = True, overwrite: bool = False):
    """Infill a template with a released CELL-Diff's sequence head, conditioned on a protein image (module docstring).

    Parameters
    ----------
    out : path
        Output folder (the output-folder policy of :mod:`locscope.utils.outputs`).
    model : path
        The released checkpoint set (:func:`locscope.models.celldiff_v2.load_released_checkpoint_set`).
    image : path
        The protein image to design for (a display-colour PNG as the release reads it, or any reader format).
    landmarks : sequence of path
        Nucleus (required) and the ER / microtubule images the config names.
    target : str, optional
        Must be None: the released model is conditioned on images, not on compartment names.
    template, length, terminus, terminus_length :
        What to design (:func:`locscope.pipelines.design.build_template`).
    candidates : int
        Sequences to decode (>= 1).
    decoder : {'one-per-pass', 'parallel'} or None
        The published one-residue-per-pass decoder (default) or the parallel confidence-ordered one.
    passes, temperature, top_k :
        Parallel decoder passes; residue sampling temperature; sample among the ``top_k`` most likely residues.
    top : int
        Candidates shown in ``report.html``.
    batch_size : int
        Candidates decoded per network batch.
    seed : int
        Seeds the latent draws, the order and the residues.
    device : {'auto', 'cpu', 'cuda'}
    refine_rounds : int
        Must be 0 (head-guided refinement needs a compartment head the released model does not have).
    progress : bool
    overwrite : bool

    Returns
    -------
    locscope.pipelines.design.DesignResult

    Raises
    ------
    ArgumentError
        A target instead of an image, an image without landmarks, refinement, bad decoder / counts (naming the
        argument).
    InputError
        Bad checkpoint set, images or template (one line naming the file).
    """
    from locscope.diffusion.masked_decoding import decode_one_per_pass, decode_parallel
    from locscope.models import hub
    from locscope.models.celldiff_v2 import MASK_ID, CellDiffV2Tokenizer
    from locscope.utils.device import resolve_device
    from locscope.utils.outputs import check_output_folder, output_folder
    from locscope.utils.progress import track

    check_output_folder(out, "design", overwrite=overwrite, known_files=DESIGN_FILES)
    if target is not None:
        raise ArgumentError("target", f"{target}: a released CELL-Diff model is conditioned on images, not on "
                                      "compartment names; give image PROTEIN_IMAGE with landmarks FILES",
                            mentions=("image", "landmarks"))
    if image is None or not landmarks:
        raise ArgumentError("image", "and landmarks: a released CELL-Diff model designs for a protein image with the "
                                     "nucleus (+ ER / microtubule) images of the same cell", mentions=("landmarks",))
    if refine_rounds:
        raise ArgumentError("refine_rounds", f"{refine_rounds}: refinement needs a compartment head, which a released "
                                             "CELL-Diff model does not have")
    decoder = decoder or "one-per-pass"
    if decoder not in RELEASED_DECODERS:
        raise ArgumentError("decoder", f"{decoder!r}: accepted values are {', '.join(RELEASED_DECODERS)}")
    for name, value in (("candidates", candidates), ("passes", passes), ("batch_size", batch_size)):
        if value < 1:
            raise ArgumentError(name, f"{value}: must be >= 1")
    template_text = design_templates.template_text(build_template(template, length, terminus, terminus_length))
    torch_device = resolve_device(device)
    released = hub.load(model, families=("celldiff-released",), device=str(torch_device), argument="model")
    tokenizer = CellDiffV2Tokenizer(max_residues=released.model.config.max_protein_sequence_len)
    template_row = torch.tensor(tokenizer.encode(template_text, record="template"), device=torch_device)

    generator = torch.Generator().manual_seed(seed)
    cond = released_conditioning(released, image, landmarks, generator, torch_device)
    logits_fn = released_logits_fn(released, cond.protein_latent, cond.cell_latent)
    started = time.perf_counter()
    designed, scores, used_passes = [], [], 0
    batches = range(0, candidates, batch_size)
    for start in track(batches, "decoding candidates", enabled=progress):
        rows = template_row[None].repeat(min(batch_size, candidates - start), 1)
        if decoder == "one-per-pass":
            result = decode_one_per_pass(logits_fn, rows, MASK_ID, temperature=temperature, top_k=top_k,
                                         generator=generator)
        else:
            result = decode_parallel(logits_fn, rows, MASK_ID, passes=passes, temperature=temperature, top_k=top_k,
                                     generator=generator)
        designed.append(result.tokens)
        scores.append(designed_log_likelihood(logits_fn, result.tokens, template_row, MASK_ID))
        used_passes = max(used_passes, result.passes)
    seconds = (time.perf_counter() - started) / candidates
    designed_rows, score_values = torch.cat(designed), torch.cat(scores).cpu().numpy()
    order = np.argsort(-score_values, kind="stable")
    ranked = [Candidate(rank=i + 1, sequence=tokenizer.decode(designed_rows[j]), score=float(score_values[j]),
                        level3={}, top_level3="", grammar_call="", grammar_compartments={})
              for i, j in enumerate(order)]
    score_method = "mean log-probability of the designed residues given the image (sequence head, designed " \
                   "positions masked)"
    summary = {"model": str(model), "family": "celldiff-released",
               "files": {k: str(v) for k, v in released.files.items()}, "image": str(image),
               "landmarks": sorted(k for k in cond.images if k != "protein"),
               "placeholder_landmarks": [n for n in released.model.config.landmark_names if n not in cond.images],
               "template": template_text.replace("<mask>", "#"), "candidates": candidates, "decoder": decoder,
               "passes_per_candidate": used_passes, "temperature": temperature, "top_k": top_k, "seed": seed,
               "score": score_method, "decode_seconds_per_candidate": seconds,
               "ranked": [{"rank": c.rank, "sequence": c.sequence, "score": c.score} for c in ranked]}
    with output_folder(out, "design", overwrite=overwrite, known_files=DESIGN_FILES) as folder:
        _write_outputs(folder, ranked, summary, cond.images, top)
    return DesignResult(ranked, template_text, None, decoder, float(used_passes), seconds, 0.0, score_method,
                        proposer="celldiff-released")


def _write_outputs(folder: Path, ranked: list, summary: dict, images: dict[str, np.ndarray], top: int) -> None:
    from locscope.report.html import html_page, png_img
    from locscope.report.images import protein_png
    from locscope.utils.atomic import write_json, write_text

    write_text(folder / "candidates.fasta", "".join(f">design_{c.rank:04d} log_likelihood={c.score:.4f}\n"
                                                    f"{c.sequence}\n" for c in ranked))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["rank", "id", "log_likelihood", "sequence"])
    for c in ranked:
        writer.writerow([c.rank, f"design_{c.rank:04d}", f"{c.score:.4f}", c.sequence])
    write_text(folder / "candidates.csv", buffer.getvalue())
    write_json(folder / "summary.json", summary)
    unit = {name: (image + 1) / 2 for name, image in images.items()}
    picture = png_img(protein_png(unit["protein"], unit.get("nucleus")), "protein image (green) over the nucleus")
    rows = "".join(f"<tr><td>{c.rank}</td><td>{c.score:.3f}</td><td><code>{html.escape(c.sequence)}</code></td></tr>"
                   for c in ranked[:top])
    write_text(folder / "report.html", html_page("locscope design (released CELL-Diff)", f"""<h1>Sequences infilled \
by the released CELL-Diff model</h1>
<p>Template <code>{html.escape(summary['template'])}</code> (<code>#</code> = designed); decoder
<b>{summary['decoder']}</b> ({summary['passes_per_candidate']} forward passes per batch,
{summary['decode_seconds_per_candidate']:.2f} s per candidate); temperature {summary['temperature']};
seed {summary['seed']}. Score: {html.escape(summary['score'])}.</p>
<p>Conditioning image: {picture}</p>
<table><tr><th>rank</th><th>log-likelihood</th><th>sequence</th></tr>{rows}</table>"""))
