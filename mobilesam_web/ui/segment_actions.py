"""The segment tab's actions on a session: clicks, boxes, undo, clear, candidates, keeping and
exporting objects. Plain functions of (session, inputs) -> session, unit-tested without a server.
"""

import base64
import binascii
import logging
import time
from typing import Any, List, Optional, Tuple

import numpy as np

from ..data.upscale import MaskCrop
from .errors import UserError
from .segment_session import MAX_HISTORY, KeptObject, Prompts, Result, SegmentSession

log = logging.getLogger("mobilesam_web")


def _checked_xy(session: SegmentSession, x: float, y: float) -> Tuple[float, float]:
    try:
        x, y = float(x), float(y)
    except (TypeError, ValueError):
        raise UserError("the click position is not a number") from None
    if not np.isfinite(x) or not np.isfinite(y):
        raise UserError("the click position is not a number")
    h, w = session.size
    if not (0 <= x < w and 0 <= y < h):
        raise UserError(f"the point ({x:.0f}, {y:.0f}) is outside the {w}x{h} image")
    return float(x), float(y)


def predict(
    services, session: SegmentSession, p: Prompts, mask_input: Optional[np.ndarray], multimask: bool, embedding=None
):
    """The decoder on prompts `p` of the session's image (or of `embedding`, the session's as
    the browser holds it) -> (low-res logits (C, 256, 256) float32, scores (C,) float32, ms)."""
    predictor = services.new_predictor()
    predictor.set_embedding(session.embedding if embedding is None else embedding, session.size)
    coords = np.array([[x, y] for x, y, _ in p.points], np.float64) if p.points else None
    labels = np.array([label for _, _, label in p.points], np.int32) if p.points else None
    box = np.array(p.box, np.float64) if p.box is not None else None
    t = time.perf_counter()
    _, scores, low = predictor.predict(coords, labels, box, mask_input, multimask_output=multimask)
    ms = (time.perf_counter() - t) * 1e3
    low = low.numpy() if hasattr(low, "numpy") else np.asarray(low)
    scores = scores.numpy() if hasattr(scores, "numpy") else np.asarray(scores)
    return low.astype(np.float32), scores.astype(np.float32), ms


def decode(services, session: SegmentSession, refine: bool = True) -> SegmentSession:
    """Run the decoder on the session's prompts (previous mask as mask_input when refining)."""
    p = session.prompts
    if p.empty():
        session.result = None
        return session
    multimask = len(p.points) == 1 and p.box is None
    mask_input = None
    prev = session.result
    if refine and prev is not None and not multimask:
        mask_input = prev.low_res[prev.selected][None]
    low, scores, session.decode_ms = predict(services, session, p, mask_input, multimask)
    session.result = Result(low, scores, int(np.argmax(scores)))
    return session


def _push_history(session: SegmentSession) -> None:
    session.history.append((session.prompts.copy(), session.result))
    del session.history[:-MAX_HISTORY]


def add_click(services, session: SegmentSession, x: float, y: float, mode: str, refine: bool = True) -> SegmentSession:
    """mode: 'add' (positive point), 'remove' (negative point) or 'box' (two clicks)."""
    x, y = _checked_xy(session, x, y)
    if mode == "box":
        if session.prompts.corner is None:
            session.prompts.corner = (x, y)
            return session
        (x0, y0), session.prompts.corner = session.prompts.corner, None
        _push_history(session)
        session.prompts.box = (min(x0, x), min(y0, y), max(x0, x), max(y0, y))
    elif mode in ("add", "remove"):
        if len(session.prompts.points) >= session.max_points:
            raise UserError(f"at most {session.max_points} points per object: keep or clear this one first")
        _push_history(session)
        session.prompts.points.append((x, y, 1 if mode == "add" else 0))
    else:
        raise UserError(f"unknown prompt mode {mode!r}")
    return decode(services, session, refine)


def set_box(services, session: SegmentSession, box, refine: bool = True) -> SegmentSession:
    x0, y0 = _checked_xy(session, *box[:2])
    x1, y1 = _checked_xy(session, min(box[2], session.size[1] - 1e-3), min(box[3], session.size[0] - 1e-3))
    _push_history(session)
    session.prompts.box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    session.prompts.corner = None
    return decode(services, session, refine)


def undo(session: SegmentSession) -> SegmentSession:
    if session.prompts.corner is not None:
        session.prompts.corner = None
    elif session.history:
        session.prompts, session.result = session.history.pop()
    return session


def clear(session: SegmentSession) -> SegmentSession:
    session.prompts, session.result, session.history = Prompts(), None, []
    return session


def select_candidate(session: SegmentSession, index: int) -> SegmentSession:
    if session.result is None or not (0 <= index < len(session.result.scores)):
        raise UserError("there is no such candidate mask")
    session.result.selected = int(index)
    return session


def _check_object_room(session: SegmentSession) -> None:
    if len(session.objects) >= session.max_objects:
        raise UserError(f"at most {session.max_objects} kept objects per image: export them, or remove some, to go on")


