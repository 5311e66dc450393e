"""The `mobilesam-web` command (also `python -m mobilesam_web`):

    mobilesam-web [serve] [--checkpoint PATH] [--port N] [--share] ...   the web app (default)
    mobilesam-web export --checkpoint PATH --out DIR [--graphs ...]      ONNX export
    mobilesam-web segment INPUT --out DIR [--mode everything|boxes|grid] [--ray [ADDRESS]] ...
                                                                         batch segmentation -> COCO
    mobilesam-web export-site OUT_DIR [--checkpoint PATH]                a static site that segments
                                                                         in the browser (no server)
    mobilesam-web eval GT.json PRED.json [--max-dets 10 100 1000]        class-agnostic mask AR@K

Every `serve` option also has an environment variable (for a Space): MOBILESAM_CHECKPOINT,
MOBILESAMV2_DETECTOR, MOBILESAMV2_DECODER, MOBILESAM_BACKEND, MOBILESAM_MAX_IMAGE_SIDE,
MOBILESAM_MAX_UPLOAD_MB, MOBILESAM_MAX_PIXELS, MOBILESAM_MAX_POINTS, GRADIO_SERVER_NAME,
GRADIO_SERVER_PORT; more limits only as variables (README "Limits").
"""

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

COMMANDS = {
    "serve": "the web app (default)",
    "export": "ONNX export",
    "segment": "batch segmentation of a folder into COCO",
    "export-site": "a static site that runs segment-anything in the visitor's browser",
    "eval": "class-agnostic mask average recall (AR@K) of predictions against COCO/LVIS ground truth",
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "serve"
    commands = {"serve": serve, "export": export, "segment": segment, "export-site": export_site, "eval": evaluate}
    return commands[command](argv)


def evaluate(argv: Optional[Sequence[str]] = None) -> int:
    """Mask AR@K of PRED.json (one of our COCO files, or a list of results) against GT.json."""
    import json

    from .evaluate import MAX_DETS, evaluate_files, format_table

    ap = argparse.ArgumentParser(
        prog="mobilesam-web eval",
        description="class-agnostic mask average recall AR@K (IoU 0.50:0.95, by object size), as "
        "MobileSAMv2's object-proposal table and pycocotools' COCOeval(useCats=0, iouType='segm') measure it",
    )
    ap.add_argument("gt", metavar="GT.json", help="ground truth: COCO or LVIS format (polygons or RLE)")
    ap.add_argument("pred", metavar="PRED.json", help="our COCO output (segment/everything/grid) or a list of results")
    ap.add_argument("--max-dets", type=int, nargs="+", default=list(MAX_DETS), help="K values (default 10 100 1000)")
    ap.add_argument(
        "--score-key", default=None, help="the predictions' ranking field (default: score, else predicted_iou)"
    )
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    try:
        result = evaluate_files(args.gt, args.pred, tuple(sorted(args.max_dets)), args.score_key)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: cannot evaluate: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result) if args.json else format_table(result))
    return 0


def add_model_arguments(ap: argparse.ArgumentParser, decoder_help: str) -> None:
    """--model, --checkpoint and --decoder-checkpoint, the same for every command."""
    from .engine.checkpoints import MODELS

    ap.add_argument(
        "--model",
        choices=list(MODELS),
        default=None,
        help="which model, downloaded from the Hugging Face Hub when no --checkpoint is given "
        "(default: mobile_sam; README 'Models' lists where each comes from)",
    )
    ap.add_argument(
        "--checkpoint",
        help="a checkpoint file, recognised from its contents: mobile_sam.pt, SAM's sam_vit_{b,l,h}_*.pth, "
        "EfficientViT-SAM's efficientvit_sam_l{0,1,2}.pt, MobileSAMv2's sam_vit_h.pt / l2.pt "
        "(default: $MOBILESAM_CHECKPOINT, else --model from the Hub)",
    )
    ap.add_argument("--decoder-checkpoint", help=decoder_help)


