"""Lightning glue for the sequence designer (:mod:`locscope.models.designer`): simulator sequences made on the fly,
the masked-diffusion loss with motif span masking, validation by designing and reading the designs with the motif grammar, exact resume.

Data: every step draws ``batch_size`` proteins from the simulator's motif grammar
(:func:`locscope.synth.grammar.random_protein`, ``split='train'`` motif variants): a target localization uniform over
the grammar's targets, a length uniform in ``[min_length, max_length]``; the condition is the grammar's own call on the
written sequence (:func:`localize_sequence`, fractions over ``fraction_classes``). Batches are a pure function of
``(seed, step)``, so nothing is stored and a resumed run replays the same data.

Validation (each epoch end): the masked-residue loss on proteins with *held-out* motif variants, and design accuracy:
for every grammar target, ``val_designs_per_target`` all-mask sequences of ``val_length`` residues decoded with the
parallel decoder, read back with the grammar (the share whose call is the target).

Run directory::

    RUN_DIR/train_config.json        the DesignerTrainConfig used
    RUN_DIR/checkpoints/last/        model.safetensors + config.json, optimizer.safetensors + optimizer.json, state.json
    RUN_DIR/model/                   the final model (SequenceDesigner.from_pretrained)
    RUN_DIR/metrics.jsonl            one JSON line per log interval and per validation
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch

from locscope.diffusion.masked import mask_random_residues, masked_residue_loss
from locscope.encoders.protein import MASK_ID, tokenize
from locscope.errors import InputError
from locscope.models.designer import DesignerConfig, SequenceDesigner
from locscope.training.common import (
    append_metrics, end_step, fit_steps, initialise_from, learning_rate_at, learning_rate_schedule, model_config_from,
    open_run, prepare_run, save_final_model, step_generator, write_checkpoint,
)


@dataclass
class DesignerTrainConfig:
    """Training hyper-parameters (a YAML/JSON ``--config`` file holds any subset of these fields).

    ``model_overrides`` changes fields of :class:`DesignerConfig` (``width``, ``layers``, ...).
    ``condition_drop_probability`` is the share of rows trained unconditionally (classifier-free guidance).
    ``motif_span_probability`` is the share of rows whose inserted motifs are masked whole (span masking): the
    background residues carry no signal (drawn i.i.d. from human composition), so uniform masking alone spends most
    of the loss on noise and learns the motifs slowly. ``terminal_infill_probability`` is the share of rows that
    practise ``design``'s template infill (:func:`terminal_infill`): one signal moved to a terminus (where it is not
    already) and only the window around it masked, up to ``terminal_window_extra`` background residues beside it, the
    rest of the protein visible. ``init_from`` (a model directory, e.g. the bundled ``designer-tiny``) starts a new
    run from those weights.
    """

    model_overrides: dict = dataclasses.field(default_factory=dict)
    batch_size: int = 64
    min_length: int = 80
    max_length: int = 320
    max_steps: int = 3000
    steps_per_epoch: int = 250
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    final_lr_fraction: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    condition_drop_probability: float = 0.1
    motif_span_probability: float = 0.5
    terminal_infill_probability: float = 0.0
    terminal_window_extra: int = 6
    init_from: str | None = None
    seed: int = 0
    log_every_steps: int = 50
    val_proteins: int = 128
    val_designs_per_target: int = 2
    val_length: int = 120
    accelerator: str = "auto"
    devices: int = 1
    torch_threads: int | None = None
    max_minutes: float | None = None

    def model_config(self) -> DesignerConfig:
        return model_config_from(DesignerConfig, self.model_overrides)


def simulated_proteins(n: int, rng: np.random.Generator, min_length: int, max_length: int,
                       split: str = "train") -> tuple[list[str], list[list[tuple[str, int, int]]]]:
    """``n`` grammar proteins with uniformly drawn targets and lengths (a length too short for a target's motifs is
    redrawn longer), and the motifs inserted in each (``(name, start, end)``)."""
    from locscope.synth.grammar import grammar_targets, random_protein

    targets = grammar_targets()
    sequences, motifs = [], []
    for _ in range(n):
        target = targets[int(rng.integers(len(targets)))]
        length = int(rng.integers(min_length, max_length + 1))
        for _attempt in range(8):
            try:
                sequence, inserted = random_protein(target, rng, length=length, split=split)
                sequences.append(sequence)
                motifs.append(inserted)
                break
            except InputError:  # the target's motifs need more room
                length += 40
    return sequences, motifs


#: Motifs the grammar reads anywhere in a soluble protein (``synth.grammar``'s "any" rows without membrane ones).
MOVABLE_MOTIFS = frozenset({"nls", "nls-bipartite", "nes", "nols", "gar", "rs-domain", "sim", "sxip", "tau-repeat",
                            "if-motif", "pact"})


def terminal_infill(sequence: str, motifs: list[tuple[str, int, int]], rng: np.random.Generator,
                    extra: int) -> tuple[str, int, int] | None:
    """A protein for template infill: its signal at a terminus and the window ``[start, end)`` to mask over it.

    A motif starting within the first two residues (presequence, signal peptide, myristoylation) gets an N-terminal
    window from residue 1 (the initiator methionine stays); else one ending at the C-terminus (KDEL, PTS1, CAAX, ...)
    a C-terminal window; else the first soluble motif that may sit anywhere (:data:`MOVABLE_MOTIFS`: NLS, NES, NoLS,
    ...) is moved to the C-terminus. The window spans the motif plus ``U{0..extra}`` background residues on its inner
    side. Returns None when no motif qualifies (e.g. a transmembrane helix alone: moved to a terminus it would make
    another protein).
    """
    n = len(sequence)
    inner = int(rng.integers(0, extra + 1))
    first = min(motifs, key=lambda m: m[1])
    if first[1] <= 1:
        return sequence, 1, min(n, first[2] + inner)
    last = max(motifs, key=lambda m: m[2])
    if last[2] == n:
        return sequence, max(1, last[1] - inner), n
    movable = [m for m in sorted(motifs, key=lambda m: m[1]) if m[0] in MOVABLE_MOTIFS]
    if not movable:
        return None
    _, start, end = movable[0]
    moved = sequence[:start] + sequence[end:] + sequence[start:end]
    return moved, max(1, n - (end - start) - inner), n


def motif_mask(motifs: list[list[tuple[str, int, int]]], width: int) -> torch.Tensor:
    """``(N, width)`` bool: the residues of the inserted motifs."""
    mask = torch.zeros(len(motifs), width, dtype=torch.bool)
    for row, spans in enumerate(motifs):
        for _, start, end in spans:
            mask[row, start:end] = True
    return mask


def grammar_fractions(sequences: list[str], classes: tuple[str, ...]) -> torch.Tensor:
    """The grammar's compartment distribution of each sequence over ``classes``: ``(N, len(classes))`` float32."""
    from locscope.synth.grammar import localize_sequence

    index = {name: i for i, name in enumerate(classes)}
    fractions = torch.zeros(len(sequences), len(classes))
    for row, sequence in enumerate(sequences):
        for name, share in localize_sequence(sequence).compartments.items():
            if name in index:
                fractions[row, index[name]] = share
    return fractions


