"""The HTTP server around the Gradio app: cross-origin isolation headers, browser assets,
the decoder model and per-session embeddings for in-browser decoding.

Routes (besides Gradio at /):
- /msw/static/...        our browser code (static/)
- /msw/ort/...           onnxruntime-web from static/node_modules (after `npm ci --prefix static`)
- /msw/config.json       what the page needs: ORT location (local, or CDN + SRI), decoder URL/size
- /msw/models/decoder-{fp32,small}.onnx   the low-res decoder (immutable, cache forever)
- /msw/embedding/{token} one image's embedding as float16 (token: random, per upload)
"""
import os
import secrets
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Optional

import numpy as np

STATIC = Path(__file__).resolve().parent.parent.parent / "static"
ORT_VERSION = "1.30.0"
ORT_LOCAL = STATIC / "node_modules" / "onnxruntime-web" / "dist"
ORT_CDN = f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{ORT_VERSION}/dist/"
# Subresource integrity of the pinned files (sha384 of the npm package's bytes; tests check it).
ORT_SRI = {
    "ort.webgpu.min.mjs": "sha384-FPQBMbud8ICuP0Ii+Gr95KWEX9pKHtUC3lacIp0aPI8WYluKvTsEGQ3AE2Ze3QlL",
    "ort-wasm-simd-threaded.asyncify.mjs": "sha384-qViEcCGzsR/m8nlQwIsbYh7afN4thuraqFYDQY6huvmoLVoZq/eYawQ1wrv8nnhA",
    "ort-wasm-simd-threaded.asyncify.wasm": "sha384-EPVDLTxuO663dkZO/pcKJF6vOyyfq/5z9FY1oksN0UWFX2ABH4wDDZQHeNoUleWR",
}


class EmbeddingStore:
    """token -> float16 embedding bytes, LRU-bounded. A token is only given to the session that
    uploaded the image, and is unguessable (128 bits)."""

    def __init__(self, max_items: int = 64) -> None:
        self.max_items = max_items
        self._items: "OrderedDict[str, bytes]" = OrderedDict()
        self._lock = threading.Lock()

    def put(self, embedding: np.ndarray) -> str:
        data = np.asarray(embedding, dtype=np.float32).reshape(1, 256, 64, 64).astype("<f2").tobytes()
        token = secrets.token_urlsafe(16)
        with self._lock:
            self._items[token] = data
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return token

    def get(self, token: str) -> Optional[bytes]:
        with self._lock:
            data = self._items.get(token)
            if data is not None:
                self._items.move_to_end(token)
            return data


def cross_origin_isolation_enabled() -> bool:
    return os.environ.get("MOBILESAM_CROSS_ORIGIN_ISOLATION", "1") not in ("0", "false", "no")


def create_server(demo, services, store: EmbeddingStore):
    """FastAPI app with Gradio mounted at / and the browser-decoding routes."""
    import gradio as gr
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles

    app = FastAPI()
    isolate = cross_origin_isolation_enabled()

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        if isolate:
            # Cross-origin isolation gives the page SharedArrayBuffer: multithreaded WASM.
            response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
            response.headers["Cross-Origin-Embedder-Policy"] = "credentialless"
        response.headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
        return response

    paths = services.engine.paths if services.engine is not None else {}
    decoders = {"fp32": paths.get("decoder_lowres"), "small": paths.get("decoder_web"),
                "fast": paths.get("decoder_fast")}
    tag = Path(decoders["fp32"]).parent.name if decoders["fp32"] else None

    def describe(kind):
        p = decoders.get(kind)
        return {"url": f"/msw/models/decoder-{kind}.onnx?v={tag}", "bytes": os.path.getsize(p),
                "version": tag, "kind": kind} if p else None

    @app.get("/msw/config.json")
    def config():
        local = ORT_LOCAL.joinpath("ort.webgpu.min.mjs").is_file()
        return JSONResponse({
            "ort": {"version": ORT_VERSION, "local": local,
                    "base": "/msw/ort/" if local else ORT_CDN, "sri": ORT_SRI},
            # fp32 by default (exact parity with the server); "small" stores the weights as
            # float16 (half the download; mask IoU >= 0.999 against fp32, measured).
            "decoder": describe("fp32"),
            "decoder_small": describe("small"),
            # hover previews: tanh GELU (WASM's erf is slow), float16 weights; ~1.5e-3 in logits
            "decoder_fast": describe("fast"),
            "cross_origin_isolated_by_server": isolate,
        }, headers={"Cache-Control": "no-cache"})

    @app.get("/msw/models/decoder-{kind}.onnx")
    def decoder(kind: str):
        if not decoders.get(kind):
            raise HTTPException(404, "the in-browser decoder needs the onnxruntime backend and model weights")
        return FileResponse(decoders[kind], media_type="application/octet-stream",
                            headers={"Cache-Control": "public, max-age=31536000, immutable"})

    @app.get("/msw/embedding/{token}")
    def embedding(token: str):
        data = store.get(token)
        if data is None:
            raise HTTPException(404, "unknown or expired embedding; upload the image again")
        return Response(data, media_type="application/octet-stream", headers={"Cache-Control": "private, no-store"})

    app.mount("/msw/static", StaticFiles(directory=str(STATIC)), name="msw-static")
    if ORT_LOCAL.is_dir():
        app.mount("/msw/ort", StaticFiles(directory=str(ORT_LOCAL)), name="msw-ort")
    # Uploads over the limit are refused by Gradio's upload route while they stream in.
    return gr.mount_gradio_app(app, demo, path="/", max_file_size=max_upload_bytes(services.config))


def max_upload_bytes(config) -> int:
    return int(config.max_upload_mb * 1024 * 1024)


def ort_sri_matches_local() -> dict:
    """For tests: {file: bool} whether the installed npm files match the pinned SRI hashes."""
    import base64
    import hashlib

    out = {}
    for name, sri in ORT_SRI.items():
        p = ORT_LOCAL / name
        if p.is_file():
            digest = base64.b64encode(hashlib.sha384(p.read_bytes()).digest()).decode()
            out[name] = f"sha384-{digest}" == sri
    return out


