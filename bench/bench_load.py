"""Load test: N simulated visitors against a running app; latency per action, errors, peak RSS.

    python bench/bench_load.py [--visitors 10] [--clicks 5] [--think 1.0] [--ramp 10]
                               [--concurrency 2] [--out results.json]
    python bench/bench_load.py --url http://127.0.0.1:7860/ --pid 12345   # a server you started

Without --url it starts the real app (`app.py`) in a subprocess with the parity fixtures' random
weights (timings do not depend on weight values) and stops it at the end.

Each visitor is a thread speaking Gradio's raw protocol as a page in server-decoding mode does
(its own session_hash, events through /gradio_api/queue/join + the SSE stream): load the page,
upload an image, open it in the segment tab (`on_upload`: read + encode), click `--clicks` times
(`on_click`), keep the object (`keep_object`), export (`on_export`), and segment everything in the
same image (`on_everything`), with a random think time around `--think` s between actions.
Visitors start evenly spread over `--ramp` s, after one untimed warm-up visitor (lazy loading
is not what a load test measures; `--no-warmup` skips it). Images: the fixture image as PNG and
JPEG at three sizes, each visitor's copy marked so its content differs: every visitor costs one
real encode (the server shares embeddings between visitors who send the same image).

An action's latency is what the visitor waits for: the event from its join to its result, plus
fetching the images it shows (canvas, candidate thumbnails, everything's result), as a browser
does. Downloads from the export are not fetched (a visitor clicks them or not).

Every visitor comes from 127.0.0.1, so a started server gets its per-address limits raised
(MOBILESAM_MAX_QUEUED_PER_CLIENT, MOBILESAM_UPLOADS_PER_MINUTE); the per-page limit stays. HTTP 429
answers are counted apart from errors. Peak RSS is the server's VmHWM (reset at the start through
/proc/PID/clear_refs), so it needs the server on this machine (`--pid` with `--url`).

Bounded: every request has `--timeout`, the whole run `--time-limit` (visitors start no action
after it; the run ends at most `--timeout` later, whatever is still running).
"""

import argparse
import io
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional
from urllib.parse import urlparse

import httpx
import numpy as np
from PIL import Image

from common import FIXTURES, ROOT

sys.path.insert(0, str(ROOT / "tests"))
from hostile_client import PeakRss, RawGradio, file_data  # noqa: E402
from server_utils import fixture_args, running_app  # noqa: E402

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
DISPLAY_SIDE = 1024  # mobilesam_web.ui.segment_session.DISPLAY_SIDE: clicks are in canvas pixels
# (format, scale of the fixture image's 799x800): sizes around the 1024 encoder input and the
# 1024 px canvas, both codecs
VARIANTS = [("png", 1.0), ("jpeg", 1.0), ("jpeg", 1.6), ("png", 0.6)]
EVERYTHING_PARAMS = [0.4, 0.9, 1024, 0.0, 0.0, False]  # the tab's defaults
SHOWN = {"image", "gallery"}  # output components whose files a page fetches at once
ACTIONS = ["page", "upload", "on_upload", "on_click", "keep_object", "on_export", "on_everything"]


class TooMany(Exception):
    """The server answered 429 (a queue or upload limit)."""


class Failed(Exception):
    """The event failed, or gave no result in time."""


@dataclass
class Sample:
    visitor: int
    action: str
    ms: float
    outcome: str  # "ok", "error" or "429"
    error: str = ""


class Recorder:
    """Samples from every visitor thread."""

    def __init__(self) -> None:
        self.samples: List[Sample] = []
        self.lock = threading.Lock()

    def add(self, sample: Sample) -> None:
        with self.lock:
            self.samples.append(sample)

    def snapshot(self) -> List[Sample]:
        with self.lock:
            return list(self.samples)


