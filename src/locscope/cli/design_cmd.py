"""``locscope design``, ``locscope localize`` and ``locscope explain``: from images back to sequences."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from locscope.cli.app import (
    DeviceOption, MaxLengthOption, MoreLandmarks, OverwriteOption, SeedOption, TruncateOption, app, landmark_files,
)
from locscope.cli.train_cmd import train_app
from locscope.errors import InputError
from locscope.io.sequences import read_sequence_text

ModelOption = typer.Option(None, "--model", help="CELL-Diff model directory or bundled name (default: celldiff-tiny).")
MethodOption = typer.Option("combined", "--method", help="image (K generated images read off the simulator's "
                            "compartments) | head (the model's sequence-only compartment head) | combined (mean).")
SamplesOption = typer.Option(4, "--samples", help="Generated images (standard simulator cells) per sequence, K.")
SamplerOption = typer.Option("dpmsolver", "--sampler", help="Image sampler: dpmsolver | ddim.")
StepsOption = typer.Option(10, "--steps", help="Image denoising steps.")
GuidanceOption = typer.Option(2.0, "--guidance", help="Classifier-free guidance scale.")
BatchOption = typer.Option(16, "--batch-size", help="Sequences per network batch.")


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
    decoder: str = typer.Option("parallel", "--decoder", help="parallel (MaskGIT cosine schedule, <= --passes) | "
                                "one-per-pass (CELL-Diff's reference, one residue per forward pass)."),
    passes: int = typer.Option(16, "--passes", help="Forward passes of the parallel decoder."),
    temperature: float = typer.Option(1.0, "--temperature", help="Residue sampling temperature."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Sample among the k most likely residues."),
    score_samples: int = typer.Option(2, "--score-samples", help="Generated images per candidate for scoring."),
    top: int = typer.Option(8, "--top", help="Candidates shown in report.html."),
    sampler: str = SamplerOption,
    steps: int = StepsOption,
    guidance: float = GuidanceOption,
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
    model: Optional[str] = ModelOption,
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


@train_app.command("designer")
def train_designer_command(
    out: Path = typer.Option(..., "--out", help="Run directory (checkpoints, metrics, final model)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Training config (YAML/JSON; DesignerTrainConfig)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
) -> None:
    """Train the sequence designer (compartment distribution -> masked residues) on simulator proteins."""
    from locscope.training.celldiff_module import read_train_config
    from locscope.training.designer_module import DesignerTrainConfig, train_designer

    model_dir = train_designer(out, None if resume else read_train_config(config, DesignerTrainConfig), resume=resume)
    typer.echo(f"model written to {model_dir}")


@app.command("localize")
def localize_command(
    sequence: Optional[str] = typer.Option(None, "--sequence", help="One protein sequence."),
    fasta: Optional[Path] = typer.Option(None, "--fasta", help="FASTA (or sequence table) of proteins, any size and "
                                         "sequence length; streamed."),
    out: Optional[Path] = typer.Option(None, "--out", help="Predictions CSV (default: print to stdout)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    method: Optional[str] = typer.Option(None, "--method", help="localizer (default: the sequence localizer trained "
                                         "on real proteins) | image | head | combined (CELL-Diff; the default for a "
                                         "CELL-Diff --model)."),
    samples: int = SamplesOption,
    head_weight: float = typer.Option(0.5, "--head-weight", help="Weight of the compartment head in 'combined'."),
    sampler: str = SamplerOption,
    steps: int = StepsOption,
    guidance: float = GuidanceOption,
    batch_size: int = BatchOption,
    model: Optional[str] = typer.Option(None, "--model", help="Localizer (localizer-small, default) or CELL-Diff "
                                       "(celldiff-tiny) bundled name or model directory."),
    seed: int = SeedOption,
    device: str = DeviceOption,
) -> None:
    """Level-3, level-2 and level-1 localization probabilities and the top class of each protein."""
    from locscope.pipelines.localize import localize, localize_file

    if (sequence is None) == (fasta is None):
        raise InputError("localize: give exactly one of --sequence SEQ or --fasta FILE")
    options = dict(model=model, method=method, samples=samples, head_weight=head_weight, sampler=sampler, steps=steps,
                   guidance=guidance, batch_size=batch_size, seed=seed, device=device)
    if fasta is not None:
        count = localize_file(fasta, out, progress=True, write=(lambda text: typer.echo(text, nl=False)),
                              overwrite=overwrite, **options)
        if out is not None:
            typer.echo(f"{count} proteins -> {out}")
        return
    if "<" in sequence:
        raise InputError("--sequence: localize needs a complete sequence (no <mask>)")
    sequence = read_sequence_text(sequence, max_length=None).sequence  # the FASTA rules; any length, as --fasta
    prediction, text = localize([sequence], ["sequence"], out, progress=True, overwrite=overwrite, **options)
    if out is None:
        typer.echo(text, nl=False)
    else:
        typer.echo(f"1 protein -> {out}")


@app.command("explain")
def explain_command(
    sequence: str = typer.Option(..., "--sequence", help="The protein sequence to explain."),
    max_length: int = MaxLengthOption,
    truncate: bool = TruncateOption,
    out: Path = typer.Option(..., "-o", "--out", help="Output folder (track.png, report.html, explain.json)."),
    overwrite: bool = OverwriteOption,
    window: int = typer.Option(7, "--window", help="Residues mutated to alanine together (1 = single residues)."),
    stride: int = typer.Option(2, "--stride", help="Residues between window starts."),
    target: Optional[str] = typer.Option(None, "--target", help="Level-3 class to explain (default: the top class)."),
    model: Optional[str] = ModelOption,
    method: str = MethodOption,
    samples: int = SamplesOption,
    seed: int = SeedOption,
    sampler: str = SamplerOption,
    steps: int = StepsOption,
    guidance: float = GuidanceOption,
    batch_size: int = BatchOption,
    device: str = DeviceOption,
) -> None:
    """In-silico mutagenesis: which residues drive the predicted localization."""
    from locscope.pipelines.explain import explain

    scan, segments = explain(sequence, out, model=model, method=method, samples=samples, window=window, stride=stride,
                             target=target, sampler=sampler, steps=steps, guidance=guidance, batch_size=batch_size,
                             seed=seed, device=device, overwrite=overwrite, max_length=max_length,
                             truncate=truncate)
    typer.echo(f"predicted {scan.compartment} ({scan.wild_type[scan.target]:.2f})")
    for segment in segments:
        typer.echo("  " + segment.describe(scan.compartment))
    typer.echo(f"report -> {out}/report.html")
