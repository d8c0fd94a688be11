"""Released CELL-Diff checkpoint sets: the per-channel VAE, the released DDIM and end-to-end generation, exact against
the published code's run (``../shared/golden/celldiff_v2_pipeline_tiny``)."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch

from locscope.diffusion.published_ddim import (
    SpacedSchedule,
    dpm_solver_sample,
    published_ddim_sample,
    space_timesteps,
)
from locscope.errors import CheckpointError, InputError
from locscope.models.celldiff_v2 import (
    load_published_vae,
    load_released_checkpoint_set,
    read_published_state_dict,
)

SEQUENCE = "MSPKKKRKVEDPGSLEHWC"
LANDMARK_FILES = {"nucleus": "nucleus", "er": "ER", "microtubules": "microtubule"}


@pytest.fixture(scope="module")
def golden():
    from conftest import SHARED, _require

    _require(SHARED / "golden" / "celldiff_v2_tiny")
    return _require(SHARED / "golden" / "celldiff_v2_pipeline_tiny")


def load(golden, name):
    return np.load(golden / name)


@pytest.fixture(scope="module")
def checkpoint_set(golden, tmp_path_factory):
    """The documented released layout: config.json + denoiser .bin + VAE .bin in one folder."""
    folder = tmp_path_factory.mktemp("released")
    shutil.copy(golden / "config.json", folder / "config.json")
    shutil.copy(golden / "vae_tiny.bin", folder / "vae_tiny.bin")
    shutil.copy(golden.parent / "celldiff_v2_tiny" / "cell_diff_tiny.bin", folder / "cell_diff_tiny.bin")
    return folder


@pytest.fixture(scope="module")
def landmark_folder(golden, tmp_path_factory):
    """The published example PNGs (64 x 64, HPA display colours) as a CELL-Diff sample folder."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("landmarks")
    for name in LANDMARK_FILES.values():
        Image.fromarray(load(golden, f"input_{name}_rgb_uint8.npy")).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def released(checkpoint_set):
    return load_released_checkpoint_set(checkpoint_set)


# ---------------------------------------------------------------------------------------------------------------------
# VAE
# ---------------------------------------------------------------------------------------------------------------------


def test_vae_encodes_and_decodes_as_published(golden, released):
    vae = released.vae
    assert sum(p.numel() for p in vae.parameters()) == 731589
    nucleus = torch.from_numpy(load(golden, "input_nucleus_img.npy"))
    with torch.no_grad():
        mean, std = vae.encode(nucleus)
        decoded = vae.decode(mean)
        batch_mean, _ = vae.encode(torch.from_numpy(load(golden, "vae_input_batch3.npy")))
        batch_decoded = vae.decode(batch_mean)
    np.testing.assert_allclose(mean.numpy(), load(golden, "vae_expected_latent_mean.npy"), rtol=0, atol=1e-5)
    np.testing.assert_allclose(std.numpy(), load(golden, "vae_expected_latent_std.npy"), rtol=0, atol=1e-5)
    np.testing.assert_allclose(decoded.numpy(), load(golden, "vae_expected_decoded_from_mean.npy"), rtol=0, atol=5e-5)
    np.testing.assert_allclose(batch_mean.numpy(), load(golden, "vae_expected_batch3_latent_mean.npy"), atol=1e-5)
    np.testing.assert_allclose(batch_decoded.numpy(), load(golden, "vae_expected_batch3_decoded_from_mean.npy"),
                               rtol=0, atol=5e-5)


def test_landmark_latents_are_sampled_with_the_recorded_draws(golden, released):
    eps = torch.from_numpy(load(golden, "input_cell_latent_eps.npy"))
    with torch.no_grad():
        latents = {key: released.vae.sample_latent(torch.from_numpy(load(golden, f"input_{name}_img.npy")),
                                                   eps[:, 4 * i:4 * i + 4])
                   for i, (key, name) in enumerate(LANDMARK_FILES.items())}
    cell = released.model.cell_latent(latents)
    np.testing.assert_allclose(cell.numpy(), load(golden, "expected_cell_latent.npy"), rtol=0, atol=1e-5)


