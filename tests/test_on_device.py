"""On-device mode in Debian's Chromium: the image is opened, resized, encoded and segmented in the
page, kept objects and downloads are built there, and nothing about the image goes over the
network. Parity against the fixture's official outputs (embedding, resized pixels, masks)."""

import base64
import json

import numpy as np
import pytest
from PIL import Image

from conftest import MOBILESAM_FIXTURE, REPO_ROOT, assert_masks_close, case_prompts
from server_utils import WEBGPU_ARGS, browser, fixture_args, running_app, screenshot_on_failure, serve_folder

IMAGE = MOBILESAM_FIXTURE / "image.png"
WASM_DEVICE = "?msw_device=1&msw_backend=wasm"
# The fixture's float32 tolerance. Measured here (onnxruntime-web 1.30.0) against the official
# embedding: WASM (2 threads) max abs 8.8e-6, relative L2 1.1e-6; WebGPU on SwiftShader 1.45e-5,
# 1.5e-6. Their kernels sum in other orders than torch's CPU kernels; the bound still holds.
EMBEDDING_MAX_ABS = 1e-4
EMBEDDING_REL_L2 = 1e-5


@pytest.fixture(scope="module")
def app_url(sam_weights_path, shared_onnx_cache):
    with running_app(fixture_args(), {"MOBILESAM_ONNX_CACHE": shared_onnx_cache}) as url:
        yield url


# Records whether the server's upload box was ever on screen (checked every animation frame).
UPLOAD_WATCH = """(() => { window.__uploadShown = false;
  const look = () => { const u = document.querySelector('#msw-upload');
    if (u && u.getClientRects().length) window.__uploadShown = true; requestAnimationFrame(look); };
  requestAnimationFrame(look); })()"""


def open_device_page(b, url, query=WASM_DEVICE, want=None):
    page = b.new_page(viewport={"width": 1366, "height": 900})
    sent = []  # every request the page makes, with its body
    page.on("request", lambda r: sent.append((r.method, r.url, r.post_data_buffer or b"")))
    page.add_init_script(UPLOAD_WATCH)
    page.goto(url + query)
    page.wait_for_function("window.mswDebug && (window.mswDebug.ready || window.mswDebug.error)", timeout=180_000)
    assert page.evaluate("window.mswDebug.error || null") is None
    page.wait_for_function("window.mswDebug.device === true", timeout=30_000)
    if want:
        page.evaluate("(w) => { window.mswDebug.encodeWant = w; }", want)
    return page, sent


def open_local(page, path=IMAGE, timeout=240_000):
    page.locator(".msw-open input[type=file]").set_input_files(str(path))
    page.wait_for_function("window.mswDebug.imageReady", timeout=timeout)


def encoded_array(page, key, dtype):
    b64 = page.evaluate(
        """(k) => { const u = new Uint8Array(window.mswDebug.lastEncode[k]); let s = '';
                    for (let i = 0; i < u.length; i += 0x8000) s += String.fromCharCode.apply(null, u.subarray(i, i + 0x8000));
                    return btoa(s); }""",
        key,
    )
    return np.frombuffer(base64.b64decode(b64), dtype)


def assert_embedding_official(page, cases, label):
    """The page's last float32 embedding against the official one, within EMBEDDING_* bounds."""
    emb = encoded_array(page, "f32", np.float32).reshape(1, 256, 64, 64)
    ref = cases["embedding"]
    max_abs = float(np.abs(emb - ref).max())
    rel_l2 = float(np.linalg.norm(emb - ref) / np.linalg.norm(ref))
    print(f"{label} embedding vs official: max abs {max_abs:.3g}, relative L2 {rel_l2:.3g}")
    assert max_abs <= EMBEDDING_MAX_ABS and rel_l2 <= EMBEDDING_REL_L2, label


def click_at(page, fx, fy, n):
    box = page.locator(".msw-overlay").bounding_box()
    page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
    page.wait_for_function(f"window.mswDebug.clicks.length >= {n}", timeout=60_000)


