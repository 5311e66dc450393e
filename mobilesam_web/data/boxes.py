"""Box utilities: greedy NMS (torchvision semantics) and boxes of binary masks."""

from typing import Optional, Tuple

import numpy as np
import torch


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: Optional[int] = None) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices by descending score.

    Same arithmetic as torchvision.ops.nms: areas (x2-x1)*(y2-y1), a box is dropped when its IoU
    with a kept box is strictly greater than the threshold, ties keep input order (stable sort).
    max_keep stops after that many kept boxes: the same first boxes as a full run then a cut.
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(len(boxes), dtype=bool)
    keep = []
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        if max_keep is not None and len(keep) >= max_keep:
            break
        rest = order[pos + 1 :]
        rest = rest[~suppressed[rest]]
        if len(rest) == 0:
            continue
        w = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[iou > iou_threshold]] = True
    return np.asarray(keep, dtype=np.int64)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(..., H, W) bool -> (..., 4) inclusive pixel boxes x0, y0, x1, y1; empty masks give 0s."""
    if masks.numel() == 0:
        return torch.zeros(*masks.shape[:-2], 4, device=masks.device, dtype=torch.long)
    shape = masks.shape
    h, w = shape[-2:]
    masks = masks.reshape(-1, h, w)
    rows = masks.any(dim=-1)
    cols = masks.any(dim=-2)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    bottom = torch.where(rows, ar_h, -1).max(dim=-1).values
    top = torch.where(rows, ar_h, h).min(dim=-1).values
    right = torch.where(cols, ar_w, -1).max(dim=-1).values
    left = torch.where(cols, ar_w, w).min(dim=-1).values
    out = torch.stack([left, top, right, bottom], dim=-1)
    empty = (right < left) | (bottom < top)
    out = out * (~empty).unsqueeze(-1)
    return out.reshape(*shape[:-2], 4)


def mask_bounds(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """Inclusive pixel box (x0, y0, x1, y1) of an (H, W) bool mask, None if it is empty."""
    rows = np.flatnonzero(np.any(mask, axis=1))
    if rows.size == 0:
        return None
    # columns only over the mask's rows: objects are usually small
    cols = np.flatnonzero(np.any(mask[rows[0] : rows[-1] + 1], axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def mask_bbox(mask: np.ndarray) -> list:
    """Inclusive pixel box [x0, y0, x1, y1] of an (H, W) bool mask ([0, 0, 0, 0] if empty):
    x1, y1 are the last mask column and row."""
    bounds = mask_bounds(mask)
    return [0, 0, 0, 0] if bounds is None else list(bounds)


def inclusive_xyxy_to_xywh(box) -> list:
    """An inclusive pixel box (x1, y1 = last pixel) -> COCO [x, y, w, h] that covers every pixel:
    w = x1 - x0 + 1. (SAM's own records use x1 - x0, one pixel short of the mask.)"""
    x0, y0, x1, y1 = (int(v) for v in box)
    return [x0, y0, x1 - x0 + 1, y1 - y0 + 1]


def mask_bbox_xywh(mask: np.ndarray) -> list:
    """COCO bbox [x, y, w, h] of an (H, W) bool mask: the tightest box containing every mask
    pixel ([0, 0, 0, 0] if the mask is empty)."""
    bounds = mask_bounds(mask)
    return [0, 0, 0, 0] if bounds is None else inclusive_xyxy_to_xywh(bounds)


def xyxy_to_xywh(box) -> list:
    """An exclusive box (x1, y1 = one past the last pixel, as crop boxes) -> [x, y, w, h]."""
    x0, y0, x1, y1 = [int(v) if float(v).is_integer() else float(v) for v in box]
    return [x0, y0, x1 - x0, y1 - y0]
