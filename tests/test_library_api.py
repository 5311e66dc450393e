"""The segment-anything API on both engines: sam_model_registry, the predictor attributes that
scripts use, predict_torch, no-prompt parity, and SamAutomaticMaskGenerator with every official
parameter (min_mask_region_area, point_grids, crop layers)."""

import hashlib

import cv2
import numpy as np
import pytest
import torch

from conftest import amg_case, assert_masks_close


@pytest.fixture(scope="module")
def onnx_predictor(shared_onnx_cache, sam_weights_path, sam_image):
    """Image set once; read-only use (generators get predictors of their own)."""
    from mobilesam_web import load_predictor

    p = load_predictor(sam_weights_path, cache_dir=shared_onnx_cache)
    p.set_image(sam_image)
    return p


@pytest.fixture
def fresh(onnx_predictor, sam_model):
    """New predictors (no image) for the generators, which set and reset images."""
    from mobilesam_web import SamPredictor
    from mobilesam_web.engine.onnx.predictor import OnnxSamPredictor

    return {"torch": SamPredictor(sam_model), "onnx": OnnxSamPredictor(onnx_predictor.engine)}


def encodes_once(model):
    """A torch SamPredictor that keeps its last embedding through reset_image and encodes again
    only for another image: the generators set and reset the image on every run, and the tests
    below run several generators on one image (the encoder is not what they check)."""
    from mobilesam_web import SamPredictor

    class EncodesOnce(SamPredictor):
        kept = None

        def set_image(self, image, image_format="RGB"):
            key = (image.shape, image_format, hashlib.sha256(np.ascontiguousarray(image).tobytes()).digest())
            if self.kept is not None and self.kept[0] == key:
                return self.set_embedding(*self.kept[1:])
            super().set_image(image, image_format)
            self.kept = (key, self.features, self.original_size)

    return EncodesOnce(model)


def assert_same_outputs(a, b, masks_frac=1e-4):
    """(masks, iou, low_res) of two predictors: fixture tolerances."""
    ma, ia, la = (np.asarray(x.numpy() if isinstance(x, torch.Tensor) else x) for x in a)
    mb, ib, lb = (np.asarray(x.numpy() if isinstance(x, torch.Tensor) else x) for x in b)
    assert ia.shape == ib.shape and la.shape == lb.shape and ma.shape == mb.shape
    assert np.abs(ia - ib).max() <= 1e-5
    assert np.abs(la - lb).max() <= 1e-4
    assert_masks_close(ma, mb, masks_frac)


# -- sam_model_registry -----------------------------------------------------------------------


def test_sam_model_registry_drop_in(sam_weights_path, sam_model, sam_image, sam_cases):
    from mobilesam_web import SamPredictor, sam_model_registry
    from mobilesam_web.engine.modeling import Sam

    sam = sam_model_registry["vit_t"](checkpoint=str(sam_weights_path))
    assert isinstance(sam, Sam) and not sam.training
    for k, v in sam_model.state_dict().items():
        assert torch.equal(sam.state_dict()[k], v), k
    assert sam_model_registry["default"] is sam_model_registry["vit_t"]
    assert isinstance(sam_model_registry["vit_t"](), Sam)  # no checkpoint: random weights, as upstream
    with pytest.raises(KeyError, match="vit_b, vit_h, vit_l, vit_t"):
        sam_model_registry["vit_x"]
    predictor = SamPredictor(sam)
    predictor.set_image(sam_image)
    assert np.abs(predictor.get_image_embedding().numpy() - sam_cases["embedding"]).max() <= 1e-4


# -- the predictor interface ------------------------------------------------------------------


def test_both_predictors_implement_the_protocol(onnx_predictor, torch_predictor):
    from mobilesam_web import Predictor

    for p in (onnx_predictor, torch_predictor):
        assert isinstance(p, Predictor)
        assert p.model.mask_threshold == 0.0 and p.model.image_format == "RGB" and p.model.img_size == 1024
        assert p.device == torch.device("cpu")
        assert p.original_size == (800, 799) and p.input_size == (1024, 1023) and p.is_image_set
        assert p.transform.apply_coords(np.array([[799.0, 800.0]]), p.original_size).tolist() == [[1023.0, 1024.0]]
    assert (
        np.abs(np.asarray(onnx_predictor.get_image_embedding()) - torch_predictor.get_image_embedding().numpy()).max()
        <= 1e-4
    )


