"""Bad input to the predictor gets a clear ValueError/RuntimeError, never a deep traceback; bad
parameters to the app a clear UserError, with the same ranges as the detector's."""

import re

import numpy as np
import pytest
import torch

from mobilesam_web import SamPredictor
from mobilesam_web.everything.detector import CONF_RANGE, NMS_IOU_RANGE, postprocess
from mobilesam_web.ui.params import (
    parse_box,
    parse_detector_conf,
    parse_detector_nms_iou,
    parse_fraction,
    parse_imgsz,
    parse_labels,
    parse_points,
)
from mobilesam_web.ui.segment_session import UserError

from conftest import OBJECTAWARE_FIXTURE, REPO_ROOT, require


def test_predict_before_set_image(sam_model):
    p = SamPredictor(sam_model)
    with pytest.raises(RuntimeError, match="set_image"):
        p.predict(point_coords=np.array([[1, 1]]), point_labels=np.array([1]))
    with pytest.raises(RuntimeError, match="set_image"):
        p.get_image_embedding()


@pytest.mark.parametrize(
    "image,match",
    [
        (np.zeros((10, 10), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((10, 10, 4), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        ([[1, 2, 3]], "numpy array"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
    ],
)
def test_bad_images(sam_model, image, match):
    with pytest.raises(ValueError, match=match):
        SamPredictor(sam_model).set_image(image)


def test_bad_image_format(sam_model):
    with pytest.raises(ValueError, match="image_format"):
        SamPredictor(sam_model).set_image(np.zeros((8, 8, 3), np.uint8), image_format="HSV")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(point_coords=np.array([[1.0, 2.0]])), "point_labels must be given"),
        (dict(point_labels=np.array([1])), "without point_coords"),
        (dict(point_coords=np.array([1.0, 2.0]), point_labels=np.array([1])), r"\(N, 2\)"),
        (dict(point_coords=np.array([[1.0, 2.0]]), point_labels=np.array([1, 1])), "to match"),
        (dict(point_coords=np.array([[1.0, 2.0]]), point_labels=np.array([2])), "0 \\(negative\\) or 1"),
        (dict(point_coords=np.array([[np.nan, 2.0]]), point_labels=np.array([1])), "NaN"),
        (dict(point_coords=np.array([[np.inf, 2.0]]), point_labels=np.array([1])), "NaN or infinite"),
        (dict(box=np.array([1.0, 2.0, 3.0])), "4 numbers"),
        (dict(box=np.array([10.0, 2.0, 3.0, 40.0])), "x2 >= x1"),
        (dict(box=np.array([1.0, 50.0, 30.0, 40.0])), "y2 >= y1"),
        (dict(box=np.array([1.0, np.nan, 30.0, 40.0])), "NaN"),
        (dict(box=np.array([1.0, 2.0, 30.0, 40.0]), mask_input=np.zeros((256, 256))), r"\(1, 256, 256\)"),
    ],
)
def test_bad_prompts(torch_predictor, kwargs, match):
    with pytest.raises(ValueError, match=match):
        torch_predictor.predict(**kwargs)


def test_good_prompt_variants(torch_predictor):
    """Lists, int coordinates and a (1, 4) box are accepted like upstream."""
    m1, _, _ = torch_predictor.predict(point_coords=[[100, 200]], point_labels=[1], multimask_output=False)
    m2, _, _ = torch_predictor.predict(
        point_coords=np.array([[100.0, 200.0]]), point_labels=np.array([1]), multimask_output=False
    )
    assert (m1 == m2).all()
    b1, _, _ = torch_predictor.predict(box=np.array([[10, 20, 300, 400]]), multimask_output=False)
    b2, _, _ = torch_predictor.predict(box=[10, 20, 300, 400], multimask_output=False)
    assert (b1 == b2).all()


def test_bgr_input_equals_rgb(sam_model):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    a, b = SamPredictor(sam_model), SamPredictor(sam_model)
    a.set_image(rgb)
    b.set_image(np.ascontiguousarray(rgb[..., ::-1]), image_format="BGR")
    assert torch.equal(a.features, b.features)


def test_set_torch_image_checks_shape(sam_model):
    with pytest.raises(ValueError, match="longest side"):
        SamPredictor(sam_model).set_torch_image(torch.zeros(1, 3, 100, 100), (100, 100))


def test_reset_image(sam_model):
    p = SamPredictor(sam_model)
    p.set_image(np.zeros((20, 30, 3), np.uint8))
    assert p.is_image_set and p.original_size == (20, 30) and p.input_size == (683, 1024)
    p.reset_image()
    assert not p.is_image_set and p.features is None


# ----------------------------------------------- the app's parameters (ui/params.py, issue 18)
HUGE = 10**400  # valid JSON, too large for a float: float() raises OverflowError


@pytest.mark.parametrize(
    "parse,match",
    [
        (lambda: parse_points([[HUGE, 2]], 64), "points contain NaN, infinite or too large"),
        (lambda: parse_points([[1, 2], [3, -HUGE]], 64), "points contain NaN, infinite or too large"),
        (lambda: parse_box([0, 0, HUGE, 5]), "box contain NaN, infinite or too large"),
        (lambda: parse_labels([HUGE], 1), r"labels must be 1 \(include\) or 0"),
        (lambda: parse_fraction("Min predicted IoU", HUGE, 0.0), "Min predicted IoU must be a number"),
        (lambda: parse_detector_conf(HUGE, 0.4), "detector_conf must be a number between 0 and 1"),
        (lambda: parse_detector_nms_iou(-HUGE, 0.9), "detector_nms_iou must be a number"),
        (lambda: parse_imgsz(HUGE, 1024, 320, 1280), "imgsz must be a whole number"),
        (lambda: parse_imgsz(str(HUGE), 1024, 320, 1280), "imgsz must be a whole number"),
    ],
)
def test_integers_too_large_for_a_float_get_a_clear_error(parse, match):
    with pytest.raises(UserError, match=match):
        parse()


def test_large_but_finite_integers_are_numbers():
    assert parse_points([[10**300, 1]], 64)[0, 0] == 1e300
    with pytest.raises(UserError, match="imgsz must be between 320 and 1280"):
        parse_imgsz(10**300, 1024, 320, 1280)


@pytest.fixture(scope="module")
def detector():
    from mobilesam_web import ObjectAwareDetector

    return ObjectAwareDetector.from_checkpoint(require(OBJECTAWARE_FIXTURE / "objectaware_random.pt"))


@pytest.mark.parametrize("conf,iou", [(1, 0.9), (0.4, 0), (1.0, 1.0)])
def test_documented_bounds_run(detector, conf, iou):
    """conf=1 and iou=0 are in the README's ranges, the app's and now the detector's too
    (it refused them: "conf must be in [0, 1) and iou in (0, 1]")."""
    assert parse_detector_conf(conf, 0.4) == conf and parse_detector_nms_iou(iou, 0.9) == iou
    boxes, scores = detector(np.full((48, 64, 3), 128, np.uint8), imgsz=320, conf=conf, iou=iou)
    assert boxes.shape == (len(scores), 4)
    if conf == 1:
        assert len(boxes) == 0  # a box is kept when its score > conf


@pytest.mark.parametrize("conf,iou", [(0, 0.9), (-0.1, 0.9), (1.5, 0.9), (np.nan, 0.9), (0.4, -0.01), (0.4, 1.01)])
def test_same_refusals_in_the_app_and_the_detector(detector, conf, iou):
    bad, allowed = ("conf", CONF_RANGE) if conf not in CONF_RANGE else ("iou", NMS_IOU_RANGE)
    with pytest.raises(ValueError, match=re.escape(f"{bad} must be in {allowed}")):
        detector(np.zeros((8, 8, 3), np.uint8), imgsz=320, conf=conf, iou=iou)
    with pytest.raises(UserError, match=re.escape(f"must be in {allowed}") + "|must be a number"):
        parse_detector_conf(conf, 0.4) if bad == "conf" else parse_detector_nms_iou(iou, 0.9)


def test_nms_iou_zero_keeps_no_overlapping_boxes():
    """iou=0: a box overlapping a kept one at all is dropped (on the fixture's real head output)."""
    cases = np.load(require(OBJECTAWARE_FIXTURE / "cases.npz"))
    preds, hw = cases["c640_preds0"][0], cases["c640_input_u8"].shape[2:]
    loose, _ = postprocess(preds, hw, (600, 900), conf=0.25, iou=0.9)
    strict, _ = postprocess(preds, hw, (600, 900), conf=0.25, iou=0.0)
    assert 0 < len(strict) < len(loose)
    for i, a in enumerate(strict):
        for b in strict[i + 1 :]:
            assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1])


