"""`mobilesam-web eval`: polygons rasterised as the COCO API does, and class-agnostic mask AR@K
equal to pycocotools' COCOeval(useCats=0, iouType="segm") on synthetic data."""

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mobilesam_web.data.polygons import polygons_to_mask
from mobilesam_web.data.rle import mask_to_coco_rle
from mobilesam_web.evaluate import AREA_RANGES, mask_average_recall

from conftest import REPO_ROOT


def random_polygon(rng, h, w, n=None):
    n = n or int(rng.integers(3, 12))
    cy, cx = rng.uniform(-0.1, 1.1) * h, rng.uniform(-0.1, 1.1) * w
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(0.5, 1.0, n) * rng.uniform(2, max(h, w) / 2)
    pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
    if rng.random() < 0.3:
        pts = rng.permutation(pts)  # self-intersecting
    return [round(float(v), 2) for v in pts.ravel()]


@pytest.mark.parametrize("seed", range(6))
def test_polygons_rasterise_as_pycocotools(seed):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(5, 120)), int(rng.integers(5, 120))
    for _ in range(20):
        polys = [random_polygon(rng, h, w) for _ in range(int(rng.integers(1, 3)))]
        ref = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, h, w))).astype(bool)
        ours = polygons_to_mask(polys, h, w)
        assert (ours == ref).all(), (polys, h, w, int((ours != ref).sum()))


def blob(rng, h, w, size):
    yy, xx = np.mgrid[:h, :w]
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    ry, rx = size * rng.uniform(0.6, 1.4), size * rng.uniform(0.6, 1.4)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def synthetic(seed: int):
    """Ground truth of all sizes (RLE, polygons, one crowd region) and predictions near it,
    far from it, duplicated, and more than the smallest K per image."""
    rng = np.random.default_rng(seed)
    images, gts, preds = [], [], []
    for image_id in (3, 7, 11):
        h, w = int(rng.integers(150, 220)), int(rng.integers(150, 220))
        images.append({"id": image_id, "file_name": f"im{image_id}.png", "height": h, "width": w})
        masks = []
        for k in range(int(rng.integers(4, 9))):
            m = blob(rng, h, w, [4, 12, 40, 70][k % 4])
            if not m.any():
                continue
            masks.append(m)
            ann = {
                "id": len(gts) + 1,
                "image_id": image_id,
                "category_id": 1 + k % 2,
                "area": float(m.sum()),
                "iscrowd": 0,
            }
            if k % 3 == 2:  # a polygon ground truth
                poly = random_polygon(rng, h, w, 8)
                ann["segmentation"] = [poly]
                ann["area"] = float(polygons_to_mask([poly], h, w).sum())
                masks[-1] = polygons_to_mask([poly], h, w)
                if ann["area"] == 0:
                    masks.pop()
                    continue
            else:
                ann["segmentation"] = mask_to_coco_rle(m)
            gts.append(ann)
        crowd = blob(rng, h, w, 30)
        gts.append(
            {
                "id": len(gts) + 1,
                "image_id": image_id,
                "category_id": 1,
                "segmentation": mask_to_coco_rle(crowd),
                "area": float(crowd.sum()),
                "iscrowd": 1,
            }
        )
        for m in masks + [crowd]:
            for _ in range(int(rng.integers(1, 4))):
                shifted = np.roll(m, (int(rng.integers(-4, 5)), int(rng.integers(-4, 5))), (0, 1))
                if shifted.any():
                    preds.append(
                        {"image_id": image_id, "segmentation": mask_to_coco_rle(shifted), "score": float(rng.random())}
                    )
        for _ in range(14):
            m = blob(rng, h, w, rng.uniform(3, 50))
            if m.any():
                preds.append({"image_id": image_id, "segmentation": mask_to_coco_rle(m), "score": float(rng.random())})
    gt = {"images": images, "annotations": gts, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    return gt, preds


def cocoeval_recall(gt, preds, max_dets):
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    coco.createIndex()
    res = coco.loadRes([dict(p, category_id=1) for p in copy.deepcopy(preds)])
    e = COCOeval(coco, res, iouType="segm")
    e.params.useCats = 0
    e.params.maxDets = list(max_dets)
    e.evaluate()
    e.accumulate()
    recall = e.eval["recall"]  # (T, K, A, M)
    out = {}
    for m_i, k in enumerate(max_dets):
        r = recall[:, 0, 0, m_i]
        out[f"AR@{k}"] = float(r[r > -1].mean()) if (r > -1).any() else -1.0
    for a_i, name in list(enumerate(AREA_RANGES))[1:]:
        r = recall[:, 0, a_i, len(max_dets) - 1]
        out[f"AR_{name}@{max_dets[-1]}"] = float(r[r > -1].mean()) if (r > -1).any() else -1.0
    return out


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("max_dets", [(10, 100, 1000), (1, 3, 10)])
def test_average_recall_equals_cocoeval(seed, max_dets):
    gt, preds = synthetic(seed)
    ours = mask_average_recall(gt, preds, max_dets)
    ref = cocoeval_recall(gt, preds, max_dets)
    assert ours.keys() == ref.keys()
    for k in ref:
        assert abs(ours[k] - ref[k]) <= 1e-6, (k, ours[k], ref[k])
    assert 0 <= ours[f"AR@{max_dets[0]}"] < ours[f"AR@{max_dets[-1]}"] <= 1  # the test data can tell K apart


def test_eval_command_reads_our_coco_files(tmp_path):
    """Our COCO output (images named, ids of our own, scores as predicted_iou) through the CLI."""
    gt, preds = synthetic(5)
    ours = {
        "images": [dict(im, id=i + 100) for i, im in enumerate(gt["images"])],
        "annotations": [],
    }
    new_id = {im["id"]: i + 100 for i, im in enumerate(gt["images"])}
    for j, p in enumerate(preds):
        ours["annotations"].append(
            {
                "id": j + 1,
                "image_id": new_id[p["image_id"]],
                "segmentation": p["segmentation"],
                "predicted_iou": p["score"],
            }
        )
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(ours))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mobilesam_web",
            "eval",
            str(tmp_path / "gt.json"),
            str(tmp_path / "pred.json"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    ref = cocoeval_recall(gt, preds, (10, 100, 1000))
    assert all(abs(got[k] - ref[k]) <= 1e-6 for k in ref)
    bad = subprocess.run(
        [sys.executable, "-m", "mobilesam_web", "eval", str(tmp_path / "gt.json"), str(tmp_path / "missing.json")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    assert bad.returncode == 2 and "cannot evaluate" in bad.stderr and "Traceback" not in bad.stderr
