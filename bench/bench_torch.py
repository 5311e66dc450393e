"""Times the PyTorch engine: set_image and predict (median of N after warm-up).

    python bench/bench_torch.py [--checkpoint PATH] [--threads 2] [--n 5]

Without --checkpoint it uses the random-weight parity fixture (timings do not depend on the
weights' values).
"""

import numpy as np
import torch

from mobilesam_web import SamPredictor, build_mobile_sam  # noqa: E402

from common import engine_arguments, load_rgb, median_time  # noqa: E402


def main() -> None:
    ap = engine_arguments(__doc__.strip().splitlines()[0])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    image = load_rgb(args.image)
    predictor = SamPredictor(build_mobile_sam(args.checkpoint))
    h, w = image.shape[:2]
    pt = np.array([[w * 0.4, h * 0.5]])
    box = np.array([w * 0.2, h * 0.2, w * 0.7, h * 0.8])
    boxes = predictor.transform.apply_boxes_torch(
        torch.tensor([[w * 0.1 * i, h * 0.1, w * (0.3 + 0.1 * i), h * 0.9] for i in range(5)]), (h, w)
    )

    t_enc = median_time(lambda: predictor.set_image(image), args.n)
    t_click = median_time(lambda: predictor.predict(pt, np.array([1]), multimask_output=True), args.n * 4)
    t_box = median_time(lambda: predictor.predict(box=box, multimask_output=False), args.n * 4)
    t_5 = median_time(lambda: predictor.predict_torch(None, None, boxes, multimask_output=False), args.n * 2)
    print(f"torch engine, {args.threads} threads, image {w}x{h}")
    print(f"set_image            {t_enc * 1e3:8.1f} ms")
    print(f"click (3 masks)      {t_click * 1e3:8.1f} ms")
    print(f"box (1 mask)         {t_box * 1e3:8.1f} ms")
    print(f"5 boxes batched      {t_5 * 1e3:8.1f} ms  ({t_5 / 5 * 1e3:.1f} ms/box)")


if __name__ == "__main__":
    main()
