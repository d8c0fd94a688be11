"""Shared test fixtures: the real sample data in ../shared (skip when absent unless CI requires it)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LOCSCOPE_SHARED", ROOT.parent / "shared"))


def _require(path: Path) -> Path:
    if not path.exists():
        reason = f"shared data not found at {path}"
        if os.environ.get("LOCSCOPE_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(reason + " (LOCSCOPE_REQUIRE_SHARED_DATA=1)")
        pytest.skip(reason)
    return path


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data``: real images, sequences and label tables (never copied into the repository)."""
    return _require(SHARED / "data")


@pytest.fixture
def shared_golden() -> Path:
    """``../shared/golden``: checkpoints and outputs computed with the published code."""
    return _require(SHARED / "golden")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory) -> None:
    """Calibrated-model caches of the tests go to a temporary folder, never to the user's ~/.cache."""
    os.environ["LOCSCOPE_CACHE_DIR"] = str(tmp_path_factory.mktemp("locscope-cache"))


VNNI_CPU_FIELDS = dict(model="test AVX512-VNNI CPU", isa="AVX512", native_bf16=False, vnni=True,
                       flags=("avx512_vnni",), threads=1)


@pytest.fixture
def int8_check_passes(monkeypatch):
    """For tests of what happens around a verified int8 model (cache, calibration sample, reporting), independent of
    the CPU they run on: the runtime is told it is on a CPU with VNNI and without native bf16 (int8 is tried, with
    8-bit weights and fp32 for the other ops, which every x86 CPU runs) and the int8 check passes at cosine 0.99
    instead of 0.999 (int8 accuracy differs between CPUs' kernels; the decision itself is tested with injected
    cosines)."""
    from locscope.pipelines import embed_runtime
    from locscope.utils.cpu import CpuCapability

    monkeypatch.setattr(embed_runtime, "cpu_capability", lambda: CpuCapability(**VNNI_CPU_FIELDS))
    monkeypatch.setattr(embed_runtime, "VERIFY_COSINE", 0.99)
    return embed_runtime


@pytest.fixture(scope="session")
def real_corpus():
    """The real-protein corpus (SCL2205 + OpenCell + DeepLoc 1.0), built once per test run."""
    from locscope.io.corpus import load_corpus

    return load_corpus(_require(SHARED / "data"))


@pytest.fixture
def cli(capsys):
    """Run the ``locscope`` command line in this process: ``cli([...]) -> (exit code, stdout, stderr)``."""
    from locscope.cli import main

    def run(args: list) -> tuple[int, str, str]:
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def error_line(err: str) -> str:
    """The single ``error:`` line of a command's stderr (a progress bar may precede it; never a traceback)."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]
