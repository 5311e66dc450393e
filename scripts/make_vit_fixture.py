"""Make tests/fixtures/sam_vit_b_parity.npz and sam_vit_h_keys.json with the OFFICIAL code.

Run once, in a throwaway environment that has the official MobileSAM repository (its
`mobile_sam` package holds segment-anything's ViT builders and SamPredictor); never a dependency:

    python -m venv --system-site-packages /tmp/offenv
    git clone https://github.com/ChaoningZhang/MobileSAM /tmp/MobileSAM   # (or a snapshot of it)
    /tmp/offenv/bin/python scripts/make_vit_fixture.py /tmp/MobileSAM ../shared/fixtures/mobilesam_parity/image.png

The weights come from scripts/seeded_weights.py (SEED below): tests make the same tensors again,
so no weight file is committed; only the official outputs are (small).
"""

import json
import sys
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from seeded_weights import seeded_state_dict  # noqa: E402

SEED = 20261206
OUT = HERE.parent / "tests" / "fixtures"
CASES = {  # name -> point_coords, point_labels, box, multimask_output (pixels of the fixture image)
    "point": ([[300.0, 200.0]], [1], None, True),
    "box": (None, None, [120.0, 80.0, 520.0, 400.0], False),
    "points_box": ([[300.0, 200.0], [150.0, 350.0]], [1, 0], [100.0, 60.0, 560.0, 420.0], False),
}


def install_stubs() -> None:
    """Stand-ins for timm and torchvision, so the official code imports beside our torch."""
    if "timm" not in sys.modules:
        layers = types.ModuleType("timm.models.layers")
        layers.DropPath = torch.nn.Identity
        layers.to_2tuple = lambda x: (x, x)
        layers.trunc_normal_ = torch.nn.init.trunc_normal_
        registry = types.ModuleType("timm.models.registry")
        registry.register_model = lambda fn: fn
        models = types.ModuleType("timm.models")
        models.layers, models.registry = layers, registry
        timm = types.ModuleType("timm")
        timm.models = models
        sys.modules.update(
            {"timm": timm, "timm.models": models, "timm.models.layers": layers, "timm.models.registry": registry}
        )
    if "torchvision" not in sys.modules:
        # Only ResizeLongestSide.apply_image uses torchvision: resize(to_pil_image(uint8 HWC), (h, w)),
        # which for a PIL image is PIL's own BILINEAR resize (torchvision's PIL path). The stub does
        # exactly that, for environments whose torchvision wheel doesn't match their torch.
        from PIL import Image

        functional = types.ModuleType("torchvision.transforms.functional")
        functional.to_pil_image = Image.fromarray
        functional.resize = lambda img, size: img.resize((size[1], size[0]), Image.BILINEAR)
        transforms = types.ModuleType("torchvision.transforms")
        transforms.functional = functional
        boxes = types.ModuleType("torchvision.ops.boxes")  # the grid generator's, unused here
        boxes.batched_nms = boxes.box_area = None
        ops = types.ModuleType("torchvision.ops")
        ops.boxes = boxes
        tv = types.ModuleType("torchvision")
        tv.transforms, tv.ops = transforms, ops
        sys.modules.update(
            {
                "torchvision": tv,
                "torchvision.transforms": transforms,
                "torchvision.transforms.functional": functional,
                "torchvision.ops": ops,
                "torchvision.ops.boxes": boxes,
            }
        )


def official(repo: str):
    """The official package, importable without timm (only its TinyViT needs timm's helpers)."""
    install_stubs()
    sys.path.insert(0, repo)
    import mobile_sam

    return mobile_sam


def predict_case(pred, name: str):
    """The predictor's (masks, iou, low-res logits) for CASES[name] (here and in the tests)."""
    pts, labels, box, multi = CASES[name]
    return pred.predict(
        None if pts is None else np.array(pts),
        None if labels is None else np.array(labels),
        None if box is None else np.array(box),
        multimask_output=multi,
    )


def goldens(pred, image: np.ndarray, seed: int) -> dict:
    """What the tests compare with: samples of the embedding, and every case's IoU, low-res
    logits (sampled) and masks (bit-packed), from the official predictor `pred`."""
    with torch.no_grad():
        pred.set_image(image)
        emb = pred.get_image_embedding().numpy()
        out = {
            "seed": np.array(seed),
            "embedding_sample": emb[0, ::8, ::4, ::4],
            "embedding_l2": np.array(np.linalg.norm(emb)),
            "embedding_mean": np.array(emb.mean()),
        }
        for name in CASES:
            masks, iou, low = predict_case(pred, name)
            out[f"{name}_iou"] = iou
            out[f"{name}_low_sample"] = low[:, ::8, ::8]
            out[f"{name}_masks"] = np.packbits(masks, axis=-1)  # (n, H, ceil(W / 8)) bits
    return out


def main(repo: str, image_path: str) -> None:
    from PIL import Image

    ms = official(repo)
    sam = ms.sam_model_registry["vit_b"]()
    shapes = {k: tuple(v.shape) for k, v in sam.state_dict().items()}
    sam.load_state_dict(seeded_state_dict(shapes, SEED), strict=True)
    sam.eval()
    image = np.array(Image.open(image_path).convert("RGB"))
    out = goldens(ms.SamPredictor(sam), image, SEED)
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / "sam_vit_b_parity.npz", **out)
    with torch.device("meta"):
        vit_h = ms.sam_model_registry["vit_h"]()
    keys = {k: list(v.shape) for k, v in vit_h.state_dict().items()}
    (OUT / "sam_vit_h_keys.json").write_text(json.dumps(keys, sort_keys=True))
    print("wrote", OUT / "sam_vit_b_parity.npz", "and", OUT / "sam_vit_h_keys.json", f"({len(keys)} vit_h keys)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
