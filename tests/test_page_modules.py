"""The page's pure modules in Debian's Chromium: static/msw_prompts.js (prompt state, prompts ->
decoder request) and static/msw_status.js (the status line's text for a state)."""

import pytest

from conftest import REPO_ROOT
from server_utils import blank_page

STATIC = REPO_ROOT / "static"
BLOBS = {"/__blank.html": b"<!doctype html><title>modules</title>"}

# A 2000x1000 image: its resized frame is 1024x512 (input_size is [h, w])
VIEW = {"width": 2000, "height": 1000, "input_size": [512, 1024]}


@pytest.fixture(scope="module")
def page():
    with blank_page(STATIC, BLOBS) as pg:
        yield pg


def prompts_js(page, body, arg=None):
    """Runs `body` with P = msw_prompts.js's exports and `arg`; -> what it returns."""
    return page.evaluate(f'async (arg) => {{ const P = await import("/msw_prompts.js"); {body} }}', arg)


def request(page, points, box=None, prev=True, refine=True):
    """The decode request for these prompts; prev: a previous result whose selected mask is [7, 8]."""
    return prompts_js(
        page,
        """const prev = arg.prev ? { low: [[1, 2], [7, 8]], selected: 1 } : null;
        return P.decoderRequest({ view: arg.view, token: "t1", points: arg.points, box: arg.box, prev,
                                  refine: arg.refine, paint: { alpha: 1 } });""",
        {"view": VIEW, "points": points, "box": box, "prev": prev, "refine": refine},
    )


# ------------------------------------------------------------------- prompts -> the decoder


def test_request_coordinates_in_the_1024_frame(page):
    r = request(page, [[1000, 500, 1], [2000, 0, 0]], box=[200, 100, 1800, 900])
    assert r["type"] == "decode" and r["token"] == "t1" and r["paint"] == {"alpha": 1}
    assert r["points"] == [[512, 256, 1], [1024, 0, 0]]
    assert r["box"] == [102.4, 51.2, 921.6, 460.8]
    assert request(page, [[1000, 500, 1]])["box"] is None
    # a portrait image: x scales with input_size[1] / width, y with input_size[0] / height
    tall = {"width": 600, "height": 1200, "input_size": [1024, 512]}
    got = prompts_js(page, "return P.to1024(arg, 300, 600);", tall)
    assert got == [256, 512]


def test_multimask_only_for_one_point_without_a_box(page):
    assert request(page, [[10, 10, 1]], prev=False)["multimask"] is True
    assert request(page, [[10, 10, 0]], prev=False)["multimask"] is True  # an excluding point alone too
    assert request(page, [[10, 10, 1]], box=[0, 0, 50, 50], prev=False)["multimask"] is False
    assert request(page, [[10, 10, 1], [20, 20, 1]], prev=False)["multimask"] is False
    assert request(page, [], box=[0, 0, 50, 50], prev=False)["multimask"] is False


def test_mask_input_only_when_refining_one_mask(page):
    two = [[10, 10, 1], [20, 20, 0]]
    assert request(page, two)["maskInput"] == [7, 8]  # the previous result's selected mask
    assert request(page, two, refine=False)["maskInput"] is None
    assert request(page, two, prev=False)["maskInput"] is None
    assert request(page, [[10, 10, 1]])["maskInput"] is None  # multimask: no hint
    assert request(page, [], box=[0, 0, 50, 50])["maskInput"] == [7, 8]
    summary = prompts_js(page, "return P.requestSummary(arg);", request(page, two))
    assert summary == {"points": 2, "box": False, "multimask": False, "hasMaskInput": True}
    summary = prompts_js(
        page, "return P.requestSummary(arg);", request(page, [[1, 1, 1]], box=[0, 0, 5, 5], refine=False)
    )
    assert summary == {"points": 1, "box": True, "multimask": False, "hasMaskInput": False}


def test_full_request(page):
    r = prompts_js(
        page,
        "return P.fullRequest({ view: arg, token: 't2', points: [[1000, 500, 1]], box: null });",
        VIEW,
    )
    assert r == {
        "type": "full",
        "token": "t2",
        "multimask": True,
        "maskInput": None,
        "inputSize": [512, 1024],
        "size": [1000, 2000],
        "points": [[512, 256, 1]],
        "box": None,
    }


