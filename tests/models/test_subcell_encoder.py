"""The default image encoder contract (docs/architecture.md): bundled tiny SubCell, embed / classify any size."""

from __future__ import annotations

import pytest
import torch

import locscope.models.image_encoder as image_module
from locscope.errors import InputError
from locscope.models.image_encoder import SubCellImageEncoder, load_default_image_encoder
from locscope.models.subcell import SubCellConfig, SubCellModel


def test_default_encoder_contract():
    encoder = load_default_image_encoder(device="cpu")
    assert encoder.name == "subcell-tiny"
    assert encoder.channels == ("microtubules", "er", "nucleus", "protein")
    torch.manual_seed(0)
    images = torch.rand(3, 4, 100, 80)
    features = encoder.embed(images)
    assert features.shape == (3, encoder.feature_dim) and features.dtype == torch.float32
    probabilities = encoder.classify(images)
    assert probabilities.shape == (3, 31)
    assert torch.all((probabilities > 0) & (probabilities < 1))
    # Deterministic, and invariant to the intensity scale (per-cell min-max normalisation).
    torch.testing.assert_close(encoder.embed(images * 1000 + 5), features, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\) tensor"):
        encoder.embed(torch.rand(2, 3, 64, 64))


def test_default_encoder_separates_simulated_compartments():
    """Nuclear vs plasma-membrane proteins from the simulator: each embedding is nearer its own class's mean."""
    from locscope.synth import SimulatorConfig, simulate_cell

    encoder = load_default_image_encoder()
    cfg = SimulatorConfig(size=64)
    batches = {}
    for name in ("nucleoplasm", "plasma-membrane"):
        cells = [simulate_cell(cfg, compartments={name: 1.0}, seed=100 + s) for s in range(6)]
        batches[name] = torch.stack([
            torch.stack([torch.from_numpy(c.cell.images[ch]) if ch != "protein" else torch.from_numpy(c.protein)
                         for ch in encoder.channels]) for c in cells])
    emb = {k: torch.nn.functional.normalize(encoder.embed(v), dim=1) for k, v in batches.items()}
    centres = {k: v.mean(0) for k, v in emb.items()}
    for own, other in (("nucleoplasm", "plasma-membrane"), ("plasma-membrane", "nucleoplasm")):
        assert ((emb[own] @ centres[own]) > (emb[own] @ centres[other])).float().mean() >= 5 / 6


def test_missing_weights_name_the_path(tmp_path, monkeypatch):
    monkeypatch.setattr(image_module, "DEFAULT_IMAGE_ENCODER_DIR", tmp_path / "subcell-tiny")
    with pytest.raises(InputError, match="subcell-tiny: bundled SubCell image encoder weights not found"):
        load_default_image_encoder()


def test_encoder_wrapper_resizes_to_training_size():
    torch.manual_seed(0)
    model = SubCellModel(SubCellConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32, patch_size=8, image_size=32, pool_inner_dim=8,
                                       classifier_hidden=(8,)))
    encoder = SubCellImageEncoder(model, name="t")
    big = torch.rand(1, 4, 64, 64)
    small = torch.nn.functional.interpolate(big, size=(32, 32), mode="bilinear", antialias=True)
    torch.testing.assert_close(encoder.embed(big), encoder.embed(small), atol=1e-5, rtol=1e-5)
