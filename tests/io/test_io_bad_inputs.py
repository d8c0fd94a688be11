"""Every reader on an empty file and on a file that is not what it claims: one exact line each."""

from __future__ import annotations

import pytest

from locscope.errors import InputError
from locscope.io import read_image, read_sequences
from locscope.io.images import read_celldiff_sample, read_hpa_channel, read_tiff
from locscope.io.labels import read_hpa_locations, read_level_table, read_opencell_annotations
from locscope.io.landmarks import read_landmark_stack
from locscope.io.opencell import read_cytoself_crops, read_micromanager_tiff

READERS = [
    (read_image, "cell.png"),
    (read_hpa_channel, "1_A1_1_green.png"),
    (read_tiff, "field.ome.tif"),
    (read_landmark_stack, "cell_0.tiff"),
    (read_micromanager_tiff, "raw.ome.tif"),
    (read_cytoself_crops, "ATL2_pro.npy"),
    (read_sequences, "proteins.fasta"),
    (read_hpa_locations, "subcellular_location.tsv"),
    (read_opencell_annotations, "annotations.csv"),
    (read_level_table, "opencell_raw.csv"),
]


@pytest.mark.parametrize(("reader", "name"), READERS, ids=[r.__name__ for r, _ in READERS])
def test_empty_file(tmp_path, reader, name):
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(InputError) as err:
        reader(path)
    assert str(err.value) == f"{path}: empty file"


@pytest.mark.parametrize(("reader", "name"), READERS[:6], ids=[r.__name__ for r, _ in READERS[:6]])
def test_not_an_image(tmp_path, reader, name):
    path = tmp_path / name
    path.write_text("gene,location\nATL2,er\n")
    with pytest.raises(InputError) as err:
        reader(path)
    expected = {
        "read_cytoself_crops": f"{path}: not an NPY file (no NUMPY signature)",
        "read_tiff": f"{path}: truncated or corrupt TIFF file",
        "read_landmark_stack": f"{path}: truncated or corrupt TIFF file",
        "read_micromanager_tiff": f"{path}: truncated or corrupt TIFF file",
    }.get(reader.__name__, f"{path}: not an image file (no PNG, JPEG, TIFF or NPY signature)")
    assert str(err.value) == expected


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(InputError) as err:
        read_celldiff_sample(tmp_path)
    assert str(err.value) == (f"{tmp_path}: no CELL-Diff sample files (nucleus.png, ER.png, microtubule.png, "
                              "protein.png)")
    with pytest.raises(InputError) as err:
        read_sequences(tmp_path / "absent.fasta")
    assert str(err.value) == f"{tmp_path / 'absent.fasta'}: no such file or directory"
    with pytest.raises(InputError) as err:
        read_image(tmp_path / "x.png", layout="zarr")
    assert str(err.value).startswith("layout 'zarr' not recognised; accepted: auto, hpa-channel, display-rgb")
