"""The public server under attack: hostile payloads to every route of the real app.

Each case asserts a clear error (or a correct result) within a few seconds, and the module
checks after every test that pages, the API and /msw routes still answer.
"""

import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import MOBILESAM_FIXTURE, OBJECTAWARE_FIXTURE
from hostile_client import PeakRss, RawGradio, file_data
from server_utils import fixture_args, running_app

QUICK = 10.0  # seconds: any refusal must come at least this fast (the machine may be loaded)
UPLOAD_LIMIT_MB = 5


@pytest.fixture(scope="module")
def server(shared_onnx_cache, tmp_path_factory):
    upload_dir = tmp_path_factory.mktemp("gradio-uploads")
    with running_app(
        fixture_args(detector=True),
        {
            "MOBILESAM_ONNX_CACHE": shared_onnx_cache,
            "GRADIO_TEMP_DIR": str(upload_dir),
            "MOBILESAM_MAX_UPLOAD_MB": str(UPLOAD_LIMIT_MB),
        },
    ) as url:
        raw = RawGradio(url)
        raw.upload_dir = upload_dir
        raw.pid = url.pid
        yield raw


@pytest.fixture(autouse=True)
def still_serving(request):
    yield
    if "server" in request.fixturenames:
        assert request.getfixturevalue("server").alive(), "the server stopped answering"


@pytest.fixture(scope="module")
def secret(tmp_path_factory):
    """A real image the server can read but no client uploaded."""
    p = tmp_path_factory.mktemp("private") / "secret_photo.png"
    Image.fromarray(np.full((64, 64, 3), 77, np.uint8)).save(p)
    return p


@pytest.fixture(scope="module")
def image_file(server):
    return server.uploaded((MOBILESAM_FIXTURE / "image.png").read_bytes(), "image.png")


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def png16_zeros(w: int, h: int) -> bytes:
    """A 16-bit grayscale PNG streamed row by row (~200 KB for 10000 x 10000)."""

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    row = b"\x00" + b"\x12\x34" * w
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0))
        + chunk(b"IDAT", body)
        + chunk(b"IEND", b"")
    )


def png_header_only(w: int, h: int) -> bytes:
    """A PNG that claims w x h pixels but holds almost no data (a decompression-bomb header)."""

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 10))
        + chunk(b"IEND", b"")
    )


def assert_refused(res: dict, match: str, within: float = QUICK) -> None:
    assert not res["success"], f"expected an error, got {str(res)[:300]}"
    assert match.lower() in res["error"].lower(), res["error"][:500]
    assert res["seconds"] < within, f"took {res['seconds']:.1f} s"
    assert "Traceback" not in res["error"] and len(res["error"]) < 600, res["error"][:700]


# ----------------------------------------------------------------- files the client names
def hostile_paths(secret):
    return {
        "dev-zero": "/dev/zero",
        "secret-image": str(secret),
        "etc-passwd": "/etc/passwd",
        "directory": "/etc",
        "relative": "../../../../etc/hostname",
        "dotdot-into-upload": "/tmp/gradio/../../etc/passwd",
    }


@pytest.mark.parametrize(
    "kind", ["dev-zero", "secret-image", "etc-passwd", "directory", "relative", "dotdot-into-upload"]
)
def test_client_paths_refused_on_every_event(server, secret, kind):
    """Every event of both tabs and the API, with the path in every input slot that is not
    server-side state: refused at once, and nothing is copied into Gradio's folder."""
    path = hostile_paths(secret)[kind]
    attacked = 0
    for i, _ in server.dependencies():
        types = server.input_types(i)
        if all(t == "state" for t in types):
            continue
        data = [None if t == "state" else file_data(path, "photo.png") for t in types]
        res = server.event(
            i,
            data,
            event_data={"index": [1, 1], "value": None, "reason": "x", "low_res_f16": "", "points": [], "box": None},
        )
        assert_refused(res, "not uploaded")
        attacked += 1
    assert attacked >= 8  # upload, keep, fallback, toggle, click, everything tab, 2 API routes
    copied = [
        p
        for p in server.upload_dir.rglob("*")
        if p.is_file() and p.name in ("secret_photo.png", "photo.png", "passwd", "hostname", "zero")
    ]
    assert not copied, copied


