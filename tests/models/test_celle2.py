"""CELL-E 2: exact agreement with the published code's outputs, token layout, masking schedule, decoding, loading."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest
import torch

from locscope.diffusion.celle2_sampler import decode_image_tokens, top_k_keep
from locscope.errors import CheckpointError, InputError
from locscope.models.celle2 import (
    Celle2,
    Celle2Config,
    celle2_base_config,
    load_published_celle2,
    load_published_vqgan,
    masked_count,
    normalize_nucleus,
    quantize,
    random_mask,
    rotary_table,
    threshold_protein,
)


@pytest.fixture(scope="module")
def golden():
    # Module-scoped (the model is loaded once); same skip/fail rules as the shared_golden fixture.
    from conftest import SHARED, _require

    return _require(SHARED / "golden" / "celle2_tiny")


@pytest.fixture(scope="module")
def published(golden):
    return load_published_celle2(golden / "celle_tiny.yaml")


def load(golden, name):
    return torch.from_numpy(np.load(golden / name))


def tiny_config(**overrides) -> Celle2Config:
    base = dict(image_size=16, vq_base_channels=32, vq_channel_mult=(1, 2), vq_attn_resolutions=(8,),
                vq_latent_channels=8, vq_embed_dim=8, nucleus_codebook_size=16, protein_codebook_size=12,
                text_seq_len=10, text_encoder_layers=1, dim=32, depth=2, heads=2, dim_head=12)
    base.update(overrides)
    return Celle2Config(**base)


# ----------------------------------------------------------------------------------------------------------------------
# Golden agreement
# ----------------------------------------------------------------------------------------------------------------------


def test_vqgan_tokenizer_matches_published(golden):
    tokenizer = load_published_vqgan(golden / "nucleus_vqgan.yaml", golden / "nucleus_vqgan.ckpt")
    nucleus = load(golden, "input_nucleus.npy")
    with torch.no_grad():
        latents = tokenizer.encode(nucleus).latents
        ids = quantize(tokenizer, latents)
        from locscope.models.celle2 import decode_tokens

        decoded = decode_tokens(tokenizer, ids)
    np.testing.assert_allclose(latents.numpy(), np.load(golden / "expected_nucleus_encoder_z.npy"), atol=2e-5)
    np.testing.assert_array_equal(ids.numpy(), np.load(golden / "expected_nucleus_token_ids.npy"))
    np.testing.assert_allclose(decoded.numpy(), np.load(golden / "expected_nucleus_vqgan_decoded.npy"), atol=5e-5)


def test_nucleus_normalisation_matches_published(golden):
    raw = load(golden, "input_nucleus_uint8.npy").float()[None, None] / 255.0
    np.testing.assert_allclose(normalize_nucleus(raw).numpy(), np.load(golden / "input_nucleus.npy"), atol=1e-6)


def test_published_layout_and_rotary_table(published, golden):
    cfg = published.config
    assert (cfg.text_len, cfg.seq_len, cfg.total_tokens) == (26, 539, 164)
    assert (cfg.nucleus_offset, cfg.protein_offset) == (34, 99)
    assert (published.protein_mask_id, published.text_mask_id) == (64, 32)
    np.testing.assert_array_equal(published.logits_mask.numpy(), np.load(golden / "logits_mask.npy")[0])
    expected = np.load(golden / "transformer_pos_emb.npy")
    np.testing.assert_array_equal(rotary_table(27, 16, 21).numpy(), expected)
    np.testing.assert_array_equal(published.rotary.numpy(), expected)
    tokens = published.tokenize(["MSPKKKRKVEDPGSLEHWC"])
    np.testing.assert_array_equal(tokens.numpy(), np.load(golden / "input_tokens.npy"))


def test_forward_logits_match_published(published, golden):
    text = load(golden, "input_tokens.npy")
    allowed = ~np.load(golden / "logits_mask.npy")
    with torch.no_grad():
        nucleus = published.encode_nucleus(load(golden, "input_nucleus.npy"))
        np.testing.assert_array_equal(nucleus.numpy(), np.load(golden / "expected_nucleus_token_ids.npy"))
        first = published(text, nucleus, torch.full_like(nucleus, published.protein_mask_id)).logits.numpy()
        second = published(load(golden, "input2_tokens.npy"), nucleus, load(golden, "input2_image_tokens.npy")).logits
    expected = np.load(golden / "expected_forward_logits.npy")
    np.testing.assert_allclose(first[allowed], expected[allowed], atol=1e-5)
    assert np.array_equal(first[~allowed], expected[~allowed])  # -finfo(float32).max
    expected2 = np.load(golden / "expected2_forward_logits.npy")
    np.testing.assert_allclose(second.numpy()[allowed], expected2[allowed], atol=1e-5)
    assert np.abs(expected2 - expected)[allowed].max() > 0.1  # the masked residues and image tokens matter


def test_one_pass_sample_matches_published(published, golden):
    text = load(golden, "input_tokens.npy")
    cfg = published.config
    uniform = load(golden, "input_sample_gumbel_uniform.npy")[:, -cfg.image_seq_len:, cfg.protein_offset:
                                                               cfg.protein_offset + cfg.protein_codebook_size]
    assert top_k_keep(cfg.total_tokens, 0.9) == 16 and top_k_keep(1060, 0.9) == 105
    with torch.no_grad():
        nucleus = published.encode_nucleus(load(golden, "input_nucleus.npy"))
        sample = decode_image_tokens(published, text, nucleus, passes=1, uniforms=[uniform])
        decoded = published.decode_protein(sample.tokens)
        heatmap = published.published_heatmap(sample.logits)
        probability = published.probability_map(sample.probabilities)
    assert sample.passes == 1
    np.testing.assert_array_equal(sample.tokens.numpy(), np.load(golden / "expected_sample_image_token_ids.npy"))
    np.testing.assert_allclose(decoded.numpy(), np.load(golden / "expected_sample_threshold_decoded.npy"), atol=5e-5)
    np.testing.assert_array_equal((decoded > 0.5).float().numpy(), np.load(golden / "expected_sample_binary_image.npy"))
    np.testing.assert_allclose(heatmap.numpy(), np.load(golden / "expected_sample_heatmap.npy"), atol=5e-5)
    assert probability.shape == (1, 1, 64, 64) and 0 <= float(probability.min()) <= float(probability.max()) <= 1


def test_threshold_tokenizer_decode_matches_published(published, golden):
    with torch.no_grad():
        decoded = published.decode_protein(load(golden, "input_threshold_token_ids.npy"))
    np.testing.assert_allclose(decoded.numpy(), np.load(golden / "expected_threshold_vqgan_decoded.npy"), atol=5e-5)


# ----------------------------------------------------------------------------------------------------------------------
# Strict loading
# ----------------------------------------------------------------------------------------------------------------------


def _copy_golden(golden, tmp_path):
    for name in ("celle_tiny.yaml", "nucleus_vqgan.yaml", "threshold_vqgan.yaml", "nucleus_vqgan.ckpt"):
        shutil.copy(golden / name, tmp_path / name)
    return torch.load(golden / "celle_tiny.ckpt", map_location="cpu", weights_only=True)


def test_published_checkpoint_with_a_missing_or_extra_key_is_refused(golden, tmp_path):
    checkpoint = _copy_golden(golden, tmp_path)
    state = checkpoint["state_dict"]
    missing = {k: v for k, v in state.items() if k != "celle.to_logits.1.bias"}
    torch.save({"state_dict": missing}, tmp_path / "celle_tiny.ckpt")
    with pytest.raises(CheckpointError, match="missing keys: to_logits.bias"):
        load_published_celle2(tmp_path / "celle_tiny.yaml")
    torch.save({"state_dict": {**state, "celle.extra.weight": torch.zeros(1)}}, tmp_path / "celle_tiny.ckpt")
    with pytest.raises(CheckpointError, match="unexpected keys: celle.extra.weight"):
        load_published_celle2(tmp_path / "celle_tiny.yaml")
    wrong_table = dict(state)
    wrong_table["celle.transformer.pos_emb"] = state["celle.transformer.pos_emb"] + 1
    torch.save({"state_dict": wrong_table}, tmp_path / "celle_tiny.ckpt")
    with pytest.raises(CheckpointError, match="transformer.pos_emb"):
        load_published_celle2(tmp_path / "celle_tiny.yaml")


def test_pickled_objects_are_refused_not_executed(golden, tmp_path):
    _copy_golden(golden, tmp_path)

    # Lightning checkpoints may hold hyper-parameters as Python objects, which a weights-only load cannot rebuild
    torch.save({"state_dict": {}, "hyper_parameters": argparse.Namespace(dim=64)}, tmp_path / "celle_tiny.ckpt")
    with pytest.raises(InputError, match="weights-only"):
        load_published_celle2(tmp_path / "celle_tiny.yaml")


def test_tokenizer_with_a_mismatched_codebook_is_refused(golden, tmp_path):
    checkpoint = _copy_golden(golden, tmp_path)
    torch.save(checkpoint, tmp_path / "celle_tiny.ckpt")
    vq = torch.load(golden / "nucleus_vqgan.ckpt", map_location="cpu", weights_only=True)
    vq["state_dict"]["quantize.embedding.weight"] = vq["state_dict"]["quantize.embedding.weight"][:32]
    torch.save(vq, tmp_path / "small_codebook.ckpt")
    yaml_text = (tmp_path / "celle_tiny.yaml").read_text().replace("condition_model_path: null",
                                                                    "condition_model_path: small_codebook.ckpt")
    (tmp_path / "celle_tiny.yaml").write_text(yaml_text)
    with pytest.raises(CheckpointError, match="codebook"):
        load_published_celle2(tmp_path / "celle_tiny.yaml")
    # the matching tokenizer file is accepted and replaces the checkpoint's copy
    (tmp_path / "celle_tiny.yaml").write_text(yaml_text.replace("small_codebook.ckpt", "nucleus_vqgan.ckpt"))
    assert load_published_celle2(tmp_path / "celle_tiny.yaml").config.nucleus_codebook_size == 64


def test_native_save_and_strict_reload(tmp_path):
    torch.manual_seed(0)
    model = Celle2(tiny_config()).eval()
    model.save_pretrained(tmp_path / "m")
    again = Celle2.from_pretrained(tmp_path / "m")
    text = model.tokenize(["MKKRKV<mask:2>A"])
    nucleus = torch.randint(0, 16, (1, 64))
    protein = torch.full((1, 64), model.protein_mask_id)
    with torch.no_grad():
        assert torch.equal(model(text, nucleus, protein).logits, again(text, nucleus, protein).logits)
    other = Celle2(tiny_config(protein_codebook_size=10))
    other.save_pretrained(tmp_path / "other")
    config_text = (tmp_path / "other" / "config.json").read_text().replace('"protein_codebook_size": 10',
                                                                          '"protein_codebook_size": 12')
    (tmp_path / "other" / "config.json").write_text(config_text)
    with pytest.raises(CheckpointError, match="protein_embedding.weight"):
        Celle2.from_pretrained(tmp_path / "other")


# ----------------------------------------------------------------------------------------------------------------------
# Token layout, masking schedule, decoding
# ----------------------------------------------------------------------------------------------------------------------


def test_token_layout_on_known_numbers():
    cfg = tiny_config()
    # 10 residues | SEP | 8 x 8 nucleus | 8 x 8 protein; columns 23 text | SEP | 16 + mask | 12 + mask
    assert (cfg.fmap_size, cfg.image_seq_len, cfg.text_len, cfg.seq_len) == (8, 64, 10, 139)
    assert (cfg.num_text_tokens, cfg.total_tokens, cfg.nucleus_offset, cfg.protein_offset) == (23, 54, 24, 41)
    model = Celle2(cfg)
    mask = model.logits_mask
    assert mask.shape == (139, 54)
    assert not mask[0, 5] and mask[0, 1] and mask[0, 23]  # residues; never the mask token or SEP
    assert mask[10].sum() == 53 and not mask[10, 23]  # SEP row predicts SEP only
    assert not mask[11, 24] and not mask[74, 39] and mask[74, 40] and mask[75, 39]
    assert not mask[75, 41] and not mask[138, 52] and mask[138, 53]
    assert model.tokenize(["MK<mask:2>"]).tolist() == [[13, 11, 1, 1, 0, 0, 0, 0, 0, 0]]
    with pytest.raises(ValueError, match="limit is 10"):
        model.tokenize(["M" * 11])
    base = celle2_base_config()
    assert (base.seq_len, base.total_tokens, base.image_seq_len) == (1002 + 1 + 512, 33 + 1 + 513 + 513, 256)


def test_masking_schedule_on_known_numbers():
    assert [masked_count(r, 256) for r in (0.0, 0.25, 0.5, 0.75, 0.999)] == [256, 236, 181, 97, 0]
    assert [masked_count(r, 1000, scale=0.15) for r in (0.0, 0.5)] == [150, 106]
    generator = torch.Generator().manual_seed(3)
    allowed = torch.ones(4, 256, dtype=torch.bool)
    allowed[1, 100:] = False
    mask = random_mask(allowed, 1.0, generator)
    r = torch.rand(4, generator=torch.Generator().manual_seed(3))
    expected = [masked_count(ri, n) for ri, n in zip(r.tolist(), [256, 100, 256, 256])]
    assert mask.sum(1).tolist() == expected
    assert not mask[1, 100:].any()


def test_masked_loss_counts_only_masked_positions():
    torch.manual_seed(0)
    model = Celle2(tiny_config(attn_dropout=0.0, ff_dropout=0.0))
    text = model.tokenize(["MKKRKVAGLS"])
    nucleus, protein = torch.randint(0, 16, (2, 64)), torch.randint(0, 12, (2, 64))
    losses = model.masked_loss(text.repeat(2, 1), nucleus, protein, torch.Generator().manual_seed(0))
    expected = (losses["loss_text"] + losses["loss_image"]) / 2
    assert torch.allclose(losses["loss"], expected)
    assert losses["loss_image"] > 0
    losses["loss"].backward()
    assert model.protein_embedding.weight.grad is not None


def test_full_mask_probability_masks_every_image_token_of_that_share_of_rows():
    torch.manual_seed(0)
    model = Celle2(tiny_config(attn_dropout=0.0, ff_dropout=0.0)).eval()
    text = model.tokenize(["MKKRKVAGLS"]).repeat(4, 1)
    nucleus, protein = torch.randint(0, 16, (4, 64)), torch.randint(0, 12, (4, 64))
    seen = []
    original = model.forward

    def spy(text_in, nucleus_in, protein_in):
        seen.append(protein_in == model.protein_mask_id)
        return original(text_in, nucleus_in, protein_in)

    model.forward = spy
    with torch.no_grad():
        default = model.masked_loss(text, nucleus, protein, torch.Generator().manual_seed(5))
        zero = model.masked_loss(text, nucleus, protein, torch.Generator().manual_seed(5), full_mask_probability=0.0)
        model.masked_loss(text, nucleus, protein, torch.Generator().manual_seed(5), full_mask_probability=1.0)
    assert torch.equal(default["loss"], zero["loss"]) and torch.equal(seen[0], seen[1])  # 0: the schedule alone
    assert not seen[0].all(1).any() and seen[2].all()  # the schedule never masked a whole row here; p = 1 masks all


def test_decoding_shape_determinism_and_pass_count():
    torch.manual_seed(0)
    model = Celle2(tiny_config()).eval()
    text = model.tokenize(["MKKRKV", "MLSRAV"])
    nucleus = torch.randint(0, 16, (2, 64))

    def run(passes, seed):
        return decode_image_tokens(model, text, nucleus, passes=passes, generator=torch.Generator().manual_seed(seed))

    one, again, other = run(1, 0), run(1, 0), run(1, 1)
    assert one.tokens.shape == (2, 64) and one.passes == 1
    assert torch.equal(one.tokens, again.tokens) and not torch.equal(one.tokens, other.tokens)
    assert int(one.tokens.max()) < 12 and torch.allclose(one.probabilities.sum(-1), torch.ones(2, 64))
    eight = run(8, 0)
    assert eight.passes == 8 and int(eight.tokens.max()) < 12
    partial = one.tokens.clone()
    partial[:, :10] = model.protein_mask_id
    kept = decode_image_tokens(model, text, nucleus, protein=partial, generator=torch.Generator().manual_seed(0))
    assert torch.equal(kept.tokens[:, 10:], one.tokens[:, 10:])


def test_real_nucleus_images_tokenize_and_codebook_round_trip(golden, shared_data):
    from locscope.io import read_image

    tokenizer = load_published_vqgan(golden / "nucleus_vqgan.yaml", golden / "nucleus_vqgan.ckpt")
    images = []
    for folder in ("hpa/1", "opencell/1", "opencell/nls"):
        record = read_image(shared_data / "celldiff_samples" / folder)
        nucleus = torch.from_numpy(record.channels["nucleus"].astype(np.float32) / 255.0)
        images.append(torch.nn.functional.interpolate(nucleus[None, None], size=64, mode="area"))
    batch = normalize_nucleus(torch.cat(images))
    assert float(batch.abs().amax()) == pytest.approx(1.0)
    with torch.no_grad():
        ids = quantize(tokenizer, tokenizer.encode(batch).latents)
    assert ids.shape == (3, 256) and 0 <= int(ids.min()) and int(ids.max()) < 64
    assert len(torch.unique(ids)) > 3  # different image content -> different codes
    # codebook vectors quantize to themselves (the token side of the round trip)
    codebook = tokenizer.quantize.embedding.weight
    grid = codebook[ids].transpose(1, 2).reshape(3, -1, 16, 16)
    assert torch.equal(quantize(tokenizer, grid), ids)
    protein = read_image(shared_data / "celldiff_samples" / "opencell" / "nls").channels["protein"]
    binary = threshold_protein(torch.from_numpy(protein.astype(np.float32))[None, None])
    assert binary.mean().item() <= 0.5 and set(torch.unique(binary).tolist()) <= {0.0, 1.0}


def test_a_shorter_text_stream_keeps_the_image_positions():
    torch.manual_seed(0)
    model = Celle2(tiny_config(attn_dropout=0.0, ff_dropout=0.0)).eval()
    full, trimmed = model.tokenize(["MKKRKV"]), model.tokenize(["MKKRKV"], trim=True)
    assert trimmed.shape == (1, 6) and torch.equal(full[:, :6], trimmed)
    nucleus, protein = torch.randint(0, 16, (1, 64)), torch.full((1, 64), model.protein_mask_id)
    with torch.no_grad():
        long, short = model(full, nucleus, protein), model(trimmed, nucleus, protein)
    assert short.logits.shape == (1, 6 + 1 + 128, 54) and short.image_logits.shape == (1, 64, 12)
    # padding tokens are attended (as published), so the logits differ, but the layout (masking) is the same
    assert torch.equal(short.logits[0, 7:] <= -1e38, long.logits[0, 11:] <= -1e38)
    assert torch.equal(short.logits[0, 6] <= -1e38, long.logits[0, 10] <= -1e38)


def test_sequence_summary_reaches_every_image_token_and_ignores_padding():
    """The summary (mean / max of residue embeddings + global features -> MLP) is added to SEP and every
    protein-image token: padding does not change it, and with zero transformer blocks the image logits depend on the
    sequence only through it."""
    torch.manual_seed(0)
    classes = ("nucleoplasm", "cytosol", "mitochondria")
    model = Celle2(tiny_config(sequence_summary=True, summary_fraction_classes=classes, depth=0)).eval()
    assert not model.summary.to_tokens.weight.any()  # zero at initialisation: the model without it, exactly
    torch.nn.init.normal_(model.summary.to_tokens.weight)
    nucleus, protein = torch.randint(0, 16, (2, 64)), torch.full((2, 64), model.protein_mask_id)
    padded = model.tokenize(["MKKRKV", "MLSRAVCGAL"], trim=True)
    alone = model.tokenize(["MKKRKV"], trim=True)
    with torch.no_grad():
        both, single = model(padded, nucleus, protein), model(alone, nucleus[:1], protein[:1])
    assert both.fraction_logits.shape == (2, 3)
    assert torch.allclose(both.fraction_logits[0], single.fraction_logits[0], atol=1e-5)
    assert torch.allclose(both.image_logits[0], single.image_logits[0], atol=1e-5)
    assert not torch.allclose(both.image_logits[0], both.image_logits[1], atol=1e-3)  # the sequence, nothing else
    plain = Celle2(tiny_config(depth=0)).eval()
    with torch.no_grad():
        out = plain(padded, nucleus, protein)
    assert out.fraction_logits is None and torch.equal(out.image_logits[0], out.image_logits[1])


def test_summary_fraction_loss_is_added_with_its_weight():
    torch.manual_seed(0)
    model = Celle2(tiny_config(sequence_summary=True, summary_fraction_classes=("nucleoplasm", "cytosol"),
                               summary_loss_weight=0.25, text_mask_scale=0.0, attn_dropout=0.0, ff_dropout=0.0))
    text = model.tokenize(["MKKRKVAGLS", "MLSRAV"])
    nucleus, protein = torch.randint(0, 16, (2, 64)), torch.randint(0, 12, (2, 64))
    fractions = torch.tensor([[0.6, 0.2], [0.0, 1.0]])  # rows are normalised: [0.75, 0.25], [0, 1]
    losses = model.masked_loss(text, nucleus, protein, torch.Generator().manual_seed(0), fractions=fractions)
    # no residue masked (text_mask_scale 0), no dropout: the summary of the loss's forward pass
    logits = model(text, nucleus, protein).fraction_logits.log_softmax(-1)
    expected = -(0.75 * logits[0, 0] + 0.25 * logits[0, 1] + logits[1, 1]) / 2
    assert torch.allclose(losses["loss_fractions"], expected, atol=1e-5)
    base = (losses["loss_text"] + losses["loss_image"]) / 2
    assert torch.allclose(losses["loss"], base + 0.25 * expected, atol=1e-5)
    losses["loss"].backward()
    assert model.summary.fraction_head.weight.grad.abs().sum() > 0
    assert "loss_fractions" not in model.masked_loss(text, nucleus, protein, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("overrides, message", [
    (dict(sequence_summary=True, text_encoder="esm2-published"), "needs text_encoder='builtin'"),
    (dict(summary_fraction_classes=("cytosol",)), "needs sequence_summary=True"),
])
def test_sequence_summary_config_is_checked(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


# ----------------------------------------------------------------------------------------------------------------------
# generate --model DIR (hub dispatch), bad input
# ----------------------------------------------------------------------------------------------------------------------


def test_hub_finds_released_and_native_celle2_models(golden, tmp_path):
    from locscope.models import hub

    assert hub.family_of(golden) == "celle2" and hub.family_of(golden / "celle_tiny.yaml") == "celle2"
    Celle2(tiny_config()).save_pretrained(tmp_path / "native")
    ref = hub.resolve(tmp_path / "native", families=("celldiff", "celle2"))
    assert ref.family == "celle2" and isinstance(ref.load("cpu"), Celle2)


def test_generate_with_a_released_model_writes_outputs_and_is_seeded(golden, shared_data, tmp_path):
    from locscope.pipelines.generate import generate

    landmarks = [shared_data / "celldiff_samples" / "hpa" / "1"]  # nucleus, ER, microtubules: ER / MT ignored
    runs = []
    for name in ("a", "b"):
        runs.append(generate([("nls", "MSPKKKRKVEDPGSLEHWC"), ("plain", "MSAGLEHWC")], landmarks, tmp_path / name,
                             model=str(golden), samples=2, passes=3, seed=5, progress=False))
    result = runs[0]
    assert result.network_evaluations == 3
    folder = tmp_path / "a" / "nls"
    for stem in ("sample_0", "sample_1", "threshold_0", "threshold_1", "mean", "probability"):
        assert (folder / f"{stem}.png").is_file() and (folder / f"{stem}.tif").is_file()
    assert (tmp_path / "a" / "report.html").is_file() and (tmp_path / "a" / "summary.csv").is_file()
    import tifffile

    for stem in ("sample_0", "probability"):
        assert np.array_equal(tifffile.imread(folder / f"{stem}.tif"), tifffile.imread(tmp_path / "b" / "nls" /
                                                                                       f"{stem}.tif"))
    threshold = tifffile.imread(folder / "threshold_0.tif")
    assert set(np.unique(threshold).tolist()) <= {0, 65535}


def test_generate_reports_the_nucleus_proportion_of_simulator_cells(tmp_path):
    """result.json's nucleus_proportion: the threshold images' share inside the nucleus image's Otsu mask, averaged
    over the samples (the simulator's masks are named by compartment, so it is read from the nucleus image)."""
    import tifffile

    from locscope.metrics.celle2 import nucleus_mask, nucleus_proportion
    from locscope.models.hub import asset_path
    from locscope.pipelines.generate import generate
    from locscope.pipelines.generate_celle2 import nucleus_tokens

    torch.manual_seed(0)
    Celle2(tiny_config(text_seq_len=24)).save_pretrained(tmp_path / "m")
    cell_dir = asset_path("examples/landmarks/cell_1")  # simulator landmarks with compartment_masks.npz
    generate([("nls", "MSPKKKRKVEDP")], [cell_dir], tmp_path / "out", model=str(tmp_path / "m"), samples=3, seed=1,
             progress=False)
    entry = json.loads((tmp_path / "out" / "nls" / "result.json").read_text())
    assert entry["compartment_fractions"] and entry["nucleus_proportion"] is not None
    _, cell = nucleus_tokens(Celle2.from_pretrained(tmp_path / "m"), [cell_dir])
    binary = np.stack([tifffile.imread(tmp_path / "out" / "nls" / f"threshold_{k}.tif") > 0 for k in range(3)])
    shares = nucleus_proportion(binary, np.broadcast_to(nucleus_mask(cell.images[0]), binary.shape))
    assert entry["nucleus_proportion"] == pytest.approx(float(np.nanmean(shares)), abs=1e-12)
    assert 0.0 <= entry["nucleus_proportion"] <= 1.0


@pytest.mark.parametrize("landmark, sequence, message", [
    ("hpa/1/ER.png", "MSPKKK", "CELL-E 2 needs a nucleus image; the files hold only er"),
    ("hpa/1", "M" * 25, "25 residues; the model's residue limit is 24"),
])
def test_generate_bad_input_is_one_line(golden, shared_data, tmp_path, landmark, sequence, message):
    from locscope.pipelines.generate import generate

    with pytest.raises(InputError, match=message):
        generate([("s", sequence)], [shared_data / "celldiff_samples" / landmark], tmp_path / "out",
                 model=str(golden), progress=False)
    assert not (tmp_path / "out" / "s").exists()


def test_design_infill_ranks_candidates_by_nucleus_proportion(shared_data, tmp_path):
    from locscope.pipelines.design import design

    torch.manual_seed(0)
    Celle2(tiny_config(text_seq_len=24)).save_pretrained(tmp_path / "m")
    template = "MVSKGEELFTGV<mask:4>"
    result = design(tmp_path / "out", model=str(tmp_path / "m"), target="nucleus", template=template,
                    landmarks=[shared_data / "celldiff_samples" / "opencell" / "1"], candidates=5, passes=2,
                    score_samples=1, progress=False)
    scores = [c.score for c in result.candidates]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert all(c.sequence.startswith("MVSKGEELFTGV") and len(c.sequence) == 16 for c in result.candidates)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["passes_per_candidate"] == 2 and 0 <= summary["reporter_score"] <= 1
    assert {"random_residues_mean_score", "share_of_candidates_above_reporter"} <= set(summary)
    with pytest.raises(InputError, match="^target mitochondria: .*; use target nucleus$"):
        design(tmp_path / "o2", model=str(tmp_path / "m"), target="mitochondria", template=template,
               landmarks=[shared_data / "celldiff_samples" / "opencell" / "1"], progress=False)


def test_protein_threshold_median_vs_otsu_on_a_sparse_image():
    """A bright 4 x 4 square in faint noise: the median target is half the image (the square + background noise),
    Otsu's is the square alone."""
    image = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.1
    image[..., 2:6, 2:6] = 1.0
    median, otsu = threshold_protein(image), threshold_protein(image, "otsu")
    assert int(median.sum()) == 128 and int(otsu.sum()) == 16 and bool(otsu[..., 2:6, 2:6].all())
    assert int(threshold_protein(torch.zeros(1, 1, 4, 4), "otsu").sum()) == 0
    with pytest.raises(ValueError, match="accepted values are 'median', 'otsu'"):
        Celle2Config(protein_threshold="mean")
