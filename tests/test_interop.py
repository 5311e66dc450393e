"""Our exported files fed exactly as the SAM ecosystem's tools feed SAM ONNX files.

Each `*_feeds` / `*_encode` helper below is written from the tool's published calling
convention (not copied): SAM's ONNX example notebook and web demo (facebookresearch/
segment-anything), samexporter's `SegmentAnythingONNX` and X-AnyLabeling's `SegmentAnythingONNX`.
Their masks are compared with our library's masks for the same prompts, within the parity
fixture's tolerances (masks: at most 0.01% differing pixels; IoU predictions: 1e-5).
"""

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import assert_masks_close

PAD_POINT, PAD_LABEL = np.zeros((1, 2)), np.array([-1.0])


@pytest.fixture(scope="module")
def files(all_graphs):
    """The graphs other tools read (the run's one export of every graph, conftest.all_graphs)."""
    names = ("encoder_float", "decoder", "decoder_single", "decoder_int8", "decoder_single_int8")
    return {name: all_graphs[name] for name in names}


@pytest.fixture(scope="module")
def sessions(files):
    from mobilesam_web.engine.onnx.cache import ort_session

    return {name: ort_session(path) for name, path in files.items()}


def no_mask():
    return np.zeros((1, 1, 256, 256), np.float32), np.zeros(1, np.float32)


def sam_rule(torch_predictor, point_coords, point_labels, box=None, mask_input=None):
    """Our library's answer for a single-mask tool: the mask SAM's single-mask export picks
    (more than one prompt token besides the padding point: token 0; else the best of 1..3)."""
    n_tokens = (0 if point_coords is None else len(point_coords)) + (2 if box is not None else 1)
    multi = n_tokens <= 2
    masks, iou, low = torch_predictor.predict(point_coords, point_labels, box, mask_input, multimask_output=multi)
    k = int(np.argmax(iou)) if multi else 0
    return masks[k], iou[k], low[k]


# -- SAM's ONNX example notebook: predictor.get_image_embedding() + the single-mask export ------


def notebook_feeds(predictor, image_shape, points, labels, box=None, mask_input=None):
    """As notebooks/onnx_model_example.ipynb: points (+ box corners labelled 2, 3, or else a
    padding point), mapped with predictor.transform.apply_coords; orig_im_size = image.shape[:2]."""
    coords, labs = [points], [labels]
    if box is not None:
        coords.append(box.reshape(2, 2))
        labs.append(np.array([2, 3]))
    else:
        coords.append(PAD_POINT)
        labs.append(PAD_LABEL)
    onnx_coord = np.concatenate(coords, axis=0)[None, :, :]
    onnx_label = np.concatenate(labs, axis=0)[None, :].astype(np.float32)
    onnx_coord = predictor.transform.apply_coords(onnx_coord, image_shape[:2]).astype(np.float32)
    if mask_input is None:
        mask, has_mask = no_mask()
    else:
        mask, has_mask = mask_input.reshape(1, 1, 256, 256).astype(np.float32), np.ones(1, np.float32)
    return {
        "image_embeddings": predictor.get_image_embedding().cpu().numpy(),
        "point_coords": onnx_coord,
        "point_labels": onnx_label,
        "mask_input": mask,
        "has_mask_input": has_mask,
        "orig_im_size": np.array(image_shape[:2], dtype=np.float32),
    }


@pytest.mark.parametrize("case", ["a", "b", "d"])
def test_sam_notebook(sessions, torch_predictor, sam_image, sam_cases, case):
    """One click (a), several points (b), a box with a negative point (d)."""
    pts, labs = sam_cases[f"{case}_point_coords"], sam_cases[f"{case}_point_labels"]
    box = sam_cases[f"{case}_box"] if f"{case}_box" in sam_cases else None
    masks, iou, low = sessions["decoder_single"].run(
        None, notebook_feeds(torch_predictor, sam_image.shape, pts, labs, box)
    )
    masks = masks > torch_predictor.model.mask_threshold
    ref_mask, ref_iou, ref_low = sam_rule(torch_predictor, pts, labs, box)
    assert masks.shape == (1, 1, *sam_image.shape[:2])
    assert abs(iou[0, 0] - ref_iou) <= 1e-5
    assert np.abs(low[0, 0] - ref_low).max() <= 1e-4
    assert_masks_close(masks[0, 0], ref_mask)


