"""ONNX export of MobileSAM: encoder, SAM-convention decoders, engine decoders; verification,
metadata and an on-disk cache keyed by checkpoint sha256 and exporter version.

Graphs (see `onnx_graphs.py` for their I/O):

| file | graph |
| --- | --- |
| `encoder.onnx` | resized uint8 RGB image (h, w, 3) -> image_embeddings (1, 256, 64, 64) |
| `decoder.onnx` | SAM ONNX convention, all 4 mask tokens (as the official return_single_mask=False) |
| `decoder_single.onnx` | SAM ONNX convention, one mask chosen as SAM does |
| `decoder_lowres.onnx` | SAM convention inputs without orig_im_size -> low-res logits of 4 tokens |
| `decoder_boxes.onnx` | image_embeddings + boxes (B, 4) -> B single-mask low-res logits |
| `decoder_web.onnx` | `decoder_lowres.onnx` with float16-stored weights (half the download, for browsers) |
| `decoder_fast.onnx` | as `decoder_web.onnx`, with tanh-approximated GELU (the browser's hover previews) |
| `decoder_int8.onnx` | `decoder.onnx` with int8 dynamic weight quantization (optional) |
"""
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch

from .build import build_mobile_sam
from .modeling import Sam
from .onnx_graphs import BoxBatchDecoder, EncoderGraph, LowResDecoder, SamOnnxDecoder
from .weights import PathLike, file_sha256

EXPORTER_VERSION = "1"
OPSET = 17
SAM_DECODER_INPUTS = ["image_embeddings", "point_coords", "point_labels", "mask_input",
                      "has_mask_input", "orig_im_size"]
SAM_DECODER_OUTPUTS = ["masks", "iou_predictions", "low_res_masks"]
DEFAULT_CACHE_DIR = Path(__file__).resolve().parent.parent / "onnx"


class ExportError(RuntimeError):
    """An exported graph failed its checks."""


def _example_decoder_inputs(model: Sam, n_points: int = 2) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "image_embeddings": torch.randn(1, 256, 64, 64, generator=g),
        "point_coords": torch.rand(1, n_points, 2, generator=g) * model.img_size,
        "point_labels": torch.tensor([[1.0] + [-1.0] * (n_points - 1)]),
        "mask_input": torch.randn(1, 1, 256, 256, generator=g),
        "has_mask_input": torch.ones(1),
        "orig_im_size": torch.tensor([600.0, 800.0]),
    }


def _export(module: torch.nn.Module, args: tuple, path: Path, input_names: Sequence[str],
            output_names: Sequence[str], dynamic_axes: dict, metadata: Dict[str, str]) -> None:
    import onnx

    module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=list(input_names),
                          output_names=list(output_names), dynamic_axes=dynamic_axes,
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)
    proto = onnx.load(str(path))
    for k, v in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def export_encoder(model: Sam, path: PathLike, metadata: Dict[str, str]) -> Path:
    path = Path(path)
    image = torch.randint(0, 256, (768, 1024, 3), dtype=torch.uint8)
    _export(EncoderGraph(model), (image,), path, ["image"], ["image_embeddings"],
            {"image": {0: "height", 1: "width"}}, {**metadata, "graph": "encoder"})
    return path


def export_sam_decoder(model: Sam, path: PathLike, metadata: Dict[str, str],
                       return_single_mask: bool = False) -> Path:
    path = Path(path)
    inputs = _example_decoder_inputs(model)
    dyn = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"},
           "masks": {2: "height", 3: "width"}}
    kind = "decoder_single" if return_single_mask else "decoder"
    _export(SamOnnxDecoder(model, return_single_mask), tuple(inputs.values()), path,
            SAM_DECODER_INPUTS, SAM_DECODER_OUTPUTS, dyn, {**metadata, "graph": kind})
    return path


def export_lowres_decoder(model: Sam, path: PathLike, metadata: Dict[str, str],
                          approximate_gelu: bool = False) -> Path:
    path = Path(path)
    inputs = _example_decoder_inputs(model)
    del inputs["orig_im_size"]
    dyn = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}
    _export(LowResDecoder(model, approximate_gelu), tuple(inputs.values()), path, SAM_DECODER_INPUTS[:5],
            ["low_res_masks", "iou_predictions"], dyn, {"graph": "decoder_lowres", **metadata})
    return path


def export_box_decoder(model: Sam, path: PathLike, metadata: Dict[str, str]) -> Path:
    path = Path(path)
    boxes = torch.tensor([[10.0, 20.0, 300.0, 400.0], [100.0, 50.0, 900.0, 700.0]])
    dyn = {"boxes": {0: "num_boxes"}, "low_res_masks": {0: "num_boxes"},
           "iou_predictions": {0: "num_boxes"}}
    _export(BoxBatchDecoder(model), (torch.randn(1, 256, 64, 64), boxes), path,
            ["image_embeddings", "boxes"], ["low_res_masks", "iou_predictions"], dyn,
            {**metadata, "graph": "decoder_boxes"})
    return path


