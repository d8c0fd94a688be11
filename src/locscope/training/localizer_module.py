"""Training of the sequence localizer (:mod:`locscope.models.localizer`) on the real-protein corpus.

Data: the ``train`` split of :func:`locscope.io.corpus.load_corpus` (SCL2205 + OpenCell + DeepLoc 1.0, homology
clusters never shared between splits); the ``val`` split picks the best epoch (level-3 macro average precision).
Loss: binary cross-entropy per level over the proteins labelled at that level (level 1 is unknown for e.g. Swiss-Prot
"Nucleus"), weighted ``level_weights``.

Label styles (``model: {label_styles: [...], source_styles: {source: style}}``,
:class:`~locscope.models.localizer.LocalizerConfig`): the network and the first style's heads are trained on the
proteins of the first style's sources; then the heads of every further style (a linear translation of the first
style's logits plus hashed k-mer counts) are fitted on the training proteins of that style's sources with the
network frozen (:func:`fit_translation_heads`, L2-regularised logistic regression, strength ``translation_c``). Batches group proteins of similar length (less padding); the order of every
epoch comes from ``seed + epoch``, so a killed run resumed from its last epoch checkpoint (``resume=True``) continues
exactly as if it had not stopped.

Run folder::

    run_dir/checkpoint/   model.safetensors + config.json, optimizer.safetensors + .json, state.json (after each epoch)
    run_dir/model/        the best epoch's model (bundle this folder)
    run_dir/metrics.jsonl one line per epoch: loss, val scores, CPU seconds
    run_dir/train_config.json
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from locscope.io.corpus import CLASSES, CorpusProtein, label_matrix, load_corpus
from locscope.errors import InputError
from locscope.models.localizer import LocalizerConfig, SequenceLocalizer
from locscope.training.common import check_finite_gradients, finite_hint
from locscope.utils.atomic import replace_directory, write_json
from locscope.utils.checkpoint import load_optimizer_state, save_optimizer_state
from locscope.utils.outputs import check_run_folder
from locscope.utils.progress import track

LEVELS = ("level1", "level2", "level3")


@dataclass
class LocalizerTrainConfig:
    """Settings of :func:`train_localizer` (saved as ``train_config.json`` in the run folder).

    Parameters
    ----------
    shared_data : str
        Folder with OpenCell's and DeepLoc's files (see :func:`locscope.io.corpus.load_corpus`).
    model : dict
        :class:`~locscope.models.localizer.LocalizerConfig` fields to override.
    epochs, batch_size, learning_rate, weight_decay, warmup_steps : training schedule (AdamW, cosine decay).
    level_weights : (3,) floats
        Loss weights of levels 1, 2, 3.
    oversample : dict
        Label source -> times each of its training proteins is seen per epoch (e.g. ``{"opencell": 4}``: the
        human image-based labels, the style of the level-1 classes users look for, are 7% of the proteins).
    translation_c : float
        Inverse L2 strength of the translation heads (as scikit-learn's ``C``: the penalty is
        ``|W|^2 / (2 C N)`` beside the mean cross-entropy of N proteins).
    hpa_labels : str or None
        Human Protein Atlas ``subcellular_location.tsv`` (relative to ``shared_data`` or absolute): the human
        training proteins of the other sources, relabelled from it (:func:`locscope.io.corpus.hpa_labelled`, label
        source ``'hpa'``), join the training proteins of the translation heads of ``model.source_styles['hpa']``.
    hpa_weight : float
        Loss weight of each HPA-labelled protein in that fit (the style's own proteins weigh 1).
    hpa_reliabilities : tuple of str
        HPA reliability scores kept (``Enhanced``, ``Supported``, ``Approved``, ``Uncertain``).
    hpa_main_only : bool
        Use HPA's main locations only (default: main and additional).
    max_train_proteins : int or None
        Use only the first N training proteins (tests).
    seed : int
    """

    shared_data: str = "../shared/data"
    model: dict = field(default_factory=lambda: {"width": 48, "layers": 2, "hidden": 192})
    epochs: int = 12
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    level_weights: tuple[float, float, float] = (0.5, 1.0, 1.0)
    oversample: dict = field(default_factory=dict)
    translation_c: float = 4.0
    hpa_labels: str | None = None
    hpa_weight: float = 1.0
    hpa_reliabilities: tuple[str, ...] = ("Enhanced", "Supported")
    hpa_main_only: bool = False
    max_train_proteins: int | None = None
    max_val_proteins: int | None = None
    seed: int = 0


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of indices of similar length: sort by length with random tie-breaks, chunk, shuffle chunks."""
    order = np.lexsort((rng.random(lengths.size), lengths))
    batches = [order[i:i + batch_size] for i in range(0, order.size, batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def level_targets(proteins: list[CorpusProtein], config: LocalizerConfig) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per level: ``(targets (N, n_classes) float, known (N,) bool)`` in the model's class order."""
    out = {}
    for level in LEVELS:
        targets, known = label_matrix(proteins, level)
        columns = [CLASSES[level].index(c) for c in config.classes(level)]
        out[level] = torch.from_numpy(targets[:, columns]), torch.from_numpy(known)
    return out


def localizer_loss(logits: dict[str, torch.Tensor], targets: dict[str, tuple[torch.Tensor, torch.Tensor]],
                   weights: tuple[float, float, float]) -> torch.Tensor:
    """Weighted sum over levels of the mean binary cross-entropy of the rows labelled at that level."""
    total = logits["level3"].new_zeros(())
    for weight, level in zip(weights, LEVELS):
        target, known = targets[level]
        if known.any():
            total = total + weight * F.binary_cross_entropy_with_logits(logits[level][known], target[known])
    return total


def own_style_probabilities(model: SequenceLocalizer, proteins: list[CorpusProtein]) -> dict[str, np.ndarray]:
    """Probabilities of every protein from the heads of its label source's style, in input order."""
    out: dict[str, np.ndarray] = {}
    for style in model.config.label_styles:
        rows = [i for i, p in enumerate(proteins) if model.config.style_of(p.source) == style]
        if not rows:
            continue
        part = model.predict_sequences([proteins[i].sequence for i in rows], style=style)
        for level, values in part.items():
            out.setdefault(level, np.zeros((len(proteins), values.shape[1]), np.float32))[rows] = values
    return out


def evaluate_split(model: SequenceLocalizer, proteins: list[CorpusProtein]) -> dict[str, float]:
    """Level-3 and level-2 multi-label scores (:func:`locscope.metrics.sequence.multilabel_scores`) on ``proteins``,
    each protein scored in its own label style; with several styles also ``<style>_level3_macro_ap``."""
    from locscope.metrics.sequence import multilabel_scores

    probabilities = own_style_probabilities(model, proteins)
    scores = {}
    for level in ("level3", "level2"):
        targets, known = level_targets(proteins, model.config)[level]
        present = targets[known].numpy().sum(0) > 0
        result = multilabel_scores(targets[known].numpy()[:, present] > 0, probabilities[level][known.numpy()][:, present])
        scores.update({f"{level}_{k}": v for k, v in result.items() if k != "n_classes_without_positives"})
    if len(model.config.label_styles) > 1:
        targets, known = level_targets(proteins, model.config)["level3"]
        for style in model.config.label_styles:
            rows = known.numpy() & np.array([model.config.style_of(p.source) == style for p in proteins])
            present = targets[rows].numpy().sum(0) > 0
            if rows.any():
                scores[f"{style}_level3_macro_ap"] = multilabel_scores(
                    targets[rows].numpy()[:, present] > 0, probabilities["level3"][rows][:, present])["macro_ap"]
    return scores


@torch.no_grad()
def translation_inputs(model: SequenceLocalizer, proteins: list[CorpusProtein], batch_size: int = 64) -> torch.Tensor:
    """``(N, inputs)`` inputs of the translation heads (:meth:`SequenceLocalizer.translation_inputs`), input order."""
    model.eval()
    order = np.argsort([len(p.sequence) for p in proteins], kind="stable")
    rows: list[torch.Tensor] = [torch.empty(0)] * len(proteins)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        tokens = model.tokenize([proteins[i].sequence for i in chunk])
        for i, row in zip(chunk, model.translation_inputs(tokens, model(tokens))):
            rows[i] = row
    return torch.stack(rows) if rows else torch.zeros(0)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, c: float, weights: torch.Tensor | None = None,
                 max_iter: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """One-vs-rest L2-regularised logistic regression ``(weight (classes, inputs), bias (classes,))``: the weighted
    mean binary cross-entropy of the rows (``weights`` default 1) plus ``|W|^2 / (2 c sum(weights))`` (biases free),
    full-batch L-BFGS from zero weights and the prior's biases (deterministic)."""
    weights = torch.ones(len(x)) if weights is None else weights.float()
    total = weights.sum()
    weight = torch.zeros(y.shape[1], x.shape[1], requires_grad=True)
    prior = ((weights[:, None] * y).sum(0) / total).clamp(1e-3, 1 - 1e-3)
    bias = torch.log(prior / (1 - prior)).clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure():
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x @ weight.T + bias, y, reduction="none").sum(1)
        loss = (loss * weights).sum() / total + weight.pow(2).sum() / (2 * c * total)
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def fit_translation_heads(model: SequenceLocalizer, proteins: list[CorpusProtein], style: str,
                          c: float = 4.0, max_iter: int = 200, weights: list[float] | None = None) -> None:
    """Fit the three heads of ``style`` (not the first) on ``proteins`` with the network frozen: per level
    :func:`fit_logistic` over the proteins labelled at that level (``weights``: per-protein loss weights, default 1)."""
    if style == model.config.label_styles[0] or style not in model.config.label_styles:
        raise ValueError(f"style={style!r}: translation heads exist for {', '.join(model.config.label_styles[1:])}")
    if c <= 0:
        raise ValueError(f"c={c}: must be > 0")
    if not proteins:
        raise ValueError(f"no training proteins for the label style {style!r}")
    if weights is not None and len(weights) != len(proteins):
        raise ValueError(f"weights has {len(weights)} values for {len(proteins)} proteins")
    inputs = translation_inputs(model, proteins)
    targets = level_targets(proteins, model.config)
    row_weights = torch.ones(len(proteins)) if weights is None else torch.tensor(weights, dtype=torch.float32)
    index = model.config.label_styles.index(style)
    from locscope.models.localizer import head_name

    for level in LEVELS:
        target, known = targets[level]
        head = model.heads[head_name(index, style, level)]
        if not known.any():
            continue
        weight, bias = fit_logistic(inputs[known], target[known], c, row_weights[known], max_iter)
        with torch.no_grad():
            head.weight.copy_(weight)
            head.bias.copy_(bias)


def hpa_training_proteins(config: LocalizerTrainConfig, train: list[CorpusProtein]) -> list[CorpusProtein]:
    """The human ``train`` proteins not labelled by OpenCell, relabelled from ``config.hpa_labels``."""
    from locscope.io.corpus import hpa_labelled, is_human

    path = Path(config.hpa_labels)
    path = path if path.is_absolute() else Path(config.shared_data) / path
    return hpa_labelled([p for p in train if p.source != "opencell" and is_human(p)], path,
                        tuple(config.hpa_reliabilities), config.hpa_main_only)


def _cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def train_localizer(run_dir: str | Path, config: LocalizerTrainConfig | None = None, resume: bool = False,
                    progress: bool = True) -> Path:
    """Train (or resume) a sequence localizer; returns ``run_dir / 'model'`` (the best validation epoch).

    Raises
    ------
    InputError
        ``resume=True`` without a checkpoint in ``run_dir``; without ``resume``, a ``run_dir`` that is not new or
        empty (:func:`locscope.utils.outputs.check_run_folder`).
    """
    run_dir = check_run_folder(run_dir, resume=resume, run_files=("train_config.json", "checkpoint"))
    checkpoint = run_dir / "checkpoint"
    if resume:
        if not (checkpoint / "state.json").is_file():
            raise InputError(f"{run_dir}: no checkpoint to resume (checkpoint/state.json missing)")
        from locscope.training.common import read_train_config

        config = read_train_config(run_dir / "train_config.json", LocalizerTrainConfig)
    else:
        config = config or LocalizerTrainConfig()
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "train_config.json", dataclasses.asdict(config))
    corpus = load_corpus(config.shared_data, seed=config.seed)
    model_config = LocalizerConfig(**config.model)
    first = model_config.label_styles[0]
    all_train = corpus.subset("train")[: config.max_train_proteins]
    train = [p for p in all_train if model_config.style_of(p.source) == first
             for _ in range(int(config.oversample.get(p.source, 1)))]
    all_val = corpus.subset("val")[: config.max_val_proteins]
    val = [p for p in all_val if model_config.style_of(p.source) == first]
    torch.manual_seed(config.seed)
    model = SequenceLocalizer(model_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    state = {"epoch": 0, "step": 0, "best_val": -1.0, "best_epoch": -1, "cpu_seconds": 0.0}
    if resume:
        model = SequenceLocalizer.from_pretrained(checkpoint)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        optimizer.load_state_dict(load_optimizer_state(checkpoint))
        state = json.loads((checkpoint / "state.json").read_text())
    targets = level_targets(train, model_config)
    lengths = np.array([min(len(p.sequence), model_config.max_length) for p in train])
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    for epoch in range(state["epoch"], config.epochs):
        model.train()
        torch.manual_seed(config.seed + epoch)  # dropout: the same on a resumed run
        started = time.process_time()
        batches = length_batches(lengths, config.batch_size, np.random.default_rng(config.seed + epoch))
        losses = []
        for batch in track(batches, f"epoch {epoch + 1}/{config.epochs}", enabled=progress):
            for group in optimizer.param_groups:
                group["lr"] = config.learning_rate * _cosine(state["step"], total_steps, config.warmup_steps)
            tokens = model.tokenize([train[i].sequence for i in batch])
            index = torch.from_numpy(batch)
            loss = localizer_loss(model(tokens), {k: (t[index], m[index]) for k, (t, m) in targets.items()},
                                  config.level_weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            check_finite_gradients(model.named_parameters(), state["step"] + 1, loss,
                                   finite_hint(config, "checkpoint/"), total_norm=norm)
            optimizer.step()
            losses.append(loss.item())
            state["step"] += 1
        scores = evaluate_split(model, val)
        state["cpu_seconds"] += time.process_time() - started
        state["epoch"] = epoch + 1
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "cpu_seconds": state["cpu_seconds"],
                  **{f"val_{k}": v for k, v in scores.items()}}
        meta = {"epoch": epoch + 1, "train_proteins": len(train), "val_level3_macro_ap": scores["level3_macro_ap"]}
        if scores["level3_macro_ap"] > state["best_val"]:
            state["best_val"], state["best_epoch"] = scores["level3_macro_ap"], epoch + 1
            _save_folder(run_dir / "model", lambda d: model.save_pretrained(d, extra=meta))
        _save_folder(checkpoint, lambda d: (model.save_pretrained(d, extra=meta),
                                            save_optimizer_state(d, optimizer.state_dict()),
                                            write_json(d / "state.json", state)))
        with open(run_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
    if len(model_config.label_styles) > 1 and not state.get("translated"):
        model = SequenceLocalizer.from_pretrained(run_dir / "model")
        started = time.process_time()
        extra = hpa_training_proteins(config, all_train) if config.hpa_labels else []
        for style in model_config.label_styles[1:]:
            own = [p for p in all_train if model_config.style_of(p.source) == style]
            added = extra if model_config.style_of("hpa") == style else []
            fit_translation_heads(model, own + added, style, config.translation_c,
                                  weights=[1.0] * len(own) + [config.hpa_weight] * len(added))
        scores = evaluate_split(model, all_val)
        state["cpu_seconds"] += time.process_time() - started
        state["translated"] = True
        meta = {"epoch": state["best_epoch"], "train_proteins": len(all_train), "val_level3_macro_ap": state["best_val"],
                **{f"val_{k}": v for k, v in scores.items() if k.endswith("level3_macro_ap")}}
        _save_folder(run_dir / "model", lambda d: model.save_pretrained(d, extra=meta))
        write_json(checkpoint / "state.json", state)
        with open(run_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps({"translation": list(model_config.label_styles[1:]),
                                     "cpu_seconds": state["cpu_seconds"],
                                     **{f"val_{k}": v for k, v in scores.items()}}) + "\n")
    return run_dir / "model"


def _save_folder(target: Path, write) -> None:
    """Write a folder next to ``target`` and swap it in atomically."""
    staging = target.with_name(target.name + ".tmp")
    if staging.exists():
        import shutil

        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    write(staging)
    replace_directory(staging, target)
