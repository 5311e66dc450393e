"""A first visit as people make it, in Debian's Chromium: an upload the moment the page appears
on an ordinary connection, hover sweeps, a click while a preview is in flight, a phone (swipes,
taps), the keyboard alone, and the shared colour / up-scaling rules of the page and the server."""

import base64
import contextlib
import gzip
import json
import urllib.request

import numpy as np
import pytest

from conftest import MOBILESAM_FIXTURE
from server_utils import browser, fixture_args, phone_page, running_app, screenshot_on_failure

IMAGE = str(MOBILESAM_FIXTURE / "image.png")


@pytest.fixture(scope="module")
def app_url(shared_onnx_cache):
    with running_app(fixture_args(), {"MOBILESAM_ONNX_CACHE": shared_onnx_cache}) as url:
        yield url


def throttle(page, mbit_down=20.0, mbit_up=5.0, latency_ms=40):
    """An ordinary connection (Chrome DevTools' network emulation)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": latency_ms,
            "downloadThroughput": mbit_down * 125_000,
            "uploadThroughput": mbit_up * 125_000,
        },
    )
    return cdp


def wait_image(page, timeout=120_000):
    page.wait_for_function("window.mswDebug && window.mswDebug.imageReady", timeout=timeout)


def open_with_image(page, url):
    """Open the page, upload the fixture image at once, wait until it can be segmented."""
    page.goto(url)
    page.locator("#msw-upload input[type=file]").set_input_files(IMAGE)
    wait_image(page)


@contextlib.contextmanager
def laptop_page(url, name, height=768):
    """A laptop-sized page with the fixture image open (screenshot under `name` on failure)."""
    with browser() as b:
        page = b.new_page(viewport={"width": 1366, "height": height})
        with screenshot_on_failure(page, name):
            open_with_image(page, url)
            yield page


def click_and_wait(page, fx, fy, clicks=1):
    page.mouse.click(*at(overlay_box(page), fx, fy))
    page.wait_for_function(f"window.mswDebug.clicks.length >= {clicks}", timeout=60_000)


def overlay_box(page):
    return page.locator(".msw-overlay").bounding_box()


def at(box, fx, fy):
    return box["x"] + box["width"] * fx, box["y"] + box["height"] * fy


def test_upload_before_decoder_loads_then_click_gives_a_mask(app_url):
    """The race of the first visit: the image arrives while the decoder still downloads; a click
    made then is decoded on the server at once (never queued behind the download, never a dead
    canvas), and the browser takes over once its decoder is ready."""
    with browser() as b:
        page = b.new_page(viewport={"width": 1366, "height": 768})
        with screenshot_on_failure(page, "first_visit_race"):
            throttle(page, mbit_down=8.0)  # 12+ MB of runtime and decoder: seconds of loading
            page.goto(app_url)
            # the page itself comes over the throttled line too: wait for its upload box as long as a busy machine needs
            page.locator("#msw-upload input[type=file]").set_input_files(IMAGE, timeout=120_000)
            page.wait_for_selector(".msw-img[src]", timeout=120_000)
            page.wait_for_function("window.mswDebug.state().image !== 'uploading'", timeout=120_000)
            before = page.evaluate("window.mswDebug.state()")
            assert before["decoder"] == "loading", f"the decoder was already loaded: {before} (no race tested)"
            assert "the server decodes meanwhile" in page.locator(".msw-info").inner_text()
            x, y = at(overlay_box(page), 0.4, 0.5)
            page.mouse.click(x, y)
            page.wait_for_function("document.querySelectorAll('.msw-cands button').length === 3", timeout=60_000)
            first = page.evaluate("window.mswDebug.state()")
            assert first["points"] == 1 and not first["queued"] and first["result"], first
            assert page.evaluate("window.mswDebug.clicks[0].on") == "server"
            assert "decoded on the server" in page.locator(".msw-info").inner_text()
            # the browser takes over once its decoder holds the embedding
            page.wait_for_function("window.mswDebug.imageReady", timeout=180_000)
            click_and_wait(page, 0.6, 0.3, 2)
            assert page.evaluate("window.mswDebug.clicks[1].on") == "browser"


def test_first_visit_bytes_and_status_line(app_url):
    """A WASM visitor downloads the WASM-only runtime (gzipped) and the decoder -- not the hover
    decoder until the first hover -- and the page states the bytes that came over the wire; the
    status line asks for an image before any, and says what to do once it is there."""
    with browser() as b:
        page = b.new_page(viewport={"width": 1366, "height": 768})
        sizes = []
        page.on("response", lambda r: sizes.append((r.url, r.headers.get("content-length"))))
        page.goto(app_url)
        page.wait_for_function("window.mswDebug && window.mswDebug.ready", timeout=120_000)
        urls = [u for u, _ in sizes]
        assert [u for u in urls if "decoder_lowres" in u], urls  # the worker's requests are seen
        assert not [u for u in urls if "decoder_fast" in u], "hover decoder loaded before any hover"
        assert not [u for u in urls if "asyncify" in u], "WebGPU runtime loaded for a WASM visitor"
        text = page.locator(".msw-info").inner_text()
        assert "MB transferred" in text
        assert "upload an image" in text and "decode" not in text.replace("decoder", ""), text
        page.locator("#msw-upload input[type=file]").set_input_files(IMAGE)
        wait_image(page)
        page.wait_for_function(
            "document.querySelector('.msw-info').innerText.includes('ready — click an object')", timeout=30_000
        )
        assert "reused" not in page.locator("body").inner_text()


def test_hover_sweep_previews_are_lighter(app_url):
    """A hover sweep gives previews, drawn lighter than the committed mask. (The main thread's
    long tasks during a sweep are a timing: bench/bench_browser.py reports them.)"""
    # previews never pause here, however slow this machine is now (the pause has tests of its own)
    with laptop_page(app_url + "?msw_hover_slow=600000", "hover_sweep") as page:
        page.evaluate("window.mswDebug.startHover()")
        page.wait_for_function("window.mswDebug.state().hover === 'ready'", timeout=120_000)
        box = overlay_box(page)
        for i in range(40):
            page.mouse.move(*at(box, 0.1 + 0.02 * i, 0.2 + 0.015 * i))
            page.wait_for_timeout(25)
        page.wait_for_function("window.mswDebug.hoverCount >= 3", timeout=60_000)
        # the preview is drawn lighter than a committed mask (the most common alpha of the
        # overlay's pixels is the mask fill; markers are few and anti-aliased). On a busy machine
        # the preview of the last position may still be on its way: wait for it to be drawn.
        fill_alpha = """() => { const c = document.querySelector('.msw-overlay');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; const n = new Array(256).fill(0);
            for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n[d[i]]++;
            return n.indexOf(Math.max(...n)); }"""
        page.wait_for_function(f"({fill_alpha})() > 0", timeout=60_000, polling=250)
        page.wait_for_timeout(500)  # previews of positions after it (none expected) come in
        preview = page.evaluate(fill_alpha)
        page.mouse.click(*at(box, 0.5, 0.6))
        page.wait_for_function("window.mswDebug.clicks.length >= 1", timeout=60_000)
        page.mouse.move(0, 0)  # leave the image: the committed mask alone
        committed = page.evaluate(fill_alpha)
        assert 0 < preview <= committed / 2, (preview, committed)


def test_click_never_waits_for_a_hover_in_flight(app_url):
    """A preview that takes 3 s (stands for a slow backend) is in flight when the visitor clicks:
    the click's mask comes first."""
    with browser() as b:
        page = b.new_page(viewport={"width": 1366, "height": 768})
        with screenshot_on_failure(page, "click_during_hover"):
            page.goto(app_url + "?msw_hover_delay=3000")
            page.locator("#msw-upload input[type=file]").set_input_files(IMAGE)
            wait_image(page)
            page.evaluate("window.mswDebug.startHover()")
            page.wait_for_function("window.mswDebug.state().hover === 'ready'", timeout=120_000)
            box = overlay_box(page)
            page.mouse.move(*at(box, 0.5, 0.5))
            page.wait_for_function("window.mswDebug.events.includes('hover-start')", timeout=30_000)
            page.mouse.click(*at(box, 0.45, 0.5))
            page.wait_for_function("window.mswDebug.events.includes('click-done')", timeout=30_000)
            events = page.evaluate("window.mswDebug.events")
            assert events.index("click-done") < events.index("hover-done") if "hover-done" in events else True, events


