"""ONNX export of MobileSAM: encoders, SAM-convention decoders, engine decoders; verification,
metadata and an on-disk cache keyed by checkpoint sha256 and exporter version.

Graphs (see `onnx_graphs.py` for their I/O). One name per graph: the file name, the key in
`EXPORTERS`, in `manifest.json` and the `graph` metadata entry are the same.

| file | graph |
| --- | --- |
| `encoder.onnx` | `image` uint8 RGB (h, w, 3), longest side 1024 -> image_embeddings (1, 256, 64, 64) (our engine) |
| `encoder_float.onnx` | `input_image` float32 RGB 0..255 (h, w, 3), longest side 1024 -> image_embeddings (samexporter / X-AnyLabeling I/O) |
| `decoder.onnx` | SAM ONNX convention, all 4 mask tokens (as the official return_single_mask=False) |
| `decoder_single.onnx` | SAM ONNX convention, one mask chosen as SAM does (as the official return_single_mask=True) |
| `decoder_lowres.onnx` | SAM convention inputs without orig_im_size -> low-res logits of 4 tokens |
| `decoder_boxes.onnx` | image_embeddings + boxes (B, 4) -> B single-mask low-res logits |
| `decoder_web.onnx` | `decoder_lowres.onnx` with float16-stored weights (half the download, for browsers) |
| `decoder_fast.onnx` | as `decoder_web.onnx`, with tanh-approximated GELU (the browser's hover previews) |
| `decoder_int8.onnx` | `decoder.onnx` with int8 dynamic weight quantization (optional, `quantize=True`) |
| `decoder_single_int8.onnx` | `decoder_single.onnx` with int8 dynamic weight quantization (optional) |

Both encoders refuse an image whose longest side is not 1024 (ONNX Runtime raises an error
naming the node `resize_the_image_first_its_longest_side_must_be_1024`): without the check an
un-resized image would be padded or cropped to 1024 x 1024 and give a wrong embedding silently.
The decoders take an empty prompt (N = 0 points) as SAM's "no prompt" (no sparse tokens).
"""

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch

from .build import build_mobile_sam
from .checkpoints import PathLike, file_sha256
from .modeling import Sam
from .onnx_graphs import BoxBatchDecoder, EncoderGraph, LowResDecoder, SamOnnxDecoder
from .paths import default_onnx_cache

EXPORTER_VERSION = "1"
OPSET = 17
SAM_DECODER_INPUTS = [
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
    "orig_im_size",
]
SAM_DECODER_OUTPUTS = ["masks", "iou_predictions", "low_res_masks"]
DEFAULT_CACHE_DIR = default_onnx_cache()  # onnx/ in a checkout, a per-user cache when installed


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


def _export(
    module: torch.nn.Module,
    args: tuple,
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict,
    metadata: Dict[str, str],
) -> None:
    import onnx

    module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    for k, v in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


ENCODER_INPUTS = {"encoder": ("image", torch.uint8), "encoder_float": ("input_image", torch.float32)}
LONGEST_SIDE_CHECK = "resize_the_image_first_its_longest_side_must_be_1024"


def export_encoder(model: Sam, path: PathLike, metadata: Dict[str, str], graph: str = "encoder") -> Path:
    """`encoder.onnx` (uint8 input named `image`, what our engine feeds: 4x fewer bytes than
    float32) or `encoder_float.onnx` (float32 input named `input_image`: samexporter's
    `--use-preprocess` encoder I/O, which X-AnyLabeling and samexporter feed)."""
    path = Path(path)
    name, dtype = ENCODER_INPUTS[graph]
    image = torch.randint(0, 256, (768, 1024, 3), dtype=torch.uint8).to(dtype)
    kind = "uint8" if dtype == torch.uint8 else "float32"
    _export(
        EncoderGraph(model),
        (image,),
        path,
        [name],
        ["image_embeddings"],
        {name: {0: "height", 1: "width"}},
        {
            **metadata,
            "graph": graph,
            "input": f"{name}: {kind} RGB 0..255 (h, w, 3), resized so that max(h, w) == "
            f"{model.img_size} (bilinear; the other side rounded half up)",
        },
    )
    _require_longest_side(path, name, model.img_size)
    return path


