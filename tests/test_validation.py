"""Bad input to the predictor gets a clear ValueError/RuntimeError, never a deep traceback."""

import numpy as np
import pytest
import torch

from mobilesam_web import SamPredictor


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