# ------------------------------------------------------------------------------- a page
class Page(RawGradio):
    """One visitor's page: its own connection and session_hash; events bounded in time."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = "load-" + uuid.uuid4().hex[:12]
        # trust_env=False: a proxy from the environment must never see loopback traffic
        self.http = httpx.Client(timeout=timeout, trust_env=False)
        self._get(self.url + "/")
        self.config = self._get(self.url + "/config").json()
        self.components = {c["id"]: c for c in self.config["components"]}
        self.fns = {d.get("api_name"): i for i, d in self.dependencies()}

    def _get(self, url: str) -> httpx.Response:
        r = self.http.get(url)
        if r.status_code == 429:
            raise TooMany(r.text[:200])
        r.raise_for_status()
        return r

    def send_file(self, data: bytes, name: str) -> dict:
        r = self.upload(data, name)
        if r.status_code == 429:
            raise TooMany(r.text[:200])
        r.raise_for_status()
        return file_data(r.json()[0], name)

    def run(self, name: str, data: list, event_data: Any = None) -> list:
        """Join the queue with event `name` and wait for its result on the SSE stream."""
        fn = self.fns[name]
        targets = self.config["dependencies"][fn]["targets"]
        body = {
            "data": data,
            "event_data": event_data,
            "fn_index": fn,
            "trigger_id": targets[0][0] if targets else None,
            "session_hash": self.session,
        }
        r = self.http.post(f"{self.url}/gradio_api/queue/join", json=body)
        if r.status_code == 429:
            raise TooMany(r.text[:200])
        r.raise_for_status()
        event_id = r.json()["event_id"]
        deadline = time.monotonic() + self.timeout
        # Gradio sends a heartbeat every 15 s, so a 30 s read timeout only fires on a dead server
        # and the deadline is checked at least that often.
        stream_timeout = httpx.Timeout(self.timeout, read=min(self.timeout, 30.0))
        params = {"session_hash": self.session}
        with self.http.stream(
            "GET", f"{self.url}/gradio_api/queue/data", params=params, timeout=stream_timeout
        ) as stream:
            for line in stream.iter_lines():
                if time.monotonic() > deadline:
                    raise Failed(f"no result in {self.timeout:.0f} s")
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("msg") == "unexpected_error":
                    raise Failed(str(msg.get("message")))
                if msg.get("event_id") != event_id or msg.get("msg") != "process_completed":
                    continue
                out = msg.get("output") or {}
                if not msg.get("success"):
                    raise Failed(str(out.get("error")))
                return out.get("data") or []
        raise Failed("stream ended without a result")

    def fetch_shown(self, name: str, output: list) -> None:
        """GET the images an event's output shows (image and gallery components), as the page
        does to display them; downloads (file components) are left to the visitor."""
        ids = self.config["dependencies"][self.fns[name]]["outputs"]
        for cid, value in zip(ids, output):
            if self.components[cid]["type"] in SHOWN:
                for url in file_urls(value):
                    self._get(url if url.startswith(self.url) else f"{self.url}/gradio_api/file={url}")


def file_urls(value: Any) -> Iterator[str]:
    """The URLs (else paths) of the FileData values anywhere in an output value."""
    if isinstance(value, dict):
        if (value.get("meta") or {}).get("_type") == "gradio.FileData":
            yield value.get("url") or value["path"]
            return
        for v in value.values():
            yield from file_urls(v)
    elif isinstance(value, list):
        for v in value:
            yield from file_urls(v)


# ------------------------------------------------------------------------------- images
def variant_bytes(base: np.ndarray, index: int) -> tuple:
    """(bytes, file name, canvas (w, h)) of visitor `index`'s image: one of VARIANTS, with a
    block whose colour encodes the index, so no two visitors send the same content."""
    fmt, scale = VARIANTS[index % len(VARIANTS)]
    img = Image.fromarray(base)
    if scale != 1.0:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR)
    arr = np.array(img)
    if index >= 0:
        arr[:16, :16] = (index % 256, (index // 256) % 256, 200)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt.upper(), **({"quality": 90} if fmt == "jpeg" else {}))
    h, w = arr.shape[:2]
    sc = min(1.0, DISPLAY_SIDE / max(h, w))
    return buf.getvalue(), f"visitor{index}.{'jpg' if fmt == 'jpeg' else 'png'}", (round(w * sc), round(h * sc))


# ------------------------------------------------------------------------------- a visitor
@dataclass
class Plan:
    url: str
    clicks: int
    think: float
    timeout: float
    deadline: float  # time.monotonic() after which no action starts


def timed(rec: Recorder, visitor: int, action: str, fn: Callable[[], Any]) -> Any:
    """Run one action, record its latency and outcome; -> its result, or None if it failed."""
    t = time.perf_counter()
    try:
        result = fn()
    except TooMany as e:
        rec.add(Sample(visitor, action, (time.perf_counter() - t) * 1000, "429", str(e)[:300]))
        return None
    except Exception as e:  # any failure is a data point, not the end of the run
        rec.add(Sample(visitor, action, (time.perf_counter() - t) * 1000, "error", f"{type(e).__name__}: {e}"[:300]))
        return None
    rec.add(Sample(visitor, action, (time.perf_counter() - t) * 1000, "ok"))
    return result if result is not None else True


def visit(index: int, plan: Plan, base: np.ndarray, rec: Recorder) -> None:
    """One visitor's session; stops at its first failed step that later ones depend on."""
    rng = random.Random(index)

    def pause() -> bool:
        """Think, then say whether there is time for another action."""
        time.sleep(plan.think * rng.uniform(0.5, 1.5))
        return time.monotonic() < plan.deadline

    def shown(name: str, data: list, event_data: Any = None) -> Callable[[], list]:
        def action() -> list:
            out = page.run(name, data, event_data)
            page.fetch_shown(name, out)
            return out

        return action

    page = timed(rec, index, "page", lambda: Page(plan.url, plan.timeout))
    if page is None:
        return
    try:
        data, name, (dw, dh) = variant_bytes(base, index)
        f = timed(rec, index, "upload", lambda: page.send_file(data, name))
        if f is None or timed(rec, index, "on_upload", shown("on_upload", [f, True])) is None:
            return
        for _ in range(plan.clicks):
            if not pause():
                return
            xy = [round(dw * rng.uniform(0.1, 0.9)), round(dh * rng.uniform(0.1, 0.9))]
            timed(rec, index, "on_click", shown("on_click", [None, "Add (+)", True], {"index": xy, "value": None}))
        rest = [
            ("keep_object", shown("keep_object", [None])),
            ("on_export", shown("on_export", [None])),
            ("on_everything", shown("on_everything", [f, *EVERYTHING_PARAMS, None])),
        ]
        for action, call in rest:
            if not pause():
                return
            timed(rec, index, action, call)
    finally:
        page.http.close()