def _require_longest_side(path: Path, input_name: str, size: int) -> None:
    """Make the graph fail (instead of padding or cropping silently) when the image's longest
    side is not `size`. The image goes through a Reshape to (h, w, 3 * (1 + (longest - size)^2))
    before anything else: a no-op when the side is right, an error naming the node otherwise,
    raised before the encoder does any work."""
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(path))
    g = proto.graph
    checked = input_name + "_checked"
    for node in g.node:
        node.input[:] = [checked if i == input_name else i for i in node.input]
    consts = {"chk_0": [0], "chk_2": [2], "chk_3": [3], "chk_size": [size], "chk_one": [1]}
    g.initializer.extend(numpy_helper.from_array(np.array(v, np.int64), k) for k, v in consts.items())
    check = [
        helper.make_node("Shape", [input_name], ["chk_shape"], name="chk_shape"),
        helper.make_node("Slice", ["chk_shape", "chk_0", "chk_2"], ["chk_hw"], name="chk_hw"),
        helper.make_node("Slice", ["chk_shape", "chk_2", "chk_3"], ["chk_c"], name="chk_c"),
        helper.make_node("ReduceMax", ["chk_hw"], ["chk_longest"], keepdims=1, name="chk_longest"),
        helper.make_node("Sub", ["chk_longest", "chk_size"], ["chk_diff"], name="chk_diff"),
        helper.make_node("Mul", ["chk_diff", "chk_diff"], ["chk_diff2"], name="chk_diff2"),
        helper.make_node("Add", ["chk_diff2", "chk_one"], ["chk_factor"], name="chk_factor"),
        helper.make_node("Mul", ["chk_c", "chk_factor"], ["chk_c2"], name="chk_c2"),
        helper.make_node("Concat", ["chk_hw", "chk_c2"], ["chk_target"], axis=0, name="chk_target"),
        helper.make_node("Reshape", [input_name, "chk_target"], [checked], name=LONGEST_SIDE_CHECK),
    ]
    nodes = check + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    # One image in, one embedding out: say so instead of the tracer's symbolic batch name.
    g.output[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def export_sam_decoder(model: Sam, path: PathLike, metadata: Dict[str, str], return_single_mask: bool = False) -> Path:
    path = Path(path)
    inputs = _example_decoder_inputs(model)
    dyn = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}, "masks": {2: "height", 3: "width"}}
    kind = "decoder_single" if return_single_mask else "decoder"
    _export(
        SamOnnxDecoder(model, return_single_mask),
        tuple(inputs.values()),
        path,
        SAM_DECODER_INPUTS,
        SAM_DECODER_OUTPUTS,
        dyn,
        {**metadata, "graph": kind},
    )
    return path


def export_lowres_decoder(model: Sam, path: PathLike, metadata: Dict[str, str], approximate_gelu: bool = False) -> Path:
    path = Path(path)
    inputs = _example_decoder_inputs(model)
    del inputs["orig_im_size"]
    dyn = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}
    _export(
        LowResDecoder(model, approximate_gelu),
        tuple(inputs.values()),
        path,
        SAM_DECODER_INPUTS[:5],
        ["low_res_masks", "iou_predictions"],
        dyn,
        {"graph": "decoder_lowres", **metadata},
    )
    return path


def export_box_decoder(model: Sam, path: PathLike, metadata: Dict[str, str]) -> Path:
    path = Path(path)
    boxes = torch.tensor([[10.0, 20.0, 300.0, 400.0], [100.0, 50.0, 900.0, 700.0]])
    dyn = {"boxes": {0: "num_boxes"}, "low_res_masks": {0: "num_boxes"}, "iou_predictions": {0: "num_boxes"}}
    _export(
        BoxBatchDecoder(model),
        (torch.randn(1, 256, 64, 64), boxes),
        path,
        ["image_embeddings", "boxes"],
        ["low_res_masks", "iou_predictions"],
        dyn,
        {**metadata, "graph": "decoder_boxes"},
    )
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
            casts.append(
                helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT, name=init.name + "__cast")
            )
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


def export_web_decoder(model: Sam, path: PathLike, metadata: Dict[str, str], approximate_gelu: bool = False) -> Path:
    """A browser decoder: `decoder_lowres` with float16-stored weights (and, for hover
    previews, tanh-approximated GELU)."""
    path = Path(path)
    tmp = path.with_name(path.stem + ".fp32.onnx")
    graph = "decoder_fast" if approximate_gelu else "decoder_web"
    export_lowres_decoder(
        model,
        tmp,
        {**metadata, "graph": graph, "weights_storage": "float16", "gelu": "tanh" if approximate_gelu else "erf"},
        approximate_gelu,
    )
    fp16_weights(tmp, path)
    tmp.unlink()
    return path


