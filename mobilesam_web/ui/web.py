"""The HTTP server around the Gradio app: cross-origin isolation headers, browser assets,
the decoder model and per-session embeddings for in-browser decoding.

Routes (besides Gradio at /), the same in every start mode (`python app.py` mounts them beside
Gradio; `--share` hands them to Gradio's own launcher):
- /msw/static/...                 our browser code (static/)
- /msw/ort/{version}/{file}       onnxruntime-web from static/node_modules (`npm ci --prefix static`)
- /msw/config.json                what the page needs: ORT bundles (local, or CDN + SRI), decoder
                                  URLs with their raw and transferred sizes, the colour palette
- /msw/models/{graph}.onnx         the browser's graphs, named as exported: decoder_lowres
                                  (clicks), decoder_web (float16 weights), decoder_fast (hover),
                                  encoder (on-device mode: the image is encoded in the page)
- /msw/examples/{name}            the bundled example photos (on-device mode opens them locally)
- /msw/embedding/{token}          one image's embedding as float16 (token: random, per upload)
- POST /msw/decode/{token}        the widget's prompts decoded here, while the page's own decoder
                                  is still loading (decode_route.py)

The runtime and the models are sent gzip-compressed to browsers that accept it (the WASM runtime
shrinks 4x); each file is compressed once, kept in memory and on disk (compressed.py).
"""

import os
import re
import secrets
import threading
import weakref
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np

from ..browser_runtime import ORT_BUNDLES, ORT_CDN, ORT_LOCAL, ORT_SRI, ORT_VERSION, browser_encoder_refusal, sri
from ..paths import static_dir
from .compressed import CompressedFiles, default_store
from .decode_route import decode_for_page
from .guard import Guard, guard_middleware

STATIC = static_dir()
PAGE_CSS = STATIC / "msw_page.css"
MEDIA_TYPES = {
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".wasm": "application/wasm",
    ".onnx": "application/octet-stream",
}
IMMUTABLE = "public, max-age=31536000, immutable"
# Runs before the page renders: when on-device mode is asked for (?msw_device=1, or the choice this
# browser remembers), the server's upload is hidden from the first frame, not only once the widget's
# code has loaded (the widget removes the class again where the mode cannot run). Only sent when
# the page starts with the widget (`page_head`).
DEVICE_MODE_HEAD = """<script>
try {
  const q = new URLSearchParams(location.search).get("msw_device");
  if (q === "1" || (q === null && localStorage.getItem("msw-on-device") === "1"))
    document.documentElement.classList.add("msw-device-mode");
} catch (e) { /* no storage: server mode */ }
// An upload chosen before the widget's code has loaded (a slow line) is announced once it has.
for (const type of ["change", "drop"])
  document.addEventListener(type, (e) => {
    if (e.target && e.target.closest && e.target.closest("#msw-upload")) window.mswUploadStarted = Date.now();
  }, true);
</script>"""
# The graphs the page may download: decoders for clicks and hover, the encoder for on-device mode.
BROWSER_GRAPHS = ("decoder_lowres", "decoder_web", "decoder_fast", "encoder")


class EmbeddingStore:
    """token -> the session whose embedding the browser may fetch (as float16). A token is only
    given to the session that uploaded the image and is unguessable (128 bits). The store holds
    weak references: an embedding lives exactly as long as its session (its TTL, or until the
    session budget releases it), never evicted behind its page's back by other uploads."""

    def __init__(self, restore: Optional[Callable[[Any], None]] = None) -> None:
        self._items: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()
        self._restore = restore  # brings back a session the budget released (reads its upload again)

    def put(self, session: Any) -> str:
        token = secrets.token_urlsafe(16)
        with self._lock:
            self._items[token] = session
        return token

    def session(self, token: str) -> Optional[Any]:
        """The token's session with its embedding in memory (restored if the budget released
        it), or None."""
        with self._lock:
            session = self._items.get(token)
        if session is None:
            return None
        with session.lock:
            return session if self.ensure_restored(session) else None

    def ensure_restored(self, session: Any) -> bool:
        """(Under the session's lock.) Whether the session holds its embedding, bringing it back
        first if the session budget released it."""
        if getattr(session, "cold", False) and self._restore is not None:
            try:
                self._restore(session)
            except ValueError:  # released for good, or its upload expired: the page says so
                return False
        return session.embedding is not None

    def get(self, token: str) -> Optional[bytes]:
        """The token's embedding as float16 bytes (1x256x64x64, little-endian), or None."""
        with self._lock:
            session = self._items.get(token)
        if session is None:
            return None
        with session.lock:  # the budget may release it meanwhile otherwise
            if not self.ensure_restored(session):
                return None
            return np.asarray(session.embedding, dtype=np.float32).reshape(1, 256, 64, 64).astype("<f2").tobytes()


def cross_origin_isolation_enabled() -> bool:
    return os.environ.get("MOBILESAM_CROSS_ORIGIN_ISOLATION", "1") not in ("0", "false", "no")


