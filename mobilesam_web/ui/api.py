"""Stateless API endpoints (usable with gradio_client without the UI).

Every call gets its own predictor; the only thing shared between callers is the read-only
model and the embedding cache keyed by image content.
"""
from typing import Any, Dict, List, Optional

import numpy as np

from ..image_io import ImageLoadError, load_image
from ..masks import coco_annotations, mask_to_coco_rle
from .everything_tab import run_everything
from .segment import UserError


def _floats(name: str, value, shape_last: Optional[int] = None) -> Optional[np.ndarray]:
    if value is None or (isinstance(value, (list, tuple)) and len(value) == 0):
        return None
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be numbers, got {value!r}") from None
    if shape_last is not None and (arr.ndim != 2 or arr.shape[1] != shape_last):
        raise UserError(f"{name} must be a list of [x, y] pairs, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise UserError(f"{name} contains NaN or infinite values")
    return arr


def segment_api(services, image_path: str, points: Optional[List[List[float]]] = None,
                labels: Optional[List[int]] = None, box: Optional[List[float]] = None,
                multimask: bool = False, max_side: int = 2048) -> Dict[str, Any]:
    """Masks for one object from points (x, y in image pixels) and/or a box [x1, y1, x2, y2].
    Returns {"size": [H, W], "masks": [COCO RLE], "scores": [...], "areas": [...]}."""
    image = _load(image_path, max_side)
    pts = _floats("points", points, 2)
    lbl = None
    if pts is not None:
        if labels is None or len(labels) != len(pts):
            raise UserError("labels must give one label (1 = include, 0 = exclude) per point")
        lbl = np.asarray(labels)
    bx = _floats("box", box)
    if pts is None and bx is None:
        raise UserError("give at least one point or a box")
    h, w = image.shape[:2]
    for name, arr in (("points", pts), ("box", None if bx is None else bx.reshape(-1, 2))):
        if arr is not None and (np.any(arr[:, 0] < 0) or np.any(arr[:, 0] > w) or np.any(arr[:, 1] < 0)
                                or np.any(arr[:, 1] > h)):
            raise UserError(f"{name} fall outside the {w}x{h} image")
    predictor = services.new_predictor()
    predictor.set_image(image)
    try:
        masks, scores, _ = predictor.predict(pts, lbl, bx, multimask_output=bool(multimask))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    masks = masks.numpy() if hasattr(masks, "numpy") else masks
    scores = scores.numpy() if hasattr(scores, "numpy") else scores
    return {"size": [h, w], "masks": [mask_to_coco_rle(m) for m in masks],
            "scores": [float(s) for s in scores], "areas": [int(m.sum()) for m in masks]}


def everything_api(services, image_path: str, conf: float = 0.4, iou: float = 0.9, imgsz: int = 1024,
                   max_side: int = 2048) -> Dict[str, Any]:
    """COCO-format annotations (RLE + polygons) of every object MobileSAMv2 finds."""
    image = _load(image_path, max_side)
    records, timings = run_everything(services, image, conf, iou, imgsz, output_mode="binary_mask")
    coco = coco_annotations(records, image.shape[:2])
    coco["timings"] = {k: round(v, 4) for k, v in timings.items()}
    return coco


def _load(path: str, max_side: int) -> np.ndarray:
    if not path:
        raise UserError("no image was given")
    try:
        return load_image(path, max_side=max_side)[0]
    except ImageLoadError as exc:
        raise UserError(f"cannot use this image: {exc}") from None
