"""`mobilesam-web eval GT.json PRED.json`: class-agnostic mask average recall, the metric of
MobileSAMv2's object-proposal table (mask AR@K on LVIS), computed the way the COCO API's
`COCOeval` computes it with `useCats=0` and `iouType="segm"`:

- per image, predictions ranked by score (stable) and cut to the best K;
- each, in that order, matched to the best still-unmatched ground truth with mask IoU >= t
  (a crowd region may take any number of predictions; its IoU is the intersection over the
  prediction's area), for t = 0.50, 0.55, ..., 0.95;
- recall at t = matched ground truths / ground truths, over all images, counting only ground
  truths in the area range (all; small < 32², medium, large >= 96² pixels by annotation area)
  and not crowd; AR = the mean over t.

Ground truth: COCO or LVIS JSON (polygons or RLE). Predictions: one of our COCO files (everything,
grid or boxes mode) or a list of results ({image_id, segmentation, score}). Images are matched by
file name where both sides name them, else by id.
"""

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .data.polygons import polygons_to_mask
from .data.rle import decode_rle_string, rle_to_crop

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
MAX_DETS = (10, 100, 1000)
AREA_RANGES = {"all": (0.0, 1e10), "small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, 1e10)}
SCORE_KEYS = ("score", "predicted_iou", "detector_score")


def _mask(segmentation: Any, h: int, w: int) -> np.ndarray:
    """Any COCO segmentation (polygons, RLE compressed or not) -> (H, W) bool."""
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, h, w)
    counts = segmentation["counts"]
    if isinstance(counts, list) and int(np.sum(counts)) != h * w:
        raise ValueError(f"an RLE of {int(np.sum(counts))} pixels in a {h}x{w} image")
    rle = {"size": segmentation.get("size", [h, w]), "counts": counts}
    if isinstance(counts, (str, bytes)):
        rle["counts"] = decode_rle_string(counts)
    crop = rle_to_crop(rle)
    return np.zeros((h, w), bool) if crop is None else crop.full()


def _image_keys(images: Sequence[Dict[str, Any]]) -> Dict[int, str]:
    out = {}
    for im in images:
        name = im.get("file_name") or im.get("coco_url") or ""
        out[int(im["id"])] = Path(str(name)).name
    return out


def _predictions(pred: Any, gt_images: Sequence[Dict[str, Any]], score_key: Optional[str]) -> Dict[int, List[dict]]:
    """Predictions per ground-truth image id, each {"segmentation", "score"}."""
    if isinstance(pred, dict):
        anns, images = pred.get("annotations", []), pred.get("images", [])
    else:
        anns, images = pred, []
    gt_names = _image_keys(gt_images)
    by_name = {name: i for i, name in gt_names.items() if name}
    pred_names = _image_keys(images)
    out: Dict[int, List[dict]] = {i: [] for i in gt_names}
    for a in anns:
        pid = int(a["image_id"])
        name = pred_names.get(pid, "")
        gid = by_name.get(name) if name and by_name else pid
        if gid not in out:
            continue
        key = score_key or next((k for k in SCORE_KEYS if k in a), None)
        if key is None:
            raise ValueError(f"a prediction has no score (looked for {', '.join(SCORE_KEYS)})")
        out[gid].append({"segmentation": a["segmentation"], "score": float(a[key])})
    return out


def _ious(dts: List[np.ndarray], gts: List[np.ndarray], crowd: np.ndarray) -> np.ndarray:
    """(D, G) mask IoU; against a crowd region, intersection over the prediction's area."""
    if not dts or not gts:
        return np.zeros((len(dts), len(gts)))
    g = np.stack([m.ravel() for m in gts]).astype(np.float32)
    g_area = g.sum(1)
    out = np.zeros((len(dts), len(gts)))
    for i, d in enumerate(dts):
        dv = d.ravel().astype(np.float32)
        inter = g @ dv
        d_area = dv.sum()
        union = np.where(crowd, d_area, d_area + g_area - inter)
        out[i] = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    return out


