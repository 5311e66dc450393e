"""`mobilesam-web export-site OUT_DIR`: segment anything as a folder of static files.

The folder runs entirely in the visitor's browser (the app's on-device mode, with nothing else):
the image is opened, resized, encoded and decoded in the page, and the downloads are built there.
Any static host serves it (GitHub Pages, Netlify, Cloudflare Pages, S3, a Hugging Face static
Space, `python -m http.server`):

    index.html            the page (mounts static/msw_canvas.js in its standalone mode)
    config.json           what the page loads: runtime files, graphs (with their sizes), palette
    app/<hash>/msw_*.js   the page's code and its worker, in a folder named by their content, so a
                          cache never mixes two exports' modules
    ort/<version>/        onnxruntime-web (WASM, and the WebGPU build used only with a GPU;
                          `webgpu=False` leaves it out: its 26 MB .wasm is over Cloudflare
                          Pages' 25 MiB file limit)
    models/               encoder.onnx (float32, the server's own), decoder_lowres.onnx (clicks),
                          decoder_fast.onnx (hover previews)
    examples/             the example photos (public domain / CC0, see examples/CREDITS.md)
    _headers              COOP/COEP for Netlify and Cloudflare Pages: WASM runs multithreaded
                          only on a cross-origin isolated page; elsewhere it uses one thread
    README.md             a Hugging Face static Space's card, with the same headers
                          (`custom_headers`): upload the folder as a Space and it is isolated

Model URLs carry the weights' hash (`?v=`), so a browser's model cache never serves the graphs
of an older export.
"""

import hashlib
import json
import shutil
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

from .engine.checkpoints import PathLike
from .paths import EXAMPLE_IMAGES, examples_dir, static_dir

# the page's config key -> the exported graph it loads
SITE_GRAPHS = {"decoder": "decoder_lowres", "decoder_fast": "decoder_fast", "encoder": "encoder"}


def site_modules(static: Path) -> Sequence[str]:
    """The page's ES modules (every static/msw_*.js: mount() imports its parts, the worker its own)."""
    return sorted(p.name for p in static.glob("msw_*.js"))


HEADERS = """/*
  Cross-Origin-Opener-Policy: same-origin
  Cross-Origin-Embedder-Policy: require-corp
  Cross-Origin-Resource-Policy: same-origin
"""

SPACE_CARD = """---
title: MobileSAM on this device
emoji: ✂️
colorFrom: blue
colorTo: yellow
sdk: static
app_file: index.html
pinned: false
custom_headers:
  cross-origin-embedder-policy: require-corp
  cross-origin-opener-policy: same-origin
  cross-origin-resource-policy: cross-origin
---

Segment anything with MobileSAM, entirely in the visitor's browser: the image is never uploaded.
Made with `mobilesam-web export-site`.
"""

