"""Segment-anything tab: one user's session state and the handlers that update it.

The state object lives in `gr.State`, so every browser session has its own; handlers are plain
functions of (state, inputs) -> (state, outputs) and are unit-tested without a server.
"""

import base64
import binascii
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Tuple

import cv2
import numpy as np

from ..masks import color_for, crop_resized
from ..upscale import MaskCrop, mask_crop_from_low_res

log = logging.getLogger("mobilesam_web")

DISPLAY_SIDE = 1024  # the canvas is drawn at most this large; clicks are mapped back
MAX_HISTORY = 50


class UserError(ValueError):
    """A problem the user can fix; the UI shows the message as gr.Error."""


@dataclass
class Prompts:
    points: List[Tuple[float, float, int]] = field(default_factory=list)  # x, y, label (1 / 0)
    box: Optional[Tuple[float, float, float, float]] = None
    corner: Optional[Tuple[float, float]] = None  # first click of a two-click box

    def empty(self) -> bool:
        return not self.points and self.box is None

    def copy(self) -> "Prompts":
        return Prompts(list(self.points), self.box, self.corner)


@dataclass
class Result:
    low_res: np.ndarray  # (C, 256, 256) logits
    scores: np.ndarray  # (C,)
    selected: int = 0


@dataclass
class KeptObject:
    low_res: np.ndarray  # (256, 256) logits of the chosen mask
    score: float
    prompts: Prompts
    crop: Optional[MaskCrop] = None  # its mask in the session image, made once (see `object_crops`)


@dataclass
class SegmentSession:
    image: np.ndarray  # (H, W, 3) uint8, after loading/downscaling
    embedding: object  # engine-specific embedding (numpy or torch)
    input_size: Tuple[int, int]
    name: str = "image"
    prompts: Prompts = field(default_factory=Prompts)
    result: Optional[Result] = None
    history: List[Tuple[Prompts, Optional[Result]]] = field(default_factory=list)
    objects: List[KeptObject] = field(default_factory=list)
    encode_seconds: float = 0.0  # this upload's encoding time
    decode_ms: float = 0.0
    original_size: Optional[Tuple[int, int]] = None  # the user's image (H, W) when `image` is downscaled
    max_points: int = 64
    max_objects: int = 100
    browser_token: Optional[str] = None  # the embedding handed to this user's browser
    browser_image: Optional[str] = None  # the display image as a data URL (made once)
    source: Optional[str] = None  # the uploaded file, to read again after a release
    size_before_release: Optional[Tuple[int, int]] = None
    cold: bool = False  # image and embedding released by the session budget (made again on use)
    evicted: bool = False  # everything released: the visitor must upload again
    # events of one session apply one at a time (Gradio runs a session's events concurrently)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def nbytes(self) -> int:
        """What this session holds in memory (for the server's session budget)."""
        arrays = [self.image, self.embedding]
        arrays += [r.low_res for _, r in self.history if r is not None]
        arrays += [] if self.result is None else [self.result.low_res]
        arrays += [o.low_res for o in self.objects] + [o.crop.crop for o in self.objects if o.crop is not None]
        total = sum(getattr(a, "nbytes", 0) or 0 for a in arrays)
        return total + len(self.browser_image or "")

    def release(self, everything: bool = False) -> None:
        """The session budget's eviction. First the image, the embedding and what can be made
        again from them (the visitor's prompts, masks and kept objects stay, and `restore`
        reads the upload again on the next action); `everything=True` drops the rest too."""
        with self.lock:
            if not self.cold:
                self.size_before_release = self.size
            self.cold = True
            self.image = np.zeros((1, 1, 3), np.uint8)
            self.embedding = None
            self.browser_image = None
            self.history = []
            for o in self.objects:
                o.crop = None
            if everything or self.source is None:
                self.evicted = True
                self.result, self.objects, self.prompts = None, [], Prompts()

    def restore(self, load: "Callable[[str], Tuple[np.ndarray, Tuple[int, int]]]", services) -> None:
        """After `release()`: read the upload again (`load(path) -> (image, user size)`) and
        encode it; raises UserError if that is no longer possible (the visitor uploads again)."""
        from .budget import EVICTED

        if not self.cold:
            return
        if self.evicted or self.source is None:
            raise UserError(EVICTED)
        try:
            image, _ = load(self.source)
        except Exception:  # the upload expired meanwhile
            self.release(everything=True)
            raise UserError(EVICTED) from None
        fresh = start_session(services, image)
        if fresh.size != self.size_before_release:
            raise UserError(EVICTED)
        self.image, self.embedding, self.cold = fresh.image, fresh.embedding, False
        log.info("restored a released session (%dx%d)", image.shape[1], image.shape[0])

    @property
    def user_size(self) -> Tuple[int, int]:
        """(H, W) of the image as the user has it: exports are in these pixels."""
        return self.original_size or self.size

    @property
    def size(self) -> Tuple[int, int]:
        if self.cold and self.size_before_release is not None:
            return self.size_before_release
        return self.image.shape[0], self.image.shape[1]

    @property
    def display_scale(self) -> float:
        return min(1.0, DISPLAY_SIDE / max(self.size))

    def mask(self, low_res: np.ndarray) -> Optional[MaskCrop]:
        """A mask in the session image, as its box (None if empty)."""
        return mask_crop_from_low_res(low_res, self.input_size, self.size)

    def current_crop(self) -> Optional[MaskCrop]:
        if self.result is None:
            return None
        return self.mask(self.result.low_res[self.result.selected])

    def current_mask(self) -> Optional[np.ndarray]:
        """The current mask as a full (H, W) array (one mask: for tests and callers that want it)."""
        if self.result is None:
            return None
        crop = self.current_crop()
        return np.zeros(self.size, bool) if crop is None else crop.full()

    def object_masks(self) -> List[np.ndarray]:
        """Every kept object's mask as a full array (dense: for tests; the app uses object_crops)."""
        return [np.zeros(self.size, bool) if c is None else c.full() for c in self.object_crops()]

    def object_crops(self) -> List[Optional[MaskCrop]]:
        """Every kept object's mask, made once per object: events redraw them all."""
        for o in self.objects:
            if o.crop is None:
                o.crop = self.mask(o.low_res) or MaskCrop(0, 0, np.zeros((0, 0), bool), self.size)
        return [o.crop if o.crop.area else None for o in self.objects]

    def user_mask(self, low_res: np.ndarray) -> Optional[MaskCrop]:
        """A mask in the user's own pixels (the exported size), as its box."""
        return mask_crop_from_low_res(low_res, self.input_size, self.user_size)


