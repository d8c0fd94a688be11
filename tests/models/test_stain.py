"""Virtual-staining family: agreement with the published guided-I2I layout, AdaGN / null class, the noisy classifier."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from locscope.data.transforms import standardize
from locscope.diffusion.stain_sampler import LinearSchedule, sample_stain
from locscope.errors import CheckpointError
from locscope.models.stain import (
    StainClassifier, StainUNet, classifier_config_for, convert_published_state_dict, count_parameters,
    load_published, published_config, stain_base_config, stain_tiny_config,
)
from locscope.utils.checkpoint import read_torch_weights

from conftest import SHARED, _require
from support import _one_thread  # noqa: F401  (autouse: one torch thread for these tiny networks)

SCHEDULE_BUFFERS = ("gammas", "sqrt_recip_gammas", "sqrt_recipm1_gammas", "posterior_log_variance_clipped",
                    "posterior_mean_coef1", "posterior_mean_coef2")


@pytest.fixture(scope="module")
def golden():
    return _require(SHARED / "golden" / "guided_i2i_tiny")


def load(golden, name: str) -> torch.Tensor:
    return torch.from_numpy(np.load(golden / f"{name}.npy"))


@pytest.fixture(scope="module")
def published(golden):
    config = published_config(json.loads((golden / "network_config.json").read_text()))
    return load_published(read_torch_weights(golden / "1_Network.pth"), config, source="1_Network.pth")


def test_published_config_and_parameter_count(published, golden):
    cfg = published.config
    assert (cfg.condition_planes, len(cfg.target_channels), cfg.base_channels) == (3, 5, 32)
    assert cfg.channel_multipliers == (1, 2) and cfg.res_blocks == 1 and cfg.num_classes == 4
    assert cfg.attention_levels == (1,)  # attn_res [2] = down-sampling factor 2 = level 1
    keys = json.loads((golden / "checkpoint_keys.json").read_text())
    assert count_parameters(published) == keys["n_parameters"] == 830021


def test_released_target2_has_attention_only_in_the_middle(golden):
    shapes = json.loads((golden / "published_Target2_state_dict_shapes.json").read_text())
    cfg = stain_base_config()
    assert cfg.attention_levels == ()
    with torch.device("meta"):
        model = StainUNet(cfg)
    assert count_parameters(model) == shapes["n_parameters"] == 62673861
    # every released key (shape) has a place in locscope's module
    fake = {k: torch.empty(v, device="meta") for k, v in shapes["shapes"].items()}
    converted = convert_published_state_dict(fake, cfg)
    expected = model.state_dict()
    assert set(converted) == set(expected)
    assert all(tuple(converted[k].shape) == tuple(expected[k].shape) for k in converted)


@pytest.mark.parametrize("name,T,start,end", [("T50", 50, 1e-6, 0.01), ("T50steep", 50, 1e-6, 0.4),
                                              ("T2000", 2000, 1e-6, 0.01)])
def test_schedules_match_published(golden, name, T, start, end):
    schedule = LinearSchedule(T, start, end)
    np.testing.assert_array_equal(schedule.betas64, np.load(golden / f"schedule_{name}_betas_float64.npy"))
    np.testing.assert_array_equal(schedule.gammas64, np.load(golden / f"schedule_{name}_gammas_float64.npy"))
    for buffer in SCHEDULE_BUFFERS:
        np.testing.assert_array_equal(getattr(schedule, buffer).numpy(), np.load(golden / f"schedule_{name}_{buffer}.npy"))
    assert schedule.posterior_log_variance_clipped[0].item() == pytest.approx(np.log(1e-20), rel=1e-6)


def test_schedule_known_values():
    schedule = LinearSchedule(2000, 1e-6, 0.01)
    assert schedule.gammas64[0] == pytest.approx(1 - 1e-6, abs=1e-15)
    assert schedule.gammas64[-1] == pytest.approx(4.3859782361332086e-05, rel=1e-9)
    assert schedule.betas64.sum() == pytest.approx(10.001, rel=1e-12)


def test_standardization_matches_published(golden):
    raw = np.load(golden / "input_raw_uint16.npy")
    out = standardize(raw, clip=15.0)
    np.testing.assert_array_equal(out, np.load(golden / "expected_standardized_numpy2.npy"))
    assert out[0, 1, 5, 7] == 15.0  # the saturated pixel is clipped


def test_forward_matches_published(published, golden):
    x, gamma = load(golden, "input_x"), load(golden, "input_noise_level")
    np.testing.assert_allclose(x[:, 3:].numpy(), load(golden, "input_y_noisy").numpy(), atol=0)
    with torch.no_grad():
        emb_plain = published.embedding(gamma)
        for case in "ab":
            labels = load(golden, f"input_class_{case}")
            eps = published(x[:, :3], x[:, 3:], gamma, labels)
            np.testing.assert_allclose(eps.numpy(), np.load(golden / f"expected_eps_{case}.npy"), atol=3e-5)
            np.testing.assert_allclose(published.embedding(gamma, labels).numpy(),
                                       np.load(golden / f"expected_emb_{case}.npy"), atol=2e-6)
    np.testing.assert_allclose(emb_plain.numpy(), np.load(golden / "expected_cond_embed.npy"), atol=2e-6)


def test_training_forward_matches_published(published, golden):
    schedule = LinearSchedule(50, 1e-6, 0.01)
    t, u, noise = load(golden, "train_t"), load(golden, "train_u"), load(golden, "train_noise")
    gamma = schedule.training_gammas(t, u)
    np.testing.assert_allclose(gamma.numpy(), np.load(golden / "train_sample_gammas.npy"), rtol=1e-6)
    y_noisy = schedule.q_sample(load(golden, "input_gt_image"), gamma, noise)
    np.testing.assert_allclose(y_noisy.numpy(), np.load(golden / "train_x.npy")[:, 3:], atol=2e-6)
    with torch.no_grad():
        noise_hat = published(load(golden, "input_cond_image"), y_noisy, gamma, torch.tensor([1, 3]))
    np.testing.assert_allclose(noise_hat.numpy(), np.load(golden / "train_noise_hat.npy"), atol=3e-5)
    loss = torch.nn.functional.mse_loss(noise, noise_hat).item()
    assert loss == pytest.approx(1.8168411254882812, abs=1e-5)


@pytest.mark.parametrize("prefix,end,seed,atol", [("sample", 0.01, 11, 2e-5), ("sample_steep", 0.4, 12, 2e-3)])
def test_ancestral_sampling_replays_published_run(published, golden, prefix, end, seed, atol):
    schedule = LinearSchedule(50, 1e-6, end)
    labels, cond = load(golden, f"{prefix}_class"), load(golden, "input_cond_image")
    recorded = load(golden, f"{prefix}_steps_eps")
    calls = []

    def replay(y, gamma, k):  # the recorded network outputs: what remains is the sampler's own update
        np.testing.assert_array_equal(gamma.numpy(), load(golden, f"{prefix}_steps_noise_level")[len(calls), :, 0])
        calls.append(1)
        return recorded[len(calls) - 1]

    out = sample_stain(replay, (2, 5, 32, 32), schedule, labels, null_label=4,
                       generator=torch.Generator().manual_seed(seed))
    # the update's arithmetic, to float32 rounding: bit for bit on the AMD EPYC it was written on; an Intel Xeon's
    # vector kernels round 2-3% of the values differently, up to 1.4e-6 (steep: 7.6e-6) after 50 steps
    np.testing.assert_allclose(out.images.numpy(), np.load(golden / f"{prefix}_expected_output.npy"), rtol=0,
                               atol=2e-5)
    assert out.network_evaluations == 50 and out.classifier_evaluations == 0

    visuals = []
    out = sample_stain(lambda y, g, k: published(cond, y, g, k), (2, 5, 32, 32), schedule, labels, null_label=4,
                       generator=torch.Generator().manual_seed(seed),
                       callback=lambda t, y: visuals.append(y.clone()) if t % 6 == 0 else None)
    expected = np.load(golden / f"{prefix}_expected_visuals.npy")  # y_T, then after t = 48, 42, ..., 0
    np.testing.assert_allclose(torch.cat(visuals).numpy(), expected[2:], atol=atol)
    np.testing.assert_allclose(out.images.numpy(), np.load(golden / f"{prefix}_expected_output.npy"), atol=atol)


def test_published_loading_is_strict(golden):
    config = published_config(json.loads((golden / "network_config.json").read_text()))
    state = read_torch_weights(golden / "1_Network.pth")
    with pytest.raises(CheckpointError, match="denoise_fn.extra.weight"):
        load_published({**state, "denoise_fn.extra.weight": torch.zeros(1)}, config)
    broken = dict(state)
    del broken["denoise_fn.out.2.bias"]
    with pytest.raises(CheckpointError, match="missing keys: unet.conv_out.bias"):
        load_published(broken, config)
    with pytest.raises(CheckpointError, match="misshaped"):
        load_published(state, published_config({"unet": {**json.loads((golden / "network_config.json").read_text())
                                                          ["args"]["unet"], "num_classes": 5},
                                                 "beta_schedule": {"test": {"n_timestep": 50, "linear_start": 1e-6,
                                                                            "linear_end": 0.01}}}))


# ------------------------------------------------------------------------------------------------------------------
# locscope's own configs


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = StainUNet(stain_tiny_config(classes=("control", "drug-a", "drug-b"), channel_multipliers=(1, 2), attention_levels=(1,)))
    with torch.no_grad():  # make the class embedding matter at initialisation (zero-initialised nothing here)
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def test_adagn_class_changes_output_and_null_class_runs(tiny):
    g = torch.Generator().manual_seed(1)
    cond, y = torch.randn(2, 3, 16, 16, generator=g), torch.randn(2, 5, 16, 16, generator=g)
    gamma = torch.tensor([0.3, 0.9])
    with torch.no_grad():
        outputs = {k: tiny(cond, y, gamma, torch.tensor([k, k])) for k in range(4)}  # 3 = the null class
        unlabelled = tiny(cond, y, gamma, None)
    for a in range(4):
        for b in range(a + 1, 4):
            assert (outputs[a] - outputs[b]).abs().max() > 1e-3, (a, b)
    torch.testing.assert_close(outputs[3], unlabelled)
    # the null class is the noise-level embedding alone
    torch.testing.assert_close(tiny.embedding(gamma, torch.tensor([3, 3])), tiny.embedding(gamma))
    with pytest.raises(ValueError, match=r"class_labels must lie in \[0, 3\]"):
        tiny(cond, y, gamma, torch.tensor([0, 4]))


def test_unlabelled_model_runs_without_classes():
    model = StainUNet(stain_tiny_config(channel_multipliers=(1, 2), attention_levels=(1,))).eval()
    with torch.no_grad():
        eps = model(torch.zeros(1, 3, 8, 8), torch.zeros(1, 5, 8, 8), torch.tensor([0.5]))
    assert eps.shape == (1, 5, 8, 8)
    with torch.no_grad():  # index 0 is the null class of a model without classes
        torch.testing.assert_close(model(torch.zeros(1, 3, 8, 8), torch.zeros(1, 5, 8, 8), torch.tensor([0.5]),
                                         torch.tensor([0])), eps)
    with pytest.raises(ValueError, match=r"must lie in \[0, 0\]"):
        model(torch.zeros(1, 3, 8, 8), torch.zeros(1, 5, 8, 8), torch.tensor([0.5]), torch.tensor([1]))


def test_save_and_load_roundtrip(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "m")
    loaded = StainUNet.from_pretrained(tmp_path / "m")
    assert loaded.config == tiny.config
    x = torch.randn(1, 8, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x[:, :3], x[:, 3:], torch.tensor([0.5]), torch.tensor([1])),
                                   tiny(x[:, :3], x[:, 3:], torch.tensor([0.5]), torch.tensor([1])))


def test_classifier_gradient_shape_and_sign(tiny):
    torch.manual_seed(3)
    config = classifier_config_for(tiny.config, channel_multipliers=(1, 2), attention_levels=(1,))
    classifier = StainClassifier(config).double().eval()
    with torch.no_grad():
        for p in classifier.parameters():
            p.add_(0.05 * torch.randn_like(p))
    g = torch.Generator().manual_seed(4)
    cond = torch.randn(3, 3, 16, 16, generator=g, dtype=torch.float64)
    y = torch.randn(3, 5, 16, 16, generator=g, dtype=torch.float64)
    gamma, labels = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64), torch.tensor([0, 1, 2])
    grad = classifier.gradient(cond, y, gamma, labels)
    assert grad.shape == y.shape and torch.isfinite(grad).all() and grad.abs().amax(dim=(1, 2, 3)).min() > 0
    # a small step along the gradient raises log p(k | y_t); against it lowers it (first-order sign check)
    step = 1e-3 * grad / grad.abs().amax(dim=(1, 2, 3), keepdim=True)
    with torch.no_grad():
        base = classifier.log_prob(cond, y, gamma, labels)
        up = classifier.log_prob(cond, y + step, gamma, labels)
        down = classifier.log_prob(cond, y - step, gamma, labels)
        slope = (up - down) / 2
    assert bool((up > base).all()) and bool((down < base).all())
    # ... by the amount the gradient predicts
    torch.testing.assert_close(slope, (grad * step).sum(dim=(1, 2, 3)), rtol=1e-3, atol=1e-12)
    # the gradient of row i depends on row i only
    single = classifier.gradient(cond[1:2], y[1:2], gamma[1:2], labels[1:2])
    torch.testing.assert_close(single, grad[1:2])


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmsolver"])
def test_classifier_guidance_raises_the_class_log_probability(sampler):
    """Samples drawn with a larger scale s are more probable for their class under the classifier."""
    torch.manual_seed(0)
    config = stain_tiny_config(classes=("a", "b", "c"), channel_multipliers=(1, 2), attention_levels=(1,),
                               num_train_timesteps=100)
    denoiser = StainUNet(config).eval()
    classifier = StainClassifier(classifier_config_for(config)).eval()
    with torch.no_grad():
        for p in classifier.parameters():
            p.add_(0.05 * torch.randn_like(p))
    cond = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 2])
    schedule = LinearSchedule(100, 1e-6, 0.02)
    log_probs = []
    for scale in (0.0, 4.0, 32.0):
        out = sample_stain(lambda y, g, k: denoiser(cond, y, g, k), (2, 5, 16, 16), schedule, labels, null_label=3,
                           sampler=sampler, steps=8, classifier_gradient=lambda y, g: classifier.gradient(
                               cond, y, g, labels), classifier_scale=scale, generator=torch.Generator().manual_seed(5))
        assert out.classifier_evaluations == (8 if scale else 0) and out.network_evaluations == 8
        with torch.no_grad():
            log_probs.append(classifier.log_prob(cond, out.images, schedule.gammas[0].expand(2), labels))
    assert bool((log_probs[1] > log_probs[0]).all()) and bool((log_probs[2] > log_probs[1]).all())


def test_classifier_free_guidance_uses_the_null_class():
    torch.manual_seed(0)
    denoiser = StainUNet(stain_tiny_config(classes=("a", "b"), channel_multipliers=(1, 2), attention_levels=(1,),
                                           num_train_timesteps=50)).eval()
    cond = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    schedule, labels = LinearSchedule(50, 1e-6, 0.02), torch.tensor([1])
    seen = []

    def denoise(y, g, k):
        seen.append(k.tolist())
        return denoiser(cond.repeat(len(y), 1, 1, 1), y, g, k)

    out = sample_stain(denoise, (1, 5, 8, 8), schedule, labels, null_label=2, sampler="ddim", steps=3, guidance=3.0,
                       generator=torch.Generator().manual_seed(2))
    assert seen == [[1, 2]] * 3 and out.network_evaluations == 6
    plain = sample_stain(denoise, (1, 5, 8, 8), schedule, labels, null_label=2, sampler="ddim", steps=3,
                         generator=torch.Generator().manual_seed(2))
    assert plain.network_evaluations == 3 and (plain.images - out.images).abs().max() > 1e-4