class StepBatches(torch.utils.data.Dataset):
    """Item ``i`` is the whole batch of training step ``first_step + i``: ``(tokens, lengths, fractions, motifs)``."""

    def __init__(self, config: DesignerTrainConfig, classes: tuple[str, ...], first_step: int, steps: int) -> None:
        self.config, self.classes, self.first_step, self.steps = config, classes, first_step, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int):
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, self.first_step + index])
        sequences, motifs = simulated_proteins(cfg.batch_size, rng, cfg.min_length, cfg.max_length)
        windows = []
        if cfg.terminal_infill_probability > 0:  # no extra draw otherwise: earlier runs replay unchanged
            for row, practise in enumerate(rng.random(len(sequences)) < cfg.terminal_infill_probability):
                infill = terminal_infill(sequences[row], motifs[row], rng, cfg.terminal_window_extra) \
                    if practise and motifs[row] else None
                if infill is not None:
                    sequences[row], start, end = infill
                    windows.append((row, start, end))
        tokens, lengths = tokenize(sequences)
        infill = torch.zeros(tokens.shape, dtype=torch.bool)
        for row, start, end in windows:
            infill[row, start:end] = True
        return (tokens, lengths, grammar_fractions(sequences, self.classes), motif_mask(motifs, tokens.shape[1]),
                infill)