def start_session(
    services,
    image: np.ndarray,
    name: str = "image",
    original_size: Optional[Tuple[int, int]] = None,
    source: Optional[str] = None,
) -> SegmentSession:
    """Encode the image once; the embedding stays in the session. original_size: the user's
    image size when `image` is a downscaled copy; source: the uploaded file it came from."""
    predictor = services.new_predictor()
    t = time.perf_counter()
    predictor.set_image(image)
    took = time.perf_counter() - t
    log.info("encoded a %dx%d image in %.2f s", image.shape[1], image.shape[0], took)
    return SegmentSession(
        image=image,
        embedding=predictor.get_image_embedding(),
        input_size=tuple(predictor.input_size),
        name=name,
        encode_seconds=took,
        original_size=None if original_size is None else tuple(original_size),
        max_points=int(getattr(getattr(services, "config", None), "max_points", 64)),
        max_objects=int(getattr(getattr(services, "config", None), "max_objects", 100)),
        source=source,
    )


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


def decode(services, session: SegmentSession, refine: bool = True) -> SegmentSession:
    """Run the decoder on the session's prompts (previous mask as mask_input when refining)."""
    p = session.prompts
    if p.empty():
        session.result = None
        return session
    predictor = services.new_predictor()
    predictor.set_embedding(session.embedding, session.size)
    coords = np.array([[x, y] for x, y, _ in p.points], np.float64) if p.points else None
    labels = np.array([label for _, _, label in p.points], np.int32) if p.points else None
    box = np.array(p.box, np.float64) if p.box is not None else None
    multimask = len(p.points) == 1 and box is None
    mask_input = None
    prev = session.result
    if refine and prev is not None and not multimask:
        mask_input = prev.low_res[prev.selected][None]
    t = time.perf_counter()
    _, scores, low = predictor.predict(coords, labels, box, mask_input, multimask_output=multimask)
    session.decode_ms = (time.perf_counter() - t) * 1e3
    low = low.numpy() if hasattr(low, "numpy") else np.asarray(low)
    scores = scores.numpy() if hasattr(scores, "numpy") else np.asarray(scores)
    session.result = Result(low.astype(np.float32), scores.astype(np.float32), int(np.argmax(scores)))
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


def browser_object(session: SegmentSession, data: Any) -> KeptObject:
    """A mask decoded in the browser, as its widget sends it ({low_res_f16: base64 of 256x256
    little-endian float16 logits, score, points: [[x, y, 1|0], ...], box: [x0, y0, x1, y1] or
    null}, in the session image's pixels), checked value by value."""
    data = data if isinstance(data, dict) else {}
    encoded = data.get("low_res_f16")
    try:
        if not isinstance(encoded, str) or len(encoded) > MAX_F16_BASE64:
            raise ValueError("wrong size")
        low = np.frombuffer(base64.b64decode(encoded, validate=True), dtype="<f2").astype(np.float32)
        low = low.reshape(256, 256)
    except (ValueError, TypeError, binascii.Error):
        raise UserError("The browser sent a malformed mask.") from None
    if not np.all(np.isfinite(low)):
        raise UserError("the mask sent by the browser is malformed")
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
    try:
        score = float(data.get("score", 0.0))
    except (TypeError, ValueError):
        score = float("nan")
    if not np.isfinite(score):
        raise UserError("the browser sent a malformed score")
    return KeptObject(low, score, Prompts(pts, bx))


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