def keep_object(session: SegmentSession) -> SegmentSession:
    if session.result is None:
        raise UserError("add a point or a box first, then keep the object")
    _check_object_room(session)
    r = session.result
    session.objects.append(
        KeptObject(r.low_res[r.selected].copy(), float(r.scores[r.selected]), session.prompts.copy())
    )
    return clear(session)


MAX_F16_BASE64 = 4 * (256 * 256 * 2) // 3 + 4  # a 256x256 float16 mask in base64


def browser_low_res(encoded: Any) -> np.ndarray:
    """A mask's logits as the browser sends them: base64 of 256x256 little-endian float16."""
    try:
        if not isinstance(encoded, str) or len(encoded) > MAX_F16_BASE64:
            raise ValueError("wrong size")
        low = np.frombuffer(base64.b64decode(encoded, validate=True), dtype="<f2").astype(np.float32)
        low = low.reshape(256, 256)
    except (ValueError, TypeError, binascii.Error):
        raise UserError("The browser sent a malformed mask.") from None
    if not np.all(np.isfinite(low)):
        raise UserError("the mask sent by the browser is malformed")
    return low


def browser_prompts(session: SegmentSession, data: dict) -> Prompts:
    """The prompts the browser sends ({points: [[x, y, 1|0], ...], box: [x0, y0, x1, y1] or
    null}, in the session image's pixels), checked value by value."""
    points, box = data.get("points"), data.get("box")
    if not isinstance(points, (list, tuple, type(None))) or len(points or []) > session.max_points:
        raise UserError(f"the browser sent malformed prompts (at most {session.max_points} points)")
    pts = []
    for p in points or []:
        if not isinstance(p, (list, tuple)) or len(p) != 3 or p[2] not in (0, 1):
            raise UserError("the prompts sent by the browser are malformed")
        x, y = _checked_xy(session, p[0], p[1])
        pts.append((x, y, int(p[2])))
    bx = None
    if box is not None:
        try:
            b = [float(v) for v in box]
        except (TypeError, ValueError):
            b = []
        if len(b) != 4:
            raise UserError("the box sent by the browser is malformed")
        x0, y0 = _checked_xy(session, b[0], b[1])
        x1, y1 = _checked_xy(session, min(b[2], session.size[1] - 1e-3), min(b[3], session.size[0] - 1e-3))
        bx = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    return Prompts(pts, bx)


def browser_object(session: SegmentSession, data: Any) -> KeptObject:
    """A mask decoded in the browser, as its widget sends it ({low_res_f16: base64 of 256x256
    little-endian float16 logits, score, points, box}, see `browser_prompts`)."""
    data = data if isinstance(data, dict) else {}
    low = browser_low_res(data.get("low_res_f16"))
    prompts = browser_prompts(session, data)
    try:
        score = float(data.get("score", 0.0))
    except (TypeError, ValueError):
        score = float("nan")
    if not np.isfinite(score):
        raise UserError("the browser sent a malformed score")
    return KeptObject(low, score, prompts)


def decode_for_browser(services, session: SegmentSession, data: Any) -> Tuple[np.ndarray, np.ndarray, float]:
    """Decode the widget's prompts on the server, for a page whose own decoder has not loaded yet
    ({points, box, mask_f16: the previous mask's logits (see `browser_low_res`) or null}).
    The browser's rules: one point alone gives three candidates, anything else one mask, refined
    from `mask_f16` when given. -> (low-res logits (C, 256, 256) float32, scores (C,), ms)."""
    data = data if isinstance(data, dict) else {}
    p = browser_prompts(session, data)
    if p.empty():
        raise UserError("nothing to decode: send points or a box")
    multimask = len(p.points) == 1 and p.box is None
    mask_input = None
    if data.get("mask_f16") is not None and not multimask:
        mask_input = browser_low_res(data["mask_f16"])[None]
    # the embedding as the page will hold it (float16 on the wire): the browser's masks, exactly
    as_sent = np.asarray(session.embedding, dtype=np.float32).astype(np.float16).astype(np.float32)
    return predict(services, session, p, mask_input, multimask, embedding=as_sent)


def keep_browser_object(session: SegmentSession, data: Any) -> SegmentSession:
    """Keep a mask decoded in the browser (see `browser_object`) and start the next object."""
    _check_object_room(session)
    session.objects.append(browser_object(session, data))
    return clear(session)


def export_masks(
    session: SegmentSession, current: Optional[KeptObject] = None
) -> Tuple[List[Optional[MaskCrop]], List[float]]:
    """The masks to export, in the user's pixels: every kept object, then the current mask (the
    server's own, or `current` decoded in the browser) when there is one: export works without
    pressing Keep."""
    objects = list(session.objects)
    if current is not None:
        objects.append(current)
    elif session.result is not None:
        r = session.result
        objects.append(KeptObject(r.low_res[r.selected], float(r.scores[r.selected]), session.prompts))
    if not objects:
        raise UserError("Segment an object first (click it), then export.")
    return [session.user_mask(o.low_res) for o in objects], [o.score for o in objects]


def remove_object(session: SegmentSession, index: int = -1) -> SegmentSession:
    if not session.objects:
        raise UserError("there is no kept object to remove")
    session.objects.pop(index)
    return session