def test_vae_loading_is_strict_and_accepts_the_published_wrappers(golden, tmp_path):
    state = torch.load(golden / "vae_tiny.bin", map_location="cpu", weights_only=True)
    config = json.loads((golden / "config.json").read_text())
    torch.save({"model": state}, tmp_path / "wrapped.bin")
    assert len(load_published_vae(tmp_path / "wrapped.bin", config).state_dict()) == 152
    renamed = {k.replace("vae.", "", 1): v for k, v in state.items()}  # the published loader would keep a random VAE
    torch.save(renamed, tmp_path / "renamed.bin")
    with pytest.raises(CheckpointError, match=r"renamed\.bin does not match the model: missing keys: vae\.decoder"):
        load_published_vae(tmp_path / "renamed.bin", config)
    with pytest.raises(CheckpointError, match=r"misshaped keys: .*vae\.encoder\.conv_in\.weight \(32, 1, 3, 3\) vs "
                                              r"model \(64, 1, 3, 3\)"):
        load_published_vae(golden / "vae_tiny.bin", {**config, "vae_block_out_channels": [64, 64, 64]})


# ---------------------------------------------------------------------------------------------------------------------
# The released DDIM
# ---------------------------------------------------------------------------------------------------------------------


def test_respacing_and_spaced_process_match_published(golden):
    assert space_timesteps(200, "ddim10") == load(golden, "ddim10_timestep_map.npy").tolist()
    assert space_timesteps(200, "ddim100") == load(golden, "ddim100_timestep_map.npy").tolist()
    assert space_timesteps(200, "ddim100")[-1] == 198
    schedule = SpacedSchedule.from_published(200, "squaredcos_cap_v2", "ddim10")
    for name in ("alphas_cumprod", "alphas_cumprod_prev", "betas"):
        np.testing.assert_allclose(getattr(schedule, name), load(golden, f"ddim10_{name}.npy"), rtol=1e-12, atol=0)
    assert space_timesteps(10, "5,5") == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] and space_timesteps(10, "2,1") == [0, 4, 5]
    with pytest.raises(ValueError, match="respacing='ddim150': no integer stride gives exactly 150 of 200 steps"):
        space_timesteps(200, "ddim150")


def test_ddim_update_replays_the_recorded_steps(golden):
    """The update arithmetic alone: fed the recorded network outputs, every step matches the published one."""
    recorded = torch.from_numpy(load(golden, "steps_eps.npy"))
    schedule = SpacedSchedule.from_published(200, "squaredcos_cap_v2", "ddim10")
    calls, steps = [], []

    def eps_fn(x, model_time, sqrt_one_minus):
        calls.append(int(model_time[0]))
        np.testing.assert_allclose(sqrt_one_minus[0, 0, 0, 0].item(),
                                   load(golden, "steps_sqrt_one_minus_alphas_cumprod.npy")[len(calls) - 1, 0],
                                   rtol=1e-6)
        return recorded[len(calls) - 1]

    final = published_ddim_sample(eps_fn, torch.from_numpy(load(golden, "input_initial_noise.npy")), schedule,
                                  on_step=steps.append)
    assert calls == load(golden, "steps_model_time.npy").tolist() == list(range(180, -1, -20))
    assert [s["index"] for s in steps] == load(golden, "steps_index.npy").tolist()
    for name, file in (("x_t", "steps_x_t"), ("pred_xstart", "steps_pred_xstart"), ("sample", "steps_sample")):
        np.testing.assert_allclose(torch.stack([s[name] for s in steps]).numpy(), load(golden, f"{file}.npy"),
                                   rtol=0, atol=1e-5)
    np.testing.assert_allclose(final.numpy(), load(golden, "expected_final_latent.npy"), rtol=0, atol=1e-5)


