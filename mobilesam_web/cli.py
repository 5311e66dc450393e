"""The `mobilesam-web` command (also `python -m mobilesam_web`):

    mobilesam-web [serve] [--checkpoint PATH] [--port N] [--share] ...   the web app (default)
    mobilesam-web export --checkpoint PATH --out DIR [--graphs ...]      ONNX export

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

COMMANDS = {"serve": "the web app (default)", "export": "ONNX export"}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "serve"
    return {"serve": serve, "export": export}[command](argv)


def serve(argv: Optional[Sequence[str]] = None) -> int:
    """Start the web app (the default command)."""
    ap = argparse.ArgumentParser(prog="mobilesam-web [serve]", description="MobileSAM / MobileSAMv2 web app")
    ap.add_argument("--checkpoint", help="official-format mobile_sam.pt (default: $MOBILESAM_CHECKPOINT, "
                                         "else the Hugging Face Hub)")
    ap.add_argument("--detector-checkpoint", help="MobileSAMv2 ObjectAwareModel.pt (default: "
                                                  "$MOBILESAMV2_DETECTOR, else the Hub)")
    ap.add_argument("--decoder-checkpoint", help="MobileSAMv2 Prompt_guided_Mask_Decoder.pt for the "
                                                 "everything tab (default: MobileSAM's own decoder)")
    ap.add_argument("--backend", choices=["onnxruntime", "torch"], default=None)
    ap.add_argument("--max-image-side", type=int, default=None,
                    help="work on larger images downscaled to this long side; results stay in the "
                         "image's own pixels (default 2048)")
    ap.add_argument("--max-upload-mb", type=float, default=None,
                    help="refuse uploads larger than this (default 50; $MOBILESAM_MAX_UPLOAD_MB)")
    ap.add_argument("--max-pixels", type=int, default=None,
                    help="refuse images with more pixels (default 100000000; $MOBILESAM_MAX_PIXELS)")
    ap.add_argument("--max-points", type=int, default=None,
                    help="prompt points per request / object (default 64; $MOBILESAM_MAX_POINTS)")
    ap.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    ap.add_argument("--share", action="store_true", help="create a public gradio.live link")
    ap.add_argument("--concurrency", type=int, default=int(os.environ.get("MOBILESAM_CONCURRENCY", "2")),
                    help="requests computed at once (default 2: one per core of a free Space)")
    args = ap.parse_args(argv)
    from .ui import create_app
    from .ui.services import AppConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = AppConfig.from_env(checkpoint=args.checkpoint, detector_checkpoint=args.detector_checkpoint,
                                decoder_checkpoint=args.decoder_checkpoint, backend=args.backend,
                                max_image_side=args.max_image_side, max_upload_mb=args.max_upload_mb,
                                max_pixels=args.max_pixels, max_points=args.max_points)
    demo, context = create_app(config=config)
    demo.queue(default_concurrency_limit=args.concurrency, max_size=64)
    if args.share:  # a share link needs Gradio's own launcher; it gets the same /msw routes
        from .ui.web import launch_with_share_link

        launch_with_share_link(demo, context, args.host, args.port)
        return 0
    import uvicorn

    from .ui.web import create_server

    app = create_server(demo, context)
    print(f"* Running on local URL:  http://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0



def export(argv: Optional[Sequence[str]] = None) -> int:
    """Export MobileSAM to ONNX, checked against the torch model."""
    from .export import EXPORTERS, export_all
    from .weights import CheckpointError, WeightsUnavailableError, resolve_checkpoint

    ex = argparse.ArgumentParser(prog="mobilesam-web export",
                                 description="export MobileSAM to ONNX (checked against the torch model)")
    ex.add_argument("--checkpoint", help="official-format mobile_sam.pt (default: env var, then the Hub)")
    ex.add_argument("--out", default="onnx", help="output folder (default: onnx/)")
    ex.add_argument("--graphs", nargs="+", choices=sorted(EXPORTERS), default=sorted(EXPORTERS))
    ex.add_argument("--quantize", action="store_true", help="also write decoder_int8.onnx")
    ex.add_argument("--no-verify", action="store_true", help="skip the onnxruntime-vs-torch check")
    args = ex.parse_args(argv)
    try:
        ckpt = resolve_checkpoint("mobile_sam", args.checkpoint)
        paths = export_all(ckpt, args.out, args.graphs, quantize=args.quantize,
                           verify=not args.no_verify, log=lambda s: print(s, flush=True))
    except (WeightsUnavailableError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        print(f"{name:16s} {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    print("verified against the torch model" if not args.no_verify else "not verified (--no-verify)")
    return 0
