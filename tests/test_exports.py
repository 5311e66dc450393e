"""Exports: COCO bboxes that contain their masks, every object written, short distinct names, speed."""

import json
import os
import time
import zipfile

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from mobilesam_web.data.boxes import inclusive_xyxy_to_xywh, mask_bbox, mask_bbox_xywh
from mobilesam_web.data.masks import coco_annotations
from mobilesam_web.data.rle import mask_to_coco_rle, rle_counts, rle_to_mask
from mobilesam_web.ui.exports import file_stem, records_from_masks, write_exports


def assert_tight_bbox(bbox, mask):
    """COCO [x, y, w, h]: every mask pixel inside, and each edge touches the mask."""
    ys, xs = np.nonzero(mask)
    x, y, w, h = bbox
    assert x <= xs.min() and y <= ys.min() and xs.max() < x + w and ys.max() < y + h, (bbox, xs.min(), xs.max())
    assert (x, y, x + w - 1, y + h - 1) == (xs.min(), ys.min(), xs.max(), ys.max()), bbox


def random_masks(n, h, w, seed=0):
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(n):
        m = np.zeros((h, w), np.uint8)
        cv2.circle(m, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(1, max(h, w) // 4)), 1, -1)
        masks.append(m.astype(bool))
    return masks


def test_bbox_contains_its_mask():
    m = np.zeros((10, 12), bool)
    m[2:5, 3:8] = True  # rows 2..4, columns 3..7
    assert mask_bbox(m) == [3, 2, 7, 4]
    assert mask_bbox_xywh(m) == [3, 2, 5, 3]
    one = np.zeros((4, 4), bool)
    one[3, 3] = True
    assert mask_bbox_xywh(one) == [3, 3, 1, 1]
    assert mask_bbox_xywh(np.zeros((4, 4), bool)) == [0, 0, 0, 0]
    assert mask_bbox_xywh(np.ones((4, 6), bool)) == [0, 0, 6, 4]
    assert inclusive_xyxy_to_xywh([0, 0, 0, 0]) == [0, 0, 1, 1]
    for mask in random_masks(50, 37, 53, seed=1):
        assert_tight_bbox(mask_bbox_xywh(mask), mask)


def test_coco_bbox_is_measured_on_the_mask():
    masks = random_masks(20, 60, 80, seed=2)
    # records whose own bbox is SAM's (one pixel short): the COCO output is still right
    records = [{"segmentation": m, "area": int(m.sum()), "bbox": [0, 0, 1, 1]} for m in masks]
    for ann, m in zip(coco_annotations(records, (60, 80))["annotations"], masks):
        assert_tight_bbox(ann["bbox"], m)
        assert ann["bbox"] == list(mask_utils.toBbox(mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))))
    for r, m in zip(records_from_masks(masks, [0.5] * len(masks)), masks):
        assert_tight_bbox(r["bbox"], m)


@pytest.mark.parametrize("seed", range(6))
def test_fast_rle_matches_pycocotools(seed):
    rng = np.random.default_rng(seed)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 14, 2))
        m = rng.random((h, w)) > rng.random()
        if rng.random() < 0.3:
            m[:, int(rng.integers(0, w))] = True  # full-height columns: runs across column ends
        if rng.random() < 0.2:
            m[:] = bool(rng.random() < 0.5)
        ref = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        ours = mask_to_coco_rle(m)
        assert ours["counts"] == ref["counts"].decode() and ours["size"] == [h, w]
        assert sum(rle_counts(m)) == h * w and (rle_to_mask(ours) == m).all()


