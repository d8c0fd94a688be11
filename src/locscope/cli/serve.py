"""``locscope serve``: the web app (:mod:`locscope.serve.app`) on this machine, for a browser."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Optional

import typer

from locscope.cli.app import app
from locscope.cli.options import DeviceOption


@app.command("serve")
def serve_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0: every interface; the app "
                             "has no log-in, so only on a trusted network)."),
    port: int = typer.Option(8000, "--port", help="TCP port (0: any free port, printed at start)."),
    work_dir: Optional[Path] = typer.Option(None, "--work-dir", help="Keep job folders here (default: a temporary "
                                            "folder removed at exit)."),
    keep_jobs: int = typer.Option(50, "--keep-jobs", help="Job folders kept; older ones are removed."),
    device: str = DeviceOption,
) -> None:
    """Run the web app: draw proteins in cells and predict localization from a browser."""
    import uvicorn

    from locscope.errors import ArgumentError
    from locscope.serve.app import create_app

    if not 0 <= port <= 65535:
        raise ArgumentError("port", f"{port}: must be between 0 and 65535")
    application = create_app(work_dir=work_dir, device=device, keep_jobs=keep_jobs)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        if work_dir is None:  # the app's own temporary folder: nothing ran in it
            shutil.rmtree(application.state.work_dir, ignore_errors=True)
        raise ArgumentError("port", f"{port}: cannot listen on {host}:{port} ({err.strerror or err})") from None
    server = uvicorn.Server(uvicorn.Config(application, log_level="warning"))
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    typer.echo(f"locscope web app on http://{shown}:{sock.getsockname()[1]}/ (Ctrl-C stops it)")
    server.run(sockets=[sock])
