"""The graph exporters, one function per graph (their I/O: export.py's table, graphs.py)."""

import warnings
from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import torch

from ..checkpoints import PathLike
from ..modeling import Sam
from .graphs import BoxBatchDecoder, EncoderGraph, LowResDecoder, SamOnnxDecoder

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


class ExportError(RuntimeError):
    """An exported graph failed its checks."""


# A graph whose weights pass this is written with them in one external file `<name>.onnx.data`
# beside it (protobuf caps a file at 2 GiB: SAM ViT-H's encoder is 2.5 GB).
EXTERNAL_DATA_BYTES = 1536 << 20


def data_file(path: PathLike) -> Path:
    """Where a graph's external weights are, if it has them."""
    return Path(str(path) + ".data")


def save_checked(proto, path: PathLike, external: bool) -> None:
    """Check and write a graph; with `external`, its weights go into data_file(path)."""
    import onnx

    path = Path(path)
    if not external:
        onnx.checker.check_model(proto)
        onnx.save(proto, str(path))
        return
    if path.parent.name.startswith(".export-"):  # export_all's own folder: drop the tracer's per-tensor files
        for stale in path.parent.iterdir():
            if stale.is_file() and not stale.name.endswith((".onnx", ".onnx.data")):
                stale.unlink()
    data_file(path).unlink(missing_ok=True)
    onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data_file(path).name)
    onnx.checker.check_model(str(path))  # by path: a proto over 2 GiB can't be checked in memory


def weight_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def example_decoder_inputs(model: Sam, n_points: int = 2) -> Dict[str, torch.Tensor]:
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
    external = weight_bytes(module) > EXTERNAL_DATA_BYTES
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
    save_checked(proto, path, external)


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
    _require_longest_side(path, name, model.img_size, weight_bytes(model.image_encoder) > EXTERNAL_DATA_BYTES)
    return path


def _require_longest_side(path: Path, input_name: str, size: int, external: bool) -> None:
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
    save_checked(proto, path, external)


def export_sam_decoder(model: Sam, path: PathLike, metadata: Dict[str, str], return_single_mask: bool = False) -> Path:
    path = Path(path)
    inputs = example_decoder_inputs(model)
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
    inputs = example_decoder_inputs(model)
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