def test_client_path_inside_json_is_refused(server, secret):
    res = server.event(server.fn_index("segment"), [None, [file_data(str(secret))], [1], None, False])
    assert_refused(res, "not uploaded")


def test_call_route_with_dev_zero(server):
    """The issue's curl: the raw /call route with /dev/zero answers at once."""
    r = server.http.post(
        f"{server.url}/gradio_api/call/segment", json={"data": [file_data("/dev/zero"), [[0, 0]], [1], None, True]}
    )
    event_id = r.json()["event_id"]
    text = server.http.get(f"{server.url}/gradio_api/call/segment/{event_id}", timeout=QUICK).text
    assert "event: error" in text and "not uploaded" in text


# ----------------------------------------------------------------------- upload limits
def test_upload_over_limit_is_refused(server):
    big = b"\x89PNG" + bytes(UPLOAD_LIMIT_MB * 1024 * 1024 + 1024)
    r = server.upload(big, "big.png")
    assert r.status_code == 413, (r.status_code, r.text[:200])
    assert "size" in r.text.lower()


def test_upload_under_limit_works(server):
    r = server.upload(png_bytes(np.zeros((8, 8, 3), np.uint8)), "small.png")
    assert r.status_code == 200 and r.json()[0].endswith("small.png")


# ------------------------------------------------------------------ /segment parameters
SEGMENT_CASES = [
    ("box-3-numbers", [[10, 10]], [1], [1, 2, 3], False, "box must be 4 numbers"),
    ("box-strings", None, None, ["a", "b", "c", "d"], False, "box must be 4 numbers"),
    ("box-inverted", None, None, [300, 300, 100, 100], False, "x2 >= x1"),
    ("box-outside", None, None, [0, 0, 5000, 100], False, "outside"),
    ("box-infinite", None, None, [0, 0, 1e400, 100], False, "infinite"),
    ("labels-int", [[10, 10]], 1, None, False, "labels must be a list"),
    ("labels-mismatch", [[10, 10], [20, 20]], [1], None, False, "one label per point"),
    ("labels-two", [[10, 10]], [2], None, False, "1 (include) or 0 (exclude)"),
    ("labels-strings", [[10, 10]], ["1"], None, False, "labels must be a list"),
    ("labels-without-points", None, [1], [0, 0, 10, 10], False, "without points"),
    ("points-dict", {"x": 1}, [1], None, False, "points must be a list"),
    ("points-flat", [1, 2], [1], None, False, "[x, y] pairs"),
    ("points-triples", [[1, 2, 3]], [1], None, False, "[x, y] pairs"),
    ("points-strings", [["1", "2"]], [1], None, False, "[x, y] pairs"),
    ("points-infinite", [[1e400, 2]], [1], None, False, "infinite"),
    ("points-negative", [[-5, 2]], [1], None, False, "outside"),
    ("points-outside", [[5000, 1]], [1], None, False, "outside"),
    ("no-prompt", None, None, None, False, "at least one point or a box"),
    ("multimask-no", [[10, 10]], [1], None, "no", "multimask must be true or false"),
    ("multimask-number", [[10, 10]], [1], None, 7, "multimask must be true or false"),
    ("too-many-points", [[5, 5]] * 65, [1] * 65, None, False, "too many points"),
]


@pytest.mark.parametrize("name,points,labels,box,multi,match", SEGMENT_CASES, ids=[c[0] for c in SEGMENT_CASES])
def test_segment_bad_parameters(server, image_file, name, points, labels, box, multi, match):
    res = server.event(server.fn_index("segment"), [image_file, points, labels, box, multi])
    assert_refused(res, match)


