"""The everything tab's computations, without Gradio: MobileSAMv2 box prompts, SAM's grid
baseline for comparison, and the overlay of the results (the tab itself: everything_tab.py)."""

from typing import Any, Callable, Dict, Generator, List, Optional, Tuple

import numpy as np

from ..data.masks import overlay
from ..engine.predictor import SamPredictor
from ..everything.grid import SamAutomaticMaskGenerator
from ..everything.pipeline import SegmentEverything
from .segment_session import UserError


def run_everything(
    services,
    image: np.ndarray,
    conf: float = 0.4,
    iou: float = 0.9,
    imgsz: int = 1024,
    pred_iou_thresh: Optional[float] = None,
    stability_thresh: Optional[float] = None,
    mask_nms_thresh: Optional[float] = None,
    output_mode: str = "coco_rle",
    progress: Optional[Callable[[float, str], None]] = None,
    output_size: Optional[Tuple[int, int]] = None,
) -> Tuple[List[Dict[str, Any]], Dict[str, float]]:
    """MobileSAMv2 on `image`; masks and boxes come in `output_size` (the user's own image size
    when `image` was downscaled)."""
    detector = services.get_detector()
    if detector is None:
        raise UserError(f"Segment-everything needs the MobileSAMv2 object-aware detector. {services.detector_error}")
    se = SegmentEverything(
        services.new_predictor(for_everything=True),
        detector,
        imgsz=int(imgsz),
        conf=float(conf),
        iou=float(iou),
        pred_iou_thresh=pred_iou_thresh,
        stability_score_thresh=stability_thresh,
        mask_nms_thresh=mask_nms_thresh,
        output_mode=output_mode,
    )
    records = se.generate(image, progress=progress, output_size=output_size)
    return records, se.timings


GRID_BATCH = 16  # points per grid batch: progress and cancel every few seconds, bounded memory


def grid_steps(
    services, image: np.ndarray, points_per_side: int = 32, points_per_batch: int = GRID_BATCH
) -> Generator[Tuple[int, int], None, List[Dict[str, Any]]]:
    """SAM's grid generator (torch engine) for comparison, one batch of points per step: yields
    (points_done, points_total), returns the records. Stop iterating (or close it) to cancel."""
    if services.torch_model is None:
        raise UserError("The grid comparison needs the MobileSAM model.")
    gen = SamAutomaticMaskGenerator(
        SamPredictor(services.torch_model), points_per_side=points_per_side, points_per_batch=points_per_batch
    )
    return gen.iter_generate(image)


def render_records(image: np.ndarray, records: List[Dict[str, Any]]) -> np.ndarray:
    """Largest first, so small objects stay visible on top. Masks (RLE, crops or arrays, in
    the user's size) are drawn box by box over the (downscaled) image."""
    return overlay(image, [r["segmentation"] for r in records], alpha=0.5)
