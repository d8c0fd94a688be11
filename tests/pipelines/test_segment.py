"""Single cells from fields: nuclei, cells and crops, on a real HPA landmark field and on a synthetic two-cell field."""

from __future__ import annotations

import numpy as np
import pytest

from locscope.errors import InputError
from locscope.pipelines.segment import crop_cells, rescale_intensity, segment_field


@pytest.fixture(scope="module")
def rela_field():
    import tifffile

    from conftest import SHARED, _require

    stack = tifffile.imread(_require(SHARED / "data" / "proticelli_landmarks" / "RELA_A-431" / "cell_9.tiff"))
    # Order (microtubules, protein, nucleus, ER), float in [-1, 1] (shared/data/proticelli_landmarks/README.txt).
    return {"microtubules": stack[..., 0], "protein": stack[..., 1], "nucleus": stack[..., 2], "er": stack[..., 3]}


def two_cell_field(rng: np.random.Generator) -> dict[str, np.ndarray]:
    rows, cols = np.mgrid[:120, :200]
    nucleus = np.zeros((120, 200), np.float32)
    er = np.zeros((120, 200), np.float32)
    for centre_col in (55, 145):
        r2 = (rows - 60) ** 2 + (cols - centre_col) ** 2
        nucleus[r2 < 15**2] = 1.0
        er[(r2 < 40**2) & (r2 >= 15**2)] = 0.8
    noise = lambda: rng.normal(0, 0.03, nucleus.shape).astype(np.float32)  # noqa: E731
    return {"nucleus": nucleus + noise(), "er": er + noise(), "protein": er * 0.5 + noise()}


def test_real_field_one_cell(rela_field):
    seg = segment_field(rela_field)
    assert seg.n_cells == 1
    nucleus_area = int((seg.nuclei == 1).sum())
    cell_area = int((seg.cells == 1).sum())
    # The nucleus of this A-431 cell covers ~17% of the 456x512 field; the cell body about two thirds.
    assert 30_000 < nucleus_area < 50_000
    assert 2.5 * nucleus_area < cell_area < 0.8 * seg.cells.size
    assert np.all(seg.cells[seg.nuclei == 1] == 1)  # the nucleus lies inside its cell
    row, col = np.argwhere(seg.nuclei == 1).mean(axis=0)
    assert 200 < row < 300 and 150 < col < 260


def test_real_field_crops(rela_field):
    seg = segment_field(rela_field)
    crops = crop_cells(rela_field, seg, crop_size=512, output_size=128)
    assert len(crops) == 1
    crop = crops[0]
    assert set(crop.images) == set(rela_field)
    assert all(im.shape == (128, 128) and im.dtype == np.float32 for im in crop.images.values())
    assert crop.mask.shape == (128, 128) and 0.3 < crop.mask.mean() < 0.9
    assert crop.touches_border  # this cell reaches the field's left and bottom edges
    # Padding uses the channel's background level (-1 here), never values outside the field's range.
    for name, image in crop.images.items():
        assert image.min() >= rela_field[name].min() - 1e-5 and image.max() <= rela_field[name].max() + 1e-5
    # The crop is centred on the cell: the nucleus signal peaks near the middle.
    nucleus = crop.images["nucleus"]
    row, col = np.argwhere(nucleus > np.percentile(nucleus, 90)).mean(axis=0)
    assert abs(row - 64) < 25 and abs(col - 64) < 30


def test_two_touching_cells_are_split(rng):
    field = two_cell_field(rng)
    seg = segment_field(field, min_nucleus_area_px=100)
    assert seg.n_cells == 2
    left, right = seg.cells[60, 55], seg.cells[60, 145]
    assert left != right and left > 0 and right > 0
    assert seg.cells[60, 5] == 0  # background stays background
    crops = crop_cells(field, seg, crop_size=96, mask_other_cells=True)
    assert [c.label for c in crops] == sorted([int(left), int(right)])
    first = crops[0]
    assert first.images["er"].shape == (96, 96)
    # The other cell is blanked to the channel minimum inside the first crop.
    other = ~first.mask & (first.images["er"] > 0.5)
    assert not other[:, 80:].any()


def test_bad_inputs():
    with pytest.raises(InputError, match="needs a 'nucleus' channel"):
        segment_field({"er": np.zeros((8, 8))})
    with pytest.raises(InputError, match="channel 'er' has shape"):
        segment_field({"nucleus": np.zeros((8, 8)), "er": np.zeros((9, 8))})
    with pytest.raises(InputError, match="NaN"):
        rescale_intensity(np.full((4, 4), np.nan))
    seg = segment_field({"nucleus": np.zeros((32, 32)), "er": np.zeros((32, 32))})
    assert seg.n_cells == 0
