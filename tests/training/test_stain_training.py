"""Virtual-staining training: simulator batches, both losses, exact resume after a kill, the CLI."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch

from locscope.channels import CELL_PAINTING
from locscope.errors import InputError
from locscope.models.stain import StainClassifier, StainUNet
from locscope.training.stain_module import StainTrainConfig, simulated_batch, train_stain

from support import _one_thread  # noqa: F401  (autouse: one torch thread for these tiny networks)
from support import check_resume_after_kill

TINY = dict(image_size=16, batch_size=2, max_steps=4, steps_per_epoch=2, log_every_steps=1, val_images=2, val_steps=2,
            warmup_steps=2, model_overrides={"channel_multipliers": [1, 2], "attention_levels": [1],
                                             "num_train_timesteps": 50})


def test_simulated_batches_are_standardized_labelled_and_disjoint():
    from locscope.synth.config import PERTURBATIONS

    cond, target, labels = simulated_batch(16, 6, np.random.default_rng(0), PERTURBATIONS)
    assert cond.shape == (6, 1, 16, 16) and target.shape == (6, len(CELL_PAINTING), 16, 16)
    assert labels.dtype == torch.int64 and 0 <= int(labels.min()) and int(labels.max()) < len(PERTURBATIONS)
    assert target.abs().max() <= 15 and torch.allclose(target.mean(dim=(2, 3)), torch.zeros(6, 5), atol=1e-4)
    again = simulated_batch(16, 6, np.random.default_rng(0), PERTURBATIONS)
    assert torch.equal(again[1], target)
    held_out = simulated_batch(16, 6, np.random.default_rng(0), PERTURBATIONS, seed_parity=1)
    assert not torch.equal(held_out[1], target)  # same draws, other cells


def test_train_both_kinds_and_refuse_a_second_run(tmp_path):
    for kind, cls in (("denoiser", StainUNet), ("classifier", StainClassifier)):
        model_dir = train_stain(tmp_path / kind, StainTrainConfig(**TINY), kind=kind, progress=False)
        model = cls.from_pretrained(model_dir)
        assert model.config.classes[0] == "control"
        records = [json.loads(line) for line in (tmp_path / kind / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
        assert all(np.isfinite(r["val_loss"]) for r in records if "val_loss" in r)
    with pytest.raises(InputError, match="already holds a run"):
        train_stain(tmp_path / "denoiser", StainTrainConfig(**TINY), progress=False)
    with pytest.raises(InputError, match="nothing to resume"):
        train_stain(tmp_path / "none", resume=True, progress=False)


KILL_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    import lightning as L
    import torch
    torch.set_num_threads(1)
    from locscope.training.stain_module import StainTrainConfig, train_stain

    class Kill(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, index):
            if module.step == int(sys.argv[3]):
                os.kill(os.getpid(), signal.SIGKILL)

    resume = sys.argv[2] == "1"
    config = None if resume else StainTrainConfig(**json.loads(sys.argv[4]))
    train_stain(sys.argv[1], config, resume=resume, progress=False, callbacks=[Kill()])
""")


def test_killed_training_resumes_exactly(tmp_path):
    check_resume_after_kill(KILL_SCRIPT, tmp_path, lambda run, resume, kill_at: [
        str(run), "1" if resume else "0", str(kill_at), json.dumps(TINY)], timeout=400, OMP_NUM_THREADS="1")

    def losses(run: str) -> list[float]:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["loss"] for line in lines if "loss" in json.loads(line)]

    assert losses("straight") == losses("killed") and len(losses("straight")) == 4