def test_phone_swipe_scrolls_and_tap_adds_a_point(app_url):
    with phone_page(app_url, "phone", IMAGE) as (ctx, page):
        stage = page.locator(".msw-stage").bounding_box()
        # image first: after the upload box and the examples, above the other controls, and
        # in view after the upload
        assert stage["y"] < page.locator("#msw-browser-toggle").bounding_box()["y"]
        assert page.locator("#msw-examples").bounding_box()["y"] < stage["y"]
        assert stage["y"] >= -1 and stage["y"] < 844 * 0.6, stage
        cdp = ctx.new_cdp_session(page)
        y0 = page.evaluate("window.scrollY")
        room = page.evaluate("document.scrollingElement.scrollHeight - innerHeight - scrollY")
        down = room > 100  # swipe towards whichever side the page can scroll (positive: up)
        x, y = stage["x"] + stage["width"] / 2, stage["y"] + min(stage["height"] * 0.5, 300)
        step = -20 if down else 20  # finger moves up to scroll down
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
        for i in range(1, 11):
            cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y + step * i}]})
            page.wait_for_timeout(16)
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        page.wait_for_timeout(300)
        moved = page.evaluate("window.scrollY") - y0
        assert (moved > 50) if down else (moved < -50), f"a swipe on the image did not scroll ({moved} px)"
        assert page.evaluate("window.mswDebug.state().points") == 0, "a swipe added a point"
        stage = page.locator(".msw-stage").bounding_box()
        page.touchscreen.tap(stage["x"] + stage["width"] * 0.4, stage["y"] + min(stage["height"] * 0.5, 300))
        page.wait_for_function("window.mswDebug.state().points === 1", timeout=10_000)
        page.wait_for_function("document.querySelectorAll('.msw-cands button').length === 3", timeout=60_000)
        assert page.evaluate("window.mswDebug.markerRadiusCss") >= 10