def isolation_middleware():
    """Starlette middleware class adding the headers of a cross-origin isolated page (which gives
    the page SharedArrayBuffer, i.e. multithreaded WASM) to every response."""
    from starlette.middleware.base import BaseHTTPMiddleware

    isolate = cross_origin_isolation_enabled()

    class CrossOriginIsolation(BaseHTTPMiddleware):
        async def dispatch(self, request, call_next):
            response = await call_next(request)
            if isolate:
                response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
                response.headers["Cross-Origin-Embedder-Policy"] = "credentialless"
            response.headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
            return response

    return CrossOriginIsolation


class BrowserAssets:
    """What the page downloads (the decoder graphs, the encoder, onnxruntime-web), each gzipped
    once, and the page's /msw/config.json describing them."""

    def __init__(self, services) -> None:
        self.services = services
        self.packed = CompressedFiles(default_store(services.config.onnx_cache_dir))
        paths = services.engine.paths if services.engine is not None else {}
        self.decoders = {g: paths.get(g) for g in BROWSER_GRAPHS}
        lowres = self.decoders["decoder_lowres"]
        self.tag = Path(lowres).parent.name if lowres else None
        self.ort_local = ORT_LOCAL.joinpath(ORT_BUNDLES["wasm"]["main"]).is_file()
        big = [Path(p) for p in self.decoders.values() if p]
        if self.ort_local:
            big += [ORT_LOCAL / f for files in ORT_BUNDLES.values() for f in files.values()]
        # Compress now (or read the copies on disk), not when the first visitor asks for the sizes.
        threading.Thread(target=lambda: [self.packed.gzipped(p) for p in big], daemon=True, name="msw-gzip").start()

    def send(self, path: Path, request, cache: str):
        """The file, gzipped when the browser accepts it; Content-Length is what goes over the wire."""
        from fastapi.responses import Response

        headers = {"Cache-Control": cache, "Vary": "Accept-Encoding"}
        media = MEDIA_TYPES.get(path.suffix, "application/octet-stream")
        if "gzip" in request.headers.get("accept-encoding", "").lower():
            headers["Content-Encoding"] = "gzip"
            headers["X-Uncompressed-Length"] = str(path.stat().st_size)
            return Response(self.packed.gzipped(path), media_type=media, headers=headers)
        return Response(path.read_bytes(), media_type=media, headers=headers)

    def sizes(self, path: Path) -> Dict[str, Optional[int]]:
        # transfer_bytes: null until the gzip copy exists (made at start-up, in the background);
        # the page then shows the bytes it measured itself
        return {"bytes": path.stat().st_size, "transfer_bytes": self.packed.size_if_ready(path)}

    def describe(self, graph: str) -> Optional[Dict[str, Any]]:
        p = self.decoders.get(graph)
        if not p:
            return None
        return {
            "url": f"/msw/models/{graph}.onnx?v={self.tag}",
            "version": self.tag,
            "graph": graph,
            **self.sizes(Path(p)),
        }

    def encoder_refusal(self) -> Optional[str]:
        """Why on-device mode is not offered with this server's encoder (None: it is)."""
        from ..engine.onnx.cache import graph_bytes

        p = self.decoders.get("encoder")
        if not p:
            return "On this device is off: this server has no exported encoder."
        why = browser_encoder_refusal(graph_bytes(p), self.services.model_name)
        return f"On this device is off: {why}. Images are encoded on the server." if why else None

    def ort(self) -> Dict[str, Any]:
        bundles = {}
        for name, files in ORT_BUNDLES.items():
            bundles[name] = dict(files)
            if self.ort_local:
                bundles[name]["bytes"] = sum(ORT_LOCAL.joinpath(f).stat().st_size for f in files.values())
                parts = [self.sizes(ORT_LOCAL / f)["transfer_bytes"] for f in files.values()]
                bundles[name]["transfer_bytes"] = None if None in parts else sum(parts)
        return {
            "version": ORT_VERSION,
            "local": self.ort_local,
            "base": f"/msw/ort/{ORT_VERSION}/" if self.ort_local else ORT_CDN,
            "sri": ORT_SRI,
            "bundles": bundles,
        }

    def config(self) -> Dict[str, Any]:
        from ..data.masks import palette_spec
        from .examples import EXAMPLES, EXAMPLES_DIR

        return {
            "ort": self.ort(),
            # decoder_lowres for clicks (exact parity with the server); decoder_web stores the
            # weights as float16 (half the download; mask IoU >= 0.999 against it, measured).
            "decoder": self.describe("decoder_lowres"),
            "decoder_web": self.describe("decoder_web"),
            # hover previews, loaded on the first hover: tanh GELU (WASM's erf is slow), float16
            # weights; ~1.5e-3 in logits
            "decoder_fast": self.describe("decoder_fast"),
            # on-device mode: the same encoder.onnx as the server's (float32: exact embeddings),
            # offered only where a browser can hold it (TinyViT: 28 MB; SAM's ViT-B: 360 MB is not)
            "encoder": None if self.encoder_refusal() else self.describe("encoder"),
            "encoder_off": self.encoder_refusal(),
            "model": {"type": self.services.model_type, "name": self.services.model_name},
            "examples": [
                {"name": name, "label": label, "url": f"/msw/examples/{name}"}
                for name, label in EXAMPLES
                if (EXAMPLES_DIR / name).is_file()
            ],
            "max_pixels": int(self.services.config.max_pixels),
            "palette": palette_spec(),
            "max_points": int(self.services.config.max_points),
            "cross_origin_isolated_by_server": cross_origin_isolation_enabled(),
        }


