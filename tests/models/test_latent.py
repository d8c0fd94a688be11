"""The latent diffusion family: autoencoder round trip and scaling, denoiser conditioning, guidance, strict loading,
fit between the two networks and seeded sampling with fixed numbers."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from locscope.errors import CheckpointError
from locscope.models.latent import (
    LatentAutoencoder, LatentAutoencoderConfig, LatentDenoiser, LatentDiffusion, LatentDiffusionConfig,
    PatchDiscriminator, SequenceCondition, check_fit, count_parameters, fit_latent_scaling, latent_proteoscope_config,
    latent_tiny_config,
)
from locscope.diffusion.samplers import classifier_free_guidance

SEQUENCES = ["MPKKKRKVEDAGLSWKL", "MLSRAVCGTSRQLAPVLGYLGSRQ"]


def small_configs(**overrides) -> tuple[LatentAutoencoderConfig, LatentDiffusionConfig]:
    autoencoder = LatentAutoencoderConfig(image_channels=("protein",), image_size=16, block_channels=(8, 8, 8),
                                          layers_per_block=1, latent_channels=4, norm_groups=4, mid_attention=False)
    denoiser = LatentDiffusionConfig(
        image_size=16, image_channels=("protein",), latent_channels=4, latent_size=4,
        landmark_channels=("er", "microtubules"), block_channels=(8, 16), attention_levels=(False, True),
        layers_per_block=1, attention_head_dim=8, norm_groups=4, cross_attention_dim=16, sequence_dim=8,
        sequence_layers=1, max_sequence_length=64, fraction_classes=("nucleoplasm", "cytosol", "mitochondria"),
        num_train_timesteps=100, schedule_base=4,
    )
    return autoencoder, dataclasses.replace(denoiser, **overrides)


def build(seed: int = 0, **overrides) -> LatentDiffusion:
    torch.manual_seed(seed)
    autoencoder_config, denoiser_config = small_configs(**overrides)
    model = LatentDiffusion(LatentAutoencoder(autoencoder_config), LatentDenoiser(denoiser_config)).eval()
    with torch.no_grad():  # move the zero-initialised placeholders / null vectors off zero
        for name, p in model.named_parameters():
            if "null" in name or "placeholder" in name:
                p.add_(torch.randn_like(p) * 0.5)
    return model


@pytest.fixture(scope="module")
def model() -> LatentDiffusion:
    return build()


def cells(batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, 16, 16, generator=g) * 2 - 1, torch.rand(batch, 2, 16, 16, generator=g) * 2 - 1


def test_autoencoder_round_trip_shapes_and_scaling(model):
    ae = model.autoencoder
    images = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    z = ae.encode(images)
    assert z.shape == (6, 4, 4, 4)
    assert ae.decode(z).shape == (6, 1, 16, 16)
    out = ae(images, generator=torch.Generator().manual_seed(0))
    assert out.reconstruction.shape == images.shape and out.kl.shape == (6,)
    # the measured standardisation makes the latents zero-mean, unit-variance on that data
    fitted = dataclasses.replace(ae.config)
    try:
        ae.config = fit_latent_scaling(ae, [images[:3], images[3:]])
        z = ae.encode(images)
        assert abs(z.mean().item()) < 1e-5 and abs(z.std(unbiased=False).item() - 1) < 1e-4
        # decode undoes the scaling: the image of a latent does not depend on the stored factors
        raw = ae.posterior(images).mode()
        assert torch.allclose(ae.decode(z), ae.vae.decode(raw).sample, atol=1e-5)
    finally:
        ae.config = fitted
    with pytest.raises(ValueError, match="batches is empty"):
        fit_latent_scaling(ae, [])
    with pytest.raises(ValueError, match=r"images must be \(B, 1, H, W\)"):
        ae.encode(torch.zeros(1, 2, 16, 16))


def test_sequence_and_landmarks_change_the_prediction(model):
    net = model.denoiser
    distance, landmarks = cells()
    spatial = net.spatial_conditions(distance, landmarks)
    assert spatial.shape == (2, 3, 4, 4)
    x = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([30, 70])
    tokens = net.tokenize(SEQUENCES)[0]
    swapped = net.tokenize(SEQUENCES[::-1])[0]
    with torch.no_grad():
        v = net(x, t, spatial, net.encode_sequence(tokens))
        v_swapped = net(x, t, spatial, net.encode_sequence(swapped))
        absent = net.spatial_conditions(distance, landmarks, torch.zeros(2, 2, dtype=torch.bool))
        v_absent = net(x, t, absent, net.encode_sequence(tokens))
    assert v.shape == (2, 4, 4, 4)
    assert (v - v_swapped).abs().mean() > 1e-3
    assert (v - v_absent).abs().mean() > 1e-3
    # absent landmarks are exactly the learned placeholder
    assert torch.equal(absent[:, 1:], net.landmark_placeholder.expand(2, -1, -1, -1))
    # a dropped sequence is the null condition, whatever the sequence was
    dropped = net.encode_sequence(tokens, drop_sequence=torch.tensor([True, True]))
    null = net.null_condition(2)
    assert torch.equal(dropped.pooled, null.pooled)
    assert torch.equal(dropped.tokens[:, :1], null.tokens) and dropped.mask.sum().item() == 2


def test_guidance_scale_one_is_the_conditional_prediction(model):
    net = model.denoiser
    distance, landmarks = cells()
    spatial = net.spatial_conditions(distance, landmarks)
    x = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(4))
    t = torch.tensor([10, 90])
    with torch.no_grad():
        condition = net.encode_sequence(net.tokenize(SEQUENCES)[0])
        conditional = net(x, t, spatial, condition)
        both = SequenceCondition.concat(condition, net.null_condition(2))
        v = net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([spatial, spatial]), both)
    guided_one = classifier_free_guidance(*v.chunk(2), 1.0)
    assert torch.allclose(guided_one, conditional, atol=1e-5)
    assert not torch.allclose(classifier_free_guidance(*v.chunk(2), 3.0), conditional, atol=1e-3)


def test_top_placement_conditions_every_sample_on_the_most_likely_compartment(model):
    distance, landmarks = cells()
    tokens = model.tokenize(SEQUENCES)[0]
    fractions = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    one_hot = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])

    def run(**options):
        return model.sample(distance, tokens, landmarks, samples=2, steps=2, sampler="ddim",
                            generator=torch.Generator().manual_seed(3), **options)[0]

    top = run(fractions=fractions, placement="top")
    assert torch.allclose(top, run(fractions=one_hot), atol=1e-5)
    assert not torch.allclose(top, run(fractions=fractions), atol=1e-4)
    # without given fractions, the fraction head's distribution is placed
    head = model.predict_fractions(tokens)
    expected = torch.nn.functional.one_hot(head.argmax(1), 3).float()
    assert torch.allclose(run(placement="top"), run(fractions=expected), atol=1e-5)
    with pytest.raises(ValueError, match="placement"):
        run(placement="middle")


def test_sampling_is_seeded_with_fixed_numbers(model):
    distance, landmarks = cells()
    tokens = model.tokenize(SEQUENCES)[0]

    def run(guidance, sampler="ddim", steps=4, seed=0):
        return model.sample(distance, tokens, landmarks, samples=2, sampler=sampler, steps=steps, guidance=guidance,
                            generator=torch.Generator().manual_seed(seed))

    images, nfe = run(3.0)
    assert images.shape == (4, 1, 16, 16) and nfe == 8
    assert images.min() >= -1 and images.max() <= 1
    again, _ = run(3.0)
    assert torch.equal(images, again)
    fast, nfe_fast = run(1.0, "dpmsolver", 3)
    assert nfe_fast == 3
    # fixed numbers: a change of the schedule, the samplers, the guidance or the conditioning paths shows here
    assert torch.allclose(images[:, 0, 8, 8], torch.tensor([-0.388211, -0.660981, -0.141088, 0.520670]), atol=1e-4)
    assert torch.allclose(fast[:, 0, 8, 8], torch.tensor([-0.346444, -0.226539, -0.251280, 0.120734]), atol=1e-4)


def test_strict_loading_and_fit(tmp_path, model):
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["class"] == "LatentDiffusionConfig"
    loaded = LatentDiffusion.from_pretrained(tmp_path / "m")
    from locscope.models import hub

    assert hub.resolve(tmp_path / "m").family == "latent"
    assert isinstance(hub.load(tmp_path / "m", families=("latent",)), LatentDiffusion)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    # a denoiser trained for another autoencoder: refused with the mismatch named
    LatentDenoiser(small_configs(latent_channels=8)[1]).save_pretrained(tmp_path / "bad")
    model.autoencoder.save_pretrained(tmp_path / "bad" / "autoencoder")
    with pytest.raises(CheckpointError, match="latent_channels: autoencoder 4 vs denoiser 8"):
        LatentDiffusion.from_pretrained(tmp_path / "bad")
    with pytest.raises(CheckpointError, match="image_size: autoencoder 16 vs denoiser 32"):
        check_fit(model.autoencoder.config, dataclasses.replace(model.config, image_size=32))
    # weights of a different shape: every bad key named, nothing silently kept random
    LatentDenoiser(small_configs(cross_attention_dim=32)[1]).save_pretrained(tmp_path / "big")
    shutil.copy(tmp_path / "big" / "model.safetensors", tmp_path / "m" / "model.safetensors")
    with pytest.raises(CheckpointError, match="misshaped keys: .*null_pooled"):
        LatentDiffusion.from_pretrained(tmp_path / "m")


def test_configs_and_discriminator():
    tiny_ae, tiny = latent_tiny_config()
    check_fit(tiny_ae, tiny)
    assert (tiny_ae.image_size, tiny_ae.latent_size, tiny.latent_size) == (64, 16, 16)
    published_ae, published = latent_proteoscope_config()
    check_fit(published_ae, published)
    assert (published_ae.latent_size, published_ae.block_channels) == (25, (128, 256, 512))
    assert count_parameters(LatentAutoencoder(published_ae)) > 30_000_000
    with pytest.raises(ValueError, match="multiple of the downsampling factor 4"):
        LatentAutoencoderConfig(image_size=30)
    with pytest.raises(ValueError, match="the nucleus enters as its distance map"):
        LatentDiffusionConfig(landmark_channels=("nucleus",))
    logits = PatchDiscriminator(1, width=8, layers=2)(torch.zeros(2, 1, 16, 16))
    assert logits.shape == (2, 1, 2, 2)


def test_generate_with_a_latent_model(tmp_path, model, capsys):
    from pathlib import Path

    import numpy as np
    import tifffile
    from PIL import Image

    from locscope.cli import main

    def run(args):
        try:
            main(args)
        except SystemExit as exit_:
            return int(exit_.code or 0)
        return 0

    model.save_pretrained(tmp_path / "m")
    cell = Path(__file__).resolve().parents[2] / "src" / "locscope" / "assets" / "examples" / "landmarks" / "cell_1"
    args = ["generate", "--sequence", SEQUENCES[0], "--landmarks", str(cell), "--model", str(tmp_path / "m"),
            "--steps", "2", "--samples", "2", "--device", "cpu"]
    assert run(args + ["--out", str(tmp_path / "a")]) == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["family"] == "latent" and summary["guidance"] == 3.0
    assert summary["landmark_channels_present"] == ["nucleus", "er", "microtubules"]
    assert summary["network_evaluations_per_image"] == 4  # 2 DPM-Solver++ steps x (conditional + unconditional)
    entry = summary["sequences"][0]
    assert entry["compartment_fractions"] and entry["conditioned_on"]["source"] == "fraction head"
    assert tifffile.imread(tmp_path / "a" / "sequence" / "sample_1.tif").shape == (16, 16)
    # without the nucleus the distance map cannot be made: a one-line error
    Image.fromarray(np.full((16, 16), 100, np.uint8)).save(tmp_path / "ER.png")
    code = run(["generate", "--sequence", "MKV", "--landmarks", str(tmp_path / "ER.png"), "--model",
                str(tmp_path / "m"), "--out", str(tmp_path / "b")])
    assert code == 2 and "no nucleus image" in capsys.readouterr().err
    assert run(args + ["--out", str(tmp_path / "c"), "--placement", "top"]) == 0
    placed = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert placed["placement"] == "top" and summary["placement"] == "soft"


def test_localize_design_explain_run_on_a_latent_model(tmp_path, model):
    """The shared pipelines take a latent diffusion model: its standard cells carry the nucleus (for the distance map);
    design reads an image with the latent diffusion classifier; no masked-residue head, no nucleus: one-line errors."""
    from pathlib import Path

    from locscope.errors import ArgumentError
    from locscope.pipelines.design import design
    from locscope.pipelines.explain import explain
    from locscope.pipelines.localize import LocalizationPredictor, generator_landmarks, localize, noise_shape

    model.save_pretrained(tmp_path / "m")
    assert generator_landmarks(model) == ("nucleus", "er", "microtubules") and noise_shape(model) == (4, 4, 4)
    prediction, text = localize(SEQUENCES, ["a", "b"], model=str(tmp_path / "m"), samples=2, steps=2, device="cpu",
                                progress=False)
    assert prediction.level3.shape == (2, 7) and text.splitlines()[1].split(",")[3] == "combined"
    assert np.allclose(prediction.level3.sum(1), 1.0, atol=1e-3)
    image = LocalizationPredictor(model, "image", samples=2, steps=2).predict(SEQUENCES[:1], keep_images=True)
    assert image.images.shape == (1, 2, 16, 16)
    # the read-out samples a latent model as generate does (8 DPM-Solver++ / 50 DDIM steps, guidance 3), CELL-Diff
    # at its own defaults, and given values stand
    from locscope.pipelines.localize import sampling_defaults

    assert sampling_defaults(model) == (8, 3.0) and sampling_defaults(model, "ddim") == (50, 3.0)
    assert sampling_defaults(model, "dpmsolver", 4, 1.5) == (4, 1.5)
    predictor = LocalizationPredictor(model, "image", samples=1)
    assert (predictor.steps, predictor.guidance) == (8, 3.0)
    result = design(tmp_path / "d", model=str(tmp_path / "m"), target="mitochondria", length=30, candidates=3,
                    score_samples=2, steps=2, device="cpu", progress=False)
    assert len(result.candidates) == 3 and (tmp_path / "d" / "candidates.csv").is_file()
    cell = Path(__file__).resolve().parents[2] / "src" / "locscope" / "assets" / "examples" / "landmarks" / "cell_1"
    files = sorted(cell.glob("*.png"))
    shown = design(tmp_path / "i", model=str(tmp_path / "m"), image=cell / "ER.png", landmarks=files, length=30,
                   candidates=2, score_samples=1, steps=2, device="cpu", progress=False)
    assert shown.image_compartments and abs(sum(shown.image_compartments.values()) - 1.0) < 0.5
    with pytest.raises(ArgumentError, match="no masked-residue head"):
        design(tmp_path / "x", model=str(tmp_path / "m"), target="nucleus", length=30, proposer="celldiff",
               device="cpu", progress=False)
    with pytest.raises(ArgumentError, match="no nucleus image"):
        design(tmp_path / "y", model=str(tmp_path / "m"), image=cell / "ER.png",
               landmarks=[f for f in files if f.name != "nucleus.png"], length=30, device="cpu", progress=False)
    scan, _ = explain(SEQUENCES[1], tmp_path / "e", model=str(tmp_path / "m"), samples=1, steps=2, window=4,
                      stride=4, device="cpu", progress=False)
    assert scan.effects.shape == (len(scan.starts),) and (tmp_path / "e" / "wild_type.png").is_file()


def test_bundled_latent_tiny(tmp_path):
    """The bundled latent-tiny loads strictly through the hub, its two networks fit, and one short generation on the
    example cell gives a 64 x 64 image in range whose sequence-only heads place a nuclear protein in the nucleus (or
    its nucleoli)."""
    from locscope.models import hub
    from locscope.pipelines.readout import sequence_head_probabilities, LEVEL3_CLASSES

    ref = hub.resolve("latent-tiny")
    assert ref.family == "latent" and ref.bundled
    model = ref.load("cpu")
    assert isinstance(model, LatentDiffusion) and model.config.image_size == 64 and model.noise_shape == (4, 16, 16)
    assert model.config.layout_prior and model.denoiser.unet.conv_in.in_channels == 4 + 3 + 1
    size = (ref.directory / "model.safetensors").stat().st_size + \
        (ref.directory / "autoencoder" / "model.safetensors").stat().st_size
    assert size <= 20 * 2 ** 20
    tokens = model.tokenize(["MPKKKRKVEDAGLSWKLPKKKRKVGSSGAAAGSS"])[0]
    level3, _ = sequence_head_probabilities(model, tokens)
    nuclear = [LEVEL3_CLASSES.index("nucleus"), LEVEL3_CLASSES.index("nucleoli")]
    # the nucleus or its nucleoli (heads refitted on real proteins: 0.68, where the grammar-trained ones said 0.94)
    assert int(level3[0].argmax()) in nuclear and float(level3[0, nuclear].sum()) > 0.6
    landmarks = torch.zeros(1, 3, 64, 64) - 1
    landmarks[:, 0, 20:44, 20:44] = 1.0  # a square nucleus
    images, nfe = model.sample_in_cells(landmarks, tokens, sampler="dpmsolver", steps=2, guidance=3.0,
                                        generator=torch.Generator().manual_seed(0))
    assert images.shape == (1, 1, 64, 64) and nfe == 4
    assert torch.isfinite(images).all() and images.min() >= -1 and images.max() <= 1


def layout_model(seed: int = 0) -> LatentDiffusion:
    """A layout-prior model: 16 x 16 images, 2x autoencoder, 8 x 8 latents (the layout U-Net's 4 levels)."""
    torch.manual_seed(seed)
    autoencoder = LatentAutoencoderConfig(image_channels=("protein",), image_size=16, block_channels=(8, 8),
                                          layers_per_block=1, latent_channels=4, norm_groups=4, mid_attention=False)
    denoiser = small_configs(latent_size=8, schedule_base=8, layout_prior=True, layout_width=4)[1]
    return LatentDiffusion(LatentAutoencoder(autoencoder), LatentDenoiser(denoiser)).eval()


def test_layout_prior_maps_mixed_by_the_condition():
    model = layout_model()
    net = model.denoiser
    distance, landmarks = cells()
    spatial = net.spatial_conditions(distance, landmarks)
    assert spatial.shape == (2, 3 + 3, 8, 8)  # distance map, er, microtubules, one map per fraction class
    maps, membership = net.layout_maps(spatial[:, :3])
    assert torch.equal(spatial[:, 3:], maps) and membership.shape == (2, 3, 8, 8) and (maps >= 0).all()
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([20, 60])
    tokens = net.tokenize(SEQUENCES)[0]
    # the U-Net's last input layer channel reads the expected image; make it count in this untrained network
    with torch.no_grad():
        net.unet.conv_in.weight[:, -1].normal_(generator=torch.Generator().manual_seed(6))
        one_hot = [net(x, t, spatial, net.encode_sequence(tokens, fractions=torch.eye(3)[[k, k]]))
                   for k in range(3)]
        assert (one_hot[0] - one_hot[1]).abs().mean() > 1e-3
        # the expected image: background + the chosen compartment's map; a dropped condition gives the background
        expected = net.mix_layout(maps, torch.eye(3)[[0, 2]])
        background = 2 * net.layout.background - 1
        assert torch.allclose(expected[0, 0], 2 * (maps[0, 0] + net.layout.background) - 1)
        assert torch.allclose(net.mix_layout(maps, torch.zeros(2, 3)), background.expand(2, 1, 8, 8))
        # guidance at scale 1 is still the conditional prediction
        condition = net.encode_sequence(tokens)
        both = SequenceCondition.concat(condition, net.null_condition(2))
        v = net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([spatial, spatial]), both)
        assert torch.allclose(classifier_free_guidance(*v.chunk(2), 1.0), net(x, t, spatial, condition), atol=1e-5)
    images, nfe = model.sample(distance, tokens, landmarks, sampler="ddim", steps=4, guidance=3.0,
                               generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 1, 16, 16) and nfe == 8
    assert torch.allclose(images[:, 0, 8, 8], torch.tensor([0.199161, 0.265797]), atol=1e-4)
    with pytest.raises(ValueError, match=r"conditions must be \(B, 3, 8, 8\)"):
        net.layout_maps(spatial)
    with pytest.raises(ValueError, match="no layout prior"):
        build().denoiser.layout_maps(spatial[:, :3])
    with pytest.raises(ValueError, match="needs fraction_classes"):
        small_configs(fraction_classes=(), layout_prior=True)
    with pytest.raises(ValueError, match="latent_size divisible by 8"):
        small_configs(layout_prior=True)
