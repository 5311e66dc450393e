"""The segment-anything tab: its layout and its handlers.

Handlers are module-level functions `handler(ctx, *inputs)` bound with `context.bind`; the
user's session (image, embedding, prompts, kept objects) travels in `gr.State`.

Two ways to decode, one per visitor:
- in the browser (default when the exported decoder exists): the `msw-widget` canvas decodes
  locally and raises 'keep', 'export' and 'fallback' events (see `segment_view.browser_view`
  for its value and `browser_object` for the mask it sends);
- on the server: clicks on the `msw-canvas` image, candidates, and the Gradio buttons.
"""

import contextlib
import functools
import logging
import os
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Dict, Optional

import gradio as gr

from . import segment_actions as actions
from . import segment_session as seg
from .api import client_file, cutout_image, load_user_image, read_upload
from .budget import EVICTED
from .context import AppContext, bind, require_model
from .encode_progress import with_encode_progress
from .errors import UserFacingError, user_errors
from .examples import add_examples
from .exports import records_from_masks, write_exports
from .params import parse_bool
from .segment_view import browser_view, status_markdown, view

log = logging.getLogger("mobilesam_web")

MODES = {"Add (+)": "add", "Remove (−)": "remove", "Box (2 clicks)": "box"}

# The widget's code lives in static/. Gradio registers custom events by finding their quoted
# names in this string, hence the comment line inside it.
WIDGET_JS = """
// events raised by the widget: 'keep', 'fallback', 'export'
import('/msw/static/msw_canvas.js').then((m) => m.mount({element, props, trigger,
  watch: typeof watch === 'function' ? watch : null}))
  .catch((e) => { document.documentElement.classList.remove('msw-device-mode');
                  trigger('fallback', {reason: 'could not load the widget: ' + e}); });
"""

FALLBACK = "In-browser decoding is unavailable ({reason}); decoding on the server."


@dataclass
class SegmentTab:
    """The tab's components that other parts of the app use."""

    state: gr.State
    upload: gr.File
    widget: gr.HTML
    info: gr.Markdown
    files: gr.File


MASK_FIELDS = ("low_res_f16", "score", "points", "box")


def event_fields(evt: Optional[gr.EventData], names) -> dict:
    """The named fields of a custom event's payload (gr.EventData reads them from its data).
    A client may send any JSON as the payload: a field that a non-object payload cannot give
    is simply absent."""
    out = {}
    for name in names:
        try:
            out[name] = getattr(evt, name)
        except (AttributeError, TypeError, KeyError, IndexError):
            pass
    return out


def _need_image(s: Optional[seg.SegmentSession]) -> seg.SegmentSession:
    if s is None:
        raise UserFacingError("Upload an image first.")
    if s.evicted:
        raise UserFacingError(EVICTED)
    return s


def one_at_a_time(fn: Callable) -> Callable:
    """A handler `(ctx, s, ...)` run under its session's lock (Gradio runs one page's events
    concurrently: a keep and a clear must not interleave), whose session is then counted
    against the server's session budget."""

    @functools.wraps(fn)
    def handler(ctx: AppContext, s, *args, **kwargs):
        lock = s.lock if isinstance(s, seg.SegmentSession) else contextlib.nullcontext()
        with lock:
            if isinstance(s, seg.SegmentSession):
                s.restore(lambda path: read_upload(ctx.services, path), ctx.services)  # after a budget release
            out = fn(ctx, s, *args, **kwargs)
        if isinstance(s, seg.SegmentSession):
            ctx.budget.touch(s)
        return out

    return handler


def _downloads(export) -> dict:
    return gr.update(value=export.paths, visible=True, label=f"Downloads — {export.summary}")


