"""``locscope design``: propose protein sequences (or infill parts of one) that give a localization image.

The procedure is CELL-E 2's NLS design (sample candidates, generate their images, rank):

1. Conditioning: a protein image + landmark files (``image`` / ``landmarks``), or, for a compartment ``target``,
   standard simulator cells with a protein placed in that compartment (candidate ``i`` uses cell ``i mod n_cells``).
   With an image, the compartment distribution it shows is read with CELL-Diff as a diffusion classifier
   (:func:`image_target_distribution`: which compartment condition best denoises the image).
2. Candidates: a template of fixed residues and ``<mask:N>`` spans (or ``length`` masks, or a masked N-/C-terminal
   stretch added to a reporter) is filled ``candidates`` times in batches, with the parallel confidence-based decoder
   (<= 16 passes) or CELL-Diff's one-residue-per-pass reference (:mod:`locscope.diffusion.masked_decoding`). The
   residues come from the proposer: ``'designer'`` (default), the compartment-conditioned sequence designer
   (:mod:`locscope.models.designer`, trained on the simulator's motif grammar) conditioned on the target compartment
   or on the image's most likely one; or ``'celldiff'``, CELL-Diff's own masked-residue head conditioned on the
   images (the seed's procedure; at tiny size it has learned little beyond composition).
2b. Optional head-guided refinement (``refine_rounds``): each round scores the population with CELL-Diff's
   sequence heads (one encoder pass per candidate; the target's probability), keeps the better half, and makes each
   survivor a child by re-masking ``refine_fraction`` of its designed positions and decoding them again with the
   proposer. A cheap evolutionary search steered by the model's own sequence -> localization predictor; the final
   image-based scores stay the judge. With an image instead of a target, the target is the compartment
   distribution the image shows.
3. Scores: with a ``target``, each candidate's image is generated in ``score_samples`` standard simulator cells and
   the target compartment's share is read off the simulator's compartment patterns
   (:class:`locscope.pipelines.localize.LocalizationPredictor`, ``method='image'``); with an image only, the score is
   the mean Pearson correlation between the candidate's images generated on the given landmarks and the given image.
4. Rank; write ``candidates.fasta`` (scores in the headers), ``candidates.csv``, ``summary.json`` and ``report.html``
   with each top candidate's generated image.
"""

from __future__ import annotations

import html
import io
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from locscope.diffusion.samplers import class_denoising_losses
from locscope.errors import ArgumentError, InputError
from locscope.models import hub
from locscope.models.latent import LatentDiffusion
from locscope.pipelines.design_templates import (  # noqa: F401  (re-exported: design's public records)
    DESIGN_FILES, MAX_DESIGN_LENGTH, Candidate, DesignResult, build_template, template_text,
)
from locscope.pipelines.generate import load_generator
from locscope.pipelines.landmark_cells import read_landmarks
from locscope.pipelines.localize import LocalizationPredictor, generate_in_cells, generator_landmarks, noise_shape
from locscope.pipelines.readout import (
    COMPARTMENTS, LEVEL2_CLASSES, LEVEL3_CLASSES, resolve_compartment, standard_cells, top_shares,
)
from locscope.report.html import html_page, png_img
from locscope.report.images import protein_png

DECODERS: tuple[str, ...] = ("parallel", "one-per-pass")
#: Who proposes residues: the compartment-conditioned sequence designer, or CELL-Diff's masked-residue head.
PROPOSERS: tuple[str, ...] = ("designer", "celldiff")
#: Level-1 compartment whose image stands for a level-3 / level-2 target when no image is given.
TARGET_IMAGE_COMPARTMENT = {
    "nucleus": "nucleoplasm", "cytosol": "cytosol", "endomembrane-system": "endoplasmic-reticulum",
    "plasma-membrane": "plasma-membrane", "mitochondria": "mitochondria", "nucleoli": "nucleoli",
    "cytoskeleton": "microtubules", "vesicles": "vesicles", "golgi-apparatus": "golgi-apparatus",
    "endoplasmic-reticulum": "endoplasmic-reticulum",
}


