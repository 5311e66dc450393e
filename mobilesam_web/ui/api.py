"""Stateless API endpoints (usable with gradio_client without the UI).

Every call gets its own predictor; the only thing shared between callers is the read-only
model and the embedding cache keyed by image content. Coordinates and masks are in the
pixels of the image the caller sent, whatever its size: the server works on a copy whose long
side is at most `max_image_side`, maps prompts into it and sizes masks back.
"""

import logging
import os
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..data.image_io import ImageLoadError, LoadedImage, read_image
from ..data.masks import coco_annotations
from ..data.rle import low_res_to_coco_rle, mask_to_coco_rle
from .everything_run import run_everything
from .params import (
    parse_bool,
    parse_box,
    parse_detector_conf,
    parse_detector_nms_iou,
    parse_imgsz,
    parse_labels,
    parse_points,
)
from .segment_session import UserError
from .sessions import is_uploaded

log = logging.getLogger("mobilesam_web")

DETECTOR_CONF = 0.4  # /everything's defaults: the detector's confidence threshold,
DETECTOR_NMS_IOU = 0.9  # its NMS IoU,
DETECTOR_IMGSZ = 1024  # and its input size (pixels)


def segment_api(
    services, image_path: Any, points: Any = None, labels: Any = None, box: Any = None, multimask: Any = None
) -> Dict[str, Any]:
    """Masks for one object from points (x, y in image pixels) and/or a box [x1, y1, x2, y2].
    Labels default to all 1; multimask None means 3 masks for a lone point (ambiguous: part,
    object or whole, as SAM recommends), else 1.
    Returns {"size": [H, W], "masks": [COCO RLE], "scores": [...], "areas": [...]}."""
    cfg = services.config
    pts = parse_points(points, cfg.max_points)
    lbl = parse_labels(labels, 0 if pts is None else len(pts))
    bx = parse_box(box)
    multi = parse_bool("multimask", multimask, None)
    if pts is None and bx is None:
        raise UserError("give at least one point or a box")
    if multi is None:
        multi = bx is None and len(pts) == 1
    loaded = load_user_image(services, image_path)
    h, w = loaded.original_size
    for name, arr in (("points", pts), ("box", None if bx is None else bx.reshape(2, 2))):
        if arr is not None and (
            np.any(arr[:, 0] < 0) or np.any(arr[:, 0] > w) or np.any(arr[:, 1] < 0) or np.any(arr[:, 1] > h)
        ):
            raise UserError(f"{name} fall outside the {w}x{h} image")
    work = loaded.image
    sx, sy = work.shape[1] / w, work.shape[0] / h  # user pixels -> working pixels
    predictor = services.new_predictor()
    predictor.set_image(work)
    try:
        masks, scores, low = predictor.predict(
            None if pts is None else pts * [sx, sy],
            lbl,
            None if bx is None else bx * [sx, sy, sx, sy],
            multimask_output=multi,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    scores = np.asarray(scores.numpy() if hasattr(scores, "numpy") else scores)
    rles, areas = [], []
    if work.shape[:2] == (h, w):
        for m in masks.numpy() if hasattr(masks, "numpy") else masks:
            rles.append(mask_to_coco_rle(m))
            areas.append(int(m.sum()))
    else:  # straight from the low-res logits to RLE at the caller's size (a 100 MP mask is 100 MB)
        for m in np.asarray(low.numpy() if hasattr(low, "numpy") else low):
            rle, _, area = low_res_to_coco_rle(m, tuple(predictor.input_size), (h, w))
            rles.append(rle)
            areas.append(area)
    return {"size": [h, w], "masks": rles, "scores": [float(s) for s in scores], "areas": areas}


def everything_api(
    services, image_path: Any, detector_conf: Any = None, detector_nms_iou: Any = None, imgsz: Any = None
) -> Dict[str, Any]:
    """COCO-format annotations (RLE + polygons) of every object MobileSAMv2 finds, in the
    caller's pixels. None means the default for any detector parameter."""
    cfg = services.config
    conf_v = parse_detector_conf(detector_conf, DETECTOR_CONF)
    iou_v = parse_detector_nms_iou(detector_nms_iou, DETECTOR_NMS_IOU)
    size = parse_imgsz(imgsz, DETECTOR_IMGSZ, cfg.min_imgsz, cfg.max_imgsz)
    loaded = load_user_image(services, image_path)
    records, timings = run_everything(
        services, loaded.image, conf_v, iou_v, size, output_mode="coco_rle", output_size=loaded.original_size
    )
    # the caller's own file name (Gradio keeps it as the upload's base name), as the UI's exports do
    coco = coco_annotations(records, loaded.original_size, file_name=os.path.basename(str(image_path)) or "image.png")
    coco["timings"] = {k: round(v, 4) for k, v in timings.items()}
    coco["imgsz"] = size
    return coco


def uploaded_path(value: Any) -> Optional[str]:
    """The server path of an uploaded file from a raw (unpreprocessed) File payload. Gradio has
    already checked it is an upload by the time a handler runs."""
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("path")
    if isinstance(value, str) and value:
        return value
    raise UserError("image must be an uploaded file (e.g. gradio_client.handle_file(path))")


def client_file(value: Any) -> Optional[str]:
    """For handlers of client requests: the uploaded file's path, refused unless it lies in
    Gradio's upload folder (a second line behind Gradio's own rule, see sessions.py)."""
    path = uploaded_path(value)
    if path is not None and not is_uploaded(path):
        raise UserError("only files uploaded to this server can be used; upload the image first")
    return path


def load_user_image(services, value: Any) -> LoadedImage:
    path = uploaded_path(value)
    if not path:
        raise UserError("no image was given")
    cfg = services.config
    try:
        return read_image(path, max_side=cfg.max_image_side, max_pixels=cfg.max_pixels)
    except ImageLoadError as exc:
        raise UserError(f"cannot use this image: {exc}") from None


# Cut-outs are cut from the user's photo at its own size when decoding it costs at most this
# much memory (a 4000x3000 photo: 36 MB); larger photos are cut from the working copy.
CUTOUT_DECODE_BYTES = 192 * 2**20


def read_full_size(services, path: str, size: Tuple[int, int]) -> Optional[np.ndarray]:
    """The user's uploaded image at its own size (H, W) = `size`, for cut-outs; None when that
    would cost more than CUTOUT_DECODE_BYTES or the upload is gone."""
    try:
        loaded = read_image(
            client_file(path),
            max_side=max(size),
            max_pixels=services.config.max_pixels,
            max_decode_bytes=CUTOUT_DECODE_BYTES,
        )
    except (ImageLoadError, UserError, OSError) as exc:
        log.info("cut-outs from the working copy: %s", exc)
        return None
    return loaded.image if loaded.image.shape[:2] == tuple(size) else None


def cutout_image(services, s) -> np.ndarray:
    """What a segment session's cut-outs are cut from: the user's photo at its own size, like the
    masks (the working copy when the photo was not downscaled, or is too large to decode again)."""
    if s.original_size is None or s.source is None:
        return s.image
    full = read_full_size(services, s.source, s.user_size)
    return s.image if full is None else full


def read_upload(services, path: str) -> Tuple[np.ndarray, Tuple[int, int]]:
    """(worked-on image, user's size (H, W)) of a file this server's client uploaded: how a
    session released by the session budget gets its image back."""
    loaded = load_user_image(services, client_file(path))
    return loaded.image, tuple(loaded.original_size)
