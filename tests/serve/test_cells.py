"""The web app's image pages: classify cells (SubCell) and stain brightfield (virtual Cell Painting)."""

from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("fastapi")
from serve_support import browse, client  # noqa: E402,F401  (fixtures)

from locscope.serve.app import create_app  # noqa: E402
from locscope.serve.cells import EXAMPLE_ORDER, example_brightfield, example_cell  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def test_info_lists_the_image_pages(client):
    info = client.get("/api/info").json()
    assert info["classifier"] == "subcell-tiny" and "mitochondria" in info["classify_examples"]
    assert info["stainer"] == "stain-tiny" and info["stain_classes"][0] == "control"
    assert info["stain_samplers"] == ["ddpm", "ddim", "dpmsolver"]


def test_classify_an_example_cell_as_the_pipeline_does(client, tmp_path):
    from locscope.pipelines.classify import classify_images

    reply = client.post("/api/classify", data={"example": "mitochondria"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    (cell,) = body["cells"]
    assert cell["id"] == "simulated_mitochondria" and len(cell["classes"]) == 5
    assert cell["classes"][0]["name"] == "Mitochondria"
    ranked, result = classify_images([example_cell("mitochondria", tmp_path)], channel_order=list(EXAMPLE_ORDER),
                                     top=5, device="cpu")
    assert [c["name"] for c in cell["classes"]] == [name for name, _ in ranked[0][1]]
    np.testing.assert_allclose([c["probability"] for c in cell["classes"]], [p for _, p in ranked[0][1]], atol=1e-4)
    assert body["embedding_size"] == result.embeddings.shape[1]
    previews = body["previews"]["simulated_mitochondria.tif"]
    assert set(previews) == {"landmarks", "protein"}
    for url in previews.values():
        image = client.get(url)
        assert image.status_code == 200 and image.content.startswith(PNG)


def test_classify_segments_an_uploaded_real_field(client, shared_data):
    from locscope.pipelines.classify import classify_images

    field = shared_data / "proticelli_landmarks" / "RELA_A-431" / "cell_9.tiff"
    order = "microtubules,protein,nucleus,er"
    reply = client.post("/api/classify", data={"channel_order": order, "segment": "true", "top": "3"},
                        files=[("images", ("cell_9.tiff", field.read_bytes(), "image/tiff"))])
    assert reply.status_code == 200, reply.text
    body = reply.json()
    ranked, _ = classify_images([field], channel_order=order.split(","), segment=True, top=3, device="cpu")
    assert [c["id"] for c in body["cells"]] == [cell_id for cell_id, _ in ranked] == ["cell_9_cell1"]
    assert [c["name"] for c in body["cells"][0]["classes"]] == [name for name, _ in ranked[0][1]]
    assert body["cell"] == "uploaded" and set(body["previews"]["cell_9.tiff"]) == {"landmarks", "protein"}
    assert body["previews"]["cell_9.tiff"]["protein"].endswith("/cell_9.tiff.protein.png")


@pytest.mark.parametrize("data, files, message", [
    ({}, None, "images: upload a cell image"),
    ({"example": "golgi"}, None, "example 'golgi': choose one of nucleoplasm,"),
    ({"example": "cytosol", "channel_order": "protein,dapi2"}, None, "channel_order: unknown channel name 'dapi2'"),
    ({"example": "cytosol", "top": "0"}, None, "top 0: must be between 1 and 31"),
    ({}, [("images", ("../../secret x.png", b"not an image", "image/png"))], "secret_x.png: not an image file"),
])
def test_classify_refuses_bad_input_in_one_line(client, data, files, message):
    reply = client.post("/api/classify", data=data, files=files)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error.startswith(message) and "\n" not in error and "/jobs" not in error and "inputs" not in error


def test_stain_an_example_cell_as_the_pipeline_does(client, tmp_path):
    from PIL import Image

    from locscope.pipelines.stain import run_stain

    reply = client.post("/api/stain", data={"example": "condensed-nuclei", "class_name": "condensed-nuclei",
                                            "samples": "2", "sampler": "ddim", "steps": "4", "seed": "3"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["network_evaluations"] == 4 and body["class_name"] == "condensed-nuclei"
    (image,) = body["images"]
    assert len(image["composites"]) == 2
    for url in [image["brightfield"], *image["composites"], body["truth"], body["report"]]:
        assert client.get(url).status_code == 200, url
    path, truth = example_brightfield("condensed-nuclei", ("condensed-nuclei",), tmp_path, 32, seed=3)
    assert truth.shape == (5, 32, 32)
    run_stain([path], tmp_path / "out", class_name="condensed-nuclei", sampler="ddim", steps=4, samples=2, seed=3,
              device="cpu", progress=False)
    served = np.asarray(Image.open(io.BytesIO(client.get(image["composites"][1]).content)))
    direct = np.asarray(Image.open(tmp_path / "out" / image["folder"] / "composite_sample1.png"))
    np.testing.assert_array_equal(served, direct)


@pytest.mark.parametrize("data, count, message", [
    ({}, 0, "brightfield: upload a brightfield image"),
    ({"example": "control", "class_name": "bogus"}, 0, "class_name 'bogus': not a class of this model"),
    ({"example": "control", "samples": "9"}, 0, "samples 9: must be between 1 and 4"),
    ({"example": "control", "steps": "1000"}, 0, "steps 1000: must be between 1 and 100"),
    ({"example": "control", "sampler": "euler"}, 0, "sampler 'euler': choose one of ddpm, ddim, dpmsolver"),
    ({}, 4, "brightfield: at most 3 files"),
    ({}, 1, "plane_0.tif: not an image file"),
])
def test_stain_refuses_bad_input_in_one_line(client, data, count, message):
    files = [("brightfield", (f"plane_{k}.tif", b"garbage", "image/tiff")) for k in range(count)]
    reply = client.post("/api/stain", data=data, files=files or None)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error.startswith(message) and "\n" not in error and "inputs" not in error


def test_image_pages_run_in_a_real_browser(tmp_path, browse):
    """Links run the classify and stain tabs in headless Chromium: the DOM shows the class table and the images."""
    classify, stain = browse(create_app(work_dir=tmp_path / "jobs", device="cpu"),
                             ["/?cell=plasma-membrane&run=classify", "/?perturbation=enlarged-cells&run=stain"])
    assert 'id="classify-table"' in classify and '<td class="top">Plasma membrane</td>' in classify
    assert 'class="composite"' in stain and 'class="truth"' in stain and "enlarged-cells</b>" in stain