def msw_app(services, store: EmbeddingStore, budget=None):
    """The /msw routes as a FastAPI app of their own (mounted at /msw in every start mode)."""
    from fastapi import Body, FastAPI, Header, HTTPException, Request
    from fastapi.responses import JSONResponse, Response
    from fastapi.staticfiles import StaticFiles

    from .examples import EXAMPLES, EXAMPLES_DIR

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    assets = BrowserAssets(services)

    @app.get("/config.json")
    def config():
        return JSONResponse(assets.config(), headers={"Cache-Control": "no-cache"})

    @app.get("/ort/{version}/{name}")
    def ort_file(version: str, name: str, request: Request):
        path = ORT_LOCAL / name
        if version != ORT_VERSION or not re.fullmatch(r"ort[A-Za-z0-9_.-]*\.(mjs|wasm)", name) or not path.is_file():
            raise HTTPException(404, "no such onnxruntime-web file")
        return assets.send(path, request, IMMUTABLE)

    @app.get("/models/{graph}.onnx")
    def decoder(graph: str, request: Request):
        if not assets.decoders.get(graph):
            raise HTTPException(404, "the in-browser decoder needs the onnxruntime backend and model weights")
        return assets.send(Path(assets.decoders[graph]), request, IMMUTABLE)

    @app.get("/examples/{name}")
    def example(name: str):
        if name not in dict(EXAMPLES) or not (EXAMPLES_DIR / name).is_file():
            raise HTTPException(404, "no such example")
        return Response(
            (EXAMPLES_DIR / name).read_bytes(),
            media_type="image/jpeg",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    @app.get("/embedding/{token}")
    def embedding(token: str):
        data = store.get(token)
        if data is None:
            raise HTTPException(404, "unknown or expired embedding (its session ended); upload the image again")
        return Response(data, media_type="application/octet-stream", headers={"Cache-Control": "private, no-store"})

    @app.post("/decode/{token}")
    def decode(token: str, payload: Any = Body(None), accept_encoding: str = Header("")):
        return decode_for_page(services, store, budget, token, payload, "gzip" in accept_encoding)

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="msw-static")
    return app


def create_server(demo, context):
    """FastAPI app with Gradio mounted at / and the browser-decoding routes at /msw."""
    import gradio as gr
    from fastapi import FastAPI

    app = FastAPI()
    app.add_middleware(isolation_middleware())
    app.mount("/msw", msw_app(context.services, context.store, context.budget))
    # Uploads over the limit are refused by Gradio's upload route while they stream in.
    gr.mount_gradio_app(
        app,
        demo,
        path="/",
        max_file_size=max_upload_bytes(context.config),
        css_paths=[PAGE_CSS],
        head=page_head(context),
    )
    # Added last, so it is the outermost: body size, headers, fair queueing and the upload rate
    # hold for every route, Gradio's and ours (guard.py).
    app.add_middleware(Guard, blocks=demo, config=context.config)
    return app


def launch_with_share_link(demo, context, host: str, port: int) -> None:
    """`--share`: Gradio's own launcher (it makes the gradio.live tunnel), given the same /msw
    routes, headers and page style as `python app.py`, so share-link visitors decode in the browser."""
    from starlette.middleware import Middleware
    from starlette.routing import Mount

    demo.launch(
        server_name=host,
        server_port=port,
        share=True,
        show_error=True,
        max_file_size=max_upload_bytes(context.config),
        state_session_capacity=context.config.max_sessions,
        css_paths=[PAGE_CSS],
        head=page_head(context),
        app_kwargs={
            "routes": [Mount("/msw", app=msw_app(context.services, context.store, context.budget))],
            # Gradio puts its own CORS and compression middleware outside these
            "middleware": [guard_middleware(demo, context.config), Middleware(isolation_middleware())],
        },
    )


def page_head(context) -> str:
    """Extra <head> markup: the on-device mode's early switch, where the widget is shown."""
    return DEVICE_MODE_HEAD if context.starts_in_browser() else ""


def max_upload_bytes(config) -> int:
    return int(config.max_upload_mb * 1024 * 1024)


def ort_sri_matches_local() -> dict:
    """For tests: {file: bool} whether the installed npm files match the pinned SRI hashes."""
    return {
        name: sri((ORT_LOCAL / name).read_bytes()) == pinned
        for name, pinned in ORT_SRI.items()
        if (ORT_LOCAL / name).is_file()
    }
