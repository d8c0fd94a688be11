"""Refit the sequence-only heads of a generative model on the real-protein corpus (``locscope train fraction-head``).

A generative model reads a protein's localization off one pooled embedding of its sequence:

- CELL-Diff and the latent denoiser (:mod:`locscope.models.sequence_heads`): a ``compartment_head`` (level-3
  classes; ``localize --method head``, ``generate``'s sequence-head report) and a ``fraction_head`` (level-1
  compartment fractions) whose distribution conditions the image path: where a generated image puts the protein,
  what ``design`` scores and what ``explain`` attributes;
- CELL-E 2 (:mod:`locscope.models.celle2`): the linear fraction head of its sequence summary, an auxiliary read-out of
  the summary the transformer sees (the image tokens do not depend on it).

Those heads were trained with the images, on simulator proteins and about 1,300 OpenCell sequences. Here the rest of
the model stays frozen: the pooled embeddings (CELL-E 2: the summary's hidden vector) of the drawable proteins of the
corpus' ``train`` and ``val`` splits (:func:`locscope.io.corpus.load_corpus`,
:func:`locscope.synth.labelled.corpus_annotated_proteins`) are computed once, and the heads alone are refitted on
them (AdamW, shuffled mini-batches, :func:`~locscope.models.sequence_heads.distribution_loss` against each
protein's label-faithful compartment fractions, summed into the head's class level), starting from their current
weights. ``grammar`` simulator proteins (training motif variants, 200 residues, the grammar's fractions) join the
training proteins and ``grammar_val`` others the selection, so the heads keep the grammar the image path was trained
on while they learn the corpus. Each head keeps the epoch with the best selection score, the mean of its level-3
top-1 accuracy on the corpus ``val`` proteins and on the grammar selection proteins (its distribution summed into
level-3 classes; right when the top class is one of the protein's), or its original weights when no epoch beats
them. Nothing but the heads changes, so given explicit fractions the image path is the same bit for bit.

``human`` (default) keeps the human proteins of both splits (:func:`locscope.io.corpus.is_human`): the generators
draw human cells, and the corpus' other eukaryotes shift the heads' priors (fitted on all organisms, the latent
model's fraction head called 84 of 131 held-out OpenCell proteins nuclear, 47 are).

``exclude`` removes given proteins (accessions or sequences) and every protein of their homology clusters from both
splits, so proteins held out by a benchmark that do not follow the corpus split stay unseen.

Output folder (a complete model directory the hub loads)::

    out/config.json, model.safetensors (+ autoencoder/ for the latent family)   the model with the refitted heads
    out/train_config.json   the settings of the refit
    out/metrics.json        proteins used, per head: the selection scores before / after, the chosen epoch, per epoch
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from locscope.data import ontology
from locscope.errors import ArgumentError, InputError, check_at_least
from locscope.models.sequence_heads import distribution_loss
from locscope.utils.progress import note, track

FAMILIES = ("celldiff", "latent", "celle2")
LEVEL_CLASSES = {"level1": ontology.LEVEL1, "level2": ontology.LEVEL2, "level3": ontology.LEVEL3}
#: level -> the class at that level of a level-1 class; level -> the level-3 class of a class of that level
LEVEL_OF_LEVEL1: dict[str, Callable[[str], str]] = {"level1": lambda c: c, "level2": ontology.to_level2,
                                                    "level3": ontology.to_level3}
LEVEL3_OF: dict[str, Callable[[str], str]] = {"level1": ontology.to_level3,
                                              "level2": ontology.LEVEL2_TO_LEVEL3.__getitem__, "level3": lambda c: c}


@dataclass
class FractionHeadTrainConfig:
    """Settings of :func:`train_fraction_head` (saved as ``train_config.json`` in the output folder).

    Parameters
    ----------
    model : str
        Bundled name or model directory (CELL-Diff, latent diffusion or CELL-E 2 with a summary fraction head).
    corpus : str
        Folder with OpenCell's and DeepLoc 1.0's files (:func:`locscope.io.corpus.load_corpus`).
    epochs, batch_size, learning_rate, weight_decay : the AdamW fit of the heads.
    exclude : tuple of str
        Accessions and sequences whose homology clusters are left out of training and selection.
    human : bool
        Train and select on the corpus' human proteins only (else every organism's).
    grammar, grammar_val : int
        Simulator grammar proteins added to the training and to the selection proteins (0: the corpus alone).
    max_train_proteins, max_val_proteins : int, optional
        Use only the first N drawable proteins of each split (tests).
    embed_batch_size : int
        Sequences per encoder batch when computing the frozen embeddings.
    seed : int
        Seeds the mini-batch order.
    """

    model: str = "latent-tiny"
    corpus: str = "../shared/data"
    epochs: int = 40
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    exclude: tuple[str, ...] = ()
    human: bool = True
    grammar: int = 4000
    grammar_val: int = 400
    max_train_proteins: int | None = None
    max_val_proteins: int | None = None
    embed_batch_size: int = 32
    seed: int = 0


@dataclass
class Head:
    """One refittable head: its name in the metrics, the module, its classes and their ontology level."""

    name: str
    module: nn.Module
    classes: tuple[str, ...]
    level: str


# ------------------------------------------------------------------------------------------------ the model's heads
def class_level(classes: Sequence[str], head: str) -> str:
    """The ontology level (``'level1'``, ``'level2'``, ``'level3'``) all ``classes`` of the head named ``head`` belong
    to (the finest one that holds them all).

    Raises
    ------
    InputError
        If no level holds them all (the corpus labels cannot be mapped onto the head).
    """
    for level in ("level1", "level2", "level3"):
        if set(classes) <= set(LEVEL_CLASSES[level]):
            return level
    raise InputError(f"the model's {head} predicts {', '.join(classes)}: not the classes of one ontology level, so "
                     "the corpus labels cannot be mapped onto it")


def model_heads(model: nn.Module, family: str) -> tuple[list[Head], Callable[[list[str]], torch.Tensor]]:
    """The refittable heads of ``model`` (a loaded model of ``family``) and the function that computes their input
    ``(B, width)`` from a batch of sequences (without gradients; sequences longer than the model reads keep both
    termini).

    Raises
    ------
    ArgumentError
        (``model``) for a CELL-E 2 model without a summary fraction head, or a CELL-Diff / latent model whose
        fraction head is missing.
    """
    if family == "celle2":
        from locscope.utils.sequences import keep_termini

        cfg = model.config
        if not cfg.summary_fraction_classes:
            raise ArgumentError("model", ": this CELL-E 2 model has no summary fraction head "
                                         "(config.summary_fraction_classes is empty)")
        heads = [Head("summary.fraction_head", model.summary.fraction_head, tuple(cfg.summary_fraction_classes),
                      class_level(cfg.summary_fraction_classes, "summary fraction head"))]

        def inputs(sequences: list[str]) -> torch.Tensor:
            text = model.tokenize([keep_termini(s, cfg.text_seq_len) for s in sequences], trim=True)
            return model.summary_hidden(text)
    else:
        network = model.denoiser if family == "latent" else model
        cfg = network.config
        if not cfg.fraction_classes:
            raise ArgumentError("model", ": this model has no fraction head (config.fraction_classes is empty)")
        prefix = "denoiser." if family == "latent" else ""
        heads = [Head(prefix + "fraction_head", network.fraction_head, tuple(cfg.fraction_classes),
                      class_level(cfg.fraction_classes, "fraction head")),
                 Head(prefix + "compartment_head", network.compartment_head, tuple(cfg.compartment_classes),
                      class_level(cfg.compartment_classes, "compartment head"))]

        def inputs(sequences: list[str]) -> torch.Tensor:
            return network.pooled_embedding(network.tokenize(sequences)[0].to(next(network.parameters()).device))
    return heads, inputs


@torch.no_grad()
def embed(inputs: Callable[[list[str]], torch.Tensor], sequences: Sequence[str], batch_size: int,
          progress: bool = True, description: str = "embeddings") -> torch.Tensor:
    """``inputs`` of every sequence ``(N, width)`` float32 on the CPU, in input order (batches of similar length)."""
    order = np.argsort([len(s) for s in sequences], kind="stable")
    rows: list[torch.Tensor | None] = [None] * len(sequences)
    starts = range(0, len(order), batch_size)
    for start in track(starts, description, total=len(starts), enabled=progress):
        chunk = order[start:start + batch_size]
        for i, row in zip(chunk, inputs([sequences[j] for j in chunk]).float().cpu()):
            rows[i] = row
    return torch.stack(rows)


# ------------------------------------------------------------------------------------------------ targets and scores
def head_targets(compartments: Sequence[dict[str, float]], classes: Sequence[str], level: str) -> torch.Tensor:
    """``(N, len(classes))`` targets: each protein's level-1 fractions summed into ``classes`` at ``level`` (a
    fraction of a class the head lacks is dropped; rows that keep nothing are zeros, without loss)."""
    index = {name: i for i, name in enumerate(classes)}
    to_level = LEVEL_OF_LEVEL1[level]
    out = np.zeros((len(compartments), len(classes)), np.float32)
    for row, fractions in enumerate(compartments):
        for name, value in fractions.items():
            column = index.get(to_level(name))
            if column is not None:
                out[row, column] += value
    return torch.from_numpy(out)


def level3_matrix(classes: Sequence[str], level: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """``(len(classes), n_level3)`` 0/1 matrix summing a head's distribution into level-3 classes, and those."""
    to_level3 = LEVEL3_OF[level]
    names = tuple(sorted({to_level3(c) for c in classes}))
    matrix = np.zeros((len(classes), len(names)))
    for i, name in enumerate(classes):
        matrix[i, names.index(to_level3(name))] = 1.0
    return matrix, names