def test_onnx_reset_and_set_torch_image(onnx_predictor, sam_image, sam_cases):
    from mobilesam_web.engine.onnx.predictor import OnnxSamPredictor

    p = OnnxSamPredictor(onnx_predictor.engine)
    p.set_image(sam_image)
    p.reset_image()
    assert not p.is_image_set and p.features is None and p.original_size is None
    with pytest.raises(RuntimeError, match="set_image"):
        p.get_image_embedding()
    resized = p.transform.apply_image(sam_image)
    p.set_torch_image(torch.as_tensor(resized).permute(2, 0, 1)[None].float(), sam_image.shape[:2])
    assert p.input_size == (1024, 1023) and p.original_size == (800, 799)
    assert np.abs(p.features - sam_cases["embedding"]).max() <= 1e-4


def test_no_prompt_matches_torch(onnx_predictor, torch_predictor):
    """SAM decodes "no prompt" with no sparse tokens (not with a padding point)."""
    for multi in (True, False):
        assert_same_outputs(
            onnx_predictor.predict(multimask_output=multi), torch_predictor.predict(multimask_output=multi)
        )
    _, iou, _ = torch_predictor.predict()
    assert np.abs(iou - [-0.0986, -0.1548, 0.2404]).max() < 1e-3  # the official scores (issue 11)


def test_mask_only_prompt_matches_torch(onnx_predictor, torch_predictor, sam_cases):
    mask = sam_cases["e_mask_input"]
    assert_same_outputs(
        onnx_predictor.predict(mask_input=mask, multimask_output=False),
        torch_predictor.predict(mask_input=mask, multimask_output=False),
    )


def test_predict_torch_matches_torch(onnx_predictor, torch_predictor, sam_cases):
    p = torch_predictor
    boxes = p.transform.apply_boxes_torch(torch.as_tensor(sam_cases["g_boxes"]), p.original_size)
    points = p.transform.apply_coords_torch(
        torch.tensor([[[400.0, 300.0]], [[100.0, 700.0]], [[650.5, 80.0]]]), p.original_size
    )
    labels = torch.ones(3, 1, dtype=torch.int)
    masks_in = torch.as_tensor(sam_cases["a_low_res_logits"][:, None])  # (3, 1, 256, 256)
    calls = [
        dict(point_coords=points, point_labels=labels, multimask_output=True),
        dict(point_coords=points, point_labels=labels, mask_input=masks_in, multimask_output=False),
        dict(point_coords=None, point_labels=None, boxes=boxes, multimask_output=False),  # batched box graph
        dict(point_coords=None, point_labels=None, boxes=boxes[:3], multimask_output=True),
        dict(point_coords=points, point_labels=labels, boxes=boxes[:3], multimask_output=False),
        dict(point_coords=None, point_labels=None, return_logits=True),
    ]
    for kw in calls:
        out = onnx_predictor.predict_torch(**kw)
        assert all(isinstance(t, torch.Tensor) for t in out)
        ref = p.predict_torch(**kw)
        assert out[0].dtype == ref[0].dtype
        if kw.get("return_logits"):
            assert np.abs(out[0].numpy() - ref[0].numpy()).max() <= 5e-4  # cv2 vs torch resize
            out, ref = (out[0] > 0, *out[1:]), (ref[0] > 0, *ref[1:])
        assert_same_outputs(out, ref)
    masks, iou, low = onnx_predictor.predict_torch(None, None, boxes, multimask_output=False)
    assert np.abs(low.numpy() - sam_cases["g_low_res_logits"]).max() <= 1e-4
    assert_masks_close(masks.numpy(), sam_cases["g_masks"])
    with pytest.raises(ValueError, match="batch sizes"):
        onnx_predictor.predict_torch(points, labels, boxes)


# -- SamAutomaticMaskGenerator ----------------------------------------------------------------


