"""Exact, cheap full-resolution masks from SAM's low-res logits.

SAM's post-processing is two bilinear resizes (align_corners=False): 256 -> 1024, crop to the
resized image, then -> the original size. Both are linear and separable, so together they are
one matrix per axis: logits_full = R @ low @ C^T with R (H x 256) and C (W x 256), each row
holding at most four taps. A full-resolution pixel can only be positive if a low-res logit in
its support is positive, so each mask is computed only over the rows/columns whose support
touches its positive low-res region; everything else is exactly False.
"""

from functools import lru_cache
from typing import Tuple

import numpy as np


def bilinear_matrix(out_size: int, in_size: int) -> np.ndarray:
    """(out, in) matrix of torch's bilinear resize with align_corners=False (no antialias)."""
    scale = in_size / out_size
    src = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)
    i0 = np.floor(src).astype(np.int64)
    lam = src - i0
    i1 = np.minimum(i0 + 1, in_size - 1)
    i0 = np.minimum(i0, in_size - 1)
    m = np.zeros((out_size, in_size), np.float64)
    rows = np.arange(out_size)
    np.add.at(m, (rows, i0), 1.0 - lam)
    np.add.at(m, (rows, i1), lam)
    return m


@lru_cache(maxsize=16)
def composite_matrices(
    input_size: Tuple[int, int], original_size: Tuple[int, int], low_res: int = 256, img_size: int = 1024
) -> Tuple[np.ndarray, np.ndarray]:
    """R (H, 256) and C (W, 256): low-res -> 1024 -> crop -> original, per axis."""
    up = bilinear_matrix(img_size, low_res)
    r = bilinear_matrix(original_size[0], input_size[0]) @ up[: input_size[0]]
    c = bilinear_matrix(original_size[1], input_size[1]) @ up[: input_size[1]]
    return r.astype(np.float32), c.astype(np.float32)


def _support(m: np.ndarray, lo: int, hi: int) -> Tuple[int, int]:
    """Output index range whose taps touch low-res indices [lo, hi)."""
    touched = np.nonzero(m[:, lo:hi].any(axis=1))[0]
    return (int(touched[0]), int(touched[-1]) + 1) if touched.size else (0, 0)


def mask_from_low_res(low: np.ndarray, input_size: Tuple[int, int], original_size: Tuple[int, int]) -> np.ndarray:
    """(256, 256) logits -> (H, W) bool mask, equal to SAM's `postprocess_masks(...) > 0`
    up to float rounding."""
    r, c = composite_matrices(tuple(input_size), tuple(original_size))
    out = np.zeros(original_size, dtype=bool)
    pos = low > 0
    rows, cols = np.nonzero(pos.any(axis=1))[0], np.nonzero(pos.any(axis=0))[0]
    if rows.size == 0:
        return out
    lr0, lr1, lc0, lc1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    r0, r1 = _support(r, lr0, lr1)
    c0, c1 = _support(c, lc0, lc1)
    if r1 <= r0 or c1 <= c0:  # positive only in the padding, which is cropped away
        return out
    # Rows of R in [r0, r1) may also reach low-res rows outside [lr0, lr1): include them.
    sub_r = r[r0:r1]
    sub_c = c[c0:c1]
    lo_r = np.nonzero(sub_r.any(axis=0))[0]
    lo_c = np.nonzero(sub_c.any(axis=0))[0]
    a0, a1, b0, b1 = int(lo_r[0]), int(lo_r[-1]) + 1, int(lo_c[0]), int(lo_c[-1]) + 1
    logits = sub_r[:, a0:a1] @ low[a0:a1, b0:b1] @ sub_c[:, b0:b1].T
    out[r0:r1, c0:c1] = logits > 0
    return out