# ------------------------------------------------------------------------------- handlers
@user_errors
def on_upload(ctx: AppContext, path, refine_on, use_browser=False, progress=gr.Progress()):
    """A new image: read it, encode it once, show it (on the canvas or in the widget)."""
    if not path:
        return (None,) + view(ctx, None) + (None, gr.update(value=None, visible=False))
    require_model(ctx)
    progress(0.02, desc="reading image")  # Gradio shows a step's name only beside a fraction
    loaded = load_user_image(ctx.services, client_file(path))
    s = with_encode_progress(
        ctx.services,
        progress,
        lambda: seg.start_session(
            ctx.services,
            loaded.image,
            name=os.path.basename(path),
            original_size=loaded.original_size if loaded.scale != 1.0 else None,
            source=client_file(path),
        ),
    )
    s.in_browser = bool(use_browser) and ctx.browser_available
    ctx.budget.touch(s)
    return (s,) + view(ctx, s) + (browser_view(ctx, s, refine_on), gr.update(value=None, visible=False))


@user_errors
@one_at_a_time
def on_browser_keep(ctx: AppContext, s, refine_on, evt: gr.EventData):
    """The widget's 'keep': {low_res_f16, score, points, box} of the mask to keep."""
    s = actions.keep_browser_object(_need_image(s), event_fields(evt, MASK_FIELDS))
    s.in_browser = True
    return (s,) + view(ctx, s) + (browser_view(ctx, s, refine_on),)


@user_errors
@one_at_a_time
def on_browser_export(ctx: AppContext, s, evt: gr.EventData):
    """The widget's 'export': {low_res_f16, score, points, box} of the current (not kept) mask,
    or {} when there is none. Exports the kept objects plus that mask."""
    s = _need_image(s)
    data = event_fields(evt, MASK_FIELDS)
    current = actions.browser_object(s, data) if data.get("low_res_f16") is not None else None
    masks, scores = actions.export_masks(s, current)
    return _downloads(
        write_exports(cutout_image(ctx.services, s), records_from_masks(masks, scores), s.name, size=s.user_size)
    )


@user_errors
@one_at_a_time
def on_export(ctx: AppContext, s):
    """Server mode's Export button: the kept objects plus the current mask, if any."""
    s = _need_image(s)
    masks, scores = actions.export_masks(s)
    return _downloads(
        write_exports(cutout_image(ctx.services, s), records_from_masks(masks, scores), s.name, size=s.user_size)
    )


def set_mode(ctx: AppContext, s, use_browser, refine_on, reason: Optional[str] = None) -> list:
    """Show the widget (browser decoding) or the server canvas and its buttons."""
    on = bool(use_browser) and ctx.browser_available
    if isinstance(s, seg.SegmentSession):
        s.in_browser = on
    server_only = [gr.update(visible=not on)] * 6  # mode, undo, clear, keep, candidates, export
    msg = status_markdown(ctx, s) if reason is None else FALLBACK.format(reason=reason)
    return (
        [
            gr.update(visible=on, value=browser_view(ctx, s, refine_on) if on else None),
            gr.update(visible=not on),
            gr.update(value=on),
        ]
        + server_only
        + [msg]
    )


def on_toggle_browser(ctx: AppContext, s, use_browser, refine_on):
    return set_mode(ctx, s, use_browser, refine_on)


def on_fallback(ctx: AppContext, s, refine_on, evt: gr.EventData):
    """The widget's 'fallback': {reason}; no in-browser backend works, decode on the server."""
    reason = str(event_fields(evt, ["reason"]).get("reason", "unknown reason"))[:300]
    log.warning("browser decoding unavailable for a session: %s", reason)
    return set_mode(ctx, s, False, refine_on, reason=reason)


def on_refine_change(ctx: AppContext, s, use_browser, refine_on):
    """The widget decodes locally, so it must hear of the checkbox (same token: no re-fetch)."""
    if s is None or not (use_browser and ctx.browser_available):
        return gr.update()
    return browser_view(ctx, s, refine_on)


def on_widget_refresh(ctx: AppContext, s, use_browser, refine_on):
    """Re-send the widget's value after the kept objects changed on the server."""
    return on_refine_change(ctx, s, use_browser, refine_on)


