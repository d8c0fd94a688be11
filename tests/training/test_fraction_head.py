"""locscope train fraction-head: a generative model's sequence heads refitted on frozen corpus embeddings."""

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from safetensors.torch import load_file

from locscope.data import ontology
from locscope.io.corpus import Corpus, CorpusProtein
from locscope.training.fraction_head import (
    FractionHeadTrainConfig, head_targets, level3_top1, read_exclusions, train_fraction_head,
)

from support import _one_thread  # noqa: F401  (autouse: one torch thread for these tiny networks)

FRACTIONS = ("nucleoplasm", "cytosol", "mitochondria")
CELL = Path(__file__).resolve().parents[2] / "src" / "locscope" / "assets" / "examples" / "landmarks" / "cell_1"
SIGNALS = {"nucleoplasm": ("", "PKKKRKVPKKKRKV"), "mitochondria": ("MLSRLLRRAAPSLRRLF", ""), "cytosol": ("", "")}


def synthetic_corpus(per_class: int = 12) -> Corpus:
    """Random proteins with a nuclear, mitochondrial or no signal; clusters of two; train / val / test thirds."""
    rng = np.random.default_rng(0)
    proteins = []
    for i in range(3 * per_class * 3):
        level1 = FRACTIONS[i % 3]
        start, end = SIGNALS[level1]
        body = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), int(rng.integers(30, 60))))
        split = ("train", "val", "test")[(i // 3) % 3]
        proteins.append(CorpusProtein(f"Q{i:05d}", "M" + start + body + end, "opencell", ("opencell",), "", (),
                                      (level1,), (ontology.to_level2(level1),), (ontology.to_level3(level1),),
                                      cluster=1000 + i // 2 if split == "train" else i, split=split))
    return Corpus(proteins)


def tiny_models(tmp_path: Path) -> dict[str, Path]:
    """A tiny CELL-Diff, latent diffusion and CELL-E 2 model (all with fraction heads), saved; name -> folder."""
    from locscope.models.celldiff import CellDiff, celldiff_tiny_config
    from locscope.models.celle2 import Celle2, celle2_tiny_config
    from locscope.models.latent import LatentAutoencoder, LatentAutoencoderConfig, LatentDenoiser, LatentDiffusion, \
        LatentDiffusionConfig

    torch.manual_seed(0)
    celldiff = CellDiff(celldiff_tiny_config(image_size=16, channels=(8, 8, 16, 16), transformer_width=32,
                                             transformer_layers=1, sequence_dim=16, sequence_layers=1,
                                             attention_groups=(False, True, True), attention_grid=2,
                                             fraction_classes=FRACTIONS))
    latent = LatentDiffusion(
        LatentAutoencoder(LatentAutoencoderConfig(image_channels=("protein",), image_size=16, block_channels=(8, 8, 8),
                                                  latent_channels=4, norm_groups=4, mid_attention=False)),
        LatentDenoiser(LatentDiffusionConfig(image_size=16, image_channels=("protein",), latent_channels=4,
                                             latent_size=4, block_channels=(8, 16), attention_levels=(False, True),
                                             attention_head_dim=8, norm_groups=4, cross_attention_dim=16,
                                             sequence_dim=8, sequence_layers=1, max_sequence_length=64,
                                             fraction_classes=FRACTIONS, num_train_timesteps=100, schedule_base=4)))
    celle2 = Celle2(celle2_tiny_config(image_size=16, vq_channel_mult=(1, 2), vq_attn_resolutions=(8,),
                                       vq_latent_channels=8, vq_embed_dim=8, nucleus_codebook_size=16,
                                       protein_codebook_size=12, text_seq_len=48, text_encoder_layers=1, dim=32,
                                       depth=1, heads=2, dim_head=12, sequence_summary=True,
                                       summary_fraction_classes=FRACTIONS))
    folders = {}
    for name, model in (("celldiff", celldiff), ("latent", latent), ("celle2", celle2)):
        with torch.no_grad():  # zero-initialised output layers off zero: images depend on the conditions
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.02)
        model.save_pretrained(tmp_path / name)
        folders[name] = tmp_path / name
    return folders


@pytest.fixture(scope="module")
def refitted(tmp_path_factory):
    """The tiny models and their refits on the synthetic corpus (metrics per family)."""
    tmp_path = tmp_path_factory.mktemp("heads")
    folders = tiny_models(tmp_path)
    corpus = synthetic_corpus()
    metrics = {name: train_fraction_head(tmp_path / f"{name}_refit", FractionHeadTrainConfig(
                   model=str(folder), epochs=15, batch_size=8, learning_rate=3e-3, grammar=0, grammar_val=0),
                   progress=False, corpus=corpus)
               for name, folder in folders.items()}
    return tmp_path, folders, metrics


def test_only_the_heads_change(refitted):
    tmp_path, folders, metrics = refitted
    heads = {"celldiff": ("fraction_head.", "compartment_head."),
             "latent": ("fraction_head.", "compartment_head."), "celle2": ("summary.fraction_head.",)}
    for name, folder in folders.items():
        before = load_file(str(folder / "model.safetensors"))
        after = load_file(str(tmp_path / f"{name}_refit" / "model.safetensors"))
        assert before.keys() == after.keys()
        changed = {key for key in before if not torch.equal(before[key], after[key])}
        assert changed and all(key.startswith(heads[name]) for key in changed), (name, changed)
        assert all(any(key.startswith(h) for key in changed) for h in heads[name]), name
        if name == "latent":  # the autoencoder is written unchanged beside the denoiser
            ae_before = load_file(str(folder / "autoencoder" / "model.safetensors"))
            ae_after = load_file(str(tmp_path / f"{name}_refit" / "autoencoder" / "model.safetensors"))
            assert all(torch.equal(ae_before[k], ae_after[k]) for k in ae_before)
        record = metrics[name]
        assert record["proteins"] == {"train": 36, "val": 36, "grammar_train": 0, "grammar_val": 0,
                                      "excluded_clusters": 0, "exclusions_not_in_corpus": 0}
        for head in record["heads"].values():
            assert head["after"]["selection"] >= head["before"]["selection"]
            assert head["after"]["selection"] == head["after"]["corpus_level3_top1"]
            assert len(head["epochs"]) == 15 and 0 <= head["chosen_epoch"] <= 15
        written = json.loads((tmp_path / f"{name}_refit" / "metrics.json").read_text())
        assert written["heads"].keys() == record["heads"].keys()
        config = json.loads((tmp_path / f"{name}_refit" / "config.json").read_text())
        assert config["_meta"]["heads_refit"]["train_config"]["epochs"] == 15


def test_the_heads_learn_the_signals(refitted):
    # nuclear, mitochondrial and signal-free proteins (chance: 1/3): the refitted fraction heads separate them
    _, _, metrics = refitted
    for name in ("celldiff", "latent", "celle2"):
        head = next(r for key, r in metrics[name]["heads"].items() if key.endswith("fraction_head"))
        assert head["after"]["corpus_level3_top1"] >= 0.55, (name, head["after"])


@pytest.mark.parametrize("name", ["celldiff", "latent"])
def test_written_model_generates_and_its_image_path_is_unchanged(refitted, name, cli):
    tmp_path, folders, _ = refitted
    base = ["generate", "--sequence", "MPKKKRKVEDAGLSKLAW", "--landmarks", CELL, "--steps", "2", "--samples", "1",
            "--device", "cpu"]
    images = {}
    for label, folder in (("before", folders[name]), ("after", tmp_path / f"{name}_refit")):
        for mode, extra in (("given", ["--compartment", "mitochondria"]), ("head", [])):
            out = tmp_path / f"gen_{name}_{label}_{mode}"
            code, _, err = cli([*base, "--model", folder, "--out", out, *extra])
            assert code == 0, err
            images[label, mode] = tifffile.imread(out / "sequence" / "sample_0.tif")
    # conditioned on given fractions, the refitted model draws the very same image; from the sequence it draws
    # with its new head's distribution
    assert np.array_equal(images["before", "given"], images["after", "given"])
    assert not np.array_equal(images["before", "head"], images["after", "head"])


def test_celle2_images_do_not_depend_on_the_summary_head(refitted):
    from locscope.models.celle2 import load_celle2

    tmp_path, folders, _ = refitted
    before, after = load_celle2(folders["celle2"]), load_celle2(tmp_path / "celle2_refit")
    text = before.tokenize(["MPKKKRKVEDAGLSKLAW", "MLSRLLRRAAPSLRRLFGA"])
    nucleus = torch.randint(0, 16, (2, before.config.image_seq_len), generator=torch.Generator().manual_seed(0))
    protein = torch.full_like(nucleus, before.protein_mask_id)
    with torch.no_grad():
        a, b = before(text, nucleus, protein), after(text, nucleus, protein)
    assert torch.equal(a.logits, b.logits) and not torch.equal(a.fraction_logits, b.fraction_logits)


def test_exclusions_remove_whole_clusters(tmp_path, refitted):
    _, folders, _ = refitted
    corpus = synthetic_corpus()
    first, second = corpus.subset("train")[:2]  # one cluster of two
    assert first.cluster == second.cluster
    listing = tmp_path / "held_out.txt"
    listing.write_text(f"{first.accession}\n")
    metrics = train_fraction_head(tmp_path / "out", FractionHeadTrainConfig(
        model=str(folders["celle2"]), epochs=1, exclude=(str(listing), corpus.subset("val")[0].sequence, "X99999"),
        grammar=0, grammar_val=0), progress=False, corpus=corpus)
    assert metrics["proteins"] == {"train": 34, "val": 35, "grammar_train": 0, "grammar_val": 0,
                                   "excluded_clusters": 2, "exclusions_not_in_corpus": 1}
    fasta = tmp_path / "held_out.fasta"
    fasta.write_text(f">{first.accession}\n{first.sequence}\n")
    assert read_exclusions([str(fasta), "mpkkkrkv", "P12345"]) == ({first.accession, "P12345"},
                                                                   {first.sequence, "MPKKKRKV"})


def test_targets_and_scores_on_known_numbers():
    targets = head_targets([{"nucleoplasm": 0.75, "nucleoli": 0.25}, {"plastid": 1.0}],
                           ("nucleus", "nucleoli", "cytosol"), "level3")
    assert targets.tolist() == [[0.75, 0.25, 0.0], [0.0, 0.0, 0.0]]
    probabilities = np.array([[0.6, 0.2, 0.2], [0.4, 0.3, 0.3]])  # row 2: nucleoplasm top, endomembrane 0.6
    classes = ("nucleoplasm", "golgi-apparatus", "endoplasmic-reticulum")
    assert level3_top1(probabilities, classes, "level1", [{"nucleus"}, {"nucleus"}]) == 0.5


def test_bad_model_and_missing_corpus_are_one_line_errors(tmp_path, cli, refitted):
    from conftest import error_line

    _, folders, _ = refitted
    code, _, err = cli(["train", "fraction-head", "--model", tmp_path / "nothing", "--corpus", tmp_path,
                        "--out", tmp_path / "a"])
    assert code == 2 and "--model" in error_line(err) and "nothing" in error_line(err)
    code, _, err = cli(["train", "fraction-head", "--model", "compartment-readout", "--corpus", tmp_path,
                        "--out", tmp_path / "b"])
    assert code == 2 and "--model" in error_line(err) and "readout" in error_line(err)
    code, _, err = cli(["train", "fraction-head", "--model", folders["celle2"], "--corpus", tmp_path / "missing",
                        "--out", tmp_path / "c"])
    assert code == 2 and "--corpus" in error_line(err) and "missing" in error_line(err)
    code, _, err = cli(["train", "fraction-head", "--model", folders["celle2"], "--corpus", tmp_path,
                        "--out", tmp_path / "d"])
    assert code == 2 and "opencell_raw.csv: file not found" in error_line(err)
    code, _, err = cli(["train", "fraction-head", "--model", folders["celle2"], "--corpus", tmp_path,
                        "--exclude", tmp_path / "gone.fasta", "--out", tmp_path / "e"])
    assert code == 2 and "--exclude" in error_line(err) and "gone.fasta" in error_line(err)
    code, _, err = cli(["train", "fraction-head", "--model", folders["celle2"], "--corpus", tmp_path,
                        "--epochs", "0", "--out", tmp_path / "f"])
    assert code == 2 and "--epochs" in error_line(err)
    assert not any((tmp_path / name).exists() for name in "abcdef")


def test_refit_on_the_real_corpus_with_grammar_proteins(tmp_path, refitted, real_corpus):
    _, folders, _ = refitted
    from locscope.synth.labelled import corpus_annotated_proteins

    metrics = train_fraction_head(tmp_path / "out", FractionHeadTrainConfig(
        model=str(folders["latent"]), epochs=2, max_train_proteins=64, grammar=20, grammar_val=10), progress=False,
        corpus=real_corpus)
    human_val = corpus_annotated_proteins(real_corpus.subset("val", human=True))  # human proteins by default
    assert len(human_val) < len(corpus_annotated_proteins(real_corpus.subset("val")))
    assert (metrics["proteins"]["train"], metrics["proteins"]["val"], metrics["proteins"]["grammar_train"]) == \
        (64, len(human_val), 20)
    for head in metrics["heads"].values():  # selection: the mean over the corpus and the grammar proteins
        after = head["after"]
        assert after["selection"] == pytest.approx((after["corpus_level3_top1"] + after["grammar_level3_top1"]) / 2)
    from locscope.models.latent import LatentDiffusion

    LatentDiffusion.from_pretrained(tmp_path / "out")  # strict
