"""Segment-tab handlers, exports and the everything handler, without a server."""

import json
import os
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from mobilesam_web.ui import segment_actions as actions
from mobilesam_web.ui import segment_session as seg
from mobilesam_web.ui import segment_view as segview
from mobilesam_web.ui.errors import UserError
from mobilesam_web.ui.services import AppConfig, load_services

from conftest import OBJECTAWARE_FIXTURE, assert_masks_close


@pytest.fixture(scope="module")
def services(shared_onnx_cache, sam_weights_path):
    cfg = AppConfig(
        checkpoint=str(sam_weights_path),
        onnx_cache_dir=shared_onnx_cache,
        detector_checkpoint=str(OBJECTAWARE_FIXTURE / "objectaware_random.pt"),
    )
    s = load_services(cfg)
    assert s.ready, s.sam_error
    return s


@pytest.fixture()
def session(services, sam_image):
    return seg.start_session(services, sam_image, "photo.png")


def test_click_matches_predictor(session, services, sam_cases):
    ((x, y),) = sam_cases["a_point_coords"]
    s = actions.add_click(services, session, float(x), float(y), "add")
    assert s.result.low_res.shape == (3, 256, 256)
    assert np.abs(s.result.scores - sam_cases["a_iou_predictions"]).max() <= 1e-5
    assert s.result.selected == int(np.argmax(sam_cases["a_iou_predictions"]))
    assert_masks_close(s.current_mask()[None], sam_cases["a_masks"][s.result.selected][None])


def test_box_by_two_clicks_and_negative_point(session, services, sam_cases):
    x0, y0, x1, y1 = sam_cases["c_box"]
    s = actions.add_click(services, session, float(x1), float(y1), "box")
    assert s.result is None and s.prompts.corner is not None
    s = actions.add_click(services, s, float(x0), float(y0), "box")
    assert s.prompts.box == (float(x0), float(y0), float(x1), float(y1))
    assert s.result.low_res.shape[0] == 1
    assert np.abs(s.result.low_res[0] - sam_cases["c_low_res_logits"][0]).max() <= 1e-4
    s = actions.set_box(services, actions.clear(s), sam_cases["d_box"].tolist())
    ((px, py),) = sam_cases["d_point_coords"]
    s = actions.add_click(services, s, float(px), float(py), "remove", refine=False)
    assert np.abs(s.result.low_res[0] - sam_cases["d_low_res_logits"][0]).max() <= 1e-4


def test_refinement_uses_previous_mask(services, sam_image):
    def two_clicks(refine):
        s = actions.add_click(services, seg.start_session(services, sam_image), 300.0, 400.0, "add")
        return actions.add_click(services, s, 420.0, 380.0, "add", refine=refine)

    with_mask, without = two_clicks(True), two_clicks(False)
    assert with_mask.result.low_res.shape == (1, 256, 256)
    assert np.abs(with_mask.result.low_res - without.result.low_res).max() > 0.1


def test_undo_clear_keep_remove(session, services):
    s = actions.add_click(services, session, 100, 100, "add")
    s = actions.add_click(services, s, 300, 200, "add")
    assert len(s.prompts.points) == 2
    s = actions.undo(s)
    assert len(s.prompts.points) == 1 and s.result.low_res.shape[0] == 3
    s = actions.keep_object(s)
    assert len(s.objects) == 1 and s.prompts.empty() and s.result is None
    s = actions.add_click(services, s, 500, 500, "add")
    s = actions.keep_object(s)
    assert len(s.objects) == 2
    s = actions.remove_object(s)
    assert len(s.objects) == 1
    s = actions.undo(actions.clear(s))
    assert s.prompts.empty()
    with pytest.raises(UserError):
        actions.keep_object(s)


def test_candidate_selection(session, services):
    s = actions.add_click(services, session, 320, 400, "add")
    thumbs = segview.candidate_thumbnails(s)
    assert len(thumbs) == 3 and all("IoU" in cap for _, cap in thumbs)
    s = actions.select_candidate(s, 0)
    assert s.result.selected == 0
    with pytest.raises(UserError):
        actions.select_candidate(s, 7)


@pytest.mark.parametrize("x,y", [(-1, 5), (5, 10_000), (float("nan"), 3)])
def test_clicks_outside_or_nan(session, services, x, y):
    with pytest.raises(UserError):
        actions.add_click(services, session, x, y, "add")


