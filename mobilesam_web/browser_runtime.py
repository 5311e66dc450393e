"""onnxruntime-web, the browser's runtime: the pinned version, its files (from npm's copy in
static/node_modules, or the pinned CDN URL checked with subresource integrity) and its two builds.
Used by the app's /msw routes and by `export-site` (which must not need Gradio)."""

import base64
import hashlib
from typing import Optional

from .paths import static_dir

ORT_VERSION = "1.30.0"
ORT_LOCAL = static_dir() / "node_modules" / "onnxruntime-web" / "dist"
ORT_CDN = f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{ORT_VERSION}/dist/"
# Subresource integrity of the pinned files (sha384 of the npm package's bytes; tests check it).
ORT_SRI = {
    "ort.wasm.min.mjs": "sha384-SfFfy/pvthiOsgaw3KX0bV5TfQ6Iq+oY9KutMe4SxIuHH4cl+DCSD4rTsYOoG1tJ",
    "ort-wasm-simd-threaded.mjs": "sha384-XcXA/MtAf0WpB8e023xQH9CM7RIjiugakT7x99DIwpFf7k56BIFFcAPerIF7FDad",
    "ort-wasm-simd-threaded.wasm": "sha384-vjBJ1z7qrhkTyYsNqKeF6c7N+nOJSU94czEo+tvZcu8G75JparGq9kB+kTnEUNVM",
    "ort.webgpu.min.mjs": "sha384-FPQBMbud8ICuP0Ii+Gr95KWEX9pKHtUC3lacIp0aPI8WYluKvTsEGQ3AE2Ze3QlL",
    "ort-wasm-simd-threaded.asyncify.mjs": "sha384-qViEcCGzsR/m8nlQwIsbYh7afN4thuraqFYDQY6huvmoLVoZq/eYawQ1wrv8nnhA",
    "ort-wasm-simd-threaded.asyncify.wasm": "sha384-EPVDLTxuO663dkZO/pcKJF6vOyyfq/5z9FY1oksN0UWFX2ABH4wDDZQHeNoUleWR",
}
# Two builds of the runtime: WASM only (14 MB, 3.7 MB gzipped) for most visitors, and the one
# with the WebGPU backend (27 MB, 6.7 MB gzipped), loaded only when WebGPU will be used.
ORT_BUNDLES = {
    "wasm": {"main": "ort.wasm.min.mjs", "glue": "ort-wasm-simd-threaded.mjs", "wasm": "ort-wasm-simd-threaded.wasm"},
    "webgpu": {
        "main": "ort.webgpu.min.mjs",
        "glue": "ort-wasm-simd-threaded.asyncify.mjs",
        "wasm": "ort-wasm-simd-threaded.asyncify.wasm",
    },
}


def sri(data: bytes) -> str:
    """The subresource-integrity string (sha384) of some bytes."""
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


# On-device mode ships the server's float32 encoder to the browser: TinyViT's 28 MB is fine; SAM's
# ViTs (360 MB to 2.5 GB) and EfficientViT-SAM (120 to 250 MB) are more than a page should ask a
# visitor to download and hold in a tab.
BROWSER_ENCODER_MAX_BYTES = 64 << 20


def browser_encoder_refusal(encoder_bytes: int, model_name: str) -> Optional[str]:
    """None when a browser can be given this encoder; else why not, in words for people."""
    if encoder_bytes <= BROWSER_ENCODER_MAX_BYTES:
        return None
    return (
        f"{model_name}'s encoder is {encoder_bytes / 1e6:.0f} MB, more than a browser tab is asked to "
        f"download and hold (at most {BROWSER_ENCODER_MAX_BYTES / 2**20:.0f} MB; MobileSAM's is 28 MB)"
    )
