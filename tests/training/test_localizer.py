"""The sequence localizer: network, strict loading, ESM2 drop-in, training / resume, proteome-scale localize."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from locscope.cli import main as cli_main
from locscope.errors import CheckpointError, InputError
from locscope.models.localizer import LocalizerConfig, SequenceLocalizer, dipeptide_composition, terminal_windows
from locscope.pipelines.localize import LEVEL2_CLASSES, LEVEL3_CLASSES, localize_file
from support import save_tiny_esm2

TINY = dict(width=8, layers=1, hidden=16, n_window=16, c_window=8, window_segments=2, max_length=64)


def cli_run(args):
    try:
        return cli_main(args) or 0
    except SystemExit as exc:
        return exc.code


def tiny_localizer(tmp_path, **overrides):
    torch.manual_seed(0)
    model = SequenceLocalizer(LocalizerConfig(**{**TINY, **overrides})).eval()
    model.save_pretrained(tmp_path / "localizer")
    return model, tmp_path / "localizer"


def test_forward_shapes_and_batch_independence():
    torch.manual_seed(0)
    model = SequenceLocalizer(LocalizerConfig(**TINY)).eval()
    sequences = ["MKKRKVLLSSKL", "MLSRAVCGTSRQLAPVLGYLGSRQ" * 5, "M"]
    together = model.predict_sequences(sequences, batch_size=3)
    alone = [model.predict_sequences([s], batch_size=1) for s in sequences]
    assert {k: v.shape for k, v in together.items()} == {"level1": (3, 22), "level2": (3, 10), "level3": (3, 8)}
    for i, single in enumerate(alone):
        for level in together:
            np.testing.assert_allclose(together[level][i], single[level][0], atol=1e-5)


def test_terminal_windows_keep_both_ends():
    x = torch.arange(1.0, 11.0)[None, :, None].repeat(2, 1, 1)  # two proteins, lengths 10 and 3
    x[1, 3:] = 0
    n_part, n_mask, c_part, c_mask = terminal_windows(x, torch.tensor([10, 3]), 4, 4)
    assert n_part[0, :, 0].tolist() == [1, 2, 3, 4] and c_part[0, :, 0].tolist() == [7, 8, 9, 10]
    assert c_part[1, :, 0].tolist() == [0, 1, 2, 3] and c_mask[1].tolist() == [False, True, True, True]
    assert n_mask[1].tolist() == [True, True, True, False]


def test_long_proteins_keep_both_termini():
    model = SequenceLocalizer(LocalizerConfig(**TINY))
    long = "MLSRAVCG" + "A" * 5000 + "HHSKDEL"
    tokens = model.tokenize([long])
    from locscope.encoders.protein import decode_tokens

    text = decode_tokens(tokens[0])
    assert len(text) == 64 and text.startswith("MLSRAVCG") and text.endswith("HHSKDEL")


def test_dipeptide_composition_counts_pairs():
    model = SequenceLocalizer(LocalizerConfig(**TINY))
    composition = dipeptide_composition(model.tokenize(["AAC"]))
    assert composition.sum().item() == pytest.approx(1.0)
    assert composition[0, 0].item() == pytest.approx(0.5)  # AA
    assert composition[0, 1].item() == pytest.approx(0.5)  # AC


def test_strict_loading(tmp_path):
    model, directory = tiny_localizer(tmp_path)
    again = SequenceLocalizer.from_pretrained(directory)
    tokens = model.tokenize(["MKKRKVLLSSKL"])
    torch.testing.assert_close(again(tokens)["level3"], model(tokens)["level3"])
    from safetensors.torch import load_file, save_file

    weights = load_file(str(directory / "model.safetensors"))
    weights["surplus.weight"] = torch.zeros(1)
    save_file(weights, str(directory / "model.safetensors"))
    with pytest.raises(CheckpointError, match="surplus.weight"):
        SequenceLocalizer.from_pretrained(directory)


def test_esm2_is_a_drop_in_encoder(tmp_path):
    save_tiny_esm2(tmp_path / "esm", max_positions=80)
    model, directory = tiny_localizer(tmp_path, protein_encoder="esm2", esm_path=str(tmp_path / "esm"))
    probabilities = SequenceLocalizer.from_pretrained(directory).predict_sequences(["MKKRKVLLSSKL", "MLSRAV"])
    assert probabilities["level3"].shape == (2, 8) and ((probabilities["level3"] > 0) & (probabilities["level3"] < 1)).all()


def test_training_resumes_exactly(tmp_path, real_corpus, monkeypatch):
    from locscope.training import localizer_module
    from locscope.training.localizer_module import LocalizerTrainConfig, train_localizer

    monkeypatch.setattr(localizer_module, "load_corpus", lambda *args, **kwargs: real_corpus)
    config = LocalizerTrainConfig(model=TINY, epochs=2, batch_size=16, max_train_proteins=48, max_val_proteins=32,
                                  warmup_steps=2)
    straight = train_localizer(tmp_path / "straight", config, progress=False)
    evaluate, calls = localizer_module.evaluate_split, []

    def killed_in_epoch_two(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed before epoch 2's checkpoint
        return evaluate(*args)

    monkeypatch.setattr(localizer_module, "evaluate_split", killed_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train_localizer(tmp_path / "resumed", config, progress=False)
    assert json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())["epoch"] == 1
    with pytest.raises(InputError, match="--resume"):
        train_localizer(tmp_path / "resumed", config, progress=False)
    resumed = train_localizer(tmp_path / "resumed", resume=True, progress=False)
    a = SequenceLocalizer.from_pretrained(tmp_path / "straight" / "checkpoint").state_dict()
    b = SequenceLocalizer.from_pretrained(tmp_path / "resumed" / "checkpoint").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight.is_dir() and resumed.is_dir()
    lines = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and "val_level3_macro_ap" in json.loads(lines[0])


def test_long_fasta_is_streamed_with_any_length(tmp_path, capsys):
    _, directory = tiny_localizer(tmp_path)
    rng = np.random.default_rng(0)
    residues = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    fasta = tmp_path / "proteome.fasta"
    lengths = [int(n) for n in rng.integers(20, 120, 1100)]
    lengths[700] = 9000  # far beyond the default 2048-residue limit of the readers
    with open(fasta, "w") as handle:
        for i, n in enumerate(lengths):
            handle.write(f">p{i}\n{''.join(rng.choice(residues, n))}\n")
    out = tmp_path / "out.csv"
    assert cli_run(["localize", "--fasta", str(fasta), "--out", str(out), "--model", str(directory)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["id"] for r in rows] == [f"p{i}" for i in range(1100)]
    assert rows[700]["top_level3"] in LEVEL3_CLASSES and rows[700]["top_level1"]
    assert {r["method"] for r in rows} == {"localizer"}
    assert f"p3_{LEVEL3_CLASSES[0]}" in rows[0] and f"p2_{LEVEL2_CLASSES[-1]}" in rows[0] and "p1_plastid" in rows[0]
    # the stream printed to stdout is the same text
    chunks = []
    assert localize_file(fasta, None, model=directory, progress=False, write=chunks.append) == 1100
    with open(out, newline="") as handle:
        assert "".join(chunks) == handle.read()


def test_bad_record_deep_in_a_stream_leaves_no_output(tmp_path, capsys):
    _, directory = tiny_localizer(tmp_path)
    fasta = tmp_path / "bad.fasta"
    fasta.write_text("".join(f">p{i}\nMKVLAAGIL\n" for i in range(600)) + ">broken\nMKV1L\n")
    out = tmp_path / "out.csv"
    capsys.readouterr()
    assert cli_run(["localize", "--fasta", str(fasta), "--out", str(out), "--model", str(directory)]) == 2
    err = capsys.readouterr().err
    assert "record 'broken' position 4" in err.strip().splitlines()[-1] and "Traceback" not in err, err
    assert not out.exists() and not list(tmp_path.glob(".out.csv*"))


def test_targeting_signals_move_a_reporter():
    from locscope.data.signals import EGFP, PANEL
    from locscope.models import hub

    directory = hub.asset_path("models/localizer-small")
    if not (directory / "model.safetensors").is_file():
        pytest.skip("bundled localizer-small weights not present")
    model = SequenceLocalizer.from_pretrained(directory)
    base = model.predict_sequences([EGFP])
    chosen = [s for s in PANEL if s.name in ROBUST_SIGNALS]
    fused = model.predict_sequences([s.fuse() for s in chosen])
    for i, signal in enumerate(chosen):
        column = model.config.classes(signal.level).index(signal.target)
        assert fused[signal.level][i, column] > base[signal.level][0, column] + 0.05, signal.name


ROBUST_SIGNALS = ("SV40 large-T NLS", "COX8A presequence", "preprolactin signal peptide + KDEL", "H-Ras CAAX tail")


def test_kmer_counts_are_normalised_hashed_kmers():
    from locscope.models.localizer import kmer_counts

    model = SequenceLocalizer(LocalizerConfig(**TINY))
    counts = kmer_counts(model.tokenize(["AAA", "AXA"]), 4096)
    # AAA: A x3, AA x2, AAA x1 in three buckets; AXA: A x2 only (X and padding never count)
    assert sorted(counts[0][counts[0] > 0].tolist()) == pytest.approx(sorted(np.array([3, 2, 1]) / np.sqrt(14)))
    assert counts[1][counts[1] > 0].tolist() == pytest.approx([1.0])


def test_translation_heads_learn_a_second_label_style(tmp_path, real_corpus):
    from locscope.metrics.sequence import multilabel_scores
    from locscope.training.localizer_module import fit_translation_heads, level_targets

    torch.manual_seed(0)
    config = LocalizerConfig(**TINY, label_styles=("uniprot", "image"), source_styles={"opencell": "image"},
                             kmer_buckets=256)
    model = SequenceLocalizer(config).eval()
    proteins = real_corpus.subset("train", source="opencell")[:80]
    sequences = [p.sequence for p in proteins]
    before = model.predict_sequences(sequences)
    fit_translation_heads(model, proteins, "image", c=4.0)
    after = model.predict_sequences(sequences)
    image = model.predict_sequences(sequences, style="image")
    np.testing.assert_array_equal(before["level3"], after["level3"])  # the first style's heads are untouched
    targets, known = level_targets(proteins, config)["level3"]
    present = targets.numpy().sum(0) > 0
    fitted = multilabel_scores(targets.numpy()[:, present] > 0, image["level3"][:, present])["macro_ap"]
    assert fitted > 0.6  # fitted on these proteins: far above the class prevalences (~0.15 on average)
    model.save_pretrained(tmp_path / "styles")
    again = SequenceLocalizer.from_pretrained(tmp_path / "styles").predict_sequences(sequences, style="image")
    np.testing.assert_allclose(again["level3"], image["level3"], atol=1e-6)
    with pytest.raises(ValueError, match="label styles are uniprot, image"):
        model.predict_sequences(sequences, style="hpa")
    with pytest.raises(ValueError, match="translation heads exist for image"):
        fit_translation_heads(model, proteins, "uniprot")


def test_translation_heads_weigh_hpa_labelled_proteins(real_corpus, shared_data):
    from locscope.io.corpus import is_human
    from locscope.training.localizer_module import LocalizerTrainConfig, fit_translation_heads, hpa_training_proteins

    train = real_corpus.subset("train")
    config = LocalizerTrainConfig(shared_data=str(shared_data), hpa_labels="opencell_hpa_labels/hpa_subcellular_location.tsv")
    extra = hpa_training_proteins(config, [p for p in train if p.source == "scl2205"][:3000])
    assert 200 < len(extra) < 3000 and all(p.source == "hpa" and is_human(p) for p in extra)
    torch.manual_seed(0)
    model = SequenceLocalizer(LocalizerConfig(**TINY, label_styles=("uniprot", "image"), kmer_buckets=64)).eval()
    own = real_corpus.subset("train", source="opencell")[:40]
    sequences = [p.sequence for p in own]
    fit_translation_heads(model, own, "image")
    alone = model.predict_sequences(sequences, style="image")["level3"]
    fit_translation_heads(model, own + extra[:20], "image", weights=[1.0] * 40 + [0.0] * 20)  # weight 0: no effect
    np.testing.assert_allclose(model.predict_sequences(sequences, style="image")["level3"], alone, atol=1e-4)
    fit_translation_heads(model, own + extra[:20], "image", weights=[1.0] * 40 + [1.0] * 20)
    assert np.abs(model.predict_sequences(sequences, style="image")["level3"] - alone).max() > 1e-3
    with pytest.raises(ValueError, match="weights has 2 values for 40 proteins"):
        fit_translation_heads(model, own, "image", weights=[1.0, 1.0])


def test_training_with_two_label_styles(tmp_path, real_corpus, monkeypatch):
    from locscope.io.corpus import Corpus
    from locscope.training import localizer_module
    from locscope.training.localizer_module import LocalizerTrainConfig, train_localizer

    small = Corpus(real_corpus.subset("train", source="scl2205")[:40] + real_corpus.subset("train", source="opencell")[:24]
                   + real_corpus.subset("val")[:16] + real_corpus.subset("val", source="opencell")[:16])
    monkeypatch.setattr(localizer_module, "load_corpus", lambda *args, **kwargs: small)
    model_config = {**TINY, "label_styles": ["uniprot", "image"], "source_styles": {"opencell": "image"},
                    "kmer_buckets": 64}
    config = LocalizerTrainConfig(model=model_config, epochs=1, batch_size=16, warmup_steps=2)
    model_dir = train_localizer(tmp_path / "run", config, progress=False)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["epoch"] == 1 and lines[1]["translation"] == ["image"]
    assert {"val_uniprot_level3_macro_ap", "val_image_level3_macro_ap"} <= set(lines[1])
    meta = json.loads((model_dir / "config.json").read_text())["_meta"]
    assert meta["train_proteins"] == 64 and "val_image_level3_macro_ap" in meta
    assert SequenceLocalizer.from_pretrained(model_dir).config.source_styles == {"opencell": "image"}
    assert train_localizer(tmp_path / "run", resume=True, progress=False) == model_dir  # complete: nothing to redo
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2


def test_label_style_option(tmp_path, capsys):
    _, directory = tiny_localizer(tmp_path, label_styles=("uniprot", "image"), kmer_buckets=32)
    assert cli_run(["localize", "--sequence", "MKKRKVLLSSKL", "--model", str(directory), "--label-style", "image"]) == 0
    image = capsys.readouterr().out
    assert cli_run(["localize", "--sequence", "MKKRKVLLSSKL", "--model", str(directory)]) == 0
    default = capsys.readouterr().out
    assert image.splitlines()[0] == default.splitlines()[0] and image != default
    assert cli_run(["localize", "--sequence", "MKKRKVLLSSKL", "--model", str(directory), "--label-style", "hpa"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("--label-style 'hpa': this localizer's label styles are uniprot, image"), err
