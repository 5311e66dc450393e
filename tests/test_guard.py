"""The ASGI guard (mobilesam_web/ui/guard.py): body size, headers, fair queueing, upload rate.

Unit tests drive the middleware with a stub app; the live tests start the real app in both start
modes (`python app.py` -> uvicorn, `--share` -> Gradio's own launcher) with the default limits
and send each client from its own loopback address (127.0.0.x), so per-address limits apply to
the real peer address as uvicorn reports it.
"""

import asyncio
import json
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import pytest

from mobilesam_web.ui.guard import Guard, client_address
from mobilesam_web.ui.rate_limits import RefusalLog, UploadRate
from mobilesam_web.ui.services import AppConfig

from conftest import MOBILESAM_FIXTURE
from hostile_client import PeakRss, RawGradio
from server_utils import browser, fixture_args, running_app, screenshot_on_failure

MB = 1 << 20


# ------------------------------------------------------------------------------- unit tests
def test_client_address_trusts_forwarded_for_only_when_told():
    scope = {"client": ("10.0.0.7", 5555), "headers": [(b"x-forwarded-for", b"203.0.113.9, 10.0.0.1")]}
    assert client_address(scope) == "10.0.0.7"
    assert client_address(scope, trust_proxy=True) == "203.0.113.9"
    assert client_address({"client": ("10.0.0.7", 1), "headers": []}, trust_proxy=True) == "10.0.0.7"
    assert client_address({"client": None, "headers": []}) == "unknown"


