"""The segment-everything tab: its layout and its handlers.

A run keeps what the grid comparison needs (the image, not the masks) in a per-user `gr.State`,
so the comparison reuses the run instead of repeating it. The comparison is a generator that
decodes one batch of points per step: Gradio's Cancel stops it between two batches.
"""

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import gradio as gr
import numpy as np

from . import segment_session as seg
from .api import client_file, load_user_image, read_upload
from .context import AppContext, bind, require_model
from .errors import UserError, UserFacingError, user_errors
from .everything_run import grid_steps, render_records, run_everything
from .examples import add_examples
from .exports import write_exports
from .grid_cancels import GRID_CANCELS, page_key
from .params import parse_bool, parse_detector_conf, parse_detector_nms_iou, parse_fraction, parse_imgsz
from .sessions import page_closed

log = logging.getLogger("mobilesam_web")

NO_IMAGE = "Upload an image first, click an example, or use the image from the Segment anything tab."
GRID_SIDE = 32


@dataclass
class EverythingRun:
    """One user's last run: what the grid comparison needs. (Masks are not kept: a few hundred
    full-size masks would cost a few hundred MB per visitor.)"""

    image: np.ndarray  # the worked-on copy
    output_size: Tuple[int, int]  # (H, W) of the user's image
    name: str
    objects: int
    seconds: float  # the wall time the visitor waited


@dataclass
class EverythingTab:
    state: gr.State
    image: gr.File
    status: gr.Markdown
    files: gr.File


class PageGone(UserError):
    """The visitor's page disconnected: the work for it stops (nobody would see the result)."""


# Where each stage of a run starts on the progress bar (its share roughly its time on 2 cores).
# Gradio shows a stage's name only beside a fraction, so every stage reports one.
STAGES = {
    "reading image": 0.01,
    "loading the detector": 0.02,
    "encoding image": 0.03,
    "detecting objects": 0.12,
    "decoding": 0.25,  # the pipeline's "decoded N/M boxes", up to "post-processing masks"
    "post-processing masks": 0.85,
    "writing downloads": 0.92,
    "drawing the objects": 0.97,
}


def stage(progress, name: str, desc: Optional[str] = None) -> None:
    """Report the start of a stage of the run: its name, and where it starts on the bar."""
    progress(STAGES[name], desc=desc or name)


def _progress_adapter(progress, gone: Callable[[], bool] = lambda: False, services=None):
    """The pipeline's reports (fraction, message) -> the run's bar: each stage named, the decode
    phase's fraction spread over its share. Each report also checks that the page is still
    there. A slow encoder's step says how long."""
    expected = services.encode_estimate() if hasattr(services, "encode_estimate") else 0.0
    decode = (STAGES["decoding"], STAGES["post-processing masks"])

    def report(f: float, msg: str) -> None:
        if gone():
            raise PageGone("the page was closed; the run stopped")
        if msg == "encoding image" and expected >= 2.0:
            stage(progress, msg, f"encoding image with {services.model_name} (about {expected:.0f} s on this server)")
        elif msg in STAGES:
            stage(progress, msg)
        elif msg == "done":
            return
        else:  # decoding: "decoded N/M boxes"
            progress(decode[0] + (decode[1] - decode[0]) * min(max(f, 0.0), 1.0), desc=msg)

    return report


def _page_gone(ctx: AppContext, request: Optional[gr.Request]) -> Callable[[], bool]:
    session = getattr(request, "session_hash", None)
    return lambda: page_closed(ctx.blocks, session)


def _source(ctx: AppContext, path, seg_session) -> Tuple[np.ndarray, Tuple[int, int], str]:
    """(worked-on image, user's size, name): the upload, else the segment tab's image."""
    if path:
        loaded = load_user_image(ctx.services, client_file(path))
        return loaded.image, tuple(loaded.original_size), os.path.basename(path)
    if isinstance(seg_session, seg.SegmentSession):
        with seg_session.lock:  # a session released by the budget reads its upload again
            seg_session.restore(lambda p: read_upload(ctx.services, p), ctx.services)
            return seg_session.image, tuple(seg_session.user_size), seg_session.name
    raise UserFacingError(NO_IMAGE)


