"""`mobilesam-web segment`: batch segmentation of a folder into COCO, resumable (fixture weights)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import MOBILESAM_FIXTURE, OBJECTAWARE_FIXTURE, REPO_ROOT, assert_masks_close, require

SAM_CKPT = MOBILESAM_FIXTURE / "weights_fp16.pt"
DET_CKPT = OBJECTAWARE_FIXTURE / "objectaware_random.pt"
# small detector input and few boxes: a few tenths of a second per image; one engine thread (the
# suite's two workers share two cores; the results compared below come from one thread too)
FAST = ["--imgsz", "320", "--conf", "0.25", "--max-det", "8", "--threads", "1"]


def make_folder(root: Path, n_extra: int = 0) -> Path:
    """a.png, c.png (crop of the other fixture), sub/b.png (flip), sub/deeper/d.png, bad.jpg
    (corrupt), notes.txt (ignored), and n_extra more flips/crops."""
    det = Image.open(require(OBJECTAWARE_FIXTURE / "image.png")).convert("RGB")
    sam = Image.open(require(MOBILESAM_FIXTURE / "image.png")).convert("RGB")
    (root / "sub" / "deeper").mkdir(parents=True)
    det.save(root / "a.png")
    sam.crop((100, 80, 700, 560)).save(root / "c.png")
    det.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "sub" / "b.png")
    det.transpose(Image.Transpose.FLIP_TOP_BOTTOM).crop((0, 0, 500, 700)).save(root / "sub" / "deeper" / "d.png")
    (root / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 20)
    (root / "notes.txt").write_text("not an image")
    for i in range(n_extra):
        im = det if i % 2 else sam
        im.rotate(90 * (i % 4), expand=True).crop((i * 10, 0, 560, 520)).save(root / f"extra{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def onnx_cache(shared_onnx_cache):
    return shared_onnx_cache


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("images"))


def everything_args(folder, out, onnx_cache) -> list:
    """The everything-mode run of these tests (PNGs and embeddings included)."""
    return [
        folder,
        "--out",
        out,
        "--detector-checkpoint",
        DET_CKPT,
        *FAST,
        "--onnx-cache",
        onnx_cache,
        "--png",
        "--embeddings",
    ]


def segment(*args) -> int:
    from mobilesam_web.cli import main

    return main(["segment", *map(str, args), "--checkpoint", str(SAM_CKPT), "--no-progress"])


@pytest.fixture(scope="module")
def everything_run(folder, onnx_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("out_everything")
    rc = segment(*everything_args(folder, out, onnx_cache))
    return rc, out


def test_everything_folder_to_coco(everything_run, folder, onnx_cache):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    from mobilesam_web import ObjectAwareDetector, SegmentEverything, load_predictor
    from mobilesam_web.data.image_io import read_image

    rc, out = everything_run
    assert rc == 1  # one corrupt file
    errors = json.loads((out / "errors.json").read_text())
    assert [e["file_name"] for e in errors] == ["bad.jpg"] and "could not be read" in errors[0]["error"]
    coco = COCO(str(out / "annotations.json"))
    names = [coco.imgs[i]["file_name"] for i in sorted(coco.imgs)]
    assert names == ["a.png", "c.png", "sub/b.png", "sub/deeper/d.png"]  # recursive, sorted, corrupt one left out
    assert len(coco.anns) > 0
    ids = [a["id"] for a in coco.dataset["annotations"]]
    assert ids == list(range(1, len(ids) + 1))

    predictor = load_predictor(SAM_CKPT, cache_dir=onnx_cache, threads=1)
    detector = ObjectAwareDetector.from_checkpoint(DET_CKPT)
    se = SegmentEverything(predictor, detector, imgsz=320, conf=0.25, max_det=8)
    for img_id in sorted(coco.imgs):
        info = coco.imgs[img_id]
        image = read_image(folder / info["file_name"]).image
        assert (info["height"], info["width"]) == image.shape[:2]
        records = se.generate(image)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
        assert len(anns) == len(records)
        for a, r in zip(anns, records):
            m = coco.annToMask(a).astype(bool)
            assert np.array_equal(m, r["segmentation"])  # the library's masks, exactly
            assert a["area"] == r["area"] == int(mask_utils.area(a["segmentation"]))
            assert a["bbox"] == r["bbox"] and a["prompt_box"] == r["prompt_box"]
            assert a["score"] == a["predicted_iou"] == pytest.approx(r["predicted_iou"])
            assert a["stability_score"] == pytest.approx(r["stability_score"])
        key = info["file_name"]
        # --png: label map and per-object masks; --embeddings: the SAM web demo's 1x256x64x64 float32
        labels = np.array(Image.open(out / "masks" / key / "labels.png"))
        for k, r in enumerate(records, 1):
            obj = np.array(Image.open(out / "masks" / key / f"{k}.png")) > 0
            assert np.array_equal(obj, r["segmentation"])
            assert (labels[r["segmentation"]] >= k).all()
        assert set(np.unique(labels)) <= set(range(len(records) + 1))
        emb = np.load(out / "embeddings" / f"{key}.npy")
        assert emb.shape == (1, 256, 64, 64) and emb.dtype == np.float32
        predictor.set_image(image)
        assert np.array_equal(emb, predictor.get_image_embedding())


def test_rerun_skips_and_refuses_other_options(everything_run, folder, onnx_cache, capsys):
    rc, out = everything_run
    before = (out / "annotations.json").read_bytes()
    stamps = {p: p.stat().st_mtime_ns for p in (out / "results").rglob("*.json")}
    assert len(stamps) == 4
    capsys.readouterr()
    rc2 = segment(*everything_args(folder, out, onnx_cache))
    assert rc2 == 1  # the corrupt file is tried again, and fails again
    log = capsys.readouterr()
    assert "4 images already done" in log.out + log.err
    assert {p: p.stat().st_mtime_ns for p in (out / "results").rglob("*.json")} == stamps
    assert (out / "annotations.json").read_bytes() == before
    # other result options into the same folder: refused, nothing touched
    rc3 = segment(
        folder, "--out", out, "--detector-checkpoint", DET_CKPT, *FAST[:2], "--conf", "0.3", "--onnx-cache", onnx_cache
    )
    assert rc3 == 2 and "conf" in capsys.readouterr().err
    assert (out / "annotations.json").read_bytes() == before


def test_resume_after_killed_run(tmp_path, onnx_cache):
    """Kill the job (SIGKILL) once its first image is written; the rerun skips the finished
    images and the final output equals a clean run's."""
    folder = make_folder(tmp_path / "in")  # 4 images: the kill lands with most of them to do
    (folder / "bad.jpg").unlink()
    cmd = [
        sys.executable,
        "-m",
        "mobilesam_web",
        "segment",
        str(folder),
        "--checkpoint",
        str(SAM_CKPT),
        "--detector-checkpoint",
        str(DET_CKPT),
        *FAST,
        "--onnx-cache",
        str(onnx_cache),
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [*cmd, "--out", str(killed)], env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.time() + 240
    while not list((killed / "results").glob("*.json")):
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.time() < deadline, "no result within 240 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "annotations.json").exists()
    done = sorted(p.relative_to(killed / "results") for p in (killed / "results").rglob("*.json"))
    assert 1 <= len(done) < 4
    stamps = {p: (killed / "results" / p).stat().st_mtime_ns for p in done}

    resumed = subprocess.run([*cmd, "--out", str(killed)], env=env, cwd=REPO_ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"{len(done)} images already done" in resumed.stdout + resumed.stderr
    assert {p: (killed / "results" / p).stat().st_mtime_ns for p in done} == stamps  # not redone

    clean = tmp_path / "clean"
    rc = segment(folder, "--out", clean, "--detector-checkpoint", DET_CKPT, *FAST, "--onnx-cache", onnx_cache)
    assert rc == 0
    assert (killed / "annotations.json").read_bytes() == (clean / "annotations.json").read_bytes()
    assert len(json.loads((clean / "annotations.json").read_text())["images"]) == 4


def test_boxes_mode_keeps_ids_and_categories(folder, onnx_cache, tmp_path):
    from pycocotools.coco import COCO

    from mobilesam_web import load_predictor
    from mobilesam_web.data.image_io import read_image

    boxes_a = [[100.0, 120.0, 400.0, 500.0], [10.0, 20.0, 200.0, 220.0]]
    boxes_b = [[300.0, 50.0, 590.0, 300.0]]
    prompts = {
        "images": [
            {"id": 5, "file_name": "a.png"},
            {"id": 6, "file_name": "sub/b.png"},
            {"id": 1, "file_name": "sub/deeper/d.png"},  # no annotations, an id a renumbering would give c.png
            {"id": 8, "file_name": "A.PNG"},  # matches nothing: the case differs (#22 item 5)
            {"id": 9, "file_name": "sub/e.png"},  # not in the folder at all
        ],
        "categories": [{"id": 3, "name": "cat"}, {"id": 4, "name": "dog"}],
        "annotations": [
            {"id": 70, "image_id": 5, "category_id": 3, "bbox": [100, 120, 300, 380]},
            {"id": 71, "image_id": 5, "category_id": 4, "bbox": [10, 20, 190, 200]},
            {"id": 90, "image_id": 6, "category_id": 3, "bbox": [300, 50, 290, 250]},
            {"id": 91, "image_id": 8, "category_id": 3, "bbox": [1, 1, 5, 5]},
        ],
    }
    pfile = tmp_path / "prompts.json"
    pfile.write_text(json.dumps(prompts))
    out = tmp_path / "out"
    assert (
        segment(
            folder, "--out", out, "--mode", "boxes", "--prompts", pfile, "--threads", "1", "--onnx-cache", onnx_cache
        )
        == 1
    )  # bad.jpg, and two prompt keys that match no image
    coco = COCO(str(out / "annotations.json"))
    assert coco.dataset["categories"] == prompts["categories"]
    by_name = {im["file_name"]: im["id"] for im in coco.dataset["images"]}
    assert set(by_name) == {"a.png", "c.png", "sub/b.png", "sub/deeper/d.png"}
    # the prompts file's image ids are kept; an image it does not list gets a free one
    assert by_name["a.png"] == 5 and by_name["sub/b.png"] == 6 and by_name["sub/deeper/d.png"] == 1
    assert by_name["c.png"] not in (1, 5, 6, 8, 9) and len(set(by_name.values())) == 4
    errors = json.loads((out / "errors.json").read_text())
    unmatched = {e["prompt_key"]: e for e in errors if "prompt_key" in e}
    assert set(unmatched) == {"A.PNG", "sub/e.png"}
    assert unmatched["A.PNG"]["did_you_mean"] == "a.png" and "did you mean 'a.png'" in unmatched["A.PNG"]["error"]
    assert [e["file_name"] for e in errors if "file_name" in e] == ["bad.jpg"]
    assert coco.getAnnIds(imgIds=[by_name["c.png"]]) == []  # no prompts: no masks
    predictor = load_predictor(SAM_CKPT, cache_dir=onnx_cache, threads=1)
    for name, boxes, ids, cats in (("a.png", boxes_a, [70, 71], [3, 4]), ("sub/b.png", boxes_b, [90], [3])):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[by_name[name]]))
        assert [a["id"] for a in anns] == ids and [a["category_id"] for a in anns] == cats
        assert [a["prompt_box"] for a in anns] == boxes
        predictor.set_image(read_image(folder / name).image)
        ref, iou, _ = predictor.predict_boxes(np.array(boxes))
        ours = np.stack([coco.annToMask(a).astype(bool) for a in anns])
        assert_masks_close(ours, ref[:, 0])
        assert [a["predicted_iou"] for a in anns] == pytest.approx(iou[:, 0].tolist(), abs=1e-6)


