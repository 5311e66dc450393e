"""Command line: `python -m mobilesam_web export --checkpoint PATH --out onnx/`."""
import argparse
import sys

from .export import EXPORTERS, export_all
from .weights import CheckpointError, WeightsUnavailableError, resolve_checkpoint


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mobilesam_web")
    sub = ap.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="export MobileSAM to ONNX (checked against the torch model)")
    ex.add_argument("--checkpoint", help="official-format mobile_sam.pt (default: env var, then the Hub)")
    ex.add_argument("--out", default="onnx", help="output folder (default: onnx/)")
    ex.add_argument("--graphs", nargs="+", choices=sorted(EXPORTERS), default=sorted(EXPORTERS))
    ex.add_argument("--quantize", action="store_true", help="also write decoder_int8.onnx")
    ex.add_argument("--no-verify", action="store_true", help="skip the onnxruntime-vs-torch check")
    args = ap.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
