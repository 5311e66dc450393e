"""Make tests/fixtures/efficientvit_l2_parity.npz and efficientvit_keys.json with the OFFICIAL code.

MobileSAMv2's own pipeline (its Inference.py): the EfficientViT-SAM-L2 image encoder built by
`build_efficientvit_l2_encoder` from an `l2.pt` file ({"state_dict": {"image_encoder.*": ...}}),
the prompt-guided decoder built by `build_PromptGuidedDecoder` from a
`Prompt_guided_Mask_Decoder.pt` file, both put into a SAM shell and run by its SamPredictor.
Run once, in a throwaway environment beside a snapshot of the official repository; never a
dependency:

    git clone https://github.com/ChaoningZhang/MobileSAM /tmp/MobileSAM   # (or a snapshot of it)
    python scripts/make_efficientvit_fixture.py /tmp/MobileSAM ../shared/fixtures/mobilesam_parity/image.png

Both files are written from scripts/seeded_weights.py (SEED below) in the official formats; the
tests write them again. L0/L1: the official classes at EfficientViT-SAM's sizes (backbone depths
from MobileSAMv2's backbone.py, neck depths 4 and 8 from EfficientViT-SAM's sam.py) give the key
names and shapes our builder must match.
"""

import json
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_vit_fixture import goldens, install_stubs  # noqa: E402
from seeded_weights import seeded_state_dict  # noqa: E402

SEED = 20261207
OUT = HERE.parent / "tests" / "fixtures"
NECK_DEPTHS = {"l0": 4, "l1": 8, "l2": 12}


def official_encoder(name: str):
    """The official EfficientViT-SAM encoder at size `name` ("l0", "l1", "l2"), random weights."""
    from efficientvit.models.efficientvit import backbone as bb
    from efficientvit.models.efficientvit.sam import EfficientViTSamImageEncoder, SamNeck
    from efficientvit.models.nn.norm import set_norm_eps

    backbone = getattr(bb, f"efficientvit_backbone_{name}")(qkv_dim=32, norm="bn2d", act_func="gelu")
    neck = SamNeck(["stage4", "stage3", "stage2"], [512, 256, 128], 256, NECK_DEPTHS[name], 1, "fmbconv", 256)
    encoder = EfficientViTSamImageEncoder(backbone, neck)
    set_norm_eps(encoder, 1e-6)
    return encoder


def write_checkpoints(folder: Path):
    """l2.pt and Prompt_guided_Mask_Decoder.pt in the official formats, seeded weights."""
    from mobilesamv2.build_sam import build_PromptGuidedDecoder

    encoder_shapes = {f"image_encoder.{k}": tuple(v.shape) for k, v in official_encoder("l2").state_dict().items()}
    torch.save({"state_dict": seeded_state_dict(encoder_shapes, SEED)}, folder / "l2.pt")
    parts = build_PromptGuidedDecoder(None)
    decoder = {}
    for part, module in parts.items():
        shapes = {f"{part}.{k}": tuple(v.shape) for k, v in module.state_dict().items()}
        weights = seeded_state_dict(shapes, SEED)
        decoder[part] = {k.split(".", 1)[1]: v for k, v in weights.items()}
    torch.save(decoder, folder / "Prompt_guided_Mask_Decoder.pt")


def main(repo: str, image_path: str) -> None:
    from PIL import Image

    install_stubs()
    # Only training code (torchpack, ...) sits behind this import; inference never uses it.
    sys.modules["efficientvit.models.nn.drop"] = types.ModuleType("efficientvit.models.nn.drop")
    sys.path.insert(0, str(Path(repo) / "MobileSAMv2"))
    from mobilesamv2 import SamPredictor, sam_model_registry

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_checkpoints(folder)
        model = sam_model_registry["vit_b"]()  # the shell; all three parts are replaced below
        parts = sam_model_registry["PromptGuidedDecoder"](str(folder / "Prompt_guided_Mask_Decoder.pt"))
        model.prompt_encoder, model.mask_decoder = parts["PromtEncoder"], parts["MaskDecoder"]
        model.image_encoder = sam_model_registry["efficientvit_l2"](str(folder / "l2.pt"))
    image = np.array(Image.open(image_path).convert("RGB"))
    out = goldens(SamPredictor(model.eval()), image, SEED)
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / "efficientvit_l2_parity.npz", **out)
    keys = {n: {k: list(v.shape) for k, v in official_encoder(n).state_dict().items()} for n in NECK_DEPTHS}
    (OUT / "efficientvit_keys.json").write_text(json.dumps(keys, sort_keys=True))
    print("wrote", OUT / "efficientvit_l2_parity.npz", "and", OUT / "efficientvit_keys.json")


if __name__ == "__main__":
    main(*sys.argv[1:3])