def segment_everything(
    ctx: AppContext, path, conf, iou, imgsz, iou_filter, stab_filter, dedupe, seg_session, progress, request=None
) -> tuple:
    """The run shared by the button, the examples and 'use the image from Segment anything'.
    The reported total is the time from this handler's start to its return: reading the image,
    the pipeline, the overlay and writing every download."""
    t_start = time.perf_counter()
    require_model(ctx)
    cfg = ctx.config
    conf = parse_detector_conf(conf, 0.4, "Detector confidence")
    iou = parse_detector_nms_iou(iou, 0.9, "Detector NMS IoU")
    imgsz = parse_imgsz(imgsz, 1024, cfg.min_imgsz, cfg.max_imgsz)
    iou_filter = parse_fraction("Min predicted IoU", iou_filter, 0.0)
    stab_filter = parse_fraction("Min stability score", stab_filter, 0.0)
    dedupe = parse_bool("Merge near-duplicate masks", dedupe, False)
    stage(progress, "reading image")
    image, size, name = _source(ctx, path, seg_session)
    t_read = time.perf_counter() - t_start
    t0 = time.perf_counter()
    stage(progress, "loading the detector")
    ctx.services.get_detector()  # loaded on first use only; run_everything says if it is missing
    t_load = time.perf_counter() - t0
    records, t = run_everything(
        ctx.services,
        image,
        conf,
        iou,
        imgsz,
        pred_iou_thresh=iou_filter if iou_filter > 0 else None,
        stability_thresh=stab_filter if stab_filter > 0 else None,
        mask_nms_thresh=0.9 if dedupe else None,
        progress=_progress_adapter(progress, _page_gone(ctx, request), ctx.services),
        output_size=size,
    )
    n = len(records)
    stage(progress, "writing downloads", f"writing downloads ({n} objects)")
    t0 = time.perf_counter()
    export = write_exports(image, records, name, cutouts=False, size=size)
    t_export = time.perf_counter() - t0
    t0 = time.perf_counter()
    stage(progress, "drawing the objects")
    shown = render_records(image, records)
    t_draw = time.perf_counter() - t0
    del records  # full-size masks: free them before Gradio encodes the overlay
    total = time.perf_counter() - t_start
    noun = "object" if n == 1 else "objects"
    boxes = int(t["boxes"])
    load = f"load the detector {t_load:.2f} s · " if t_load >= 0.01 else ""  # once per server
    md = (
        f"**{n} {noun}** from {boxes} detector boxes · **{total:.2f} s** in all — "
        f"read image {t_read:.2f} s · {load}encode {t['encode']:.2f} s · detect {t['detect']:.2f} s · "
        f"decode {t['decode']:.2f} s ({t['decode'] / max(boxes, 1) * 1e3:.0f} ms/box) · "
        f"post-process {t['postprocess']:.2f} s · downloads {t_export:.2f} s · draw {t_draw:.2f} s\n\n"
        f"Downloads: {export.summary}."
    )
    run = EverythingRun(image=image, output_size=size, name=name, objects=n, seconds=total)
    files = gr.update(value=export.paths, visible=True, label=f"Downloads — {export.summary}")
    return (
        shown,
        md,
        files,
        run,
        gr.update(interactive=True),
        gr.update(value=None, visible=False),
        "The grid comparison reuses this run's image: only SAM's grid is computed.",
    )


@user_errors
def on_everything(
    ctx: AppContext,
    path,
    conf,
    iou,
    imgsz,
    iou_filter,
    stab_filter,
    dedupe,
    seg_session,
    request: gr.Request = None,
    progress=gr.Progress(),
):
    """Segment everything in the uploaded image (else the segment tab's image)."""
    return segment_everything(
        ctx, path, conf, iou, imgsz, iou_filter, stab_filter, dedupe, seg_session, progress, request
    )


