"""Gradio Blocks: the segment-anything tab, the everything tab, and the API endpoints.

Per-user data (image, embedding, prompts, kept objects) lives in `gr.State`; the engines in
`Services` are shared and read-only, so two users never see each other's image or clicks.
"""
import base64
import functools
import logging
import os
import traceback
from typing import Optional

import cv2
import gradio as gr
import numpy as np

from ..image_io import ImageLoadError
from ..masks import color_for
from . import segment as seg
from .api import client_file, everything_api, load_user_image, segment_api
from .everything_tab import render_records, run_everything, run_grid
from .exports import records_from_masks, write_exports
from .params import parse_bool, parse_fraction, parse_imgsz
from .services import AppConfig, Services, load_services
from .sessions import enforce_upload_rule, start_session_pruning
from .web import EmbeddingStore

log = logging.getLogger("mobilesam_web")

MODES = {"Add (+)": "add", "Remove (−)": "remove", "Box (2 clicks)": "box"}

CSS = """
#msw-canvas img { cursor: crosshair; }
.msw-banner { border-left: 4px solid #d33; padding: 0.5em 1em; background: #fff4f4; }
"""

# The widget's code lives in static/. Gradio registers custom events by finding their quoted
# names in this string, hence the comment line inside it.
WIDGET_JS = """
// events raised by the widget: 'keep', 'fallback'
import('/msw/static/msw_canvas.js').then((m) => m.mount({element, props, trigger,
  watch: typeof watch === 'function' ? watch : null}))
  .catch((e) => trigger('fallback', {reason: 'could not load the widget: ' + e}));
"""

INTRO = """# MobileSAM — segment anything, fast
Upload an image (it is encoded once), then **click** an object. Use **Remove** for points that
should be excluded, **Box** for two-corner boxes, **Keep object** to start the next one.
"""


def UserFacingError(message: str) -> gr.Error:  # noqa: N802 (raised like a class)
    """gr.Error for an expected problem: shown to the user, no traceback in the server log."""
    return gr.Error(message, print_exception=False)


