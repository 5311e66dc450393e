"""Downloads for both tabs: mask PNGs, cut-outs, a label map and COCO JSON (RLE + polygons)."""
import json
import os
import re
import tempfile
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np

from ..boxes import mask_bbox
from ..masks import coco_annotations, cutout_png, mask_png


def _stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.splitext(os.path.basename(name or "image"))[0])
    return stem[:60] or "image"


def records_from_masks(masks: List[np.ndarray], scores: List[float]) -> List[Dict[str, Any]]:
    recs = []
    for m, s in zip(masks, scores):
        x0, y0, x1, y1 = mask_bbox(m)
        recs.append({"segmentation": m, "area": int(m.sum()), "bbox": [x0, y0, x1 - x0, y1 - y0],
                     "predicted_iou": float(s)})
    return recs


def write_exports(image: np.ndarray, records: List[Dict[str, Any]], name: str, cutouts: bool = True,
                  max_files: int = 50, size: Optional[Tuple[int, int]] = None) -> List[str]:
    """Write the downloads into a fresh temp folder; returns their paths. Masks are in `size`
    (the user's image, default the image's own size); cut-outs are cut from `image`."""
    folder = tempfile.mkdtemp(prefix="mobilesam-export-")
    stem = _stem(name)
    paths = []
    size = tuple(size or image.shape[:2])
    coco = coco_annotations(records, size, file_name=os.path.basename(name or "image.png"))
    p = os.path.join(folder, f"{stem}_coco.json")
    with open(p, "w") as f:
        json.dump(coco, f)
    paths.append(p)
    masks = [r["segmentation"] for r in records]
    if masks:
        labels = np.zeros(size, np.uint16)
        for i, m in enumerate(masks, 1):  # later objects on top
            labels[m] = i
        p = os.path.join(folder, f"{stem}_labels.png")
        cv2.imwrite(p, labels if len(masks) > 255 else labels.astype(np.uint8))
        paths.append(p)
        union = np.any(np.stack(masks), axis=0)
        p = os.path.join(folder, f"{stem}_all_masks.png")
        with open(p, "wb") as f:
            f.write(mask_png(union))
        paths.append(p)
    for i, m in enumerate(masks[:max_files], 1):
        p = os.path.join(folder, f"{stem}_object{i:03d}_mask.png")
        with open(p, "wb") as f:
            f.write(mask_png(m))
        paths.append(p)
        if cutouts:
            p = os.path.join(folder, f"{stem}_object{i:03d}_cutout.png")
            with open(p, "wb") as f:
                if m.shape != image.shape[:2]:  # the working copy was downscaled
                    m = cv2.resize(m.astype(np.uint8), image.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
                f.write(cutout_png(image, m))
            paths.append(p)
    return paths