def test_text_file_input_boxes_dict_and_grid(folder, onnx_cache, tmp_path):
    """INPUT as a list of paths (relative to the list, absolute, missing); boxes as a plain dict;
    then grid mode on the same list, masks equal to the library's grid generator (on the
    embeddings the run saved)."""
    import torch
    from pycocotools.coco import COCO

    from mobilesam_web import SamAutomaticMaskGenerator, SamPredictor, load_mobile_sam
    from mobilesam_web.data.image_io import read_image

    listing = folder / "list.txt"
    listing.write_text(f"# images\nsub/b.png\n\n{folder / 'c.png'}\nmissing.png\n")
    pfile = tmp_path / "p.json"
    pfile.write_text(json.dumps({"sub/b.png": [[10, 10, 300, 400]], "c.png": [[5, 5, 200, 100], [50, 60, 400, 300]]}))
    out = tmp_path / "boxes"
    assert (
        segment(
            listing, "--out", out, "--mode", "boxes", "--prompts", pfile, "--threads", "1", "--onnx-cache", onnx_cache
        )
        == 1
    )
    errors = json.loads((out / "errors.json").read_text())
    assert [e["file_name"] for e in errors] == ["missing.png"] and "not found" in errors[0]["error"]
    coco = COCO(str(out / "annotations.json"))
    assert [im["file_name"] for im in coco.dataset["images"]] == ["sub/b.png", "c.png"]  # list order kept
    assert [a["id"] for a in coco.dataset["annotations"]] == [1, 2, 3]
    assert [a["prompt_box"] for a in coco.dataset["annotations"]] == [
        [10, 10, 300, 400],
        [5, 5, 200, 100],
        [50, 60, 400, 300],
    ]

    out = tmp_path / "grid"
    assert (
        segment(
            listing,
            "--out",
            out,
            "--mode",
            "grid",
            "--points-per-side",
            "4",
            "--pred-iou-thresh",
            "0",
            "--stability-thresh",
            "0",
            "--threads",
            "2",
            "--embeddings",
            "--onnx-cache",
            onnx_cache,
        )
        == 1
    )
    coco = COCO(str(out / "annotations.json"))

    class SavedEmbedding(SamPredictor):
        """The library's torch predictor on the embedding the run saved (--embeddings): equal
        masks then also say that the saved file is the embedding the run segmented with."""

        def set_image(self, image, image_format="RGB"):
            emb = np.load(out / "embeddings" / f"{name}.npy")
            assert emb.shape == (1, 256, 64, 64) and emb.dtype == np.float32 and np.isfinite(emb).all()
            self.set_embedding(torch.from_numpy(emb), image.shape[:2])

    gen = SamAutomaticMaskGenerator(
        SavedEmbedding(load_mobile_sam(SAM_CKPT)), points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0
    )
    total = 0
    for im in coco.dataset["images"]:
        name = im["file_name"]
        records = gen.generate(read_image(folder / name).image)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[im["id"]]))
        assert len(anns) == len(records)
        for a, r in zip(anns, records):
            assert np.array_equal(coco.annToMask(a).astype(bool), r["segmentation"])
            assert a["point_coords"] == [[float(v) for v in p] for p in r["point_coords"]]
        total += len(anns)
    assert total > 0


