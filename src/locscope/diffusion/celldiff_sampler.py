"""Image generation with a CELL-Diff model: encode the sequence once, then run DDIM / DPM-Solver++ with guidance.

``sample_protein_images`` is the one function that samples CELL-Diff: the generate pipeline, the training-time
validation gate, ``localize`` (every sequence in standard cells, ``noise=`` shared per cell) and ``design`` (scoring
candidates against an image) all call it, so landmark presence, compartment placement and autocast mean the same
everywhere.
"""

from __future__ import annotations

import dataclasses

import torch

from locscope.diffusion.samplers import PLACEMENTS, classifier_free_guidance, place_condition, sample_images
from locscope.diffusion.schedule import ShiftedCosineSchedule


def schedule_for(model) -> ShiftedCosineSchedule:
    """The shifted-cosine schedule a CELL-Diff model was trained with (its image size, T and schedule base)."""
    cfg = model.config
    return ShiftedCosineSchedule(cfg.image_size, cfg.num_train_timesteps, base=cfg.schedule_base)


#: CELL-Diff's classifier-free guidance scale in generate / localize / design / explain.
DEFAULT_GUIDANCE = 2.0


@torch.no_grad()
def sample_protein_images(
    model, landmarks: torch.Tensor, tokens: torch.Tensor, landmark_present: torch.Tensor | None = None,
    samples: int = 1, sampler: str = "dpmsolver", steps: int | None = None, guidance: float = DEFAULT_GUIDANCE,
    generator: torch.Generator | None = None, autocast: bool = False, progress: bool = False,
    fractions: torch.Tensor | None = None, placement: str = "soft", noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """Generate ``samples`` protein images per (landmarks, sequence) row.

    Parameters
    ----------
    model : locscope.models.celldiff.CellDiff
        In eval mode, on the device of ``landmarks``.
    landmarks : torch.Tensor
        ``(B, n_landmarks, H, W)`` in [-1, 1] (model channel order, model resolution).
    tokens : torch.Tensor
        ``(B, L)`` residue tokens (``model.tokenize``).
    landmark_present : torch.Tensor, optional
        ``(B, n_landmarks)`` bool; absent channels use the model's learned placeholder.
    samples : int
        Images per row (K); output rows are ordered ``[row0 x K, row1 x K, ...]``.
    sampler : {'ddim', 'dpmsolver'}
    steps : int, optional
        Denoising steps (default: 100 DDIM, 10 DPM-Solver++).
    guidance : float
        Classifier-free guidance scale; 1 = conditional only (one network pass per step), > 1 = two passes.
    generator : torch.Generator, optional
        Seeds the initial noise.
    autocast : bool
        Run the network under bf16 autocast.
    fractions : torch.Tensor, optional
        ``(B, n_fraction_classes)`` compartment distributions to condition on instead of the fraction head's prediction
        (models with the compartment bottleneck only): "this sequence's cell, with the protein placed here".
    placement : {'soft', 'sample', 'top'}
        Bottleneck models: condition each image on the whole distribution (the fraction head's, or ``fractions``;
        ``'soft'``, the training-time behaviour), on one compartment drawn from it per image (``'sample'``: the K
        images then show the uncertainty as separate, clean placements), or on its most likely compartment
        (``'top'``).
    noise : torch.Tensor, optional
        ``(B * samples, 1, H, W)`` initial noise in the output row order (diffusers' ``latents=``); drawn with
        ``generator`` when None.

    Returns
    -------
    images : torch.Tensor
        ``(B * samples, 1, H, W)`` float32 in [-1, 1].
    network_evaluations : int
        Sampler steps x (2 if guidance != 1 else 1).
    """
    device = landmarks.device
    batch = landmarks.shape[0]
    if fractions is not None and not model.config.fraction_classes:
        raise ValueError("fractions given, but this model has no compartment bottleneck (config.fraction_classes)")
    context = model.encode_sequence(tokens.to(device), fractions=None if fractions is None else fractions.to(device))
    context = context.repeat(samples)
    if placement not in PLACEMENTS:
        raise ValueError(f"placement={placement!r}: accepted values are {', '.join(PLACEMENTS)}")
    if placement != "soft" and model.config.fraction_classes:
        context = dataclasses.replace(context, condition=place_condition(context.condition, placement, generator))
    landmarks = landmarks.repeat_interleave(samples, dim=0)
    present = landmark_present.to(device).repeat_interleave(samples, dim=0) if landmark_present is not None else None
    maps = None
    if getattr(model.config, "layout_prior", False):  # the layout depends on the cells only: once, not per step
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            maps = model.layout_maps(landmarks, present)[0]
    guided = guidance != 1.0
    if guided:
        null = model.null_context(batch * samples, device)
        both = type(context).concat(context, null)
        landmarks2 = torch.cat([landmarks, landmarks])
        present2 = torch.cat([present, present]) if present is not None else None
        maps2 = torch.cat([maps, maps]) if maps is not None else None

    def denoise(x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            if not guided:
                return model.denoise(x, timesteps, landmarks, context, present, maps)[0].float()
            v = model.denoise(torch.cat([x, x]), torch.cat([timesteps, timesteps]), landmarks2, both, present2,
                              maps2)[0].float()
            conditional, unconditional = v.chunk(2)
            return classifier_free_guidance(conditional, unconditional, guidance)

    size = model.config.image_size
    images, nfe = sample_images(denoise, (batch * samples, 1, size, size), schedule_for(model), sampler, steps,
                                generator=generator, device=device, progress=progress, noise=noise)
    return images.clamp(-1.0, 1.0), nfe * (2 if guided else 1)
