"""The real app over HTTP: the named API as a gradio_client user calls it (keyword calls with only
the parameters a prompt needs, the detector parameters, an API description that documents every
parameter and requires only the image), missing weights, real-browser use, session isolation."""

import shutil
import time

import numpy as np
import pytest
from gradio_client import Client, handle_file

from conftest import MOBILESAM_FIXTURE, OBJECTAWARE_FIXTURE, assert_masks_close
from server_utils import browser, fixture_args, running_app, screenshot_on_failure

SEGMENT_PARAMS = ["image", "points", "labels", "box", "multimask"]
EVERYTHING_PARAMS = ["image", "detector_conf", "detector_nms_iou", "imgsz"]


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


def test_missing_weights_message(tmp_path, shared_onnx_cache):
    missing = tmp_path / "mobile_sam.pt"
    # nothing into the checkout; the run's cache holds the gzip copies of the page's runtime
    env = {"HF_HOME": str(tmp_path / "hf"), "MOBILESAM_ONNX_CACHE": shared_onnx_cache}
    with running_app(["--checkpoint", str(missing)], env) as url:
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


def test_remembered_choice_never_hides_server_mode(app_url):
    """A visitor who chose on-device mode before, on a server that decodes on the server (no
    widget): the page hides nothing, the upload is there."""
    with browser() as b:
        page = b.new_page()
        page.goto(app_url + "?msw_device=1")
        page.wait_for_selector("#msw-upload", state="visible", timeout=60_000)
        assert page.locator("#msw-status").is_visible()


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


# --------------------------------------------------------------- the named API, by keyword
@pytest.fixture(scope="module")
def image():
    return handle_file(str(MOBILESAM_FIXTURE / "image.png"))


def rle_masks(result):
    from pycocotools import mask as mask_utils

    return np.stack(
        [mask_utils.decode({"size": m["size"], "counts": m["counts"].encode()}).astype(bool) for m in result["masks"]]
    )


def assert_case(result, sam_cases, case):
    assert result["size"] == [800, 799]
    assert np.abs(np.array(result["scores"]) - sam_cases[f"{case}_iou_predictions"]).max() <= 1e-5
    assert_masks_close(rle_masks(result), sam_cases[f"{case}_masks"])


# ----------------------------------------------------------------------------- /segment
def test_box_only(client, image, sam_cases):
    """The issue's call: no points, no labels, no multimask."""
    r = client.predict(image=image, box=sam_cases["c_box"].tolist(), api_name="/segment")
    assert len(r["masks"]) == 1  # a box is not ambiguous: one mask by default
    assert_case(r, sam_cases, "c")


def test_one_point_only_gives_three_candidates(client, image, sam_cases):
    ((x, y),) = sam_cases["a_point_coords"].tolist()
    r = client.predict(image=image, points=[[x, y]], api_name="/segment")
    assert len(r["masks"]) == 3  # a lone point is ambiguous (part / object / whole)
    assert_case(r, sam_cases, "a")
    one = client.predict(image=image, points=[[x, y]], multimask=False, api_name="/segment")
    assert len(one["masks"]) == 1 and len(one["scores"]) == len(one["areas"]) == 1


def test_points_with_labels(client, image, sam_cases):
    r = client.predict(
        image=image,
        points=sam_cases["b_point_coords"].tolist(),
        labels=sam_cases["b_point_labels"].tolist(),
        api_name="/segment",
    )
    assert len(r["masks"]) == 1  # several points: one mask by default
    assert_case(r, sam_cases, "b")


def test_labels_default_to_include(client, image, sam_cases):
    pts = sam_cases["b_point_coords"][:2].tolist()
    implicit = client.predict(image=image, points=pts, api_name="/segment")
    explicit = client.predict(image=image, points=pts, labels=[1, 1], api_name="/segment")
    assert implicit == explicit


def test_points_and_box(client, image, sam_cases):
    r = client.predict(
        image=image,
        points=sam_cases["d_point_coords"].tolist(),
        labels=sam_cases["d_point_labels"].tolist(),
        box=sam_cases["d_box"].tolist(),
        api_name="/segment",
    )
    assert_case(r, sam_cases, "d")


