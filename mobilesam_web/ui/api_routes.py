"""The API endpoints `/segment` and `/everything` (no UI, no state), as hidden Gradio events.

They skip Gradio's preprocessing: values arrive as sent and are checked by params.py, so every
bad value gets one clear message (files are still checked by Gradio's upload rule before
anything runs, and again by `client_file`).

What a client sees of them (`Client.view_api()`, the "Use via API" page, `/gradio_api/info`)
comes from two places, both filled from the tables below:
- each parameter's type, description and whether it is required: the hidden component's
  `api_info()` (a JSON schema plus `additional_description`), its `value`, and the handler's
  default. Gradio makes a parameter optional when its component has a value or the handler's
  argument defaults to None; only `image` is required.
- the endpoint's description and a "Parameters:" section: the handler's docstring (Gradio's
  `api_description` when none is given; MCP clients read the parameter lines too).
"""

from typing import Any, Callable, Dict, List, Tuple

import gradio as gr

from .api import DETECTOR_CONF, DETECTOR_IMGSZ, DETECTOR_NMS_IOU, client_file, everything_api, segment_api
from .context import AppContext, bind, require_model
from .errors import user_errors
from .services import AppConfig


@user_errors
def api_segment(ctx: AppContext, image, points=None, labels=None, box=None, multimask=None):
    require_model(ctx)
    return segment_api(ctx.services, client_file(image), points, labels, box, multimask)


@user_errors
def api_everything(ctx: AppContext, image, detector_conf=None, detector_nms_iou=None, imgsz=None):
    require_model(ctx)
    return everything_api(ctx.services, client_file(image), detector_conf, detector_nms_iou, imgsz)


IMAGE_DOC = (
    "The image (PNG, JPEG, WebP, TIFF, BMP, ...), sent as gradio_client.handle_file(path): only "
    "files uploaded to this server are accepted. Required. Any size: coordinates and masks are in "
    "this image's own pixels (the server works on a copy whose long side is at most {max_side} px)."
)
_NUMBER = {"type": "number"}
_XY = {"type": "array", "items": _NUMBER, "minItems": 2, "maxItems": 2}

SEGMENT_SUMMARY = (
    "Segment one object (MobileSAM) from click points, a box, or both. Coordinates are pixels of "
    "the image sent (x to the right, y down, from its top-left corner). E.g. client.predict("
    'image=handle_file("photo.jpg"), box=[100, 150, 650, 700], api_name="/segment") or points=[[320, '
    "400]] instead of box."
)
SEGMENT_RETURNS = (
    '{"size": [H, W], "masks": [COCO RLE {"size": [H, W], "counts": str}, ...], '
    '"scores": [predicted IoU per mask], "areas": [pixels per mask]}, one entry per mask '
    "(1, or 3 with multimask); the highest score is the model's best guess."
)

_LIST = {"type": "array", "items": _NUMBER}
_COUNTS = {"type": "array", "items": {"type": "integer"}}
_OBJECTS = {"type": "array", "items": {"type": "object"}}
SEGMENT_RESULT = {
    "type": "object",
    "properties": {
        "size": {"type": "array", "items": {"type": "integer"}},
        "masks": _OBJECTS,
        "scores": _LIST,
        "areas": _COUNTS,
    },
}


def segment_params(cfg: AppConfig) -> List[Tuple[str, Dict[str, Any], str]]:
    """(name, JSON schema, description) of /segment's parameters, in order."""
    return [
        ("image", {}, IMAGE_DOC.format(max_side=cfg.max_image_side)),
        (
            "points",
            {"type": "array", "items": _XY, "maxItems": cfg.max_points},
            f"Click points [[x, y], ...] in pixels of the image sent (at most {cfg.max_points}). Default null: no "
            "points. Give points, a box, or both.",
        ),
        (
            "labels",
            {"type": "array", "items": {"type": "integer"}},
            "One label per point: 1 = part of the object, 0 = not part of it (background). Default null: all 1.",
        ),
        (
            "box",
            {"type": "array", "items": _NUMBER, "minItems": 4, "maxItems": 4},
            "Box around the object, [x1, y1, x2, y2] (top-left and bottom-right corners) in pixels of the image "
            "sent. Default null: no box.",
        ),
        (
            "multimask",
            {"type": "boolean"},
            "true: 3 candidate masks (e.g. part / object / whole); false: 1 mask. Default null: 3 for a single "
            "point without a box (an ambiguous prompt), else 1.",
        ),
    ]


EVERYTHING_SUMMARY = (
    "Segment everything (MobileSAMv2): an object-aware detector finds boxes, MobileSAM turns each "
    'into a mask. E.g. client.predict(image=handle_file("photo.jpg"), api_name="/everything").'
)
EVERYTHING_RETURNS = (
    'COCO: {"images": [{width, height, ...}], "categories": [...], "annotations": [{"segmentation": '
    'RLE, "bbox": [x, y, w, h], "area", "polygons", "predicted_iou", "prompt_box", ...}], '
    '"timings": {stage: seconds}, "imgsz": the detector input size used}, in pixels of the image '
    "sent."
)

