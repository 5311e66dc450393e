"""The visitor's numbers and in-browser decode latency: headless Chromium (Debian's) driving the app.

    python bench/bench_browser.py [--n 60] [--webgpu-n 5] [--encode-n 3] [--only-device] [--no-webgpu-encode]
                                  [--only-slow-line] [--slow-n 2]

Slow line (1.6 Mbit/s down, 0.75 up, 150 ms round trip, through tests/slow_link.py, which shapes the
page's workers too): a new visitor uploads the moment the page appears and clicks as soon as the
image shows; page load -> first painted mask, in the default mode (the server decodes until the
in-browser decoder has arrived) against server-decoding mode (MOBILESAM_BROWSER_DECODING=0),
both measured in the same run. #21's goal: default <= 1.25 x server mode + 3 s.

Visitor: page load -> first painted mask for a new visitor and a returning one (cached runtime and
decoder), on the local link and on an emulated 20 Mbit/s connection, with the bytes that went over
the wire; click -> painted mask p50/p95 while a hover preview is in flight, against server-side
decoding measured in the same run.

Starts the app on the parity-fixture weights, then in one run measures the median time of one
decode call (onnxruntime-web session.run + reading the outputs) over N prompts for
WASM with 1 thread, WASM with threads (cross-origin isolated page), and WebGPU when the browser
exposes an adapter (here: SwiftShader, a CPU emulation, so expect it to be slow). Also times a
full hover (decode + SAM's exact upscaling + drawing) and, as the baseline in the same run, the
server's ONNX Runtime decoder. "hover" rows: the fast decoder the page uses for hover previews
(tanh GELU, float16 weights); clicks use the exact one.

On-device mode (the image is encoded in the page): the in-browser encode time (PIL-exact resize +
encoder session.run, median over --encode-n images) for WASM with 1 thread, WASM with threads and
WebGPU (SwiftShader: one encode, minutes), against native ONNX Runtime encoding the same image
with the same graph in the same run; and a new and a returning visitor's page load -> first
painted mask with the bytes that went over the wire.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
FIX = ROOT.parent / "shared" / "fixtures" / "mobilesam_parity"

from slow_link import SlowLink  # noqa: E402

from server_utils import browser, running_app  # noqa: E402

SLOW_LINE = dict(down_mbit=1.6, up_mbit=0.75, rtt_ms=150)

JS = """async ([n, warm, fast]) => {
  const ts = [], rt = [];
  if (fast) await window.mswDebug.startHover();
  for (let i = 0; i < warm + n; i++) {
    const x = 100 + (i * 37) % 800, y = 100 + (i * 53) % 800;
    const r = await window.mswDebug.decodeTimed(x, y, fast);
    if (i >= warm) { ts.push(r.ms); rt.push(r.roundTripMs); }
  }
  ts.sort((a, b) => a - b); rt.sort((a, b) => a - b);
  return {median: ts[Math.floor(ts.length / 2)], min: ts[0], roundTrip: rt[Math.floor(rt.length / 2)]};
}"""

# Click -> painted mask while a hover preview is in flight: a pointermove starts a preview, the
# click follows at once; timed until the mask is on the canvas (the next animation frame).
CLICK_JS = """async (n) => {
  const c = document.querySelector('.msw-overlay'), r = c.getBoundingClientRect(), ts = [];
  const ev = (type, fx, fy) => c.dispatchEvent(new PointerEvent(type, {clientX: r.left + r.width * fx,
    clientY: r.top + r.height * fy, pointerType: 'mouse', pointerId: 1, button: 0, bubbles: true}));
  for (let i = 0; i < n; i++) {
    document.querySelector('.msw-root [data-act=clear]').click();
    const fx = 0.2 + 0.6 * ((i * 7) % 10) / 10, fy = 0.3 + 0.4 * ((i * 3) % 10) / 10;
    ev('pointermove', fx + 0.05, fy);
    await new Promise((ok) => setTimeout(ok, 5));
    const before = window.mswDebug.clicks.length, t = performance.now();
    ev('pointerdown', fx, fy); ev('pointerup', fx, fy);
    while (window.mswDebug.clicks.length === before) await new Promise((ok) => setTimeout(ok, 1));
    await new Promise((ok) => requestAnimationFrame(() => ok()));
    ts.push(performance.now() - t);
  }
  ts.sort((a, b) => a - b);
  return {p50: ts[Math.floor(ts.length * 0.5)], p95: ts[Math.min(ts.length - 1, Math.floor(ts.length * 0.95))]};
}"""


def page_for(b, url, query):
    page = b.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url + query)
    page.wait_for_function("window.mswDebug && (window.mswDebug.ready || window.mswDebug.error)", timeout=300_000)
    if page.evaluate("window.mswDebug.error || null"):
        return None, page.evaluate("window.mswDebug.error")
    page.locator("#msw-upload input[type=file]").set_input_files(str(FIX / "image.png"))
    page.wait_for_function("window.mswDebug.imageReady", timeout=120_000)
    return page, None


def first_mask(ctx, url, mbit=None):
    """A visitor: open the page, upload at once, click as soon as the image shows. Returns
    (seconds from navigation to the painted mask, MB over the wire, decoder state at the click)."""
    page = ctx.new_page()
    page.set_viewport_size({"width": 1366, "height": 768})
    got = []
    page.on("requestfinished", lambda r: got.append(r.sizes()["responseBodySize"] + r.sizes()["responseHeadersSize"]))
    if mbit:
        cdp = ctx.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send(
            "Network.emulateNetworkConditions",
            {
                "offline": False,
                "latency": 40,
                "downloadThroughput": mbit * 125_000,
                "uploadThroughput": mbit / 4 * 125_000,
            },
        )
    t = time.perf_counter()
    page.goto(url)
    page.locator("#msw-upload input[type=file]").set_input_files(str(FIX / "image.png"))
    page.wait_for_selector(".msw-img[src]", timeout=300_000)
    page.wait_for_function("window.mswDebug.state().image !== 'fetching'", timeout=300_000)
    state = page.evaluate("window.mswDebug.state().decoder")
    box = page.locator(".msw-overlay").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.5)
    page.wait_for_function("window.mswDebug.clicks.length >= 1", timeout=300_000)
    took = time.perf_counter() - t
    page.close()
    return took, sum(got) / 1e6, state


def hover_sweep_long_tasks(page):
    """The main thread's long tasks while the mouse sweeps the image (previews are painted in
    the worker: the page only copies pixels)."""
    page.evaluate("""() => { window.longTasks = [];
        new PerformanceObserver((l) => l.getEntries().forEach((e) => window.longTasks.push(e.duration)))
          .observe({type: 'longtask'}); }""")
    box = page.locator(".msw-overlay").bounding_box()
    before = page.evaluate("window.mswDebug.hoverCount")
    for i in range(40):
        page.mouse.move(box["x"] + box["width"] * (0.1 + 0.02 * i), box["y"] + box["height"] * (0.2 + 0.015 * i))
        page.wait_for_timeout(25)
    page.wait_for_timeout(500)
    tasks = page.evaluate("window.longTasks")
    page.mouse.move(0, 0)
    return {
        "previews": page.evaluate("window.mswDebug.hoverCount") - before,
        "count": len(tasks),
        "longest": max(tasks, default=0.0),
    }


def slow_visitor(b, app_url, server_mode):
    """A new visitor on the slow line: upload the moment the upload box appears, click the image
    as soon as it shows -> (seconds from navigation to the painted mask, where it was decoded)."""
    app_port = int(app_url.rstrip("/").rsplit(":", 1)[1])
    with SlowLink(app_port, **SLOW_LINE) as port:
        ctx = b.new_context(viewport={"width": 1366, "height": 768})
        page = ctx.new_page()
        t = time.perf_counter()
        page.goto(f"http://127.0.0.1:{port}/", wait_until="commit", timeout=300_000)
        upload = page.locator("#msw-upload input[type=file]")
        upload.wait_for(state="attached", timeout=300_000)
        upload.set_input_files(str(FIX / "image.png"))
        if server_mode:
            img = "document.querySelector('#msw-canvas img')"
            page.wait_for_function(
                f"{img} && {img}.complete && document.querySelector('#msw-status').innerText.includes('image encoded')",
                timeout=300_000,
            )
            before = page.evaluate(f"{img}.src")
            bb = page.locator("#msw-canvas img").bounding_box()
            page.mouse.click(bb["x"] + bb["width"] * 0.4, bb["y"] + bb["height"] * 0.5)
            page.wait_for_function(
                f"(s) => {img}.src !== s && {img}.complete && {img}.naturalWidth > 0", arg=before, timeout=300_000
            )
            on = "server"
        else:
            page.wait_for_selector(".msw-img[src]", timeout=300_000)
            page.wait_for_function("window.mswDebug.state().image !== 'uploading'", timeout=300_000)
            bb = page.locator(".msw-overlay").bounding_box()
            page.mouse.click(bb["x"] + bb["width"] * 0.4, bb["y"] + bb["height"] * 0.5)
            page.wait_for_function("window.mswDebug.clicks.length >= 1", timeout=300_000)
            on = page.evaluate("window.mswDebug.clicks[0].on")
        took = time.perf_counter() - t
        ctx.close()
    return took, on


def slow_line(b, url, server_url, n):
    """#21's slow-line visitor, default mode against server-decoding mode, alternating."""
    rows = []
    for _ in range(n):
        rows.append(("default (browser decoder)",) + slow_visitor(b, url, False))
        rows.append(("server-decoding mode",) + slow_visitor(b, server_url, True))
    default = statistics.median(r[1] for r in rows if r[0].startswith("default"))
    server = statistics.median(r[1] for r in rows if r[0].startswith("server"))
    print(
        f"Slow line ({SLOW_LINE['down_mbit']} Mbit/s down, {SLOW_LINE['up_mbit']} up, {SLOW_LINE['rtt_ms']:.0f} ms "
        "round trip), a new visitor: page load -> upload at once -> first painted mask"
    )
    for mode, took, on in rows:
        print(f"  {mode:28s} {took:6.1f} s (decoded on the {on})")
    print(
        f"  median: default {default:.1f} s, server mode {server:.1f} s; default / server = {default / server:.2f} "
        f"(goal: default <= 1.25 x server + 3 s = {1.25 * server + 3:.1f} s)"
    )


