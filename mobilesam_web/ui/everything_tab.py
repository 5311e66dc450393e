"""Everything tab: MobileSAMv2 box prompts (and the grid baseline for comparison)."""
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..everything import SegmentEverything
from ..grid import SamAutomaticMaskGenerator
from ..masks import overlay
from ..predictor import SamPredictor
from .segment import UserError


def run_everything(services, image: np.ndarray, conf: float = 0.4, iou: float = 0.9, imgsz: int = 1024,
                   pred_iou_thresh: Optional[float] = None, stability_thresh: Optional[float] = None,
                   mask_nms_thresh: Optional[float] = None, output_mode: str = "binary_mask",
                   progress: Optional[Callable[[float, str], None]] = None
                   ) -> Tuple[List[Dict[str, Any]], Dict[str, float]]:
    detector = services.get_detector()
    if detector is None:
        raise UserError(f"Segment-everything needs the MobileSAMv2 object-aware detector. {services.detector_error}")
    se = SegmentEverything(services.new_predictor(for_everything=True), detector, imgsz=int(imgsz),
                           conf=float(conf), iou=float(iou), pred_iou_thresh=pred_iou_thresh,
                           stability_score_thresh=stability_thresh, mask_nms_thresh=mask_nms_thresh,
                           output_mode=output_mode)
    records = se.generate(image, progress=progress)
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
    """Largest first, so small objects stay visible on top."""
    return overlay(image, [r["segmentation"] for r in records], alpha=0.5)
