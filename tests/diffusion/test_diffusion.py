"""Shifted-cosine schedule, samplers (DDIM / DPM-Solver++) and order-agnostic masked diffusion."""

from __future__ import annotations

import math

import pytest
import torch

from locscope.diffusion.masked import mask_random_residues, masked_residue_loss, sample_one_per_pass
from locscope.diffusion.samplers import classifier_free_guidance, make_scheduler, sample_images
from locscope.diffusion.schedule import ShiftedCosineSchedule, shifted_cosine_logsnr


def test_logsnr_formula_and_shift():
    # logSNR(t) = -2 log tan(t_min + t (t_max - t_min)) + 2 log(64 / size), clipped to +-15
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    t_min, t_max = math.atan(math.exp(-7.5)), math.atan(math.exp(7.5))
    expected = [-2 * math.log(math.tan(t_min + v * (t_max - t_min))) for v in t.tolist()]
    assert shifted_cosine_logsnr(t, 64).tolist() == pytest.approx(expected, abs=1e-9)
    shifted = shifted_cosine_logsnr(t, 256)
    assert shifted[2].item() == pytest.approx(2 * math.log(64 / 256), abs=1e-9)  # the shift at t = 0.5
    assert shifted.min().item() >= -15.0 and shifted.max().item() <= 15.0


def test_schedule_tables_and_v_roundtrip():
    schedule = ShiftedCosineSchedule(image_size=32)
    abar = schedule.alphas_cumprod
    assert abar.shape == (1000,) and bool((abar[1:] < abar[:-1]).all())
    assert abar[0].item() == pytest.approx(1 / (1 + math.exp(-schedule.logsnr[0].item())))
    # cumprod(1 - beta) reproduces alpha_bar (what diffusers rebuilds from trained_betas)
    assert torch.allclose(torch.cumprod(1 - schedule.betas(), 0), abar, rtol=1e-6, atol=1e-12)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    t = torch.tensor([0, 400, 999])
    x_t = schedule.add_noise(x0, noise, t)
    assert torch.allclose(schedule.x0_from_v(x_t, schedule.v_target(x0, noise, t), t), x0, atol=1e-5)


@pytest.mark.parametrize("sampler,steps,tol", [("ddim", 100, 1e-4), ("dpmsolver", 10, 1e-3), ("dpmsolver", 5, 1e-3)])
def test_samplers_recover_the_target_with_an_oracle_denoiser(sampler, steps, tol):
    schedule = ShiftedCosineSchedule(image_size=32)
    target = torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4).repeat(2, 1, 1, 1)

    def oracle(x, t):  # the exact v for a point-mass data distribution at `target`
        abar = schedule.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        eps = (x - abar.sqrt() * target) / (1 - abar).sqrt()
        return abar.sqrt() * eps - (1 - abar).sqrt() * target

    images, nfe = sample_images(oracle, (2, 1, 4, 4), schedule, sampler, steps, torch.Generator().manual_seed(0))
    assert nfe == steps
    assert (images - target).abs().max().item() < tol


def test_sampler_takes_fixed_initial_noise():
    schedule = ShiftedCosineSchedule(image_size=32)

    def shrink(x, t):
        return 0.5 * x

    drawn, _ = sample_images(shrink, (2, 1, 4, 4), schedule, "dpmsolver", 3, torch.Generator().manual_seed(7))
    noise = torch.randn((2, 1, 4, 4), generator=torch.Generator().manual_seed(7))
    given, _ = sample_images(shrink, (2, 1, 4, 4), schedule, "dpmsolver", 3, noise=noise)
    assert torch.equal(drawn, given)
    with pytest.raises(ValueError, match=r"noise must have shape \(2, 1, 4, 4\); got \(1, 1, 4, 4\)"):
        sample_images(shrink, (2, 1, 4, 4), schedule, "dpmsolver", 3, noise=noise[:1])


def test_sampler_names_and_guidance():
    with pytest.raises(ValueError, match="accepted values are ddim, dpmsolver"):
        make_scheduler(ShiftedCosineSchedule(32), "euler")
    c, u = torch.tensor([2.0]), torch.tensor([1.0])
    assert classifier_free_guidance(c, u, 1.0).item() == 2.0
    assert classifier_free_guidance(c, u, 3.0).item() == 4.0


def test_masking_counts_and_loss_weight():
    tokens = torch.arange(3, 13).repeat(4, 1)
    lengths = torch.tensor([10, 5, 1, 7])
    tokens[1, 5:] = 0
    tokens[2, 1:] = 0
    tokens[3, 7:] = 0
    masked_tokens, masked, k = mask_random_residues(tokens, lengths, 1, torch.Generator().manual_seed(0))
    assert torch.equal(masked.sum(1).float(), k)
    assert bool((k >= 1).all()) and bool((k <= lengths.float()).all())
    assert not bool((masked & (tokens == 0)).any())  # padding is never masked
    assert bool((masked_tokens[masked] == 1).all())
    # uniform logits: CE per masked residue = log V, so the 1/k-weighted sum is log V for every row
    logits = torch.zeros(4, 10, 23)
    assert torch.allclose(masked_residue_loss(logits, tokens, masked, k), torch.full((4,), math.log(23)))


def test_one_per_pass_sampler_fills_every_mask():
    tokens = torch.tensor([[5, 1, 1, 7], [1, 6, 0, 0]])

    def logits_fn(t):  # always predicts residue 9
        out = torch.full(t.shape + (23,), -1e4)
        out[..., 9] = 0
        return out

    filled, passes = sample_one_per_pass(logits_fn, tokens, 1, generator=torch.Generator().manual_seed(0))
    assert passes == 2
    assert filled.tolist() == [[5, 9, 9, 7], [9, 6, 0, 0]]