def test_segment_huge_string_is_not_echoed(server, image_file):
    res = server.event(server.fn_index("segment"), [image_file, "x" * 1_000_000, [1], None, False])
    assert_refused(res, "points must be a list")


def test_segment_without_image(server):
    assert_refused(server.event(server.fn_index("segment"), [None, [[1, 1]], [1], None, False]), "no image")


def test_segment_image_as_plain_string(server):
    res = server.event(server.fn_index("segment"), ["/etc/passwd", [[1, 1]], [1], None, False])
    assert not res["success"] and "root:" not in res["error"]


def test_ten_thousand_points_refused_cheaply(server, image_file):
    pts = [[float(i % 700), float(i // 700)] for i in range(10_000)]
    with PeakRss(server.pid) as mem:
        res = server.event(server.fn_index("segment"), [image_file, pts, [1] * 10_000, None, True])
    assert_refused(res, "too many points")
    assert mem.growth < 200 << 20, f"RSS grew by {mem.growth / 2**20:.0f} MB"


def test_points_at_the_cap_work(server, image_file):
    res = server.event(server.fn_index("segment"), [image_file, [[100 + i, 200] for i in range(64)], None, None, False])
    assert res["success"], res
    assert res["output"][0]["size"] == [800, 799]


# ---------------------------------------------------------------------------- images
BAD_IMAGES = {
    "text": (b"hello, not an image", "not an image format"),
    "empty": (b"", "empty"),
    "eps": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "not an image format"),
    "truncated-png": (None, "corrupt or truncated"),
    "bomb-header": (None, "too large"),
}


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_bad_images_get_clear_errors(server, kind):
    data, match = BAD_IMAGES[kind]
    if kind == "truncated-png":
        data = png_bytes(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8))[:3000]
    if kind == "bomb-header":
        data = png_header_only(30000, 30000)
    f = server.uploaded(data, f"{kind}.png")
    assert_refused(server.event(server.fn_index("segment"), [f, [[1, 1]], [1], None, False]), match)
    assert_refused(server.event(_fn(server, "on_upload"), [f, True, True]), match)  # the segment tab's upload


def test_16bit_100_megapixel_png_in_bounded_memory(server):
    f = server.uploaded(png16_zeros(10000, 10000), "big16.png")
    with PeakRss(server.pid) as mem:
        res = server.event(server.fn_index("segment"), [f, [[5000, 5000]], [1], None, False], timeout=120)
    assert res["success"], res.get("error")
    assert res["output"][0]["size"] == [10000, 10000]
    assert mem.growth < 1 << 30, f"peak RSS grew by {mem.growth / 2**20:.0f} MB"


def test_float_tiff_with_infinity(server):
    arr = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    arr[3, 3] = np.inf
    buf = io.BytesIO()
    Image.fromarray(arr, "F").save(buf, "TIFF")
    f = server.uploaded(buf.getvalue(), "float.tif")
    res = server.event(server.fn_index("segment"), [f, [[10, 10]], [1], None, False])
    assert res["success"], res.get("error")


def test_large_image_coordinates_in_callers_pixels(server):
    """A 3000x2000 image is worked on at 2048x1365, but points and masks are in its own pixels:
    the result equals the same request on the downscaled copy, scaled up."""
    base = Image.open(MOBILESAM_FIXTURE / "image.png").convert("RGB").resize((3000, 2000), Image.BILINEAR)
    buf = io.BytesIO()
    base.save(buf, "JPEG", quality=92)  # under the upload limit
    big = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    small = np.array(big.resize((2048, 1365), Image.LANCZOS))
    f_big, f_small = server.uploaded(buf.getvalue(), "big.jpg"), server.uploaded(png_bytes(small), "small.png")
    seg = server.fn_index("segment")
    res_big = server.event(seg, [f_big, [[2500, 1500]], [1], [1800, 1000, 2900, 1900], False], timeout=60)
    assert res_big["success"], res_big.get("error")
    sx, sy = 2048 / 3000, 1365 / 2000
    res_small = server.event(
        seg, [f_small, [[2500 * sx, 1500 * sy]], [1], [1800 * sx, 1000 * sy, 2900 * sx, 1900 * sy], False]
    )
    assert res_small["success"], res_small.get("error")
    from pycocotools import mask as mask_utils

    def decode(rle):
        return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)

    m_big, m_small = decode(res_big["output"][0]["masks"][0]), decode(res_small["output"][0]["masks"][0])
    assert res_big["output"][0]["size"] == [2000, 3000] and m_big.shape == (2000, 3000)
    down = np.array(Image.fromarray(m_big).resize((2048, 1365), Image.NEAREST))
    inter, union = (down & m_small).sum(), (down | m_small).sum()
    assert union > 0 and inter / union > 0.97, inter / max(union, 1)
    assert abs(res_big["output"][0]["scores"][0] - res_small["output"][0]["scores"][0]) < 1e-4


