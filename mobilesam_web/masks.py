"""Mask encodings: uncompressed and COCO-compressed RLE, areas, stability scores."""

from typing import Any, Dict, List

import numpy as np
import torch

from .boxes import mask_bbox_xywh, mask_bounds


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
            flat[pos : pos + c] = True
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


def rle_counts(mask: np.ndarray) -> List[int]:
    """Uncompressed COCO RLE counts of an (H, W) bool mask (column-major runs, zeros first),
    the same as `masks_to_rle` but scanning only the mask's bounding box: an object is usually
    a small part of the image, and transposing the whole image per mask is what costs."""
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    bounds = mask_bounds(mask)
    if bounds is None:
        return [h * w]
    x0, y0, x1, y1 = bounds
    crop = mask[y0 : y1 + 1, x0 : x1 + 1]
    ch = crop.shape[0]
    # each box column framed by a False above and below, so runs start and end inside a column
    framed = np.zeros((crop.shape[1], ch + 2), dtype=bool)
    framed[:, 1:-1] = crop.T
    flat = framed.ravel()
    k = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    col, row = np.divmod(k, ch + 2)
    pos = (x0 + col) * h + (y0 + row - 1)  # where the value changes, in the full image's order
    # A mask spanning the full height gives a 1->0 and a 0->1 at the same place where one column
    # runs into the next: not a change at all.
    same = np.flatnonzero(pos[1:] == pos[:-1])
    if same.size:
        pos = np.delete(pos, np.concatenate([same, same + 1]))
    pos = pos[pos < h * w]  # a mask that ends on its last pixel: the frame's "change" past the end
    return np.diff(np.concatenate([[0], pos, [h * w]])).tolist()


def mask_to_coco_rle(mask: np.ndarray) -> Dict[str, Any]:
    """(H, W) bool -> COCO compressed RLE {"size": [H, W], "counts": str} (as pycocotools' encode)."""
    mask = np.asarray(mask, dtype=bool)
    return {"size": list(mask.shape), "counts": encode_rle_string(rle_counts(mask))}


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


def coco_annotations(
    records: List[Dict[str, Any]], image_size, file_name: str = "image.png", category: str = "object"
) -> Dict[str, Any]:
    """COCO-format dict (one image, one category) with RLE segmentations and polygons; each
    bbox is the tight box of its mask ([x, y, w, h], w = last column - first column + 1)."""
    h, w = image_size
    anns = []
    for i, r in enumerate(records, 1):
        seg = r["segmentation"]
        mask = rle_to_mask(seg) if isinstance(seg, dict) else np.asarray(seg, bool)
        rle = seg if isinstance(seg, dict) and isinstance(seg.get("counts"), str) else mask_to_coco_rle(mask)
        # the bbox is measured on the mask itself: COCO's [x, y, w, h] must contain every pixel
        ann = {
            "id": i,
            "image_id": 1,
            "category_id": 1,
            "segmentation": rle,
            "area": int(r.get("area", mask.sum())),
            "bbox": mask_bbox_xywh(mask),
            "iscrowd": 0,
            "polygons": mask_polygons(mask),
        }
        for k in ("predicted_iou", "stability_score", "prompt_box", "detector_score", "label"):
            if k in r:
                ann[k] = r[k]
        anns.append(ann)
    return {
        "images": [{"id": 1, "file_name": file_name, "height": int(h), "width": int(w)}],
        "categories": [{"id": 1, "name": category}],
        "annotations": anns,
    }


def mask_png(mask: np.ndarray) -> bytes:
    """Binary mask as a 1-bit PNG (reads back as 0 / 255): ~4x faster to write and smaller
    than an 8-bit one, which matters when an export holds hundreds of masks."""
    import cv2

    ok, buf = cv2.imencode(".png", mask.astype(np.uint8), [cv2.IMWRITE_PNG_BILEVEL, 1])
    return buf.tobytes()


def cutout_png(image: np.ndarray, mask: np.ndarray, crop: bool = True) -> bytes:
    """RGBA PNG of the masked pixels (transparent elsewhere), cropped to the mask's box."""
    import cv2

    rgba = np.dstack([image, mask.astype(np.uint8) * 255])
    if crop and mask.any():
        ys, xs = np.nonzero(mask)
        rgba = rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return buf.tobytes()


PALETTE = np.array(
    [
        [30, 144, 255],
        [255, 99, 71],
        [60, 179, 113],
        [255, 215, 0],
        [186, 85, 211],
        [0, 206, 209],
        [255, 140, 0],
        [199, 21, 133],
        [154, 205, 50],
        [70, 130, 180],
        [244, 164, 96],
        [123, 104, 238],
    ],
    dtype=np.uint8,
)


# Colours beyond the palette: golden-angle hues at this saturation and value. The browser canvas
# draws with the same rule from `palette_spec()` (sent in /msw/config.json; a test pins JS to this).
GOLDEN_HUE_STEP = 0.618033988749895
EXTRA_SATURATION = 0.65
EXTRA_VALUE = 0.95


def color_for(i: int) -> np.ndarray:
    """A distinct colour per object index (fixed palette, then golden-angle hues)."""
    if i < len(PALETTE):
        return PALETTE[i]
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((i * GOLDEN_HUE_STEP) % 1.0, EXTRA_SATURATION, EXTRA_VALUE)
    return np.array([r * 255, g * 255, b * 255], dtype=np.uint8)


def palette_spec() -> Dict[str, Any]:
    """The colour rule as data, for the browser."""
    return {"base": PALETTE.tolist(), "hue_step": GOLDEN_HUE_STEP, "saturation": EXTRA_SATURATION, "value": EXTRA_VALUE}


def overlay(image: np.ndarray, masks: List[np.ndarray], alpha: float = 0.5, outline: bool = True) -> np.ndarray:
    """Colour each mask over the image (later masks on top), with a thin outline in its colour.
    Each mask is blended and traced within its own box, so hundreds of masks on a large image
    stay fast; the outlines are drawn last, on top of every fill."""
    import cv2

    out = image.astype(np.float32)
    outlines = []
    for i, m in enumerate(masks):
        bounds = mask_bounds(m)
        if bounds is None:
            continue
        x0, y0, x1, y1 = bounds
        crop, region = m[y0 : y1 + 1, x0 : x1 + 1], out[y0 : y1 + 1, x0 : x1 + 1]
        color = color_for(i)
        region[crop] = region[crop] * (1 - alpha) + color.astype(np.float32) * alpha
        if outline:
            contours, _ = cv2.findContours(
                crop.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0)
            )
            outlines.append((contours, tuple(int(v) for v in color)))
    result = out.clip(0, 255).astype(np.uint8)
    for contours, color in outlines:
        cv2.drawContours(result, contours, -1, color, 1)
    return result