# ----------------------------------------------------------------------------------------------- conditioning
def read_conditioning(image: str | Path, landmarks: Sequence[str | Path], landmark_channels: Sequence[str],
                      size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a protein image and landmark files at the model's resolution.

    Returns
    -------
    protein : np.ndarray
        ``(size, size)`` in [0, 1].
    landmarks : np.ndarray
        ``(n_landmarks, size, size)`` in [0, 1] (zeros where absent).
    present : np.ndarray
        ``(n_landmarks,)`` bool.

    Raises
    ------
    InputError
        If the image has no protein channel or no landmark file gives a model landmark channel.
    """
    from locscope.data.transforms import resize_to_model, to_unit_range
    from locscope.io import read_image

    channels = read_image(image).channels
    protein = channels.get("protein", next(iter(channels.values())) if len(channels) == 1 else None)
    if protein is None:
        raise InputError(f"{image}: no protein channel among {', '.join(channels)}")
    protein = resize_to_model(to_unit_range(np.asarray(protein)), size)
    cell = read_landmarks(list(landmarks), landmark_channels, size)
    return protein, cell.images, cell.present


def target_conditioning(model, target: str, n_cells: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Standard simulator cells with a protein placed in ``target``: ``(n, H, W)`` images, ``(n, n_landmarks, H, W)``
    landmarks (both in [0, 1]) and the cells."""
    from locscope.synth import place_protein

    level, name = resolve_compartment(target)
    compartment = TARGET_IMAGE_COMPARTMENT.get(name, name)
    cells = standard_cells(model.config.image_size, generator_landmarks(model), n_cells)
    images = np.stack([place_protein(c.cell, {compartment: 1.0}, seed=k) for k, c in enumerate(cells)])
    return images, np.stack([c.landmarks for c in cells]), cells


# ----------------------------------------------------------------------------------------------- decoding
def load_designer(model: str | Path | None = None, device: str | torch.device = "cpu"):
    """A sequence designer from a bundled name (``'designer-tiny'``, default) or a model directory, in eval mode.

    Raises
    ------
    InputError
        If no ``config.json`` + ``model.safetensors`` are found.
    """
    return hub.load(model, default="designer-tiny", families=("designer",), device=device, argument="designer")


def target_fractions(target: str, classes: Sequence[str]) -> np.ndarray:
    """The compartment distribution ``(len(classes),)`` standing for a target name: one-hot at the level-1 class
    itself, or at the level-1 class whose image stands for a level-3 / level-2 target (``TARGET_IMAGE_COMPARTMENT``).

    Raises
    ------
    InputError
        For an unknown name or one outside ``classes``.
    """
    _, name = resolve_compartment(target)
    compartment = TARGET_IMAGE_COMPARTMENT.get(name, name)
    if compartment not in classes:
        raise ArgumentError("target", f"{target}: the designer has no class {compartment!r}")
    fractions = np.zeros(len(classes))
    fractions[list(classes).index(compartment)] = 1.0
    return fractions


def decode_candidates(model, template: list[int] | list[list[int]], protein: np.ndarray, landmarks: np.ndarray,
                      present: np.ndarray | None, candidates: int, decoder: str = "parallel", passes: int = 16,
                      temperature: float = 1.0, top_k: int | None = None, batch_size: int = 32, seed: int = 0,
                      progress: bool = False, designer=None, fractions: np.ndarray | None = None,
                      designer_guidance: float = 1.0) -> tuple[list[str], int]:
    """Fill the template's masks ``candidates`` times, with CELL-Diff's masked-residue head conditioned on images or,
    given a ``designer``, with the sequence designer conditioned on compartment distributions.

    Parameters
    ----------
    template : list of int, or list of list of int
        One template for every candidate, or one per candidate (all of the same length).
    protein : np.ndarray
        ``(n, H, W)`` conditioning protein images in [0, 1]; candidate ``i`` uses image ``i mod n``.
    landmarks : np.ndarray
        ``(n, n_landmarks, H, W)`` in [0, 1].
    present : np.ndarray, optional
        ``(n_landmarks,)`` bool.
    designer : locscope.models.designer.SequenceDesigner, optional
        Decode with this model instead (``protein`` / ``landmarks`` are then not used).
    fractions : np.ndarray, optional
        ``(m, n_classes)`` the designer's target compartment distributions; candidate ``i`` uses row ``i mod m``.
    designer_guidance : float
        Classifier-free guidance scale of the designer's logits.

    Returns
    -------
    sequences : list of str
    passes : int
        Forward passes summed over the batches.
    """
    from locscope.diffusion.masked_decoding import cell_diff_logits_fn, decode_one_per_pass, decode_parallel
    from locscope.encoders.protein import MASK_ID, decode_tokens
    from locscope.models.designer import designer_logits_fn
    from locscope.utils.progress import track

    if decoder not in DECODERS:
        raise ArgumentError("decoder", f"{decoder!r}: accepted values are {', '.join(DECODERS)}")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    sequences, total_passes = [], 0
    starts = range(0, candidates, batch_size)
    for start in track(starts, f"designing ({decoder})", enabled=progress and len(starts) > 1):
        indices = np.arange(start, min(start + batch_size, candidates))
        if designer is not None:
            targets = torch.from_numpy(np.asarray(fractions, np.float32)[indices % len(fractions)]).to(device)
            logits_fn = designer_logits_fn(designer, targets, designer_guidance)
        else:
            rows = indices % len(protein)
            image = torch.from_numpy(protein[rows] * 2.0 - 1.0)[:, None].float().to(device)
            marks = torch.from_numpy(landmarks[rows] * 2.0 - 1.0).float().to(device)
            mask_present = None if present is None else torch.from_numpy(np.tile(present, (len(rows), 1))).to(device)
            logits_fn = cell_diff_logits_fn(model, image, marks, mask_present)
        per_row = template if isinstance(template[0], list) else [template] * candidates
        tokens = torch.tensor(per_row[start:start + len(indices)], dtype=torch.long, device=device)
        if decoder == "parallel":
            result = decode_parallel(logits_fn, tokens, MASK_ID, passes=passes, temperature=temperature, top_k=top_k,
                                     generator=generator)
        else:
            result = decode_one_per_pass(logits_fn, tokens, MASK_ID, temperature=temperature, top_k=top_k,
                                         generator=generator)
        total_passes += result.passes
        sequences.extend(decode_tokens(row) for row in result.tokens.cpu())
    return sequences, total_passes


def image_target_distribution(model, protein: np.ndarray, landmarks: np.ndarray, present: np.ndarray | None = None,
                              noise_draws: int = 24, seed: int = 0, sharpness: float = 100.0) -> np.ndarray:
    """Which compartments a protein image shows: CELL-Diff as a diffusion classifier (Li et al. 2023).

    The image is noised at ``noise_draws`` time steps spread over the schedule (the same noise for every class) and
    denoised by the model conditioned on each of its ``fraction_classes`` in turn (a neutral poly-glycine sequence,
    the image's own landmarks); the class whose condition predicts the noise best explains the image. Classes are
    weighted ``exp(-sharpness * (loss_c - loss_min) / loss_min)``: relative excess denoising loss.

    Parameters
    ----------
    protein : np.ndarray
        ``(H, W)`` in [0, 1] at the model's resolution.
    landmarks : np.ndarray
        ``(n_landmarks, H, W)`` in [0, 1].
    present : np.ndarray, optional
        ``(n_landmarks,)`` bool.
    noise_draws : int
        Time steps (one noise image each) per class; one network pass of ``len(fraction_classes)`` rows each.

    Returns
    -------
    np.ndarray
        ``(len(fraction_classes),)`` distribution summing to 1.

    Raises
    ------
    InputError
        If the model has no compartment bottleneck.
    """
    from locscope.diffusion.celldiff_sampler import schedule_for

    classes = model.config.fraction_classes
    if not classes:
        raise ArgumentError("model", "has no compartment bottleneck (config.fraction_classes), which reading the "
                                     "compartments an image shows needs; with this model use proposer celldiff and "
                                     "no refine_rounds", mentions=("proposer", "refine_rounds"))
    device = next(model.parameters()).device
    n = len(classes)
    generator = torch.Generator().manual_seed(seed)
    timesteps = np.linspace(0.05, 0.99, noise_draws) * model.config.num_train_timesteps
    if isinstance(model, LatentDiffusion):  # the same classifier in the latent space
        image = torch.from_numpy(np.asarray(protein, np.float32) * 2.0 - 1.0)[None, None].to(device)
        stack = torch.from_numpy(np.asarray(landmarks, np.float32) * 2.0 - 1.0)[None].to(device)
        losses = model.fraction_losses(image, stack, timesteps.astype(int), None if present is None else
                                       torch.from_numpy(np.asarray(present, bool))[None], generator)
    else:
        clean = torch.from_numpy(np.asarray(protein, np.float32) * 2.0 - 1.0)[None, None].expand(n, -1, -1, -1)
        marks = torch.from_numpy(np.asarray(landmarks, np.float32) * 2.0 - 1.0)[None].expand(n, -1, -1, -1).to(device)
        mask = None if present is None else torch.from_numpy(np.tile(present, (n, 1))).to(device)
        with torch.no_grad():
            context = model.encode_sequence(model.tokenize(["G" * 30] * n)[0].to(device),
                                            fractions=torch.eye(n).to(device))
        losses = class_denoising_losses(lambda x, t: model.denoise(x, t, marks, context, mask)[0], clean.to(device),
                                        schedule_for(model), timesteps.astype(int), generator)
    excess = (losses - losses.min()) / losses.min().clamp(min=1e-12)
    weights = torch.exp(-sharpness * excess).numpy().astype(np.float64)
    return weights / weights.sum()


def _mean_correlation(images: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Mean Pearson correlation of ``images`` ``(N, K, H, W)`` with ``reference`` ``(H, W)`` over the K axis: ``(N,)``."""
    flat = images.reshape(*images.shape[:2], -1)
    flat = flat - flat.mean(-1, keepdims=True)
    centred = reference.ravel() - reference.mean()
    return (flat @ centred / (np.linalg.norm(flat, axis=-1) * np.linalg.norm(centred) + 1e-12)).mean(1)


def _fraction_probabilities(model, sequences: Sequence[str], batch_size: int) -> np.ndarray:
    """The fraction head's distribution ``(N, len(fraction_classes))`` for ``sequences``, in batches."""
    device = next(model.parameters()).device
    return np.concatenate([model.predict_fractions(model.tokenize(list(sequences[i:i + batch_size]))[0].to(device))
                           .cpu().numpy() for i in range(0, len(sequences), batch_size)])


def head_target_scores(model, sequences: Sequence[str], target: str | np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Probability of ``target`` for each sequence from the model's sequence heads alone (no images): ``(N,)``.

    Level-1 targets use the fraction head when the model has one (else the target's level-3 class); a distribution
    over the model's ``fraction_classes`` (e.g. :func:`image_target_distribution`) scores the expected agreement
    ``sum_c p_head(c) * target(c)``."""
    if not isinstance(target, str):
        return _fraction_probabilities(model, sequences, batch_size) @ np.asarray(target)
    level, name = resolve_compartment(target)
    if level == "level1" and name in model.config.fraction_classes:
        return _fraction_probabilities(model, sequences, batch_size)[:, model.config.fraction_classes.index(name)]
    if level == "level1":
        from locscope.data import ontology

        level, name = "level3", ontology.to_level3(name)
    head = LocalizationPredictor(model, "head", batch_size=batch_size).predict(list(sequences))
    probs, classes = (head.level3, LEVEL3_CLASSES) if level == "level3" else (head.level2, LEVEL2_CLASSES)
    return np.nan_to_num(probs[:, classes.index(name)], nan=0.0)


def check_refinement(refine_rounds: int, refine_fraction: float) -> None:
    """Validate the refinement options (:class:`~locscope.errors.ArgumentError` naming them)."""
    if refine_rounds < 0:
        raise ArgumentError("refine_rounds", f"{refine_rounds}: must be >= 0")
    if not 0.0 < refine_fraction <= 1.0:
        raise ArgumentError("refine_fraction", f"{refine_fraction}: must be in (0, 1]")


def refine_candidates(model, sequences: list[str], template: list[int], target: str | np.ndarray, protein: np.ndarray,
                      landmarks: np.ndarray, rounds: int, fraction: float = 0.2, passes: int = 16,
                      temperature: float = 1.0, top_k: int | None = None, batch_size: int = 32,
                      seed: int = 0, designer=None, fractions: np.ndarray | None = None,
                      designer_guidance: float = 1.0) -> tuple[list[str], int, list[float]]:
    """Head-guided evolution of designed sequences (step 2b of the module docstring); children are decoded as in
    :func:`decode_candidates` (by the ``designer`` when one is given).

    Returns
    -------
    sequences : list of str
        The final population (as many as given).
    passes : int
        Decoder forward passes spent.
    best_head_scores : list of float
        The best head score after each round (round 0 = before refining).
    """
    from locscope.encoders.protein import MASK_ID, encode_sequence

    check_refinement(rounds, fraction)
    designable = np.flatnonzero(np.asarray(template) == MASK_ID)
    rng = np.random.default_rng(seed)
    population, total_passes = list(sequences), 0
    scores = head_target_scores(model, population, target)
    history = [float(scores.max())]
    for round_index in range(rounds):
        survivors = [population[i] for i in np.argsort(-scores, kind="stable")[: max(1, len(population) // 2)]]
        n_children = len(population) - len(survivors)
        children_templates = []
        for k in range(n_children):
            ids = encode_sequence(survivors[k % len(survivors)])
            n_mask = max(1, int(round(fraction * len(designable))))
            for position in rng.choice(designable, size=min(n_mask, len(designable)), replace=False):
                ids[position] = MASK_ID
            children_templates.append(ids)
        children, used = decode_candidates(model, children_templates, protein, landmarks, None, n_children,
                                           "parallel", passes, temperature, top_k, batch_size,
                                           seed + 1000 * (round_index + 1), designer=designer, fractions=fractions,
                                           designer_guidance=designer_guidance)
        total_passes += used
        population = survivors + children
        scores = head_target_scores(model, population, target)
        history.append(float(scores.max()))
    return population, total_passes, history


def image_similarity_scores(model, sequences: Sequence[str], protein: np.ndarray, landmarks: np.ndarray,
                            samples: int = 2, seed: int = 0, batch_size: int = 16, present: np.ndarray | None = None,
                            **generation) -> tuple[np.ndarray, np.ndarray]:
    """Mean Pearson correlation between each sequence's images generated on ``landmarks`` ``(n_landmarks, H, W)``
    (``present`` ``(n_landmarks,)`` bool: absent ones use the model's placeholder) and ``protein`` ``(H, W)``;
    returns ``(scores (N,), first images (N, H, W))``."""
    device = next(model.parameters()).device
    noise = torch.randn(samples, *noise_shape(model), generator=torch.Generator().manual_seed(seed))
    marks = torch.from_numpy(np.repeat(landmarks[None] * 2.0 - 1.0, samples, 0)).float().to(device)
    scores, firsts = [], []
    for start in range(0, len(sequences), batch_size):
        tokens = model.tokenize(list(sequences[start:start + batch_size]))[0]
        images = generate_in_cells(model, tokens, marks, noise, landmark_present=present,
                                   **generation).cpu().numpy()  # (b, K, H, W)
        scores.append(_mean_correlation(images, protein))
        firsts.append(images[:, 0])
    return np.concatenate(scores), np.concatenate(firsts)


# ----------------------------------------------------------------------------------------------- the pipeline
def design(out: str | Path, *, model: str | Path | None = None, image: str | Path | None = None,
           landmarks: Sequence[str | Path] = (), target: str | None = None, length: int | None = None,
           template: str | None = None, terminus: str | None = None, terminus_length: int = 15,
           candidates: int = 32, decoder: str | None = None, passes: int = 16, temperature: float = 1.0,
           top_k: int | None = None, score_samples: int = 2, top: int = 8, sampler: str = "dpmsolver",
           steps: int | None = None, guidance: float | None = None, batch_size: int = 32, seed: int = 0,
           device: str = "auto", progress: bool = True, refine_rounds: int = 0,
           refine_fraction: float = 0.2, proposer: str = "designer", designer: str | Path | None = None,
           designer_guidance: float = 1.0, overwrite: bool = False) -> DesignResult:
    """Design sequences (see the module docstring) and write the outputs into ``out``.

    ``out`` follows the output-folder policy (:mod:`locscope.utils.outputs`): ``overwrite`` replaces an earlier
    design output; other non-empty folders are refused before any work is done.

    ``proposer='designer'`` (default) decodes with the sequence designer (``designer``: bundled name or directory)
    conditioned on the target's compartment, or on the compartment the image shows (:func:`image_target_distribution`,
    its most likely class); ``'celldiff'`` with CELL-Diff's masked-residue head conditioned on the images.

    Parameters
    ----------
    out : path
        Output folder (``candidates.fasta``, ``candidates.csv``, ``summary.json``, ``report.html``).
    model : str or path, optional
        CELL-Diff (default ``celldiff-64``), latent diffusion or CELL-E 2 model: bundled name or directory (:mod:`locscope.models.hub`),
        or a released CELL-Diff checkpoint set (:mod:`locscope.pipelines.design_released`: its sequence head infills
        the template given ``image`` and ``landmarks``).
    image : path, optional
        Protein image ``(H, W)`` (any reader format) whose localization to design for; needs ``landmarks``.
    landmarks : sequence of path
        Landmark images of the same cell (nucleus / ER / microtubules), resized to the model's side.
    target : str, optional
        Target compartment instead of ``image`` (a level-1, level-2 or level-3 class, e.g. ``'nucleus'``).
    length : int, optional
        Design a whole sequence of this many residues (1 to 2048) when ``template`` is absent.
    template : str, optional
        Residues with ``<mask>`` / ``<mask:N>`` spans to infill.
    terminus : {'N', 'C'}, optional
        Add ``terminus_length`` designed residues before / after ``template``.
    terminus_length : int
    candidates : int
        Candidates to decode and score (>= 1).
    decoder : {'parallel', 'one-per-pass'}, optional
        MaskGIT's confidence-ordered decoder (at most ``passes`` forward passes) or one residue per pass; default
        ``'parallel'`` (released CELL-Diff checkpoint sets: ``'one-per-pass'``, their published decoder).
    passes, temperature, top_k :
        Parallel decoder passes; residue sampling temperature; sample among the ``top_k`` most likely residues.
    score_samples : int
        Generated images per candidate for its score.
    top : int
        Candidates shown in ``report.html``.
    sampler, steps, guidance :
        Image sampler (``'dpmsolver'`` / ``'ddim'``), its denoising steps and the classifier-free guidance scale
        (steps and guidance None: the model family's defaults, :func:`locscope.pipelines.localize.sampling_defaults`).
    batch_size : int
        Candidates decoded / scored per network batch.
    seed : int
        Seeds the decoding and the images' noise.
    device : {'auto', 'cpu', 'cuda'}
    refine_rounds : int
        Head-guided evolution rounds before the image scoring (>= 0).
    refine_fraction : float
        Share of the designed positions re-masked per child, in (0, 1].
    proposer : {'designer', 'celldiff'}
    designer : str or path, optional
        Sequence designer (default ``designer-tiny``).
    designer_guidance : float
        Classifier-free guidance scale of the designer's residue logits (1 = off).
    overwrite : bool
        Replace an earlier ``design`` output in ``out``.

    Returns
    -------
    DesignResult
        Ranked candidates (best first) and the decoding / scoring costs (seconds per candidate).

    Raises
    ------
    ArgumentError
        Bad template / length / terminus / candidates / proposer / refinement options, an image without landmarks,
        neither image nor target (naming the argument).
    InputError
        Unknown target compartment, unreadable files.
    """
    from locscope.utils.device import resolve_device
    from locscope.utils.outputs import check_output_folder
    from locscope.utils.seeding import seed_everything

    check_output_folder(out, "design", overwrite=overwrite, known_files=DESIGN_FILES)
    family = hub.family_of_model(model, default=hub.DEFAULT_GENERATOR)
    if family == "celldiff-released":  # the released model's own image -> sequence decoding
        from locscope.pipelines.design_released import design_released

        return design_released(out, model=model, image=image, landmarks=landmarks, target=target, template=template,
                               length=length, terminus=terminus, terminus_length=terminus_length,
                               candidates=candidates, decoder=decoder, passes=passes, temperature=temperature,
                               top_k=top_k, top=top, batch_size=batch_size, seed=seed, device=device,
                               refine_rounds=refine_rounds, progress=progress, overwrite=overwrite)
    decoder = decoder or "parallel"
    # residue infill by CELL-E 2's own transformer, ranked by nucleus proportion
    if family == "celle2":
        if image is not None:
            raise ArgumentError("image", ": CELL-E 2 designs are ranked by nucleus proportion; give target nucleus",
                                mentions=("target",))
        from locscope.pipelines.design_celle2 import design_celle2

        return design_celle2(out, model=model, landmarks=landmarks, target=target, template=template, length=length,
                             terminus=terminus, terminus_length=terminus_length, candidates=candidates,
                             passes=passes, temperature=temperature, top_k=top_k, score_samples=score_samples,
                             top=top, batch_size=batch_size, seed=seed, device=device, overwrite=overwrite)
    if target is not None:
        resolve_compartment(target)  # fail fast on an unknown name, before loading anything
    if image is None and target is None:
        raise ArgumentError("target", "or image: give target COMPARTMENT, or image PROTEIN_IMAGE with landmarks "
                                      "FILES", mentions=("target", "image", "landmarks"))
    if image is not None and not landmarks:
        raise ArgumentError("image", "needs landmarks (nucleus / ER / microtubule images of the same cell)",
                            mentions=("landmarks",))
    if candidates < 1:
        raise ArgumentError("candidates", f"{candidates}: must be >= 1")
    if proposer not in PROPOSERS:
        raise ArgumentError("proposer", f"{proposer!r}: accepted values are {', '.join(PROPOSERS)}")
    check_refinement(refine_rounds, refine_fraction)
    ids = build_template(template, length, terminus, terminus_length)
    seed_everything(seed)
    net = load_generator(model, resolve_device(device))
    cfg = net.config
    channels = generator_landmarks(net)
    if isinstance(net, LatentDiffusion) and proposer == "celldiff":
        raise ArgumentError("proposer", "celldiff: a latent diffusion model has no masked-residue head; use proposer "
                                        "designer")

    if image is not None:
        protein, marks, present = read_conditioning(image, landmarks, channels, cfg.image_size)
        if isinstance(net, LatentDiffusion) and not present[0]:
            raise ArgumentError("landmarks", f"{landmarks[0]}: no nucleus image; a latent diffusion model is "
                                             "conditioned on the nuclear distance map, so the nucleus is required")
        protein, marks = protein[None], marks[None]
    else:
        protein, marks, _ = target_conditioning(net, target, n_cells=4)
        present = None

    start = time.perf_counter()
    # with an image, the target is what the image shows, read with CELL-Diff as a diffusion classifier
    shown_distribution = None
    if image is not None and (proposer == "designer" or refine_rounds):
        shown_distribution = image_target_distribution(net, protein[0], marks[0], present, seed=seed)
    goal = target if target is not None else shown_distribution
    proposal = {}
    if proposer == "designer":
        sequence_model = load_designer(designer, next(net.parameters()).device)
        classes = sequence_model.config.fraction_classes
        if target is not None:
            fractions = target_fractions(target, classes)
        else:  # the designer was trained on grammar calls: condition on the image's most likely compartment
            fractions = target_fractions(cfg.fraction_classes[int(np.argmax(shown_distribution))], classes)
        proposal = dict(designer=sequence_model, fractions=fractions[None], designer_guidance=designer_guidance)
    sequences, total_passes = decode_candidates(net, ids, protein, marks, present, candidates, decoder, passes,
                                                temperature, top_k, batch_size, seed, progress, **proposal)
    head_history: list[float] = []
    if refine_rounds:
        sequences, refine_passes, head_history = refine_candidates(
            net, sequences, ids, goal, protein, marks, refine_rounds, refine_fraction, passes, temperature, top_k,
            batch_size, seed, **proposal)
        total_passes += refine_passes
    decode_seconds = time.perf_counter() - start

    start = time.perf_counter()
    generation = dict(sampler=sampler, steps=steps, guidance=guidance)
    predictor = LocalizationPredictor(net, "image", score_samples, batch_size=batch_size, seed=seed, **generation)
    localization = predictor.predict(sequences, progress=progress, keep_images=True)
    if target is not None:
        level, name = resolve_compartment(target)
        if level == "level1":
            scores = localization.level1[:, COMPARTMENTS.index(name)]
        else:
            probs, classes = (localization.level3, LEVEL3_CLASSES) if level == "level3" else (localization.level2,
                                                                                             LEVEL2_CLASSES)
            scores = probs[:, classes.index(name)]
        shown = localization.images[:, 0]
        score_method = f"{name} share of the generated images in {score_samples} standard simulator cells"
    else:
        scores, shown = image_similarity_scores(net, sequences, protein[0], marks[0], score_samples, seed, batch_size,
                                                present, **generation)
        score_method = f"mean Pearson correlation with the given image over {score_samples} generated images"
    score_seconds = time.perf_counter() - start

    ranked = _rank(sequences, scores, localization, shown)
    n_design = max(1, len(ranked))
    result = DesignResult(ranked, template_text(ids), target, decoder, total_passes * 1.0 / max(1, -(-candidates // batch_size)),
                          decode_seconds / n_design, score_seconds / n_design, score_method, refine_rounds,
                          head_history, proposer,
                          {} if shown_distribution is None else top_shares(shown_distribution, cfg.fraction_classes,
                                                                           n=3, min_share=0.0))
    write_design_outputs(out, result, protein[0], marks[0], channels, top, overwrite=overwrite)
    return result


def _rank(sequences: list[str], scores: np.ndarray, localization, shown: np.ndarray) -> list[Candidate]:
    from locscope.synth.grammar import localize_sequence

    order = np.argsort(-np.asarray(scores), kind="stable")
    out = []
    for rank, i in enumerate(order, start=1):
        call = localize_sequence(sequences[i])
        out.append(Candidate(rank, sequences[i], float(scores[i]),
                             {c: round(float(p), 4) for c, p in zip(LEVEL3_CLASSES, localization.level3[i])},
                             LEVEL3_CLASSES[int(np.argmax(localization.level3[i]))], call.rule,
                             {k: float(v) for k, v in call.compartments.items()}, shown[i]))
    return out


# ----------------------------------------------------------------------------------------------- outputs
def write_design_outputs(out: str | Path, result: DesignResult, protein: np.ndarray, landmarks: np.ndarray,
                         landmark_channels: Sequence[str], top: int = 8, overwrite: bool = False) -> None:
    """``candidates.fasta``, ``candidates.csv``, ``summary.json`` and ``report.html`` in folder ``out``, written
    beside it and swapped in (the output-folder policy of :mod:`locscope.utils.outputs`)."""
    from locscope.utils.outputs import output_folder

    with output_folder(out, "design", overwrite=overwrite, known_files=DESIGN_FILES) as work:
        _write_design_files(work, result, protein, landmarks, landmark_channels, top)


def _write_design_files(out: Path, result: DesignResult, protein: np.ndarray, landmarks: np.ndarray,
                        landmark_channels: Sequence[str], top: int) -> None:
    import csv

    from locscope.utils.atomic import write_json, write_text

    fasta = "".join(
        f">design_{c.rank:04d} score={c.score:.4f} top_level3={c.top_level3} grammar={c.grammar_call}\n{c.sequence}\n"
        for c in result.candidates)
    write_text(out / "candidates.fasta", fasta)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["rank", "id", "score", "top_level3", "grammar_rule", "sequence"] + [f"p3_{c}" for c in LEVEL3_CLASSES])
    for c in result.candidates:
        writer.writerow([c.rank, f"design_{c.rank:04d}", f"{c.score:.4f}", c.top_level3, c.grammar_call, c.sequence]
                        + [c.level3[k] for k in LEVEL3_CLASSES])
    write_text(out / "candidates.csv", buffer.getvalue())
    summary = {k: v for k, v in asdict(result).items() if k != "candidates"}
    summary["candidates"] = [{k: v for k, v in asdict(c).items() if k != "image"} for c in result.candidates]
    write_json(out / "summary.json", summary)
    nucleus = landmarks[list(landmark_channels).index("nucleus")] if "nucleus" in landmark_channels else None
    write_text(out / "report.html", _report_html(result, protein, nucleus, top))


def _report_html(result: DesignResult, protein: np.ndarray, nucleus: np.ndarray | None, top: int) -> str:
    rows = []
    for c in result.candidates[:top]:
        image = png_img(protein_png(c.image, None), "generated") if c.image is not None else ""
        probs = ", ".join(f"{k} {v:.2f}" for k, v in sorted(c.level3.items(), key=lambda kv: -kv[1])[:3])
        rows.append(f"<tr><td>{c.rank}</td><td>{c.score:.3f}</td><td>{image}</td><td><code>{html.escape(c.sequence)}"
                    f"</code></td><td>{html.escape(probs)}</td><td>{html.escape(c.grammar_call)}</td></tr>")
    target = html.escape(result.target or "the given image")
    return html_page("locscope design", f"""<h1>Designed sequences for {target}</h1>
<p>Template <code>{html.escape(result.template)}</code>; decoder <b>{result.decoder}</b>
({result.passes_per_candidate:.1f} forward passes per batch, {result.decode_seconds_per_candidate * 1000:.1f} ms per candidate
to decode, {result.score_seconds_per_candidate * 1000:.1f} ms to score). Score: {html.escape(result.score_method)}.</p>
<p>Conditioning image: {png_img(protein_png(protein, nucleus), "conditioning image")}</p>
<table><tr><th>rank</th><th>score</th><th>generated image</th><th>sequence</th><th>level-3 (image)</th>
<th>simulator grammar</th></tr>{''.join(rows)}</table>""",
                     style="td{vertical-align:middle} tr:nth-child(even){background:#f4f4f4}")
