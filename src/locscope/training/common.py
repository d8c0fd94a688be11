"""What every locscope training module shares: the warm-up + linear-decay learning rate (a ``LambdaLR`` that Lightning
steps), the per-step random generator that makes resumed runs exact, the metrics file kept in step with checkpoints,
the image augmentation, the per-sample Pearson correlation and the shuffled-sequence control of validation gates,
opening a run folder (fresh or resumed), restoring a step-driven module from its last checkpoint, the Lightning
trainer of step-driven runs, the EMA update, the metrics line of a log interval and the final model folder. Training
modules import these from here, never from each other.

A run folder holds ``train_config.json`` (the config used), ``checkpoints/last/`` (:func:`write_checkpoint`),
``metrics.jsonl`` (:func:`append_metrics`) and ``model/`` (the final model, :func:`save_final_model`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import lightning as L
import numpy as np
import torch

from locscope.errors import InputError, TrainingError
from locscope.utils.atomic import atomic_path, write_json, write_text
from locscope.utils.outputs import check_run_folder


def learning_rate_at(step: int, config: Any) -> float:
    """Linear warm-up 0 -> lr over ``warmup_steps``, then linear decay to ``final_lr_fraction * lr`` at ``max_steps``."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
    return config.learning_rate * (1.0 - (1.0 - config.final_lr_fraction) * min(1.0, progress))