def records_close(ours, ref, n_pix):
    assert len(ours) == len(ref)
    assert np.abs(np.array([r["predicted_iou"] for r in ours]) - [r["predicted_iou"] for r in ref]).max() <= 1e-5
    assert np.abs(np.array([r["stability_score"] for r in ours]) - [r["stability_score"] for r in ref]).max() <= 1e-4
    assert np.abs(np.array([r["area"] for r in ours]) - [r["area"] for r in ref]).max() <= 1e-4 * n_pix
    assert np.abs(np.array([r["bbox"] for r in ours]) - [r["bbox"] for r in ref]).max() <= 1
    assert [r["crop_box"] for r in ours] == [r["crop_box"] for r in ref]


@pytest.mark.parametrize("prefix,nms_thresh", [("amg", 0.7), ("amg_nonms", 1.0)])
def test_generator_on_onnx_matches_official(fresh, sam_image, sam_cases, prefix, nms_thresh):
    from mobilesam_web import SamAutomaticMaskGenerator

    gen = SamAutomaticMaskGenerator(
        fresh["onnx"], points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=nms_thresh
    )
    records = gen.generate(sam_image)
    z = amg_case(sam_cases, prefix)
    assert len(records) == int(z["count"])
    assert np.abs(np.array([r["predicted_iou"] for r in records]) - z["predicted_iou"]).max() <= 1e-5
    assert np.abs(np.array([r["stability_score"] for r in records]) - z["stability_score"]).max() <= 1e-4
    assert np.abs(np.array([r["area"] for r in records]) - z["area"]).max() <= 1e-4 * sam_image[..., 0].size
    assert np.abs(np.array([r["bbox"] for r in records]) - z["bbox"]).max() <= 1
    if "masks" in z:
        assert_masks_close(np.stack([r["segmentation"] for r in records]), z["masks"])


def test_point_grids_parameter(sam_model, sam_image):
    from mobilesam_web import SamAutomaticMaskGenerator
    from mobilesam_web.everything.grid import build_point_grid

    kw = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    once = encodes_once(sam_model)
    a = SamAutomaticMaskGenerator(once, points_per_side=3, **kw).generate(sam_image)
    b = SamAutomaticMaskGenerator(once, points_per_side=None, point_grids=[build_point_grid(3)], **kw).generate(
        sam_image
    )
    assert [r["point_coords"] for r in a] == [r["point_coords"] for r in b]
    assert [r["predicted_iou"] for r in a] == [r["predicted_iou"] for r in b]
    custom = SamAutomaticMaskGenerator(once, points_per_side=None, point_grids=[np.array([[0.5, 0.25]])], **kw)
    pts = {tuple(r["point_coords"][0]) for r in custom.generate(sam_image)}
    assert pts == {(0.5 * 799, 0.25 * 800)}
    with pytest.raises(ValueError, match="exactly one"):
        SamAutomaticMaskGenerator(sam_model, point_grids=[build_point_grid(3)])
    with pytest.raises(ValueError, match="one grid per crop layer"):
        SamAutomaticMaskGenerator(sam_model, points_per_side=None, point_grids=[build_point_grid(3)], crop_n_layers=1)
    with pytest.raises(TypeError, match="predictor"):
        SamAutomaticMaskGenerator(object())


def test_remove_small_regions_semantics():
    from mobilesam_web.everything.grid import remove_small_regions

    m = np.zeros((20, 20), bool)
    m[2:12, 2:12] = True
    m[5:7, 5:7] = False  # a 4-pixel hole
    m[15:17, 15:17] = True  # a 4-pixel island
    m[0, 19] = True  # a 1-pixel island touching nothing
    filled, changed = remove_small_regions(m, 5, "holes")
    assert changed and filled[5:7, 5:7].all() and filled[15:17, 15:17].all()
    cleaned, changed = remove_small_regions(filled, 5, "islands")
    assert changed and not cleaned[15:17, 15:17].any() and not cleaned[0, 19] and cleaned[2:12, 2:12].all()
    same, changed = remove_small_regions(cleaned, 5, "islands")
    assert not changed and (same == cleaned).all()
    # The background's big region is never filled; diagonal pixels are one region (8-connected).
    _, changed = remove_small_regions(np.ones((4, 4), bool), 100, "holes")
    assert not changed
    diag = np.eye(4, dtype=bool)
    _, changed = remove_small_regions(diag, 4, "islands")
    assert not changed
    # Every island is small: the largest one stays.
    two = np.zeros((10, 10), bool)
    two[0, 0] = True
    two[5:7, 5:7] = True
    kept, changed = remove_small_regions(two, 50, "islands")
    assert changed and kept.sum() == 4 and kept[5:7, 5:7].all()
    with pytest.raises(ValueError, match="holes"):
        remove_small_regions(m, 5, "both")


