"""Mask encodings: uncompressed and COCO-compressed RLE, areas, stability scores."""
from typing import Any, Dict, List

import numpy as np
import torch


def masks_to_rle(masks: torch.Tensor) -> List[Dict[str, Any]]:
    """(B, H, W) bool -> uncompressed COCO RLE dicts {"size": [H, W], "counts": [...]}.

    Counts run over the mask in column-major (Fortran) order and start with a run of zeros.
    """
    b, h, w = masks.shape
    if b == 0:
        return []
    flat = masks.permute(0, 2, 1).reshape(b, h * w)
    out = []
    for i in range(b):
        change = torch.nonzero(flat[i, 1:] != flat[i, :-1]).flatten() + 1
        idx = torch.cat([change.new_zeros(1), change, change.new_tensor([h * w])])
        runs = (idx[1:] - idx[:-1]).tolist()
        counts = ([0] if bool(flat[i, 0]) else []) + runs
        out.append({"size": [h, w], "counts": counts})
    return out


def rle_to_mask(rle: Dict[str, Any]) -> np.ndarray:
    """Uncompressed or compressed RLE -> (H, W) bool."""
    h, w = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = decode_rle_string(counts)
    flat = np.zeros(h * w, dtype=bool)
    pos, val = 0, False
    for c in counts:
        if val:
            flat[pos:pos + c] = True
        pos += c
        val = not val
    return flat.reshape(w, h).T


def area_from_rle(rle: Dict[str, Any]) -> int:
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = decode_rle_string(counts)
    return int(sum(counts[1::2]))


def encode_rle_string(counts: List[int]) -> str:
    """COCO's compact string form of RLE counts (as pycocotools' rleToString)."""
    chars = []
    for i, x in enumerate(counts):
        x = int(x)
        if i > 2:
            x -= int(counts[i - 2])
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
    return "".join(chars)


def decode_rle_string(s) -> List[int]:
    """Inverse of `encode_rle_string`."""
    if isinstance(s, bytes):
        s = s.decode("ascii")
    counts: List[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def coco_rle(rle: Dict[str, Any]) -> Dict[str, Any]:
    """Uncompressed RLE -> COCO compressed RLE {"size": [H, W], "counts": str}."""
    return {"size": list(rle["size"]), "counts": encode_rle_string(rle["counts"])}


def mask_to_coco_rle(mask: np.ndarray) -> Dict[str, Any]:
    return coco_rle(masks_to_rle(torch.as_tensor(np.asarray(mask, dtype=bool))[None])[0])


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU between the masks thresholded at threshold +- offset: (..., H, W) -> (...)."""
    inter = (logits > (threshold + offset)).sum(-1, dtype=torch.int32).sum(-1, dtype=torch.int32)
    union = (logits > (threshold - offset)).sum(-1, dtype=torch.int32).sum(-1, dtype=torch.int32)
    return inter / union


def mask_polygons(mask: np.ndarray, min_area: float = 4.0, epsilon: float = 0.75) -> List[List[float]]:
    """Outer contours of a mask as COCO-style flat polygons [x1, y1, x2, y2, ...] (OpenCV)."""
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        if cv2.contourArea(c) < min_area:
            continue
        c = cv2.approxPolyDP(c, epsilon, True)
        if len(c) >= 3:
            polys.append([float(v) for v in c.reshape(-1)])
    return polys


def coco_annotations(records: List[Dict[str, Any]], image_size, file_name: str = "image.png",
                     category: str = "object") -> Dict[str, Any]:
    """COCO-format dict (one image, one category) with RLE segmentations and polygons."""
    h, w = image_size
    anns = []
    for i, r in enumerate(records, 1):
        seg = r["segmentation"]
        mask = rle_to_mask(seg) if isinstance(seg, dict) else np.asarray(seg, bool)
        rle = seg if isinstance(seg, dict) and isinstance(seg.get("counts"), str) else mask_to_coco_rle(mask)
        ann = {"id": i, "image_id": 1, "category_id": 1, "segmentation": rle, "area": int(r.get("area", mask.sum())),
               "bbox": list(r["bbox"]), "iscrowd": 0, "polygons": mask_polygons(mask)}
        for k in ("predicted_iou", "stability_score", "prompt_box", "detector_score", "label"):
            if k in r:
                ann[k] = r[k]
        anns.append(ann)
    return {"images": [{"id": 1, "file_name": file_name, "height": int(h), "width": int(w)}],
            "categories": [{"id": 1, "name": category}], "annotations": anns}


def mask_png(mask: np.ndarray) -> bytes:
    """Binary mask as an 8-bit PNG (0 / 255)."""
    import cv2

    ok, buf = cv2.imencode(".png", mask.astype(np.uint8) * 255)
    return buf.tobytes()


def cutout_png(image: np.ndarray, mask: np.ndarray, crop: bool = True) -> bytes:
    """RGBA PNG of the masked pixels (transparent elsewhere), cropped to the mask's box."""
    import cv2

    rgba = np.dstack([image, mask.astype(np.uint8) * 255])
    if crop and mask.any():
        ys, xs = np.nonzero(mask)
        rgba = rgba[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    return buf.tobytes()


PALETTE = np.array([
    [30, 144, 255], [255, 99, 71], [60, 179, 113], [255, 215, 0], [186, 85, 211], [0, 206, 209],
    [255, 140, 0], [199, 21, 133], [154, 205, 50], [70, 130, 180], [244, 164, 96], [123, 104, 238],
], dtype=np.uint8)


def color_for(i: int) -> np.ndarray:
    """A distinct colour per object index (fixed palette, then golden-angle hues)."""
    if i < len(PALETTE):
        return PALETTE[i]
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65, 0.95)
    return np.array([r * 255, g * 255, b * 255], dtype=np.uint8)


def overlay(image: np.ndarray, masks: List[np.ndarray], alpha: float = 0.5, outline: bool = True) -> np.ndarray:
    """Colour each mask over the image (later masks on top), with a thin outline."""
    import cv2

    out = image.astype(np.float32)
    for i, m in enumerate(masks):
        c = color_for(i).astype(np.float32)
        out[m] = out[m] * (1 - alpha) + c * alpha
        if outline:
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            tmp = out.astype(np.uint8)
            cv2.drawContours(tmp, contours, -1, tuple(int(v) for v in color_for(i)), 1)
            out = tmp.astype(np.float32)
    return out.clip(0, 255).astype(np.uint8)