# ------------------------------------------------------------------- /everything parameters
EVERYTHING_BAD = [  # detector_conf, detector_nms_iou, imgsz (positional, as raw clients send them)
    ("conf-above-1", 1.5, 0.9, 1024, "detector_conf must be in"),
    ("conf-negative", -0.1, 0.9, 1024, "detector_conf must be in"),
    ("conf-zero", 0, 0.9, 1024, "detector_conf must be in"),
    ("conf-string", "high", 0.9, 1024, "detector_conf must be a number"),
    ("iou-above-1", 0.4, 2, 1024, "detector_nms_iou must be in"),
    ("iou-string", 0.4, "x", 1024, "detector_nms_iou must be a number"),
    ("imgsz-huge", 0.4, 0.9, 4096, "imgsz must be between"),
    ("imgsz-tiny", 0.4, 0.9, 10, "imgsz must be between"),
    ("imgsz-fraction", 0.4, 0.9, 640.5, "whole number"),
    ("imgsz-string", 0.4, 0.9, "big", "whole number"),
    ("imgsz-list", 0.4, 0.9, [1024], "whole number"),
]


@pytest.mark.parametrize("name,conf,iou,imgsz,match", EVERYTHING_BAD, ids=[c[0] for c in EVERYTHING_BAD])
def test_everything_bad_parameters(server, name, conf, iou, imgsz, match):
    f = server.uploaded((OBJECTAWARE_FIXTURE / "image.png").read_bytes(), "ev.png")
    assert_refused(server.event(server.fn_index("everything"), [f, conf, iou, imgsz]), match)


@pytest.mark.parametrize("imgsz,used", [(1000, 1024), (641, 672)])
def test_everything_imgsz_rounded_up_like_ultralytics(server, imgsz, used):
    f = server.uploaded((OBJECTAWARE_FIXTURE / "image.png").read_bytes(), "ev.png")
    res = server.event(server.fn_index("everything"), [f, 0.4, 0.9, imgsz], timeout=120)
    assert res["success"], res.get("error")
    assert res["output"][0]["imgsz"] == used and res["output"][0]["annotations"]


def test_everything_tab_bad_slider_values(server):
    f = server.uploaded((OBJECTAWARE_FIXTURE / "image.png").read_bytes(), "ev.png")
    i = next(i for i, d in server.dependencies() if d["api_name"] == "on_everything")
    # Gradio's slider bounds answer first, clearly
    assert_refused(server.event(i, [f, 7, 0.9, 1024, 0, 0, False, False]), "greater than maximum")
    assert_refused(server.event(i, [f, 0.4, 0.9, 99999, 0, 0, False, False]), "not in the list of choices")
    assert_refused(server.event(i, [f, "x", 0.9, 1024, 0, 0, False, False]), "expected a `float`")


# ------------------------------------------------------------------- UI events, raw
def _fn(server, name):
    return next(i for i, d in server.dependencies() if d["api_name"] == name)