def level3_top1(probabilities: np.ndarray, classes: Sequence[str], level: str,
                truth: Sequence[set[str]]) -> float:
    """Share of rows whose most probable level-3 class (the distribution over ``classes`` summed into level 3) is one
    of the row's true level-3 classes ``truth``."""
    matrix, names = level3_matrix(classes, level)
    top = (probabilities @ matrix).argmax(1)
    return float(np.mean([names[k] in t for k, t in zip(top, truth)])) if len(truth) else float("nan")


def level3_truth(compartments: Sequence[dict[str, float]]) -> list[set[str]]:
    """Each protein's level-3 classes (of its label-faithful level-1 compartments)."""
    return [{ontology.to_level3(c) for c in fractions} for fractions in compartments]


def grammar_proteins(n: int, seed: int) -> tuple[list[str], list[dict[str, float]]]:
    """``n`` simulator grammar proteins (uniform targets, training motif variants, 200 residues, as the training
    stores write them) and the grammar's level-1 fractions of each."""
    from locscope.synth.grammar import grammar_targets, localize_sequence, random_protein

    rng = np.random.default_rng(seed)
    targets = grammar_targets()
    sequences = [random_protein(targets[int(rng.integers(len(targets)))], rng, length=200, split="train")[0]
                 for _ in range(n)]
    return sequences, [localize_sequence(s).compartments for s in sequences]


