"""mobilesam-web Gradio app (Hugging Face Space entry point).

    python app.py [--checkpoint PATH] [--detector-checkpoint PATH] [--decoder-checkpoint PATH]
                  [--backend onnxruntime|torch] [--max-image-side N] [--host H] [--port N] [--share]

Every option also has an environment variable (for a Space): MOBILESAM_CHECKPOINT,
MOBILESAMV2_DETECTOR, MOBILESAMV2_DECODER, MOBILESAM_BACKEND, MOBILESAM_MAX_IMAGE_SIDE,
MOBILESAM_MAX_UPLOAD_MB, MOBILESAM_MAX_PIXELS, MOBILESAM_MAX_POINTS, GRADIO_SERVER_NAME,
GRADIO_SERVER_PORT; more limits only as variables (README "Limits").
"""
import argparse
import logging
import os

from mobilesam_web.ui import create_app
from mobilesam_web.ui.services import AppConfig


def main() -> None:
    ap = argparse.ArgumentParser(description="MobileSAM / MobileSAMv2 web demo")
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
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = AppConfig.from_env(checkpoint=args.checkpoint, detector_checkpoint=args.detector_checkpoint,
                                decoder_checkpoint=args.decoder_checkpoint, backend=args.backend,
                                max_image_side=args.max_image_side, max_upload_mb=args.max_upload_mb,
                                max_pixels=args.max_pixels, max_points=args.max_points)
    demo, context = create_app(config=config)
    demo.queue(default_concurrency_limit=args.concurrency, max_size=64)
    if args.share:  # a share link needs Gradio's own launcher; it gets the same /msw routes
        from mobilesam_web.ui.web import launch_with_share_link

        launch_with_share_link(demo, context, args.host, args.port)
        return
    import uvicorn

    from mobilesam_web.ui.web import create_server

    app = create_server(demo, context)
    print(f"* Running on local URL:  http://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