def test_image_never_leaves_the_page(app_url):
    """Open, click, keep, click, export: the downloads are built in the page, and the network log
    shows no request that could carry the image, its embedding or a mask."""
    image_bytes = IMAGE.read_bytes()
    with browser() as b:
        page, sent = open_device_page(b, app_url)
        with screenshot_on_failure(page, "on_device_privacy"):
            assert not page.locator("#msw-upload").is_visible()  # the server's upload is hidden,
            assert page.evaluate("window.__uploadShown") is False  # and never was, not even while loading
            assert page.locator(".msw-device input").is_checked()
            start = len(sent)
            open_local(page)
            assert "encoded here in" in page.locator(".msw-info").inner_text()
            click_at(page, 0.4, 0.5, 1)
            page.locator("[data-act=keep]").click()
            click_at(page, 0.7, 0.3, 2)
            page.locator("[data-act=export]").click()
            page.wait_for_function("window.mswDebug.downloads", timeout=60_000)
            names = page.evaluate("window.mswDebug.downloads")
            assert names == ["coco_image.json", "labels_image.png", "01_mask_image.png", "01_cutout_image.png"] + [
                "02_mask_image.png",
                "02_cutout_image.png",
            ]
            coco = json.loads(base64.b64decode(page.evaluate("window.mswDebug.downloadBytes('coco_image.json')")))
            assert coco["images"][0]["width"] == 799 and coco["images"][0]["height"] == 800
            assert len(coco["annotations"]) == 2
            from pycocotools import mask as mask_utils

            for ann in coco["annotations"]:
                m = mask_utils.decode({"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"]})
                assert m.shape == (800, 799) and int(m.sum()) == ann["area"] > 0
            # the network: after the page loaded, nothing but GETs of the page's own files (a
            # multipart upload's body is not visible here, so any other method fails the test)
            during = sent[start:]
            assert [(m, u) for m, u, _ in during if m != "GET"] == []
            for _, url, body in during:
                assert not body and "/upload" not in url and "/msw/embedding/" not in url, url
            assert not any(url.endswith("image.png") for _, url, _ in sent)
            assert image_bytes  # the file the page opened from disk


def test_resize_embedding_and_masks_match_official(app_url, sam_cases, sam_image, tmp_path):
    """WASM in headless Chromium against the official code's outputs (parity fixture); then, in
    the same page, images decoded by Chromium and by the server's reader (PIL), then resized: the
    bytes the encoder sees on this device and on the server (the worker only resizes those:
    encodeWant's resizeOnly)."""
    from mobilesam_web.engine.transforms import ResizeLongestSide

    with browser() as b:
        page, _ = open_device_page(b, app_url, want={"f32": True, "rgb": True})
        with screenshot_on_failure(page, "on_device_parity"):
            open_local(page)
            h, w = page.evaluate("window.mswDebug.lastEncode.inputSize")
            assert (h, w) == tuple(int(v) for v in sam_cases["input_size"])
            rgb = encoded_array(page, "rgb", np.uint8).reshape(h, w, 3)
            assert np.array_equal(rgb, ResizeLongestSide(1024).apply_image(sam_image))  # byte for byte
            assert_embedding_official(page, sam_cases, "browser WASM")
            for c in "abcdf":
                kw = case_prompts(sam_cases, c)
                points = []
                if "point_coords" in kw:
                    points = [
                        [float(x), float(y), int(lab)] for (x, y), lab in zip(kw["point_coords"], kw["point_labels"])
                    ]
                box = [float(v) for v in kw["box"]] if "box" in kw else None
                res = page.evaluate("([p, b]) => window.mswDebug.decodeFull(p, b)", [points, box])
                ref_masks = sam_cases[f"{c}_masks"]
                ours = np.stack([rle_rows(counts, *ref_masks.shape[1:]) for counts in res["masks"]])
                assert_masks_close(ours, ref_masks)
                assert np.abs(np.array(res["iou"]) - sam_cases[f"{c}_iou_predictions"]).max() <= 1e-4, c
            assert_decoded_pixels_equal_the_servers(page, tmp_path)


def rle_rows(counts, h, w):
    """The widget's run lengths are row-major, starting with zeros."""
    flat = np.zeros(h * w, bool)
    pos, val = 0, False
    for n in counts:
        flat[pos : pos + n] = val
        pos += n
        val = not val
    return flat.reshape(h, w)


def transparent_png(tmp_path):
    """A PNG with every alpha level (and fully transparent corners)."""
    rng = np.random.default_rng(5)
    rgba = rng.integers(0, 256, (300, 420, 4), dtype=np.uint8)
    rgba[:40, :40, 3] = 0
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    return path