def user_errors(fn):
    """Turn expected problems into gr.Error (shown to the user, server keeps serving) and log
    unexpected ones without leaking a stack trace to the page."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (seg.UserError, ImageLoadError) as exc:
            raise UserFacingError(str(exc)) from None
        except Exception as exc:  # a bug: log it, tell the user briefly
            log.error("unexpected error in %s: %s", fn.__name__, traceback.format_exc())
            raise UserFacingError(f"Something went wrong ({type(exc).__name__}: {str(exc)[:200]}). "
                                  "Please try again.") from None
    return wrapper


def _data_url(image: np.ndarray, ext: str = ".jpg") -> str:
    if image.ndim == 3 and image.shape[2] == 4:
        ok, buf = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA))
    else:
        ok, buf = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    mime = "image/png" if ext == ".png" else "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(buf.tobytes()).decode()


def build_app(checkpoint: Optional[str] = None, config: Optional[AppConfig] = None,
              services: Optional[Services] = None) -> gr.Blocks:
    config = config or AppConfig.from_env(checkpoint=checkpoint)
    services = services or load_services(config)
    store = EmbeddingStore()
    browser_available = services.engine is not None  # the browser decoder is the exported ONNX graph

    def browser_view(s: Optional[seg.SegmentSession], refine_on: bool = True):
        """The in-browser canvas' value: what it needs to decode this session's image locally."""
        if s is None:
            return None
        if getattr(s, "browser_token", None) is None:
            s.browser_token = store.put(np.asarray(s.embedding))
        sc = s.display_scale
        h, w = s.size
        dw, dh = max(1, round(w * sc)), max(1, round(h * sc))
        small = s.image if sc == 1.0 else cv2.resize(s.image, (dw, dh), interpolation=cv2.INTER_AREA)
        return {"token": s.browser_token, "image": _data_url(small), "width": w, "height": h,
                "display_width": dw, "display_height": dh, "input_size": list(s.input_size),
                "embedding": f"/msw/embedding/{s.browser_token}", "objects_count": len(s.objects),
                "objects": _data_url(seg.objects_layer(s), ".png") if s.objects else None,
                "refine": bool(refine_on)}

    def require_model():
        if not services.ready:
            raise UserFacingError(f"Model weights unavailable. {services.sam_error}")

    # ---------------------------------------------------------------- segment tab handlers
    def status(s: Optional[seg.SegmentSession]) -> str:
        if s is None:
            return "Upload an image to start."
        h, w = s.user_size
        enc = ("embedding reused (same image as before)" if s.encode_cached
               else f"encoded in {s.encode_seconds:.2f} s")
        size = f"**{w}×{h}**" + (f" (worked on at {s.size[1]}×{s.size[0]})" if s.original_size else "")
        parts = [f"{size} · {enc} ({services.config.backend})"]
        if s.result is not None:
            sel = s.result.selected
            parts.append(f"decoded in {s.decode_ms:.0f} ms · predicted IoU {s.result.scores[sel]:.3f}")
        if s.prompts.corner is not None:
            parts.append("click the opposite corner of the box")
        parts.append(f"{len(s.objects)} object(s) kept")
        return " · ".join(parts)

    def objects_table(s: Optional[seg.SegmentSession]):
        if s is None or not s.objects:
            return []
        masks = s.object_masks()
        def swatch(i):
            r, g, b = (int(v) for v in color_for(i))
            return f"<span style='color:rgb({r},{g},{b});font-size:1.4em'>■</span>"

        return [[i + 1, swatch(i), int(m.sum()), round(o.score, 3), len(o.prompts.points), o.prompts.box is not None]
                for i, (o, m) in enumerate(zip(s.objects, masks))]

    def view(s: Optional[seg.SegmentSession]):
        if s is None:
            return None, [], status(s), []
        return seg.render(s), seg.candidate_thumbnails(s), status(s), objects_table(s)

    @user_errors
    def on_upload(path, refine_on, progress=gr.Progress()):
        if not path:
            return (None,) + view(None) + (None,)
        require_model()
        progress(0.1, desc="reading image")
        loaded = load_user_image(services, client_file(path))
        progress(0.3, desc="encoding image (once per image)")
        s = seg.start_session(services, loaded.image, name=os.path.basename(path),
                              original_size=loaded.original_size if loaded.scale != 1.0 else None)
        return (s,) + view(s) + (browser_view(s, refine_on),)

    @user_errors
    def on_browser_keep(s, refine_on, evt: gr.EventData):
        if s is None:
            raise UserFacingError("Upload an image first.")
        data = evt._data if isinstance(evt._data, dict) else {}
        try:
            encoded = data["low_res_f16"]
            if not isinstance(encoded, str) or len(encoded) > 4 * (256 * 256 * 2) // 3 + 4:
                raise ValueError("wrong size")
            low = np.frombuffer(base64.b64decode(encoded), dtype="<f2").astype(np.float32)
            low = low.reshape(256, 256)
        except (KeyError, ValueError, TypeError):
            raise UserFacingError("The browser sent a malformed mask.") from None
        s = seg.keep_low_res(s, low, data.get("score", 0.0), data.get("points"), data.get("box"))
        return (s,) + view(s) + (browser_view(s, refine_on),)

    def set_mode(s, use_browser, refine_on, reason=None):
        on = bool(use_browser) and browser_available
        server_controls = [gr.update(visible=not on)] * 5
        msg = status(s) if reason is None else f"In-browser decoding is unavailable ({reason}); decoding on the server."
        return ([gr.update(visible=on, value=browser_view(s, refine_on) if on else None),
                 gr.update(visible=not on), gr.update(value=on)] + server_controls + [msg])

    def on_fallback(s, refine_on, evt: gr.EventData):
        data = evt._data if isinstance(evt._data, dict) else {}
        reason = data.get("reason", "unknown reason")
        log.warning("browser decoding unavailable for a session: %s", reason)
        return set_mode(s, False, refine_on, reason=str(reason)[:300])

    @user_errors
    def on_click(s, mode_label, refine, evt: gr.SelectData):
        if s is None:
            raise UserFacingError("Upload an image first.")
        try:
            x, y = float(evt.index[0]) / s.display_scale, float(evt.index[1]) / s.display_scale
        except (TypeError, ValueError, IndexError, KeyError):
            raise UserFacingError("The click position is not a number.") from None
        s = seg.add_click(services, s, x, y, MODES.get(mode_label, "add"), parse_bool("refine", refine, True))
        return (s,) + view(s)

    def simple(op):
        @user_errors
        def handler(s):
            if s is None:
                raise UserFacingError("Upload an image first.")
            s = op(s)
            return (s,) + view(s)
        handler.__name__ = op.__name__
        return handler

    @user_errors
    def on_pick(s, evt: gr.SelectData):
        if s is None:
            raise UserFacingError("Upload an image first.")
        if not isinstance(evt.index, int) or isinstance(evt.index, bool):
            raise UserFacingError("There is no such candidate mask.")
        s = seg.select_candidate(s, evt.index)
        return (s,) + view(s)

    @user_errors
    def on_export(s):
        if s is None:
            raise UserFacingError("Upload an image first.")
        masks = [s.user_mask(o.low_res) for o in s.objects]
        scores = [o.score for o in s.objects]
        if not masks and s.result is not None:
            masks = [s.user_mask(s.result.low_res[s.result.selected])]
            scores = [float(s.result.scores[s.result.selected])]
        if not masks:
            raise UserFacingError("Segment an object first (click it), then export.")
        return write_exports(s.image, records_from_masks(masks, scores), s.name, size=s.user_size)

    # ------------------------------------------------------------- everything tab handler
    @user_errors
    def on_everything(path, conf, iou, imgsz, iou_filter, stab_filter, dedupe, compare_grid,
                      progress=gr.Progress()):
        require_model()
        if not path:
            raise UserFacingError("Upload an image first.")
        cfg = services.config
        conf = parse_fraction("Detector confidence", conf, 0.4, low_inclusive=False)
        iou = parse_fraction("Detector NMS IoU", iou, 0.9)
        imgsz = parse_imgsz(imgsz, 1024, cfg.min_imgsz, cfg.max_imgsz)
        iou_filter = parse_fraction("Min predicted IoU", iou_filter, 0.0)
        stab_filter = parse_fraction("Min stability score", stab_filter, 0.0)
        dedupe = parse_bool("Merge near-duplicate masks", dedupe, False)
        compare_grid = parse_bool("Grid comparison", compare_grid, False)
        loaded = load_user_image(services, client_file(path))
        image = loaded.image
        report = lambda f, msg: progress(f, desc=msg)  # noqa: E731
        records, t = run_everything(services, image, conf, iou, imgsz,
                                    pred_iou_thresh=iou_filter if iou_filter > 0 else None,
                                    stability_thresh=stab_filter if stab_filter > 0 else None,
                                    mask_nms_thresh=0.9 if dedupe else None, progress=report,
                                    output_size=loaded.original_size)
        total = sum(t[k] for k in ("encode", "detect", "decode", "postprocess"))
        enc = "embedding reused" if t.get("encode_cached") else f"encode {t['encode']:.2f} s"
        noun = "object" if len(records) == 1 else "objects"
        md = (f"**{len(records)} {noun}** from {int(t['boxes'])} detector boxes in **{total:.2f} s** — "
              f"{enc} · detect {t['detect']:.2f} s · decode {t['decode']:.2f} s "
              f"({t['decode'] / max(t['boxes'], 1) * 1e3:.0f} ms/box) · post-process {t['postprocess']:.2f} s")
        grid_img = None
        if compare_grid:
            grid_records, grid_t = run_grid(services, image, progress=report)
            grid_img = render_records(image, grid_records)
            md += f"\n\nGrid 32×32 (SAM's automatic mask generator): **{len(grid_records)} objects in {grid_t:.1f} s**"
        files = write_exports(image, records, os.path.basename(path), cutouts=False, size=loaded.original_size)
        return render_records(image, records), md, files, grid_img

    # --------------------------------------------------------------------- layout
    # Uploads and exported files are removed once older than twice the session TTL (at least an
    # hour); a session's state after an idle TTL (an image, its embedding and kept masks: ~20 MB
    # at most), so disk and memory stay bounded.
    file_ttl = int(max(2 * config.session_ttl, 3600))
    with gr.Blocks(title="MobileSAM — segment anything", delete_cache=(min(1800, file_ttl), file_ttl)) as demo:
        gr.Markdown(INTRO)
        if not services.ready:
            gr.Markdown(f"**Model weights unavailable.** {services.sam_error}", elem_classes=["msw-banner"])
        state = gr.State(None, time_to_live=config.session_ttl)
        start_in_browser = browser_available and os.environ.get("MOBILESAM_BROWSER_DECODING", "1") != "0"
        with gr.Tab("Segment anything"):
            with gr.Row():
                with gr.Column(scale=1, min_width=260):
                    # gr.File, not gr.Image: our loader gives the clear errors for bad files
                    # (corrupt, huge, 16-bit, CMYK, EXIF-rotated...), Gradio's preprocessing would not.
                    upload = gr.File(label="Image (PNG, JPEG, WebP, GIF, TIFF...)", type="filepath",
                                     file_types=["image"], height=140, elem_id="msw-upload")
                    use_browser = gr.Checkbox(start_in_browser, label="Decode in the browser (no server round-trip; "
                                              "hover to preview)", interactive=browser_available,
                                              elem_id="msw-browser-toggle")
                    mode = gr.Radio(list(MODES), value="Add (+)", label="Click adds", elem_id="msw-mode",
                                    visible=not start_in_browser)
                    refine = gr.Checkbox(True, label="Refine with the previous mask")
                    with gr.Row():
                        undo_btn = gr.Button("Undo", size="sm", visible=not start_in_browser)
                        clear_btn = gr.Button("Clear", size="sm", visible=not start_in_browser)
                    keep_btn = gr.Button("Keep object", variant="primary", visible=not start_in_browser)
                    remove_btn = gr.Button("Remove last kept object", size="sm")
                    export_btn = gr.Button("Export masks (PNG, cut-outs, COCO JSON)")
                    files = gr.File(label="Downloads", file_count="multiple")
                with gr.Column(scale=3):
                    widget = gr.HTML(None, html_template="<div class='msw-host'></div>", js_on_load=WIDGET_JS,
                                     elem_id="msw-widget", visible=start_in_browser, container=False)
                    canvas = gr.Image(label="Click to segment", interactive=False, elem_id="msw-canvas",
                                      format="jpeg", buttons=["download", "fullscreen"],
                                      visible=not start_in_browser)
                    info = gr.Markdown("Upload an image to start.", elem_id="msw-status")
                    candidates = gr.Gallery(label="Candidate masks (click to choose)", columns=3, height=180,
                                            allow_preview=False, elem_id="msw-candidates", format="jpeg",
                                            visible=not start_in_browser)
                    objects = gr.Dataframe(headers=["#", "colour", "area (px)", "IoU", "points", "box"],
                                           datatype=["number", "html", "number", "number", "number", "bool"],
                                           label="Kept objects", interactive=False)
            outs = [state, canvas, candidates, info, objects]
            upload.change(on_upload, [upload, refine], outs + [widget], api_visibility="private")
            widget.keep(on_browser_keep, [state, refine], outs + [widget], api_visibility="private")
            mode_outs = [widget, canvas, use_browser, mode, undo_btn, clear_btn, keep_btn, candidates, info]
            widget.fallback(on_fallback, [state, refine], mode_outs, api_visibility="private")
            use_browser.input(lambda s, on, r: set_mode(s, on, r), [state, use_browser, refine], mode_outs,
                              api_visibility="private")
            canvas.select(on_click, [state, mode, refine], outs, api_visibility="private")
            candidates.select(on_pick, state, outs, api_visibility="private")
            undo_btn.click(simple(seg.undo), state, outs, api_visibility="private")
            clear_btn.click(simple(seg.clear), state, outs, api_visibility="private")
            keep_btn.click(simple(seg.keep_object), state, outs, api_visibility="private")
            remove_btn.click(simple(seg.remove_object), state, outs, api_visibility="private").then(
                lambda s, on, r: browser_view(s, r) if (on and browser_available) else gr.update(),
                [state, use_browser, refine], widget, api_visibility="private")
            export_btn.click(on_export, state, files, api_visibility="private")

        with gr.Tab("Segment everything"):
            gr.Markdown("MobileSAMv2: an object-aware detector proposes boxes, each decoded once "
                        "(instead of SAM's 32×32 grid of points).")
            with gr.Row():
                with gr.Column(scale=1, min_width=260):
                    ev_image = gr.File(label="Image", type="filepath", file_types=["image"], height=140,
                                       elem_id="msw-ev-upload")
                    ev_conf = gr.Slider(0.05, 0.95, 0.4, step=0.05, label="Detector confidence")
                    ev_iou = gr.Slider(0.3, 1.0, 0.9, step=0.05, label="Detector NMS IoU")
                    ev_size = gr.Radio([640, 1024], value=1024, label="Detector image size")
                    ev_iou_f = gr.Slider(0.0, 1.0, 0.0, step=0.01, label="Min predicted IoU (0 = off)")
                    ev_stab = gr.Slider(0.0, 1.0, 0.0, step=0.01, label="Min stability score (0 = off)")
                    ev_dedupe = gr.Checkbox(False, label="Merge near-duplicate masks (mask IoU > 0.9)")
                    ev_grid = gr.Checkbox(False, label="Also run SAM's grid 32×32 for comparison (slow)")
                    ev_btn = gr.Button("Segment everything", variant="primary")
                with gr.Column(scale=3):
                    ev_out = gr.Image(label="Objects", interactive=False)
                    ev_md = gr.Markdown()
                    ev_files = gr.File(label="Downloads (COCO JSON, masks)", file_count="multiple")
                    ev_grid_out = gr.Image(label="Grid 32×32", interactive=False)
            ev_btn.click(on_everything, [ev_image, ev_conf, ev_iou, ev_size, ev_iou_f, ev_stab, ev_dedupe, ev_grid],
                         [ev_out, ev_md, ev_files, ev_grid_out], api_visibility="private")

        # ----------------------------------------------------------- API (no UI, no state)
        with gr.Row(visible=False):
            api_image = gr.File(type="filepath", label="image")
            api_points = gr.JSON(label="points")
            api_labels = gr.JSON(label="labels")
            api_box = gr.JSON(label="box")
            api_multi = gr.Checkbox(label="multimask")
            api_conf = gr.Number(0.4, label="conf")
            api_iou = gr.Number(0.9, label="iou")
            api_size = gr.Number(1024, label="imgsz", precision=0)
            api_out = gr.JSON(label="result")
            api_btn1 = gr.Button()
            api_btn2 = gr.Button()

        # The API events skip Gradio's preprocessing: values arrive as sent and are checked by
        # params.py, so every bad value gets one clear message (files are still checked by
        # Gradio's upload rule before anything runs).
        @user_errors
        def api_segment(image, points, labels, box, multimask):
            """Segment one object. points: [[x, y], ...] (pixels of the image sent), labels: [1 or 0, ...],
            box: [x1, y1, x2, y2] or null. Returns {size, masks (COCO RLE), scores, areas}."""
            require_model()
            return segment_api(services, client_file(image), points, labels, box, multimask)

        @user_errors
        def api_everything(image, conf, iou, imgsz):
            """Segment everything (MobileSAMv2). Returns COCO annotations with RLE and polygons."""
            require_model()
            return everything_api(services, client_file(image), conf, iou, imgsz)

        api_btn1.click(api_segment, [api_image, api_points, api_labels, api_box, api_multi], api_out,
                       api_name="segment", preprocess=False)
        api_btn2.click(api_everything, [api_image, api_conf, api_iou, api_size], api_out, api_name="everything",
                       preprocess=False)
    demo.services = services
    demo.embedding_store = store
    enforce_upload_rule(demo)
    start_session_pruning(demo, ttl=config.session_ttl, capacity=config.max_sessions)
    return demo