def quantize_decoder(src: PathLike, dst: PathLike) -> Path:
    """int8 dynamic quantization of the decoder's MatMul weights (activations stay float).
    The result's `graph` metadata is its own name (`<src graph>_int8`)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    proto = onnx.load(str(dst))
    props = {p.key: p for p in proto.metadata_props}
    source = props["graph"].value if "graph" in props else Path(src).stem
    for key, value in (("graph", f"{source}_int8"), ("quantized_from", source), ("weights_storage", "int8 (MatMul)")):
        if key in props:
            props[key].value = value
        else:
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
    onnx.save(proto, str(dst))
    return Path(dst)


def ort_session(path: PathLike, threads: Optional[int] = None, providers: Optional[list] = None):
    """An ONNX Runtime session: CUDA when available, else CPU with one thread per usable core."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or available_cores()
    so.log_severity_level = 3
    if providers is None:
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    return ort.InferenceSession(str(path), so, providers=providers)


def _quiet_run():
    """RunOptions that keep ONNX Runtime from logging an error we expect."""
    import onnxruntime as ort

    ro = ort.RunOptions()
    ro.log_severity_level = 4
    return ro


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _compare(name: str, ours: np.ndarray, ref: np.ndarray, atol: float) -> None:
    diff = float(np.abs(ours - ref).max()) if ours.size else 0.0
    if ours.shape != ref.shape or not diff <= atol:
        raise ExportError(
            f"{name}: ONNX output differs from torch by {diff:.3g} (> {atol}) or shape {ours.shape} != {ref.shape}"
        )


@torch.no_grad()
def verify_exports(model: Sam, paths: Dict[str, Path]) -> Dict[str, float]:
    """Run each exported graph in ONNX Runtime against the torch model; raise ExportError on a
    mismatch. Returns the max abs differences seen."""
    from .predictor import SamPredictor

    report: Dict[str, float] = {}
    g = torch.Generator().manual_seed(1)
    if any(k in paths for k in ENCODER_INPUTS):
        image = (torch.rand(600, 1024, 3, generator=g) * 255).to(torch.uint8)
        ref = model.image_encoder(model.preprocess(image.permute(2, 0, 1)[None].float())).numpy()
        for kind, (name, dtype) in ENCODER_INPUTS.items():
            if kind not in paths:
                continue
            sess = ort_session(paths[kind])
            out = sess.run(None, {name: image.to(dtype).numpy()})[0]
            _compare(kind, out, ref, 1e-3)
            report[kind] = float(np.abs(out - ref).max())
            try:  # an un-resized image must be refused, not padded or cropped
                sess.run(None, {name: image[:, :1000].to(dtype).numpy()}, _quiet_run())
            except Exception as exc:
                if LONGEST_SIDE_CHECK not in str(exc):
                    raise
            else:
                raise ExportError(f"{kind}: accepts an image whose longest side is not {model.img_size}")
    inputs = {k: v.numpy() for k, v in _example_decoder_inputs(model, 3).items()}
    inputs["point_labels"] = np.array([[1.0, 0.0, -1.0]], np.float32)
    pred = SamPredictor(model)
    pred.features = torch.as_tensor(inputs["image_embeddings"])
    pred.is_image_set = True
    pred.input_size, pred.original_size = (768, 1024), (600, 800)
    coords = torch.as_tensor(inputs["point_coords"][:, :2])
    labels = torch.tensor([[1, 0]])
    mask_in = torch.as_tensor(inputs["mask_input"])
    ref_masks, ref_iou, ref_low = pred.predict_torch(
        coords, labels, None, mask_in, multimask_output=True, return_logits=True
    )
    # float16-stored weights move logits by ~3e-3 (measured); int8 is only reported here.
    tolerances = {
        "decoder": 1e-3,
        "decoder_lowres": 1e-3,
        "decoder_web": 5e-2,
        "decoder_fast": 5e-2,
        "decoder_int8": None,
    }
    single_kinds = [k for k in ("decoder_single", "decoder_single_int8") if k in paths]
    if single_kinds:
        # Three prompt tokens (2 points + padding): SAM's rule picks token 0.
        _, ref_iou0, ref_low0 = pred.predict_torch(coords, labels, None, mask_in, multimask_output=False)
        for kind in single_kinds:
            outs = ort_session(paths[kind]).run(None, inputs)
            diff = float(np.abs(outs[2] - ref_low0.numpy()).max())
            if not kind.endswith("_int8"):
                _compare(f"{kind} low_res_masks", outs[2], ref_low0.numpy(), 1e-3)
                _compare(f"{kind} iou_predictions", outs[1], ref_iou0.numpy(), 1e-3)
            report[kind] = diff
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
            None, {"image_embeddings": inputs["image_embeddings"], "boxes": boxes.numpy()}
        )
        _compare("decoder_boxes low_res_masks", out_low, ref_low.numpy(), 1e-3)
        _compare("decoder_boxes iou_predictions", out_iou, ref_iou.numpy(), 1e-3)
        report["decoder_boxes"] = float(np.abs(out_low - ref_low.numpy()).max())
    return report