def test_render_draws_mask_and_markers(session, services):
    plain = segview.render(session)
    s = actions.add_click(services, session, 320, 400, "add")
    drawn = segview.render(s)
    assert drawn.shape == plain.shape and drawn.dtype == np.uint8
    assert (np.abs(drawn.astype(int) - plain.astype(int)).sum(-1) > 30).mean() > 0.05


def test_render_large_image_is_display_sized(services):
    img = np.random.default_rng(0).integers(0, 255, (1500, 2000, 3), dtype=np.uint8)
    s = seg.start_session(services, img)
    assert s.display_scale == pytest.approx(1024 / 2000)
    s = actions.add_click(services, s, 1000, 700, "add")
    assert segview.render(s).shape == (768, 1024, 3)
    assert s.current_mask().shape == (1500, 2000)


def test_exports(session, services, tmp_path):
    from pycocotools import mask as mask_utils

    from mobilesam_web.ui.exports import records_from_masks, write_exports

    s = actions.keep_object(actions.add_click(services, session, 320, 400, "add"))
    s = actions.keep_object(actions.add_click(services, s, 600, 150, "add"))
    masks = s.object_masks()
    export = write_exports(s.image, records_from_masks(masks, [o.score for o in s.objects]), "my photo.jpg")
    paths = export.paths
    names = sorted(os.path.basename(p) for p in paths)
    assert names == [
        "01_cutout_my_photo.png",
        "01_mask_my_photo.png",
        "02_cutout_my_photo.png",
        "02_mask_my_photo.png",
        "coco_my_photo.json",
        "labels_my_photo.png",
    ]
    assert export.objects == 2 and export.summary.startswith("2 objects")
    coco = json.load(open(next(p for p in paths if p.endswith(".json"))))
    assert len(coco["annotations"]) == 2 and coco["images"][0]["height"] == 800
    ann = coco["annotations"][0]
    dec = mask_utils.decode({"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()})
    assert (dec.astype(bool) == masks[0]).all()
    assert ann["polygons"] and len(ann["polygons"][0]) >= 6
    cut = cv2.imread(next(p for p in paths if "01_cutout_" in p), cv2.IMREAD_UNCHANGED)
    assert cut.shape[2] == 4
    mask_png = cv2.imread(next(p for p in paths if "01_mask_" in p), cv2.IMREAD_UNCHANGED)
    assert ((mask_png > 0) == masks[0]).all()
    labels = cv2.imread(next(p for p in paths if "labels_" in p), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2} and (labels == 2).any()


def test_two_sessions_are_independent(services, sam_image):
    a = seg.start_session(services, sam_image)
    b = seg.start_session(services, np.ascontiguousarray(sam_image[::2, ::2]))
    a = actions.add_click(services, a, 100, 100, "add")
    b = actions.add_click(services, b, 50, 50, "remove")
    assert a.prompts.points == [(100.0, 100.0, 1)] and b.prompts.points == [(50.0, 50.0, 0)]
    assert a.size == (800, 799) and b.size == (400, 400)


def test_everything_handler(services):
    from PIL import Image

    from mobilesam_web.ui.everything_run import render_records, run_everything

    img = np.array(Image.open(OBJECTAWARE_FIXTURE / "image.png").convert("RGB"))
    records, timings = run_everything(services, img, conf=0.4, iou=0.9, imgsz=1024)
    assert int(timings["boxes"]) == 137 and len(records) > 0
    assert render_records(img, records[:5]).shape == img.shape


def test_missing_weights_services(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    s = load_services(AppConfig(checkpoint=None))
    assert not s.ready and "mobile_sam.pt" in s.sam_error and "--checkpoint" in s.sam_error
    s2 = load_services(AppConfig(checkpoint=None, detector_checkpoint=str(tmp_path / "missing.pt")))
    assert s2.get_detector() is None and "missing.pt" in s2.detector_error


# ------------------------------------------------------------ module-level handlers over AppContext
import base64  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402

import gradio as gr  # noqa: E402

from mobilesam_web.ui import everything_tab, segment_tab  # noqa: E402
from mobilesam_web.ui.context import AppContext  # noqa: E402
from mobilesam_web.ui.web import EmbeddingStore  # noqa: E402

from conftest import MOBILESAM_FIXTURE  # noqa: E402

WIDGET_KEYS = {
    "token",
    "image",
    "width",
    "height",
    "display_width",
    "display_height",
    "input_size",
    "embedding",
    "objects_count",
    "objects",
    "refine",
    "max_points",
    "status",
}


def no_progress(*args, **kwargs):
    return None


@pytest.fixture()
def ctx(services):
    return AppContext(services=services, store=EmbeddingStore(), config=services.config, browser_available=True)


@pytest.fixture()
def uploaded(tmp_path, monkeypatch):
    """Copy a file into Gradio's upload folder, as an upload does (handlers refuse other paths)."""
    folder = tmp_path / "gradio-uploads"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))

    def put(src, name=None):
        dst = folder / "abc123" / (name or os.path.basename(src))
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
        return str(dst)

    return put


def upload(ctx, path, refine=True):
    out = segment_tab.on_upload(ctx, path, refine, progress=no_progress)
    assert len(out) == 7
    return out


def event(data):
    return gr.EventData(None, data)


def f16(low):
    return base64.b64encode(np.asarray(low, "<f2").tobytes()).decode()


def test_upload_status_and_widget_value(ctx, uploaded):
    path = uploaded(MOBILESAM_FIXTURE / "image.png")
    s, canvas, cands, info, table, value, files = upload(ctx, path)
    assert isinstance(s, seg.SegmentSession) and canvas.shape == (800, 799, 3) and cands == [] and table == []
    assert set(value) == WIDGET_KEYS
    assert value["max_points"] == ctx.config.max_points and value["refine"] is True
    assert value["width"] == 799 and value["height"] == 800 and value["embedding"].endswith(value["token"])
    assert ctx.store.get(value["token"]) is not None
    assert "**" not in value["status"] and value["status"].endswith("ready — click an object")
    assert info.endswith("ready — click an object") and "799×800" in info and "0 object(s) kept" in info
    assert files == gr.update(value=None, visible=False)
    # The same image again (another visitor, or the embedding cache): nothing says it was reused.
    s2, *_, info2, _, value2, _ = upload(ctx, uploaded(MOBILESAM_FIXTURE / "image.png", "again.png"))
    for text in (info2, value2["status"]):
        assert "reuse" not in text.lower() and "cache" not in text.lower() and "same image" not in text.lower()
        assert "image encoded" in text and not re.search(r"\d s\b", text)  # no timing that could tell
    assert value2["token"] != value["token"]  # a token is never shared between sessions


def test_upload_refuses_paths_outside_the_upload_folder(ctx, uploaded):
    uploaded(MOBILESAM_FIXTURE / "image.png")  # sets the upload folder
    with pytest.raises(gr.Error, match="only files uploaded"):
        segment_tab.on_upload(ctx, str(MOBILESAM_FIXTURE / "image.png"), True, progress=no_progress)


def test_browser_keep_and_export_current_mask(ctx, services, uploaded, sam_cases):
    s = upload(ctx, uploaded(MOBILESAM_FIXTURE / "image.png"))[0]
    low = sam_cases["a_low_res_logits"][0]
    mask_event = {"low_res_f16": f16(low), "score": 0.9, "points": [[300, 400, 1]], "box": None}
    with pytest.raises(gr.Error, match="Segment an object first"):
        segment_tab.on_browser_export(ctx, s, event({}))
    # export before Keep: the current browser mask alone
    files = segment_tab.on_browser_export(ctx, s, event(mask_event))
    assert files["visible"] is True and len(files["value"]) == 4 and "1 object:" in files["label"]
    s, canvas, cands, info, table, value = segment_tab.on_browser_keep(ctx, s, True, event(mask_event))
    assert len(s.objects) == 1 and value["objects_count"] == 1 and value["objects"].startswith("data:image/png")
    assert "1 object(s) kept" in info and len(table) == 1
    # kept objects plus the current mask; a payload that is not an object means "no current mask"
    assert "2 objects" in segment_tab.on_browser_export(ctx, s, event(mask_event))["label"]
    assert "1 object" in segment_tab.on_browser_export(ctx, s, event("not a dict"))["label"]
    assert "1 object" in segment_tab.on_browser_export(ctx, s, event(None))["label"]
    with pytest.raises(gr.Error, match="malformed mask"):
        segment_tab.on_browser_export(ctx, s, event({"low_res_f16": "A" * 10}))
    with pytest.raises(gr.Error, match="Upload an image first"):
        segment_tab.on_browser_export(ctx, None, event({}))


def test_event_fields_never_reads_private_data():
    assert segment_tab.event_fields(event({"a": 1, "b": 2}), ["a", "c"]) == {"a": 1}
    for payload in ("low_res_f16", None, 5, [1, 2], "x"):
        assert segment_tab.event_fields(event(payload), ["low_res_f16", "reason"]) == {}
    assert segment_tab.event_fields(None, ["reason"]) == {}


def test_server_export_without_keep(ctx, services, uploaded):
    s = upload(ctx, uploaded(MOBILESAM_FIXTURE / "image.png", "photo with a long name for testing.png"))[0]
    with pytest.raises(gr.Error, match="Segment an object first"):
        segment_tab.on_export(ctx, s)
    s = segment_tab.on_click(ctx, s, "Add (+)", True, gr.SelectData(None, {"index": [320, 400], "value": None}))[0]
    files = segment_tab.on_export(ctx, s)  # the current mask, not kept
    names = sorted(os.path.basename(p) for p in files["value"])
    assert names == [
        "01_cutout_photo_with_a_long_name_f.png",
        "01_mask_photo_with_a_long_name_f.png",
        "coco_photo_with_a_long_name_f.json",
        "labels_photo_with_a_long_name_f.png",
    ]
    s = segment_tab.keep_object(ctx, s)[0]
    s = segment_tab.on_click(ctx, s, "Add (+)", True, gr.SelectData(None, {"index": [600, 150], "value": None}))[0]
    files = segment_tab.on_export(ctx, s)
    assert "2 objects" in files["label"]
    coco = json.load(open(next(p for p in files["value"] if p.endswith(".json"))))
    assert len(coco["annotations"]) == 2


def test_browser_mode_hides_server_controls(ctx, uploaded):
    s = upload(ctx, uploaded(MOBILESAM_FIXTURE / "image.png"))[0]
    # [widget, canvas, use_browser, mode, undo, clear, keep, candidates, export, info]
    on = segment_tab.set_mode(ctx, s, True, False)
    assert on[0]["visible"] is True and set(on[0]["value"]) == WIDGET_KEYS and on[0]["value"]["refine"] is False
    assert all(u["visible"] is False for u in on[1:2] + on[3:9])
    off = segment_tab.set_mode(ctx, s, False, True)
    assert off[0]["visible"] is False and all(u["visible"] is True for u in off[1:2] + off[3:9])
    fallback = segment_tab.on_fallback(ctx, s, True, event({"reason": "no WebAssembly"}))
    assert "no WebAssembly" in fallback[-1] and "decoding on the server" in fallback[-1]
    assert fallback[2]["value"] is False
    no_browser = AppContext(ctx.services, ctx.store, ctx.config, browser_available=False)
    assert segment_tab.set_mode(no_browser, s, True, True)[0]["visible"] is False


def test_refine_change_resends_the_widget_value(ctx, uploaded):
    s, *_, value, _ = upload(ctx, uploaded(MOBILESAM_FIXTURE / "image.png"))
    again = segment_tab.on_refine_change(ctx, s, True, False)
    assert again["refine"] is False and again["token"] == value["token"]  # same token: nothing re-fetched
    assert again["image"] is value["image"]  # the display image is encoded once per session
    assert segment_tab.on_refine_change(ctx, s, False, False) == gr.update()  # server mode: nothing to send
    assert segment_tab.on_refine_change(ctx, None, True, False) == gr.update()


def test_widget_js_registers_every_event():
    for name in ("keep", "fallback", "export"):
        assert f"'{name}'" in segment_tab.WIDGET_JS


# ----------------------------------------------------------------------------- everything tab
# Detector confidence 0.9: 28 boxes on the street photo (0.4: 137), as many checks for a fifth of
# the decoding (test_everything_handler runs the default)
CONF = 0.9


def everything(ctx, path, seg_session=None):
    t = time.perf_counter()
    out = everything_tab.on_everything(ctx, path, CONF, 0.9, 1024, 0, 0, False, seg_session, progress=no_progress)
    return out, time.perf_counter() - t


def reported_total(md):
    return float(re.search(r"\*\*([\d.]+) s\*\* in all", md).group(1))


def test_everything_reports_the_wall_time_and_exports_every_object(ctx, uploaded, monkeypatch):
    from mobilesam_web.ui import exports

    slow = exports.write_exports

    def slow_exports(*args, **kwargs):  # the downloads are part of the wait
        time.sleep(1.0)
        return slow(*args, **kwargs)

    monkeypatch.setattr(everything_tab, "write_exports", slow_exports)
    (shown, md, files, run, grid_btn, grid_out, grid_md), waited = everything(
        ctx, uploaded(OBJECTAWARE_FIXTURE / "image.png", "street.png")
    )
    total = reported_total(md)
    assert waited - 0.3 <= total <= waited + 0.01 and total >= 1.0  # 2 decimals shown
    parts = dict(
        (k, float(v))
        for k, v in re.findall(
            r"(read image|load the detector|encode|detect|decode|post-process|downloads|draw) ([\d.]+) s", md
        )
    )
    assert {"read image", "encode", "detect", "decode", "post-process", "downloads", "draw"} <= set(parts)
    assert parts["downloads"] >= 1.0 and sum(parts.values()) <= total + 0.03
    assert sum(parts.values()) >= 0.9 * total - 0.05  # the breakdown accounts for the wait
    n = int(re.match(r"\*\*(\d+) objects", md).group(1))
    assert n == run.objects > 10 and f"{n} objects" in files["label"] and files["visible"] is True
    assert shown.shape == (600, 900, 3) and run.image.shape == (600, 900, 3) and run.output_size == (600, 900)
    assert grid_btn["interactive"] is True
    names = sorted(os.path.basename(p) for p in files["value"])
    assert names == ["coco_street.json", "labels_street.png", "masks_street.zip"]
    coco = json.load(open(next(p for p in files["value"] if p.endswith(".json"))))
    with zipfile.ZipFile(next(p for p in files["value"] if p.endswith(".zip"))) as z:
        assert sorted(z.namelist()) == [f"mask{i:03d}.png" for i in range(1, n + 1)]
    assert len(coco["annotations"]) == n
    assert "reuse" not in md.lower()


def test_everything_uses_the_segment_tab_image(ctx, uploaded):
    s = upload(ctx, uploaded(OBJECTAWARE_FIXTURE / "image.png", "street.png"))[0]
    (shown, md, files, run, *_), _ = everything(ctx, None, s)
    assert run.name == "street.png" and run.objects > 0 and "coco_street.json" in str(files["value"])
    out = everything_tab.on_everything_from_segment(ctx, CONF, 0.9, 1024, 0, 0, False, s, progress=no_progress)
    assert len(out) == 8 and out[-1] is None  # clears this tab's own upload
    with pytest.raises(gr.Error, match="Upload an image first"):
        everything(ctx, None, None)
    with pytest.raises(gr.Error, match="Segment anything tab first"):
        everything_tab.on_everything_from_segment(ctx, CONF, 0.9, 1024, 0, 0, False, None, progress=no_progress)


def test_grid_comparison_reuses_the_run_and_reports_progress(ctx, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(everything_tab, "GRID_SIDE", 4)
    img = np.array(Image.open(OBJECTAWARE_FIXTURE / "image.png").convert("RGB"))[:300, :400]
    run = everything_tab.EverythingRun(image=img, output_size=(300, 400), name="x.png", objects=7, seconds=2.0)
    monkeypatch.setattr(everything_tab, "run_everything", lambda *a, **k: pytest.fail("the run is not repeated"))
    steps = list(everything_tab.on_grid(ctx, run, progress=no_progress))
    assert "encoding" in steps[0][0] and steps[0][3]["visible"] is True  # Cancel shown while it runs
    assert any("/16 points" in s[0] for s in steps[1:-1])
    md, grid_out, grid_btn, cancel = steps[-1]
    assert "Grid 4×4" in md and "objects in" in md and grid_out["visible"] is True
    assert grid_out["value"].shape == img.shape and grid_btn["interactive"] is True and cancel["visible"] is False
    with pytest.raises(gr.Error, match="Run Segment everything first"):
        next(everything_tab.on_grid(ctx, None, progress=no_progress))


def test_grid_cancel_stops_the_work(ctx, monkeypatch):
    """Gradio cancels a generator handler by not resuming it (and closing it): no batch runs after."""
    monkeypatch.setattr(everything_tab, "GRID_SIDE", 4)  # 16 points in 4 batches of 4 (real: 1024 in 64 of 16)
    batches, closed = [], []
    real = everything_tab.grid_steps

    def counting_steps(*args, **kwargs):
        inner = real(*args, points_per_batch=4, **kwargs)
        try:
            while True:
                try:
                    step = next(inner)
                except StopIteration as done:
                    return done.value  # the records
                batches.append(step)
                yield step
        finally:
            closed.append(True)

    monkeypatch.setattr(everything_tab, "grid_steps", counting_steps)
    img = np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    run = everything_tab.EverythingRun(image=img, output_size=(200, 300), name="x.png", objects=1, seconds=1.0)
    gen = everything_tab.on_grid(ctx, run, progress=no_progress)
    next(gen), next(gen), next(gen)
    assert len(batches) == 2
    gen.close()  # the page went away: Gradio closes the generator
    assert closed == [True] and len(batches) == 2  # stopped after the batch in progress, of 4
    assert everything_tab.on_grid_cancel(ctx)[1]["interactive"] is True

    # Cancel (#21 item 5): the run stops itself before its next batch and says so, no error;
    # another page's run goes on, and a run started after a Cancel is not touched by it
    page, other = SimpleNamespace(session_hash="page-a"), SimpleNamespace(session_hash="page-b")
    batches.clear(), closed.clear()
    mine = everything_tab.on_grid(ctx, run, request=page, progress=no_progress)
    theirs = everything_tab.on_grid(ctx, run, request=other, progress=no_progress)
    next(mine), next(mine), next(theirs), next(theirs)
    md, grid_btn, cancel = everything_tab.on_grid_cancel(ctx, page)
    assert md.startswith("Cancelling") and cancel["visible"] is False
    md, _, grid_btn, cancel = next(mine)
    assert md.startswith("Grid comparison cancelled") and grid_btn["interactive"] is True
    with pytest.raises(StopIteration):
        next(mine)
    assert closed == [True]
    assert list(theirs)[-1][0].startswith("Grid 4×4")  # another page's run finished
    again = everything_tab.on_grid(ctx, run, request=page, progress=no_progress)
    assert list(again)[-1][0].startswith("Grid 4×4")


def test_a_session_released_by_the_budget_comes_back_by_itself(ctx, uploaded):
    """The session budget first drops what it can make again (image, embedding): the next
    click reads the upload again and re-encodes, and the visitor's kept objects and mask stay.
    Dropped entirely (or with the upload gone), the next action says to upload again."""
    path = uploaded(MOBILESAM_FIXTURE / "image.png")
    s = upload(ctx, path)[0]
    s = segment_tab.on_click(ctx, s, "Add (+)", True, gr.SelectData(None, {"index": [300, 400], "value": None}))[0]
    s = segment_tab.keep_object(ctx, s)[0]
    s = segment_tab.on_click(ctx, s, "Add (+)", True, gr.SelectData(None, {"index": [500, 300], "value": None}))[0]
    before = s.result.low_res.copy()
    full = s.nbytes()
    s.release()
    assert s.cold and not s.evicted and s.nbytes() < full / 4 and len(s.objects) == 1
    s = segment_tab.clear(ctx, s)[0]  # any action restores first
    assert not s.cold and s.embedding is not None and s.size == (800, 799)
    s = segment_tab.on_click(ctx, s, "Add (+)", True, gr.SelectData(None, {"index": [500, 300], "value": None}))[0]
    assert np.abs(s.result.low_res - before).max() <= 1e-4 and len(s.objects) == 1
    s.release(everything=True)
    with pytest.raises(gr.Error, match="Upload it again"):
        segment_tab.undo(ctx, s)
    s2 = upload(ctx, path)[0]
    s2.release()
    os.remove(path)  # the upload expired meanwhile
    with pytest.raises(gr.Error, match="Upload it again"):
        segment_tab.undo(ctx, s2)


def test_the_embedding_of_a_released_session_comes_back_for_its_page(ctx, uploaded):
    from mobilesam_web.ui.api import read_upload

    store = EmbeddingStore(restore=lambda x: x.restore(lambda p: read_upload(ctx.services, p), ctx.services))
    s = upload(ctx, uploaded(MOBILESAM_FIXTURE / "image.png"))[0]
    token = store.put(s)
    before = store.get(token)
    s.release()
    assert s.cold and store.get(token) == before and not s.cold
    s.release(everything=True)
    assert store.get(token) is None


def test_browser_mode_status_gives_facts_only(ctx, uploaded, sam_cases):
    """#21: in browser mode the widget's line says what is happening; the status below it never
    contradicts it ("ready — click an object" while the widget shows a mask): facts only."""
    path = uploaded(MOBILESAM_FIXTURE / "image.png")
    s, _, _, info, *_ = segment_tab.on_upload(ctx, path, True, True, progress=no_progress)
    assert s.in_browser and info == "**799×800** · image encoded (onnxruntime) · 0 object(s) kept"
    mask = {"low_res_f16": f16(sam_cases["a_low_res_logits"][0]), "score": 0.9, "points": [[300, 400, 1]]}
    info = segment_tab.on_browser_keep(ctx, s, True, event(mask))[3]
    assert info.endswith("· 1 object(s) kept")
    # server mode again: the next step is back
    out = segment_tab.on_toggle_browser(ctx, s, False, True)
    assert not s.in_browser and out[-1].endswith("ready — click an object")
    assert segment_tab.on_toggle_browser(ctx, s, True, True)[-1].endswith("· 1 object(s) kept")
    # a page in server mode uploads: the status leads as before
    s2 = segment_tab.on_upload(ctx, path, True, False, progress=no_progress)[0]
    assert not s2.in_browser


def test_cutouts_at_the_photos_size(ctx, uploaded, sam_cases, tmp_path):
    """#21 item 6: a photo larger than the working copy (here 3000x2000 against 2048): masks,
    label map and cut-outs all at 3000x2000, in both modes; each cut-out is its mask's box of
    the photo's own pixels."""
    from PIL import Image

    rng = np.random.default_rng(3)
    photo = cv2.resize(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8), (3000, 2000), interpolation=cv2.INTER_CUBIC)
    src = tmp_path / "big photo.png"
    Image.fromarray(photo).save(src)
    s = segment_tab.on_upload(ctx, uploaded(src), True, True, progress=no_progress)[0]
    assert s.size == (1365, 2048) and s.user_size == (2000, 3000)
    mask = {"low_res_f16": f16(sam_cases["a_low_res_logits"][0]), "score": 0.9, "points": [[300, 400, 1]]}
    s = segment_tab.on_browser_keep(ctx, s, True, event(mask))[0]
    s = actions.add_click(ctx.services, s, 900.0, 700.0, "add")
    for files in (segment_tab.on_browser_export(ctx, s, event({})), segment_tab.on_export(ctx, s)):
        paths = files["value"]
        masks = sorted(p for p in paths if "_mask_" in p)
        cuts = sorted(p for p in paths if "_cutout_" in p)
        assert masks and len(masks) == len(cuts)
        labels = cv2.imread(next(p for p in paths if "labels_" in p), cv2.IMREAD_UNCHANGED)
        assert labels.shape == (2000, 3000)
        for m, c in zip(masks, cuts):
            m = cv2.imread(m, cv2.IMREAD_UNCHANGED) > 0
            cut = cv2.cvtColor(cv2.imread(c, cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)
            ys, xs = np.nonzero(m)
            y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
            assert cut.shape[:2] == (y1 - y0 + 1, x1 - x0 + 1)
            inside = m[y0 : y1 + 1, x0 : x1 + 1]
            assert np.array_equal(cut[..., 3] > 0, inside)
            assert np.array_equal(cut[..., :3][inside], photo[y0 : y1 + 1, x0 : x1 + 1][inside])


def test_everything_names_every_stage_on_its_bar(ctx, uploaded):
    """#21 item 8: Gradio shows a step's name only beside a fraction: every stage of a run
    reports one, in order, on one bar that never goes back."""
    seen = []

    def progress(frac, desc=None, **kw):
        seen.append((frac, desc))

    everything_tab.on_everything(
        ctx, uploaded(OBJECTAWARE_FIXTURE / "image.png"), CONF, 0.9, 1024, 0, 0, False, None, progress=progress
    )
    fractions = [f for f, _ in seen]
    assert all(f is not None and 0 < f < 1 for f in fractions), seen
    assert fractions == sorted(fractions), seen
    descs = [d for _, d in seen]
    order = ["reading image", "loading the detector", "encoding image", "detecting objects", "decoded ",
             "post-processing masks", "writing downloads", "drawing the objects"]  # fmt: skip
    at = [next(i for i, d in enumerate(descs) if d.startswith(name)) for name in order]
    assert at == sorted(at), descs
