"""The real app over HTTP: gradio_client API, missing weights, real-browser use, session isolation."""

import time

import numpy as np
import pytest
from gradio_client import Client, handle_file

from conftest import MOBILESAM_FIXTURE, OBJECTAWARE_FIXTURE, assert_masks_close
from server_utils import browser, fixture_args, running_app, screenshot_on_failure


@pytest.fixture(scope="module")
def app_url(shared_onnx_cache):
    """The app in server-decoding mode (in-browser decoding is tested in test_browser_decoding)."""
    with running_app(
        fixture_args(detector=True),
        {"MOBILESAM_ONNX_CACHE": shared_onnx_cache, "MOBILESAM_BROWSER_DECODING": "0"},
    ) as url:
        yield url


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def rle_mask(rle):
    from pycocotools import mask as mask_utils

    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def test_api_segment_matches_engine(client, sam_cases):
    ((x, y),) = sam_cases["a_point_coords"]
    r = client.predict(
        handle_file(str(MOBILESAM_FIXTURE / "image.png")), [[float(x), float(y)]], [1], None, True, api_name="/segment"
    )
    assert r["size"] == [800, 799] and len(r["masks"]) == 3
    assert np.abs(np.array(r["scores"]) - sam_cases["a_iou_predictions"]).max() <= 1e-5
    assert_masks_close(np.stack([rle_mask(m) for m in r["masks"]]), sam_cases["a_masks"])
    r = client.predict(
        handle_file(str(MOBILESAM_FIXTURE / "image.png")),
        None,
        None,
        sam_cases["c_box"].tolist(),
        False,
        api_name="/segment",
    )
    assert_masks_close(rle_mask(r["masks"][0])[None], sam_cases["c_masks"])


def test_api_everything(client):
    r = client.predict(handle_file(str(OBJECTAWARE_FIXTURE / "image.png")), 0.4, 0.9, 1024, api_name="/everything")
    assert r["images"][0]["width"] == 900 and len(r["annotations"]) > 0
    assert {"segmentation", "bbox", "area", "polygons", "prompt_box"} <= set(r["annotations"][0])
    assert r["timings"]["boxes"] == 137
    assert "encode_cached" not in r["timings"]  # nothing about other callers' images
    for ann in r["annotations"]:  # COCO bboxes contain their masks, tightly
        ys, xs = np.nonzero(rle_mask(ann["segmentation"]))
        x, y, w, h = ann["bbox"]
        assert (x, y, x + w - 1, y + h - 1) == (xs.min(), ys.min(), xs.max(), ys.max())


def _example_events(raw):
    """The examples' load events: the segment tab's, then the everything tab's."""
    return [i for i, d in raw.dependencies() if str(d["api_name"]).startswith("load_example")]


def test_examples_load_into_the_upload_folder_and_run(app_url):
    """Clicking an example sends only its index; the handler gets Gradio's copy in the upload
    folder, which passes the "only uploaded files" rule, on both tabs."""
    from hostile_client import RawGradio, file_data

    raw = RawGradio(app_url)
    seg_load, ev_load = _example_events(raw)
    names = {d["api_name"]: i for i, d in raw.dependencies()}
    loaded = raw.event(seg_load, [0], session="examples-1")
    assert loaded["success"], loaded
    value = loaded["output"][0]["value"]
    assert value["path"].endswith("astronaut.jpg") and "/examples/" not in value["path"]
    up = raw.event(names["on_upload"], [value, True, False], session="examples-1", timeout=120)  # server mode
    assert up["success"], up
    assert "512×512" in up["output"][3] and "ready — click an object" in up["output"][3]
    ev_value = raw.event(ev_load, [1], session="examples-2")["output"][0]["value"]
    assert ev_value["path"].endswith("coffee.jpg")
    ev = raw.event(
        names["on_everything_1"], [ev_value, 0.4, 0.9, 1024, 0, 0, False, None], session="examples-2", timeout=180
    )
    assert ev["success"], ev
    assert "in all" in ev["output"][1] and "coco_coffee.json" in str(ev["output"][2])
    # the example's own file (outside the upload folder) named by a client is still refused
    from mobilesam_web.ui.examples import EXAMPLES_DIR

    refused = raw.event(names["on_upload"], [file_data(str(EXAMPLES_DIR / "astronaut.jpg")), True, True])
    assert not refused["success"] and "not uploaded" in refused["error"]
    for bad in (99, "x", {"path": "/etc/passwd"}):
        res = raw.event(seg_load, [bad])
        assert not res["success"] and "Traceback" not in res["error"], res


