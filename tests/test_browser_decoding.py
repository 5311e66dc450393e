"""In-browser decoding (onnxruntime-web in Debian's Chromium) against the server decoder."""

import numpy as np
import pytest

from conftest import MOBILESAM_FIXTURE
from server_utils import WEBGPU_ARGS, browser, fixture_args, running_app, screenshot_on_failure


@pytest.fixture(scope="module")
def onnx_cache(shared_onnx_cache):
    return shared_onnx_cache


@pytest.fixture(scope="module")
def app_url(sam_weights_path, onnx_cache):
    with running_app(
        fixture_args(detector=True),
        {"MOBILESAM_ONNX_CACHE": onnx_cache},
    ) as url:
        yield url


@pytest.fixture(scope="module")
def server_predictor(sam_weights_path, onnx_cache, sam_image):
    from mobilesam_web import load_predictor

    p = load_predictor(sam_weights_path, cache_dir=onnx_cache)
    p.set_image(sam_image)
    return p


def open_page(b, url, query="", ctx=None):
    """The page with the fixture image uploaded; in `ctx` if given (a visitor's browser profile)."""
    page = ctx.new_page() if ctx else b.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url + query)
    page.wait_for_function("window.mswDebug && (window.mswDebug.ready || window.mswDebug.error)", timeout=180_000)
    err = page.evaluate("window.mswDebug.error || null")
    assert err is None, f"in-browser decoder failed: {err}"
    info = page.locator(".msw-info").inner_text()
    page.locator("#msw-upload input[type=file]").set_input_files(str(MOBILESAM_FIXTURE / "image.png"))
    page.wait_for_function(
        "window.mswDebug.imageReady && document.querySelector('.msw-img').naturalWidth > 0", timeout=90_000
    )
    page.info_when_ready = info  # the status line before the upload (what the decoder's download was)
    return page


def rle_to_mask(counts, h, w):
    """The widget's run lengths are row-major: a (w, h) column-major RLE, transposed."""
    from mobilesam_web.data.rle import rle_to_mask as coco_rle_to_mask

    return coco_rle_to_mask({"size": [w, h], "counts": counts}).T


PROMPTS = {  # image-pixel prompts: points [x, y, label], box [x0, y0, x1, y1]
    "point_multimask": ([[320.0, 400.0, 1]], None),
    "points_with_negative": ([[320.0, 400.0, 1], [600.5, 210.0, 1], [150.0, 700.0, 0]], None),
    "box": ([], [120.0, 90.0, 610.0, 580.0]),
    "box_and_negative": ([[300.0, 300.0, 0]], [50.0, 60.0, 700.0, 760.0]),
}


def assert_browser_equals_server(page, predictor, names):
    for name in names:
        points, box = PROMPTS[name]
        res = page.evaluate("([p, b]) => window.mswDebug.decodeFull(p, b)", [points, box])
        pts = np.array([p[:2] for p in points]) if points else None
        lbl = np.array([p[2] for p in points]) if points else None
        multimask = len(points) == 1 and box is None
        masks, iou, _ = predictor.predict(pts, lbl, None if box is None else np.array(box), multimask_output=multimask)
        assert len(res["masks"]) == len(masks), name
        assert np.abs(np.array(res["iou"]) - iou).max() <= 2e-3, name  # float16 embedding on the wire
        h, w = masks.shape[1:]
        for counts, ref in zip(res["masks"], masks):
            ours = rle_to_mask(counts, h, w)
            differ = int((ours != ref).sum())
            iou_m = (ours & ref).sum() / max((ours | ref).sum(), 1)
            assert differ <= 1e-4 * h * w and iou_m >= 0.999, f"{name}: {differ} px differ, IoU {iou_m:.5f}"


def assert_check_decode_equals_server(page, predictor):
    """The decode a worker runs before it says ready (a zero embedding, one point at the centre of
    the 1024 frame) against onnxruntime on the server's copy of the same graph: its 4 scores and a
    sample of its 4 low-res masks (every 4th row and column, as msw_worker.js's checkSample)."""
    import onnxruntime as ort

    check = page.evaluate("window.mswDebug.readyCheck")
    sess = ort.InferenceSession(str(predictor.engine.paths["decoder_lowres"]), providers=["CPUExecutionProvider"])
    feeds = {
        "image_embeddings": np.zeros((1, 256, 64, 64), np.float32),
        "point_coords": np.array([[[512, 512], [0, 0]]], np.float32),
        "point_labels": np.array([[1, -1]], np.float32),
        "mask_input": np.zeros((1, 1, 256, 256), np.float32),
        "has_mask_input": np.zeros(1, np.float32),
    }
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    ref_low = out["low_res_masks"][0, :, ::4, ::4]
    low = np.array(check["low"], np.float32).reshape(ref_low.shape)
    # measured: scores 7e-7 (WASM) and 3e-6 (WebGPU on SwiftShader) apart, logits 6e-6 and 1.3e-5
    assert np.abs(np.array(check["iou"]) - out["iou_predictions"][0]).max() <= 1e-4
    assert np.abs(low - ref_low).max() <= 1e-3, np.abs(low - ref_low).max()
    assert ((low > 0) != (ref_low > 0)).mean() <= 1e-3


