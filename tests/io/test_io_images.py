"""Image readers on the real sample files and on bad inputs (exact one-line errors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from locscope.errors import InputError
from locscope.io import ImageRecord, read_image, read_images
from locscope.io.images import display_colour


def _png(path: Path, array: np.ndarray) -> Path:
    import imagecodecs

    path.write_bytes(imagecodecs.png_encode(array))
    return path


def test_celldiff_hpa_display_colours(shared_data):
    folder = shared_data / "celldiff_samples" / "hpa" / "1"
    expected = {"ER.png": ("er", "yellow", 0), "microtubule.png": ("microtubules", "red", 0),
                "nucleus.png": ("nucleus", "blue", 2)}
    for name, (channel, colour, plane) in expected.items():
        rec = read_image(folder / name)
        assert rec.format == "hpa-display-rgb"
        assert list(rec.channels) == [channel]
        assert rec.metadata["display_colour"] == colour
        assert rec.channels[channel].dtype == np.uint8 and rec.shape == (256, 256)
    # the single plane is the colour plane of the source RGB
    import imagecodecs

    rgb = imagecodecs.png_decode((folder / "nucleus.png").read_bytes())
    np.testing.assert_array_equal(read_image(folder / "nucleus.png").channels["nucleus"], rgb[..., 2])
    assert int(read_image(folder / "ER.png").channels["er"].max()) == 231


def test_read_images_groups_celldiff_folders(shared_data):
    hpa = sorted((shared_data / "celldiff_samples" / "hpa").glob("*/*.png"))
    records = read_images(hpa)
    assert len(records) == 6
    assert [r.path.name for r in records] == ["1", "2", "3", "4", "5", "nls"]
    assert all(r.format == "celldiff-sample" for r in records)
    assert sorted(records[0].channels) == ["er", "microtubules", "nucleus"]
    # hpa/nls is stored grey (R = G = B): file names identify the channels
    nls = records[-1]
    assert sorted(nls.channels) == ["er", "microtubules", "nucleus", "protein"]
    assert all(p["display_colour"] == "grey" for p in nls.metadata["parts"])
    # a folder path reads the same record
    folder = read_image(shared_data / "celldiff_samples" / "hpa" / "nls")
    for name in nls.channels:
        np.testing.assert_array_equal(folder.channels[name], nls.channels[name])


def test_celldiff_opencell_samples(shared_data):
    records = read_images(sorted((shared_data / "celldiff_samples" / "opencell").glob("*/*.png")))
    assert len(records) == 7
    by_name = {r.path.name: r for r in records}
    assert list(by_name["1"].channels) == ["nucleus"]
    assert sorted(by_name["nes"].channels) == ["nucleus", "protein"]
    assert int(by_name["nls"].channels["protein"].max()) == 255
    assert int(by_name["1"].channels["nucleus"].min()) == 3


def test_hpa_four_file_field(tmp_path, rng):
    planes = {c: rng.integers(0, 65535, (40, 48), dtype=np.uint16) for c in ("red", "green", "blue", "yellow")}
    files = [_png(tmp_path / f"1234_A1_5_{c}.png", planes[c]) for c in planes]
    (rec,) = read_images(files)
    assert rec.format == "hpa-fov" and rec.path == tmp_path / "1234_A1_5"
    np.testing.assert_array_equal(rec.channels["microtubules"], planes["red"])
    np.testing.assert_array_equal(rec.channels["protein"], planes["green"])
    np.testing.assert_array_equal(rec.channels["nucleus"], planes["blue"])
    np.testing.assert_array_equal(rec.channels["er"], planes["yellow"])
    assert rec.dtype == np.uint16
    single = read_image(files[3])
    assert single.format == "hpa-channel" and list(single.channels) == ["er"]


def test_hpa_channel_tiff_and_rgb_jpeg(tmp_path, rng):
    import imagecodecs
    import tifffile

    plane = rng.integers(0, 255, (32, 32), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "7_blue.tif", plane)
    np.testing.assert_array_equal(read_image(tmp_path / "7_blue.tif").channels["nucleus"], plane)
    # HPA colour JPEG: the green plane of an RGB image that shows the protein in green
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 1] = np.kron(rng.integers(0, 255, (4, 4)), np.ones((8, 8))).astype(np.uint8)
    (tmp_path / "7_green.jpg").write_bytes(imagecodecs.jpeg8_encode(rgb, level=95))
    rec = read_image(tmp_path / "7_green.jpg")
    assert list(rec.channels) == ["protein"]
    assert np.abs(rec.channels["protein"].astype(int) - rgb[..., 1]).mean() < 4


def test_display_colour_rules(rng):
    plane = rng.integers(1, 255, (16, 16), dtype=np.uint8)
    zero = np.zeros_like(plane)
    assert display_colour(np.stack([plane, zero, zero], -1)) == "red"
    assert display_colour(np.stack([zero, plane, zero], -1)) == "green"
    assert display_colour(np.stack([zero, zero, plane], -1)) == "blue"
    assert display_colour(np.stack([plane, plane, zero], -1)) == "yellow"
    assert display_colour(np.stack([plane, plane, plane], -1)) == "grey"
    assert display_colour(np.stack([plane, zero, plane], -1)) is None


def test_composite_rgb_and_grey_default(tmp_path, rng):
    rgb = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
    rec = read_image(_png(tmp_path / "composite.png", rgb))
    assert rec.format == "hpa-composite-rgb"
    assert list(rec.channels) == ["microtubules", "protein", "nucleus"]
    np.testing.assert_array_equal(rec.channels["protein"], rgb[..., 1])
    grey = rng.integers(0, 65535, (20, 24), dtype=np.uint16)
    rec = read_image(_png(tmp_path / "cell.png", grey))
    assert rec.format == "png" and list(rec.channels) == ["protein"] and rec.dtype == np.uint16
    rec = read_image(_png(tmp_path / "cell_dapi.png", grey))
    assert list(rec.channels) == ["nucleus"]
    rec = read_image(tmp_path / "cell.png", channel_order=["ER"])
    assert list(rec.channels) == ["er"]


def test_generic_tiff_channel_axis_rules(tmp_path, rng):
    import tifffile

    chw = rng.integers(0, 4000, (2, 30, 40), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "chw.tif", chw)
    rec = read_image(tmp_path / "chw.tif", channel_order=["nucleus", "protein"])
    assert rec.format == "tiff" and rec.shape == (30, 40)
    np.testing.assert_array_equal(rec.channels["protein"], chw[1])
    # OME-TIFF with named channels and a z axis: z is max-projected, names come from the OME metadata
    zcyx = rng.integers(0, 4000, (5, 2, 30, 40), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "s.ome.tif", zcyx, metadata={"axes": "ZCYX", "Channel": {"Name": ["DAPI", "GFP"]},
                                                              "PhysicalSizeX": 0.2, "PhysicalSizeXUnit": "µm"})
    rec = read_image(tmp_path / "s.ome.tif")
    assert rec.format == "ome-tiff" and sorted(rec.channels) == ["nucleus", "protein"]
    np.testing.assert_array_equal(rec.channels["protein"], zcyx[:, 1].max(axis=0))
    assert rec.metadata["z_projected"] == 5
    assert rec.pixel_size_nm == pytest.approx(200.0)
    # float32 single plane keeps its dtype
    tifffile.imwrite(tmp_path / "er.tif", rng.random((30, 40), dtype=np.float32))
    rec = read_image(tmp_path / "er.tif")
    assert list(rec.channels) == ["er"] and rec.dtype == np.float32


def test_record_stack_fills_missing_channels(shared_data):
    rec = read_image(shared_data / "celldiff_samples" / "opencell" / "nls")
    stack = rec.stack(["protein", "nucleus", "er"])
    assert stack.shape == (3, 256, 256) and stack.dtype == np.uint8
    assert not stack[2].any()
    assert isinstance(rec, ImageRecord)


# ------------------------------------------------------------------ bad inputs: exact one-line errors


def test_truncated_png(tmp_path, shared_data):
    data = (shared_data / "celldiff_samples" / "hpa" / "1" / "nucleus.png").read_bytes()
    bad = tmp_path / "nucleus.png"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as err:
        read_image(bad)
    assert str(err.value) == f"{bad}: truncated or corrupt PNG file"


def test_empty_file(tmp_path):
    empty = tmp_path / "x_red.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError) as err:
        read_image(empty)
    assert str(err.value) == f"{empty}: empty file"


def test_non_image(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    with pytest.raises(InputError) as err:
        read_image(text)
    assert str(err.value) == f"{text}: not an image file (no PNG, JPEG, TIFF or NPY signature)"


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as err:
        read_image(tmp_path / "nope.tif")
    assert str(err.value) == f"{tmp_path / 'nope.tif'}: no such file or directory"


def test_wrong_channel_count(tmp_path, rng):
    rgb = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    path = _png(tmp_path / "c.png", rgb)
    with pytest.raises(InputError) as err:
        read_image(path, channel_order=["nucleus", "protein"])
    assert str(err.value) == (f"{path}: wrong channel count: the file has 3 channel(s) but channel_order names 2 "
                              "(nucleus, protein)")


def test_name_contradicts_colour(tmp_path, rng):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = rng.integers(1, 255, (8, 8))
    path = _png(tmp_path / "nucleus.png", rgb)
    with pytest.raises(InputError) as err:
        read_image(path)
    assert str(err.value) == (f"{path}: file name says 'nucleus' but the display colour is red (microtubules); "
                              "pass channel_order to override")


def test_truncated_tiff_and_duplicate_channel(tmp_path, rng):
    import tifffile

    tifffile.imwrite(tmp_path / "a.tif", rng.integers(0, 255, (64, 64), dtype=np.uint8))
    data = (tmp_path / "a.tif").read_bytes()
    (tmp_path / "b.tif").write_bytes(data[:200])
    with pytest.raises(InputError) as err:
        read_image(tmp_path / "b.tif")
    assert str(err.value) == f"{tmp_path / 'b.tif'}: truncated or corrupt TIFF file"
    # two HPA files claiming the same channel of one field of view
    _png(tmp_path / "9_red.png", np.ones((4, 4), np.uint8))
    tifffile.imwrite(tmp_path / "9_red.tif", np.ones((4, 4), np.uint8))
    with pytest.raises(InputError) as err:
        read_images([tmp_path / "9_red.png", tmp_path / "9_red.tif"])
    assert str(err.value) == (f"{tmp_path / '9_red.tif'}: channel 'microtubules' already read from "
                              f"{tmp_path / '9_red.png'} for the same field of view")


def test_display_colour_survives_jpeg(shared_data, tmp_path):
    """Re-encoded as JPEG (colour bleeds between planes), every CELL-Diff sample keeps its channel."""
    import imagecodecs

    for png in sorted((shared_data / "celldiff_samples" / "hpa").glob("*/*.png")):
        rgb = imagecodecs.png_decode(png.read_bytes())
        jpeg = tmp_path / png.parent.name / (png.stem + ".jpg")
        jpeg.parent.mkdir(exist_ok=True)
        jpeg.write_bytes(imagecodecs.jpeg8_encode(rgb, level=75))
        lossless, lossy = read_image(png), read_image(jpeg)
        assert lossy.format == "hpa-display-rgb" and list(lossy.channels) == list(lossless.channels), png
        assert lossy.metadata["display_colour"] == lossless.metadata["display_colour"], png


def test_sixteen_bit_display_rgb_and_rgba(tmp_path, rng):
    rgb = np.zeros((12, 10, 3), np.uint16)
    rgb[..., 0] = rng.integers(1, 65535, (12, 10))
    rec = read_image(_png(tmp_path / "tub.png", rgb))
    assert list(rec.channels) == ["microtubules"] and rec.dtype == np.uint16
    np.testing.assert_array_equal(rec.channels["microtubules"], rgb[..., 0])
    rgba = np.zeros((12, 10, 4), np.uint8)
    rgba[..., 2] = rng.integers(1, 255, (12, 10))
    rgba[..., 3] = 255
    assert list(read_image(_png(tmp_path / "n.png", rgba)).channels) == ["nucleus"]
    rgba[0, 0, 3] = 10
    path = _png(tmp_path / "t.png", rgba)
    with pytest.raises(InputError) as err:
        read_image(path)
    assert str(err.value) == f"{path}: image has a non-opaque alpha channel; save it without transparency"


def test_imagej_hyperstack_pixel_size(tmp_path, rng):
    import tifffile

    zcyx = rng.integers(0, 4000, (3, 2, 20, 30), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "hyper.tif", zcyx, imagej=True, resolution=(1 / 0.1625, 1 / 0.1625),
                     metadata={"axes": "ZCYX", "unit": "um"})
    rec = read_image(tmp_path / "hyper.tif", channel_order=["nucleus", "protein"])
    assert rec.pixel_size_nm == pytest.approx(162.5)
    assert rec.metadata["z_projected"] == 3 and rec.metadata["channel_axis"] == "C"
    np.testing.assert_array_equal(rec.channels["nucleus"], zcyx[:, 0].max(axis=0))
    with pytest.raises(InputError) as err:
        read_image(tmp_path / "hyper.tif")
    assert str(err.value) == (f"{tmp_path / 'hyper.tif'}: 2 channels of uint16 and no channel names; give channel_order "
                              "(the channel names in file order, e.g. microtubules,nucleus,er)")