def test_bad_input_and_ray_missing(tmp_path, capsys):
    assert segment(tmp_path / "nope", "--out", tmp_path / "o") == 2
    assert "neither a folder" in capsys.readouterr().err
    assert segment(tmp_path, "--out", tmp_path / "o", "--mode", "boxes") == 2
    assert "--prompts" in capsys.readouterr().err
    # without Ray installed, --ray says how to install it and fails
    code = (
        "import sys; sys.modules['ray'] = None; from mobilesam_web.cli import main; "
        f"sys.exit(main(['segment', {str(tmp_path)!r}, '--out', {str(tmp_path / 'o')!r}, '--ray']))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert r.returncode == 2 and "pip install 'mobilesam-web[ray]'" in r.stderr


def test_progress_bar_on_a_terminal_and_log_lines_otherwise():
    import io

    from mobilesam_web.batch.run import Progress

    ok = {"file_name": "a.png", "annotations": [{}, {}]}
    bad = {"file_name": "b.png", "error": "the file is empty (0 bytes)"}
    tty = io.StringIO()
    p = Progress(2, skipped=3, tty=True, stream=tty)
    p.update(ok)
    p.update(bad)
    text = tty.getvalue()
    assert "3 images already done" in text
    assert "\r[###############...............] 1/2 images" in text and "img/s, ETA" in text
    assert "2/2 images" in text and "1 failed" in text and text.endswith("\n")
    log = io.StringIO()
    p = Progress(2, skipped=0, tty=False, stream=log)
    p.update(ok)
    p.update(bad)
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in log.getvalue()
    assert lines[0].endswith("a.png: 2 objects") and "1/2 images" in lines[0]
    assert lines[1].endswith("b.png: FAILED: the file is empty (0 bytes)")
