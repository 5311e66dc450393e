"""The MobileSAMv2 segment-everything pipeline on the fixture weights."""

import numpy as np
import pytest
import torch

from conftest import assert_masks_close
from test_detector import det_ckpt, det_image  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def detector(det_ckpt):  # noqa: F811
    from mobilesam_web import ObjectAwareDetector

    return ObjectAwareDetector.from_checkpoint(det_ckpt)


@pytest.fixture(scope="module")
def onnx_predictor(shared_onnx_cache, sam_weights_path):
    from mobilesam_web import load_predictor

    return load_predictor(sam_weights_path, cache_dir=shared_onnx_cache)


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_box_batches_equal_fixture_case_g(backend, onnx_predictor, sam_model, sam_image, sam_cases, detector):
    """Batched box decoding (chunked by the memory budget) equals the official batched-box case."""
    from mobilesam_web import SamPredictor, SegmentEverything

    pred = onnx_predictor if backend == "onnx" else SamPredictor(sam_model)
    se = SegmentEverything(pred, detector, memory_budget_bytes=2 * (40 << 20))  # chunks of 2 boxes
    pred.set_image(sam_image)
    low, iou = se._decode(sam_cases["g_boxes"], lambda f, s: None)
    assert np.abs(low - sam_cases["g_low_res_logits"][:, 0]).max() <= 1e-4
    assert np.abs(iou - sam_cases["g_iou_predictions"][:, 0]).max() <= 1e-5


def test_full_resolution_masks_match_sam_postprocess(sam_model, sam_cases):
    from mobilesam_web.data.upscale import mask_from_low_res

    low = torch.as_tensor(sam_cases["g_low_res_logits"])
    ref = (sam_model.postprocess_masks(low, (1024, 1023), (800, 799)) > 0).numpy()[:, 0]
    ours = np.stack([mask_from_low_res(lo[0], (1024, 1023), (800, 799)) for lo in sam_cases["g_low_res_logits"]])
    assert_masks_close(ours, sam_cases["g_masks"][:, 0])
    assert_masks_close(ours, ref)
    for lo, r in zip(sam_cases["a_low_res_logits"], sam_cases["a_masks"]):
        assert_masks_close(mask_from_low_res(lo, (1024, 1023), (800, 799)), r)
    # Small objects: only the support region is computed, the rest is exactly empty.
    blob = np.full((256, 256), -4.0, np.float32)
    blob[100:104, 50:60] = 3.0
    t = torch.as_tensor(blob)[None, None]
    ref_blob = (sam_model.postprocess_masks(t, (683, 1024), (600, 900)) > 0).numpy()[0, 0]
    assert ref_blob.any()
    assert (mask_from_low_res(blob, (683, 1024), (600, 900)) == ref_blob).all()


def test_pipeline_records(onnx_predictor, detector, det_image):  # noqa: F811
    from mobilesam_web import SegmentEverything

    progress = []
    se = SegmentEverything(onnx_predictor, detector)
    records = se.generate(det_image, progress=lambda f, s: progress.append((f, s)))
    n_boxes = int(se.timings["boxes"])
    assert n_boxes == 137  # the detector fixture's c1024 count
    assert 0 < len(records) <= n_boxes
    assert set(se.timings) >= {"encode", "detect", "decode", "postprocess"}
    assert progress[-1][0] == 1.0 and any("decoded" in s for _, s in progress)
    areas = [r["area"] for r in records]
    assert areas == sorted(areas, reverse=True)
    h, w = det_image.shape[:2]
    for r in records[:20]:
        m = r["segmentation"]
        assert m.shape == (h, w) and m.dtype == bool
        assert r["area"] == int(m.sum()) > 0
        x, y, bw, bh = r["bbox"]  # COCO: the tight box containing every mask pixel
        ys, xs = np.nonzero(m)
        assert (x, y, x + bw - 1, y + bh - 1) == (xs.min(), ys.min(), xs.max(), ys.max())
        x0, y0, x1, y1 = r["prompt_box"]
        assert 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h
        assert isinstance(r["predicted_iou"], float) and 0 <= r["stability_score"] <= 1
        assert r["crop_box"] == [0, 0, w, h]