def fp16_weights(src: PathLike, dst: PathLike, min_elements: int = 1024) -> Path:
    """Store large float32 weights as float16, each followed by a Cast back to float32.

    Halves the download (the browser decoder: 16 -> 8 MB) while the arithmetic stays float32:
    onnxruntime folds the casts when the session is created."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    casts, keep = [], []
    for init in graph.initializer:
        arr = numpy_helper.to_array(init)
        if init.data_type == TensorProto.FLOAT and arr.size >= min_elements:
            half = numpy_helper.from_array(arr.astype(np.float16), init.name + "__fp16")
            keep.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                          name=init.name + "__cast"))
        else:
            keep.append(init)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return Path(dst)


def export_web_decoder(model: Sam, path: PathLike, metadata: Dict[str, str],
                       approximate_gelu: bool = False) -> Path:
    """A browser decoder: `decoder_lowres` with float16-stored weights (and, for hover
    previews, tanh-approximated GELU)."""
    path = Path(path)
    tmp = path.with_name(path.stem + ".fp32.onnx")
    graph = "decoder_fast" if approximate_gelu else "decoder_web"
    export_lowres_decoder(model, tmp, {**metadata, "graph": graph, "weights_storage": "float16",
                                       "gelu": "tanh" if approximate_gelu else "erf"}, approximate_gelu)
    fp16_weights(tmp, path)
    tmp.unlink()
    return path


def quantize_decoder(src: PathLike, dst: PathLike) -> Path:
    """int8 dynamic quantization of the decoder's MatMul weights (activations stay float)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    return Path(dst)