def serve_parser() -> argparse.ArgumentParser:
    """The web app's options."""
    ap = argparse.ArgumentParser(prog="mobilesam-web [serve]", description="MobileSAM / MobileSAMv2 web app")
    add_model_arguments(
        ap,
        "MobileSAMv2's Prompt_guided_Mask_Decoder.pt for the everything tab (and for clicks with an encoder-only "
        "checkpoint; default: the checkpoint's own decoder)",
    )
    ap.add_argument(
        "--detector-checkpoint", help="MobileSAMv2 ObjectAwareModel.pt (default: $MOBILESAMV2_DETECTOR, else the Hub)"
    )
    ap.add_argument("--backend", choices=["onnxruntime", "torch"], default=None)
    ap.add_argument(
        "--max-image-side",
        type=int,
        default=None,
        help="work on larger images downscaled to this long side; results stay in the "
        "image's own pixels (default 2048)",
    )
    ap.add_argument(
        "--max-upload-mb",
        type=float,
        default=None,
        help="refuse uploads larger than this (default 50; $MOBILESAM_MAX_UPLOAD_MB)",
    )
    ap.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="refuse images with more pixels (default 100000000; $MOBILESAM_MAX_PIXELS)",
    )
    ap.add_argument(
        "--max-points",
        type=int,
        default=None,
        help="prompt points per request / object (default 64; $MOBILESAM_MAX_POINTS)",
    )
    ap.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    ap.add_argument("--share", action="store_true", help="create a public gradio.live link")
    ap.add_argument(
        "--concurrency",
        type=int,
        default=int(os.environ.get("MOBILESAM_CONCURRENCY", "2")),
        help="requests computed at once (default 2: one per core of a free Space)",
    )
    return ap


def serve(argv: Optional[Sequence[str]] = None) -> int:
    """Start the web app (the default command)."""
    args = serve_parser().parse_args(argv)
    from .ui import create_app
    from .ui.services import AppConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # Gradio notices a closed page by its missed heartbeat (15 s by default); long work for a
    # page that is gone (a grid comparison, an everything run) stops at the next check.
    os.environ.setdefault("GRADIO_HEARTBEAT_INTERVAL", "5")
    config = AppConfig.from_env(
        checkpoint=args.checkpoint,
        model=args.model,
        detector_checkpoint=args.detector_checkpoint,
        decoder_checkpoint=args.decoder_checkpoint,
        backend=args.backend,
        max_image_side=args.max_image_side,
        max_upload_mb=args.max_upload_mb,
        max_pixels=args.max_pixels,
        max_points=args.max_points,
    )
    demo, context = create_app(config=config)
    # api_open=False: /gradio_api/run/... would skip the queue, its limits and the guard's fair sharing
    demo.queue(default_concurrency_limit=args.concurrency, max_size=64, api_open=False)
    if args.share:  # a share link needs Gradio's own launcher; it gets the same /msw routes
        from .ui.web import launch_with_share_link

        launch_with_share_link(demo, context, args.host, args.port)
        return 0
    import uvicorn

    from .ui.web import create_server

    app = create_server(demo, context)
    print(f"* Running on local URL:  http://{args.host}:{args.port}", flush=True)
    # A visitor's page keeps Gradio's event streams open: without a limit, SIGTERM (a Space's
    # restart, `docker stop`) would wait on them until the process is killed.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=SHUTDOWN_S)
    return 0


SHUTDOWN_S = 3  # seconds that requests still running get after SIGTERM


