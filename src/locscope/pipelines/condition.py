"""Where a generator is told the protein goes: its own fraction head, or the sequence localizer when the head is unsure.

Generators with the compartment bottleneck (``config.fraction_classes``) draw the protein where a distribution over
level-1 compartments says. By default that distribution comes from the generator's own fraction head, which learned
from the proteins its image store holds. The sequence localizer (``localizer-small``) learned from the whole
real-protein corpus (:mod:`locscope.io.corpus`) and knows real proteins better, but knows nothing of the simulator's
grammar proteins. A :class:`ConditionPrior` combines them by deferral: where the head's largest fraction is below
``below`` (it hedges), the condition becomes ``(1 - weight) * head + weight * localizer``; elsewhere the head's answer
stands. The localizer's level-1 probabilities (multi-label) are normalised over the generator's classes.

:func:`fit_condition_prior` chooses ``weight`` and ``below`` on validation proteins only: the human proteins of the
corpus's validation split in label-faithful terms (right = the largest level-3 share is an annotated class) and
grammar proteins written with held-out motif variants from their own seed (right = the grammar's largest level-3
class); the score is the mean of the two accuracies, and among the settings within ``tolerance`` of the best score
(about one validation protein) the one that departs least from the head wins (the smallest weight, then the lowest
threshold). The result is saved next to the generator's weights as
``condition_prior.json`` and used by ``generate`` (``condition='auto'``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from locscope.errors import ArgumentError, InputError
from locscope.utils.atomic import write_json

PRIOR_FILE = "condition_prior.json"
CONDITIONS: tuple[str, ...] = ("auto", "head")
WEIGHTS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.6, 0.75, 0.9, 1.0)
BELOW: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.01)  # 1.01: every row defers
TOLERANCE = 0.002  # ties in the mean validation accuracy: about one protein of ~300


@dataclass(frozen=True)
class ConditionPrior:
    """The localizer a generator defers to, and when.

    Attributes
    ----------
    localizer : str
        Bundled localizer name or model directory.
    label_style : str or None
        The localizer's label style (``'image'``: imaging-based labels, as cells are drawn).
    weight : float
        Share of the localizer in the condition of a deferred row, in [0, 1].
    below : float
        A row defers when the fraction head's largest level-1 fraction is below this.
    placement : {'soft', 'sample', 'top'}
        The model's default placement of the condition (``generate``'s ``placement``; chosen by a benchmark of
        generated images, not by :func:`fit_condition_prior`).
    """

    localizer: str = "localizer-small"
    label_style: str | None = "image"
    weight: float = 0.0
    below: float = 0.0
    placement: str = "soft"

    def __post_init__(self) -> None:
        from locscope.diffusion.celldiff_sampler import PLACEMENTS

        if not 0.0 <= self.weight <= 1.0:
            raise ArgumentError("weight", f"={self.weight}: must be in [0, 1]")
        if self.placement not in PLACEMENTS:
            raise ArgumentError("placement", f"={self.placement!r}: accepted values are {', '.join(PLACEMENTS)}")


def read_condition_prior(directory: str | Path) -> ConditionPrior | None:
    """The :class:`ConditionPrior` saved in a model directory, or None when it has none.

    Raises
    ------
    InputError
        For a file that is not valid JSON or has unknown fields.
    """
    from locscope.utils.checkpoint import read_config

    path = Path(directory) / PRIOR_FILE
    if not path.is_file():
        return None
    try:
        return read_config(directory, ConditionPrior, name=PRIOR_FILE)
    except ArgumentError as err:
        raise InputError(f"{path}: {err}") from None


def defer_to_prior(head: np.ndarray, prior: np.ndarray, weight: float, below: float) -> np.ndarray:
    """Mix ``prior`` into the rows where ``head`` hedges.

    Parameters
    ----------
    head, prior : np.ndarray
        ``(N, F)`` distributions over the same classes (rows sum to 1).
    weight : float
        Share of ``prior`` in a deferred row.
    below : float
        Rows whose largest ``head`` value is below this are deferred.

    Returns
    -------
    np.ndarray
        ``(N, F)`` float32 distributions.

    Examples
    --------
    >>> head = np.array([[0.9, 0.1], [0.5, 0.5]]); prior = np.array([[0.0, 1.0], [0.0, 1.0]])
    >>> defer_to_prior(head, prior, 1.0, 0.6).astype(float).round(2).tolist()
    [[0.9, 0.1], [0.0, 1.0]]
    """
    head, prior = np.asarray(head, np.float32), np.asarray(prior, np.float32)
    w = np.where(head.max(1, keepdims=True) < below, np.float32(weight), np.float32(0.0))
    return (1 - w) * head + w * prior


def localizer_fractions(localizer, sequences: Sequence[str], classes: Sequence[str],
                        label_style: str | None = None, batch_size: int = 64) -> np.ndarray:
    """A localizer's level-1 probabilities on ``classes``, normalised per row: ``(N, len(classes))`` float32.

    Raises
    ------
    ArgumentError
        If the localizer predicts none of ``classes``.
    """
    known = localizer.config.level1_classes
    columns = [known.index(c) if c in known else -1 for c in classes]
    if all(c < 0 for c in columns):
        raise ArgumentError("localizer", ": predicts none of the generator's compartment classes")
    probabilities = localizer.predict_sequences(list(sequences), batch_size, label_style)["level1"]
    out = np.stack([probabilities[:, c] if c >= 0 else np.zeros(len(sequences)) for c in columns], 1)
    out = out.astype(np.float32)
    total = out.sum(1, keepdims=True)
    return np.where(total > 0, out / np.maximum(total, 1e-12), 1.0 / len(classes)).astype(np.float32)


def check_label_style(localizer, label_style: str | None, argument: str = "label_style") -> None:
    """ArgumentError naming ``argument`` when ``label_style`` is not one of the localizer's label styles."""
    try:
        localizer.config.check_style(label_style)
    except ValueError as err:
        raise ArgumentError(argument, f"={label_style!r}: {str(err).partition(': ')[2]}") from None


