"""Checking what clients send: every bad value becomes one clear `UserError`, never a traceback.

Values arrive as raw JSON (the API events skip Gradio's preprocessing), so nothing here trusts
a type: an integer too large for a float (JSON allows 10**400) is refused like infinity.
Messages quote at most a short prefix of what was sent. The detector's ranges are detector.py's
(`CONF_RANGE`, `NMS_IOU_RANGE`), which its own checks and the README use too.
"""

import math
from typing import Any, Optional

import numpy as np

from ..everything.detector import CONF_RANGE, IMGSZ_STRIDE, NMS_IOU_RANGE, Range
from .segment_session import UserError


def shown(value: Any, limit: int = 60) -> str:
    """A short, safe rendering of a client's value for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _as_float(x: Any) -> float:
    """A number as a float; an int too large for one becomes +-infinity (float() would raise
    OverflowError)."""
    try:
        return float(x)
    except OverflowError:
        return math.inf if x > 0 else -math.inf


def _finite(values: list, what: str) -> np.ndarray:
    """A list of numbers -> float64 array; UserError unless every one is finite."""
    arr = np.array([_as_float(v) for v in values], dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise UserError(f"{what} contain NaN, infinite or too large values")
    return arr


def parse_points(value: Any, max_points: int) -> Optional[np.ndarray]:
    """[[x, y], ...] in image pixels -> (N, 2) float64, or None when absent/empty."""
    if value is None or (isinstance(value, (list, tuple)) and len(value) == 0):
        return None
    if not isinstance(value, (list, tuple)):
        raise UserError(f"points must be a list of [x, y] pairs, got {shown(value)}")
    if len(value) > max_points:
        raise UserError(f"too many points: {len(value)} (at most {max_points} per request; SAM needs few)")
    if not all(isinstance(p, (list, tuple)) and len(p) == 2 and all(_number(v) for v in p) for p in value):
        raise UserError(f"points must be a list of [x, y] pairs of numbers, got {shown(value)}")
    return _finite([v for p in value for v in p], "points").reshape(-1, 2)


def parse_labels(value: Any, n_points: int) -> Optional[np.ndarray]:
    """One label per point: 1 = include, 0 = exclude. Missing labels mean 'all include'."""
    if n_points == 0:
        if value not in (None, []):
            raise UserError("labels were given without points")
        return None
    if value is None:
        return np.ones(n_points, np.int32)
    if not isinstance(value, (list, tuple)) or not all(_number(v) for v in value):
        raise UserError(f"labels must be a list of 1 (include) or 0 (exclude), one per point; got {shown(value)}")
    if len(value) != n_points:
        raise UserError(f"labels must give one label per point: {n_points} point(s), {len(value)} label(s)")
    if any(v not in (0, 1) for v in value):
        raise UserError(f"labels must be 1 (include) or 0 (exclude), got {shown(value)}")
    return np.asarray(value, dtype=np.int32)


def parse_box(value: Any) -> Optional[np.ndarray]:
    """[x1, y1, x2, y2] in image pixels -> (4,) float64, or None."""
    if value is None or (isinstance(value, (list, tuple)) and len(value) == 0):
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 4 or not all(_number(v) for v in value):
        raise UserError(f"box must be 4 numbers [x1, y1, x2, y2], got {shown(value)}")
    box = _finite(list(value), "box")
    if box[2] < box[0] or box[3] < box[1]:
        raise UserError(f"box must be [x1, y1, x2, y2] with x2 >= x1 and y2 >= y1, got {shown(value)}")
    return box


def parse_bool(name: str, value: Any, default: Optional[bool]) -> Optional[bool]:
    """true/false (or "true"/"false"); None gives `default` (which may itself be None: "auto")."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise UserError(f"{name} must be true or false, got {shown(value)}")


def _finite_number(value: Any, error: str) -> float:
    """A finite number from a number or a numeric string, else UserError(error)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise UserError(error) from None
    if not _number(value) or not math.isfinite(_as_float(value)):
        raise UserError(error)
    return float(value)


def parse_in_range(name: str, value: Any, default: float, allowed: Range) -> float:
    """A number in `allowed`; None means the default."""
    if value is None:
        return default
    value = _finite_number(
        value, f"{name} must be a number between {allowed.low:g} and {allowed.high:g}, got {shown(value)}"
    )
    if value not in allowed:
        raise UserError(f"{name} must be in {allowed}, got {value:g}")
    return value


def parse_fraction(
    name: str, value: Any, default: float, low: float = 0.0, high: float = 1.0, low_inclusive: bool = True
) -> float:
    """A number in [low, high] (or (low, high] when not low_inclusive); None means the default."""
    return parse_in_range(name, value, default, Range(low, high, low_inclusive))


def parse_detector_conf(value: Any, default: float, name: str = "detector_conf") -> float:
    """The detector's confidence threshold, in detector.CONF_RANGE."""
    return parse_in_range(name, value, default, CONF_RANGE)


def parse_detector_nms_iou(value: Any, default: float, name: str = "detector_nms_iou") -> float:
    """The detector's NMS IoU threshold, in detector.NMS_IOU_RANGE."""
    return parse_in_range(name, value, default, NMS_IOU_RANGE)


def parse_imgsz(value: Any, default: int, low: int, high: int) -> int:
    """The detector's input size: rounded up to a multiple of 32 (as ultralytics' check_imgsz
    does), then required to lie in [low, high]."""
    if value is None:
        return default
    error = f"imgsz must be a whole number of pixels, got {shown(value)}"
    value = _finite_number(value, error)
    if value != int(value):
        raise UserError(error)
    size = int(math.ceil(int(value) / IMGSZ_STRIDE) * IMGSZ_STRIDE)
    if not low <= size <= high:
        raise UserError(f"imgsz must be between {low} and {high} (a multiple of {IMGSZ_STRIDE}), got {int(value)}")
    return size