# ---------------------------------------------------------------------- prompt state


def test_commit_undo_clear(page):
    got = prompts_js(
        page,
        """const p = P.createPrompts(), log = [];
        const snap = () => ({ points: p.st.points, box: p.st.box, corner: p.st.corner, version: p.version,
                              history: p.st.history.length });
        log.push(P.commitPrompts(p, [[1, 2, 1]], null, 64), snap());
        p.st.result = "r1";
        log.push(P.commitPrompts(p, [[1, 2, 1], [3, 4, 0]], [0, 0, 9, 9], 64), snap());
        log.push(p.st.result);                         // the result stays until a decode replaces it
        P.undoPrompts(p); log.push(snap(), p.st.result);  // back to one point, and its result
        P.undoPrompts(p); log.push(snap());
        P.undoPrompts(p); log.push(snap());             // nothing left: no change
        P.commitPrompts(p, [[5, 5, 1]], null, 64);
        const before = p.st;
        P.resetPrompts(p); log.push(snap(), p.st !== before);
        return log;""",
    )
    assert got[0] is True and got[1] == {"points": [[1, 2, 1]], "box": None, "corner": None, "version": 1, "history": 1}
    assert got[2] is True and got[3] == {
        "points": [[1, 2, 1], [3, 4, 0]],
        "box": [0, 0, 9, 9],
        "corner": None,
        "version": 2,
        "history": 2,
    }
    assert got[4] == "r1"
    assert got[5] == {"points": [[1, 2, 1]], "box": None, "corner": None, "version": 3, "history": 1}
    assert got[6] == "r1"
    assert got[7] == {"points": [], "box": None, "corner": None, "version": 4, "history": 0}
    assert got[8] == got[7]
    assert got[9] == {"points": [], "box": None, "corner": None, "version": 6, "history": 0} and got[10] is True


def test_max_points(page):
    got = prompts_js(
        page,
        """const p = P.createPrompts();
        const ok = P.commitPrompts(p, [[1, 1, 1], [2, 2, 1]], null, 2);
        const refused = P.commitPrompts(p, [[1, 1, 1], [2, 2, 1], [3, 3, 1]], null, 2);
        return { ok, refused, points: p.st.points.length, version: p.version, history: p.st.history.length };""",
    )
    assert got == {"ok": True, "refused": False, "points": 2, "version": 1, "history": 1}


def test_box_corners_and_undo_corner_first(page):
    got = prompts_js(
        page,
        """const p = P.createPrompts(), log = [];
        P.commitPrompts(p, [[5, 5, 1]], null, 64);
        log.push(P.placePrompt(p.st, "box", 80, 10, 1), p.st.corner, p.version);  // first corner: nothing to decode
        P.undoPrompts(p);                                                        // the corner goes, not the point
        log.push(p.st.corner, p.st.points.length, p.version);
        P.placePrompt(p.st, "box", 80, 10, 1);
        log.push(P.placePrompt(p.st, "box", 20, 60, 0), p.st.corner);             // the box, corners in any order
        log.push(P.placePrompt(p.st, "add", 7, 8, 0));                          // a point keeps the box
        p.st.box = [1, 2, 3, 4];
        log.push(P.placePrompt(p.st, "remove", 7, 8, 0));
        log.push(P.cornerPrompt(p.st, 3, 3), P.cornerPrompt(p.st, 1, 9));        // the B key, in any mode
        return log;""",
    )
    assert got[0] is None and got[1] == [80, 10] and got[2] == 1
    assert got[3] is None and got[4] == 1 and got[5] == 1
    assert got[6] == {"points": [[5, 5, 1]], "box": [20, 10, 80, 60]} and got[7] is None
    assert got[8] == {"points": [[5, 5, 1], [7, 8, 0]], "box": None}
    assert got[9] == {"points": [[5, 5, 1], [7, 8, 0]], "box": [1, 2, 3, 4]}
    assert got[10] is None and got[11] == {"points": [[5, 5, 1]], "box": [1, 3, 3, 9]}


# ----------------------------------------------------------------------- the status line

MiB = 1048576