def test_min_mask_region_area_on_both_engines(fresh, sam_image):
    from mobilesam_web import SamAutomaticMaskGenerator
    from mobilesam_web.everything.grid import remove_small_regions

    kw = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    fresh["torch"] = encodes_once(fresh["torch"].model)
    plain = SamAutomaticMaskGenerator(fresh["torch"], **kw).generate(sam_image)
    results = {
        name: SamAutomaticMaskGenerator(p, min_mask_region_area=2000, **kw).generate(sam_image)
        for name, p in fresh.items()
    }
    records_close(results["onnx"], results["torch"], sam_image[..., 0].size)
    cleaned = results["torch"]
    assert 0 < len(cleaned) <= len(plain)
    assert any(r["area"] != q["area"] for r in cleaned for q in plain if q["point_coords"] == r["point_coords"])
    for r in cleaned:
        m = r["segmentation"]
        assert not remove_small_regions(m, 2000, "holes")[1]
        # No island under 2000 px is left, except a mask's only island (kept as the largest).
        n_islands = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)[0] - 1
        assert not remove_small_regions(m, 2000, "islands")[1] or n_islands == 1
        ys, xs = np.nonzero(m)
        assert r["area"] == m.sum() and r["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]


def test_tied_scores_follow_torch_sort():
    """torchvision's NMS kernel sorts scores stably (`scores.sort(/*stable=*/true, ...)` in
    csrc/ops/cpu/nms_kernel.cpp): tied scores keep their input order (#22 item 8a: with torch's
    unstable sort 8 of 192 records of the official generator were out of place); above 1000
    boxes its re-sort of the kept indices is torch's default sort."""
    from mobilesam_web.everything.grid import sam_batched_nms

    rng = np.random.default_rng(0)
    n = 40
    xy = rng.uniform(0, 500, (n, 2))
    boxes = np.concatenate([xy, xy + 10], axis=1).astype(np.float32)  # far apart: nothing suppressed
    scores = np.repeat(np.float32([0.5, 1.0, 0.25, 0.5]), 10)
    keep = sam_batched_nms(boxes, scores, 0.7)
    assert keep.tolist() == np.argsort(-scores, kind="stable").tolist()  # input order on ties
    assert keep.tolist() != torch.sort(torch.as_tensor(scores), descending=True).indices.tolist()
    # Above 1000 boxes torchvision re-sorts the kept indices (ascending) by score.
    big = np.tile(boxes, (30, 1)) + np.repeat(np.arange(30), n)[:, None].astype(np.float32) * 1000
    big_scores = np.tile(scores, 30)
    keep = sam_batched_nms(big, big_scores, 0.7)
    assert keep.tolist() == torch.sort(torch.as_tensor(big_scores), descending=True).indices.tolist()


def test_crop_layers_on_both_engines(fresh, sam_image):
    """crop_n_layers=1: the same masks in the same order from both engines (ties included)."""
    from mobilesam_web import SamAutomaticMaskGenerator

    kw = dict(
        points_per_side=2,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        crop_n_layers=1,
        box_nms_thresh=1.0,
        crop_nms_thresh=1.0,
    )
    image = np.ascontiguousarray(sam_image[::4, ::4])
    t = SamAutomaticMaskGenerator(fresh["torch"], **kw).generate(image)
    o = SamAutomaticMaskGenerator(fresh["onnx"], **kw).generate(image)
    # Random weights give near-full masks, which the crop-edge rule drops in the 4 small crops:
    # what remains are whole-image masks that all tie on the crop score.
    assert len(t) >= 2
    records_close(o, t, image[..., 0].size)
    for a, b in zip(o, t):
        assert_masks_close(a["segmentation"], b["segmentation"])
