"""Published CELL-Diff v2 (latent) network: exact agreement with the published code and strict loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from locscope.errors import CheckpointError, InputError
from locscope.models.celldiff_v2 import (
    MASK_ID,
    CellDiffV2Config,
    CellDiffV2Tokenizer,
    PublishedCellDiff,
    load_published_celldiff,
    published_alphas_cumprod,
    sincos_1d_table,
)

INPUTS = ("protein_latent", "cell_latent", "tokens", "model_time", "sqrt_one_minus_alphas_cumprod")


@pytest.fixture(scope="module")
def golden():
    # Module-scoped (the model is loaded once); same skip/fail rules as the shared_golden fixture.
    from conftest import SHARED, _require

    return _require(SHARED / "golden" / "celldiff_v2_tiny")


@pytest.fixture(scope="module")
def published(golden):
    model = load_published_celldiff(golden / "cell_diff_tiny.bin", golden / "config.json")
    inputs = {name: torch.from_numpy(np.load(golden / f"input_{name}.npy")) for name in INPUTS}
    with torch.no_grad():
        output = model.net(*(inputs[name] for name in INPUTS))
    return model, inputs, output


@pytest.fixture(scope="module")
def state_dict(golden):
    return torch.load(golden / "cell_diff_tiny.bin", map_location="cpu", weights_only=True)


def test_image_output_matches_published(published, golden):
    _, _, output = published
    expected = np.load(golden / "expected_image_output.npy")
    assert output.image.shape == expected.shape == (2, 4, 16, 16)
    np.testing.assert_allclose(output.image.numpy(), expected, rtol=0, atol=1e-5)


def test_sequence_logits_match_published(published, golden):
    _, _, output = published
    expected = np.load(golden / "expected_sequence_logits.npy")
    assert output.sequence_logits.shape == expected.shape == (2, 35, 32)
    np.testing.assert_allclose(output.sequence_logits.numpy(), expected, rtol=0, atol=1e-5)
    # The argmax (what the published sampler would pick among all tokens) agrees everywhere.
    assert np.array_equal(output.sequence_logits.argmax(-1).numpy(), expected.argmax(-1))


def test_loaded_model_is_eval_frozen_and_shaped_by_config(published):
    model, _, _ = published
    config = model.config
    assert not model.training
    assert config.block_out_channels == (32, 32, 64, 64) and config.hidden_size == 128
    assert (config.esm_embed_dim, config.esm_num_layers, config.esm_num_heads) == (320, 2, 20)  # read off the weights
    assert config.landmark_names == ("nucleus", "er", "microtubules")
    esm = model.net.protein_sequence_embedding.model
    assert not any(p.requires_grad for p in esm.parameters())
    assert not model.net.protein_sequence_pos_embed.requires_grad
    assert len(model.state_dict()) == 474


def test_position_table_is_the_published_sincos(state_dict):
    table = sincos_1d_table(128, 64 + 2)
    np.testing.assert_allclose(table[None], state_dict["net.protein_sequence_pos_embed"].numpy(), atol=1e-6)


def test_cosine_schedule_matches_published(golden):
    expected = np.load(golden / "alphas_cumprod_T200_cosine.npy")
    ours = published_alphas_cumprod(200, "squaredcos_cap_v2")
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)
    # diffusers' scheduler computes the same schedule in float32.
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=200, beta_schedule="squaredcos_cap_v2")
    np.testing.assert_allclose(scheduler.alphas_cumprod.numpy(), expected, atol=1e-6)
    with pytest.raises(ValueError, match="schedule='sigmoid'"):
        published_alphas_cumprod(200, "sigmoid")


def test_tokenizer_round_trips_published_tokens(golden):
    tokens = np.load(golden / "input_tokens.npy")
    tok = CellDiffV2Tokenizer(max_residues=64)
    sequences = [tok.decode(row) for row in tokens]
    assert sequences[1][4:8] == "####"  # residues 5-8 of row 1 are masked (id 31)
    assert np.array_equal(tok.batch_encode(sequences).numpy(), tokens)
    assert tokens[1, 5] == MASK_ID


def test_tokenizer_rejects_bad_residue_and_length():
    tok = CellDiffV2Tokenizer(max_residues=5)
    with pytest.raises(InputError, match=r"P12345 position 3: invalid residue '\*'"):
        tok.encode("MK*A", record="P12345")
    with pytest.raises(InputError, match="6 residues, longer than the model's maximum of 5"):
        tok.encode("MKTAYI")


def test_missing_landmarks_use_the_learned_placeholder(published):
    model, inputs, _ = published
    nucleus = inputs["cell_latent"][:, :4]
    cell = model.cell_latent({"nucleus": nucleus})
    assert cell.shape == (2, 12, 16, 16)
    assert torch.equal(cell[:, :4], nucleus)
    assert torch.equal(cell[1, 7], model.cell_img_placeholder) and torch.equal(cell[0, 11], model.cell_img_placeholder)
    full = model.cell_latent({"nucleus": nucleus, "er": inputs["cell_latent"][:, 4:8],
                              "microtubules": inputs["cell_latent"][:, 8:]})
    assert torch.equal(full, inputs["cell_latent"])
    with pytest.raises(InputError, match="nucleus latent is required"):
        model.cell_latent({"er": nucleus})


def _save(tmp_path, state):
    path = tmp_path / "cell_diff.bin"
    torch.save(state, path)
    return path


def test_strict_loading_names_a_missing_key(tmp_path, golden, state_dict):
    state = dict(state_dict)
    del state["net.unified_encoder.1.adaLN_modulation.1.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys: net\.unified_encoder\.1\.adaLN_modulation\.1\.weight"):
        load_published_celldiff(_save(tmp_path, state), golden / "config.json")


def test_strict_loading_names_an_unexpected_key(tmp_path, golden, state_dict):
    state = dict(state_dict)
    state["net.mlp_w.0.weight"] = torch.zeros(128, 128)  # an output-rescale layer the config does not build
    with pytest.raises(CheckpointError, match=r"unexpected keys: net\.mlp_w\.0\.weight"):
        load_published_celldiff(_save(tmp_path, state), golden / "config.json")


def test_strict_loading_names_a_misshaped_key(tmp_path, golden, state_dict):
    state = dict(state_dict)
    state["net.seq_proj_out.weight"] = torch.zeros(33, 128)
    with pytest.raises(CheckpointError, match=r"misshaped keys: net\.seq_proj_out\.weight \(33, 128\) vs model \(32, 128\)"):
        load_published_celldiff(_save(tmp_path, state), golden / "config.json")


def test_config_mismatch_is_reported_as_bad_keys(tmp_path, golden, state_dict):
    config = json.loads((golden / "config.json").read_text())
    config["cell_image"] = "nucl"  # 8 input channels instead of 16
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"net\.img_conv_in\.weight \(32, 16, 3, 3\) vs model \(32, 8, 3, 3\)"):
        load_published_celldiff(golden / "cell_diff_tiny.bin", path)


def test_non_tensor_pickles_are_refused(tmp_path, golden):
    with pytest.raises(InputError, match="expected a dict of tensors"):
        load_published_celldiff(_save(tmp_path, {"step": 3}), golden / "config.json")


def test_sharded_checkpoint_directory_loads_identically(tmp_path, golden, state_dict, published):
    keys = list(state_dict)
    shards = {"pytorch_model-00001-of-00002.bin": keys[:200], "pytorch_model-00002-of-00002.bin": keys[200:]}
    weight_map = {}
    for name, part in shards.items():
        torch.save({k: state_dict[k] for k in part}, tmp_path / name)
        weight_map.update({k: name for k in part})
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    model = load_published_celldiff(tmp_path, golden / "config.json")
    reference = published[0].state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="hidden_size=256: must equal 4 \\* block_out_channels\\[0\\] = 128"):
        CellDiffV2Config(block_out_channels=(32, 32, 64, 64), hidden_size=256)
    with pytest.raises(ValueError, match="cell_image='nucl,dna'"):
        CellDiffV2Config(cell_image="nucl,dna")


def test_fresh_model_has_the_published_key_layout(state_dict):
    config = CellDiffV2Config(
        block_out_channels=(32, 32, 64, 64), layers_per_block=1, sample_size=16, hidden_size=128,
        num_hidden_layers=2, mid_num_attention_heads=4, num_attention_heads=8, max_protein_sequence_len=64,
        esm_embed_dim=320, esm_num_layers=2, esm_num_heads=20,
    )
    with torch.device("meta"):
        model = PublishedCellDiff(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in state_dict.items()}
