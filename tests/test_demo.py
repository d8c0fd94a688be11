"""``locscope demo`` (what ``make demo`` runs): generation with the bundled model on bundled inputs."""

import json

from typer.testing import CliRunner

from locscope.cli import app


def test_demo_generates_with_bundled_model(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--samples", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    ids = [entry["id"] for entry in summary["sequences"]]
    assert len(ids) == 5 and "example_nuclear" in ids
    for entry in summary["sequences"]:
        # Fractions under the bundled cell's true compartment masks are a distribution over level-3 classes.
        assert abs(sum(entry["compartment_fractions"].values()) - 1.0) < 1e-3
        assert (out / entry["folder"] / "sample_0.tif").stat().st_size > 0
    assert "example_mitochondrial" in (out / "report.html").read_text()