EVERYTHING_RESULT = {
    "type": "object",
    "properties": {
        "images": _OBJECTS,
        "categories": _OBJECTS,
        "annotations": _OBJECTS,
        "timings": {"type": "object"},
        "imgsz": {"type": "integer"},
    },
}


def everything_params(cfg: AppConfig) -> List[Tuple[str, Dict[str, Any], str]]:
    """(name, JSON schema, description) of /everything's parameters, in order."""
    return [
        ("image", {}, IMAGE_DOC.format(max_side=cfg.max_image_side)),
        (
            "detector_conf",
            {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            f"The detector's confidence threshold, in (0, 1]: boxes scored below it are dropped (fewer, surer "
            f"objects when higher). Default {DETECTOR_CONF}. (Called `conf` before.)",
        ),
        (
            "detector_nms_iou",
            {"type": "number", "minimum": 0, "maximum": 1},
            f"The detector's non-maximum-suppression IoU, in [0, 1]: of two boxes overlapping more than this, the "
            f"lower-scored is dropped (lower = fewer duplicate boxes). Default {DETECTOR_NMS_IOU}. "
            "(Called `iou` before.)",
        ),
        (
            "imgsz",
            {"type": "integer", "minimum": cfg.min_imgsz, "maximum": cfg.max_imgsz},
            f"The detector's input size in pixels (long side), rounded up to a multiple of 32, within "
            f"[{cfg.min_imgsz}, {cfg.max_imgsz}]; larger finds smaller objects, slower. Default {DETECTOR_IMGSZ}. "
            "Masks always come at the size of the image sent.",
        ),
    ]


def docstring(summary: str, params: List[Tuple[str, Dict[str, Any], str]], returns: str) -> str:
    """A docstring in the layout Gradio parses (`utils.get_function_description`)."""
    lines = [summary, "", "Parameters:"] + [f"    {name}: {desc}" for name, _, desc in params]
    return "\n".join(lines + ["Returns:", f"    {returns}"])


def described(component: gr.components.Component, schema: Dict[str, Any], description: str) -> gr.components.Component:
    """Give a hidden API component a JSON schema (empty: keep the component's own, as for
    files) and a description (Gradio shows `additional_description` for inputs, `description`
    for outputs). Set on the instance: subclassing a Gradio component would make Gradio write
    a .pyi stub beside this module."""
    info = {**(schema or component.api_info()), "description": description, "additional_description": description}
    component.api_info = lambda: info
    return component


def image_input(label: str) -> gr.File:
    """A file input whose example (shown in the API page's snippet) is an image, not a PDF."""
    component = gr.File(type="filepath", label=label)
    example = gr.Image(render=False).example_inputs()
    component.example_inputs = lambda: example
    return component


def endpoint(
    fn: Callable[..., Any], ctx: AppContext, summary: str, params: List[Tuple[str, Dict[str, Any], str]], returns: str
) -> Callable[..., Any]:
    callback = bind(fn, ctx)
    callback.__doc__ = docstring(summary, params, returns)
    return callback


def build_api(ctx: AppContext) -> None:
    """The hidden components and the two API events (call inside the Blocks)."""
    cfg = ctx.config
    seg, ev = segment_params(cfg), everything_params(cfg)
    kinds: Dict[str, Callable[[str], gr.components.Component]] = {
        "image": image_input,
        "detector_conf": lambda label: gr.Number(DETECTOR_CONF, label=label),
        "detector_nms_iou": lambda label: gr.Number(DETECTOR_NMS_IOU, label=label),
        "imgsz": lambda label: gr.Number(DETECTOR_IMGSZ, label=label, precision=0),
    }

    def inputs(params) -> List[gr.components.Component]:
        # points, labels, box and multimask are JSON with no value: null (the handler's default)
        return [
            described(kinds.get(name, lambda label: gr.JSON(label=label))(name), schema, desc)
            for name, schema, desc in params
        ]

    with gr.Row(visible=False):
        seg_inputs, ev_inputs = inputs(seg), inputs(ev)
        seg_out = described(gr.JSON(label="result"), SEGMENT_RESULT, SEGMENT_RETURNS)
        ev_out = described(gr.JSON(label="coco"), EVERYTHING_RESULT, EVERYTHING_RETURNS)
        segment_btn = gr.Button()
        everything_btn = gr.Button()
    # Preprocessing off: values arrive as sent and params.py gives each bad one a clear message.
    for name, fn, summary, params, returns, ins, out, btn in (
        ("segment", api_segment, SEGMENT_SUMMARY, seg, SEGMENT_RETURNS, seg_inputs, seg_out, segment_btn),
        ("everything", api_everything, EVERYTHING_SUMMARY, ev, EVERYTHING_RETURNS, ev_inputs, ev_out, everything_btn),
    ):
        btn.click(endpoint(fn, ctx, summary, params, returns), ins, out, api_name=name, preprocess=False)