def ort_session(path: PathLike, threads: Optional[int] = None, providers: Optional[list] = None):
    """An ONNX Runtime session: CUDA when available, else CPU with one thread per usable core."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or available_cores()
    so.log_severity_level = 3
    if providers is None:
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in ort.get_available_providers()]
    return ort.InferenceSession(str(path), so, providers=providers)


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _compare(name: str, ours: np.ndarray, ref: np.ndarray, atol: float) -> None:
    diff = float(np.abs(ours - ref).max()) if ours.size else 0.0
    if ours.shape != ref.shape or not diff <= atol:
        raise ExportError(f"{name}: ONNX output differs from torch by {diff:.3g} (> {atol}) "
                          f"or shape {ours.shape} != {ref.shape}")


@torch.no_grad()
def verify_exports(model: Sam, paths: Dict[str, Path]) -> Dict[str, float]:
    """Run each exported graph in ONNX Runtime against the torch model; raise ExportError on a
    mismatch. Returns the max abs differences seen."""
    from .predictor import SamPredictor

    report: Dict[str, float] = {}
    g = torch.Generator().manual_seed(1)
    if "encoder" in paths:
        image = (torch.rand(600, 1024, 3, generator=g) * 255).to(torch.uint8)
        ref = model.image_encoder(model.preprocess(image.permute(2, 0, 1)[None].float())).numpy()
        out = ort_session(paths["encoder"]).run(None, {"image": image.numpy()})[0]
        _compare("encoder", out, ref, 1e-3)
        report["encoder"] = float(np.abs(out - ref).max())
    inputs = {k: v.numpy() for k, v in _example_decoder_inputs(model, 3).items()}
    inputs["point_labels"] = np.array([[1.0, 0.0, -1.0]], np.float32)
    pred = SamPredictor(model)
    pred.features = torch.as_tensor(inputs["image_embeddings"])
    pred.is_image_set = True
    pred.input_size, pred.original_size = (768, 1024), (600, 800)
    coords = torch.as_tensor(inputs["point_coords"][:, :2])
    labels = torch.tensor([[1, 0]])
    mask_in = torch.as_tensor(inputs["mask_input"])
    ref_masks, ref_iou, ref_low = pred.predict_torch(coords, labels, None, mask_in, multimask_output=True,
                                                     return_logits=True)
    # float16-stored weights move logits by ~3e-3 (measured); int8 is only reported here.
    tolerances = {"decoder": 1e-3, "decoder_lowres": 1e-3, "decoder_web": 5e-2, "decoder_fast": 5e-2,
                  "decoder_int8": None}
    for kind, tol in tolerances.items():
        if kind not in paths:
            continue
        sess = ort_session(paths[kind])
        feed = {i.name: inputs[i.name] for i in sess.get_inputs()}
        outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
        low = outs["low_res_masks"][:, 1:]
        if tol is None:  # quantized: report, the bound is checked by the tests
            report[kind] = float(np.abs(low - ref_low.numpy()).max())
            continue
        _compare(f"{kind} low_res_masks", low, ref_low.numpy(), tol)
        _compare(f"{kind} iou_predictions", outs["iou_predictions"][:, 1:], ref_iou.numpy(), min(tol, 1e-2))
        if "masks" in outs:
            _compare(f"{kind} masks", outs["masks"][:, 1:], ref_masks.numpy(), 5e-3)
        report[kind] = float(np.abs(low - ref_low.numpy()).max())
    if "decoder_boxes" in paths:
        boxes = torch.tensor([[10.0, 20.0, 300.0, 400.0], [100.0, 50.0, 900.0, 700.0]])
        _, ref_iou, ref_low = pred.predict_torch(None, None, boxes, multimask_output=False)
        out_low, out_iou = ort_session(paths["decoder_boxes"]).run(
            None, {"image_embeddings": inputs["image_embeddings"], "boxes": boxes.numpy()})
        _compare("decoder_boxes low_res_masks", out_low, ref_low.numpy(), 1e-3)
        _compare("decoder_boxes iou_predictions", out_iou, ref_iou.numpy(), 1e-3)
        report["decoder_boxes"] = float(np.abs(out_low - ref_low.numpy()).max())
    return report


EXPORTERS: Dict[str, Callable] = {
    "encoder": export_encoder,
    "decoder": export_sam_decoder,
    "decoder_single": lambda m, p, md: export_sam_decoder(m, p, md, return_single_mask=True),
    "decoder_lowres": export_lowres_decoder,
    "decoder_boxes": export_box_decoder,
    "decoder_web": export_web_decoder,
    "decoder_fast": lambda m, p, md: export_web_decoder(m, p, md, approximate_gelu=True),
}
ENGINE_GRAPHS = ("encoder", "decoder_lowres", "decoder_boxes")
APP_GRAPHS = ENGINE_GRAPHS + ("decoder_web", "decoder_fast")


def export_all(checkpoint: Optional[PathLike], out_dir: PathLike, graphs: Sequence[str] = tuple(EXPORTERS),
               quantize: bool = False, verify: bool = True, model: Optional[Sam] = None,
               log: Callable[[str], None] = lambda s: None, weights_sha: Optional[str] = None
               ) -> Dict[str, Path]:
    """Export `graphs` of the checkpoint (or of `model`, built from it) into out_dir, written
    atomically. Returns name -> path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sha = weights_sha or (file_sha256(checkpoint) if checkpoint is not None else "random-weights")
    if model is None:
        model = build_mobile_sam(checkpoint)
    meta = {"source_checkpoint_sha256": sha, "exporter": "mobilesam-web",
            "exporter_version": EXPORTER_VERSION, "torch_version": torch.__version__}
    paths: Dict[str, Path] = {}
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    try:
        for name in graphs:
            log(f"exporting {name}")
            paths[name] = EXPORTERS[name](model, tmp / f"{name}.onnx", meta)
        if quantize and "decoder" in paths:
            log("quantizing decoder (int8)")
            paths["decoder_int8"] = quantize_decoder(paths["decoder"], tmp / "decoder_int8.onnx")
        report = verify_exports(model, paths) if verify else {}
        final = {}
        for name, p in paths.items():
            dst = out_dir / p.name
            os.replace(p, dst)
            final[name] = dst
        manifest = {**meta, "files": {n: p.name for n, p in final.items()}, "verification_max_abs_diff": report}
        (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def weights_key(checkpoint: PathLike, decoder_checkpoint: Optional[PathLike] = None) -> str:
    """sha256 naming the weights: the checkpoint's, or both files' when the prompt-guided
    decoder replaces MobileSAM's own."""
    sha = file_sha256(checkpoint)
    if decoder_checkpoint is None:
        return sha
    return hashlib.sha256(f"{sha}+{file_sha256(decoder_checkpoint)}".encode()).hexdigest()


def cached_exports(checkpoint: PathLike, cache_dir: Optional[PathLike] = None,
                   graphs: Sequence[str] = ENGINE_GRAPHS, log: Callable[[str], None] = lambda s: None,
                   decoder_checkpoint: Optional[PathLike] = None) -> Dict[str, Path]:
    """ONNX files for `checkpoint` (optionally with MobileSAMv2's prompt-guided decoder) from
    the cache, exporting on first use.

    The cache folder is `<cache_dir>/<sha256[:16]>-v<EXPORTER_VERSION>/`; a file is reused only
    when its metadata names the same weights hash and exporter version.
    """
    import onnx

    sha = weights_key(checkpoint, decoder_checkpoint)
    folder = Path(cache_dir or os.environ.get("MOBILESAM_ONNX_CACHE") or DEFAULT_CACHE_DIR)
    folder = folder / f"{sha[:16]}-v{EXPORTER_VERSION}"
    have: Dict[str, Path] = {}
    for name in graphs:
        p = folder / f"{name}.onnx"
        if p.is_file():
            try:
                props = {m.key: m.value for m in onnx.load(str(p), load_external_data=False).metadata_props}
            except Exception:
                props = {}
            if props.get("source_checkpoint_sha256") == sha and props.get("exporter_version") == EXPORTER_VERSION:
                have[name] = p
    missing = [g for g in graphs if g not in have]
    if missing:
        log(f"exporting ONNX graphs {missing} to {folder} (first use of this checkpoint)")
        model = None
        if decoder_checkpoint is not None:
            from .build import load_prompt_guided_decoder

            model = load_prompt_guided_decoder(build_mobile_sam(checkpoint), decoder_checkpoint)
        have.update(export_all(checkpoint, folder, missing, log=log, model=model, weights_sha=sha))
    return have