def test_wasm_matches_server_hover_click_keep_and_second_visit(app_url, server_predictor):
    """WASM decodes equal the server's; hovering previews a mask, a click gives 3 candidates and
    keep keeps one; the same visitor's second visit takes the decoder from the browser's cache."""
    with browser() as b:
        ctx = b.new_context(viewport={"width": 1400, "height": 1000})
        page = open_page(b, app_url, "?msw_backend=wasm", ctx=ctx)
        with screenshot_on_failure(page, "browser_wasm"):
            assert "(downloaded)" in page.info_when_ready, page.info_when_ready
            assert page.evaluate("self.crossOriginIsolated") is True  # COOP/COEP served
            assert page.evaluate("window.mswDebug.threads") >= 2
            assert "WASM" in page.locator(".msw-info").inner_text()
            assert_check_decode_equals_server(page, server_predictor)
            assert_browser_equals_server(page, server_predictor, list(PROMPTS))

            ov = page.locator(".msw-overlay")
            box = ov.bounding_box()
            page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.45)
            page.wait_for_function("(window.mswDebug.hoverCount || 0) >= 1", timeout=30_000)
            painted = page.evaluate("""() => { const c = document.querySelector('.msw-overlay');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
                for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n / (d.length / 4); }""")
            assert painted > 0.01, "hovering drew no mask"
            page.mouse.click(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.5)
            page.wait_for_function("document.querySelectorAll('.msw-cands button').length === 3", timeout=30_000)
            page.locator(".msw-root [data-act=keep]").click()
            page.wait_for_function(
                "document.querySelector('#msw-status').innerText.includes('1 object(s) kept')", timeout=30_000
            )
            assert page.evaluate("document.querySelectorAll('.msw-cands button').length") == 0
        page.close()
        again = ctx.new_page()
        again.goto(app_url + "?msw_backend=wasm")
        again.wait_for_function("window.mswDebug && window.mswDebug.ready", timeout=120_000)
        assert "(cached)" in again.locator(".msw-info").inner_text()


def test_web_decoder_download(app_url, server_predictor):
    """The float16-weight decoder: half the bytes; on the fixture (whose weights are float16
    exact) it must still match the server."""
    import json
    import urllib.request

    cfg = json.load(urllib.request.urlopen(app_url + "msw/config.json"))
    assert cfg["decoder_web"]["bytes"] < 0.55 * cfg["decoder"]["bytes"]
    with browser() as b:
        page = open_page(b, app_url, "?msw_backend=wasm&msw_decoder=decoder_web")
        with screenshot_on_failure(page, "browser_web_decoder"):
            mb = cfg["decoder_web"]["bytes"] / 2**20
            assert f"decoder {mb:.1f} MB" in page.locator(".msw-info").inner_text()
            assert_browser_equals_server(page, server_predictor, ["points_with_negative", "box"])


def test_webgpu_matches_server(app_url, server_predictor):
    """Chromium's software WebGPU adapter (SwiftShader): a real WebGPU run, but each decode takes
    ~18 s of the suite's two cores. The decode checked is the one the worker runs before it says
    ready (the same graph, kernels and read-back as a click's); the WASM test above checks that
    check against the server too, and clicks on real images."""
    with browser(WEBGPU_ARGS) as b:
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        with screenshot_on_failure(page, "browser_webgpu"):
            page.goto(app_url + "?msw_backend=webgpu")
            page.wait_for_function(
                "window.mswDebug && (window.mswDebug.ready || window.mswDebug.error)", timeout=180_000
            )
            assert page.evaluate("window.mswDebug.error || null") is None
            assert page.evaluate("window.mswDebug.backend") == "webgpu"
            assert "WebGPU" in page.locator(".msw-info").inner_text()
            assert_check_decode_equals_server(page, server_predictor)


def test_works_without_cross_origin_isolation(sam_weights_path, onnx_cache, server_predictor):
    with running_app(
        fixture_args(),
        {"MOBILESAM_ONNX_CACHE": onnx_cache, "MOBILESAM_CROSS_ORIGIN_ISOLATION": "0"},
    ) as url:
        with browser() as b:
            page = open_page(b, url, "?msw_backend=wasm")
            with screenshot_on_failure(page, "browser_single_thread"):
                assert page.evaluate("self.crossOriginIsolated") is False
                assert page.evaluate("window.mswDebug.threads") == 1
                assert "1 thread" in page.locator(".msw-info").inner_text()
                assert_browser_equals_server(page, server_predictor, ["point_multimask"])


def test_falls_back_to_server_decoding(app_url):
    with browser() as b:
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        with screenshot_on_failure(page, "browser_fallback"):
            page.goto(app_url + "?msw_backend=no-such-backend")
            page.wait_for_function("window.mswDebug && window.mswDebug.error", timeout=60_000)
            page.wait_for_selector("#msw-canvas", state="visible", timeout=30_000)
            assert "decoding on the server" in page.locator("#msw-status").inner_text()
            page.locator("#msw-upload input[type=file]").set_input_files(str(MOBILESAM_FIXTURE / "image.png"))
            page.wait_for_function("document.querySelector('#msw-status').innerText.includes('×')", timeout=90_000)
            img = page.locator("#msw-canvas img")
            bb = img.bounding_box()
            img.click(position={"x": bb["width"] * 0.4, "y": bb["height"] * 0.5})
            page.wait_for_function(
                "document.querySelector('#msw-status').innerText.includes('decoded')", timeout=60_000
            )


def test_ort_files_match_pinned_sri():
    from mobilesam_web.ui.web import ORT_LOCAL, ORT_SRI, ort_sri_matches_local

    assert ORT_LOCAL.is_dir(), "run `npm ci --prefix static` (bash scripts/test.sh does)"
    assert ort_sri_matches_local() == {name: True for name in ORT_SRI}
