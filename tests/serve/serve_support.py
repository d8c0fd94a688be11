"""Fixtures of the web app tests: FastAPI's test client, and a live server on a free port in headless Chromium."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time

import pytest


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """FastAPI's test client of an app whose job folders live in a temporary folder (the newest 3 kept)."""
    from fastapi.testclient import TestClient

    from locscope.serve.app import create_app

    with TestClient(create_app(work_dir=tmp_path_factory.mktemp("jobs"), device="cpu", keep_jobs=3)) as c:
        yield c


@pytest.fixture
def browse(tmp_path):
    """``browse(app, url_paths, screenshot=None) -> [DOM after the page's script ran, ...]``: serve ``app`` with
    uvicorn on a free port and load each path in headless Chromium (skips without Chromium); with ``screenshot`` the
    first page is also saved there as PNG."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no Chromium on this machine (Debian package 'chromium')")
    import uvicorn

    def run(app, paths: list[str], screenshot=None) -> list[str]:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=60000",
                 "--window-size=1200,900"]
        doms = []
        try:
            for _ in range(200):
                if server.started:
                    break
                time.sleep(0.05)
            assert server.started
            for k, path in enumerate(paths):
                url = f"http://127.0.0.1:{port}{path}"
                doms.append(subprocess.run(flags + [f"--user-data-dir={tmp_path / f'profile{k}'}", "--dump-dom", url],
                                           capture_output=True, text=True, timeout=180).stdout)
            if screenshot is not None:
                subprocess.run(flags + [f"--user-data-dir={tmp_path / 'profile-shot'}", f"--screenshot={screenshot}",
                                        f"http://127.0.0.1:{port}{paths[0]}"], capture_output=True, timeout=180)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
        return doms

    return run
