"""Object-aware detector against the official MobileSAMv2 pipeline (objectaware_parity fixture)."""

import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from conftest import OBJECTAWARE_FIXTURE, REPO_ROOT, require

CASES = [("c1024", 1024, 0.4), ("c640", 640, 0.25)]


@pytest.fixture(scope="session")
def det_cases():
    return np.load(require(OBJECTAWARE_FIXTURE / "cases.npz"))


@pytest.fixture(scope="session")
def det_image():
    return np.array(Image.open(require(OBJECTAWARE_FIXTURE / "image.png")).convert("RGB"))


@pytest.fixture(scope="session")
def det_ckpt():
    return require(OBJECTAWARE_FIXTURE / "objectaware_random.pt")


@pytest.fixture(scope="session")
def detector(det_ckpt):
    from mobilesam_web import ObjectAwareDetector

    return ObjectAwareDetector.from_checkpoint(det_ckpt)


def box_iou(a, b):
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def assert_boxes_match(boxes, scores, ref_boxes, ref_scores):
    """Fixture README: same count; each golden box (in order) takes an unused box with
    IoU >= 0.99, the one with the closest score; scores within 3e-4."""
    assert boxes.dtype == np.float32 and scores.dtype == np.float32
    assert len(boxes) == len(ref_boxes)
    iou = box_iou(ref_boxes, boxes)
    used = set()
    for i in range(len(ref_boxes)):
        cands = [j for j in np.nonzero(iou[i] >= 0.99)[0] if j not in used]
        assert cands, f"golden box {i} {ref_boxes[i]} has no match"
        j = min(cands, key=lambda j: abs(scores[j] - ref_scores[i]))
        assert abs(scores[j] - ref_scores[i]) <= 3e-4
        used.add(j)


def test_loads_without_ultralytics(det_ckpt):
    code = (
        "import sys; from mobilesam_web import ObjectAwareDetector; "
        f"d = ObjectAwareDetector.from_checkpoint({str(det_ckpt)!r}); "
        "assert not any(m.split('.')[0] == 'ultralytics' for m in sys.modules); print('ok')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_checkpoint_tensors_and_head(det_ckpt, detector):
    from mobilesam_web.engine.safe_unpickle import load_ultralytics_checkpoint, named_tensors

    ckpt = load_ultralytics_checkpoint(det_ckpt)
    assert ckpt["version"] == "8.0.120"
    assert len(dict(named_tensors(ckpt["model"]))) == 397
    head = detector.network.model[-1]
    assert head.reg_max == 26 and head.nm == 32 and head.nc == 1
    assert not hasattr(head, "proto")


@pytest.mark.parametrize("case,imgsz,conf", CASES)
def test_network_input_exact(det_image, det_cases, case, imgsz, conf):
    from mobilesam_web.everything.detector import network_input

    assert np.array_equal(network_input(det_image, imgsz), det_cases[f"{case}_input_u8"])


@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("case,imgsz,conf", CASES)
def test_head_output(det_ckpt, det_cases, case, imgsz, conf, fuse):
    from mobilesam_web import ObjectAwareDetector

    det = ObjectAwareDetector.from_checkpoint(det_ckpt, fuse=fuse)
    preds = det.raw(det_cases[f"{case}_input_u8"])
    ref = det_cases[f"{case}_preds0"][0]
    assert preds.shape == ref.shape
    assert np.abs(preds[:4] - ref[:4]).max() <= 0.1
    assert np.abs(preds[4] - ref[4]).max() <= 3e-4
    assert np.abs(preds[5:] - ref[5:]).max() <= 1e-3


@pytest.mark.parametrize("case,imgsz,conf", CASES)
def test_final_boxes(detector, det_image, det_cases, case, imgsz, conf):
    boxes, scores = detector(det_image, imgsz=imgsz, conf=conf, iou=0.9)
    assert_boxes_match(boxes, scores, det_cases[f"{case}_boxes_xyxy"], det_cases[f"{case}_conf"])


def test_postprocess_steps_on_official_head_output(det_cases):
    """NMS, border rule and rescaling alone, fed the official head output."""
    from mobilesam_web.everything.detector import postprocess

    boxes, scores = postprocess(det_cases["c640_preds0"][0], (448, 640), (600, 900), 0.25, 0.9)
    assert_boxes_match(boxes, scores, det_cases["c640_boxes_xyxy"], det_cases["c640_conf"])


@pytest.mark.parametrize("case,imgsz,conf", CASES)
def test_onnxruntime_path(det_ckpt, det_image, det_cases, tmp_path, case, imgsz, conf):
    from mobilesam_web import ObjectAwareDetector

    det = ObjectAwareDetector.from_checkpoint(det_ckpt).use_onnxruntime(cache_dir=tmp_path)
    boxes, scores = det(det_image, imgsz=imgsz, conf=conf, iou=0.9)
    assert_boxes_match(boxes, scores, det_cases[f"{case}_boxes_xyxy"], det_cases[f"{case}_conf"])
    assert list(tmp_path.glob("detector-*/detector.onnx"))


def _zip_with_pickle(path, payload: bytes):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", payload)
        z.writestr("evil/version", "3\n")
    return path


def test_refuses_code_execution(tmp_path):
    from mobilesam_web import ObjectAwareDetector
    from mobilesam_web.engine.safe_unpickle import UnsafeCheckpointError

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    ckpt = _zip_with_pickle(tmp_path / "evil.pt", pickle.dumps({"model": Evil()}, protocol=2))
    with pytest.raises(UnsafeCheckpointError, match=r"(posix|os)\.system"):
        ObjectAwareDetector.from_checkpoint(ckpt)
    assert not marker.exists()


def test_refuses_unexpected_global(tmp_path, det_ckpt):
    """The real checkpoint with one allowed class renamed to one outside the list."""
    from mobilesam_web import ObjectAwareDetector
    from mobilesam_web.engine.safe_unpickle import UnsafeCheckpointError

    src = zipfile.ZipFile(det_ckpt)
    out = tmp_path / "tampered.pt"
    with zipfile.ZipFile(out, "w") as z:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith("data.pkl"):
                data = data.replace(b"ultralytics.nn.modules.block\nSPPF", b"ultralytics.nn.modules.block\nC3TR")
                assert b"C3TR" in data
            z.writestr(name, data)
    with pytest.raises(UnsafeCheckpointError, match="ultralytics.nn.modules.block.C3TR"):
        ObjectAwareDetector.from_checkpoint(out)


def test_not_a_checkpoint(tmp_path):
    from mobilesam_web import CheckpointError, ObjectAwareDetector

    bad = tmp_path / "x.pt"
    bad.write_bytes(b"hello")
    with pytest.raises(CheckpointError, match="zip"):
        ObjectAwareDetector.from_checkpoint(bad)
    no_pickle = tmp_path / "y.pt"
    with zipfile.ZipFile(no_pickle, "w") as z:
        z.writestr("a/other.txt", "x")
    with pytest.raises(CheckpointError, match="data.pkl"):
        ObjectAwareDetector.from_checkpoint(no_pickle)


def test_detector_argument_checks(detector):
    img = np.zeros((20, 30, 3), np.uint8)
    with pytest.raises(ValueError, match="imgsz"):
        detector(img, imgsz=8)
    with pytest.raises(ValueError, match="conf"):
        detector(img, conf=1.5)
    boxes, scores = detector(img, conf=0.99)
    assert boxes.shape == (0, 4) and scores.shape == (0,)
