"""Latent diffusion training: both stages through the CLI, the measured latent scaling, exact resume (in process for
the autoencoder, after a SIGKILL for the denoiser) and the loss pieces."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from locscope.cli import main
from locscope.models.latent import LatentAutoencoder, LatentDiffusion
from locscope.training.latent_module import dihedral

from support import check_resume_after_kill
from test_celldiff_training import make_store

AE = {"image_size": 16, "block_channels": [8, 8, 8], "layers_per_block": 1, "norm_groups": 4}
DENOISER = {"block_channels": [8, 16], "attention_levels": [False, True], "norm_groups": 4, "cross_attention_dim": 16,
            "sequence_dim": 8, "sequence_layers": 1, "attention_head_dim": 8, "schedule_base": 4}


def run(args: list[str]) -> int:
    """The CLI's exit code."""
    try:
        main(args)
    except SystemExit as exit_:
        return exit_.code or 0
    return 0


def write_config(path: Path, overrides: dict, **extra) -> Path:
    config = {"model": "latent-tiny", "model_overrides": overrides, "batch_size": 4, "max_steps": 4,
              "steps_per_epoch": 2, "warmup_steps": 4, "val_items": 4, "log_every_steps": 1, "torch_threads": 1,
              **extra}
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("store") / "cells")