def _matched(ious: np.ndarray, order: np.ndarray, gt_ignore: np.ndarray, crowd: np.ndarray, t: float) -> np.ndarray:
    """Which ground truths the predictions (in `order`) match at IoU threshold t (COCOeval's greedy rule)."""
    g_order = np.argsort(gt_ignore, kind="mergesort")  # counted ground truths first
    taken = np.zeros(len(crowd), bool)
    for d in order:
        best, m = min(t, 1 - 1e-10), -1
        for g in g_order:
            if taken[g] and not crowd[g]:
                continue
            if m > -1 and not gt_ignore[m] and gt_ignore[g]:
                break  # a counted match beats any ignored one
            if ious[d, g] < best:
                continue
            best, m = ious[d, g], g
        if m > -1:
            taken[m] = True
    return taken


def image_recall_counts(gt_anns: List[dict], preds: List[dict], h: int, w: int, max_dets: Sequence[int]) -> np.ndarray:
    """(len(max_dets), len(AREA_RANGES), len(IOU_THRESHOLDS), 2): matched and counted ground truths."""
    gts = [_mask(a["segmentation"], h, w) for a in gt_anns]
    crowd = np.array([bool(a.get("iscrowd", 0)) for a in gt_anns], bool)
    area = np.array([float(a["area"]) if "area" in a else float(m.sum()) for a, m in zip(gt_anns, gts)])
    order = np.argsort([-p["score"] for p in preds], kind="mergesort")[: max(max_dets, default=0)]
    dts = [_mask(preds[i]["segmentation"], h, w) for i in order]
    ious = _ious(dts, gts, crowd)
    out = np.zeros((len(max_dets), len(AREA_RANGES), len(IOU_THRESHOLDS), 2))
    for a_i, (lo, hi) in enumerate(AREA_RANGES.values()):
        ignore = crowd | (area < lo) | (area > hi)
        for k_i, k in enumerate(max_dets):
            kept = np.arange(min(k, len(dts)))
            for t_i, t in enumerate(IOU_THRESHOLDS):
                taken = _matched(ious, kept, ignore, crowd, float(t))
                out[k_i, a_i, t_i] = ((taken & ~ignore).sum(), (~ignore).sum())
    return out


def mask_average_recall(
    gt: Dict[str, Any], pred: Any, max_dets: Sequence[int] = MAX_DETS, score_key=None
) -> Dict[str, float]:
    """{"AR@K": ..., "AR_small@K", "AR_medium@K", "AR_large@K" for the largest K}; -1 where
    there is no ground truth to recall."""
    images = gt.get("images", [])
    preds = _predictions(pred, images, score_key)
    by_image: Dict[int, List[dict]] = {int(im["id"]): [] for im in images}
    for a in gt.get("annotations", []):
        if int(a["image_id"]) in by_image:
            by_image[int(a["image_id"])].append(a)
    total = np.zeros((len(max_dets), len(AREA_RANGES), len(IOU_THRESHOLDS), 2))
    for im in images:
        i = int(im["id"])
        total += image_recall_counts(by_image[i], preds[i], int(im["height"]), int(im["width"]), max_dets)
    matched, counted = total[..., 0], total[..., 1]
    recall = np.where(counted > 0, matched / np.maximum(counted, 1), -1.0)

    def ar(k_i: int, a_i: int) -> float:
        r = recall[k_i, a_i]
        return float(r[r > -1].mean()) if (r > -1).any() else -1.0

    out = {f"AR@{k}": ar(k_i, 0) for k_i, k in enumerate(max_dets)}
    for a_i, name in list(enumerate(AREA_RANGES))[1:]:
        out[f"AR_{name}@{max_dets[-1]}"] = ar(len(max_dets) - 1, a_i)
    return out


def format_table(result: Dict[str, float]) -> str:
    rows = ["| metric | value |", "| --- | --- |"]
    rows += [f"| {k} | {'n/a' if v < 0 else f'{100 * v:.1f}%'} |" for k, v in result.items()]
    return "\n".join(rows)


def load_json(path: str) -> Any:
    import json

    with open(path) as f:
        return json.load(f)


def evaluate_files(
    gt_path: str, pred_path: str, max_dets: Tuple[int, ...] = MAX_DETS, score_key=None
) -> Dict[str, float]:
    return mask_average_recall(load_json(gt_path), load_json(pred_path), max_dets, score_key)