def test_keyboard_only_segmentation(app_url):
    with laptop_page(app_url, "keyboard") as page:
        page.evaluate("document.activeElement && document.activeElement.blur()")
        page.evaluate("window.scrollTo(0, 0)")
        seen_checkbox_ring = False
        for _ in range(80):
            page.keyboard.press("Tab")
            tag = page.evaluate("""() => { const e = document.activeElement;
                return e ? (e.classList.contains('msw-overlay') ? 'overlay' : e.type || e.tagName) : null; }""")
            if tag == "checkbox":
                seen_checkbox_ring |= page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
            if tag == "overlay":
                break
        else:
            pytest.fail("Tab never reached the image")
        assert seen_checkbox_ring, "a checkbox got keyboard focus without a visible focus ring"
        assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("Enter")
        page.wait_for_function("document.querySelectorAll('.msw-cands button').length === 3", timeout=60_000)
        page.keyboard.press("3")
        page.wait_for_function(
            "document.querySelectorAll('.msw-cands button')[2].getAttribute('aria-pressed') === 'true'",
            timeout=10_000,
        )
        page.keyboard.press("Shift+Enter")  # an excluded point
        page.wait_for_function("window.mswDebug.clicks.length >= 2", timeout=60_000)
        assert page.evaluate("window.mswDebug.state().points") == 2
        page.keyboard.press("u")
        assert page.evaluate("window.mswDebug.state().points") == 1
        page.keyboard.press("k")
        page.wait_for_function("document.querySelector('#msw-status').innerText.includes('1 object')", timeout=30_000)


def test_laptop_layout_refine_off_and_export_without_keep(app_url):
    """On a 1366x768 laptop screen the image and its candidates fit without scrolling; unticking
    "Refine with the previous mask" is honoured by the next click; the current mask exports
    without being kept first."""
    with laptop_page(app_url, "laptop_refine_export") as page:
        box = overlay_box(page)
        page.mouse.click(*at(box, 0.4, 0.5))
        page.wait_for_function("document.querySelectorAll('.msw-cands button').length === 3", timeout=60_000)
        page.wait_for_timeout(800)
        stage = page.locator(".msw-stage").bounding_box()
        cands = page.locator(".msw-cands").bounding_box()
        assert stage["y"] >= -1 and cands["y"] + cands["height"] <= 768, (stage, cands)
        page.mouse.click(*at(box, 0.6, 0.5))
        page.wait_for_function("window.mswDebug.clicks.length >= 2", timeout=60_000)
        assert page.evaluate("window.mswDebug.lastRequest.hasMaskInput") is True
        page.get_by_label("Refine with the previous mask").uncheck()
        page.wait_for_function("window.mswDebug.refine === false", timeout=30_000)
        box = overlay_box(page)  # the checkbox may have scrolled the page
        page.mouse.click(*at(box, 0.5, 0.7))
        page.wait_for_function("window.mswDebug.clicks.length >= 3", timeout=60_000)
        assert page.evaluate("window.mswDebug.lastRequest.hasMaskInput") is False
        page.locator(".msw-root [data-act=export]").click()
        page.wait_for_function(
            "document.querySelector('#msw-files') && document.querySelector('#msw-files').innerText.includes('.json')",
            timeout=60_000,
        )
        text = page.locator("#msw-files").inner_text()
        assert "Error" not in text and "Segment an object first" not in page.locator("body").inner_text()