def server_click_ms(b, url, n):
    """Server-side decoding (the baseline in the same run): click on the image -> new canvas."""
    page = b.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url + "?msw_backend=none")  # no browser backend: the page falls back to the server
    page.wait_for_selector("#msw-canvas", state="visible", timeout=120_000)
    page.locator("#msw-upload input[type=file]").set_input_files(str(FIX / "image.png"))
    page.wait_for_function(
        "document.querySelector('#msw-canvas img') && "
        "document.querySelector('#msw-status').innerText.includes('image encoded')",
        timeout=120_000,
    )
    ts = []
    src = lambda: page.evaluate("document.querySelector('#msw-canvas img').src")  # noqa: E731
    changed = "(s) => document.querySelector('#msw-canvas img').src !== s"
    for i in range(n):  # one-point clicks (three candidates), as on the browser side
        if i:
            before = src()
            page.locator("#msw-clear").click()
            page.wait_for_function(changed, arg=before, timeout=60_000)
        before = src()
        bb = page.locator("#msw-canvas img").bounding_box()
        t = time.perf_counter()
        page.mouse.click(bb["x"] + bb["width"] * (0.2 + 0.06 * (i % 10)), bb["y"] + bb["height"] * 0.5)
        page.wait_for_function(changed, arg=before, timeout=60_000)
        ts.append((time.perf_counter() - t) * 1e3)
    page.close()
    ts.sort()
    return {"p50": ts[len(ts) // 2], "p95": ts[min(len(ts) - 1, int(len(ts) * 0.95))]}


def device_encodes(b, url, query, n):
    """Median in-browser encode (ms) over n opens of the fixture image, and the backend label."""
    page = b.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url + "?msw_device=1&" + query)
    page.wait_for_function("window.mswDebug && (window.mswDebug.ready || window.mswDebug.error)", timeout=300_000)
    if page.evaluate("window.mswDebug.error || null"):
        return None, page.evaluate("window.mswDebug.error")
    label = page.evaluate("window.mswDebug.backend") + f" x{page.evaluate('window.mswDebug.threads')}"
    enc, resize = [], []
    for _ in range(n):
        page.evaluate("window.mswDebug.openLocal('/msw/examples/coffee.jpg', 'coffee.jpg')")
        page.wait_for_function("window.mswDebug.imageReady", timeout=1_800_000, polling=500)
        r = page.evaluate("window.mswDebug.lastEncode")
        enc.append(r["encodeMs"])
        resize.append(r["resizeMs"])
    page.close()
    return {"encode": statistics.median(enc), "resize": statistics.median(resize)}, label


def device_visit(ctx, url):
    """A visitor in on-device mode: page load -> example opened, encoded here -> first painted
    mask; (seconds, MB over the wire)."""
    page = ctx.new_page()
    page.set_viewport_size({"width": 1366, "height": 768})
    got = []
    page.on("requestfinished", lambda r: got.append(r.sizes()["responseBodySize"] + r.sizes()["responseHeadersSize"]))
    t = time.perf_counter()
    page.goto(url + "?msw_device=1")
    page.wait_for_function("window.mswDebug && window.mswDebug.device", timeout=300_000)
    page.locator(".msw-examples button").nth(1).click()
    page.wait_for_function("window.mswDebug.imageReady", timeout=600_000, polling=200)
    box = page.locator(".msw-overlay").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    page.wait_for_function("window.mswDebug.clicks.length >= 1", timeout=300_000)
    took = time.perf_counter() - t
    page.close()
    return took, sum(got) / 1e6


def on_device(url, args):
    from mobilesam_web.data.image_io import read_image
    from mobilesam_web.engine.onnx.cache import ort_session
    from mobilesam_web.engine.transforms import ResizeLongestSide
    from mobilesam_web.paths import examples_dir

    image = ResizeLongestSide(1024).apply_image(read_image(str(examples_dir() / "coffee.jpg")).image)
    from mobilesam_web.engine.onnx.cache import EXPORTER_VERSION

    encoder = next(Path("/tmp/mobilesam-bench-onnx").glob(f"*-v{EXPORTER_VERSION}/encoder.onnx"))  # the app's
    sess = ort_session(encoder)
    sess.run(None, {"image": image})
    native = []
    for _ in range(max(3, args.encode_n)):
        t = time.perf_counter()
        sess.run(None, {"image": image})
        native.append((time.perf_counter() - t) * 1e3)
    native_ms = statistics.median(native)
    rows, visits = [], []
    with browser(["--enable-unsafe-webgpu"]) as b:
        ctx = b.new_context()
        visits.append(("new visitor",) + device_visit(ctx, url))
        visits.append(("cached",) + device_visit(ctx, url))
        ctx.close()
        runs = [
            ("WASM, 1 thread", "msw_backend=wasm&msw_threads=1", args.encode_n),
            ("WASM, threads", "msw_backend=wasm", args.encode_n),
        ]
        if not args.no_webgpu_encode:
            runs.append(("WebGPU", "msw_backend=webgpu", 1))
        for name, query, n in runs:
            r, label = device_encodes(b, url, query, n)
            rows.append((name, r, label))
    print("On-device mode (image encoded in the page; coffee.jpg 600x400 -> 1024x683):")
    for who, took, mb in visits:
        print(
            f"  {who:12s} page load -> example encoded here -> first painted mask {took:5.1f} s, {mb:5.1f} MB over the wire"
        )
    print(
        f"  native onnxruntime encoder (same graph, same run, {sess.get_session_options().intra_op_num_threads} threads): "
        f"{native_ms:.0f} ms"
    )
    for name, r, label in rows:
        if r is None:
            print(f"  {name:16s} unavailable: {label}")
            continue
        print(
            f"  {name:16s} {label:10s} encode median {r['encode']:.0f} ms ({r['encode'] / native_ms:.1f}x native), "
            f"resize {r['resize']:.0f} ms"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--webgpu-n", type=int, default=5)
    ap.add_argument("--encode-n", type=int, default=3)
    ap.add_argument("--only-device", action="store_true", help="only the on-device (in-browser encoding) numbers")
    ap.add_argument("--no-webgpu-encode", action="store_true", help="skip the SwiftShader encode (minutes)")
    ap.add_argument("--only-slow-line", action="store_true", help="only the slow-line visitor (#21)")
    ap.add_argument("--slow-n", type=int, default=2, help="slow-line visits per mode")
    args = ap.parse_args()
    if args.only_slow_line:
        cache = {"MOBILESAM_ONNX_CACHE": "/tmp/mobilesam-bench-onnx"}
        with running_app(["--checkpoint", str(FIX / "weights_fp16.pt")], cache) as url:
            with running_app(
                ["--checkpoint", str(FIX / "weights_fp16.pt")], {**cache, "MOBILESAM_BROWSER_DECODING": "0"}
            ) as server_url:
                with browser() as b:
                    slow_line(b, url, server_url, args.slow_n)
        return
    if args.only_device:
        with running_app(
            ["--checkpoint", str(FIX / "weights_fp16.pt")], {"MOBILESAM_ONNX_CACHE": "/tmp/mobilesam-bench-onnx"}
        ) as url:
            on_device(url, args)
        return

    from mobilesam_web import load_predictor

    cache = "/tmp/mobilesam-bench-onnx"
    server = load_predictor(str(FIX / "weights_fp16.pt"), cache_dir=cache)
    server.set_image(np.array(Image.open(FIX / "image.png").convert("RGB")))
    times = []
    for i in range(args.n):
        t = time.perf_counter()
        server.engine.decode(
            server.features,
            np.array([[[300.0 + i, 400.0], [0, 0]]], np.float32),
            np.array([[1.0, -1.0]], np.float32),
            None,
        )
        times.append(time.perf_counter() - t)
    server_ms = statistics.median(times) * 1e3

    rows = []
    with running_app(["--checkpoint", str(FIX / "weights_fp16.pt")], {"MOBILESAM_ONNX_CACHE": cache}) as url:
        with browser(["--enable-unsafe-webgpu"]) as b:
            visits = []
            for label, mbit in (("fast local link", None), ("ordinary 20 Mbit/s", 20.0)):
                ctx = b.new_context()
                visits.append((label, "new visitor") + first_mask(ctx, url, mbit))
                visits.append((label, "cached") + first_mask(ctx, url, mbit))
                ctx.close()
            page, _ = page_for(b, url, "?msw_backend=wasm")
            page.evaluate("window.mswDebug.startHover()")
            page.wait_for_function("window.mswDebug.state().hover === 'ready'", timeout=120_000)
            sweep = hover_sweep_long_tasks(page)
            clicks = page.evaluate(CLICK_JS, max(10, args.n // 3))
            page.close()
            server_clicks = server_click_ms(b, url, max(10, args.n // 3))
            for name, query, n in [
                ("WASM, 1 thread", "?msw_backend=wasm&msw_threads=1", args.n),
                ("WASM, threads", "?msw_backend=wasm", args.n),
                ("WebGPU", "?msw_backend=webgpu", args.webgpu_n),
            ]:
                page, err = page_for(b, url, query)
                if page is None:
                    rows.append((name, None, err))
                    continue
                label = page.evaluate("window.mswDebug.backend") + f" x{page.evaluate('window.mswDebug.threads')}"
                rows.append((name, page.evaluate(JS, [n, 2, False]), label))
                if "WASM" in name:
                    rows.append((name + " hover", page.evaluate(JS, [n, 2, True]), "fast decoder, 1 thread"))
                page.close()
        on_device(url, args)
    print("A visitor on this 2-core machine (headless Chromium, server on the same machine):")
    for link, who, took, mb, state in visits:
        print(
            f"  {link:20s} {who:12s} page load -> first painted mask {took:5.1f} s, {mb:5.1f} MB over the wire "
            f"(decoder {state} when the image was ready)"
        )
    print(
        f"  hover sweep (40 moves, 25 ms apart): {sweep['previews']} previews, main-thread long tasks "
        f"{sweep['count']} (longest {sweep['longest']:.0f} ms; a task over 50 ms is 'long')"
    )
    print(
        f"  click -> painted mask with a hover preview in flight (browser, WASM): p50 {clicks['p50']:.0f} ms, "
        f"p95 {clicks['p95']:.0f} ms"
    )
    print(
        f"  click -> new canvas, server decoding (baseline, same run):            p50 {server_clicks['p50']:.0f} ms, "
        f"p95 {server_clicks['p95']:.0f} ms  (browser p50 / server p50 = {clicks['p50'] / server_clicks['p50']:.2f})"
    )
    print(
        f"median decode over {args.n} prompts (WebGPU: {args.webgpu_n}); decode = session.run in the worker, "
        "round trip = request to reply on the page"
    )
    print(f"server onnxruntime (native, same decoder graph): {server_ms:.1f} ms")
    for name, r, label in rows:
        if r is None:
            print(f"{name:16s} unavailable: {label}")
            continue
        print(
            f"{name:16s} {label:24s} decode median {r['median']:.1f} ms, min {r['min']:.1f} ms "
            f"({r['median'] / server_ms:.1f}x server), round trip {r['roundTrip']:.1f} ms"
        )


if __name__ == "__main__":
    main()