EXPORTERS: Dict[str, Callable] = {
    "encoder": export_encoder,
    "encoder_float": lambda m, p, md: export_encoder(m, p, md, graph="encoder_float"),
    "decoder": export_sam_decoder,
    "decoder_single": lambda m, p, md: export_sam_decoder(m, p, md, return_single_mask=True),
    "decoder_lowres": export_lowres_decoder,
    "decoder_boxes": export_box_decoder,
    "decoder_web": export_web_decoder,
    "decoder_fast": lambda m, p, md: export_web_decoder(m, p, md, approximate_gelu=True),
}
ENGINE_GRAPHS = ("encoder", "decoder_lowres", "decoder_boxes")
APP_GRAPHS = ENGINE_GRAPHS + ("decoder_web", "decoder_fast")


def export_all(
    checkpoint: Optional[PathLike],
    out_dir: PathLike,
    graphs: Sequence[str] = tuple(EXPORTERS),
    quantize: bool = False,
    verify: bool = True,
    model: Optional[Sam] = None,
    log: Callable[[str], None] = lambda s: None,
    weights_sha: Optional[str] = None,
) -> Dict[str, Path]:
    """Export `graphs` of the checkpoint (or of `model`, built from it) into out_dir, written
    atomically. Returns name -> path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sha = weights_sha or (file_sha256(checkpoint) if checkpoint is not None else "random-weights")
    if model is None:
        model = build_mobile_sam(checkpoint)
    meta = {
        "source_checkpoint_sha256": sha,
        "exporter": "mobilesam-web",
        "exporter_version": EXPORTER_VERSION,
        "torch_version": torch.__version__,
    }
    paths: Dict[str, Path] = {}
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    try:
        for name in graphs:
            log(f"exporting {name}")
            paths[name] = EXPORTERS[name](model, tmp / f"{name}.onnx", meta)
        for src in ("decoder", "decoder_single"):
            if quantize and src in paths:
                log(f"quantizing {src} (int8)")
                paths[f"{src}_int8"] = quantize_decoder(paths[src], tmp / f"{src}_int8.onnx")
        report = verify_exports(model, paths) if verify else {}
        hashes = {name: file_sha256(p) for name, p in paths.items()}
        final = {}
        for name, p in paths.items():
            dst = out_dir / p.name
            os.replace(p, dst)
            final[name] = dst
        write_manifest(out_dir, meta, final, hashes, report)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_manifest(out_dir: PathLike) -> dict:
    """The folder's manifest.json, or {} when it is missing or unreadable."""
    try:
        data = json.loads((Path(out_dir) / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_manifest(
    out_dir: Path, meta: Dict[str, str], files: Dict[str, Path], hashes: Dict[str, str], report: Dict[str, float]
) -> None:
    """Merge the newly written graphs into manifest.json (entries of other graphs are kept;
    an entry from another checkpoint or exporter version is not), written atomically."""
    old = read_manifest(out_dir)
    same = (
        old.get("source_checkpoint_sha256") == meta["source_checkpoint_sha256"]
        and old.get("exporter_version") == meta["exporter_version"]
    )
    entries = {}
    if same:
        for name, fname in (old.get("files") or {}).items():
            sha = (old.get("sha256") or {}).get(name)
            if name not in files and sha and (out_dir / str(fname)).is_file():
                entries[name] = (str(fname), sha, (old.get("verification_max_abs_diff") or {}).get(name))
    for name, p in files.items():
        entries[name] = (p.name, hashes[name], report.get(name))
    manifest = {
        **meta,
        "files": {n: e[0] for n, e in entries.items()},
        "sha256": {n: e[1] for n, e in entries.items()},
        "verification_max_abs_diff": {n: e[2] for n, e in entries.items() if e[2] is not None},
    }
    tmp = out_dir / f".manifest-{os.getpid()}-{threading.get_ident()}.json"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out_dir / "manifest.json")


@contextlib.contextmanager
def folder_lock(folder: Path):
    """An exclusive lock on a cache folder (between processes and threads), so that one exports
    while the others wait and then reuse its files."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with _THREAD_LOCK, open(folder / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_THREAD_LOCK = threading.RLock()


def remove_stale_temp(folder: Path, log: Callable[[str], None] = lambda s: None) -> None:
    """Remove `.export-*` folders left by an export that was killed (call under folder_lock)."""
    for tmp in folder.glob(".export-*"):
        if tmp.is_dir():
            log(f"removing {tmp.name}, left by an interrupted export")
            shutil.rmtree(tmp, ignore_errors=True)
    for tmp in folder.glob(".manifest-*.json"):
        tmp.unlink(missing_ok=True)


def weights_key(checkpoint: PathLike, decoder_checkpoint: Optional[PathLike] = None) -> str:
    """sha256 naming the weights: the checkpoint's, or both files' when the prompt-guided
    decoder replaces MobileSAM's own."""
    sha = file_sha256(checkpoint)
    if decoder_checkpoint is None:
        return sha
    return hashlib.sha256(f"{sha}+{file_sha256(decoder_checkpoint)}".encode()).hexdigest()


def cached_exports(
    checkpoint: PathLike,
    cache_dir: Optional[PathLike] = None,
    graphs: Sequence[str] = ENGINE_GRAPHS,
    log: Callable[[str], None] = lambda s: None,
    decoder_checkpoint: Optional[PathLike] = None,
) -> Dict[str, Path]:
    """ONNX files for `checkpoint` (optionally with MobileSAMv2's prompt-guided decoder) from
    the cache, exporting on first use.

    The cache folder is `<cache_dir>/<sha256[:16]>-v<EXPORTER_VERSION>/`; a file is reused only
    when manifest.json records its sha256 and the file still has it, and its metadata names the
    same weights hash and exporter version. Anything else (edited, truncated, from another
    version) is re-exported, with a log line saying why.
    """
    sha = weights_key(checkpoint, decoder_checkpoint)
    folder = Path(cache_dir or os.environ.get("MOBILESAM_ONNX_CACHE") or DEFAULT_CACHE_DIR)
    folder = folder / f"{sha[:16]}-v{EXPORTER_VERSION}"
    with folder_lock(folder):
        remove_stale_temp(folder, log)
        manifest = read_manifest(folder)
        have: Dict[str, Path] = {}
        for name in graphs:
            problem = _cache_problem(folder, name, manifest, sha)
            if problem is None:
                have[name] = folder / f"{name}.onnx"
            elif problem != "missing":
                log(f"re-exporting {name}.onnx: {problem}")
        missing = [g for g in graphs if g not in have]
        if missing:
            log(f"exporting ONNX graphs {missing} to {folder}")
            model = None
            if decoder_checkpoint is not None:
                from .build import load_prompt_guided_decoder

                model = load_prompt_guided_decoder(build_mobile_sam(checkpoint), decoder_checkpoint)
            have.update(export_all(checkpoint, folder, missing, log=log, model=model, weights_sha=sha))
    return have


def _cache_problem(folder: Path, name: str, manifest: dict, sha: str) -> Optional[str]:
    """Why the cached graph can't be used, or None if it can."""
    import onnx

    p = folder / f"{name}.onnx"
    if not p.is_file():
        return "missing"
    expected = (manifest.get("sha256") or {}).get(name)
    if not expected or manifest.get("source_checkpoint_sha256") != sha:
        return "not recorded in manifest.json"
    if file_sha256(p) != expected:
        return "its sha256 does not match manifest.json (the file was modified or damaged)"
    try:
        props = {m.key: m.value for m in onnx.load(str(p), load_external_data=False).metadata_props}
    except Exception:
        return "not a readable ONNX file"
    if props.get("source_checkpoint_sha256") != sha or props.get("exporter_version") != EXPORTER_VERSION:
        return "made from other weights or by another exporter version"
    return None


def discard_cached(path: PathLike, log: Callable[[str], None] = lambda s: None, why: str = "") -> None:
    """Delete one cached graph (e.g. one ONNX Runtime refused), so the next lookup re-exports it."""
    path = Path(path)
    with folder_lock(path.parent):
        log(f"re-exporting {path.name}: {why or 'discarded'}")
        path.unlink(missing_ok=True)
