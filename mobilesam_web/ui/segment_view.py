"""What the segment tab shows for a session: the server-drawn canvas (image, kept objects, the
current mask and prompts), candidate thumbnails, the status line, the kept-objects table, and the
value of the in-browser widget."""

import base64
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np

from ..data.masks import color_for, crop_resized
from ..data.upscale import MaskCrop
from . import segment_session as seg
from .context import AppContext

NO_IMAGE = "Upload an image to start, or click an example."


def next_step(s: seg.SegmentSession) -> str:
    if s.prompts.corner is not None:
        return "click the opposite corner of the box"
    if s.result is None:
        return "ready — click an object"
    return "click to refine, or keep the object"


def status_markdown(ctx: AppContext, s: Optional[seg.SegmentSession]) -> str:
    """The status line: what is loaded, what the last action took, what to do next. Only this
    user's own timings: never whether another visitor's work was reused."""
    if s is None:
        return NO_IMAGE
    h, w = s.user_size
    size = f"**{w}×{h}**" + (f" (worked on at {s.size[1]}×{s.size[0]})" if s.original_size else "")
    # No encode time: an image another visitor sent before comes from the shared embedding
    # cache in ~0 s, and that would tell this visitor so (the time is in the server log).
    parts = [f"{size} · image encoded ({ctx.config.backend})"]
    if s.in_browser:  # what happens now is on the widget's own line
        return " · ".join(parts + [f"{len(s.objects)} object(s) kept"])
    if s.result is not None:
        sel = s.result.selected
        parts.append(f"decoded in {s.decode_ms:.0f} ms · predicted IoU {s.result.scores[sel]:.3f}")
    parts.append(f"{len(s.objects)} object(s) kept")
    parts.append(next_step(s))
    return " · ".join(parts)


def status_text(ctx: AppContext, s: Optional[seg.SegmentSession]) -> str:
    """The status line as plain text (for the in-browser widget)."""
    return status_markdown(ctx, s).replace("**", "")


def objects_table(s: Optional[seg.SegmentSession]) -> List[list]:
    if s is None or not s.objects:
        return []

    def swatch(i: int) -> str:
        r, g, b = (int(v) for v in color_for(i))
        return f"<span style='color:rgb({r},{g},{b});font-size:1.4em' aria-label='colour {i + 1}'>■</span>"

    return [
        [
            i + 1,
            swatch(i),
            0 if m is None else m.area,
            round(o.score, 3),
            len(o.prompts.points),
            o.prompts.box is not None,
        ]
        for i, (o, m) in enumerate(zip(s.objects, s.object_crops()))
    ]


def view(ctx: AppContext, s: Optional[seg.SegmentSession]) -> Tuple[Any, list, str, list]:
    """(canvas, candidate thumbnails, status, kept objects) for the server-drawn view."""
    if s is None:
        return None, [], status_markdown(ctx, s), []
    return render(s), candidate_thumbnails(s), status_markdown(ctx, s), objects_table(s)


def data_url(image: np.ndarray, ext: str = ".jpg") -> str:
    if image.ndim == 3 and image.shape[2] == 4:
        ok, buf = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA))
    else:
        ok, buf = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    mime = "image/png" if ext == ".png" else "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(buf.tobytes()).decode()


def browser_view(ctx: AppContext, s: Optional[seg.SegmentSession], refine_on: bool = True) -> Optional[Dict[str, Any]]:
    """The in-browser widget's value: what it needs to decode this session's image locally.

    Keys: token (changes only with a new image: the widget re-fetches nothing while it stays),
    image (display-size JPEG data URL), width/height (the worked-on image, the frame of points
    and boxes), display_width/display_height, input_size ([h, w] in the 1024 frame), embedding
    (URL of the float16 embedding), objects_count, objects (PNG data URL of the kept objects at
    display size, or null), refine (use the previous mask as mask_input), max_points (per
    object), status (the status line as plain text)."""
    if s is None:
        return None
    if s.browser_token is None:
        s.browser_token = ctx.store.put(s)
    sc = s.display_scale
    h, w = s.size
    dw, dh = max(1, round(w * sc)), max(1, round(h * sc))
    if s.browser_image is None:  # made once per image: re-sending the view must stay cheap
        small = s.image if sc == 1.0 else cv2.resize(s.image, (dw, dh), interpolation=cv2.INTER_AREA)
        s.browser_image = data_url(small)
    return {
        "token": s.browser_token,
        "image": s.browser_image,
        "width": w,
        "height": h,
        "display_width": dw,
        "display_height": dh,
        "input_size": list(s.input_size),
        "embedding": f"/msw/embedding/{s.browser_token}",
        "objects_count": len(s.objects),
        "objects": data_url(objects_layer(s), ".png") if s.objects else None,
        "refine": bool(refine_on),
        "max_points": int(ctx.config.max_points),
        "status": status_text(ctx, s),
    }


def _display_layer(session: seg.SegmentSession, crop: Optional[MaskCrop], dh: int, dw: int) -> Optional[MaskCrop]:
    return None if crop is None else crop_resized(crop, (dh, dw))


def render(session: seg.SegmentSession) -> np.ndarray:
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


def candidate_thumbnails(session: seg.SegmentSession, side: int = 256) -> List[Tuple[np.ndarray, str]]:
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


def objects_layer(session: seg.SegmentSession) -> np.ndarray:
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
