"""Start the real app in a subprocess for end-to-end tests; drive Chromium with Playwright."""

import contextlib
import functools
import http.server
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from conftest import MOBILESAM_FIXTURE, OBJECTAWARE_FIXTURE, REPO_ROOT

ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
NAVIGATION_MS = 120_000
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# WebGPU on Chromium's software adapter (SwiftShader; this machine has no GPU). Dawn's
# zero-initialisation of workgroup memory is half of SwiftShader's time on our graphs (measured:
# the decoder's check decode 75 -> 38 s of CPU); the tests compare every output with the server's,
# so a kernel that read memory it had not written would fail them, not pass.
WEBGPU_ARGS = ["--enable-unsafe-webgpu", "--enable-dawn-features=disable_workgroup_init"]


def fixture_args(detector: bool = False) -> list:
    """`app.py` arguments for the parity fixtures' random weights (and the detector's)."""
    args = ["--checkpoint", str(MOBILESAM_FIXTURE / "weights_fp16.pt")]
    if detector:
        args += ["--detector-checkpoint", str(OBJECTAWARE_FIXTURE / "objectaware_random.pt")]
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppUrl(str):
    """The app's base URL; `.pid` is the server process (for memory checks)."""

    pid: int = 0


@contextlib.contextmanager
def running_app(args, env_extra=None, timeout=180, script=None):
    """The app on a free port, for the `with` block. Each server gets a Gradio temp folder of its
    own (removed afterwards): in a shared one, a server that stops deletes the files it cached,
    among them another server's upload of the same image (Gradio names cached files by content)."""
    port = free_port()
    uploads = tempfile.mkdtemp(prefix=f"gradio-{port}-")
    # (its export folders too: TMPDIR)
    env = {**os.environ, "GRADIO_TEMP_DIR": uploads, "TMPDIR": uploads, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.update(env_extra or {})
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
            stopped = True
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            stopped = False
        log.close()
        shutil.rmtree(uploads, ignore_errors=True)
    # Every server here is also a check that SIGTERM stops it while pages and clients are still
    # connected (a Space's restart, `docker stop`): uvicorn would otherwise wait on their streams.
    assert stopped, f"the app did not stop within 20 s of SIGTERM; see {log_path}"


@contextlib.contextmanager
def raw_server(env_extra, detector: bool = True):
    """The app with the fixture weights, for raw-protocol tests: a RawGradio client with the
    server's `pid` (memory checks) and `log` (its log file)."""
    from hostile_client import RawGradio

    with running_app(fixture_args(detector=detector), env_extra) as url:
        raw = RawGradio(url)
        raw.pid = url.pid
        raw.log = ARTIFACTS / f"server-{url.rstrip('/').rsplit(':', 1)[1]}.log"
        yield raw


def require_chromium() -> str:
    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(
            f"{CHROMIUM} not found: browser tests need Debian's chromium "
            "(bash scripts/test.sh installs it; or set $CHROMIUM)"
        )
    return CHROMIUM


_launched: dict = {}  # Chromium by launch arguments, for the running test module (see close_browsers)
_playwright: list = []


@contextlib.contextmanager
def browser(extra_args=()):
    """Chromium for the `with` block: launched once per test module and launch arguments (a
    launch costs ~1.5 s of the suite's two cores, and there are 60 browser tests); every context
    and page opened through it is closed when the block ends, so no test sees another's."""
    key = tuple(extra_args)
    if key not in _launched or not _launched[key].is_connected():
        if not _playwright:
            from playwright.sync_api import sync_playwright

            _playwright.append(sync_playwright().start())
        _launched[key] = _playwright[0].chromium.launch(
            executable_path=require_chromium(), args=CHROMIUM_ARGS + list(extra_args)
        )
    view = BrowserView(_launched[key])
    try:
        yield view
    finally:
        view.close()


def close_browsers() -> None:
    """Close what `browser()` launched (conftest calls this after each test module)."""
    for b in _launched.values():
        with contextlib.suppress(Exception):
            b.close()
    _launched.clear()
    if _playwright:
        _playwright.pop().stop()


class BrowserView:
    """A shared Chromium as one test sees it: `new_context` / `new_page` (whose pages wait up to
    NAVIGATION_MS for a navigation), all closed by `close()`."""

    def __init__(self, b) -> None:
        self._browser = b
        self._contexts: list = []

    def new_context(self, **kw):
        ctx = self._browser.new_context(**kw)
        # on a busy machine (the suite beside other work) a throttled page's load passes
        # Playwright's 30 s default
        ctx.set_default_navigation_timeout(NAVIGATION_MS)
        ctx.on("page", watch_page)
        self._contexts.append(ctx)
        return ctx

    def new_page(self, **kw):
        return self.new_context(**kw).new_page()

    def close(self) -> None:
        for ctx in self._contexts:
            with contextlib.suppress(Exception):
                ctx.close()
        self._contexts.clear()


@contextlib.contextmanager
def screenshot_on_failure(page, name: str):
    """On failure: test-artifacts/NAME.png, and NAME.log with the page's console, uncaught errors
    and crash (a hung or crashed page gives no screenshot: the log still says what happened)."""
    try:
        yield
    except BaseException:
        ARTIFACTS.mkdir(exist_ok=True)
        lines = _page_logs.get(page, ["(no log: the page was not opened through browser())"])
        (ARTIFACTS / f"{name}.log").write_text("\n".join(lines) + "\n")
        with contextlib.suppress(Exception):
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True, timeout=15_000)
        raise


