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
