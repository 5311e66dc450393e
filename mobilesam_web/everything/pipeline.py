"""Segment everything, MobileSAMv2 style: detector boxes -> batched box-prompt decoding.

Instead of SAM's 32x32 grid of points (1024 prompts, 3 masks each, then heavy filtering), the
object-aware detector proposes at most a few hundred boxes and each is decoded once with
multimask_output=False. Runs on the CPU with the ONNX Runtime engine (or the torch one).
"""

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..data.boxes import inclusive_xyxy_to_xywh
from ..data.rle import low_res_to_coco_rle
from ..data.upscale import mask_crop_from_low_res
from ..data.validation import check_image
from ..engine.interface import Predictor
from .detector import ObjectAwareDetector

BOX_DECODER_BYTES = 40 << 20  # activations per box in one decoder batch (measured ~35 MB)
OUTPUT_MODES = ("binary_mask", "coco_rle", "crop")


def _low_res_stability(low: np.ndarray, offset: float = 1.0) -> np.ndarray:
    """SAM's stability score (IoU of the masks at +-offset), on the low-res logits."""
    inter = (low > offset).sum(axis=(1, 2))
    union = (low > -offset).sum(axis=(1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0).astype(np.float32)


def _mask_nms(low: np.ndarray, valid_hw, scores: np.ndarray, thresh: float) -> np.ndarray:
    """Greedy NMS on mask IoU, measured on the low-res masks (cropped to the image area)."""
    h, w = valid_hw
    m = (low[:, :h, :w] > 0).reshape(len(low), -1).astype(np.float32)
    inter = m @ m.T
    area = m.sum(1)
    iou = inter / np.maximum(area[:, None] + area[None, :] - inter, 1)
    order = np.argsort(-scores, kind="stable")
    keep, dropped = [], np.zeros(len(low), bool)
    for i in order:
        if dropped[i]:
            continue
        keep.append(i)
        dropped |= iou[i] > thresh
    return np.array(sorted(keep), dtype=np.int64)


class SegmentEverything:
    """MobileSAMv2 pipeline.

    predictor: any `Predictor` (the ONNX Runtime `OnnxSamPredictor`, fast, or the torch
    `SamPredictor`); boxes are decoded with its `predict_boxes`. One instance serves one
    request at a time (it sets the image on its predictor); create one per user or request.

    Filters (None = off; all off by default, which reproduces the official MobileSAMv2 output):
    pred_iou_thresh (keep predicted IoU > t), stability_score_thresh (keep >= t, SAM's score on
    the low-res logits), mask_nms_thresh (drop a mask whose mask IoU with a better-scored one
    exceeds t: near-duplicates from overlapping boxes), min_area (pixels).

    output_mode: "binary_mask" (full-size bool arrays, as SAM's generator gives: H x W bytes per
    object), "coco_rle" (COCO compressed RLE: what the app, the API and `segment` use) or
    "crop" (a `MaskCrop`: the mask's tight box). Every mask is made within its own box and
    encoded at once, so a 12-megapixel image with 300 objects never holds 300 full-size masks
    unless "binary_mask" asks for them.
    """

    def __init__(
        self,
        predictor: Predictor,
        detector: ObjectAwareDetector,
        imgsz: int = 1024,
        conf: float = 0.4,
        iou: float = 0.9,
        max_det: int = 300,
        pred_iou_thresh: Optional[float] = None,
        stability_score_thresh: Optional[float] = None,
        mask_nms_thresh: Optional[float] = None,
        min_area: int = 0,
        output_mode: str = "binary_mask",
        memory_budget_bytes: int = 256 << 20,
    ) -> None:
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}, got {output_mode!r}")
        self.predictor = predictor
        self.detector = detector
        self.imgsz, self.conf, self.iou, self.max_det = imgsz, conf, iou, max_det
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.mask_nms_thresh = mask_nms_thresh
        self.min_area = min_area
        self.output_mode = output_mode
        self.batch_size = max(1, int(memory_budget_bytes // BOX_DECODER_BYTES))
        self.timings: Dict[str, float] = {}

    def _decode(self, boxes: np.ndarray, progress: Callable[[float, str], None]):
        p = self.predictor
        lows, ious = [], []
        for s in range(0, len(boxes), self.batch_size):
            chunk = boxes[s : s + self.batch_size]
            _, iou, low = p.predict_boxes(chunk, low_res_only=True, batch_size=self.batch_size)
            lows.append(low[:, 0])
            ious.append(iou[:, 0])
            progress(min(1.0, (s + len(chunk)) / len(boxes)), f"decoded {s + len(chunk)}/{len(boxes)} boxes")
        if not lows:
            return np.zeros((0, 256, 256), np.float32), np.zeros(0, np.float32)
        return np.concatenate(lows), np.concatenate(ious)

    def generate(
        self,
        image: np.ndarray,
        progress: Optional[Callable[[float, str], None]] = None,
        output_size: Optional[Tuple[int, int]] = None,
    ) -> List[Dict[str, Any]]:
        """Records sorted by area (largest first), in the grid generator's format:
        segmentation, area, bbox (COCO XYWH: the tight box of every mask pixel), predicted_iou, stability_score,
        point_coords ([]: no point prompts), crop_box (the whole image), plus prompt_box
        (the detector's XYXY box) and detector_score.

        output_size: (H, W) to give masks and boxes in, when `image` is a downscaled copy of
        the user's image (default: the image's own size)."""
        progress = progress or (lambda f, s: None)
        image = check_image(image)
        h, w = image.shape[:2]
        t = {}
        t0 = time.perf_counter()
        progress(0.0, "encoding image")
        self.predictor.set_image(image)
        t["encode"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        progress(0.0, "detecting objects")
        boxes, det_scores = self.detector(image, imgsz=self.imgsz, conf=self.conf, iou=self.iou, max_det=self.max_det)
        t["detect"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        low, pred_iou = self._decode(boxes, progress)
        t["decode"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        progress(1.0, "post-processing masks")
        stab = _low_res_stability(low)
        keep = np.ones(len(low), bool)
        if self.pred_iou_thresh is not None:
            keep &= pred_iou > self.pred_iou_thresh
        if self.stability_score_thresh is not None:
            keep &= stab >= self.stability_score_thresh
        idx = np.nonzero(keep)[0]
        input_size = self.predictor.input_size
        if self.mask_nms_thresh is not None and len(idx) > 1:
            valid = ((input_size[0] + 3) // 4, (input_size[1] + 3) // 4)
            idx = idx[_mask_nms(low[idx], valid, pred_iou[idx], self.mask_nms_thresh)]
        oh, ow = output_size or (h, w)
        box_scale = np.array([ow / w, oh / h, ow / w, oh / h])

        def record(i: int) -> Optional[Dict[str, Any]]:
            if self.output_mode == "coco_rle":  # straight to RLE: no mask array at all
                seg, bounds, area = low_res_to_coco_rle(low[i], input_size, (oh, ow))
            else:
                crop = mask_crop_from_low_res(low[i], input_size, (oh, ow))
                area, bounds = (0, None) if crop is None else (crop.area, crop.bounds)
                seg = crop if self.output_mode == "crop" or crop is None else crop.full()
            if area == 0 or area < self.min_area:
                return None
            return {
                "segmentation": seg,
                "area": area,
                "bbox": inclusive_xyxy_to_xywh(bounds),
                "predicted_iou": float(pred_iou[i]),
                "stability_score": float(stab[i]),
                "point_coords": [],
                "crop_box": [0, 0, ow, oh],
                "prompt_box": [float(v) for v in boxes[i] * box_scale],
                "detector_score": float(det_scores[i]),
            }

        # two masks at a time: their numpy passes are single-threaded and release the GIL
        with ThreadPoolExecutor(max_workers=2) as pool:
            records = [r for r in pool.map(record, idx) if r is not None]
        records.sort(key=lambda r: -r["area"])
        t["postprocess"] = time.perf_counter() - t0
        t["boxes"] = float(len(boxes))
        self.timings = t
        progress(1.0, "done")
        return records
