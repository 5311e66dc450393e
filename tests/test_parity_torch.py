"""The PyTorch engine against the official MobileSAM outputs (fixture README tolerances)."""

import numpy as np
import pytest
import torch

from conftest import PROMPT_CASES, amg_case, assert_masks_close, case_prompts


def test_embedding(torch_predictor, sam_cases):
    ours = torch_predictor.get_image_embedding().numpy()
    ref = sam_cases["embedding"]
    assert ours.shape == (1, 256, 64, 64)
    assert np.abs(ours - ref).max() <= 1e-4
    assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) <= 1e-5


def test_sizes(torch_predictor, sam_cases):
    assert torch_predictor.original_size == tuple(sam_cases["original_size"].tolist())
    assert torch_predictor.input_size == tuple(sam_cases["input_size"].tolist())


@pytest.mark.parametrize("case", list(PROMPT_CASES))
def test_prompt_case(torch_predictor, sam_cases, case):
    masks, iou, low_res = torch_predictor.predict(**case_prompts(sam_cases, case))
    assert masks.dtype == bool
    assert iou.shape == sam_cases[f"{case}_iou_predictions"].shape
    assert np.abs(iou - sam_cases[f"{case}_iou_predictions"]).max() <= 1e-5
    assert np.abs(low_res - sam_cases[f"{case}_low_res_logits"]).max() <= 1e-4
    assert_masks_close(masks, sam_cases[f"{case}_masks"])


def test_return_logits_thresholds_to_masks(torch_predictor, sam_cases):
    logits, _, _ = torch_predictor.predict(**case_prompts(sam_cases, "a"), return_logits=True)
    assert logits.dtype == np.float32
    assert_masks_close(logits > 0, sam_cases["a_masks"])


def test_batched_boxes(torch_predictor, sam_cases):
    boxes = torch.as_tensor(sam_cases["g_boxes"])
    transformed = torch_predictor.transform.apply_boxes_torch(boxes, torch_predictor.original_size)
    assert np.abs(transformed.numpy() - sam_cases["g_boxes_transformed"]).max() <= 1e-4
    masks, iou, low_res = torch_predictor.predict_torch(None, None, boxes=transformed, multimask_output=False)
    assert masks.shape == sam_cases["g_masks"].shape
    assert np.abs(iou.numpy() - sam_cases["g_iou_predictions"]).max() <= 1e-5
    assert np.abs(low_res.numpy() - sam_cases["g_low_res_logits"]).max() <= 1e-4
    assert_masks_close(masks.numpy(), sam_cases["g_masks"])


@pytest.mark.parametrize("prefix,nms_thresh", [("amg", 0.7), ("amg_nonms", 1.0)])
def test_grid_generator(sam_model, sam_image, sam_cases, prefix, nms_thresh):
    from mobilesam_web import SamAutomaticMaskGenerator

    gen = SamAutomaticMaskGenerator(
        sam_model, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=nms_thresh
    )
    records = gen.generate(sam_image)
    z = amg_case(sam_cases, prefix)
    assert len(records) == int(z["count"])
    iou = np.array([r["predicted_iou"] for r in records])
    assert np.abs(iou - z["predicted_iou"]).max() <= 1e-5  # also pins the order
    assert np.abs(np.array([r["stability_score"] for r in records]) - z["stability_score"]).max() <= 1e-4
    n_pix = sam_image.shape[0] * sam_image.shape[1]
    assert np.abs(np.array([r["area"] for r in records]) - z["area"]).max() <= 1e-4 * n_pix
    assert np.abs(np.array([r["bbox"] for r in records]) - z["bbox"]).max() <= 1
    assert np.abs(np.array([r["point_coords"][0] for r in records]) - z["point_coords"]).max() <= 1e-6
    assert (np.array([r["crop_box"] for r in records]) == z["crop_box"]).all()
    if "masks" in z:
        assert_masks_close(np.stack([r["segmentation"] for r in records]), z["masks"])


def test_grid_generator_coco_rle_matches_binary(sam_model, sam_image):
    from pycocotools import mask as mask_utils

    from mobilesam_web import SamAutomaticMaskGenerator

    kw = dict(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    binary = SamAutomaticMaskGenerator(sam_model, **kw).generate(sam_image)
    coco = SamAutomaticMaskGenerator(sam_model, output_mode="coco_rle", **kw).generate(sam_image)
    assert len(binary) == len(coco) > 0
    for b, c in zip(binary, coco):
        decoded = mask_utils.decode({"size": c["segmentation"]["size"], "counts": c["segmentation"]["counts"].encode()})
        assert (decoded.astype(bool) == b["segmentation"]).all()
        assert c["area"] == int(b["segmentation"].sum())


def test_grid_generator_with_crop_layer(sam_model):
    """Crop layers run and give masks at the full image size, uncropped into place."""
    from mobilesam_web import SamAutomaticMaskGenerator

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    gen = SamAutomaticMaskGenerator(
        sam_model, points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0, crop_n_layers=1
    )
    records = gen.generate(image)
    assert records
    crops = {tuple(r["crop_box"]) for r in records}
    for r in records:
        assert r["segmentation"].shape == (96, 128)
        x, y, w, h = r["crop_box"]
        outside = r["segmentation"].copy()
        outside[y : y + h, x : x + w] = False
        assert not outside.any(), "a crop's mask leaks outside its crop"
    assert all(len(c) == 4 for c in crops)
