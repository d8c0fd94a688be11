"""CELL-E 2 training: both phases run, the learning-rate schedule, and an exact resume after a SIGKILL."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from safetensors.torch import load_file

from locscope.errors import InputError
from locscope.training.celle2_module import Celle2TrainConfig, learning_rate_at, train_celle2

ROOT = Path(__file__).resolve().parents[2]
TINY = {"image_size": 16, "vq_channel_mult": [1, 2], "vq_attn_resolutions": [8], "vq_latent_channels": 8,
        "vq_embed_dim": 8, "nucleus_codebook_size": 16, "protein_codebook_size": 16, "text_seq_len": 40,
        "text_encoder_layers": 1, "dim": 32, "depth": 1, "heads": 2, "dim_head": 12}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from test_celldiff_training import make_store

    return make_store(tmp_path_factory.mktemp("store") / "cells")


def config(**extra) -> Celle2TrainConfig:
    values = dict(model_overrides=TINY, batch_size=4, max_steps=4, tokenizer_steps=2, steps_per_epoch=2,
                  warmup_steps=1, log_every_steps=1, val_items=4, torch_threads=1)
    values.update(extra)
    return Celle2TrainConfig(**values)


def test_learning_rate_schedule_per_phase():
    cfg = Celle2TrainConfig(max_steps=1000, tokenizer_steps=400, warmup_steps=100, tokenizer_learning_rate=1e-3,
                            learning_rate=5e-4, final_lr_fraction=0.1)
    assert learning_rate_at(0, cfg) == pytest.approx(1e-5)
    assert learning_rate_at(99, cfg) == pytest.approx(1e-3)
    assert learning_rate_at(399, cfg) == pytest.approx(1e-4 + 0.9e-3 * 1 / 300)
    assert learning_rate_at(400, cfg) == pytest.approx(5e-6)
    assert learning_rate_at(999, cfg) == pytest.approx(5e-5 + 4.5e-4 * 1 / 500)


def test_phase_batch_sizes():
    import numpy as np
    import torch

    from locscope.training.celle2_module import Celle2Split, step_batch

    split = Celle2Split(torch.zeros(10, 1, 4, 4), torch.zeros(10, 1, 4, 4), [[1]] * 10, np.zeros(10, int),
                        [str(i) for i in range(10)])
    cfg = Celle2TrainConfig(batch_size=6, tokenizer_batch_size=3, tokenizer_steps=100, max_steps=200)
    assert len(step_batch(split, cfg, 99)[0]) == 3 and len(step_batch(split, cfg, 100)[0]) == 6
    assert step_batch(split, cfg, 5) == step_batch(split, cfg, 5)


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import lightning as L
    from locscope.training.celle2_module import Celle2TrainConfig, train_celle2
    from locscope.training.common import read_train_config

    class Kill(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, index):
            if module.step == 3:
                os.kill(os.getpid(), signal.SIGKILL)

    train_celle2(sys.argv[1], sys.argv[2], read_train_config(sys.argv[3], Celle2TrainConfig), progress=False,
                 callbacks=[Kill()])
""")


SUMMARY = {**TINY, "sequence_summary": True, "summary_fraction_classes": ["nucleoplasm", "cytosol", "mitochondria"]}


def test_two_phases_and_exact_resume_after_a_kill(store, tmp_path):
    """Under bf16 autocast, a smaller tokenizer batch and the sequence summary with its fraction head, as the bundled
    model was trained."""
    settings = dict(bf16=True, tokenizer_batch_size=2, model_overrides=SUMMARY)
    full = train_celle2(store, tmp_path / "full", config(**settings), progress=False)
    records = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert "rec_nucleus" in records[0] and "loss_image" in records[-2]  # tokenizers first, then the transformer
    assert records[-2]["loss_fractions"] > 0 and "val_loss_fractions" in records[-1]
    assert any("val_protein_pixel_agreement" in r for r in records) and "val_loss_image" in records[-1]
    # the same run killed (SIGKILL) during step 3, after the step-2 checkpoint, then resumed
    path = tmp_path / "train.json"
    path.write_text(json.dumps(dataclasses.asdict(config(**settings))))
    (tmp_path / "kill.py").write_text(KILL_SCRIPT)
    killed = subprocess.run([sys.executable, str(tmp_path / "kill.py"), str(store), str(tmp_path / "half"),
                             str(path)], env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                            capture_output=True, timeout=300)
    assert killed.returncode == -9, killed.stderr.decode()[-3000:]
    assert json.loads((tmp_path / "half" / "checkpoints" / "last" / "state.json").read_text())["step"] == 2
    assert not (tmp_path / "half" / "model").exists()
    resumed = train_celle2(store, tmp_path / "half", resume=True, progress=False)
    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    with pytest.raises(InputError, match="already holds a run"):
        train_celle2(store, tmp_path / "full", config(), progress=False)
    with pytest.raises(InputError, match="unknown level-1 classes nucleus"):
        train_celle2(store, tmp_path / "bad", config(model_overrides={**SUMMARY, "summary_fraction_classes": ["nucleus"]}),
                     progress=False)
    with pytest.raises(InputError, match="multiple of steps_per_epoch"):
        train_celle2(store, tmp_path / "odd", config(tokenizer_steps=3), progress=False)


def test_init_from_a_model_without_the_summary_keeps_its_weights(store, tmp_path):
    """A run with the sequence summary continues from a model without one: every tensor of that model is copied (the
    zero-initialised summary leaves its outputs unchanged at step 0), tokenizers untouched with tokenizer_steps 0."""
    import torch

    from locscope.models.celle2 import Celle2

    source = train_celle2(store, tmp_path / "plain", config(max_steps=2, tokenizer_steps=2), progress=False)
    run = tmp_path / "continued"
    out = train_celle2(store, run, config(model_overrides=SUMMARY, init_from=str(source), tokenizer_steps=0,
                                          max_steps=2), progress=False)
    before, after = Celle2.from_pretrained(source), Celle2.from_pretrained(out)
    a, b = before.state_dict(), after.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if "tokenizer." in k)
    assert not all(torch.equal(a[k], b[k]) for k in a if k.startswith("blocks."))  # the transformer trained on
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert first["copied_tensors"] == len(a) and all(k.startswith("summary.") for k in first["initialised_tensors"])
    with pytest.raises(InputError, match="does not fit the model"):
        train_celle2(store, tmp_path / "back", config(init_from=str(out), max_steps=2), progress=False)
