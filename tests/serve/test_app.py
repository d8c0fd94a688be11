"""The web app: every endpoint through FastAPI's test client, and the page in a real browser (Chromium)."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

pytest.importorskip("fastapi")
from serve_support import browse, client  # noqa: E402,F401  (fixtures)

from locscope.serve.app import create_app, safe_file_name  # noqa: E402

H4 = ("MSGRGKGGKGLGKGGAKRHRKVLRDNIQGITKPAIRRLARRGGVKRISGLIYEETRGVLKVFLENVIRDAVTYTEHAKRKTVTAMDVVYALKRQGRTLYGFGG")


def test_info_and_examples(client):
    info = client.get("/api/info").json()
    assert info["default_generator"] in info["generators"] and "celldiff-tiny" in info["generators"]
    examples = client.get("/api/examples").json()
    assert [e["expected_level3"] for e in examples][:1] == ["nucleus"] and examples[0]["sequence"] == H4
    page = client.get("/")
    assert page.status_code == 200 and "locscope" in page.text and "/api/generate" in page.text


def test_localize_fasta_returns_probabilities_per_protein(client):
    fasta = f">h4 histone\n{H4}\n>egfp_nls\nMVSKGEELFTGVVPILVELDGDVNGHKFSVSGEGEGDATYGKLTLKFICTTGKLPPKKKRKV\n"
    reply = client.post("/api/localize", data={"sequences": fasta})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert [p["id"] for p in body["proteins"]] == ["h4", "egfp_nls"]
    from locscope.pipelines.localize import localize

    direct, _ = localize([H4], ["h4"], device="cpu", progress=False)  # what `locscope localize` computes
    h4 = body["proteins"][0]
    assert list(h4["level3"].values()) == pytest.approx(direct.level3[0].tolist(), abs=1e-4)
    assert h4["top_level3"] == direct.top("level3")[0] and all(0 <= v <= 1 for v in h4["level3"].values())
    assert body["method"] == "localizer" and "nucleoplasm" in h4["level1"]
    assert "expected_level3" not in h4  # not one of the demo's examples
    examples = client.get("/api/examples").json()
    fasta = "".join(f">{e['id']} {e['description']}\n{e['sequence']}\n" for e in examples)
    rows = client.post("/api/localize", data={"sequences": fasta}).json()["proteins"]
    assert [r["expected_level3"] for r in rows] == [e["expected_level3"] for e in examples]


def test_localize_a_fasta_file_streams_every_protein_into_a_csv(client, shared_data, tmp_path):
    """A FASTA file of 1,678 real proteins: every one is localized into the job's predictions.csv, exactly as
    `locscope localize --fasta FILE --out CSV` writes it; the page gets the first 500."""
    from locscope.pipelines.localize import localize_file

    fasta = shared_data / "deeploc1" / "deeploc_our_val_set.fasta"
    reply = client.post("/api/localize", files=[("fasta", ("deeploc val.fasta", fasta.read_bytes(), "text/plain"))])
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["total"] == 1678 and len(body["proteins"]) == 500 and body["method"] == "localizer"
    served = client.get(body["csv"])
    assert served.status_code == 200
    assert localize_file(fasta, tmp_path / "direct.csv", progress=False, device="cpu") == 1678
    assert served.content == (tmp_path / "direct.csv").read_bytes()
    first = body["proteins"][0]
    row = served.text.splitlines()[1].split(",")
    assert first["id"] == row[0] and first["top_level3"] == row[1] and len(first["level3"]) == 7


@pytest.mark.parametrize("data, files, message", [
    ({"sequences": "MKKRKV"}, [("fasta", ("a.fasta", b">a\nMKV\n", "text/plain"))], "fasta: give sequences in the "
     "text field or a FASTA file, not both"),
    ({"method": "combined"}, [("fasta", ("a.fasta", b">a\nMKV\n", "text/plain"))], "method 'combined': a FASTA "
     "file is localized by the sequence localizer"),
    ({}, [("fasta", ("../x y.fasta", b">a\nMK1V\n", "text/plain"))], "x_y.fasta"),
])
def test_localize_file_bad_input_is_one_line_400(client, data, files, message):
    reply = client.post("/api/localize", data=data, files=files)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error.startswith(message) and "\n" not in error and "inputs" not in error


@pytest.mark.parametrize("data, message", [
    ({"sequences": ""}, "sequence: paste"),
    ({"sequences": "MKK1RKV"}, "sequence field"),
    ({"sequences": ">a\nMKV\n>a\nMKV\n"}, "a"),
])
def test_localize_bad_input_is_one_line_400(client, data, message):
    reply = client.post("/api/localize", data=data)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert message in error and "\n" not in error and "Traceback" not in error


def test_generate_in_the_bundled_cell_and_serve_its_files(client):
    reply = client.post("/api/generate", data={"sequence": f">H4C1_P62805\n{H4}", "model": "celldiff-tiny",
                                               "samples": "1", "steps": "2", "seed": "3"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["cell"] == "bundled example cell" and body["expected_level3"] == "nucleus"
    assert body["drawn_level3"] and len(body["drawn_per_sample"]) == 1
    image = client.get(body["images"]["samples"][0])
    assert image.status_code == 200 and image.content[:8] == b"\x89PNG\r\n\x1a\n"
    summary = client.get(body["summary"]).json()
    assert summary["sequences"][0]["id"] == "H4C1_P62805"
    assert client.get(body["report"]).status_code == 200
    assert client.get(f"/jobs/{body['job']}/../../etc/passwd").status_code == 404
    assert client.get("/jobs/not-a-job/report.html").status_code == 404


def test_generate_with_celle2_reports_what_it_drew(client):
    reply = client.post("/api/generate", data={"sequence": f">H4C1_P62805\n{H4}", "model": "celle2-tiny",
                                               "samples": "2"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["expected_level3"] == "nucleus" and len(body["drawn_per_sample"]) == 2
    assert body["drawn_level3"] in body["drawn_per_sample"] and body["head"] is None


def test_generate_with_uploaded_landmarks(client, tmp_path):
    from locscope.models.hub import asset_path

    cell = asset_path("examples/landmarks/cell_64")
    files = [("landmarks", (name, (cell / name).read_bytes(), "image/png")) for name in ("nucleus.png", "ER.png")]
    reply = client.post("/api/generate", data={"sequence": H4, "model": "celldiff-tiny", "samples": "1",
                                               "steps": "2"}, files=files)
    assert reply.status_code == 200, reply.text
    assert reply.json()["cell"] == "uploaded"


@pytest.mark.parametrize("data, files, message", [
    ({"sequence": H4, "model": "no-such-model"}, None, "model 'no-such-model'"),
    ({"sequence": H4, "samples": "99"}, None, "samples 99"),
    ({"sequence": f">a\n{H4}\n>b\n{H4}\n"}, None, "one protein"),
    ({"sequence": H4, "samples": "two"}, None, "samples: Input should be a valid integer"),
    ({"sequence": H4, "model": "celldiff-tiny", "steps": "0"}, None, "steps 0: must be >= 1"),
    ({"sequence": H4, "model": "celldiff-tiny", "samples": "1"}, [("landmarks", ("notes.png", b"not an image", "image/png"))],
     "notes.png"),
])
def test_generate_bad_input_is_one_line_400(client, data, files, message):
    reply = client.post("/api/generate", data=data, files=files)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert message in error and "\n" not in error and str(client.app.state.work_dir) not in error


TOMM20 = ("MVGRNSAIAAGVCGALFIGYCIYFDRKRRSDPNFKNRLRERRKKQKLAKERAGLSKLPDLKDAEAVQKFFLEEIQLGEELLAQGEYEKGVDHLTNAIAVCGQPQQLLQ"
          "VLQQTLPPPVFQMLLTKLPTISQRIVSAQSLAEDDVE")


def test_explain_returns_what_the_explain_pipeline_writes(client, tmp_path):
    from locscope.pipelines.explain import explain

    reply = client.post("/api/explain", data={"sequence": TOMM20, "method": "localizer"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    explain(TOMM20, tmp_path / "direct", method="localizer", device="cpu", progress=False)
    direct = json.loads((tmp_path / "direct" / "explain.json").read_text())
    assert body["explained_class"] == direct["explained_class"] and body["segments"] == direct["segments"]
    assert body["segments"] and set(body["images"]) == {"track"}
    assert client.get(body["images"]["track"]).content[:8] == b"\x89PNG\r\n\x1a\n"


def test_design_fills_the_masked_span_and_ranks_candidates(client):
    template = "MVSKGEELFTGVVPILVELDGDVNGHKFSVSGEGEGDATYG<mask:6>"
    reply = client.post("/api/design", data={"template": template, "target": "nucleus", "candidates": "3",
                                             "model": "celldiff-tiny", "seed": "1"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    candidates = body["candidates"]
    assert [c["rank"] for c in candidates] == [1, 2, 3]
    assert [c["score"] for c in candidates] == sorted((c["score"] for c in candidates), reverse=True)
    for c in candidates:
        assert c["sequence"].startswith(template[:41]) and len(c["designed"]) == 6
        assert c["sequence"] == template[:41] + c["designed"]
    table = client.get(body["table"]).text.splitlines()
    assert len(table) == 4 and candidates[0]["sequence"] in table[1]


@pytest.mark.parametrize("url, data, message", [
    ("/api/design", {"template": "MVSKGEE", "candidates": "2"}, "nothing to design"),
    ("/api/design", {"template": "MVSKGEE<mask:4>", "target": "moon", "candidates": "2"}, "unknown compartment 'moon'"),
    ("/api/design", {"template": "MVSKGEE<mask:4>", "candidates": "500"}, "candidates 500"),
    ("/api/design", {"template": ""}, "template:"),
    ("/api/explain", {"sequence": TOMM20, "method": "guess"}, "method 'guess'"),
    ("/api/explain", {"sequence": "MKV*K"}, "sequence"),
])
def test_explain_and_design_bad_input_is_one_line_400(client, url, data, message):
    reply = client.post(url, data=data)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert message in error and "\n" not in error


def test_designed_residues():
    from locscope.serve.app import designed_residues

    assert designed_residues("MK<mask><mask>V", "MKRRV") == "RR"
    assert designed_residues("MK<mask>", "MKRRV") == ""


def test_old_jobs_are_removed_and_names_are_sanitised(client):
    root = client.app.state.work_dir
    for _ in range(5):
        client.post("/api/localize", data={"sequences": "MKKRKV"})
    assert len([p for p in root.iterdir() if p.is_dir()]) <= 3
    assert safe_file_name("../../x y.png", 0) == "x_y.png" and safe_file_name("..", 2) == "landmark_2"


def test_the_page_runs_in_a_real_browser(tmp_path, browse):
    """Chromium loads the page from a live server on a free port; a link fills the form with an example protein and
    runs it: the page's script reads the API, draws the protein and shows the images (the DOM after the script ran
    is checked, and a screenshot must not be blank)."""
    from PIL import Image

    shot = tmp_path / "page.png"
    dom, = browse(create_app(work_dir=tmp_path / "jobs", device="cpu"),
                  ["/?example=H4C1_P62805&model=celldiff-tiny&samples=1&run=draw"], screenshot=shot)
    assert 'value="celldiff-tiny"' in dom and "version 0." in dom  # lists filled from /api/info
    assert 'id="drawn"' in dom and "Annotated: <b>nucleus</b>" in dom  # the drawing came back and was shown
    assert dom.count("/jobs/") >= 3 and 'class="sample"' in dom
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (900, 1200) and pixels.std() > 10


def test_serve_command_refuses_a_bad_or_busy_port_in_one_line(cli):
    from conftest import error_line

    code, _, err = cli(["serve", "--port", "70000"])
    assert code == 2 and error_line(err) == "error: --port 70000: must be between 0 and 65535"
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        port = busy.getsockname()[1]
        code, _, err = cli(["serve", "--port", port])
    finally:
        busy.close()
    assert code == 2 and error_line(err).startswith(f"error: --port {port}: cannot listen on 127.0.0.1:{port}")
    code, _, err = cli(["serve", "--keep-jobs", "0", "--port", "0"])
    assert code == 2 and error_line(err) == "error: --keep-jobs 0: must be >= 1"
