"""The CELL-Diff network: shapes, conditioning paths, strict checkpoints, configs and the base parameter count."""

from __future__ import annotations

import json

import pytest
import torch

from locscope.errors import CheckpointError
from locscope.models.celldiff import (
    CellDiff, CellDiffConfig, celldiff_base_config, celldiff_tiny_config, config_by_name, count_parameters,
)


def small_config(**overrides) -> CellDiffConfig:
    base = dict(image_size=16, channels=(8, 8, 16, 16), transformer_width=32, transformer_layers=1, sequence_dim=16,
                sequence_layers=1, attention_groups=(False, True, True), attention_grid=2)
    return celldiff_tiny_config(**{**base, **overrides})


@pytest.fixture(scope="module")
def model() -> CellDiff:
    torch.manual_seed(0)
    net = CellDiff(small_config()).eval()
    with torch.no_grad():  # leave the zero-initialised output layers non-zero so outputs depend on inputs
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return net


def inputs(batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, 16, 16, generator=g), torch.randint(0, 1000, (batch,), generator=g), \
        torch.randn(batch, 3, 16, 16, generator=g)


def test_forward_shapes(model):
    x, t, lm = inputs()
    tokens, _ = model.tokenize(["MPKKKRKVEDA", "MLSRAVCG"])
    out = model(x, t, lm, tokens)
    assert out.image.shape == (2, 1, 16, 16)
    assert out.residue_logits.shape == (2, 11, len(model.vocab))
    assert out.compartment_logits.shape == (2, 7)
    # the sequence head never proposes padding or the mask token
    assert out.residue_logits[..., model.pad_token_id].max() < -1e3
    assert out.residue_logits[..., model.mask_token_id].max() < -1e3


def test_batch_independence_and_padding(model):
    x, t, lm = inputs()
    tokens, _ = model.tokenize(["MPKKKRKVEDA", "MLSRAVCG"])
    both = model(x, t, lm, tokens).image
    single = model(x[1:], t[1:], lm[1:], model.tokenize(["MLSRAVCG"])[0]).image
    assert torch.allclose(both[1:], single, atol=1e-5)


def test_sequence_landmarks_and_dropout_change_the_prediction(model):
    x, t, lm = inputs(1)
    a = model(x, t, lm, model.tokenize(["MPKKKRKVEDA"])[0]).image
    b = model(x, t, lm, model.tokenize(["MLSRLLAVVLG"])[0]).image
    assert (a - b).abs().max() > 1e-4
    dropped = model(x, t, lm, model.tokenize(["MPKKKRKVEDA"])[0], drop_sequence=torch.tensor([True])).image
    dropped2 = model(x, t, lm, model.tokenize(["MLSRLLAVVLG"])[0], drop_sequence=torch.tensor([True])).image
    assert torch.allclose(dropped, dropped2, atol=1e-6)  # the null condition ignores the sequence
    absent = model(x, t, lm, model.tokenize(["MPKKKRKVEDA"])[0], landmark_present=torch.tensor([[True, False, False]]))
    absent2 = model(x, t, lm * 5, model.tokenize(["MPKKKRKVEDA"])[0],
                    landmark_present=torch.tensor([[True, False, False]]))
    assert not torch.allclose(absent.image, a)
    # an absent channel's values are ignored (placeholder), the present nucleus is not
    lm2 = lm.clone()
    lm2[:, 1:] = 7.0
    absent3 = model(x, t, lm2, model.tokenize(["MPKKKRKVEDA"])[0], landmark_present=torch.tensor([[True, False, False]]))
    assert torch.allclose(absent.image, absent3.image, atol=1e-6)
    assert not torch.allclose(absent.image, absent2.image)


def test_long_sequences_are_pooled_into_segments(model):
    x, t, lm = inputs(1)
    seq = "M" + "ACDEFGHIKLMNPQRSTVWY" * 30
    tokens, _ = model.tokenize([seq])
    assert tokens.shape[1] == model.config.max_sequence_length  # termini kept, middle cropped
    context = model.encode_sequence(tokens)
    assert context.tokens.shape[1] == model.config.max_sequence_tokens
    out = model(x, t, lm, tokens)
    assert out.residue_logits.shape[1] == model.config.max_sequence_length


