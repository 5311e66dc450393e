"""A non-TinyViT encoder on every surface: the app (segment and everything tabs, the page's
config), `mobilesam-web segment`, `export-site`, `--model NAME`, progress for slow encoders, and
ONNX graphs whose weights live in an external file (SAM ViT-H's encoder is over 2 GiB).

The model is MobileSAMv2's EfficientViT-SAM-L2 from its encoder-only `l2.pt` with the
prompt-guided decoder, seeded as in tests/fixtures/efficientvit_l2_parity.npz (the official
code's outputs): the app's embedding is checked against that golden."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mobilesam_web.engine.checkpoints import WeightsUnavailableError, resolve_model
from mobilesam_web.ui import everything_tab, segment_tab
from mobilesam_web.ui.app import model_line
from mobilesam_web.ui.context import AppContext
from mobilesam_web.ui.encode_progress import with_encode_progress
from mobilesam_web.ui.services import AppConfig, load_services
from mobilesam_web.ui.web import BrowserAssets, EmbeddingStore

from conftest import MOBILESAM_FIXTURE, OBJECTAWARE_FIXTURE
from parity_checks import FIXTURES, efficientvit_seed, relative_l2, write_efficientvit_files

DETECTOR = OBJECTAWARE_FIXTURE / "objectaware_random.pt"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_efficientvit_files(tmp_path_factory.mktemp("l2"), efficientvit_seed())


@pytest.fixture(scope="module")
def cache(shared_onnx_cache):
    return Path(shared_onnx_cache)


@pytest.fixture(scope="module")
def services(files, cache):
    s = load_services(
        AppConfig(
            checkpoint=str(files / "l2.pt"),
            decoder_checkpoint=str(files / "Prompt_guided_Mask_Decoder.pt"),
            detector_checkpoint=str(DETECTOR),
            onnx_cache_dir=str(cache),
        ),
        log=lambda s: None,
    )
    assert s.ready, s.sam_error
    return s


def no_progress(*args, **kwargs):
    return None


def uploaded(tmp_path, monkeypatch, src, name):
    folder = tmp_path / "gradio-uploads"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    dst = folder / "abc" / name
    dst.parent.mkdir(parents=True)
    shutil.copy(src, dst)
    return str(dst)


def test_the_app_runs_an_encoder_only_checkpoint_and_says_which(services, tmp_path, monkeypatch):
    assert services.model_type == "efficientvit_l2" and services.model_name == "EfficientViT-SAM-L2"
    # the encoder-only file has no decoder of its own: clicks use the prompt-guided one too
    assert services.everything_engine is None and services.engine.paths["encoder"].parent.name.endswith("-v2")
    ctx = AppContext(services=services, store=EmbeddingStore(), config=services.config, browser_available=True)
    path = uploaded(tmp_path, monkeypatch, MOBILESAM_FIXTURE / "image.png", "photo.png")
    session = segment_tab.on_upload(ctx, path, True, progress=no_progress)[0]
    golden = np.load(FIXTURES / "efficientvit_l2_parity.npz")
    assert relative_l2(session.embedding[0, ::8, ::4, ::4], golden["embedding_sample"]) <= 1e-5
    assert "Model: **EfficientViT-SAM-L2**" in model_line(services)
    config = BrowserAssets(services).config()
    assert config["model"] == {"type": "efficientvit_l2", "name": "EfficientViT-SAM-L2"}
    assert config["encoder"] is None and config["decoder"] is not None
    assert "EfficientViT-SAM-L2's encoder is" in config["encoder_off"] and "64 MB" in config["encoder_off"]


def test_the_everything_tab_end_to_end(services, tmp_path, monkeypatch):
    ctx = AppContext(services=services, store=EmbeddingStore(), config=services.config, browser_available=True)
    path = uploaded(tmp_path, monkeypatch, OBJECTAWARE_FIXTURE / "image.png", "street.png")
    # detector confidence 0.9: 28 boxes of the street photo to decode, not 137 at 0.4
    out = everything_tab.on_everything(ctx, path, 0.9, 0.9, 1024, 0, 0, False, None, progress=no_progress)
    shown, md, files, run = out[:4]
    assert run.objects > 10 and shown.shape == (600, 900, 3)
    coco = json.load(open(next(p for p in files["value"] if p.endswith(".json"))))
    assert len(coco["annotations"]) == run.objects


def test_an_encoder_only_checkpoint_without_decoder_says_what_to_add(files, cache):
    s = load_services(AppConfig(checkpoint=str(files / "l2.pt"), onnx_cache_dir=str(cache)), log=lambda s: None)
    assert not s.ready and "only an image encoder (EfficientViT-SAM-L2)" in s.sam_error
    assert "--decoder-checkpoint" in s.sam_error


def test_segment_command_with_the_l2_encoder(files, cache, tmp_path):
    from mobilesam_web.cli import main

    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(OBJECTAWARE_FIXTURE / "image.png", images / "street.png")
    Image.open(MOBILESAM_FIXTURE / "image.png").save(images / "photo.jpg")
    rc = main(
        [
            "segment",
            str(images),
            "--out",
            str(tmp_path / "out"),
            "--checkpoint",
            str(files / "l2.pt"),
            "--decoder-checkpoint",
            str(files / "Prompt_guided_Mask_Decoder.pt"),
            "--detector-checkpoint",
            str(DETECTOR),
            "--onnx-cache",
            str(cache),
            "--no-progress",
            # 12 boxes an image: the random weights' masks are noise, hundreds of them would
            # make a 180 MB annotations.json (their polygons) and a minute of writing it
            "--max-det",
            "12",
        ]
    )
    assert rc == 0
    coco = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == ["photo.jpg", "street.png"]
    assert len([a for a in coco["annotations"] if a["image_id"] == 2]) == 12


def test_export_site_refuses_an_encoder_a_browser_cant_hold(files, cache, tmp_path, monkeypatch):
    from mobilesam_web.site import SiteError, export_site

    monkeypatch.setenv("MOBILESAM_ONNX_CACHE", str(cache))
    out = tmp_path / "site"
    with pytest.raises(SiteError, match=r"EfficientViT-SAM-L2's encoder is \d+ MB.*--model mobile_sam"):
        export_site(out, files / "l2.pt", decoder_checkpoint=files / "Prompt_guided_Mask_Decoder.pt")
    assert not out.exists()  # refused before anything was written


def test_named_models_download_or_say_how(files, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for var in ("MOBILESAM_MOBILESAMV2_L2", "MOBILESAMV2_DECODER", "MOBILESAM_SAM_VIT_H"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(WeightsUnavailableError, match=r"'l2.pt'.*RogerQi/MobileSAMV2.*MOBILESAM_MOBILESAMV2_L2=PATH"):
        resolve_model("mobilesamv2_l2")
    with pytest.raises(WeightsUnavailableError, match=r"sam_vit_h_4b8939.pth.*MOBILESAM_SAM_VIT_H=PATH"):
        resolve_model("sam_vit_h")
    monkeypatch.setenv("MOBILESAM_MOBILESAMV2_L2", str(files / "l2.pt"))
    monkeypatch.setenv("MOBILESAMV2_DECODER", str(files / "Prompt_guided_Mask_Decoder.pt"))
    assert resolve_model("mobilesamv2_l2") == (files / "l2.pt", files / "Prompt_guided_Mask_Decoder.pt")
    with pytest.raises(ValueError, match="unknown model 'vit_z'.*efficientvit_sam_l2"):
        resolve_model("vit_z")


def test_a_slow_encoder_shows_a_moving_fraction():
    import time

    class Slow:
        model_name = "SAM ViT-H"

        def encode_estimate(self):
            return 3.0

    seen = []
    result = with_encode_progress(
        Slow(), lambda frac, desc="": seen.append((frac, desc)), lambda: time.sleep(0.8) or "done"
    )
    assert result == "done" and len(seen) >= 3
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and 0 < fractions[-1] < 0.97
    assert "SAM ViT-H (about 3 s on this server)" in seen[0][1]

    class Fast(Slow):
        def encode_estimate(self):
            return 0.5

    seen.clear()
    with pytest.raises(ZeroDivisionError):  # an error in the encoder reaches the handler
        with_encode_progress(Slow(), lambda *a, **k: None, lambda: 1 / 0)
    with_encode_progress(Fast(), lambda frac, desc="": seen.append((frac, desc)), lambda: None)
    assert seen == [(0.1, "encoding image")]


def test_graphs_over_the_limit_keep_their_weights_in_one_external_file(
    sam_weights_path, sam_image, sam_cases, tmp_path, monkeypatch
):
    """SAM ViT-H's encoder is 2.5 GB, over protobuf's 2 GiB: forced here on TinyViT (same code path)."""
    from mobilesam_web import load_predictor
    from mobilesam_web.engine.onnx import exporters
    from mobilesam_web.engine.onnx.cache import cached_exports, read_manifest

    monkeypatch.setattr(exporters, "EXTERNAL_DATA_BYTES", 1 << 20)
    # The export's own check against torch (a TinyViT encode in each, twice here) is left out: the
    # embedding is compared with the official one below.
    monkeypatch.setattr("mobilesam_web.engine.onnx.export.verify_exports", lambda model, paths: {})
    paths = cached_exports(sam_weights_path, tmp_path, graphs=("encoder",))
    data = paths["encoder"].with_name("encoder.onnx.data")
    assert data.is_file() and data.stat().st_size > 20e6 and paths["encoder"].stat().st_size < 2e6
    assert sorted(p.name for p in paths["encoder"].parent.iterdir()) == [
        ".lock",
        "encoder.onnx",
        "encoder.onnx.data",
        "manifest.json",
    ]
    assert read_manifest(paths["encoder"].parent)["external_data_bytes"] == {"encoder": data.stat().st_size}
    onnx_pred = load_predictor(sam_weights_path, cache_dir=tmp_path)
    onnx_pred.set_image(sam_image)
    assert relative_l2(onnx_pred.get_image_embedding(), sam_cases["embedding"]) <= 1e-5
    data.write_bytes(b"")  # a damaged weights file is noticed and the graph exported again
    logs = []
    cached_exports(sam_weights_path, tmp_path, graphs=("encoder",), log=logs.append)
    assert any("encoder.onnx.data is missing or has another size" in line for line in logs)
    assert data.stat().st_size > 20e6


def test_export_command_with_an_encoder_and_the_prompt_guided_decoder(files, tmp_path, capsys):
    from mobilesam_web.cli import main
    from mobilesam_web.engine.onnx.cache import read_manifest, weights_key

    out = tmp_path / "onnx"
    args = ["export", "--checkpoint", str(files / "l2.pt"), "--graphs", "decoder_boxes", "--out", str(out)]
    assert main(args) == 2 and "only an image encoder" in capsys.readouterr().err
    decoder = str(files / "Prompt_guided_Mask_Decoder.pt")
    assert main(args + ["--decoder-checkpoint", decoder]) == 0
    manifest = read_manifest(out)
    assert manifest["model_type"] == "efficientvit_l2" and sorted(manifest["files"]) == ["decoder_boxes"]
    assert manifest["source_checkpoint_sha256"] == weights_key(files / "l2.pt", decoder)
