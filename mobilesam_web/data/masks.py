"""Masks in any form (RLE, crop, array) to what people download and see: COCO annotations with
polygons, mask and cut-out PNGs, the label overlay and its palette; stability scores."""

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from .boxes import inclusive_xyxy_to_xywh
from .rle import crop_to_coco_rle, encode_rle_string, rle_to_crop
from .upscale import MaskCrop, crop_of


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU between the masks thresholded at threshold +- offset: (..., H, W) -> (...)."""
    inter = (logits > (threshold + offset)).sum(-1, dtype=torch.int32).sum(-1, dtype=torch.int32)
    union = (logits > (threshold - offset)).sum(-1, dtype=torch.int32).sum(-1, dtype=torch.int32)
    return inter / union


MaskLike = Union[MaskCrop, np.ndarray, Dict[str, Any], None]


def as_crop(mask: MaskLike) -> Optional[MaskCrop]:
    """A MaskCrop from any mask form we pass around: a MaskCrop, a full (H, W) bool array, or
    COCO RLE (compressed or not); None for an empty mask."""
    if mask is None or isinstance(mask, MaskCrop):
        return mask
    if isinstance(mask, dict):
        return rle_to_crop(mask)
    return crop_of(mask)


def crop_resized(crop: MaskCrop, size: Sequence[int]) -> Optional[MaskCrop]:
    """The crop's mask in an image of another `size` (H, W), nearest neighbour, resizing only
    the box (for drawing a full-resolution mask over a smaller copy of the image)."""
    import cv2

    h, w = int(size[0]), int(size[1])
    if (h, w) == tuple(crop.size):
        return crop
    sy, sx = h / crop.size[0], w / crop.size[1]
    ch, cw = crop.crop.shape
    y0, x0 = int(crop.y0 * sy), int(crop.x0 * sx)
    y1, x1 = max(y0 + 1, min(h, round((crop.y0 + ch) * sy))), max(x0 + 1, min(w, round((crop.x0 + cw) * sx)))
    small = cv2.resize(crop.crop.view(np.uint8), (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST) > 0
    return MaskCrop(y0, x0, small, (h, w)) if small.any() else None


def mask_polygons(mask: MaskLike, min_area: float = 4.0, epsilon: float = 0.75) -> List[List[float]]:
    """Outer contours of a mask as COCO-style flat polygons [x1, y1, x2, y2, ...] (OpenCV),
    traced within the mask's box."""
    import cv2

    crop = as_crop(mask)
    if crop is None:
        return []
    contours, _ = cv2.findContours(
        crop.crop.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(crop.x0, crop.y0)
    )
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
    bbox is the tight box of its mask ([x, y, w, h], w = last column - first column + 1).
    Segmentations may be RLE, MaskCrops or full masks; one mask's box is decoded at a time
    per thread (two threads: decoding and tracing are single-threaded and release the GIL)."""
    h, w = image_size

    def annotation(i: int, r: Dict[str, Any]) -> Dict[str, Any]:
        seg = r["segmentation"]
        crop = as_crop(seg)
        if isinstance(seg, dict) and isinstance(seg.get("counts"), str):
            rle = seg
        elif crop is None:
            rle = {"size": [int(h), int(w)], "counts": encode_rle_string([int(h) * int(w)])}
        else:
            rle = crop_to_coco_rle(crop)
        # the bbox is measured on the mask itself: COCO's [x, y, w, h] must contain every pixel
        ann = {
            "id": i,
            "image_id": 1,
            "category_id": 1,
            "segmentation": rle,
            "area": int(r.get("area", 0 if crop is None else crop.area)),
            "bbox": [0, 0, 0, 0] if crop is None else inclusive_xyxy_to_xywh(crop.bounds),
            "iscrowd": 0,
            "polygons": mask_polygons(crop),
        }
        for k in ("predicted_iou", "stability_score", "prompt_box", "detector_score", "label"):
            if k in r:
                ann[k] = r[k]
        return ann

    with ThreadPoolExecutor(max_workers=2) as pool:
        anns = list(pool.map(annotation, range(1, len(records) + 1), records))
    return {
        "images": [{"id": 1, "file_name": file_name, "height": int(h), "width": int(w)}],
        "categories": [{"id": 1, "name": category}],
        "annotations": anns,
    }


def mask_png(mask: MaskLike, size: Optional[Sequence[int]] = None) -> bytes:
    """Binary mask as a full-size 1-bit PNG (reads back as 0 / 255): ~4x faster to write and
    smaller than an 8-bit one, which matters when an export holds hundreds of masks. A crop or
    an RLE is expanded for this one mask only; `size` (H, W) is needed for an empty mask."""
    import cv2

    if isinstance(mask, np.ndarray):
        full = mask.astype(np.uint8)
    else:
        crop = as_crop(mask)
        shape = tuple(crop.size) if crop is not None else tuple(mask["size"]) if isinstance(mask, dict) else size
        full = np.zeros(tuple(int(v) for v in shape), np.uint8)
        if crop is not None:
            x0, y0, x1, y1 = crop.bounds
            full[y0 : y1 + 1, x0 : x1 + 1] = crop.crop
    ok, buf = cv2.imencode(".png", full, [cv2.IMWRITE_PNG_BILEVEL, 1])
    return buf.tobytes()


def cutout_png(image: np.ndarray, mask: MaskLike, crop: bool = True) -> bytes:
    """RGBA PNG of the masked pixels (transparent elsewhere), cropped to the mask's box. A mask
    of another size than the image is resized to it (nearest)."""
    import cv2

    if not crop and isinstance(mask, np.ndarray) and mask.shape == image.shape[:2]:
        rgba = np.dstack([image, mask.astype(np.uint8) * 255])
    else:
        box = as_crop(mask)
        box = None if box is None else crop_resized(box, image.shape[:2])
        if box is None:  # nothing to cut: the whole image, all transparent (as the browser's)
            rgba = np.dstack([image, np.zeros(image.shape[:2], np.uint8)])
        else:
            x0, y0, x1, y1 = box.bounds
            rgba = np.dstack([image[y0 : y1 + 1, x0 : x1 + 1], box.crop.view(np.uint8) * 255])
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


def overlay(image: np.ndarray, masks: Sequence[MaskLike], alpha: float = 0.5, outline: bool = True) -> np.ndarray:
    """Colour each mask over the image (a later mask covers an earlier one), with a thin
    outline in its colour. Masks may be of another size than the image (drawn resized, box by
    box). Masks are painted into one label map, box by box, and blended in one pass, so
    hundreds of masks on a large image stay fast; the outlines are drawn last, on top."""
    import cv2

    h, w = image.shape[:2]
    labels = np.zeros((h, w), np.uint16)
    colors = [np.zeros(3, np.uint8)]
    outlines = []
    for i, m in enumerate(masks):
        crop = as_crop(m)
        crop = None if crop is None else crop_resized(crop, (h, w))
        colors.append(color_for(i))
        if crop is None:
            continue
        x0, y0, x1, y1 = crop.bounds
        labels[y0 : y1 + 1, x0 : x1 + 1][crop.crop] = i + 1
        if outline:
            contours, _ = cv2.findContours(
                crop.crop.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0)
            )
            outlines.append((contours, tuple(int(v) for v in colors[-1])))
    covered = labels > 0
    result = image.copy()
    lut = np.stack(colors).astype(np.float32)
    result[covered] = (image[covered] * (1 - alpha) + lut[labels[covered]] * alpha).clip(0, 255).astype(np.uint8)
    for contours, color in outlines:
        cv2.drawContours(result, contours, -1, color, 1)
    return result