def design_accuracy(model: SequenceDesigner, per_target: int, length: int, seed: int = 0,
                    passes: int = 16) -> dict[str, float]:
    """Share of all-mask designs (parallel decoder) whose grammar call is the target they were conditioned on, over
    every grammar target; ``{"design_right": ..., "n": ...}``."""
    from locscope.diffusion.masked_decoding import decode_parallel
    from locscope.encoders.protein import decode_tokens
    from locscope.models.designer import designer_logits_fn
    from locscope.synth.grammar import grammar_targets, localize_sequence

    classes = model.config.fraction_classes
    targets = [t for t in grammar_targets() if set(t) <= set(classes)]
    rows = [t for t in targets for _ in range(per_target)]
    fractions = torch.zeros(len(rows), len(classes))
    for i, target in enumerate(rows):
        for name in target:
            fractions[i, classes.index(name)] = 1.0 / len(target)
    device = next(model.parameters()).device
    tokens = torch.full((len(rows), length), MASK_ID, dtype=torch.long, device=device)
    result = decode_parallel(designer_logits_fn(model, fractions.to(device)), tokens, MASK_ID, passes=passes,
                             generator=torch.Generator(device=device).manual_seed(seed))
    right = [tuple(sorted(localize_sequence(decode_tokens(row)).compartments)) == tuple(sorted(target))
             for row, target in zip(result.tokens.cpu(), rows)]
    return {"design_right": float(np.mean(right)), "n": len(rows)}


