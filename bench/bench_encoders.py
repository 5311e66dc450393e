"""set_image time and peak memory per image encoder: our PyTorch, our ONNX Runtime engine and the
official code, in the same run on the same image.

    python bench/bench_encoders.py [--encoders vit_t efficientvit_l2 vit_b vit_h] [--n 3] [--threads 2]
        [--official /path/to/MobileSAM]   # a snapshot of github.com/ChaoningZhang/MobileSAM

Each (encoder, engine) runs in a fresh process, so its peak RSS (VmHWM) is its own: weights,
the model, the ONNX session and one image. Weights are seeded (scripts/seeded_weights.py;
timings don't depend on values); the ONNX graphs are exported into a temporary cache first
(not timed). The official code: `mobile_sam`'s builders (TinyViT, SAM's ViTs) and MobileSAMv2's
EfficientViT-L2 encoder, each with its SamPredictor; without --official that column is skipped.
Ratios are against the official code measured in this run.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import FIXTURES, ROOT, load_rgb

sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))
IMAGE = FIXTURES / "mobilesam_parity" / "image.png"
ENGINES = ("torch", "onnxruntime", "official")
# The official code builds these (MobileSAMv2's repository: mobile_sam's builders and its own L2 encoder)
OFFICIAL = ("vit_t", "vit_b", "vit_l", "vit_h", "efficientvit_l2")


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_weights(encoder: str, folder: Path) -> dict:
    """Seeded checkpoint files for `encoder` in the official formats: {"checkpoint", "decoder"}."""
    import torch

    from parity_checks import decoder_weights, encoder_weights, write_efficientvit_files

    if encoder == "vit_t":
        return {"checkpoint": str(FIXTURES / "mobilesam_parity" / "weights_fp16.pt"), "decoder": None}
    if encoder == "efficientvit_l2":
        write_efficientvit_files(folder, 1)
        return {"checkpoint": str(folder / "l2.pt"), "decoder": str(folder / "Prompt_guided_Mask_Decoder.pt")}
    weights = encoder_weights(encoder, 1)
    decoder = decoder_weights(1)
    weights.update({f"prompt_encoder.{k}": v for k, v in decoder["PromtEncoder"].items()})
    weights.update({f"mask_decoder.{k}": v for k, v in decoder["MaskDecoder"].items()})
    path = folder / f"sam_{encoder}.pth"
    torch.save(weights, path)
    del weights
    return {"checkpoint": str(path), "decoder": None}


def official_predictor(encoder: str, files: dict, repo: str):
    """The official code's SamPredictor for the same weights."""
    import torch

    if encoder == "efficientvit_l2":
        import make_efficientvit_fixture as m

        m.install_stubs()
        sys.modules.setdefault("efficientvit.models.nn.drop", type(sys)("efficientvit.models.nn.drop"))
        sys.path.insert(0, str(Path(repo) / "MobileSAMv2"))
        from mobilesamv2 import SamPredictor, sam_model_registry

        model = sam_model_registry["vit_b"]()
        parts = sam_model_registry["PromptGuidedDecoder"](files["decoder"])
        model.prompt_encoder, model.mask_decoder = parts["PromtEncoder"], parts["MaskDecoder"]
        model.image_encoder = sam_model_registry["efficientvit_l2"](files["checkpoint"])
        return SamPredictor(model.eval())
    from make_vit_fixture import official

    ms = official(repo)
    model = ms.sam_model_registry[encoder]()
    sd = torch.load(files["checkpoint"], map_location="cpu")
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return ms.SamPredictor(model.eval())


def worker(encoder: str, engine: str, files: dict, cache: str, threads: int, n: int, repo: str) -> dict:
    """Time set_image in this process; returns {"seconds", "rss_mb"}."""
    import torch

    torch.set_num_threads(threads)
    from mobilesam_web import load_predictor

    if engine == "official":
        pred = official_predictor(encoder, files, repo)
    elif engine == "torch":
        pred = load_predictor(files["checkpoint"], backend="torch", decoder_checkpoint=files["decoder"])
    else:
        pred = load_predictor(
            files["checkpoint"], cache_dir=cache, threads=threads, decoder_checkpoint=files["decoder"]
        )
        pred.engine.cache.max_bytes = 0  # time the encoder, not the engine's cache of embeddings
    image = load_rgb(IMAGE)
    times = []
    with torch.no_grad():
        for _ in range(n + 1):  # the first run warms up
            t = time.perf_counter()
            pred.set_image(image)
            times.append(time.perf_counter() - t)
    times = sorted(times[1:]) if n > 0 else times
    return {"seconds": times[len(times) // 2], "rss_mb": vm_hwm_mb()}


def run_worker(encoder, engine, files, cache, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", encoder, engine, json.dumps(files), cache]
    cmd += ["--threads", str(args.threads), "--n", str(args.n), "--official", args.official or ""]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1][:160]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def export_once(files: dict, cache: str) -> None:
    from mobilesam_web.engine.onnx.cache import ENGINE_GRAPHS, cached_exports

    cached_exports(files["checkpoint"], cache, ENGINE_GRAPHS, decoder_checkpoint=files["decoder"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--encoders", nargs="+", default=["vit_t", "efficientvit_l2", "vit_b"])
    ap.add_argument("--n", type=int, default=3, help="timed set_image calls per engine (median), after one warm-up")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--official", default=None, help="a snapshot of the official MobileSAM repository")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        encoder, engine, files, cache = args.worker
        print(json.dumps(worker(encoder, engine, json.loads(files), cache, args.threads, args.n, args.official)))
        return
    engines = [e for e in ENGINES if e != "official" or args.official]
    print(f"set_image on {IMAGE.name}, {args.threads} threads, median of {args.n} after a warm-up")
    print(f"{'encoder':16s}" + "".join(f"{e:>24s}" for e in engines))
    with tempfile.TemporaryDirectory() as tmp:
        for encoder in args.encoders:
            folder = Path(tmp) / encoder
            folder.mkdir()
            files = write_weights(encoder, folder)
            cache = str(Path(tmp) / "onnx")
            export_once(files, cache)
            results = {
                e: run_worker(encoder, e, files, cache, args)
                if e != "official" or encoder in OFFICIAL
                else {"error": "not in the official MobileSAMv2 code"}
                for e in engines
            }
            base = results.get("official", {}).get("seconds")
            cells = []
            for e in engines:
                r = results[e]
                if "error" in r:
                    cells.append(f"{'n/a' if e == 'official' else 'error':>24s}")
                    print(f"  {encoder} {e}: {r['error']}", file=sys.stderr)
                    continue
                ratio = f" {base / r['seconds']:.2f}x" if base and e != "official" else ""
                cells.append(f"{r['seconds']:7.2f} s {r['rss_mb']:6.0f} MB{ratio:>6s}".rjust(24))
            print(f"{encoder:16s}" + "".join(cells), flush=True)
            for p in folder.iterdir():  # the large seeded files are not needed any more
                if p.is_file():
                    p.unlink()


if __name__ == "__main__":
    main()