def _display_layer(session: SegmentSession, crop: Optional[MaskCrop], dh: int, dw: int) -> Optional[MaskCrop]:
    return None if crop is None else crop_resized(crop, (dh, dw))


def render(session: SegmentSession) -> np.ndarray:
    """The canvas: kept objects in their colours, the current mask highlighted, prompt markers.
    Drawn at display size (clicks are mapped back with `display_scale`), mask by mask within
    each mask's box."""
    s = session.display_scale
    h, w = session.size
    dw, dh = max(1, round(w * s)), max(1, round(h * s))
    img = session.image if s == 1.0 else cv2.resize(session.image, (dw, dh), interpolation=cv2.INTER_AREA)
    canvas = img.copy()
    layers = [(m, color_for(i), 0.45, 2) for i, m in enumerate(session.object_crops())]
    layers.append((session.current_crop(), color_for(len(session.objects)), 0.55, 3))
    for crop, color, alpha, width in layers:
        crop = _display_layer(session, crop, dh, dw)
        if crop is None:
            continue
        x0, y0, x1, y1 = crop.bounds
        region = canvas[y0 : y1 + 1, x0 : x1 + 1]
        blend = region[crop.crop].astype(np.float32) * (1 - alpha) + color.astype(np.float32) * alpha
        region[crop.crop] = blend.clip(0, 255).astype(np.uint8)
        contours, _ = cv2.findContours(
            crop.crop.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0)
        )
        cv2.drawContours(canvas, contours, -1, (255, 255, 255), width)
    r = max(4, round(min(dw, dh) / 90))
    p = session.prompts
    if p.box is not None:
        x0, y0, x1, y1 = [round(v * s) for v in p.box]
        cv2.rectangle(canvas, (x0, y0), (x1, y1), (255, 215, 0), max(2, r // 2))
    if p.corner is not None:
        cx, cy = round(p.corner[0] * s), round(p.corner[1] * s)
        cv2.drawMarker(canvas, (cx, cy), (255, 215, 0), cv2.MARKER_CROSS, 3 * r, max(2, r // 2))
    for x, y, label in p.points:
        c = (round(x * s), round(y * s))
        color = (40, 200, 80) if label == 1 else (230, 50, 50)
        cv2.circle(canvas, c, r, color, -1)
        cv2.circle(canvas, c, r, (255, 255, 255), max(1, r // 3))
        cv2.line(canvas, (c[0] - r // 2, c[1]), (c[0] + r // 2, c[1]), (255, 255, 255), max(1, r // 4))
        if label == 1:
            cv2.line(canvas, (c[0], c[1] - r // 2), (c[0], c[1] + r // 2), (255, 255, 255), max(1, r // 4))
    return canvas


def candidate_thumbnails(session: SegmentSession, side: int = 256) -> List[Tuple[np.ndarray, str]]:
    """Each candidate mask over a small copy of the image, captioned with its predicted IoU."""
    if session.result is None:
        return []
    h, w = session.size
    s = min(1.0, side / max(h, w))
    small = cv2.resize(session.image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    out = []
    color = color_for(len(session.objects)).astype(np.float32)
    for i, (low, score) in enumerate(zip(session.result.low_res, session.result.scores)):
        t = small.astype(np.float32)
        crop = session.mask(low)
        crop = None if crop is None else crop_resized(crop, small.shape[:2])
        if crop is not None:
            x0, y0, x1, y1 = crop.bounds
            region = t[y0 : y1 + 1, x0 : x1 + 1]
            region[crop.crop] = region[crop.crop] * 0.4 + color * 0.6
        mark = "✓ " if i == session.result.selected else ""
        out.append((t.astype(np.uint8), f"{mark}mask {i + 1} · IoU {score:.3f}"))
    return out


def objects_layer(session: SegmentSession) -> np.ndarray:
    """RGBA layer of the kept objects at display size (for the in-browser canvas)."""
    s = session.display_scale
    h, w = session.size
    dw, dh = max(1, round(w * s)), max(1, round(h * s))
    layer = np.zeros((dh, dw, 4), np.uint8)
    for i, m in enumerate(session.object_crops()):
        crop = _display_layer(session, m, dh, dw)
        if crop is None:
            continue
        x0, y0, x1, y1 = crop.bounds
        layer[y0 : y1 + 1, x0 : x1 + 1][crop.crop] = (*color_for(i), 115)
        contours, _ = cv2.findContours(
            crop.crop.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0)
        )
        cv2.drawContours(layer, contours, -1, (255, 255, 255, 255), 2)
    return layer