@user_errors
def on_everything_from_segment(
    ctx: AppContext,
    conf,
    iou,
    imgsz,
    iou_filter,
    stab_filter,
    dedupe,
    seg_session,
    request: gr.Request = None,
    progress=gr.Progress(),
):
    """Segment everything in the image loaded in the segment tab (and clear this tab's upload)."""
    if not isinstance(seg_session, seg.SegmentSession):
        raise UserFacingError("Upload an image in the Segment anything tab first.")
    out = segment_everything(
        ctx, None, conf, iou, imgsz, iou_filter, stab_filter, dedupe, seg_session, progress, request
    )
    return out + (None,)


def _grid_busy(busy: bool) -> Tuple[Any, Any]:
    """(compare button, cancel button) while the comparison runs or not."""
    return gr.update(interactive=not busy), gr.update(visible=busy)


@user_errors
def on_grid(ctx: AppContext, run, request: gr.Request = None, progress=gr.Progress()):
    """SAM's 32×32 grid on the last run's image, for comparison. A generator: each step decodes
    one batch of points and reports it, so Cancel stops the work between two batches."""
    if not isinstance(run, EverythingRun):
        raise UserFacingError("Run Segment everything first; the comparison reuses its image.")
    require_model(ctx)
    total_points = GRID_SIDE * GRID_SIDE
    t0 = time.perf_counter()
    page = page_key(request)
    cancelled = GRID_CANCELS.start(page)  # before Cancel shows (the first yield)
    yield (f"Grid {GRID_SIDE}×{GRID_SIDE}: encoding the image, then {total_points} points…", gr.update()) + _grid_busy(
        True
    )
    steps = grid_steps(ctx.services, run.image, GRID_SIDE)
    gone = _page_gone(ctx, request)
    try:
        while True:
            try:
                done, total = next(steps)
            except StopIteration as finished:
                records = finished.value
                break
            if gone():  # the page is gone: nobody waits for this (Gradio does not stop it by itself)
                log.info("grid comparison stopped at %d/%d points: its page disconnected", done, total)
                return
            if cancelled.is_set():
                yield (f"Grid comparison cancelled ({done}/{total} points were decoded).", gr.update()) + _grid_busy(
                    False
                )
                return
            progress((done, total), desc="grid: points decoded", unit="points")
            yield (
                f"Grid {GRID_SIDE}×{GRID_SIDE}: {done}/{total} points decoded · {time.perf_counter() - t0:.0f} s",
                gr.update(),
            ) + _grid_busy(True)
    finally:
        steps.close()  # also when Gradio closes this generator (the page went away): no further batch
        GRID_CANCELS.end(page, cancelled)
    seconds = time.perf_counter() - t0
    shown = render_records(run.image, records)
    speed = f" — MobileSAMv2 took {run.seconds:.1f} s in all ({seconds / max(run.seconds, 1e-6):.0f}× faster)"
    md = (
        f"Grid {GRID_SIDE}×{GRID_SIDE} (SAM's automatic mask generator, torch): **{len(records)} objects in "
        f"{seconds:.1f} s**{speed}; MobileSAMv2 found {run.objects}."
    )
    yield (md, gr.update(value=shown, visible=True)) + _grid_busy(False)


def on_grid_cancel(ctx: AppContext, request: gr.Request = None):
    """Cancel: the running comparison stops before its next batch and reports it (the button
    comes back then)."""
    if GRID_CANCELS.cancel(page_key(request)):
        return ("Cancelling the grid comparison (after the batch in progress)…", gr.update(), gr.update(visible=False))
    return ("Grid comparison cancelled.",) + _grid_busy(False)


# While a run is under way (Gradio's progress shows on the image), the tab's status says so
# instead of its last words ("Upload an image first…"): a class the page's CSS turns into that
# line, removed once the progress has come and gone (a result or an error).
RUNNING_JS = """(...args) => {
  const st = document.querySelector('#msw-ev-status');
  if (st) {
    st.classList.add('msw-running');
    let seen = false, t0 = Date.now();
    const poll = setInterval(() => {
      const busy = !!document.querySelector('#msw-ev-out .progress-text, #msw-ev-out .eta-bar');
      seen = seen || busy;
      if ((seen && !busy) || (!seen && Date.now() - t0 > 15000)) { st.classList.remove('msw-running'); clearInterval(poll); }
    }, 300);
  }
  return args;
}"""


