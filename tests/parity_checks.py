"""Comparing a predictor with goldens the official code made (scripts/make_*_fixture.py), within
the MobileSAM fixture manifest's tolerances: embedding <= 1e-5 relative L2, masks <= 0.01% of
pixels, IoU predictions <= 1e-4."""

import sys

import numpy as np

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
from make_vit_fixture import CASES, predict_case  # noqa: E402
from seeded_weights import seeded_state_dict  # noqa: E402,F401  (for the tests)

FIXTURES = REPO_ROOT / "tests" / "fixtures"


def relative_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def check_against_official(pred, golden, image) -> None:
    pred.set_image(image)
    emb = np.asarray(pred.get_image_embedding())
    assert relative_l2(emb[0, ::8, ::4, ::4], golden["embedding_sample"]) <= 1e-5
    assert abs(np.linalg.norm(emb) - float(golden["embedding_l2"])) <= 1e-5 * float(golden["embedding_l2"])
    for name in CASES:
        masks, iou, low = predict_case(pred, name)
        np.testing.assert_allclose(iou, golden[f"{name}_iou"], atol=1e-4, err_msg=name)
        ref = np.unpackbits(golden[f"{name}_masks"], axis=-1)[..., : masks.shape[-1]].astype(bool)
        assert ref.shape == masks.shape
        assert (masks != ref).mean() <= 1e-4, (name, int((masks != ref).sum()))
        assert relative_l2(low[:, ::8, ::8], golden[f"{name}_low_sample"]) <= 1e-4, name


def encoder_weights(model_type: str, seed: int) -> dict:
    """Seeded weights under the whole-model names ("image_encoder.*"), as the generators make them."""
    import torch

    from mobilesam_web.engine.modeling import build_image_encoder

    with torch.device("meta"):
        shapes = {f"image_encoder.{k}": tuple(v.shape) for k, v in build_image_encoder(model_type).state_dict().items()}
    return seeded_state_dict(shapes, seed)


def decoder_weights(seed: int) -> dict:
    """{"PromtEncoder": sd, "MaskDecoder": sd}: MobileSAMv2's Prompt_guided_Mask_Decoder.pt layout."""
    import torch

    from mobilesam_web.engine.modeling import build_sam_model

    model = build_sam_model("vit_t", torch.nn.Identity())
    out = {}
    for part, module in (("PromtEncoder", model.prompt_encoder), ("MaskDecoder", model.mask_decoder)):
        weights = seeded_state_dict({f"{part}.{k}": tuple(v.shape) for k, v in module.state_dict().items()}, seed)
        out[part] = {k.split(".", 1)[1]: v for k, v in weights.items()}
    return out


def write_efficientvit_files(folder, seed: int):
    """MobileSAMv2's l2.pt and Prompt_guided_Mask_Decoder.pt, and EfficientViT-SAM's whole-model
    efficientvit_sam_l2.pt with the same weights (its own decoder = the prompt-guided one)."""
    import torch

    encoder, decoder = encoder_weights("efficientvit_l2", seed), decoder_weights(seed)
    torch.save({"state_dict": encoder}, folder / "l2.pt")
    torch.save(decoder, folder / "Prompt_guided_Mask_Decoder.pt")
    whole = dict(encoder)
    whole.update({f"prompt_encoder.{k}": v for k, v in decoder["PromtEncoder"].items()})
    whole.update({f"mask_decoder.{k}": v for k, v in decoder["MaskDecoder"].items()})
    torch.save({"state_dict": whole}, folder / "efficientvit_sam_l2.pt")
    return folder


def efficientvit_seed() -> int:
    return int(np.load(FIXTURES / "efficientvit_l2_parity.npz")["seed"])