def status(page, state, prompts=None, coarse=False):
    """msw_status.js's statusText for a page state (over createPageState()) and prompts."""
    return page.evaluate(
        """async ([state, prompts, coarse]) => {
          const M = await import("/msw_status.js");
          const S = Object.assign(M.createPageState(), state);
          const st = Object.assign({ points: [], box: null, corner: null, result: null, history: [] }, prompts);
          return M.statusText(S, st, coarse);
        }""",
        [state, prompts or {}, coarse],
    )


READY = {
    "decoder": "ready",
    "backendLabel": "WASM (2 threads)",
    "backend": "wasm",
    "model": {"bytes": 4 * MiB, "cached": True},
}


def test_status_decoder_loading(page):
    assert status(page, {}) == {
        "tech": "",
        "live": "loading the in-browser decoder · upload an image or pick an example",
    }
    got = status(page, {"load": {"got": 2.5 * MiB, "total": 10 * MiB}, "image": "fetching", "view": {"local": True}})
    assert got == {"tech": "", "live": "loading the in-browser decoder 2.5/10.0 MB · fetching the image embedding"}


def test_sizes_are_what_the_line_carries(page):
    """#21 item 9: progress in the bytes that go over the wire (the note beside the on-device
    switch gives those), and "MB transferred" counts the hover model's download too."""
    cfg = {
        "decoder": {"bytes": 16 * MiB, "transfer_bytes": 8 * MiB},
        "encoder": {"bytes": 22 * MiB, "transfer_bytes": 11 * MiB},
    }
    got = status(
        page, {"cfg": cfg, "load": {"got": 4 * MiB, "total": 16 * MiB}, "view": {"local": True}, "image": "fetching"}
    )
    assert got["live"].startswith("loading the in-browser decoder 2.0/8.0 MB")
    enc = {**READY, "cfg": cfg, "device": True, "encoder": "loading", "encLoad": {"got": 11 * MiB, "total": 22 * MiB}}
    assert "loading the encoder 5.5/11.0 MB" in status(page, enc)["live"]
    both = status(page, {**READY, "transferred": 3 * MiB, "hoverTransferred": 1.5 * MiB, "image": "none"})
    assert both["tech"].endswith("· 4.5 MB transferred · ")


def test_status_server_decodes_until_the_decoder_loads(page):
    """A server image while the decoder downloads: one line that says the server decodes, never
    'queued' or 'fetching' (#21: the first mask does not wait for the download)."""
    loading = {"cfg": {}, "load": {"got": 2.5 * MiB, "total": 10 * MiB}, "image": "fetching", "view": {"local": False}}
    got = status(page, loading)
    assert got == {
        "tech": "loading the in-browser decoder 2.5/10.0 MB (the server decodes meanwhile) · ",
        "live": "ready — click an object",
    }
    result = {"iou": [0.5, 0.91349, 0.2], "selected": 1}
    got = status(page, {**loading, "busy": True, "decodingOn": "server"}, {"points": [[1, 1, 1]], "result": result})
    assert got["live"] == "decoding on the server…"
    got = status(page, {**loading, "lastMs": 12.2, "lastOn": "server"}, {"points": [[1, 1, 1]], "result": result})
    assert got["live"] == "decoded on the server in 12 ms · predicted IoU 0.913"
    # the image is still uploading: nothing to decode yet, on either side
    assert status(page, {**loading, "image": "uploading"})["live"] == (
        "loading the in-browser decoder 2.5/10.0 MB · uploading and encoding the image on the server"
    )
    # before the page's config has come the server cannot be asked yet: the line does not promise it
    assert status(page, {**loading, "cfg": None})["live"].endswith("fetching the image embedding")


def test_status_queued_prompts(page):
    got = status(
        page,
        {"image": "ready", "view": {"local": True}},
        {"points": [[1, 1, 1], [2, 2, 0]], "box": [0, 0, 5, 5], "queued": True},
    )
    assert got["live"] == "loading the in-browser decoder · 3 prompt(s) queued: decoding once the decoder has loaded"