def test_readme_states_the_same_ranges():
    readme = (REPO_ROOT / "README.md").read_text()
    assert f"`detector_conf` must be in {CONF_RANGE}, `detector_nms_iou` in {NMS_IOU_RANGE}" in readme


@pytest.mark.parametrize(
    "values,match",
    [
        ([7, 1024, None], "greater than maximum value 1"),
        ([0.5, 99, None], "not in the list of choices"),
        (["x", 1024, None], "Expected a `float`, but the value passed .* was: 'x'"),
        ([0.5], "didn't receive enough input values \\(needed: 3, got: 1\\)"),
        ([0.5, 1024, 5], "not a valid FileData"),
    ],
)
def test_gradio_refusals_become_quiet_errors(values, match):
    """quiet_input_errors: what Gradio refuses before a handler runs reaches the client as a
    gr.Error that Gradio does not print a traceback for (print_exception=False)."""
    import asyncio

    import gradio as gr

    from mobilesam_web.ui.errors import quiet_input_errors

    with gr.Blocks() as demo:
        inputs = [gr.Slider(0, 1, value=0.5), gr.Dropdown([640, 1024], value=1024), gr.File()]
        gr.Button().click(lambda *a: None, inputs, gr.JSON())
    fn = next(iter(demo.fns.values()))
    quiet_input_errors(demo)
    with pytest.raises(gr.Error, match=match) as err:
        asyncio.run(demo.preprocess_data(fn, values, None))
    assert err.value.print_exception is False and "Original error" not in err.value.message
