"""The web app: the virtual microscope in a browser, calling the same pipelines as the command line.

``create_app()`` returns a FastAPI application (``locscope serve`` runs it with uvicorn):

- ``GET /``: one page (``assets/serve/index.html``), one tab per verb: draw a protein in a cell (``generate``),
  predict where proteins go (``localize``), explain, design a signal, classify cells, stain brightfield;
- ``GET /api/info``: version, the bundled models by family, the default generator and localizer, the limits;
- ``GET /api/examples``: the demo's example proteins (UniProt sequences with their annotated level-3 class);
- ``POST /api/localize``: form field ``sequences`` (one sequence or FASTA text, up to 500 proteins) or an uploaded
  ``fasta`` file (any size, streamed by :func:`locscope.pipelines.localize.localize_file` into the job's
  ``predictions.csv``) -> level-3 / level-2 (and level-1) probabilities per protein (the first 500), the total;
- ``POST /api/generate``: form fields ``sequence`` (one sequence or one FASTA record), ``model``, ``samples``,
  ``seed``, optional ``steps`` / ``guidance``, and 0-3 uploaded ``landmarks`` files (none: the demo's bundled cell)
  -> :func:`locscope.pipelines.generate.generate` into a new job folder; the reply names the drawn compartment, the
  sequence head's and the images under ``/jobs/<job>/``;
- ``POST /api/explain``: form fields ``sequence``, ``method`` (default ``localizer``: seconds; ``combined`` /
  ``image`` read generated images, minutes), optional ``target`` -> the segments that drive the localization and the
  attribution track, :func:`locscope.pipelines.explain.explain`;
- ``POST /api/design``: form fields ``template`` (with ``<mask:N>`` spans), ``target`` (a compartment),
  ``candidates``, ``seed``, optional ``model`` -> ranked candidates scored in the bundled example cell,
  :func:`locscope.pipelines.design.design`;
- ``POST /api/classify`` and ``POST /api/stain``: the image pages (:mod:`locscope.serve.cells`);
- ``GET /jobs/<job>/<file>``: a file of a job folder (images, ``report.html``, ``summary.json`` / ``.csv``).

Bad input is answered with status 400 and ``{"error": "<one line naming the field>"}``, never a traceback; an
uploaded file is stored under a sanitised name inside its job folder only. One request at a time runs a model (a
lock: the CPU's cores are shared), jobs live in ``work_dir`` (a temporary folder removed when the app stops, unless
given) and the oldest are removed beyond ``keep_jobs``.
"""

from __future__ import annotations

import csv
import itertools
import re
import shutil
import tempfile
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from locscope.errors import ArgumentError, LocscopeError, one_line
from locscope.serve import cells
from locscope.serve.common import (  # noqa: F401  (safe_file_name: part of this module's interface)
    BadRequest, Jobs, field_message, safe_file_name, save_uploads,
)

MAX_LANDMARK_FILES = 3
MAX_SAMPLES = 8
MAX_LOCALIZE_SEQUENCES = 500
MAX_DESIGN_CANDIDATES = 64
EXPLAIN_METHODS = ("localizer", "combined", "image", "head")


def parse_sequences(text: str, job: Path, *, single: bool) -> list[tuple[str, str]]:
    """``(id, sequence)`` pairs from a typed sequence or FASTA text, validated as the command line validates them.

    Raises
    ------
    BadRequest
        Empty text, or more than one record where one is expected (``single``).
    """
    from locscope.io.sequences import read_sequence_text, read_sequences

    text = (text or "").strip()
    if not text:
        raise BadRequest("sequence: paste an amino-acid sequence or FASTA text")
    if text.startswith(">"):
        path = job / "sequences.fasta"
        path.write_text(text + "\n")
        records = [(r.id, r.sequence) for r in read_sequences(path)]
    else:
        record = read_sequence_text(text, record="sequence", source="sequence field")
        records = [(record.id, record.sequence)]
    if single and len(records) != 1:
        raise BadRequest(f"sequence: give one protein here ({len(records)} FASTA records given)")
    if len(records) > MAX_LOCALIZE_SEQUENCES:
        raise BadRequest(f"sequence: at most {MAX_LOCALIZE_SEQUENCES} proteins per request ({len(records)} given); "
                         "upload them as a FASTA file instead (any size)")
    return records