@user_errors
@one_at_a_time
def on_click(ctx: AppContext, s, mode_label, refine, evt: gr.SelectData):
    s = _need_image(s)
    try:
        x, y = float(evt.index[0]) / s.display_scale, float(evt.index[1]) / s.display_scale
    except (TypeError, ValueError, IndexError, KeyError, OverflowError):
        raise UserFacingError("The click position is not a number.") from None
    s = actions.add_click(ctx.services, s, x, y, MODES.get(mode_label, "add"), parse_bool("refine", refine, True))
    return (s,) + view(ctx, s)


@user_errors
@one_at_a_time
def on_pick(ctx: AppContext, s, evt: gr.SelectData):
    s = _need_image(s)
    if not isinstance(evt.index, int) or isinstance(evt.index, bool):
        raise UserFacingError("There is no such candidate mask.")
    s = actions.select_candidate(s, evt.index)
    return (s,) + view(ctx, s)


def session_op(op: Callable[[seg.SegmentSession], seg.SegmentSession]) -> Callable:
    """A handler `(ctx, s)` applying `op` to the session, named after it (the event's name)."""

    @user_errors
    @one_at_a_time
    def handler(ctx: AppContext, s):
        s = op(_need_image(s))
        return (s,) + view(ctx, s)

    handler.__name__ = handler.__qualname__ = op.__name__
    return handler


undo, clear, keep_object, remove_object = (
    session_op(op) for op in (actions.undo, actions.clear, actions.keep_object, actions.remove_object)
)


# --------------------------------------------------------------------------------- layout
def build_segment_tab(ctx: AppContext) -> SegmentTab:
    """The tab's components and events (call inside `gr.Tab`)."""
    start_in_browser = ctx.starts_in_browser()
    state = gr.State(None, time_to_live=ctx.config.session_ttl)
    with gr.Row(elem_id="msw-seg-row"):
        with gr.Column(scale=1, min_width=260, elem_id="msw-controls"):
            controls = _controls(ctx, start_in_browser)
        with gr.Column(scale=3, elem_id="msw-main"):
            shown = _main_column(ctx, start_in_browser)
    c = SimpleNamespace(state=state, **controls, **shown)
    _wire(ctx, c)
    return SegmentTab(state=state, upload=c.upload, widget=c.widget, info=c.info, files=c.files)


def _controls(ctx: AppContext, start_in_browser: bool) -> Dict[str, Any]:
    """The left column: upload, examples, modes and the actions (server-mode ones hidden when
    the page starts with the in-browser widget, which has its own)."""
    # gr.File, not gr.Image: our loader gives the clear errors for bad files
    # (corrupt, huge, 16-bit, CMYK, EXIF-rotated...), Gradio's preprocessing would not.
    upload = gr.File(
        label="Image (PNG, JPEG, WebP, GIF, TIFF...)",
        type="filepath",
        file_types=["image"],
        height=140,
        elem_id="msw-upload",
    )
    examples_slot = gr.Column(min_width=0)  # filled below, after the upload's event
    use_browser = gr.Checkbox(
        start_in_browser,
        label="Decode in the browser (no server round-trip; hover to preview)",
        interactive=ctx.browser_available,
        elem_id="msw-browser-toggle",
    )
    mode = gr.Radio(list(MODES), value="Add (+)", label="Click adds", elem_id="msw-mode", visible=not start_in_browser)
    refine = gr.Checkbox(True, label="Refine with the previous mask", elem_id="msw-refine")
    with gr.Row():
        undo_btn = gr.Button("Undo", size="sm", visible=not start_in_browser, elem_id="msw-undo")
        clear_btn = gr.Button("Clear", size="sm", visible=not start_in_browser, elem_id="msw-clear")
    keep_btn = gr.Button("Keep object", variant="primary", visible=not start_in_browser, elem_id="msw-keep")
    remove_btn = gr.Button("Remove last kept object", size="sm", elem_id="msw-remove")
    export_btn = gr.Button(
        "Export masks (COCO JSON, PNG masks, cut-outs)", visible=not start_in_browser, elem_id="msw-export"
    )
    files = gr.File(label="Downloads", file_count="multiple", visible=False, elem_id="msw-files")
    return dict(
        upload=upload,
        examples_slot=examples_slot,
        use_browser=use_browser,
        mode=mode,
        refine=refine,
        undo_btn=undo_btn,
        clear_btn=clear_btn,
        keep_btn=keep_btn,
        remove_btn=remove_btn,
        export_btn=export_btn,
        files=files,
    )


