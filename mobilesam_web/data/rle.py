"""COCO run-length encoding (column-major runs, zeros first): the compact string form, masks and
crops to RLE and back, and SAM's low-res logits straight to RLE without a full-size mask."""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

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
