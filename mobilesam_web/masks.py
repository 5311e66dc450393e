"""Mask encodings: uncompressed and COCO-compressed RLE, areas, stability scores."""

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .boxes import inclusive_xyxy_to_xywh
from .upscale import MaskCrop, crop_of, threshold_blocks


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


def encode_rle_string(counts: Sequence[int]) -> str:
    """COCO's compact string form of RLE counts (as pycocotools' rleToString), vectorised:
    each count (after the first two, as the difference to the count two before) in 5-bit
    groups, low bits first, 0x20 marking a following group, the last group's 0x10 its sign."""
    x = np.asarray(counts, dtype=np.int64).copy()
    if x.size == 0:
        return ""
    x[3:] -= np.asarray(counts, dtype=np.int64)[1:-2]
    groups = np.ones(x.size, np.int64)  # 5-bit groups per value: until the rest is all sign
    rest = x >> 5
    more = np.where(x & 0x10, rest != -1, rest != 0)
    while more.any():
        groups += more
        low = rest & 0x1F
        rest = rest >> 5
        more &= np.where(low & 0x10, rest != -1, rest != 0)
    owner = np.repeat(np.arange(x.size), groups)
    k = np.arange(owner.size) - np.repeat(np.cumsum(groups) - groups, groups)
    chars = (x[owner] >> (5 * k)) & 0x1F
    chars[k < groups[owner] - 1] |= 0x20
    return (chars + 48).astype(np.uint8).tobytes().decode("ascii")


