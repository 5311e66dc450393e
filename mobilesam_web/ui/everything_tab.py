"""Everything tab: MobileSAMv2 box prompts (and the grid baseline for comparison)."""
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

from ..everything import SegmentEverything
from ..grid import SamAutomaticMaskGenerator
from ..masks import overlay
from ..predictor import SamPredictor
from .segment import UserError


def run_everything(services, image: np.ndarray, conf: float = 0.4, iou: float = 0.9, imgsz: int = 1024,
                   pred_iou_thresh: Optional[float] = None, stability_thresh: Optional[float] = None,
                   mask_nms_thresh: Optional[float] = None, output_mode: str = "binary_mask",
                   progress: Optional[Callable[[float, str], None]] = None,
                   output_size: Optional[Tuple[int, int]] = None
                   ) -> Tuple[List[Dict[str, Any]], Dict[str, float]]:
    """MobileSAMv2 on `image`; masks and boxes come in `output_size` (the user's own image size
    when `image` was downscaled)."""
    detector = services.get_detector()
    if detector is None:
        raise UserError(f"Segment-everything needs the MobileSAMv2 object-aware detector. {services.detector_error}")
    se = SegmentEverything(services.new_predictor(for_everything=True), detector, imgsz=int(imgsz),
                           conf=float(conf), iou=float(iou), pred_iou_thresh=pred_iou_thresh,
                           stability_score_thresh=stability_thresh, mask_nms_thresh=mask_nms_thresh,
                           output_mode=output_mode)
    records = se.generate(image, progress=progress, output_size=output_size)
    return records, se.timings


def run_grid(services, image: np.ndarray, points_per_side: int = 32,
             progress: Optional[Callable[[float, str], None]] = None
             ) -> Tuple[List[Dict[str, Any]], float]:
    """SAM's grid generator (torch engine) for comparison; returns records and seconds."""
    t = time.perf_counter()
    pred = SamPredictor(services.torch_model)
    gen = SamAutomaticMaskGenerator(pred, points_per_side=points_per_side)
    if progress:
        progress(0.0, f"grid {points_per_side}x{points_per_side}: decoding {points_per_side ** 2} points")
    records = gen.generate(image)
    return records, time.perf_counter() - t


def render_records(image: np.ndarray, records: List[Dict[str, Any]]) -> np.ndarray:
    """Largest first, so small objects stay visible on top. Masks in another size than the
    (downscaled) image are resized to it for display."""
    h, w = image.shape[:2]
    masks = [r["segmentation"] for r in records]
    masks = [m if m.shape == (h, w) else cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
             for m in masks]
    return overlay(image, masks, alpha=0.5)
