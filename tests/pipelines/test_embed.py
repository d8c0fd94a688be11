"""``locscope embed`` / ``classify``: path-list CSV and store inputs, batching, h5ad / CSV / npy / PNG outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from locscope.cli import main
from locscope.errors import InputError
from locscope.models.subcell import SUBCELL_CLASS_NAMES, SubCellConfig, SubCellModel, min_max_normalize
from locscope.pipelines.embed import (
    CellInput, cells_from_csv, cells_from_images, embed_cells, read_path_list, run_embed, top_classes,
)
from locscope.utils.checkpoint import save_pretrained
from locscope.utils.filenames import file_name_for_id

TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32,
            pool_inner_dim=16, classifier_hidden=(16,), num_classifiers=2)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = SubCellModel(SubCellConfig(**TINY))
    return save_pretrained(model, model.config, tmp_path_factory.mktemp("models") / "tiny")


def run_cli(args: list[str]) -> None:
    """Run the CLI in-process; it exits with code 0 on success."""
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code in (0, None)


def write_cells(folder: Path, rng: np.random.Generator, n: int = 3, shape=(48, 64)) -> Path:
    """n cells as 8-bit PNG planes + a SubCell path list (one comment row, one cell without ER)."""
    from PIL import Image

    rows = ["r_image,y_image,b_image,g_image,output_prefix", "# a comment row SubCell's CLI skips"]
    for i in range(n):
        names = []
        for colour in "rybg":
            name = f"cell{i}_{colour}.png"
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(folder / name)
            names.append(name)
        if i == 1:
            names[1] = ""  # ER absent -> zeros
        rows.append(",".join([*names, f"plate1/cell{i}"]))
    (folder / "path_list.csv").write_text("\n".join(rows) + "\n")
    return folder / "path_list.csv"


def test_path_list_parsing(tmp_path, rng):
    csv_path = write_cells(tmp_path, rng)
    rows = read_path_list(csv_path)
    assert [prefix for prefix, _ in rows] == ["plate1/cell0", "plate1/cell1", "plate1/cell2"]
    assert set(rows[1][1]) == {"microtubules", "nucleus", "protein"}
    cells = list(cells_from_csv(csv_path, "rybg"))
    assert cells[0].images.shape == (4, 48, 64)
    assert np.all(cells[1].images[1] == 0)
    (tmp_path / "bad.csv").write_text("r_image,b_image,g_image,output_prefix\na.png,b.png,c.png,x\n")
    with pytest.raises(InputError, match="bad.csv: missing column\\(s\\) y_image"):
        read_path_list(tmp_path / "bad.csv")
    (tmp_path / "dup.csv").write_text("r_image,y_image,b_image,g_image,output_prefix\na,b,c,d,x\na,b,c,d,x\n")
    with pytest.raises(InputError, match="data row 2: duplicate output_prefix 'x'"):
        read_path_list(tmp_path / "dup.csv")
    (tmp_path / "missing.csv").write_text("r_image,y_image,b_image,g_image,output_prefix\nno.png,,,,x\n")
    with pytest.raises(InputError, match="no.png: no such file or directory"):  # the message every command gives
        list(cells_from_csv(tmp_path / "missing.csv", "rybg"))


def test_batched_equals_one_at_a_time(tiny_model_dir, rng):
    model = SubCellModel.from_pretrained(tiny_model_dir)
    cells = [CellInput(f"c{i}", rng.random((4, 40, 40), dtype=np.float32) * 1000) for i in range(5)]
    one = embed_cells(model, cells, batch_size=1, precision="fp32", progress=False)
    batched = embed_cells(model, cells, batch_size=4, precision="fp32", progress=False)
    np.testing.assert_allclose(one.embeddings, batched.embeddings, atol=1e-5)
    np.testing.assert_allclose(one.probabilities, batched.probabilities, atol=1e-6)
    bf16 = embed_cells(model, cells, batch_size=4, precision="bf16", progress=False)
    assert np.abs(bf16.probabilities - one.probabilities).max() < 0.02  # autocast changes values, not answers
    # Matches a direct forward pass of the model on normalised input.
    with torch.no_grad():
        direct = model(min_max_normalize(torch.from_numpy(cells[2].images[None]))).embedding.numpy()
    np.testing.assert_allclose(one.embeddings[2:3], direct, atol=1e-5)


def test_embed_cli_writes_outputs(tiny_model_dir, tmp_path, rng):
    import anndata
    import pandas as pd

    csv_path = write_cells(tmp_path, rng)
    out = tmp_path / "out"
    run_cli(["embed", "--csv", str(csv_path), "-o", str(out), "--model", str(tiny_model_dir), "--batch-size", "2",
          "--precision", "fp32", "--image-size", "0", "--save-npy", "--save-attention", "--device", "cpu"])
    adata = anndata.read_h5ad(out / "embeddings.h5ad")
    assert adata.shape == (3, 64)
    assert list(adata.obs_names) == ["plate1/cell0", "plate1/cell1", "plate1/cell2"]
    assert adata.obsm["probabilities"].shape == (3, 31)
    assert list(adata.uns["class_names"]) == list(SUBCELL_CLASS_NAMES)
    table = pd.read_csv(out / "result.csv")
    assert list(table.columns[:4]) == ["id", "top_class", "top_probability", "top_3_classes"]
    assert list(table.columns[4:]) == list(SUBCELL_CLASS_NAMES)
    probs = table[list(SUBCELL_CLASS_NAMES)].to_numpy()
    np.testing.assert_allclose(probs, adata.obsm["probabilities"], atol=1e-6)
    assert table["top_class"].tolist() == [SUBCELL_CLASS_NAMES[j] for j in probs.argmax(axis=1)]
    np.testing.assert_allclose(np.load(out / f"{file_name_for_id('plate1/cell1')}_embedding.npy"), adata.X[1], atol=1e-6)
    from PIL import Image

    with Image.open(out / f"{file_name_for_id('plate1/cell0')}_attention_map.png") as im:
        assert im.size == (2 * 4 + 1, 3)  # two heads of 3x4 patches, one gap column


def test_embed_reproduces_published_golden(shared_golden, tmp_path):
    """Raw golden input written as float TIFF planes -> CLI -> the published code's embedding and probabilities."""
    import anndata
    import tifffile

    folder = shared_golden / "subcell_tiny"
    raw = np.load(folder / "input_raw.npy")
    rows = ["r_image,y_image,b_image,g_image,output_prefix"]
    for i, cell in enumerate(raw):
        names = [f"c{i}_{colour}.tif" for colour in "rybg"]
        for name, plane in zip(names, cell):
            tifffile.imwrite(tmp_path / name, plane)
        rows.append(",".join([*names, f"cell{i}"]))
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    run_embed(tmp_path / "out", csv_path=tmp_path / "list.csv", model=folder / "model_config.yaml",
              precision="fp32", device="cpu", progress=False)
    adata = anndata.read_h5ad(tmp_path / "out" / "embeddings.h5ad")
    np.testing.assert_allclose(adata.X, np.load(folder / "expected_embedding.npy"), atol=1e-5)
    np.testing.assert_allclose(adata.obsm["probabilities"], np.load(folder / "expected_probabilities.npy"), atol=1e-5)