def decode_rle_string(s) -> List[int]:
    """Inverse of `encode_rle_string`, vectorised."""
    if isinstance(s, str):
        s = s.encode("ascii")
    c = np.frombuffer(s, dtype=np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return []
    last = (c & 0x20) == 0  # the last 5-bit group of a value
    value_of = np.concatenate([[0], np.cumsum(last)[:-1]])  # which value each char belongs to
    starts = np.flatnonzero(np.concatenate([[True], last[:-1]]))
    k = np.arange(c.size) - starts[value_of]
    x = np.zeros(int(last.sum()), np.int64)
    np.add.at(x, value_of, (c & 0x1F) << (5 * k))
    ends = np.flatnonzero(last)
    negative = (c[ends] & 0x10) != 0
    x[negative] -= np.int64(1) << (5 * (k[ends][negative] + 1))
    # counts[i] = x[i] + counts[i - 2] from i = 3 on: a running sum per parity
    counts = x.copy()
    counts[3::2] = np.cumsum(x[1::2])[1:] if x.size > 3 else counts[3::2]
    counts[4::2] = np.cumsum(x[2::2])[1:] if x.size > 4 else counts[4::2]
    return counts.tolist()


def coco_rle(rle: Dict[str, Any]) -> Dict[str, Any]:
    """Uncompressed RLE -> COCO compressed RLE {"size": [H, W], "counts": str}."""
    return {"size": list(rle["size"]), "counts": encode_rle_string(rle["counts"])}


def rle_counts(mask: np.ndarray) -> List[int]:
    """Uncompressed COCO RLE counts of an (H, W) bool mask (column-major runs, zeros first),
    the same as `masks_to_rle` but scanning only the mask's bounding box."""
    mask = np.asarray(mask, dtype=bool)
    crop = crop_of(mask)
    return [mask.size] if crop is None else crop_rle_counts(crop)


def crop_rle_counts(crop: MaskCrop) -> List[int]:
    """Uncompressed COCO RLE counts of a MaskCrop's full-size mask, from the crop alone: an
    object is usually a small part of the image, and a full-size copy per mask is what costs."""
    h, w = crop.size
    ch = crop.crop.shape[0]
    # each box column framed by a False above and below, so runs start and end inside a column
    framed = np.zeros((crop.crop.shape[1], ch + 2), dtype=bool)
    framed[:, 1:-1] = crop.crop.T
    flat = framed.ravel()
    k = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    col, row = np.divmod(k, ch + 2)
    pos = (crop.x0 + col) * h + (crop.y0 + row - 1)  # where the value changes, in the full image's order
    # A mask spanning the full height gives a 1->0 and a 0->1 at the same place where one column
    # runs into the next: not a change at all.
    same = np.flatnonzero(pos[1:] == pos[:-1])
    if same.size:
        pos = np.delete(pos, np.concatenate([same, same + 1]))
    pos = pos[pos < h * w]  # a mask that ends on its last pixel: the frame's "change" past the end
    return np.diff(np.concatenate([[0], pos, [h * w]])).tolist()


def low_res_to_coco_rle(
    low: np.ndarray, input_size: Sequence[int], original_size: Sequence[int]
) -> Tuple[Dict[str, Any], Optional[Tuple[int, int, int, int]], int]:
    """(256, 256) logits -> (COCO compressed RLE, inclusive box (x0, y0, x1, y1) or None, area)
    of SAM's `postprocess_masks(...) > 0` at `original_size` (H, W), up to float rounding.

    The mask is computed transposed (the resize is separable: the same arithmetic with the axes
    swapped), so its rows are the image's columns and the RLE's column-major runs are read off
    in place: no full-size array, no transpose, no second pass for the box or the area."""
    h, w = int(original_size[0]), int(original_size[1])
    parts = []
    for x0, y0, tblock in threshold_blocks(np.ascontiguousarray(low.T), tuple(input_size)[::-1], (w, h), True):
        parts.append(_column_changes(tblock, x0, y0, h))
    counts = _counts_from_changes(np.concatenate(parts) if parts else np.zeros(0, np.int64), h * w)
    rle = {"size": [h, w], "counts": encode_rle_string(counts)}
    return (rle,) + _runs_box_area(counts, h)


def _column_changes(framed: np.ndarray, x0: int, y0: int, h: int) -> np.ndarray:
    """Where the value changes, in column-major positions of an H-row image, for a block whose
    row c is image column x0 + c over image rows y0 .. y0 + framed.shape[1] - 3, with a False
    column on either side (so a run that starts or ends at the block's edge is a change too)."""
    flat = framed.ravel()  # rows run into each other False to False: no change between them
    k = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    col, row = np.divmod(k, framed.shape[1])
    return (x0 + col) * h + (y0 + row - 1)


def _counts_from_changes(changes: np.ndarray, total: int) -> List[int]:
    """COCO counts (zeros first) from the positions where the value flips."""
    pos = np.sort(changes)
    # a run ending at the bottom of one column and one starting at the top of the next: no change
    same = np.flatnonzero(pos[1:] == pos[:-1])
    if same.size:
        pos = np.delete(pos, np.concatenate([same, same + 1]))
    pos = pos[pos < total]
    return np.diff(np.concatenate([[0], pos, [total]])).tolist()


def _runs_box_area(counts: List[int], h: int) -> Tuple[Optional[Tuple[int, int, int, int]], int]:
    """(inclusive box (x0, y0, x1, y1) or None, area) of the mask of COCO counts, from its runs."""
    c = np.asarray(counts, dtype=np.int64)
    ends = np.cumsum(c)
    starts = ends - c
    on = np.flatnonzero(c[1::2]) * 2 + 1
    if on.size == 0:
        return None, 0
    first, last = starts[on], ends[on] - 1
    x0, x1 = int(first[0] // h), int(last[-1] // h)
    if np.any(first // h != last // h):  # a run crosses into the next column: full height
        y0, y1 = 0, h - 1
    else:
        y0, y1 = int((first % h).min()), int((last % h).max())
    return (x0, y0, x1, y1), int(c[on].sum())


def mask_to_coco_rle(mask: np.ndarray) -> Dict[str, Any]:
    """(H, W) bool -> COCO compressed RLE {"size": [H, W], "counts": str} (as pycocotools' encode)."""
    mask = np.asarray(mask, dtype=bool)
    return {"size": list(mask.shape), "counts": encode_rle_string(rle_counts(mask))}


def crop_to_coco_rle(crop: MaskCrop) -> Dict[str, Any]:
    """A MaskCrop -> COCO compressed RLE of its full-size mask (never made)."""
    return {"size": [int(v) for v in crop.size], "counts": encode_rle_string(crop_rle_counts(crop))}


def rle_to_crop(rle: Dict[str, Any]) -> Optional[MaskCrop]:
    """Uncompressed or compressed RLE -> the MaskCrop of its mask (None if empty), decoding
    only the columns the mask spans."""
    import cv2

    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = decode_rle_string(counts)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.size < 2 or not counts[1::2].any():
        return None
    if int(counts.sum()) != h * w:
        raise ValueError(f"RLE counts add up to {int(counts.sum())} pixels, not {h}x{w}")
    ends = np.cumsum(counts)
    starts = ends - counts
    on = np.flatnonzero(counts[1::2]) * 2 + 1  # runs of ones
    x0, x1 = int(starts[on[0]] // h), int((ends[on[-1]] - 1) // h)
    # the columns x0..x1 in column-major order, full height: one transient of that size
    values = np.arange(counts.size) % 2 == 1
    lo, hi = x0 * h, (x1 + 1) * h
    clipped = np.minimum(ends, hi) - np.maximum(starts, lo)
    cols = np.repeat(values, np.maximum(clipped, 0)).view(np.uint8).reshape(x1 - x0 + 1, h)
    band = cv2.transpose(cols)  # (h, columns), row-major: fast where numpy's .T copy is not
    rows = np.flatnonzero(band.any(axis=1))
    return MaskCrop(int(rows[0]), x0, band[rows[0] : rows[-1] + 1].view(bool), (h, w))  # 0/1 bytes: a view


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