def export(argv: Optional[Sequence[str]] = None) -> int:
    """Export MobileSAM to ONNX, checked against the torch model."""
    from .engine.checkpoints import CheckpointError, WeightsUnavailableError, resolve_model
    from .engine.onnx.export import EXPORTERS, export_all

    ex = argparse.ArgumentParser(
        prog="mobilesam-web export", description="export a model to ONNX (checked against the torch model)"
    )
    add_model_arguments(ex, "MobileSAMv2's Prompt_guided_Mask_Decoder.pt, exported instead of the checkpoint's decoder")
    ex.add_argument("--out", default="onnx", help="output folder (default: onnx/)")
    ex.add_argument("--graphs", nargs="+", choices=sorted(EXPORTERS), default=sorted(EXPORTERS))
    ex.add_argument("--quantize", action="store_true", help="also write decoder_int8.onnx and decoder_single_int8.onnx")
    ex.add_argument("--no-verify", action="store_true", help="skip the onnxruntime-vs-torch check")
    args = ex.parse_args(argv)
    try:
        ckpt, decoder = resolve_model(args.model, args.checkpoint, args.decoder_checkpoint)
        paths = export_all(
            ckpt,
            args.out,
            args.graphs,
            quantize=args.quantize,
            verify=not args.no_verify,
            log=lambda s: print(s, flush=True),
            decoder_checkpoint=decoder,
        )
    except (WeightsUnavailableError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        print(f"{name:16s} {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    print("verified against the torch model" if not args.no_verify else "not verified (--no-verify)")
    return 0


def export_site(argv: Optional[Sequence[str]] = None) -> int:
    """Write a static site (index.html, JS, onnxruntime-web, the graphs) into OUT_DIR."""
    from .engine.checkpoints import CheckpointError, WeightsUnavailableError
    from .site import SiteError
    from .site import export_site as write_site

    ap = argparse.ArgumentParser(
        prog="mobilesam-web export-site",
        description="write a self-contained static folder that runs segment-anything entirely in the "
        "visitor's browser (open an image, click, export); host it on any static file host",
    )
    ap.add_argument("out", metavar="OUT_DIR", help="output folder (created)")
    add_model_arguments(ap, "MobileSAMv2's Prompt_guided_Mask_Decoder.pt (needed by an encoder-only checkpoint)")
    ap.add_argument(
        "--no-webgpu",
        action="store_true",
        help="leave out onnxruntime-web's WebGPU build (WASM only; its 26 MB .wasm is over Cloudflare Pages' "
        "25 MiB file limit)",
    )
    ap.add_argument("--force", action="store_true", help="write into a folder that holds other files")
    offline = "the dist/ folder of onnxruntime-web's npm package (`npm pack`, unpacked), for an offline machine"
    ap.add_argument("--runtime-dir", default=None, help=offline)
    args = ap.parse_args(argv)
    try:
        out = write_site(
            args.out,
            args.checkpoint,
            log=lambda s: print(s, flush=True),
            webgpu=not args.no_webgpu,
            force=args.force,
            model=args.model,
            decoder_checkpoint=args.decoder_checkpoint,
            runtime_dir=args.runtime_dir,
        )
    except (WeightsUnavailableError, CheckpointError, SiteError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"serve it with any static file server, e.g. `python -m http.server -d {out}`; hosts that send "
        "COOP/COEP headers (Netlify and Cloudflare Pages read the _headers file) get multithreaded WASM"
    )
    return 0


def segment_parser() -> argparse.ArgumentParser:
    """The batch command's options."""
    from .batch.job import MODES
    from .paths import default_onnx_cache  # this install's: a checkout's onnx/, else the user cache

    ap = argparse.ArgumentParser(
        prog="mobilesam-web segment",
        description="segment every image of a folder (recursive) or of a text file of paths into one COCO "
        "file, OUT_DIR/annotations.json. Resumable: rerun the same command to finish an "
        "interrupted job. Exit code 1 when an image failed (see OUT_DIR/errors.json).",
    )
    ap.add_argument("input", metavar="INPUT", help="a folder of images (recursive) or a text file of image paths")
    ap.add_argument("--out", required=True, metavar="OUT_DIR", help="output folder")
    ap.add_argument(
        "--mode",
        choices=MODES,
        default="everything",
        help="everything: MobileSAMv2 detector boxes (default); boxes: your boxes (--prompts) "
        "to masks; grid: SAM's automatic mask generator",
    )
    ap.add_argument(
        "--prompts",
        metavar="PROMPTS.json",
        help="boxes mode: a COCO file (ids and categories kept) or {file_name: [[x1,y1,x2,y2], ...]}",
    )
    add_model_arguments(
        ap,
        "MobileSAMv2's Prompt_guided_Mask_Decoder.pt (default: the checkpoint's own decoder; --model mobilesamv2_*: "
        "the Hub's)",
    )
    ap.add_argument("--detector-checkpoint", help="ObjectAwareModel.pt (default: $MOBILESAMV2_DETECTOR, else the Hub)")
    ap.add_argument("--conf", type=float, default=0.4, help="detector confidence (default 0.4)")
    ap.add_argument("--iou", type=float, default=0.9, help="detector NMS IoU (default 0.9)")
    ap.add_argument("--imgsz", type=int, default=1024, help="detector input size (default 1024)")
    ap.add_argument("--max-det", type=int, default=300, help="detector boxes per image at most (default 300)")
    ap.add_argument("--points-per-side", type=int, default=32, help="grid mode: points per side (default 32)")
    ap.add_argument("--pred-iou-thresh", type=float, default=0.88, help="grid mode: keep masks above (default 0.88)")
    ap.add_argument(
        "--stability-thresh",
        type=float,
        default=0.95,
        help="grid mode: keep masks with stability score >= (default 0.95)",
    )
    ap.add_argument("--png", action="store_true", help="also write masks/<image>/labels.png and one PNG per object")
    ap.add_argument("--embeddings", action="store_true", help="also write embeddings/<image>.npy (1x256x64x64)")
    ap.add_argument("--overwrite", action="store_true", help="discard earlier results in OUT_DIR and start again")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op threads (local: of the one engine, default all cores or OMP_NUM_THREADS; Ray: per actor, default 2)",
    )
    ap.add_argument(
        "--max-image-side",
        type=int,
        default=None,
        help="work on larger images downscaled to this long side (default 2048); masks stay in the image's own pixels",
    )
    cache = f"ONNX export cache (default $MOBILESAM_ONNX_CACHE, then {default_onnx_cache()})"
    ap.add_argument("--onnx-cache", default=None, help=cache)
    ap.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run on Ray Data: a local Ray instance (or the cluster running here), or the cluster at ADDRESS "
        "('auto', 'host:6379', 'ray://host:10001'; token auth: README); needs pip install 'mobilesam-web[ray]'",
    )
    ap.add_argument("--actors", type=int, default=None, help="Ray: engine actors (default: cluster CPUs // threads)")
    ap.add_argument(
        "--actor-memory-mb", type=int, default=None, help="Ray: memory reserved per actor (default 3000 MB; see README)"
    )
    ap.add_argument("--no-progress", action="store_true", help="plain log lines even on a terminal")
    return ap