@torch.no_grad()
def head_probabilities(head: nn.Module, features: torch.Tensor) -> np.ndarray:
    """Softmax of ``head`` over ``features`` ``(N, width)`` -> ``(N, n_classes)``."""
    head.eval()
    return head(features).float().softmax(-1).numpy()


def fit_head(head: Head, train_x: torch.Tensor, train_y: torch.Tensor,
             val: dict[str, tuple[torch.Tensor, Sequence[set[str]]]], config: FractionHeadTrainConfig) -> dict:
    """Fit ``head.module`` in place (see the module docstring); ``val`` maps a selection set's name to its inputs and
    level-3 truth (the selection score is the mean of their level-3 top-1). Returns its record for
    ``metrics.json``."""
    module = head.module
    generator = torch.Generator().manual_seed(config.seed)

    def selection() -> dict[str, float]:
        scores = {f"{name}_level3_top1": level3_top1(head_probabilities(module, x), head.classes, head.level, truth)
                  for name, (x, truth) in val.items()}
        return {"selection": float(np.mean(list(scores.values()))), **scores}

    before = selection()
    best = (before, 0, {k: v.detach().clone() for k, v in module.state_dict().items()})
    for parameter in module.parameters():
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(module.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    log = []
    for epoch in range(1, config.epochs + 1):
        module.train()
        order = torch.randperm(len(train_x), generator=generator)
        total, count = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            rows = order[start:start + config.batch_size]
            loss = distribution_loss(module(train_x[rows]), train_y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(rows), count + len(rows)
        scores = selection()
        log.append({"epoch": epoch, "train_loss": total / max(count, 1), **scores})
        if scores["selection"] > best[0]["selection"]:
            best = (scores, epoch, {k: v.detach().clone() for k, v in module.state_dict().items()})
    module.load_state_dict(best[2])
    module.eval()
    return {"classes": list(head.classes), "level": head.level, "before": before, "after": best[0],
            "chosen_epoch": best[1], "epochs": log}


# ------------------------------------------------------------------------------------------------ exclusion
def read_exclusions(values: Sequence[str]) -> tuple[set[str], set[str]]:
    """``(accessions, sequences)`` named by ``values``: each value is a file (it holds a path separator or a dot:
    FASTA, whose record ids count as accessions and whose sequences as sequences; any other text file, one accession
    or sequence per line or whitespace-separated) or one accession or sequence.

    Raises
    ------
    ArgumentError
        (``exclude``) for a file that does not exist or cannot be read.
    """
    from locscope.io.sequences import read_fasta

    accessions: set[str] = set()
    sequences: set[str] = set()
    for value in values:
        if "/" in value or "." in value:
            path = Path(value)
            if not path.is_file():
                raise ArgumentError("exclude", f"{value}: file not found")
            text = path.read_text(errors="replace")
            if text.lstrip().startswith(">"):
                for record in read_fasta(path, max_length=None):
                    accessions.add(record.id)
                    sequences.add(record.sequence.upper())
                continue
            tokens = text.split()
        else:
            tokens = [value]
        for token in tokens:  # UniProt accessions hold digits; sequences are letters only
            if token.isalpha():
                sequences.add(token.upper())
            else:
                accessions.add(token)
    return accessions, sequences


def excluded_clusters(proteins: Sequence, accessions: set[str], sequences: set[str]) -> tuple[set[int], int]:
    """Homology clusters of the corpus ``proteins`` matching an accession or sequence, and how many of the named
    accessions / sequences matched no corpus protein."""
    matched_accessions = {p.accession for p in proteins if p.accession in accessions}
    matched_sequences = {p.sequence for p in proteins if p.sequence in sequences}
    clusters = {p.cluster for p in proteins if p.accession in accessions or p.sequence in sequences}
    return clusters, len(accessions - matched_accessions) + len(sequences - matched_sequences)


# ------------------------------------------------------------------------------------------------ the command
def check_settings(config: FractionHeadTrainConfig) -> None:
    """Refuse settings out of range (:class:`ArgumentError` naming the field)."""
    check_at_least("epochs", config.epochs)
    check_at_least("batch_size", config.batch_size)
    check_at_least("embed_batch_size", config.embed_batch_size)
    check_at_least("grammar", config.grammar, 0)
    check_at_least("grammar_val", config.grammar_val, 0)
    check_at_least("max_train_proteins", config.max_train_proteins)
    check_at_least("max_val_proteins", config.max_val_proteins)
    if not config.learning_rate > 0:
        raise ArgumentError("learning_rate", f"{config.learning_rate}: must be > 0")
    if config.weight_decay < 0:
        raise ArgumentError("weight_decay", f"{config.weight_decay}: must be >= 0")


def train_fraction_head(out: str | Path, config: FractionHeadTrainConfig, overwrite: bool = False,
                        progress: bool = True, corpus=None) -> dict:
    """Refit the heads of ``config.model`` on the corpus and write the model to ``out`` (module docstring).

    Parameters
    ----------
    out : path
        Output folder (new or empty; ``overwrite`` replaces an earlier output of this command).
    config : FractionHeadTrainConfig
    corpus : locscope.io.corpus.Corpus, optional
        An already loaded corpus (default: :func:`~locscope.io.corpus.load_corpus` of ``config.corpus``).

    Returns
    -------
    dict
        What ``metrics.json`` holds.

    Raises
    ------
    InputError
        Bad settings, an unknown model or one of another family, a missing corpus, no training or validation
        proteins left.
    """
    from locscope.io.corpus import load_corpus
    from locscope.models import hub
    from locscope.synth.labelled import corpus_annotated_proteins
    from locscope.utils.atomic import write_json
    from locscope.utils.outputs import check_output_folder, output_folder

    command = "train fraction-head"
    check_output_folder(out, command, overwrite=overwrite)
    check_settings(config)
    ref = hub.resolve(config.model, families=FAMILIES, argument="model")
    accessions, sequences = read_exclusions(config.exclude)
    if corpus is None:
        if not Path(config.corpus).is_dir():
            raise ArgumentError("corpus", f"{config.corpus}: folder not found (the shared-data folder with OpenCell "
                                          "and DeepLoc 1.0)")
        corpus = load_corpus(config.corpus)
    started = time.process_time()
    model = ref.load("cpu")
    heads, inputs = model_heads(model, ref.family)
    model.requires_grad_(False)
    clusters, unmatched = excluded_clusters(corpus.proteins, accessions, sequences)
    if unmatched:
        note(f"exclude: {unmatched} of the named accessions / sequences are not in the corpus", progress)
    splits = {}
    for split, limit in (("train", config.max_train_proteins), ("val", config.max_val_proteins)):
        kept = corpus_annotated_proteins([p for p in corpus.subset(split, human=True if config.human else None)
                                          if p.cluster not in clusters])
        splits[split] = kept[:limit] if limit else kept
        if not splits[split]:
            raise InputError(f"{config.corpus}: no drawable {split} proteins left after the exclusions")
    sets = {name: ([p.sequence for p in proteins], [p.compartments for p in proteins])
            for name, proteins in (("corpus_train", splits["train"]), ("corpus_val", splits["val"]))}
    # seeds apart from the benchmarks' grammar proteins; training motif variants only
    for name, n, seed in (("grammar_train", config.grammar, 1_000 + config.seed),
                          ("grammar_val", config.grammar_val, 2_000 + config.seed)):
        if n:
            sets[name] = grammar_proteins(n, seed)
    features = {name: embed(inputs, sequences, config.embed_batch_size, progress, f"{name} embeddings")
                for name, (sequences, _) in sets.items()}
    train_names = [name for name in ("corpus_train", "grammar_train") if name in sets]
    train_x = torch.cat([features[name] for name in train_names])
    val = {name.removesuffix("_val"): (features[name], level3_truth(sets[name][1]))
           for name in ("corpus_val", "grammar_val") if name in sets}
    records = {}
    for head in heads:
        targets = torch.cat([head_targets(sets[name][1], head.classes, head.level) for name in train_names])
        record = records[head.name] = fit_head(head, train_x, targets, val, config)
        note(f"{head.name}: " + ", ".join(f"{key} {record['before'][key]:.3f} -> {record['after'][key]:.3f}"
                                          for key in record["after"]) + f" (epoch {record['chosen_epoch']})",
             progress)
    metrics = {"model": str(config.model), "family": ref.family,
               "proteins": {"train": len(splits["train"]), "val": len(splits["val"]),
                            "grammar_train": config.grammar, "grammar_val": config.grammar_val,
                            "excluded_clusters": len(clusters), "exclusions_not_in_corpus": unmatched},
               "heads": records, "cpu_seconds": time.process_time() - started}
    source_config = ref.path / "config.json"
    source_meta = json.loads(source_config.read_text()).get("_meta", {}) if source_config.is_file() else {}
    meta = {**source_meta, "heads_refit": {"from": str(config.model), "train_config": dataclasses.asdict(config),
                                            **{name: {k: r[k] for k in ("before", "after", "chosen_epoch")}
                                               for name, r in records.items()}}}
    with output_folder(out, command, overwrite=overwrite) as work:
        model.save_pretrained(work, extra=meta)
        write_json(work / "train_config.json", dataclasses.asdict(config))
        write_json(work / "metrics.json", metrics)
    return metrics


__all__ = ["FractionHeadTrainConfig", "Head", "class_level", "embed", "excluded_clusters", "fit_head",
           "grammar_proteins", "head_probabilities", "head_targets", "level3_top1", "level3_truth", "model_heads", "read_exclusions",
           "train_fraction_head"]
