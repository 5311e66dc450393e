"""In-browser decode latency: headless Chromium (Debian's) driving the app's canvas widget.

    python bench/bench_browser.py [--n 60] [--webgpu-n 5]

Starts the app on the parity-fixture weights, then in one run measures the median time of one
decode call (onnxruntime-web session.run + reading the outputs) over N prompts for
WASM with 1 thread, WASM with threads (cross-origin isolated page), and WebGPU when the browser
exposes an adapter (here: SwiftShader, a CPU emulation, so expect it to be slow). Also times a
full hover (decode + SAM's exact upscaling + drawing) and, as the baseline in the same run, the
server's ONNX Runtime decoder. "hover" rows: the fast decoder the page uses for hover previews
(tanh GELU, float16 weights); clicks use the exact one.
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

from server_utils import browser, running_app  # noqa: E402

JS = """async ([n, warm, fast]) => {
  const d = window.mswDebug.decoder, ts = [];
  if (fast) { await d.fastReady; if (!d.fastSession) return null; }
  for (let i = 0; i < warm + n; i++) {
    const x = 100 + (i * 37) % 800, y = 100 + (i * 53) % 800;
    const t = performance.now();
    await d.decode([[x, y, 1]], null, null, {fast});
    if (i >= warm) ts.push(performance.now() - t);
  }
  ts.sort((a, b) => a - b);
  return {median: ts[Math.floor(ts.length / 2)], min: ts[0], label: d.label};
}"""

HOVER_JS = """async (n) => {
  const c = document.querySelector('.msw-overlay'), r = c.getBoundingClientRect(), ts = [];
  for (let i = 0; i < n; i++) {
    const before = window.mswDebug.hoverCount || 0, t = performance.now();
    c.dispatchEvent(new PointerEvent('pointermove', {clientX: r.left + r.width * (0.2 + 0.6 * (i % 10) / 10),
      clientY: r.top + r.height * 0.5, pointerType: 'mouse', bubbles: true}));
    while ((window.mswDebug.hoverCount || 0) === before) await new Promise((ok) => setTimeout(ok, 1));
    ts.push(performance.now() - t);
  }
  ts.sort((a, b) => a - b);
  return ts[Math.floor(ts.length / 2)];
}"""


def page_for(b, url, query):
    page = b.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url + query)
    page.wait_for_function("window.mswDebug && (window.mswDebug.ready || window.mswDebug.error)", timeout=300_000)
    if page.evaluate("window.mswDebug.error || null"):
        return None, page.evaluate("window.mswDebug.error")
    page.locator("#msw-upload input[type=file]").set_input_files(str(FIX / "image.png"))
    page.wait_for_function("window.mswDebug.decoder.embedding", timeout=120_000)
    return page, None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--webgpu-n", type=int, default=5)
    args = ap.parse_args()

    from mobilesam_web import load_predictor

    cache = "/tmp/mobilesam-bench-onnx"
    server = load_predictor(str(FIX / "weights_fp16.pt"), cache_dir=cache)
    server.set_image(np.array(Image.open(FIX / "image.png").convert("RGB")))
    times = []
    for i in range(args.n):
        t = time.perf_counter()
        server.engine.decode(server.features, np.array([[[300.0 + i, 400.0], [0, 0]]], np.float32),
                             np.array([[1.0, -1.0]], np.float32), None)
        times.append(time.perf_counter() - t)
    server_ms = statistics.median(times) * 1e3

    rows = []
    with running_app(["--checkpoint", str(FIX / "weights_fp16.pt")], {"MOBILESAM_ONNX_CACHE": cache}) as url:
        with browser(["--enable-unsafe-webgpu"]) as b:
            for name, query, n in [("WASM, 1 thread", "?msw_backend=wasm&msw_threads=1", args.n),
                                   ("WASM, threads", "?msw_backend=wasm", args.n),
                                   ("WebGPU", "?msw_backend=webgpu", args.webgpu_n)]:
                page, err = page_for(b, url, query)
                if page is None:
                    rows.append((name, None, None, err))
                    continue
                r = page.evaluate(JS, [n, 2, False])
                fast = page.evaluate(JS, [n, 2, True]) if "WASM" in name else None
                hover = page.evaluate(HOVER_JS, 10) if "WASM" in name else None
                rows.append((name, r, hover, r["label"]))
                if fast:
                    rows.append((name + " hover", fast, None, "fast decoder"))
                page.close()
    print(f"median decode over {args.n} prompts (WebGPU: {args.webgpu_n}), 2-core machine, Chromium headless")
    print(f"server onnxruntime (native, same decoder graph): {server_ms:.1f} ms")
    for name, r, hover, label in rows:
        if r is None:
            print(f"{name:16s} unavailable: {label}")
            continue
        h = f", full hover (fast decode + upscale + draw) {hover:.1f} ms" if hover else ""
        print(f"{name:16s} {label:18s} median {r['median']:.1f} ms, min {r['min']:.1f} ms "
              f"({r['median'] / server_ms:.1f}x server){h}")


if __name__ == "__main__":
    main()
