"""Exact, cheap full-resolution masks from SAM's low-res logits, in bounded memory.

SAM's post-processing is two bilinear resizes (align_corners=False): 256 -> 1024, crop to the
resized image, then -> the original size. Both are linear and separable, so each output row
(and column) is a weighted sum of at most four low-res rows (columns): `AxisTaps`, 32 bytes per
output pixel of an axis, never a dense (size x 256) matrix. A full-resolution pixel can only be
positive if a low-res logit among its taps is positive (the weights are >= 0), so a mask is
computed only over the rows/columns whose taps touch its positive low-res region, in blocks of
at most BLOCK x BLOCK pixels, and comes out as a `MaskCrop`: the tight box of its pixels. A mask
of a 1 x 400000 image costs about as much as its one row.
"""

import threading
from collections import OrderedDict
from typing import Iterator, NamedTuple, Optional, Tuple

import numpy as np

BLOCK = 2048  # output rows/columns per block of the dense path: at most 16 MB of logits at a time
CV_BLOCK_PIXELS = 1 << 19  # output pixels per block of the OpenCV path: 2.5 MB of scratch, cache-sized
CV_MAX_WIDTH = 32767  # OpenCV resizes rows up to this wide; wider images take the dense products
IMG_SIZE = 1024  # SAM's padded input frame
TAPS_CACHE_BYTES = 32 << 20  # AxisTaps kept for reuse (a 4000-pixel axis is 128 KB)


class AxisTaps(NamedTuple):
    """One axis of the composite resize: output pixel i = sum_t weight[i, t] * low[index[i, t]]."""

    index: np.ndarray  # (out, 4) int32, low-res indices
    weight: np.ndarray  # (out, 4) float32, >= 0
    first: np.ndarray  # (out,) the smallest index with a non-zero weight
    last: np.ndarray  # (out,) the largest

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self)


class MaskCrop(NamedTuple):
    """A binary mask as the tight box of its pixels: `crop` is mask[y0 : y0 + h, x0 : x0 + w]
    of an image of `size` (H, W); everything outside the box is False."""

    y0: int
    x0: int
    crop: np.ndarray  # (h, w) bool, with a True pixel on each of its four edges
    size: Tuple[int, int]

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.crop))

    @property
    def bounds(self) -> Tuple[int, int, int, int]:
        """Inclusive pixel box (x0, y0, x1, y1)."""
        h, w = self.crop.shape
        return self.x0, self.y0, self.x0 + w - 1, self.y0 + h - 1

    def full(self) -> np.ndarray:
        """The (H, W) bool mask (costs H x W bytes: for one mask at a time)."""
        out = np.zeros(self.size, dtype=bool)
        h, w = self.crop.shape
        out[self.y0 : self.y0 + h, self.x0 : self.x0 + w] = self.crop
        return out


def crop_of(mask: np.ndarray) -> Optional[MaskCrop]:
    """The MaskCrop of a full (H, W) bool mask; None if it is empty."""
    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    band = mask[rows[0] : rows[-1] + 1]
    cols = np.flatnonzero(band.any(axis=0))
    crop = band[:, cols[0] : cols[-1] + 1].copy()
    return MaskCrop(int(rows[0]), int(cols[0]), crop, tuple(mask.shape))