def test_pipeline_coco_rle_and_filters(onnx_predictor, detector, det_image):  # noqa: F811
    from pycocotools import mask as mask_utils

    from mobilesam_web import SegmentEverything

    few = dict(conf=0.9)  # 28 detector boxes on the street photo (0.4: 137): four runs below
    binary = SegmentEverything(onnx_predictor, detector, **few).generate(det_image)
    rle = SegmentEverything(onnx_predictor, detector, output_mode="coco_rle", **few).generate(det_image)
    assert len(rle) == len(binary)
    for a, b in zip(rle[:10], binary[:10]):
        dec = mask_utils.decode({"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()})
        assert (dec.astype(bool) == b["segmentation"]).all()
    ious = np.array([r["predicted_iou"] for r in binary])
    thresh = float(np.median(ious))
    filtered = SegmentEverything(onnx_predictor, detector, pred_iou_thresh=thresh, **few).generate(det_image)
    assert len(filtered) == int((ious > thresh).sum())
    deduped = SegmentEverything(onnx_predictor, detector, mask_nms_thresh=0.5, **few).generate(det_image)
    assert 0 < len(deduped) < len(binary)
    with pytest.raises(ValueError, match="output_mode"):
        SegmentEverything(onnx_predictor, detector, output_mode="png")


def test_prompt_guided_decoder_loads_strictly(tmp_path, sam_weights_path):
    from mobilesam_web import CheckpointError, build_mobile_sam, load_prompt_guided_decoder
    from mobilesam_web.engine.onnx.cache import weights_key

    torch.manual_seed(5)
    other = build_mobile_sam()  # random weights standing in for the v2 decoder
    path = tmp_path / "Prompt_guided_Mask_Decoder.pt"
    torch.save(
        {
            "PromtEncoder": other.prompt_encoder.state_dict(),
            "MaskDecoder": {k: v.half() for k, v in other.mask_decoder.state_dict().items()},
        },
        path,
    )
    model = load_prompt_guided_decoder(build_mobile_sam(sam_weights_path), path)
    k = "transformer.layers.0.mlp.lin1.weight"
    assert torch.equal(model.mask_decoder.state_dict()[k], other.mask_decoder.state_dict()[k].half().float())
    assert weights_key(sam_weights_path, path) != weights_key(sam_weights_path)
    bad = tmp_path / "bad.pt"
    torch.save({"MaskDecoder": other.mask_decoder.state_dict()}, bad)
    with pytest.raises(CheckpointError, match="PromtEncoder"):
        load_prompt_guided_decoder(build_mobile_sam(), bad)


def test_grid_bboxes_follow_sam_and_exports_contain_masks(sam_model, sam_image):
    """The SAM-compatible generator keeps SAM's record convention (w = last column - first);
    the COCO export measures each box on its mask, so the exported box contains it."""
    from mobilesam_web import SamAutomaticMaskGenerator
    from mobilesam_web.data.masks import coco_annotations

    records = SamAutomaticMaskGenerator(
        sam_model, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0
    ).generate(sam_image)
    assert records
    for r in records:
        ys, xs = np.nonzero(r["segmentation"])
        x, y, w, h = r["bbox"]
        assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max(), ys.max())
    for r, ann in zip(records, coco_annotations(records, sam_image.shape[:2])["annotations"]):
        ys, xs = np.nonzero(r["segmentation"])
        x, y, w, h = ann["bbox"]
        assert (x, y, x + w - 1, y + h - 1) == (xs.min(), ys.min(), xs.max(), ys.max())


def test_grid_reports_progress_and_stops_when_closed(sam_model):
    """One batch of points per step; closing the generator (a cancelled request) stops the work."""
    from mobilesam_web import SamAutomaticMaskGenerator, SamPredictor

    calls = []
    pred = SamPredictor(sam_model)
    real = pred.predict_torch
    pred.predict_torch = lambda *a, **k: calls.append(1) or real(*a, **k)
    image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    gen = SamAutomaticMaskGenerator(pred, points_per_side=4, points_per_batch=6)
    seen = []
    records = gen.generate(image, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(6, 16), (12, 16), (16, 16)] and len(calls) == 3
    assert isinstance(records, list)
    calls.clear()
    steps = gen.iter_generate(image)
    assert next(steps) == (6, 16) and next(steps) == (12, 16)
    steps.close()
    assert len(calls) == 2
    with pytest.raises(StopIteration):
        next(steps)
