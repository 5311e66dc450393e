"""Torch engine vs ONNX Runtime engine, same image, same run.

    python bench/bench_engine.py [--checkpoint PATH] [--threads 2] [--n 5] [--boxes 100]

The torch engine performs the official computation op for op (it reproduces the official
outputs bit for bit), so it is the in-run stand-in for the official code; the official numbers
measured on this machine are printed for reference. Ratios > 1 mean the ONNX engine is faster.
"""

import time

import numpy as np
import torch

from mobilesam_web import SamPredictor, build_mobile_sam  # noqa: E402
from mobilesam_web.engine.onnx.predictor import OnnxSamPredictor, load_onnx_engine  # noqa: E402

from common import engine_arguments, load_rgb, median_time, peak_rss_mb  # noqa: E402

OFFICIAL = {"set_image": 1.20, "click": 0.0468, "5 boxes": 0.278, "per box": 0.056}


def random_boxes(n: int, w: int, h: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xy = rng.random((n, 2)) * [w * 0.7, h * 0.7]
    wh = (0.1 + rng.random((n, 2)) * 0.3) * [w, h]
    return np.concatenate([xy, np.minimum(xy + wh, [w - 1, h - 1])], 1)


def main() -> None:
    ap = engine_arguments(__doc__.strip().splitlines()[0])
    ap.add_argument("--boxes", type=int, default=100)
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    image = load_rgb(args.image)
    h, w = image.shape[:2]
    pt, lbl = np.array([[w * 0.4, h * 0.5]]), np.array([1])
    boxes5, boxes_n = random_boxes(5, w, h), random_boxes(args.boxes, w, h, 1)

    tp = SamPredictor(build_mobile_sam(args.checkpoint))
    op = OnnxSamPredictor(load_onnx_engine(args.checkpoint, args.cache_dir, threads=args.threads))
    op.engine.cache.max_bytes = 0  # time the encoder, not the embedding cache
    rss0 = peak_rss_mb()

    def torch_boxes(b):
        bt = tp.transform.apply_boxes_torch(torch.as_tensor(b, dtype=torch.float), (h, w))
        return lambda: tp.predict_torch(None, None, bt, multimask_output=False)

    # Each engine is timed in its own block: right after torch work its OpenMP threads keep
    # spinning for a while and would slow onnxruntime's threads if the two were interleaved.
    def measure(set_image, click, boxes5_fn, boxes_n_fn):
        return [
            median_time(set_image, args.n),
            median_time(click, args.n * 4),
            median_time(boxes5_fn, args.n),
            median_time(boxes_n_fn, 2, 1),
        ]

    t_torch = measure(
        lambda: tp.set_image(image), lambda: tp.predict(pt, lbl), torch_boxes(boxes5), torch_boxes(boxes_n)
    )
    time.sleep(1.0)
    t_onnx = measure(
        lambda: op.set_image(image),
        lambda: op.predict(pt, lbl),
        lambda: op.predict_boxes(boxes5),
        lambda: op.predict_boxes(boxes_n),
    )
    names = ["set_image", "click (1 pt, 3 masks)", "5 boxes", f"{args.boxes} boxes"]
    rows = list(zip(names, t_torch, t_onnx, [1, 1, 5, args.boxes]))
    print(f"image {w}x{h}, {args.threads} threads; median seconds; ratio = torch / onnx")
    print(f"{'':24s} {'torch':>9s} {'onnx':>9s} {'ratio':>6s} {'onnx per item':>14s}")
    for name, t_torch, t_onnx, k in rows:
        print(f"{name:24s} {t_torch:9.4f} {t_onnx:9.4f} {t_torch / t_onnx:6.2f} {t_onnx / k * 1e3:11.1f} ms")
    print(
        f"official code on this machine (design card): set_image {OFFICIAL['set_image']} s, click "
        f"{OFFICIAL['click'] * 1e3} ms, {OFFICIAL['per box'] * 1e3} ms/box"
    )
    print(f"peak RSS: {rss0:.0f} MB after loading, {peak_rss_mb():.0f} MB at the end")


if __name__ == "__main__":
    main()
