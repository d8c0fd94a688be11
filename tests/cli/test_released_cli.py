"""The released checkpoints of the three published families, end to end from the command line through ``--model DIR``:
a CELL-Diff set (config.json + denoiser .bin + VAE .bin: generate, design; localize refuses), a CELL-E 2 folder
(yamls + checkpoints: generate) and a guided-I2I folder (``1_Network.pth`` + ``network_config.json``: stain). The golden
tiny files are copied into temporary folders; a missing or unmatched part is one line naming the file, exit 2, and
nothing is written."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from locscope.cli import main

from conftest import SHARED, _require

SEQUENCE = "MSPKKKRKVEDPGSLEHWC"
TEMPLATE = "MSPK<mask:4>DPGS"


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    captured = capsys.readouterr()
    return info.value.code or 0, captured.out, captured.err.strip()


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


# ---------------------------------------------------------------------------------------------------------------------
# CELL-Diff checkpoint set
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def celldiff_golden():
    _require(SHARED / "golden" / "celldiff_v2_tiny")
    return _require(SHARED / "golden" / "celldiff_v2_pipeline_tiny")


@pytest.fixture(scope="module")
def celldiff_set(celldiff_golden, tmp_path_factory):
    """config.json + denoiser .bin + VAE .bin, and the published landmark PNGs / a released protein PNG."""
    from PIL import Image

    root = tmp_path_factory.mktemp("celldiff")
    folder = root / "set"
    folder.mkdir()
    for source in (celldiff_golden / "config.json", celldiff_golden / "vae_tiny.bin",
                   celldiff_golden.parent / "celldiff_v2_tiny" / "cell_diff_tiny.bin"):
        shutil.copy(source, folder / source.name)
    (root / "cell").mkdir()
    for name in ("nucleus", "ER", "microtubule"):
        Image.fromarray(np.load(celldiff_golden / f"input_{name}_rgb_uint8.npy")).save(root / "cell" / f"{name}.png")
    # the published run's own output PNG (green) serves as the protein image to design for
    Image.fromarray(np.load(celldiff_golden / "expected_protein_png_rgb_uint8.npy")).save(root / "protein.png")
    return root


def design_args(root, out, *extra: str) -> list[str]:
    return ["design", "--model", str(root / "set"), "--image", str(root / "protein.png"), "--landmarks",
            str(root / "cell"), "--template", TEMPLATE, "--out", str(out), *extra]


def test_design_infills_with_the_released_sequence_head(celldiff_set, tmp_path, capsys):
    outputs = []
    for name in ("a", "b"):
        code, out, _ = run(design_args(celldiff_set, tmp_path / name, "--candidates", "3", "--seed", "4"), capsys)
        assert code == 0 and "3 candidates (one-per-pass, 4 passes)" in out
        outputs.append((tmp_path / name / "candidates.fasta").read_text())
    assert outputs[0] == outputs[1]  # seeded
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["family"] == "celldiff-released" and summary["template"] == "MSPK####DPGS"
    assert summary["decoder"] == "one-per-pass" and summary["passes_per_candidate"] == 4
    assert summary["landmarks"] == ["er", "microtubules", "nucleus"] and not summary["placeholder_landmarks"]
    scores = [c["score"] for c in summary["ranked"]]
    assert scores == sorted(scores, reverse=True) and all(-np.log(20) * 3 < s < 0 for s in scores)
    for c in summary["ranked"]:
        assert c["sequence"][:4] == "MSPK" and c["sequence"][8:] == "DPGS" and len(c["sequence"]) == 12
        assert set(c["sequence"]) <= set("LAGVSERTIDPKQNFYMHWC")
    assert (tmp_path / "a" / "report.html").is_file() and (tmp_path / "a" / "candidates.csv").is_file()


def test_one_per_pass_reveals_the_sequence_heads_choice_at_time_zero(celldiff_set):
    """Greedy (top-k 1) one-per-pass decoding: every pass writes, at the position it reveals, the most likely of the
    20 standard residues under the network's sequence logits for the current tokens, the clean protein latent and
    diffusion time 0 (the published ``oaardm_sample``), computed here by a separate network call."""
    from locscope.diffusion.masked_decoding import decode_one_per_pass, decode_parallel
    from locscope.models.celldiff_v2 import MASK_ID, CellDiffV2Tokenizer, load_released_checkpoint_set
    from locscope.pipelines.design_released import released_conditioning, released_logits_fn

    released = load_released_checkpoint_set(celldiff_set / "set")
    generator = torch.Generator().manual_seed(0)
    cond = released_conditioning(released, celldiff_set / "protein.png", [celldiff_set / "cell"], generator,
                                 torch.device("cpu"))
    assert cond.cell_latent.shape == (1, 12, 16, 16) and cond.protein_latent.shape == (1, 4, 16, 16)
    logits_fn = released_logits_fn(released, cond.protein_latent, cond.cell_latent)
    states = []

    def recording(tokens):
        states.append(tokens.clone())
        return logits_fn(tokens)

    template = torch.tensor([CellDiffV2Tokenizer().encode("MSPK####DPGS")])
    parallel = decode_parallel(logits_fn, template.repeat(2, 1), MASK_ID, passes=2, generator=generator)
    assert parallel.passes == 2 and torch.equal(parallel.tokens[:, :5], template[:, :5].repeat(2, 1))
    assert bool(((parallel.tokens[:, 5:9] >= 4) & (parallel.tokens[:, 5:9] < 24)).all())
    result = decode_one_per_pass(recording, template, MASK_ID, top_k=1, generator=generator)
    assert result.passes == 4 and len(states) == 4 and not bool((result.tokens == MASK_ID).any())
    with torch.no_grad():
        for before, after in zip(states, [*states[1:], result.tokens]):
            changed = torch.nonzero(before != after)
            assert len(changed) == 1
            position = int(changed[0, 1])
            logits = released.model.net(cond.protein_latent, cond.cell_latent, before, torch.tensor([0])).sequence_logits
            assert int(after[0, position]) == 4 + int(logits[0, position, 4:24].argmax())


def test_design_and_localize_explain_what_the_released_model_cannot_do(celldiff_set, tmp_path, capsys):
    code, _, err = run(design_args(celldiff_set, tmp_path / "t", "--target", "nucleus"), capsys)
    assert_one_line_error(code, err, "--target nucleus: a released CELL-Diff model is conditioned on images, not on compartment names; give --image")
    code, _, err = run(["design", "--model", str(celldiff_set / "set"), "--landmarks", str(celldiff_set / "cell"),
                        "--template", TEMPLATE, "--out", str(tmp_path / "n")], capsys)
    assert_one_line_error(code, err, "--image and --landmarks")
    code, _, err = run(["localize", "--model", str(celldiff_set / "set"), "--sequence", SEQUENCE], capsys)
    assert_one_line_error(code, err, "cannot localize sequences: it has no compartment head")
    assert not any(tmp_path.iterdir())


def test_an_unmatched_denoiser_is_one_line_naming_the_file(celldiff_set, tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(celldiff_set, root)
    config = json.loads((root / "set" / "config.json").read_text())
    (root / "set" / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    for argv in (design_args(root, tmp_path / "d"),
                 ["generate", "--model", str(root / "set"), "--sequence", SEQUENCE, "--landmarks", str(root / "cell"),
                  "--out", str(tmp_path / "g")]):
        code, _, err = run(argv, capsys)
        assert_one_line_error(code, err, "cell_diff_tiny.bin does not match the model: missing keys: "
                                         "net.unified_encoder.2.")
    assert not (tmp_path / "d").exists() and not (tmp_path / "g").exists()


def test_int8_generation_stays_close_to_the_exact_path(celldiff_golden, celldiff_set, tmp_path, capsys):
    """Dynamic int8 Linear layers on the tiny golden model: the released DDIM-10 image moves by far less than the
    image's range (measured 5.5e-3 max abs on values in [-1.44, 1.58]); the denoiser's Linear layers are int8, ESM2's
    are not."""
    from locscope.models.celldiff_v2 import load_released_checkpoint_set
    from locscope.pipelines.generate_released import quantize_int8_, sample_released

    released = load_released_checkpoint_set(celldiff_set / "set")
    cell = torch.from_numpy(np.load(celldiff_golden / "expected_cell_latent.npy"))
    tokens = torch.from_numpy(np.load(celldiff_golden / "input_tokens.npy"))
    noise = torch.from_numpy(np.load(celldiff_golden / "input_initial_noise.npy"))
    exact = sample_released(released, cell, tokens, noise)
    np.testing.assert_allclose(exact.numpy(), np.load(celldiff_golden / "expected_protein_image.npy"), atol=1e-5)
    quantize_int8_(released)
    net = released.model.net
    assert type(net.unified_encoder[0].attn.qkv) is not torch.nn.Linear
    embedding = [m for m in net.protein_sequence_embedding.modules() if isinstance(m, torch.nn.Linear)]
    assert embedding and all(type(m) is torch.nn.Linear for m in embedding)  # ESM2 + projection: once per sequence
    error = float((sample_released(released, cell, tokens, noise, precision="int8") - exact).abs().max())
    assert 0 < error < 0.05
    code, out, _ = run(["generate", "--model", str(celldiff_set / "set"), "--sequence", SEQUENCE, "--landmarks",
                        str(celldiff_set / "cell"), "--out", str(tmp_path / "g"), "--steps", "2", "--precision",
                        "int8"], capsys)
    assert code == 0 and json.loads((tmp_path / "g" / "summary.json").read_text())["precision"] == "int8"


# ---------------------------------------------------------------------------------------------------------------------
# CELL-E 2 folder
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def celle2_folder(tmp_path_factory):
    """The released layout: the CELLE_trainer yaml, its checkpoint, the tokenizer yamls / checkpoints it names."""
    from PIL import Image

    golden = _require(SHARED / "golden" / "celle2_tiny")
    root = tmp_path_factory.mktemp("celle2")
    (root / "model").mkdir()
    for source in [*golden.glob("*.yaml"), *golden.glob("*.ckpt")]:
        shutil.copy(source, root / "model" / source.name)
    Image.fromarray(np.load(golden / "input_nucleus_uint8.npy")).save(root / "nucleus.png")
    return root


def test_celle2_generates_from_a_released_folder(celle2_folder, tmp_path, capsys):
    code, out, _ = run(["generate", "--model", str(celle2_folder / "model"), "--sequence", SEQUENCE, "--landmarks",
                        str(celle2_folder / "nucleus.png"), "--samples", "2", "--out", str(tmp_path / "out")], capsys)
    assert code == 0 and "report:" in out
    for stem in ("sample_0", "sample_1", "threshold_0", "probability"):
        assert (tmp_path / "out" / "sequence" / f"{stem}.png").is_file()


def test_celle2_missing_or_unmatched_checkpoint_is_one_line_naming_it(celle2_folder, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(celle2_folder / "model", folder)
    argv = ["generate", "--model", str(folder), "--sequence", SEQUENCE, "--landmarks",
            str(celle2_folder / "nucleus.png"), "--out", str(tmp_path / "out")]
    config = (folder / "celle_tiny.yaml").read_text()
    assert "    depth: 2\n" in config
    (folder / "celle_tiny.yaml").write_text(config.replace("    depth: 2\n", "    depth: 3\n"))
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err, "celle_tiny.ckpt does not match the model: missing keys:")
    (folder / "celle_tiny.ckpt").unlink()
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err, "celle_tiny.ckpt")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------------------
# guided-I2I folder
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stain_folder(tmp_path_factory):
    import tifffile

    golden = _require(SHARED / "golden" / "guided_i2i_tiny")
    root = tmp_path_factory.mktemp("stain")
    (root / "model").mkdir()
    for name in ("1_Network.pth", "network_config.json"):
        shutil.copy(golden / name, root / "model" / name)
    tifffile.imwrite(root / "a.tif", np.load(golden / "input_raw_uint16.npy")[0, 5:])  # the 3 brightfield planes
    return root


def stain_args(root, model, out) -> list[str]:
    return ["stain", "--brightfield", str(root / "a.tif"), "--model", str(model), "--class", "class-1", "--sampler",
            "ddim", "--steps", "2", "--out", str(out)]


def test_stain_runs_a_released_folder(stain_folder, tmp_path, capsys):
    code, _, _ = run(stain_args(stain_folder, stain_folder / "model", tmp_path / "out"), capsys)
    assert code == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["class_index"] == 1 and (tmp_path / "out" / "a" / "dna.tif").is_file()


def test_stain_missing_or_unmatched_network_is_one_line_naming_the_file(stain_folder, tmp_path, capsys):
    from locscope.utils.checkpoint import read_torch_weights

    folder = tmp_path / "model"
    shutil.copytree(stain_folder / "model", folder)
    weights = read_torch_weights(folder / "1_Network.pth")
    (folder / "1_Network.pth").unlink()
    code, _, err = run(stain_args(stain_folder, folder, tmp_path / "out"), capsys)
    assert_one_line_error(code, err, "<epoch>_Network.pth: file not found")
    weights["denoise_fn.out.2.weights"] = weights.pop("denoise_fn.out.2.weight")
    torch.save(weights, folder / "2_Network.pth")
    code, _, err = run(stain_args(stain_folder, folder, tmp_path / "out"), capsys)
    assert_one_line_error(code, err, "2_Network.pth does not match the model: missing keys:")
    assert not (tmp_path / "out").exists()
