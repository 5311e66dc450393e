"""mobilesam-web Gradio app (Hugging Face Space entry point).

    python app.py [--checkpoint PATH] [--host 127.0.0.1] [--port 7860] [--share]
"""
import argparse
import os

from mobilesam_web.ui import build_app


def main() -> None:
    ap = argparse.ArgumentParser(description="MobileSAM segment-anything web demo")
    ap.add_argument("--checkpoint", default=os.environ.get("MOBILESAM_CHECKPOINT"),
                    help="path to an official-format mobile_sam.pt (default: env MOBILESAM_CHECKPOINT, "
                         "else download from the Hugging Face Hub)")
    ap.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    ap.add_argument("--share", action="store_true", help="create a public gradio.live link")
    args = ap.parse_args()
    demo = build_app(checkpoint=args.checkpoint)
    demo.queue(default_concurrency_limit=2).launch(server_name=args.host, server_port=args.port,
                                                   share=args.share)


if __name__ == "__main__":
    main()