def run_visitors(n: int, ramp: float, plan: Plan, base: np.ndarray, time_limit: float) -> tuple:
    """Start n visitor threads spread over `ramp` s; -> (samples, wall s, unfinished count)."""
    rec = Recorder()
    threads = []
    t0 = time.monotonic()
    for i in range(n):
        time.sleep(max(0.0, t0 + i * ramp / max(n, 1) - time.monotonic()))
        if time.monotonic() > plan.deadline:
            break
        th = threading.Thread(target=visit, args=(i, plan, base, rec), daemon=True, name=f"visitor-{i}")
        th.start()
        threads.append(th)
    # the hard stop: the time limit plus one request timeout, then whatever is left is abandoned
    hard = t0 + time_limit + plan.timeout + 5
    for th in threads:
        th.join(max(0.0, hard - time.monotonic()))
    wall = time.monotonic() - t0
    unfinished = sum(th.is_alive() for th in threads) + (n - len(threads))
    return rec.snapshot(), wall, unfinished


# ------------------------------------------------------------------------------- server
def check_loopback(url: str) -> None:
    host = urlparse(url).hostname
    if host not in LOOPBACK:
        raise SystemExit(f"--url must be a loopback address ({', '.join(sorted(LOOPBACK))}), not {host!r}")


def raised_limits(visitors: int) -> Dict[str, str]:
    """Per-address limits for one address that hosts every visitor: the per-page limits times
    the visitors (each page has at most one event waiting here; a browser may have 4)."""
    return {
        "MOBILESAM_MAX_QUEUED_PER_CLIENT": str(max(16, 4 * visitors)),
        "MOBILESAM_UPLOADS_PER_MINUTE": str(max(30, 4 * visitors)),
    }


@contextmanager
def server(args: argparse.Namespace) -> Iterator[tuple]:
    """-> (url, pid or None, env overrides): the given server, or the app started here."""
    if args.url:
        check_loopback(args.url)
        yield args.url, args.pid, {}
        return
    env = raised_limits(args.visitors)
    tmp = tempfile.mkdtemp(prefix="bench-load-")
    env["GRADIO_TEMP_DIR"] = tmp  # uploads and exports: removed at the end
    cli = fixture_args(detector=True) + ["--concurrency", str(args.concurrency)]
    try:
        with running_app(cli, env_extra=env, timeout=600) as url:
            print(f"server: app.py {' '.join(cli)} at {url} (log: test-artifacts/server-{urlparse(url).port}.log)")
            yield str(url), url.pid, env
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def warm_up(url: str, base: np.ndarray, timeout: float) -> None:
    """One untimed visitor, so lazy loading (ONNX sessions, detector) is not in the numbers."""
    rec = Recorder()
    plan = Plan(url, clicks=1, think=0.0, timeout=timeout, deadline=time.monotonic() + 3 * timeout)
    visit(-1, plan, base, rec)
    bad = [s for s in rec.samples if s.outcome != "ok"]
    if bad:
        print(f"warm-up: {len(bad)} action(s) failed, e.g. {bad[0].action}: {bad[0].error}")