def write_noise_store(path: Path, rng: np.random.Generator, n: int) -> None:
    """A store of n 32 x 32 noise cells (nucleus + protein), one of 3 proteins each."""
    from locscope.data.store import write_store

    items = [{"id": f"item{i}", "protein_id": f"P{i % 3}", "sequence": "MKV",
              "images": {"nucleus": rng.integers(0, 900, (32, 32), dtype=np.uint16),
                         "protein": rng.integers(0, 900, (32, 32), dtype=np.uint16)},
              "labels": {"level1": ["cytosol"]}} for i in range(n)]
    write_store(path, items, channels=("nucleus", "protein"), image_shape=(32, 32), progress=False)


def test_embed_from_store(tiny_model_dir, tmp_path, rng):
    import anndata

    write_noise_store(tmp_path / "store", rng, 6)
    result = run_embed(tmp_path / "out", store_path=tmp_path / "store", model=tiny_model_dir, precision="fp32",
                       device="cpu", progress=False)
    assert result.ids == [f"item{i}" for i in range(6)]
    assert anndata.read_h5ad(tmp_path / "out" / "embeddings.h5ad").shape == (6, 64)


def test_classify_cli_segments_a_real_field(tiny_model_dir, shared_data, capsys):
    field = shared_data / "proticelli_landmarks" / "RELA_A-431" / "cell_9.tiff"
    run_cli(["classify", str(field), "--channel-order", "microtubules,protein,nucleus,er", "--segment",
          "--crop-size", "512", "--output-size", "64", "--model", str(tiny_model_dir), "--top", "2",
          "--device", "cpu"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    fields = lines[0].split("\t")
    assert fields[0] == "cell_9_cell1" and len(fields) == 3
    name, prob = fields[1].rsplit(" (", 1)
    assert name in SUBCELL_CLASS_NAMES and 0 < float(prob.rstrip(")")) < 1


def test_classify_with_the_bundled_model(shared_data, capsys):
    """Default model (subcell-tiny, trained at 64 x 64): crops are resized to its training size automatically."""
    field = shared_data / "proticelli_landmarks" / "RELA_A-431" / "cell_9.tiff"
    run_cli(["classify", str(field), "--channel-order", "microtubules,protein,nucleus,er", "--segment",
             "--output-size", "128", "--precision", "fp32", "--device", "cpu"])
    fields = capsys.readouterr().out.strip().split("\t")
    assert fields[0] == "cell_9_cell1" and len(fields) == 4
    probabilities = [float(f.rsplit(" (", 1)[1].rstrip(")")) for f in fields[1:]]
    assert probabilities == sorted(probabilities, reverse=True)


def test_image_size_resolution(tiny_model_dir):
    from locscope.pipelines.embed import resolve_image_size

    model = SubCellModel.from_pretrained(tiny_model_dir)
    assert resolve_image_size(tiny_model_dir, model, None) == 32
    assert resolve_image_size("x/model_config.yaml", model, None) is None
    assert resolve_image_size(None, model, 0) is None and resolve_image_size(None, model, 48) == 48
    with pytest.raises(InputError, match="image_size must be 0"):
        resolve_image_size(None, model, -1)


def test_image_files_and_user_errors(tmp_path, tiny_model_dir, capsys):
    import tifffile

    tifffile.imwrite(tmp_path / "chw.tif", np.zeros((5, 20, 24), np.uint16))
    cell = next(cells_from_images([tmp_path / "chw.tif"], "rybg",
                                  channel_order=["nucleus", "er", "protein", "microtubules", "dna"]))
    assert cell.images.shape == (4, 20, 24)
    with pytest.raises(InputError, match="5 channels of uint16 and no channel names; give channel_order"):
        next(cells_from_images([tmp_path / "chw.tif"], "rybg"))
    with pytest.raises(SystemExit) as info:
        main(["embed", "--csv", str(tmp_path / "absent.csv"), "-o", str(tmp_path / "o"), "--model",
              str(tiny_model_dir)])
    assert info.value.code == 2
    assert "absent.csv: path-list CSV not found" in capsys.readouterr().err
    assert not (tmp_path / "o" / "embeddings.h5ad").exists()
    with pytest.raises(InputError, match="no_model: no SubCell model at"):
        run_embed(tmp_path / "o", csv_path=tmp_path / "absent.csv", model=tmp_path / "no_model")


def test_top_classes_order():
    probs = np.array([[0.1, 0.9, 0.5]])
    assert top_classes(probs, ("a", "b", "c"), k=2) == [[("b", 0.9), ("c", 0.5)]]


def test_embed_store_default_calibrates_on_a_spread_sample(tiny_model_dir, tmp_path, rng, monkeypatch,
                                                           int8_check_passes):
    """A store run's int8 calibration reads cells spread over the chosen split (the sample), then embeds all."""
    import json

    import anndata

    monkeypatch.setenv("LOCSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    write_noise_store(tmp_path / "store", rng, 90)
    result = run_embed(tmp_path / "out", store_path=tmp_path / "store", model=tiny_model_dir, device="cpu",
                       progress=False)
    assert result.ids == [f"item{i}" for i in range(90)]
    (mode,) = json.loads(anndata.read_h5ad(tmp_path / "out" / "embeddings.h5ad").uns["inference"])
    assert (mode["backend"], mode["precision"], mode["cells"]) == ("openvino", "int8", 90)
    assert mode["calibration"] == "this run (64 cells spread over the input)"


def test_classify_images_is_the_pipeline_behind_the_cli(tiny_model_dir, shared_data):
    from locscope.pipelines.classify import classify_images

    field = shared_data / "proticelli_landmarks" / "RELA_A-431" / "cell_9.tiff"
    ranked, result = classify_images([field], model=tiny_model_dir, channel_order=["microtubules", "protein",
                                     "nucleus", "er"], segment=True, output_size=64, top=2, device="cpu")
    assert [cell_id for cell_id, _ in ranked] == result.ids == ["cell_9_cell1"]
    probabilities = result.probabilities[0]
    assert [name for name, _ in ranked[0][1]] == [result.class_names[i] for i in np.argsort(-probabilities)[:2]]