def _bilinear(out_size: int, in_size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torch's bilinear resize (align_corners=False, no antialias) along one axis:
    out[i] = (1 - lam[i]) * in[i0[i]] + lam[i] * in[i1[i]]."""
    scale = in_size / out_size
    src = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)
    i0 = np.floor(src).astype(np.int64)
    lam = src - i0
    i1 = np.minimum(i0 + 1, in_size - 1)
    return np.minimum(i0, in_size - 1), i1, lam


def bilinear_matrix(out_size: int, in_size: int) -> np.ndarray:
    """(out, in) dense matrix of `_bilinear` (for tests and small sizes only)."""
    i0, i1, lam = _bilinear(out_size, in_size)
    m = np.zeros((out_size, in_size), np.float64)
    rows = np.arange(out_size)
    np.add.at(m, (rows, i0), 1.0 - lam)
    np.add.at(m, (rows, i1), lam)
    return m


def _make_taps(out_size: int, resized: int, low_res: int, img_size: int) -> AxisTaps:
    a0, a1, la = _bilinear(out_size, resized)  # original <- resized (a crop of the 1024 frame)
    b0, b1, lb = _bilinear(img_size, low_res)  # 1024 frame <- 256 low-res
    index = np.stack([b0[a0], b1[a0], b0[a1], b1[a1]], axis=1).astype(np.int32)
    weight = np.stack([(1 - la) * (1 - lb[a0]), (1 - la) * lb[a0], la * (1 - lb[a1]), la * lb[a1]], axis=1).astype(
        np.float32
    )
    live = weight > 0
    first = np.where(live, index, low_res).min(axis=1).astype(np.int32)
    last = np.where(live, index, -1).max(axis=1).astype(np.int32)
    return AxisTaps(index, weight, first, last)


class _TapsCache:
    """AxisTaps by (out, resized) size, least recently used dropped past TAPS_CACHE_BYTES."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Tuple[int, int, int, int], AxisTaps] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, out_size: int, resized: int, low_res: int = 256, img_size: int = 1024) -> AxisTaps:
        key = (out_size, resized, low_res, img_size)
        with self._lock:
            taps = self._items.get(key)
            if taps is not None:
                self._items.move_to_end(key)
                return taps
        taps = _make_taps(out_size, resized, low_res, img_size)
        with self._lock:
            self._items[key] = taps
            while len(self._items) > 1 and sum(t.nbytes for t in self._items.values()) > self.max_bytes:
                self._items.popitem(last=False)
        return taps


TAPS = _TapsCache(TAPS_CACHE_BYTES)


def _touching(taps: AxisTaps, lo: int, hi: int) -> Tuple[int, int]:
    """Output range [start, stop) of the pixels with a tap in low-res [lo, hi) (contiguous: the
    taps move monotonically with the output)."""
    hit = np.flatnonzero((taps.last >= lo) & (taps.first < hi))
    return (int(hit[0]), int(hit[-1]) + 1) if hit.size else (0, 0)


def _dense(taps: AxisTaps, start: int, stop: int, lo: int, hi: int) -> np.ndarray:
    """Rows [start, stop) of the axis as a dense (stop - start, hi - lo) float32 matrix."""
    m = np.zeros((stop - start, hi - lo), np.float32)
    rows = np.repeat(np.arange(stop - start), 4)
    # a zero-weight tap may point outside [lo, hi): clipped, it adds nothing
    cols = np.clip(taps.index[start:stop].ravel() - lo, 0, hi - lo - 1)
    np.add.at(m, (rows, cols), taps.weight[start:stop].ravel())
    return m


def _blocks(low: np.ndarray, rt: AxisTaps, ct: AxisTaps, rows, cols, resized_w: int, w: int, framed: bool):
    """Thresholded logits over output rows [r0, r1) x columns [c0, c1), block by block:
    yields (row start, row stop, column start, bool block); framed: with a False column on
    either side (column start is still that of the first real column). Each block needs only the low-res
    rows/columns its taps reach. Where the image is not extremely wide, the columns are resized
    by OpenCV (the same two bilinear steps, ~10x cheaper than the dense product), into two
    scratch buffers of about CV_BLOCK_PIXELS that stay in cache and are reused: a yielded block
    is valid until the next one is asked for."""
    import cv2

    (r0, r1), (c0, c1) = rows, cols
    if w > CV_MAX_WIDTH:
        for rs, re_, cs, block in _dense_blocks(low, rt, ct, rows, cols):
            yield rs, re_, cs, np.pad(block, ((0, 0), (1, 1))) if framed else block
        return
    # rows per block: a cache-sized block, and never more than BLOCK rows (the dense row taps
    # are rows x 256 floats: a 1 x 400000 image would otherwise take 400 MB of them)
    step = max(1, min(BLOCK, r1 - r0, CV_BLOCK_PIXELS // w))
    logits, positive = np.empty((step, w), np.float32), np.zeros((step, c1 - c0 + 2), bool)
    inner = positive[:, 1:-1]
    # the low-res columns that reach the resized image (and two more, so that the edge
    # clamping of the 4x resize is the same as over all 256)
    k = min(low.shape[1], -(-resized_w // 4) + 2)
    for rs in range(r0, r1, step):
        re_ = min(r1, rs + step)
        a0, a1 = int(rt.first[rs:re_].min()), int(rt.last[rs:re_].max()) + 1
        part = _dense(rt, rs, re_, a0, a1) @ low[a0:a1, :k]  # (rows, k)
        up = cv2.resize(part, (4 * k, re_ - rs), interpolation=cv2.INTER_LINEAR)
        full = cv2.resize(up[:, :resized_w], (w, re_ - rs), dst=logits[: re_ - rs], interpolation=cv2.INTER_LINEAR)
        np.greater(full[:, c0:c1], 0, out=inner[: re_ - rs])
        yield rs, re_, c0, positive[: re_ - rs] if framed else inner[: re_ - rs]


def _dense_blocks(low: np.ndarray, rt: AxisTaps, ct: AxisTaps, rows, cols):
    """`_blocks` for images wider than OpenCV resizes: dense products, BLOCK x BLOCK at a time."""
    (r0, r1), (c0, c1) = rows, cols
    for rs in range(r0, r1, BLOCK):
        re_ = min(r1, rs + BLOCK)
        a0, a1 = int(rt.first[rs:re_].min()), int(rt.last[rs:re_].max()) + 1
        left = _dense(rt, rs, re_, a0, a1)
        for cs in range(c0, c1, BLOCK):
            ce = min(c1, cs + BLOCK)
            b0, b1 = int(ct.first[cs:ce].min()), int(ct.last[cs:ce].max()) + 1
            yield rs, re_, cs, (left @ low[a0:a1, b0:b1] @ _dense(ct, cs, ce, b0, b1).T) > 0


def threshold_blocks(
    low: np.ndarray, input_size: Tuple[int, int], original_size: Tuple[int, int], framed: bool = False
) -> Iterator[Tuple[int, int, np.ndarray]]:
    """SAM's `postprocess_masks(...) > 0` at `original_size` (H, W), up to float rounding, as
    blocks (row start, column start, bool block) covering every positive pixel; rows of blocks
    in order, each row of blocks left to right. Nothing outside the blocks is positive.
    A block may be a view of a scratch buffer: use (or copy) it before asking for the next.
    framed: each block has a False column on either side (C-contiguous where it can be), so
    that its changes along rows are one flat comparison."""
    h, w = int(original_size[0]), int(original_size[1])
    pos = low > 0
    rows, cols = np.flatnonzero(pos.any(axis=1)), np.flatnonzero(pos.any(axis=0))
    if rows.size == 0:
        return
    rt = TAPS.get(h, int(input_size[0]))
    ct = TAPS.get(w, int(input_size[1]))
    r0, r1 = _touching(rt, int(rows[0]), int(rows[-1]) + 1)
    c0, c1 = _touching(ct, int(cols[0]), int(cols[-1]) + 1)
    if r1 <= r0 or c1 <= c0:  # positive only in the padding, which is cropped away
        return
    for rs, _, cs, block in _blocks(low, rt, ct, (r0, r1), (c0, c1), int(input_size[1]), w, framed):
        yield rs, cs, block


def mask_crop_from_low_res(
    low: np.ndarray, input_size: Tuple[int, int], original_size: Tuple[int, int]
) -> Optional[MaskCrop]:
    """(256, 256) logits -> the MaskCrop of SAM's `postprocess_masks(...) > 0` at
    `original_size` (H, W), up to float rounding; None if the mask is empty."""
    h, w = int(original_size[0]), int(original_size[1])
    found = [(rs, cs, b.copy()) for rs, cs, b in threshold_blocks(low, input_size, original_size) if b.any()]
    if not found:
        return None
    y0 = min(rs + int(np.flatnonzero(b.any(axis=1))[0]) for rs, _, b in found)
    y1 = max(rs + int(np.flatnonzero(b.any(axis=1))[-1]) for rs, _, b in found) + 1
    x0 = min(cs + int(np.flatnonzero(b.any(axis=0))[0]) for _, cs, b in found)
    x1 = max(cs + int(np.flatnonzero(b.any(axis=0))[-1]) for _, cs, b in found) + 1
    if len(found) == 1:
        rs, cs, b = found[0]
        crop = b[y0 - rs : y1 - rs, x0 - cs : x1 - cs].copy()
    else:
        crop = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        for rs, cs, b in found:
            ys, xs = max(rs, y0), max(cs, x0)
            ye, xe = min(rs + b.shape[0], y1), min(cs + b.shape[1], x1)
            crop[ys - y0 : ye - y0, xs - x0 : xe - x0] = b[ys - rs : ye - rs, xs - cs : xe - cs]
    return MaskCrop(y0, x0, crop, (h, w))


def mask_from_low_res(low: np.ndarray, input_size: Tuple[int, int], original_size: Tuple[int, int]) -> np.ndarray:
    """(256, 256) logits -> (H, W) bool mask, equal to SAM's `postprocess_masks(...) > 0`
    up to float rounding. Dense: for one mask at a time (see `mask_crop_from_low_res`)."""
    crop = mask_crop_from_low_res(low, input_size, original_size)
    if crop is None:
        return np.zeros(tuple(int(v) for v in original_size), dtype=bool)
    return crop.full()