class DesignerModule(L.LightningModule):
    """The training system around a :class:`SequenceDesigner`."""

    def __init__(self, model_config: DesignerConfig, train_config: DesignerTrainConfig, run_dir: str | Path,
                 step_offset: int = 0) -> None:
        super().__init__()
        self.model_config, self.train_config = model_config, train_config
        self.model = SequenceDesigner(model_config)
        self.run_dir = Path(run_dir)
        self.step_offset = step_offset
        self._optimizer_state: dict | None = None
        self._loss_sum, self._last_log = 0.0, time.time()
        rng = np.random.default_rng([train_config.seed, 2**31 - 1])  # a fixed validation set, never a training step
        val, motifs = simulated_proteins(train_config.val_proteins, rng, train_config.min_length,
                                         train_config.max_length, split="heldout")
        tokens, lengths = tokenize(val)
        self._val = (tokens, lengths, grammar_fractions(val, model_config.fraction_classes),
                     motif_mask(motifs, tokens.shape[1]), torch.zeros(tokens.shape, dtype=torch.bool))

    @property
    def step(self) -> int:
        return self.step_offset + self.global_step

    def configure_optimizers(self):
        decay = [p for n, p in self.model.named_parameters() if p.ndim >= 2 and "embed" not in n]
        no_decay = [p for n, p in self.model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": self.train_config.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}],
                                      lr=self.train_config.learning_rate)
        if self._optimizer_state is not None:
            optimizer.load_state_dict(self._optimizer_state)
        return {"optimizer": optimizer, "lr_scheduler": learning_rate_schedule(optimizer, self.train_config, self.step)}

    def loss(self, tokens: torch.Tensor, lengths: torch.Tensor, fractions: torch.Tensor, motifs: torch.Tensor,
             infill: torch.Tensor, generator: torch.Generator, drop_probability: float,
             span_probability: float) -> torch.Tensor:
        """Mean masked-residue loss of one batch (every random draw from ``generator``, CPU): ``k ~ U{1..L}`` random
        residues masked, plus, on ``span_probability`` of the rows, every motif residue (span masking); rows with an
        ``infill`` window mask that window alone (:func:`terminal_infill`)."""
        _, masked, _ = mask_random_residues(tokens.cpu(), lengths.cpu(), MASK_ID, generator)
        spans = torch.rand(len(tokens), generator=generator) < span_probability
        masked = masked | (motifs.cpu() & spans[:, None])
        infill = infill.cpu()
        masked = torch.where(infill.any(1, keepdim=True), infill, masked)
        drop = torch.rand(len(tokens), generator=generator) < drop_probability
        logits = self.model(tokens.cpu().masked_fill(masked, MASK_ID).to(self.device), fractions.to(self.device),
                            drop.to(self.device))
        k = masked.sum(1).float()  # mean cross-entropy over each row's masked residues
        return masked_residue_loss(logits, tokens.to(self.device), masked.to(self.device), k.to(self.device)).mean()

    def training_step(self, batch, batch_idx):
        tokens, lengths, fractions, motifs, infill = (t[0] for t in batch)  # the DataLoader adds a batch axis of 1
        cfg = self.train_config
        loss = self.loss(tokens, lengths, fractions, motifs, infill, step_generator(cfg.seed, self.step, 0),
                         cfg.condition_drop_probability, cfg.motif_span_probability)
        self._loss_sum += float(loss.detach())
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        lr = learning_rate_at(self.step - 1, self.train_config)
        if end_step(self, lr, {"loss": self._loss_sum}, "proteins_per_s"):
            self._loss_sum = 0.0

    @torch.no_grad()
    def validate(self) -> dict:
        """Held-out-variant loss and grammar design accuracy of the current weights (logged)."""
        cfg = self.train_config
        self.model.eval()
        loss = float(self.loss(*self._val, torch.Generator().manual_seed(cfg.seed), 0.0, 0.0))
        accuracy = design_accuracy(self.model, cfg.val_designs_per_target, cfg.val_length, seed=cfg.seed)
        self.model.train()
        record = {"step": self.step, "val_loss_heldout_variants": loss, "val_design_right": accuracy["design_right"],
                  "val_designs": accuracy["n"]}
        self._append_metrics(record)
        return record

    def _append_metrics(self, record: dict) -> None:
        append_metrics(self.run_dir, record)

    def save_checkpoint(self, directory: Path) -> None:
        """Atomically write weights, optimizer state and the step."""
        write_checkpoint(directory, self.model, self.optimizers().optimizer.state_dict(), {"step": self.step})

    def load_checkpoint(self, directory: Path) -> int:
        """Restore weights (strictly) and optimizer state; returns the step."""
        from locscope.utils.checkpoint import load_optimizer_state, load_weights_into

        load_weights_into(self.model, directory)
        self._optimizer_state = load_optimizer_state(directory)
        return int(json.loads((directory / "state.json").read_text())["step"])


def train_designer(run_dir: str | Path, config: DesignerTrainConfig | None = None, resume: bool = False,
                   progress: bool = True) -> Path:
    """Train the sequence designer on simulator proteins; returns ``RUN_DIR/model``.

    Parameters
    ----------
    run_dir : path
        Output directory (layout in the module docstring).
    config : DesignerTrainConfig, optional
        Hyper-parameters (defaults if omitted). With ``resume`` the run's saved config is used.
    resume : bool
        Continue from ``RUN_DIR/checkpoints/last`` (same batches, learning rates and optimizer state as an
        uninterrupted run).

    Raises
    ------
    InputError
        ``resume`` without a checkpoint; a run directory that already holds a run without ``resume``; ``max_steps``
        not a multiple of ``steps_per_epoch``.
    """
    run_dir, last, config = open_run(run_dir, resume, config, DesignerTrainConfig)
    model_config = config.model_config()
    prepare_run(run_dir, config, resume)
    module = DesignerModule(model_config, config, run_dir)
    if config.init_from and not resume:
        copied, initialised = initialise_from(module.model, config.init_from)
        append_metrics(run_dir, {"init_from": config.init_from, "copied_tensors": len(copied),
                                 "initialised_tensors": initialised})
    fit_steps(module, config, last, run_dir, resume, progress,
              lambda step, remaining: StepBatches(config, model_config.fraction_classes, step, remaining))
    return save_final_model(module.model, run_dir, module.step, config)