def test_export_holds_every_object_fast(tmp_path):
    """300 objects on a 2048x1536 image: all in the COCO file, the label map and the zip."""
    h, w = 1536, 2048
    masks = random_masks(300, h, w, seed=3)
    image = np.zeros((h, w, 3), np.uint8)
    records = [{"segmentation": m, "area": int(m.sum()), "bbox": mask_bbox_xywh(m)} for m in masks]
    t = time.perf_counter()
    export = write_exports(image, records, "a very long file name of a street photo, 2024.jpg", cutouts=False)
    seconds = time.perf_counter() - t
    names = sorted(os.path.basename(p) for p in export.paths)
    assert names == [
        "coco_a_very_long_file_name_of.json",
        "labels_a_very_long_file_name_of.png",
        "masks_a_very_long_file_name_of.zip",
    ]
    assert export.objects == 300 and export.summary == "300 objects: COCO JSON, label map, 300 masks (zip)"
    coco = json.load(open(next(p for p in export.paths if p.endswith(".json"))))
    assert len(coco["annotations"]) == 300
    labels = cv2.imread(next(p for p in export.paths if "labels_" in p), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint16 and labels.max() == max(i for i, m in enumerate(masks, 1) if m.any())
    with zipfile.ZipFile(next(p for p in export.paths if p.endswith(".zip"))) as z:
        names = z.namelist()
        assert names == [f"mask{i:03d}.png" for i in range(1, 301)]
        for i in (0, 150, 299):
            png = cv2.imdecode(np.frombuffer(z.read(names[i]), np.uint8), cv2.IMREAD_UNCHANGED)
            assert ((png > 0) == masks[i]).all()
    for ann, m in zip(coco["annotations"][:50], masks):
        assert_tight_bbox(ann["bbox"], m)
    assert seconds < 20, f"writing 300 objects took {seconds:.1f} s"  # ~2 s here; the old code took ~19 s


def test_few_objects_are_separate_files_with_distinct_short_names():
    image = np.zeros((40, 50, 3), np.uint8)
    masks = random_masks(3, 40, 50, seed=4)
    export = write_exports(image, records_from_masks(masks, [0.9] * 3), "IMG_0001.HEIC.jpeg")
    names = [os.path.basename(p) for p in export.paths]
    assert len(set(names)) == len(names) == 8
    assert {"_".join(n.split("_")[:2]) for n in names} == {
        "coco_IMG",
        "labels_IMG",
        "01_mask",
        "02_mask",
        "03_mask",
        "01_cutout",
        "02_cutout",
        "03_cutout",
    }
    assert all(len(n) <= 40 for n in names)
    assert file_stem("../../etc/passwd") == "passwd" and file_stem("") == "image" and file_stem("...") == "image"
    empty = write_exports(image, [], "x.png")
    assert [os.path.basename(p) for p in empty.paths] == ["coco_x.json"] and empty.summary.startswith("0 objects")


def test_old_export_folders_are_pruned():
    import tempfile

    from mobilesam_web.ui.exports import prune_export_folders

    image = np.zeros((20, 20, 3), np.uint8)
    old = os.path.dirname(write_exports(image, [], "old.png").paths[0])
    fresh = os.path.dirname(write_exports(image, [], "fresh.png").paths[0])
    hour_ago = time.time() - 2 * 3600
    os.utime(old, (hour_ago, hour_ago))
    unrelated = tempfile.mkdtemp(prefix="someone-else-")
    os.utime(unrelated, (hour_ago, hour_ago))
    assert prune_export_folders() >= 1
    assert not os.path.exists(old) and os.path.isdir(fresh) and os.path.isdir(unrelated)
    os.rmdir(unrelated)


def test_coco_file_is_what_json_dump_writes(tmp_path):
    """The export's COCO file is streamed with json.dumps' C encoder (json.dump's Python one took
    30 s on a few hundred noisy masks): the same bytes as json.dump, non-ASCII names, empty lists."""
    import io

    from mobilesam_web.ui.exports import dump_json

    masks = random_masks(5, 60, 80, seed=3)
    coco = coco_annotations(records_from_masks(masks, [0.9, 0.8, 0.7, 0.6, 0.5]), (60, 80), file_name="čaj ☕.png")
    coco["info"] = {"nested": [{"a": 1.5e-7, "b": None}], "text": 'q"uote\n'}
    for data in (coco, {**coco, "annotations": []}, {}):
        ours, ref = io.StringIO(), io.StringIO()
        dump_json(data, ours)
        json.dump(data, ref)
        assert ours.getvalue() == ref.getvalue()
    out = write_exports(np.zeros((60, 80, 3), np.uint8), records_from_masks(masks, [0.5] * 5), "čaj ☕.png")
    coco_path = next(p for p in out.paths if p.endswith(".json"))
    assert json.loads(open(coco_path).read())["annotations"][4]["area"] == int(masks[4].sum())
