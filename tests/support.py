"""Helpers shared by tests in different folders (the tests/ root is on sys.path through conftest.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny convolutions: one thread avoids oversubscription on a busy machine (the result does not depend on it)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def check_resume_after_kill(script: str, tmp_path: Path, arguments: Callable[[Path, bool, int], list[str]],
                            timeout: float, **env: str) -> None:
    """Run the training ``script`` (its text) into ``tmp_path/straight``, and into ``tmp_path/killed`` killed by
    SIGKILL during step 3 (after the step-2 checkpoint) and resumed; the two runs' last checkpoints (online weights,
    optimizer, model) must be bit-identical. ``arguments(run_dir, resume, kill_at)`` are the script's arguments
    (``kill_at`` -1: never); ``env`` adds to the environment (``PYTHONPATH`` is this checkout's ``src``)."""
    path = tmp_path / "kill.py"
    path.write_text(script)
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **env}

    def launch(run: str, resume: bool, kill_at: int) -> int:
        result = subprocess.run([sys.executable, str(path), *arguments(tmp_path / run, resume, kill_at)],
                                env=environment, capture_output=True, timeout=timeout)
        assert result.returncode in (0, -9), result.stderr.decode()[-3000:]
        return result.returncode

    assert launch("straight", False, -1) == 0
    assert launch("killed", False, 3) == -9  # killed after the step-2 checkpoint, during step 3
    assert json.loads((tmp_path / "killed" / "checkpoints" / "last" / "state.json").read_text())["step"] == 2
    assert launch("killed", True, -1) == 0
    for name in ("online", "optimizer", "model"):
        a = load_file(str(tmp_path / "straight" / "checkpoints" / "last" / f"{name}.safetensors"))
        b = load_file(str(tmp_path / "killed" / "checkpoints" / "last" / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def tiny_esm2_config(max_positions: int = 64):
    """A tiny random ESM2 configuration (1 layer, width 16, ESM's 33-token alphabet, rotary positions)."""
    from transformers import EsmConfig

    return EsmConfig(vocab_size=33, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                     max_position_embeddings=max_positions, pad_token_id=1, mask_token_id=32,
                     position_embedding_type="rotary", token_dropout=False)


def save_tiny_esm2(directory: Path, max_positions: int = 64) -> Path:
    """Save a tiny random ESM2 model (:func:`tiny_esm2_config`, seeded) as a local checkpoint folder; returns it."""
    from transformers import EsmModel

    torch.manual_seed(0)
    EsmModel(tiny_esm2_config(max_positions), add_pooling_layer=False).save_pretrained(directory)
    return directory