@pytest.fixture(scope="module")
def autoencoder_run(store, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ae")
    config = write_config(tmp / "ae.json", AE, discriminator_start=2, scaling_items=8)
    assert run(["train", "latent-autoencoder", "--data", str(store), "--config", str(config),
                 "--out", str(tmp / "run")]) == 0
    return tmp / "run"


def test_autoencoder_stage_measures_the_scaling_and_resumes_exactly(store, autoencoder_run, tmp_path):
    ae = LatentAutoencoder.from_pretrained(autoencoder_run / "model")
    assert ae.config.scaling_factor != 1.0 and ae.config.shift_factor != 0.0
    records = [json.loads(line) for line in (autoencoder_run / "metrics.jsonl").read_text().splitlines()]
    assert {"l1", "kl", "perceptual"} <= set(records[0]) and "discriminator" in records[-2]
    assert any("val_psnr" in r for r in records) and (autoencoder_run / "samples" / "step_000004.png").is_file()
    # stop after the first epoch, resume to the end: the same weights, discriminator and optimizer state
    config = write_config(tmp_path / "ae.json", AE, discriminator_start=2, scaling_items=8, max_steps=2)
    run(["train", "latent-autoencoder", "--data", str(store), "--config", str(config), "--out", str(tmp_path / "r")])
    saved = json.loads((tmp_path / "r" / "train_config.json").read_text())
    (tmp_path / "r" / "train_config.json").write_text(json.dumps({**saved, "max_steps": 4}))
    assert run(["train", "latent-autoencoder", "--data", str(store), "--out", str(tmp_path / "r"), "--resume"]) == 0
    for name in ("online", "model", "optimizer"):
        a = load_file(str(autoencoder_run / "checkpoints" / "last" / f"{name}.safetensors"))
        b = load_file(str(tmp_path / "r" / "checkpoints" / "last" / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    # a run directory is never silently reused
    assert run(["train", "latent-autoencoder", "--data", str(store), "--out", str(tmp_path / "r")]) == 2


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import lightning as L
    from locscope.training.common import read_train_config
    from locscope.training.latent_module import LatentTrainConfig, train_latent

    class Kill(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if module.step == int(sys.argv[5]):
                os.kill(os.getpid(), signal.SIGKILL)

    resume = sys.argv[4] == "1"
    config = None if resume else read_train_config(sys.argv[6], LatentTrainConfig)
    train_latent(sys.argv[1], sys.argv[2], sys.argv[3], config, resume=resume, progress=False, callbacks=[Kill()])
""")


def test_denoiser_stage_writes_a_model_and_resumes_exactly_after_a_kill(store, autoencoder_run, tmp_path):
    config = write_config(tmp_path / "train.json", DENOISER, val_steps=2)
    check_resume_after_kill(KILL_SCRIPT, tmp_path, lambda run, resume, kill_at: [
        str(store), str(autoencoder_run / "model"), str(run), "1" if resume else "0", str(kill_at), str(config)],
        timeout=600)
    model = LatentDiffusion.from_pretrained(tmp_path / "straight" / "model")
    assert model.config.latent_size == 4 and model.autoencoder.config.scaling_factor != 1.0
    records = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert {"image_loss", "compartment_loss", "fraction_loss"} <= set(records[0])
    assert any("val_pcc_true" in r for r in records)


def test_dihedral_covers_the_eight_symmetries():
    image = torch.arange(16.0).reshape(1, 4, 4)
    variants = {tuple(dihedral(image, d).flatten().tolist()) for d in range(8)}
    assert len(variants) == 8 and torch.equal(dihedral(image, 0), image)


def test_layout_prior_denoiser_trains_from_masks_and_starts_from_a_plain_run(tmp_path):
    """A layout-prior denoiser learns from the simulator's masks (re-rendered from the store's seeds) and the protein
    image at the latent grid; ``init_from`` a denoiser without the prior copies every tensor, widens the U-Net's
    input layer with zeros and so starts from the same predictions."""
    from locscope.data.ontology import SIMULATOR_COMPARTMENTS
    from locscope.models.latent import LatentAutoencoderConfig, LatentDenoiser
    from locscope.training.celldiff_data import build_training_store
    from locscope.training.celldiff_module import initialise_from

    build_training_store(tmp_path / "sim", None, image_size=16, n_synthetic=12, seed=3, progress=False)
    torch.manual_seed(0)
    LatentAutoencoder(LatentAutoencoderConfig(image_channels=("protein",), image_size=16, block_channels=(8, 8),
                                              layers_per_block=1, norm_groups=4, mid_attention=False)
                      ).save_pretrained(tmp_path / "ae")
    denoiser = {**DENOISER, "schedule_base": 8, "fraction_classes": list(SIMULATOR_COMPARTMENTS)}
    plain = write_config(tmp_path / "plain.json", denoiser, max_steps=2, val_steps=2)
    assert run(["train", "latent", "--data", str(tmp_path / "sim"), "--autoencoder", str(tmp_path / "ae"),
                "--config", str(plain), "--out", str(tmp_path / "plain")]) == 0
    layout = write_config(tmp_path / "layout.json", {**denoiser, "layout_prior": True, "layout_width": 4},
                          max_steps=2, val_steps=2, init_from=str(tmp_path / "plain" / "model"))
    assert run(["train", "latent", "--data", str(tmp_path / "sim"), "--autoencoder", str(tmp_path / "ae"),
                "--config", str(layout), "--out", str(tmp_path / "layout")]) == 0
    records = [json.loads(line) for line in (tmp_path / "layout" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["initialised_tensors"] and all(k.startswith("layout.") for k in records[0]["initialised_tensors"])
    trained = [r for r in records if "layout_loss" in r]
    assert trained and all(r["layout_loss"] > 0 and 0.05 < r["layout_mask_loss"] < 1.5 for r in trained)
    model = LatentDiffusion.from_pretrained(tmp_path / "layout" / "model")
    assert model.config.layout_prior and model.denoiser.unet.conv_in.weight.shape[1] == 4 + 3 + 1

    # the widened input layer: the copied network ignores the new channel, so its predictions are unchanged
    source = LatentDiffusion.from_pretrained(tmp_path / "plain" / "model").denoiser
    widened = LatentDenoiser(model.config)
    copied, kept = initialise_from(widened, tmp_path / "plain" / "model", widen=("unet.conv_in.weight",))
    assert "unet.conv_in.weight" in copied and kept and all(k.startswith("layout.") for k in kept)
    assert torch.equal(widened.unet.conv_in.weight[:, -1], torch.zeros_like(widened.unet.conv_in.weight[:, -1]))
    g = torch.Generator().manual_seed(0)
    distance, landmarks = torch.rand(2, 1, 16, 16, generator=g) * 2 - 1, torch.rand(2, 2, 16, 16, generator=g) * 2 - 1
    x, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([20, 80])
    tokens = source.tokenize(["MPKKKRKVEDAGLSWKL", "MLSRAVCGTSRQLAPVLGYLGSRQ"])[0]
    with torch.no_grad():
        before = source(x, t, source.spatial_conditions(distance, landmarks), source.encode_sequence(tokens))
        after = widened(x, t, widened.spatial_conditions(distance, landmarks), widened.encode_sequence(tokens))
    assert torch.allclose(before, after, atol=1e-5)


def test_autoencoder_stage_refuses_an_unknown_model_override_in_one_line(store, tmp_path, capsys):
    config = write_config(tmp_path / "ae.json", {"no_such_field": 1})
    assert run(["train", "latent-autoencoder", "--data", str(store), "--config", str(config),
                "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "model_overrides" in err and "no_such_field" in err and "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    assert not (tmp_path / "run" / "model").exists()