def learning_rate_schedule(optimizer: torch.optim.Optimizer, config: Any, step_offset: int) -> dict:
    """A Lightning ``lr_scheduler`` entry stepping :func:`learning_rate_at` every optimizer step from ``step_offset``
    (the steps done before a resume). ``config`` has ``learning_rate``, ``warmup_steps``, ``max_steps`` and
    ``final_lr_fraction``; each group's base rate is set to ``config.learning_rate`` (a resumed optimizer state holds
    the last step's rate)."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] = config.learning_rate
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: learning_rate_at(step_offset + i, config) / config.learning_rate)
    return {"scheduler": scheduler, "interval": "step"}


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The generator for every random draw of one training step (a pure function of seed, step and rank)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7919 + rank * 104_729) % (2**63))


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after the checkpoint being resumed (they will be logged again)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
    write_text(path, "".join(line + "\n" for line in kept))


def append_metrics(run_dir: Path, record: dict) -> None:
    """Append ``record`` as one JSON line to ``run_dir/metrics.jsonl`` and print it (floats rounded to 5 digits)."""
    # not a Lightning logger (CSVLogger): resuming cuts this file back to the checkpoint's step (truncate_metrics), so a
    # killed-and-resumed run's log equals an uninterrupted one line for line, which the resume tests compare
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")
    print(json.dumps({k: (round(v, 5) if isinstance(v, float) else v) for k, v in record.items()}), flush=True)


def write_checkpoint(directory: Path, model: Any, optimizer_state: dict, state: dict,
                     online: dict[str, torch.Tensor] | None = None) -> None:
    """Atomically write a resumable checkpoint folder.

    Parameters
    ----------
    directory : path
        The folder (e.g. ``checkpoints/last``); replaced only once everything is written.
    model : module with ``save_pretrained(directory, extra=...)``
        The weights a user loads (the EMA model where the run keeps one); ``extra`` records the step (and epoch).
    optimizer_state : dict
        ``optimizer.state_dict()`` (tensors to safetensors, the rest to JSON: never pickled).
    state : dict
        JSON-able run state for ``state.json`` (``step``, and ``epoch`` where the run counts epochs, ...); the time
        is added.
    online : dict of str to torch.Tensor, optional
        The online (non-EMA) weights, written to ``online.safetensors``.
    """
    from safetensors.torch import save_file

    from locscope.utils.checkpoint import save_optimizer_state

    with atomic_path(directory) as tmp:
        tmp.mkdir(parents=True)
        model.save_pretrained(tmp, extra={k: state[k] for k in ("step", "epoch") if k in state})
        if online is not None:
            save_file(online, str(tmp / "online.safetensors"))
        save_optimizer_state(tmp, optimizer_state)
        write_json(tmp / "state.json", {**state, "time": time.time()})


def open_run(run_dir: str | Path, resume: bool, config: Any, config_class: type,
             step_fields: tuple[str, ...] = ("max_steps",), refuse_existing: bool = True) -> tuple[Path, Path, Any]:
    """Check a run folder and settle the run's config; returns ``(run_dir, checkpoints/last, config)``.

    With ``resume`` the folder's ``train_config.json`` is the config (and ``checkpoints/last/state.json`` must
    exist); otherwise ``config`` (``config_class()`` when None), and with ``refuse_existing`` an existing
    ``checkpoints/last`` is an error. Every field of ``step_fields`` must be a multiple of ``steps_per_epoch``.
    """
    run_dir = check_run_folder(run_dir, resume=resume, run_files=("train_config.json", "checkpoints"))
    last = run_dir / "checkpoints" / "last"
    if resume:
        if not (last / "state.json").is_file():
            raise InputError(f"{run_dir}: nothing to resume (no checkpoints/last/state.json)")
        config = config_class(**json.loads((run_dir / "train_config.json").read_text()))
    else:
        if refuse_existing and last.exists():
            raise InputError(f"{run_dir}: already holds a run; pass --resume to continue it or choose another --out")
        config = config or config_class()
    for name in step_fields:
        if getattr(config, name) % config.steps_per_epoch:
            raise InputError(f"train config: {name}={getattr(config, name)} must be a multiple of steps_per_epoch="
                             f"{config.steps_per_epoch} (checkpoints fall on epoch ends)")
    return run_dir, last, config


def restore_step(module: Any, last: Path, run_dir: Path, resume: bool) -> int:
    """The step a run starts from: 0, or with ``resume`` the step of ``last`` (loaded into ``module``, metric lines
    logged after it dropped). Sets ``module.step_offset``."""
    step = module.load_checkpoint(last) if resume else 0
    module.step_offset = step
    if resume:
        truncate_metrics(run_dir / "metrics.jsonl", step)
    return step


def restore_step_and_epoch(module: Any, last: Path, run_dir: Path, resume: bool) -> tuple[int, int]:
    """:func:`restore_step` for a module whose ``load_checkpoint`` returns the state dict (``step`` and ``epoch``):
    ``(0, 0)``, or with ``resume`` the step and epoch of ``last``. Sets ``module.step_offset`` and
    ``module.epoch_offset`` (resumes only)."""
    if not resume:
        return 0, 0
    state = module.load_checkpoint(last)
    step, epoch = state["step"], state["epoch"]
    module.step_offset, module.epoch_offset = step, epoch
    truncate_metrics(run_dir / "metrics.jsonl", step)
    return step, epoch


def prepare_run(run_dir: Path, config: Any, resume: bool) -> None:
    """Write ``train_config.json`` (fresh runs), apply ``config.torch_threads`` and seed torch with ``config.seed``
    for the initial weights (a resume overwrites them)."""
    if not resume:
        write_json(run_dir / "train_config.json", dataclasses.asdict(config))
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    torch.manual_seed(config.seed)


def model_config_from(factory: Callable[..., Any], overrides: dict, field: str = "model_overrides") -> Any:
    """``factory(**overrides)``; a value the model config refuses is an :class:`InputError` naming the train config
    ``field``."""
    try:
        return factory(**overrides)
    except (ValueError, TypeError) as err:
        raise InputError(f"train config: {field}: {err}") from None


def fit_steps(module: Any, config: Any, last: Path, run_dir: Path, resume: bool, progress: bool,
              batches: Callable[[int, int], Any], **options: Any) -> L.Trainer | None:
    """Restore ``module`` (:func:`restore_step`), then train the steps left to ``config.max_steps``; returns the
    trainer, or None when no step was left.

    ``batches(step, remaining)`` is the dataset whose item ``i`` is the whole batch of step ``step + i`` (the step
    drives the data); ``options`` go to :func:`step_trainer`.
    """
    step = restore_step(module, last, run_dir, resume)
    remaining = config.max_steps - step
    if remaining <= 0:
        return None
    loader = torch.utils.data.DataLoader(batches(step, remaining), batch_size=1, shuffle=False)
    trainer = step_trainer(config, remaining, progress, **options)
    trainer.fit(module, train_dataloaders=loader)
    return trainer


def save_final_model(model: Any, run_dir: Path, step: int, config: Any, **extra: Any) -> Path:
    """Save ``model`` as ``run_dir/model`` (``save_pretrained``), recording the step, ``extra`` and the train config;
    returns the folder."""
    model.save_pretrained(run_dir / "model", extra={"step": step, **extra, "train_config": dataclasses.asdict(config)})
    return run_dir / "model"


def update_ema(ema: dict[str, torch.Tensor], model: torch.nn.Module, max_decay: float, step: int) -> None:
    """One EMA step of ``model``'s whole state dict into ``ema`` with decay ``min(max_decay, (1 + step) / (10 + step))``
    (floating tensors averaged, the others copied)."""
    # diffusers' EMAModel decay schedule, kept by hand: EMAModel averages a parameter list, while this EMA is the whole
    # state dict (buffers too), stays sharded like the model under FSDP and is saved as a loadable model
    decay = min(max_decay, (1 + step) / (10 + step))
    with torch.no_grad():
        state = model.state_dict()
        floating = [name for name, value in state.items() if value.dtype.is_floating_point]
        averages = [ema[name] for name in floating]
        values = [state[name].detach().to(ema[name].device) for name in floating]
        if all(type(t) is torch.Tensor for t in averages + values):  # one fused kernel sweep (FSDP shards: per tensor)
            torch._foreach_lerp_(averages, values, 1 - decay)
        else:
            for average, value in zip(averages, values):
                average.lerp_(value, 1 - decay)
        for name, value in state.items():
            if not value.dtype.is_floating_point:
                ema[name].copy_(value)


def interval_record(step: int, lr: float, sums: dict[str, float], config: Any, since: float,
                    rate: str = "examples_per_s", world_size: int = 1, since_cpu: float | None = None) -> dict:
    """The metrics line of the log interval ending at ``step``: the learning rate ``lr``, each summed loss of ``sums``
    averaged over ``config.log_every_steps`` and the throughput ``rate`` (``batch_size`` x ``world_size`` items per
    step) since the time ``since``; with ``since_cpu`` (a ``time.process_time()``) also ``cpu_s_per_item``, this
    process's CPU seconds per item of its own batches (all its threads; unlike wall time, barely moved by other jobs
    on a shared machine)."""
    seconds = time.time() - since
    items = config.log_every_steps * config.batch_size
    record = {"step": step, "lr": lr, **{k: v / config.log_every_steps for k, v in sums.items()},
              rate: items * world_size / max(seconds, 1e-9)}
    if since_cpu is not None:
        record["cpu_s_per_item"] = (time.process_time() - since_cpu) / items
    return record


def end_step(module: Any, lr: float, sums: dict[str, float], rate: str = "examples_per_s",
             validate: bool = True) -> bool:
    """The end of one step of a step-driven module (it has ``train_config``, ``step``, ``run_dir``, ``_last_log``,
    ``_append_metrics``, ``validate`` and ``save_checkpoint``): every ``log_every_steps`` the interval's metrics line
    (:func:`interval_record`), every ``steps_per_epoch`` (where ``validate``) validation and ``checkpoints/last``.
    Returns True when it logged (the caller then restarts its sums)."""
    cfg, step = module.train_config, module.step
    logged = step % cfg.log_every_steps == 0
    if logged:
        module._append_metrics(interval_record(step, lr, sums, cfg, module._last_log, rate))
        module._last_log = time.time()
    if step % cfg.steps_per_epoch == 0 and validate:
        module.validate()
        module.save_checkpoint(module.run_dir / "checkpoints" / "last")
    return logged


def check_finite_gradients(named_parameters: Iterable[tuple[str, torch.nn.Parameter]], step: int,
                           loss: torch.Tensor | None = None, hint: str = "",
                           total_norm: torch.Tensor | None = None) -> None:
    """Stop a run whose loss or gradients are NaN or infinite, before the optimizer step that would write them into
    the weights (and from there into every later checkpoint).

    Parameters
    ----------
    named_parameters : iterable of (str, Parameter)
        The trained parameters, with their gradients of this step.
    step : int
        The step about to be taken (1-based), named in the message.
    loss : Tensor, optional
        This step's loss.
    hint : str
        What to change, appended to the message (:func:`finite_hint`).
    total_norm : Tensor, optional
        The gradients' total norm where the loop has it already (``clip_grad_norm_`` returns it); else computed here.

    Raises
    ------
    TrainingError
        Naming the step, the loss or the first parameter whose gradient is not finite, and ``hint``.
    """
    if loss is not None and not bool(torch.isfinite(loss.detach()).all()):
        raise TrainingError(f"step {step}: the training loss is {float(loss.detach().float().sum())}; the run stopped "
                            f"before updating the weights{hint}")
    named = [(name, p.grad) for name, p in named_parameters if p.grad is not None]
    if not named:
        return
    total = torch.nn.utils.get_total_norm([g for _, g in named]) if total_norm is None else total_norm
    total = total.full_tensor() if hasattr(total, "full_tensor") else total  # DTensor under FSDP
    if bool(torch.isfinite(total)):
        return
    bad = [name for name, g in named if not bool(torch.isfinite(g.full_tensor() if hasattr(g, "full_tensor")
                                                                else g).all())]
    raise TrainingError(f"step {step}: the gradients of {len(bad)} of {len(named)} parameter tensors are not finite "
                        f"(first: {bad[0] if bad else '?'}); the run stopped before updating the weights{hint}")


def finite_hint(config: Any, checkpoint: str = "checkpoints/last") -> str:
    """The advice :func:`check_finite_gradients` gives for a run of ``config``: the run folder's ``checkpoint`` and
    the settings to change (``compile``, ``bf16``, ``learning_rate``), those the config has."""
    advice = []
    if getattr(config, "compile", False):
        advice.append("compile: false (inductor's compiled backward gave NaN gradients under bf16 autocast on an "
                      "Intel Xeon with AMX)")
    if getattr(config, "bf16", False):
        advice.append("bf16: false")
    advice.append("a lower learning_rate")
    return f"; {checkpoint} keeps the last saved state: try {' or '.join(advice)}, then --resume"


class FiniteGuard(L.Callback):
    """:func:`check_finite_gradients` before every optimizer step of a Lightning run (after DDP's all-reduce, so
    every process stops at the same step)."""

    def __init__(self, hint: str = "") -> None:
        self.hint = hint

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        check_finite_gradients(pl_module.named_parameters(), trainer.global_step + 1, hint=self.hint)


def step_trainer(config: Any, remaining: int, progress: bool, **options: Any) -> L.Trainer:
    """A Lightning trainer for ``remaining`` steps of a run whose data and validation the module drives (no Lightning
    logger, checkpoints, sanity or validation loops; one device unless ``config.devices`` says otherwise); ``options``
    add to or replace these ``L.Trainer`` arguments. Every run stops at a step with non-finite gradients
    (:class:`FiniteGuard`, added to ``options``' callbacks)."""
    options["callbacks"] = [*(options.get("callbacks") or []), FiniteGuard(finite_hint(config))]
    settings = dict(max_steps=remaining, max_epochs=1, accelerator=config.accelerator,
                    devices=getattr(config, "devices", 1),
                    gradient_clip_val=config.grad_clip or None, logger=False, enable_checkpointing=False,
                    enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
                    limit_val_batches=0, use_distributed_sampler=False,
                    max_time={"minutes": config.max_minutes} if config.max_minutes else None)
    return L.Trainer(**{**settings, **options})


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 90-degree rotation and horizontal flip per sample, the same for all channels; ``(B, C, H, W)``."""
    batch = images.shape[0]
    rotations = torch.randint(0, 4, (batch,), generator=generator)
    flips = torch.rand(batch, generator=generator) < 0.5
    out = torch.empty_like(images)
    for i in range(batch):
        image = torch.rot90(images[i], int(rotations[i]), dims=(1, 2))
        out[i] = image.flip(-1) if flips[i] else image
    return out


def read_train_config(path: str | Path | None, config_class: type) -> Any:
    """Read a YAML or JSON training config (any subset of ``config_class``'s fields) into ``config_class``.

    ``path=None`` gives the defaults.

    Raises
    ------
    InputError
        A missing or unparsable file, unknown fields (named, with the accepted ones), or a value the config class
        refuses (its ``ValueError`` / ``TypeError``, after the file name).
    """
    import dataclasses

    if path is None:
        return config_class()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    import yaml

    try:
        payload = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not valid YAML/JSON ({str(err).splitlines()[0]})") from None
    if not isinstance(payload, dict):
        raise InputError(f"{path}: expected a mapping of training options")
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(payload) - known)
    if unknown:
        raise InputError(f"{path}: unknown training options: {', '.join(unknown)} (accepted: {', '.join(sorted(known))})")
    try:
        return config_class(**payload)
    except (ValueError, TypeError) as err:
        raise InputError(f"{path}: {err}") from None


def use_bf16(setting: bool | str, device: torch.device) -> bool:
    """Resolve a ``bf16`` training option: ``True`` / ``False``, or ``'auto'``: bf16 autocast where the device computes
    bf16 natively (CUDA with bf16 support; CPUs with AVX512-BF16 / AMX-BF16, :mod:`locscope.utils.cpu`), fp32 elsewhere
    (on AVX2-only CPUs bf16 is emulated and several times slower).

    Raises
    ------
    InputError
        For any other value.
    """
    if isinstance(setting, bool):
        return setting
    if setting != "auto":
        raise InputError(f"bf16={setting!r}: accepted values are true, false, auto")
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu" and _cpu_native_bf16()


@functools.lru_cache(maxsize=1)
def _cpu_native_bf16() -> bool:
    from locscope.utils.cpu import detect_cpu_capability

    return detect_cpu_capability().native_bf16


def derangement(n: int, seed: int) -> np.ndarray:
    """A random permutation of ``range(n)`` with no fixed point (n >= 2): the shuffled-sequence control."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    return np.roll(order, 1)[np.argsort(order)] if n > 1 else order


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per sample between ``(B, ...)`` tensors -> ``(B,)``."""
    a = a.flatten(1).float() - a.flatten(1).float().mean(1, keepdim=True)
    b = b.flatten(1).float() - b.flatten(1).float().mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-8)


def initialise_from(model: torch.nn.Module, directory: str | Path, widen: tuple[str, ...] = ()
                    ) -> tuple[list[str], list[str]]:
    """Copy every tensor of the model in ``directory`` whose name and shape match into ``model``.

    Returns the copied names and the names of ``model``'s tensors left at their initialisation. A tensor of the
    source that ``model`` lacks, or one with another shape, is an error (a different architecture, not a new head),
    except the convolution weights named in ``widen`` when ``model``'s has more input channels: the source fills the
    leading ones and the new ones start at zero (a new input channel the copied network ignores at first).

    Raises
    ------
    InputError
        If ``directory`` holds no loadable weights, or names / shapes conflict.
    """
    from locscope.utils.checkpoint import WEIGHTS_NAME, read_torch_weights

    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise InputError(f"init_from: {path}: file not found")
    source = read_torch_weights(path)
    target = model.state_dict()
    for name in widen:
        old, new = source.get(name), target.get(name)
        if old is not None and new is not None and old.ndim == new.ndim == 4 and old.shape[1] < new.shape[1] \
                and (old.shape[0], *old.shape[2:]) == (new.shape[0], *new.shape[2:]):
            source[name] = torch.cat([old.to(new.dtype), new.new_zeros(new.shape[0], new.shape[1] - old.shape[1],
                                                                       *new.shape[2:])], 1)
    unexpected = sorted(k for k in source if k not in target)
    misshaped = sorted(k for k in source if k in target and tuple(source[k].shape) != tuple(target[k].shape))
    if unexpected or misshaped:
        raise InputError(f"init_from: {directory}: does not fit the model (unexpected: {', '.join(unexpected) or '-'}; "
                         f"other shapes: {', '.join(misshaped) or '-'})")
    model.load_state_dict({**target, **source}, strict=True)
    return sorted(source), sorted(k for k in target if k not in source)


__all__ = ["FiniteGuard", "append_metrics", "augment", "check_finite_gradients", "derangement", "end_step",
           "finite_hint", "fit_steps", "initialise_from", "interval_record", "learning_rate_at", "learning_rate_schedule",
           "model_config_from", "open_run", "pearson", "prepare_run", "read_train_config", "restore_step",
           "restore_step_and_epoch", "save_final_model", "step_generator",
           "step_trainer", "truncate_metrics", "update_ema", "use_bf16", "write_checkpoint"]
