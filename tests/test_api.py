"""The named API as a gradio_client user calls it: keyword calls with only the parameters a
prompt needs (box-only, points-only, points + box), the renamed detector parameters, and an
API description (`view_api`) that documents every parameter and requires only the image."""

import shutil

import numpy as np
import pytest
from gradio_client import Client, handle_file

from conftest import MOBILESAM_FIXTURE, OBJECTAWARE_FIXTURE, assert_masks_close
from server_utils import fixture_args, running_app

SEGMENT_PARAMS = ["image", "points", "labels", "box", "multimask"]
EVERYTHING_PARAMS = ["image", "detector_conf", "detector_nms_iou", "imgsz"]


@pytest.fixture(scope="module")
def client(shared_onnx_cache):
    with running_app(
        fixture_args(detector=True),
        {"MOBILESAM_ONNX_CACHE": shared_onnx_cache, "MOBILESAM_BROWSER_DECODING": "0"},
    ) as url:
        yield Client(url, verbose=False)


@pytest.fixture(scope="module")
def image():
    return handle_file(str(MOBILESAM_FIXTURE / "image.png"))


def rle_masks(result):
    from pycocotools import mask as mask_utils

    return np.stack(
        [mask_utils.decode({"size": m["size"], "counts": m["counts"].encode()}).astype(bool) for m in result["masks"]]
    )


def assert_case(result, sam_cases, case):
    assert result["size"] == [800, 799]
    assert np.abs(np.array(result["scores"]) - sam_cases[f"{case}_iou_predictions"]).max() <= 1e-5
    assert_masks_close(rle_masks(result), sam_cases[f"{case}_masks"])


# ----------------------------------------------------------------------------- /segment
def test_box_only(client, image, sam_cases):
    """The issue's call: no points, no labels, no multimask."""
    r = client.predict(image=image, box=sam_cases["c_box"].tolist(), api_name="/segment")
    assert len(r["masks"]) == 1  # a box is not ambiguous: one mask by default
    assert_case(r, sam_cases, "c")


def test_one_point_only_gives_three_candidates(client, image, sam_cases):
    ((x, y),) = sam_cases["a_point_coords"].tolist()
    r = client.predict(image=image, points=[[x, y]], api_name="/segment")
    assert len(r["masks"]) == 3  # a lone point is ambiguous (part / object / whole)
    assert_case(r, sam_cases, "a")
    one = client.predict(image=image, points=[[x, y]], multimask=False, api_name="/segment")
    assert len(one["masks"]) == 1 and len(one["scores"]) == len(one["areas"]) == 1


def test_points_with_labels(client, image, sam_cases):
    r = client.predict(
        image=image,
        points=sam_cases["b_point_coords"].tolist(),
        labels=sam_cases["b_point_labels"].tolist(),
        api_name="/segment",
    )
    assert len(r["masks"]) == 1  # several points: one mask by default
    assert_case(r, sam_cases, "b")


def test_labels_default_to_include(client, image, sam_cases):
    pts = sam_cases["b_point_coords"][:2].tolist()
    implicit = client.predict(image=image, points=pts, api_name="/segment")
    explicit = client.predict(image=image, points=pts, labels=[1, 1], api_name="/segment")
    assert implicit == explicit


def test_points_and_box(client, image, sam_cases):
    r = client.predict(
        image=image,
        points=sam_cases["d_point_coords"].tolist(),
        labels=sam_cases["d_point_labels"].tolist(),
        box=sam_cases["d_box"].tolist(),
        api_name="/segment",
    )
    assert_case(r, sam_cases, "d")


def test_only_the_image_is_required(client, image):
    with pytest.raises(Exception, match="No value provided for required argument: image"):
        client.predict(box=[1, 1, 50, 50], api_name="/segment")
    with pytest.raises(Exception, match="at least one point or a box"):
        client.predict(image=image, api_name="/segment")


# -------------------------------------------------------------------------- /everything
def test_everything_detector_parameters(client, tmp_path):
    street = tmp_path / "street photo.png"  # the COCO names the caller's file, not a placeholder
    shutil.copy(OBJECTAWARE_FIXTURE / "image.png", street)
    ev = handle_file(str(street))
    default = client.predict(image=ev, api_name="/everything")
    assert default["timings"]["boxes"] == 137 and default["imgsz"] == 1024  # the defaults: 0.4, 0.9, 1024
    assert default["images"][0]["width"] == 900 and default["annotations"]
    assert default["images"][0]["file_name"] == "street photo.png"
    strict_nms = client.predict(image=ev, detector_nms_iou=0.3, api_name="/everything")
    assert 0 < strict_nms["timings"]["boxes"] < 137  # overlapping boxes suppressed
    confident = client.predict(image=ev, detector_conf=0.6, api_name="/everything")
    assert confident["timings"]["boxes"] < 137  # fewer, surer boxes
    with pytest.raises(Exception, match=r"detector_nms_iou must be in \[0, 1\]"):
        client.predict(image=ev, detector_nms_iou=2, api_name="/everything")
    with pytest.raises(Exception, match=r"detector_conf must be in \(0, 1\]"):
        client.predict(image=ev, detector_conf=0, api_name="/everything")


# ---------------------------------------------------------------------- API description
def test_view_api_describes_every_parameter(client):
    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    expected = {"/segment": SEGMENT_PARAMS, "/everything": EVERYTHING_PARAMS}
    for name, params in expected.items():
        endpoint = info[name]
        assert [p["parameter_name"] for p in endpoint["parameters"]] == params
        assert endpoint["description"]
        for p in endpoint["parameters"]:
            assert len(p["python_type"]["description"]) > 40, (name, p["parameter_name"])
            assert p["parameter_has_default"] == (p["parameter_name"] != "image"), (name, p["parameter_name"])
        assert endpoint["returns"][0]["python_type"]["description"]
    seg = {p["parameter_name"]: p for p in info["/segment"]["parameters"]}
    assert seg["points"]["python_type"]["type"] == "list[list[float]]"
    assert seg["labels"]["python_type"]["type"] == "list[int]"
    assert seg["box"]["python_type"]["type"] == "list[float]"
    assert seg["multimask"]["python_type"]["type"] == "bool"
    for name in ("points", "box"):
        assert "pixels of the image sent" in seg[name]["python_type"]["description"]
        assert seg[name]["parameter_default"] is None
    assert "[x1, y1, x2, y2]" in seg["box"]["python_type"]["description"]
    assert "all 1" in seg["labels"]["python_type"]["description"]
    ev = {p["parameter_name"]: p for p in info["/everything"]["parameters"]}
    assert [ev[k]["parameter_default"] for k in EVERYTHING_PARAMS[1:]] == [0.4, 0.9, 1024]
    assert "non-maximum-suppression" in ev["detector_nms_iou"]["python_type"]["description"]
    assert ev["imgsz"]["python_type"]["type"] == "int"
    text = client.view_api(return_format="str", print_info=False)
    assert "any valid json" not in text and "box: list[float] | None (not required" in text