def test_ui_events_with_malformed_event_data(server, image_file):
    session = "hostile-ui-1"
    up = server.event(_fn(server, "on_upload"), [image_file, True, True], session=session)
    assert up["success"], up
    click, pick, keep = _fn(server, "on_click"), _fn(server, "on_pick"), _fn(server, "on_browser_keep")
    mode = "Add (+)"
    assert_refused(
        server.event(click, [None, mode, True], {"index": ["a", "b"], "value": None}, session), "not a number"
    )
    assert_refused(server.event(click, [None, mode, True], {"index": [1e308, 5], "value": None}, session), "outside")
    assert_refused(server.event(click, [None, mode, True], {"index": None, "value": None}, session), "not a number")
    assert_refused(server.event(pick, [None], {"index": "x", "value": None}, session), "no such candidate")
    assert_refused(server.event(keep, [None, True], {"low_res_f16": "A" * 1_000_000}, session), "malformed mask")
    assert_refused(server.event(keep, [None, True], "not a dict", session), "malformed mask")
    good_low = __import__("base64").b64encode(np.zeros((256, 256), "<f2").tobytes()).decode()
    assert_refused(
        server.event(keep, [None, True], {"low_res_f16": good_low, "points": [[1, 1, 1]] * 5000}, session),
        "malformed prompts",
    )
    assert_refused(
        server.event(keep, [None, True], {"low_res_f16": good_low, "box": ["a", 1, 2, 3]}, session), "malformed"
    )
    assert_refused(
        server.event(keep, [None, True], {"low_res_f16": good_low, "score": "NaN"}, session), "malformed score"
    )
    ok = server.event(click, [None, mode, True], {"index": [200, 300], "value": None}, session)
    assert ok["success"], ok


def test_clicks_beyond_the_point_cap(server, image_file):
    session = "hostile-ui-2"
    assert server.event(_fn(server, "on_upload"), [image_file, False, True], session=session)["success"]
    click = _fn(server, "on_click")
    for i in range(64):
        res = server.event(click, [None, "Add (+)", False], {"index": [10 + i, 10], "value": None}, session)
        assert res["success"], res
    assert_refused(
        server.event(click, [None, "Add (+)", False], {"index": [300, 10], "value": None}, session), "at most 64 points"
    )


def test_state_events_without_a_session_image(server):
    for name in ("undo", "clear", "keep_object", "on_export", "on_pick"):
        res = server.event(_fn(server, name), [None], {"index": 0, "value": None})
        assert_refused(res, "upload an image first")


def test_unknown_fn_index_and_garbage_bodies(server):
    import httpx

    def post(path, **kw):  # a fresh connection each: the server may close one after an error
        return httpx.post(server.url + path, timeout=QUICK, **kw)

    def get(path):
        return httpx.get(server.url + path, timeout=QUICK)

    r = post("/gradio_api/queue/join", json={"data": [], "fn_index": 999, "session_hash": "zz"})
    assert r.status_code >= 400 and "Traceback" not in r.text
    r = post("/gradio_api/queue/join", content=b"\x00\xff not json", headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 422)
    r = post("/gradio_api/queue/join", json={"data": "x" * 100000, "fn_index": 13, "session_hash": "zz"})
    assert r.status_code >= 400 or r.json().get("event_id")
    assert get("/msw/embedding/" + "a" * 5000).status_code == 404
    assert get("/msw/models/decoder-..%2F..%2Fetc%2Fpasswd.onnx").status_code == 404
    r = get("/msw/static/..%2F..%2F..%2Fetc%2Fpasswd")
    assert r.status_code == 404 and "root:" not in r.text
    r = get("/gradio_api/file=/etc/passwd")
    assert r.status_code in (403, 404) and "root:" not in r.text
    r = get("/gradio_api/file=" + str(OBJECTAWARE_FIXTURE / "objectaware_random.pt"))
    assert r.status_code in (403, 404)


def test_results_still_correct_after_the_attacks(server, image_file, sam_cases):
    """Run last in this module: the engine still gives the fixture's masks."""
    ((x, y),) = sam_cases["a_point_coords"]
    res = server.event(server.fn_index("segment"), [image_file, [[float(x), float(y)]], [1], None, True])
    assert res["success"], res
    scores = np.array(res["output"][0]["scores"])
    assert np.abs(scores - sam_cases["a_iou_predictions"]).max() <= 1e-5
    json.dumps(res["output"][0])  # JSON-serialisable result