def protein_rows(lines, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` rows of a predictions CSV (:func:`locscope.pipelines.localize.predictions_csv`; any
    iterable of its lines) as the page shows them: ``id``, ``method``, ``top_level3`` / ``top_level2`` (and
    ``top_level1``), and per level ``{class: probability}`` (level-2 classes without a probability left out)."""
    rows = []
    for row in itertools.islice(csv.DictReader(lines), limit):
        out: dict[str, Any] = {k: row[k] for k in ("id", "method", "top_level3", "top_level2")}
        for level, prefix in (("level3", "p3_"), ("level2", "p2_"), ("level1", "p1_")):
            values = {k[len(prefix):]: float(v) for k, v in row.items() if k.startswith(prefix) and v != ""}
            if values:
                out[level] = values
        if row.get("top_level1"):
            out["top_level1"] = row["top_level1"]
        rows.append(out)
    return rows


def designed_residues(template: str, sequence: str) -> str:
    """The residues of ``sequence`` at the template's ``<mask>`` positions (``template`` with every span expanded to
    one ``<mask>`` per residue, as :class:`~locscope.pipelines.design_templates.DesignResult` records it); empty when
    the lengths disagree (a designed terminus)."""
    tokens = re.findall(r"<mask>|.", template)
    if len(tokens) != len(sequence):
        return ""
    return "".join(residue for token, residue in zip(tokens, sequence) if token == "<mask>")


def create_app(*, work_dir: str | Path | None = None, device: str = "auto", keep_jobs: int = 50) -> FastAPI:
    """The web app (module docstring).

    Parameters
    ----------
    work_dir : path, optional
        Where job folders go (kept); default a temporary folder removed when the app shuts down.
    device : {'auto', 'cpu', 'cuda'}
        Device of every model run.
    keep_jobs : int
        Job folders kept; older ones are removed.
    """
    from dataclasses import asdict

    from locscope import __version__
    from locscope.models import hub
    from locscope.pipelines.generate_outputs import DEMO_LANDMARKS, demo_proteins

    if keep_jobs < 1:
        raise ArgumentError("keep_jobs", f"{keep_jobs}: must be >= 1")
    owned = work_dir is None
    root = Path(tempfile.mkdtemp(prefix="locscope-serve-")) if owned else Path(work_dir)
    root.mkdir(parents=True, exist_ok=True)
    jobs = Jobs(root, keep_jobs)
    model_lock = threading.Lock()
    generators = [name for family in ("celldiff", "latent", "celle2") for name in hub.bundled_names(family)]
    example_rows = [asdict(example) for example in demo_proteins()]
    expected = {row["id"]: row["expected_level3"] for row in example_rows}
    example_cell = hub.asset_path(DEMO_LANDMARKS)
    page = hub.asset_path("serve/index.html").read_text()

    def check_generator(model: str | None) -> None:
        if model and model not in generators:
            raise BadRequest(f"model {model!r}: choose a bundled generator ({', '.join(generators)})")

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        if owned:
            shutil.rmtree(root, ignore_errors=True)

    app = FastAPI(title="locscope", version=__version__, lifespan=lifespan, docs_url="/api/docs", redoc_url=None)
    app.state.work_dir = root

    @app.exception_handler(BadRequest)
    async def bad_request(_request, err: BadRequest):
        return JSONResponse({"error": one_line(str(err))}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def bad_form(_request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        where = str(first.get("loc", ["", "request"])[-1])
        return JSONResponse({"error": one_line(f"{where}: {first.get('msg', 'invalid value')} "
                                               f"({first.get('input', '')!r} given)")}, status_code=400)

    @app.exception_handler(LocscopeError)
    async def user_error(_request, err: LocscopeError):
        return JSONResponse({"error": jobs.public(field_message(err))}, status_code=400)

    cell_info = cells.register(app, jobs=jobs, model_lock=model_lock, device=device)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        from locscope.pipelines.localize import DEFAULT_LOCALIZER
        from locscope.pipelines.readout import LEVEL3_CLASSES

        return {"version": __version__, "default_generator": hub.DEFAULT_GENERATOR,
                "default_localizer": DEFAULT_LOCALIZER, "generators": generators,
                "max_samples": MAX_SAMPLES, "max_landmark_files": MAX_LANDMARK_FILES,
                "max_localize_sequences": MAX_LOCALIZE_SEQUENCES, "max_design_candidates": MAX_DESIGN_CANDIDATES,
                "explain_methods": list(EXPLAIN_METHODS), "compartments": list(LEVEL3_CLASSES), **cell_info}

    @app.get("/api/examples")
    def examples() -> list[dict[str, str]]:
        return example_rows

    @app.post("/api/localize")
    def localize_endpoint(sequences: str = Form(""), method: str | None = Form(None),
                          fasta: UploadFile | None = File(None)) -> dict[str, Any]:
        from locscope.pipelines.localize import localize, localize_file

        upload = fasta if fasta is not None and fasta.filename else None
        if upload is not None and sequences.strip():
            raise BadRequest("fasta: give sequences in the text field or a FASTA file, not both")
        if upload is not None and (method or "localizer") != "localizer":
            raise BadRequest(f"method {method!r}: a FASTA file is localized by the sequence localizer; `locscope "
                             "localize --fasta FILE --method ...` runs the image methods")
        job, folder = jobs.new()
        if upload is None:
            records = parse_sequences(sequences, folder, single=False)
            with model_lock:
                _, table = localize([s for _, s in records], [i for i, _ in records], method=method or None,
                                    device=device, progress=False)
            rows = protein_rows(table.splitlines(), MAX_LOCALIZE_SEQUENCES)
            for row, (record_id, sequence) in zip(rows, records):
                row["length"] = len(sequence)
                if record_id in expected:  # the demo's examples: their annotated class, as /api/generate reports
                    row["expected_level3"] = expected[record_id]
            shutil.rmtree(folder, ignore_errors=True)
            return {"method": rows[0]["method"], "proteins": rows, "total": len(rows)}
        (path,) = save_uploads([upload], folder / "inputs", "fasta", 1, "one FASTA or sequence table")
        with model_lock:
            total = localize_file(path, folder / "predictions.csv", progress=False, device=device)
        with open(folder / "predictions.csv", newline="") as handle:
            rows = protein_rows(handle, MAX_LOCALIZE_SEQUENCES)
        return {"method": rows[0]["method"] if rows else "localizer", "proteins": rows, "total": total,
                "csv": f"/jobs/{job}/predictions.csv"}

    @app.post("/api/generate")
    def generate_endpoint(sequence: str = Form(""), model: str | None = Form(None), samples: int = Form(2),
                          seed: int = Form(0), steps: int | None = Form(None), guidance: float | None = Form(None),
                          landmarks: list[UploadFile] = File(default=[])) -> dict[str, Any]:
        from locscope.pipelines.generate import generate

        check_generator(model)
        if not 1 <= samples <= MAX_SAMPLES:
            raise BadRequest(f"samples {samples}: must be between 1 and {MAX_SAMPLES}")
        uploads = [u for u in landmarks if u.filename]
        job, folder = jobs.new()
        records = parse_sequences(sequence, folder, single=True)
        if uploads:
            paths = save_uploads(uploads, folder / "landmarks", "landmarks", MAX_LANDMARK_FILES,
                                 "nucleus, ER, microtubules")
            cell = "uploaded"
        else:
            paths, cell = [example_cell], "bundled example cell"
        with model_lock:
            result = generate(records, paths, folder / "result", model=model or None, samples=samples, seed=seed,
                              steps=steps, guidance=guidance, device=device, progress=False, output_command="serve",
                              expected={i: expected[i] for i, _ in records if i in expected})
        entry = result.sequences[0]
        base = f"/jobs/{job}/result"
        sub = entry.get("folder", "")
        images = {"landmarks": f"{base}/landmarks.png",
                  "samples": [f"{base}/{sub}/sample_{k}.png" for k in range(samples)],
                  "mean": f"{base}/{sub}/mean.png", "probability": f"{base}/{sub}/probability.png",
                  "overlay": f"{base}/{sub}/overlay.png"}
        images = {k: v for k, v in images.items()
                  if isinstance(v, list) or jobs.file(job, v.removeprefix(f"/jobs/{job}/")) is not None}
        return {"job": job, "cell": cell, "model": model or hub.DEFAULT_GENERATOR, "id": entry["id"],
                "drawn_level3": entry.get("drawn_level3"), "head": entry.get("top_compartment_head"),
                "drawn_per_sample": entry.get("drawn_level3_per_sample", []),
                "expected_level3": entry.get("expected_level3"), "images": images,
                "report": f"{base}/report.html", "summary": f"{base}/summary.json",
                "seconds_per_image": result.seconds_per_image}

    @app.post("/api/explain")
    def explain_endpoint(sequence: str = Form(""), method: str = Form("localizer"),
                         target: str | None = Form(None)) -> dict[str, Any]:
        import json

        from locscope.pipelines.explain import explain

        if method not in EXPLAIN_METHODS:
            raise BadRequest(f"method {method!r}: choose one of {', '.join(EXPLAIN_METHODS)}")
        job, folder = jobs.new()
        (record_id, text), = parse_sequences(sequence, folder, single=True)
        with model_lock:
            explain(text, folder / "result", method=method, target=target or None, device=device, progress=False)
        result = json.loads((folder / "result" / "explain.json").read_text())
        base = f"/jobs/{job}/result"
        images = {name: f"{base}/{name}.png" for name in ("track", "wild_type", "mutant")
                  if (folder / "result" / f"{name}.png").is_file()}
        return {"job": job, "id": record_id, "method": result["method"], "explained_class": result["explained_class"],
                "wild_type": result["wild_type"], "segments": result["segments"], "images": images,
                "report": f"{base}/report.html", "result": f"{base}/explain.json"}

    @app.post("/api/design")
    def design_endpoint(template: str = Form(""), target: str = Form("nucleus"), candidates: int = Form(16),
                        seed: int = Form(0), model: str | None = Form(None), terminus: str | None = Form(None),
                        terminus_length: int = Form(15)) -> dict[str, Any]:
        from locscope.pipelines.design import design

        if not template.strip():
            raise BadRequest("template: give a sequence with <mask:N> spans to infill (e.g. MVSKGEE...<mask:10>), "
                             "or a sequence and a terminus")
        if not 1 <= candidates <= MAX_DESIGN_CANDIDATES:
            raise BadRequest(f"candidates {candidates}: must be between 1 and {MAX_DESIGN_CANDIDATES}")
        check_generator(model)
        job, folder = jobs.new()
        with model_lock:
            result = design(folder / "result", model=model or None, landmarks=[example_cell],
                            target=target, template="".join(template.split()), candidates=candidates, seed=seed,
                            terminus=terminus or None, terminus_length=terminus_length, device=device,
                            progress=False)
        base = f"/jobs/{job}/result"
        return {"job": job, "target": result.target, "template": result.template, "score": result.score_method,
                "candidates": [{"rank": c.rank, "sequence": c.sequence, "score": round(float(c.score), 4),
                                "top_level3": c.top_level3, "designed": designed_residues(result.template, c.sequence)}
                               for c in result.candidates],
                "report": f"{base}/report.html", "table": f"{base}/candidates.csv"}

    @app.get("/jobs/{job}/{relative:path}")
    def job_file(job: str, relative: str):
        path = jobs.file(job, relative)
        if path is None:
            return JSONResponse({"error": f"no file {relative!r} in job {job!r}"}, status_code=404)
        return FileResponse(path)

    return app
