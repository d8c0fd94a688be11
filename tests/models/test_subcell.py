"""SubCell model: the published golden checkpoint reproduced, strict loading, channel variants, full-size config."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from locscope.errors import CheckpointError, InputError
from locscope.models.subcell import (
    CHANNEL_VARIANTS, SUBCELL_CLASS_NAMES, SubCellConfig, SubCellModel, count_parameters, load_published,
    map_published_classifier_keys, min_max_normalize,
)
from locscope.utils.checkpoint import save_pretrained

TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32,
            pool_inner_dim=16, classifier_hidden=(16,))


@pytest.fixture(scope="module")
def golden_dir() -> Path:
    from conftest import SHARED, _require

    return _require(SHARED / "golden" / "subcell_tiny")


@pytest.fixture(scope="module")
def golden_run(golden_dir):
    model = load_published(golden_dir / "model_config.yaml")
    raw = torch.from_numpy(np.load(golden_dir / "input_raw.npy"))
    normalized = min_max_normalize(raw)
    with torch.no_grad():
        output = model(normalized)
    return model, normalized, output


def test_golden_normalized_input(golden_dir, golden_run):
    _, normalized, _ = golden_run
    np.testing.assert_allclose(normalized.numpy(), np.load(golden_dir / "expected_normalized_input.npy"), atol=1e-6)


@pytest.mark.parametrize("field,expected_file", [
    ("last_hidden_state", "expected_last_hidden_state.npy"),
    ("embedding", "expected_embedding.npy"),
    ("pool_attention", "expected_pool_attention.npy"),
    ("probabilities", "expected_probabilities.npy"),
])
def test_golden_outputs(golden_dir, golden_run, field, expected_file):
    _, _, output = golden_run
    expected = np.load(golden_dir / expected_file)
    got = getattr(output, field).numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_golden_model_is_eval_ensemble(golden_run):
    model, _, output = golden_run
    assert not model.training
    assert len(model.classifiers) == 2
    assert model.config.channels == "rybg" and model.config.embedding_dim == 128
    # The ensemble mean differs from either member alone.
    single = model.classifiers[0](output.embedding).sigmoid()
    assert not torch.allclose(single, output.probabilities)


def test_locscope_layout_roundtrip(golden_run, tmp_path):
    model, normalized, output = golden_run
    save_pretrained(model, model.config, tmp_path / "m")
    again = SubCellModel.from_pretrained(tmp_path / "m")
    assert again.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(again(normalized).probabilities, output.probabilities)


def _copy_golden(golden_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "subcell"
    shutil.copytree(golden_dir, target)
    for f in target.iterdir():
        f.chmod(0o644)
    target.chmod(0o755)
    return target


def test_strict_loading_lists_bad_encoder_keys(golden_dir, tmp_path):
    folder = _copy_golden(golden_dir, tmp_path)
    state = torch.load(folder / "encoder.pth", weights_only=True)
    del state["encoder.encoder.layer.1.output.dense.bias"]
    state["pool_model.extra.weight"] = torch.zeros(2)
    state["pool_model.attention.weight"] = torch.zeros(3, 32)
    torch.save(state, folder / "encoder.pth")
    with pytest.raises(CheckpointError) as info:
        load_published(folder / "model_config.yaml")
    message = str(info.value)
    assert "encoder.pth" in message
    assert "missing keys: encoder.layers.1.mlp.fc2.bias" in message
    assert "unexpected keys: pool_model.extra.weight" in message
    assert "misshaped keys: pool_model.attention.weight (3, 32) vs model (2, 32)" in message


def test_strict_loading_bad_classifier_and_config(golden_dir, tmp_path):
    folder = _copy_golden(golden_dir, tmp_path)
    state = torch.load(folder / "classifier_s1.pth", weights_only=True)
    state["6.weight"] = state["6.weight"][:30]
    torch.save(state, folder / "classifier_s1.pth")
    with pytest.raises(CheckpointError, match=r"classifier_s1\.pth.*misshaped keys: 4\.weight \(30, 256\)"):
        load_published(folder / "model_config.yaml")
    spec = yaml.safe_load((folder / "model_config.yaml").read_text())
    spec["classifier_paths"] = ["nowhere.pth"]
    (folder / "model_config.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(InputError, match="classifier_paths 'nowhere.pth' not found"):
        load_published(folder / "model_config.yaml")
    with pytest.raises(InputError, match="model config not found"):
        load_published(folder / "absent.yaml")


class NotTensors:  # a pickle that would need code execution to load
    pass


def test_pickled_code_is_refused(tmp_path):
    torch.save({"0.weight": NotTensors()}, tmp_path / "encoder.pth")
    torch.save({"0.weight": NotTensors()}, tmp_path / "classifier.pth")
    spec = {"model_config": {"vit_model": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                            "intermediate_size": 64, "image_size": 32, "patch_size": 16},
                             "pool_model": {"dim": 32, "int_dim": 16, "num_heads": 2}, "num_classes": 31},
            "encoder_path": "encoder.pth", "classifier_paths": ["classifier.pth"]}
    (tmp_path / "model_config.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(InputError, match="encoder.pth: refusing to unpickle it: the file holds more than tensors"):
        load_published(tmp_path / "model_config.yaml")


def test_classifier_key_remap():
    state = {f"{i}.{p}": torch.zeros(1) for i in (0, 3, 6) for p in ("weight", "bias")}
    assert sorted(map_published_classifier_keys(state)) == ["0.bias", "0.weight", "2.bias", "2.weight", "4.bias",
                                                             "4.weight"]


@pytest.mark.parametrize("variant", sorted(CHANNEL_VARIANTS))
def test_channel_variants(variant):
    torch.manual_seed(0)
    model = SubCellModel(SubCellConfig(channels=variant, num_classifiers=2, **TINY)).eval()
    n = len(CHANNEL_VARIANTS[variant])
    assert model.encoder.embeddings.patch_embeddings.projection.weight.shape[1] == n
    images = min_max_normalize(torch.rand(3, n, 40, 56))
    with torch.no_grad():
        out = model(images)
    assert out.embedding.shape == (3, 64)
    assert out.probabilities.shape == (3, 31)
    assert out.pool_attention.shape == (3, 2, 2, 3)
    assert out.last_hidden_state.shape == (3, 7, 32)
    assert torch.all((out.probabilities > 0) & (out.probabilities < 1))
    with pytest.raises(ValueError, match=f"images must have shape \\(B, {n}, H, W\\)"):
        model(torch.rand(1, n + 1, 32, 32))


def test_min_max_normalize_constant_and_joint():
    x = torch.zeros(2, 2, 4, 4)
    x[1, 0] = 10.0
    x[1, 1] = 5.0
    x[1, 1, 0, 0] = 0.0  # joint minimum 0: channel 1 maps to 0.5, not to its own [0, 1]
    y = min_max_normalize(x)
    assert torch.all(y[0] == 0)
    assert float(y[1, 0].max()) == pytest.approx(1.0, abs=1e-6)
    assert float(y[1, 1].max()) == pytest.approx(0.5, abs=1e-6)


def test_config_validation():
    with pytest.raises(ValueError, match="channels='rgb'"):
        SubCellConfig(channels="rgb")
    assert SubCellConfig().class_names == SUBCELL_CLASS_NAMES and len(SUBCELL_CLASS_NAMES) == 31
    assert SUBCELL_CLASS_NAMES[0] == "Actin filaments" and SUBCELL_CLASS_NAMES[-1] == "Negative"
    from locscope.data.ontology import SUBCELL_CLASSES

    assert tuple(SUBCELL_CLASSES) == SUBCELL_CLASS_NAMES  # the ontology and the model agree


def test_vit_b16_full_config_parameter_count():
    """The published ViT-B/16: 87.3 M parameters per the model card (encoder + pooling; classifiers apart)."""
    with torch.device("meta"):
        model = SubCellModel(SubCellConfig())
    n = count_parameters(model)
    assert n == 87_235_330  # 86,446,848 ViT + 788,482 gated pooling
    assert abs(n / 1e6 - 87.3) < 0.1
    assert count_parameters(model, include_classifiers=True) - n == 1536 * 512 + 512 + 512 * 256 + 256 + 256 * 31 + 31


def test_vit_b16_forward_small_input():
    torch.manual_seed(0)
    model = SubCellModel(SubCellConfig(num_classifiers=1)).eval()
    with torch.inference_mode():
        out = model(torch.rand(1, 4, 32, 48))
    assert out.embedding.shape == (1, 1536) and out.pool_attention.shape == (1, 2, 2, 3)
    assert torch.isfinite(out.embedding).all()
