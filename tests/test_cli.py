import subprocess
import sys

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