def test_save_and_load_strict(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    loaded = CellDiff.from_pretrained(tmp_path / "m")
    x, t, lm = inputs()
    tokens, _ = model.tokenize(["MPKKKRKVEDA", "MLSRAVCG"])
    assert torch.equal(model(x, t, lm, tokens).image, loaded(x, t, lm, tokens).image)
    # a checkpoint of another architecture is refused, naming keys
    other = CellDiff(small_config(transformer_layers=2))
    other.save_pretrained(tmp_path / "other")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "other" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="unexpected keys: blocks.1"):
        CellDiff.from_pretrained(tmp_path / "other")


def test_config_validation_and_names():
    assert config_by_name("celldiff-tiny").image_size == 32
    with pytest.raises(ValueError, match="accepted names are celldiff-base, celldiff-tiny"):
        config_by_name("celldiff-huge")
    with pytest.raises(ValueError, match="multiple of patch_size"):
        CellDiffConfig(image_size=64, patch_size=16)


def test_celldiff_base_parameter_count():
    with torch.device("meta"):  # count without allocating 2 GB
        base = CellDiff(celldiff_base_config())
    assert count_parameters(base) == 572_682_591
    assert base.config.image_size == 256 and base.config.patch_size == 8 and base.config.transformer_layers == 24


def test_compartment_bottleneck_conditions_the_image_path():
    torch.manual_seed(0)
    net = CellDiff(small_config(fraction_classes=("nucleoplasm", "cytosol", "mitochondria"))).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    x, t, lm = inputs(2)
    tokens, _ = net.tokenize(["MPKKKRKVEDA", "MPKKKRKVEDA"])
    nucleus, cytosol = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).chunk(2)
    with torch.no_grad():
        predicted = net(x, t, lm, tokens)
        forced = net(x, t, lm, tokens, fractions=torch.cat([nucleus, cytosol]), use_fractions=torch.tensor([True, False]))
        other = net(x, t, lm, tokens, fractions=torch.cat([cytosol, cytosol]))
    assert predicted.fraction_logits.shape == (2, 3)
    # row 0 forced to a given distribution changes; row 1 keeps the head's prediction
    assert not torch.allclose(forced.image[0], predicted.image[0], atol=1e-6)
    assert torch.allclose(forced.image[1], predicted.image[1], atol=1e-6)
    assert not torch.allclose(other.image[0], forced.image[0], atol=1e-6)
    # the head's distribution is what the image path sees by default; a dropped sequence sees zeros
    context = net.encode_sequence(tokens, drop_sequence=torch.tensor([False, True]))
    assert torch.allclose(context.condition[0], predicted.fraction_logits[0].softmax(-1), atol=1e-6)
    assert torch.all(context.condition[1] == 0)
    assert torch.allclose(net.predict_fractions(tokens).sum(1), torch.ones(2))


def test_models_without_the_bottleneck_refuse_fractions(model):
    from locscope.diffusion.celldiff_sampler import sample_protein_images

    seed_like = CellDiff(small_config(fraction_classes=(), resnet_time_norm="default")).eval()
    assert seed_like.encode_sequence(seed_like.tokenize(["MPK"])[0]).condition.shape == (1, 0)
    with pytest.raises(ValueError, match="fraction head"):
        seed_like.predict_fractions(seed_like.tokenize(["MPK"])[0])
    with pytest.raises(ValueError, match="bottleneck"):
        sample_protein_images(seed_like, torch.zeros(1, 3, 16, 16), seed_like.tokenize(["MPK"])[0], steps=2,
                              fractions=torch.ones(1, 3))
    with pytest.raises(ValueError, match="resnet_time_norm"):
        small_config(resnet_time_norm="film")


def test_schedule_base_shifts_the_noise_schedule():
    from locscope.diffusion.celldiff_sampler import schedule_for

    seed_like, noisier = CellDiff(small_config(schedule_base=64)), CellDiff(small_config(schedule_base=8))
    # image_size 16: base 64 shifts logSNR by +2 log 4, base 8 by -2 log 2; every step is noisier with the smaller base
    difference = schedule_for(seed_like).logsnr - schedule_for(noisier).logsnr
    inside = (schedule_for(seed_like).logsnr.abs() < 14) & (schedule_for(noisier).logsnr.abs() < 14)
    assert torch.allclose(difference[inside], torch.full_like(difference[inside], 2 * torch.log(torch.tensor(8.0)).item()),
                          atol=1e-5)