# ------------------------------------------------------------------------------- results
def stats(samples: List[Sample]) -> Dict[str, Dict[str, Any]]:
    """Per action: count, errors, 429s, p50/p95/max ms over the successful ones."""
    table = {}
    for action in ACTIONS:
        mine = [s for s in samples if s.action == action]
        ok = np.array([s.ms for s in mine if s.outcome == "ok"])
        table[action] = {
            "count": len(mine),
            "errors": sum(s.outcome == "error" for s in mine),
            "http_429": sum(s.outcome == "429" for s in mine),
            "p50_ms": float(np.percentile(ok, 50)) if ok.size else None,
            "p95_ms": float(np.percentile(ok, 95)) if ok.size else None,
            "max_ms": float(ok.max()) if ok.size else None,
        }
    return table


def ms(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:.0f}"


def print_report(result: Dict[str, Any]) -> None:
    print("\n| action | count | errors | 429 | p50 ms | p95 ms | max ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for action, r in result["actions"].items():
        print(
            f"| {action} | {r['count']} | {r['errors']} | {r['http_429']} "
            f"| {ms(r['p50_ms'])} | {ms(r['p95_ms'])} | {ms(r['max_ms'])} |"
        )
    rss = result["rss"]
    print(
        f"\n{result['visitors']} visitors, wall {result['wall_s']:.1f} s, "
        f"{result['actions_per_s']:.2f} actions/s ({result['ok_actions']} ok), "
        f"{result['unfinished_visitors']} visitor(s) unfinished at the time limit"
    )
    if rss:
        exact = "VmHWM" if rss["exact"] else "sampled every 20 ms (VmHWM could not be reset)"
        print(f"server RSS: {rss['start_mb']:.0f} MB at start, peak {rss['peak_mb']:.0f} MB ({exact})")
    else:
        print("server RSS: not measured (give --pid with --url)")
    for e in result["error_samples"]:
        print(f"  {e['outcome']} in {e['action']} (visitor {e['visitor']}): {e['error']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--visitors", type=int, default=10)
    ap.add_argument("--clicks", type=int, default=5, help="clicks per visitor")
    ap.add_argument("--think", type=float, default=1.0, help="mean think time between actions (s)")
    ap.add_argument("--ramp", type=float, default=10.0, help="visitors start spread over this many seconds")
    ap.add_argument("--concurrency", type=int, default=2, help="the started server's --concurrency")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per request (queue wait included)")
    ap.add_argument("--time-limit", type=float, default=1200.0, help="seconds for the whole run")
    ap.add_argument("--url", help="a running server (loopback only) instead of starting one")
    ap.add_argument("--pid", type=int, help="the --url server's process id, for its peak RSS")
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up visitor")
    ap.add_argument("--out", help="write the results to this JSON file")
    args = ap.parse_args()
    if args.visitors < 1 or args.clicks < 0:
        ap.error("--visitors must be >= 1 and --clicks >= 0")
    base = np.array(Image.open(FIXTURES / "mobilesam_parity" / "image.png").convert("RGB"))

    with server(args) as (url, pid, env):
        if env:
            limits = ", ".join(f"{k}={v}" for k, v in env.items() if k.startswith("MOBILESAM_"))
            print(f"per-address limits for this run (every visitor comes from 127.0.0.1): {limits}")
        else:
            print("note: a server started elsewhere keeps its own per-address limits: expect 429s past them")
        if not args.no_warmup:
            warm_up(url, base, args.timeout)
        plan = Plan(url, args.clicks, args.think, args.timeout, time.monotonic() + args.time_limit)
        with PeakRss(pid) if pid else nullcontext() as peak:
            samples, wall, unfinished = run_visitors(args.visitors, args.ramp, plan, base, args.time_limit)

    ok = sum(s.outcome == "ok" for s in samples)
    result = {
        "command": " ".join(["python", "bench/bench_load.py", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "options": vars(args),
        "server_env": env,
        "visitors": args.visitors,
        "actions": stats(samples),
        "wall_s": wall,
        "ok_actions": ok,
        "actions_per_s": ok / wall if wall else 0.0,
        "unfinished_visitors": unfinished,
        "rss": {"start_mb": peak.start / 2**20, "peak_mb": peak.peak / 2**20, "exact": peak.exact} if pid else None,
        "error_samples": [asdict(s) for s in samples if s.outcome != "ok"][:20],
    }
    print_report(result)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)
        print(f"results: {args.out}")


if __name__ == "__main__":
    main()