_page_logs: dict = {}  # page -> its console lines, errors and crash, for screenshot_on_failure


def watch_page(page) -> None:
    lines = _page_logs.setdefault(page, [])
    stamp = lambda: time.strftime("%H:%M:%S")  # noqa: E731
    page.on("console", lambda m: lines.append(f"{stamp()} console.{m.type}: {m.text}"))
    page.on("pageerror", lambda e: lines.append(f"{stamp()} uncaught: {e}"))
    page.on("crash", lambda _: lines.append(f"{stamp()} the page crashed"))
    page.on("close", lambda _: _page_logs.pop(page, None))


@contextlib.contextmanager
def phone_page(url: str, name: str, image: str):
    """A phone-sized touch page (390x844 at 3x) at `url` with `image` uploaded and ready to be
    segmented, the page scrolled to it -> (context, page); a screenshot `name` on failure."""
    with browser() as b:
        ctx = b.new_context(
            viewport={"width": 390, "height": 844}, device_scale_factor=3, is_mobile=True, has_touch=True
        )
        page = ctx.new_page()
        with screenshot_on_failure(page, name):
            page.goto(url)
            page.wait_for_function("window.mswDebug && window.mswDebug.ready", timeout=120_000)
            page.locator("#msw-upload input[type=file]").set_input_files(image)
            page.wait_for_function("window.mswDebug.imageReady", timeout=120_000)
            page.wait_for_timeout(800)  # the smooth scroll to the image
            yield ctx, page
        ctx.close()


@contextlib.contextmanager
def serve_folder(folder, headers=(), blobs=None):
    """A plain static file server for `folder` in a thread -> its base URL. headers: (name, value)
    pairs added to every response (e.g. COOP/COEP); blobs: {path: bytes} served from memory
    (a test may add entries while it runs)."""
    blobs = {} if blobs is None else blobs

    class Handler(http.server.SimpleHTTPRequestHandler):
        extensions_map = {
            **http.server.SimpleHTTPRequestHandler.extensions_map,
            ".js": "text/javascript",
            ".mjs": "text/javascript",
        }

        def do_GET(self):
            body = blobs.get(self.path)
            if body is None:
                return super().do_GET()
            self.send_response(200)
            self.send_header("Content-Type", "text/html" if self.path.endswith(".html") else "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def end_headers(self):
            for name, value in headers:
                self.send_header(name, value)
            super().end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    server.handle_error = lambda *args: None  # a browser closing mid-download is not news
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def blank_page(folder, blobs):
    """A Chromium page at `folder`'s /__blank.html (give it in `blobs`), for importing the
    folder's ES modules in `page.evaluate` and testing them alone."""
    with serve_folder(folder, blobs=blobs) as url, browser() as b:
        page = b.new_page()
        page.goto(url + "__blank.html")
        yield page
