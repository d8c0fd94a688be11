"""Tiny randomly initialised CELL-Diff models shared by the design / localize / explain tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from locscope.models.celldiff import CellDiff, celldiff_tiny_config


def tiny_model(seed: int = 0) -> CellDiff:
    """A 16x16 CELL-Diff with a few thousand parameters (random weights, eval mode)."""
    torch.manual_seed(seed)
    config = celldiff_tiny_config(image_size=16, channels=(8, 8, 16, 16), transformer_width=32, transformer_layers=1,
                                  transformer_heads=2, attention_heads=2, sequence_dim=16, sequence_layers=1)
    return CellDiff(config).eval()


def tiny_model_dir(root: Path) -> Path:
    """Save :func:`tiny_model` to ``root / 'tiny'`` and return the directory (for ``--model``)."""
    directory = root / "tiny"
    if not (directory / "config.json").is_file():
        tiny_model().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_celldiff() -> CellDiff:
    return tiny_model()


def test_tiny_model_round_trips(tmp_path):
    from locscope.pipelines.generate import load_celldiff as load_model

    loaded = load_model(tiny_model_dir(tmp_path))
    original = tiny_model()
    for (name, a), (_, b) in zip(original.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def cli_run(args: list[str]) -> int:
    """Run the CLI like the console script (one-line user errors, exit code 2); return the exit code."""
    from locscope.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code or 0


def tiny_designer_dir(root: Path) -> Path:
    """A randomly initialised width-16 sequence designer saved to ``root / 'designer'`` (for ``--designer``)."""
    from locscope.models.designer import DesignerConfig, SequenceDesigner

    directory = root / "designer"
    if not (directory / "config.json").is_file():
        torch.manual_seed(0)
        SequenceDesigner(DesignerConfig(width=16, layers=1, heads=2, terminus_buckets=4)).save_pretrained(directory)
    return directory