def test_decode_route_refuses_bad_payloads_and_equals_the_server(server, image_file, sam_cases):
    """POST /msw/decode/{token} (the widget's prompts, decoded here until the page's decoder has
    loaded): a token only its upload knows, every field checked, and the official scores."""
    import base64

    import httpx

    up = server.event(_fn(server, "on_upload"), [image_file, True, True], session="hostile-decode")
    assert up["success"], up
    token = next(v["token"] for v in up["output"] if isinstance(v, dict) and "embedding" in v)

    def post(body, tok=token, raw=None):
        kw = dict(content=raw, headers={"Content-Type": "application/json"}) if raw is not None else dict(json=body)
        return httpx.post(f"{server.url}/msw/decode/{tok}", timeout=QUICK, **kw)

    assert post({"points": [[10, 10, 1]]}, tok="a" * 22).status_code == 404
    assert post({"points": [[10, 10, 1]]}, tok="x" * 5000).status_code == 404
    f16 = lambda a: base64.b64encode(np.asarray(a, "<f2").tobytes()).decode()  # noqa: E731
    refused = {
        "nothing to decode": {"points": [], "box": None},
        "not a dict": "points",
        "NaN point": {"points": [["NaN", 5, 1]]},
        "outside": {"points": [[1e9, 5, 1]]},
        "label 7": {"points": [[5, 5, 7]]},
        "too many points": {"points": [[5, 5, 1]] * 5000},
        "short box": {"box": [1, 2, 3]},
        "mask of the wrong size": {"points": [[5, 5, 1], [9, 9, 1]], "mask_f16": f16(np.zeros(100))},
        "infinite mask": {"points": [[5, 5, 1], [9, 9, 1]], "mask_f16": f16(np.full((256, 256), np.inf))},
        "huge mask string": {"points": [[5, 5, 1], [9, 9, 1]], "mask_f16": "A" * 400_000},
    }
    for name, body in refused.items():
        r = post(body)
        assert r.status_code == 422 and "Traceback" not in r.text, (name, r.status_code, r.text[:200])
    assert post(None, raw=b"\x00\xff not json").status_code in (400, 422)

    ((x, y),) = sam_cases["a_point_coords"]
    r = post({"points": [[float(x), float(y), 1]], "box": None})
    assert r.status_code == 200, r.text
    low = np.frombuffer(r.content, "<f2").reshape(-1, 256, 256)  # httpx undoes the gzip
    scores = np.array([float(v) for v in r.headers["x-msw-scores"].split(",")])
    assert low.shape == (3, 256, 256) and np.isfinite(low).all()
    ref = sam_cases["a_low_res_logits"].reshape(3, 256, 256)  # the official masks, in the same frame
    assert ((low > 0) == (ref > 0)).mean(axis=(1, 2)).min() >= 0.999
    plain = httpx.post(
        f"{server.url}/msw/decode/{token}",
        json={"points": [[float(x), float(y), 1]]},
        headers={"Accept-Encoding": "identity"},
        timeout=QUICK,
    )
    assert "content-encoding" not in plain.headers and np.array_equal(np.frombuffer(plain.content, "<f2"), low.ravel())
    # the page's float16 embedding, as the browser decodes it: the browser's tolerance
    assert np.abs(scores - sam_cases["a_iou_predictions"]).max() <= 2e-3
    # refining from a mask: one mask, and the hint changes it
    two = {"points": [[float(x), float(y), 1], [float(x) + 40, float(y), 0]]}
    plain, hinted = post(two), post({**two, "mask_f16": f16(low[0])})
    assert plain.status_code == hinted.status_code == 200
    assert len(plain.content) == len(hinted.content) == 256 * 256 * 2 and plain.content != hinted.content
