"""What every locscope training module shares: the warm-up + linear-decay learning rate (a ``LambdaLR`` that Lightning
steps), the per-step random generator that makes resumed runs exact, the metrics file kept in step with checkpoints,
the image augmentation and the per-sample Pearson correlation of validation gates. Training modules import these
from here, never from each other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from locscope.utils.atomic import write_text


def learning_rate_at(step: int, config: CellDiffTrainConfig) -> float:
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


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per sample between ``(B, ...)`` tensors -> ``(B,)``."""
    a = a.flatten(1).float() - a.flatten(1).float().mean(1, keepdim=True)
    b = b.flatten(1).float() - b.flatten(1).float().mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-8)


__all__ = ["augment", "learning_rate_at", "learning_rate_schedule", "pearson", "step_generator", "truncate_metrics"]