def test_sam_notebook_mask_refinement(sessions, torch_predictor, sam_image, sam_cases):
    """The notebook's second step: the previous low_res_logits as mask_input, has_mask_input 1."""
    pts, labs = sam_cases["a_point_coords"], sam_cases["a_point_labels"]
    session = sessions["decoder_single"]
    _, _, low = session.run(None, notebook_feeds(torch_predictor, sam_image.shape, pts, labs))
    masks, iou, _ = session.run(None, notebook_feeds(torch_predictor, sam_image.shape, pts, labs, mask_input=low))
    ref_mask, ref_iou, _ = sam_rule(torch_predictor, pts, labs, mask_input=low[0])
    assert abs(iou[0, 0] - ref_iou) <= 1e-5
    assert_masks_close(masks[0, 0] > 0, ref_mask)


# -- SAM web demo: an embedding .npy from the predictor, clicks scaled by samScale -------------


def web_demo_feeds(embedding, height, width, clicks):
    """As demo/src (scaleHelper + onnxModelAPI): samScale = 1024 / max(h, w) on both axes,
    a padding point always, orig_im_size [h, w], no mask."""
    sam_scale = 1024 / max(height, width)
    coords = [[x * sam_scale, y * sam_scale] for x, y, _ in clicks] + [[0.0, 0.0]]
    labels = [t for _, _, t in clicks] + [-1.0]
    mask, has_mask = no_mask()
    return {
        "image_embeddings": embedding,
        "point_coords": np.array([coords], np.float32),
        "point_labels": np.array([labels], np.float32),
        "orig_im_size": np.array([height, width], np.float32),
        "mask_input": mask,
        "has_mask_input": has_mask,
    }


def test_sam_web_demo(sessions, torch_predictor, sam_image, sam_cases, tmp_path):
    np.save(tmp_path / "embedding.npy", torch_predictor.get_image_embedding().cpu().numpy())
    embedding = np.load(tmp_path / "embedding.npy")
    h, w = sam_image.shape[:2]
    ((x, y),) = sam_cases["a_point_coords"]
    session = sessions["decoder_single"]
    feeds = web_demo_feeds(embedding, h, w, [(x, y, 1.0)])
    out = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    first = session.get_outputs()[0].name  # the demo renders results[model.outputNames[0]] > 0
    assert first == "masks" and out[first].shape == (1, 1, h, w)
    # The demo scales x and y by 1024 / max(h, w) where SamPredictor uses new_w / w and
    # new_h / h (1023/799 vs 1024/800 in x here: 0.1 px at this click), so the library's
    # reference is the same 1024-frame click through predict_torch.
    p = torch_predictor
    masks, iou, _ = p.predict_torch(
        torch.as_tensor(feeds["point_coords"][:, :1]), torch.ones(1, 1), multimask_output=True
    )
    k = int(iou[0].argmax())
    assert abs(out["iou_predictions"][0, 0] - iou[0, k].item()) <= 1e-5
    assert_masks_close(out[first][0, 0] > 0.0, masks[0, k].numpy())
    # ... and the demo's rounding stays close to SamPredictor.predict's mask for (x, y):
    # measured 161 of 639,200 pixels on the random fixture weights.
    ref_mask, _, _ = sam_rule(p, np.array([[x, y]]), np.array([1]))
    demo = out[first][0, 0] > 0.0
    assert (demo & ref_mask).sum() / max((demo | ref_mask).sum(), 1) >= 0.99


def test_quantized_single_decoder_for_the_web_demo(sessions, torch_predictor, sam_image, sam_cases):
    """The demo ships a quantized single-mask decoder: ours is decoder_single_int8.onnx, made
    from decoder_single.onnx (same I/O, one mask). int8 moves masks a little (measured IoU with
    fp32 >= 0.93 on the random fixture weights); the bound catches a broken quantization."""
    h, w = sam_image.shape[:2]
    emb = torch_predictor.get_image_embedding().cpu().numpy()
    s8, s32 = sessions["decoder_single_int8"], sessions["decoder_single"]
    assert [o.name for o in s8.get_outputs()] == [o.name for o in s32.get_outputs()]
    for case in "af":
        ((x, y),) = sam_cases[f"{case}_point_coords"]
        feeds = web_demo_feeds(emb, h, w, [(x, y, 1.0)])
        m8, iou8, _ = s8.run(None, feeds)
        m32, iou32, _ = s32.run(None, feeds)
        assert m8.shape == m32.shape == (1, 1, h, w)
        a, b = m8 > 0, m32 > 0
        assert (a & b).sum() / max((a | b).sum(), 1) >= 0.9
        assert abs(iou8 - iou32).max() <= 0.1


