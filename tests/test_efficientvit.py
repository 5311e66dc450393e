"""EfficientViT-SAM's encoders and MobileSAMv2's checkpoint formats.

EfficientViT-SAM-L2 with MobileSAMv2's prompt-guided decoder reproduces the official MobileSAMv2
code (tests/fixtures/efficientvit_l2_parity.npz, made by scripts/make_efficientvit_fixture.py from
`l2.pt` and `Prompt_guided_Mask_Decoder.pt` files of seeded weights) on both backends; L0/L1/L2
have the official classes' names and shapes; every checkpoint layout is recognised."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mobilesam_web import CheckpointError, load_predictor, sam_model_registry
from mobilesam_web.engine.build import EncoderOnlyError, build_sam, model_type_of
from mobilesam_web.engine.modeling import build_image_encoder

from conftest import MOBILESAM_FIXTURE
from parity_checks import FIXTURES, check_against_official, encoder_weights, write_efficientvit_files


@pytest.fixture(scope="module")
def golden():
    return np.load(FIXTURES / "efficientvit_l2_parity.npz")


@pytest.fixture(scope="module")
def image():
    return np.array(Image.open(MOBILESAM_FIXTURE / "image.png").convert("RGB"))


@pytest.fixture(scope="module")
def files(tmp_path_factory, golden):
    """MobileSAMv2's l2.pt and Prompt_guided_Mask_Decoder.pt, and EfficientViT-SAM's whole-model
    efficientvit_sam_l2.pt, of the golden's seeded weights (made again here)."""
    return write_efficientvit_files(tmp_path_factory.mktemp("efficientvit"), int(golden["seed"]))


def test_l2_torch_equals_the_official_mobilesamv2(files, golden, image):
    pred = load_predictor(files / "l2.pt", backend="torch", decoder_checkpoint=files / "Prompt_guided_Mask_Decoder.pt")
    check_against_official(pred, golden, image)


def test_l2_onnx_equals_the_official_mobilesamv2(files, golden, image, shared_onnx_cache):
    # the run's shared cache: the same seeded files' graphs serve the app and batch tests too
    pred = load_predictor(
        files / "l2.pt",
        cache_dir=shared_onnx_cache,
        decoder_checkpoint=files / "Prompt_guided_Mask_Decoder.pt",
    )
    check_against_official(pred, golden, image)


def test_whole_model_checkpoint_brings_its_own_decoder(files, golden, image):
    check_against_official(load_predictor(files / "efficientvit_sam_l2.pt", backend="torch"), golden, image)


def test_encoder_only_checkpoint_needs_a_decoder(files):
    with pytest.raises(EncoderOnlyError, match=r"only an image encoder \(EfficientViT-SAM-L2\).*--decoder-checkpoint"):
        build_sam(files / "l2.pt")


def test_l0_l1_l2_have_the_official_names_and_shapes():
    ref = json.loads((FIXTURES / "efficientvit_keys.json").read_text())
    for size, keys in ref.items():
        with torch.device("meta"):
            ours = {k: list(v.shape) for k, v in build_image_encoder(f"efficientvit_{size}").state_dict().items()}
        assert ours == keys, size
        assert model_type_of({k: torch.empty(v, device="meta") for k, v in keys.items()}) == f"efficientvit_{size}"
        with torch.device("meta"):
            whole = sam_model_registry[f"efficientvit_{size}"]()
        assert whole.image_encoder.model_type == f"efficientvit_{size}"


def test_mobilesamv2_encoder_only_vit(tmp_path, files):
    """MobileSAMv2's sam_vit_h.pt is a bare ImageEncoderViT state dict: recognised by its shapes;
    with the prompt-guided decoder it loads as the ViT's own encoder, every tensor equal to the
    file's (ViT-B's fixture weights here: test_sam_vit checks that encoder, with these weights,
    against the official code's embedding)."""
    vit_h = json.loads((FIXTURES / "sam_vit_h_keys.json").read_text())
    bare = {
        k.split(".", 1)[1]: torch.empty(v, device="meta") for k, v in vit_h.items() if k.startswith("image_encoder.")
    }
    assert model_type_of(bare) == "vit_h"
    vit_b = np.load(FIXTURES / "sam_vit_b_parity.npz")
    weights = encoder_weights("vit_b", int(vit_b["seed"]))
    torch.save({k.split(".", 1)[1]: v for k, v in weights.items()}, tmp_path / "sam_vit_b_encoder.pt")
    pred = load_predictor(
        tmp_path / "sam_vit_b_encoder.pt", backend="torch", decoder_checkpoint=files / "Prompt_guided_Mask_Decoder.pt"
    )
    assert pred.model.image_encoder.model_type == "vit_b"
    loaded = pred.model.image_encoder.state_dict()
    assert set(loaded) == {k.split(".", 1)[1] for k in weights}
    for k, v in weights.items():
        assert torch.equal(loaded[k.split(".", 1)[1]], v), k


def test_unrecognised_file_names_what_it_found(tmp_path):
    odd = tmp_path / "odd.pt"
    torch.save({"state_dict": {"backbone.stages.0.op_list.0.conv.weight": torch.zeros(8, 3, 3, 3)}}, odd)
    with pytest.raises(CheckpointError, match=r"keys under backbone.*Accepted:.*EfficientViT-SAM.*l2.pt"):
        build_sam(odd)