def test_sampling_with_the_network_matches_the_published_run_and_embeds_once(golden, released):
    from locscope.pipelines.generate_released import released_eps_fn

    model = released.model
    cell = torch.from_numpy(load(golden, "expected_cell_latent.npy"))
    tokens = torch.from_numpy(load(golden, "input_tokens.npy"))
    noise = torch.from_numpy(load(golden, "input_initial_noise.npy"))
    schedule = SpacedSchedule.from_published(200, "squaredcos_cap_v2", released.respacing)
    esm_calls = []
    hook = model.net.protein_sequence_embedding.model.register_forward_hook(lambda *_: esm_calls.append(1))
    try:
        with torch.no_grad():
            steps = []
            per_step = published_ddim_sample(released_eps_fn(released, cell, tokens, None), noise, schedule,
                                             on_step=steps.append)
            assert len(esm_calls) == 10  # the released sampler: ESM2 at every step
            embeds = model.net.embed_sequence(tokens)
            once = published_ddim_sample(released_eps_fn(released, cell, tokens, embeds), noise, schedule)
    finally:
        hook.remove()
    assert len(esm_calls) == 11  # locscope: once per sequence
    assert torch.equal(once, per_step)
    np.testing.assert_allclose(torch.stack([s["eps"] for s in steps]).numpy(), load(golden, "steps_eps.npy"),
                               rtol=0, atol=1e-5)
    np.testing.assert_allclose(once.numpy(), load(golden, "expected_final_latent.npy"), rtol=0, atol=1e-5)


def test_dpm_solver_approaches_the_released_ddim(golden, released):
    """DPM-Solver++ from the released DDIM's first timestep solves the same ODE: more steps, closer to DDIM-10."""
    from locscope.pipelines.generate_released import released_eps_fn

    cell = torch.from_numpy(load(golden, "expected_cell_latent.npy"))
    tokens = torch.from_numpy(load(golden, "input_tokens.npy"))
    noise = torch.from_numpy(load(golden, "input_initial_noise.npy"))
    eps_fn = released_eps_fn(released, cell, tokens, released.model.net.embed_sequence(tokens))
    reference = torch.from_numpy(load(golden, "expected_final_latent.npy"))
    errors = [float((dpm_solver_sample(eps_fn, noise, 200, "squaredcos_cap_v2", n, start_timestep=180)
                     - reference).abs().max()) for n in (2, 5)]
    assert errors[1] < errors[0]
    with pytest.raises(ValueError, match="start_timestep=200: must be in"):
        dpm_solver_sample(eps_fn, noise, 200, "squaredcos_cap_v2", 5, start_timestep=200)


# ---------------------------------------------------------------------------------------------------------------------
# End to end and the checkpoint-set folder
# ---------------------------------------------------------------------------------------------------------------------


def test_generate_reproduces_the_published_run_from_its_pngs(golden, checkpoint_set, landmark_folder, tmp_path,
                                                             capsys):
    """``locscope generate --model DIR`` with seed 6 makes the released script's draws: same image, same PNG."""
    import tifffile
    from PIL import Image

    from locscope.cli import main

    with pytest.raises(SystemExit) as info:
        main(["generate", "--model", str(checkpoint_set), "--sequence", SEQUENCE, "--landmarks", str(landmark_folder),
              "--out", str(tmp_path / "out"), "--seed", "6"])
    assert info.value.code in (0, None)
    assert "1 image(s)" in capsys.readouterr().out
    raw = tifffile.imread(tmp_path / "out" / "sequence" / "sample_0_raw.tif")
    np.testing.assert_allclose(raw, load(golden, "expected_protein_image.npy")[0, 0], rtol=0, atol=1e-5)
    png = np.asarray(Image.open(tmp_path / "out" / "sequence" / "sample_0.png")).astype(int)
    expected = load(golden, "expected_protein_png_rgb_uint8.npy").astype(int)
    # Equal except where a value sits within float32 noise of a rounding boundary (1 pixel here, by 1 level).
    assert np.abs(png - expected).max() <= 1 and (png != expected).sum() <= 4
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["family"] == "celldiff-released" and summary["timestep_respacing"] == "ddim10"
    assert (tmp_path / "out" / "report.html").is_file()


def test_landmark_normalisation_is_the_published_luma(golden, landmark_folder):
    from locscope.pipelines.generate_released import read_released_landmarks

    images = read_released_landmarks([landmark_folder], ("nucleus", "er", "microtubules"), 64)
    for key, name in LANDMARK_FILES.items():
        assert np.array_equal(images[key], load(golden, f"input_{name}_img.npy")[0, 0])


