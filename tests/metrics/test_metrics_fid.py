"""Fréchet distance, streamed statistics, FID images and the InceptionV3 feature network."""

import numpy as np
import pytest
import scipy.linalg
import torch

from locscope.errors import CheckpointError, InputError
from locscope.metrics.feature_networks import EncoderFeatureNetwork, HandcraftedFeatureNetwork, InceptionFeatureNetwork
from locscope.pipelines.evaluate import load_feature_network
from locscope.metrics.fid import FeatureStats, fid_rgb, frechet_distance, frechet_distance_from_stats, to_uint8
from locscope.metrics.inception import FIDInceptionV3, load_fid_inception


def _scipy_frechet(mu1, s1, mu2, s2):
    """Independent reference: pytorch-fid's formula with scipy.linalg.sqrtm."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


@pytest.mark.parametrize("dim", [4, 32, 64])
def test_frechet_distance_matches_scipy_sqrtm(dim):
    rng = np.random.default_rng(dim)
    a = rng.normal(size=(500, dim))
    b = rng.normal(size=(500, dim)) @ rng.normal(size=(dim, dim)) * 0.3 + 0.5
    mu1, s1 = a.mean(0), np.cov(a, rowvar=False)
    mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
    ours = frechet_distance(mu1, s1, mu2, s2)
    reference = _scipy_frechet(mu1, s1, mu2, s2)
    assert abs(ours - reference) / abs(reference) < 1e-6


def test_frechet_distance_known_values():
    eye = np.eye(3)
    assert frechet_distance(np.zeros(3), eye, np.zeros(3), eye) == pytest.approx(0.0, abs=1e-12)
    # N(0, I) vs N(m, 4I): |m|^2 + 3 * (1 + 4 - 2 * 2) = |m|^2 + 3
    m = np.array([1.0, 2.0, 2.0])
    assert frechet_distance(np.zeros(3), eye, m, 4 * eye) == pytest.approx(9.0 + 3.0)


def test_feature_stats_streamed_equal_batch():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(103, 6)) * 3 + 1
    stats = FeatureStats()
    for start in range(0, 103, 10):
        stats.update(feats[start:start + 10])
    np.testing.assert_allclose(stats.mean, feats.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.covariance, np.cov(feats, rowvar=False), rtol=1e-10)
    other = FeatureStats()
    other.update(torch.from_numpy(feats))
    assert frechet_distance_from_stats(stats, other) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="dimension"):
        stats.update(np.zeros((2, 5)))


def test_fid_rgb_channels_and_mask_quirk():
    protein = np.array([[0.0, 0.2], [0.6, 1.0]])
    nucleus = np.array([[1.0, 0.0], [0.5, 0.0]])
    rgb = fid_rgb(protein, nucleus, "image")
    assert rgb.shape == (1, 3, 2, 2) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, 0], 0)
    np.testing.assert_array_equal(rgb[0, 1], [[0, 51], [153, 255]])
    np.testing.assert_array_equal(rgb[0, 2], [[255, 0], [128, 0]])
    np.testing.assert_array_equal(fid_rgb(protein, nucleus, "mask128")[0, 1], [[0, 0], [128, 128]])
    np.testing.assert_array_equal(fid_rgb(protein, nucleus, "mask255")[0, 1], [[0, 0], [255, 255]])
    np.testing.assert_array_equal(to_uint8(np.array([-1.0, 0.0, 1.0]), (-1, 1)), [0, 128, 255])


def test_fid_of_identical_sets_is_zero_and_shifted_sets_positive():
    rng = np.random.default_rng(0)
    protein = rng.random((12, 32, 32))
    nucleus = rng.random((12, 32, 32))
    net = HandcraftedFeatureNetwork()
    feats = net.features(fid_rgb(protein, nucleus))
    assert feats.shape == (12, net.feature_dim)
    a, b, c = FeatureStats(), FeatureStats(), FeatureStats()
    a.update(feats)
    b.update(net.features(fid_rgb(protein, nucleus)))
    c.update(net.features(fid_rgb(protein ** 3, nucleus)))
    assert frechet_distance_from_stats(a, b) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance_from_stats(a, c) > 1e-2


def test_inception_loads_published_layout(tmp_path):
    torch.manual_seed(0)
    model = FIDInceptionV3().eval()
    assert sum(p.numel() for p in model.parameters()) == 23_850_960   # pytorch-fid FID Inception with 1008-way fc
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}  # old-torch file
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    net = InceptionFeatureNetwork(path, device="cpu")
    assert "inception" in net.name
    rgb = np.random.default_rng(0).integers(0, 256, (2, 3, 40, 40), dtype=np.uint8)
    feats = net.features(rgb)
    with torch.no_grad():
        expected = model(torch.from_numpy(rgb).float() / 255).double().numpy()
    assert feats.shape == (2, 2048)
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-6)
    assert load_feature_network(path, device="cpu").feature_dim == 2048
    assert load_feature_network("handcrafted").name == "handcrafted-v1"
    auto = load_feature_network(None)
    assert auto.name == "handcrafted-v1" or auto.name.startswith("locscope-image-encoder:")


def test_encoder_feature_network_maps_fid_channels():
    class Recorder:
        name, feature_dim, channels = "fake", 3, ("microtubules", "er", "nucleus", "protein")

        def embed(self, images):
            self.seen = images
            return images.mean(dim=(2, 3))[:, 1:]  # (B, 3)

    encoder = Recorder()
    rgb = np.zeros((2, 3, 4, 4), np.uint8)
    rgb[:, 1] = 255   # protein
    rgb[:, 2] = 51    # nucleus
    feats = EncoderFeatureNetwork(encoder).features(rgb)
    assert EncoderFeatureNetwork(encoder).name == "locscope-image-encoder:fake"
    np.testing.assert_allclose(feats, [[0.0, 0.2, 1.0]] * 2, rtol=1e-6)
    assert encoder.seen[:, 0].abs().sum() == 0


def test_inception_rejects_bad_files(tmp_path):
    state = FIDInceptionV3().state_dict()
    state.pop("fc.bias")
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match="fc.bias"):
        load_fid_inception(bad)
    with pytest.raises(InputError, match="not found"):
        load_fid_inception(tmp_path / "missing.pth")
