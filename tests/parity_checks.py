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