def test_placement_top_and_sample_condition_on_one_compartment():
    from locscope.diffusion.samplers import place_condition

    distribution = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.0, 0.5]])
    assert torch.equal(place_condition(distribution, "top", None), torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    draws = place_condition(distribution.repeat(500, 1), "sample", torch.Generator().manual_seed(0))
    assert torch.all(draws.sum(1) == 1)
    first, second = draws[0::2].mean(0), draws[1::2].mean(0)
    assert torch.allclose(first, distribution[0], atol=0.06) and second[1] == 0  # never a zero-probability compartment


def test_layout_prior_mixes_compartment_maps_into_an_input_channel():
    classes = ("nucleoplasm", "cytosol", "mitochondria")
    torch.manual_seed(0)
    net = CellDiff(small_config(fraction_classes=classes, layout_prior=True, layout_width=4)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    x, t, lm = inputs(2)
    nucleus, cytosol = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    fractions = torch.stack([nucleus, cytosol])
    expected = net.expected_image(lm, fractions)
    assert expected.shape == (2, 1, 16, 16)
    maps, membership = net.layout(lm)
    assert maps.shape == membership.shape == (2, 3, 16, 16) and bool((maps >= 0).all())
    assert torch.equal(net.compartment_membership(lm), membership)
    # linear in the fractions: an even mix is the mean of the two pure images
    both = net.expected_image(lm, torch.stack([(nucleus + cytosol) / 2] * 2))
    pure = torch.stack([net.expected_image(lm, torch.stack([f] * 2)) for f in (nucleus, cytosol)]).mean(0)
    assert torch.allclose(both, pure, atol=1e-5)
    # a dropped condition (zeros) is the background alone, the same in every pixel
    background = net.expected_image(lm, torch.zeros(2, 3))
    assert torch.allclose(background, background[:, :, :1, :1].expand_as(background))
    # the denoiser sees the mixed image: other fractions, other prediction
    tokens, _ = net.tokenize(["MPKKKRKVEDA", "MPKKKRKVEDA"])
    with torch.no_grad():
        a = net(x, t, lm, tokens, fractions=torch.stack([nucleus, nucleus])).image
        b = net(x, t, lm, tokens, fractions=torch.stack([cytosol, cytosol])).image
    assert not torch.allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="layout_prior"):
        small_config(fraction_classes=(), layout_prior=True)
    with pytest.raises(ValueError, match="no layout prior"):
        CellDiff(small_config()).expected_image(lm, fractions)


def test_attention_runs_in_fp32_under_cpu_bf16_autocast(model):
    from diffusers.models.attention_processor import Attention

    seen = []
    hooks = [module.register_forward_pre_hook(lambda _, args, kwargs: seen.append(args[0].dtype), with_kwargs=True)
             for module in model.modules() if isinstance(module, (Attention, torch.nn.MultiheadAttention))]
    x, t, lm = inputs()
    tokens, _ = model.tokenize(["MPKKKRKVEDA", "MLSRAVCG"])
    try:
        with torch.no_grad():
            reference = model(x, t, lm, tokens).image
            with torch.autocast("cpu", dtype=torch.bfloat16):
                mixed = model(x, t, lm, tokens).image
    finally:
        for hook in hooks:
            hook.remove()
    # every cross-attention block and transformer block, in both passes
    assert len(hooks) == 5 and seen == [torch.float32] * 2 * len(hooks)
    assert mixed.dtype == torch.bfloat16 and torch.allclose(mixed.float(), reference, atol=0.05)


def test_image_rows_run_the_up_path_for_those_rows_only(model):
    x, t, lm = inputs(3)
    tokens, _ = model.tokenize(["MPKKKRKVEDA", "MLSRAVCG", "MAAAGSGSWW"])
    rows = torch.tensor([True, False, True])
    full, part = model(x, t, lm, tokens), model(x, t, lm, tokens, image_rows=rows)
    assert part.image.shape == (2, 1, 16, 16) and torch.allclose(part.image, full.image[rows], atol=1e-5)
    assert torch.allclose(part.residue_logits, full.residue_logits, atol=1e-5)
