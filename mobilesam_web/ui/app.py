"""The Gradio app: the segment-anything tab, the everything tab and the API endpoints,
assembled over one typed `AppContext` (segment_tab.py, everything_tab.py, api_routes.py).

Per-user data (image, embedding, prompts, kept objects) lives in `gr.State`; the engines in
`Services` are shared and read-only, so two users never see each other's image or clicks.
"""

from typing import Optional, Tuple

import gradio as gr

from .api import read_upload
from .api_routes import build_api
from .budget import SessionBudget
from .context import AppContext
from .errors import UserFacingError, quiet_input_errors, user_errors  # noqa: F401 (part of this module's interface)
from .everything_tab import build_everything_tab
from .segment_tab import MODES, WIDGET_JS, build_segment_tab  # noqa: F401
from .services import AppConfig, Services, load_services
from .sessions import enforce_upload_rule, start_session_pruning
from .web import EmbeddingStore

# The first words change with on-device mode (msw_device.js): the image is opened there, not uploaded.
INTRO = """# MobileSAM — segment anything, fast
<span class="msw-intro-first">Upload an image or click an example (it is encoded once)</span>, then **click** an object. Use
**Remove** for points that should be excluded, **Box** for two-corner boxes, **Keep object** to
start the next one, **Export** for COCO JSON and PNG masks.
"""


def model_line(services: Services) -> str:
    """Which model runs, and how long an image's encoding takes here when that is noticeable."""
    line = f"Model: **{services.model_name}**."
    seconds = services.encode_estimate()
    if seconds >= 2.0:
        line += (
            f" Encoding an image takes about {seconds:.0f} s on this server (a progress bar shows it);"
            " clicks after that take milliseconds."
        )
    return line


def create_app(
    config: Optional[AppConfig] = None, checkpoint: Optional[str] = None, services: Optional[Services] = None
) -> Tuple[gr.Blocks, AppContext]:
    """The app and its context (what a server around it needs: `create_server(demo, ctx)`)."""
    config = config or AppConfig.from_env(checkpoint=checkpoint)
    services = services or load_services(config)
    # the browser decoder is the exported ONNX graph, so it needs the onnxruntime engine
    ctx = AppContext(
        services=services,
        store=EmbeddingStore(restore=lambda s: s.restore(lambda path: read_upload(services, path), services)),
        config=config,
        browser_available=services.engine is not None,
        budget=SessionBudget(int(config.session_budget_mb * 2**20)),
    )
    # Uploads and exported files are removed once older than twice the session TTL (at least an
    # hour); a session's state after an idle TTL (an image, its embedding and kept masks: ~20 MB
    # at most), so disk and memory stay bounded.
    file_ttl = int(max(2 * config.session_ttl, 3600))
    with gr.Blocks(title="MobileSAM — segment anything", delete_cache=(min(1800, file_ttl), file_ttl)) as demo:
        gr.Markdown(INTRO, elem_id="msw-intro")
        if services.ready:
            gr.Markdown(model_line(services), elem_id="msw-model")
        else:
            gr.Markdown(f"**Model weights unavailable.** {services.sam_error}", elem_classes=["msw-banner"])
        with gr.Tab("Segment anything", elem_id="msw-tab-segment"):
            segment = build_segment_tab(ctx)
        with gr.Tab("Segment everything", elem_id="msw-tab-everything"):
            build_everything_tab(ctx, segment.state)
        build_api(ctx)
    ctx.blocks = demo
    enforce_upload_rule(demo)
    quiet_input_errors(demo)  # Gradio's own refusals of bad values: a clear message, no traceback
    start_session_pruning(demo, ttl=config.session_ttl, capacity=config.max_sessions)
    return demo, ctx


def build_app(
    checkpoint: Optional[str] = None, config: Optional[AppConfig] = None, services: Optional[Services] = None
) -> gr.Blocks:
    """The app alone (e.g. to `launch()` it or mount it in another FastAPI app; in-browser
    decoding needs the routes of `web.create_server`, see `create_app`)."""
    return create_app(config=config, checkpoint=checkpoint, services=services)[0]
