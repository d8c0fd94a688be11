import subprocess
import sys

import pytest

from typer.testing import CliRunner

from locscope import __version__
from locscope.cli import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.stdout


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "Usage" in result.stdout


def test_every_subcommand_has_help():
    import click
    import typer.main

    command = typer.main.get_command(app)
    commands = command.commands if isinstance(command, click.Group) else {}
    for name, sub in commands.items():
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        if isinstance(sub, click.Group):
            for subname in sub.commands:
                result = runner.invoke(app, [name, subname, "--help"])
                assert result.exit_code == 0, (name, subname, result.output)


def test_unknown_command_exits_nonzero():
    result = subprocess.run([sys.executable, "-m", "locscope", "no-such-command"], capture_output=True, text=True)
    assert result.returncode == 2


def test_library_errors_name_python_arguments_and_the_cli_names_flags(tmp_path, capsys):
    from locscope.cli import cli_message, main
    from locscope.errors import ArgumentError, InputError
    from locscope.pipelines.generate import parse_compartment_target

    with pytest.raises(ArgumentError, match=r"^compartment 'nucleous': unknown compartment") as info:
        parse_compartment_target("nucleous", ("cytosol", "nucleoplasm"))
    assert info.value.argument == "compartment" and isinstance(info.value, InputError)
    assert cli_message(info.value, ["generate", "--compartment", "nucleous"]).startswith("--compartment 'nucleous':")
    assert cli_message(ArgumentError("batch_size", "must be at least 1; got 0"), ["embed"]) == \
        "--batch-size must be at least 1; got 0"
    # an argument the invoked command has no flag for, and a plain input error, are left as they are
    assert cli_message(ArgumentError("batch_size", "must be at least 1"), ["demo"]) == "batch_size must be at least 1"
    assert cli_message(InputError("sequence 'x': bad"), ["generate"]) == "sequence 'x': bad"
    with pytest.raises(SystemExit):
        main(["generate", "--sequence", "MKV", "--landmarks", str(tmp_path), "--out", str(tmp_path / "o"),
              "--steps", "0"])
    assert capsys.readouterr().err.strip() == "error: --steps 0: must be >= 1"


# Each case fails before a model is loaded: (argv without --out, the start of the one-line error)
BAD_OPTIONS = [
    (["design"], "--target or --image: give --target COMPARTMENT, or --image PROTEIN_IMAGE with --landmarks FILES"),
    (["design", "--image", "cell.png"], "--image needs --landmarks (nucleus"),
    (["design", "--target", "nucleus", "--length", "0"], "--length 0: must be between 1 and"),
    (["design", "--target", "nucleus"], "--length or --template: give --length L (a whole sequence to design) or "
                                      "--template SEQ"),
    (["design", "--target", "nucleus", "--template", "MVSK"], "--template has no <mask> or <mask:N> span and no "
                                                               "--terminus is given"),
    (["design", "--target", "nucleus", "--template", "MVSKJ<mask:3>"], "--template: position 5: invalid residue 'J'"),
    (["design", "--target", "nucleus", "--length", "9", "--candidates", "0"], "--candidates 0: must be >= 1"),
    (["design", "--target", "nucleus", "--length", "9", "--proposer", "x"], "--proposer 'x': accepted values are"),
    (["design", "--target", "nucleus", "--template", "MV<mask>", "--terminus", "X"], "--terminus 'X': accepted"),
    (["explain", "--sequence", "MPK<mask>KRKV"], "--sequence: explain needs a complete sequence"),
    (["embed"], "--csv or --store: give exactly one input (--csv PATH_LIST or --store STORE)"),
    (["localize", "--sequence", "MPKKKRKV", "--method", "x"], "--method='x': accepted values are"),
    (["generate", "--sequence", "MPKKKRKV", "--landmarks", "{cell}", "--esm", "esm2"],
     "--esm: only for released CELL-Diff checkpoint folders"),
    (["generate", "--sequence", "MPKKKRKV", "--landmarks", "{cell}", "--precision", "bf16"],
     "--precision: only for released CELL-Diff checkpoint folders"),
]


@pytest.mark.parametrize("argv, message", BAD_OPTIONS, ids=[" ".join(a[:3]) for a, _ in BAD_OPTIONS])
def test_every_flag_an_error_names_exists_on_that_command(tmp_path, capsys, argv, message):
    import re

    import typer.main

    from locscope.cli import main
    from locscope.models.hub import asset_path

    argv = [a.format(cell=asset_path("examples/landmarks/cell_1")) for a in argv]
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main([*argv, "--out", str(out)])
    err = " ".join(capsys.readouterr().err.split())
    assert info.value.code == 2 and err.startswith(f"error: {message}"), err
    command = typer.main.get_command(app).commands[argv[0]]
    flags = {opt for param in command.params for opt in param.opts if opt.startswith("--")}
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", err))
    assert named and named <= flags, named - flags
    assert not out.exists()