def test_only_the_image_is_required(client, image):
    with pytest.raises(Exception, match="No value provided for required argument: image"):
        client.predict(box=[1, 1, 50, 50], api_name="/segment")
    with pytest.raises(Exception, match="at least one point or a box"):
        client.predict(image=image, api_name="/segment")


# -------------------------------------------------------------------------- /everything
def test_everything_detector_parameters(client, tmp_path):
    street = tmp_path / "street photo.png"  # the COCO names the caller's file, not a placeholder
    shutil.copy(OBJECTAWARE_FIXTURE / "image.png", street)
    ev = handle_file(str(street))
    default = client.predict(image=ev, api_name="/everything")
    assert default["timings"]["boxes"] == 137 and default["imgsz"] == 1024  # the defaults: 0.4, 0.9, 1024
    assert default["images"][0]["width"] == 900 and default["annotations"]
    assert default["images"][0]["file_name"] == "street photo.png"
    assert {"segmentation", "bbox", "area", "polygons", "prompt_box"} <= set(default["annotations"][0])
    assert "encode_cached" not in default["timings"]  # nothing about other callers' images
    for ann in default["annotations"]:  # COCO bboxes contain their masks, tightly
        ys, xs = np.nonzero(rle_mask(ann["segmentation"]))
        x, y, w, h = ann["bbox"]
        assert (x, y, x + w - 1, y + h - 1) == (xs.min(), ys.min(), xs.max(), ys.max())
    strict_nms = client.predict(image=ev, detector_nms_iou=0.3, api_name="/everything")
    assert 0 < strict_nms["timings"]["boxes"] < 137  # overlapping boxes suppressed
    confident = client.predict(image=ev, detector_conf=0.6, api_name="/everything")
    assert confident["timings"]["boxes"] < 137  # fewer, surer boxes
    with pytest.raises(Exception, match=r"detector_nms_iou must be in \[0, 1\]"):
        client.predict(image=ev, detector_nms_iou=2, api_name="/everything")
    with pytest.raises(Exception, match=r"detector_conf must be in \(0, 1\]"):
        client.predict(image=ev, detector_conf=0, api_name="/everything")


# ---------------------------------------------------------------------- API description
def test_view_api_describes_every_parameter(client):
    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    expected = {"/segment": SEGMENT_PARAMS, "/everything": EVERYTHING_PARAMS}
    for name, params in expected.items():
        endpoint = info[name]
        assert [p["parameter_name"] for p in endpoint["parameters"]] == params
        assert endpoint["description"]
        for p in endpoint["parameters"]:
            assert len(p["python_type"]["description"]) > 40, (name, p["parameter_name"])
            assert p["parameter_has_default"] == (p["parameter_name"] != "image"), (name, p["parameter_name"])
        assert endpoint["returns"][0]["python_type"]["description"]
    seg = {p["parameter_name"]: p for p in info["/segment"]["parameters"]}
    assert seg["points"]["python_type"]["type"] == "list[list[float]]"
    assert seg["labels"]["python_type"]["type"] == "list[int]"
    assert seg["box"]["python_type"]["type"] == "list[float]"
    assert seg["multimask"]["python_type"]["type"] == "bool"
    for name in ("points", "box"):
        assert "pixels of the image sent" in seg[name]["python_type"]["description"]
        assert seg[name]["parameter_default"] is None
    assert "[x1, y1, x2, y2]" in seg["box"]["python_type"]["description"]
    assert "all 1" in seg["labels"]["python_type"]["description"]
    ev = {p["parameter_name"]: p for p in info["/everything"]["parameters"]}
    assert [ev[k]["parameter_default"] for k in EVERYTHING_PARAMS[1:]] == [0.4, 0.9, 1024]
    assert "non-maximum-suppression" in ev["detector_nms_iou"]["python_type"]["description"]
    assert ev["imgsz"]["python_type"]["type"] == "int"
    text = client.view_api(return_format="str", print_info=False)
    assert "any valid json" not in text and "box: list[float] | None (not required" in text