def segment(argv: Optional[Sequence[str]] = None) -> int:
    """Segment a folder (or a list) of images into OUT_DIR/annotations.json; resumable."""
    from .batch.job import JobError, SegmentJob
    from .batch.ray_connect import address_error, give_back_input
    from .engine.checkpoints import CheckpointError, WeightsUnavailableError

    ap = segment_parser()
    args = ap.parse_args(give_back_input(sys.argv[1:] if argv is None else argv))
    if args.ray is not None and address_error(args.ray):
        ap.error(address_error(args.ray))
    logging.basicConfig(level=logging.WARNING)
    try:
        job = SegmentJob.from_args(args)
        if args.ray is None:
            from .batch.run import run_local

            return run_local(job, log=lambda s: print(s, flush=True))
        return _run_on_ray(job, args)
    except (JobError, WeightsUnavailableError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run_on_ray(job, args: argparse.Namespace) -> int:
    try:
        from .batch.ray_job import run_ray
    except ImportError as exc:
        print(
            f"error: --ray needs Ray Data ({exc}). Install it with:  pip install 'mobilesam-web[ray]'  "
            "(or pip install -r requirements-ray.txt)",
            file=sys.stderr,
        )
        return 2
    return run_ray(
        job,
        address=None if args.ray == "local" else args.ray,
        actors=args.actors,
        actor_memory_mb=args.actor_memory_mb,
        log=lambda s: print(s, flush=True),
    )