# --------------------------------------------------------------------------------- layout
def build_everything_tab(ctx: AppContext, seg_state: gr.State) -> EverythingTab:
    """The tab's components and events (call inside `gr.Tab`); `seg_state` is the segment
    tab's session, whose image the tab can reuse."""
    gr.Markdown(
        "MobileSAMv2: an object-aware detector proposes boxes, each decoded once "
        "(instead of SAM's 32×32 grid of points)."
    )
    state = gr.State(None, time_to_live=ctx.config.session_ttl)
    with gr.Row(elem_id="msw-ev-row"):
        with gr.Column(scale=1, min_width=260, elem_id="msw-ev-controls"):
            image = gr.File(label="Image", type="filepath", file_types=["image"], height=140, elem_id="msw-ev-upload")
            examples = add_examples(image, elem_id="msw-ev-examples")
            use_seg = gr.Button("Use the image from Segment anything", size="sm", elem_id="msw-ev-use-segment")
            conf = gr.Slider(0.05, 0.95, 0.4, step=0.05, label="Detector confidence", elem_id="msw-ev-conf")
            iou = gr.Slider(0.3, 1.0, 0.9, step=0.05, label="Detector NMS IoU")
            size = gr.Radio([640, 1024], value=1024, label="Detector image size")
            iou_f = gr.Slider(0.0, 1.0, 0.0, step=0.01, label="Min predicted IoU (0 = off)")
            stab = gr.Slider(0.0, 1.0, 0.0, step=0.01, label="Min stability score (0 = off)")
            dedupe = gr.Checkbox(False, label="Merge near-duplicate masks (mask IoU > 0.9)")
            run_btn = gr.Button("Segment everything", variant="primary", elem_id="msw-ev-run")
            files = gr.File(label="Downloads", file_count="multiple", visible=False, elem_id="msw-ev-files")
        with gr.Column(scale=3, elem_id="msw-ev-main"):
            out = gr.Image(label="Objects", interactive=False, format="jpeg", elem_id="msw-ev-out")
            status = gr.Markdown(NO_IMAGE, elem_id="msw-ev-status")
            with gr.Row():
                grid_btn = gr.Button(
                    f"Compare with SAM's {GRID_SIDE}×{GRID_SIDE} grid (slow)", interactive=False, elem_id="msw-ev-grid"
                )
                cancel_btn = gr.Button("Cancel", visible=False, variant="stop", elem_id="msw-ev-cancel")
            grid_md = gr.Markdown("", elem_id="msw-ev-grid-status")
            grid_out = gr.Image(
                label=f"Grid {GRID_SIDE}×{GRID_SIDE}",
                interactive=False,
                format="jpeg",
                visible=False,
                elem_id="msw-ev-grid-out",
            )

    params = [conf, iou, size, iou_f, stab, dedupe, seg_state]
    outs = [out, status, files, state, grid_btn, grid_out, grid_md]
    # the tab's status says a run is under way the moment it starts (its steps show on the image)
    private = dict(api_visibility="private", show_progress_on=[out], js=RUNNING_JS)
    run_btn.click(bind(on_everything, ctx), [image] + params, outs, **private)
    if examples is not None:
        examples.load_input_event.then(bind(on_everything, ctx), [image] + params, outs, **private)
    use_seg.click(bind(on_everything_from_segment, ctx), params, outs + [image], **private)
    # one grid at a time across visitors: it is minutes of both cores
    # trigger_mode "multiple": a click right after Cancel must start a new run, though the page
    # still counts the cancelled one as pending until its current batch ends
    grid_btn.click(
        bind(on_grid, ctx),
        state,
        [grid_md, grid_out, grid_btn, cancel_btn],
        api_visibility="private",
        show_progress_on=[grid_md],
        concurrency_limit=1,
        concurrency_id="msw-grid",
        trigger_mode="multiple",
    )
    cancel_btn.click(
        bind(on_grid_cancel, ctx),
        None,
        [grid_md, grid_btn, cancel_btn],
        api_visibility="private",
        show_progress="hidden",
    )
    return EverythingTab(state=state, image=image, status=status, files=files)
