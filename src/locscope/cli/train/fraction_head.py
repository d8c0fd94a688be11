"""``locscope train fraction-head``: a generative model's sequence heads refitted on the real-protein corpus."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from locscope.cli.options import OverwriteOption, SeedOption
from locscope.cli.train import train_app


@train_app.command("fraction-head")
def train_fraction_head_command(
    model: str = typer.Option(..., "--model", help="Bundled name or model directory (CELL-Diff, latent, CELL-E 2)."),
    corpus: Path = typer.Option(..., "--corpus", help="Shared-data folder (OpenCell + DeepLoc 1.0 files; SCL2205 "
                                "from p-scldata): the real-protein corpus and its homology-aware splits."),
    out: Path = typer.Option(..., "--out", help="Model directory to write (the model with the refitted heads, "
                             "train_config.json, metrics.json)."),
    epochs: int = typer.Option(40, "--epochs", help="Passes over the corpus training proteins."),
    learning_rate: float = typer.Option(1e-3, "--learning-rate", help="AdamW learning rate."),
    batch_size: int = typer.Option(256, "--batch-size", help="Proteins per optimizer step."),
    exclude: Optional[List[str]] = typer.Option(None, "--exclude", help="Leave these proteins and their homology "
                                                "clusters out of training and selection: a UniProt accession, a "
                                                "sequence, or a file (FASTA, or one accession / sequence per line); "
                                                "repeatable."),
    human: bool = typer.Option(True, "--human-only/--all-organisms", help="Corpus proteins of human cells only "
                               "(default; the generators draw human cells) or of every organism."),
    grammar: int = typer.Option(4000, "--grammar", help="Simulator grammar proteins added to the training "
                                "proteins (and a tenth as many to the selection): the heads keep the grammar the "
                                "image path learned. 0: the corpus alone."),
    seed: int = SeedOption,
    overwrite: bool = OverwriteOption,
) -> None:
    """Refit the compartment / fraction heads on frozen sequence embeddings of the corpus (train fits, val selects)."""
    from locscope.training.fraction_head import FractionHeadTrainConfig, train_fraction_head

    config = FractionHeadTrainConfig(model=model, corpus=str(corpus), epochs=epochs, learning_rate=learning_rate,
                                     batch_size=batch_size, exclude=tuple(exclude or ()), human=human, grammar=grammar,
                                     grammar_val=grammar // 10, seed=seed)
    metrics = train_fraction_head(out, config, overwrite=overwrite)
    scores = ", ".join(f"{name} {r['before']['corpus_level3_top1']:.3f} -> {r['after']['corpus_level3_top1']:.3f}"
                       for name, r in metrics["heads"].items())
    typer.echo(f"model written to {out} (corpus val level-3 top-1: {scores}; {metrics['proteins']['train']} corpus "
               f"training proteins)")
