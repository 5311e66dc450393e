"""Segment-tab handlers, exports and the everything handler, without a server."""
import json
import os

import cv2
import numpy as np
import pytest

from mobilesam_web.ui import segment as seg
from mobilesam_web.ui.services import AppConfig, load_services

from conftest import OBJECTAWARE_FIXTURE, assert_masks_close


@pytest.fixture(scope="module")
def services(sam_weights_path, tmp_path_factory):
    cfg = AppConfig(checkpoint=str(sam_weights_path), onnx_cache_dir=str(tmp_path_factory.mktemp("onnx")),
                    detector_checkpoint=str(OBJECTAWARE_FIXTURE / "objectaware_random.pt"))
    s = load_services(cfg)
    assert s.ready, s.sam_error
    return s


@pytest.fixture()
def session(services, sam_image):
    return seg.start_session(services, sam_image, "photo.png")


def test_click_matches_predictor(session, services, sam_cases):
    (x, y), = sam_cases["a_point_coords"]
    s = seg.add_click(services, session, float(x), float(y), "add")
    assert s.result.low_res.shape == (3, 256, 256)
    assert np.abs(s.result.scores - sam_cases["a_iou_predictions"]).max() <= 1e-5
    assert s.result.selected == int(np.argmax(sam_cases["a_iou_predictions"]))
    assert_masks_close(s.current_mask()[None], sam_cases["a_masks"][s.result.selected][None])


def test_box_by_two_clicks_and_negative_point(session, services, sam_cases):
    x0, y0, x1, y1 = sam_cases["c_box"]
    s = seg.add_click(services, session, float(x1), float(y1), "box")
    assert s.result is None and s.prompts.corner is not None
    s = seg.add_click(services, s, float(x0), float(y0), "box")
    assert s.prompts.box == (float(x0), float(y0), float(x1), float(y1))
    assert s.result.low_res.shape[0] == 1
    assert np.abs(s.result.low_res[0] - sam_cases["c_low_res_logits"][0]).max() <= 1e-4
    s = seg.set_box(services, seg.clear(s), sam_cases["d_box"].tolist())
    (px, py), = sam_cases["d_point_coords"]
    s = seg.add_click(services, s, float(px), float(py), "remove", refine=False)
    assert np.abs(s.result.low_res[0] - sam_cases["d_low_res_logits"][0]).max() <= 1e-4


def test_refinement_uses_previous_mask(services, sam_image):
    def two_clicks(refine):
        s = seg.add_click(services, seg.start_session(services, sam_image), 300.0, 400.0, "add")
        return seg.add_click(services, s, 420.0, 380.0, "add", refine=refine)

    with_mask, without = two_clicks(True), two_clicks(False)
    assert with_mask.result.low_res.shape == (1, 256, 256)
    assert np.abs(with_mask.result.low_res - without.result.low_res).max() > 0.1


def test_undo_clear_keep_remove(session, services):
    s = seg.add_click(services, session, 100, 100, "add")
    s = seg.add_click(services, s, 300, 200, "add")
    assert len(s.prompts.points) == 2
    s = seg.undo(s)
    assert len(s.prompts.points) == 1 and s.result.low_res.shape[0] == 3
    s = seg.keep_object(s)
    assert len(s.objects) == 1 and s.prompts.empty() and s.result is None
    s = seg.add_click(services, s, 500, 500, "add")
    s = seg.keep_object(s)
    assert len(s.objects) == 2
    s = seg.remove_object(s)
    assert len(s.objects) == 1
    s = seg.undo(seg.clear(s))
    assert s.prompts.empty()
    with pytest.raises(seg.UserError):
        seg.keep_object(s)


def test_candidate_selection(session, services):
    s = seg.add_click(services, session, 320, 400, "add")
    thumbs = seg.candidate_thumbnails(s)
    assert len(thumbs) == 3 and all("IoU" in cap for _, cap in thumbs)
    s = seg.select_candidate(s, 0)
    assert s.result.selected == 0
    with pytest.raises(seg.UserError):
        seg.select_candidate(s, 7)


@pytest.mark.parametrize("x,y", [(-1, 5), (5, 10_000), (float("nan"), 3)])
def test_clicks_outside_or_nan(session, services, x, y):
    with pytest.raises(seg.UserError):
        seg.add_click(services, session, x, y, "add")


def test_render_draws_mask_and_markers(session, services):
    plain = seg.render(session)
    s = seg.add_click(services, session, 320, 400, "add")
    drawn = seg.render(s)
    assert drawn.shape == plain.shape and drawn.dtype == np.uint8
    assert (np.abs(drawn.astype(int) - plain.astype(int)).sum(-1) > 30).mean() > 0.05


def test_render_large_image_is_display_sized(services):
    img = np.random.default_rng(0).integers(0, 255, (1500, 2000, 3), dtype=np.uint8)
    s = seg.start_session(services, img)
    assert s.display_scale == pytest.approx(1024 / 2000)
    s = seg.add_click(services, s, 1000, 700, "add")
    assert seg.render(s).shape == (768, 1024, 3)
    assert s.current_mask().shape == (1500, 2000)


def test_exports(session, services, tmp_path):
    from mobilesam_web.ui.exports import records_from_masks, write_exports
    from pycocotools import mask as mask_utils

    s = seg.keep_object(seg.add_click(services, session, 320, 400, "add"))
    s = seg.keep_object(seg.add_click(services, s, 600, 150, "add"))
    masks = s.object_masks()
    paths = write_exports(s.image, records_from_masks(masks, [o.score for o in s.objects]), "my photo.jpg")
    names = sorted(os.path.basename(p) for p in paths)
    assert "my_photo_coco.json" in names and "my_photo_labels.png" in names
    assert "my_photo_object001_cutout.png" in names and "my_photo_object002_mask.png" in names
    coco = json.load(open(next(p for p in paths if p.endswith("_coco.json"))))
    assert len(coco["annotations"]) == 2 and coco["images"][0]["height"] == 800
    ann = coco["annotations"][0]
    dec = mask_utils.decode({"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()})
    assert (dec.astype(bool) == masks[0]).all()
    assert ann["polygons"] and len(ann["polygons"][0]) >= 6
    cut = cv2.imread(next(p for p in paths if p.endswith("object001_cutout.png")), cv2.IMREAD_UNCHANGED)
    assert cut.shape[2] == 4
    mask_png = cv2.imread(next(p for p in paths if p.endswith("object001_mask.png")), cv2.IMREAD_UNCHANGED)
    assert ((mask_png > 0) == masks[0]).all()


def test_two_sessions_are_independent(services, sam_image):
    a = seg.start_session(services, sam_image)
    b = seg.start_session(services, np.ascontiguousarray(sam_image[::2, ::2]))
    a = seg.add_click(services, a, 100, 100, "add")
    b = seg.add_click(services, b, 50, 50, "remove")
    assert a.prompts.points == [(100.0, 100.0, 1)] and b.prompts.points == [(50.0, 50.0, 0)]
    assert a.size == (800, 799) and b.size == (400, 400)


def test_everything_handler(services):
    from PIL import Image

    from mobilesam_web.ui.everything_tab import render_records, run_everything

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