def test_quantized_single_decoder_on_every_prompt_shape(sessions, torch_predictor, sam_image):
    """#22 item 8b: decoder_single_int8 against decoder_single on each prompt shape the tools
    send. With SAM's padding point the single-mask graph returns mask token 0 and int8 stays
    within IoU 0.9 of float32. With exactly two points and no padding (a box as two corners,
    as samexporter-style callers may send it) SAM's rule picks the best of the three multimask
    candidates by predicted IoU: near-tied predictions can pick another candidate under int8
    (measured IoU 0.35 on the random weights), so the README promises only that its mask is one of
    float32's candidates there; this checks exactly that."""
    h, w = sam_image.shape[:2]
    emb = torch_predictor.get_image_embedding().cpu().numpy()
    s8, s32, four = sessions["decoder_single_int8"], sessions["decoder_single"], sessions["decoder"]
    k = 1024 / max(h, w)
    box = [[120 * k, 90 * k, 2], [610 * k, 580 * k, 3]]
    shapes = {
        "point + padding": [[320 * k, 400 * k, 1], [0, 0, -1]],
        "points + padding": [[320 * k, 400 * k, 1], [600 * k, 210 * k, 0], [0, 0, -1]],
        "box + padding": box + [[0, 0, -1]],
        "box, no padding": box,
    }

    def iou(a, b):
        return (a & b).sum() / max((a | b).sum(), 1)

    for name, pts in shapes.items():
        mask, has = no_mask()
        feeds = {
            "image_embeddings": emb,
            "point_coords": np.array([[p[:2] for p in pts]], np.float32),
            "point_labels": np.array([[p[2] for p in pts]], np.float32),
            "orig_im_size": np.array([h, w], np.float32),
            "mask_input": mask,
            "has_mask_input": has,
        }
        m8 = s8.run(None, feeds)[0][0, 0] > 0
        m32 = s32.run(None, feeds)[0][0, 0] > 0
        if len(pts) != 2:
            assert iou(m8, m32) >= 0.9, name
        else:  # one of float32's three candidates (SAM's multimask tokens 1-3)
            candidates = four.run(None, feeds)[0][0, 1:] > 0
            assert max(iou(m8, c) for c in candidates) >= 0.9, name


# -- samexporter: SegmentAnythingONNX.encode / predict_masks ---------------------------------


def samexporter_encode(session, bgr_image):
    """As samexporter.sam_onnx: BGR -> RGB, PIL bilinear resize to the longest side 1024, then
    float32 (h, w, 3) into the encoder's first input (rank 3 = `--use-preprocess` encoder)."""
    h, w = bgr_image.shape[:2]
    scale = 1024 / max(h, w)
    new_h, new_w = int(h * scale + 0.5), int(w * scale + 0.5)
    rgb = cv2.cvtColor(bgr_image, cv2.COLOR_BGR2RGB)
    resized = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), resample=Image.Resampling.BILINEAR))
    inp = session.get_inputs()[0]
    assert len(inp.shape) == 3
    emb = session.run(None, {inp.name: resized.astype(np.float32)})[0]
    return {"image_embedding": emb, "original_size": (h, w), "resized_size": (new_h, new_w)}


