"""COCO polygons to RLE, rasterised the way the COCO API does it, so that a polygon ground truth
(COCO, LVIS) gives the same pixels here as in pycocotools' evaluation.

The COCO API's rule: the polygon is scaled by 5 and rounded to integers; every edge is walked one
step at a time along its longer axis; wherever the walk crosses a pixel column's centre line, the
first pixel row below the crossing starts (or ends) a run in that column. Runs in a column are
closed by the next crossing, so the mask holds the pixels whose centres lie inside the polygon,
with the API's own rounding on the edges.
"""

from typing import Dict, List, Sequence

import numpy as np

from .rle import encode_rle_string

SCALE = 5


def _edge_points(xs: np.ndarray, ys: np.ndarray) -> tuple:
    """Every integer step along each closed edge of the scaled polygon (both ends included, each
    edge walked from its lower end along its longer axis)."""
    us, vs = [], []
    for j in range(len(xs) - 1):
        x0, x1, y0, y1 = int(xs[j]), int(xs[j + 1]), int(ys[j]), int(ys[j + 1])
        dx, dy = abs(x1 - x0), abs(y0 - y1)
        flip = (dx >= dy and x0 > x1) or (dx < dy and y0 > y1)
        if flip:
            x0, x1, y0, y1 = x1, x0, y1, y0
        if dx >= dy:
            slope = (y1 - y0) / dx if dx else 0.0
            t = np.arange(dx + 1)
            t = dx - t if flip else t
            us.append(t + x0)
            vs.append(np.trunc(y0 + slope * t + 0.5).astype(np.int64))
        else:
            slope = (x1 - x0) / dy
            t = np.arange(dy + 1)
            t = dy - t if flip else t
            vs.append(t + y0)
            us.append(np.trunc(x0 + slope * t + 0.5).astype(np.int64))
    return np.concatenate(us), np.concatenate(vs)


def polygon_counts(polygon: Sequence[float], h: int, w: int) -> List[int]:
    """Uncompressed RLE counts (column-major, zeros first) of one flat polygon [x1, y1, x2, y2, ...]."""
    xy = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    xs = np.trunc(SCALE * xy[:, 0] + 0.5).astype(np.int64)  # C's (int): towards zero
    ys = np.trunc(SCALE * xy[:, 1] + 0.5).astype(np.int64)
    xs, ys = np.append(xs, xs[0]), np.append(ys, ys[0])
    u, v = _edge_points(xs, ys)
    # where the walk moves to another column: the column it crosses (in pixels), and the row
    moved = np.flatnonzero(u[1:] != u[:-1]) + 1
    uj, up, vj, vp = u[moved], u[moved - 1], v[moved], v[moved - 1]
    xd = (np.where(uj < up, uj, uj - 1) + 0.5) / SCALE - 0.5
    keep = (np.floor(xd) == xd) & (xd >= 0) & (xd <= w - 1)
    yd = (np.where(vj < vp, vj, vp)[keep] + 0.5) / SCALE - 0.5
    yd = np.ceil(np.clip(yd, 0, h))
    pos = np.sort(np.append(xd[keep].astype(np.int64) * h + yd.astype(np.int64), h * w))
    gaps = np.diff(np.concatenate([[0], pos]))
    # runs of length 0 in the middle join their neighbours (two crossings at one pixel)
    counts = [int(gaps[0])]
    i = 1
    while i < len(gaps):
        if gaps[i] > 0:
            counts.append(int(gaps[i]))
            i += 1
        else:
            i += 1
            if i < len(gaps):
                counts[-1] += int(gaps[i])
                i += 1
    return counts


def polygons_to_mask(polygons: Sequence[Sequence[float]], h: int, w: int) -> np.ndarray:
    """(H, W) bool: the union of the polygons' masks (as the COCO API merges an annotation's parts)."""
    out = np.zeros(h * w, dtype=bool)
    for poly in polygons:
        if len(poly) < 6:
            continue
        counts = np.asarray(polygon_counts(poly, h, w), dtype=np.int64)
        ends = np.cumsum(counts)
        for start, end in zip((ends - counts)[1::2], ends[1::2]):
            out[start:end] = True
    return out.reshape(w, h).T


def polygons_to_rle(polygons: Sequence[Sequence[float]], h: int, w: int) -> Dict[str, object]:
    """COCO compressed RLE of the union of the polygons."""
    from .rle import rle_counts

    return {"size": [h, w], "counts": encode_rle_string(rle_counts(polygons_to_mask(polygons, h, w)))}