def test_upload_rate_is_a_sliding_window_that_forgets_idle_clients():
    now = [0.0]
    rate = UploadRate(3, clock=lambda: now[0])
    assert [rate.wait_s("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    now[0] = 10.0
    assert rate.wait_s("a") == pytest.approx(50.0)  # the first of the three leaves the window at 60 s
    assert rate.wait_s("b") == 0.0  # per client
    now[0] = 60.0
    assert rate.wait_s("a") == 0.0
    now[0] = 500.0
    rate.wait_s("c")
    assert set(rate._times) == {"c"}
    assert UploadRate(0).wait_s("a") == 0.0  # 0 turns the check off


class FakeQueue:
    """Gradio's queue state as the guard reads it: event id -> event (session_hash, request)."""

    def __init__(self):
        self.event_ids_to_events = {}


def stub_app(blocks, log, join_delay=0.0):
    """A tiny ASGI app: reads the whole body; a queue join puts an event into `blocks._queue`
    (after `join_delay`, as Gradio awaits inside its join); anything else answers 200."""

    async def app(scope, receive, send):
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        log.append(len(body))
        reply = b"{}"
        if scope["path"] == "/gradio_api/queue/join":
            await asyncio.sleep(join_delay)
            event_id = uuid.uuid4().hex
            session = json.loads(body)["session_hash"]
            request = SimpleNamespace(scope=scope)
            blocks._queue.event_ids_to_events[event_id] = SimpleNamespace(session_hash=session, request=request)
            reply = json.dumps({"event_id": event_id}).encode()
        headers = [(b"content-type", b"application/json"), (b"cache-control", b"max-age=3600")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": reply})

    return app


async def call(app, path, chunks=(b"",), headers=(), client="127.0.0.1", method="POST"):
    """One request through `app` -> (status, headers dict, body, bytes the app was given)."""
    pending = list(chunks)
    pulled = [0]
    out = []

    async def receive():
        if not pending:
            return {"type": "http.disconnect"}
        chunk = pending.pop(0)
        pulled[0] += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(msg):
        out.append(msg)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in headers],
        "client": (client, 1234),
    }
    await app(scope, receive, send)
    start = next(m for m in out if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in out if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body, pulled[0]


def guard_for(log, join_delay=0.0, **limits):
    blocks = SimpleNamespace(_queue=FakeQueue())
    return Guard(stub_app(blocks, log, join_delay), blocks, AppConfig(**limits), trust_proxy=False), blocks


def test_body_limit_from_content_length_reads_nothing():
    log = []
    guard, _ = guard_for(log, max_body_kb=1)
    status, headers, body, pulled = asyncio.run(
        call(guard, "/gradio_api/queue/join", [b"x" * 2048], [("content-length", "2048")])
    )
    assert status == 413 and pulled == 0 and log == []
    assert "MOBILESAM_MAX_BODY_KB" in json.loads(body)["detail"]
    assert headers["x-content-type-options"] == "nosniff"


def test_chunked_body_is_cut_off_at_the_limit():
    log = []
    guard, _ = guard_for(log, max_body_kb=64)
    chunks = [b"0" * 16384] * 1000  # 16 MB, no Content-Length
    status, _, body, pulled = asyncio.run(call(guard, "/msw/anything", chunks))
    assert status == 413 and "64 KB" in json.loads(body)["detail"]
    assert pulled <= 64 * 1024 + 16384 and log == []  # never more than one chunk past the limit
    # under the limit, the app gets the whole body
    status, _, _, _ = asyncio.run(call(guard, "/msw/anything", [b"0" * 16384] * 3))
    assert status == 200 and log == [3 * 16384]


def test_upload_route_has_its_own_limit_and_a_rate():
    log = []
    guard, _ = guard_for(log, max_body_kb=1, uploads_per_minute=2)
    big = [b"0" * 8192] * 4
    results = [asyncio.run(call(guard, "/gradio_api/upload", big, client="10.0.0.1")) for _ in range(3)]
    assert [r[0] for r in results] == [200, 200, 429]
    assert "MOBILESAM_UPLOADS_PER_MINUTE" in json.loads(results[2][2])["detail"]
    assert int(results[2][1]["retry-after"]) > 0
    assert asyncio.run(call(guard, "/gradio_api/upload", big, client="10.0.0.2"))[0] == 200


def test_headers_nosniff_everywhere_and_no_store_for_visitor_files():
    guard, _ = guard_for([])
    _, headers, _, _ = asyncio.run(call(guard, "/gradio_api/file=/tmp/gradio/abc/image.png", method="GET"))
    assert headers["cache-control"] == "private, no-store" and headers["x-content-type-options"] == "nosniff"
    _, headers, _, _ = asyncio.run(call(guard, "/msw/config.json", method="GET"))
    assert headers["cache-control"] == "max-age=3600" and headers["x-content-type-options"] == "nosniff"


def join_body(session):
    return json.dumps({"data": [], "fn_index": 0, "session_hash": session}).encode()


def test_concurrent_joins_cannot_slip_past_the_counts():
    """Joins that arrive together are counted before Gradio has queued any of them."""
    log = []
    guard, blocks = guard_for(log, join_delay=0.01, max_queued_per_session=3, max_queued_per_client=5)

    async def flood(session_of):
        return await asyncio.gather(
            *(call(guard, "/gradio_api/queue/join", [join_body(session_of(i))], client="10.0.0.9") for i in range(12))
        )

    statuses = [r[0] for r in asyncio.run(flood(lambda i: "one-page"))]
    assert statuses.count(200) == 3 and statuses.count(429) == 9
    statuses = [r[0] for r in asyncio.run(flood(lambda i: f"page-{i}"))]
    assert statuses.count(200) == 2  # 5 per address, 3 already held
    assert len(blocks._queue.event_ids_to_events) == 5
    blocks._queue.event_ids_to_events.clear()  # the events ran: the address may join again
    assert asyncio.run(call(guard, "/gradio_api/queue/join", [join_body("new")], client="10.0.0.9"))[0] == 200
    # another address is not held back by this one
    assert asyncio.run(call(guard, "/gradio_api/queue/join", [join_body("x")], client="10.0.0.8"))[0] == 200


# ------------------------------------------------------------------------------- live server
def client_at(address: str) -> httpx.Client:
    """An HTTP client whose connections come from `address` (any 127.0.0.x is this machine)."""
    return httpx.Client(timeout=60, transport=httpx.HTTPTransport(local_address=address))


def raw_at(url: str, address: str) -> RawGradio:
    raw = RawGradio(url)
    raw.http = client_at(address)
    return raw


@pytest.fixture(scope="module")
def onnx_cache(shared_onnx_cache):
    return shared_onnx_cache


@pytest.fixture(scope="module", params=["uvicorn", "share"])
def server(request, sam_weights_path, onnx_cache, tmp_path_factory):
    """The real app with the default limits, started as `python app.py` and as `--share`.
    `--concurrency 1`: one slow event at a time keeps a core free for the others."""
    args = fixture_args(detector=True) + ["--concurrency", "1"]
    if request.param == "share":
        args.append("--share")  # offline here: no gradio.live link, but Gradio's own launcher
    env = {"MOBILESAM_ONNX_CACHE": onnx_cache, "GRADIO_TEMP_DIR": str(tmp_path_factory.mktemp("uploads"))}
    with running_app(args, env) as url:
        yield url


@pytest.fixture(autouse=True)
def still_serving(request):
    yield
    if "server" in request.fixturenames:
        assert RawGradio(request.getfixturevalue("server")).alive(), "the server stopped answering"


def json_chunks(total: int):
    """A `total`-byte JSON body, made as it is sent (the test holds 1 MB at a time)."""
    yield b'{"data": ["'
    left = total - 14
    while left > 0:
        n = min(MB, left)
        yield b"x" * n
        left -= n
    yield b'"]}'


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_200mb_json_body_is_refused_in_bounded_memory(server, declared):
    total = 200 * MB
    headers = {"Content-Type": "application/json"}
    if declared:
        headers["Content-Length"] = str(total)
    with client_at("127.0.0.2") as http, PeakRss(server.pid) as rss:
        r = http.post(server + "gradio_api/queue/join", content=json_chunks(total), headers=headers)
    assert r.status_code == 413, r.text[:300]
    assert "MOBILESAM_MAX_BODY_KB" in r.json()["detail"] and "1024 KB" in r.json()["detail"]
    assert r.headers["x-content-type-options"] == "nosniff"
    print(f"peak RSS growth for a 200 MB body ({'declared' if declared else 'chunked'}): {rss.growth / MB:.1f} MB")
    assert rss.growth < 150 * MB, f"peak RSS grew {rss.growth / MB:.0f} MB"


def test_bodies_under_the_limit_and_uploads_pass(server):
    with client_at("127.0.0.2") as http:
        # 900 KB: reaches Gradio, which answers it itself (no session_hash: 400)
        r = http.post(server + "gradio_api/queue/join", json={"data": ["x" * 900_000], "fn_index": 0})
        assert r.status_code == 400, r.text[:300]
        # 3 MB upload: the upload route has its own limit (MOBILESAM_MAX_UPLOAD_MB, 50)
        r = http.post(server + "gradio_api/upload", files={"files": ("big.bin", b"\0" * (3 * MB))})
        assert r.status_code == 200, r.text[:300]


def test_nosniff_on_every_response_and_no_store_on_visitor_files(server):
    raw = raw_at(server, "127.0.0.2")
    path = raw.uploaded((MOBILESAM_FIXTURE / "image.png").read_bytes())["path"]
    for route in ("", "config", "gradio_api/info", "msw/config.json", "msw/static/nope.js", "gradio_api/file=/etc/x"):
        r = raw.http.get(server + route)
        assert r.headers.get("x-content-type-options") == "nosniff", (route, r.status_code)
    r = raw.http.get(server + "gradio_api/file=" + path)
    assert r.status_code == 200 and r.headers["cache-control"] == "private, no-store"
    assert r.headers.get_list("cache-control") == ["private, no-store"]


def test_uploads_per_minute_per_address(server):
    """The default: 30 uploads a minute from one address; the 31st waits, others do not."""
    with client_at("127.0.0.3") as http:
        codes = [
            http.post(server + "gradio_api/upload", files={"files": ("a.txt", b"a")}).status_code for _ in range(30)
        ]
        assert codes == [200] * 30
        r = http.post(server + "gradio_api/upload", files={"files": ("a.txt", b"a")})
    assert r.status_code == 429 and "MOBILESAM_UPLOADS_PER_MINUTE" in r.json()["detail"], r.text[:300]
    assert 0 < int(r.headers["retry-after"]) <= 61
    with client_at("127.0.0.4") as http:
        assert http.post(server + "gradio_api/upload", files={"files": ("a.txt", b"a")}).status_code == 200


def join(http: httpx.Client, url: str, fn_index: int, data: list, session: str) -> httpx.Response:
    body = {"data": data, "fn_index": fn_index, "trigger_id": None, "session_hash": session}
    return http.post(url + "gradio_api/queue/join", json=body)


def test_a_flooding_client_gets_429_and_others_are_still_served(server):
    """66 joins of a slow event (segment-everything, ~20 s with the fixture weights, so none of
    them finishes during the flood) from one address: 4 from its one page pass, 12 more from
    other pages, the rest are refused with 429 and never reach Gradio's queue (64 events), so a
    second client's /segment call is answered, not "Queue is full" (503). Last in the module:
    the server, still busy with the flood, is stopped after it."""
    flooder = raw_at(server, "127.0.0.5")
    image = flooder.uploaded((MOBILESAM_FIXTURE / "image.png").read_bytes())
    everything = flooder.fn_index("everything")
    data = [image, None, None, 1280]

    page = [join(flooder.http, server, everything, data, "one-page") for _ in range(6)]
    assert [r.status_code for r in page] == [200] * 4 + [429] * 2, [r.text[:200] for r in page]
    assert "from this page" in page[-1].json()["detail"]
    assert "MOBILESAM_MAX_QUEUED_PER_SESSION" in page[-1].json()["detail"]

    with ThreadPoolExecutor(8) as pool:
        rest = list(pool.map(lambda i: join(flooder.http, server, everything, data, f"page-{i}"), range(60)))
    codes = [r.status_code for r in rest]
    assert codes.count(200) == 12 and codes.count(429) == 48, codes
    refused = next(r for r in rest if r.status_code == 429).json()["detail"]
    assert "from this address" in refused and "MOBILESAM_MAX_QUEUED_PER_CLIENT" in refused
    assert "wait for the previous ones" in refused

    other = raw_at(server, "127.0.0.6")
    mine = other.uploaded((MOBILESAM_FIXTURE / "image.png").read_bytes())
    res = other.event(other.fn_index("segment"), [mine, [[100, 100]], [1], None, False], timeout=120)
    assert res["success"], res


# Only for the --share server, and on the one already started: this stays the module's last test
# using `server` (pytest numbers the override's parameter 0, which groups it with the uvicorn
# tests; a `server` test after it would start both servers again).
@pytest.mark.parametrize("server", ["share"], indirect=True)
def test_share_mode_serves_the_widget(server):
    """`--share` starts Gradio's own launcher (offline here, so no gradio.live link is made, but
    the local server is the one the link would forward to): it must serve the same /msw routes,
    headers and page style, so a share-link visitor decodes in the browser. (`python app.py`'s
    page is test_first_visit's.)"""
    from test_first_visit import IMAGE, at, overlay_box, wait_image

    r = urllib.request.urlopen(server + "msw/config.json")
    assert json.load(r)["decoder"]["bytes"] > 0
    assert r.headers["Cross-Origin-Opener-Policy"] == "same-origin"
    with browser() as b:
        page = b.new_page(viewport={"width": 1366, "height": 768})
        with screenshot_on_failure(page, "share_mode"):
            page.goto(server)
            page.wait_for_function(
                "window.mswDebug && (window.mswDebug.ready || window.mswDebug.error)", timeout=180_000
            )
            assert page.evaluate("window.mswDebug.error || null") is None
            assert page.evaluate("self.crossOriginIsolated") is True
            page.locator("#msw-upload input[type=file]").set_input_files(IMAGE)
            wait_image(page)
            page.mouse.click(*at(overlay_box(page), 0.4, 0.5))
            page.wait_for_function("window.mswDebug.clicks.length >= 1", timeout=60_000)


def test_refusals_are_logged_without_flooding_the_log(caplog):
    """An operator sees why visitors were turned away; a client refused over and over logs one
    line per kind every 10 s, with the count since the last line."""
    now = [100.0]
    refusals = RefusalLog(clock=lambda: now[0])
    with caplog.at_level("INFO", logger="mobilesam_web"):
        for _ in range(50):
            refusals.refused("10.0.0.1", "an upload", "Too many uploads from this address")
            now[0] += 0.1
        refusals.refused("10.0.0.1", "a queue join", "Too many requests waiting from this page")
        refusals.refused("10.0.0.2", "an upload", "Too many uploads from this address")
        now[0] += 10
        refusals.refused("10.0.0.1", "an upload", "Too many uploads from this address")
    lines = [r.getMessage() for r in caplog.records if "guard refused" in r.getMessage()]
    assert len(lines) == 4, lines
    assert lines[0] == "guard refused an upload from 10.0.0.1: Too many uploads from this address"
    assert "a queue join from 10.0.0.1" in lines[1] and "an upload from 10.0.0.2" in lines[2]
    assert "(and 49 more since the last line)" in lines[3]
