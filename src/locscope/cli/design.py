"""``locscope design``: sequences (or a template's infill) whose generated localization matches an image or a
compartment."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from locscope.cli.app import app
from locscope.cli.options import (
    DeviceOption, GuidanceOption, MoreLandmarks, OverwriteOption, SamplerOption, SeedOption,
    StepsOption, landmark_files,
)


@app.command("design")
def design_command(
    out: Path = typer.Option(..., "-o", "--out", help="Output folder (candidates.fasta, candidates.csv, report.html)."),
    overwrite: bool = OverwriteOption,
    image: Optional[Path] = typer.Option(None, "--image", help="Protein image whose localization to design for."),
    landmarks: Optional[List[Path]] = typer.Option(None, "--landmarks", help="Landmark image files of the same cell "
                                                   "(nucleus / ER / microtubules): --landmarks a.png b.png c.png, a "
                                                   "repeated --landmarks, or a folder."),
    more_landmarks: Optional[List[Path]] = MoreLandmarks,
    target: Optional[str] = typer.Option(None, "--target", help="Target compartment instead of an image, e.g. "
                                         "nucleus, mitochondria, plasma-membrane, nucleoplasm."),
    length: Optional[int] = typer.Option(None, "--length", help="Design a whole sequence of L residues."),
    template: Optional[str] = typer.Option(None, "--template", help="Template with <mask:N> spans to infill, e.g. "
                                           "'MVSKGEE...<mask:15>'."),
    terminus: Optional[str] = typer.Option(None, "--terminus", help="Design a new N or C terminus of the template."),
    terminus_length: int = typer.Option(15, "--terminus-length", help="Residues of the designed terminus."),
    candidates: int = typer.Option(32, "--candidates", help="Candidates to sample and score."),
    decoder: Optional[str] = typer.Option(None, "--decoder", help="parallel (MaskGIT cosine schedule, <= --passes; "
                                          "the default) | one-per-pass (CELL-Diff's reference, one residue per "
                                          "forward pass; the default for a released CELL-Diff --model)."),
    passes: int = typer.Option(16, "--passes", help="Forward passes of the parallel decoder."),
    temperature: float = typer.Option(1.0, "--temperature", help="Residue sampling temperature."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Sample among the k most likely residues."),
    score_samples: int = typer.Option(2, "--score-samples", help="Generated images per candidate for scoring."),
    top: int = typer.Option(8, "--top", help="Candidates shown in report.html."),
    sampler: str = SamplerOption,
    steps: int | None = StepsOption,
    guidance: float | None = GuidanceOption,
    batch_size: int = typer.Option(32, "--batch-size", help="Candidates decoded / scored per batch."),
    refine_rounds: int = typer.Option(0, "--refine-rounds", help="Head-guided evolution rounds before the image "
                                      "scoring: keep the better half by the sequence heads' agreement with --target (or with the compartments "
                                      "the --image shows), re-mask and re-decode."),
    refine_fraction: float = typer.Option(0.2, "--refine-fraction", help="Share of designed positions re-masked per "
                                          "child in a refinement round."),
    proposer: str = typer.Option("designer", "--proposer", help="Who proposes residues: designer (the compartment-"
                                 "conditioned sequence designer) | celldiff (CELL-Diff's masked-residue head, "
                                 "conditioned on the images)."),
    designer: Optional[str] = typer.Option(None, "--designer", help="Sequence designer: bundled name "
                                           "(designer-tiny, default) or a model directory."),
    designer_guidance: float = typer.Option(1.0, "--designer-guidance", help="Classifier-free guidance scale of the "
                                            "designer's residue logits (1 = off)."),
    model: Optional[str] = typer.Option(None, "--model", help="Bundled name or model directory: CELL-Diff (default: "
                                       "the default generator), latent diffusion (latent-tiny), CELL-E 2 "
                                       "(celle2-tiny), or a released CELL-Diff checkpoint folder."),
    seed: int = SeedOption,
    device: str = DeviceOption,
) -> None:
    """Design sequences (or infill a template) whose generated localization matches an image or a compartment."""
    from locscope.pipelines.design import design

    landmarks = landmark_files(landmarks, more_landmarks, required=False)
    result = design(out, model=model, image=image, landmarks=landmarks, target=target, length=length,
                    template=template, terminus=terminus, terminus_length=terminus_length, candidates=candidates,
                    decoder=decoder, passes=passes, temperature=temperature, top_k=top_k, score_samples=score_samples,
                    top=top, sampler=sampler, steps=steps, guidance=guidance, batch_size=batch_size, seed=seed,
                    device=device, refine_rounds=refine_rounds, refine_fraction=refine_fraction, proposer=proposer,
                    designer=designer, designer_guidance=designer_guidance, overwrite=overwrite)
    best = result.candidates[0]
    typer.echo(f"{len(result.candidates)} candidates ({result.decoder}, {result.passes_per_candidate:.0f} passes) -> "
               f"{out}/candidates.fasta; best score {best.score:.3f}: {best.sequence}")
