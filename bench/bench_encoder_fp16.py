"""Would a float16-weights encoder (half the download) hold the parity bound? Measured here.

    python bench/bench_encoder_fp16.py

The parity fixture's weights are float16-rounded already, so on them float16 storage changes
nothing. Real `mobile_sam.pt` weights are float32: this script gives the fixture model float32
weights (each weight scaled by 1 + U(-1e-3, 1e-3), which leaves the float16 grid), exports
`encoder.onnx` and the same graph with float16-stored weights (`export.fp16_weights`, as the
browser decoder `decoder_web` does), and compares both embeddings of the fixture image, and the
masks the decoder gives from each for the fixture's prompts, with the fixture's bounds
(embedding: max abs 1e-4, relative L2 1e-5; masks: 0.01% of pixels).
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FIX = ROOT.parent / "shared" / "fixtures" / "mobilesam_parity"


def main() -> None:
    from mobilesam_web import SamPredictor
    from mobilesam_web.engine.build import build_mobile_sam
    from mobilesam_web.engine.onnx.cache import ort_session
    from mobilesam_web.engine.onnx.exporters import export_encoder, fp16_weights
    from mobilesam_web.engine.transforms import ResizeLongestSide

    model = build_mobile_sam(FIX / "weights_fp16.pt")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1 + (torch.rand(p.shape, generator=g) - 0.5) * 2e-3)
    model.eval()
    image = np.array(Image.open(FIX / "image.png").convert("RGB"))
    resized = ResizeLongestSide(1024).apply_image(image)
    with tempfile.TemporaryDirectory() as tmp:
        fp32, fp16 = Path(tmp) / "encoder.onnx", Path(tmp) / "encoder_fp16.onnx"
        export_encoder(model, fp32, {})
        fp16_weights(fp32, fp16)
        a = ort_session(fp32).run(None, {"image": resized})[0]
        b = ort_session(fp16).run(None, {"image": resized})[0]
        sizes = fp32.stat().st_size / 2**20, fp16.stat().st_size / 2**20
    max_abs = float(np.abs(a - b).max())
    rel = float(np.linalg.norm(a - b) / np.linalg.norm(a))
    print(f"encoder.onnx {sizes[0]:.1f} MiB, float16-stored weights {sizes[1]:.1f} MiB")
    print(
        f"embedding, float16 weights vs float32: max abs {max_abs:.3g} (bound 1e-4), relative L2 {rel:.3g} (bound 1e-5)"
    )

    pred = SamPredictor(model)
    pred.set_image(image)
    cases = np.load(FIX / "cases.npz")
    worst = 0.0
    for c in "abcdf":
        kw = {k: cases[f"{c}_{k}"] for k in ("point_coords", "point_labels", "box") if f"{c}_{k}" in cases.files}
        multimask = bool(cases[f"{c}_multimask_output"])
        masks = []
        for emb in (a, b):
            pred.features = torch.as_tensor(emb)
            masks.append(pred.predict(**kw, multimask_output=multimask)[0])
        frac = float((masks[0] != masks[1]).reshape(len(masks[0]), -1).mean(1).max())
        worst = max(worst, frac)
        print(f"  case {c}: masks differ in {frac * 100:.4f}% of pixels (worst mask)")
    verdict = "holds" if max_abs <= 1e-4 and rel <= 1e-5 and worst <= 1e-4 else "does not hold"
    print(f"the parity bound {verdict} for float16-stored encoder weights")


if __name__ == "__main__":
    main()