def test_palette_and_upscaling_match_python(app_url):
    """One rule on both sides: the page's object colours and its mask up-scaling equal the
    server's (mobilesam_web.data.masks.color_for, mobilesam_web.data.upscale.mask_from_low_res)."""
    from mobilesam_web.data.masks import color_for
    from mobilesam_web.data.upscale import mask_from_low_res

    rng = np.random.default_rng(0)
    cases = [((1024, 768), (801, 600)), ((683, 1024), (1365, 2048)), ((1024, 1024), (97, 97))]
    lows = [rng.normal(0, 2, (256, 256)).astype(np.float32) for _ in cases]
    with browser() as b:
        page = b.new_page()
        page.goto(app_url + "msw/config.json")
        js = page.evaluate(
            """async ([lows, cases]) => {
            const m = await import('/msw/static/msw_runtime.js');
            const cfg = await (await fetch('/msw/config.json')).json();
            const colours = []; for (let i = 0; i < 400; i++) colours.push(m.colorFor(cfg.palette, i));
            const base64 = (u) => { let s = '';  // millions of pixels: as bytes, not a JSON list
              for (let i = 0; i < u.length; i += 0x8000) s += String.fromCharCode.apply(null, u.subarray(i, i + 0x8000));
              return btoa(s); };
            const masks = cases.map(([input, out], k) =>
              base64(m.upscaleMask(Float32Array.from(lows[k]), input, out[0], out[1])));
            return {colours, masks}; }""",
            [[low.ravel().tolist() for low in lows], cases],
        )
    assert [list(c) for c in js["colours"]] == [color_for(i).tolist() for i in range(400)]
    for (input_size, out), low, ours in zip(cases, lows, js["masks"]):
        ref = mask_from_low_res(low, input_size, out)
        ours = np.frombuffer(base64.b64decode(ours), np.uint8).astype(bool)
        differ = int((ours.reshape(out) != ref).sum())
        assert differ <= 1e-4 * ref.size, f"{input_size}->{out}: {differ} px differ"


def test_runtime_and_models_are_sent_compressed(app_url):
    from mobilesam_web.ui.web import ORT_LOCAL

    cfg = json.load(urllib.request.urlopen(app_url + "msw/config.json"))
    for name in cfg["ort"]["bundles"]["wasm"].values():  # compressed (or waited for) on request
        if isinstance(name, str):
            urllib.request.urlopen(
                urllib.request.Request(
                    app_url + cfg["ort"]["base"].lstrip("/") + name, headers={"Accept-Encoding": "gzip"}
                )
            ).read()
    urllib.request.urlopen(
        urllib.request.Request(app_url + cfg["decoder"]["url"].lstrip("/"), headers={"Accept-Encoding": "gzip"})
    ).read()
    cfg = json.load(urllib.request.urlopen(app_url + "msw/config.json"))  # now with every size

    for name in ("ort-wasm-simd-threaded.wasm", "ort.wasm.min.mjs"):
        url = app_url + cfg["ort"]["base"].lstrip("/") + name
        r = urllib.request.urlopen(urllib.request.Request(url, headers={"Accept-Encoding": "gzip, br"}))
        body = r.read()
        assert r.headers["Content-Encoding"] == "gzip" and "immutable" in r.headers["Cache-Control"]
        assert gzip.decompress(body) == (ORT_LOCAL / name).read_bytes()
        plain = urllib.request.urlopen(url).read()  # a client that does not accept gzip
        assert plain == (ORT_LOCAL / name).read_bytes()
    wasm = cfg["ort"]["bundles"]["wasm"]
    assert wasm["transfer_bytes"] < 0.4 * wasm["bytes"]
    dec = cfg["decoder"]
    r = urllib.request.urlopen(
        urllib.request.Request(app_url + dec["url"].lstrip("/"), headers={"Accept-Encoding": "gzip"})
    )
    assert len(r.read()) == dec["transfer_bytes"] < dec["bytes"]
    for bad in ("msw/ort/0.0.1/ort.wasm.min.mjs", "msw/ort/1.30.0/..%2Fpackage.json", "msw/ort/1.30.0/ort.all.js"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(app_url + bad)
        assert e.value.code == 404, bad