def assert_decoded_pixels_equal_the_servers(page, tmp_path):
    from mobilesam_web.data.image_io import read_image
    from mobilesam_web.engine.transforms import ResizeLongestSide
    from mobilesam_web.paths import examples_dir

    cases = [
        (examples_dir() / "coffee.jpg", 0),  # libjpeg-turbo decodes in both (same IDCT and upsampling): equal
        (transparent_png(tmp_path), 1),  # on white: the canvas blends premultiplied 8-bit values, PIL exactly
    ]
    page.evaluate("() => { window.mswDebug.encodeWant = {rgb: true, resizeOnly: true}; }")
    for path, max_diff in cases:
        page.evaluate("() => { window.mswDebug.lastEncode = null; }")
        page.locator(".msw-open input[type=file]").set_input_files(str(path))
        page.wait_for_function("window.mswDebug.lastEncode", timeout=240_000)
        h, w = page.evaluate("window.mswDebug.lastEncode.inputSize")
        ours = encoded_array(page, "rgb", np.uint8).reshape(h, w, 3).astype(int)
        server = ResizeLongestSide(1024).apply_image(read_image(str(path)).image).astype(int)
        diff = np.abs(ours - server)
        print(
            f"{path.name}: browser vs server resized pixels: {int((diff > 0).sum())} of {diff.size} differ, max {diff.max()}"
        )
        assert diff.max() <= max_diff, path.name


def test_races_second_image_and_switching_mid_encode(app_url, tmp_path):
    """A file that is no image is refused and the page goes on. Two images opened back to back:
    the second wins. A third dropped on the page (which must not navigate away to it), and the
    server's mode switched on while it encodes, and off: the image, its embedding and the kept
    objects are all still there."""
    from mobilesam_web.paths import examples_dir

    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is not an image")
    with browser() as b:
        page, _ = open_device_page(b, app_url)
        with screenshot_on_failure(page, "on_device_races"):
            page.locator(".msw-open input[type=file]").set_input_files(str(bad))
            page.wait_for_function("document.querySelector('.msw-live').textContent.includes('cannot read')")
            assert page.evaluate("window.mswDebug.state().image") == "none"
            page.locator(".msw-open input[type=file]").set_input_files(str(examples_dir() / "coffee.jpg"))
            page.locator(".msw-open input[type=file]").set_input_files(str(IMAGE))
            page.wait_for_function("window.mswDebug.imageReady", timeout=240_000)
            assert page.evaluate("window.mswDebug.lastEncode.inputSize") == [1024, 1023]  # the fixture image
            click_at(page, 0.4, 0.5, 1)
            page.locator("[data-act=keep]").click()
            # a new image dropped anywhere on the page, and the server's mode while it encodes
            page.evaluate(
                """async () => { const blob = await (await fetch('/msw/examples/chelsea.jpg')).blob();
                const dt = new DataTransfer(); dt.items.add(new File([blob], 'chelsea.jpg', {type: 'image/jpeg'}));
                document.body.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true})); }"""
            )
            page.wait_for_function("window.mswDebug.state().image === 'encoding'")
            toggle = page.locator(".msw-device input")
            toggle.uncheck()
            assert page.locator("#msw-upload").is_visible()
            page.wait_for_timeout(300)
            toggle.check()
            page.wait_for_function("window.mswDebug.imageReady", timeout=240_000)
            assert page.evaluate("document.querySelector('.msw-img').naturalWidth") == 451  # chelsea.jpg
            click_at(page, 0.5, 0.5, 2)
            page.locator("[data-act=keep]").click()
            toggle.uncheck()
            toggle.check()
            page.wait_for_function("window.mswDebug.imageReady && window.mswDebug.state().kept === 1")
            click_at(page, 0.3, 0.3, 3)  # decodes after the round trip (the embedding was sent again)
            page.locator("[data-act=export]").click()
            page.wait_for_function("window.mswDebug.downloads && window.mswDebug.downloads.length === 6")
            assert page.evaluate("window.mswDebug.downloads")[0] == "coco_chelsea.json"