def test_missing_er_and_microtubules_use_the_placeholder(golden, checkpoint_set, landmark_folder, tmp_path, caplog):
    from locscope.pipelines.generate_released import generate_released

    with caplog.at_level(logging.WARNING):
        result = generate_released([("p1", SEQUENCE)], [landmark_folder / "nucleus.png"], tmp_path / "out",
                                   checkpoint_set, steps=2, samples=2, progress=False)
    assert "no er image; using the model's learned placeholder" in caplog.text
    summary = json.loads(result.summary.read_text())
    assert summary["placeholder_landmarks"] == ["er", "microtubules"] and len(summary["sequences"][0]["samples"]) == 2


@pytest.mark.parametrize("remove, message", [
    ("vae_tiny.bin", r"vae_tiny\.bin: file not found \(the VAE checkpoint named by vae_loadcheck_path"),
    ("cell_diff_tiny.bin", r"cell_diff_tiny\.bin: denoiser checkpoint not found"),
    ("config.json", r"config\.json: file not found"),
])
def test_a_missing_part_is_a_one_line_error_naming_the_file(checkpoint_set, tmp_path, remove, message):
    folder = tmp_path / "set"
    shutil.copytree(checkpoint_set, folder)
    (folder / remove).unlink()
    with pytest.raises(InputError, match=message):
        load_released_checkpoint_set(folder)


def test_cli_reports_a_missing_vae_in_one_line(checkpoint_set, landmark_folder, tmp_path, capsys):
    from locscope.cli import main

    folder = tmp_path / "set"
    shutil.copytree(checkpoint_set, folder)
    (folder / "vae_tiny.bin").unlink()
    with pytest.raises(SystemExit) as info:
        main(["generate", "--model", str(folder), "--sequence", SEQUENCE, "--landmarks", str(landmark_folder),
              "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: ") and "vae_tiny.bin: file not found" in err
    assert not (tmp_path / "out").exists()


def test_an_unmatched_denoiser_names_the_file_and_keys(checkpoint_set, tmp_path):
    folder = tmp_path / "set"
    shutil.copytree(checkpoint_set, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(CheckpointError, match=r"cell_diff_tiny\.bin does not match the model: missing keys: "
                                              r"net\.unified_encoder\.2\.adaLN_modulation\.1\.bias"):
        load_released_checkpoint_set(folder)


def test_esm2_from_a_local_transformers_directory(golden, checkpoint_set, released, tmp_path):
    """ESM2 saved as transformers' EsmForMaskedLM (the facebook/esm2_* layout) replaces the checkpoint's copy."""
    released.model.net.protein_sequence_embedding.model.lm.save_pretrained(tmp_path / "esm2")
    folder = tmp_path / "set"
    shutil.copytree(checkpoint_set, folder)
    state = read_published_state_dict(folder / "cell_diff_tiny.bin")
    torch.save({k: v for k, v in state.items() if ".protein_sequence_embedding.model." not in k},
               folder / "cell_diff_tiny.bin")
    with pytest.raises(InputError, match=r"cell_diff_tiny\.bin: no ESM2 weights"):
        load_released_checkpoint_set(folder)
    swapped = load_released_checkpoint_set(folder, esm_path=tmp_path / "esm2")
    assert all(torch.equal(v, released.model.state_dict()[k]) for k, v in swapped.model.state_dict().items())


def test_esm2_keeps_the_published_key_layout(released):
    from locscope.encoders.esm_layout import fair_esm_to_transformers, transformers_to_fair_esm

    keys = list(released.model.net.protein_sequence_embedding.model.state_dict())
    assert "layers.1.self_attn.rot_emb.inv_freq" in keys and "lm_head.weight" in keys and len(keys) == 45
    assert not any(k.startswith(("esm.", "lm.")) for k in keys)
    for key in keys:
        name = fair_esm_to_transformers(key)
        assert name is None and key.endswith("rot_emb.inv_freq") or transformers_to_fair_esm(name) == key