def head_fractions(model, sequences: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """The generator's fraction head on ``sequences``: ``(N, F)`` float32."""
    from locscope.encoders.protein import tokenize

    device = next(model.parameters()).device
    parts = []
    for start in range(0, len(sequences), batch_size):
        tokens, _ = tokenize(list(sequences[start:start + batch_size]), model.config.max_sequence_length)
        with torch.no_grad():
            parts.append(model.predict_fractions(tokens.to(device)).float().cpu().numpy())
    return np.concatenate(parts) if parts else np.zeros((0, len(model.config.fraction_classes)), np.float32)


class SequenceCondition:
    """Sequence -> the compartment distribution a generator is conditioned on (its head, deferring to a localizer
    per :class:`ConditionPrior` when one is given)."""

    def __init__(self, model, prior: ConditionPrior | None = None, device: str | torch.device = "cpu") -> None:
        if not model.config.fraction_classes:
            raise ArgumentError("model", ": has no compartment bottleneck (config.fraction_classes)")
        self.model, self.prior = model, prior
        self.localizer = None
        if prior is not None and prior.weight > 0:
            from locscope.pipelines.localize import load_localizer

            self.localizer = load_localizer(prior.localizer, device=device)
            check_label_style(self.localizer, prior.label_style)

    def __call__(self, sequences: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(N, F)`` float32 distributions over ``model.config.fraction_classes`` and a ``(N,)`` bool array: which
        rows deferred to the localizer."""
        head = head_fractions(self.model, sequences)
        if self.localizer is None:
            return head, np.zeros(len(head), bool)
        prior = localizer_fractions(self.localizer, sequences, self.model.config.fraction_classes,
                                    self.prior.label_style)
        return (defer_to_prior(head, prior, self.prior.weight, self.prior.below),
                head.max(1) < self.prior.below)

    def describe(self) -> str:
        """One line for reports."""
        if self.localizer is None:
            return "the model's fraction head"
        return (f"the model's fraction head; {self.prior.localizer} ({self.prior.label_style or 'default'} labels, "
                f"weight {self.prior.weight:g}) where the head's top fraction < {self.prior.below:g}")


def sequence_condition(model, model_dir: str | Path | None, condition: str = "auto",
                       device: str | torch.device = "cpu") -> SequenceCondition:
    """The :class:`SequenceCondition` of a loaded generator: ``condition='auto'`` reads ``condition_prior.json``
    from ``model_dir`` (the head alone when there is none), ``'head'`` uses the head alone (the file's placement
    still applies)."""
    if condition not in CONDITIONS:
        raise ArgumentError("condition", f"{condition!r}: accepted values are {', '.join(CONDITIONS)}")
    prior = read_condition_prior(model_dir) if model_dir is not None else None
    if prior is not None and condition == "head":
        prior = dataclasses.replace(prior, weight=0.0)
    return SequenceCondition(model, prior, device)


# ------------------------------------------------------------------------------------------------ fitting
def validation_sets(shared_data: str | Path, grammar: int = 400, seed: int = 2718) -> dict:
    """The two validation sets of :func:`fit_condition_prior`: ``{'real': (sequences, level-3 label sets),
    'grammar': (sequences, level-3 label sets)}``."""
    from locscope.data import ontology
    from locscope.io.corpus import load_corpus
    from locscope.synth.grammar import grammar_targets, localize_sequence, random_protein
    from locscope.synth.labelled import corpus_annotated_proteins

    proteins = corpus_annotated_proteins(load_corpus(shared_data).subset("val", human=True))
    real = ([p.sequence for p in proteins], [{ontology.to_level3(c) for c in p.level1} for p in proteins])
    rng = np.random.default_rng(seed)
    targets = grammar_targets()
    sequences = [random_protein(targets[int(rng.integers(len(targets)))], rng, length=200, split="heldout")[0]
                 for _ in range(grammar)]
    labels = []
    for s in sequences:
        shares: dict[str, float] = {}
        for name, fraction in localize_sequence(s).compartments.items():
            level3 = ontology.to_level3(name)
            shares[level3] = shares.get(level3, 0.0) + fraction
        labels.append({max(shares, key=shares.get)})
    return {"real": real, "grammar": (sequences, labels)}


def level3_accuracy(fractions: np.ndarray, classes: Sequence[str], labels: Sequence[set]) -> float:
    """Share of rows whose largest level-3 share (summed level-1 fractions) is in their label set."""
    from locscope.data import ontology
    from locscope.models.readout import LEVEL3_CLASSES

    top = (np.asarray(fractions, np.float32) @ ontology.level_membership(classes, LEVEL3_CLASSES)).argmax(1)
    return float(np.mean([LEVEL3_CLASSES[t] in s for t, s in zip(top, labels)])) if len(labels) else 0.0


def fit_condition_prior(model, sets: dict, localizer: str = "localizer-small", label_style: str | None = "image",
                        device: str | torch.device = "cpu", tolerance: float = TOLERANCE,
                        ) -> tuple[ConditionPrior, list[dict]]:
    """Choose ``weight`` and ``below`` on ``sets`` (:func:`validation_sets`) for a loaded generator.

    Returns the chosen :class:`ConditionPrior` (among the grid points whose mean accuracy is within ``tolerance`` of
    the best, the smallest weight, then the lowest threshold) and every grid point's scores.
    """
    from locscope.pipelines.localize import load_localizer

    loc = load_localizer(localizer, device=device)
    check_label_style(loc, label_style)
    classes = model.config.fraction_classes
    computed = {name: (head_fractions(model, seqs), localizer_fractions(loc, seqs, classes, label_style), labels)
                for name, (seqs, labels) in sets.items()}
    grid = []
    for weight in WEIGHTS:
        for below in (BELOW if weight > 0 else (0.0,)):
            scores = {name: level3_accuracy(defer_to_prior(h, p, weight, below), classes, labels)
                      for name, (h, p, labels) in computed.items()}
            grid.append({"weight": weight, "below": below, **scores, "mean": float(np.mean(list(scores.values())))})
    top = max(g["mean"] for g in grid)
    best = min((g for g in grid if g["mean"] >= top - tolerance), key=lambda g: (g["weight"], g["below"]))
    return ConditionPrior(localizer, label_style, best["weight"], best["below"]), grid


def save_condition_prior(prior: ConditionPrior, directory: str | Path, validation: dict | None = None) -> Path:
    """Write ``condition_prior.json`` (with the validation scores under ``_meta``, for the record) atomically."""
    path = Path(directory) / PRIOR_FILE
    write_json(path, {**dataclasses.asdict(prior), **({"_meta": {"validation": validation}} if validation else {})})
    return path


def train_condition_prior(model: str | Path, shared_data: str | Path, localizer: str = "localizer-small",
                          label_style: str | None = "image", grammar: int = 400, placement: str = "soft",
                          overwrite: bool = False, device: str = "cpu") -> dict:
    """Fit a generator's :class:`ConditionPrior` on the validation sets and save it in the model directory.

    Returns ``{'prior': ..., 'head alone': scores, 'chosen': scores, 'grid': [...], 'proteins': counts}``.

    Raises
    ------
    ArgumentError
        If ``model`` is not a model directory of a generator with the compartment bottleneck, or the directory already
        has a prior and ``overwrite`` is False.
    """
    from locscope.models import hub
    from locscope.utils.device import resolve_device

    path = Path(model)
    if not path.is_dir():
        raise ArgumentError("model", f"={model}: give a model directory (the prior is saved in it)")
    ref = hub.resolve(str(path), families=("celldiff", "latent"), argument="model")
    if (ref.directory / PRIOR_FILE).exists() and not overwrite:
        raise ArgumentError("overwrite", f": {ref.directory / PRIOR_FILE} exists")
    if grammar < 1:
        raise ArgumentError("grammar", f"={grammar}: need at least 1 grammar protein")
    ConditionPrior(placement=placement)  # checks the name before anything loads
    torch_device = resolve_device(device)
    net = ref.load(torch_device)
    if not net.config.fraction_classes:
        raise ArgumentError("model", f"={model}: has no compartment bottleneck (config.fraction_classes)")
    from locscope.pipelines.localize import load_localizer

    check_label_style(load_localizer(localizer, device=torch_device), label_style)  # before the corpus loads
    sets = validation_sets(shared_data, grammar=grammar)
    prior, grid = fit_condition_prior(net, sets, localizer, label_style, torch_device)
    prior = dataclasses.replace(prior, placement=placement)
    chosen = next(g for g in grid if g["weight"] == prior.weight and g["below"] == prior.below)
    alone = next(g for g in grid if g["weight"] == 0.0)
    validation = {"head alone": {k: alone[k] for k in ("real", "grammar", "mean")},
                  "chosen": {k: chosen[k] for k in ("real", "grammar", "mean")},
                  "proteins": {name: len(seqs) for name, (seqs, _) in sets.items()}}
    save_condition_prior(prior, ref.directory, validation)
    return {"prior": dataclasses.asdict(prior), **validation, "grid": grid}
