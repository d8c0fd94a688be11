"""Fast SubCell inference: ``precision="int8"`` (dynamic int8 ViT Linear layers) against the fp32 outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from locscope.cli import main
from locscope.errors import InputError
from locscope.models.subcell import SubCellConfig, SubCellModel, quantize_encoder_int8
from locscope.pipelines.embed import CellInput, embed_cells
from locscope.utils.checkpoint import save_pretrained

TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32,
            patch_size=8, pool_inner_dim=32, classifier_hidden=(32,), num_classifiers=2)


@pytest.fixture(scope="module")
def tiny_model() -> SubCellModel:
    torch.manual_seed(0)
    return SubCellModel(SubCellConfig(**TINY)).eval()


def random_cells(n: int, seed: int = 0) -> list[CellInput]:
    """n cells of 4 x 32 x 32 raw intensities: a bright blob on noise, at random places."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:32, :32]
    cells = []
    for i in range(n):
        center = rng.uniform(8, 24, size=(4, 2))
        blobs = np.exp(-((rows - center[:, :1, None]) ** 2 + (cols - center[:, 1:, None]) ** 2) / 30.0)
        cells.append(CellInput(f"cell{i}", (1000 * blobs + rng.uniform(0, 200, (4, 32, 32))).astype(np.float32)))
    return cells


def test_int8_close_to_fp32(tiny_model):
    cells = random_cells(40)
    fp32 = embed_cells(tiny_model, cells, batch_size=16, precision="fp32", progress=False)
    int8 = embed_cells(tiny_model, cells, batch_size=16, precision="int8", progress=False)
    assert int8.ids == fp32.ids
    cosine = (int8.embeddings * fp32.embeddings).sum(1) / (
        np.linalg.norm(int8.embeddings, axis=1) * np.linalg.norm(fp32.embeddings, axis=1))
    # int8 weights (per output channel) and activations (per batch): embeddings stay within cosine 0.995 of fp32 and
    # probabilities within 0.03; the outputs are not bit-equal (the quantized path really ran).
    assert cosine.min() > 0.995
    assert np.abs(int8.probabilities - fp32.probabilities).max() < 0.03
    assert not np.array_equal(int8.embeddings, fp32.embeddings)
    assert int8.embeddings.dtype == np.float32 and int8.probabilities.dtype == np.float32


def test_quantize_leaves_model_unchanged(tiny_model):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    quantized = quantize_encoder_int8(tiny_model)
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    n_linear = sum(type(m) is nn.Linear for m in tiny_model.encoder.modules())
    assert n_linear == 6 * TINY["num_hidden_layers"]  # q, k, v, o, fc1, fc2 per layer
    assert sum(type(m) is DynamicQuantizedLinear for m in quantized.encoder.modules()) == n_linear
    assert not any(type(m) is nn.Linear for m in quantized.encoder.modules())
    assert sum(type(m) is nn.Linear for m in quantized.classifiers.modules()) == 2 * TINY["num_classifiers"]
    after = tiny_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bad_precision_one_line(tiny_model):
    with pytest.raises(InputError, match=r"^--precision 'fp16': accepted values are fp32, bf16, int8$"):
        embed_cells(tiny_model, random_cells(1), precision="fp16", progress=False)


def test_classify_cli_int8(tmp_path, tiny_model, capsys):
    import tifffile

    model_dir = save_pretrained(tiny_model, tiny_model.config, tmp_path / "model")
    paths = []
    for cell in random_cells(2, seed=1):
        paths.append(tmp_path / f"{cell.id}.tif")
        tifffile.imwrite(paths[-1], cell.images)
    order = "microtubules,er,nucleus,protein"
    args = ["classify", *map(str, paths), "--model", str(model_dir), "--channel-order", order, "--top", "2"]
    with pytest.raises(SystemExit) as info:
        main([*args, "--precision", "int8"])
    assert info.value.code in (0, None)
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["cell0", "cell1"]

    with pytest.raises(SystemExit) as info:
        main([*args, "--precision", "int4"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "accepted values are fp32, bf16, int8" in err