def test_api_errors_are_clear(client, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(Exception, match="cannot use this image"):
        client.predict(handle_file(str(text)), [[1, 1]], [1], None, False, api_name="/segment")
    img = handle_file(str(MOBILESAM_FIXTURE / "image.png"))
    with pytest.raises(Exception, match="outside"):
        client.predict(img, [[5000, 1]], [1], None, False, api_name="/segment")
    with pytest.raises(Exception, match="at least one point or a box"):
        client.predict(img, None, None, None, False, api_name="/segment")
    with pytest.raises(Exception, match="x2 >= x1"):
        client.predict(img, None, None, [50, 50, 10, 60], False, api_name="/segment")
    # The server keeps serving after errors.
    assert client.predict(img, [[10, 10]], [1], None, False, api_name="/segment")["size"] == [800, 799]


def test_missing_weights_message(tmp_path):
    missing = tmp_path / "mobile_sam.pt"
    with running_app(["--checkpoint", str(missing)], {"HF_HOME": str(tmp_path / "hf")}) as url:
        page_html = __import__("urllib.request").request.urlopen(url, timeout=10).read().decode()
        assert "Model weights unavailable" in page_html and "mobile_sam.pt" in page_html
        c = Client(url, verbose=False)
        with pytest.raises(Exception, match="mobile_sam.pt"):
            c.predict(
                handle_file(str(MOBILESAM_FIXTURE / "image.png")), [[1, 1]], [1], None, False, api_name="/segment"
            )


def upload_and_wait(page, path):
    page.locator("input[type=file]").first.set_input_files(str(path))
    page.wait_for_function("document.querySelector('#msw-status').innerText.includes('×')", timeout=90_000)


def click_canvas(page, fx, fy):
    before = page.locator("#msw-status").inner_text()
    img = page.locator("#msw-canvas img")
    box = img.bounding_box()
    img.click(position={"x": box["width"] * fx, "y": box["height"] * fy})
    page.wait_for_function(f"document.querySelector('#msw-status').innerText !== {before!r}", timeout=60_000)
    page.wait_for_function("document.querySelector('#msw-status').innerText.includes('decoded')", timeout=60_000)


def canvas_pixels(page):
    import base64
    import io

    from PIL import Image

    src = page.locator("#msw-canvas img").get_attribute("src")
    data = page.evaluate(
        """async (src) => { const r = await fetch(src); const b = await r.blob();
        return await new Promise(ok => { const f = new FileReader(); f.onload = () => ok(f.result); f.readAsDataURL(b); }); }""",
        src,
    )
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[1]))).convert("RGB")).astype(int)


def test_browser_upload_click_shows_mask(app_url, sam_image):
    with browser() as b:
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        with screenshot_on_failure(page, "browser_click"):
            page.goto(app_url)
            upload_and_wait(page, MOBILESAM_FIXTURE / "image.png")
            plain = canvas_pixels(page)
            assert plain.shape[:2] == sam_image.shape[:2]
            assert np.abs(plain - sam_image).mean() < 8  # the image itself (jpeg) before any click
            click_canvas(page, 0.4, 0.5)
            drawn = canvas_pixels(page)
            changed = (np.abs(drawn - plain).sum(-1) > 40).mean()
            assert changed > 0.05, f"only {changed:.1%} of the canvas changed after the click"
            assert "predicted IoU" in page.locator("#msw-status").inner_text()
            assert page.locator("#msw-candidates img").count() == 3


def test_two_browser_sessions_are_isolated(app_url):
    with browser() as b:
        a, c = b.new_context().new_page(), b.new_context().new_page()
        with screenshot_on_failure(a, "session_a"), screenshot_on_failure(c, "session_b"):
            a.goto(app_url)
            c.goto(app_url)
            upload_and_wait(a, MOBILESAM_FIXTURE / "image.png")
            upload_and_wait(c, OBJECTAWARE_FIXTURE / "image.png")
            click_canvas(a, 0.3, 0.3)
            a.get_by_role("button", name="Keep object").click()
            a.wait_for_function("document.querySelector('#msw-status').innerText.includes('1 object(s) kept')")
            click_canvas(c, 0.6, 0.6)
            time.sleep(0.5)
            sa, sc = a.locator("#msw-status").inner_text(), c.locator("#msw-status").inner_text()
            assert "799×800" in sa and "1 object(s) kept" in sa
            assert "900×600" in sc and "0 object(s) kept" in sc and "decoded" in sc
            assert "799×800" not in sc