def samexporter_predict(session, embedding, points, labels):
    """As samexporter.sam_onnx.run_decoder: the prompt's points (box corners are points labelled
    2, 3) plus a padding point, always; coordinates scaled per axis; it prefers the
    `low_res_masks` output and upsamples it itself with cv2 (1024, crop, original size)."""
    h, w = embedding["original_size"]
    new_h, new_w = embedding["resized_size"]
    coords = np.concatenate([points, PAD_POINT], axis=0)[None].astype(float)
    coords[..., 0] *= new_w / w
    coords[..., 1] *= new_h / h
    mask, has_mask = no_mask()
    feeds = {
        "image_embeddings": embedding["image_embedding"],
        "point_coords": coords.astype(np.float32),
        "point_labels": np.concatenate([labels, PAD_LABEL])[None].astype(np.float32),
        "mask_input": mask,
        "has_mask_input": has_mask,
        "orig_im_size": np.array([h, w], np.float32),
    }
    names = [o.name for o in session.get_outputs()]
    outputs = session.run(None, feeds)
    low = outputs[names.index("low_res_masks")]
    out = []
    for m in low[0]:
        up = cv2.resize(m, (1024, 1024), interpolation=cv2.INTER_LINEAR)[:new_h, :new_w]
        out.append(cv2.resize(up, (w, h), interpolation=cv2.INTER_LINEAR))
    return np.asarray([out]), outputs[names.index("iou_predictions")]


@pytest.fixture(scope="module")
def samexporter_embedding(sessions, sam_image):
    return samexporter_encode(sessions["encoder_float"], cv2.cvtColor(sam_image, cv2.COLOR_RGB2BGR))


def test_samexporter_encoder_equals_library(samexporter_embedding, torch_predictor, sam_cases):
    emb = samexporter_embedding["image_embedding"]
    ref = torch_predictor.get_image_embedding().numpy()
    assert emb.shape == (1, 256, 64, 64)
    assert np.abs(emb - ref).max() <= 1e-4
    assert np.abs(emb - sam_cases["embedding"]).max() <= 1e-4
    assert samexporter_embedding["resized_size"] == torch_predictor.input_size


@pytest.mark.parametrize("case", ["a", "b", "f"])
def test_samexporter_points(sessions, samexporter_embedding, torch_predictor, sam_cases, case):
    pts, labs = sam_cases[f"{case}_point_coords"], sam_cases[f"{case}_point_labels"]
    masks, iou = samexporter_predict(sessions["decoder_single"], samexporter_embedding, pts, labs)
    ref_mask, ref_iou, _ = sam_rule(torch_predictor, pts, labs)
    assert masks.shape == (1, 1, *ref_mask.shape)
    assert abs(iou[0, 0] - ref_iou) <= 1e-5
    assert_masks_close(masks[0, 0] > 0, ref_mask)


def test_samexporter_box(sessions, samexporter_embedding, torch_predictor, sam_cases):
    """samexporter appends the padding point after a box too (SamPredictor doesn't): our library
    gives the same mask for the same tokens, i.e. the box plus a padding point."""
    box = sam_cases["c_box"]
    masks, iou = samexporter_predict(
        sessions["decoder_single"], samexporter_embedding, box.reshape(2, 2), np.array([2.0, 3.0])
    )
    p = torch_predictor
    box_t = p.transform.apply_boxes_torch(torch.as_tensor(box, dtype=torch.float)[None], p.original_size)
    ref_masks, ref_iou, _ = p.predict_torch(torch.zeros(1, 1, 2), torch.full((1, 1), -1), box_t, multimask_output=False)
    assert abs(iou[0, 0] - ref_iou[0, 0].item()) <= 1e-5
    assert_masks_close(masks[0, 0] > 0, ref_masks[0, 0].numpy())


# -- X-AnyLabeling: SegmentAnythingONNX with a fixed (684, 1024) input canvas ----------------

XANY_INPUT = (684, 1024)


def xany_encode(session, rgb_image):
    """As X-AnyLabeling's sam_onnx: warp the RGB image with scale min(684/h, 1024/w) into a
    684 x 1024 canvas (cv2.warpAffine, bilinear, black elsewhere) and feed it as float32."""
    ih, iw = XANY_INPUT
    scale = min(ih / rgb_image.shape[0], iw / rgb_image.shape[1])
    matrix = np.array([[scale, 0, 0], [0, scale, 0], [0, 0, 1]])
    canvas = cv2.warpAffine(rgb_image, matrix[:2], (iw, ih), flags=cv2.INTER_LINEAR)
    emb = session.run(None, {session.get_inputs()[0].name: canvas.astype(np.float32)})[0]
    return {"image_embedding": emb, "original_size": rgb_image.shape[:2], "transform_matrix": matrix}, canvas