INDEX = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>MobileSAM: segment anything, on this device</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:8px 16px;color:#222}
h1{font-size:1.3em;margin:.4em 0}
.lead{margin:.2em 0 .4em;color:#444}
.how{margin:0 0 .6em;color:#555;font-size:.9em}
footer{margin-top:1.5em;font-size:.8em;color:#666}
</style>
</head>
<body>
<h1>MobileSAM: segment anything, on this device</h1>
<p class="lead">Cut any object out of a photo: open it, click the object, download its mask and cut-out.
Everything runs in this page, so the photo is never uploaded; the models (about {mb} MB) download once.
Made with <a href="https://pypi.org/project/mobilesam-web/">mobilesam-web</a>, running
<a href="https://github.com/ChaoningZhang/MobileSAM">MobileSAM</a>.</p>
<p class="how">Click adds a point, <b>− Remove</b> marks what to leave out, <b>▭ Box</b> takes two corners;
<b>Keep object</b> keeps it and starts the next, <b>Export</b> downloads masks, cut-outs and COCO JSON.</p>
<div id="app"></div>
<noscript>This page needs JavaScript (it runs the segmentation model in your browser).</noscript>
<footer>MobileSAM (Zhang et al. 2023) with <a href="https://onnxruntime.ai/">ONNX Runtime Web</a>;
made by <code>mobilesam-web export-site</code>.</footer>
<script type="module">
import { mount } from "./{app}msw_canvas.js";
mount({ element: document.getElementById("app"), props: { value: null }, trigger: () => {}, watch: null,
        standalone: { configUrl: "config.json" } });
</script>
</body>
</html>
"""


SITE_MARKER = "mobilesam-web export-site"


def _is_site(folder: Path) -> bool:
    try:
        return json.loads((folder / "config.json").read_text()).get("site") == SITE_MARKER
    except (OSError, ValueError, AttributeError):
        return False


class SiteError(RuntimeError):
    """The site cannot be built (e.g. onnxruntime-web is neither installed nor downloadable)."""


def copy_ort(
    dest: Path,
    log: Callable[[str], None] = lambda s: None,
    bundles: Sequence[str] = ("wasm", "webgpu"),
    runtime_dir: Optional[PathLike] = None,
) -> None:
    """onnxruntime-web's files into dest: from `runtime_dir` (its npm package's dist/ folder,
    for offline machines), else static/node_modules (`npm ci --prefix static`, in a checkout),
    else downloaded from the pinned CDN URL. Every file is checked against its pinned sha384."""
    import urllib.request

    from .browser_runtime import ORT_BUNDLES, ORT_CDN, ORT_LOCAL, ORT_SRI, ORT_VERSION, sri

    dest.mkdir(parents=True, exist_ok=True)
    for name in sorted({f for b in bundles for f in ORT_BUNDLES[b].values()}):
        given = Path(runtime_dir) / name if runtime_dir is not None else None
        if given is not None and not given.is_file():
            raise SiteError(
                f"--runtime-dir {runtime_dir} has no {name}: give the dist/ folder of the npm package "
                f"onnxruntime-web@{ORT_VERSION}"
            )
        if given is not None or (ORT_LOCAL / name).is_file():
            data = (given or ORT_LOCAL / name).read_bytes()
            where = str(given or ORT_LOCAL / name)
        else:
            log(f"downloading {ORT_CDN}{name}")
            try:
                with urllib.request.urlopen(ORT_CDN + name, timeout=60) as response:
                    data = response.read()
            except OSError as exc:
                raise SiteError(
                    f"onnxruntime-web {ORT_VERSION} is not installed here ({ORT_LOCAL} has no {name}) and "
                    f"{ORT_CDN}{name} could not be downloaded ({exc}). Offline: on a machine with npm, "
                    f"`npm pack onnxruntime-web@{ORT_VERSION}` and unpack it (`tar xzf onnxruntime-web-"
                    f"{ORT_VERSION}.tgz`), then pass --runtime-dir package/dist. In a checkout, "
                    "`npm ci --prefix static` installs it."
                ) from None
            where = ORT_CDN + name
        if sri(data) != ORT_SRI[name]:
            raise SiteError(f"{where} does not match its pinned sha384 hash (onnxruntime-web {ORT_VERSION}); not used")
        (dest / name).write_bytes(data)


def site_graphs(model, checkpoint, decoder_checkpoint, log) -> Dict[str, Path]:
    """The site's graphs (exported once into the ONNX cache), refusing an encoder a browser can't hold."""
    from .browser_runtime import browser_encoder_refusal
    from .engine.checkpoints import resolve_model
    from .engine.model_names import MODEL_NAMES
    from .engine.onnx.cache import cached_exports, graph_bytes, read_manifest

    ckpt, decoder = resolve_model(model, checkpoint, decoder_checkpoint)
    graphs = cached_exports(ckpt, graphs=tuple(SITE_GRAPHS.values()), log=log, decoder_checkpoint=decoder)
    model_type = read_manifest(Path(graphs["encoder"]).parent).get("model_type", "vit_t")
    refusal = browser_encoder_refusal(graph_bytes(graphs["encoder"]), MODEL_NAMES.get(model_type, model_type))
    if refusal:
        raise SiteError(
            f"the static site encodes in the visitor's browser, and {refusal}. Export the site with "
            "MobileSAM (--model mobile_sam), or serve this model with `mobilesam-web serve`."
        )
    return graphs


def _write_site(
    out: Path, graphs: Dict[str, Path], log, max_points: int, max_pixels: int, webgpu: bool, runtime_dir=None
) -> None:
    """Everything but the graphs' export: the runtime, the page, the models, the config."""
    from .browser_runtime import ORT_BUNDLES, ORT_VERSION
    from .data.masks import palette_spec

    bundles = ("wasm", "webgpu") if webgpu else ("wasm",)
    ort_dir = f"ort/{ORT_VERSION}/"  # versioned: a cache never mixes two runtimes' files
    copy_ort(out / ort_dir, log, bundles, runtime_dir)
    for sub in ("models", "examples"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    static = static_dir()
    site_js = site_modules(static)
    code = hashlib.sha256(b"".join((static / name).read_bytes() for name in site_js)).hexdigest()[:12]
    app_dir = f"app/{code}/"
    (out / app_dir).mkdir(parents=True, exist_ok=True)
    for name in site_js:
        shutil.copyfile(static / name, out / app_dir / name)
    version = Path(graphs["encoder"]).parent.name  # <weights sha256[:16]>-v<exporter version>
    models: Dict[str, dict] = {}
    for key, graph in SITE_GRAPHS.items():
        src = Path(graphs[graph])
        shutil.copyfile(src, out / "models" / src.name)
        size = src.stat().st_size
        models[key] = {"url": f"models/{src.name}?v={version}", "graph": graph, "bytes": size, "transfer_bytes": None}
    examples = []
    for name, label in EXAMPLE_IMAGES:
        if (examples_dir() / name).is_file():
            shutil.copyfile(examples_dir() / name, out / "examples" / name)
            examples.append({"name": name, "label": label, "url": f"examples/{name}"})
    if (examples_dir() / "CREDITS.md").is_file():
        shutil.copyfile(examples_dir() / "CREDITS.md", out / "examples" / "CREDITS.md")
    config = {
        "ort": {
            "version": ORT_VERSION,
            "local": True,
            "base": ort_dir,
            "sri": {},
            "bundles": {
                name: {
                    **ORT_BUNDLES[name],
                    "bytes": sum((out / ort_dir / f).stat().st_size for f in ORT_BUNDLES[name].values()),
                }
                for name in bundles
            },
        },
        **models,
        "examples": examples,
        "max_points": int(max_points),
        "max_pixels": int(max_pixels),
        "palette": palette_spec(),
        "site": SITE_MARKER,  # marks the folder as ours: a later export may replace it
    }
    (out / "config.json").write_text(json.dumps(config, indent=1))
    first_visit = sum(m["bytes"] for m in models.values() if m is not models["decoder_fast"])
    first_visit += config["ort"]["bundles"]["wasm"]["bytes"]
    (out / "index.html").write_text(INDEX.replace("{mb}", f"{first_visit / 2**20:.0f}").replace("{app}", app_dir))
    (out / "_headers").write_text(HEADERS)
    (out / "README.md").write_text(SPACE_CARD)


def export_site(
    out_dir: PathLike,
    checkpoint: Optional[PathLike] = None,
    log: Callable[[str], None] = lambda s: None,
    max_points: int = 64,
    max_pixels: int = 100_000_000,
    webgpu: bool = True,
    force: bool = False,
    model: Optional[str] = None,
    decoder_checkpoint: Optional[PathLike] = None,
    runtime_dir: Optional[PathLike] = None,
) -> Path:
    """Write the static site into out_dir (created; the files of an earlier export are replaced).
    checkpoint: any accepted checkpoint (default: $MOBILESAM_CHECKPOINT, else `model` from the
    Hugging Face Hub); an encoder a browser can't hold (over BROWSER_ENCODER_MAX_BYTES) is refused.
    webgpu: include onnxruntime-web's WebGPU build. force: write into a folder that holds other
    files (by default only an empty folder or an earlier site is written into). runtime_dir:
    onnxruntime-web's dist/ folder (see `copy_ort`)."""

    out = Path(out_dir)
    if not force and out.is_dir() and any(out.iterdir()) and not _is_site(out):
        raise SiteError(f"{out} is not empty and holds no earlier site: choose an empty folder (or --force)")
    # The graphs first (cached): a model a browser can't hold is refused before anything is written.
    graphs = site_graphs(model, checkpoint, decoder_checkpoint, log)
    fresh = not out.exists()
    was_empty = not fresh and not any(out.iterdir())
    try:
        _write_site(out, graphs, log, max_points, max_pixels, webgpu, runtime_dir)
    except BaseException:  # a failed export leaves nothing behind in a folder that was new or empty
        if fresh:
            shutil.rmtree(out, ignore_errors=True)
        elif was_empty:
            for p in out.iterdir():
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
        raise
    log(f"static site written to {out} ({sum(p.stat().st_size for p in out.rglob('*') if p.is_file()) / 2**20:.0f} MB)")
    return out
