"""The API endpoints `/segment` and `/everything` (no UI, no state), as hidden Gradio events.

They skip Gradio's preprocessing: values arrive as sent and are checked by params.py, so every
bad value gets one clear message (files are still checked by Gradio's upload rule before
anything runs, and again by `client_file`).
"""
import gradio as gr

from .api import client_file, everything_api, segment_api
from .context import AppContext, bind, require_model
from .errors import user_errors


@user_errors
def api_segment(ctx: AppContext, image, points, labels, box, multimask):
    """Segment one object. points: [[x, y], ...] (pixels of the image sent), labels: [1 or 0, ...],
    box: [x1, y1, x2, y2] or null. Returns {size, masks (COCO RLE), scores, areas}."""
    require_model(ctx)
    return segment_api(ctx.services, client_file(image), points, labels, box, multimask)


@user_errors
def api_everything(ctx: AppContext, image, conf, iou, imgsz):
    """Segment everything (MobileSAMv2). Returns COCO annotations with RLE and polygons."""
    require_model(ctx)
    return everything_api(ctx.services, client_file(image), conf, iou, imgsz)


def build_api(ctx: AppContext) -> None:
    """The hidden components and the two API events (call inside the Blocks)."""
    with gr.Row(visible=False):
        image = gr.File(type="filepath", label="image")
        points = gr.JSON(label="points")
        labels = gr.JSON(label="labels")
        box = gr.JSON(label="box")
        multi = gr.Checkbox(label="multimask")
        conf = gr.Number(0.4, label="conf")
        iou = gr.Number(0.9, label="iou")
        size = gr.Number(1024, label="imgsz", precision=0)
        out = gr.JSON(label="result")
        segment_btn = gr.Button()
        everything_btn = gr.Button()
    segment_btn.click(bind(api_segment, ctx), [image, points, labels, box, multi], out, api_name="segment",
                      preprocess=False)
    everything_btn.click(bind(api_everything, ctx), [image, conf, iou, size], out, api_name="everything",
                         preprocess=False)
