"""Start the real app in a subprocess for end-to-end tests; drive Chromium with Playwright."""

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import REPO_ROOT

ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppUrl(str):
    """The app's base URL; `.pid` is the server process (for memory checks)."""

    pid: int = 0


@contextlib.contextmanager
def running_app(args, env_extra=None, timeout=180, script=None):
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    log_path = ARTIFACTS / f"server-{port}.log"
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, str(script or REPO_ROOT / "app.py"), "--port", str(port), *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = AppUrl(f"http://127.0.0.1:{port}/")
    url.pid = proc.pid
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"app exited with {proc.returncode}; see {log_path}:\n{log_path.read_text()[-3000:]}"
                )
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except Exception:
                if time.time() > deadline:
                    raise RuntimeError(f"app did not start in {timeout} s; see {log_path}") from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def require_chromium() -> str:
    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(
            f"{CHROMIUM} not found: browser tests need Debian's chromium "
            "(bash scripts/test.sh installs it; or set $CHROMIUM)"
        )
    return CHROMIUM


@contextlib.contextmanager
def browser(extra_args=()):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=require_chromium(), args=CHROMIUM_ARGS + list(extra_args))
        try:
            yield b
        finally:
            b.close()


@contextlib.contextmanager
def screenshot_on_failure(page, name: str):
    try:
        yield
    except BaseException:
        ARTIFACTS.mkdir(exist_ok=True)
        with contextlib.suppress(Exception):
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        raise
