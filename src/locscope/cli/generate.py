"""``locscope generate``: protein localization images from sequences and cell landmarks."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from locscope.cli.app import app
from locscope.cli.options import (
    ConditionOption, DeviceOption, MaxLengthOption, MoreLandmarks, OverwriteOption, SeedOption, TruncateOption, landmark_files,
)
from locscope.io.sequences import sequences_from_options, truncation_note
from locscope.models.hub import DEFAULT_GENERATOR


@app.command("generate")
def generate_command(
    sequence: Optional[str] = typer.Option(None, "--sequence", help="One amino-acid sequence."),
    fasta: Optional[Path] = typer.Option(None, "--fasta", help="FASTA (or sequence table) of proteins."),
    max_length: int = MaxLengthOption,
    truncate: bool = TruncateOption,
    landmarks: Optional[List[Path]] = typer.Option(None, "--landmarks", help="Landmark image files or a sample "
                                                   "folder: --landmarks nucleus.png ER.png microtubule.png (one "
                                                   "option, several files), a repeated --landmarks, or a folder."),
    more_landmarks: Optional[List[Path]] = MoreLandmarks,
    model: str = typer.Option(DEFAULT_GENERATOR, "--model", help="Bundled model name, model directory (CELL-Diff "
                              "or latent diffusion), or a released CELL-Diff checkpoint folder (config.json + "
                              "denoiser .bin + VAE .bin)."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    overwrite: bool = OverwriteOption,
    sampler: Optional[str] = typer.Option(None, "--sampler", help="ddim | dpmsolver (default: dpmsolver; released "
                                          "checkpoints: their DDIM)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Denoising steps (default: DDIM 100, latent "
                                        "models 50, DPM-Solver++ 10, latent models 8; released checkpoints: the config's "
                                        "timestep_respacing, DPM-Solver++ 20)."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Classifier-free guidance scale (default 2, "
                                             "latent models 3; 1 = none; not for released checkpoints)."),
    samples: Optional[int] = typer.Option(None, "--samples", help="Images per sequence (default 4; released "
                                          "checkpoints: 1)."),
    esm: Optional[Path] = typer.Option(None, "--esm", help="Released checkpoints: local transformers ESM2 directory "
                                       "to use instead of the ESM2 weights inside the denoiser checkpoint."),
    precision: str = typer.Option("fp32", "--precision", help="Released checkpoints: fp32 | bf16 (autocast; fast on "
                                  "CPUs with native bf16) | int8 (dynamic int8 Linear layers)."),
    compartment: Optional[str] = typer.Option(None, "--compartment", help="Place the protein here instead of where its "
                                              "sequence points (level-1 name or 'mitochondria:0.6,cytosol:0.4'; "
                                              "models with the compartment bottleneck)."),
    placement: Optional[str] = typer.Option(None, "--placement", help="soft (the predicted distribution) | sample "
                                            "(one compartment drawn from it per sample) | top (the most likely "
                                            "one); default: the model folder's condition_prior.json, else soft."),
    condition: str = ConditionOption,
    passes: int = typer.Option(1, "--passes", help="CELL-E 2 models: forward passes per image (1 = one-pass "
                               "generation; N > 1 decodes the most confident tokens first, cosine schedule)."),
    temperature: float = typer.Option(1.0, "--temperature", help="CELL-E 2 models: sampling temperature."),
    seed: int = SeedOption,
    device: str = DeviceOption,
) -> None:
    """Generate protein localization images from sequences and cell landmarks (CELL-Diff, CELL-E 2, latent
    diffusion)."""
    from locscope.pipelines.generate import generate
    from locscope.pipelines.generate_released import ReleasedGenerateResult

    landmarks = landmark_files(landmarks, more_landmarks)
    records = sequences_from_options(sequence, fasta, max_length=max_length, truncate=truncate)
    for note in filter(None, map(truncation_note, records)):
        typer.echo(f"note: {note}", err=True)
    result = generate([(r.id, r.sequence) for r in records], landmarks, out, model=model, sampler=sampler,
                      steps=steps, guidance=guidance, samples=samples, seed=seed, device=device,
                      compartment=compartment, placement=placement, overwrite=overwrite, passes=passes,
                      temperature=temperature, esm=esm, precision=precision, condition=condition)
    if isinstance(result, ReleasedGenerateResult):
        for entry in result.sequences:
            typer.echo(f"{entry['id']}: {len(entry['samples'])} image(s) in {result.out / entry['folder']}")
    else:
        for entry in result.sequences:
            top = entry["top_compartment_image"] or entry.get("top_compartment_head") or "done"
            typer.echo(f"{entry['id']}: {top}")
    typer.echo(f"report: {result.report}")
