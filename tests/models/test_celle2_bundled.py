"""The bundled celle2-tiny: strict loading, one-pass generation, design, localize and explain on its weights, and the
command line's answers to bad input."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from conftest import error_line
from locscope.diffusion.celle2_sampler import decode_image_tokens
from locscope.models import hub
from locscope.models.celle2 import normalize_nucleus
from locscope.models.hub import asset_path

CELL = asset_path("examples/landmarks/cell_64")  # a 64 x 64 simulator cell (nucleus, ER, microtubules, masks)
# Grammar proteins (locscope.synth.grammar.random_protein(..., length=90, split="heldout"), seed 3): a bipartite
# nuclear localization signal, and a mitochondrial presequence.
NUCLEAR = "MQSLRHINPRGLHKPVEMFEAVEETLISAPGRMYDKEPPCSMFSHKKASTPSPSGNAKKKKSPLYDTDVKKVSSAGRDCTNELTVPCLPA"
OTHER = "MAARALKKKVRALAQSIRQIIRALQIRLYLPVSPSSQIEQLEKLRHGPRDLGFEDYQNEECLYRGFTVNLTAKDSYLAAGTQFGQPEGSL"


@pytest.fixture(scope="module")
def model():
    return hub.load("celle2-tiny")


def nucleus_ids(model):
    from locscope.pipelines.generate_celle2 import nucleus_tokens

    ids, _ = nucleus_tokens(model, [CELL])
    return ids


def test_bundled_weights_are_small_strict_and_64_px(model):
    ref = hub.resolve("celle2-tiny")
    assert ref.family == "celle2" and ref.bundled and "celle2-tiny" in hub.bundled_names("celle2")
    assert (ref.directory / "model.safetensors").stat().st_size <= 20_000_000
    c = model.config
    assert (c.image_size, c.fmap_size, c.text_seq_len, c.protein_codebook_size) == (64, 8, 320, 128)
    assert c.protein_threshold == "otsu"
    assert sum(p.numel() for p in model.parameters()) == N_PARAMETERS
    assert not model.training


def test_trained_tokenizers_round_trip_real_sample_images(model, shared_data):
    """Real HPA / OpenCell crops resized to 64 x 64 (out of the simulator's distribution): measured mean absolute
    nucleus error NUCLEUS_L1 (normalised images in [-1, 1]) and threshold-pixel agreement PROTEIN_AGREEMENT."""
    from locscope.io import read_image
    from locscope.models.celle2 import threshold_protein

    nuclei, proteins = [], []
    for folder in ("hpa/1", "hpa/nls", "opencell/1", "opencell/nes", "opencell/nls"):
        record = read_image(shared_data / "celldiff_samples" / folder)
        for name, stack in (("nucleus", nuclei), ("protein", proteins)):
            if name in record.channels:
                image = torch.from_numpy(record.channels[name].astype(np.float32) / 255.0)[None, None]
                stack.append(torch.nn.functional.interpolate(image, size=64, mode="area"))
    nucleus = normalize_nucleus(torch.cat(nuclei))
    protein = threshold_protein(torch.cat(proteins), model.config.protein_threshold)
    with torch.no_grad():
        nucleus_back = model.decode_nucleus(model.encode_nucleus(nucleus))
        protein_back = model.decode_protein(model.encode_protein(protein)) > 0.5
    l1 = float((nucleus_back - nucleus).abs().mean())
    agreement = float((protein_back.float() == protein).float().mean())
    assert l1 == pytest.approx(NUCLEUS_L1, abs=0.02) and agreement == pytest.approx(PROTEIN_AGREEMENT, abs=0.03)


def test_one_pass_generation_is_seeded_and_reads_the_sequence(model):
    nucleus = nucleus_ids(model)
    text = model.tokenize([NUCLEAR, OTHER])

    def run(seed):
        return decode_image_tokens(model, text, nucleus.expand(2, -1), passes=1,
                                   generator=torch.Generator().manual_seed(seed))

    a, b = run(0), run(0)
    assert a.passes == 1 and a.tokens.shape == (2, 64) and torch.equal(a.tokens, b.tokens)
    assert int((a.tokens >= model.protein_mask_id).sum()) == 0
    # the same uniforms for both rows: different sequences give different images
    assert not torch.equal(a.tokens[0], a.tokens[1])
    with torch.no_grad():
        probability = model.probability_map(a.probabilities)
    assert probability.shape == (2, 1, 64, 64) and 0 <= float(probability.min()) <= float(probability.max()) <= 1


def test_one_pass_nucleus_share_of_the_bundled_weights(model):
    """8 one-pass samples each of the two proteins in the example cell: the share of their threshold images inside
    the nucleus (the score design ranks by) as measured when the weights were bundled (a regression check of
    weights, tokenizers and sampler). In this one cell both proteins' images lie mostly in the nucleus (the card's
    limits); the read-out over 200 cells is in docs/models/celle2-tiny.md."""
    from locscope.metrics.celle2 import nucleus_mask, nucleus_proportion
    from locscope.pipelines.generate_celle2 import nucleus_tokens

    ids, cell = nucleus_tokens(model, [CELL])
    region = nucleus_mask(cell.images[0])
    text = model.tokenize([NUCLEAR] * 8 + [OTHER] * 8, trim=True)
    sample = decode_image_tokens(model, text, ids.expand(16, -1), generator=torch.Generator().manual_seed(0))
    binary = (model.decode_protein(sample.tokens)[:, 0] > 0.5).numpy()
    shares = np.nan_to_num(nucleus_proportion(binary, np.broadcast_to(region, binary.shape)))
    assert shares[:8].mean() == pytest.approx(NUCLEAR_SHARE, abs=0.1)
    assert shares[8:].mean() == pytest.approx(OTHER_SHARE, abs=0.1)


def test_sequence_summary_head_reads_the_two_example_proteins(model):
    """The summary's fraction head (trained on the store's compartment fractions): the NLS protein is called
    nucleoplasmic, the presequence protein mitochondrial (a share the NLS protein does not get)."""
    cls = model.config.summary_fraction_classes
    text = model.tokenize([NUCLEAR, OTHER], trim=True)
    with torch.no_grad():
        fractions = model(text, nucleus_ids(model).expand(2, -1),
                          torch.full((2, 64), model.protein_mask_id)).fraction_logits.softmax(-1)
    nucleoplasm, mitochondria = cls.index("nucleoplasm"), cls.index("mitochondria")
    assert int(fractions[0].argmax()) == nucleoplasm and int(fractions[1].argmax()) == mitochondria
    assert float(fractions[0, nucleoplasm]) == pytest.approx(0.61, abs=0.05)
    assert float(fractions[1, mitochondria]) == pytest.approx(0.80, abs=0.05)
    assert fractions[0, mitochondria] < 0.02


def test_generate_design_localize_explain_on_the_command_line(cli, tmp_path):
    code, out, err = cli(["generate", "--model", "celle2-tiny", "--sequence", NUCLEAR, "--landmarks", CELL,
                          "--samples", "2", "--out", tmp_path / "gen"])
    assert code == 0, err
    summary = json.loads((tmp_path / "gen" / "summary.json").read_text())
    assert summary["family"] == "celle2" and summary["network_evaluations_per_image"] == 1
    folder = tmp_path / "gen" / summary["sequences"][0]["folder"]
    assert all((folder / f"{stem}.tif").is_file() for stem in ("sample_0", "threshold_1", "mean", "probability"))
    # every sample read by the compartment read-out, the nucleus its only landmark (as the written images say)
    from locscope.io.images import read_image
    from locscope.pipelines.readout import classify_level3, load_readout

    readout = load_readout()
    samples = np.stack([read_image(folder / f"sample_{k}.tif").channels.popitem()[1] for k in range(2)])
    nucleus = read_image(folder / "landmarks.png").channels.popitem()[1][::4, ::4]  # the preview repeats pixels 4x
    drawn = [readout.config.classes[i] for i in classify_level3(readout, samples, nucleus[None], ("nucleus",))
             .argmax(1)]
    entry = summary["sequences"][0]
    assert entry["drawn_level3_per_sample"] == drawn and entry["drawn_level3"] in drawn

    code, out, err = cli(["design", "--model", "celle2-tiny", "--target", "nucleus", "--template",
                          "MVSKGEELFTGVVPILVELDGDVNGHKF<mask:6>", "--landmarks", CELL, "--candidates", "4",
                          "--score-samples", "1", "--out", tmp_path / "design"])
    assert code == 0, err
    design = json.loads((tmp_path / "design" / "summary.json").read_text())
    assert len(design["top"]) >= 1 and all(t["sequence"].startswith("MVSKGEE") for t in design["top"])

    (tmp_path / "seqs.fasta").write_text(f">nuclear\n{NUCLEAR}\n>other\n{OTHER}\n")
    code, out, err = cli(["localize", "--model", "celle2-tiny", "--samples", "2", "--fasta", tmp_path / "seqs.fasta",
                          "--out", tmp_path / "loc.csv"])
    assert code == 0, err
    rows = (tmp_path / "loc.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",image," in row for row in rows[1:])

    code, out, err = cli(["explain", "--model", "celle2-tiny", "--samples", "1", "--window", "7", "--stride", "10",
                          "--sequence", NUCLEAR, "--out", tmp_path / "explain"])
    assert code == 0, err
    explained = json.loads((tmp_path / "explain" / "explain.json").read_text())
    assert explained["method"] == "image" and len(explained["attribution"]) == len(NUCLEAR)
    assert (tmp_path / "explain" / "wild_type.png").is_file()


def test_localize_is_independent_of_the_batch(model):
    from locscope.pipelines.localize_celle2 import Celle2LocalizationPredictor

    predictor = Celle2LocalizationPredictor(model, samples=2, batch_size=2, seed=0)
    together = predictor.predict([NUCLEAR, OTHER, NUCLEAR + "GS" * 150]).level3
    alone = predictor.predict([OTHER]).level3
    assert np.allclose(together[1], alone[0], atol=1e-6) and np.allclose(together.sum(1), 1.0)


@pytest.mark.parametrize("args, message", [
    (["generate", "--sequence", "M" * 321, "--landmarks", CELL],
     r"sequences: 'sequence' has 321 residues; the model's residue limit is 320 \(--max-length 320 with "
     r"--truncate keeps both termini\)"),
    (["generate", "--sequence", NUCLEAR, "--landmarks", CELL / "ER.png"], "CELL-E 2 needs a nucleus image"),
    (["design", "--target", "nucleus", "--template", "M" * 320 + "<mask:4>", "--landmarks", CELL],
     "--template has 324 residues; the model's residue limit is 320"),
    (["localize", "--method", "head", "--sequence", NUCLEAR], "--method='head': a CELL-E 2 model has no compartment head"),
    (["explain", "--method", "head", "--sequence", NUCLEAR], "--method='head': a CELL-E 2 model has no compartment head"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(cli, tmp_path, args, message):
    target = ["--out", tmp_path / ("o.csv" if args[0] == "localize" else "o")]
    code, _, err = cli([*args, "--model", "celle2-tiny", *target])
    assert code == 2 and re.search(message, error_line(err)), err
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.csv").exists()


N_PARAMETERS = 3_432_626
NUCLEUS_L1, PROTEIN_AGREEMENT = 0.171, 0.812
NUCLEAR_SHARE, OTHER_SHARE = 0.668, 0.743
