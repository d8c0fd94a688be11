"""One image reader for every command: NaN / Inf refused, 16-bit kept, RGBA / 1 x 1 / folders handled alike, a pixel
limit checked from the header, and a warning for landmarks far smaller than the model input."""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from locscope.errors import InputError
from locscope.io import read_image, read_single_channel
from locscope.pipelines.embed import cells_from_csv, cells_from_images

from conftest import error_line


def path_list(tmp_path: Path, image: Path) -> Path:
    csv_path = tmp_path / "cells.csv"
    csv_path.write_text(f"r_image,y_image,b_image,g_image,output_prefix\n,,,{image.name},cell0\n")
    return csv_path


def test_nan_pixels_are_refused_by_every_command(tmp_path, cli):
    image = np.ones((16, 16), np.float32)
    image[3, 5] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", image)
    with pytest.raises(InputError, match=r"nan.tif: channel 'protein' has a non-finite value \(nan\) at row 3 col 5"):
        read_image(tmp_path / "nan.tif")
    with pytest.raises(InputError, match="non-finite value"):
        next(cells_from_images([tmp_path / "nan.tif"], "rybg"))  # classify's reader
    with pytest.raises(InputError, match="non-finite value"):
        next(cells_from_csv(path_list(tmp_path, tmp_path / "nan.tif"), "rybg"))  # embed's reader
    image[3, 5] = np.inf
    tifffile.imwrite(tmp_path / "inf.tif", image)
    for args in (["classify", tmp_path / "inf.tif", "--precision", "fp32"],
                 ["embed", "--csv", path_list(tmp_path, tmp_path / "inf.tif"), "--out", tmp_path / "out",
                  "--precision", "fp32"],
                 ["inspect", tmp_path / "inf.tif"]):
        code, _, err = cli(args)
        assert code == 2 and "non-finite value (inf) at row 3 col 5" in error_line(err), args
    assert not (tmp_path / "out").exists()


def test_sixteen_bit_grey_png_keeps_its_values_in_classify_and_embed(tmp_path):
    values = np.linspace(0, 60000, 24 * 32).reshape(24, 32).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "grey16.png")
    assert read_image(tmp_path / "grey16.png").channels["protein"].dtype == np.uint16
    cell = next(cells_from_images([tmp_path / "grey16.png"], "rybg"))
    protein = cell.images[3]  # rybg: microtubules, er, nucleus, protein
    assert protein.max() == 60000 and np.array_equal(protein, values.astype(np.float32))
    assert (protein >= 255).mean() < 0.01 + (values >= 255).mean()  # nothing clips at 8 bits
    assert np.array_equal(next(cells_from_csv(path_list(tmp_path, tmp_path / "grey16.png"), "rybg")).images[3],
                          values.astype(np.float32))


def test_rgba_tiny_images_and_folders_behave_alike_everywhere(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 255  # composite, opaque
    Image.fromarray(rgba, "RGBA").save(tmp_path / "opaque.png")
    record = read_image(tmp_path / "opaque.png")
    cell = next(cells_from_images([tmp_path / "opaque.png"], "rybg"))
    assert cell.images[0].max() == record.channels["microtubules"].max() == 10
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "transparent.png")
    for read in (read_image, lambda p: next(cells_from_images([p], "rybg")), read_single_channel):
        with pytest.raises(InputError, match="non-opaque alpha channel"):
            read(tmp_path / "transparent.png")
    Image.fromarray(np.full((1, 1), 7, np.uint8)).save(tmp_path / "dot.png")
    assert read_single_channel(tmp_path / "dot.png").shape == (1, 1)
    assert next(cells_from_images([tmp_path / "dot.png"], "rybg")).images.shape == (4, 1, 1)
    (tmp_path / "folder").mkdir()
    messages = set()
    for read in (read_image, lambda p: next(cells_from_images([p], "rybg")), read_single_channel):
        with pytest.raises(InputError) as info:
            read(tmp_path / "folder")
        messages.add(str(info.value))
    assert len(messages) == 1 and "no CELL-Diff sample files" in messages.pop()


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height (its pixel data is missing: decoding it would fail)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk)


def test_pixel_limit_is_checked_from_the_header_before_decoding(tmp_path, cli, monkeypatch):
    png_header_only(tmp_path / "huge.png", 20000, 20000)
    with pytest.raises(InputError, match=r"huge.png: 20000 x 20000 pixels is above the limit of 268435456 pixels"):
        read_image(tmp_path / "huge.png")
    code, _, err = cli(["classify", tmp_path / "huge.png"])
    assert code == 2 and "LOCSCOPE_MAX_PIXELS" in error_line(err)
    landmarks = tmp_path / "landmarks"
    landmarks.mkdir()
    png_header_only(landmarks / "nucleus.png", 20000, 20000)
    code, _, err = cli(["generate", "--sequence", "MPKKKRKV", "--landmarks", landmarks / "nucleus.png", "--out",
                     tmp_path / "g"])
    assert code == 2 and "above the limit" in error_line(err)
    monkeypatch.setenv("LOCSCOPE_MAX_PIXELS", "100")
    tifffile.imwrite(tmp_path / "small.tif", np.zeros((11, 10), np.uint16))
    with pytest.raises(InputError, match="10 x 11 pixels is above the limit of 100"):
        read_image(tmp_path / "small.tif")
    tifffile.imwrite(tmp_path / "ok.tif", np.zeros((10, 10), np.uint16))
    assert read_image(tmp_path / "ok.tif").shape == (10, 10)
    monkeypatch.setenv("LOCSCOPE_MAX_PIXELS", "lots")
    with pytest.raises(InputError, match="LOCSCOPE_MAX_PIXELS='lots': expected a positive number"):
        read_image(tmp_path / "ok.tif")


def test_a_tiny_landmark_is_upsampled_with_a_warning(tmp_path, caplog):
    from locscope.pipelines.generate import read_landmarks

    Image.fromarray(np.full((1, 1), 200, np.uint8)).save(tmp_path / "nucleus.png")
    with caplog.at_level(logging.WARNING, logger="locscope.pipelines.generate"):
        cell = read_landmarks([tmp_path / "nucleus.png"], ("nucleus", "er", "microtubules"), 32)
    assert cell.present.tolist() == [True, False, False]
    assert any("1 x 1 images are far smaller than the model's 32 x 32 input" in r.getMessage() for r in caplog.records)
    caplog.clear()
    Image.fromarray(np.full((32, 32), 200, np.uint8)).save(tmp_path / "nucleus.png")
    with caplog.at_level(logging.WARNING, logger="locscope.pipelines.generate"):
        read_landmarks([tmp_path / "nucleus.png"], ("nucleus", "er", "microtubules"), 32)
    assert not any("far smaller" in r.getMessage() for r in caplog.records)


def test_z_stacks_are_projected_one_plane_at_a_time(tmp_path, monkeypatch):
    stack = np.random.default_rng(0).integers(0, 60000, (5, 2, 12, 10), dtype=np.uint16)  # Z, C, Y, X
    tifffile.imwrite(tmp_path / "zstack.tif", stack, imagej=True, metadata={"axes": "ZCYX"})
    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", lambda *a, **k: pytest.fail("read the whole stack"))
    record = read_image(tmp_path / "zstack.tif", channel_order=["nucleus", "protein"])
    assert record.metadata["z_projected"] == 5 and record.metadata["source_shape"] == [5, 2, 12, 10]
    assert np.array_equal(record.channels["nucleus"], stack[:, 0].max(axis=0))
    assert np.array_equal(record.channels["protein"], stack[:, 1].max(axis=0))