def _main_column(ctx: AppContext, start_in_browser: bool) -> Dict[str, Any]:
    """The image (the in-browser widget or the server canvas), status, candidates, kept objects."""
    widget = gr.HTML(
        None,
        html_template="<div class='msw-host'></div>",
        js_on_load=WIDGET_JS,
        label="Image: click to segment (decoded in your browser)",
        elem_id="msw-widget",
        visible=start_in_browser,
        container=False,
    )
    canvas = gr.Image(
        label="Click to segment",
        interactive=False,
        elem_id="msw-canvas",
        format="jpeg",
        buttons=["download", "fullscreen"],
        visible=not start_in_browser,
    )
    info = gr.Markdown(status_markdown(ctx, None), elem_id="msw-status")
    candidates = gr.Gallery(
        label="Candidate masks (click to choose)",
        columns=3,
        height=180,
        allow_preview=False,
        elem_id="msw-candidates",
        format="jpeg",
        visible=not start_in_browser,
    )
    objects = gr.Dataframe(
        headers=["#", "colour", "area (px)", "IoU", "points", "box"],
        datatype=["number", "html", "number", "number", "number", "bool"],
        label="Kept objects",
        interactive=False,
        elem_id="msw-objects",
    )
    return dict(widget=widget, canvas=canvas, info=info, candidates=candidates, objects=objects)


def _wire(ctx: AppContext, c: SimpleNamespace) -> None:
    """Every event of the tab."""
    outs = [c.state, c.canvas, c.candidates, c.info, c.objects]
    private = dict(api_visibility="private")
    quiet = dict(private, show_progress="hidden")  # quick actions: the result is the feedback
    # one progress indicator per action: on whichever of canvas / widget is shown
    c.upload.change(
        bind(on_upload, ctx),
        [c.upload, c.refine, c.use_browser],
        outs + [c.widget, c.files],
        show_progress_on=[c.canvas, c.widget],
        **private,
    )
    # Created after the upload's event, which stays the app's first (fn_index 0: clients and
    # tests address it so); an example click loads its file into `upload`, whose change runs.
    with c.examples_slot:
        add_examples(c.upload, elem_id="msw-examples")
    c.widget.keep(bind(on_browser_keep, ctx), [c.state, c.refine], outs + [c.widget], **quiet)
    c.widget.export(bind(on_browser_export, ctx), [c.state], c.files, **quiet)
    mode_outs = [
        c.widget,
        c.canvas,
        c.use_browser,
        c.mode,
        c.undo_btn,
        c.clear_btn,
        c.keep_btn,
        c.candidates,
        c.export_btn,
        c.info,
    ]
    c.widget.fallback(bind(on_fallback, ctx), [c.state, c.refine], mode_outs, **quiet)
    c.use_browser.input(bind(on_toggle_browser, ctx), [c.state, c.use_browser, c.refine], mode_outs, **quiet)
    c.refine.change(bind(on_refine_change, ctx), [c.state, c.use_browser, c.refine], c.widget, **quiet)
    c.canvas.select(
        bind(on_click, ctx),
        [c.state, c.mode, c.refine],
        outs,
        show_progress="minimal",
        show_progress_on=[c.canvas],
        **private,
    )
    c.candidates.select(bind(on_pick, ctx), c.state, outs, **quiet)
    c.undo_btn.click(bind(undo, ctx), c.state, outs, **quiet)
    c.clear_btn.click(bind(clear, ctx), c.state, outs, **quiet)
    c.keep_btn.click(bind(keep_object, ctx), c.state, outs, **quiet)
    c.remove_btn.click(bind(remove_object, ctx), c.state, outs, **quiet).then(
        bind(on_widget_refresh, ctx), [c.state, c.use_browser, c.refine], c.widget, **quiet
    )
    c.export_btn.click(bind(on_export, ctx), c.state, c.files, **quiet)
