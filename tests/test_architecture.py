"""The import graph: layers, no circles, inference without Lightning (contracts in pyproject.toml)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    # In a child process: import-linter configures logging with dictConfig, which disables every logger that exists
    # already (locscope's warnings would vanish from the tests that run after this one).
    script = ("import sys\nfrom importlinter.cli import lint_imports\n"
              f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, no_cache=True))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]


def test_locscope_generate_does_not_import_lightning(tmp_path):
    script = (
        "import sys\n"
        "from locscope.cli import main\n"
        "try:\n"
        f"    main(['generate', '--sequence', 'MPKKKRKV', '--landmarks', {str(ROOT / 'src/locscope/assets/examples/landmarks/cell_1')!r},"
        f" '--out', {str(tmp_path / 'out')!r}, '--samples', '1', '--steps', '2'])\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')"
        " or m.startswith('locscope.training'))\n"
        "print('LOADED', loaded)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "out" / "report.html").is_file()
    assert "LOADED []" in run.stdout, run.stdout