def xany_predict(session, embedding, points, labels):
    """As X-AnyLabeling's run_decoder: points + padding point; apply_coords for the canvas size
    (a no-op scale, the canvas' longest side is 1024), then the canvas transform; orig_im_size is
    the canvas; the decoder's `masks` are warped back to the image; it uses masks[0][0]."""
    coords = np.concatenate([points, PAD_POINT], axis=0)[None].astype(float)
    labs = np.concatenate([labels, PAD_LABEL])[None].astype(np.float32)
    coords = np.concatenate([coords, np.ones((1, coords.shape[1], 1))], axis=2) @ embedding["transform_matrix"].T
    mask, has_mask = no_mask()
    masks, iou, _ = session.run(
        None,
        {
            "image_embeddings": embedding["image_embedding"],
            "point_coords": coords[:, :, :2].astype(np.float32),
            "point_labels": labs,
            "mask_input": mask,
            "has_mask_input": has_mask,
            "orig_im_size": np.array(XANY_INPUT, np.float32),
        },
    )
    h, w = embedding["original_size"]
    inv = np.linalg.inv(embedding["transform_matrix"])
    back = np.array([[cv2.warpAffine(m, inv[:2], (w, h), flags=cv2.INTER_LINEAR) for m in b] for b in masks])
    return masks, back, iou


def test_xanylabeling(sessions, sam_model, sam_image, sam_cases):
    """X-AnyLabeling encodes its own 684 x 1024 canvas (the image scaled into its top-left corner,
    black elsewhere), so the library's reference is the same canvas through `SamPredictor`."""
    from mobilesam_web import SamPredictor

    embedding, canvas = xany_encode(sessions["encoder_float"], sam_image)
    lib = SamPredictor(sam_model)
    lib.set_image(canvas)
    assert np.abs(embedding["image_embedding"] - lib.get_image_embedding().numpy()).max() <= 1e-4
    scale = embedding["transform_matrix"][0, 0]
    for case in "abf":
        pts, labs = sam_cases[f"{case}_point_coords"], sam_cases[f"{case}_point_labels"]
        canvas_masks, masks, iou = xany_predict(sessions["decoder_single"], embedding, pts, labs)
        ref_mask, ref_iou, _ = sam_rule(lib, pts * scale, labs)
        assert abs(iou[0, 0] - ref_iou) <= 1e-5
        assert_masks_close(canvas_masks[0, 0] > 0, ref_mask)
        assert masks[0][0].shape == sam_image.shape[:2]  # what it turns into polygons


def test_xanylabeling_needs_the_single_mask_decoder(sessions, sam_image, sam_cases):
    """X-AnyLabeling shows masks[0][0]: with the 4-mask decoder.onnx that is token 0, not the
    mask SAM picks for one click, which is why the table says decoder_single.onnx."""
    embedding, _ = xany_encode(sessions["encoder_float"], sam_image)
    pts, labs = sam_cases["a_point_coords"], sam_cases["a_point_labels"]
    single, _, _ = xany_predict(sessions["decoder_single"], embedding, pts, labs)
    four, _, iou4 = xany_predict(sessions["decoder"], embedding, pts, labs)
    best = 1 + int(np.argmax(iou4[0, 1:]))
    assert four.shape[1] == 4
    assert_masks_close(single[0, 0] > 0, four[0, best] > 0)
    assert (four[0, 0] > 0).sum() != (single[0, 0] > 0).sum()


# -- the encoder's contract -------------------------------------------------------------------


def test_float_encoder_io(sessions):
    s = sessions["encoder_float"]
    (inp,), (out,) = s.get_inputs(), s.get_outputs()
    assert (inp.name, inp.type, inp.shape) == ("input_image", "tensor(float)", ["height", "width", 3])
    assert (out.name, out.shape) == ("image_embeddings", [1, 256, 64, 64])


@pytest.mark.parametrize("shape", [(800, 799, 3), (1100, 900, 3), (512, 512, 3)])
def test_unresized_image_is_refused(sessions, shape):
    """Without the resize the embedding would be silently padded or cropped: the graph refuses."""
    from mobilesam_web.engine.onnx.cache import quiet_run_options
    from mobilesam_web.engine.onnx.exporters import LONGEST_SIDE_CHECK

    with pytest.raises(Exception, match=LONGEST_SIDE_CHECK):
        sessions["encoder_float"].run(None, {"input_image": np.zeros(shape, np.float32)}, quiet_run_options())