def test_offered_off_by_default_without_a_gpu_and_switching_keeps_server_work(app_url):
    """This machine has no hardware WebGPU adapter: the mode is offered, off by default; turning
    it on and off again brings back the image already on the server, untouched."""
    with browser() as b:
        page = b.new_page(viewport={"width": 1366, "height": 900})
        page.goto(app_url)
        page.wait_for_function("window.mswDebug && window.mswDebug.ready", timeout=180_000)
        with screenshot_on_failure(page, "on_device_toggle"):
            page.wait_for_function("!document.querySelector('.msw-device').hidden", timeout=30_000)
            toggle = page.locator(".msw-device input")
            assert not toggle.is_checked() and page.evaluate("window.mswDebug.state().device") is False
            assert "one-time download" in page.locator(".msw-device-note").inner_text()
            page.locator("#msw-upload input[type=file]").set_input_files(str(IMAGE))
            page.wait_for_function("window.mswDebug.imageReady", timeout=120_000)
            server_src = page.evaluate("document.querySelector('.msw-img').src")
            toggle.check()
            page.wait_for_function("window.mswDebug.state().device && window.mswDebug.state().image === 'none'")
            assert not page.locator("#msw-upload").is_visible()
            assert page.locator("[data-act=open]").is_visible()
            toggle.uncheck()
            page.wait_for_function("window.mswDebug.imageReady", timeout=60_000)
            assert page.locator("#msw-upload").is_visible()
            assert page.evaluate("document.querySelector('.msw-img').src") == server_src
            page.reload()  # the choice is remembered
            page.wait_for_function("window.mswDebug && window.mswDebug.ready", timeout=180_000)
            page.wait_for_function("!document.querySelector('.msw-device').hidden", timeout=30_000)
            assert not page.locator(".msw-device input").is_checked()


SIDE = 128


def test_webgpu_runs_the_encoder_graph(sam_model, tmp_path):
    """The encoder on WebGPU (Chromium's software adapter, SwiftShader): the fixture's TinyViT,
    exported as our exporter exports it, at a 128 px input -- the same ops, attention windows and
    padding as at 1024 px (the attention stages' sides, 16/8/8, are padded up to whole windows, as
    128/64/64 are) for 1/64 of the work (alone on 2 cores: 1024 px 8 minutes, 256 px 64 s, 128 px
    29 s) -- equals torch within the float32 embedding bounds. (The page's own on-device path,
    resize to masks, is checked on WASM above; its WebGPU decoder in test_browser_decoding.)"""
    import torch

    from mobilesam_web.engine.modeling.tiny_vit import TinyViT
    from mobilesam_web.engine.onnx.exporters import _export

    encoder = TinyViT(img_size=SIDE)
    missing, unexpected = encoder.load_state_dict(sam_model.image_encoder.state_dict(), strict=False)
    assert not unexpected and all("attention_bias_idxs" in k for k in missing), (missing, unexpected)
    x = torch.randn(1, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = encoder.eval()(x).numpy()
    _export(encoder, (x,), tmp_path / "encoder_small.onnx", ["x"], ["y"], {}, {"graph": "test"})
    blobs = {
        "/__blank.html": b"<!doctype html><title>webgpu</title>",
        "/encoder_small.onnx": (tmp_path / "encoder_small.onnx").read_bytes(),
    }
    with serve_folder(REPO_ROOT / "static", blobs=blobs) as url, browser(WEBGPU_ARGS) as b:
        page = b.new_page()
        page.goto(url + "__blank.html")
        got = page.evaluate(WEBGPU_RUN, [x.flatten().tolist(), SIDE])
    assert got["ep"] == "webgpu", got["ep"]
    y = np.array(got["y"], np.float32).reshape(ref.shape)
    max_abs = float(np.abs(y - ref).max())
    rel_l2 = float(np.linalg.norm(y - ref) / np.linalg.norm(ref))
    print(f"WebGPU (SwiftShader) {SIDE} px encoder vs torch: max abs {max_abs:.3g}, relative L2 {rel_l2:.3g}")
    assert max_abs <= EMBEDDING_MAX_ABS and rel_l2 <= EMBEDDING_REL_L2


WEBGPU_RUN = """async ([x, side]) => {
  const dist = '/node_modules/onnxruntime-web/dist/';
  const ort = await import(dist + 'ort.webgpu.min.mjs');
  ort.env.wasm.wasmPaths = dist;
  ort.env.wasm.numThreads = 1;
  if (!navigator.gpu || !(await navigator.gpu.requestAdapter())) return {ep: 'no WebGPU adapter'};
  const bytes = new Uint8Array(await (await fetch('/encoder_small.onnx')).arrayBuffer());
  const s = await ort.InferenceSession.create(bytes, {executionProviders: ['webgpu']});
  const r = await s.run({x: new ort.Tensor('float32', Float32Array.from(x), [1, 3, side, side])});
  return {ep: 'webgpu', y: Array.from(r.y.data)};
}"""
