"""CELL-E 2 training: both phases run, the learning-rate schedule, and an exact resume."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from locscope.errors import InputError
from locscope.training.celle2_module import Celle2TrainConfig, learning_rate_at, train_celle2

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


def test_two_phases_and_exact_resume(store, tmp_path):
    """Under bf16 autocast and a smaller tokenizer batch, as the bundled model was trained."""
    full = train_celle2(store, tmp_path / "full", config(bf16=True, tokenizer_batch_size=2), progress=False)
    records = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert "rec_nucleus" in records[0] and "loss_image" in records[-2]  # tokenizers first, then the transformer
    assert any("val_protein_pixel_agreement" in r for r in records) and "val_loss_image" in records[-1]
    half = train_celle2(store, tmp_path / "half", config(max_steps=2, bf16=True, tokenizer_batch_size=2),
                        progress=False)
    assert half.is_dir()
    state = json.loads((tmp_path / "half" / "train_config.json").read_text())
    state["max_steps"] = 4  # the run is continued to the full length, as if it had been killed at step 2
    (tmp_path / "half" / "train_config.json").write_text(json.dumps(state))
    resumed = train_celle2(store, tmp_path / "half", resume=True, progress=False)
    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    with pytest.raises(InputError, match="already holds a run"):
        train_celle2(store, tmp_path / "full", config(), progress=False)
    with pytest.raises(InputError, match="multiple of steps_per_epoch"):
        train_celle2(store, tmp_path / "odd", config(tokenizer_steps=3), progress=False)