def test_status_ready(page):
    got = status(page, {**READY, "image": "ready", "view": {"local": False}, "transferred": 3 * MiB})
    assert got == {
        "tech": "WASM (2 threads) · decoder 4.0 MB (cached) · 3.0 MB transferred · ",
        "live": "ready — click an object",
    }
    got = status(page, {**READY, "model": {"bytes": 4 * MiB, "cached": False}, "image": "none"})
    assert got == {
        "tech": "WASM (2 threads) · decoder 4.0 MB (downloaded) · ",
        "live": "upload an image or pick an example",
    }
    result = {"iou": [0.5, 0.91349], "selected": 1}
    got = status(
        page, {**READY, "image": "ready", "view": {}, "lastMs": 41.6}, {"points": [[1, 1, 1]], "result": result}
    )
    assert got["live"] == "decoded in 42 ms · predicted IoU 0.913"
    got = status(page, {**READY, "image": "ready", "view": {}, "busy": True}, {"points": [[1, 1, 1]], "result": result})
    assert got["live"] == "decoding…"
    got = status(
        page,
        {**READY, "image": "ready", "view": {}, "message": "object kept", "hoverNote": "hover previews unavailable"},
        {"corner": [3, 4]},
        coarse=True,
    )
    assert (
        got["live"]
        == "ready — click an object · tap the opposite corner of the box · hover previews unavailable · object kept"
    )
    assert (
        status(page, {"image": "ready", "view": {"local": True}})["live"]
        == "loading the in-browser decoder · image ready"
    )


def test_status_on_device(page):
    dev = {**READY, "device": True}
    got = status(page, {**dev, "encoder": "loading", "encLoad": {"got": 5 * MiB, "total": 20 * MiB}})
    assert got["live"] == (
        "loading the encoder 5.0/20.0 MB (once; cached afterwards) · "
        "open an image (it stays on this device) or pick an example"
    )
    got = status(
        page,
        {
            **dev,
            "encoder": "ready",
            "encoderInfo": {"cached": False},
            "image": "encoding",
            "encodeClock": "3 s (about 2 s here)",
        },
    )
    assert got == {
        "tech": "WASM (2 threads) · decoder 4.0 MB (cached) · encoder downloaded · ",
        "live": "encoding on this device… 3 s (about 2 s here)",
    }
    assert status(page, {**dev, "encoder": "ready", "encoderInfo": {"cached": True}, "image": "encoding"})["live"] == (
        "encoding on this device…"
    )
    got = status(
        page,
        {
            **dev,
            "encoder": "ready",
            "encoderInfo": {"cached": True},
            "image": "ready",
            "view": {"local": True},
            "encodeMs": 2300,
        },
    )
    assert got["live"] == "encoded here in 2.3 s · ready — click an object"
    got = status(page, {**dev, "encoder": "failed", "encError": "HTTP 404"})
    assert got["live"] == (
        "the encoder could not be loaded (HTTP 404); opening an image tries again · "
        "open an image (it stays on this device) or pick an example"
    )


def test_status_failed(page):
    got = status(page, {"decoder": "failed", "error": "no onnxruntime-web backend works here"})
    assert got == {
        "tech": "",
        "live": "in-browser decoding unavailable: no onnxruntime-web backend works here · "
        "upload an image or pick an example",
    }


def test_device_note_says_why_on_device_mode_is_off(page):
    """A server whose encoder a browser can't hold (SAM's ViTs, EfficientViT-SAM) sends why in
    config.encoder_off: the note beside the mode's switch shows it; with an encoder, the cost."""
    got = page.evaluate(
        """async () => {
        const { Device } = await import("/msw_device.js");
        const root = document.createElement("div");
        root.innerHTML = '<input type="checkbox" data-act="device"><span class="msw-device-note"></span>';
        const S = { cfg: { encoder: null, encoder_off: "On this device is off: SAM ViT-B's encoder is 358 MB." },
                    decoder: "ready", backend: "wasm", threads: 2, backendLabel: "WASM (2 threads)" };
        const d = new Device({ S, root, debug: {}, standalone: false });
        d.note();
        const off = root.querySelector(".msw-device-note").textContent;
        S.cfg = { encoder: { bytes: 28e6, transfer_bytes: 25e6 } };
        d.note();
        return [off, root.querySelector(".msw-device-note").textContent];
    }"""
    )
    assert got[0] == "On this device is off: SAM ViT-B's encoder is 358 MB."
    assert got[1].startswith("one-time download 23.8 MB, then about")
